/**
 * Shared helpers for the bench scripts: percentiles, machine info, results files,
 * the one-line summary every bench prints last, forked server children with a small
 * request/reply channel over IPC (both ends), and a CPU-profile summarizer.
 *
 * Conventions for a bench script in bench/ (run_all.ts relies on them):
 *  - it runs by itself (`ts-node bench/NAME.ts`), bounded in time, and exits;
 *  - it writes bench/results/NAME.json;
 *  - its last stdout line is `bench:NAME key=value ...` (see finalLine).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver, type EventLoopUtilization, type IntervalHistogram } from 'node:perf_hooks';
import { Server, type ServerOptions } from '../server/main_server';

export const BENCH_DIR = __dirname;
export const REPO_ROOT = path.resolve(__dirname, '..');
export const RESULTS_DIR = path.join(BENCH_DIR, 'results');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Rounds to `digits` decimals (figures in results files stay readable). */
export function round(n: number, digits = 2): number {
  if (!Number.isFinite(n)) return n;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Nearest-rank percentile of an ascending array; p in [0, 100]. NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(n - 1, Math.max(0, rank - 1))];
}

/** Median (mean of the middle two for an even count); NaN when empty. */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export interface LatencySummary {
  count: number;
  mean_ms: number;
  min_ms: number;
  p50_ms: number;
  p90_ms: number;
  p95_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
}

/** Summary of latency samples in milliseconds (the input is not modified). */
export function summarize(samples: ArrayLike<number>, count = samples.length): LatencySummary {
  const sorted = Float64Array.from({ length: count }, (_, i) => samples[i]).sort();
  let sum = 0;
  for (let i = 0; i < count; i++) sum += sorted[i];
  return {
    count,
    mean_ms: round(count ? sum / count : NaN, 3),
    min_ms: round(count ? sorted[0] : NaN, 3),
    p50_ms: round(percentile(sorted, 50), 3),
    p90_ms: round(percentile(sorted, 90), 3),
    p95_ms: round(percentile(sorted, 95), 3),
    p99_ms: round(percentile(sorted, 99), 3),
    p999_ms: round(percentile(sorted, 99.9), 3),
    max_ms: round(count ? sorted[count - 1] : NaN, 3),
  };
}

export function machineInfo() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpu_model: cpus[0]?.model ?? 'unknown',
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    total_mem_mb: Math.round(os.totalmem() / 2 ** 20),
    loadavg_at_start: os.loadavg().map((l) => round(l, 2)),
    date: new Date().toISOString(),
  };
}

export interface MachineCpu {
  /** Jiffies (all CPUs) spent busy: user, nice, system, irq, softirq. */
  busy: number;
  /** Jiffies the hypervisor gave to someone else while we wanted to run. */
  steal: number;
  /** All jiffies (all CPUs), steal included. */
  total: number;
}

/** Machine-wide CPU counters from /proc/stat (Linux); null elsewhere. */
export function machineCpu(): MachineCpu | null {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1, 9).map(Number);
    return { busy: user + nice + system + irq + softirq, steal, total: user + nice + system + idle + iowait + irq + softirq + steal };
  } catch {
    return null;
  }
}

/** Cores' worth of busy and stolen CPU between two readings (the whole machine). */
export function machineCpuBetween(a: MachineCpu | null, b: MachineCpu | null): { busy_cores: number; steal_cores: number } | null {
  if (!a || !b || b.total <= a.total) return null;
  const cores = os.cpus().length;
  const span = b.total - a.total;
  return { busy_cores: round(((b.busy - a.busy) / span) * cores, 2), steal_cores: round(((b.steal - a.steal) / span) * cores, 2) };
}

/**
 * Waits (at most maxWaitMs) until the machine is quiet: less than `thresholdCores` busy
 * over a `sampleMs` window (the caller's own processes should be idle meanwhile).
 * Resolves with the last reading; never rejects (a busy machine is reported, not fatal).
 */
