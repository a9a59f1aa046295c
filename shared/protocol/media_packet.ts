/**
 * The one binary header every media datagram carries (UDP 8889 camera, 8890 audio,
 * 8891 screen, 8892 feedback), its codec, fragmentation of a frame into datagrams,
 * and the receiver/sender report records of the feedback port. docs/PROTOCOL.md
 * ("Media plane") draws the same bytes.
 *
 * All integers are big-endian (network order). The header is fixed-size so the relay
 * reads the few fields it needs at fixed offsets and never parses the payload.
 *
 * ```
 *  0       2       3       4       5       6       7       8
 *  | magic 'LV'    | ver   | kind  | flags | layer | level | rsvd  |
 *  8                               12
 *  | stream_id (u32)               |
 *  12                                                              20
 *  | token (8 bytes, secret; zero in packets the server forwards)  |
 *  20                              24                              28
 *  | seq (u32)                     | frame_id (u32)                |
 *  28              30              32                              40
 *  | frag_index    | frag_count    | capture_ts_us (u64)           |
 *  40 ... payload (at most 1200 bytes)
 * ```
 */

export const MEDIA_MAGIC = 0x4c56; // "LV"
export const MEDIA_VERSION = 1;
export const MEDIA_HEADER_BYTES = 40;
/** Payload bytes per datagram at most: 40 + 1200 + 8 (UDP) + 20 (IPv4) < 1500, never IP-fragmented. */
export const MAX_MEDIA_PAYLOAD = 1200;
export const MAX_DATAGRAM_BYTES = MEDIA_HEADER_BYTES + MAX_MEDIA_PAYLOAD;
/** Most fragments one frame may have (a 1.2 MB JPEG); larger counts are refused as absurd. */
export const MAX_FRAGMENTS = 1024;
export const TOKEN_BYTES = 8;

export const OFFSET = Object.freeze({
  magic: 0,
  version: 2,
  kind: 3,
  flags: 4,
  layer: 5,
  level: 6,
  streamId: 8,
  token: 12,
  seq: 20,
  frameId: 24,
  fragIndex: 28,
  fragCount: 30,
  captureTs: 32,
});

/**
 * The relay's four UDP ports, in this order everywhere (a port index in code is an
 * index into this list). Each stream kind arrives on its own; feedback carries reports.
 */
export const MEDIA_PORT_NAMES = ['video', 'audio', 'screen', 'feedback'] as const;
export type MediaPortName = (typeof MEDIA_PORT_NAMES)[number];
export type MediaPorts = Record<MediaPortName, number>;
/** Port index of each media kind (VIDEO 1, AUDIO 2, SCREEN 3); the feedback port is index 3. */
export const PORT_INDEX_OF_KIND: Readonly<Record<number, number>> = Object.freeze({ 1: 0, 2: 1, 3: 2 });
export const FEEDBACK_PORT_INDEX = 3;
/** HELLO / HELLO_ACK payload: u64 client time, u64 server time (ACK only), 8-byte cookie. */
export const HELLO_PAYLOAD_BYTES = 24;

/** What a datagram carries. Media kinds must arrive on their own port; the rest on any. */
export const MediaKind = Object.freeze({
  VIDEO: 1,
  AUDIO: 2,
  SCREEN: 3,
  /** Client -> server: register this address for this port (also the keepalive). Payload: u64 client time (us). */
  HELLO: 8,
  /** Server -> client: the hello was accepted. Payload: u64 echoed client time, u64 server time (us). */
  HELLO_ACK: 9,
  /** Receiver -> server on the feedback port: per-stream reception report records. */
  RECEIVER_REPORT: 10,
  /** Server -> sender on the feedback port: reports about the sender's streams, aggregated over receivers. */
  SENDER_REPORT: 11,
});
export type MediaKindValue = (typeof MediaKind)[keyof typeof MediaKind];

export const MEDIA_KIND_NAMES: Readonly<Record<number, string>> = Object.freeze({
  1: 'video',
  2: 'audio',
  3: 'screen',
  8: 'hello',
  9: 'hello_ack',
  10: 'receiver_report',
  11: 'sender_report',
});

