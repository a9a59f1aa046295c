/**
 * bench:audio — mouth-to-ear latency of a call through real (PulseAudio) devices and
 * the real relay on loopback, the device-plus-codec floor under it, the CPU of a
 * client that sends one stream and hears eight, and the echo canceller's ERLE, side by
 * side in one run.
 *
 *   npm run bench:audio [-- --clicks N] [--cpu-seconds S] [--quiet-wait S] [--profile]
 *
 * --clicks N       clicks for mouth-to-ear (default 36, at least 30; the floor gets 30)
 * --cpu-seconds S  CPU window of the receiving client, after its warm-up (default 10)
 * --quiet-wait S   before the device measurements, wait until other processes use
 *                  < 0.3 cores, at most S s (default 10, 0 = never wait)
 * --profile        run the CPU client under --cpu-prof and list its hottest functions
 *                  over the window (adds the profiler's own cost to cpu_pct)
 *
 * Last line: `bench:audio m2e_p50_ms=X m2e_p95_ms=Y floor_p50_ms=F cpu_pct=C erle_db=E
 * ...` (extra keys after those). Figures also go to bench/results/audio.json. Targets:
 * m2e p50 <= 80 ms, cpu <= 15 % of one core; a miss is reported, the exit code is 1
 * only when the run itself failed (too few clicks detected, a device or client error).
 *
 * Method. One private PulseAudio daemon (tests/kit/pulse.ts) with 48 kHz mono null
 * sinks; a sink X is a loudspeaker, and its monitor source "X.monitor" is a
 * microphone that hears exactly what was played into X. The Server runs in a child
 * (bench/audio_child.ts server). Times are wall-clock µs of one clock (nowUs of
 * shared/protocol/media_packet.ts, which the devices stamp with), all in this process
 * unless said otherwise.
 *
 *  - Click: the kit's clickTrain click (a 1 ms raised-cosine burst of 2 kHz, peak 0.8),
 *    short and loud. Checked offline in this run (`algorithmic` in the JSON): AEC + NS
 *    (RNNoise) + Opus pass it within ~1 dB, so no voiced burst is needed, and its
 *    onset comes out exactly AEC 5 + NS 10 + Opus look-ahead 6.5 ms later.
 *  - Injector: a DevicePlayback into sink micA (the "mouth") that plays a click every
 *    600 ms (400 ms for the floor), at an offset inside its 20 ms frame that steps
 *    through the frame (golden-ratio sequence), so that the phase between the click
 *    and the capture framing is averaged rather than frozen (both devices run on
 *    the daemon's one clock).
 *  - Detectors: two DeviceCaptures, on micA.monitor (what the mouth said) and on
 *    spkB.monitor (what the ear heard). Onset of a click = capture time of the first
 *    sample at or above 30 % of the click's peak in its window (DeviceCapture's
 *    captureUs + sample offset).
 *  - Mouth-to-ear (m2e), per click = onset on spkB.monitor - onset on micA.monitor.
 *    Equivalently: (spkB onset - injector hand-over) minus the injector's own device
 *    latency (hand-over -> click on micA.monitor; the measureLoopLatency path, measured
 *    per click while the call runs). Both onsets carry the same capture-side latency
 *    (sink monitor -> DeviceCapture timestamp), which cancels, so m2e is: the click in
 *    A's microphone device (sink micA) -> the click in B's loudspeaker device (sink
 *    spkB). Included: A's capture device (PulseAudio source + PortAudio 10 ms buffers
 *    + 20 ms framing), AEC (5 ms) + RNNoise (10 ms) + Opus look-ahead (6.5 ms),
 *    processing, UDP to the relay and back on loopback, the relay (its own process),
 *    B's jitter buffer, the mixer, and B's playback device queue (5 ms chunks, queue 1,
 *    PortAudio 10 ms buffers, PulseAudio sink latency). Not included: real acoustics,
 *    real sound cards' converters and hardware buffers (null sinks have none), a real
 *    network. The literal brief formula, (spkB onset - hand-over) - p50 of a separate
 *    measureLoopLatency run on another sink before the call, is reported as m2e_vs_loop.
 *    Clients A (AudioCall, defaults: NS and AEC on, mic = micA.monitor, speaker = spkA)
 *    and B (AudioCall, no mic, speaker = spkB) run in this process; B's AudioCall is
 *    restarted between 3 segments so that B's output clock phase is sampled 3 times.
 *  - Breakdown per click, from timestamps taken along the way (taps in this process,
 *    no product code changed): A's Client.sendAudio is wrapped (send time, frame index,
 *    level); B's Client 'audio' event gives arrival; B's playback 'played' frames give
 *    the hand-over time of each sample (AudioCall's private `playback` is read for
 *    that). Segments: [micA onset -> A sends the first packet loud enough to hold the
 *    click] framing wait + AEC/NS/Opus delay + processing; [send -> B arrival] relay
 *    and loopback UDP; [arrival -> the click's sample handed to B's device] jitter
 *    buffer + playout clock phase; [hand-over -> spkB onset] playback device +
 *    capture device (one device loop, the measureLoopLatency figure). Plus B's jitter
 *    buffer stats (targetDelayMs, bufferedMs = playout delay P over the fastest
 *    arrival) sampled every 100 ms.
 *  - Floor: the same injector and detectors; micA.monitor -> DeviceCapture -> Opus
 *    encode -> decode -> a FIFO (at most 2 frames) -> DevicePlayback pull -> spkB, in
 *    this process: no network, no jitter buffer, no AEC/NS. Restarted between 3
 *    segments as above. floor = spkB onset - micA onset.
 *  - CPU: one client in a child (bench/audio_child.ts client): Client + AudioCall with
 *    NS and AEC on, mic = sink cpuMic's monitor (this process plays looped espeak-ng
 *    speech into it through a DevicePlayback), speaker = sink cpuSpk. In its room, 8
 *    Clients of this process send real Opus packets of speech every 20 ms: 4 s of
 *    speech pre-encoded here (OpusVoiceEncoder + RedundancyEncoder(1), as AudioCall
 *    sends, two passes so the loop point is seamless), each sender at another offset
 *    and phase, frame index +1 per 20 ms, drift-free timers (missed ticks are sent at
 *    once, at most 5). After the child hears all 8 and a 3 s warm-up, cpu_pct = the
 *    child's process.cpuUsage (user + system) over the window / wall time x 100 (share
 *    of one core). Where it goes: before joining, the child times its signal
 *    processing alone in CPU time (audio_child.ts calibrate: AEC, RNNoise, level +
 *    Opus per 20 ms on speech with an echo; 8 x payload parse + jitter buffer + Opus
 *    decode + mixer per tick); the rest of cpu_pct is devices (naudiodon, PortAudio,
 *    libpulse), UDP, timers, event loop and GC. Also its CPU per thread over the
 *    window (/proc/self/task: the JS main thread against PortAudio's callback
 *    threads, libuv's pool and V8's helpers), event-loop utilization, jitter-buffer
 *    counters. AudioCall's counters.processingUs is wall time (preemption on a busy
 *    machine counts), so it is only reported, not used. --profile adds self time by
 *    source file (main thread only).
 *  - ERLE: EchoCanceller on echoScenario({seconds: 13, delayMs: 40, nearStartSec: 6})
 *    from tests/kit/audio_signals.ts (the offline acceptance scene), 20 ms frames (far
 *    pushed, then near processed), output aligned by the canceller's latency: erle_db
 *    over 2-6 s (far end only, after 2 s of convergence), and in the double-talk
 *    stretch the near end's correlation with the output (dt_corr) and its attenuation
 *    (near_atten_db), and ERLE after double-talk.
 *
 * Order: ERLE and the offline click check (CPU-heavy, before any device), device loop
 * (measureLoopLatency, 30 clicks on sink `loop`), floor, mouth-to-ear, CPU. When a
 * loaded machine makes clicks go missing (a device underrun), one more segment is
 * run for the missing ones (once). Every loudspeaker sink has a reader (parec) for
 * the whole run: a null sink nobody reads stalls its players for ~0.75 s at a time
 * (AudioCall then reports its speaker lost and reopens it, disturbing everything).
 * naudiodon's printf()s are sent to /dev/null (client/audio/native_stdout.ts) so that
 * they cannot land after the last line. Every wait is bounded; the whole run takes
 * about 1.5 minutes. Children, devices, parec readers and the pulse daemon are
 * stopped on exit and on a crash (runBench cleanup; the pulse kit also kills its
 * daemon and helpers on process exit).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { AudioCall } from '../client/audio_call';
import { EchoCanceller } from '../client/audio/aec';
import { DeviceCapture, DevicePlayback, nowUs } from '../client/audio/devices';
import { FRAME_SAMPLES, SAMPLE_RATE, floatToInt16, int16ToFloat, levelDbov } from '../client/audio/format';
import { divertNativeStdout } from '../client/audio/native_stdout';
import { NoiseSuppressor } from '../client/audio/noise_suppressor';
import { OpusVoiceDecoder, OpusVoiceEncoder } from '../client/audio/opus_codec';
import { Client, type MediaAudioPacket } from '../client/main_client';
import { RedundancyEncoder } from '../shared/protocol/audio_payload';
import * as K from '../tests/kit/audio_signals';
import { measureLoopLatency, startPulse, type LoopLatency, type Pulse } from '../tests/kit/pulse';
import type { Calibration, JoinRequest } from './audio_child';
import {
  BENCH_DIR,
  finalLine,
  forkTs,
  hotFunctions,
  machineCpu,
  machineCpuBetween,
  machineInfo,
  percentile,
  round,
  runBench,
  sleep,
  waitForQuiet,
  waitUntil,
  writeResults,
  type ForkedChild,
  type HotFunction,
  type ChildStatsBase,
  summarize,
  type LatencySummary,
} from './lib';

const USAGE = `usage: npm run bench:audio [-- --clicks N] [--cpu-seconds S] [--quiet-wait S] [--profile]

  --clicks N       clicks for mouth-to-ear (default 36, at least 30; the floor gets 30)
  --cpu-seconds S  CPU window of the receiving client after its warm-up (default 10)
  --quiet-wait S   wait at most S s for other processes to use < 0.3 cores (default 10)
  --profile        run the CPU client under --cpu-prof and list its hottest functions

Mouth-to-ear latency (PulseAudio null sinks, AudioCall A -> relay -> AudioCall B),
the device + Opus floor, CPU of one client receiving 8 speakers, and AEC ERLE.
Results: bench/results/audio.json; last line: bench:audio m2e_p50_ms=... (see the
comment at the top of bench/audio.ts for the method).`;

const TARGET_M2E_P50_MS = 80;
const TARGET_CPU_PCT = 15;
const DEFAULT_CLICKS = 36;
const FLOOR_CLICKS = 30;
/** Fewer detected than these after the planned segments: one more segment (missed clicks + EXTRA_MARGIN). */
const MIN_M2E_CLICKS = 30;
const MIN_FLOOR_CLICKS = 25;
const EXTRA_MARGIN = 4;
const LOOP_CLICKS = 30;
const SEGMENTS = 3;
const M2E_SPACING_MS = 600;
const FLOOR_SPACING_MS = 400;
const CLICK_AMPLITUDE = 0.8;
/** Onset: first sample at or above this share of the click's peak in its window. */
const ONSET_FRACTION = 0.3;
/** A window whose peak is under this (s16) holds no click. */
const MIN_PEAK = 3000;
/** A sent packet at or under this -dBov holds (part of) the click; silence after NS is ~127. */
const CLICK_LEVEL_DBOV = 60;
/** Floor FIFO: pulls over which a frame must have stood throughout before one is dropped. */
const FIFO_TRIM_PULLS = 25;
/** After its hand-over, a click must reach micA.monitor within this. */
const MOUTH_WINDOW_MS = 400;
const SENDERS = 8;
const DEFAULT_CPU_SECONDS = 10;
const CPU_WARMUP_MS = 3000;
const MAX_CATCH_UP = 5;
const DEFAULT_QUIET_WAIT_S = 10;
const QUIET_CORES = 0.3;
const OVERALL_TIMEOUT_MS = 5 * 60_000;
const SINKS = ['loop', 'micA', 'spkA', 'spkB', 'cpuMic', 'cpuSpk'];

