/**
 * Real audio signals and audio metrics for tests: speech from espeak-ng, seeded noise,
 * tones, synthetic rooms, mixing, raw s16le files, and the measures the audio
 * acceptance criteria are written in (ERLE, normalized correlation, silence gaps).
 * Everything is mono Float32Array in [-1, 1] at 48 kHz unless a `sampleRate` says otherwise.
 */
import { floatToInt16 } from '../../client/audio/format';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import FFT = require('fft.js');

const execFileAsync = promisify(execFile);

/** Sample rate of every signal made here. */
export const RATE = 48_000;

/** Samples in `ms` milliseconds at `rate`. */
export function ms(msValue: number, rate = RATE): number {
  return Math.round((msValue * rate) / 1000);
}

/** Samples in `s` seconds at `rate`. */
export function sec(s: number, rate = RATE): number {
  return Math.round(s * rate);
}

// ------------------------------------------------------------------ speech

/** Where speech() caches its renderings (per text, voice and options). */
export const SPEECH_CACHE_DIR = path.join(os.tmpdir(), 'lvc-audio-signals-cache');

export interface SpeechOptions {
  /** espeak-ng words per minute (default espeak's 175). */
  wpm?: number;
  /** espeak-ng pitch 0..99 (default 50). */
  pitch?: number;
}

/** True when espeak-ng and sox are on PATH (speech() needs both). */
export function speechAvailable(): boolean {
  const dirs = (process.env.PATH ?? '').split(path.delimiter);
  const has = (bin: string) => dirs.some((d) => fs.existsSync(path.join(d, bin)));
  return has('espeak-ng') && has('sox');
}

/**
 * espeak-ng speech as 48 kHz mono float, peak-normalized to 0.5 (-6 dBFS), leading and
 * trailing silence kept as espeak renders it; cached under os.tmpdir() per text+voice+options.
 */
export async function speech(text: string, voice = 'en+m3', opts: SpeechOptions = {}): Promise<Float32Array> {
  const key = createHash('sha1').update(JSON.stringify([text, voice, opts.wpm ?? null, opts.pitch ?? null])).digest('hex').slice(0, 16);
  fs.mkdirSync(SPEECH_CACHE_DIR, { recursive: true });
  const cached = path.join(SPEECH_CACHE_DIR, `${key}.f32`);
  if (!fs.existsSync(cached)) {
    const wav = path.join(SPEECH_CACHE_DIR, `${key}.${process.pid}.wav`);
    const tmp = `${cached}.${process.pid}.tmp`;
    const args = ['-w', wav, '-v', voice];
    if (opts.wpm !== undefined) args.push('-s', String(opts.wpm));
    if (opts.pitch !== undefined) args.push('-p', String(opts.pitch));
    args.push(text);
    await execFileAsync('espeak-ng', args);
    // espeak renders 22050 Hz s16 and sometimes hits full scale: halve before resampling.
    await execFileAsync('sox', ['-V1', wav, '-r', String(RATE), '-e', 'floating-point', '-b', '32', '-c', '1', '-t', 'raw', tmp, 'vol', '0.5', 'rate', '-v']);
    fs.rmSync(wav, { force: true });
    fs.renameSync(tmp, cached); // atomic: parallel workers never read half a file
  }
  const buf = fs.readFileSync(cached);
  const x = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  return normalizePeak(x, 0.5);
}

/** Several utterances back to back with `gapMs` of silence between them. */
export async function speechSequence(parts: Array<{ text: string; voice?: string; opts?: SpeechOptions }>, gapMs = 300): Promise<Float32Array> {
  const pieces: Float32Array[] = [];
  for (const p of parts) {
    pieces.push(await speech(p.text, p.voice, p.opts));
    pieces.push(silence(gapMs));
  }
  return concat(...pieces);
}

/**
 * Babble-like noise: 6 espeak voices with different sentences, each looped and summed
 * `copiesPerVoice` times at different offsets (24 overlapping streams by default: a
 * crowd, not a few identifiable talkers; RNNoise rightly keeps 6 clear voices as
 * speech), scaled to `rmsDbfs`.
 */
