/**
 * LAN Video Call — system check and installer.
 *
 *   npx ts-node setup.ts [--check] [--no-browser] [--data-dir DIR] [--quiet]
 *   npm run setup -- [flags]
 *
 * Checks every system part the project uses and prints one line per part with
 * OK / MISSING / FAILED (or SKIPPED) and what still works without it. When run as
 * root it installs the missing Debian packages (apt-get); otherwise it prints the
 * exact command to run with sudo.
 *
 * Only Node's own modules are imported at the top of this file, so it still runs
 * (and says "run npm ci") when node_modules is missing. Every project dependency
 * is checked in a child process, so a native addon that crashes cannot take the
 * checker down with it.
 *
 * Other code may import DEBIAN_PACKAGES and checkAll() from here.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

// ---------------------------------------------------------------------------
// Debian packages: the one list (used by .ci/run through this script, and by
// any code that wants to tell the user what to install).
// ---------------------------------------------------------------------------

export type PackageRole = 'browser' | 'tests';

export interface DebianPackage {
  /** Debian package name, as given to apt-get install. */
  readonly name: string;
  /** What the project uses it for. */
  readonly purpose: string;
  /** 'browser': the optional desktop window (and browser tests); 'tests': needed by the test suite only. */
  readonly role: PackageRole;
}

export const DEBIAN_PACKAGES: readonly DebianPackage[] = Object.freeze([
  { name: 'chromium', role: 'browser', purpose: 'desktop app window and browser end-to-end tests (/usr/bin/chromium)' },
  { name: 'xvfb', role: 'tests', purpose: 'virtual X display (Xvfb) for screen-share capture and visible-window tests' },
  { name: 'xloadimage', role: 'tests', purpose: 'puts a known image on the Xvfb root window for screen-share capture tests' },
  { name: 'pulseaudio', role: 'tests', purpose: 'virtual microphone and speakers (null sinks) for audio tests' },
  { name: 'pulseaudio-utils', role: 'tests', purpose: 'pactl, paplay, parec: route, play and record test audio' },
  { name: 'libasound2-plugins', role: 'tests', purpose: 'ALSA pulse plugin, so PortAudio (naudiodon) reaches PulseAudio' },
  { name: 'espeak-ng', role: 'tests', purpose: 'speech-like test audio (espeak-ng -w x.wav)' },
  { name: 'sox', role: 'tests', purpose: 'audio file conversion and analysis in tests' },
  { name: 'tmux', role: 'tests', purpose: 'drives the terminal client UI in tests (send-keys, capture-pane)' },
] as const);

/** Names of the Debian packages, optionally without the (large) browser. */
export function debianPackageNames(opts: { noBrowser?: boolean } = {}): string[] {
  return DEBIAN_PACKAGES.filter((p) => !(opts.noBrowser && p.role === 'browser')).map((p) => p.name);
}

/** Browser commands looked up on PATH, in order, when LVC_BROWSER is not set. */
export const BROWSER_COMMANDS: readonly string[] = Object.freeze([
  'chromium',
  'chromium-browser',
  'google-chrome',
  'google-chrome-stable',
  'microsoft-edge',
  'microsoft-edge-stable',
  'brave',
  'brave-browser',
]);

// ---------------------------------------------------------------------------
// Result types
// ---------------------------------------------------------------------------

export type CheckStatus = 'OK' | 'MISSING' | 'FAILED' | 'SKIPPED';
/** required: the app does not run without it; optional: a feature is lost; tests: only the test suite needs it. */
export type CheckNeed = 'required' | 'optional' | 'tests';

export interface CheckResult {
  /** Stable id, e.g. 'node', 'better-sqlite3', 'ffmpeg', 'browser', 'xvfb'. */
  readonly id: string;
  /** Human label. */
  readonly name: string;
  readonly status: CheckStatus;
  readonly need: CheckNeed;
  /** What was found (version, path, device list) or what went wrong. */
  readonly detail: string;
  /** What works (and what does not) without this part. */
  readonly without: string;
  /** What to do next when the status is not OK. */
  readonly fix?: string;
  /** Debian package(s) that provide this part, if any. */
  readonly debianPackages?: readonly string[];
  /** Extra structured data (versions, device names, paths). */
  readonly data?: Readonly<Record<string, unknown>>;
}

