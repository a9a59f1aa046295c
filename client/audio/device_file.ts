/**
 * `--mic file:PATH`: a sound file as microphone, for bots and demos. ffmpeg decodes
 * any audio it can read to s16le 48 kHz mono and loops it forever
 * (`-stream_loop -1`); frames leave on a drift-free 20 ms schedule (FrameTicker),
 * so the file plays in real time however fast ffmpeg decodes. Decoded audio is
 * read ahead by at most ~1 s (the pipe is paused beyond that).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TypedEmitter } from '../../shared/events';
import { FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE } from './format';
import { nowUs } from '../../shared/protocol/media_packet';
import { AudioDeviceError } from './device_backend';
import { FrameTicker } from './device_clock';
import type { AudioCapture, CaptureEvents } from './devices';

export interface FileCaptureOptions {
  /** ffmpeg binary; default @ffmpeg-installer/ffmpeg's. */
  ffmpegPath?: string;
  /** Frames delivered at once after a stall (older due frames are dropped). Default 3. */
  maxCatchUp?: number;
  /** How long ffmpeg may take to produce the first audio. Default 10 s. */
  startTimeoutMs?: number;
}

const READ_AHEAD_HIGH = SAMPLE_RATE * 2; // bytes: 1 s
const READ_AHEAD_LOW = SAMPLE_RATE; // 0.5 s

function defaultFfmpeg(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('@ffmpeg-installer/ffmpeg') as { path: string }).path;
}

export class FileCapture extends TypedEmitter<CaptureEvents> implements AudioCapture {
  readonly label: string;
  readonly path: string;
  private proc: ChildProcess | null = null;
  private readonly ticker: FrameTicker;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private running = false;
  private stderrTail = '';
  private restartTimer: NodeJS.Timeout | null = null;
  private lost = false;
  /** Due frames skipped because ffmpeg had not decoded them yet. */
  starved = 0;
  frames = 0;

  constructor(
    filePath: string,
    private readonly o: FileCaptureOptions = {},
  ) {
    super();
    this.path = path.resolve(filePath);
    this.label = `file:${path.basename(filePath)}`;
    this.ticker = new FrameTicker({
      periodUs: FRAME_MS * 1000,
      maxCatchUp: o.maxCatchUp ?? 3,
      onTick: (dueUs) => this.tick(dueUs),
    });
  }

  async start(): Promise<void> {
    if (this.running) return;
    try {
      const st = fs.statSync(this.path);
      if (!st.isFile()) throw new Error('not a file');
      fs.accessSync(this.path, fs.constants.R_OK);
    } catch (e) {
      const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message;
      throw new AudioDeviceError('AUDIO_FILE_UNREADABLE', { path: this.path, reason });
    }
    this.running = true;
    try {
      await this.spawnDecoder();
    } catch (e) {
      this.running = false;
      throw e;
    }
    this.ticker.start(nowUs());
  }

  async stop(): Promise<void> {
    this.running = false;
    this.ticker.stop();
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const p = this.proc;
    this.proc = null;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGKILL');
      await exited;
    }
    this.buffered = [];
    this.bufferedBytes = 0;
  }

  /** Starts ffmpeg and resolves once it has decoded the first audio. */
  private spawnDecoder(): Promise<void> {
    const ffmpeg = this.o.ffmpegPath ?? defaultFfmpeg();
    const args = ['-nostdin', '-hide_banner', '-loglevel', 'error', '-stream_loop', '-1', '-i', this.path, '-vn', '-ac', '1', '-ar', String(SAMPLE_RATE), '-f', 's16le', 'pipe:1'];
    const proc = spawn(ffmpeg, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    this.stderrTail = '';
    this.buffered = [];
    this.bufferedBytes = 0;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
          reject(err);
        } else resolve();
      };
      const timer = setTimeout(
        () => settle(new AudioDeviceError('AUDIO_FILE_UNREADABLE', { path: this.path, reason: `ffmpeg produced no audio within ${this.o.startTimeoutMs ?? 10_000} ms` })),
        this.o.startTimeoutMs ?? 10_000,
      );
      proc.stderr!.on('data', (d: Buffer) => {
        this.stderrTail = (this.stderrTail + d.toString()).slice(-2000);
      });
      proc.stdout!.on('data', (d: Buffer) => {
        if (proc !== this.proc) return;
        this.buffered.push(d);
        this.bufferedBytes += d.length;
        if (this.bufferedBytes > READ_AHEAD_HIGH) proc.stdout!.pause();
        settle();
      });
      proc.on('error', (e) => settle(new AudioDeviceError('AUDIO_FILE_UNREADABLE', { path: this.path, reason: `ffmpeg did not start: ${e.message}` })));
      proc.on('exit', (code, signal) => {
        const reason = this.stderrTail.trim().split('\n').pop() || `ffmpeg exited (${code ?? signal})`;
        if (!settled) settle(new AudioDeviceError('AUDIO_FILE_UNREADABLE', { path: this.path, reason }));
        else if (proc === this.proc && this.running) this.decoderDied(reason);
      });
    });
  }

  /** ffmpeg ended mid-run (file deleted or truncated): report and start it again. */
  private decoderDied(reason: string): void {
    if (!this.lost) {
      this.lost = true;
      this.emit('lost', `decoder ended: ${reason}`);
    }
    if (this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (!this.running) return;
      this.spawnDecoder().then(
        () => {
          if (this.lost && this.running) {
            this.lost = false;
            this.emit('restored');
          }
        },
        () => this.decoderDied(reason),
      );
    }, 2000);
  }

  private tick(dueUs: number): void {
    if (this.bufferedBytes < FRAME_BYTES) {
      if (!this.lost) this.starved++;
      return;
    }
    if (this.buffered[0].length < FRAME_BYTES) this.buffered = [Buffer.concat(this.buffered)];
    const head = this.buffered[0];
    const frame = new Int16Array(FRAME_SAMPLES);
    for (let i = 0; i < FRAME_SAMPLES; i++) frame[i] = head.readInt16LE(2 * i);
    if (head.length === FRAME_BYTES) this.buffered.shift();
    else this.buffered[0] = head.subarray(FRAME_BYTES);
    this.bufferedBytes -= FRAME_BYTES;
    if (this.bufferedBytes < READ_AHEAD_LOW) this.proc?.stdout?.resume();
    this.frames++;
    this.emit('frame', frame, dueUs);
  }
}