/** Our stdout; naudiodon's printf()s (stream options, underflows) go to /dev/null instead (see native_stdout.ts). */
let out: NodeJS.WritableStream = process.stdout;

function log(line: string): void {
  out.write(line + '\n');
}

// ------------------------------------------------------------ distributions

/** Latency samples (ms) summarized: bench/lib.ts summarize. */
type Dist = LatencySummary;
const dist = (samples: number[]): Dist => summarize(samples);

const row = (name: string, d: Dist) =>
  `  ${name.padEnd(44)} p50 ${String(d.p50_ms).padStart(7)}  p95 ${String(d.p95_ms).padStart(7)}  min ${String(d.min_ms).padStart(7)}  max ${String(d.max_ms).padStart(7)} ms  (n=${d.count})`;

// ------------------------------------------------------------ signals

const US_PER_SAMPLE = 1e6 / SAMPLE_RATE;

/** The kit's click (1 ms raised-cosine 2 kHz burst) as s16. */
function clickSamples(): Int16Array {
  const x = K.clickTrain(K.ms(2), 1000, CLICK_AMPLITUDE, 0);
  const n = K.ms(1);
  return floatToInt16(x.subarray(0, n));
}

/** Offset (samples) of click k inside its 20 ms frame: a golden-ratio walk through the frame. */
function clickOffset(k: number, clickLen: number): number {
  const frac = (k * 0.6180339887) % 1;
  return Math.floor(frac * (FRAME_SAMPLES - clickLen));
}

/** Frames with the wall-clock µs of their first sample (capture) or of their hand-over (playback). */
class Tap {
  readonly frames: { us: number; pcm: Int16Array }[] = [];
  add(pcm: Int16Array, us: number): void {
    this.frames.push({ us, pcm });
  }
  get length(): number {
    return this.frames.length;
  }
  /**
   * The click in [fromUs, toUs): time of the first sample >= ONSET_FRACTION of the
   * window's peak (frame time + offset); null when the peak is under MIN_PEAK.
   */
  onset(fromUs: number, toUs: number): { us: number; peak: number; frame: number } | null {
    const fr = this.frames;
    // Frames are in time order; binary search for the first frame ending after fromUs.
    let lo = 0;
    let hi = fr.length;
    const frameUs = FRAME_SAMPLES * US_PER_SAMPLE;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (fr[mid].us + frameUs <= fromUs) lo = mid + 1;
      else hi = mid;
    }
    let peak = 0;
    for (let f = lo; f < fr.length && fr[f].us < toUs; f++) {
      const { us, pcm } = fr[f];
      for (let i = 0; i < pcm.length; i++) {
        const t = us + i * US_PER_SAMPLE;
        if (t < fromUs || t >= toUs) continue;
        const v = Math.abs(pcm[i]);
        if (v > peak) peak = v;
      }
    }
    if (peak < MIN_PEAK) return null;
    const thr = peak * ONSET_FRACTION;
    for (let f = lo; f < fr.length && fr[f].us < toUs; f++) {
      const { us, pcm } = fr[f];
      for (let i = 0; i < pcm.length; i++) {
        const t = us + i * US_PER_SAMPLE;
        if (t < fromUs || t >= toUs) continue;
        if (Math.abs(pcm[i]) >= thr) return { us: t, peak, frame: f };
      }
    }
    return null;
  }
}

// ------------------------------------------------------------ offline: ERLE and the click through the pipeline

interface ErleFigures {
  erle_db: number;
  erle_per_second_db: number[];
  erle_after_dt_db: number;
  dt_corr: number;
  dt_corr_mic: number;
  dt_lag_samples: number;
  near_atten_db: number;
  delay_ms: number | null;
  ms_per_frame: number;
  scene: string;
}

function runAec(far: Float32Array, mic: Float32Array): { out: Float32Array; aec: EchoCanceller; msPerFrame: number } {
  const aec = new EchoCanceller();
  const n = mic.length - (mic.length % FRAME_SAMPLES);
  const raw = new Float32Array(n);
  const t0 = performance.now();
  for (let i = 0; i < n; i += FRAME_SAMPLES) {
    aec.pushFar(far.subarray(i, i + FRAME_SAMPLES));
    raw.set(aec.processNear(mic.subarray(i, i + FRAME_SAMPLES)), i);
  }
  const msPerFrame = (performance.now() - t0) / (n / FRAME_SAMPLES);
  const lat = aec.stats().latencySamples;
  const out = new Float32Array(n);
  out.set(raw.subarray(lat));
  return { out, aec, msPerFrame };
}

