/**
 * Control-connection framing: each frame is a 4-byte unsigned big-endian length,
 * then that many bytes of UTF-8 JSON (../shared/ORIGINAL_PROTOCOL.md "Framing").
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |                 body length N (uint32, big-endian)            |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |                 N bytes of UTF-8 JSON ...                     |
 *
 * The decoder is pure: it knows nothing of sockets (pg-protocol's Parser, ws' Receiver).
 * A frame whose body is bad (not UTF-8, not JSON, too deep) is reported and skipped:
 * the length prefix keeps the stream in sync. A declared length over the limit is
 * fatal: the decoder stops, since skipping gigabytes is no way to stay in sync.
 */
import { LIMITS } from '../constants';
import { ProtocolError } from '../errors';
import { ByteQueue } from './byte_queue';

export const FRAME_HEADER_BYTES = 4;

export interface FrameDecoderOptions {
  /** Largest accepted body in bytes (default 1 MiB). */
  maxFrameBytes?: number;
  /** Deepest accepted JSON nesting of objects and arrays (default 32). */
  maxDepth?: number;
}

export type DecodedFrame =
  | { ok: true; value: unknown; size: number }
  | { ok: false; error: ProtocolError; size: number; fatal: boolean };

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class FrameDecoder {
  readonly maxFrameBytes: number;
  readonly maxDepth: number;
  private readonly pending = new ByteQueue();
  /** Body length of the frame being read, once its header is complete. */
  private need = -1;
  private failed: ProtocolError | null = null;

  constructor(options: FrameDecoderOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? LIMITS.maxFrameBytes;
    this.maxDepth = options.maxDepth ?? LIMITS.maxJsonDepth;
  }

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes(): number {
    return this.pending.length;
  }

  /** Feed bytes; returns every frame they complete, in order. */
  push(chunk: Uint8Array): DecodedFrame[] {
    if (this.failed) return [];
    const out: DecodedFrame[] = [];
    if (chunk.length === 0) return out;
    this.pending.push(chunk);
    for (;;) {
      if (this.need < 0) {
        if (this.pending.length < FRAME_HEADER_BYTES) break;
        const len = this.pending.take(FRAME_HEADER_BYTES).readUInt32BE(0);
        if (len > this.maxFrameBytes) {
          this.failed = new ProtocolError('FRAME_TOO_LARGE', { size: len, limit: this.maxFrameBytes });
          this.pending.clear();
          out.push({ ok: false, error: this.failed, size: len, fatal: true });
          break;
        }
        this.need = len;
      }
      if (this.pending.length < this.need) break;
      const body = this.pending.take(this.need);
      this.need = -1;
      out.push(this.decodeBody(body));
    }
    this.pending.compact();
    return out;
  }

  /** Call when the stream ends: throws FRAME_TRUNCATED if a frame was cut short. */
  end(): void {
    if (this.failed) return;
    if (this.pending.length > 0 || this.need >= 0) {
      const need = this.need >= 0 ? this.need + FRAME_HEADER_BYTES : FRAME_HEADER_BYTES;
      const have = this.need >= 0 ? this.pending.length + FRAME_HEADER_BYTES : this.pending.length;
      this.pending.clear();
      this.need = -1;
      throw new ProtocolError('FRAME_TRUNCATED', { have, need });
    }
  }

  private decodeBody(body: Buffer): DecodedFrame {
    const size = body.length;
    let text: string;
    try {
      text = utf8.decode(body);
    } catch {
      return { ok: false, error: new ProtocolError('FRAME_INVALID_UTF8'), size, fatal: false };
    }
    // Depth is checked on the bytes before parsing, so a deeply nested body costs one
    // linear scan and never reaches JSON.parse. A body shorter than the limit cannot exceed it.
    if (size > this.maxDepth && jsonDepthExceeds(body, this.maxDepth)) {
      return { ok: false, error: new ProtocolError('FRAME_TOO_DEEP', { limit: this.maxDepth }), size, fatal: false };
    }
    try {
      return { ok: true, value: JSON.parse(text), size };
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      return { ok: false, error: new ProtocolError('FRAME_INVALID_JSON', { reason }), size, fatal: false };
    }
  }
}

/**
 * True when the JSON text nests objects/arrays deeper than `limit`. Brackets inside
 * strings do not count. Works on UTF-8 bytes: multi-byte sequences never contain
 * ASCII bytes, so they cannot be mistaken for brackets or quotes.
 */
export function jsonDepthExceeds(bytes: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > limit) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return false;
}

/** Encode one value as a frame: 4-byte big-endian length, then UTF-8 JSON. */
export function encodeFrame(value: unknown): Buffer {
  return encodeFrameText(JSON.stringify(value));
}

/** Frame a JSON text that is already serialized. */
export function encodeFrameText(json: string): Buffer {
  const len = Buffer.byteLength(json, 'utf8');
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + len);
  out.writeUInt32BE(len, 0);
  out.write(json, FRAME_HEADER_BYTES, 'utf8');
  return out;
}
