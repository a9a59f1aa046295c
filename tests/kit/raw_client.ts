/**
 * A test client written only from ../../../shared/ORIGINAL_PROTOCOL.md: what a client
 * of the original Python application puts on the wire. It deliberately imports nothing
 * from shared/, server/ or client/, so it cannot share a bug with the product's own
 * framing or message registry (CONVENTIONS.md 4): the framing (4-byte unsigned
 * big-endian length, then UTF-8 JSON) and the envelope are spelled out here again.
 *
 * It also throws garbage (`sendRaw`, `sendJson`) for the bad-input tests, keeps a log
 * of everything received, and tells when the server closed the connection.
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';

/** Length prefix of every frame: uint32, big-endian. */
export const RAW_HEADER_BYTES = 4;

/** The envelope of the original: every message carries these seven fields. */
export interface RawEnvelope {
  type: string;
  data: Record<string, any>;
  sender: string | null;
  recipient: string | null;
  room_id: string | null;
  /** Seconds since the epoch, float. */
  timestamp: number;
  /** uuid4. */
  message_id: string;
  /** Not in the original: the product's replies name the request they answer. */
  reply_to?: string | null;
  [extra: string]: unknown;
}

export type EnvelopeExtras = Partial<Pick<RawEnvelope, 'sender' | 'recipient' | 'room_id' | 'timestamp' | 'message_id'>> &
  Record<string, unknown>;

export interface CloseInfo {
  /** The server sent FIN ('end') before the socket closed. */
  ended: boolean;
  /** The socket error seen before closing (e.g. ECONNRESET), if any. */
  error: NodeJS.ErrnoException | null;
}

/** Frames a value the way the original does: 4-byte big-endian length, then UTF-8 JSON. */
export function rawFrame(value: unknown): Buffer {
  return rawFrameBytes(Buffer.from(JSON.stringify(value), 'utf8'));
}

/** Puts the length prefix in front of any body (valid JSON or not). */
export function rawFrameBytes(body: Uint8Array): Buffer {
  const out = Buffer.alloc(RAW_HEADER_BYTES + body.length);
  out.writeUInt32BE(body.length, 0);
  Buffer.from(body.buffer, body.byteOffset, body.length).copy(out, RAW_HEADER_BYTES);
  return out;
}

/** An envelope as the original builds it. */
export function rawEnvelope(type: string, data: Record<string, unknown> = {}, extras: EnvelopeExtras = {}): RawEnvelope {
  return {
    type,
    data,
    sender: null,
    recipient: null,
    room_id: null,
    timestamp: Date.now() / 1000,
    message_id: randomUUID(),
    ...extras,
  } as RawEnvelope;
}