export interface CheckOptions {
  /** Repository root (where package.json and node_modules live). Default: the folder of this file. */
  root?: string;
  /** Skip the browser check (reported as SKIPPED). */
  noBrowser?: boolean;
  /** Environment to read PATH and LVC_BROWSER from. Default: process.env. */
  env?: NodeJS.ProcessEnv;
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

const REPO_ROOT = __dirname;

function run(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: opts.timeoutMs ?? 20_000,
    killSignal: 'SIGKILL',
    maxBuffer: 16 * 1024 * 1024,
  });
}

/** One-line description of why a child process did not succeed. */
function describeFailure(r: SpawnSyncReturns<string>, what: string): string {
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ETIMEDOUT') return `${what} did not finish in time (killed)`;
    return `${what} could not start: ${r.error.message}`;
  }
  if (r.signal) return `${what} was killed by ${r.signal}`;
  const lastLines = `${r.stderr ?? ''}\n${r.stdout ?? ''}`
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('ALSA lib') && !l.startsWith('at '))
    .slice(-2)
    .join(' | ');
  return `${what} exited with code ${r.status}${lastLines ? `: ${lastLines}` : ''}`;
}

function firstLine(s: string | null | undefined): string {
  return (s ?? '').split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
}

function isExecutableFile(p: string): boolean {
  try {
    const st = fs.statSync(p);
    if (!st.isFile()) return false;
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Find a command on PATH (like `command -v`); a name with a slash is taken as a path. */
export function which(cmd: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (cmd.includes('/')) return isExecutableFile(cmd) ? path.resolve(cmd) : null;
  const dirs = (env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, cmd);
    if (isExecutableFile(p)) return p;
  }
  return null;
}

/** Whether a Debian package is installed, per `dpkg -s`. null when dpkg is not available. */
export function dpkgInstalled(pkg: string): boolean | null {
  if (!which('dpkg')) return null;
  const r = run('dpkg', ['-s', pkg], { timeoutMs: 15_000 });
  if (r.status !== 0) return false;
  return /^Status:\s+install ok installed\s*$/m.test(r.stdout ?? '');
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Run a small script in a child `node` with the repo root as cwd (so require() finds node_modules). */
function nodeProbe(root: string, script: string, timeoutMs = 30_000): SpawnSyncReturns<string> {
  return run(process.execPath, ['-e', script], { cwd: root, timeoutMs });
}

function parseJsonLine(out: string | null | undefined): unknown {
  const line = (out ?? '').split('\n').reverse().find((l) => l.trim().startsWith('{'));
  if (!line) return undefined;
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

const TEST_ONLY = 'tests only: the app itself runs without it';

// ---------------------------------------------------------------------------
// Individual checks
// ---------------------------------------------------------------------------

export function checkNode(): CheckResult {
  const v = process.versions.node;
  const major = Number(v.split('.')[0]);
  const ok = major >= 20;
  return {
    id: 'node',
    name: 'Node.js >= 20',
    need: 'required',
    status: ok ? 'OK' : 'FAILED',
    detail: `v${v}${ok ? '' : ' is too old'}`,
    without: 'nothing runs',
    fix: ok ? undefined : 'install Node.js 20 or newer (e.g. from nodejs.org or NodeSource), then run `npm ci`',
    data: { version: v, major },
  };
}

export function checkNodeModules(root: string): CheckResult {
  const base = {
    id: 'node_modules',
    name: 'node_modules',
    need: 'required' as const,
    without: 'nothing runs',
  };
  let deps: string[] = [];
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
    };
    deps = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})];
  } catch (e) {
    return {
      ...base,
      status: 'FAILED',
      detail: `cannot read ${path.join(root, 'package.json')}: ${(e as Error).message}`,
      fix: 'run setup from the repository root of a complete checkout',
    };
  }
  if (!fs.existsSync(path.join(root, 'node_modules'))) {
    return {
      ...base,
      status: 'MISSING',
      detail: `no ${path.join(root, 'node_modules')}`,
      fix: `run \`npm ci\` in ${root}`,
    };
  }
  const missing = deps.filter((d) => !fs.existsSync(path.join(root, 'node_modules', d, 'package.json')));
  if (missing.length > 0) {
    return {
      ...base,
      status: 'MISSING',
      detail: `not installed: ${missing.join(', ')}`,
      fix: `run \`npm ci\` in ${root}`,
      data: { missing },
    };
  }
  return { ...base, status: 'OK', detail: `${deps.length} packages from package.json installed`, data: { count: deps.length } };
}

