import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { checkAll, DEBIAN_PACKAGES, debianPackageNames, type CheckResult } from '../../setup';

const ROOT = path.resolve(__dirname, '..', '..');
const IS_CI = process.env.CI === 'true' || process.env.CI === '1';

/** Run setup.ts the way a user would (through ts-node), with a bounded time. */
function runSetup(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-r', 'ts-node/register', 'setup.ts', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true' },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function byId(results: CheckResult[], id: string): CheckResult {
  const r = results.find((x) => x.id === id);
  if (!r) throw new Error(`checkAll() has no result with id '${id}'; ids: ${results.map((x) => x.id).join(', ')}`);
  return r;
}

describe('setup.ts', () => {
  let results: CheckResult[] = [];

  beforeAll(() => {
    results = checkAll();
  }, 120_000);

  it('exports one Debian package list with a purpose for each package', () => {
    const names = debianPackageNames();
    expect(names).toEqual(
      expect.arrayContaining(['chromium', 'xvfb', 'pulseaudio', 'pulseaudio-utils', 'libasound2-plugins', 'espeak-ng', 'sox', 'tmux']),
    );
    expect(new Set(names).size).toBe(names.length);
    for (const p of DEBIAN_PACKAGES) expect(p.purpose.length).toBeGreaterThan(10);
    expect(debianPackageNames({ noBrowser: true })).not.toContain('chromium');
  });

  it('checkAll() reports Node.js and better-sqlite3 OK, with structured results', () => {
    const node = byId(results, 'node');
    expect(node.status).toBe('OK');
    expect(node.need).toBe('required');
    expect(node.detail).toContain(process.versions.node);

    const sqlite = byId(results, 'better-sqlite3');
    expect(sqlite.status, `${sqlite.detail} / ${sqlite.fix}`).toBe('OK');
    expect(sqlite.need).toBe('required');
    expect(sqlite.detail).toMatch(/SQLite \d+\.\d+/);

    expect(byId(results, 'node_modules').status).toBe('OK');
    for (const r of results) {
      expect(['OK', 'MISSING', 'FAILED', 'SKIPPED']).toContain(r.status);
      expect(['required', 'optional', 'tests']).toContain(r.need);
      expect(r.without.length).toBeGreaterThan(0);
      if (r.status === 'MISSING' || r.status === 'FAILED') expect(r.fix, `${r.id} has no next step`).toBeTruthy();
    }
  });

  it('--help prints usage and exits 0', () => {
    const r = runSetup(['--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Usage: npx ts-node setup\.ts/);
    for (const flag of ['--check', '--no-browser', '--data-dir', '--quiet', '--help']) expect(r.stdout).toContain(flag);
  }, 120_000);

  it('an unknown flag exits 1 and says what to do', () => {
    const r = runSetup(['--no-such-flag']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--help/);
  }, 120_000);

  describe('--check --data-dir', () => {
    let tmp = '';
    beforeAll(() => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lvc-setup-test-'));
    });
    afterAll(() => {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    it('creates the data directory, installs nothing and exits 0', () => {
      const dir = path.join(tmp, 'x');
      expect(fs.existsSync(dir)).toBe(false);
      const r = runSetup(['--check', '--data-dir', dir]);
      expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(fs.statSync(dir).isDirectory()).toBe(true);
      expect(r.stdout).toContain('(check only)');
      expect(r.stdout).not.toContain('Installing as root');
      expect(r.stdout).not.toContain('Debian packages installed.');
      expect(r.stdout).toMatch(/^OK\s+data directory\s+\[required\]/m);
      expect(r.stdout).toMatch(/^Summary: .*READY/m);
    }, 120_000);
  });

  it('under CI=true the test-only parts (pulseaudio, Xvfb, espeak-ng, chromium) are OK', (ctx) => {
    if (!IS_CI) {
      const reason =
        'SKIPPED (not CI): CI is not "true", so the test-only system parts may be missing here. ' +
        'Install them with `npx ts-node setup.ts` as root; under CI=true this test fails if they are missing.';
      console.warn(`\n*** setup.test.ts: ${reason}\n`);
      ctx.skip(reason);
    }
    for (const id of ['pulseaudio', 'alsa-pulse', 'xvfb', 'espeak-ng', 'sox', 'tmux', 'browser']) {
      const r = byId(results, id);
      expect(r.status, `${r.name}: ${r.detail} -- next: ${r.fix ?? ''}`).toBe('OK');
    }
    expect(String(byId(results, 'browser').detail)).toMatch(/chrom|edge|brave/i);
  });
});