export async function babble(lengthSamples: number, rmsDbfs = -26, copiesPerVoice = 4): Promise<Float32Array> {
  const lines: Array<[string, string, number]> = [
    ['The committee will review the budget proposal on Thursday afternoon.', 'en+m1', 45],
    ['Please remember to water the plants before you leave for the weekend.', 'en+f2', 60],
    ['Traffic on the northern bridge was delayed by nearly an hour this morning.', 'en-us+m4', 35],
    ['She ordered a large coffee and a slice of lemon cake at the corner cafe.', 'en+f4', 70],
    ['Our quarterly numbers look better than anyone on the team expected.', 'en-gb-scotland+m7', 50],
    ['Could you send me the slides from yesterday before the meeting starts?', 'en+f3', 65],
  ];
  const out = new Float32Array(lengthSamples);
  for (let t = 0; t < lines.length; t++) {
    const [text, voice, pitch] = lines[t];
    const s = trimSilence(await speech(text, voice, { pitch }));
    for (let c = 0; c < copiesPerVoice; c++) {
      const offset = Math.floor(((t + c * 1.37) * s.length) / lines.length) % s.length;
      for (let i = 0; i < lengthSamples; i++) out[i] += s[(i + offset) % s.length];
    }
  }
  return scaleToRmsDb(out, rmsDbfs);
}

// ------------------------------------------------------------------ synthetic signals

/** Deterministic 32-bit PRNG (mulberry32): uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeded Gaussian white noise at `rmsDbfs` (dB re full scale, RMS). */
export function whiteNoise(lengthSamples: number, seed = 1, rmsDbfs = -20): Float32Array {
  const rnd = seededRandom(seed);
  const out = new Float32Array(lengthSamples);
  const amp = Math.pow(10, rmsDbfs / 20);
  for (let i = 0; i < lengthSamples; i += 2) {
    const u1 = Math.max(rnd(), 1e-12);
    const u2 = rnd();
    const r = Math.sqrt(-2 * Math.log(u1)) * amp;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < lengthSamples) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** A sine tone of `freqHz` with peak `amplitude`. */
export function tone(freqHz: number, lengthSamples: number, amplitude = 0.5, rate = RATE): Float32Array {
  const out = new Float32Array(lengthSamples);
  for (let i = 0; i < lengthSamples; i++) out[i] = amplitude * Math.sin((2 * Math.PI * freqHz * i) / rate);
  return out;
}

/** Exponential (log) sine sweep from f0 to f1 Hz over the whole length. */
export function sweep(f0: number, f1: number, lengthSamples: number, amplitude = 0.5, rate = RATE): Float32Array {
  const out = new Float32Array(lengthSamples);
  const T = lengthSamples / rate;
  const k = Math.log(f1 / f0);
  for (let i = 0; i < lengthSamples; i++) {
    const t = i / rate;
    out[i] = amplitude * Math.sin(((2 * Math.PI * f0 * T) / k) * (Math.exp((t / T) * k) - 1));
  }
  return out;
}

/** Clicks (a 1 ms raised-cosine burst of a 2 kHz tone) every `periodMs`, the first at `firstMs`. */
export function clickTrain(lengthSamples: number, periodMs = 500, amplitude = 0.8, firstMs = 0, rate = RATE): Float32Array {
  const out = new Float32Array(lengthSamples);
  const len = ms(1, rate);
  for (let start = ms(firstMs, rate); start < lengthSamples; start += ms(periodMs, rate)) {
    for (let i = 0; i < len && start + i < lengthSamples; i++) {
      const env = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / len);
      out[start + i] = amplitude * env * Math.sin((2 * Math.PI * 2000 * i) / rate);
    }
  }
  return out;
}

/** `msValue` of digital silence. */
export function silence(msValue: number, rate = RATE): Float32Array {
  return new Float32Array(ms(msValue, rate));
}

// ------------------------------------------------------------------ rooms and filtering

export interface RoomOptions {
  seed?: number;
  /** Reverberation length: the tail has decayed by 60 dB at this time after the direct path (default 150). */
  lengthMs?: number;
  /** Bulk (device) delay before the direct path (default 0). */
  delayMs?: number;
  /** Gain of the direct path (default 0.5). */
  directGain?: number;
  /** Energy of the diffuse tail relative to the direct path, dB (default -3). */
  tailDb?: number;
  rate?: number;
}

/**
 * A synthetic room impulse response: `delayMs` of zeros, a direct-path impulse, then
 * seeded Gaussian noise under an exponential envelope that falls 60 dB over `lengthMs`.
 */
