/**
 * One control connection: socket, frame decoder, in-order message queue and
 * backpressure. It knows nothing of rooms or chat; the server hands it a
 * `dispatch` function and gets whole decoded messages.
 *
 * Messages of one connection are handled strictly in order. Most handlers are
 * synchronous; when one returns a promise (a password hash), the queue waits for
 * it, and the socket is paused if the queue grows, so a flood cannot pile up.
 */
import type net from 'node:net';
import { LIMITS } from '../shared/constants';
import { ProtocolError, type ErrorCode } from '../shared/errors';
import { encodeFrame, FrameDecoder, type FrameDecoderOptions } from '../shared/protocol/framing';
import type { Envelope } from '../shared/protocol/messages';
import type { User } from './user_manager';

export type DispatchFn = (session: Session, message: unknown) => void | Promise<void>;

const QUEUE_PAUSE_AT = 1024;

/** Queued after the last good frame when the stream broke: handled in order, then the connection closes. */
class FatalFrame {
  constructor(readonly error: ProtocolError) {}
}

export interface SessionOptions extends FrameDecoderOptions {
  maxSendBufferBytes: number;
}

export interface SessionCounters {
  messagesIn: number;
  messagesOut: number;
  bytesIn: number;
  bytesOut: number;
}

let nextSessionId = 1;

export class Session {
  readonly id = nextSessionId++;
  readonly remote: string;
  readonly decoder: FrameDecoder;
  user: User | null = null;
  /** performance.now() of the last message received. */
  lastSeen = performance.now();
  readonly openedAt = performance.now();
  /** What the client listed in CONNECT. */
  capabilities: string[] = [];
  closed = false;
  /** Set when the close was announced (DISCONNECT, fatal error): the user leaves without a resume window. */
  closeReason: string | null = null;
  private readonly queue: unknown[] = [];
  private busy = false;
  private paused = false;
  private corked = false;

  constructor(
    readonly socket: net.Socket,
    private readonly opts: SessionOptions,
    private readonly dispatch: DispatchFn,
    private readonly counters: SessionCounters,
    private readonly onError: (session: Session, error: unknown) => void,
  ) {
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.decoder = new FrameDecoder(opts);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.counters.bytesIn += chunk.length;
    for (const frame of this.decoder.push(chunk)) {
      if (frame.ok) {
        this.queue.push(frame.value);
      } else if (frame.fatal) {
        // Frames that arrived whole before the break are still answered first.
        this.queue.push(new FatalFrame(frame.error));
        break;
      } else {
        // Keep the error in sequence with the messages around it.
        this.queue.push(frame.error);
      }
    }
    this.drain();
  }

  private drain(): void {
    while (!this.busy && this.queue.length > 0 && !this.closed) {
      const msg = this.queue.shift();
      this.lastSeen = performance.now();
      if (msg instanceof FatalFrame) {
        this.fail(msg.error);
        return;
      }
      if (msg instanceof ProtocolError) {
        this.sendError(msg, null);
        continue;
      }
      this.counters.messagesIn++;
      let result: void | Promise<void>;
      try {
        result = this.dispatch(this, msg);
      } catch (e) {
        this.onError(this, e);
        continue;
      }
      if (result instanceof Promise) {
        this.busy = true;
        result
          .catch((e: unknown) => this.onError(this, e))
          .finally(() => {
            this.busy = false;
            this.drain();
          });
      }
    }
    if (this.queue.length > QUEUE_PAUSE_AT && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (this.paused && this.queue.length === 0) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /** Send an envelope. Returns false when the connection is closed. */
  send(envelope: Envelope<string, unknown>): boolean {
    return this.sendFrame(encodeFrame(envelope));
  }

  /** Send a frame already encoded (broadcasts encode once and share the buffer). */
  sendFrame(frame: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return false;
    if (frame.length > LIMITS.maxInboundFrameBytes) {
      // The limits on names, chat, settings and rooms keep every message far below this;
      // a frame past it would make the client drop the link, so it is never sent.
      this.onError(this, new Error(`refused to send a ${frame.length}-byte frame (limit ${LIMITS.maxInboundFrameBytes})`));
      return false;
    }
    this.counters.messagesOut++;
    this.counters.bytesOut += frame.length;
    // Writes are gathered until the loop has handled every socket that was ready, then
    // leave in one writev: a chat to 49 people costs 49 syscalls per loop turn, not per
    // message. setImmediate runs in the same turn, right after the I/O callbacks.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    this.socket.write(frame);
    if (this.socket.writableLength > this.opts.maxSendBufferBytes) {
      // The peer is not reading: flushing is pointless, so the socket goes now and the user with it.
      this.closeReason = 'SLOW_CONSUMER';
      this.close('SLOW_CONSUMER');
      this.socket.destroy();
      return false;
    }
    return true;
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  sendError(error: ProtocolError, replyTo: string | null): void {
    this.send(errorEnvelope(error, replyTo));
  }

  /** Tell the peer why (when the socket can still take it), then close. */
  fail(error: ProtocolError, tell = true): void {
    if (this.closed) return;
    if (tell) this.sendError(error, null);
    this.close(error.code);
  }

  /** Close after flushing what is queued; destroy if the peer does not read it soon. */
  close(reason: ErrorCode | string = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason ??= reason;
    this.queue.length = 0;
    if (this.corked) this.uncork();
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 2000);
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
  }
}

export function errorEnvelope(error: ProtocolError, replyTo: string | null): Envelope<'ERROR', ReturnType<ProtocolError['toWire']>> {
  return {
    type: 'ERROR',
    data: error.toWire(),
    sender: null,
    recipient: null,
    room_id: null,
    timestamp: Date.now() / 1000,
    message_id: crypto.randomUUID(),
    reply_to: replyTo,
  };
}
