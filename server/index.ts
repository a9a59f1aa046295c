export { Server, resolveServerOptions, MIN_PROTOCOL_VERSION, type ServerOptions, type ServerEvents, type ServerStats } from './main_server';
export { Store, MIGRATIONS, DB_FILE_NAME, StoreError, type StoredFile } from './store';
export { FileServer, type FileServerOptions, type FileServerStats, type FileChange, type FileUser } from './file_server';