interface Waiter {
  predicate: (m: RawEnvelope) => boolean;
  resolve: (m: RawEnvelope) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class RawClient {
  /** Every message received, in order. */
  readonly received: RawEnvelope[] = [];
  /** Frames whose body was not JSON (the server should never send one). */
  readonly badFrames: Buffer[] = [];
  /** Resolves when the socket has closed, for whatever reason. */
  readonly closed: Promise<CloseInfo>;
  isClosed = false;
  /** The server half-closed (FIN). */
  ended = false;
  error: NodeJS.ErrnoException | null = null;
  /** Set once this client has signed in with `connectAs`. */
  userId: string | null = null;

  private buf: Buffer = Buffer.alloc(0);
  /** Messages already handed out by next(): each is handed out once. */
  private readonly taken = new Set<RawEnvelope>();
  private readonly waiters = new Set<Waiter>();

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.ended = true;
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.error ??= e;
    });
    this.closed = new Promise<CloseInfo>((resolve) => {
      socket.once('close', () => {
        this.isClosed = true;
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(new Error(`connection closed while waiting for a message (${this.describeLog()})`));
        }
        this.waiters.clear();
        resolve({ ended: this.ended, error: this.error });
      });
    });
  }

  static connect(port: number, host = '127.0.0.1', timeoutMs = 5000): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`raw connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeListener('error', reject);
        resolve(new RawClient(socket));
      });
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= RAW_HEADER_BYTES) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < RAW_HEADER_BYTES + len) break;
      const body = this.buf.subarray(RAW_HEADER_BYTES, RAW_HEADER_BYTES + len);
      this.buf = this.buf.subarray(RAW_HEADER_BYTES + len);
      let msg: RawEnvelope;
      try {
        msg = JSON.parse(body.toString('utf8')) as RawEnvelope;
      } catch {
        this.badFrames.push(Buffer.from(body));
        continue;
      }
      this.received.push(msg);
      for (const w of this.waiters) {
        if (!this.taken.has(msg) && w.predicate(msg)) {
          this.taken.add(msg);
          this.waiters.delete(w);
          clearTimeout(w.timer);
          w.resolve(msg);
        }
      }
    }
  }

  /** Sends one envelope; returns it (its message_id is the one replies name). */
  send(type: string, data: Record<string, unknown> = {}, extras: EnvelopeExtras = {}): RawEnvelope {
    const env = rawEnvelope(type, data, { sender: this.userId, ...extras });
    this.socket.write(rawFrame(env));
    return env;
  }

  /** Frames and sends any JSON value (the wrong shapes included). */
  sendJson(value: unknown): void {
    this.socket.write(rawFrame(value));
  }

  /** Sends bytes as they are: no framing. Resolves once written (or failed). */
  sendRaw(bytes: Uint8Array | string): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.write(bytes, () => resolve());
    });
  }

  /**
   * The first message not yet handed out that matches, from the log or as it arrives.
   * Rejects after `timeoutMs`, or when the connection closes first.
   */
  next(predicate: (m: RawEnvelope) => boolean = () => true, timeoutMs = 5000): Promise<RawEnvelope> {
    for (const m of this.received) {
      if (!this.taken.has(m) && predicate(m)) {
        this.taken.add(m);
        return Promise.resolve(m);
      }
    }
    if (this.isClosed) return Promise.reject(new Error(`connection is closed (${this.describeLog()})`));
    return new Promise<RawEnvelope>((resolve, reject) => {
      const w: Waiter = {
        predicate,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(new Error(`no matching message within ${timeoutMs} ms (${this.describeLog()})`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  /** The next message of this type (and, optionally, matching `also`). */
  nextOfType(type: string, also: (m: RawEnvelope) => boolean = () => true, timeoutMs = 5000): Promise<RawEnvelope> {
    return this.next((m) => m.type === type && also(m), timeoutMs);
  }

  /**
   * Sends a request and waits for the reply the original would give: the first SUCCESS,
   * ERROR or ACK not yet handed out. The original does not correlate replies, so this
   * does not look at reply_to; callers assert on it themselves.
   */
  async request(type: string, data: Record<string, unknown> = {}, extras: EnvelopeExtras = {}, timeoutMs = 5000) {
    const sent = this.send(type, data, extras);
    const reply = await this.next((m) => m.type === 'SUCCESS' || m.type === 'ERROR' || m.type === 'ACK', timeoutMs);
    return { sent, reply };
  }

  /** CONNECT as the original client does ({username, user_id: ""}); remembers the user_id. */
  async connectAs(username: string, timeoutMs = 5000) {
    const r = await this.request('CONNECT', { username, user_id: '' }, {}, timeoutMs);
    if (r.reply.type === 'SUCCESS' && typeof r.reply.data.user_id === 'string') this.userId = r.reply.data.user_id;
    return r;
  }

  /** Marks everything received so far as handed out: later next() calls see only newer messages. */
  skipReceived(): number {
    let n = 0;
    for (const m of this.received) {
      if (!this.taken.has(m)) {
        this.taken.add(m);
        n++;
      }
    }
    return n;
  }

  /** Messages received but not handed out by next(). */
  pending(): RawEnvelope[] {
    return this.received.filter((m) => !this.taken.has(m));
  }

  private describeLog(): string {
    const types = this.received.slice(-10).map((m) => (m.type === 'ERROR' ? `ERROR:${String(m.data?.code)}` : m.type));
    return `received ${this.received.length}, last: ${types.join(', ') || 'none'}; closed: ${this.isClosed}`;
  }

  /** Ends our side and waits (bounded) for the socket to close. */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.isClosed) return;
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), timeoutMs);
    await this.closed;
    clearTimeout(t);
  }

  /** Drops the connection without a goodbye. */
  destroy(): void {
    this.socket.destroy();
  }
}
