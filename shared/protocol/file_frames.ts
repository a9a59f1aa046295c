/**
 * File-server framing (TCP file port, 8891 by default): every frame is an 8-byte
 * prefix, a msgpack header and a raw body. Chunk bytes travel as they are (no base64).
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |             header length H (uint32, big-endian)              |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |             body length B (uint32, big-endian)                |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |             H bytes: msgpack map, {type, ...fields}           |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |             B bytes: raw body (chunk frames only)             |
 *
 * One transfer per connection: OPEN with a ticket from the control connection, then
 * chunks one way and acknowledgements the other (docs/PROTOCOL.md, "File server").
 * Every header is validated against its type's schema here, so the server and the
 * client see only well-formed frames; anything else is fatal to the connection
 * (FILE_FRAME_INVALID): a transfer resumes on a new connection, so there is nothing to
 * resynchronise.
 */
import { Packr } from 'msgpackr';
import { z } from 'zod';
import { ProtocolError } from '../errors';
import { ByteQueue } from './byte_queue';
import { FileInfoSchema } from './messages';

export const FILE_PROTOCOL_VERSION = 1;
export const FILE_FRAME_PREFIX_BYTES = 8;
/** Largest msgpack header accepted. */
export const MAX_FILE_HEADER_BYTES = 16 * 1024;
/** Chunk sizes a transfer may use. */
export const MIN_CHUNK_SIZE = 16 * 1024;
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024;

const md5Hex = z.string().regex(/^[0-9a-f]{32}$/, 'md5: 32 lowercase hex digits');
const offset = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** Header schema of each frame type; `body` says whether the frame carries bytes. */
export const FILE_FRAME_SCHEMAS = {
  /** client -> server, first frame: the ticket; for a download, where to start (a multiple of chunk_size). */
  OPEN: z.object({ type: z.literal('OPEN'), ticket: z.string().min(1).max(128), version: z.number().int(), offset: offset.optional() }),
  /** server -> client: the ticket is good. For an upload, `offset` is the bytes already verified: send from there. */
  READY: z.object({
    type: z.literal('READY'),
    op: z.enum(['upload', 'download']),
    /** upload_id or file_id. */
    id: z.string(),
    name: z.string(),
    size: offset,
    offset,
    chunk_size: z.number().int().positive(),
    /** Download: MD5 of the whole file. */
    md5: md5Hex.optional(),
  }),
  /** client -> server: `B` bytes of the file from `offset`, with their MD5. */
  FILE_UPLOAD_CHUNK: z.object({ type: z.literal('FILE_UPLOAD_CHUNK'), offset, md5: md5Hex }),
  /** server -> client: every byte before `offset` is verified and written. */
  ACK: z.object({ type: z.literal('ACK'), offset }),
  /** server -> client: the chunk at `offset` was refused (code CHUNK_MD5_MISMATCH); send again from there. */
  NACK: z.object({ type: z.literal('NACK'), offset, code: z.string(), message: z.string() }),
  /** client -> server: every chunk is sent; the MD5 of the whole file. */
  FILE_UPLOAD_END: z.object({ type: z.literal('FILE_UPLOAD_END'), md5: md5Hex }),
  /** server -> client: the upload is stored and listed. */
  DONE: z.object({ type: z.literal('DONE'), file: FileInfoSchema }),
  /** server -> client: `B` bytes of the file from `offset`, with their MD5. */
  FILE_DOWNLOAD_CHUNK: z.object({ type: z.literal('FILE_DOWNLOAD_CHUNK'), offset, md5: md5Hex }),
  /** server -> client: the last chunk was sent. */
  FILE_DOWNLOAD_END: z.object({ type: z.literal('FILE_DOWNLOAD_END'), size: offset, md5: md5Hex }),
  /** client -> server: give up this transfer (an upload's partial file is removed). */
  CANCEL: z.object({ type: z.literal('CANCEL') }),
  /** Either way: the transfer failed; the sender closes the connection. */
  ERROR: z.object({
    type: z.literal('ERROR'),
    code: z.string(),
    message: z.string(),
    hint: z.string().optional(),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
} as const;

export type FileFrameType = keyof typeof FILE_FRAME_SCHEMAS;
export type FileFrameHeader<T extends FileFrameType = FileFrameType> = z.infer<(typeof FILE_FRAME_SCHEMAS)[T]>;
export type AnyFileFrameHeader = { [T in FileFrameType]: FileFrameHeader<T> }[FileFrameType];

/** The frame types that carry a body (and must: an empty chunk is refused). */
export const BODY_FRAME_TYPES: ReadonlySet<FileFrameType> = new Set<FileFrameType>(['FILE_UPLOAD_CHUNK', 'FILE_DOWNLOAD_CHUNK']);

export const FILE_FRAME_TYPES = Object.keys(FILE_FRAME_SCHEMAS) as FileFrameType[];

// Plain msgpack maps (no msgpackr record extension) with the smallest size header, so any
// msgpack library can speak it and the bytes are what docs/PROTOCOL.md shows.
const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });

