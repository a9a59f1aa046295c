/**
 * What a microphone (DeviceCapture) and a speaker (DevicePlayback) on naudiodon have
 * in common: one PortAudio stream at a time, 48 kHz mono s16, opened on start(), watched
 * by a watchdog, and reopened with a bounded backoff when it stops moving audio.
 * Only what flows differs: the subclass says how (listen, streamOpened), when the
 * stream counts as flowing (flowed) and what it is waiting for (waitingSince).
 *
 * The lifecycle, the same in both directions:
 * - start() opens the stream or rejects with an AudioDeviceError (AUDIO_UNAVAILABLE,
 *   AUDIO_DEVICE_NOT_FOUND, AUDIO_DEVICE_AMBIGUOUS, AUDIO_DEVICE_OPEN_FAILED).
 * - Once running nothing throws. The first audio must flow within `startupMs` of each
 *   (re)open, and once it flowed, the stream may wait for the device no longer than
 *   `stallMs`; otherwise, or on a stream error, the stream is dropped, 'lost' is
 *   emitted (once per loss), and it is reopened after backoffMs(retryMs) until audio
 *   flows again, which emits 'restored' and resets the backoff.
 * - closeOnError is false in both directions (why is in each subclass): a device
 *   hiccup prints "AudioIO: portAudio status - ..." to stdout and the stream goes on.
 * - A dropped stream is quit() in the background; stop() waits for those quits, but
 *   at most 1.5 s: a capture stream quits even when its device died (the queue's quit
 *   wakes the parked read), but quit() of a dead output stream never settles (see
 *   DevicePlayback), and stop() must never hang on the native side.
 */
import { TypedEmitter } from '../../shared/events';
import { SAMPLE_RATE } from './format';
import {
  AudioDeviceError,
  backoffMs,
  listAudioDevices,
  loadNaudiodon,
  resolveDevice,
  withEnv,
  type AudioDirection,
  type NaIoStream,
} from './device_backend';

/** The options both directions take. */
export interface DeviceStreamOptions {
  /** Samples per PortAudio callback. Default 480 (10 ms). */
  framesPerBuffer?: number;
  /** Delays between reopen attempts; the last one repeats. Default [250, 500, 1000, 2000]. */
  retryMs?: number[];
  /** Environment for this stream's open only, e.g. { PULSE_SOURCE: 'mic.monitor' } or { PULSE_SINK: 'spk' } (see withEnv). */
  env?: Record<string, string | undefined>;
}

/** Options with their defaults applied, as the base class uses them. */
export interface DeviceStreamSettings {
  framesPerBuffer: number;
  /** naudiodon's native queue depth, in buffers (capture) or chunks (playback). */
  maxQueue: number;
  stallMs: number;
  startupMs: number;
  retryMs: number[];
  env?: Record<string, string | undefined>;
  /** Bytes per native read (capture) or per write (playback). */
  highwaterMark: number;
}

/** The defaults both directions share. */
export function streamSettings(
  opts: DeviceStreamOptions & { stallMs?: number; startupMs?: number },
  own: { maxQueue: number; highwaterMark: number },
): DeviceStreamSettings {
  return {
    framesPerBuffer: opts.framesPerBuffer ?? 480,
    maxQueue: own.maxQueue,
    stallMs: opts.stallMs ?? 700,
    startupMs: opts.startupMs ?? 5000,
    retryMs: opts.retryMs ?? [250, 500, 1000, 2000],
    env: opts.env,
    highwaterMark: own.highwaterMark,
  };
}

type StreamEvents = { lost: [reason: string]; restored: []; error: [error: Error] };

export abstract class DeviceStream<E extends StreamEvents> extends TypedEmitter<E> {
  /** The stream audio flows through now (null while lost or stopped). */
  protected io: NaIoStream | null = null;
  protected running = false;
  /** Whether audio has flowed on the current stream (see flowed()). */
  protected flowing = false;
  /**
   * Since when (Date.now()) the stream has been waiting for the device: the last data
   * (capture), the outstanding write (playback); 0: not waiting. Once flowing, a wait
   * longer than stallMs means the device is lost.
   */
  protected waitingSince = 0;
  private lost = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private lastTick = 0;
  private openedAt = 0;
  private readonly closing = new Set<Promise<void>>();
  /** Streams reopened after a loss. */
  reopens = 0;

  protected constructor(
    readonly spec: string,
    private readonly dir: AudioDirection,
    protected readonly o: DeviceStreamSettings,
    /** How a stall reads in 'lost': `${stallWhat} for N ms`, `${stallWhat} within N ms of opening`. */
    private readonly stallWhat: string,
  ) {
    super();
  }

