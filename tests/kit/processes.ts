/**
 * Test kit: real server and CLI processes started with ts-node from the repo root.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../..');

/** Whether a TCP connect to 127.0.0.1:port is refused (nothing listens there). */
export function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/** A port that was free a moment ago (bind 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = a && typeof a === 'object' ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface RunningProcess {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or the signal name) once its output is all read. */
  exited: Promise<number | string>;
  /** Resolves once stdout or stderr has matched the pattern; rejects if the process exits first. */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<void>;
  /** Types a line on the process's stdin. */
  type: (line: string) => void;
}

/** Runs `node -r ts-node/register SCRIPT ...args` in the repo root, stdin piped. */
export function runTs(script: string, args: string[], env: NodeJS.ProcessEnv = {}): RunningProcess {
  const proc = spawn(process.execPath, ['-r', 'ts-node/register', script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters = new Set<{ re: RegExp; resolve: () => void }>();
  const check = () => {
    for (const w of waiters) {
      if (w.re.test(out) || w.re.test(err)) {
        waiters.delete(w);
        w.resolve();
      }
    }
  };
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    check();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    check();
  });
  proc.stdin!.on('error', () => undefined);
  const exited = new Promise<number | string>((resolve) => proc.once('close', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    type: (line) => proc.stdin!.write(line + '\n'),
    waitFor: (re, timeoutMs = 20_000) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`timed out waiting for ${re}; stdout:\n${out}\nstderr:\n${err}`));
        }, timeoutMs);
        const w = {
          re,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        waiters.add(w);
        check();
        void exited.then(() => {
          if (waiters.delete(w)) {
            clearTimeout(timer);
            reject(new Error(`the process exited before ${re} appeared; stdout:\n${out}\nstderr:\n${err}`));
          }
        });
      }),
  };
}

/** Starts run_server.ts on a free port; resolves once it is listening. */
export async function startServerProcess(dataDir: string, extra: string[] = [], port?: number): Promise<RunningProcess & { port: number }> {
  const p = port ?? (await freePort());
  // Media and file ports 0 (free ones) unless the test names them: parallel tests must not collide on 8889-8892.
  const media = ['video', 'audio', 'screen', 'feedback', 'file'].flatMap((k) => (extra.includes(`--${k}-port`) ? [] : [`--${k}-port`, '0']));
  const rp = runTs('run_server.ts', ['--host', '127.0.0.1', '--port', String(p), '--data-dir', dataDir, '--log-level', 'warn', ...media, ...extra]);
  await rp.waitFor(/listening on/);
  return { ...rp, port: p };
}

/** Kills (SIGKILL) every process of `procs` still running and waits for each; empties the list. */
export async function killAll(procs: RunningProcess[]): Promise<void> {
  for (const p of procs.splice(0)) {
    if (p.proc.exitCode === null && p.proc.signalCode === null) {
      p.proc.kill('SIGKILL');
      await p.exited;
    }
  }
}

/** run_client.ts as a child process, with no password taken from the environment unless given. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): RunningProcess {
  return runTs('run_client.ts', args, { LVC_SERVER_PASSWORD: '', LVC_ROOM_PASSWORD: '', LVC_ADMIN_PASSWORD: '', ...env });
}