/** The media kinds that carry frames, by name (as in signalling and stats). */
export const STREAM_KINDS = Object.freeze({ video: MediaKind.VIDEO, audio: MediaKind.AUDIO, screen: MediaKind.SCREEN });
export type StreamKindName = keyof typeof STREAM_KINDS;
/** The name of a stream kind (1 video, 2 audio, 3 screen); undefined for other kinds. */
export const STREAM_KIND_NAME: Readonly<Record<number, StreamKindName | undefined>> = Object.freeze({
  [MediaKind.VIDEO]: 'video',
  [MediaKind.AUDIO]: 'audio',
  [MediaKind.SCREEN]: 'screen',
});
export function isStreamKind(k: number): boolean {
  return k === MediaKind.VIDEO || k === MediaKind.AUDIO || k === MediaKind.SCREEN;
}

export const MediaFlags = Object.freeze({
  /** The frame decodes on its own (every JPEG does). */
  KEYFRAME: 0x01,
  /** Audio: the sender's voice activity detector says this frame is speech. */
  VOICE: 0x02,
  /** HELLO_ACK: the address is registered (the hello echoed the right cookie). */
  REGISTERED: 0x80,
});

/** `level`: audio level of the frame in -dBov, 0 (loudest) .. 127 (silence), as RFC 6464. 127 for non-audio. */
export const LEVEL_SILENT = 127;

export interface MediaHeader {
  kind: number;
  flags: number;
  layer: number;
  level: number;
  streamId: number;
  /** 8 bytes. */
  token: Buffer;
  seq: number;
  frameId: number;
  fragIndex: number;
  fragCount: number;
  /** Capture time in microseconds in the server's time base (see clock offset in docs/PROTOCOL.md). */
  captureTsUs: number;
}

export type MediaPacketProblem =
  | 'too_short'
  | 'too_long'
  | 'bad_magic'
  | 'bad_version'
  | 'bad_kind'
  | 'bad_fragment';

const TWO32 = 2 ** 32;

export function writeU64(buf: Buffer, value: number, offset: number): void {
  const v = Math.max(0, Math.floor(value));
  buf.writeUInt32BE(Math.floor(v / TWO32) >>> 0, offset);
  buf.writeUInt32BE(v % TWO32 >>> 0, offset + 4);
}

export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * TWO32 + buf.readUInt32BE(offset + 4);
}

/** Writes the header into `buf` at 0 (buf must hold at least MEDIA_HEADER_BYTES). */
export function writeMediaHeader(buf: Buffer, h: MediaHeader): void {
  buf.writeUInt16BE(MEDIA_MAGIC, OFFSET.magic);
  buf[OFFSET.version] = MEDIA_VERSION;
  buf[OFFSET.kind] = h.kind;
  buf[OFFSET.flags] = h.flags;
  buf[OFFSET.layer] = h.layer;
  buf[OFFSET.level] = h.level;
  buf[7] = 0;
  buf.writeUInt32BE(h.streamId >>> 0, OFFSET.streamId);
  if (h.token.length !== TOKEN_BYTES) throw new RangeError(`media token must be ${TOKEN_BYTES} bytes`);
  h.token.copy(buf, OFFSET.token);
  buf.writeUInt32BE(h.seq >>> 0, OFFSET.seq);
  buf.writeUInt32BE(h.frameId >>> 0, OFFSET.frameId);
  buf.writeUInt16BE(h.fragIndex, OFFSET.fragIndex);
  buf.writeUInt16BE(h.fragCount, OFFSET.fragCount);
  writeU64(buf, h.captureTsUs, OFFSET.captureTs);
}

/** One datagram: header + payload (payload at most MAX_MEDIA_PAYLOAD). */
export function encodeMediaPacket(h: MediaHeader, payload: Buffer = EMPTY): Buffer {
  if (payload.length > MAX_MEDIA_PAYLOAD) throw new RangeError(`media payload of ${payload.length} bytes exceeds ${MAX_MEDIA_PAYLOAD}`);
  const buf = Buffer.allocUnsafe(MEDIA_HEADER_BYTES + payload.length);
  writeMediaHeader(buf, h);
  payload.copy(buf, MEDIA_HEADER_BYTES);
  return buf;
}

const EMPTY = Buffer.alloc(0);

/**
 * A datagram that is not part of a frame (HELLO, HELLO_ACK, reports): one fragment of
 * one, no layer, silent level; `seq` and `captureTsUs` as the kind uses them.
 */