export interface FileFrame<H extends AnyFileFrameHeader = AnyFileFrameHeader> {
  header: H;
  body: Buffer;
}

export type DecodedFileFrame = { ok: true; frame: FileFrame } | { ok: false; error: ProtocolError };

/**
 * The prefix and header of a frame; write the body after it (no copy of the chunk).
 * Throws when the header is too large or the body does not fit the type.
 */
export function encodeFileFrameHead(header: AnyFileFrameHeader, bodyLength = 0): Buffer {
  if (BODY_FRAME_TYPES.has(header.type) !== bodyLength > 0) {
    throw new RangeError(`${header.type} ${bodyLength > 0 ? 'carries no body' : 'needs a body'}`);
  }
  if (bodyLength > MAX_CHUNK_SIZE) throw new RangeError(`body of ${bodyLength} bytes is larger than ${MAX_CHUNK_SIZE}`);
  const h = packr.pack(header);
  if (h.length > MAX_FILE_HEADER_BYTES) throw new RangeError(`header of ${h.length} bytes is larger than ${MAX_FILE_HEADER_BYTES}`);
  const out = Buffer.allocUnsafe(FILE_FRAME_PREFIX_BYTES + h.length);
  out.writeUInt32BE(h.length, 0);
  out.writeUInt32BE(bodyLength, 4);
  h.copy(out, FILE_FRAME_PREFIX_BYTES);
  return out;
}

/** A whole frame in one buffer (tests, and frames without a body). */
export function encodeFileFrame(header: AnyFileFrameHeader, body: Uint8Array = Buffer.alloc(0)): Buffer {
  const head = encodeFileFrameHead(header, body.length);
  return body.length ? Buffer.concat([head, body]) : head;
}

/** A header validated against its type's schema, or why not. */
export function parseFileFrameHeader(value: unknown, bodyLength: number): AnyFileFrameHeader | string {
  // A plain object only: msgpackr turns the unused byte 0xc1 into an object of its own class.
  if (!value || typeof value !== 'object' || Object.getPrototypeOf(value) !== Object.prototype) return 'header is not a map';
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(FILE_FRAME_SCHEMAS, type)) {
    return `unknown frame type ${JSON.stringify(String(type)).slice(0, 40)}`;
  }
  const t = type as FileFrameType;
  if (BODY_FRAME_TYPES.has(t) !== bodyLength > 0) return `${t} ${bodyLength > 0 ? 'carries no body' : 'needs a body'}`;
  const parsed = FILE_FRAME_SCHEMAS[t].safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return `${t}: ${issue.path.join('.') || 'header'}: ${issue.message}`;
  }
  return parsed.data as AnyFileFrameHeader;
}

