/**
 * A microphone through naudiodon: 48 kHz mono s16, re-chunked to 960-sample frames.
 *
 * How naudiodon 2.3.6 capture works (src/PaContext.cc, index.js), and what follows:
 * - The PortAudio callback copies each buffer of `framesPerBuffer` samples into a
 *   C++ queue of at most `maxQueue` buffers and BLOCKS when it is full (the device
 *   then overflows). The queue costs no latency while JS keeps up (JS drains it at
 *   once), so it is made deep (50 x 10 ms): an event-loop stall of up to 0.5 s loses
 *   nothing.
 * - The Readable reads `highwaterMark` bytes per native read and each read blocks a
 *   libuv thread-pool thread until that many bytes exist. The default (16384 bytes
 *   = 170 ms at 48 kHz mono) would add 170 ms of latency; one frame (1920 bytes) is
 *   used. One pool thread is always parked in this read.
 * - When the device dies (a PulseAudio source removed with no other source to move
 *   the stream to, a USB microphone unplugged), PortAudio's callback thread exits
 *   printing "Expression ... failed" to stderr, and the stream simply stops: no
 *   'error', no 'end'. So loss is detected by a watchdog on data arrival. (When
 *   PulseAudio can, it moves the stream to another source instead; that shows up
 *   as a ~1 s gap, which the watchdog also reports, and the reopen then goes back
 *   to the requested device, or keeps failing until it is back.)
 * - Status flags (overflow) with closeOnError:true destroy the stream, and a
 *   reopen costs 0.6-1.9 s of PortAudio/pulse start-up, so closeOnError is false:
 *   naudiodon then prints "AudioIO: portAudio status - ..." to stdout instead.
 * - After start, the ALSA pulse plugin delivers its first samples 0.6-1.9 s later
 *   (PortAudio spins on the plugin's poll descriptor meanwhile); start() does not
 *   wait for that.
 */
import { TypedEmitter } from '../../shared/events';
import { FRAME_SAMPLES, SAMPLE_RATE } from './format';
import {
  AudioDeviceError,
  backoffMs,
  listAudioDevices,
  loadNaudiodon,
  nowUs,
  resolveDevice,
  withEnv,
  type NaIoStream,
} from './device_backend';
import type { AudioCapture, CaptureEvents } from './devices';

export interface DeviceCaptureOptions {
  /** Samples per PortAudio callback. Default 480 (10 ms). */
  framesPerBuffer?: number;
  /** Depth of naudiodon's native queue, in callbacks. Default 50 (0.5 s at 480). */
  maxQueue?: number;
  /** Once audio has flowed, this long without data means the device is lost. Default 700 ms. */
  stallMs?: number;
  /** After (re)opening, the first data must come within this. Default 5000 ms (pulse start-up takes up to ~2 s). */
  startupMs?: number;
  /** Delays between reopen attempts; the last one repeats. Default [250, 500, 1000, 2000]. */
  retryMs?: number[];
  /** Environment for this stream's open only, e.g. { PULSE_SOURCE: 'mic.monitor' } (see withEnv). */
  env?: Record<string, string | undefined>;
}

const US_PER_SAMPLE = 1e6 / SAMPLE_RATE;
/** How fast the capture clock estimate may move later: 200 ppm of audio time. */
const CLOCK_LEAK_PER_SAMPLE_US = US_PER_SAMPLE * 200e-6;

export class DeviceCapture extends TypedEmitter<CaptureEvents> implements AudioCapture {
  readonly label: string;
  private readonly o: Required<Omit<DeviceCaptureOptions, 'env'>> & Pick<DeviceCaptureOptions, 'env'>;
  private io: NaIoStream | null = null;
  private running = false;
  private lost = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private lastTick = 0;
  private openedAt = 0;
  private lastDataAt = 0;
  private flowing = false;
  private carry: Buffer = Buffer.alloc(0);
  /** Samples delivered since the current stream opened. */
  private samples = 0;
  /** Estimated wall-clock µs of sample 0 of the current stream (min over arrivals). */
  private clockOffsetUs = Infinity;
  private readonly closing = new Set<Promise<void>>();
  /** Frames emitted since start. */
  frames = 0;
  /** Streams reopened after a loss. */
  reopens = 0;

  constructor(
    readonly spec: string,
    opts: DeviceCaptureOptions = {},
  ) {
    super();
    this.label = `mic:${spec || 'default'}`;
    this.o = {
      framesPerBuffer: opts.framesPerBuffer ?? 480,
      maxQueue: opts.maxQueue ?? 50,
      stallMs: opts.stallMs ?? 700,
      startupMs: opts.startupMs ?? 5000,
      retryMs: opts.retryMs ?? [250, 500, 1000, 2000],
      env: opts.env,
    };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.open(); // throws AudioDeviceError: start() rejects
    this.running = true;
    this.lastTick = Date.now();
    this.watchdog = setInterval(() => this.checkFlow(), 100);
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.retryTimer = this.watchdog = null;
    this.closeStream();
    // Capture quits even when the device died (the queue's quit wakes the parked read);
    // bounded anyway, so stop() never hangs on the native side.
    await Promise.race([Promise.all([...this.closing]), new Promise((r) => setTimeout(r, 1500).unref())]);
  }

