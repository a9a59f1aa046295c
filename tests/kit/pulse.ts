/**
 * Test kit: a private PulseAudio server per test file, with null sinks standing in
 * for microphones and speakers (see shared/TESTING.md).
 *
 * Each server runs in its own temp directory (XDG_RUNTIME_DIR, PULSE_RUNTIME_PATH
 * and HOME point there) with its own unix socket, so several test files can run at
 * once. Null sinks are made at 48 kHz mono, the client's format, so nothing is
 * resampled on the way. A signal played into sink X comes out of source
 * "X.monitor": a client whose microphone is X.monitor hears it; a client whose
 * speaker is sink Y can be recorded from Y.monitor.
 *
 * Routing a client: env({ source, sink }) gives PULSE_SERVER / PULSE_SOURCE /
 * PULSE_SINK for a child process; in-process, pass the same variables as a
 * DeviceCapture / DevicePlayback `env` option (libpulse reads them when a stream
 * opens).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { which } from './xvfb';
import { DeviceCapture, DevicePlayback, nowUs } from '../../client/audio/devices';
import { FRAME_SAMPLES, SAMPLE_RATE } from '../../client/audio/format';

export const PULSE_PACKAGES = 'pulseaudio pulseaudio-utils libasound2-plugins';

export interface PulseOptions {
  /** Null sinks to create at start. Default ['mic', 'spk']. */
  sinks?: string[];
  /** How long the daemon may take to answer. Default 15 s. */
  startTimeoutMs?: number;
}

export interface Recorder {
  /** Everything recorded so far (a copy). */
  samples(): Int16Array;
  /** Wall-clock µs when parec was started. */
  startedUs: number;
  /** Stops parec; resolves with everything it recorded. */
  stop(): Promise<Int16Array>;
}

