/**
 * The file server: its own TCP port (8891 by default), so a 100 MB upload never
 * delays chat or signalling on the control connection (CONVENTIONS.md 8). The control
 * plane hands out tickets (startUpload, requestDownload); this server accepts nothing
 * without one, and asks the control plane, at OPEN, whether the ticket's user is still
 * in the ticket's room (`isMember`). It knows nothing else of rooms or roles.
 *
 * Wire: shared/protocol/file_frames.ts, behaviour: docs/PROTOCOL.md "File server (TCP)".
 *
 * Storage: completed files are DATA_DIR/files/<file_id>, indexed in the `files` table;
 * an upload under way is DATA_DIR/files/partial/<upload_id>.part plus its state here in
 * memory (verified offset, running MD5, chunk MD5s). A partial upload whose connection
 * dropped stays for `partialRetentionMs` after its last progress so it can be resumed;
 * at start the partial directory is emptied, since the state that made it resumable
 * (the running MD5) died with the previous process.
 *
 * Memory stays bounded whatever the peer does: an upload's connection is paused while
 * 1 MiB of chunk writes (at least two chunks) is pending (TCP then pushes back on the
 * sender), and a download holds at most 1 MiB queued in its socket plus the next chunk
 * read ahead, no more.
 */
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { createHash, randomBytes, randomUUID, type Hash } from 'node:crypto';
import { DEFAULTS, LIMITS } from '../shared/constants';
import { ProtocolError } from '../shared/errors';
import { TypedEmitter } from '../shared/events';
import { safeFileName } from '../shared/file_names';
import { Logger } from '../shared/log';
import {
  encodeFileFrame,
  encodeFileFrameHead,
  errorFrame,
  FileFrameDecoder,
  FILE_PROTOCOL_VERSION,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  type AnyFileFrameHeader,
  type FileFrame,
  type FileFrameHeader,
} from '../shared/protocol/file_frames';
import type { FileInfo, ResponseData } from '../shared/protocol/messages';
import { StoreError, type ListedFile, type Store, type StoredFile } from './store';
import { nameKey } from './user_manager';

/** A connection must send OPEN this soon after connecting. */
export const OPEN_TIMEOUT_MS = 10_000;
/**
 * Chunk writes pending on one upload before its connection stops being read: 1 MiB (four
 * default chunks; positional writes run side by side on the thread pool, and with two
 * the disk copy was the upload's bottleneck in bench:files), and at least two chunks.
 */
export const MAX_PENDING_WRITE_BYTES = 1024 * 1024;
export function pendingWriteLimit(chunkSize: number): number {
  return Math.max(2, Math.floor(MAX_PENDING_WRITE_BYTES / chunkSize));
}
/** Bytes of a download queued in its socket before the server waits for it to drain. */
const MAX_DOWNLOAD_QUEUE_BYTES = 1024 * 1024;
/** After sending ERROR (or the last frame), how long the peer has to close before the socket is destroyed. */
const LINGER_MS = 2_000;
/** Retention sweeps run at most this far apart. */
const MAX_SWEEP_INTERVAL_MS = 60_000;
/** Completed files are named by a uuid; nothing else in the files directory is ours to remove. */
const FILE_ID_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface FileUser {
  user_id: string;
  username: string;
}

export interface FileChange {
  kind: 'added' | 'deleted' | 'expired';
  file: FileInfo;
  /** Who did it; null when the server did (expiry). */
  by: FileUser | null;
}

export interface FileServerOptions {
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Files go to dataDir/files (the database lives in dataDir too). */
  dataDir: string;
  store: Store;
  logger?: Logger;
  maxFileBytes?: number;
  /** Chunk size of a new upload when the client names none (clamped to MIN/MAX_CHUNK_SIZE). */
  chunkSize?: number;
  userQuotaBytes?: number;
  storageQuotaBytes?: number;
  /** Completed files are removed this long after upload; 0 keeps them until deleted. */
  retentionMs?: number;
  partialRetentionMs?: number;
  ticketTtlMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  openTimeoutMs?: number;
  /** Whether the user is in the room now (checked when a ticket is used). */
  isMember: (userId: string, roomId: string) => boolean;
  /** Whether the room exists (at start: files of rooms that are gone are removed). */
  roomExists: (roomId: string) => boolean;
  /** A file was added, deleted or expired: the control plane pushes FILE_LIST to the room. */
  onChange: (roomId: string, change: FileChange) => void;
}

export interface FileTransferStats {
  /** upload_id or file_id. */
  id: string;
  op: 'upload' | 'download';
  user: string;
  name: string;
  size: number;
  /** Bytes verified (upload) or sent (download) so far, from the start of the file. */
  done_bytes: number;
  /** Seconds since the epoch when this connection's OPEN was accepted. */
  started_at: number;
  /** Chunk bytes moved on this connection per second since OPEN. */
  rate_bps: number;
}

export interface FileUploadStats {
  upload_id: string;
  room_id: string;
  user: string;
  name: string;
  size: number;
  /** Bytes verified and written: a resume continues here. */
  offset: number;
  /** Chunk bytes received over every connection of this upload, refused and dropped ones included. */
  bytes_received: number;
  chunks_refused: number;
  /** Chunks that did not start at the expected offset (in flight behind a NACK or a drop). */
  chunks_dropped: number;
  connected: boolean;
  /** Milliseconds since the last verified chunk (or the start). */
  idle_ms: number;
  /** Seconds since the epoch of FILE_UPLOAD_START. */
  started_at: number;
}

export interface FileServerCounters {
  uploads_done: number;
  downloads_done: number;
  /** Chunk bytes received / sent. */
  bytes_in: number;
  bytes_out: number;
  /** Chunks answered with NACK (MD5 mismatch). */
  chunks_refused: number;
  chunks_dropped: number;
  tickets_refused: number;
  /** Connections closed for a bad frame. */
  frames_refused: number;
  /** Connections refused because maxConnections were open. */
  connections_refused: number;
}

export interface FileServerStats {
  listening: boolean;
  port: number;
  files: number;
  stored_bytes: number;
  transfers: FileTransferStats[];
  uploads: FileUploadStats[];
  counters: FileServerCounters;
}

export type FileServerEvents = {
  listening: [number];
  /** A transfer finished: an upload is stored and listed, or a download's last frame was sent. */
  transfer_done: [{ op: 'upload' | 'download'; file: FileInfo; user: FileUser }];
  closed: [];
};

interface Ticket {
  op: 'upload' | 'download';
  user: FileUser;
  roomId: string;
  /** upload_id or file_id. */
  targetId: string;
  /** Date.now() after which it is refused. */
  expiresAt: number;
  used: boolean;
}

/**
 * One chunk being written: completions are applied in file order whatever order the
 * disk finishes them in. A NACK waits in the same queue, so the client hears about the
 * chunks before the refused one first.
 */
