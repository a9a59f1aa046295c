/**
 * The server's command line and config file, defined once: each option has its
 * flag, its ServerOptions key, its type and its help line. run_server.ts parses
 * with it, --help prints it, and the README lists the same table.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_HOST, DEFAULT_PORTS, DEFAULTS, LIMITS } from '../shared/constants';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from '../shared/protocol/file_frames';
import { isLogLevel, LOG_LEVELS } from '../shared/log';
import type { ServerOptions } from './main_server';

/** size: bytes, written 1048576, 100MB or 1.5GiB; duration: milliseconds, written 90s, 30m, 12h or 7d. */
type Kind = 'string' | 'port' | 'int' | 'number' | 'level' | 'size' | 'duration';

interface OptionSpec {
  flag: string;
  key: keyof ServerOptions;
  kind: Kind;
  arg: string;
  help: string;
  /** Read from this environment variable when neither flag nor config sets it (keeps secrets out of `ps`). */
  env?: string;
  /** size and duration: the smallest and largest value accepted (default: 0 and none). */
  min?: number;
  max?: number;
  /** duration: what 0 means, when 0 is allowed (said in the error when it is not). */
  zero?: string;
}

/** Units of a size, lower case: decimal (KB = 1000) and binary (KiB = 1024), as disks and tools use both. */
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Bytes from "1048576", "100MB", "1.5 GiB" (case-insensitive); a string saying what is wrong otherwise. */
export function parseSize(text: string): number | string {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) return 'a size in bytes, or a number with a unit: B, KB, MB, GB, KiB, MiB, GiB (e.g. 100MB, 1.5GiB)';
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) return 'a whole number of bytes (e.g. 1.5KB, not 1.5B)';
  return bytes;
}

/** Milliseconds from "90s", "30m", "12h", "7d" (or "0"); a string saying what is wrong otherwise. */
export function parseDuration(text: string): number | string {
  if (/^\s*0+(\.0*)?\s*$/.test(text)) return 0;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/i.exec(text);
  if (!m) {
    return /^\s*\d+(\.\d+)?\s*$/.test(text)
      ? `a duration with its unit: ${text.trim()}s, ${text.trim()}m, ${text.trim()}h or ${text.trim()}d (a bare number is ambiguous)`
      : 'a duration with a unit: s, m, h or d (e.g. 90s, 30m, 12h, 7d)';
  }
  const ms = Number(m[1]) * DURATION_UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(Math.round(ms))) return 'a shorter duration';
  return Math.round(ms);
}