export function encodeControlPacket(
  kind: number,
  streamId: number,
  token: Buffer,
  payload: Buffer,
  o: { flags?: number; seq?: number; captureTsUs?: number } = {},
): Buffer {
  return encodeMediaPacket(
    {
      kind,
      flags: o.flags ?? 0,
      layer: 0,
      level: LEVEL_SILENT,
      streamId,
      token,
      seq: o.seq ?? 0,
      frameId: 0,
      fragIndex: 0,
      fragCount: 1,
      captureTsUs: o.captureTsUs ?? 0,
    },
    payload,
  );
}

/**
 * Why a datagram is not a well-formed media packet, or null. Cheap: the relay calls
 * it on every packet. Fragment fields are checked for media kinds only.
 */
export function mediaPacketProblem(buf: Buffer): MediaPacketProblem | null {
  if (buf.length < MEDIA_HEADER_BYTES) return 'too_short';
  if (buf.length > MAX_DATAGRAM_BYTES) return 'too_long';
  if (buf[0] !== 0x4c || buf[1] !== 0x56) return 'bad_magic';
  if (buf[OFFSET.version] !== MEDIA_VERSION) return 'bad_version';
  const kind = buf[OFFSET.kind];
  if (!MEDIA_KIND_NAMES[kind]) return 'bad_kind';
  if (isStreamKind(kind)) {
    const count = buf.readUInt16BE(OFFSET.fragCount);
    if (count === 0 || count > MAX_FRAGMENTS || buf.readUInt16BE(OFFSET.fragIndex) >= count) return 'bad_fragment';
  }
  return null;
}

/** Decodes a header (after mediaPacketProblem said null). The token is a copy. */
export function decodeMediaHeader(buf: Buffer): MediaHeader {
  return {
    kind: buf[OFFSET.kind],
    flags: buf[OFFSET.flags],
    layer: buf[OFFSET.layer],
    level: buf[OFFSET.level],
    streamId: buf.readUInt32BE(OFFSET.streamId),
    token: Buffer.from(buf.subarray(OFFSET.token, OFFSET.token + TOKEN_BYTES)),
    seq: buf.readUInt32BE(OFFSET.seq),
    frameId: buf.readUInt32BE(OFFSET.frameId),
    fragIndex: buf.readUInt16BE(OFFSET.fragIndex),
    fragCount: buf.readUInt16BE(OFFSET.fragCount),
    captureTsUs: readU64(buf, OFFSET.captureTs),
  };
}

export function mediaPayload(buf: Buffer): Buffer {
  return buf.subarray(MEDIA_HEADER_BYTES);
}

/** Token <-> the hex string given over TCP. */
export function tokenFromHex(hex: string): Buffer {
  if (!/^[0-9a-f]{16}$/i.test(hex)) throw new RangeError('a media token is 16 hex digits');
  return Buffer.from(hex, 'hex');
}

/** Number of datagrams a frame of `bytes` needs (at least 1: an empty frame is one empty fragment). */
export function fragmentCount(bytes: number, maxPayload = MAX_MEDIA_PAYLOAD): number {
  return Math.max(1, Math.ceil(bytes / maxPayload));
}

export interface FrameMeta {
  kind: number;
  streamId: number;
  token: Buffer;
  frameId: number;
  /** Sequence number of the first fragment; the others follow (mod 2^32). */
  firstSeq: number;
  captureTsUs: number;
  flags?: number;
  layer?: number;
  level?: number;
}

/**
 * Splits a frame into datagrams of at most `maxPayload` payload bytes, in order.
 * Fragments are near-equal in size (not full ones and a small tail), which spreads
 * loss evenly and keeps pacing smooth.
 */
