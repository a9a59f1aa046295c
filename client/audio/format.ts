/**
 * The one audio format inside the client: 48 kHz mono, 20 ms frames (960 samples).
 * Devices, the codec and files use signed 16-bit little-endian PCM (`Int16Array`);
 * the signal processing (echo cancellation, noise suppression, levels, mixing) uses
 * `Float32Array` in [-1, 1]. These helpers are the only conversions between the two.
 */

export const SAMPLE_RATE = 48_000;
export const CHANNELS = 1;
export const FRAME_MS = 20;
/** Samples in one 20 ms frame: what a capture callback, an Opus packet and a playout tick carry. */
export const FRAME_SAMPLES = (SAMPLE_RATE * FRAME_MS) / 1000;
export const FRAME_BYTES = FRAME_SAMPLES * 2;
/** RNNoise works on 10 ms frames. */
export const NS_FRAME_SAMPLES = 480;

/** s16 -> float in [-1, 1). */
export function int16ToFloat(src: Int16Array, dst = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) dst[i] = src[i] / 32768;
  return dst;
}

/** float -> s16, rounded and clamped (never wraps around). */
export function floatToInt16(src: Float32Array, dst = new Int16Array(src.length)): Int16Array {
  for (let i = 0; i < src.length; i++) {
    const v = Math.round(src[i] * 32768);
    dst[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return dst;
}

/** A view of s16le bytes as samples (copies when the buffer is not 2-byte aligned). */
export function bytesToInt16(buf: Buffer): Int16Array {
  if (buf.byteOffset % 2 === 0) return new Int16Array(buf.buffer, buf.byteOffset, buf.length >> 1);
  const copy = Buffer.from(buf);
  return new Int16Array(copy.buffer, copy.byteOffset, copy.length >> 1);
}

/** The bytes of samples, without a copy. */
export function int16ToBytes(pcm: Int16Array): Buffer {
  return Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength);
}

/** Quietest level: RFC 6464 caps -dBov at 127. */
export const LEVEL_SILENT_DBOV = 127;

/**
 * Audio level of a frame as RFC 6464 carries it: -dBov rounded, 0 (a full-scale
 * square wave) to 127 (digital silence or below -127 dBov). 0 dBov is the RMS of a
 * full-scale square wave, so a full-scale sine is 3 (-3.01 dBov).
 */
export function levelDbov(samples: Float32Array | Int16Array): number {
  const scale = samples instanceof Int16Array ? 1 / 32768 : 1;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i] * scale;
    sum += v * v;
  }
  if (samples.length === 0 || sum === 0) return LEVEL_SILENT_DBOV;
  const db = 10 * Math.log10(sum / samples.length);
  return Math.max(0, Math.min(LEVEL_SILENT_DBOV, Math.round(-db)));
}