/** The largest unit that divides the value evenly: 104857600 -> "100MiB", 1000000 -> "1MB". */
export function formatSize(bytes: number): string {
  for (const u of ['TiB', 'TB', 'GiB', 'GB', 'MiB', 'MB', 'KiB', 'KB']) {
    const n = SIZE_UNITS[u.toLowerCase()];
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${u}`;
  }
  return `${bytes}B`;
}

/** The largest unit that divides the value evenly: 604800000 -> "7d". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  for (const u of ['d', 'h', 'm', 's']) if (ms % DURATION_UNITS[u] === 0) return `${ms / DURATION_UNITS[u]}${u}`;
  return `${ms}ms`;
}

export const SERVER_OPTIONS: readonly OptionSpec[] = [
  { flag: 'host', key: 'host', kind: 'string', arg: 'ADDR', help: `bind address (default ${DEFAULT_HOST}, all interfaces)` },
  { flag: 'port', key: 'port', kind: 'port', arg: 'N', help: `control port, TCP (default ${DEFAULT_PORTS.control})` },
  { flag: 'video-port', key: 'videoPort', kind: 'port', arg: 'N', help: `camera video, UDP (default ${DEFAULT_PORTS.video})` },
  { flag: 'audio-port', key: 'audioPort', kind: 'port', arg: 'N', help: `audio, UDP (default ${DEFAULT_PORTS.audio})` },
  { flag: 'screen-port', key: 'screenPort', kind: 'port', arg: 'N', help: `screen sharing, UDP (default ${DEFAULT_PORTS.screen})` },
  { flag: 'feedback-port', key: 'feedbackPort', kind: 'port', arg: 'N', help: `media feedback, UDP (default ${DEFAULT_PORTS.feedback})` },
  { flag: 'file-port', key: 'filePort', kind: 'port', arg: 'N', help: `file server, TCP (default ${DEFAULT_PORTS.file})` },
  { flag: 'data-dir', key: 'dataDir', kind: 'string', arg: 'DIR', help: `database and files (default ${DEFAULTS.dataDir})` },
  {
    flag: 'max-file-size',
    key: 'maxFileBytes',
    kind: 'size',
    arg: 'SIZE',
    help: `largest file to share, e.g. 500MB or 2GiB (default ${formatSize(DEFAULTS.maxFileBytes)})`,
  },
  {
    flag: 'file-chunk-size',
    key: 'fileChunkSize',
    kind: 'size',
    arg: 'SIZE',
    min: MIN_CHUNK_SIZE,
    max: MAX_CHUNK_SIZE,
    help: `file transfer chunk, each with its MD5: ${formatSize(MIN_CHUNK_SIZE)} to ${formatSize(MAX_CHUNK_SIZE)} (default ${formatSize(DEFAULTS.files.chunkSize)})`,
  },
  {
    flag: 'user-quota',
    key: 'userQuotaBytes',
    kind: 'size',
    arg: 'SIZE',
    help: `stored file bytes per user name (default ${formatSize(DEFAULTS.files.userQuotaBytes)})`,
  },
  {
    flag: 'storage-quota',
    key: 'storageQuotaBytes',
    kind: 'size',
    arg: 'SIZE',
    help: `stored file bytes on this server (default ${formatSize(DEFAULTS.files.storageQuotaBytes)})`,
  },
  {
    flag: 'file-retention',
    key: 'fileRetentionMs',
    kind: 'duration',
    arg: 'DURATION',
    zero: 'keep files until deleted',
    help: `remove shared files this long after upload, e.g. 12h or 30d; 0 keeps them (default ${formatDuration(DEFAULTS.files.retentionMs)})`,
  },
  {
    flag: 'partial-retention',
    key: 'partialRetentionMs',
    kind: 'duration',
    arg: 'DURATION',
    min: 1,
    help: `keep an interrupted upload this long for resuming (default ${formatDuration(DEFAULTS.files.partialRetentionMs)})`,
  },
  {
    flag: 'server-password',
    key: 'serverPassword',
    kind: 'string',
    arg: 'PW',
    env: 'LVC_SERVER_PASSWORD',
    help: 'password every client must give to connect (or env LVC_SERVER_PASSWORD)',
  },
  {
    flag: 'admin-password',
    key: 'adminPassword',
    kind: 'string',
    arg: 'PW',
    env: 'LVC_ADMIN_PASSWORD',
    help: 'password that signs a client in as admin (or env LVC_ADMIN_PASSWORD); no admin without it',
  },
  { flag: 'server-name', key: 'serverName', kind: 'string', arg: 'NAME', help: 'name shown to clients (default "LAN Video Call")' },
  { flag: 'max-rooms', key: 'maxRooms', kind: 'int', arg: 'N', help: `rooms on this server at most (default ${DEFAULTS.maxRooms})` },
  { flag: 'log-level', key: 'logLevel', kind: 'level', arg: 'LEVEL', help: `${LOG_LEVELS.join('|')} (default info)` },
  { flag: 'max-participants', key: 'maxParticipants', kind: 'int', arg: 'N', help: `default room capacity (default ${DEFAULTS.maxParticipants})` },
  { flag: 'history-limit', key: 'historyLimit', kind: 'int', arg: 'N', help: `chat messages sent on join (default ${DEFAULTS.historyLimit})` },
  { flag: 'chat-rate', key: 'chatRatePerSecond', kind: 'number', arg: 'N', help: `chat messages per second per user, sustained (default ${DEFAULTS.chatRatePerSecond})` },
  { flag: 'chat-burst', key: 'chatBurst', kind: 'int', arg: 'N', help: `chat messages per user at once (default ${DEFAULTS.chatBurst})` },
  { flag: 'max-chat-length', key: 'maxChatLength', kind: 'int', arg: 'N', help: `characters in one chat message (default ${LIMITS.maxChatLength})` },
  { flag: 'heartbeat-interval', key: 'heartbeatIntervalMs', kind: 'int', arg: 'MS', help: `heartbeat interval told to clients (default ${DEFAULTS.heartbeatIntervalMs})` },
  { flag: 'connection-timeout', key: 'connectionTimeoutMs', kind: 'int', arg: 'MS', help: `drop a client silent this long (default ${DEFAULTS.connectionTimeoutMs})` },
  {
    flag: 'resume-grace',
    key: 'resumeGraceMs',
    kind: 'int',
    arg: 'MS',
    help: `keep a dropped user's place this long for a reconnect (default ${DEFAULTS.resumeGraceMs}; 0 = leave at once)`,
  },
  { flag: 'max-frame-bytes', key: 'maxFrameBytes', kind: 'int', arg: 'N', help: `largest control frame (default ${LIMITS.maxFrameBytes})` },
  { flag: 'max-json-depth', key: 'maxJsonDepth', kind: 'int', arg: 'N', help: `deepest JSON nesting (default ${LIMITS.maxJsonDepth})` },
] as const;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

