/**
 * Speakers, pull model. The output device's clock is the master: a frame is pulled
 * only when the device has taken the previous audio, so the queue in front of the
 * device stays shallow and never grows, whatever the network does.
 *
 * How naudiodon 2.3.6 playback works (src/PaContext.cc, src/ChunkQueue.h) and what
 * follows:
 * - write(chunk) pushes the chunk into a native queue of at most `maxQueue` chunks
 *   on a libuv pool thread, and that push BLOCKS while the queue is full; the write
 *   callback fires when the chunk is in. So with exactly one write outstanding,
 *   the write callback is the device's clock tick. Audio between the hand-over and
 *   PortAudio: the chunk being played + maxQueue queued + the one blocked write.
 *   Each 20 ms frame is therefore written as four 5 ms chunks with maxQueue 1.
 *   Measured round trip (DevicePlayback -> null sink -> monitor -> DeviceCapture,
 *   PulseAudio 16, tests/kit/pulse.ts measureLoopLatency, 20 clicks): p50/p95
 *   30/31 ms with 5 ms chunks and 10 ms PortAudio buffers; 40/40 ms with 10 ms
 *   chunks; 50 ms with maxQueue 2; 83 ms with 20 ms chunks and buffers;
 *   23/24 ms with 5 ms buffers, which underran under a 5 ms-per-frame CPU load
 *   where 10 ms buffers did not. An event-loop stall of 60 ms underruns every
 *   setting (PortAudio's buffer size is not an option of naudiodon).
 * - The PortAudio callback does not play silence when the queue is empty: it waits
 *   for the next chunk, the device underruns, and with closeOnError:true every
 *   write fails from then on. closeOnError is false: an underrun (the event loop
 *   stalled for some tens of ms: 30 ms did it under load) prints "AudioIO: portAudio status - output underflow"
 *   to stdout and playback continues.
 * - When the device dies, PortAudio's callback thread exits and the outstanding
 *   write never completes; the watchdog reports the loss. quit() on such a stream
 *   never returns (it waits for the dead callback thread to take its chunk), so one
 *   libuv pool thread stays parked for each output stream lost that way, and that
 *   pending work keeps the event loop alive (the process must end with
 *   process.exit()). Streams PulseAudio can move to another sink are not lost that
 *   way: PulseAudio moves them to its fallback sink without a word.
 */
import { TypedEmitter } from '../../shared/events';
import { FRAME_SAMPLES, FRAME_MS, SAMPLE_RATE } from './format';
import { AudioDeviceError, backoffMs, listAudioDevices, loadNaudiodon, nowUs, resolveDevice, withEnv, type NaIoStream } from './device_backend';
import { FrameTicker } from './device_clock';
import type { AudioPlayback, PlaybackEvents, PullFrame } from './devices';

export interface DevicePlaybackOptions {
  /** Samples per PortAudio callback. Default 480 (10 ms). */
  framesPerBuffer?: number;
  /** Samples per native write; a divisor of 960. Default 240 (5 ms). */
  chunkSamples?: number;
  /** naudiodon's native queue depth, in chunks. Default 1. */
  maxQueue?: number;
  /** Once audio has flowed, a write pending this long means the device is lost. Default 700 ms. */
  stallMs?: number;
  /** After (re)opening, the first write must complete within this. Default 5000 ms. */
  startupMs?: number;
  /** Delays between reopen attempts; the last one repeats. Default [250, 500, 1000, 2000]. */
  retryMs?: number[];
  /** Environment for this stream's open only, e.g. { PULSE_SINK: 'spk' }. */
  env?: Record<string, string | undefined>;
}

/** Calls pull() and checks what came back; a failing pull yields silence and an 'error'. */
function pullChecked(pull: PullFrame, report: (e: Error) => void): Int16Array {
  let f: Int16Array;
  try {
    f = pull();
  } catch (e) {
    report(e instanceof Error ? e : new Error(String(e)));
    return new Int16Array(FRAME_SAMPLES);
  }
  if (!(f instanceof Int16Array) || f.length !== FRAME_SAMPLES) {
    report(new Error(`pull() returned ${f instanceof Int16Array ? f.length : typeof f} samples, expected ${FRAME_SAMPLES}`));
    const fixed = new Int16Array(FRAME_SAMPLES);
    if (f instanceof Int16Array) fixed.set(f.subarray(0, FRAME_SAMPLES));
    return fixed;
  }
  return f;
}