async function erleFigures(): Promise<ErleFigures> {
  const sc = await K.echoScenario({ seconds: 13, delayMs: 40, nearStartSec: 6 });
  const { out, aec } = runAec(sc.far, sc.mic);
  // Time per frame with the JIT warm: a second, fresh canceller on the same scene.
  const { msPerFrame } = runAec(sc.far, sc.mic);
  const [dtA, dtB] = sc.doubleTalk;
  const dt: K.Segment[] = [[dtA, dtB]];
  const corr = K.normalizedCorrelation(K.cut(sc.near, dt), K.cut(out, dt), { maxLagSamples: 480 });
  const micCorr = K.normalizedCorrelation(K.cut(sc.near, dt), K.cut(sc.mic, dt), { maxLagSamples: 480 });
  return {
    erle_db: round(K.erleDb(sc.mic, out, [K.seg(2, 6)]), 2),
    erle_per_second_db: Array.from({ length: 6 }, (_, s) => round(K.erleDb(sc.mic, out, [K.seg(s, s + 1)]), 1)),
    erle_after_dt_db: round(K.erleDb(sc.mic, out, [[dtB + K.ms(300), out.length - K.ms(100)]]), 2),
    dt_corr: round(corr.peak, 3),
    dt_corr_mic: round(micCorr.peak, 3),
    dt_lag_samples: corr.lag,
    near_atten_db: round(-20 * Math.log10(K.projectionGain(K.cut(sc.near, dt), K.cut(out, dt))), 2),
    delay_ms: aec.stats().delayMs === null ? null : round(aec.stats().delayMs!, 1),
    ms_per_frame: round(msPerFrame, 3),
    scene: 'echoScenario({seconds: 13, delayMs: 40, nearStartSec: 6}); ERLE over 2-6 s (far end only)',
  };
}

interface AlgorithmicFigures {
  /** Onset delay of the click through AEC + NS (no far end), ms. */
  aec_ns_ms: number;
  /** ... and then Opus encode + decode, ms. */
  aec_ns_opus_ms: number;
  /** Opus encode + decode alone, ms. */
  opus_ms: number;
  /** Worst peak change of a click through AEC + NS + Opus, dB (negative: quieter). */
  worst_peak_change_db: number;
  clicks: number;
}

/** The click train through the send pipeline's stages offline: do they keep it, and how late is its onset? */
async function algorithmicDelay(click: Int16Array): Promise<AlgorithmicFigures> {
  const periodSamples = K.ms(300);
  const clicks = 12;
  const n = (clicks + 1) * periodSamples;
  const x = new Int16Array(n - (n % FRAME_SAMPLES));
  for (let k = 0; k < clicks; k++) x.set(click, K.ms(100) + k * periodSamples + clickOffset(k, click.length));
  const ns = await NoiseSuppressor.create();
  const aec = new EchoCanceller();
  const enc = new OpusVoiceEncoder();
  const dec = new OpusVoiceDecoder();
  const enc2 = new OpusVoiceEncoder();
  const dec2 = new OpusVoiceDecoder();
  const zeros = new Float32Array(FRAME_SAMPLES);
  const tx = new Tap();
  const ty = new Tap();
  const tz = new Tap();
  const tw = new Tap();
  for (let i = 0; i < x.length; i += FRAME_SAMPLES) {
    const us = i * US_PER_SAMPLE;
    const frame = x.subarray(i, i + FRAME_SAMPLES);
    aec.pushFar(zeros);
    const y = floatToInt16(ns.process(aec.processNear(int16ToFloat(frame))));
    tx.add(frame, us);
    ty.add(y, us);
    tz.add(dec.decode(enc.encode(y))!, us);
    tw.add(dec2.decode(enc2.encode(frame.slice()))!, us);
  }
  ns.destroy();
  const a: number[] = [];
  const b: number[] = [];
  const c: number[] = [];
  let worst = 0;
  for (let k = 0; k < clicks; k++) {
    const from = (K.ms(100) + k * periodSamples - K.ms(20)) * US_PER_SAMPLE;
    const to = from + K.ms(250) * US_PER_SAMPLE;
    const ox = tx.onset(from, to);
    const oy = ty.onset(from, to);
    const oz = tz.onset(from, to);
    const ow = tw.onset(from, to);
    if (!ox || !oy || !oz || !ow) {
      worst = -Infinity;
      continue;
    }
    a.push((oy.us - ox.us) / 1000);
    b.push((oz.us - ox.us) / 1000);
    c.push((ow.us - ox.us) / 1000);
    worst = Math.min(worst, 20 * Math.log10(oz.peak / ox.peak));
  }
  const med = (v: number[]) => round(percentile(Float64Array.from(v).sort(), 50), 2);
  return { aec_ns_ms: med(a), aec_ns_opus_ms: med(b), opus_ms: med(c), worst_peak_change_db: round(worst, 1), clicks: a.length };
}

// ------------------------------------------------------------ the injector and the detectors

/** Plays a click into its sink when armed, silence otherwise; remembers when each click was handed over. */
class Injector {
  readonly playback: DevicePlayback;
  private armed: { k: number; offset: number } | null = null;
  private readonly silence = new Int16Array(FRAME_SAMPLES);
  private lastClick: { frame: Int16Array; k: number; offset: number } | null = null;
  /** Click k -> wall-clock µs of its first sample's hand-over. */
  readonly handed = new Map<number, number>();

  constructor(
    env: Record<string, string>,
    private readonly click: Int16Array,
  ) {
    this.playback = new DevicePlayback('default', () => this.pull(), { env });
    this.playback.on('played', (pcm, handedUs) => {
      if (this.lastClick && pcm === this.lastClick.frame) this.handed.set(this.lastClick.k, handedUs + this.lastClick.offset * US_PER_SAMPLE);
    });
  }

  arm(k: number): void {
    this.armed = { k, offset: clickOffset(k, this.click.length) };
  }

  private pull(): Int16Array {
    if (!this.armed) return this.silence;
    const frame = new Int16Array(FRAME_SAMPLES);
    frame.set(this.click, this.armed.offset);
    this.lastClick = { frame, ...this.armed };
    this.armed = null;
    return frame;
  }
}

function tapCapture(env: Record<string, string>, tap: Tap): DeviceCapture {
  const c = new DeviceCapture('default', { env });
  c.on('frame', (pcm, captureUs) => tap.add(pcm, captureUs));
  return c;
}

/** Clicks in segment `seg` (0-based) when `total` are spread over SEGMENTS. */
function perSegment(total: number, seg: number): number {
  return Math.floor(total / SEGMENTS) + (seg < total % SEGMENTS ? 1 : 0);
}

/** Arms the injector every spacingMs for `count` clicks numbered from `firstK`; resolves after the last one's window. */
async function clickRun(inj: Injector, firstK: number, count: number, spacingMs: number): Promise<number[]> {
  const ks: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const due = t0 + i * spacingMs;
    await sleep(Math.max(0, due - performance.now()));
    inj.arm(firstK + i);
    ks.push(firstK + i);
  }
  await sleep(spacingMs);
  return ks;
}

/** Why clicks were not measured. */
interface Missed {
  /** The injector never handed the click over (it was armed after the run ended). */
  not_handed: number;
  /** Not found on micA.monitor within MOUTH_WINDOW_MS. */
  not_in_mouth: number;
  /** Not found on spkB.monitor before the next click. */
  not_in_ear: number;
}

const newMissed = (): Missed => ({ not_handed: 0, not_in_mouth: 0, not_in_ear: 0 });

/** Counts a click that could not be measured; true when it can be. */
function noteMissed(m: Missed, handed: number | undefined, mouth: unknown, ear: unknown): boolean {
  if (handed === undefined) m.not_handed++;
  else if (!mouth) m.not_in_mouth++;
  else if (!ear) m.not_in_ear++;
  else return true;
  return false;
}

// ------------------------------------------------------------ the call (A -> relay -> B) and the floor

interface SentRecord {
  frameIndex: number;
  sendUs: number;
  level: number;
}

interface ClickResult {
  k: number;
  segment: number;
  injectedUs: number;
  /** Hand-over -> onset on micA.monitor: the injector's device latency, per click. */
  injectorMs: number;
  /** Onset on spkB.monitor - onset on micA.monitor. */
  m2eMs: number;
  /** Onset on spkB.monitor - hand-over (not corrected). */
  rawMs: number;
  /** Breakdown (call only; null when a tap missed it). */
  parts: { sendMs: number; netMs: number; jbMs: number; deviceMs: number } | null;
}