export async function waitForQuiet(maxWaitMs: number, thresholdCores = 0.3, sampleMs = 1000): Promise<{ waited_s: number; busy_cores: number | null; quiet: boolean }> {
  const start = performance.now();
  for (;;) {
    const a = machineCpu();
    await sleep(sampleMs);
    const m = machineCpuBetween(a, machineCpu());
    const waited_s = round((performance.now() - start) / 1000, 1);
    if (!m) return { waited_s, busy_cores: null, quiet: true };
    if (m.busy_cores < thresholdCores) return { waited_s, busy_cores: m.busy_cores, quiet: true };
    if (performance.now() - start + sampleMs > maxWaitMs) return { waited_s, busy_cores: m.busy_cores, quiet: false };
  }
}

/** Writes bench/results/NAME.json (via a .tmp file and a rename); returns the path. */
export function writeResults(name: string, data: unknown): string {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(data, null, 2) + '\n');
  fs.renameSync(tmp, file);
  return file;
}

/** The summary line a bench prints last: `bench:NAME k=v k=v`. */
export function finalLine(name: string, fields: Record<string, string | number>): string {
  const kv = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'number' ? fmtNumber(v) : v}`);
  return `bench:${name} ${kv.join(' ')}`;
}

function fmtNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(round(v, Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 1 ? 2 : 3));
}

/** Resolves once `predicate` holds (polled every `everyMs`), rejects after `timeoutMs`. */
export async function waitUntil(predicate: () => boolean, timeoutMs: number, what: string, everyMs = 5): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------ event-loop stalls

export interface LoopStalls {
  /** How late a 2 ms timer fired (ms): the event loop's responsiveness. */
  loop_delay_p99_ms: number;
  loop_delay_max_ms: number;
  gc_count: number;
  gc_total_ms: number;
  gc_max_ms: number;
}

/**
 * Event-loop delay and GC pauses of this process, per interval (each `take()` reports
 * since the previous one). The delay monitor wakes the loop every 2 ms: a small, equal
 * cost for every process it runs in.
 */
export class LoopMonitor {
  private readonly delay: IntervalHistogram = monitorEventLoopDelay({ resolution: 2 });
  private readonly gc: PerformanceObserver;
  private gcCount = 0;
  private gcTotal = 0;
  private gcMax = 0;

  constructor() {
    this.delay.enable();
    this.gc = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        this.gcCount++;
        this.gcTotal += e.duration;
        if (e.duration > this.gcMax) this.gcMax = e.duration;
      }
    });
    this.gc.observe({ entryTypes: ['gc'] });
  }

  take(): LoopStalls {
    const out: LoopStalls = {
      // The histogram is in nanoseconds and includes the 2 ms resolution itself.
      loop_delay_p99_ms: round(Math.max(0, this.delay.percentile(99) / 1e6 - 2), 2),
      loop_delay_max_ms: round(Math.max(0, this.delay.max / 1e6 - 2), 2),
      gc_count: this.gcCount,
      gc_total_ms: round(this.gcTotal, 1),
      gc_max_ms: round(this.gcMax, 2),
    };
    this.delay.reset();
    this.gcCount = this.gcTotal = this.gcMax = 0;
    return out;
  }

  stop(): void {
    this.delay.disable();
    this.gc.disconnect();
  }
}

/**
 * The product's Server as a bench child runs it: loopback, every port free (0), the
 * given data directory, warnings only; `options` override.
 */
export async function startBenchServer(dataDir: string, options: ServerOptions = {}): Promise<Server> {
  const server = new Server({
    host: '127.0.0.1',
    port: 0,
    videoPort: 0,
    audioPort: 0,
    screenPort: 0,
    feedbackPort: 0,
    filePort: 0,
    dataDir,
    logLevel: 'warn',
    ...options,
  });
  await server.start();
  return server;
}

// ------------------------------------------------------------ forked children

/** Messages a bench child sends up its IPC channel. */
export type ChildMessage =
  | { kind: 'ready'; port: number; pid: number }
  | { kind: 'reply'; id: number; ok: true; result: unknown }
  | { kind: 'reply'; id: number; ok: false; error: string };

/** Messages a bench child receives. */
export interface ChildRequest {
  kind: 'request';
  id: number;
  /** A word, optionally followed by a space and JSON (the word's argument). */
  cmd: string;
}

export interface ForkedChild {
  proc: ChildProcess;
  port: number;
  /** Sends a command and resolves with the child's reply (bounded by timeoutMs). */
  request<T = unknown>(cmd: string, timeoutMs?: number): Promise<T>;
  /** Resolves with the exit code (or signal name) once the child has exited. */
  exited: Promise<number | string>;
  /** Kills the child if it is still running (SIGKILL after a grace period). */
  kill(): Promise<void>;
  stderr(): string;
}

/**
 * Forks `script` under ts-node (transpile-only, from the repo's tsconfig) in the repo
 * root and waits for its `ready` message. `nodeArgs` go before `-r ts-node/register`
 * (e.g. --cpu-prof).
 */
export function forkTs(script: string, args: string[], opts: { nodeArgs?: string[]; readyTimeoutMs?: number } = {}): Promise<ForkedChild> {
  const proc = fork(script, args, {
    cwd: REPO_ROOT,
    execArgv: [...(opts.nodeArgs ?? []), '-r', 'ts-node/register'],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 64 * 1024) err = err.slice(-32 * 1024);
  });
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  proc.on('message', (m: ChildMessage) => {
    if (m.kind !== 'reply') return;
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    clearTimeout(w.timer);
    if (m.ok) w.resolve(m.result);
    else w.reject(new Error(m.error));
  });
  void exited.then((code) => {
    for (const [id, w] of waiting) {
      clearTimeout(w.timer);
      w.reject(new Error(`child exited (${code}) before answering`));
      waiting.delete(id);
    }
  });
  const child = (port: number): ForkedChild => ({
    proc,
    port,
    exited,
    stderr: () => err,
    request<T>(cmd: string, timeoutMs = 10_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        if (!proc.connected) return reject(new Error(`child is gone (cannot send ${cmd})`));
        const id = nextId++;
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error(`child did not answer ${cmd} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        proc.send({ kind: 'request', id, cmd } satisfies ChildRequest);
      });
    },
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  });
  return new Promise<ForkedChild>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${path.basename(script)} ${args.join(' ')} not ready within ${opts.readyTimeoutMs ?? 30_000} ms\n${err}`));
    }, opts.readyTimeoutMs ?? 30_000);
    const onMessage = (m: ChildMessage) => {
      if (m.kind !== 'ready') return;
      clearTimeout(timer);
      proc.off('message', onMessage);
      resolve(child(m.port));
    };
    proc.on('message', onMessage);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(script)} exited (${code}) before it was ready\n${err}`));
    });
  });
}

