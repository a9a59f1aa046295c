/**
 * Opus for voice, wrapping @discordjs/opus (libopus 1.3.1 as a native binding): one
 * 20 ms frame of 48 kHz mono s16 in, one Opus packet out, and back.
 *
 * What the binding can and cannot do decides the design around it:
 * - It creates its encoder as OPUS_APPLICATION_AUDIO. libopus lets the application be
 *   changed until the first opus_encode() (opus_encoder.c, OPUS_SET_APPLICATION_REQUEST:
 *   refused only when `!st->first`), so the constructor switches it to VOIP first.
 * - Its decode() always calls opus_decode(..., decode_fec = 0): Opus in-band FEC (LBRR)
 *   can never be decoded through it. The encoder therefore leaves in-band FEC off (it
 *   would spend bits on a copy no one can read); loss recovery is done one layer up, by
 *   sending copies of earlier packets (audio_payload.ts, as Chrome's RED for Opus does).
 * - decode() of an empty buffer conceals with frame_size = 5760: 120 ms of PLC that
 *   moves the decoder 120 ms ahead, and the next real packet then starts with a click
 *   (measured in tests/unit/opus_codec.test.ts: a sample step of 1389 where the
 *   loss-free decode steps by 66).
 *   A one-byte packet (just a TOC, code 0) is what DTX sends: libopus treats any frame
 *   of 0 or 1 bytes as lost but conceals only the duration its TOC names
 *   (opus_decoder.c, opus_decode_frame: "don't conceal more than what the ToC says").
 *   conceal() sends such a TOC for 20 ms, so the PLC is exactly one frame and libopus'
 *   own smoothing into the next real packet works (measured step 97: no click).
 * - Getter CTLs (OPUS_GET_*) take a pointer; applyEncoderCTL passes an int, so calling
 *   one would dereference garbage. Only setters are used here.
 */
import { OpusEncoder } from '@discordjs/opus';
import { FRAME_SAMPLES, SAMPLE_RATE, bytesToInt16, int16ToBytes } from './format';

// libopus request numbers and values (opus_defines.h), for the setter CTLs used here.
const OPUS_SET_APPLICATION_REQUEST = 4000;
const OPUS_SET_COMPLEXITY_REQUEST = 4010;
const OPUS_SET_DTX_REQUEST = 4016;
const OPUS_SET_SIGNAL_REQUEST = 4024;
const OPUS_RESET_STATE = 4028;
const OPUS_APPLICATION_VOIP = 2048;
const OPUS_SIGNAL_VOICE = 3001;

export const DEFAULT_BITRATE = 32_000;
/** libopus accepts 500..512000 b/s; below ~6 kb/s a 48 kHz voice stream is not useful. */
export const MIN_BITRATE = 6_000;
export const MAX_BITRATE = 510_000;
/** A TOC-only packet of 20 ms, CELT fullband (config 31), for concealment before any packet was seen. */
const DEFAULT_PLC_TOC = 31 << 3;

export interface OpusVoiceEncoderOptions {
  /** Target bitrate in bit/s (default 32 000). */
  bitrate?: number;
  /** Discontinuous transmission: in silence the encoder emits 1-byte packets (see isDtxPacket). Default off. */
  dtx?: boolean;
  /** 0..10, libopus' CPU/quality trade-off (libopus default 9 when not given). */
  complexity?: number;
}

/** Encodes 20 ms frames of 48 kHz mono s16 as Opus, VoIP application, voice signal. */
export class OpusVoiceEncoder {
  private readonly opus: OpusEncoder;
  private bitrate: number;

  constructor(o: OpusVoiceEncoderOptions = {}) {
    this.opus = new OpusEncoder(SAMPLE_RATE, 1);
    // Must precede the first encode (see the header comment).
    this.opus.applyEncoderCTL(OPUS_SET_APPLICATION_REQUEST, OPUS_APPLICATION_VOIP);
    this.opus.applyEncoderCTL(OPUS_SET_SIGNAL_REQUEST, OPUS_SIGNAL_VOICE);
    this.bitrate = DEFAULT_BITRATE;
    this.setBitrate(o.bitrate ?? DEFAULT_BITRATE);
    if (o.complexity !== undefined) {
      if (!Number.isInteger(o.complexity) || o.complexity < 0 || o.complexity > 10) {
        throw new RangeError(`complexity must be an integer 0..10, got ${o.complexity}`);
      }
      this.opus.applyEncoderCTL(OPUS_SET_COMPLEXITY_REQUEST, o.complexity);
    }
    // In-band FEC (OPUS_SET_INBAND_FEC, 4012) stays off: the decoder binding cannot read it.
    if (o.dtx) this.opus.applyEncoderCTL(OPUS_SET_DTX_REQUEST, 1);
  }

  /** One Opus packet for one frame of exactly FRAME_SAMPLES samples. */
  encode(pcm: Int16Array): Buffer {
    if (pcm.length !== FRAME_SAMPLES) {
      throw new RangeError(`encode takes ${FRAME_SAMPLES} samples (20 ms), got ${pcm.length}`);
    }
    return this.opus.encode(int16ToBytes(pcm));
  }

