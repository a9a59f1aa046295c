/**
 * Test kit: a virtual X display (Xvfb) with a known image on it, so that screen
 * capture (ffmpeg -f x11grab -i :N) can be tested on a machine with no screen.
 *
 * System parts: Debian packages `xvfb` (Xvfb) and `xloadimage` (puts the image on
 * the root window). xloadimage was picked because on Debian 12 it pulls in no
 * other package here, where feh and hsetroot pull imlib2 and with it ghostscript.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const XVFB_PACKAGE = 'xvfb';
export const SHOW_IMAGE_PACKAGE = 'xloadimage';

/** Absolute path of an executable found on PATH, or null. */
export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return null;
}

export interface XvfbOptions {
  width?: number;
  height?: number;
  depth?: 8 | 16 | 24;
  /**
   * Show the X cursor. Off by default: x11grab draws the cursor into every
   * frame unless told -draw_mouse 0, which would spoil comparisons with the
   * image on screen.
   */
  cursor?: boolean;
  /** How long Xvfb may take to accept connections. Default 15 s (busy 2-core CI boxes). */
  startTimeoutMs?: number;
}

export interface Xvfb {
  /** ':N', for DISPLAY or ffmpeg's x11grab input. */
  display: string;
  displayNumber: number;
  width: number;
  height: number;
  depth: number;
  pid: number;
  /** Idempotent; resolves once the server has exited. */
  close(): Promise<void>;
}

// Xvfb servers this process started and has not closed yet: if the test process
// exits without closing them they would be orphaned and hold a display number.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackForExit(child: ChildProcess): void {
  live.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      // SIGTERM (not KILL) so that Xvfb removes its lock file and socket.
      for (const c of live) c.kill('SIGTERM');
    });
  }
}

/**
 * Starts Xvfb on a display number Xvfb picks itself (-displayfd: it takes the
 * first free one under its own lock, so parallel test workers cannot collide),
 * and resolves once it accepts connections.
 */
export function startXvfb(opts: XvfbOptions = {}): Promise<Xvfb> {
  const width = opts.width ?? 1280;
  const height = opts.height ?? 800;
  const depth = opts.depth ?? 24;
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  const bin = which('Xvfb');
  if (!bin) {
    return Promise.reject(new Error(`Xvfb is not installed (Debian package '${XVFB_PACKAGE}')`));
  }
  const args = ['-displayfd', '3', '-screen', '0', `${width}x${height}x${depth}`, '-nolisten', 'tcp'];
  // Without -noreset the server resets (clearing the root window) whenever its
  // last client disconnects, e.g. between showImage() and the first grab.
  args.push('-noreset');
  if (!opts.cursor) args.push('-nocursor');
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  trackForExit(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  void exited.then(() => live.delete(child));

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    if (closing) return closing;
    closing = (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(killTimer);
      }
      live.delete(child);
    })();
    return closing;
  };

  return new Promise<Xvfb>((resolve, reject) => {
    let out = '';
    let done = false;
    const fail = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      void close().then(() => reject(new Error(`Xvfb did not start: ${why}\n${stderr.trim()}`)));
    };
    const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
    child.once('error', (e) => fail(e.message));
    void exited.then(() => fail(`exited early (code ${child.exitCode}, signal ${child.signalCode})`));
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\n/.exec(out);
      if (!m || done) return;
      done = true;
      clearTimeout(timer);
      const n = Number(m[1]);
      resolve({ display: `:${n}`, displayNumber: n, width, height, depth, pid: child.pid!, close });
    });
  });
}

/**
 * Puts an image (PNG, JPEG, ...) on the root window of `display`, where x11grab
 * captures it. An image the size of the screen is shown 1:1; a smaller one is
 * centred on black. The image stays after this returns (xloadimage keeps the
 * root pixmap when it exits).
 */
export async function showImage(display: string, imagePath: string, timeoutMs = 15_000): Promise<void> {
  const bin = which('xloadimage');
  if (!bin) throw new Error(`xloadimage is not installed (Debian package '${SHOW_IMAGE_PACKAGE}'); showImage needs it`);
  // xloadimage exits 0 even when it could not read the image, so check first and read its output after.
  await fs.promises.access(imagePath, fs.constants.R_OK);
  const r = await run(bin, ['-display', display, '-onroot', '-center', '-border', 'black', '-quiet', imagePath], timeoutMs);
  const code = r.code;
  // It reports unreadable images on stdout, not stderr.
  const output = r.stdout.toString() + r.output;
  if (code !== 0 || /not found|unknown|unsupported|cannot|can't|error|fail/i.test(output)) {
    throw new Error(`xloadimage could not show ${imagePath} on ${display} (exit ${code}): ${output.trim()}`);
  }
}

/** Path of the ffmpeg bundled by @ffmpeg-installer (it has x11grab). */
export function ffmpegPath(): string {
  return (require('@ffmpeg-installer/ffmpeg') as { path: string }).path;
}

/** One frame of the display as packed RGB24 (width*height*3 bytes), through ffmpeg's x11grab. */
export async function grabFrame(display: string, width: number, height: number, timeoutMs = 20_000): Promise<Buffer> {
  const args = ['-hide_banner', '-loglevel', 'error', '-f', 'x11grab', '-draw_mouse', '0', '-video_size', `${width}x${height}`,
    '-i', display, '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'];
  const { code, output, stdout } = await run(ffmpegPath(), args, timeoutMs);
  if (code !== 0 || stdout.length !== width * height * 3) {
    throw new Error(`x11grab of ${display} failed (exit ${code}, ${stdout.length} bytes): ${output.trim()}`);
  }
  return stdout;
}

function run(bin: string, args: string[], timeoutMs: number): Promise<{ code: number | string; output: string; stdout: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let output = '';
    child.stdout!.on('data', (d: Buffer) => chunks.push(d));
    child.stderr!.on('data', (d: Buffer) => {
      output = (output + d.toString()).slice(-4000);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(bin)} timed out after ${timeoutMs} ms: ${output.trim()}`));
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(chunks);
      resolve({ code: code ?? signal ?? -1, output, stdout });
    });
  });
}