export interface Pulse {
  /** The PULSE_SERVER string, e.g. 'unix:/tmp/lvc-pulse-x/pulse/native'. */
  server: string;
  dir: string;
  pid: number;
  /** Environment for a child process: PULSE_SERVER, and PULSE_SOURCE / PULSE_SINK if given. */
  env(o?: { source?: string; sink?: string }): Record<string, string>;
  sinks(): string[];
  addSink(name: string): Promise<void>;
  /** Unloads the sink's module: the sink and its monitor vanish, as an unplugged device. */
  removeSink(name: string): Promise<void>;
  /** Plays into a sink: raw samples (48 kHz mono s16) through pacat, or a file through paplay. Resolves when done. */
  play(sink: string, what: Int16Array | string): Promise<void>;
  /** Records sink.monitor as s16le 48 kHz mono through parec, until stop(); `discard`: only read it (keeps its players flowing). */
  record(sink: string, o?: { discard?: boolean }): Recorder;
  /** Runs pactl against this server; resolves with its stdout. */
  pactl(...args: string[]): Promise<string>;
  /** Kills the daemon and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

// Daemons and helpers this process started and has not stopped: killed on exit so
// no pulseaudio outlives a test run.
const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHook = false;
function track(child: ChildProcess, dir?: string): void {
  live.add(child);
  if (dir) liveDirs.add(dir);
  child.once('exit', () => live.delete(child));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const d of liveDirs) fs.rmSync(d, { recursive: true, force: true });
  });
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Throws with what to install when the PulseAudio tools are missing. */
export function requirePulse(): void {
  const missing = ['pulseaudio', 'pactl', 'pacat', 'parec', 'paplay'].filter((c) => !which(c));
  if (missing.length) {
    throw new Error(
      `PulseAudio is not installed (missing ${missing.join(', ')}): run \`npm run setup\` as root ` +
        `(it installs the Debian packages ${PULSE_PACKAGES})`,
    );
  }
}

export async function startPulse(o: PulseOptions = {}): Promise<Pulse> {
  requirePulse();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lvc-pulse-'));
  const runtime = path.join(dir, 'pulse');
  fs.mkdirSync(runtime, { mode: 0o700 });
  const socket = path.join(runtime, 'native');
  const server = `unix:${socket}`;
  const daemonEnv: NodeJS.ProcessEnv = {
    ...process.env,
    XDG_RUNTIME_DIR: dir,
    PULSE_RUNTIME_PATH: runtime,
    PULSE_STATE_PATH: path.join(dir, 'state'),
    HOME: dir,
  };
  delete daemonEnv.PULSE_SERVER;
  const daemon = spawn(
    'pulseaudio',
    [
      '--daemonize=no',
      '--exit-idle-time=-1',
      '-n',
      '--use-pid-file=no',
      '--disallow-exit',
      '--log-target=stderr',
      '--log-level=error',
      `--load=module-native-protocol-unix socket=${socket} auth-anonymous=1`,
    ],
    { env: daemonEnv, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  track(daemon, dir);
  let stderr = '';
  daemon.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const clientEnv: NodeJS.ProcessEnv = { ...process.env, PULSE_SERVER: server, HOME: dir };
  delete clientEnv.PULSE_SINK;
  delete clientEnv.PULSE_SOURCE;
  const pactl = (...args: string[]) => run('pactl', args, clientEnv);

  const deadline = Date.now() + (o.startTimeoutMs ?? 15_000);
  for (;;) {
    if (daemon.exitCode !== null || daemon.signalCode !== null) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`pulseaudio exited (${daemon.exitCode ?? daemon.signalCode}): ${stderr.trim()}`);
    }
    try {
      await pactl('info');
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        daemon.kill('SIGKILL');
        fs.rmSync(dir, { recursive: true, force: true });
        throw new Error(`pulseaudio did not answer within ${o.startTimeoutMs ?? 15_000} ms: ${(e as Error).message}; ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const modules = new Map<string, string>();
  const helpers = new Set<ChildProcess>();
  let stopped = false;

  const addSink = async (name: string) => {
    if (modules.has(name)) throw new Error(`sink ${name} exists`);
    const idx = (await pactl('load-module', 'module-null-sink', `sink_name=${name}`, 'rate=48000', 'channels=1', 'format=s16le', `sink_properties=device.description=${name}`)).trim();
    modules.set(name, idx);
  };
  for (const s of o.sinks ?? ['mic', 'spk']) await addSink(s);

  const helper = (cmd: string, args: string[]) => {
    const c = spawn(cmd, args, { env: clientEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    helpers.add(c);
    track(c);
    c.once('exit', () => helpers.delete(c));
    return c;
  };

  const pulse: Pulse = {
    server,
    dir,
    pid: daemon.pid!,
    env: (e = {}) => {
      const out: Record<string, string> = { PULSE_SERVER: server };
      if (e.source) out.PULSE_SOURCE = e.source;
      if (e.sink) out.PULSE_SINK = e.sink;
      return out;
    },
    sinks: () => [...modules.keys()],
    addSink,
    removeSink: async (name) => {
      const idx = modules.get(name);
      if (idx === undefined) throw new Error(`no sink ${name}`);
      await pactl('unload-module', idx);
      modules.delete(name);
    },
    play: (sink, what) =>
      new Promise<void>((resolve, reject) => {
        const c =
          typeof what === 'string'
            ? helper('paplay', ['-d', sink, what])
            : helper('pacat', ['--playback', '-d', sink, '--format=s16le', '--rate=48000', '--channels=1', '--raw', '--latency-msec=20']);
        let err = '';
        c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
        c.once('error', reject);
        c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${typeof what === 'string' ? 'paplay' : 'pacat'} into ${sink} failed (${code}): ${err.trim()}`))));
        if (typeof what === 'string') c.stdin!.end();
        else c.stdin!.end(Buffer.from(what.buffer, what.byteOffset, what.byteLength));
      }),
    record: (sink, o = {}) => {
      const c = helper('parec', ['-d', `${sink}.monitor`, '--format=s16le', '--rate=48000', '--channels=1', '--raw', '--latency-msec=10']);
      const startedUs = nowUs();
      const chunks: Buffer[] = [];
      c.stdout!.on('data', (d: Buffer) => {
        if (!o.discard) chunks.push(d);
      });
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      const collect = () => {
        const all = Buffer.concat(chunks);
        const n = all.length >> 1;
        const out = new Int16Array(n);
        for (let i = 0; i < n; i++) out[i] = all.readInt16LE(2 * i);
        return out;
      };
      return {
        startedUs,
        samples: collect,
        stop: async () => {
          if (c.exitCode === null && c.signalCode === null) {
            c.kill('SIGTERM');
            await exited;
          }
          return collect();
        },
      };
    },
    pactl,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      for (const h of helpers) h.kill('SIGKILL');
      if (daemon.exitCode === null && daemon.signalCode === null) {
        const gone = new Promise<void>((r) => daemon.once('exit', () => r()));
        daemon.kill('SIGTERM');
        const t = setTimeout(() => daemon.kill('SIGKILL'), 3000);
        await gone;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    },
  };
  return pulse;
}

// ---------------------------------------------------------------------------
// signals and measurements