export function checkBetterSqlite3(root: string): CheckResult {
  const base = {
    id: 'better-sqlite3',
    name: 'better-sqlite3',
    need: 'required' as const,
    without: 'the server cannot store users, rooms, chat or recordings index',
  };
  const script = `
    const D = require('better-sqlite3');
    const db = new D(':memory:');
    db.exec('CREATE TABLE t (x INTEGER)');
    db.prepare('INSERT INTO t (x) VALUES (?)').run(42);
    const row = db.prepare('SELECT x, sqlite_version() AS v FROM t').get();
    db.close();
    if (!row || row.x !== 42) throw new Error('in-memory round trip returned ' + JSON.stringify(row));
    console.log(JSON.stringify({ pkg: require('better-sqlite3/package.json').version, sqlite: row.v }));
  `;
  const r = nodeProbe(root, script);
  const info = parseJsonLine(r.stdout) as { pkg?: string; sqlite?: string } | undefined;
  if (r.status === 0 && info?.sqlite) {
    return {
      ...base,
      status: 'OK',
      detail: `better-sqlite3 ${info.pkg}, SQLite ${info.sqlite}, in-memory DB opened`,
      data: { version: info.pkg, sqlite: info.sqlite },
    };
  }
  const text = `${r.stderr ?? ''}${r.stdout ?? ''}`;
  let fix = 'run `npm ci`; if it still fails, run `npm rebuild better-sqlite3` (python3, make and g++ are needed to build it)';
  if (/Cannot find module 'better-sqlite3'/.test(text)) fix = `run \`npm ci\` in ${root}`;
  else if (r.signal === 'SIGSEGV') fix = 'better-sqlite3 13+ crashes on Node 20: keep better-sqlite3 at ^12 in package.json, then `npm ci`';
  else if (/bindings|NODE_MODULE_VERSION|invalid ELF/i.test(text))
    fix = 'the native addon is missing or built for another Node: run `npm rebuild better-sqlite3` (its install script must be allowed in package.json "allowScripts")';
  return { ...base, status: 'FAILED', detail: describeFailure(r, 'opening an in-memory DB'), fix };
}

export function checkFfmpeg(root: string): CheckResult {
  const base = {
    id: 'ffmpeg',
    name: 'ffmpeg (bundled)',
    need: 'optional' as const,
    without: 'chat, files and audio calls work; camera/screen video and recording do not',
  };
  const loc = nodeProbe(root, `console.log(JSON.stringify({ path: require('@ffmpeg-installer/ffmpeg').path }))`);
  const info = parseJsonLine(loc.stdout) as { path?: string } | undefined;
  if (loc.status !== 0 || !info?.path) {
    return {
      ...base,
      status: 'MISSING',
      detail: describeFailure(loc, 'locating the @ffmpeg-installer binary'),
      fix: 'run `npm ci` (package.json "allowScripts" must allow @ffmpeg-installer/linux-x64)',
    };
  }
  const r = run(info.path, ['-hide_banner', '-version'], { timeoutMs: 20_000 });
  if (r.status !== 0) {
    return {
      ...base,
      status: 'FAILED',
      detail: describeFailure(r, `${info.path} -version`),
      fix: `check that ${info.path} is executable (chmod +x) and matches this CPU; else reinstall with \`npm ci\``,
      data: { path: info.path },
    };
  }
  const version = firstLine(r.stdout).replace(/\s*Copyright.*$/, '');
  return { ...base, status: 'OK', detail: `${version} (${info.path})`, data: { path: info.path, version } };
}