/** The fields every `stats` reply of serveChild carries; each bench adds its own. */
export interface ChildStatsBase {
  hrtime_us: number;
  cpu_user_us: number;
  cpu_system_us: number;
  elu_since_last: number;
  stalls: LoopStalls;
  rss_mb: number;
}

/** What a bench child serves to its parent (see serveChild). */
export interface ServedChild {
  /** Sent in the `ready` message: where the parent aims its load. */
  port: number;
  /** The `counters` field of every `stats` reply. */
  counters?: () => Record<string, unknown>;
  /** Fields of this child's own, added to every `stats` reply after the common ones. */
  stats?: () => Record<string, unknown>;
  /** Commands other than `stats` and `close`; without it they are refused. */
  command?: (cmd: string, arg: unknown) => unknown;
  /** Its result is the `close` reply. */
  close: () => Promise<unknown>;
}

/**
 * A bench child's whole service: our Server (relay included) on a fresh data directory,
 * with the relay's totals in every `stats` reply; the directory goes with close().
 */
export async function serveBenchServer(dirPrefix: string): Promise<ServedChild> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix));
  const server = await startBenchServer(dataDir);
  return {
    port: server.port,
    stats: () => ({ media: server.mediaStats().totals }),
    close: async () => {
      await server.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function errorText(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}

/**
 * The child end of forkTs: starts the service, sends `ready`, then answers requests
 * (`stats`, `close`, the child's own commands) until told to close, SIGTERM, or the
 * parent going away. `name` (the script's, without .ts) prefixes a fatal error, which
 * exits with code 1.
 */
export function serveChild(name: string, start: () => Promise<ServedChild>): void {
  void (async () => {
    // Before start(): a child that cannot be talked to must not leave a server or data directory behind.
    if (!process.send) throw new Error(`${name}.ts must be forked with an IPC channel (bench/lib.ts forkTs)`);
    const send = (m: ChildMessage, cb?: () => void) => process.send!(m, undefined, {}, cb ? () => cb() : undefined);
    const running = await start();
    let lastElu: EventLoopUtilization = performance.eventLoopUtilization();
    const stalls = new LoopMonitor();
    let closing = false;

    const shutdown = async (): Promise<unknown> => {
      closing = true;
      stalls.stop();
      // A close that hangs must not outlive the bench (exit code 3 tells it apart).
      const t = setTimeout(() => process.exit(3), 10_000);
      t.unref();
      return running.close();
    };

    process.on('message', (m: ChildRequest) => {
      if (!m || m.kind !== 'request') return;
      const reply = (p: Promise<unknown>, after?: () => void) =>
        p.then(
          (result) => send({ kind: 'reply', id: m.id, ok: true, result: result ?? null }, after),
          (e: unknown) => send({ kind: 'reply', id: m.id, ok: false, error: errorText(e) }, after),
        );
      const sp = m.cmd.indexOf(' ');
      const cmd = sp < 0 ? m.cmd : m.cmd.slice(0, sp);
      if (cmd === 'stats') {
        const now = performance.eventLoopUtilization();
        const elu = performance.eventLoopUtilization(now, lastElu);
        lastElu = now;
        const cpu = process.cpuUsage();
        void reply(
          Promise.resolve({
            // The clock of --cpu-prof sample times (microseconds).
            hrtime_us: Number(process.hrtime.bigint() / 1000n),
            cpu_user_us: cpu.user,
            cpu_system_us: cpu.system,
            /** Event-loop utilization since the previous `stats`. */
            elu_since_last: elu.utilization,
            /** Event-loop delay and GC pauses since the previous `stats`. */
            stalls: stalls.take(),
            rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
            ...(running.counters ? { counters: running.counters() } : {}),
            ...running.stats?.(),
          }),
        );
      } else if (cmd === 'close') {
        // Exit normally (not by a signal), so --cpu-prof writes its profile.
        void reply(shutdown(), () => setImmediate(() => process.exit(0)));
      } else if (running.command) {
        const command = running.command;
        // In the executor, so that a throwing command or bad JSON becomes an error reply.
        void reply(new Promise((resolve) => resolve(command(cmd, sp < 0 ? undefined : (JSON.parse(m.cmd.slice(sp + 1)) as unknown)))));
      } else {
        void reply(Promise.reject(new Error(`unknown command ${m.cmd}`)));
      }
    });
    // Bounded: the parent gone (crash, Ctrl-C) means we are done too.
    process.on('disconnect', () => {
      if (closing) return;
      void shutdown().finally(() => process.exit(0));
    });
    process.on('SIGTERM', () => void shutdown().finally(() => process.exit(0)));
    send({ kind: 'ready', port: running.port, pid: process.pid });
  })().catch((e: unknown) => {
    process.stderr.write(`${name}: ${errorText(e)}\n`);
    process.exit(1);
  });
}

// ------------------------------------------------------------ CPU profiles

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface HotFunction {
  function: string;
  where: string;
  self_ms: number;
  self_pct: number;
}

/**
 * Self time per function of a .cpuprofile (written by `node --cpu-prof`), largest
 * first. With `window` (microseconds on the profile's clock, which is the monotonic
 * clock of process.hrtime), only samples taken inside it count.
 */
export function hotFunctions(file: string, top = 20, window?: { fromUs: number; toUs: number }): { total_ms: number; functions: HotFunction[] } {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, CpuProfileNode>();
  for (const n of prof.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  let t = prof.startTime;
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i] ?? 0;
    // A sample's time is the interval that ends at the next sample.
    const dt = prof.timeDeltas[i + 1] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    selfUs.set(prof.samples[i], (selfUs.get(prof.samples[i]) ?? 0) + dt);
    total += dt;
  }
  const agg = new Map<string, { fn: string; where: string; us: number }>();
  for (const [id, us] of selfUs) {
    const cf = byId.get(id)!.callFrame;
    const fn = cf.functionName || '(anonymous)';
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const a = agg.get(key) ?? { fn, where, us: 0 };
    a.us += us;
    agg.set(key, a);
  }
  const functions = [...agg.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((a) => ({ function: a.fn, where: a.where, self_ms: round(a.us / 1000, 1), self_pct: round((100 * a.us) / (total || 1), 1) }));
  return { total_ms: round(total / 1000, 1), functions };
}

function shortUrl(url: string): string {
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length);
  return u.startsWith(REPO_ROOT) ? path.relative(REPO_ROOT, u) : u;
}

/**
 * `count` raw RGB frames of ffmpeg's testsrc2 (the bundled ffmpeg) at w x h, with light
 * temporal noise like a camera sensor's (without it testsrc2 compresses to ~20 KB at
 * 640x480 q80, unlike a real camera). Held in memory, so encode can be timed alone.
 */
export function testsrc2RawFrames(o: { width: number; height: number; count: number; fps?: number; noise?: number }): Promise<Buffer[]> {
  const ffmpegPath = (require('@ffmpeg-installer/ffmpeg') as { path: string }).path;
  const frameBytes = o.width * o.height * 3;
  return new Promise<Buffer[]>((resolve, reject) => {
    const p = spawn(ffmpegPath, [
      '-v', 'error',
      '-f', 'lavfi', '-i', `testsrc2=size=${o.width}x${o.height}:rate=${o.fps ?? 30}`,
      '-vf', `noise=alls=${o.noise ?? 0}:allf=t`,
      '-frames:v', String(o.count),
      '-pix_fmt', 'rgb24', '-f', 'rawvideo', 'pipe:1',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => chunks.push(d));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      if (code !== 0 || all.length !== frameBytes * o.count) reject(new Error(`ffmpeg exited ${code} with ${all.length} bytes: ${err}`));
      else resolve(Array.from({ length: o.count }, (_, i) => all.subarray(i * frameBytes, (i + 1) * frameBytes)));
    });
  });
}

/**
 * Runs a bench's main() bounded in time and exits with its code. On a crash or after
 * `timeoutMs`, `cleanup` (kill children, close clients) runs before exit 1, so a
 * stuck bench never leaves processes behind.
 */
export function runBench(
  name: string,
  main: () => Promise<number>,
  o: { timeoutMs: number; cleanup: (hard: boolean) => Promise<unknown> | void },
): void {
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench:${name}: gave up after ${o.timeoutMs / 1000} s\n`);
    void o.cleanup(true);
    process.exit(1);
  }, o.timeoutMs);
  main().then(
    (code) => {
      clearTimeout(watchdog);
      process.exit(code);
    },
    async (e: unknown) => {
      clearTimeout(watchdog);
      process.stderr.write(`bench:${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      await Promise.resolve(o.cleanup(false)).catch(() => undefined);
      process.exit(1);
    },
  );
}