interface JbSample {
  targetDelayMs: number;
  bufferedMs: number;
}

function makeSendTap(client: Client, sent: SentRecord[]): void {
  const orig = client.sendAudio.bind(client);
  client.sendAudio = (payload, frameIndex, captureTsUs, level, voice) => {
    sent.push({ frameIndex, sendUs: nowUs(), level });
    return orig(payload, frameIndex, captureTsUs, level, voice);
  };
}

function playbackOf(call: AudioCall): DevicePlayback {
  const p = (call as unknown as { playback: unknown }).playback;
  if (!(p instanceof DevicePlayback)) throw new Error('AudioCall has no device playback (its private `playback` field changed or the speaker did not open)');
  return p;
}

// ------------------------------------------------------------ senders for the CPU phase

interface Encoded {
  payloads: Buffer[];
  levels: number[];
  voice: boolean[];
}

/** `pcm` as AudioCall would send it (Opus + one redundant copy), encoded twice round so the loop point is seamless. */
function preEncode(pcm: Float32Array): Encoded {
  const frames = Math.floor(pcm.length / FRAME_SAMPLES);
  const enc = new OpusVoiceEncoder();
  const red = new RedundancyEncoder(1);
  const out: Encoded = { payloads: [], levels: [], voice: [] };
  for (let pass = 0; pass < 2; pass++) {
    for (let f = 0; f < frames; f++) {
      const frame = pcm.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES);
      const payload = red.payload(pass * frames + f + 1, enc.encode(floatToInt16(frame)));
      if (pass === 1) {
        const level = levelDbov(frame);
        out.payloads.push(payload);
        out.levels.push(level);
        out.voice.push(level <= 50);
      }
    }
  }
  return out;
}

interface Sender {
  client: Client;
  sent: number;
  catchUps: number;
  skipped: number;
  stop(): void;
}

/** Sends the encoded loop every 20 ms from `startFrame`, first tick after phaseMs; drift-free. */
function startSender(client: Client, enc: Encoded, startFrame: number, phaseMs: number): Sender {
  const s: Sender = { client, sent: 0, catchUps: 0, skipped: 0, stop: () => (stopped = true) };
  let stopped = false;
  const t0 = performance.now() + phaseMs;
  let k = 0;
  const tick = () => {
    if (stopped) return;
    const due = Math.floor((performance.now() - t0) / 20) + 1;
    if (due - k > MAX_CATCH_UP) {
      s.skipped += due - MAX_CATCH_UP - k;
      k = due - MAX_CATCH_UP;
    }
    if (due - k > 1) s.catchUps++;
    while (k < due) {
      const i = (startFrame + k) % enc.payloads.length;
      if (client.sendAudio(enc.payloads[i], (k + 1) >>> 0, nowUs(), enc.levels[i], enc.voice[i])) s.sent++;
      k++;
    }
    setTimeout(tick, Math.max(0, t0 + k * 20 - performance.now()));
  };
  setTimeout(tick, Math.max(0, phaseMs));
  return s;
}

/** A DevicePlayback that plays `pcm` in a loop (a talker in front of a microphone). */
function loopPlayer(env: Record<string, string>, pcm: Int16Array): DevicePlayback {
  let pos = 0;
  return new DevicePlayback(
    'default',
    () => {
      const f = new Int16Array(FRAME_SAMPLES);
      for (let i = 0; i < FRAME_SAMPLES; i++) f[i] = pcm[(pos + i) % pcm.length];
      pos = (pos + FRAME_SAMPLES) % pcm.length;
      return f;
    },
    { env },
  );
}

// ------------------------------------------------------------ main

interface ChildStats extends ChildStatsBase {
  call?: ReturnType<AudioCall['stats']> | null;
  problems?: string[];
  warnings?: string[];
  pid?: number;
  threads?: { tid: number; ticks: number }[];
  media?: { packets_in: number; packets_out: number; receiver_drops: number; dropped: Record<string, number> };
}

let pulse: Pulse | null = null;
let server: ForkedChild | null = null;
let cpuChild: ForkedChild | null = null;
const clients: Client[] = [];
const calls: AudioCall[] = [];
const devices: { stop(): Promise<void> }[] = [];
const senders: Sender[] = [];