  setBitrate(bps: number): void {
    if (!Number.isFinite(bps) || bps < MIN_BITRATE || bps > MAX_BITRATE) {
      throw new RangeError(`bitrate must be ${MIN_BITRATE}..${MAX_BITRATE} b/s, got ${bps}`);
    }
    this.opus.setBitrate(Math.round(bps));
    this.bitrate = Math.round(bps);
  }

  getBitrate(): number {
    return this.bitrate;
  }
}

/** A packet the encoder emits in DTX silence (TOC only, or TOC plus one byte): nothing to send but a keepalive. */
export function isDtxPacket(packet: Buffer): boolean {
  return packet.length <= 2;
}

/** Samples (at 48 kHz) one frame of this TOC's configuration lasts (RFC 6716 §3.1, table 2). */
export function opusFrameSamples(toc: number): number {
  const config = toc >> 3;
  if (config < 12) return [480, 960, 1920, 2880][config & 3]; // SILK 10/20/40/60 ms
  if (config < 16) return [480, 960][config & 1]; // Hybrid 10/20 ms
  return [120, 240, 480, 960][config & 3]; // CELT 2.5/5/10/20 ms
}

/**
 * Samples (at 48 kHz) a whole packet decodes to, from its TOC and frame count byte
 * (RFC 6716 §3.2), or -1 when the packet is empty or its framing is impossible. Checked
 * before decoding so a hostile 120 ms packet costs nothing and never desynchronises playout.
 */
export function opusPacketSamples(packet: Buffer): number {
  if (packet.length < 1) return -1;
  const toc = packet[0];
  let frames: number;
  switch (toc & 3) {
    case 0:
      frames = 1;
      break;
    case 1:
    case 2:
      frames = 2;
      break;
    default:
      if (packet.length < 2) return -1;
      frames = packet[1] & 0x3f;
      if (frames === 0) return -1;
  }
  const total = frames * opusFrameSamples(toc);
  return total > 5760 ? -1 : total; // RFC 6716: at most 120 ms per packet
}

/** A TOC-only packet of the same mode, bandwidth and channel flag as `toc`, lasting exactly 20 ms. */
function plcTocFor(toc: number): number {
  const config = toc >> 3;
  let config20: number;
  if (config < 12) config20 = (config & ~3) | 1;
  else if (config < 16) config20 = (config & ~1) | 1;
  else config20 = (config & ~3) | 3;
  return (config20 << 3) | (toc & 0x04);
}

/** What the jitter buffer needs from a decoder: it depends on nothing else. */
export interface AudioDecoder {
  /** One 20 ms frame (FRAME_SAMPLES samples) from one packet, or null when the packet is unusable. Never throws. */
  decode(payload: Buffer): Int16Array | null;
  /** One 20 ms frame continuing the signal where a packet is missing (packet loss concealment). Never throws. */
  conceal(): Int16Array;
  /** Forget the stream: the next packet starts from a fresh state. */
  reset(): void;
}

export interface OpusDecoderCounters {
  decoded: number;
  concealed: number;
  /** Packets refused: not 20 ms, malformed, or rejected by libopus. */
  corrupt: number;
}

/** Decodes one sender's Opus packets. Hostile bytes never throw out of it. */
export class OpusVoiceDecoder implements AudioDecoder {
  private opus: OpusEncoder;
  private plcToc = DEFAULT_PLC_TOC;
  readonly counters: OpusDecoderCounters = { decoded: 0, concealed: 0, corrupt: 0 };

  constructor() {
    this.opus = new OpusEncoder(SAMPLE_RATE, 1);
  }

  decode(payload: Buffer): Int16Array | null {
    // Only whole 20 ms packets are ours: anything else would make the output frame the
    // wrong length and move the decoder off the playout clock.
    if (opusPacketSamples(payload) !== FRAME_SAMPLES) {
      this.counters.corrupt++;
      return null;
    }
    let out: Buffer;
    try {
      out = this.opus.decode(payload);
    } catch {
      this.counters.corrupt++;
      return null;
    }
    if (out.length !== FRAME_SAMPLES * 2) {
      this.counters.corrupt++;
      return null;
    }
    this.counters.decoded++;
    this.plcToc = plcTocFor(payload[0]);
    return bytesToInt16(out);
  }

  conceal(): Int16Array {
    this.counters.concealed++;
    try {
      const out = this.opus.decode(Buffer.from([this.plcToc]));
      if (out.length === FRAME_SAMPLES * 2) return bytesToInt16(out);
    } catch {
      // fall through to silence
    }
    return new Int16Array(FRAME_SAMPLES);
  }

  reset(): void {
    this.plcToc = DEFAULT_PLC_TOC;
    try {
      this.opus.applyDecoderCTL(OPUS_RESET_STATE, 0);
    } catch {
      this.opus = new OpusEncoder(SAMPLE_RATE, 1);
    }
  }
}