interface WriteJob {
  end: number;
  body: Buffer;
  digest: Buffer;
  conn: Conn;
  state: 'pending' | 'done' | 'failed';
  error?: NodeJS.ErrnoException;
  nack?: FileFrameHeader<'NACK'>;
}

class Upload {
  readonly startedAt = Date.now();
  /** Bytes verified and written, in order: READY's offset on a resume. */
  offset = 0;
  /** Where the next accepted chunk must start: offset plus the chunks being written. */
  expected = 0;
  /**
   * MD5 of bytes [0, offset): bytes arrive in order, so one running hash survives
   * reconnects. It stays on this thread (unlike the client's, shared/md5_stream.ts):
   * measured with bench:files, a hashing worker here made uploads a third slower, four
   * hashing threads (two here, two in the client) fighting over two cores; and a
   * server with many uploads would start a thread for each.
   */
  readonly hash: Hash = createHash('md5');
  /** MD5 of each verified chunk, in order (stored with the file for downloads). */
  readonly chunkMd5s: Buffer[] = [];
  handle: FileHandle | null = null;
  /** The connection carrying it, null while waiting for a resume. */
  conn: Conn | null = null;
  /** Date.now() of the last verified chunk, or of the start / last OPEN. */
  lastProgress = Date.now();
  /** An OPEN was accepted at least once (an upload never opened expires with its ticket). */
  opened = false;
  /** Discarded or completed: forget it. */
  gone = false;
  readonly queue: WriteJob[] = [];
  /** Write calls not yet settled (the handle must outlive them). */
  inflight = 0;
  private settleWaiters: (() => void)[] = [];
  /** Set while FILE_UPLOAD_END is fsyncing and renaming: a takeover waits for it. */
  finishing: Promise<unknown> | null = null;
  bytesReceived = 0;
  chunksRefused = 0;
  chunksDropped = 0;

  constructor(
    readonly id: string,
    readonly roomId: string,
    readonly ownerKey: string,
    public user: FileUser,
    readonly name: string,
    readonly size: number,
    readonly chunkSize: number,
    readonly partPath: string,
  ) {}

  /** Resolves once no write is in flight. */
  settled(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settleWaiters.push(resolve));
  }

  writeSettled(): void {
    this.inflight--;
    if (this.inflight === 0) for (const w of this.settleWaiters.splice(0)) w();
  }
}

type ConnState = 'opening' | 'upload' | 'download' | 'ending' | 'closed';

let nextConnId = 1;

class Conn {
  readonly id = nextConnId++;
  readonly remote: string;
  readonly decoder = new FileFrameDecoder({ maxBodyBytes: 0 });
  state: ConnState = 'opening';
  /** Decoded frames not yet handled; a bad frame is queued as its error, after the good ones before it. */
  readonly inbox: (FileFrame | ProtocolError)[] = [];
  /** A handler is awaiting something (OPEN, FILE_UPLOAD_END): frames wait in the inbox. */
  busy = false;
  paused = false;
  openTimer: NodeJS.Timeout | null = null;
  lingerTimer: NodeJS.Timeout | null = null;
  upload: Upload | null = null;
  /** Download: the file as indexed at OPEN, the streaming loop, and how far it got. */
  download: { file: StoredFile; done: Promise<void>; sent: number } | null = null;
  user: FileUser | null = null;
  startedAt = 0;
  /** Chunk bytes moved on this connection. */
  bytes = 0;

  constructor(readonly socket: net.Socket) {
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    // Before OPEN no frame carries a body: one declared is refused before it is buffered
    // (an upload raises the limit to its chunk size, a download keeps it at 0).
    this.decoder.bodyLimitReason = 'nothing before OPEN carries a body: send OPEN with a ticket first';
  }
}

function ticketKey(op: Ticket['op'], userId: string, targetId: string): string {
  return `${op}\u0000${userId}\u0000${targetId}`;
}

function fileInfo(f: ListedFile): FileInfo {
  return {
    file_id: f.file_id,
    room_id: f.room_id,
    name: f.name,
    size: f.size,
    md5: f.md5,
    chunk_size: f.chunk_size,
    uploader_id: f.uploader_id,
    uploader_name: f.uploader_name,
    uploaded_at: f.uploaded_at,
    expires_at: f.expires_at,
  };
}

export function clampChunkSize(n: number): number {
  return Math.min(MAX_CHUNK_SIZE, Math.max(MIN_CHUNK_SIZE, Math.floor(n)));
}

export class FileServer extends TypedEmitter<FileServerEvents> {
  readonly filesDir: string;
  readonly partialDir: string;
  private readonly log: Logger;
  private readonly store: Store;
  private tcp: net.Server | null = null;
  private readonly conns = new Set<Conn>();
  private readonly uploads = new Map<string, Upload>();
  private readonly tickets = new Map<string, Ticket>();
  /**
   * Uploads stored lately, by upload_id (for --partial-retention): a client whose DONE
   * was lost resumes with its upload_id and is answered DONE with the file, instead of
   * UPLOAD_NOT_FOUND for an upload that in fact succeeded.
   */
  private readonly completed = new Map<string, { fileId: string; ownerKey: string; roomId: string; size: number; at: number }>();
  /**
   * The newest ticket of each (user, op, upload or file): asking again replaces it, so
   * however often a client asks, tickets stay bounded by users times files.
   */
  private readonly ticketFor = new Map<string, string>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;
  /** Unlinks and handle closes under way (start and close wait for them). */
  private readonly removals = new Set<Promise<void>>();
  private readonly o: Required<Omit<FileServerOptions, 'logger' | 'store' | 'isMember' | 'roomExists' | 'onChange'>>;
  private readonly counters: FileServerCounters = {
    uploads_done: 0,
    downloads_done: 0,
    bytes_in: 0,
    bytes_out: 0,
    chunks_refused: 0,
    chunks_dropped: 0,
    tickets_refused: 0,
    frames_refused: 0,
    connections_refused: 0,
  };

  constructor(private readonly options: FileServerOptions) {
    super();
    const f = DEFAULTS.files;
    this.o = {
      host: options.host,
      port: options.port,
      dataDir: options.dataDir,
      maxFileBytes: options.maxFileBytes ?? DEFAULTS.maxFileBytes,
      chunkSize: clampChunkSize(options.chunkSize ?? f.chunkSize),
      userQuotaBytes: options.userQuotaBytes ?? f.userQuotaBytes,
      storageQuotaBytes: options.storageQuotaBytes ?? f.storageQuotaBytes,
      retentionMs: options.retentionMs ?? f.retentionMs,
      partialRetentionMs: options.partialRetentionMs ?? f.partialRetentionMs,
      ticketTtlMs: options.ticketTtlMs ?? f.ticketTtlMs,
      idleTimeoutMs: options.idleTimeoutMs ?? f.idleTimeoutMs,
      maxConnections: options.maxConnections ?? f.maxConnections,
      openTimeoutMs: options.openTimeoutMs ?? OPEN_TIMEOUT_MS,
    };
    this.store = options.store;
    this.log = (options.logger ?? Logger.create('info')).child({ part: 'files' });
    this.onListenerError = (event, error) => this.log.error(`observer of ${event} threw: ${String(error)}`);
    this.filesDir = path.join(path.resolve(options.dataDir), 'files');
    this.partialDir = path.join(this.filesDir, 'partial');
  }

