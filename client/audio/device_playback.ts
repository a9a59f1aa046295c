/**
 * Speakers, pull model. The output device's clock is the master: a frame is pulled
 * only when the device has taken the previous audio, so the queue in front of the
 * device stays shallow and never grows, whatever the network does.
 * Opening, the watchdog, 'lost'/'restored' and the reopen backoff are
 * DeviceStream's (device_stream.ts).
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
import { nowUs } from '../../shared/protocol/media_packet';
import { FRAME_SAMPLES, FRAME_MS, SAMPLE_RATE } from './format';
import type { NaIoStream } from './device_backend';
import { FrameTicker } from './device_clock';
import { DeviceStream, streamSettings, type DeviceStreamOptions } from './device_stream';
import type { AudioPlayback, PlaybackEvents, PullFrame } from './devices';

export interface DevicePlaybackOptions extends DeviceStreamOptions {
  /** Samples per native write; a divisor of 960. Default 240 (5 ms). */
  chunkSamples?: number;
  /** naudiodon's native queue depth, in chunks. Default 1. */
  maxQueue?: number;
  /** Once audio has flowed, a write pending this long means the device is lost. Default 700 ms. */
  stallMs?: number;
  /** After (re)opening, the first write must complete within this. Default 5000 ms. */
  startupMs?: number;
}

/**
 * pull(), checked: a pull that throws yields silence, one that returns the wrong
 * length yields its first FRAME_SAMPLES samples (zero-padded), and the first such
 * failure (only the first) is reported.
 */
function checkedPull(pull: PullFrame, report: (e: Error) => void): () => Int16Array {
  let reported = false;
  const fail = (e: Error) => {
    if (!reported) report(e);
    reported = true;
  };
  return () => {
    let f: Int16Array;
    try {
      f = pull();
    } catch (e) {
      fail(e instanceof Error ? e : new Error(String(e)));
      return new Int16Array(FRAME_SAMPLES);
    }
    if (!(f instanceof Int16Array) || f.length !== FRAME_SAMPLES) {
      fail(new Error(`pull() returned ${f instanceof Int16Array ? f.length : typeof f} samples, expected ${FRAME_SAMPLES}`));
      const fixed = new Int16Array(FRAME_SAMPLES);
      if (f instanceof Int16Array) fixed.set(f.subarray(0, FRAME_SAMPLES));
      return fixed;
    }
    return f;
  };
}

export class DevicePlayback extends DeviceStream<PlaybackEvents> implements AudioPlayback {
  readonly label: string;
  private readonly chunkSamples: number;
  /** Writes completed since the stream opened. */
  private completions = 0;
  private pending: Buffer[] = [];
  private readonly pullFrame: () => Int16Array;
  /** Frames pulled (and emitted as 'played') since start. */
  frames = 0;

  constructor(spec: string, pull: PullFrame, opts: DevicePlaybackOptions = {}) {
    const chunkSamples = opts.chunkSamples ?? 240;
    if (FRAME_SAMPLES % chunkSamples !== 0) throw new RangeError(`chunkSamples must divide ${FRAME_SAMPLES}`);
    super(spec, 'output', streamSettings(opts, { maxQueue: opts.maxQueue ?? 1, highwaterMark: chunkSamples * 2 }), 'device took no audio');
    this.label = `speaker:${spec || 'default'}`;
    this.chunkSamples = chunkSamples;
    this.pullFrame = checkedPull(pull, (e) => this.emit('error', e));
  }

  protected listen(): void {
    // Output streams report through 'error' and the write callbacks only.
  }

  protected streamOpened(): void {
    this.completions = 0;
  }

  protected override resume(): void {
    this.pump();
  }

  protected override streamFailed(): void {
    // Audio not yet written belongs to a moment that has passed.
    this.pending = [];
  }

  /** Keeps exactly one write outstanding; its completion pulls the next audio. */
  private pump(): void {
    const io = this.io;
    if (!this.running || !io || this.waitingSince !== 0) return;
    if (this.pending.length === 0) {
      const frame = this.pullFrame();
      this.frames++;
      this.emit('played', frame, nowUs());
      if (this.io !== io || !this.running) return;
      const bytes = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
      const step = this.chunkSamples * 2;
      // Copies: the listener or the puller may reuse the frame's memory.
      for (let off = 0; off < bytes.length; off += step) this.pending.push(Buffer.from(bytes.subarray(off, off + step)));
    }
    const chunk = this.pending.shift()!;
    this.waitingSince = Date.now();
    try {
      io.write(chunk, (err) => this.written(io, err));
    } catch (e) {
      this.waitingSince = 0;
      this.fail(io, `write failed: ${(e as Error).message}`);
    }
  }

  private written(io: NaIoStream, err: unknown): void {
    if (io !== this.io) return;
    this.waitingSince = 0;
    if (err) {
      this.fail(io, `write failed: ${String(err)}`);
      return;
    }
    // The first writes fill the native queue and PortAudio's priming of the ALSA
    // buffer (~30 ms) at once; then the pulse plugin takes 0.6-1.9 s to start.
    // Only once the device has taken more than that does a slow write mean a
    // stalled device.
    if (!this.flowing && ++this.completions * this.chunkSamples > SAMPLE_RATE * 0.15) this.flowed();
    this.pump();
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
  frames = 0;

  constructor(pull: PullFrame, opts: NullPlaybackOptions = {}) {
    super();
    const pullFrame = checkedPull(pull, (e) => this.emit('error', e));
    this.ticker = new FrameTicker({
      periodUs: FRAME_MS * 1000,
      maxCatchUp: opts.maxCatchUp ?? 3,
      onTick: () => {
        const f = pullFrame();
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
