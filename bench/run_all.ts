/**
 * `npm run bench`: runs every bench script in bench/ in sequence (each in its own
 * process, output streamed), then prints each one's last line (its `bench:NAME ...`
 * summary). A bench script is any bench/*.ts except this file, lib.ts and *_child.ts
 * helpers. Exits 1 if any bench failed.
 *
 *   npm run bench [-- NAME ...]   only the named benches (e.g. `control`)
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BENCH_DIR, REPO_ROOT } from './lib';

const NOT_BENCHES = new Set(['run_all.ts', 'lib.ts']);
/** Longest a single bench may run before it is killed. */
const BENCH_TIMEOUT_MS = 15 * 60_000;

function benchScripts(): string[] {
  return fs
    .readdirSync(BENCH_DIR)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && !NOT_BENCHES.has(f) && !f.endsWith('_child.ts'))
    .sort();
}

function runOne(file: string): Promise<{ code: number | string; lastLine: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['-r', 'ts-node/register', path.join(BENCH_DIR, file)], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let tail = '';
    proc.stdout.on('data', (d: Buffer) => {
      process.stdout.write(d);
      tail = (tail + d.toString()).slice(-4096);
    });
    const timer = setTimeout(() => proc.kill('SIGKILL'), BENCH_TIMEOUT_MS);
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      const lines = tail.split('\n').filter((l) => l.trim() !== '');
      resolve({ code: code ?? signal ?? -1, lastLine: lines[lines.length - 1] ?? '(no output)' });
    });
  });
}

async function main(): Promise<number> {
  const wanted = process.argv.slice(2);
  const all = benchScripts();
  const scripts = wanted.length ? all.filter((f) => wanted.includes(path.basename(f, '.ts'))) : all;
  if (scripts.length === 0) {
    process.stderr.write(`no bench scripts${wanted.length ? ` named ${wanted.join(', ')}` : ''} in ${BENCH_DIR} (have: ${all.join(', ')})\n`);
    return 1;
  }
  const summary: string[] = [];
  let failed = 0;
  for (const f of scripts) {
    process.stdout.write(`\n=== ${f} ===\n`);
    const { code, lastLine } = await runOne(f);
    if (code !== 0) failed++;
    summary.push(code === 0 ? lastLine : `${lastLine}   [${f} exited ${code}]`);
  }
  process.stdout.write('\n=== summary ===\n' + summary.join('\n') + '\n');
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
