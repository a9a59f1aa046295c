/**
 * A microphone through naudiodon: 48 kHz mono s16, re-chunked to 960-sample frames
 * and stamped with the capture clock. Opening, the watchdog, 'lost'/'restored' and
 * the reopen backoff are DeviceStream's (device_stream.ts).
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
import { FRAME_SAMPLES, SAMPLE_RATE } from './format';
import { nowUs } from '../../shared/protocol/media_packet';
import type { NaIoStream } from './device_backend';
import { DeviceStream, streamSettings, type DeviceStreamOptions } from './device_stream';
import type { AudioCapture, CaptureEvents } from './devices';

export interface DeviceCaptureOptions extends DeviceStreamOptions {
  /** Depth of naudiodon's native queue, in callbacks. Default 50 (0.5 s at 480). */
  maxQueue?: number;
  /** Once audio has flowed, this long without data means the device is lost. Default 700 ms. */
  stallMs?: number;
  /** After (re)opening, the first data must come within this. Default 5000 ms (pulse start-up takes up to ~2 s). */
  startupMs?: number;
}

const US_PER_SAMPLE = 1e6 / SAMPLE_RATE;
/** How fast the capture clock estimate may move later: 200 ppm of audio time. */
const CLOCK_LEAK_PER_SAMPLE_US = US_PER_SAMPLE * 200e-6;

export class DeviceCapture extends DeviceStream<CaptureEvents> implements AudioCapture {
  readonly label: string;
  private carry: Buffer = Buffer.alloc(0);
  /** Samples delivered since the current stream opened. */
  private samples = 0;
  /** Estimated wall-clock µs of sample 0 of the current stream (min over arrivals). */
  private clockOffsetUs = Infinity;
  /** Frames emitted since start. */
  frames = 0;

  constructor(spec: string, opts: DeviceCaptureOptions = {}) {
    super(spec, 'input', streamSettings(opts, { maxQueue: opts.maxQueue ?? 50, highwaterMark: FRAME_SAMPLES * 2 }), 'no audio');
    this.label = `mic:${spec || 'default'}`;
  }

  protected listen(io: NaIoStream): void {
    io.on('end', () => this.fail(io, 'stream ended'));
    io.on('data', (b: Buffer) => this.onData(io, b));
  }

  protected streamOpened(): void {
    this.carry = Buffer.alloc(0);
    this.samples = 0;
    this.clockOffsetUs = Infinity;
  }

  private onData(io: NaIoStream, b: Buffer): void {
    if (io !== this.io || !this.running) return;
    const arrivalUs = nowUs();
    this.waitingSince = Date.now();
    if (!this.flowing) this.flowed();
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
}
