export { Server, resolveServerOptions, MIN_PROTOCOL_VERSION, type ServerOptions, type ServerEvents, type ServerStats } from './main_server';
export { Store, MIGRATIONS, DB_FILE_NAME, StoreError } from './store';