export function fragmentFrame(frame: Buffer, meta: FrameMeta, maxPayload = MAX_MEDIA_PAYLOAD): Buffer[] {
  if (maxPayload < 1 || maxPayload > MAX_MEDIA_PAYLOAD) throw new RangeError(`maxPayload must be 1..${MAX_MEDIA_PAYLOAD}`);
  const count = fragmentCount(frame.length, maxPayload);
  if (count > MAX_FRAGMENTS) throw new RangeError(`a frame of ${frame.length} bytes needs more than ${MAX_FRAGMENTS} fragments`);
  const base = Math.floor(frame.length / count);
  const extra = frame.length % count;
  const out: Buffer[] = new Array(count);
  let at = 0;
  for (let i = 0; i < count; i++) {
    const size = base + (i < extra ? 1 : 0);
    const buf = Buffer.allocUnsafe(MEDIA_HEADER_BYTES + size);
    writeMediaHeader(buf, {
      kind: meta.kind,
      flags: meta.flags ?? MediaFlags.KEYFRAME,
      layer: meta.layer ?? 0,
      level: meta.level ?? LEVEL_SILENT,
      streamId: meta.streamId,
      token: meta.token,
      seq: (meta.firstSeq + i) >>> 0,
      frameId: meta.frameId,
      fragIndex: i,
      fragCount: count,
      captureTsUs: meta.captureTsUs,
    });
    frame.copy(buf, MEDIA_HEADER_BYTES, at, at + size);
    at += size;
    out[i] = buf;
  }
  return out;
}

/** a is after b in 32-bit serial-number arithmetic (RFC 1982). */
export function seqAfter(a: number, b: number): boolean {
  const d = (a - b) >>> 0;
  return d !== 0 && d < 0x80000000;
}
/** a - b as a signed 32-bit distance. */
export function seqDiff(a: number, b: number): number {
  return ((a - b) | 0);
}

// ------------------------------------------------------------ feedback records

/**
 * RECEIVER_REPORT payload: u8 count, 3 reserved bytes, then `count` records of 32 bytes:
 * ```
 *  0         4     5      6           8                12               16
 *  | stream  | kind| layer| loss_bp   | expected (u32) | received (u32) |
 *  16                 20                 24              28              32
 *  | frames_delivered | frames_dropped   | jitter_us     | delay_us      |
 * ```
 * Counts cover the interval since the previous report; loss_bp is the packet loss of
 * that interval in basis points (0..10000); delay is capture-to-reassembled.
 */
export interface ReceptionRecord {
  streamId: number;
  kind: number;
  layer: number;
  lossBp: number;
  expected: number;
  received: number;
  framesDelivered: number;
  framesDropped: number;
  jitterUs: number;
  delayUs: number;
}
export const RECEPTION_RECORD_BYTES = 32;
export const REPORT_PREFIX_BYTES = 4;
export const MAX_RECORDS_PER_REPORT = Math.floor((MAX_MEDIA_PAYLOAD - REPORT_PREFIX_BYTES) / RECEPTION_RECORD_BYTES);

function u32(n: number): number {
  return Math.max(0, Math.min(0xffffffff, Math.round(n))) >>> 0;
}
function u16(n: number, max = 0xffff): number {
  return Math.max(0, Math.min(max, Math.round(n)));
}

/** Both report payloads: u8 count, 3 reserved bytes, then `count` records of `size` bytes. */
function encodeRecords<T>(records: readonly T[], size: number, write: (buf: Buffer, o: number, r: T) => void): Buffer {
  const buf = Buffer.alloc(REPORT_PREFIX_BYTES + records.length * size);
  buf[0] = records.length;
  records.forEach((r, i) => write(buf, REPORT_PREFIX_BYTES + i * size, r));
  return buf;
}

/** The records of a report payload, or null when it is malformed (the count disagrees with the length, or `read` refuses one). */
function decodeRecords<T>(payload: Buffer, size: number, read: (o: number) => T | null): T[] | null {
  if (payload.length < REPORT_PREFIX_BYTES) return null;
  const count = payload[0];
  if (payload.length !== REPORT_PREFIX_BYTES + count * size) return null;
  const out: T[] = [];
  for (let i = 0, o = REPORT_PREFIX_BYTES; i < count; i++, o += size) {
    const r = read(o);
    if (r === null) return null;
    out.push(r);
  }
  return out;
}

