/**
 * A raw peer of the file server (TCP file port) for tests: a net socket, the shared
 * frame codec and nothing else, so a test says exactly which frames go out (a wrong
 * MD5, a chunk at the wrong offset, garbage bytes, a half-sent frame) and sees every
 * frame that comes back, in order.
 *
 * The product's client (client/file_client.ts) is deliberately not used: these tests
 * check the server's side of the contract in docs/PROTOCOL.md, including what a
 * well-behaved client never sends.
 */
import net from 'node:net';
import { createHash } from 'node:crypto';
import {
  encodeFileFrame,
  FileFrameDecoder,
  FILE_PROTOCOL_VERSION,
  type AnyFileFrameHeader,
  type FileFrame,
  type FileFrameHeader,
  type FileFrameType,
} from '../../shared/protocol/file_frames';

export const md5hex = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** An MD5 that matches nothing sent here. */
export const WRONG_MD5 = '0'.repeat(32);

export class FilePeer {
  /** Every frame received, in order. */
  readonly frames: FileFrame[] = [];
  /** A frame the decoder refused (the server sent something malformed). */
  decodeError: Error | null = null;
  closed = false;
  readonly whenClosed: Promise<void>;
  private cursor = 0;
  private readonly decoder = new FileFrameDecoder();
  private wake: (() => void) | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const d of this.decoder.push(chunk)) {
        if (d.ok) this.frames.push(d.frame);
        else this.decodeError = d.error;
      }
      this.notify();
    });
    socket.on('error', () => undefined);
    this.whenClosed = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        this.notify();
        resolve();
      }),
    );
  }

  static connect(port: number, host = '127.0.0.1'): Promise<FilePeer> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => {
        s.off('error', reject);
        resolve(new FilePeer(s));
      });
      s.once('error', reject);
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  send(header: AnyFileFrameHeader, body?: Uint8Array): boolean {
    return this.socket.write(encodeFileFrame(header, body));
  }

  sendRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  open(ticket: string, o: { offset?: number; version?: number } = {}): void {
    this.send({ type: 'OPEN', ticket, version: o.version ?? FILE_PROTOCOL_VERSION, ...(o.offset !== undefined ? { offset: o.offset } : {}) });
  }

  /** FILE_UPLOAD_CHUNK with the body's MD5 (or the one given, to send a wrong one). */
  chunk(offset: number, body: Uint8Array, md5 = md5hex(body)): boolean {
    return this.send({ type: 'FILE_UPLOAD_CHUNK', offset, md5 }, body);
  }

  end(md5: string): void {
    this.send({ type: 'FILE_UPLOAD_END', md5 });
  }

  /** The next frame not yet read; rejects if the connection closes first or nothing comes within `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<FileFrame> {
    const deadline = Date.now() + timeoutMs;
    while (this.cursor >= this.frames.length) {
      if (this.closed) throw new Error(`connection closed; frames so far: ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms; frames so far: ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return this.frames[this.cursor++];
  }

  /**
   * The next frame of `type`, skipping others (ACKs while waiting for DONE, say). An
   * ERROR met on the way rejects with its code, so a test fails saying why.
   */
  async nextOfType<T extends FileFrameType>(type: T, timeoutMs = 5000): Promise<FileFrame & { header: FileFrameHeader<T> }> {
    for (;;) {
      const f = await this.next(timeoutMs);
      if (f.header.type === type) return f as FileFrame & { header: FileFrameHeader<T> };
      if (f.header.type === 'ERROR' && type !== 'ERROR') {
        throw new Error(`expected ${type}, got ERROR ${f.header.code}: ${f.header.message}`);
      }
    }
  }

  /** The ERROR the server sends, and then its close. */
  async error(timeoutMs = 5000): Promise<FileFrameHeader<'ERROR'>> {
    const f = await this.nextOfType('ERROR', timeoutMs);
    await this.closedWithin(timeoutMs);
    return f.header;
  }

  async closedWithin(timeoutMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.whenClosed,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the server did not close the connection within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** Frames received and not read yet. */
  unread(): FileFrame[] {
    return this.frames.slice(this.cursor);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private describe(): string {
    return this.frames.map((f) => (f.header.type === 'ERROR' ? `ERROR(${f.header.code}: ${f.header.message})` : f.header.type)).join(', ') || 'none';
  }
}

/**
 * Sends `data[from..]` in chunks of `chunkSize` with at most `window` unacknowledged,
 * as docs/PROTOCOL.md asks of a client, and waits for the last ACK. Returns the ACK offsets.
 */
export async function sendChunks(peer: FilePeer, data: Buffer, chunkSize: number, from = 0, window = 16): Promise<number[]> {
  const acks: number[] = [];
  let next = from;
  let acked = from;
  while (acked < data.length) {
    while (next < data.length && (next - acked) / chunkSize < window) {
      const body = data.subarray(next, Math.min(data.length, next + chunkSize));
      peer.chunk(next, body);
      next += body.length;
    }
    const f = await peer.nextOfType('ACK');
    acked = f.header.offset;
    acks.push(acked);
  }
  return acks;
}

/** Reads a download to its end: READY, every chunk (each MD5 checked) and FILE_DOWNLOAD_END. */
export async function receiveDownload(peer: FilePeer): Promise<{
  ready: FileFrameHeader<'READY'>;
  data: Buffer;
  chunks: { offset: number; length: number }[];
  end: FileFrameHeader<'FILE_DOWNLOAD_END'>;
}> {
  const ready = (await peer.nextOfType('READY')).header;
  const parts: Buffer[] = [];
  const chunks: { offset: number; length: number }[] = [];
  let at = ready.offset;
  for (;;) {
    const f = await peer.next();
    if (f.header.type === 'FILE_DOWNLOAD_END') {
      return { ready, data: Buffer.concat(parts), chunks, end: f.header };
    }
    if (f.header.type !== 'FILE_DOWNLOAD_CHUNK') throw new Error(`unexpected ${f.header.type} during a download`);
    if (f.header.offset !== at) throw new Error(`chunk at ${f.header.offset}, expected ${at}`);
    if (md5hex(f.body) !== f.header.md5) throw new Error(`chunk at ${at}: MD5 does not match its body`);
    // The decoder may hand out views of its socket buffers: keep a copy.
    parts.push(Buffer.from(f.body));
    chunks.push({ offset: at, length: f.body.length });
    at += f.body.length;
  }
}