export class DevicePlayback extends TypedEmitter<PlaybackEvents> implements AudioPlayback {
  readonly label: string;
  private readonly o: Required<Omit<DevicePlaybackOptions, 'env'>> & Pick<DevicePlaybackOptions, 'env'>;
  private io: NaIoStream | null = null;
  private running = false;
  private lost = false;
  private flowing = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private lastTick = 0;
  private openedAt = 0;
  /** Since when the outstanding write has been waiting (0: none outstanding). */
  private writeSince = 0;
  /** Writes completed since the stream opened. */
  private completions = 0;
  private pending: Buffer[] = [];
  private readonly closing = new Set<Promise<void>>();
  private badPullReported = false;
  /** Frames pulled (and emitted as 'played') since start. */
  frames = 0;
  reopens = 0;

  constructor(
    readonly spec: string,
    private readonly pull: PullFrame,
    opts: DevicePlaybackOptions = {},
  ) {
    super();
    this.label = `speaker:${spec || 'default'}`;
    const chunkSamples = opts.chunkSamples ?? 240;
    if (FRAME_SAMPLES % chunkSamples !== 0) throw new RangeError(`chunkSamples must divide ${FRAME_SAMPLES}`);
    this.o = {
      framesPerBuffer: opts.framesPerBuffer ?? 480,
      chunkSamples,
      maxQueue: opts.maxQueue ?? 1,
      stallMs: opts.stallMs ?? 700,
      startupMs: opts.startupMs ?? 5000,
      retryMs: opts.retryMs ?? [250, 500, 1000, 2000],
      env: opts.env,
    };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.open();
    this.running = true;
    this.lastTick = Date.now();
    this.watchdog = setInterval(() => this.checkFlow(), 100);
    this.pump();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.retryTimer = this.watchdog = null;
    this.closeStream();
    // quit() of a dead output stream never settles (see above): wait a bounded time.
    await Promise.race([Promise.all([...this.closing]), new Promise((r) => setTimeout(r, 1500).unref())]);
  }

  private open(): void {
    const na = loadNaudiodon(this.o.env);
    const dev = resolveDevice(this.spec, 'output', listAudioDevices(this.o.env));
    let io: NaIoStream;
    try {
      io = withEnv(this.o.env, () =>
        na.AudioIO({
          outOptions: {
            channelCount: 1,
            sampleFormat: na.SampleFormat16Bit,
            sampleRate: SAMPLE_RATE,
            deviceId: dev.id,
            closeOnError: false,
            framesPerBuffer: this.o.framesPerBuffer,
            maxQueue: this.o.maxQueue,
            highwaterMark: this.o.chunkSamples * 2,
          },
        }),
      );
    } catch (e) {
      throw new AudioDeviceError('AUDIO_DEVICE_OPEN_FAILED', { dir: 'output', device: dev.name, reason: (e as Error).message });
    }
    io.removeAllListeners('error');
    io.on('error', (e: unknown) => this.fail(io, `stream error: ${String(e)}`));
    try {
      io.start();
    } catch (e) {
      this.track(io);
      throw new AudioDeviceError('AUDIO_DEVICE_OPEN_FAILED', { dir: 'output', device: dev.name, reason: (e as Error).message });
    }
    this.io = io;
    this.openedAt = Date.now();
    this.flowing = false;
    this.writeSince = 0;
    this.completions = 0;
  }