export function encodeReceptionRecords(records: readonly ReceptionRecord[]): Buffer {
  if (records.length > MAX_RECORDS_PER_REPORT) throw new RangeError(`at most ${MAX_RECORDS_PER_REPORT} records per report`);
  return encodeRecords(records, RECEPTION_RECORD_BYTES, (buf, o, r) => {
    buf.writeUInt32BE(r.streamId >>> 0, o);
    buf[o + 4] = r.kind;
    buf[o + 5] = r.layer;
    buf.writeUInt16BE(u16(r.lossBp, 10000), o + 6);
    buf.writeUInt32BE(u32(r.expected), o + 8);
    buf.writeUInt32BE(u32(r.received), o + 12);
    buf.writeUInt32BE(u32(r.framesDelivered), o + 16);
    buf.writeUInt32BE(u32(r.framesDropped), o + 20);
    buf.writeUInt32BE(u32(r.jitterUs), o + 24);
    buf.writeUInt32BE(u32(r.delayUs), o + 28);
  });
}

/** Decodes the records, or null when the payload is malformed (count disagrees with the length). */
export function decodeReceptionRecords(payload: Buffer): ReceptionRecord[] | null {
  return decodeRecords(payload, RECEPTION_RECORD_BYTES, (o) => {
    const lossBp = payload.readUInt16BE(o + 6);
    if (lossBp > 10000) return null;
    return {
      streamId: payload.readUInt32BE(o),
      kind: payload[o + 4],
      layer: payload[o + 5],
      lossBp,
      expected: payload.readUInt32BE(o + 8),
      received: payload.readUInt32BE(o + 12),
      framesDelivered: payload.readUInt32BE(o + 16),
      framesDropped: payload.readUInt32BE(o + 20),
      jitterUs: payload.readUInt32BE(o + 24),
      delayUs: payload.readUInt32BE(o + 28),
    };
  });
}

/**
 * SENDER_REPORT payload: u8 count, 3 reserved, then `count` records of 24 bytes, one
 * per stream of the sender, aggregated over the receivers' latest reports:
 * ```
 *  0     1      2            4          6          8              12            16                20               24
 *  | kind| layer| receivers  | loss_avg | loss_max | jitter_max_us| delay_max_us| frames_delivered | frames_dropped |
 * ```
 */
export interface SenderAggregate {
  kind: number;
  layer: number;
  receivers: number;
  lossAvgBp: number;
  lossMaxBp: number;
  jitterMaxUs: number;
  delayMaxUs: number;
  framesDelivered: number;
  framesDropped: number;
}
export const SENDER_RECORD_BYTES = 24;

export function encodeSenderAggregates(records: readonly SenderAggregate[]): Buffer {
  const n = Math.min(records.length, Math.floor((MAX_MEDIA_PAYLOAD - REPORT_PREFIX_BYTES) / SENDER_RECORD_BYTES));
  return encodeRecords(records.slice(0, n), SENDER_RECORD_BYTES, (buf, o, r) => {
    buf[o] = r.kind;
    buf[o + 1] = r.layer;
    buf.writeUInt16BE(u16(r.receivers), o + 2);
    buf.writeUInt16BE(u16(r.lossAvgBp, 10000), o + 4);
    buf.writeUInt16BE(u16(r.lossMaxBp, 10000), o + 6);
    buf.writeUInt32BE(u32(r.jitterMaxUs), o + 8);
    buf.writeUInt32BE(u32(r.delayMaxUs), o + 12);
    buf.writeUInt32BE(u32(r.framesDelivered), o + 16);
    buf.writeUInt32BE(u32(r.framesDropped), o + 20);
  });
}

export function decodeSenderAggregates(payload: Buffer): SenderAggregate[] | null {
  return decodeRecords(payload, SENDER_RECORD_BYTES, (o) => ({
    kind: payload[o],
    layer: payload[o + 1],
    receivers: payload.readUInt16BE(o + 2),
    lossAvgBp: payload.readUInt16BE(o + 4),
    lossMaxBp: payload.readUInt16BE(o + 6),
    jitterMaxUs: payload.readUInt32BE(o + 8),
    delayMaxUs: payload.readUInt32BE(o + 12),
    framesDelivered: payload.readUInt32BE(o + 16),
    framesDropped: payload.readUInt32BE(o + 20),
  }));
}

/** Wall-clock microseconds with sub-millisecond resolution (Date.now() alone steps by 1 ms). */
const ORIGIN_US = Date.now() * 1000 - performance.now() * 1000;
export function nowUs(): number {
  return Math.round(ORIGIN_US + performance.now() * 1000);
}
