export { Client, errorFromWire, type ClientEvents, type ClientOptions, type ClientState } from './main_client';
export { ChatClient, type ChatEvents } from './chat_client';
export {
  FileClient,
  type DownloadOptions,
  type FileClientEvents,
  type FileClientOptions,
  type TransferOp,
  type TransferProgress,
  type TransferRetry,
  type UploadOptions,
} from './file_client';
export { formatBytes, formatDuration, formatProgress, type ProgressView } from './progress';