/** The Opus codec (@discordjs/opus, a native libopus build): encodes and decodes one 20 ms frame. */
export function checkOpus(root: string): CheckResult {
  const base = { id: 'opus', name: 'Opus codec (@discordjs/opus)', need: 'required' as const, without: 'the client cannot send or play audio, and does not start' };
  const script = `
    const { OpusEncoder } = require('@discordjs/opus');
    const e = new OpusEncoder(48000, 1);
    const packet = e.encode(Buffer.alloc(1920));
    console.log(JSON.stringify({ bytes: packet.length, decoded: e.decode(packet).length }));
  `;
  const r = nodeProbe(root, script, 30_000);
  const info = parseJsonLine(r.stdout) as { bytes?: number; decoded?: number } | undefined;
  if (r.status !== 0 || info?.decoded !== 1920) {
    return {
      ...base,
      status: 'FAILED',
      detail: describeFailure(r, 'loading @discordjs/opus'),
      fix: 'run `npm rebuild @discordjs/opus` (its install script must be allowed in package.json "allowScripts"; python3, make and g++ build libopus)',
    };
  }
  return { ...base, status: 'OK', detail: `encodes a 20 ms frame into ${info.bytes} bytes and decodes it` };
}

export function checkNaudiodon(root: string): CheckResult {
  const base = {
    id: 'naudiodon',
    name: 'naudiodon / PortAudio',
    need: 'optional' as const,
    without: 'video, screen sharing, chat and files work; no microphone or speakers',
  };
  const script = `
    const n = require('naudiodon');
    const devs = n.getDevices().map((d) => ({ id: d.id, name: d.name, in: d.maxInputChannels, out: d.maxOutputChannels, api: d.hostAPIName }));
    console.log(JSON.stringify({ devices: devs }));
  `;
  const r = nodeProbe(root, script, 30_000);
  const info = parseJsonLine(r.stdout) as { devices?: { name: string; in: number; out: number }[] } | undefined;
  if (r.status !== 0 || !info?.devices) {
    const text = `${r.stderr ?? ''}`;
    const fix = /Cannot find module 'naudiodon'/.test(text)
      ? `run \`npm ci\` in ${root}`
      : 'run `npm rebuild naudiodon` (its install script must be allowed in package.json "allowScripts"; python3, make and g++ build it)';
    return { ...base, status: 'FAILED', detail: describeFailure(r, 'loading naudiodon'), fix };
  }
  const devices = info.devices;
  const names = devices.map((d) => `${d.name} (in ${d.in}/out ${d.out})`);
  if (devices.length === 0) {
    return {
      ...base,
      status: 'MISSING',
      detail: 'naudiodon loads, but PortAudio lists 0 devices',
      fix: 'attach a sound card, or start PulseAudio (`pulseaudio --start`; Debian packages pulseaudio and libasound2-plugins give PortAudio the devices `pulse` and `default`), then run setup again',
      data: { count: 0, devices: [] },
    };
  }
  return {
    ...base,
    status: 'OK',
    detail: `${devices.length} device(s): ${names.join(', ')}`,
    data: { count: devices.length, devices: devices.map((d) => d.name) },
  };
}

export function checkBrowser(env: NodeJS.ProcessEnv, noBrowser: boolean): CheckResult {
  const base = {
    id: 'browser',
    name: 'Chromium-family browser',
    need: 'optional' as const,
    without: 'server, terminal client and calls work; the desktop window does not open (and browser tests cannot run)',
    debianPackages: ['chromium'],
  };
  if (noBrowser) {
    return { ...base, status: 'SKIPPED', detail: 'skipped (--no-browser)', fix: 'run setup without --no-browser to check and install it' };
  }
  const override = env.LVC_BROWSER?.trim();
  let found: string | null = null;
  let via = '';
  if (override) {
    found = which(override, env);
    via = 'LVC_BROWSER';
    if (!found) {
      return {
        ...base,
        status: 'FAILED',
        detail: `LVC_BROWSER=${override} is not an executable file or a command on PATH`,
        fix: 'set LVC_BROWSER to the full path of a Chromium-family browser (e.g. /usr/bin/chromium), or unset it',
      };
    }
  } else {
    for (const c of BROWSER_COMMANDS) {
      found = which(c, env);
      if (found) {
        via = 'PATH';
        break;
      }
    }
    if (!found) {
      return {
        ...base,
        status: 'MISSING',
        detail: `none of ${BROWSER_COMMANDS.join(', ')} on PATH`,
        fix: 'install Debian package chromium (setup does this as root), or set LVC_BROWSER=/path/to/browser',
      };
    }
  }
  const r = run(found, ['--version'], { timeoutMs: 30_000, env });
  if (r.status !== 0) {
    return {
      ...base,
      status: 'FAILED',
      detail: describeFailure(r, `${found} --version`),
      fix: 'reinstall the browser (Debian: apt-get install --reinstall chromium) or point LVC_BROWSER at another one',
      data: { path: found, via },
    };
  }
  const version = firstLine(r.stdout);
  return { ...base, status: 'OK', detail: `${version} (${found}, via ${via})`, data: { path: found, version, via } };
}

