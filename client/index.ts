export { Client, errorFromWire, type ClientEvents, type ClientOptions, type ClientState } from './main_client';
export { ChatClient, type ChatEvents } from './chat_client';