export function roomImpulseResponse(o: RoomOptions = {}): Float32Array {
  const rate = o.rate ?? RATE;
  const lengthMs = o.lengthMs ?? 150;
  const delay = ms(o.delayMs ?? 0, rate);
  const len = ms(lengthMs, rate);
  const direct = o.directGain ?? 0.5;
  const rnd = seededRandom(o.seed ?? 7);
  const h = new Float32Array(delay + len);
  h[delay] = direct;
  // amplitude envelope exp(-t/tau): 60 dB down (factor 1000) at lengthMs
  const tau = len / Math.log(1000);
  const tail = new Float64Array(len);
  let energy = 0;
  for (let i = 1; i < len; i++) {
    const u1 = Math.max(rnd(), 1e-12);
    const u2 = rnd();
    const g = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    tail[i] = g * Math.exp(-i / tau);
    energy += tail[i] * tail[i];
  }
  const want = direct * direct * Math.pow(10, (o.tailDb ?? -3) / 10);
  const scale = energy > 0 ? Math.sqrt(want / energy) : 0;
  for (let i = 1; i < len; i++) h[delay + i] = tail[i] * scale;
  return h;
}

/** Linear convolution y = x * h, truncated to x's length (FFT overlap-add). */
export function convolve(x: Float32Array, h: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  if (h.length === 0 || x.length === 0) return out;
  if (h.length <= 64) {
    for (let n = 0; n < x.length; n++) {
      let acc = 0;
      for (let k = 0; k < h.length && k <= n; k++) acc += h[k] * x[n - k];
      out[n] = acc;
    }
    return out;
  }
  let size = 1;
  while (size < 2 * h.length) size <<= 1;
  size = Math.max(size, 4096);
  const block = size - h.length + 1;
  const f = new FFT(size);
  const hb = new Float64Array(size);
  hb.set(h);
  const H = f.createComplexArray() as number[];
  f.realTransform(H, hb);
  f.completeSpectrum(H);
  const xb = new Float64Array(size);
  const X = f.createComplexArray() as number[];
  const y = f.createComplexArray() as number[];
  for (let start = 0; start < x.length; start += block) {
    xb.fill(0);
    const n = Math.min(block, x.length - start);
    for (let i = 0; i < n; i++) xb[i] = x[start + i];
    f.realTransform(X, xb);
    f.completeSpectrum(X);
    for (let k = 0; k < size; k++) {
      const ar = X[2 * k];
      const ai = X[2 * k + 1];
      const br = H[2 * k];
      const bi = H[2 * k + 1];
      X[2 * k] = ar * br - ai * bi;
      X[2 * k + 1] = ar * bi + ai * br;
    }
    f.inverseTransform(y, X);
    for (let i = 0; i < size && start + i < x.length; i++) out[start + i] += y[2 * i];
  }
  return out;
}

/** x delayed by `samples` (zeros in front), same length. */
export function delay(x: Float32Array, samples: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = samples; i < x.length; i++) out[i] = x[i - samples];
  return out;
}

// ------------------------------------------------------------------ levels and mixing

/** RMS level in dBFS of x[start, end) (-Infinity for digital silence). */
export function rmsDb(x: Float32Array, start = 0, end = x.length): number {
  let s = 0;
  for (let i = start; i < end; i++) s += x[i] * x[i];
  return 10 * Math.log10(s / Math.max(1, end - start));
}

/** Sum of squares of x over the given segments. */
export function energy(x: Float32Array, segments: Segment[] = [[0, x.length]]): number {
  let s = 0;
  for (const [a, b] of segments) for (let i = Math.max(0, a); i < Math.min(b, x.length); i++) s += x[i] * x[i];
  return s;
}

/** A copy of x multiplied by `gain`. */
export function scale(x: Float32Array, gain: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * gain;
  return out;
}

/** A copy of x scaled so its RMS (over [start, end), default all) is `db` dBFS. */
export function scaleToRmsDb(x: Float32Array, db: number, start = 0, end = x.length): Float32Array {
  const cur = rmsDb(x, start, end);
  if (!Number.isFinite(cur)) return x.slice();
  return scale(x, Math.pow(10, (db - cur) / 20));
}

/** A copy of x scaled so its peak magnitude is `peak`. */
export function normalizePeak(x: Float32Array, peak: number): Float32Array {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m > 0 ? scale(x, peak / m) : x.slice();
}