/** A test-only part that is one or more commands on PATH. */
function checkCommands(
  id: string,
  name: string,
  cmds: readonly string[],
  pkgs: readonly string[],
  env: NodeJS.ProcessEnv,
): CheckResult {
  const found: Record<string, string> = {};
  const missing: string[] = [];
  for (const c of cmds) {
    const p = which(c, env);
    if (p) found[c] = p;
    else missing.push(c);
  }
  const base = { id, name, need: 'tests' as const, without: TEST_ONLY, debianPackages: pkgs };
  if (missing.length > 0) {
    return {
      ...base,
      status: 'MISSING',
      detail: `not on PATH: ${missing.join(', ')}`,
      fix: `install Debian package(s) ${pkgs.join(' ')} (setup does this as root)`,
      data: { found, missing },
    };
  }
  return { ...base, status: 'OK', detail: cmds.map((c) => found[c]).join(', '), data: { found } };
}

/** Where Debian and other distributions put ALSA plugins. */
function alsaPluginDirs(): string[] {
  const dirs = new Set<string>();
  try {
    for (const e of fs.readdirSync('/usr/lib')) {
      if (e.endsWith('-linux-gnu')) dirs.add(path.join('/usr/lib', e, 'alsa-lib'));
    }
  } catch {
    /* no /usr/lib: not Linux */
  }
  for (const d of ['/usr/lib/x86_64-linux-gnu/alsa-lib', '/usr/lib/aarch64-linux-gnu/alsa-lib', '/usr/lib/alsa-lib', '/usr/lib64/alsa-lib']) {
    dirs.add(d);
  }
  return [...dirs];
}

export function checkAlsaPulsePlugin(): CheckResult {
  const base = {
    id: 'alsa-pulse',
    name: 'ALSA pulse plugin',
    need: 'tests' as const,
    without: `${TEST_ONLY} (PortAudio then cannot reach PulseAudio's virtual devices)`,
    debianPackages: ['libasound2-plugins'],
  };
  for (const d of alsaPluginDirs()) {
    const p = path.join(d, 'libasound_module_pcm_pulse.so');
    if (fs.existsSync(p)) return { ...base, status: 'OK', detail: p, data: { path: p } };
  }
  return {
    ...base,
    status: 'MISSING',
    detail: 'libasound_module_pcm_pulse.so not found in any alsa-lib folder',
    fix: 'install Debian package libasound2-plugins (setup does this as root)',
  };
}

/**
 * Check every system part. Never installs anything and never throws: each part
 * becomes one CheckResult.
 */