  /** The port actually bound (useful with port 0). */
  get port(): number {
    const a = this.tcp?.address();
    return a && typeof a === 'object' ? a.port : this.o.port;
  }

  get listening(): boolean {
    return this.tcp?.listening ?? false;
  }

  async start(): Promise<number> {
    if (this.closing) throw new Error('file server is closed');
    if (this.tcp) return this.port;
    const tcp = net.createServer((socket) => this.accept(socket));
    this.tcp = tcp;
    try {
      try {
        fs.mkdirSync(this.partialDir, { recursive: true });
      } catch (e) {
        throw new StoreError(`Cannot create the file storage directory ${this.partialDir}: ${(e as Error).message}`, 'Choose a writable --data-dir.');
      }
      this.cleanStorage();
      await Promise.all(this.removals);
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', (e: NodeJS.ErrnoException & { flag?: string; port?: number }) => {
          // Say which flag to change: run_server.ts prints it.
          e.flag = '--file-port';
          e.port = this.o.port;
          reject(e);
        });
        tcp.listen(this.o.port, this.o.host, () => {
          tcp.removeAllListeners('error');
          resolve();
        });
      });
    } catch (e) {
      this.tcp = null;
      throw e;
    }
    tcp.on('error', (e) => this.log.error(`listener error: ${e.message}`));
    const candidates = [MAX_SWEEP_INTERVAL_MS, this.o.partialRetentionMs / 4, this.o.ticketTtlMs];
    if (this.o.retentionMs > 0) candidates.push(this.o.retentionMs / 4);
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(50, Math.min(...candidates)));
    this.sweepTimer.unref();
    this.sweep();
    this.log.info(`file server listening on ${this.o.host} TCP ${this.port}`, { dir: this.filesDir });
    this.emit('listening', this.port);
    return this.port;
  }

  /** Closes for good: stop(), and no start() after it. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.stop();
      this.uploads.clear();
      this.completed.clear();
      this.emit('closed');
    })();
    return this.closing;
  }

  /** Where the next start() listens. */
  setAddress(host: string, port: number): void {
    this.o.host = host;
    this.o.port = port;
  }

  /**
   * Closes the listener and every transfer connection, waits for pending writes and
   * releases every file handle. start() may follow: uploads under way stay parked with
   * their partial files (and quota), so their clients resume them once back, as after a
   * dropped connection; a stored upload whose DONE was lost still answers a resume.
   * Unused tickets die with the stop (a resume asks for a new one).
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.sweepTimer) clearInterval(this.sweepTimer);
      this.sweepTimer = null;
      const tcp = this.tcp;
      const listenerClosed = tcp ? new Promise<void>((r) => tcp.close(() => r())) : Promise.resolve();
      const downloads: Promise<void>[] = [];
      for (const c of this.conns) {
        if (c.download) downloads.push(c.download.done);
        c.socket.destroy();
      }
      await listenerClosed;
      await Promise.all(downloads);
      await Promise.all(this.removals);
      await Promise.all(
        [...this.uploads.values()].map(async (up) => {
          // An upload being stored finishes first: the database is closed after this.
          await up.finishing?.catch(() => undefined);
          await up.settled();
          const h = up.handle;
          up.handle = null;
          await h?.close().catch(() => undefined);
        }),
      );
      // Handle closes queued by connections that closed meanwhile.
      await Promise.all(this.removals);
      this.tickets.clear();
      this.ticketFor.clear();
      this.tcp = null;
    })().finally(() => (this.stopping = null));
    return this.stopping;
  }

  // ------------------------------------------------------------ the control plane's side

  /**
   * FILE_UPLOAD_START, once the control plane has checked that the user is in the room:
   * every limit is checked here, before any byte moves, and the upload's declared size
   * is reserved against the quotas from now on.
   */
  startUpload(req: {
    user: FileUser;
    roomId: string;
    name: string;
    size: number;
    chunkSize?: number;
    resumeId?: string;
  }): ResponseData<'FILE_UPLOAD_START'> {
    const ownerKey = nameKey(req.user.username);
    let up: Upload;
    if (req.resumeId !== undefined) {
      const found = this.uploads.get(req.resumeId);
      const mine = (u: { ownerKey: string; roomId: string; size: number }) => u.ownerKey === ownerKey && u.roomId === req.roomId && u.size === req.size;
      const done = this.completedFile(req.resumeId);
      if (!found && done && mine(done.entry)) {
        // Already stored (its DONE was lost): OPEN with this ticket is answered DONE.
        const ticket = this.issueTicket('upload', req.user, req.roomId, req.resumeId);
        const f = done.file;
        return { upload_id: req.resumeId, ticket, port: this.port, chunk_size: f.chunk_size, name: f.name, size: f.size, expires_in: this.o.ticketTtlMs / 1000 };
      }
      // One answer for "gone", "not yours", "another room" and "another file": nobody
      // learns about someone else's upload by guessing ids.
      if (!found || found.gone || !mine(found)) {
        throw new ProtocolError('UPLOAD_NOT_FOUND', { upload_id: req.resumeId });
      }
      up = found;
      this.checkDisk(up.size - up.offset);
      up.user = req.user;
      // A resume is progress: the sweep must not discard it between its ticket and OPEN.
      up.lastProgress = Date.now();
    } else {
      if (req.size > this.o.maxFileBytes) throw new ProtocolError('FILE_TOO_LARGE', { size: req.size, limit: this.o.maxFileBytes });
      const userUsed = this.store.fileUsage(ownerKey) + this.reserved((u) => u.ownerKey === ownerKey);
      if (userUsed + req.size > this.o.userQuotaBytes) {
        throw new ProtocolError('QUOTA_EXCEEDED', { size: req.size, what: 'your storage quota', limit: this.o.userQuotaBytes, used: userUsed });
      }
      const totalUsed = this.store.totalFileUsage().bytes + this.reserved(() => true);
      if (totalUsed + req.size > this.o.storageQuotaBytes) {
        throw new ProtocolError('QUOTA_EXCEEDED', {
          size: req.size,
          what: "the server's storage quota",
          limit: this.o.storageQuotaBytes,
          used: totalUsed,
        });
      }
      this.checkDisk(req.size);
      let inRoom = this.store.countFiles(req.roomId);
      for (const u of this.uploads.values()) if (u.roomId === req.roomId) inRoom++;
      if (inRoom >= LIMITS.maxFilesPerRoom) throw new ProtocolError('TOO_MANY_FILES', { limit: LIMITS.maxFilesPerRoom });
      const id = randomUUID();
      const chunkSize = req.chunkSize !== undefined ? clampChunkSize(req.chunkSize) : this.o.chunkSize;
      up = new Upload(id, req.roomId, ownerKey, req.user, safeFileName(req.name), req.size, chunkSize, path.join(this.partialDir, `${id}.part`));
      this.uploads.set(id, up);
      this.log.info('upload started', { upload: id, room: req.roomId, user: req.user.username, name: up.name, size: up.size });
    }
    const ticket = this.issueTicket('upload', req.user, req.roomId, up.id);
    return {
      upload_id: up.id,
      ticket,
      port: this.port,
      chunk_size: up.chunkSize,
      name: up.name,
      size: up.size,
      expires_in: this.o.ticketTtlMs / 1000,
    };
  }

  /** FILE_DOWNLOAD_REQUEST: a ticket for a file of the user's room (FILE_NOT_FOUND for any other). */
  requestDownload(req: { user: FileUser; roomId: string; fileId: string }): ResponseData<'FILE_DOWNLOAD_REQUEST'> {
    const f = this.store.getFile(req.fileId);
    // An expired file the sweep has not reached yet is gone all the same.
    const expired = f?.expires_at != null && f.expires_at <= Date.now() / 1000;
    if (!f || f.room_id !== req.roomId || expired) throw new ProtocolError('FILE_NOT_FOUND', { file_id: req.fileId });
    const ticket = this.issueTicket('download', req.user, req.roomId, f.file_id);
    return { ticket, port: this.port, file: fileInfo(f), expires_in: this.o.ticketTtlMs / 1000 };
  }

  /** A room's files, oldest first. */
  list(roomId: string): FileInfo[] {
    return this.store.listFiles(roomId).map(fileInfo);
  }

  /** The indexed file, with what only the server sees (owner key, chunk MD5s). */
  getFile(fileId: string): StoredFile | undefined {
    return this.store.getFile(fileId);
  }

  /**
   * Removes a file (the caller has checked the right to); the room is told. A download
   * under way finishes: it holds the file open, and the name is all that goes.
   */
  deleteFile(fileId: string, by: FileUser | null): FileInfo | null {
    const f = this.store.getFile(fileId);
    if (!f) return null;
    return this.removeFile(f, 'deleted', by);
  }

  /**
   * A room went away (a temporary room emptied, a room deleted): its files go with it,
   * and its uploads under way are stopped. Nobody is told: there is no room to tell.
   */
  removeRoomFiles(roomId: string): number {
    for (const up of [...this.uploads.values()]) {
      if (up.roomId !== roomId) continue;
      const conn = up.conn;
      this.discard(up, 'room removed');
      if (conn) this.fail(conn, new ProtocolError('UPLOAD_NOT_FOUND', { upload_id: up.id }));
    }
    const files = this.store.listFiles(roomId);
    for (const f of files) this.unindex(f);
    if (files.length) this.log.info(`removed ${files.length} file(s) of a removed room`, { room: roomId });
    return files.length;
  }

  stats(): FileServerStats {
    const usage = this.store.totalFileUsage();
    const now = Date.now();
    const transfers: FileTransferStats[] = [];
    for (const c of this.conns) {
      if (!c.user || (c.state !== 'upload' && c.state !== 'download')) continue;
      const secs = Math.max(0.001, (now - c.startedAt) / 1000);
      const up = c.upload;
      const dl = c.download;
      transfers.push({
        id: up ? up.id : dl!.file.file_id,
        op: up ? 'upload' : 'download',
        user: c.user.username,
        name: up ? up.name : dl!.file.name,
        size: up ? up.size : dl!.file.size,
        done_bytes: up ? up.offset : dl!.sent,
        started_at: c.startedAt / 1000,
        rate_bps: Math.round(c.bytes / secs),
      });
    }
    const uploads: FileUploadStats[] = [...this.uploads.values()].map((u) => ({
      upload_id: u.id,
      room_id: u.roomId,
      user: u.user.username,
      name: u.name,
      size: u.size,
      offset: u.offset,
      bytes_received: u.bytesReceived,
      chunks_refused: u.chunksRefused,
      chunks_dropped: u.chunksDropped,
      connected: u.conn !== null,
      idle_ms: now - u.lastProgress,
      started_at: u.startedAt / 1000,
    }));
    return {
      listening: this.listening,
      port: this.port,
      files: usage.files,
      stored_bytes: usage.bytes,
      transfers,
      uploads,
      counters: { ...this.counters },
    };
  }

  // ------------------------------------------------------------ tickets, limits, storage

  private issueTicket(op: Ticket['op'], user: FileUser, roomId: string, targetId: string): string {
    const ticket = randomBytes(16).toString('hex');
    const key = ticketKey(op, user.user_id, targetId);
    const previous = this.ticketFor.get(key);
    if (previous !== undefined) this.tickets.delete(previous);
    this.ticketFor.set(key, ticket);
    this.tickets.set(ticket, { op, user, roomId, targetId, expiresAt: Date.now() + this.o.ticketTtlMs, used: false });
    return ticket;
  }

  /** The ticket, now used; or TICKET_INVALID saying why not. */
  private takeTicket(value: string): Ticket {
    const t = this.tickets.get(value);
    const reason = !t
      ? 'unknown'
      : t.used
        ? 'already used'
        : Date.now() > t.expiresAt
          ? 'expired'
          : !this.safeIsMember(t.user.user_id, t.roomId)
            ? 'not in the room anymore'
            : null;
    if (reason || !t) {
      this.counters.tickets_refused++;
      throw new ProtocolError('TICKET_INVALID', { reason });
    }
    t.used = true;
    return t;
  }

  private safeIsMember(userId: string, roomId: string): boolean {
    try {
      return this.options.isMember(userId, roomId);
    } catch (e) {
      this.log.error(`isMember threw: ${String(e)}`);
      return false;
    }
  }

  /** Declared bytes of uploads under way that match: they count against the quotas until done or gone. */
  private reserved(match: (u: Upload) => boolean): number {
    let n = 0;
    for (const u of this.uploads.values()) if (match(u)) n += u.size;
    return n;
  }

  private checkDisk(bytes: number): void {
    let free: number;
    try {
      const s = fs.statfsSync(this.filesDir);
      free = s.bavail * s.bsize;
    } catch (e) {
      // Cannot tell: let the writes find out (ENOSPC is handled there too).
      this.log.debug(`statfs failed: ${(e as Error).message}`);
      return;
    }
    if (free < bytes) {
      throw new ProtocolError('DISK_FULL', { reason: `the file needs ${bytes} bytes and the server's disk has ${free} free` });
    }
  }

  /**
   * At start: partial uploads cannot be resumed (their running MD5 is gone), files of
   * rooms that no longer exist go, and the index and the directory are made to agree.
   */
  private cleanStorage(): void {
    // Partial files of a previous process are orphans; those of uploads parked by stop() are not.
    const parked = new Set([...this.uploads.values()].filter((u) => !u.gone).map((u) => path.resolve(u.partPath)));
    for (const e of fs.readdirSync(this.partialDir)) {
      const file = path.join(this.partialDir, e);
      if (!parked.has(path.resolve(file))) fs.rmSync(file, { recursive: true, force: true });
    }
    for (const roomId of this.store.fileRoomIds()) {
      if (this.options.roomExists(roomId)) continue;
      const files = this.store.listFiles(roomId);
      for (const f of files) this.unindex(f);
      this.log.info(`removed ${files.length} file(s) of a room that no longer exists`, { room: roomId });
    }
    const indexed = this.store.fileIds();
    const onDisk = new Set<string>();
    for (const e of fs.readdirSync(this.filesDir)) {
      if (!FILE_ID_NAME.test(e)) continue;
      onDisk.add(e);
      // Renamed into place but never indexed: the process stopped between the two.
      if (!indexed.has(e)) {
        this.log.warn('removing a stored file that the index does not list', { file: e });
        fs.rmSync(path.join(this.filesDir, e), { force: true });
      }
    }
    for (const id of indexed) {
      if (onDisk.has(id)) continue;
      this.log.warn('the index lists a file that is not on disk; removing it from the index', { file: id });
      this.store.deleteFile(id);
    }
  }

  private sweep(): void {
    try {
      const now = Date.now();
      // A used or expired ticket is kept a while longer, so a late OPEN hears why it is refused.
      const keep = Math.max(this.o.ticketTtlMs, MAX_SWEEP_INTERVAL_MS);
      for (const [k, t] of this.tickets) {
        if (now <= t.expiresAt + keep) continue;
        this.tickets.delete(k);
        const key = ticketKey(t.op, t.user.user_id, t.targetId);
        if (this.ticketFor.get(key) === k) this.ticketFor.delete(key);
      }
      for (const [id, c] of this.completed) if (now - c.at > this.o.partialRetentionMs) this.completed.delete(id);
      for (const up of [...this.uploads.values()]) {
        if (up.conn) continue;
        const idle = now - up.lastProgress;
        if (idle > this.o.partialRetentionMs || (!up.opened && idle > this.o.ticketTtlMs)) {
          this.discard(up, up.opened ? 'not resumed in time' : 'never opened');
        }
      }
      for (const f of this.store.expiredFiles(now / 1000)) this.removeFile(f, 'expired', null);
    } catch (e) {
      this.log.error(`retention sweep failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
  }

  private removeFile(f: StoredFile, kind: 'deleted' | 'expired', by: FileUser | null): FileInfo {
    this.unindex(f);
    const info = fileInfo(f);
    this.log.info(`file ${kind}`, { file: f.file_id, room: f.room_id, name: f.name, by: by?.username });
    try {
      this.options.onChange(f.room_id, { kind, file: info, by });
    } catch (e) {
      this.log.error(`onChange threw: ${String(e)}`);
    }
    return info;
  }

  /** Out of the index at once (nobody can ask for it any more); off the disk shortly after. */
  private unindex(f: ListedFile): void {
    this.store.deleteFile(f.file_id);
    this.removeLater(path.join(this.filesDir, f.file_id));
  }

  /**
   * Unlinking a large file takes tens of milliseconds on some file systems (freeing its
   * extents); off the event loop, so deleting a 100 MB file never delays chat.
   */
  private removeLater(file: string): void {
    this.later(fs.promises.rm(file, { force: true }).catch((e: Error) => this.log.warn(`could not remove ${file}: ${e.message}`)));
  }

  /** Disk work finished off the request's path, which close() still waits for. */
  private later(work: Promise<unknown>): void {
    const p: Promise<void> = work.then(
      () => undefined,
      () => undefined,
    );
    this.removals.add(p);
    void p.finally(() => this.removals.delete(p));
  }

  /** Forgets an upload and removes its partial file; the handle is closed once its writes settle. */
  private discard(up: Upload, why: string): void {
    if (up.gone) return;
    up.gone = true;
    this.uploads.delete(up.id);
    up.queue.length = 0;
    // A write still in flight lands in the unlinked inode; its space is freed at close.
    this.removeLater(up.partPath);
    const handle = up.handle;
    up.handle = null;
    if (handle) this.later(up.settled().then(() => handle.close()));
    this.log.info(`upload discarded: ${why}`, { upload: up.id, user: up.user.username, name: up.name });
  }

  // ------------------------------------------------------------ connections

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    socket.on('error', (e) => this.log.debug(`socket error: ${e.message}`));
    if (this.conns.size >= this.o.maxConnections) {
      this.counters.connections_refused++;
      this.log.warn('file server busy: connection refused', { limit: this.o.maxConnections });
      socket.end(encodeFileFrame(errorFrame(new ProtocolError('FILE_SERVER_BUSY', { limit: this.o.maxConnections }))));
      setTimeout(() => socket.destroy(), LINGER_MS).unref();
      return;
    }
    // ACK and READY are small frames: Nagle would hold them back behind unacknowledged data.
    socket.setNoDelay(true);
    const conn = new Conn(socket);
    this.conns.add(conn);
    conn.openTimer = setTimeout(() => {
      conn.openTimer = null;
      this.counters.tickets_refused++;
      this.fail(conn, new ProtocolError('TICKET_INVALID', { reason: `no OPEN within ${this.o.openTimeoutMs / 1000} s` }));
    }, this.o.openTimeoutMs);
    conn.openTimer.unref();
    // Node's socket timeout restarts on every read and on every completed write, so it
    // catches a silent uploader and a reader that stopped reading alike.
    socket.setTimeout(this.o.idleTimeoutMs, () => this.idle(conn));
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('close', () => this.connClosed(conn));
    this.log.debug('file connection opened', { conn: conn.id, remote: conn.remote });
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.state === 'ending' || conn.state === 'closed') return;
    try {
      for (const d of conn.decoder.push(chunk)) conn.inbox.push(d.ok ? d.frame : d.error);
      this.pump(conn);
    } catch (e) {
      this.crashed(conn, e, 'data');
    }
  }

  /** Handles queued frames in order; an async handler holds the rest (and the socket) until it is done. */
  private pump(conn: Conn): void {
    while (!conn.busy && conn.inbox.length > 0 && (conn.state === 'opening' || conn.state === 'upload' || conn.state === 'download')) {
      const item = conn.inbox.shift()!;
      if (item instanceof ProtocolError) {
        this.counters.frames_refused++;
        this.fail(conn, item);
        return;
      }
      let r: void | Promise<void>;
      try {
        r = this.handleFrame(conn, item);
      } catch (e) {
        this.crashed(conn, e, item.header.type);
        return;
      }
      if (r) {
        conn.busy = true;
        this.flow(conn);
        const type = item.header.type;
        r.then(
          () => {
            conn.busy = false;
            this.flow(conn);
            this.pump(conn);
          },
          (e: unknown) => {
            conn.busy = false;
            this.crashed(conn, e, type);
          },
        );
      }
    }
  }

  /** Reads the socket only while the connection can take more: no handler waiting, at most 1 MiB (at least two chunks) of writes pending. */
  private flow(conn: Conn): void {
    const active = conn.state === 'opening' || conn.state === 'upload' || conn.state === 'download';
    const up = conn.upload;
    const hold = active && (conn.busy || (up !== null && up.conn === conn && up.inflight >= pendingWriteLimit(up.chunkSize)));
    if (hold && !conn.paused) {
      conn.paused = true;
      conn.socket.pause();
    } else if (!hold && conn.paused) {
      conn.paused = false;
      conn.socket.resume();
    }
  }

  private handleFrame(conn: Conn, frame: FileFrame): void | Promise<void> {
    const h = frame.header;
    switch (conn.state) {
      case 'opening':
        if (h.type !== 'OPEN') {
          this.counters.tickets_refused++;
          throw new ProtocolError('TICKET_INVALID', { reason: 'missing' });
        }
        return this.open(conn, h);
      case 'upload':
        if (h.type === 'FILE_UPLOAD_CHUNK') return this.chunk(conn, h, frame.body);
        if (h.type === 'FILE_UPLOAD_END') return this.finish(conn, h);
        if (h.type === 'CANCEL') {
          if (conn.upload) this.discard(conn.upload, 'cancelled');
          return this.end(conn);
        }
        break;
      case 'download':
        // The client may only give up; the stream stops at its next chunk.
        if (h.type === 'CANCEL') return this.end(conn);
        break;
      default:
        return;
    }
    if (h.type === 'ERROR') {
      this.log.info(`peer gave up: ${h.code} ${h.message}`, { conn: conn.id, user: conn.user?.username });
      return this.end(conn);
    }
    throw new ProtocolError('FILE_FRAME_INVALID', {
      reason: h.type === 'OPEN' ? 'OPEN was already sent on this connection' : `${h.type} is not expected during ${conn.state === 'upload' ? 'an upload' : 'a download'}`,
    });
  }

  private async open(conn: Conn, h: FileFrameHeader<'OPEN'>): Promise<void> {
    if (conn.openTimer) clearTimeout(conn.openTimer);
    conn.openTimer = null;
    if (h.version !== FILE_PROTOCOL_VERSION) {
      throw new ProtocolError('FILE_FRAME_INVALID', {
        reason: `file protocol version ${h.version} is not supported; this server speaks version ${FILE_PROTOCOL_VERSION}`,
      });
    }
    const t = this.takeTicket(h.ticket);
    conn.user = t.user;
    if (t.op === 'upload') await this.openUpload(conn, t);
    else await this.openDownload(conn, t, h.offset ?? 0);
  }

  private async openUpload(conn: Conn, t: Ticket): Promise<void> {
    const up = this.uploads.get(t.targetId);
    if (!up) return this.alreadyStored(conn, t.targetId);
    const previous = up.conn;
    up.conn = conn;
    conn.upload = up;
    up.opened = true;
    if (previous && previous !== conn) {
      // The newer connection wins: the old one is most likely dead and only not yet timed out.
      this.log.info('upload taken over by a new connection', { upload: up.id, old: previous.id, conn: conn.id });
      previous.upload = null;
      previous.socket.destroy();
    }
    if (up.finishing) await up.finishing.catch(() => undefined);
    await up.settled();
    // Stored while this connection waited (a resume racing FILE_UPLOAD_END): DONE.
    if (up.gone && up.conn === conn) return this.alreadyStored(conn, up.id);
    if (up.gone || up.conn !== conn) throw new ProtocolError('UPLOAD_NOT_FOUND', { upload_id: up.id });
    if (!up.handle) {
      const handle = await fs.promises.open(up.partPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
      if (up.gone || up.conn !== conn) {
        await handle.close();
        throw new ProtocolError('UPLOAD_NOT_FOUND', { upload_id: up.id });
      }
      up.handle = handle;
      // Writes that finished out of order after the last verified byte are not part of the file.
      await handle.truncate(up.offset);
    }
    // The peer may have gone meanwhile (its close parked the upload again).
    if (conn.state !== 'opening' || up.conn !== conn) return;
    up.expected = up.offset;
    up.lastProgress = Date.now();
    conn.decoder.maxBodyBytes = up.chunkSize;
    conn.decoder.bodyLimitReason = `this upload's chunk size`;
    conn.state = 'upload';
    conn.startedAt = Date.now();
    this.send(conn, { type: 'READY', op: 'upload', id: up.id, name: up.name, size: up.size, offset: up.offset, chunk_size: up.chunkSize });
    this.log.info(up.offset > 0 ? 'upload resumed' : 'upload connected', { upload: up.id, conn: conn.id, user: t.user.username, offset: up.offset });
  }

  /** A stored file for a recently completed upload_id, if it is still listed. */
  private completedFile(uploadId: string): { entry: { ownerKey: string; roomId: string; size: number }; file: StoredFile } | null {
    const entry = this.completed.get(uploadId);
    const file = entry ? this.store.getFile(entry.fileId) : undefined;
    return entry && file ? { entry, file } : null;
  }

  /** OPEN for an upload that is already stored: DONE with its file, then the end; UPLOAD_NOT_FOUND if it is not. */
  private alreadyStored(conn: Conn, uploadId: string): void {
    const done = this.completedFile(uploadId);
    if (!done) throw new ProtocolError('UPLOAD_NOT_FOUND', { upload_id: uploadId });
    this.send(conn, { type: 'DONE', file: fileInfo(done.file) });
    this.end(conn);
  }

  private async openDownload(conn: Conn, t: Ticket, offset: number): Promise<void> {
    const f = this.store.getFile(t.targetId);
    if (!f || f.room_id !== t.roomId) throw new ProtocolError('FILE_NOT_FOUND', { file_id: t.targetId });
    if (offset % f.chunk_size !== 0 || offset > f.size) {
      throw new ProtocolError('FILE_FRAME_INVALID', {
        reason: `download offset ${offset} is not a multiple of chunk_size ${f.chunk_size} within the file's ${f.size} bytes`,
      });
    }
    let handle: FileHandle;
    try {
      handle = await fs.promises.open(path.join(this.filesDir, f.file_id), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ProtocolError('FILE_NOT_FOUND', { file_id: f.file_id });
      throw e;
    }
    if (conn.state !== 'opening') {
      await handle.close();
      return;
    }
    conn.state = 'download';
    conn.startedAt = Date.now();
    this.send(conn, {
      type: 'READY',
      op: 'download',
      id: f.file_id,
      name: f.name,
      size: f.size,
      offset,
      chunk_size: f.chunk_size,
      md5: f.md5,
    });
    const dl = { file: f, sent: offset, done: Promise.resolve() };
    conn.download = dl;
    dl.done = this.stream(conn, f, handle, offset).catch((e: unknown) => this.crashed(conn, e, 'FILE_DOWNLOAD_CHUNK'));
    this.log.info('download started', { file: f.file_id, conn: conn.id, user: t.user.username, offset });
  }

  /** Upload: one chunk, synchronously checked; its write is started and acknowledged when it lands. */
  private chunk(conn: Conn, h: FileFrameHeader<'FILE_UPLOAD_CHUNK'>, body: Buffer): void {
    const up = conn.upload;
    if (!up || up.gone || up.conn !== conn) return;
    up.bytesReceived += body.length;
    conn.bytes += body.length;
    this.counters.bytes_in += body.length;
    if (h.offset !== up.expected) {
      // In flight behind a NACK (or sent twice): the client sends again from the NACK's offset.
      up.chunksDropped++;
      this.counters.chunks_dropped++;
      return;
    }
    const end = h.offset + body.length;
    if (end > up.size) {
      this.discard(up, 'bytes past the declared size');
      throw new ProtocolError('FILE_TOO_LARGE', { size: end, limit: up.size });
    }
    if (body.length !== up.chunkSize && end !== up.size) {
      throw new ProtocolError('FILE_FRAME_INVALID', {
        reason: `the chunk at offset ${h.offset} has ${body.length} bytes; every chunk but the last has chunk_size (${up.chunkSize}) bytes`,
      });
    }
    const digest = createHash('md5').update(body).digest();
    if (digest.toString('hex') !== h.md5) {
      up.chunksRefused++;
      this.counters.chunks_refused++;
      const e = new ProtocolError('CHUNK_MD5_MISMATCH', { offset: h.offset });
      const nack: FileFrameHeader<'NACK'> = { type: 'NACK', offset: h.offset, code: e.code, message: e.message };
      if (up.queue.length === 0) this.send(conn, nack);
      else up.queue.push({ end: h.offset, body: body.subarray(0, 0), digest, conn, state: 'done', nack });
      return;
    }
    up.expected = end;
    const job: WriteJob = { end, body, digest, conn, state: 'pending' };
    up.queue.push(job);
    up.inflight++;
    const landed = (error?: NodeJS.ErrnoException) => {
      job.state = error ? 'failed' : 'done';
      job.error = error;
      up.writeSettled();
      try {
        this.completeWrites(up);
      } catch (e) {
        // A bug here must not become an unhandled rejection (which ends the process).
        if (up.conn) this.crashed(up.conn, e, 'FILE_UPLOAD_CHUNK');
        else this.log.error(`completing a write failed: ${String(e)}`, { upload: up.id });
      }
    };
    up.handle!.write(body, 0, body.length, h.offset).then(() => landed(), landed);
    this.flow(conn);
  }

  /** Applies finished writes in file order: running MD5, verified offset, ACK. */
  private completeWrites(up: Upload): void {
    if (up.gone) return;
    while (up.queue.length > 0 && up.queue[0].state !== 'pending') {
      const job = up.queue.shift()!;
      if (job.state === 'failed') {
        this.writeFailed(up, job.error!);
        return;
      }
      if (job.nack) {
        if (job.conn === up.conn) this.send(job.conn, job.nack);
        continue;
      }
      up.hash.update(job.body);
      up.chunkMd5s.push(job.digest);
      up.offset = job.end;
      up.lastProgress = Date.now();
      if (job.conn === up.conn) this.send(job.conn, { type: 'ACK', offset: job.end });
    }
    if (up.conn) this.flow(up.conn);
  }

  private writeFailed(up: Upload, e: NodeJS.ErrnoException): void {
    const conn = up.conn;
    let err: ProtocolError;
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT') {
      this.log.warn(`disk full while writing an upload (${e.code})`, { upload: up.id, dir: this.partialDir });
      err = new ProtocolError('DISK_FULL', { reason: `the server's disk filled up while writing (${e.code})` });
    } else {
      this.log.error(`writing an upload failed: ${e.message}`, { upload: up.id, file: up.partPath });
      err = new ProtocolError('INTERNAL_ERROR', { type: 'FILE_UPLOAD_CHUNK' });
    }
    this.discard(up, `write failed: ${e.code ?? e.message}`);
    if (conn) this.fail(conn, err);
  }

  /** FILE_UPLOAD_END: compare the MD5, then fsync, rename into place, index, DONE, tell the room. */
  private async finish(conn: Conn, h: FileFrameHeader<'FILE_UPLOAD_END'>): Promise<void> {
    const up = conn.upload;
    // Taken over by a newer connection meanwhile: that one finishes the upload.
    if (!up) return;
    await up.settled();
    if (up.gone || up.conn !== conn) return;
    if (up.queue.length > 0 || up.offset !== up.size) {
      throw new ProtocolError('FILE_FRAME_INVALID', {
        reason: `FILE_UPLOAD_END after ${up.offset} of ${up.size} bytes; send the rest (from offset ${up.offset}) first`,
      });
    }
    const actual = up.hash.digest('hex');
    if (actual !== h.md5) {
      this.discard(up, 'whole-file MD5 mismatch');
      throw new ProtocolError('FILE_MD5_MISMATCH', { expected: h.md5, actual });
    }
    const done = this.storeUpload(up, actual);
    up.finishing = done;
    let f: StoredFile | null;
    try {
      f = await done;
    } finally {
      up.finishing = null;
    }
    if (!f) return;
    const info = fileInfo(f);
    this.counters.uploads_done++;
    this.send(conn, { type: 'DONE', file: info });
    this.end(conn);
    this.log.info('upload done', { file: f.file_id, room: f.room_id, user: up.user.username, name: f.name, size: f.size });
    try {
      this.options.onChange(f.room_id, { kind: 'added', file: info, by: up.user });
    } catch (e) {
      this.log.error(`onChange threw: ${String(e)}`);
    }
    this.emit('transfer_done', { op: 'upload', file: info, user: up.user });
  }

  /** The verified partial file made durable, renamed into place and indexed; null when the upload went away meanwhile. */
  private async storeUpload(up: Upload, md5: string): Promise<StoredFile | null> {
    const handle = up.handle;
    up.handle = null;
    if (!handle) throw new Error(`upload ${up.id} has no open partial file at FILE_UPLOAD_END`);
    const fileId = randomUUID();
    const dest = path.join(this.filesDir, fileId);
    try {
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.promises.rename(up.partPath, dest);
      await this.syncDir(this.filesDir);
    } catch (e) {
      this.removeLater(dest);
      // The room went away meanwhile (its uploads were discarded): nothing to report.
      if (up.gone) return null;
      const err = e as NodeJS.ErrnoException;
      this.discard(up, `storing failed: ${err.code ?? err.message}`);
      if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
        throw new ProtocolError('DISK_FULL', { reason: `the server's disk filled up while storing the file (${err.code})` });
      }
      throw e;
    }
    if (up.gone) {
      this.removeLater(dest);
      return null;
    }
    const now = Date.now() / 1000;
    const f: StoredFile = {
      file_id: fileId,
      room_id: up.roomId,
      name: up.name,
      size: up.size,
      md5,
      chunk_size: up.chunkSize,
      chunk_md5s: Buffer.concat(up.chunkMd5s),
      uploader_id: up.user.user_id,
      uploader_name: up.user.username,
      owner_key: up.ownerKey,
      uploaded_at: now,
      expires_at: this.o.retentionMs > 0 ? now + this.o.retentionMs / 1000 : null,
    };
    try {
      this.store.insertFile(f);
    } catch (e) {
      this.removeLater(dest);
      this.discard(up, `indexing failed: ${(e as Error).message}`);
      throw e;
    }
    // Listed: the quota now counts the stored file instead of the reservation.
    up.gone = true;
    this.uploads.delete(up.id);
    this.completed.set(up.id, { fileId: f.file_id, ownerKey: up.ownerKey, roomId: up.roomId, size: up.size, at: Date.now() });
    return f;
  }

  /** A rename is durable only once its directory is synced. */
  private async syncDir(dir: string): Promise<void> {
    let h: FileHandle | null = null;
    try {
      h = await fs.promises.open(dir, 'r');
      await h.sync();
    } catch (e) {
      this.log.debug(`could not sync directory ${dir}: ${(e as Error).message}`);
    } finally {
      await h?.close().catch(() => undefined);
    }
  }

  /** Download: chunk by chunk from `offset`, the next read overlapping the socket draining the last. */
  private async stream(conn: Conn, f: StoredFile, handle: FileHandle, offset: number): Promise<void> {
    const socket = conn.socket;
    const dl = conn.download!;
    const read = async (pos: number): Promise<Buffer> => {
      const n = Math.min(f.chunk_size, f.size - pos);
      const buf = Buffer.allocUnsafe(n);
      const { bytesRead } = await handle.read(buf, 0, n, pos);
      if (bytesRead !== n) throw new Error(`stored file ${f.file_id} is shorter than its ${f.size} indexed bytes`);
      return buf;
    };
    let pos = offset;
    let next: Promise<Buffer> | null = pos < f.size ? read(pos) : null;
    try {
      while (next) {
        const body = await next;
        next = null;
        if (conn.state !== 'download') return;
        const at = pos;
        pos += body.length;
        if (pos < f.size) next = read(pos);
        const i = at / f.chunk_size;
        const md5 = f.chunk_md5s.toString('hex', i * 16, i * 16 + 16);
        socket.cork();
        socket.write(encodeFileFrameHead({ type: 'FILE_DOWNLOAD_CHUNK', offset: at, md5 }, body.length));
        socket.write(body);
        socket.uncork();
        dl.sent = pos;
        conn.bytes += body.length;
        this.counters.bytes_out += body.length;
        // Up to MAX_DOWNLOAD_QUEUE_BYTES queued in the socket: the kernel always has the
        // next chunk when it takes the last (waiting for a full drain after each chunk left
        // it idle meanwhile), and a slow reader still holds no more than that here.
        if (socket.writableLength > MAX_DOWNLOAD_QUEUE_BYTES) await this.drained(conn);
      }
      if (conn.state !== 'download') return;
      this.send(conn, { type: 'FILE_DOWNLOAD_END', size: f.size, md5: f.md5 });
      this.counters.downloads_done++;
      this.end(conn);
      this.log.info('download done', { file: f.file_id, conn: conn.id, user: conn.user?.username });
      if (conn.user) this.emit('transfer_done', { op: 'download', file: fileInfo(f), user: conn.user });
    } finally {
      // A read still in flight must settle before its handle closes (and must not go unobserved).
      if (next) await (next as Promise<Buffer>).catch(() => undefined);
      await handle.close().catch(() => undefined);
    }
  }

  private drained(conn: Conn): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        conn.socket.off('drain', done);
        conn.socket.off('close', done);
        resolve();
      };
      conn.socket.on('drain', done);
      conn.socket.on('close', done);
    });
  }

  private send(conn: Conn, header: AnyFileFrameHeader): void {
    if (!conn.socket.writable) return;
    conn.socket.write(encodeFileFrame(header));
  }

  /** The transfer is over (DONE, END, CANCEL): end our side and give the peer a moment to close. */
  private end(conn: Conn): void {
    if (conn.state === 'ending' || conn.state === 'closed') return;
    this.release(conn, 'ending');
    conn.socket.end();
  }

  /** ERROR to the peer, then close (CONVENTIONS.md: the sender of ERROR closes). */
  private fail(conn: Conn, e: ProtocolError): void {
    if (conn.state === 'ending' || conn.state === 'closed') return;
    this.log.info(`file connection refused: ${e.code} ${e.message}`, { conn: conn.id, remote: conn.remote, user: conn.user?.username });
    this.release(conn, 'ending');
    if (conn.socket.writable) conn.socket.end(encodeFileFrame(errorFrame(e)));
    else conn.socket.destroy();
  }

  /**
   * Stops handling the connection: input is discarded from now on (read, so the peer's
   * writes do not fail before it reads our last frame), an upload waits for a resume.
   */
  private release(conn: Conn, state: 'ending' | 'closed'): void {
    conn.state = state;
    conn.inbox.length = 0;
    if (conn.openTimer) clearTimeout(conn.openTimer);
    conn.openTimer = null;
    const up = conn.upload;
    if (up && up.conn === conn) {
      up.conn = null;
      // Parked for a resume: the handle is closed once its writes settle (a resume reopens it).
      this.later(
        up.settled().then(() => {
          if (up.conn || up.gone || !up.handle) return;
          const h = up.handle;
          up.handle = null;
          return h.close();
        }),
      );
    }
    if (state === 'ending') {
      conn.paused = false;
      conn.socket.resume();
      conn.lingerTimer ??= setTimeout(() => conn.socket.destroy(), LINGER_MS);
      conn.lingerTimer.unref();
    }
  }

  private connClosed(conn: Conn): void {
    if (conn.lingerTimer) clearTimeout(conn.lingerTimer);
    conn.lingerTimer = null;
    if (conn.state !== 'closed') this.release(conn, 'closed');
    this.conns.delete(conn);
    this.log.debug('file connection closed', { conn: conn.id });
  }

  private idle(conn: Conn): void {
    if (conn.state === 'ending' || conn.state === 'closed') {
      conn.socket.destroy();
      return;
    }
    const up = conn.upload;
    if (up && up.conn === conn && up.inflight > 0) {
      // Our own disk is the slow side, not the peer: wait on.
      conn.socket.setTimeout(this.o.idleTimeoutMs);
      return;
    }
    this.fail(conn, new ProtocolError('TRANSFER_TIMEOUT', { seconds: this.o.idleTimeoutMs / 1000 }));
  }

  /** A bug or an I/O error in a handler: log it, close this connection, nothing else. */
  private crashed(conn: Conn, e: unknown, type: string): void {
    if (e instanceof ProtocolError) return this.fail(conn, e);
    this.log.error(`file connection handler failed on ${type}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`, {
      conn: conn.id,
      user: conn.user?.username,
    });
    this.fail(conn, new ProtocolError('INTERNAL_ERROR', { type }));
  }
}