/** Sample-wise sum of the signals; the result is as long as the longest. */
export function mix(...signals: Float32Array[]): Float32Array {
  const out = new Float32Array(Math.max(0, ...signals.map((s) => s.length)));
  for (const s of signals) for (let i = 0; i < s.length; i++) out[i] += s[i];
  return out;
}

/** Concatenation of the signals. */
export function concat(...signals: Float32Array[]): Float32Array {
  const out = new Float32Array(signals.reduce((n, s) => n + s.length, 0));
  let o = 0;
  for (const s of signals) {
    out.set(s, o);
    o += s.length;
  }
  return out;
}

/** x placed at `offset` in a signal of `length` samples (cut or zero-padded). */
export function place(x: Float32Array, offset: number, length: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < x.length && offset + i < length; i++) if (offset + i >= 0) out[offset + i] = x[i];
  return out;
}

/** x repeated (looped) up to `length` samples. */
export function loop(x: Float32Array, length: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = x.length ? x[i % x.length] : 0;
  return out;
}

/**
 * signal + noise with the noise scaled for `snrDb`; the signal power is measured over
 * its active parts (frames within 30 dB of its loudest 20 ms frame), as speech SNRs are quoted.
 */
export function mixAtSnr(signal: Float32Array, noise: Float32Array, snrDb: number): { mix: Float32Array; noise: Float32Array } {
  const active = activeSegments(signal, { thresholdDb: -30, relative: true });
  const ps = energy(signal, active) / Math.max(1, segmentsLength(active));
  const n = loop(noise, signal.length);
  const pn = energy(n) / Math.max(1, n.length);
  const g = pn > 0 ? Math.sqrt(ps / pn / Math.pow(10, snrDb / 10)) : 0;
  const scaled = scale(n, g);
  return { mix: mix(signal, scaled), noise: scaled };
}

// ------------------------------------------------------------------ files

/** Reads a raw s16le mono file as float samples. */
export function readRawS16le(file: string): Float32Array {
  const buf = fs.readFileSync(file);
  const n = buf.length >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readInt16LE(2 * i) / 32768;
  return out;
}

/** Writes a 48 kHz mono 16-bit WAV file (what `--mic file:PATH` and ffmpeg read); float input is clamped. */
export function writeWav(file: string, x: Float32Array | Int16Array, rate = RATE): void {
  const pcm = x instanceof Int16Array ? x : floatToInt16(x);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + pcm.byteLength, 4);
  h.write('WAVEfmt ', 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(pcm.byteLength, 40);
  fs.writeFileSync(file, Buffer.concat([h, Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength)]));
}

/** Writes float samples as a raw s16le mono file (rounded, clamped). */
export function writeRawS16le(file: string, x: Float32Array): void {
  const buf = Buffer.alloc(x.length * 2);
  for (let i = 0; i < x.length; i++) {
    const v = Math.round(x[i] * 32768);
    buf.writeInt16LE(v > 32767 ? 32767 : v < -32768 ? -32768 : v, 2 * i);
  }
  fs.writeFileSync(file, buf);
}

// ------------------------------------------------------------------ segments

/** A half-open sample range [start, end). */
export type Segment = [number, number];

/** The segment [startSec, endSec) in samples. */
export function seg(startSec: number, endSec: number, rate = RATE): Segment {
  return [sec(startSec, rate), sec(endSec, rate)];
}

/** Total length of the segments in samples. */
export function segmentsLength(segments: Segment[]): number {
  return segments.reduce((n, [a, b]) => n + Math.max(0, b - a), 0);
}

/** The concatenated samples of x inside the segments. */
export function cut(x: Float32Array, segments: Segment[]): Float32Array {
  return concat(...segments.map(([a, b]) => x.subarray(Math.max(0, a), Math.min(b, x.length))));
}

/** The parts of `within` not covered by `segments` (both sorted lists). */
export function complement(segments: Segment[], within: Segment): Segment[] {
  const out: Segment[] = [];
  let cur = within[0];
  for (const [a, b] of [...segments].sort((p, q) => p[0] - q[0])) {
    if (a > cur) out.push([cur, Math.min(a, within[1])]);
    cur = Math.max(cur, b);
    if (cur >= within[1]) break;
  }
  if (cur < within[1]) out.push([cur, within[1]]);
  return out.filter(([a, b]) => b > a);
}

