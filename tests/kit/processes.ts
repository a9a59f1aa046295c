/**
 * Test kit: real server and CLI processes started with ts-node from the repo root.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../..');

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
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
  /** Resolves once stdout or stderr has matched the pattern. */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<void>;
}

/** Runs `node -r ts-node/register SCRIPT ...args` in the repo root. */
export function runTs(script: string, args: string[], env: NodeJS.ProcessEnv = {}): RunningProcess {
  const proc = spawn(process.execPath, ['-r', 'ts-node/register', script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const check = () => {
    for (const w of [...waiters]) {
      if (w.re.test(out) || w.re.test(err)) {
        waiters.splice(waiters.indexOf(w), 1);
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
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor: (re, timeoutMs = 20_000) =>
      new Promise<void>((resolve, reject) => {
        const w = { re, resolve };
        waiters.push(w);
        check();
        const t = setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) waiters.splice(i, 1);
          reject(new Error(`timed out waiting for ${re} in output:\n${out}\n${err}`));
        }, timeoutMs);
        void exited.then(() => {
          if (waiters.includes(w)) {
            clearTimeout(t);
            waiters.splice(waiters.indexOf(w), 1);
            reject(new Error(`process exited before ${re} appeared:\n${out}\n${err}`));
          }
        });
        void Promise.resolve().then(() => {
          if (!waiters.includes(w)) clearTimeout(t);
        });
      }),
  };
}

/** Starts run_server.ts on a free port; resolves once it is listening. */
export async function startServerProcess(dataDir: string, extra: string[] = [], port?: number): Promise<RunningProcess & { port: number }> {
  const p = port ?? (await freePort());
  const rp = runTs('run_server.ts', ['--host', '127.0.0.1', '--port', String(p), '--data-dir', dataDir, '--log-level', 'warn', ...extra]);
  await rp.waitFor(/listening on/);
  return { ...rp, port: p };
}
