/**
 * What the command-line client does with RECEIVED video frames when it has no window:
 * - LatestFrameWriter keeps `DIR/<participant>.jpg` up to date, so any image viewer
 *   (or `watch`, or a browser pointed at the directory) shows each participant's video;
 * - MjpegRecorder appends JPEG frames to a Matroska file without re-encoding them.
 */
// ffmpeg runs through plain child_process.spawn (not fluent-ffmpeg): the recorder needs
// direct access to stdin's buffer level for dropping frames, and the exact exit status.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { TypedEmitter } from '../shared/events';
import { Logger } from '../shared/log';
import { DEFAULT_FFMPEG_PATH } from './video_client';

/**
 * A file name stem for a participant: letters, digits, '.', '_' and '-' are kept, anything
 * else becomes '_'. When that changed the name, a short hash of the original is appended,
 * so "a b" and "a_b" never overwrite each other's file. Never empty, never starts with '.'.
 */
export function safeParticipantName(name: string): string {
  let s = name.normalize('NFC').replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_').slice(0, 64);
  if (s === '') s = '_';
  if (s !== name) s += '-' + createHash('sha1').update(name, 'utf8').digest('hex').slice(0, 8);
  return s;
}

function isJpeg(b: Buffer): boolean {
  return b.length >= 4 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

// ---------------------------------------------------------------------------
// Latest frame per participant
// ---------------------------------------------------------------------------

export type LatestFrameWriterEvents = {
  written: [{ participant: string; path: string; bytes: number }];
  error: [Error];
};

export interface LatestFrameWriterStats {
  written: number;
  /** Frames replaced by a newer one before they were written. */
  coalesced: number;
  /** Not a JPEG (no SOI marker): never written. */
  rejected: number;
  errors: number;
}

interface Slot {
  writing: boolean;
  next: Buffer | null;
  idle: Promise<void>;
  markIdle: () => void;
}

/**
 * Writes the newest JPEG of each participant to `DIR/<safe-name>.jpg`. Each write goes to
 * a temporary file that is then renamed over the old one, so a viewer never opens a
 * half-written image. At most one write per participant is in flight; frames arriving
 * meanwhile replace each other, and only the newest is written next.
 */
export class LatestFrameWriter extends TypedEmitter<LatestFrameWriterEvents> {
  readonly dir: string;
  private readonly slots = new Map<string, Slot>();
  private mkdir: Promise<unknown> | null = null;
  private closed = false;
  private readonly log: Logger;
  private readonly counters: LatestFrameWriterStats = { written: 0, coalesced: 0, rejected: 0, errors: 0 };

  constructor(dir: string, opts: { logger?: Logger } = {}) {
    super();
    this.dir = path.resolve(dir);
    this.log = (opts.logger ?? Logger.create('warn')).child({ frames: this.dir });
  }

  /** Where a participant's image lives. */
  pathFor(participant: string): string {
    return path.join(this.dir, `${safeParticipantName(participant)}.jpg`);
  }

  /** Queues the frame; returns false when it was not accepted (closed, or not a JPEG). */
  write(participant: string, jpeg: Buffer): boolean {
    if (this.closed) return false;
    if (!isJpeg(jpeg)) {
      this.counters.rejected++;
      return false;
    }
    let slot = this.slots.get(participant);
    if (!slot) {
      slot = { writing: false, next: null, idle: Promise.resolve(), markIdle: () => undefined };
      this.slots.set(participant, slot);
    }
    if (slot.writing) {
      if (slot.next) this.counters.coalesced++;
      slot.next = jpeg;
      return true;
    }
    const s = slot;
    s.writing = true;
    s.idle = new Promise<void>((resolve) => (s.markIdle = resolve));
    void this.drain(participant, s, jpeg);
    return true;
  }

  private async drain(participant: string, slot: Slot, first: Buffer): Promise<void> {
    const final = this.pathFor(participant);
    // One temp name per participant and process suffices: one write at a time per slot.
    const tmp = path.join(this.dir, `.${path.basename(final)}.${process.pid}.tmp`);
    let jpeg: Buffer | null = first;
    while (jpeg) {
      try {
        this.mkdir ??= fsp.mkdir(this.dir, { recursive: true });
        await this.mkdir;
        // No fsync: the rename is what makes the update atomic for readers; surviving a
        // power cut is not worth a disk flush per frame.
        await fsp.writeFile(tmp, jpeg);
        await fsp.rename(tmp, final);
        this.counters.written++;
        this.emit('written', { participant, path: final, bytes: jpeg.length });
      } catch (e) {
        this.counters.errors++;
        // The directory may have been removed under us: make it again next time.
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') this.mkdir = null;
        const err = new Error(`cannot write ${final}: ${e instanceof Error ? e.message : String(e)}`);
        this.log.warn(err.message);
        this.emit('error', err);
        await fsp.rm(tmp, { force: true }).catch(() => undefined);
      }
      jpeg = slot.next;
      slot.next = null;
    }
    slot.writing = false;
    slot.markIdle();
  }

  /** Resolves once every frame accepted so far is on disk (or failed). */
  async flush(): Promise<void> {
    await Promise.all([...this.slots.values()].map((s) => s.idle));
  }

  /** Deletes a participant's image (they left) once its pending write is done. */
  async remove(participant: string): Promise<void> {
    const slot = this.slots.get(participant);
    if (slot) {
      slot.next = null;
      await slot.idle;
      this.slots.delete(participant);
    }
    await fsp.rm(this.pathFor(participant), { force: true });
  }

  /** Stops accepting frames and waits for writes in flight. Files stay. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  stats(): LatestFrameWriterStats {
    return { ...this.counters };
  }
}

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

export interface MjpegRecorderOptions {
  ffmpegPath?: string;
  /** Bytes waiting in ffmpeg's stdin beyond which frames are dropped (default 8 MiB). */
  maxQueuedBytes?: number;
  /** Replace an existing file (default false: the constructor throws if it exists). */
  overwrite?: boolean;
  logger?: Logger;
}

export interface MjpegRecorderStats {
  framesWritten: number;
  framesDropped: number;
  bytesWritten: number;
  queuedBytes: number;
}

export interface MjpegRecorderResult extends MjpegRecorderStats {
  /** ffmpeg's exit code (null if it was killed or never started). */
  code: number | null;
  /** ffmpeg's last error lines. */
  stderr: string[];
}

export type MjpegRecorderEvents = {
  error: [Error];
  exit: [{ code: number | null; signal: NodeJS.Signals | null; stderr: string[] }];
};

/**
 * Records JPEG frames into a Matroska file by stream copy (no decode, no re-encode).
 * ffmpeg reads the JPEGs from stdin as an MJPEG stream and stamps each with the wall
 * clock at which it read it, so the file plays at the pace frames arrived, gaps included.
 * ffmpeg starts with the first frame (an empty recording makes no file). If ffmpeg falls
 * behind, frames are dropped rather than buffered without bound.
 */
export class MjpegRecorder extends TypedEmitter<MjpegRecorderEvents> {
  readonly path: string;
  private readonly ffmpegPath: string;
  private readonly maxQueuedBytes: number;
  private readonly log: Logger;
  private child: ChildProcess | null = null;
  private exited: Promise<MjpegRecorderResult> | null = null;
  private dead = false;
  private closing: Promise<MjpegRecorderResult> | null = null;
  private stderrTail: string[] = [];
  private readonly counters = { framesWritten: 0, framesDropped: 0, bytesWritten: 0 };

  constructor(filePath: string, opts: MjpegRecorderOptions = {}) {
    super();
    this.path = path.resolve(filePath);
    if (!opts.overwrite && fs.existsSync(this.path)) throw new Error(`recording file already exists: ${this.path} (choose another name or pass overwrite)`);
    this.ffmpegPath = opts.ffmpegPath ?? DEFAULT_FFMPEG_PATH;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 8 * 1024 * 1024;
    this.log = (opts.logger ?? Logger.create('warn')).child({ record: path.basename(this.path) });
  }

  /** ffmpeg's pid once recording has started. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Appends a frame; false when it was dropped (backed up, not a JPEG, closed or ffmpeg gone). */
  write(jpeg: Buffer): boolean {
    if (this.closing || this.dead || !isJpeg(jpeg)) {
      this.counters.framesDropped++;
      return false;
    }
    const child = this.child ?? this.startFfmpeg();
    const stdin = child.stdin!;
    // One frame is always allowed in, so a frame larger than the bound still records.
    if (stdin.writableLength > 0 && stdin.writableLength + jpeg.length > this.maxQueuedBytes) {
      this.counters.framesDropped++;
      return false;
    }
    stdin.write(jpeg);
    this.counters.framesWritten++;
    this.counters.bytesWritten += jpeg.length;
    return true;
  }

  private startFfmpeg(): ChildProcess {
    fs.mkdirSync(path.dirname(this.path), { recursive: true });
    const args = [
      '-loglevel', 'error', '-nostdin',
      // -f mjpeg splits frames at their markers; wall-clock stamps give real timing,
      // where image2pipe would assume a fixed frame rate.
      '-use_wallclock_as_timestamps', '1', '-f', 'mjpeg', '-i', 'pipe:0',
      '-map', '0:v:0', '-c:v', 'copy', '-f', 'matroska', '-y', this.path,
    ];
    const child = spawn(this.ffmpegPath, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    this.child = child;
    let partial = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      const lines = (partial + s).split('\n');
      partial = lines.pop() ?? '';
      this.stderrTail.push(...lines.map((l) => l.trimEnd()).filter(Boolean));
      if (this.stderrTail.length > 20) this.stderrTail.splice(0, this.stderrTail.length - 20);
    });
    // EPIPE when ffmpeg died: reported through 'close' below, with ffmpeg's own words.
    child.stdin!.on('error', () => undefined);
    let spawnError: Error | null = null;
    child.on('error', (e) => {
      spawnError = e;
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.dead = true;
        if (partial.trim()) this.stderrTail.push(partial.trim());
        const stderr = this.stderrTail.slice();
        this.emit('exit', { code, signal, stderr });
        if (!this.closing || code !== 0) {
          const how = spawnError ? `could not start (${(spawnError as Error).message})` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
          const err = new Error(`recorder ffmpeg for ${this.path} ${how}${stderr.length ? `: ${stderr.slice(-5).join(' | ')}` : ''}`);
          this.log.warn(err.message);
          this.emit('error', err);
        }
        resolve({ ...this.stats(), code: spawnError ? null : code, stderr });
      });
    });
    return child;
  }

  /**
   * Ends the recording: closes ffmpeg's stdin so it writes the Matroska index and exits,
   * then resolves. Kills it if it has not finished within timeoutMs. Idempotent.
   */
  close(timeoutMs = 10_000): Promise<MjpegRecorderResult> {
    if (this.closing) return this.closing;
    const child = this.child;
    if (!child || !this.exited) {
      this.closing = Promise.resolve({ ...this.stats(), code: null, stderr: [] });
      return this.closing;
    }
    const exited = this.exited;
    this.closing = new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn(`recorder ffmpeg did not finish within ${timeoutMs} ms; killing it`);
        child.kill('SIGKILL');
      }, timeoutMs);
      child.stdin!.end();
      void exited.then((r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
    return this.closing;
  }

  stats(): MjpegRecorderStats {
    return { ...this.counters, queuedBytes: this.child?.stdin?.writableLength ?? 0 };
  }
}