  /** Keeps exactly one write outstanding; its completion pulls the next audio. */
  private pump(): void {
    const io = this.io;
    if (!this.running || !io || this.writeSince !== 0) return;
    if (this.pending.length === 0) {
      const frame = pullChecked(this.pull, (e) => {
        if (!this.badPullReported) this.emit('error', e);
        this.badPullReported = true;
      });
      this.frames++;
      this.emit('played', frame, nowUs());
      if (this.io !== io || !this.running) return;
      const bytes = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
      const step = this.o.chunkSamples * 2;
      // Copies: the listener or the puller may reuse the frame's memory.
      for (let off = 0; off < bytes.length; off += step) this.pending.push(Buffer.from(bytes.subarray(off, off + step)));
    }
    const chunk = this.pending.shift()!;
    this.writeSince = Date.now();
    try {
      io.write(chunk, (err) => this.written(io, err));
    } catch (e) {
      this.writeSince = 0;
      this.fail(io, `write failed: ${(e as Error).message}`);
    }
  }

  private written(io: NaIoStream, err: unknown): void {
    if (io !== this.io) return;
    this.writeSince = 0;
    if (err) {
      this.fail(io, `write failed: ${String(err)}`);
      return;
    }
    // The first writes fill the native queue and PortAudio's priming of the ALSA
    // buffer (~30 ms) at once; then the pulse plugin takes 0.6-1.9 s to start.
    // Only once the device has taken more than that does a slow write mean a
    // stalled device.
    if (!this.flowing && ++this.completions * this.o.chunkSamples > SAMPLE_RATE * 0.15) {
      this.flowing = true;
      this.attempt = 0;
      if (this.lost) {
        this.lost = false;
        this.emit('restored');
      }
    }
    this.pump();
  }

  private checkFlow(): void {
    const now = Date.now();
    const late = now - this.lastTick > 300;
    this.lastTick = now;
    if (!this.running || !this.io) return;
    if (late) {
      if (this.writeSince) this.writeSince = now;
      return;
    }
    if (this.flowing && this.writeSince && now - this.writeSince > this.o.stallMs) {
      this.fail(this.io, `device took no audio for ${now - this.writeSince} ms`);
    } else if (!this.flowing && now - this.openedAt > this.o.startupMs) {
      this.fail(this.io, `device took no audio within ${this.o.startupMs} ms of opening`);
    }
  }

  private fail(io: NaIoStream, reason: string): void {
    if (io !== this.io || !this.running) return;
    this.closeStream();
    // Audio not yet written belongs to a moment that has passed.
    this.pending = [];
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
        this.pump();
      } catch {
        this.scheduleRetry();
      }
    }, delay);
  }

  private closeStream(): void {
    const io = this.io;
    this.io = null;
    this.writeSince = 0;
    if (io) this.track(io);
  }

  private track(io: NaIoStream): void {
    io.removeAllListeners('error');
    io.on('error', () => {});
    // Quit even when the device looks dead: a stream PulseAudio merely moved comes
    // back and must be released. For a really dead one quit() never settles; it
    // frees the blocked write's pool thread and parks its own, so the count of
    // parked threads is the same either way.
    const p = io
      .quit()
      .catch(() => {})
      .finally(() => this.closing.delete(p));
    this.closing.add(p);
  }
}

export interface NullPlaybackOptions {
  /** Frames pulled at once after a stall (older ones are skipped). Default 3. */
  maxCatchUp?: number;
}

/**
 * `--speaker none`: a drift-free 20 ms clock that pulls and discards, so the receive
 * pipeline (jitter buffers, mixing, levels) runs as it would with a speaker.
 * Frames are still emitted as 'played'.
 */
export class NullPlayback extends TypedEmitter<PlaybackEvents> implements AudioPlayback {
  readonly label = 'speaker:none';
  private readonly ticker: FrameTicker;
  private badPullReported = false;
  frames = 0;

  constructor(
    private readonly pull: PullFrame,
    opts: NullPlaybackOptions = {},
  ) {
    super();
    this.ticker = new FrameTicker({
      periodUs: FRAME_MS * 1000,
      maxCatchUp: opts.maxCatchUp ?? 3,
      onTick: () => {
        const f = pullChecked(this.pull, (e) => {
          if (!this.badPullReported) this.emit('error', e);
          this.badPullReported = true;
        });
        this.frames++;
        this.emit('played', f, nowUs());
      },
    });
  }

  get dropped(): number {
    return this.ticker.dropped;
  }

  async start(): Promise<void> {
    this.ticker.start();
  }

  async stop(): Promise<void> {
    this.ticker.stop();
  }
}