  /** Attaches the direction's own listeners to a new stream (before it starts). */
  protected abstract listen(io: NaIoStream): void;
  /** Resets the per-stream state once a new stream has started. */
  protected abstract streamOpened(): void;
  /** Runs after start() and after each reopen, with the stream open and running. */
  protected resume(): void {}
  /** Runs when a stream is dropped as lost (not on stop()). */
  protected streamFailed(): void {}

  async start(): Promise<void> {
    if (this.running) return;
    this.open(); // throws AudioDeviceError: start() rejects
    this.running = true;
    this.lastTick = Date.now();
    this.watchdog = setInterval(() => this.checkFlow(), 100);
    this.resume();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.retryTimer = this.watchdog = null;
    this.closeStream();
    // Bounded: quit() of a dead output stream never settles (see the file comment).
    await Promise.race([Promise.all([...this.closing]), new Promise((r) => setTimeout(r, 1500).unref())]);
  }

  private open(): void {
    const na = loadNaudiodon(this.o.env);
    const dev = resolveDevice(this.spec, this.dir, listAudioDevices(this.o.env));
    const failed = (e: unknown) => new AudioDeviceError('AUDIO_DEVICE_OPEN_FAILED', { dir: this.dir, device: dev.name, reason: (e as Error).message });
    const options = {
      channelCount: 1,
      sampleFormat: na.SampleFormat16Bit,
      sampleRate: SAMPLE_RATE,
      deviceId: dev.id,
      closeOnError: false,
      framesPerBuffer: this.o.framesPerBuffer,
      maxQueue: this.o.maxQueue,
      highwaterMark: this.o.highwaterMark,
    };
    let io: NaIoStream;
    try {
      // naudiodon tests for the key ('inOptions' in options): pass only the one in use.
      io = withEnv(this.o.env, () => na.AudioIO(this.dir === 'input' ? { inOptions: options } : { outOptions: options }));
    } catch (e) {
      throw failed(e);
    }
    // index.js logs every stream error with console.error; this layer reports its own.
    io.removeAllListeners('error');
    io.on('error', (e: unknown) => this.fail(io, `stream error: ${String(e)}`));
    this.listen(io);
    try {
      io.start();
    } catch (e) {
      this.track(io);
      throw failed(e);
    }
    this.io = io;
    this.openedAt = Date.now();
    this.flowing = false;
    this.waitingSince = 0;
    this.streamOpened();
  }

  /** Audio flows on the current stream: the backoff starts over, and a loss is over. */
  protected flowed(): void {
    this.flowing = true;
    this.attempt = 0;
    if (this.lost) {
      this.lost = false;
      this.events.emit('restored');
    }
  }

  private checkFlow(): void {
    const now = Date.now();
    // A late tick means the event loop itself stalled: data may be waiting in the
    // queue, so do not judge the device on this tick.
    const late = now - this.lastTick > 300;
    this.lastTick = now;
    if (!this.running || !this.io) return;
    if (late) {
      if (this.waitingSince) this.waitingSince = now;
      return;
    }
    if (this.flowing && this.waitingSince && now - this.waitingSince > this.o.stallMs) {
      this.fail(this.io, `${this.stallWhat} for ${now - this.waitingSince} ms`);
    } else if (!this.flowing && now - this.openedAt > this.o.startupMs) {
      this.fail(this.io, `${this.stallWhat} within ${this.o.startupMs} ms of opening`);
    }
  }

  /** Drops `io` as lost, if it is still the current stream, and schedules a reopen. */
  protected fail(io: NaIoStream, reason: string): void {
    if (io !== this.io || !this.running) return;
    this.closeStream();
    this.streamFailed();
    if (!this.lost) {
      this.lost = true;
      this.events.emit('lost', reason);
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
        this.resume();
      } catch {
        this.scheduleRetry();
      }
    }, delay);
  }

  private closeStream(): void {
    const io = this.io;
    this.io = null;
    this.waitingSince = 0;
    if (io) this.track(io);
  }

  private track(io: NaIoStream): void {
    io.removeAllListeners('data');
    io.removeAllListeners('end');
    io.removeAllListeners('error');
    io.on('error', () => {}); // late errors of a stream we dropped
    // Quit even when the device looks dead: a stream PulseAudio merely moved comes
    // back and must be released. For a really dead output stream quit() never
    // settles; it frees the blocked write's pool thread and parks its own, so the
    // count of parked threads is the same either way.
    const p = io
      .quit()
      .catch(() => {})
      .finally(() => this.closing.delete(p));
    this.closing.add(p);
  }

  /** This emitter typed with the events every stream has (E is only known to include them). */
  private get events(): TypedEmitter<StreamEvents> {
    return this as unknown as TypedEmitter<StreamEvents>;
  }
}