export interface ActivityOptions {
  /** Frame level threshold in dB (absolute dBFS, or relative to the loudest frame when `relative`). */
  thresholdDb?: number;
  relative?: boolean;
  frameMs?: number;
  /** Active frames are widened by this much on both sides (default 0). */
  padMs?: number;
  /** Gaps shorter than this between active frames are filled (default 0). */
  bridgeMs?: number;
  rate?: number;
}

/** Segments where x is active: 20 ms frames above a threshold, optionally padded and bridged. */
export function activeSegments(x: Float32Array, o: ActivityOptions = {}): Segment[] {
  const rate = o.rate ?? RATE;
  const frame = ms(o.frameMs ?? 20, rate);
  const levels: number[] = [];
  for (let s = 0; s < x.length; s += frame) levels.push(rmsDb(x, s, Math.min(x.length, s + frame)));
  const top = Math.max(...levels.filter(Number.isFinite));
  const thr = o.relative ? top + (o.thresholdDb ?? -30) : (o.thresholdDb ?? -50);
  const pad = ms(o.padMs ?? 0, rate);
  const bridge = ms(o.bridgeMs ?? 0, rate);
  const out: Segment[] = [];
  levels.forEach((l, i) => {
    if (!(l > thr)) return;
    const a = Math.max(0, i * frame - pad);
    const b = Math.min(x.length, (i + 1) * frame + pad);
    const last = out[out.length - 1];
    if (last && a <= last[1] + bridge) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  });
  return out;
}

/** Drops leading and trailing parts quieter than -60 dBFS (5 ms frames). */
export function trimSilence(x: Float32Array, thresholdDb = -60): Float32Array {
  const act = activeSegments(x, { thresholdDb, frameMs: 5 });
  if (act.length === 0) return x.slice(0, 0);
  return x.slice(act[0][0], act[act.length - 1][1]);
}

// ------------------------------------------------------------------ metrics

/**
 * Echo return loss enhancement in dB over the segments: 10*log10(E[mic^2] / E[out^2]).
 * `out` is compared sample for sample with `mic` (pass it latency-compensated).
 */
export function erleDb(mic: Float32Array, out: Float32Array, segments: Segment[] = [[0, mic.length]]): number {
  return 10 * Math.log10(energy(mic, segments) / energy(out, segments));
}

export interface CorrelationResult {
  /** Largest normalized cross-correlation (signed value at the best |peak|), in [-1, 1]. */
  peak: number;
  /** b is late by `lag` samples relative to a (b[n + lag] ~ a[n]). */
  lag: number;
}

/**
 * Normalized cross-correlation of a and b over lags -maxLag..maxLag (FFT-based):
 * sum a[n] b[n+lag] / sqrt(sum a^2 * sum b^2), the peak and its lag.
 */
export function normalizedCorrelation(a: Float32Array, b: Float32Array, o: { maxLagSamples?: number; positive?: boolean } = {}): CorrelationResult {
  const maxLag = Math.max(0, Math.floor(o.maxLagSamples ?? 0));
  const n = Math.max(a.length, b.length);
  const ea = energy(a);
  const eb = energy(b);
  if (ea === 0 || eb === 0) return { peak: 0, lag: 0 };
  if (maxLag === 0) {
    let s = 0;
    for (let i = 0; i < Math.min(a.length, b.length); i++) s += a[i] * b[i];
    return { peak: s / Math.sqrt(ea * eb), lag: 0 };
  }
  let size = 4;
  while (size < n + maxLag + 1) size <<= 1;
  const f = new FFT(size);
  const pa = new Float64Array(size);
  const pb = new Float64Array(size);
  pa.set(a);
  pb.set(b);
  const A = f.createComplexArray() as number[];
  const B = f.createComplexArray() as number[];
  f.realTransform(A, pa);
  f.completeSpectrum(A);
  f.realTransform(B, pb);
  f.completeSpectrum(B);
  // conj(A) * B -> r[lag] = sum a[n] b[n + lag]
  for (let k = 0; k < size; k++) {
    const ar = A[2 * k];
    const ai = -A[2 * k + 1];
    const br = B[2 * k];
    const bi = B[2 * k + 1];
    A[2 * k] = ar * br - ai * bi;
    A[2 * k + 1] = ar * bi + ai * br;
  }
  const r = f.createComplexArray() as number[];
  f.inverseTransform(r, A);
  let best = 0;
  let bestLag = 0;
  for (let lag = -maxLag; lag <= maxLag; lag++) {
    const idx = lag >= 0 ? lag : size + lag;
    const v = r[2 * idx];
    // positive: the best match in phase (a locally periodic signal also matches upside down half a period away).
    if (o.positive ? v > best : Math.abs(v) > Math.abs(best)) {
      best = v;
      bestLag = lag;
    }
  }
  return { peak: best / Math.sqrt(ea * eb), lag: bestLag };
}

