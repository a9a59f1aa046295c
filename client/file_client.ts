/**
 * File sharing: uploads and downloads through the server's file port (TCP, 8891 by
 * default), with the tickets asked for on the control connection (docs/PROTOCOL.md,
 * "File server (TCP)").
 *
 * Every chunk carries its MD5 and so does the whole file; an upload resumes where the
 * server's verified bytes end (READY's offset) and a download where the client's
 * verified bytes end (OPEN's offset, also across runs through the `.part` file), so a
 * dropped connection never sends a verified byte again. Each transfer retries with
 * backoff; the count of attempts starts over whenever bytes are verified, so a long
 * transfer over a flaky link goes on as long as it makes progress.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { ProtocolError, type ErrorCode } from '../shared/errors';
import { Md5Stream } from '../shared/md5_stream';
import { TypedEmitter } from '../shared/events';
import { safeFileName, truncateFileName, uniqueFilePath, MAX_FILE_NAME_BYTES } from '../shared/file_names';
import {
  encodeFileFrame,
  encodeFileFrameHead,
  FILE_PROTOCOL_VERSION,
  FileFrameDecoder,
  type AnyFileFrameHeader,
  type FileFrame,
  type FileFrameHeader,
  type FileFrameType,
} from '../shared/protocol/file_frames';
import { MT, type FileInfo, type ResponseData } from '../shared/protocol/messages';
import { errorFromWire, type Client } from './main_client';

export interface FileClientOptions {
  /** Reconnects per transfer without progress before giving up with TRANSFER_FAILED (default 5). */
  retries?: number;
  /** Upload chunks sent ahead of their ACK, 1 to 16 (default 16: the protocol's limit). */
  window?: number;
  /** Connect to this host instead of the control connection's (tests: a proxy). */
  hostOverride?: string;
  /** Connect to this port instead of the one in the ticket's reply (tests: a proxy). */
  portOverride?: number;
  /** Default 5000 ms. */
  connectTimeoutMs?: number;
  /**
   * A transfer connection that brings nothing for this long while an answer is due is
   * given up and resumed on a new one (default 35 s: the server's own limit is 30 s).
   */
  idleTimeoutMs?: number;
  /** First delay before a reconnect, doubling up to retryMaxDelayMs (defaults 200 ms, 3 s). */
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  /** Progress events at most this often, plus the final one (default 100 ms). */
  progressIntervalMs?: number;
  /** Where downloads go without a destination (default: the current directory). */
  downloadDir?: string;
}

export type TransferOp = 'upload' | 'download';

export interface TransferProgress {
  /** upload_id or file_id. */
  id: string;
  op: TransferOp;
  /** The name as listed (uploads: the server's safe name). */
  name: string;
  size: number;
  /** Bytes verified: acknowledged by the server (upload) or checked and written (download). */
  done: number;
  /** Smoothed bytes per second. */
  rate_bps: number;
  /** Seconds left at that rate; null before there is a rate. */
  eta_s: number | null;
  /** 1 for the first connection of this transfer, 2 for the first reconnect, ... */
  attempt: number;
}

export interface TransferRetry {
  id: string | null;
  op: TransferOp;
  name: string;
  /** Failures since the last progress, and how many are allowed. */
  failures: number;
  of: number;
  delayMs: number;
  reason: string;
}

export interface UploadOptions {
  /** The name to share it under (default: the file's own name). */
  name?: string;
  /** Preferred chunk size; the server clamps it to 16 KiB-4 MiB. */
  chunkSize?: number;
  /** Default: your room. */
  roomId?: string;
  signal?: AbortSignal;
  onProgress?: (p: TransferProgress) => void;
}

export interface DownloadOptions {
  signal?: AbortSignal;
  onProgress?: (p: TransferProgress) => void;
}

export type FileClientEvents = {
  progress: [TransferProgress];
  /** A transfer lost its connection (or a chunk) and goes on after `delayMs`. */
  retry: [TransferRetry];
};

/** The protocol lets an uploader keep at most this many chunks unacknowledged. */
const MAX_WINDOW = 16;
/** Frames held unread before the socket is paused (TCP then slows the server down). */
const HIGH_WATER_FRAMES = 4;
/** Bytes read at a time when hashing what is already on disk. */
const HASH_READ_BYTES = 1024 * 1024;
/** Download chunks handed to the disk and not yet written, at most; then the socket is paused. */
const MAX_PENDING_WRITES = 4;

