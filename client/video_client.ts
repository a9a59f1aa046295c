/**
 * The sending side of camera video and screen sharing: ffmpeg captures raw RGB frames
 * (a V4L2 camera, an X display, a test pattern or a looped file), sharp turns them into
 * JPEGs, and VideoSender hands out `EncodedFrame`s stamped with their capture time.
 * The network part (fragmenting into media datagrams) lives elsewhere.
 *
 *   source spec --parseVideoSource--> VideoSource --ffmpegCaptureArgs--> ffmpeg
 *   ffmpeg stdout --RawFrameSplitter--> RawFrame (VideoCapture 'frame')
 *   RawFrame --cadence (fps) + latest-wins slot--> JpegEncoder --> EncodedFrame (VideoSender 'frame')
 *
 * Output size, fps and quality change live without touching the capture process:
 * capture runs at the capture format chosen at start; fps is lowered by skipping frames
 * at a steady cadence, size by a sharp resize, quality by the encoder.
 */
// Plain child_process.spawn rather than fluent-ffmpeg: we need the raw stdout stream
// unbuffered, the pid (tests and the stall watchdog signal it), the exact exit code and
// signal, and our own restart policy. fluent-ffmpeg's argument builder adds nothing for a
// fixed argument list, and its process wrapper hides those details (it is also archived).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import sharp from 'sharp';
import ffmpegInstaller from '@ffmpeg-installer/ffmpeg';
import { ProtocolError } from '../shared/errors';
import { TypedEmitter } from '../shared/events';
import { Logger } from '../shared/log';
import { nowUs } from '../shared/protocol/media_packet';

/** The bundled ffmpeg (has x11grab, v4l2 and lavfi). */
export const DEFAULT_FFMPEG_PATH: string = ffmpegInstaller.path;

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

export type VideoKind = 'camera' | 'screen';

export type VideoSource =
  /** A V4L2 camera device. */
  | { type: 'v4l2'; kind: 'camera'; device: string }
  /** An ffmpeg lavfi test pattern; `options` are raw lavfi options (`size=320x240:rate=10`), or null. */
  | { type: 'lavfi'; kind: VideoKind; filter: 'testsrc' | 'testsrc2'; options: string | null }
  /** A video file played in a loop at its native speed. */
  | { type: 'file'; kind: VideoKind; path: string }
  /**
   * An X display (`:N` or `:N.S`) and the region of it to grab. `width`/`height` null means
   * "to the bottom-right corner of the screen" (VideoCapture probes the screen size).
   */
  | { type: 'x11'; kind: 'screen'; display: string; x: number; y: number; width: number | null; height: number | null };

/** What the capture process delivers: frames of exactly width x height at about fps. */
export interface CaptureFormat {
  width: number;
  height: number;
  fps: number;
}

const CAMERA_FORMS =
  '/dev/videoN or /dev/v4l/by-id/... (a V4L2 camera), testsrc or testsrc2 (a test pattern; ' +
  'testsrc2=size=WxH:rate=F passes raw lavfi options), or file:PATH (a video file, looped)';
const SCREEN_FORMS =
  ':N or :N.S (an X display, e.g. :0), optionally followed by +X,Y (region offset) and @WxH ' +
  '(region size), e.g. :0+100,200@800x600; testsrc or testsrc2 (a test pattern); or file:PATH (a video file, looped)';