export interface FileFrameDecoderOptions {
  /** Largest body accepted (default MAX_CHUNK_SIZE). */
  maxBodyBytes?: number;
}

/**
 * Pure stream decoder: push(chunk) -> frames. The header is checked as soon as it is
 * complete, before any of the body is waited for: a frame whose type carries no body,
 * or whose body is over `maxBodyBytes`, is refused without buffering it. After the
 * first bad frame it reports that one error and then nothing more (the connection is
 * to be closed).
 */
export class FileFrameDecoder {
  /** Largest body accepted from now on; the server lowers it per state (0 before OPEN, the chunk size during an upload). */
  maxBodyBytes: number;
  /** Said when a body is over maxBodyBytes (what the limit is for). */
  bodyLimitReason = '';
  private readonly queue = new ByteQueue();
  private headerLength = -1;
  private bodyLength = -1;
  /** The current frame's header, once read and checked; its body is still due. */
  private header: AnyFileFrameHeader | null = null;
  private failed = false;

  constructor(options: FileFrameDecoderOptions = {}) {
    this.maxBodyBytes = options.maxBodyBytes ?? MAX_CHUNK_SIZE;
  }

  get bufferedBytes(): number {
    return this.queue.length;
  }

  push(chunk: Uint8Array): DecodedFileFrame[] {
    const out: DecodedFileFrame[] = [];
    if (this.failed) return out;
    this.queue.push(chunk);
    for (;;) {
      if (this.headerLength < 0) {
        if (this.queue.length < FILE_FRAME_PREFIX_BYTES) break;
        const prefix = this.queue.take(FILE_FRAME_PREFIX_BYTES);
        this.headerLength = prefix.readUInt32BE(0);
        this.bodyLength = prefix.readUInt32BE(4);
        if (this.headerLength === 0 || this.headerLength > MAX_FILE_HEADER_BYTES) {
          out.push(this.fail(`header length ${this.headerLength} is not 1 to ${MAX_FILE_HEADER_BYTES}`));
          break;
        }
        if (this.bodyLength > this.maxBodyBytes) {
          out.push(this.fail(`body length ${this.bodyLength} is larger than ${this.maxBodyBytes}${this.bodyLimitReason ? ` (${this.bodyLimitReason})` : ''}`));
          break;
        }
      }
      if (this.header === null) {
        if (this.queue.length < this.headerLength) break;
        let value: unknown;
        try {
          value = packr.unpack(this.queue.take(this.headerLength));
        } catch (e) {
          out.push(this.fail(`header is not msgpack: ${(e as Error).message}`));
          break;
        }
        const header = parseFileFrameHeader(value, this.bodyLength);
        if (typeof header === 'string') {
          out.push(this.fail(header));
          break;
        }
        this.header = header;
      }
      if (this.queue.length < this.bodyLength) break;
      // The body is copied only when it spans socket chunks; usually it is a view.
      const body = this.queue.take(this.bodyLength);
      out.push({ ok: true, frame: { header: this.header, body } });
      this.header = null;
      this.headerLength = this.bodyLength = -1;
    }
    this.queue.compact();
    return out;
  }

  /** Bytes of a frame not yet complete when the stream ended (0 when it ended between frames). */
  get partialBytes(): number {
    if (this.headerLength < 0) return this.queue.length;
    return FILE_FRAME_PREFIX_BYTES + (this.header ? this.headerLength : 0) + this.queue.length;
  }

  private fail(reason: string): DecodedFileFrame {
    this.failed = true;
    this.queue.clear();
    return { ok: false, error: new ProtocolError('FILE_FRAME_INVALID', { reason }) };
  }
}

/** An ERROR frame for a ProtocolError. */
export function errorFrame(e: ProtocolError): FileFrameHeader<'ERROR'> {
  const w = e.toWire();
  return { type: 'ERROR', code: w.code, message: w.message, hint: w.hint, ...(w.details ? { details: w.details } : {}) };
}