/**
 * Refusals that another attempt cannot change: the transfer fails at once with the
 * server's code and hint. Anything else (a dropped connection, a timeout, a used or
 * expired ticket, a busy server, a bad chunk) is retried on a new connection.
 */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'CONNECTION_LOST',
  'REQUEST_TIMEOUT',
  'CONNECT_FAILED',
  'TICKET_INVALID',
  'FILE_FRAME_INVALID',
  'CHUNK_MD5_MISMATCH',
  'TRANSFER_TIMEOUT',
  'FILE_SERVER_BUSY',
  'INTERNAL_ERROR',
]);

/** The transfer connection broke or said something it should not: resume on a new one. */
class Interrupted extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Interrupted';
  }
}

function retryable(e: unknown): boolean {
  return e instanceof Interrupted || (e instanceof ProtocolError && RETRYABLE.has(e.code));
}

function reasonOf(e: unknown): string {
  if (e instanceof ProtocolError) return `${e.code}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

function localError(action: string, file: string, e: unknown): ProtocolError {
  const err = e as NodeJS.ErrnoException;
  return new ProtocolError('LOCAL_FILE_ERROR', { action, path: file, reason: err?.code ?? err?.message ?? String(e) });
}

function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r;
  const e = new Error(typeof r === 'string' ? r : 'The transfer was aborted');
  e.name = 'AbortError';
  return e;
}

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/**
 * One transfer connection: frames in through the pure decoder, pulled one at a time by
 * the transfer loop. Reading pauses while frames pile up (or while the caller writes a
 * chunk to disk), so TCP pushes back on the sender instead of memory growing here.
 */
class FileLink {
  private readonly decoder = new FileFrameDecoder();
  private readonly queue: FileFrame[] = [];
  private waiter: { resolve: (f: FileFrame) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;
  private failure: Error | null = null;
  private held = false;
  private ending = false;

  constructor(
    readonly socket: net.Socket,
    private readonly idleTimeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      for (const d of this.decoder.push(chunk)) {
        if (!d.ok) {
          this.fail(d.error);
          socket.destroy();
          return;
        }
        this.queue.push(d.frame);
      }
      if (this.queue.length >= HIGH_WATER_FRAMES) socket.pause();
      this.deliver();
    });
    socket.on('error', (e: NodeJS.ErrnoException) => this.fail(new Interrupted(`the file connection failed (${e.code ?? e.message})`)));
    socket.on('close', () => this.fail(new Interrupted('the file server closed the connection')));
  }

  get open(): boolean {
    return !this.failure && !this.socket.destroyed;
  }

  /** The next frame; ERROR frames come as they are (the caller knows which codes it expects). */
  next(): Promise<FileFrame> {
    const f = this.queue.shift();
    if (f) {
      this.flow();
      return Promise.resolve(f);
    }
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new Interrupted(`the file server sent nothing for ${Math.round(this.idleTimeoutMs / 1000)} s`));
        this.socket.destroy();
      }, this.idleTimeoutMs);
      this.waiter = { resolve, reject, timer };
      this.flow();
    });
  }

  /** The next frame, which must be one of `types` (an ERROR becomes its ProtocolError). */
  async expect<T extends FileFrameType>(...types: T[]): Promise<FileFrame<FileFrameHeader<T>>> {
    const f = await this.next();
    if (f.header.type === 'ERROR') throw errorFromWire(f.header);
    if (!(types as string[]).includes(f.header.type)) {
      throw new Interrupted(`the file server sent ${f.header.type} where ${types.join(' or ')} was due`);
    }
    return f as FileFrame<FileFrameHeader<T>>;
  }

  /** Stop reading from the socket until release() (while a chunk is written to disk). */
  hold(): void {
    this.held = true;
    this.socket.pause();
  }

  release(): void {
    this.held = false;
    this.flow();
  }

  send(header: AnyFileFrameHeader): void {
    if (!this.socket.destroyed) this.socket.write(encodeFileFrame(header));
  }

  /** A chunk frame without copying the body into the header's buffer. */
  sendChunk(header: FileFrameHeader<'FILE_UPLOAD_CHUNK'>, body: Buffer): void {
    if (this.socket.destroyed) return;
    this.socket.cork();
    this.socket.write(encodeFileFrameHead(header, body.length));
    this.socket.write(body);
    this.socket.uncork();
  }

  /** Close once what was written is flushed (a CANCEL must arrive), or at the latest after 5 s. */
  end(): void {
    if (this.socket.destroyed || this.ending) return;
    this.ending = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  /** Fail the pending read with `e` and drop the connection (unless end() is already flushing it). */
  abort(e: Error): void {
    this.fail(e);
    if (!this.ending) this.socket.destroy();
  }

  private flow(): void {
    if (!this.held && this.queue.length < HIGH_WATER_FRAMES && !this.socket.destroyed) this.socket.resume();
  }

  private deliver(): void {
    if (!this.waiter || this.queue.length === 0) return;
    const w = this.waiter;
    this.waiter = null;
    clearTimeout(w.timer);
    w.resolve(this.queue.shift()!);
    this.flow();
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    if (this.waiter && this.queue.length === 0) {
      const w = this.waiter;
      this.waiter = null;
      clearTimeout(w.timer);
      w.reject(this.failure);
    }
  }
}

/**
 * Progress of one transfer and events at most every `intervalMs`, plus the final one.
 * The rate is the plain average over the connection's first RATE_TAU_MS, then
 * exponentially smoothed with that time constant, so a short stall does not send the
 * ETA to infinity and the first figures are not dragged down by a zero start.
 */
const RATE_TAU_MS = 2000;

class Meter {
  private rate = 0;
  private startT = performance.now();
  private startDone: number;
  private lastT = this.startT;
  private lastDone: number;
  private lastEmit = -Infinity;

  constructor(
    private readonly base: Omit<TransferProgress, 'done' | 'rate_bps' | 'eta_s'>,
    done: number,
    private readonly intervalMs: number,
    private readonly emit: (p: TransferProgress) => void,
  ) {
    this.startDone = this.lastDone = done;
  }

  /** A new connection: bytes already there count as done but not toward the rate. */
  rebase(done: number, attempt: number): void {
    this.base.attempt = attempt;
    this.startT = this.lastT = performance.now();
    this.startDone = this.lastDone = done;
  }

  update(done: number, final = false): void {
    const now = performance.now();
    if (!final && now - this.lastEmit < this.intervalMs) return;
    const dt = now - this.lastT;
    if (now - this.startT < RATE_TAU_MS) {
      if (now > this.startT) this.rate = (Math.max(0, done - this.startDone) * 1000) / (now - this.startT);
    } else if (dt > 0) {
      const inst = (Math.max(0, done - this.lastDone) * 1000) / dt;
      this.rate += (1 - Math.exp(-dt / RATE_TAU_MS)) * (inst - this.rate);
    }
    this.lastT = now;
    this.lastDone = done;
    this.lastEmit = now;
    const left = this.base.size - done;
    const eta_s = final || left <= 0 ? 0 : this.rate > 0 ? left / this.rate : null;
    this.emit({ ...this.base, done, rate_bps: Math.round(this.rate), eta_s: eta_s === null ? null : Math.round(eta_s * 10) / 10 });
  }
}

/** State a transfer keeps across its connections. */
interface Attempts {
  op: TransferOp;
  name: string;
  /** Connections made so far. */
  attempt: number;
  /** Failures since bytes were last verified. */
  failures: number;
  port: number | null;
}

export class FileClient extends TypedEmitter<FileClientEvents> {
  private readonly retries: number;
  private readonly window: number;
  private readonly connectTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly retryBaseDelayMs: number;
  private readonly retryMaxDelayMs: number;
  private readonly progressIntervalMs: number;
  readonly downloadDir: string | null;
  /** Transfers under way, aborted by close(). */
  private readonly active = new Set<AbortController>();

  constructor(
    readonly client: Client,
    private readonly options: FileClientOptions = {},
  ) {
    super();
    this.retries = Math.max(0, options.retries ?? 5);
    this.window = Math.min(MAX_WINDOW, Math.max(1, Math.floor(options.window ?? MAX_WINDOW)));
    this.connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 35_000;
    this.retryBaseDelayMs = options.retryBaseDelayMs ?? 200;
    this.retryMaxDelayMs = options.retryMaxDelayMs ?? 3000;
    this.progressIntervalMs = options.progressIntervalMs ?? 100;
    this.downloadDir = options.downloadDir ?? null;
  }

  /** The room's files (see Client.listFiles). */
  list(roomId?: string): Promise<FileInfo[]> {
    return this.client.listFiles(roomId);
  }

  /** Delete a file by id, unique id prefix or unique name (see Client.deleteFile). */
  delete(fileIdOrPrefix: string): Promise<ResponseData<'FILE_DELETE'>> {
    return this.client.deleteFile(fileIdOrPrefix);
  }

  /** Abort every transfer under way (uploads are cancelled on the server, download .part files removed). */
  close(): void {
    for (const c of this.active) c.abort(new ProtocolError('CLIENT_CLOSED'));
    this.active.clear();
  }

  // ------------------------------------------------------------ upload

  /**
   * Share a local file with your room. Resolves with the listed file once the server has
   * verified its MD5. Rejects with LOCAL_FILE_ERROR (cannot read it), the server's refusal
   * (FILE_TOO_LARGE, QUOTA_EXCEEDED, ... before any byte is sent), FILE_MD5_MISMATCH, or
   * TRANSFER_FAILED after `retries` reconnects without progress; with the signal's reason
   * when aborted.
   */
  async upload(localPath: string, opts: UploadOptions = {}): Promise<FileInfo> {
    return this.guard(opts.signal, async (signal) => {
      let fh: FileHandle;
      try {
        fh = await fsp.open(localPath, 'r');
      } catch (e) {
        throw localError('read', localPath, e);
      }
      try {
        let st: fs.Stats;
        try {
          st = await fh.stat();
        } catch (e) {
          throw localError('read', localPath, e);
        }
        if (!st.isFile()) {
          throw new ProtocolError('LOCAL_FILE_ERROR', { action: 'read', path: localPath, reason: 'it is not a regular file (give the path of a file, not a directory)' });
        }
        return await this.runUpload(fh, localPath, st.size, opts, signal);
      } finally {
        await fh.close().catch(() => undefined);
      }
    });
  }

  private async runUpload(fh: FileHandle, localPath: string, size: number, opts: UploadOptions, signal: AbortSignal): Promise<FileInfo> {
    const t: Attempts = { op: 'upload', name: opts.name ?? path.basename(localPath), attempt: 0, failures: 0, port: null };
    const roomId = opts.roomId ?? this.client.room?.room_id ?? null;
    let uploadId: string | null = null;
    let listedName = t.name;
    // The whole-file MD5 covers exactly the bytes before `hashedTo`, which only moves as
    // the server acknowledges them (or when READY says it holds more than we saw acked).
    // On a worker thread for a large file (shared/md5_stream.ts); its digest, once taken,
    // is kept for a resume after FILE_UPLOAD_END.
    let hash = new Md5Stream(size);
    let hashedTo = 0;
    let fileMd5: string | null = null;
    let endSent = false;
    /** CANCEL went out on a live connection: the server removes the partial upload. */
    let cancelled = false;
    let succeeded = false;
    let meter: Meter | null = null;
    let link: FileLink | null = null;

    const readAt = async (offset: number, len: number): Promise<Buffer> => {
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        let n: number;
        try {
          n = (await fh.read(buf, got, len - got, offset + got)).bytesRead;
        } catch (e) {
          throw localError('read', localPath, e);
        }
        if (n === 0) {
          throw new ProtocolError('LOCAL_FILE_ERROR', {
            action: 'read',
            path: localPath,
            reason: `it got shorter while it was uploaded (it had ${size} bytes); upload it again once it stops changing`,
          });
        }
        got += n;
      }
      return buf;
    };
    const hashFileTo = async (to: number) => {
      if (to < hashedTo) {
        // The server holds less than it acknowledged (it should not): MD5 cannot go back, so start it over.
        hash.close();
        hash = new Md5Stream(size);
        hashedTo = 0;
        fileMd5 = null;
      }
      while (hashedTo < to) {
        if (signal.aborted) throw abortError(signal);
        const n = Math.min(HASH_READ_BYTES, to - hashedTo);
        hash.update(await readAt(hashedTo, n), true);
        hashedTo += n;
      }
    };

    const onAbort = () => {
      if (link?.open) {
        // Behind the chunks already written: end() lets them and the CANCEL drain.
        link.send({ type: 'CANCEL' });
        link.end();
        cancelled = true;
      }
      link?.abort(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        t.attempt++;
        try {
          const start: ResponseData<'FILE_UPLOAD_START'> = await this.client.request(MT.FILE_UPLOAD_START, {
            room_id: roomId,
            name: t.name,
            size,
            ...(opts.chunkSize ? { chunk_size: opts.chunkSize } : {}),
            ...(uploadId ? { resume_id: uploadId } : {}),
          });
          // Known before the abort check, so an abort during the request still cancels it.
          uploadId = start.upload_id;
          if (signal.aborted) throw abortError(signal);
          listedName = start.name;
          t.port = this.options.portOverride ?? start.port;
          const chunkSize = start.chunk_size;
          link = await this.connect(t.port, signal);
          link.send({ type: 'OPEN', ticket: start.ticket, version: FILE_PROTOCOL_VERSION });
          const opened = await link.expect('READY', 'DONE');
          if (opened.header.type === 'DONE') {
            // A resume of an upload the server had already stored (our DONE was lost).
            link.end();
            const file = (opened.header as FileFrameHeader<'DONE'>).file;
            if (fileMd5 !== null && file.md5 !== fileMd5) throw new ProtocolError('FILE_MD5_MISMATCH', { expected: fileMd5, actual: file.md5 });
            meter?.update(size, true);
            succeeded = true;
            return file;
          }
          const ready = opened.header as FileFrameHeader<'READY'>;
          if (ready.op !== 'upload' || ready.size !== size || ready.offset > size) {
            throw new Interrupted(`READY does not fit this upload (op ${ready.op}, size ${ready.size}, offset ${ready.offset})`);
          }
          if (ready.offset > hashedTo) t.failures = 0; // the server holds more than before: progress
          await hashFileTo(ready.offset);
          let acked = ready.offset;
          if (!meter) {
            meter = new Meter(
              { id: uploadId, op: 'upload', name: listedName, size, attempt: t.attempt },
              acked,
              this.progressIntervalMs,
              (p) => this.progress(p, opts.onProgress),
            );
          } else meter.rebase(acked, t.attempt);
          meter.update(acked);

          // Chunks sent and not yet acknowledged, kept so their bytes can go into the
          // whole-file MD5 once acknowledged without reading the file again.
          let inflight: { offset: number; body: Buffer }[] = [];
          let next = acked;
          while (acked < size) {
            while (inflight.length < this.window && next < size) {
              const len = Math.min(chunkSize, size - next);
              const body = await readAt(next, len);
              if (signal.aborted) throw abortError(signal);
              link.sendChunk({ type: 'FILE_UPLOAD_CHUNK', offset: next, md5: md5(body) }, body);
              inflight.push({ offset: next, body });
              next += len;
            }
            const f = await link.expect('ACK', 'NACK');
            if (f.header.type === 'ACK') {
              const to = f.header.offset;
              if (to <= acked || to > next) throw new Interrupted(`ACK for offset ${to} outside the chunks in flight (${acked}-${next})`);
              while (inflight.length && hashedTo < to) {
                const c = inflight[0];
                const end = c.offset + c.body.length;
                const part = end <= to ? c.body : c.body.subarray(0, to - c.offset);
                hashedTo += part.length;
                // Acknowledged, so written to the socket long ago: a whole chunk is handed over.
                hash.update(part, end <= to);
                if (end <= to) inflight.shift();
                else inflight[0] = { offset: to, body: c.body.subarray(to - c.offset) };
              }
              acked = to;
              t.failures = 0;
              meter.update(acked);
            } else {
              // The server dropped this chunk and every one after it: send again from there.
              const at = (f.header as FileFrameHeader<'NACK'>).offset;
              if (at !== acked) throw new Interrupted(`NACK for offset ${at}, but ${acked} bytes were acknowledged`);
              if (++t.failures > this.retries) throw this.failed(t, new ProtocolError('CHUNK_MD5_MISMATCH', { offset: at }));
              inflight = [];
              next = acked;
            }
          }
          await hashFileTo(size);
          fileMd5 ??= await hash.digest();
          link.send({ type: 'FILE_UPLOAD_END', md5: fileMd5 });
          endSent = true;
          const done = await link.expect('DONE');
          link.end();
          meter.update(size, true);
          succeeded = true;
          return done.header.file;
        } catch (e) {
          link?.abort(e instanceof Error ? e : new Error(String(e)));
          link = null;
          await this.afterFailure(t, uploadId, e, signal);
        }
      }
    } finally {
      hash.close();
      signal.removeEventListener('abort', onAbort);
      // Given up (aborted or failed): nothing can resume it later (upload() always starts
      // anew), so the server should not keep it against the quota for --partial-retention.
      if (!succeeded && uploadId && !endSent && !cancelled) await this.cancelUpload(uploadId, t.name, size, roomId);
    }
  }

  /**
   * An upload given up between connections (aborted, or failed for good): the server
   * would keep the partial upload (and count it against the quota) until
   * --partial-retention, so cancel it on a connection of its own. Best effort, within a
   * couple of seconds.
   */
  private async cancelUpload(uploadId: string, name: string, size: number, roomId: string | null): Promise<void> {
    let link: FileLink | null = null;
    const give = new AbortController();
    const timer = setTimeout(() => {
      give.abort();
      link?.abort(new Error('timed out'));
    }, 2000);
    try {
      const start = await this.client.request(MT.FILE_UPLOAD_START, { room_id: roomId, name, size, resume_id: uploadId }, { timeoutMs: 2000 });
      link = await this.connect(this.options.portOverride ?? start.port, give.signal);
      link.send({ type: 'OPEN', ticket: start.ticket, version: FILE_PROTOCOL_VERSION });
      await link.expect('READY');
      link.send({ type: 'CANCEL' });
      link.end();
    } catch {
      // Already gone (cancelled on its connection, or never stored): nothing to remove.
      link?.abort(new Error('cancel'));
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------ download

  /**
   * Download a file of your room by id, unique id prefix or unique name. `dest` is a
   * directory or a file path (default: `downloadDir`, else the current directory). The
   * bytes go to `.NAME.ID8.part` beside the destination and are renamed into place once
   * the whole MD5 matches; an existing file is never overwritten ("name (1).ext"
   * instead). A `.part` left by an interrupted run is resumed from its whole chunks.
   */
  async download(fileIdOrPrefix: string, dest?: string, opts: DownloadOptions = {}): Promise<{ file: FileInfo; path: string }> {
    return this.guard(opts.signal, async (signal) => {
      const t: Attempts = { op: 'download', name: fileIdOrPrefix, attempt: 0, failures: 0, port: null };
      const fileId = this.client.resolveFile(fileIdOrPrefix);
      // The first ticket is asked for outside the retry loop: FILE_NOT_FOUND needs no retries.
      let grant: ResponseData<'FILE_DOWNLOAD_REQUEST'> | null = await this.client.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: fileId });
      const file = grant.file;
      t.name = file.name;
      if (signal.aborted) throw abortError(signal);
      const target = await this.target(dest, file);
      const stem = truncateFileName(target.name, MAX_FILE_NAME_BYTES - `..${file.file_id.slice(0, 8)}.part`.length);
      const partPath = path.join(target.dir, `.${stem}.${file.file_id.slice(0, 8)}.part`);

      let fh: FileHandle;
      let existing = 0;
      try {
        fh = await fsp.open(partPath, 'r+');
        existing = (await fh.stat()).size;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw localError('write', partPath, e);
        try {
          fh = await fsp.open(partPath, 'w+');
        } catch (e2) {
          throw localError('write', partPath, e2);
        }
      }
      let keepPart = true;
      let link: FileLink | null = null;
      const onAbort = () => link?.abort(abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      // The whole-file MD5, on a worker thread for a large file (shared/md5_stream.ts).
      let hash: Md5Stream | undefined;
      try {
        // Resume from whole chunks only (the server starts at a chunk boundary); a .part
        // larger than the file is not this file's. A complete .part steps back one chunk,
        // so the server still has something to send before FILE_DOWNLOAD_END.
        const chunk = Math.max(1, file.chunk_size);
        let verified = existing > file.size ? 0 : Math.floor(existing / chunk) * chunk;
        if (verified >= file.size && file.size > 0) verified = Math.max(0, Math.ceil(file.size / chunk) - 1) * chunk;
        hash = new Md5Stream(file.size);
        try {
          await fh.truncate(verified);
          const buf = Buffer.allocUnsafe(Math.min(HASH_READ_BYTES, Math.max(1, verified)));
          for (let at = 0; at < verified; ) {
            const n = (await fh.read(buf, 0, Math.min(buf.length, verified - at), at)).bytesRead;
            if (n === 0) throw new Error('the .part file got shorter while it was read');
            hash.update(buf.subarray(0, n));
            at += n;
          }
        } catch (e) {
          throw localError('write', partPath, e);
        }
        const writer = new PartWriter(fh, partPath);
        const meter = new Meter({ id: file.file_id, op: 'download', name: file.name, size: file.size, attempt: 1 }, verified, this.progressIntervalMs, (p) =>
          this.progress(p, opts.onProgress),
        );

        for (;;) {
          t.attempt++;
          try {
            if (!grant) {
              grant = await this.client.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id });
              if (grant.file.md5 !== file.md5 || grant.file.size !== file.size) {
                throw new ProtocolError('FILE_NOT_FOUND', { file_id: file.file_id }, `File ${file.file_id} changed on the server during the download`);
              }
            }
            t.port = this.options.portOverride ?? grant.port;
            const ticket = grant.ticket;
            grant = null; // a ticket works once
            link = await this.connect(t.port, signal);
            link.send({ type: 'OPEN', ticket, version: FILE_PROTOCOL_VERSION, offset: verified });
            const ready = (await link.expect('READY')).header;
            if (ready.op !== 'download' || ready.size !== file.size || ready.offset !== verified || (ready.md5 && ready.md5 !== file.md5)) {
              throw new Interrupted(`READY does not fit this download (op ${ready.op}, size ${ready.size}, offset ${ready.offset}, expected offset ${verified})`);
            }
            meter.rebase(verified, t.attempt);
            meter.update(verified);
            for (;;) {
              const f = await link.expect('FILE_DOWNLOAD_CHUNK', 'FILE_DOWNLOAD_END');
              if (f.header.type === 'FILE_DOWNLOAD_END') break;
              const h = f.header as FileFrameHeader<'FILE_DOWNLOAD_CHUNK'>;
              if (h.offset !== verified || verified + f.body.length > file.size) {
                throw new Interrupted(`chunk at offset ${h.offset} (${f.body.length} bytes) where ${verified} was due`);
              }
              if (md5(f.body) !== h.md5) {
                // Counted as a failed attempt; the next connection starts at this chunk.
                throw new ProtocolError('CHUNK_MD5_MISMATCH', { offset: h.offset });
              }
              // Written behind the socket: the next chunks arrive and are checked while the
              // disk takes this one; only a backlog pauses reading. The whole-file MD5 takes
              // each chunk once it and those before it are on disk, when nothing else needs
              // its buffer.
              const reading = link;
              const whole = hash;
              writer.write(
                f.body,
                h.offset,
                (body) => whole.update(body, true),
                () => {
                  if (writer.pending < MAX_PENDING_WRITES) reading.release();
                },
              );
              if (writer.pending >= MAX_PENDING_WRITES) link.hold();
              verified += f.body.length;
              t.failures = 0;
              meter.update(verified);
            }
            if (verified !== file.size) throw new Interrupted(`FILE_DOWNLOAD_END after ${verified} of ${file.size} bytes`);
            link.end();
            link = null;
            await writer.drain();
            const actual = await hash.digest();
            if (actual !== file.md5) {
              keepPart = false;
              throw new ProtocolError('FILE_MD5_MISMATCH', { expected: file.md5, actual });
            }
            try {
              await fh.sync();
            } catch (e) {
              throw localError('write', partPath, e);
            }
            await fh.close();
            const placed = await place(partPath, target.dir, target.name);
            meter.update(file.size, true);
            return { file, path: placed };
          } catch (e) {
            link?.abort(e instanceof Error ? e : new Error(String(e)));
            link = null;
            // Every chunk counted in `verified` passed its MD5: once on disk, the next
            // connection starts after it. A write that failed ends the download.
            await writer.drain();
            await this.afterFailure(t, file.file_id, e, signal);
          }
        }
      } catch (e) {
        // An aborted download leaves nothing behind; one that failed keeps its verified
        // chunks for the next try, unless they were the problem.
        if (signal.aborted) keepPart = false;
        throw e;
      } finally {
        hash?.close();
        signal.removeEventListener('abort', onAbort);
        await fh.close().catch(() => undefined);
        if (!keepPart) await fsp.rm(partPath, { force: true }).catch(() => undefined);
      }
    });
  }

  /** The directory and file name a download goes to. */
  private async target(dest: string | undefined, file: FileInfo): Promise<{ dir: string; name: string }> {
    const safe = safeFileName(file.name);
    if (dest === undefined || dest === '') {
      const dir = path.resolve(this.downloadDir ?? '.');
      try {
        await fsp.mkdir(dir, { recursive: true });
      } catch (e) {
        throw localError('create the download directory', dir, e);
      }
      return { dir, name: safe };
    }
    const abs = path.resolve(dest);
    const isDir = (p: string) => fsp.stat(p).then((s) => s.isDirectory(), () => false);
    const named = /[\\/]$/.test(dest) || (await isDir(abs));
    // The user chose this name; it is still cut to what a file system takes.
    const out = named ? { dir: abs, name: safe } : { dir: path.dirname(abs), name: truncateFileName(path.basename(abs)) };
    // A directory given by hand must exist: a typo should not quietly create a tree.
    if (!(await isDir(out.dir))) {
      throw new ProtocolError('LOCAL_FILE_ERROR', { action: 'write to', path: out.dir, reason: 'no such directory (create it first, or give another destination)' });
    }
    return out;
  }

  // ------------------------------------------------------------ common

  /** Runs a transfer with an internal AbortController linked to the caller's signal and to close(). */
  private async guard<T>(outer: AbortSignal | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (outer?.aborted) throw abortError(outer);
    const ctl = new AbortController();
    const relay = () => ctl.abort(outer!.reason);
    outer?.addEventListener('abort', relay, { once: true });
    this.active.add(ctl);
    try {
      return await run(ctl.signal);
    } catch (e) {
      if (ctl.signal.aborted) throw abortError(ctl.signal);
      throw e;
    } finally {
      outer?.removeEventListener('abort', relay);
      this.active.delete(ctl);
    }
  }

  /** Decides after a failed attempt: rethrow (fatal, aborted, out of retries) or wait and go on. */
  private async afterFailure(t: Attempts, id: string | null, e: unknown, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw abortError(signal);
    if (!retryable(e)) throw e;
    t.failures++;
    if (t.failures > this.retries) throw this.failed(t, e);
    const delayMs = Math.min(this.retryMaxDelayMs, this.retryBaseDelayMs * 2 ** (t.failures - 1));
    this.emit('retry', { id, op: t.op, name: t.name, failures: t.failures, of: this.retries, delayMs, reason: reasonOf(e) });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, delayMs);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
    if (signal.aborted) throw abortError(signal);
  }

  private failed(t: Attempts, e: unknown): ProtocolError {
    return new ProtocolError('TRANSFER_FAILED', { op: t.op, name: t.name, attempts: t.attempt, reason: reasonOf(e), port: t.port ?? '?' });
  }

  private progress(p: TransferProgress, cb: ((p: TransferProgress) => void) | undefined): void {
    this.emit('progress', p);
    if (cb) {
      try {
        cb(p);
      } catch (e) {
        this.onListenerError('onProgress', e);
      }
    }
  }

  private connect(port: number, signal: AbortSignal): Promise<FileLink> {
    const host = this.options.hostOverride ?? this.client.host;
    // An already-aborted signal never fires 'abort' again.
    if (signal.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.setNoDelay(true);
      const finish = (e: Error | null) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        socket.off('connect', onConnect);
        if (e) {
          socket.destroy();
          reject(e);
        } else resolve(new FileLink(socket, this.idleTimeoutMs));
      };
      const onConnect = () => finish(null);
      const onError = (e: NodeJS.ErrnoException) => finish(new ProtocolError('CONNECT_FAILED', { host, port, reason: e.code ?? e.message }));
      const onAbort = () => finish(abortError(signal));
      const timer = setTimeout(() => finish(new ProtocolError('CONNECT_FAILED', { host, port, reason: 'timed out' })), this.connectTimeoutMs);
      socket.once('connect', onConnect);
      socket.once('error', onError);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * A download's chunk writes to its .part file: up to MAX_PENDING_WRITES at once, each at
 * its own position (the page-cache copy of a 256 KiB chunk takes about as long as
 * hashing it twice, so one write at a time would make the disk the bottleneck), and
 * reported back in file order, which the whole-file MD5 needs. The first write error is
 * kept and thrown by drain() (as LOCAL_FILE_ERROR); later writes are skipped.
 */
class PartWriter {
  private readonly jobs: { body: Buffer; done: boolean; inOrder: (body: Buffer) => void }[] = [];
  private error: unknown = null;
  private idle: (() => void)[] = [];
  pending = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly file: string,
  ) {}

  /** Starts writing `body` at `position`; `inOrder` runs once it and every earlier write are done; `settled` when it is. */
  write(body: Buffer, position: number, inOrder: (body: Buffer) => void, settled: () => void): void {
    const job = { body, done: false, inOrder };
    this.jobs.push(job);
    this.pending++;
    const run = this.error === null ? writeAll(this.fh, body, position) : Promise.resolve();
    run
      .catch((e: unknown) => {
        this.error ??= e;
      })
      .finally(() => {
        job.done = true;
        this.pending--;
        while (this.jobs.length > 0 && this.jobs[0].done) {
          const j = this.jobs.shift()!;
          if (this.error === null) j.inOrder(j.body);
        }
        settled();
        if (this.pending === 0) for (const w of this.idle.splice(0)) w();
      });
  }

  /** Resolves once every write is done; throws the first write error. */
  async drain(): Promise<void> {
    if (this.pending > 0) await new Promise<void>((r) => this.idle.push(r));
    if (this.error !== null) throw localError('write', this.file, this.error);
  }
}

async function writeAll(fh: FileHandle, body: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < body.length) {
    const { bytesWritten } = await fh.write(body, off, body.length - off, position + off);
    off += bytesWritten;
  }
}

/**
 * Moves the verified .part to a name in `dir` that does not exist yet. A hard link
 * fails with EEXIST instead of replacing a file that appeared since the name was
 * picked; where links are not supported, rename after the existence check.
 */
async function place(partPath: string, dir: string, name: string): Promise<string> {
  for (;;) {
    const candidate = uniqueFilePath(dir, name, fs.existsSync);
    try {
      await fsp.link(partPath, candidate);
      await fsp.unlink(partPath);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue;
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS' || code === 'EXDEV') {
        try {
          await fsp.rename(partPath, candidate);
        } catch (e2) {
          throw localError('write', candidate, e2);
        }
      } else throw localError('write', candidate, e);
    }
    // The new name is durable only once the directory is synced too.
    await fsp
      .open(dir, 'r')
      .then(async (d) => {
        await d.sync().catch(() => undefined);
        await d.close();
      })
      .catch(() => undefined);
    return candidate;
  }
}