const LAVFI_RE = /^(testsrc2?)(?:=(.*))?$/;
// One source with its options, never a filter graph: no ',', ';', brackets, quotes or spaces.
const LAVFI_OPTIONS_RE = /^[A-Za-z_][A-Za-z0-9_]*=[^,;[\]'"\\\s:]+(?::[A-Za-z_][A-Za-z0-9_]*=[^,;[\]'"\\\s:]+)*$/;
const V4L2_RE = /^\/dev\/(?:video\d+|v4l\/by-(?:id|path)\/[^\s]+)$/;
const X11_RE = /^:(\d{1,4})(?:\.(\d{1,3}))?(?:\+(\d{1,5}),(\d{1,5}))?(?:@(\d{1,5})x(\d{1,5}))?$/;

/**
 * Parses a user's source spec. Accepted forms:
 *
 * camera:
 * - `/dev/video0`, `/dev/v4l/by-id/usb-...` : a V4L2 camera
 * - `testsrc`, `testsrc2` : an ffmpeg test pattern at the capture size and rate;
 *   `testsrc2=size=320x240:rate=10` passes raw lavfi options (scaled to the capture size)
 * - `file:PATH` : a video file, looped forever at its native speed
 *
 * screen:
 * - `:N` or `:N.S` : the whole X display N (screen S)
 * - `:N+X,Y` : from offset X,Y to the bottom-right corner
 * - `:N@WxH` or `:N+X,Y@WxH` : a W x H region at offset X,Y (default 0,0), e.g. `:0+100,200@800x600`
 * - `testsrc`, `testsrc2`, `file:PATH` as for the camera (tests without an X server)
 *
 * Throws an Error naming the accepted forms when the spec matches none.
 */
export function parseVideoSource(spec: string, kind: VideoKind): VideoSource {
  if (kind !== 'camera' && kind !== 'screen') throw new Error(`video kind must be "camera" or "screen", not ${JSON.stringify(kind)}`);
  const s = spec.trim();
  const forms = kind === 'camera' ? CAMERA_FORMS : SCREEN_FORMS;
  const bad = (why: string) => new Error(`bad ${kind} source ${JSON.stringify(spec)}: ${why}; accepted forms: ${forms}`);

  const lavfi = LAVFI_RE.exec(s);
  if (lavfi) {
    const options = lavfi[2] ?? null;
    if (options !== null && !LAVFI_OPTIONS_RE.test(options)) {
      throw bad('lavfi options must be name=value pairs separated by ":" (e.g. testsrc2=size=320x240:rate=10)');
    }
    return { type: 'lavfi', kind, filter: lavfi[1] as 'testsrc' | 'testsrc2', options };
  }
  if (s.startsWith('file:')) {
    const path = s.slice('file:'.length);
    if (path === '') throw bad('file: needs a path');
    return { type: 'file', kind, path };
  }
  if (kind === 'camera') {
    if (V4L2_RE.test(s)) return { type: 'v4l2', kind, device: s };
    throw bad(s.startsWith(':') ? 'an X display is a screen source, not a camera' : 'not a recognised camera source');
  }
  const x = X11_RE.exec(s);
  if (x) {
    const display = `:${x[1]}${x[2] !== undefined ? `.${x[2]}` : ''}`;
    const width = x[5] !== undefined ? Number(x[5]) : null;
    const height = x[6] !== undefined ? Number(x[6]) : null;
    if (width === 0 || height === 0) throw bad('the region size must not be zero');
    return { type: 'x11', kind, display, x: Number(x[3] ?? 0), y: Number(x[4] ?? 0), width, height };
  }
  throw bad(V4L2_RE.test(s) ? 'a V4L2 device is a camera source, not a screen' : 'not a recognised screen source');
}

/** Throws a RangeError unless width/height/fps are usable capture or output values. */
export function checkFormat(f: Partial<CaptureFormat>, what = 'video'): void {
  const check = (name: string, v: number | undefined, min: number, max: number) => {
    if (v === undefined) return;
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${what} ${name} must be an integer in ${min}..${max}, not ${v}`);
  };
  check('width', f.width, 16, 7680);
  check('height', f.height, 16, 4320);
  if (f.fps !== undefined && (!Number.isFinite(f.fps) || f.fps < 0.1 || f.fps > 120)) {
    throw new RangeError(`${what} fps must be a number in 0.1..120, not ${f.fps}`);
  }
}

/**
 * ffmpeg input arguments for a source (everything up to and including `-i`).
 * An x11 source without a region size grabs `fmt.width x fmt.height`; VideoCapture fills
 * in the real screen size first (resolveVideoSource) so the whole screen is shared.
 */
export function ffmpegInputArgs(source: VideoSource, fmt: CaptureFormat): string[] {
  checkFormat(fmt, 'capture');
  const size = `${fmt.width}x${fmt.height}`;
  const rate = String(fmt.fps);
  switch (source.type) {
    case 'v4l2':
      return ['-f', 'v4l2', '-framerate', rate, '-video_size', size, '-i', source.device];
    case 'lavfi': {
      const opts = source.options === null ? [] : source.options.split(':');
      const has = (name: string) => opts.some((o) => o.startsWith(`${name}=`) || (name === 'size' && o.startsWith('s=')) || (name === 'rate' && o.startsWith('r=')));
      if (!has('size')) opts.push(`size=${size}`);
      if (!has('rate')) opts.push(`rate=${rate}`);
      // lavfi sources generate as fast as they are read; -re paces them like a camera.
      return ['-re', '-f', 'lavfi', '-i', `${source.filter}=${opts.join(':')}`];
    }
    case 'file':
      return ['-stream_loop', '-1', '-re', '-i', source.path];
    case 'x11': {
      const w = source.width ?? fmt.width;
      const h = source.height ?? fmt.height;
      return ['-f', 'x11grab', '-framerate', rate, '-video_size', `${w}x${h}`, '-i', `${source.display}+${source.x},${source.y}`];
    }
  }
}

/**
 * The -vf chain that makes every frame exactly fmt.width x fmt.height, or null when the
 * source already delivers that. Aspect ratio is kept (black bars), because a stretched
 * screen or face is worse than a letterbox.
 */
export function captureFilter(source: VideoSource, fmt: CaptureFormat): string | null {
  const exact =
    (source.type === 'lavfi' && !/(^|:)(size|s)=/.test(source.options ?? '')) ||
    (source.type === 'x11' && (source.width ?? fmt.width) === fmt.width && (source.height ?? fmt.height) === fmt.height);
  const parts: string[] = [];
  // A file runs at its own rate; resample it so it behaves like a camera at fmt.fps.
  if (source.type === 'file') parts.push(`fps=${fmt.fps}`);
  if (!exact) {
    const { width: w, height: h } = fmt;
    // v4l2 may silently pick another size than asked, so it is always fitted.
    parts.push(`scale=${w}:${h}:force_original_aspect_ratio=decrease`, `pad=${w}:${h}:(ow-iw)/2:(oh-ih)/2`);
  }
  return parts.length ? parts.join(',') : null;
}

/** The complete ffmpeg argument list: raw RGB24 frames of fmt's size on stdout. */
export function ffmpegCaptureArgs(source: VideoSource, fmt: CaptureFormat): string[] {
  const vf = captureFilter(source, fmt);
  return [
    '-loglevel', 'error', '-nostdin',
    ...ffmpegInputArgs(source, fmt),
    '-map', '0:v:0', '-an', '-sn',
    ...(vf ? ['-vf', vf] : []),
    '-pix_fmt', 'rgb24', '-f', 'rawvideo', 'pipe:1',
  ];
}

/**
 * Asks ffmpeg for an X screen's size. x11grab of this ffmpeg defaults to 640x480 rather
 * than the whole screen, and there is no xdpyinfo here, so we request an impossible
 * region and read the size from the error ffmpeg prints ("outside the screen size WxH").
 */
export function probeX11ScreenSize(display: string, ffmpegPath = DEFAULT_FFMPEG_PATH): Promise<{ width: number; height: number }> {
  const args = ['-hide_banner', '-loglevel', 'error', '-nostdin', '-f', 'x11grab', '-video_size', '16384x16384', '-i', display, '-frames:v', '1', '-f', 'null', '-'];
  return new Promise((resolve, reject) => {
    const child = spawn(ffmpegPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let text = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (text.length < 10_000) text += s;
    });
    child.on('error', (e) => {
      text += String(e);
    });
    // An unreachable display can make x11grab wait; never let a probe hang a (re)start.
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const m = /screen size (\d+)x(\d+)/.exec(text);
      if (m) return resolve({ width: Number(m[1]), height: Number(m[2]) });
      const said = text.trim().split('\n').slice(-3).join(' | ');
      // The bundled ffmpeg segfaults, silently, when no X server answers on the display.
      const num = /^:(\d+)/.exec(display)?.[1];
      const noSocket = num !== undefined && !fs.existsSync(`/tmp/.X11-unix/X${num}`);
      const hint = noSocket ? `; is an X server running on ${display}? (no /tmp/.X11-unix/X${num})` : '';
      reject(new Error(`cannot read the size of X display ${display}: ffmpeg ${signal ? `was killed by ${signal}` : `exited with code ${code}`}${said ? `: ${said}` : ' with no output'}${hint}`));
    });
  });
}

/**
 * Checks a source against the running system and fills in what only it knows: an x11
 * region without a size becomes "to the bottom-right corner of the screen", and a region
 * off the screen or a display nobody serves is an error here, once, with a clear message,
 * rather than an ffmpeg restart loop. Other sources are returned unchanged.
 */
export async function resolveVideoSource(source: VideoSource, ffmpegPath = DEFAULT_FFMPEG_PATH): Promise<VideoSource> {
  if (source.type === 'file' && !fs.existsSync(source.path)) throw new Error(`video file not found: ${source.path}`);
  if (source.type !== 'x11') return source;
  const screen = await probeX11ScreenSize(source.display, ffmpegPath);
  const width = source.width ?? screen.width - source.x;
  const height = source.height ?? screen.height - source.y;
  if (width <= 0 || height <= 0 || source.x + width > screen.width || source.y + height > screen.height) {
    throw new Error(
      `region ${width}x${height} at ${source.x},${source.y} does not fit X display ${source.display} (${screen.width}x${screen.height})`,
    );
  }
  return { ...source, width, height };
}

// ---------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------

export interface RawFrame {
  /** width * height * 3 bytes, RGB24, rows top to bottom. */
  rgb: Buffer;
  width: number;
  height: number;
  /** Wall clock (µs) when the frame's last byte arrived from ffmpeg. */
  captureTsUs: number;
}

/**
 * Cuts a byte stream into frames of exactly `frameBytes`. Of the frames that complete
 * within one chunk only the last is returned: older ones are stale by the time we see
 * them, and skipping them saves their copy (their position is computed, not walked).
 * A frame that lies entirely within a chunk is returned as a view, without a copy.
 */
export class RawFrameSplitter {
  private partial: Buffer | null = null;
  private fill = 0;
  /** Complete frames that were superseded by a newer one in the same chunk. */
  dropped = 0;

  constructor(readonly frameBytes: number) {
    if (!Number.isInteger(frameBytes) || frameBytes <= 0) throw new RangeError(`frameBytes must be a positive integer, not ${frameBytes}`);
  }

  /** Bytes of an incomplete frame held over from earlier chunks. */
  get pendingBytes(): number {
    return this.fill;
  }

  /** Feeds one chunk; returns the newest frame it completed, or null. */
  push(chunk: Buffer): Buffer | null {
    const F = this.frameBytes;
    const L = chunk.length;
    const fill = this.fill;
    const complete = Math.floor((fill + L) / F);
    if (complete === 0) {
      if (L === 0) return null;
      this.partial ??= Buffer.allocUnsafe(F);
      chunk.copy(this.partial, fill);
      this.fill += L;
      return null;
    }
    // Positions below are relative to the start of the held-over partial frame.
    const lastStart = (complete - 1) * F;
    const lastEnd = complete * F;
    let frame: Buffer;
    let reusable: Buffer | null = null;
    if (lastStart >= fill) {
      frame = chunk.subarray(lastStart - fill, lastEnd - fill);
      reusable = this.partial; // never handed out, so it can hold the remainder
    } else {
      frame = this.partial!;
      chunk.copy(frame, fill, 0, lastEnd - fill);
    }
    this.dropped += complete - 1;
    const remainder = fill + L - lastEnd;
    this.partial = null;
    this.fill = 0;
    if (remainder > 0) {
      this.partial = reusable ?? Buffer.allocUnsafe(F);
      chunk.copy(this.partial, 0, L - remainder);
      this.fill = remainder;
    }
    return frame;
  }

  /** Forgets a partial frame (the process that wrote it is gone). */
  reset(): void {
    this.partial = null;
    this.fill = 0;
  }
}

// ---------------------------------------------------------------------------
// Capture process
// ---------------------------------------------------------------------------

export interface RestartPolicy {
  /** First delay before restarting a dead ffmpeg (ms). */
  initialDelayMs: number;
  /** The delay doubles up to this (ms). */
  maxDelayMs: number;
  /** A process that ran and delivered frames this long resets the delay to the initial one (ms). */
  stableAfterMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = Object.freeze({ initialDelayMs: 500, maxDelayMs: 8000, stableAfterMs: 10_000 });

export interface CaptureExit {
  pid: number | null;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when stop() asked for it. */
  expected: boolean;
  /** Why we killed it ourselves (stall), or the spawn error; null when it died by itself. */
  reason: string | null;
  /** ffmpeg's last stderr lines (it runs with -loglevel error, so these are its errors). */
  stderr: string[];
  uptimeMs: number;
  frames: number;
}

export interface CaptureRestart {
  /** 1 for the first restart since start(). */
  attempt: number;
  delayMs: number;
  pid: number;
}

export type VideoCaptureEvents = {
  frame: [RawFrame];
  /** A capture process was spawned. */
  start: [{ pid: number; args: string[] }];
  exit: [CaptureExit];
  error: [Error];
  restart: [CaptureRestart];
};

export interface VideoCaptureOptions extends CaptureFormat {
  source: VideoSource;
  ffmpegPath?: string;
  logger?: Logger;
  restart?: Partial<RestartPolicy>;
  /** No frame for this long from a live process: kill it, which restarts it (ms, default 10000). */
  stallMs?: number;
  /** After SIGTERM, SIGKILL follows after this (ms, default 2000). */
  killGraceMs?: number;
}

const STDERR_LINES = 20;

/**
 * One ffmpeg process turning a source into raw RGB frames, kept alive: an unexpected
 * exit (or a stall) is reported with ffmpeg's own last words and the exit code, then the
 * process is restarted with exponential backoff. Never silent, never after stop().
 */
export class VideoCapture extends TypedEmitter<VideoCaptureEvents> {
  readonly format: CaptureFormat;
  readonly source: VideoSource;
  private readonly ffmpegPath: string;
  private readonly log: Logger;
  private readonly policy: RestartPolicy;
  private readonly stallMs: number;
  private readonly killGraceMs: number;
  private readonly splitter: RawFrameSplitter;

  private child: ChildProcess | null = null;
  private childStartedAt = 0;
  private childFrames = 0;
  private killReason: string | null = null;
  private lastFrameAt = 0;
  private stderrTail: string[] = [];
  private stderrPartial = '';
  private started = false;
  private stopped = false;
  private stopPromise: Promise<void> | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private nextDelayMs: number;
  private restartCount = 0;
  private framesTotal = 0;
  private resolvedSource: VideoSource;

  constructor(opts: VideoCaptureOptions) {
    super();
    checkFormat(opts, 'capture');
    this.format = { width: opts.width, height: opts.height, fps: opts.fps };
    this.source = opts.source;
    this.resolvedSource = opts.source;
    this.ffmpegPath = opts.ffmpegPath ?? DEFAULT_FFMPEG_PATH;
    this.log = (opts.logger ?? Logger.create('warn')).child({ video: opts.source.kind });
    this.policy = { ...DEFAULT_RESTART_POLICY, ...opts.restart };
    this.stallMs = opts.stallMs ?? 10_000;
    this.killGraceMs = opts.killGraceMs ?? 2000;
    this.nextDelayMs = this.policy.initialDelayMs;
    this.splitter = new RawFrameSplitter(opts.width * opts.height * 3);
  }

  /** The live ffmpeg's pid, or null between processes and after stop(). */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }
  get restarts(): number {
    return this.restartCount;
  }
  /** Frames emitted since start(). */
  get frames(): number {
    return this.framesTotal;
  }
  /** Complete frames skipped because a newer one arrived in the same read. */
  get framesDropped(): number {
    return this.splitter.dropped;
  }
  get running(): boolean {
    return this.started && !this.stopped;
  }

  /**
   * Starts the first ffmpeg. Rejects, and stays stopped, when the source cannot work at
   * all (a missing file, an X display that does not answer, an ffmpeg that cannot be
   * spawned): retrying those would only repeat the error. Later failures restart.
   */
  async start(): Promise<void> {
    if (this.stopped) throw new Error('VideoCapture was stopped; make a new one');
    if (this.started) return;
    this.started = true;
    try {
      this.resolvedSource = await resolveVideoSource(this.source, this.ffmpegPath);
      if (this.stopped) return;
      await this.spawnChild();
    } catch (e) {
      await this.stop();
      throw e;
    }
    if (this.stopped) return;
    this.watchdog = setInterval(() => this.checkStall(), Math.min(1000, this.stallMs));
    this.watchdog.unref();
  }

  /** Idempotent: kills ffmpeg (SIGTERM, then SIGKILL after a grace) and resolves once it is gone. */
  stop(): Promise<void> {
    if (this.stopPromise) return this.stopPromise;
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.restartTimer = this.watchdog = null;
    const child = this.child;
    this.stopPromise = !child
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const kill = setTimeout(() => child.kill('SIGKILL'), this.killGraceMs);
          child.once('close', () => {
            clearTimeout(kill);
            resolve();
          });
          child.kill('SIGTERM');
        });
    return this.stopPromise;
  }

  /** Resolves once the process runs; rejects when it cannot be spawned at all. */
  private spawnChild(): Promise<number> {
    const args = ffmpegCaptureArgs(this.resolvedSource, this.format);
    this.splitter.reset();
    this.stderrTail = [];
    this.stderrPartial = '';
    this.childFrames = 0;
    this.killReason = null;
    this.childStartedAt = this.lastFrameAt = Date.now();
    const child = spawn(this.ffmpegPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let spawnError: Error | null = null;
    child.stdout!.on('data', (chunk: Buffer) => this.onData(child, chunk));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => this.onStderr(s));
    child.once('close', (code, signal) => this.onClose(child, code, signal, spawnError));
    return new Promise<number>((resolve, reject) => {
      child.once('spawn', () => {
        this.log.debug(`ffmpeg started (pid ${child.pid}): ${args.join(' ')}`);
        this.emit('start', { pid: child.pid!, args });
        resolve(child.pid!);
      });
      child.on('error', (e) => {
        // A failed spawn ('close' still follows) or a failed kill of a live process.
        if (child.pid === undefined) {
          spawnError = e;
          reject(new Error(`cannot run ffmpeg (${this.ffmpegPath}): ${e.message}`));
        }
      });
    });
  }

  private onData(child: ChildProcess, chunk: Buffer): void {
    if (child !== this.child || this.stopped) return;
    const rgb = this.splitter.push(chunk);
    if (!rgb) return;
    // The earliest moment we hold the whole frame; ffmpeg's own timestamps are not wall clock.
    const captureTsUs = nowUs();
    this.lastFrameAt = Date.now();
    this.childFrames++;
    this.framesTotal++;
    this.emit('frame', { rgb, width: this.format.width, height: this.format.height, captureTsUs });
  }

  private onStderr(s: string): void {
    const lines = (this.stderrPartial + s).split('\n');
    this.stderrPartial = lines.pop() ?? '';
    for (const l of lines) {
      const line = l.trimEnd();
      if (line) this.stderrTail.push(line.slice(0, 500));
    }
    if (this.stderrTail.length > STDERR_LINES) this.stderrTail.splice(0, this.stderrTail.length - STDERR_LINES);
  }

  private checkStall(): void {
    const child = this.child;
    if (!child || this.stopped || this.killReason) return;
    const silentMs = Date.now() - this.lastFrameAt;
    if (silentMs < this.stallMs) return;
    this.killReason = `no frame for ${silentMs} ms`;
    this.log.warn(`ffmpeg (pid ${child.pid}) stalled: ${this.killReason}; killing it`);
    child.kill('SIGKILL');
  }

  private onClose(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, spawnError: Error | null): void {
    if (child !== this.child) return;
    this.child = null;
    if (this.stderrPartial.trim()) this.stderrTail.push(this.stderrPartial.trim().slice(0, 500));
    const uptimeMs = Date.now() - this.childStartedAt;
    const info: CaptureExit = {
      pid: child.pid ?? null,
      code: spawnError ? null : code,
      signal,
      expected: this.stopped,
      reason: spawnError ? `cannot run ${this.ffmpegPath}: ${spawnError.message}` : this.killReason,
      stderr: this.stderrTail.slice(),
      uptimeMs,
      frames: this.childFrames,
    };
    this.emit('exit', info);
    if (this.stopped) return;

    // ffmpeg traps SIGINT/SIGTERM and exits 255 silently; say so, or "code 255" reads like a bug.
    const how = info.reason ?? (signal ? `was killed by ${signal}` : code === 255 && info.stderr.length === 0 ? 'exited with code 255 (stopped by a signal from outside)' : `exited with code ${code}`);
    const err = new ProtocolError('CAPTURE_FAILED', {
      source: describeSource(this.source),
      reason:
        `ffmpeg (pid ${info.pid ?? '-'}) ${how} after ${uptimeMs} ms` +
        (info.stderr.length ? `: ${info.stderr.slice(-5).join(' | ')}` : ' (no error output)'),
    }) as ProtocolError & { exit?: CaptureExit };
    err.exit = info;
    this.emit('error', err);

    if (uptimeMs >= this.policy.stableAfterMs && info.frames > 0) this.nextDelayMs = this.policy.initialDelayMs;
    const delayMs = this.nextDelayMs;
    this.nextDelayMs = Math.min(this.nextDelayMs * 2, this.policy.maxDelayMs);
    this.log.warn(`${err.message}; restarting in ${delayMs} ms`);
    this.restartTimer = setTimeout(() => void this.restartNow(delayMs), delayMs);
  }

  private async restartNow(delayMs: number): Promise<void> {
    this.restartTimer = null;
    if (this.stopped) return;
    try {
      // The screen may have changed size, or the file may have gone, since last time.
      this.resolvedSource = await resolveVideoSource(this.source, this.ffmpegPath);
    } catch (e) {
      if (this.stopped) return;
      const err = e instanceof Error ? e : new Error(String(e));
      this.emit('error', err);
      const next = this.nextDelayMs;
      this.nextDelayMs = Math.min(this.nextDelayMs * 2, this.policy.maxDelayMs);
      this.log.warn(`${err.message}; retrying in ${next} ms`);
      this.restartTimer = setTimeout(() => void this.restartNow(next), next);
      return;
    }
    if (this.stopped) return;
    this.restartCount++;
    const attempt = this.restartCount;
    // A failed spawn is reported by onClose, which schedules the next attempt.
    this.spawnChild().then(
      (pid) => this.emit('restart', { attempt, delayMs, pid }),
      () => undefined,
    );
  }
}

function describeSource(s: VideoSource): string {
  switch (s.type) {
    case 'v4l2':
      return s.device;
    case 'lavfi':
      return s.options ? `${s.filter}=${s.options}` : s.filter;
    case 'file':
      return `file:${s.path}`;
    case 'x11':
      return `${s.display}+${s.x},${s.y}${s.width !== null ? `@${s.width}x${s.height}` : ''}`;
  }
}

// ---------------------------------------------------------------------------
// JPEG encoding
// ---------------------------------------------------------------------------

let sharpTuned = false;
/**
 * libvips settings for a stream of one-off frames. Process-wide, so applied once:
 * - one libvips thread per image on small machines: ffmpeg and the event loop need the
 *   other core, and with at most one encode in flight per sender more threads only add
 *   switching for a 640x480 image;
 * - no operation cache: every frame is a new buffer, so the cache never hits and only
 *   holds up to 50 MB of dead frames.
 */
export function tuneSharpForVideo(): void {
  if (sharpTuned) return;
  sharpTuned = true;
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  if (cores <= 2) sharp.concurrency(1);
  sharp.cache(false);
}

export interface JpegEncoderOptions {
  /** 1..100, default 75. */
  quality?: number;
  /** Output size; null (default) keeps the input's. */
  width?: number | null;
  height?: number | null;
}

/** RGB24 -> JPEG (4:2:0) with sharp; quality and output size may change between calls. */
export class JpegEncoder {
  private q: number;
  private outW: number | null;
  private outH: number | null;

  constructor(opts: JpegEncoderOptions = {}) {
    tuneSharpForVideo();
    this.q = checkQuality(opts.quality ?? 75);
    this.outW = opts.width ?? null;
    this.outH = opts.height ?? null;
    if ((this.outW === null) !== (this.outH === null)) throw new RangeError('give both width and height, or neither');
    checkFormat({ width: this.outW ?? undefined, height: this.outH ?? undefined }, 'JPEG');
  }

  get quality(): number {
    return this.q;
  }
  set quality(q: number) {
    this.q = checkQuality(q);
  }
  get width(): number | null {
    return this.outW;
  }
  get height(): number | null {
    return this.outH;
  }

  /** Sets the output size; null/null keeps each input's own size. */
  setSize(width: number | null, height: number | null): void {
    if ((width === null) !== (height === null)) throw new RangeError('give both width and height, or neither');
    checkFormat({ width: width ?? undefined, height: height ?? undefined }, 'JPEG');
    this.outW = width;
    this.outH = height;
  }

  /** The size encode() produces for an input of this size with the current settings. */
  outputSize(width: number, height: number): { width: number; height: number } {
    return { width: this.outW ?? width, height: this.outH ?? height };
  }

  /** Settings are read when called, so a change applies from the next call on. */
  encode(rgb: Buffer, width: number, height: number): Promise<Buffer> {
    if (rgb.length !== width * height * 3) {
      return Promise.reject(new RangeError(`RGB buffer has ${rgb.length} bytes, ${width}x${height}x3 needs ${width * height * 3}`));
    }
    const out = this.outputSize(width, height);
    let img = sharp(rgb, { raw: { width, height, channels: 3 } });
    if (out.width !== width || out.height !== height) {
      // 'contain' keeps the aspect ratio with black bars, like the capture's own scaling.
      // linear rather than the default lanczos3: ~10% cheaper per frame and the JPEG hides the difference.
      img = img.resize(out.width, out.height, { fit: 'contain', background: { r: 0, g: 0, b: 0 }, kernel: 'linear' });
    }
    // Huffman optimisation (sharp's default) costs ~1.3 ms at 640x480 and saves ~15% of
    // the bytes, i.e. datagrams that can be lost; mozjpeg saves 13% more but costs 6x.
    return img.jpeg({ quality: this.q, chromaSubsampling: '4:2:0', mozjpeg: false }).toBuffer();
  }
}

function checkQuality(q: number): number {
  if (!Number.isInteger(q) || q < 1 || q > 100) throw new RangeError(`JPEG quality must be an integer in 1..100, not ${q}`);
  return q;
}

// ---------------------------------------------------------------------------
// Sender: capture + cadence + encoder
// ---------------------------------------------------------------------------

export interface EncodedFrame {
  jpeg: Buffer;
  width: number;
  height: number;
  /** Wall clock (µs) when the raw frame was complete; see VideoCapture. */
  captureTsUs: number;
  encodeMs: number;
  /** 0, 1, 2, ... over the sender's life (also across capture restarts). */
  frameNo: number;
}

export interface VideoSenderStats {
  /** Output frame rate over the last 2 s. */
  fpsOut: number;
  framesCaptured: number;
  framesOut: number;
  /** Skipped to bring the capture rate down to the output fps. */
  framesSkipped: number;
  /** Replaced while waiting for the encoder (latest wins). */
  framesDroppedEncoder: number;
  /** Superseded inside one read from ffmpeg. */
  framesDroppedCapture: number;
  /** Over the last 120 encodes. */
  encodeMsAvg: number;
  encodeMsP95: number;
  /** Average JPEG size over the last 120 encodes. */
  jpegBytesAvg: number;
  restarts: number;
  pid: number | null;
  width: number;
  height: number;
  fps: number;
  quality: number;
}

export type VideoSenderEvents = {
  frame: [EncodedFrame];
  error: [Error];
  exit: [CaptureExit];
  restart: [CaptureRestart];
  /** Every statsIntervalMs, when that option is set. */
  stats: [VideoSenderStats];
};

export interface VideoSenderOptions {
  /** A spec for parseVideoSource, or a parsed source. */
  source: string | VideoSource;
  kind: VideoKind;
  /** Output size and rate. */
  width: number;
  height: number;
  fps: number;
  /** JPEG quality 1..100 (default 75). */
  quality?: number;
  /**
   * What ffmpeg captures (default: the output size and fps). setSize/setFps never go
   * beyond it without cost: a larger output is upscaled, a higher fps is capped to it.
   */
  captureWidth?: number;
  captureHeight?: number;
  captureFps?: number;
  ffmpegPath?: string;
  logger?: Logger;
  restart?: Partial<RestartPolicy>;
  stallMs?: number;
  statsIntervalMs?: number;
}

const STATS_WINDOW = 120;
const FPS_WINDOW_MS = 2000;

/**
 * Camera or screen frames as JPEGs. Raw frames pass a cadence gate (output fps), then
 * one slot: while an encode is in flight the newest waiting frame replaces older ones,
 * so a slow encoder lowers the frame rate instead of growing a queue or the latency.
 */
export class VideoSender extends TypedEmitter<VideoSenderEvents> {
  readonly source: VideoSource;
  readonly capture: VideoCapture;
  private readonly encoder: JpegEncoder;
  private readonly log: Logger;
  private outFps: number;
  private readonly statsIntervalMs: number;
  private statsTimer: NodeJS.Timeout | null = null;

  private dueUs = 0;
  private lastCaptureUs = 0;
  private captureIntervalUs: number;
  private encoding = false;
  private waiting: RawFrame | null = null;
  private stopped = false;

  private nextFrameNo = 0;
  private framesCaptured = 0;
  private framesSkipped = 0;
  private framesDroppedEncoder = 0;
  private readonly encodeMs: number[] = [];
  private readonly jpegBytes: number[] = [];
  private readonly outTimes: number[] = [];
  private firstOutAt = 0;

  constructor(opts: VideoSenderOptions) {
    super();
    this.source = typeof opts.source === 'string' ? parseVideoSource(opts.source, opts.kind) : opts.source;
    if (this.source.kind !== opts.kind) throw new Error(`source is a ${this.source.kind} source, not ${opts.kind}`);
    checkFormat(opts, 'output');
    const capture: CaptureFormat = {
      width: opts.captureWidth ?? opts.width,
      height: opts.captureHeight ?? opts.height,
      fps: opts.captureFps ?? opts.fps,
    };
    this.outFps = opts.fps;
    this.captureIntervalUs = 1e6 / capture.fps;
    this.log = (opts.logger ?? Logger.create('warn')).child({ video: opts.kind });
    this.encoder = new JpegEncoder({ quality: opts.quality ?? 75, width: opts.width, height: opts.height });
    this.capture = new VideoCapture({
      ...capture,
      source: this.source,
      ffmpegPath: opts.ffmpegPath,
      logger: opts.logger,
      restart: opts.restart,
      stallMs: opts.stallMs,
    });
    this.statsIntervalMs = opts.statsIntervalMs ?? 0;
    this.capture.on('frame', (f) => this.offer(f));
    this.capture.on('error', (e) => this.emit('error', e));
    this.capture.on('exit', (x) => this.emit('exit', x));
    this.capture.on('restart', (r) => this.emit('restart', r));
  }

  async start(): Promise<void> {
    if (this.stopped) throw new Error('VideoSender was stopped; make a new one');
    await this.capture.start();
    if (this.statsIntervalMs > 0 && !this.statsTimer) {
      this.statsTimer = setInterval(() => this.emit('stats', this.stats()), this.statsIntervalMs);
      this.statsTimer.unref();
    }
  }

  /** Idempotent; no 'frame' is emitted once this is called. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.waiting = null;
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = null;
    await this.capture.stop();
  }

  setQuality(q: number): void {
    this.encoder.quality = q;
  }

  setSize(width: number, height: number): void {
    checkFormat({ width, height }, 'output');
    this.encoder.setSize(width, height);
  }

  /** Output fps; above the capture fps every captured frame is sent. */
  setFps(fps: number): void {
    checkFormat({ fps }, 'output');
    this.outFps = fps;
    this.dueUs = 0; // restart the cadence from the next frame
  }

  get fps(): number {
    return this.outFps;
  }
  get quality(): number {
    return this.encoder.quality;
  }

  /**
   * Takes a raw frame (the capture's frames come through here; a test or another
   * source may offer its own). Applies the cadence, then the latest-wins slot.
   */
  offer(frame: RawFrame): void {
    if (this.stopped) return;
    this.framesCaptured++;
    const ts = frame.captureTsUs;
    if (this.lastCaptureUs > 0 && ts > this.lastCaptureUs) {
      // The real capture interval (a camera may deliver fewer fps than asked) sets the jitter tolerance.
      this.captureIntervalUs += (ts - this.lastCaptureUs - this.captureIntervalUs) / 8;
    }
    this.lastCaptureUs = ts;
    const intervalUs = 1e6 / this.outFps;
    if (intervalUs > this.captureIntervalUs * 1.05) {
      if (this.dueUs > 0 && ts < this.dueUs - this.captureIntervalUs / 2) {
        this.framesSkipped++;
        return;
      }
      // Advance from the due time, not the arrival, so the cadence does not drift with
      // jitter; after a gap (restart, pause) start over from this frame.
      this.dueUs = this.dueUs > 0 && ts - this.dueUs < intervalUs ? this.dueUs + intervalUs : ts + intervalUs;
    }
    if (this.encoding) {
      if (this.waiting) this.framesDroppedEncoder++;
      this.waiting = frame;
      return;
    }
    void this.encodeLoop(frame);
  }

  private async encodeLoop(first: RawFrame): Promise<void> {
    this.encoding = true;
    let frame: RawFrame | null = first;
    try {
      while (frame && !this.stopped) {
        const out = this.encoder.outputSize(frame.width, frame.height);
        const t0 = performance.now();
        let jpeg: Buffer;
        try {
          jpeg = await this.encoder.encode(frame.rgb, frame.width, frame.height);
        } catch (e) {
          const err = new Error(`JPEG encoding failed: ${e instanceof Error ? e.message : String(e)}`);
          this.log.warn(err.message);
          this.emit('error', err);
          frame = this.takeWaiting();
          continue;
        }
        const encodeMs = performance.now() - t0;
        if (this.stopped) break;
        this.record(encodeMs, jpeg.length);
        this.emit('frame', { jpeg, width: out.width, height: out.height, captureTsUs: frame.captureTsUs, encodeMs, frameNo: this.nextFrameNo++ });
        frame = this.takeWaiting();
      }
    } finally {
      this.encoding = false;
    }
  }

  private takeWaiting(): RawFrame | null {
    const w = this.waiting;
    this.waiting = null;
    return w;
  }

  private record(encodeMs: number, bytes: number): void {
    const now = performance.now();
    if (this.firstOutAt === 0) this.firstOutAt = now;
    this.encodeMs.push(encodeMs);
    this.jpegBytes.push(bytes);
    this.outTimes.push(now);
    if (this.encodeMs.length > STATS_WINDOW) this.encodeMs.shift();
    if (this.jpegBytes.length > STATS_WINDOW) this.jpegBytes.shift();
    while (this.outTimes.length > 0 && now - this.outTimes[0] > FPS_WINDOW_MS) this.outTimes.shift();
  }

  stats(): VideoSenderStats {
    const now = performance.now();
    const recent = this.outTimes.filter((t) => now - t <= FPS_WINDOW_MS);
    // A full window counts frames per window; a young sender (or one that just resumed)
    // measures the span its frames cover, n frames spanning n-1 intervals.
    const fullWindow = this.firstOutAt > 0 && now - this.firstOutAt >= FPS_WINDOW_MS;
    const fpsOut = fullWindow
      ? recent.length / (FPS_WINDOW_MS / 1000)
      : recent.length >= 2
        ? (recent.length - 1) / ((recent[recent.length - 1] - recent[0]) / 1000)
        : 0;
    const sorted = [...this.encodeMs].sort((a, b) => a - b);
    const avg = (a: number[]) => (a.length ? a.reduce((s, v) => s + v, 0) / a.length : 0);
    const size = this.encoder.outputSize(this.capture.format.width, this.capture.format.height);
    return {
      fpsOut,
      framesCaptured: this.framesCaptured,
      framesOut: this.nextFrameNo,
      framesSkipped: this.framesSkipped,
      framesDroppedEncoder: this.framesDroppedEncoder,
      framesDroppedCapture: this.capture.framesDropped,
      encodeMsAvg: avg(this.encodeMs),
      encodeMsP95: sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))] : 0,
      jpegBytesAvg: avg(this.jpegBytes),
      restarts: this.capture.restarts,
      pid: this.capture.pid,
      width: size.width,
      height: size.height,
      fps: this.outFps,
      quality: this.encoder.quality,
    };
  }
}
