/**
 * The payload of an audio datagram (kind 2, UDP 8890): the bytes after the 40-byte media
 * header. It carries this frame's Opus packet (the header's frame_id) and copies of up to
 * MAX_REDUNDANCY earlier packets, so that a receiver recovers a lost packet exactly from
 * the next one. This is RFC 2198 redundancy as Chrome sends it for Opus ("RED"), because
 * Opus' own in-band FEC cannot be decoded through @discordjs/opus (see opus_codec.ts).
 * The relay never reads it; docs/PROTOCOL.md draws the same bytes.
 *
 * ```
 *  0               1               2               3
 *  +---------------+---------------+-------------------------------+
 *  |   count R     |  distance_1   |   length_1 (u16, big-endian)  |   R = 0..2
 *  +---------------+---------------+-------------------------------+
 *  |  distance_2   |   length_2 (u16, BE)          |  ... (R entries of 3 bytes)
 *  +---------------+-------------------------------+
 *  |  redundant Opus packet 1 (length_1 bytes) ... |
 *  |  redundant Opus packet 2 (length_2 bytes) ... |
 *  |  primary Opus packet (all the remaining bytes, at least 1) ...
 * ```
 *
 * - distance_i: how many frames before this datagram's frame_id the copy belongs to
 *   (frame_id - distance_i, modulo 2^32), 1..255, each distance at most once.
 * - length_i: 1..1197 bytes; the copies come in entry order, the primary after them.
 * - Total at most MAX_MEDIA_PAYLOAD (1200): the sender drops copies that do not fit,
 *   never the primary.
 */
import { MAX_MEDIA_PAYLOAD } from './media_packet';

/** Most earlier frames one datagram carries copies of. */
export const MAX_REDUNDANCY = 2;
export const REDUNDANCY_ENTRY_BYTES = 3;

export interface RedundantFrame {
  /** Frames before the datagram's frame_id, 1..255. */
  distance: number;
  data: Buffer;
}

export interface DecodedAudioPayload {
  primary: Buffer;
  redundant: RedundantFrame[];
}

export type AudioPayloadProblem =
  /** Fewer bytes than the count byte, its entries and a 1-byte primary. */
  | 'too_short'
  /** R above MAX_REDUNDANCY. */
  | 'bad_count'
  /** A distance of 0, or one given twice. */
  | 'bad_distance'
  /** A copy of length 0, or copies that leave no byte for the primary. */
  | 'bad_length';

/**
 * Builds a payload. Copies are taken in the order given, each only if it still fits
 * within `maxBytes` (default 1200); the primary always goes in. Throws RangeError on
 * caller errors: an empty or oversized primary, more than MAX_REDUNDANCY copies, a
 * distance outside 1..255 or given twice, an empty copy.
 */
export function encodeAudioPayload(
  primary: Buffer,
  redundant: readonly RedundantFrame[] = [],
  maxBytes: number = MAX_MEDIA_PAYLOAD,
): Buffer {
  if (primary.length < 1) throw new RangeError('the primary Opus packet is empty');
  if (1 + primary.length > maxBytes) {
    throw new RangeError(`the primary Opus packet (${primary.length} bytes) does not fit in ${maxBytes} bytes`);
  }
  if (redundant.length > MAX_REDUNDANCY) throw new RangeError(`at most ${MAX_REDUNDANCY} redundant frames`);
  const seen = new Set<number>();
  for (const r of redundant) {
    if (!Number.isInteger(r.distance) || r.distance < 1 || r.distance > 255) {
      throw new RangeError(`redundant distance must be 1..255, got ${r.distance}`);
    }
    if (seen.has(r.distance)) throw new RangeError(`redundant distance ${r.distance} given twice`);
    seen.add(r.distance);
    if (r.data.length < 1) throw new RangeError('a redundant Opus packet is empty');
  }
  const kept: RedundantFrame[] = [];
  let size = 1 + primary.length;
  for (const r of redundant) {
    const more = REDUNDANCY_ENTRY_BYTES + r.data.length;
    if (size + more <= maxBytes && r.data.length <= 0xffff) {
      kept.push(r);
      size += more;
    }
  }
  const out = Buffer.allocUnsafe(size);
  out[0] = kept.length;
  let pos = 1;
  for (const r of kept) {
    out[pos] = r.distance;
    out.writeUInt16BE(r.data.length, pos + 1);
    pos += REDUNDANCY_ENTRY_BYTES;
  }
  for (const r of kept) pos += r.data.copy(out, pos);
  primary.copy(out, pos);
  return out;
}

/**
 * Reads a payload. Never throws and never reads outside `buf`; the Buffers returned are
 * views into it (no copy), so they live as long as the datagram.
 */
export function decodeAudioPayload(buf: Buffer): DecodedAudioPayload | { problem: AudioPayloadProblem } {
  if (buf.length < 2) return { problem: 'too_short' };
  const count = buf[0];
  if (count > MAX_REDUNDANCY) return { problem: 'bad_count' };
  let pos = 1 + count * REDUNDANCY_ENTRY_BYTES;
  if (buf.length < pos + 1) return { problem: 'too_short' };
  const redundant: RedundantFrame[] = [];
  let previous = 0; // with at most two entries, a repeat can only be of the one before
  for (let i = 0; i < count; i++) {
    const at = 1 + i * REDUNDANCY_ENTRY_BYTES;
    const distance = buf[at];
    const length = buf.readUInt16BE(at + 1);
    if (distance === 0 || distance === previous) return { problem: 'bad_distance' };
    previous = distance;
    if (length === 0 || pos + length >= buf.length) return { problem: 'bad_length' };
    redundant.push({ distance, data: buf.subarray(pos, pos + length) });
    pos += length;
  }
  return { primary: buf.subarray(pos), redundant };
}

/**
 * The sender's side: remembers its last packets and puts copies of them into each new
 * payload. Frame ids are the header's (u32, +1 per 20 ms, counting on while nothing is
 * sent), so a copy is only added when its frame is within `depth` of the new one: after
 * a mute or DTX gap the old packets are not sent again.
 */
export class RedundancyEncoder {
  private readonly history: { frameId: number; data: Buffer }[] = [];

  constructor(readonly depth = 1) {
    if (!Number.isInteger(depth) || depth < 0 || depth > MAX_REDUNDANCY) {
      throw new RangeError(`redundancy depth must be 0..${MAX_REDUNDANCY}, got ${depth}`);
    }
  }

  /** The payload for `primary`, the Opus packet of frame `frameId`; remembers it for the next ones. */
  payload(frameId: number, primary: Buffer, maxBytes: number = MAX_MEDIA_PAYLOAD): Buffer {
    const redundant: RedundantFrame[] = [];
    for (let i = this.history.length - 1; i >= 0; i--) {
      const h = this.history[i];
      const distance = (frameId - h.frameId) >>> 0;
      if (distance >= 1 && distance <= this.depth) redundant.push({ distance, data: h.data });
    }
    const out = encodeAudioPayload(primary, redundant, maxBytes);
    if (this.depth > 0) {
      this.history.push({ frameId: frameId >>> 0, data: primary });
      if (this.history.length > this.depth) this.history.shift();
    }
    return out;
  }

  /** Forget the history (after a mute: the next packet carries no stale copies). */
  reset(): void {
    this.history.length = 0;
  }
}