/**
 * Where `ref` occurs in a longer recording and how alike the two are there: the lag of
 * the best (unnormalized) cross-correlation within `maxLagSeconds`, then the normalized
 * correlation of `ref` with the recording's window at that lag (`aligned`).
 */
export function alignedCorrelation(
  recording: Float32Array,
  ref: Float32Array,
  o: { maxLagSeconds: number; rate?: number },
): CorrelationResult & { aligned: Float32Array } {
  const { lag } = normalizedCorrelation(ref, recording, { maxLagSamples: Math.round(o.maxLagSeconds * (o.rate ?? RATE)), positive: true });
  const aligned = new Float32Array(ref.length);
  // aligned[i] = recording[i + lag], zero where the recording has no sample.
  const first = Math.max(0, -lag);
  const last = Math.min(ref.length, recording.length - lag);
  if (last > first) aligned.set(recording.subarray(first + lag, last + lag), first);
  return { peak: normalizedCorrelation(ref, aligned).peak, lag, aligned };
}

/**
 * Correlation of `ref` with a recording of it that went through a jitter buffer, which
 * may have dropped or inserted a frame here and there (each shifts the rest by 20 ms,
 * which ruins one global alignment): align globally, then re-align each `segmentSeconds`
 * piece of `ref` within ±`searchMs` and correlate it there. Pieces of `ref` quieter than
 * -45 dBFS are skipped. Returns the median piece (robust to a glitch or two, e.g. a
 * sound card underrun on a busy machine), the energy-weighted mean and the worst piece.
 * Pieces are short (100 ms) so that one dropped or added frame spoils one piece, not a second.
 */
export function segmentedCorrelation(
  recording: Float32Array,
  ref: Float32Array,
  o: { maxLagSeconds: number; segmentSeconds?: number; searchMs?: number; rate?: number },
): { median: number; mean: number; worst: number; segments: number; lag: number } {
  const rate = o.rate ?? RATE;
  const { lag } = normalizedCorrelation(ref, recording, { maxLagSamples: Math.round(o.maxLagSeconds * rate), positive: true });
  const len = Math.round((o.segmentSeconds ?? 0.1) * rate);
  const search = Math.round(((o.searchMs ?? 120) / 1000) * rate);
  let weighted = 0;
  let total = 0;
  const all: number[] = [];
  for (let start = 0; start + len <= ref.length; start += len) {
    const piece = ref.subarray(start, start + len);
    if (rmsDb(piece) < -45) continue;
    const from = Math.max(0, start + lag - search);
    const to = Math.min(recording.length, start + lag + len + search);
    if (to - from < len) continue;
    const window = recording.subarray(from, to);
    // Best local lag of the piece inside the window, then its normalized correlation there.
    const local = normalizedCorrelation(piece, window, { maxLagSamples: window.length - len, positive: true });
    const at = Math.max(0, Math.min(window.length - len, local.lag));
    const c = normalizedCorrelation(piece, window.subarray(at, at + len)).peak;
    const e = energy(piece);
    weighted += c * e;
    total += e;
    all.push(c);
  }
  all.sort((x, y) => x - y);
  const median = all.length ? all[Math.floor(all.length / 2)] : 0;
  return { median, mean: total > 0 ? weighted / total : 0, worst: all.length ? all[0] : 0, segments: all.length, lag };
}

/** The gain g minimizing |out - g*ref|^2 (out projected on ref); -20*log10(g) is ref's attenuation in out. */
export function projectionGain(ref: Float32Array, out: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < Math.min(ref.length, out.length); i++) {
    num += ref[i] * out[i];
    den += ref[i] * ref[i];
  }
  return den > 0 ? num / den : 0;
}

/**
 * The longest run of silence in ms: consecutive `windowMs` windows whose RMS is below
 * `thresholdDb` dBFS (Int16Array input is read as s16). Used to assert "no gap > 60 ms".
 */