export function concatFrames(frames: Int16Array[]): Int16Array {
  const out = new Int16Array(frames.reduce((n, f) => n + f.length, 0));
  let o = 0;
  for (const f of frames) {
    out.set(f, o);
    o += f.length;
  }
  return out;
}

export interface LoopLatency {
  /** Per click: hand-over to naudiodon -> estimated capture time of the click's first sample. */
  samplesMs: number[];
  p50: number;
  p95: number;
  /** Per click: hand-over -> the captured frame holding the click reaching JS (adds the 0-20 ms wait for the rest of the frame). */
  arrivalMs: number[];
  arrivalP50: number;
  arrivalP95: number;
  missed: number;
}

export interface LoopLatencyOptions {
  clicks?: number;
  /** Time between clicks. Default 300 ms. */
  spacingMs?: number;
  capture?: ConstructorParameters<typeof DeviceCapture>[1];
  playback?: ConstructorParameters<typeof DevicePlayback>[2];
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/**
 * The device floor: clicks written through DevicePlayback into `sink`, captured back
 * from sink.monitor by DeviceCapture, both in this process. Latency of one click =
 * estimated capture time of the click's first loud sample (DeviceCapture's
 * captureUs plus its offset in the frame) - the time its frame was handed to
 * naudiodon ('played').
 */
export async function measureLoopLatency(pulse: Pulse, sink: string, o: LoopLatencyOptions = {}): Promise<LoopLatency> {
  const clicks = o.clicks ?? 20;
  const spacingFrames = Math.max(5, Math.round((o.spacingMs ?? 300) / 20));
  const click = new Int16Array(FRAME_SAMPLES);
  for (let i = 0; i < 48; i++) click[i] = i % 2 ? -20000 : 20000; // 1 ms burst
  const silence = new Int16Array(FRAME_SAMPLES);
  let warm = false;
  let n = 0;
  let sent = 0;
  const sentAt: number[] = [];
  const pb = new DevicePlayback('default', () => {
    if (!warm || sent >= clicks) return silence;
    if (n++ % spacingFrames !== 0) return silence;
    sent++;
    return click;
  }, { ...o.playback, env: { ...pulse.env({ sink }), ...o.playback?.env } });
  pb.on('played', (pcm, handedUs) => {
    if (pcm === click) sentAt.push(handedUs);
  });
  const seenAt: number[] = [];
  const arrivedAt: number[] = [];
  let inClick = false;
  const cap = new DeviceCapture('default', { ...o.capture, env: { ...pulse.env({ source: `${sink}.monitor` }), ...o.capture?.env } });
  let gotFrames = 0;
  cap.on('frame', (pcm, captureUs) => {
    gotFrames++;
    let idx = -1;
    for (let i = 0; i < pcm.length; i++) {
      if (Math.abs(pcm[i]) > 8000) {
        idx = i;
        break;
      }
    }
    if (idx >= 0 && !inClick) {
      seenAt.push(captureUs + (idx * 1e6) / SAMPLE_RATE);
      arrivedAt.push(nowUs());
    }
    inClick = idx >= 0 || (inClick && pcm.some((v) => Math.abs(v) > 2000));
  });
  await cap.start();
  await pb.start();
  try {
    // Both streams take 0.6-2 s to start delivering; begin clicking once both flow.
    const t0 = Date.now();
    while ((gotFrames < 25 || pb.frames < 25) && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
    warm = true;
    const deadline = Date.now() + clicks * spacingFrames * 20 + 3000;
    while ((sentAt.length < clicks || seenAt.length < sentAt.length) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  } finally {
    await pb.stop();
    await cap.stop();
  }
  // Pair each click with the first detection after it.
  const lat: number[] = [];
  const arr: number[] = [];
  let j = 0;
  for (const s of sentAt) {
    while (j < seenAt.length && arrivedAt[j] < s) j++;
    if (j < seenAt.length) {
      lat.push((seenAt[j] - s) / 1000);
      arr.push((arrivedAt[j] - s) / 1000);
      j++;
    }
  }
  const sorted = [...lat].sort((a, b) => a - b);
  const sortedArr = [...arr].sort((a, b) => a - b);
  return {
    samplesMs: lat,
    p50: quantile(sorted, 0.5),
    p95: quantile(sorted, 0.95),
    arrivalMs: arr,
    arrivalP50: quantile(sortedArr, 0.5),
    arrivalP95: quantile(sortedArr, 0.95),
    missed: sentAt.length - lat.length,
  };
}
