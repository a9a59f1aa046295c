/**
 * The server's command line and config file, defined once: each option has its
 * flag, its ServerOptions key, its type and its help line. run_server.ts parses
 * with it, --help prints it, and the README lists the same table.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_HOST, DEFAULT_PORTS, DEFAULTS, LIMITS } from '../shared/constants';
import { isLogLevel, LOG_LEVELS } from '../shared/log';
import type { ServerOptions } from './main_server';

type Kind = 'string' | 'port' | 'int' | 'number' | 'level';

interface OptionSpec {
  flag: string;
  key: keyof ServerOptions;
  kind: Kind;
  arg: string;
  help: string;
  /** Read from this environment variable when neither flag nor config sets it (keeps secrets out of `ps`). */
  env?: string;
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
  }
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
  options: ServerOptions;
}

/** Defaults < config file < environment (secrets only) < flags. */
export function parseServerArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedServerArgs {
  const parseOpts: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' }, config: { type: 'string' } };
  for (const o of SERVER_OPTIONS) parseOpts[o.flag] = { type: 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options: parseOpts, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message}. Run with --help to see the options.`);
  }
  if (values.help) return { help: true, options: {} };
  const options: ServerOptions = typeof values.config === 'string' ? readConfigFile(values.config) : {};
  for (const o of SERVER_OPTIONS) {
    const raw = values[o.flag];
    if (raw !== undefined) (options as Record<string, unknown>)[o.key] = convert(o, raw, `--${o.flag}`);
    else if (o.env && env[o.env] && (options as Record<string, unknown>)[o.key] === undefined) {
      (options as Record<string, unknown>)[o.key] = env[o.env];
    }
  }
  return { help: false, options };
}

export function serverHelp(): string {
  const rows = SERVER_OPTIONS.map((o) => `  --${`${o.flag} ${o.arg}`.padEnd(26)} ${o.help}`);
  return [
    'LAN Video Call server',
    '',
    'Usage: npx ts-node run_server.ts [options]      (or: npm start -- [options])',
    '',
    'Options:',
    ...rows,
    `  --${'config FILE'.padEnd(26)} JSON file with any of the options above (keys as flag names); flags win`,
    `  --${'help'.padEnd(26)} show this help`,
    '',
    'Stop with Ctrl+C (SIGINT) or SIGTERM: clients are told and the database is closed cleanly.',
  ].join('\n');
}