export function longestSilenceMs(
  pcm: Float32Array | Int16Array,
  o: { thresholdDb?: number; sampleRate?: number; windowMs?: number } = {},
): number {
  const rate = o.sampleRate ?? RATE;
  const thr = o.thresholdDb ?? -50;
  const win = Math.max(1, ms(o.windowMs ?? 2.5, rate));
  const sc = pcm instanceof Int16Array ? 1 / 32768 : 1;
  const limit = win * Math.pow(10, thr / 10);
  let run = 0;
  let longest = 0;
  for (let s = 0; s + win <= pcm.length; s += win) {
    let e = 0;
    for (let i = s; i < s + win; i++) {
      const v = pcm[i] * sc;
      e += v * v;
    }
    if (e < limit) {
      run += win;
      if (run > longest) longest = run;
    } else run = 0;
  }
  return (longest * 1000) / rate;
}

// ------------------------------------------------------------------ echo scenarios

export interface EchoScenarioOptions {
  /** Total length in seconds (default 12). */
  seconds?: number;
  /** Device delay before the room response, ms (default 40). */
  delayMs?: number;
  /** Room response length (60 dB decay), ms (default 150). */
  roomMs?: number;
  roomSeed?: number;
  /** Near-end talk starts here (seconds; default 6); null for no near end. */
  nearStartSec?: number | null;
  /** Near-end level relative to the echo level at the mic, dB (default 0). */
  nearToEchoDb?: number;
  /** Echo level at the mic relative to the far end's, dB (default: as the room gives, about -5). */
  echoGainDb?: number;
  /** Mic noise floor, dBFS (default -70). */
  noiseDbfs?: number;
  /** 'speech' (default) or 'noise' (white noise far end at -20 dBFS). */
  far?: 'speech' | 'noise';
}

export interface EchoScenario {
  /** What the speaker played (the far-end reference). */
  far: Float32Array;
  /** The echo alone as it reaches the mic. */
  echo: Float32Array;
  /** The clean near-end talker as it reaches the mic. */
  near: Float32Array;
  /** echo + near + noise. */
  mic: Float32Array;
  rir: Float32Array;
  /** Where the near end talks (empty without near end). */
  doubleTalk: Segment;
}

/** Far-end speech (or noise) through a synthetic room plus optional near-end speech: the AEC acceptance scene. */
export async function echoScenario(o: EchoScenarioOptions = {}): Promise<EchoScenario> {
  const total = sec(o.seconds ?? 12);
  const farSrc =
    (o.far ?? 'speech') === 'noise'
      ? whiteNoise(total, 11, -20)
      : loop(
          await speechSequence(
            [
              { text: 'Good morning everyone, thanks for joining the call today. Let us start with the status of the release.' },
              { text: 'The build is green and the installer has been tested on three machines in the lab.' },
              { text: 'Next week we will look at the audio quality and the echo problems people have reported.' },
            ],
            250,
          ),
          total,
        );
  const rir = roomImpulseResponse({ seed: o.roomSeed ?? 3, lengthMs: o.roomMs ?? 150, delayMs: o.delayMs ?? 40 });
  let echo: Float32Array = convolve(farSrc, rir);
  if (o.echoGainDb !== undefined) {
    const cur = rmsDb(echo) - rmsDb(farSrc);
    echo = scale(echo, Math.pow(10, (o.echoGainDb - cur) / 20));
  }
  let near: Float32Array = new Float32Array(total);
  let doubleTalk: Segment = [0, 0];
  const nearStart = o.nearStartSec === undefined ? 6 : o.nearStartSec;
  if (nearStart !== null) {
    const talk = trimSilence(
      await speechSequence([{ text: 'Sorry to interrupt, but I have a question about the installer and the network settings.', voice: 'en+f2' }], 0),
    );
    near = place(talk, sec(nearStart), total);
    doubleTalk = [sec(nearStart), Math.min(total, sec(nearStart) + talk.length)];
    const echoAct = activeSegments(echo, { thresholdDb: -30, relative: true });
    const nearAct = activeSegments(near, { thresholdDb: -30, relative: true });
    const echoLvl = 10 * Math.log10(energy(echo, echoAct) / segmentsLength(echoAct));
    const nearLvl = 10 * Math.log10(energy(near, nearAct) / segmentsLength(nearAct));
    near = scale(near, Math.pow(10, (echoLvl + (o.nearToEchoDb ?? 0) - nearLvl) / 20));
  }
  const mic = mix(echo, near, whiteNoise(total, 5, o.noiseDbfs ?? -70));
  return { far: farSrc, echo, near, mic, rir, doubleTalk };
}