function convert(spec: OptionSpec, raw: unknown, where: string): ServerOptions[keyof ServerOptions] {
  const s = typeof raw === 'number' ? String(raw) : raw;
  if (typeof s !== 'string') throw new UsageError(`${where}: expected a value for ${spec.flag}`);
  switch (spec.kind) {
    case 'string':
      return s;
    case 'level':
      if (!isLogLevel(s)) throw new UsageError(`${where}: log level must be one of ${LOG_LEVELS.join(', ')}, not "${s}"`);
      return s;
    case 'port': {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${where}: ${spec.flag} must be a port 0-65535, not "${s}"`);
      return n;
    }
    case 'int': {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`${where}: ${spec.flag} must be a whole number >= 0, not "${s}"`);
      return n;
    }
    case 'number': {
      const n = Number(s);
      if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${where}: ${spec.flag} must be a number > 0, not "${s}"`);
      return n;
    }
    case 'size': {
      const n = parseSize(s);
      if (typeof n === 'string') throw new UsageError(`${where}: ${spec.flag} must be ${n}, not "${s}"`);
      return inRange(spec, n, s, where, formatSize);
    }
    case 'duration': {
      const n = parseDuration(s);
      if (typeof n === 'string') throw new UsageError(`${where}: ${spec.flag} must be ${n}, not "${s}"`);
      if (n === 0 && !spec.zero) throw new UsageError(`${where}: ${spec.flag} must be longer than 0 (e.g. 30m), not "${s}"`);
      return inRange(spec, n, s, where, formatDuration);
    }
  }
}

function inRange(spec: OptionSpec, n: number, s: string, where: string, format: (n: number) => string): number {
  if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
    const range = spec.max !== undefined ? `${format(spec.min ?? 0)} to ${format(spec.max)}` : `at least ${format(spec.min ?? 0)}`;
    throw new UsageError(`${where}: ${spec.flag} must be ${range}, not "${s}"`);
  }
  return n;
}

/** Keys a config file may use: the flag name (video-port) or the option name (videoPort). */
function specFor(key: string): OptionSpec | undefined {
  return SERVER_OPTIONS.find((o) => o.flag === key || o.key === key);
}

export function readConfigFile(file: string): ServerOptions {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read config file ${file}: ${(e as Error).message}. Check the path given to --config.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`config file ${file} must hold one JSON object`);
  const out: ServerOptions = {};
  for (const [k, v] of Object.entries(json)) {
    const spec = specFor(k);
    if (!spec) {
      throw new UsageError(`config file ${file}: unknown key "${k}". Known keys: ${SERVER_OPTIONS.map((o) => o.flag).join(', ')}`);
    }
    (out as Record<string, unknown>)[spec.key] = convert(spec, v, `config file ${file}`);
  }
  return out;
}

export interface ParsedServerArgs {
  help: boolean;
  /** --monitor: the terminal dashboard (gui/server_gui.ts) instead of log lines on stderr. */
  monitor: boolean;
  options: ServerOptions;
}

/** Defaults < config file < environment (secrets only) < flags. */
export function parseServerArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedServerArgs {
  const parseOpts: Record<string, { type: 'string' | 'boolean' }> = {
    help: { type: 'boolean' },
    monitor: { type: 'boolean' },
    config: { type: 'string' },
  };
  for (const o of SERVER_OPTIONS) parseOpts[o.flag] = { type: 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options: parseOpts, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message}. Run with --help to see the options.`);
  }
  if (values.help) return { help: true, monitor: false, options: {} };
  const options: ServerOptions = typeof values.config === 'string' ? readConfigFile(values.config) : {};
  for (const o of SERVER_OPTIONS) {
    const raw = values[o.flag];
    if (raw !== undefined) (options as Record<string, unknown>)[o.key] = convert(o, raw, `--${o.flag}`);
    else if (o.env && env[o.env] && (options as Record<string, unknown>)[o.key] === undefined) {
      (options as Record<string, unknown>)[o.key] = env[o.env];
    }
  }
  return { help: false, monitor: values.monitor === true, options };
}

export function serverHelp(): string {
  const rows = SERVER_OPTIONS.map((o) => `  --${`${o.flag} ${o.arg}`.padEnd(28)} ${o.help}`);
  return [
    'LAN Video Call server',
    '',
    'Usage: npx ts-node run_server.ts [options]      (or: npm start -- [options])',
    '',
    'Options:',
    ...rows,
    `  --${'config FILE'.padEnd(28)} JSON file with any of the options above (keys as flag names); flags win`,
    `  --${'monitor'.padEnd(28)} terminal dashboard: users, rooms, traffic, transfers, log; keys to kick, mute,`,
    `  ${''.padEnd(30)} lock, stop/start and reconfigure the listeners (? shows them; needs a terminal)`,
    `  --${'help'.padEnd(28)} show this help`,
    '',
    'Stop with Ctrl+C (SIGINT) or SIGTERM (q in the monitor): clients are told and the database is closed cleanly.',
  ].join('\n');
}