export function checkAll(opts: CheckOptions = {}): CheckResult[] {
  const root = path.resolve(opts.root ?? REPO_ROOT);
  const env = opts.env ?? process.env;
  const guard = (id: string, name: string, need: CheckNeed, f: () => CheckResult): CheckResult => {
    try {
      return f();
    } catch (e) {
      return {
        id,
        name,
        need,
        status: 'FAILED',
        detail: `check crashed: ${e instanceof Error ? e.message : String(e)}`,
        without: need === 'required' ? 'the app may not run' : 'see the other lines',
        fix: 'report this as a bug in setup.ts, with the message above',
      };
    }
  };
  return [
    guard('node', 'Node.js >= 20', 'required', () => checkNode()),
    guard('node_modules', 'node_modules', 'required', () => checkNodeModules(root)),
    guard('better-sqlite3', 'better-sqlite3', 'required', () => checkBetterSqlite3(root)),
    guard('ffmpeg', 'ffmpeg (bundled)', 'optional', () => checkFfmpeg(root)),
    guard('opus', 'Opus codec (@discordjs/opus)', 'required', () => checkOpus(root)),
    guard('naudiodon', 'naudiodon / PortAudio', 'optional', () => checkNaudiodon(root)),
    guard('browser', 'Chromium-family browser', 'optional', () => checkBrowser(env, !!opts.noBrowser)),
    guard('xvfb', 'Xvfb', 'tests', () => checkCommands('xvfb', 'Xvfb', ['Xvfb'], ['xvfb'], env)),
    guard('xloadimage', 'xloadimage', 'tests', () => checkCommands('xloadimage', 'xloadimage', ['xloadimage'], ['xloadimage'], env)),
    guard('pulseaudio', 'PulseAudio', 'tests', () =>
      checkCommands('pulseaudio', 'PulseAudio', ['pulseaudio', 'pactl', 'paplay', 'parec'], ['pulseaudio', 'pulseaudio-utils'], env),
    ),
    guard('alsa-pulse', 'ALSA pulse plugin', 'tests', () => checkAlsaPulsePlugin()),
    guard('espeak-ng', 'espeak-ng', 'tests', () => checkCommands('espeak-ng', 'espeak-ng', ['espeak-ng'], ['espeak-ng'], env)),
    guard('sox', 'sox', 'tests', () => checkCommands('sox', 'sox', ['sox'], ['sox'], env)),
    guard('tmux', 'tmux', 'tests', () => checkCommands('tmux', 'tmux', ['tmux'], ['tmux'], env)),
  ];
}

// ---------------------------------------------------------------------------
// Data directory
// ---------------------------------------------------------------------------

export function ensureDataDir(dir: string): CheckResult {
  const abs = path.resolve(dir);
  const base = { id: 'data-dir', name: 'data directory', need: 'required' as const, without: 'the server has nowhere to keep its database and files' };
  try {
    const existed = fs.existsSync(abs);
    fs.mkdirSync(abs, { recursive: true });
    const probe = path.join(abs, `.setup-write-test-${process.pid}`);
    fs.writeFileSync(probe, 'ok');
    fs.unlinkSync(probe);
    return { ...base, status: 'OK', detail: `${abs} (${existed ? 'exists' : 'created'}, writable)`, data: { path: abs, created: !existed } };
  } catch (e) {
    return {
      ...base,
      status: 'FAILED',
      detail: `${abs}: ${(e as Error).message}`,
      fix: 'choose a writable folder with --data-dir DIR, or fix the permissions of this one',
      data: { path: abs },
    };
  }
}

// ---------------------------------------------------------------------------
// Installing Debian packages
// ---------------------------------------------------------------------------

export interface InstallPlan {
  /** Packages that dpkg reports as not installed (and that are wanted). */
  missing: string[];
  /** false when dpkg is not available (not a Debian-family system). */
  dpkgAvailable: boolean;
  /** Packages not installed on purpose, with the reason. */
  skipped: { name: string; reason: string }[];
}

export function planInstall(opts: { noBrowser?: boolean; browserFound?: string | null } = {}): InstallPlan {
  const skipped: InstallPlan['skipped'] = [];
  const missing: string[] = [];
  const dpkgAvailable = which('dpkg') !== null;
  for (const p of DEBIAN_PACKAGES) {
    if (p.role === 'browser' && opts.noBrowser) {
      skipped.push({ name: p.name, reason: '--no-browser' });
      continue;
    }
    if (!dpkgAvailable) {
      missing.push(p.name);
      continue;
    }
    if (dpkgInstalled(p.name)) continue;
    if (p.role === 'browser' && opts.browserFound) {
      skipped.push({ name: p.name, reason: `another browser is in use: ${opts.browserFound}` });
      continue;
    }
    missing.push(p.name);
  }
  return { missing, dpkgAvailable, skipped };
}