  private open(): void {
    const na = loadNaudiodon(this.o.env);
    const dev = resolveDevice(this.spec, 'input', listAudioDevices(this.o.env));
    let io: NaIoStream;
    try {
      io = withEnv(this.o.env, () =>
        na.AudioIO({
          inOptions: {
            channelCount: 1,
            sampleFormat: na.SampleFormat16Bit,
            sampleRate: SAMPLE_RATE,
            deviceId: dev.id,
            closeOnError: false,
            framesPerBuffer: this.o.framesPerBuffer,
            maxQueue: this.o.maxQueue,
            highwaterMark: FRAME_SAMPLES * 2,
          },
        }),
      );
    } catch (e) {
      throw new AudioDeviceError('AUDIO_DEVICE_OPEN_FAILED', { dir: 'input', device: dev.name, reason: (e as Error).message });
    }
    // index.js logs every stream error with console.error; this layer reports its own.
    io.removeAllListeners('error');
    io.on('error', (e: unknown) => this.fail(io, `stream error: ${String(e)}`));
    io.on('end', () => this.fail(io, 'stream ended'));
    io.on('data', (b: Buffer) => this.onData(io, b));
    try {
      io.start();
    } catch (e) {
      this.track(io);
      throw new AudioDeviceError('AUDIO_DEVICE_OPEN_FAILED', { dir: 'input', device: dev.name, reason: (e as Error).message });
    }
    this.io = io;
    this.openedAt = Date.now();
    this.flowing = false;
    this.carry = Buffer.alloc(0);
    this.samples = 0;
    this.clockOffsetUs = Infinity;
  }

  private onData(io: NaIoStream, b: Buffer): void {
    if (io !== this.io || !this.running) return;
    const arrivalUs = nowUs();
    this.lastDataAt = Date.now();
    if (!this.flowing) {
      this.flowing = true;
      this.attempt = 0;
      if (this.lost) {
        this.lost = false;
        this.emit('restored');
      }
    }
    const buf = this.carry.length ? Buffer.concat([this.carry, b]) : b;
    const whole = buf.length - (buf.length % (FRAME_SAMPLES * 2));
    // Arrival time bounds the capture time of the newest sample from above; the
    // smallest (arrival - position) seen is the best estimate of when sample 0 was
    // taken. It leaks upwards slowly so the estimate follows device clock drift.
    const endSample = this.samples + Math.floor(buf.length / 2);
    const offset = arrivalUs - endSample * US_PER_SAMPLE;
    const leaked = this.clockOffsetUs + (b.length / 2) * CLOCK_LEAK_PER_SAMPLE_US;
    this.clockOffsetUs = Math.min(offset, leaked);
    for (let off = 0; off < whole; off += FRAME_SAMPLES * 2) {
      const frame = new Int16Array(FRAME_SAMPLES);
      for (let i = 0; i < FRAME_SAMPLES; i++) frame[i] = buf.readInt16LE(off + 2 * i);
      const captureUs = Math.round(this.clockOffsetUs + this.samples * US_PER_SAMPLE);
      this.samples += FRAME_SAMPLES;
      this.frames++;
      this.emit('frame', frame, captureUs);
      if (io !== this.io || !this.running) return; // a listener stopped us
    }
    this.carry = whole < buf.length ? Buffer.from(buf.subarray(whole)) : Buffer.alloc(0);
  }

  private checkFlow(): void {
    const now = Date.now();
    // A late tick means the event loop itself stalled: data may be waiting in the
    // queue, so do not judge the device on this tick.
    const late = now - this.lastTick > 300;
    this.lastTick = now;
    if (!this.running || !this.io || late) {
      if (late && this.flowing) this.lastDataAt = now;
      return;
    }
    if (this.flowing && now - this.lastDataAt > this.o.stallMs) this.fail(this.io, `no audio for ${now - this.lastDataAt} ms`);
    else if (!this.flowing && now - this.openedAt > this.o.startupMs) this.fail(this.io, `no audio within ${this.o.startupMs} ms of opening`);
  }

  private fail(io: NaIoStream, reason: string): void {
    if (io !== this.io || !this.running) return;
    this.closeStream();
    if (!this.lost) {
      this.lost = true;
      this.emit('lost', reason);
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (!this.running || this.retryTimer) return;
    const delay = backoffMs(this.o.retryMs, this.attempt++);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.running) return;
      try {
        this.open();
        this.reopens++;
      } catch {
        this.scheduleRetry();
      }
    }, delay);
  }

  private closeStream(): void {
    const io = this.io;
    this.io = null;
    if (io) this.track(io);
  }

  private track(io: NaIoStream): void {
    io.removeAllListeners('data');
    io.removeAllListeners('end');
    io.removeAllListeners('error');
    io.on('error', () => {}); // late errors of a stream we dropped
    const p = io
      .quit()
      .catch(() => {})
      .finally(() => this.closing.delete(p));
    this.closing.add(p);
  }
}