async function stopDevices(list: { stop(): Promise<void> }[]): Promise<void> {
  await Promise.all(list.map((d) => d.stop().catch(() => undefined)));
  for (const d of list) {
    const i = devices.indexOf(d);
    if (i >= 0) devices.splice(i, 1);
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      clicks: { type: 'string', default: String(DEFAULT_CLICKS) },
      'cpu-seconds': { type: 'string', default: String(DEFAULT_CPU_SECONDS) },
      'quiet-wait': { type: 'string', default: String(DEFAULT_QUIET_WAIT_S) },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    log(USAGE);
    return 0;
  }
  out = divertNativeStdout() ?? process.stdout;
  const clicks = Number(values.clicks);
  if (!(Number.isInteger(clicks) && clicks >= 30 && clicks <= 120)) throw new Error('--clicks must be an integer in [30, 120]');
  const cpuSeconds = Number(values['cpu-seconds']);
  if (!(cpuSeconds >= 5 && cpuSeconds <= 60)) throw new Error('--cpu-seconds must be in [5, 60]');
  const quietWaitS = Number(values['quiet-wait']);
  if (!(quietWaitS >= 0 && quietWaitS <= 600)) throw new Error('--quiet-wait must be seconds in [0, 600]');
  if (!K.speechAvailable()) throw new Error('espeak-ng and sox are needed (run `npm run setup` as root)');

  const machine = machineInfo();
  log(`bench:audio on ${machine.cpus} x ${machine.cpu_model}, node ${machine.node}: ${clicks} clicks mouth-to-ear, ${FLOOR_CLICKS} floor, ${SENDERS} senders for ${cpuSeconds} s of CPU`);
  const problems: string[] = [];
  /** Devices lost and restored by themselves (underruns on a loaded machine): reported, not fatal. */
  const warnings: string[] = [];

  // ---- offline: ERLE, the click through the send pipeline, the senders' packets
  const erle = await erleFigures();
  log(
    `ERLE (offline acceptance scene): ${erle.erle_db} dB over 2-6 s, after double-talk ${erle.erle_after_dt_db} dB; ` +
      `double-talk correlation ${erle.dt_corr} (mic ${erle.dt_corr_mic}), near-end attenuation ${erle.near_atten_db} dB; delay ${erle.delay_ms} ms; ${erle.ms_per_frame} ms per 20 ms frame`,
  );
  const click = clickSamples();
  const algorithmic = await algorithmicDelay(click);
  log(
    `click offline (${algorithmic.clicks} clicks): onset +${algorithmic.aec_ns_ms} ms through AEC+NS, +${algorithmic.aec_ns_opus_ms} ms with Opus ` +
      `(Opus alone +${algorithmic.opus_ms} ms); worst peak change ${algorithmic.worst_peak_change_db} dB`,
  );
  if (algorithmic.clicks < 10 || algorithmic.worst_peak_change_db < -12) problems.push('the click does not survive AEC + NS + Opus offline');
  const talk = K.trimSilence(
    await K.speechSequence(
      [{ text: 'Let us go through the numbers for this quarter and then talk about the plan for the next release.' }, { text: 'I think the audio sounds fine on my side.', voice: 'en+f3' }],
      200,
    ),
  );
  const talk4s = talk.subarray(0, Math.min(talk.length, K.sec(4)));
  const encoded = preEncode(talk4s);

  // ---- devices and the server
  pulse = await startPulse({ sinks: SINKS });
  server = await forkTs(path.join(BENCH_DIR, 'audio_child.ts'), ['server']);
  const port = server.port;

  // A null sink that nobody reads from stalls its players for ~0.7-0.8 s at a time
  // (seen here: AudioCall then reports its speaker lost and reopens it), so every
  // loudspeaker sink gets a reader (parec, a process of its own) for the whole run.
  const readers = [pulse.record('spkA'), pulse.record('cpuSpk')];
  const q = await waitForQuiet(Math.max(1000, quietWaitS * 1000), QUIET_CORES);
  if (!q.quiet) log(`machine still busy (${q.busy_cores} cores used by other processes after ${q.waited_s} s); measuring anyway`);
  const m0 = machineCpu();

  // ---- 1. device loop, the measureLoopLatency path (its own sink, nothing else playing)
  const loop: LoopLatency = await measureLoopLatency(pulse, 'loop', { clicks: LOOP_CLICKS, spacingMs: 200 });
  const loopDist = dist(loop.samplesMs);
  log(`device loop (DevicePlayback -> sink -> monitor -> DeviceCapture, ${loopDist.count} clicks, ${loop.missed} missed): p50 ${loopDist.p50_ms} ms, p95 ${loopDist.p95_ms} ms`);

  // Injector and detectors, running through floor and mouth-to-ear.
  const inj = new Injector(pulse.env({ sink: 'micA' }), click);
  const mouth = new Tap();
  const ear = new Tap();
  const detMouth = tapCapture(pulse.env({ source: 'micA.monitor' }), mouth);
  const detEar = tapCapture(pulse.env({ source: 'spkB.monitor' }), ear);
  devices.push(inj.playback, detMouth, detEar);
  const watchDevice = (d: DeviceCapture | DevicePlayback, name: string) => {
    const e = d as unknown as { on(event: 'lost', fn: (reason: string) => void): void; on(event: 'restored', fn: () => void): void };
    e.on('lost', (reason) => warnings.push(`${name} lost: ${reason}`));
    e.on('restored', () => warnings.push(`${name} restored`));
  };
  watchDevice(inj.playback, 'injector');
  watchDevice(detMouth, 'mouth detector');
  watchDevice(detEar, 'ear detector');
  await detMouth.start();
  await detEar.start();
  await inj.playback.start();

  // ---- 2. floor: micA.monitor -> capture -> Opus -> decode -> playback -> spkB, no network
  const floorTap = new Tap();
  const fifo: { pcm: Int16Array; pushUs: number }[] = [];
  /** Per frame handed to the floor's playback (same order as floorTap): when it entered the FIFO (NaN: silence). */
  const floorPushUs: number[] = [];
  const floorSilence = new Int16Array(FRAME_SAMPLES);
  let fifoDropped = 0;
  const floorEnc = new OpusVoiceEncoder();
  const floorDec = new OpusVoiceDecoder();
  const floorCap = new DeviceCapture('default', { env: pulse.env({ source: 'micA.monitor' }) });
  floorCap.on('frame', (pcm) => {
    fifo.push({ pcm: floorDec.decode(floorEnc.encode(pcm)) ?? new Int16Array(FRAME_SAMPLES), pushUs: nowUs() });
    while (fifo.length > 2) {
      fifo.shift();
      fifoDropped++;
    }
  });
  // The playback pull: the oldest frame; a frame that has stood in the FIFO at every pull
  // for 0.5 s is dropped (both devices run on one clock, so a standing frame never drains
  // by itself: start-up order would otherwise decide the floor).
  let fifoMin = Infinity;
  let fifoPulls = 0;
  const floorPull = (): Int16Array => {
    const e = fifo.shift();
    floorPushUs.push(e ? e.pushUs : NaN);
    fifoMin = Math.min(fifoMin, fifo.length);
    if (++fifoPulls >= FIFO_TRIM_PULLS) {
      if (fifoMin >= 1) {
        fifo.shift();
        fifoDropped++;
      }
      fifoMin = Infinity;
      fifoPulls = 0;
    }
    return e ? e.pcm : floorSilence;
  };
  devices.push(floorCap);
  await floorCap.start();
  const floorClicks: number[] = [];
  let k = 0;
  /** Clicks found both on micA.monitor and on spkB.monitor so far. */
  const countDetected = (ks: number[], spacingMs: number) =>
    ks.filter((kk) => {
      const h = inj.handed.get(kk);
      return h !== undefined && mouth.onset(h, h + MOUTH_WINDOW_MS * 1000) !== null && ear.onset(h, h + (spacingMs - 60) * 1000) !== null;
    }).length;
  // Segments; one more (bounded) when a loaded machine made too many clicks go missing.
  for (let seg = 0; seg < SEGMENTS || (seg === SEGMENTS && countDetected(floorClicks, FLOOR_SPACING_MS) < MIN_FLOOR_CLICKS); seg++) {
    const pb = new DevicePlayback('default', floorPull, { env: pulse.env({ sink: 'spkB' }) });
    pb.on('played', (pcm, us) => floorTap.add(pcm.slice(), us));
    devices.push(pb);
    await pb.start();
    await waitUntil(() => pb.frames >= 60 && floorCap.frames >= 60 && detMouth.frames >= 60 && detEar.frames >= 60 && inj.playback.frames >= 60, 10_000, 'floor devices to flow', 20);
    const n = seg < SEGMENTS ? perSegment(FLOOR_CLICKS, seg) : MIN_FLOOR_CLICKS - countDetected(floorClicks, FLOOR_SPACING_MS) + EXTRA_MARGIN;
    floorClicks.push(...(await clickRun(inj, k, n, FLOOR_SPACING_MS)));
    k += n;
    await stopDevices([pb]);
  }
  await stopDevices([floorCap]);

  const floorMissed = newMissed();
  const floorResults: ClickResult[] = [];
  const floorLoop: number[] = [];
  const floorCapture: number[] = [];
  const floorFifoWait: number[] = [];
  for (const kk of floorClicks) {
    const h = inj.handed.get(kk);
    const o0 = h === undefined ? null : mouth.onset(h, h + MOUTH_WINDOW_MS * 1000);
    const o1 = h === undefined ? null : ear.onset(h, h + (FLOOR_SPACING_MS - 60) * 1000);
    if (!noteMissed(floorMissed, h, o0, o1) || h === undefined || !o0 || !o1) continue;
    floorResults.push({ k: kk, segment: 0, injectedUs: h, injectorMs: (o0.us - h) / 1000, m2eMs: (o1.us - o0.us) / 1000, rawMs: (o1.us - h) / 1000, parts: null });
    const oh = floorTap.onset(o0.us, o1.us + 1);
    if (oh) {
      floorLoop.push((o1.us - oh.us) / 1000);
      const pushUs = floorPushUs[oh.frame];
      const handUs = floorTap.frames[oh.frame].us;
      if (Number.isFinite(pushUs)) {
        floorCapture.push((pushUs - o0.us) / 1000);
        floorFifoWait.push((handUs - pushUs) / 1000);
      }
    }
  }
  const floor = dist(floorResults.map((r) => r.m2eMs));
  log(`floor (device + Opus, no network): ${floor.count}/${floorClicks.length} clicks, p50 ${floor.p50_ms} ms, p95 ${floor.p95_ms} ms; its device loop (hand-over -> spkB) p50 ${dist(floorLoop).p50_ms} ms; capture+codec p50 ${dist(floorCapture).p50_ms} ms, FIFO wait p50 ${dist(floorFifoWait).p50_ms} ms; FIFO trimmed ${fifoDropped} frames; missed ${JSON.stringify(floorMissed)}`);

  // ---- 3. mouth-to-ear: AudioCall A -> relay -> AudioCall B
  const clientA = new Client({ host: '127.0.0.1', port, username: 'audio-a', reconnect: false });
  const clientB = new Client({ host: '127.0.0.1', port, username: 'audio-b', reconnect: false });
  clients.push(clientA, clientB);
  await clientA.connect();
  await clientB.connect();
  const room = await clientA.createRoom({ name: 'bench-audio-m2e' });
  await clientA.joinRoom(room.room_id);
  await clientB.joinRoom(room.room_id);
  await Promise.all([clientA.waitForMedia(), clientB.waitForMedia()]);
  const sent: SentRecord[] = [];
  makeSendTap(clientA, sent);
  const arrivals = new Map<number, number>();
  clientB.on('audio', (p: MediaAudioPacket) => {
    if (!arrivals.has(p.frameIndex)) arrivals.set(p.frameIndex, nowUs());
  });
  const callProblems: string[] = [];
  const watch = (c: AudioCall, who: string) => {
    c.on('device', (d) => {
      if (d.state === 'unavailable') callProblems.push(`${who} ${d.dir} ${d.state}: ${d.error?.message}`);
      else warnings.push(`${who} ${d.dir} ${d.state}${d.error ? `: ${d.error.message}` : ''}`);
    });
    c.on('error', (e) => callProblems.push(`${who}: ${e.message}`));
  };
  const callA = new AudioCall(clientA, { mic: 'default', speaker: 'default' }, { micEnv: pulse.env({ source: 'micA.monitor' }), speakerEnv: pulse.env({ sink: 'spkA' }) });
  watch(callA, 'A');
  calls.push(callA);
  await callA.start();
  const earHanded = new Tap();
  const jbSamples: JbSample[] = [];
  const m2eClicks: { k: number; segment: number }[] = [];
  const bStats: ReturnType<AudioCall['stats']>[] = [];
  for (let seg = 0; seg < SEGMENTS || (seg === SEGMENTS && countDetected(m2eClicks.map((c) => c.k), M2E_SPACING_MS) < MIN_M2E_CLICKS); seg++) {
    const callB = new AudioCall(clientB, { mic: 'none', speaker: 'default' }, { speakerEnv: pulse.env({ sink: 'spkB' }) });
    watch(callB, 'B');
    calls.push(callB);
    await callB.start();
    const pb = playbackOf(callB);
    pb.on('played', (pcm, us) => earHanded.add(pcm.slice(), us));
    await waitUntil(
      () => callA.stats().counters.sent >= 50 && pb.frames >= 60 && callB.stats().talkers[0]?.jitter.playing === true,
      10_000,
      'A sending and B playing',
      20,
    );
    const sampler = setInterval(() => {
      const j = callB.stats().talkers[0]?.jitter;
      if (j?.playing) jbSamples.push({ targetDelayMs: j.targetDelayMs, bufferedMs: j.bufferedMs });
    }, 100);
    const n = seg < SEGMENTS ? perSegment(clicks, seg) : MIN_M2E_CLICKS - countDetected(m2eClicks.map((c) => c.k), M2E_SPACING_MS) + EXTRA_MARGIN;
    const ks = await clickRun(inj, k, n, M2E_SPACING_MS);
    clearInterval(sampler);
    k += n;
    for (const kk of ks) m2eClicks.push({ k: kk, segment: seg + 1 });
    bStats.push(callB.stats());
    await callB.close();
    calls.splice(calls.indexOf(callB), 1);
  }
  const aStats = callA.stats();
  await callA.close();
  calls.length = 0;
  await stopDevices([inj.playback, detMouth, detEar]);
  await Promise.all([clientA, clientB].map((c) => c.close().catch(() => undefined)));
  clients.length = 0;

  const sentSorted = sent; // in send order (= time order)
  const m2eMissed = newMissed();
  const m2eResults: ClickResult[] = [];
  for (const { k: kk, segment } of m2eClicks) {
    const h = inj.handed.get(kk);
    const o0 = h === undefined ? null : mouth.onset(h, h + MOUTH_WINDOW_MS * 1000);
    const o1 = h === undefined ? null : ear.onset(h, h + (M2E_SPACING_MS - 60) * 1000);
    if (!noteMissed(m2eMissed, h, o0, o1) || h === undefined || !o0 || !o1) continue;
    let parts: ClickResult['parts'] = null;
    const s = sentSorted.find((r) => r.sendUs > o0.us && r.level <= CLICK_LEVEL_DBOV);
    const arr = s ? arrivals.get(s.frameIndex) : undefined;
    if (s && arr !== undefined && s.sendUs < o1.us) {
      const oh = earHanded.onset(s.sendUs, o1.us + 1);
      if (oh) parts = { sendMs: (s.sendUs - o0.us) / 1000, netMs: (arr - s.sendUs) / 1000, jbMs: (oh.us - arr) / 1000, deviceMs: (o1.us - oh.us) / 1000 };
    }
    m2eResults.push({ k: kk, segment, injectedUs: h, injectorMs: (o0.us - h) / 1000, m2eMs: (o1.us - o0.us) / 1000, rawMs: (o1.us - h) / 1000, parts });
  }
  const m2e = dist(m2eResults.map((r) => r.m2eMs));
  const m2eVsLoop = dist(m2eResults.map((r) => r.rawMs - loopDist.p50_ms));
  const injector = dist(m2eResults.map((r) => r.injectorMs));
  const withParts = m2eResults.filter((r) => r.parts);
  const breakdown = {
    clicks: withParts.length,
    a_framing_aec_ns_opus_processing: dist(withParts.map((r) => r.parts!.sendMs)),
    relay_and_udp: dist(withParts.map((r) => r.parts!.netMs)),
    jitter_buffer_and_playout_phase: dist(withParts.map((r) => r.parts!.jbMs)),
    playback_device_loop: dist(withParts.map((r) => r.parts!.deviceMs)),
  };
  const jb = {
    samples: jbSamples.length,
    target_delay: dist(jbSamples.map((s) => s.targetDelayMs)),
    playout_delay_P: dist(jbSamples.map((s) => s.bufferedMs)),
    per_segment: bStats.map((s) => s.talkers[0]?.jitter ?? null),
  };
  const m2eSegmentP50 = Array.from({ length: Math.max(0, ...m2eResults.map((r) => r.segment)) }, (_, i) => dist(m2eResults.filter((r) => r.segment === i + 1).map((r) => r.m2eMs)).p50_ms);
  const aProcessingUsPerFrame = aStats.counters.captured ? aStats.counters.processingUs / aStats.counters.captured : NaN;
  log('');
  log(`mouth-to-ear (AudioCall A -> relay -> AudioCall B): ${m2e.count}/${m2eClicks.length} clicks (missed: ${JSON.stringify(m2eMissed)})`);
  log(row('m2e (spkB onset - micA onset)', m2e));
  log(row('m2e_vs_loop (spkB - hand-over - loop p50)', m2eVsLoop));
  log(row("injector's device latency (per click)", injector));
  log(row('  A: framing + AEC/NS/Opus delay + processing', breakdown.a_framing_aec_ns_opus_processing));
  log(row('  relay + UDP on loopback', breakdown.relay_and_udp));
  log(row('  B: jitter buffer + playout clock phase', breakdown.jitter_buffer_and_playout_phase));
  log(row('  B: playback device (+ capture device)', breakdown.playback_device_loop));
  log(row("B's jitter buffer target delay", jb.target_delay));
  log(row("B's playout delay P (over fastest arrival)", jb.playout_delay_P));
  log(`  per-segment m2e p50 (B restarted each time): ${m2eSegmentP50.join(', ')} ms; A processing ${round(aProcessingUsPerFrame, 0)} µs per frame`);
  if (callProblems.length) problems.push(...callProblems);
  if (m2e.count < MIN_M2E_CLICKS) problems.push(`only ${m2e.count} mouth-to-ear clicks detected (need ${MIN_M2E_CLICKS})`);
  if (floor.count < MIN_FLOOR_CLICKS) problems.push(`only ${floor.count} floor clicks detected (need ${MIN_FLOOR_CLICKS})`);

  // ---- 4. CPU: one client (child) sends one stream and hears eight
  const nodeArgs: string[] = [];
  const profDir = path.join(os.tmpdir(), `lanvc-bench-audio-prof-${process.pid}`);
  if (values.profile) nodeArgs.push('--cpu-prof', '--cpu-prof-dir', profDir);
  cpuChild = await forkTs(path.join(BENCH_DIR, 'audio_child.ts'), ['client'], { nodeArgs });
  const calibration = await cpuChild.request<Calibration>(`calibrate ${JSON.stringify({ talkers: SENDERS })}`, 60_000);
  const host = new Client({ host: '127.0.0.1', port, username: 'audio-tx-1', reconnect: false });
  clients.push(host);
  await host.connect();
  const cpuRoom = await host.createRoom({ name: 'bench-audio-cpu' });
  await host.joinRoom(cpuRoom.room_id);
  const txs: Client[] = [host];
  for (let i = 2; i <= SENDERS; i++) {
    const c = new Client({ host: '127.0.0.1', port, username: `audio-tx-${i}`, reconnect: false });
    clients.push(c);
    await c.connect();
    await c.joinRoom(cpuRoom.room_id);
    txs.push(c);
  }
  await Promise.all(txs.map((c) => c.waitForMedia()));
  await Promise.all(txs.map((c) => c.setAudio(true)));
  const talker = loopPlayer(pulse.env({ sink: 'cpuMic' }), floatToInt16(talk));
  devices.push(talker);
  await talker.start();
  const join: JoinRequest = { port, room: cpuRoom.room_id, micEnv: pulse.env({ source: 'cpuMic.monitor' }), speakerEnv: pulse.env({ sink: 'cpuSpk' }) };
  const joined = await cpuChild.request<{ user_id: string; problems: string[] }>(`join ${JSON.stringify(join)}`, 30_000);
  if (joined.problems.length) problems.push(...joined.problems.map((p) => `cpu client: ${p}`));
  for (let i = 0; i < txs.length; i++) senders.push(startSender(txs[i], encoded, (i * 23) % encoded.payloads.length, (i * 20) / SENDERS));
  const deadline = performance.now() + 15_000;
  let ready: ChildStats;
  for (;;) {
    ready = await cpuChild.request<ChildStats>('stats');
    const st = ready.call;
    if (st && st.counters.captured >= 50 && st.counters.sent >= 50 && st.talkers.length === SENDERS && st.talkers.every((t) => t.jitter.playing)) break;
    if (performance.now() > deadline) throw new Error(`CPU client not hearing ${SENDERS} senders and sending within 15 s: ${JSON.stringify(st?.counters)} talkers=${st?.talkers.length}`);
    await sleep(200);
  }
  await sleep(CPU_WARMUP_MS);
  const srv0 = await server.request<ChildStats>('stats');
  const c0 = await cpuChild.request<ChildStats>('stats');
  const mc0 = machineCpu();
  const p0 = process.cpuUsage();
  await sleep(cpuSeconds * 1000);
  const c1 = await cpuChild.request<ChildStats>('stats');
  const p1 = process.cpuUsage(p0);
  const mc1 = machineCpu();
  const srv1 = await server.request<ChildStats>('stats');
  const wallUs = c1.hrtime_us - c0.hrtime_us;
  const childCpuUs = c1.cpu_user_us + c1.cpu_system_us - (c0.cpu_user_us + c0.cpu_system_us);
  const cpuPct = round((childCpuUs / wallUs) * 100, 2);
  const cc0 = c0.call!.counters;
  const cc1 = c1.call!.counters;
  const captured = cc1.captured - cc0.captured;
  const sendSideUs = cc1.processingUs - cc0.processingUs;
  const sum = (st: ChildStats, f: (j: ReturnType<AudioCall['stats']>['talkers'][number]['jitter']) => number) => st.call!.talkers.reduce((n, t) => n + f(t.jitter), 0);
  // Per thread (10 ms ticks): the JS main thread against the rest (PortAudio, libuv pool, V8 helpers).
  const ticksOf = (st: ChildStats) => new Map((st.threads ?? []).map((t) => [t.tid, t.ticks]));
  const t0 = ticksOf(c0);
  const threadDelta = [...ticksOf(c1)].map(([tid, ticks]) => ({ tid, ticks: ticks - (t0.get(tid) ?? 0) })).filter((t) => t.ticks > 0);
  const tickUs = 1e6 / 100;
  const mainTicks = threadDelta.find((t) => t.tid === c1.pid)?.ticks ?? 0;
  const otherTicks = threadDelta.reduce((n, t) => n + t.ticks, 0) - mainTicks;
  const cpu = {
    cpu_pct: cpuPct,
    /** From /proc/self/task (CLK_TCK assumed 100). */
    threads: {
      main_js_thread_pct: round(((mainTicks * tickUs) / wallUs) * 100, 1),
      other_threads_pct: round(((otherTicks * tickUs) / wallUs) * 100, 1),
      busy_threads: threadDelta.length,
      per_thread_pct: threadDelta.sort((a, b) => b.ticks - a.ticks).map((t) => round(((t.ticks * tickUs) / wallUs) * 100, 1)),
    },
    window_s: round(wallUs / 1e6, 2),
    user_pct: round(((c1.cpu_user_us - c0.cpu_user_us) / wallUs) * 100, 2),
    system_pct: round(((c1.cpu_system_us - c0.cpu_system_us) / wallUs) * 100, 2),
    elu: round(c1.elu_since_last, 3),
    stalls: c1.stalls,
    rss_mb: c1.rss_mb,
    captured_frames: captured,
    sent_frames: cc1.sent - cc0.sent,
    played_frames: cc1.played - cc0.played,
    /** AudioCall's counters.processingUs (wall time, so preemption on a busy machine counts too) per captured frame. */
    send_side_wall_us_per_frame: round(captured ? sendSideUs / captured : NaN, 1),
    /** The DSP alone, CPU time, measured in the child before it joined (calibrate in audio_child.ts). */
    calibration: {
      ...calibration,
      send_us_per_frame: round(calibration.send_us_per_frame, 1),
      aec_us_per_frame: round(calibration.aec_us_per_frame, 1),
      ns_us_per_frame: round(calibration.ns_us_per_frame, 1),
      opus_us_per_frame: round(calibration.opus_us_per_frame, 1),
      receive_us_per_tick: round(calibration.receive_us_per_tick, 1),
      send_pct: round(calibration.send_us_per_frame / 200, 2),
      receive_pct: round(calibration.receive_us_per_tick / 200, 2),
      /** cpu_pct minus the two: devices (PortAudio, naudiodon), UDP, timers, event loop, GC. */
      rest_pct: round(cpuPct - (calibration.send_us_per_frame + calibration.receive_us_per_tick) / 200, 2),
    },
    talkers: c1.call!.talkers.length,
    jitter_in_window: {
      received: sum(c1, (j) => j.received) - sum(c0, (j) => j.received),
      concealed: sum(c1, (j) => j.concealed) - sum(c0, (j) => j.concealed),
      late: sum(c1, (j) => j.late) - sum(c0, (j) => j.late),
      drift_dropped: sum(c1, (j) => j.driftDropped) - sum(c0, (j) => j.driftDropped),
      drift_inserted: sum(c1, (j) => j.driftInserted) - sum(c0, (j) => j.driftInserted),
      target_delay_ms: c1.call!.talkers.map((t) => t.jitter.targetDelayMs),
    },
    aec: c1.call!.aecStats,
    limited_frames: c1.call!.limited,
    senders: { sent: senders.reduce((n, s) => n + s.sent, 0), catch_ups: senders.reduce((n, s) => n + s.catchUps, 0), skipped: senders.reduce((n, s) => n + s.skipped, 0) },
    bench_process_cpu_pct: round(((p1.user + p1.system) / wallUs) * 100, 2),
    server_cpu_pct: round(((srv1.cpu_user_us + srv1.cpu_system_us - (srv0.cpu_user_us + srv0.cpu_system_us)) / wallUs) * 100, 2),
    relay: srv1.media
      ? { packets_in: srv1.media.packets_in - srv0.media!.packets_in, packets_out: srv1.media.packets_out - srv0.media!.packets_out, receiver_drops: srv1.media.receiver_drops - srv0.media!.receiver_drops }
      : null,
    machine: machineCpuBetween(mc0, mc1),
    hot_functions: null as HotFunction[] | null,
    /** Self time by source file (profile samples in the window), % of the window's wall time. */
    hot_files_pct: null as Record<string, number> | null,
    problems: c1.problems ?? [],
  };
  for (const s of senders) s.stop();
  senders.length = 0;
  await stopDevices([talker]);
  await cpuChild.request('close', 20_000).catch(() => undefined);
  await Promise.race([cpuChild.exited, sleep(10_000)]);
  await cpuChild.kill();
  cpuChild = null;
  if (values.profile) {
    try {
      const file = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'))[0];
      if (file) {
        const all = hotFunctions(path.join(profDir, file), 100_000, { fromUs: c0.hrtime_us, toUs: c1.hrtime_us });
        cpu.hot_functions = all.functions.filter((f) => f.function !== '(idle)').slice(0, 15);
        const byFile: Record<string, number> = {};
        for (const f of all.functions) {
          if (f.function === '(idle)') continue;
          const key = f.where ? f.where.replace(/:\d+$/, '') : f.function;
          byFile[key] = (byFile[key] ?? 0) + f.self_ms;
        }
        cpu.hot_files_pct = Object.fromEntries(
          Object.entries(byFile)
            .sort((a, b) => b[1] - a[1])
            .slice(0, 15)
            .map(([k, ms]) => [k, round((ms * 1000 * 100) / wallUs, 2)]),
        );
      }
      fs.rmSync(profDir, { recursive: true, force: true });
    } catch (e) {
      problems.push(`profile: ${(e as Error).message}`);
    }
  }
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  clients.length = 0;
  const machineLoad = machineCpuBetween(m0, machineCpu());
  log('');
  log(
    `CPU of one client sending 1 and hearing ${cpu.talkers} (NS + AEC on, real devices): ${cpu.cpu_pct} % of one core over ${cpu.window_s} s ` +
      `(user ${cpu.user_pct}, system ${cpu.system_pct}; ELU ${cpu.elu}); DSP alone: send ${cpu.calibration.send_us_per_frame} µs/frame = ${cpu.calibration.send_pct} % ` +
      `(AEC ${cpu.calibration.aec_us_per_frame}, NS ${cpu.calibration.ns_us_per_frame}, level+Opus ${cpu.calibration.opus_us_per_frame} µs), ` +
      `receive (${SENDERS} x decode + jitter buffer, mix) ${cpu.calibration.receive_us_per_tick} µs/tick = ${cpu.calibration.receive_pct} %; ` +
      `the rest (devices, UDP, timers, event loop, GC) ${cpu.calibration.rest_pct} %`,
  );
  log(
    `  by thread: JS main thread ${cpu.threads.main_js_thread_pct} %, other threads ${cpu.threads.other_threads_pct} % ` +
      `(PortAudio callbacks, libuv pool in naudiodon reads/writes, V8 helpers: ${cpu.threads.per_thread_pct.join(', ')} %)`,
  );
  log(
    `  jitter buffers in the window: ${cpu.jitter_in_window.received} packets, ${cpu.jitter_in_window.concealed} concealed, ${cpu.jitter_in_window.late} late; ` +
      `senders ${cpu.senders.sent} packets (${cpu.senders.catch_ups} catch-ups, ${cpu.senders.skipped} skipped); bench process ${cpu.bench_process_cpu_pct} %, server ${cpu.server_cpu_pct} %`,
  );
  if (cpu.hot_files_pct) {
    log('  profile, self time by file (% of one core):');
    for (const [f, pct] of Object.entries(cpu.hot_files_pct).slice(0, 12)) log(`  ${String(pct).padStart(6)} %  ${f}`);
  }
  if (cpu.problems.length) problems.push(...cpu.problems.map((p) => `cpu client: ${p}`));
  warnings.push(...(c1.warnings ?? []).map((w) => `cpu client: ${w}`));

  await server.request('close', 20_000).catch(() => undefined);
  await Promise.race([server.exited, sleep(10_000)]);
  await server.kill();
  server = null;
  await Promise.all(readers.map((r) => r.stop()));
  await pulse.stop();
  pulse = null;

  const m2eMet = m2e.p50_ms <= TARGET_M2E_P50_MS;
  const cpuMet = cpuPct <= TARGET_CPU_PCT;
  log('');
  log(`targets: m2e p50 <= ${TARGET_M2E_P50_MS} ms: ${m2eMet ? 'met' : 'MISSED'} (${m2e.p50_ms} ms); cpu <= ${TARGET_CPU_PCT} %: ${cpuMet ? 'met' : 'MISSED'} (${cpuPct} %)`);
  const complete = problems.length === 0;
  const file = writeResults('audio', {
    bench: 'audio',
    date: machine.date,
    machine: { ...machine, loadavg_at_end: os.loadavg().map((l) => round(l, 2)) },
    config: {
      clicks,
      floor_clicks: FLOOR_CLICKS,
      loop_clicks: LOOP_CLICKS,
      segments: SEGMENTS,
      m2e_spacing_ms: M2E_SPACING_MS,
      floor_spacing_ms: FLOOR_SPACING_MS,
      click: `tests/kit/audio_signals clickTrain click: 1 ms raised-cosine 2 kHz burst, peak ${CLICK_AMPLITUDE}, at a golden-ratio offset inside its 20 ms frame`,
      onset: `first sample >= ${ONSET_FRACTION} x the window's peak (peak >= ${MIN_PEAK})`,
      sinks: SINKS,
      call: 'A: AudioCall defaults (NS + AEC on, Opus 32 kbit/s, redundancy 1), mic micA.monitor, speaker spkA; B: AudioCall, mic none, speaker spkB; Server in a child (bench/audio_child.ts server)',
      cpu: `child bench/audio_child.ts client: AudioCall defaults, mic cpuMic.monitor (looped espeak-ng speech), speaker cpuSpk; ${SENDERS} senders of pre-encoded speech in the bench process; warm-up ${CPU_WARMUP_MS} ms; window ${cpuSeconds} s${values.profile ? '; under --cpu-prof' : ''}`,
      quiet_wait_s: quietWaitS,
    },
    targets: {
      m2e_p50_max_ms: TARGET_M2E_P50_MS,
      m2e_met: m2eMet,
      cpu_pct_max: TARGET_CPU_PCT,
      cpu_met: cpuMet,
    },
    m2e_p50_ms: m2e.p50_ms,
    m2e_p95_ms: m2e.p95_ms,
    floor_p50_ms: floor.p50_ms,
    cpu_pct: cpuPct,
    erle_db: erle.erle_db,
    m2e,
    m2e_vs_loop: m2eVsLoop,
    m2e_per_segment_p50_ms: m2eSegmentP50,
    injector_device_latency: injector,
    breakdown,
    jitter_buffer_b: jb,
    a_processing_us_per_frame: round(aProcessingUsPerFrame, 1),
    a_stats: { counters: aStats.counters, aec: aStats.aecStats },
    floor,
    floor_breakdown: {
      capture_framing_and_codec: dist(floorCapture),
      fifo_wait: dist(floorFifoWait),
      note: 'micA onset -> decoded frame in the FIFO; FIFO -> hand-over of that frame; the onset sample\'s hand-over -> spkB onset is floor_device_loop (the rest, onset offset in the frame, completes the sum)',
    },
    floor_device_loop: dist(floorLoop),
    floor_fifo_trimmed_frames: fifoDropped,
    floor_missed: floorMissed,
    m2e_missed: m2eMissed,
    device_loop: { ...loopDist, missed: loop.missed, arrival_p50_ms: round(loop.arrivalP50, 2) },
    algorithmic,
    cpu,
    erle,
    m2e_clicks: m2eResults.map((r) => ({
      k: r.k,
      segment: r.segment,
      m2e_ms: round(r.m2eMs, 2),
      injector_ms: round(r.injectorMs, 2),
      parts: r.parts && { send_ms: round(r.parts.sendMs, 2), net_ms: round(r.parts.netMs, 2), jb_ms: round(r.parts.jbMs, 2), device_ms: round(r.parts.deviceMs, 2) },
    })),
    quiet_before: q,
    machine_load_during: machineLoad,
    complete,
    problems,
    warnings,
  });
  if (warnings.length) log(`warnings (devices that stalled and came back; the machine was busy?): ${warnings.join('; ')}`);
  if (!complete) log(`RUN INCOMPLETE: ${problems.join('; ')}`);
  log(`results: ${path.relative(process.cwd(), file)}`);
  log(
    finalLine('audio', {
      m2e_p50_ms: m2e.p50_ms,
      m2e_p95_ms: m2e.p95_ms,
      floor_p50_ms: floor.p50_ms,
      cpu_pct: cpuPct,
      erle_db: erle.erle_db,
      floor_p95_ms: floor.p95_ms,
      jb_playout_p50_ms: jb.playout_delay_P.p50_ms,
      loop_p50_ms: loopDist.p50_ms,
      dt_corr: erle.dt_corr,
      near_atten_db: erle.near_atten_db,
      m2e_met: m2eMet ? 'yes' : 'no',
      cpu_met: cpuMet ? 'yes' : 'no',
    }),
  );
  return complete ? 0 : 1;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

runBench('audio', main, {
  timeoutMs: OVERALL_TIMEOUT_MS,
  cleanup: async (hard) => {
    for (const s of senders) s.stop();
    if (hard) {
      server?.proc.kill('SIGKILL');
      cpuChild?.proc.kill('SIGKILL');
      return; // the pulse kit kills its daemon on process exit
    }
    if (pulse && !alive(pulse.pid)) process.stderr.write(`bench:audio: the private pulseaudio daemon (pid ${pulse.pid}) is gone (crashed, or killed by someone else)\n`);
    await Promise.all(calls.map((c) => c.close().catch(() => undefined)));
    await Promise.all(devices.map((d) => d.stop().catch(() => undefined)));
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await cpuChild?.kill().catch(() => undefined);
    await server?.kill().catch(() => undefined);
    await pulse?.stop().catch(() => undefined);
  },
});