export function aptCommands(pkgs: readonly string[], sudo: boolean): string {
  const s = sudo ? 'sudo ' : '';
  return `${s}apt-get update && ${s}env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
}

const APT_OPTS = [
  '-o', 'DPkg::Lock::Timeout=600', // wait for another apt/dpkg instead of failing at once
  '-o', 'Dpkg::Options::=--force-confdef',
  '-o', 'Dpkg::Options::=--force-confold',
];

function aptGet(args: string[], quiet: boolean): { ok: boolean; message: string } {
  const r = spawnSync('apt-get', [...APT_OPTS, ...args], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a' },
    stdio: quiet ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'inherit', 'inherit'],
    encoding: 'utf8',
    timeout: 45 * 60_000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status === 0) return { ok: true, message: '' };
  if (quiet) {
    process.stderr.write(r.stdout ?? '');
    process.stderr.write(r.stderr ?? '');
  }
  return { ok: false, message: describeFailure(r, `apt-get ${args[0]}`) };
}

/** apt-get update once, then install. Returns an error message or null. */
export function installDebianPackages(pkgs: readonly string[], quiet: boolean): string | null {
  if (pkgs.length === 0) return null;
  if (!which('apt-get')) return 'apt-get is not available: install the packages above with your system package manager';
  const up = aptGet(['update'], quiet);
  if (!up.ok) return `${up.message}; check the network/apt sources (/etc/apt/sources.list*), then run setup again`;
  const inst = aptGet(['install', '-y', '--no-install-recommends', ...pkgs], quiet);
  if (!inst.ok) return `${inst.message}; run \`${aptCommands(pkgs, false)}\` by hand to see the full error, then run setup again`;
  return null;
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

const NEED_LABEL: Record<CheckNeed, string> = { required: 'required', optional: 'optional', tests: 'tests' };

export function formatResult(r: CheckResult): string {
  const status = r.status.padEnd(7);
  const name = r.name.padEnd(24);
  const need = `[${NEED_LABEL[r.need]}]`.padEnd(10);
  let line = `${status} ${name} ${need} ${r.detail}`;
  if (r.status !== 'OK') {
    line += ` -- without it: ${r.without}`;
    if (r.fix) line += ` -- next: ${r.fix}`;
  }
  return line;
}

const USAGE = `LAN Video Call setup: check (and install) everything the project needs.

Usage: npx ts-node setup.ts [options]      (or: npm run setup -- [options])

Options:
  --check           report only; install nothing
  --no-browser      skip the Chromium browser check and install (it is large)
  --data-dir DIR    data directory to create (default: ./data)
  --quiet           print only parts that are not OK, and the summary
  -h, --help        show this help

Checks: Node.js >= 20, node_modules, better-sqlite3 (required); bundled ffmpeg,
naudiodon/PortAudio, a Chromium-family browser (optional; LVC_BROWSER=/path
overrides the browser); Xvfb, PulseAudio (pactl, paplay, parec), the ALSA pulse
plugin, espeak-ng, sox, tmux (tests only).

As root, missing Debian packages are installed with apt-get
(${debianPackageNames().join(' ')});
otherwise the exact sudo command is printed.

Exit code: 0 when every required part is OK (optional parts only warn),
1 otherwise (or when a package install failed, or on a bad option).
`;

interface Flags {
  help: boolean;
  check: boolean;
  noBrowser: boolean;
  dataDir: string;
  quiet: boolean;
}

function parseFlags(argv: string[]): Flags {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h', default: false },
      check: { type: 'boolean', default: false },
      'no-browser': { type: 'boolean', default: false },
      'data-dir': { type: 'string', default: './data' },
      quiet: { type: 'boolean', short: 'q', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  return {
    help: !!values.help,
    check: !!values.check,
    noBrowser: !!values['no-browser'],
    dataDir: String(values['data-dir']),
    quiet: !!values.quiet,
  };
}

/** Run setup; returns the process exit code. */
export function main(argv: string[] = process.argv.slice(2)): number {
  let flags: Flags;
  try {
    flags = parseFlags(argv);
  } catch (e) {
    process.stderr.write(`setup: ${(e as Error).message}\nRun \`npx ts-node setup.ts --help\` for the options.\n`);
    return 1;
  }
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!flags.dataDir) {
    process.stderr.write('setup: --data-dir needs a folder name, e.g. --data-dir ./data\n');
    return 1;
  }
  const say = (s: string): void => {
    if (!flags.quiet) process.stdout.write(`${s}\n`);
  };

  say(`LAN Video Call setup (${flags.check ? 'check only' : 'check and install'}) in ${REPO_ROOT}`);

  // 1. Debian packages: install what is missing (root), or say how.
  let installError: string | null = null;
  const browserBefore = flags.noBrowser ? null : checkBrowser(process.env, false);
  const plan = planInstall({
    noBrowser: flags.noBrowser,
    browserFound: browserBefore?.status === 'OK' ? String(browserBefore.data?.path ?? '') : null,
  });
  for (const s of plan.skipped) say(`Not installing ${s.name}: ${s.reason}`);
  if (!plan.dpkgAvailable) {
    say('dpkg not found: this is not a Debian-family system, so nothing is installed automatically.');
    say(`Install the equivalents of these Debian packages yourself: ${plan.missing.join(' ')}`);
  } else if (plan.missing.length === 0) {
    say(`Debian packages: all wanted packages installed (${debianPackageNames({ noBrowser: flags.noBrowser }).join(' ')})`);
  } else if (flags.check) {
    say(`Debian packages missing: ${plan.missing.join(' ')}`);
    say(`--check: not installing. To install, run setup without --check${isRoot() ? '' : ' as root'}, or: ${aptCommands(plan.missing, !isRoot())}`);
  } else if (!isRoot()) {
    say(`Debian packages missing: ${plan.missing.join(' ')}`);
    say(`Not root, so not installing. Run:\n  ${aptCommands(plan.missing, true)}\nthen run setup again.`);
  } else {
    say(`Debian packages missing: ${plan.missing.join(' ')}`);
    say(`Installing as root: apt-get update, then apt-get install -y --no-install-recommends ${plan.missing.join(' ')}`);
    installError = installDebianPackages(plan.missing, flags.quiet);
    if (installError) process.stderr.write(`FAILED   installing Debian packages: ${installError}\n`);
    else say('Debian packages installed.');
  }

  // 2. Data directory.
  const dataDir = ensureDataDir(flags.dataDir);

  // 3. Every part.
  const results = [...checkAll({ noBrowser: flags.noBrowser }), dataDir];
  say('');
  for (const r of results) {
    if (!flags.quiet || r.status !== 'OK') {
      process.stdout.write(`${formatResult(r)}\n`);
    }
  }

  // 4. Summary.
  const count = (s: CheckStatus): number => results.filter((r) => r.status === s).length;
  const badRequired = results.filter((r) => r.need === 'required' && r.status !== 'OK');
  const warnings = results.filter((r) => r.need !== 'required' && (r.status === 'MISSING' || r.status === 'FAILED'));
  const counts = `${count('OK')} OK, ${count('MISSING')} MISSING, ${count('FAILED')} FAILED${count('SKIPPED') ? `, ${count('SKIPPED')} SKIPPED` : ''}`;
  let code = 0;
  let summary: string;
  if (badRequired.length > 0) {
    code = 1;
    summary = `Summary: ${counts}. NOT READY: required part(s) not OK: ${badRequired.map((r) => r.name).join(', ')}. Fix them as the lines above say, then run setup again.`;
  } else if (installError) {
    code = 1;
    summary = `Summary: ${counts}. Required parts OK, but installing Debian packages failed (see above); fix it and run setup again.`;
  } else if (warnings.length > 0) {
    summary = `Summary: ${counts}. READY (required parts OK); warnings: ${warnings.map((r) => r.name).join(', ')} (see "without it" above). Start the server with \`npm start\`.`;
  } else {
    summary = `Summary: ${counts}. READY: every part OK. Start the server with \`npm start\`; run the tests with \`npm test\`.`;
  }
  say('');
  process.stdout.write(`${summary}\n`);
  return code;
}

if (require.main === module) {
  process.exitCode = main();
}
