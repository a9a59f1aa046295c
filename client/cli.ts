/**
 * The command-line client: flags, the slash commands, and how events are printed.
 * run_client.ts only parses the flags and calls runCli(); everything here takes its
 * streams, environment and signals from a CliIo so that it can be driven in-process.
 *
 * Output: human mode prints one time-stamped line per event on stdout
 *   [12:03:04] alice: hello            chat
 *   [12:03:05] * bob joined the room   something happened
 * and errors on stderr as `[..] ! CODE: message. hint` (the hint says what to do next).
 * With --json every event, reply and error is one JSON object per line on stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { DEFAULT_PORTS, DEFAULTS, LIMITS } from '../shared/constants';
import { ProtocolError } from '../shared/errors';
import type { ChatEntry, RoomInfo, RoomRole, UserInfo } from '../shared/protocol/messages';
import { Client, type ClientEvents } from './main_client';
import { CliMedia } from './cli_media';
import type { AudioCall } from './audio_call';
import { listAudioDevices } from './audio/devices';
import { FileClient, type TransferProgress } from './file_client';
import { formatAmount, formatBytes, formatDuration, formatProgress, fraction } from './progress';
import { DEFAULT_VIDEO_SETTINGS, type VideoSettings } from './video_call';

// ================================================================ flags

export interface CliOptions {
  server: string;
  port: number;
  user: string | null;
  room: string | null;
  create: boolean;
  password: string | null;
  roomPassword: string | null;
  adminPassword: string | null;
  reconnectAttempts: number;
  exec: string | null;
  script: string | null;
  keepGoing: boolean;
  stay: boolean;
  json: boolean;
  camera: string | null;
  screen: string | null;
  video: VideoSettings;
  saveDir: string | null;
  saveVideo: boolean;
  /** Where /download saves files without a destination; null: the current directory. */
  downloadDir: string | null;
  /** --mic / --speaker as given; null: 'default' at an interactive prompt, 'none' in scripts. */
  mic: string | null;
  speaker: string | null;
  listDevices: boolean;
  ns: boolean;
  aec: boolean;
  muted: boolean;
}

interface FlagSpec {
  flag: string;
  short?: string;
  arg?: string;
  help: string;
  /** Secrets may come from the environment instead, to keep them out of `ps`. */
  env?: string;
}

/** Every flag, once: parseArgs' configuration and --help are both made from this table. */
export const CLI_FLAGS: readonly FlagSpec[] = [
  { flag: 'server', short: 's', arg: 'HOST', help: 'server address (default 127.0.0.1)' },
  { flag: 'port', short: 'p', arg: 'N', help: `control port of the server (default ${DEFAULT_PORTS.control})` },
  { flag: 'user', short: 'u', arg: 'NAME', help: 'your name; asked for when missing in an interactive terminal' },
  { flag: 'room', short: 'r', arg: 'ROOM', help: 'join this room (id, id prefix or name) once connected' },
  { flag: 'create', help: 'with --room: create the room (named ROOM) unless a room of that name exists' },
  { flag: 'password', arg: 'PW', env: 'LVC_SERVER_PASSWORD', help: 'server password (or env LVC_SERVER_PASSWORD)' },
  { flag: 'room-password', arg: 'PW', env: 'LVC_ROOM_PASSWORD', help: 'password of the --room (makes a created room private) (or env LVC_ROOM_PASSWORD)' },
  { flag: 'admin-password', arg: 'PW', env: 'LVC_ADMIN_PASSWORD', help: 'sign in as admin (or env LVC_ADMIN_PASSWORD)' },
  { flag: 'reconnect-attempts', arg: 'N', help: `reconnect this many times when the link drops, 0 for never (default ${DEFAULTS.reconnectAttempts})` },
  { flag: 'exec', short: 'e', arg: '"CMD; CMD"', help: 'run these commands in order (";" separates, "\\;" is a literal ;), then exit' },
  { flag: 'script', arg: 'FILE', help: 'run the commands of FILE (one a line, # starts a comment), then exit' },
  { flag: 'keep-going', help: 'with --exec/--script: go on after a failed command (the exit code is still 1)' },
  { flag: 'stay', help: 'with --exec/--script: stay connected afterwards, printing events and reading commands from stdin, until Ctrl+C or /quit' },
  { flag: 'json', help: 'print each event, reply and error as one JSON object per line (for programs)' },
  { flag: 'camera', arg: 'SOURCE', help: 'camera: /dev/videoN, testsrc2 (synthetic) or file:PATH (a looped video); with it, your camera turns on when you join a room' },
  { flag: 'screen', arg: 'DISPLAY', help: 'screen for /screen on: an X display :N[.S], optionally a region :N+X,Y@WxH (default $DISPLAY)' },
  { flag: 'video-size', arg: 'WxH', help: `size of the video you send (default ${DEFAULT_VIDEO_SETTINGS.width}x${DEFAULT_VIDEO_SETTINGS.height})` },
  { flag: 'fps', arg: 'N', help: `frames per second you send, 1-60 (default ${DEFAULT_VIDEO_SETTINGS.fps})` },
  { flag: 'quality', arg: 'N', help: `JPEG quality of the video you send, 1-100 (default ${DEFAULT_VIDEO_SETTINGS.quality})` },
  { flag: 'save-dir', arg: 'DIR', help: 'keep the latest frame of each participant\'s camera and screen as DIR/NAME-camera.jpg, DIR/NAME-screen.jpg' },
  { flag: 'save-video', help: 'with --save-dir: also record each received stream to DIR/NAME-camera.mkv (MJPEG, plays in any player)' },
  { flag: 'mic', arg: 'DEVICE', help: "microphone: default, a device name or id (see --list-devices), file:PATH (a looped sound file, for bots and demos) or none (default: default at an interactive prompt, none with --exec/--script or without a terminal)" },
  { flag: 'speaker', arg: 'DEVICE', help: 'speakers: default, a device name or id, or none (default as for --mic)' },
  { flag: 'list-devices', help: 'list the microphones and speakers PortAudio sees, then exit' },
  { flag: 'muted', help: 'join with your microphone muted (/unmute to talk)' },
  { flag: 'no-ns', help: 'start with noise suppression off (/ns on turns it on)' },
  { flag: 'no-aec', help: 'start with echo cancellation off (/aec on turns it on)' },
  { flag: 'download-dir', arg: 'DIR', help: 'where /download saves files when no destination is given (default: the current directory)' },
  { flag: 'help', short: 'h', help: 'print this help and exit' },
];

/** A wrong command line: printed with "run with --help", exit code 2. */
export class CliUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliUsageError';
  }
}

function intFlag(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isInteger(n) || n < min || n > max) {
    throw new CliUsageError(`--${name} must be a whole number from ${min} to ${max}, not "${raw}"`);
  }
  return n;
}

function videoSize(raw: string): { width: number; height: number } {
  const m = /^(\d{1,4})x(\d{1,4})$/.exec(raw.trim());
  const width = m ? Number(m[1]) : NaN;
  const height = m ? Number(m[2]) : NaN;
  // Even sizes: JPEG 4:2:0 and most capture devices want them.
  if (!m || width < 16 || height < 16 || width > 3840 || height > 2160 || width % 2 || height % 2) {
    throw new CliUsageError(`--video-size must be WIDTHxHEIGHT, even numbers from 16x16 to 3840x2160 (e.g. 640x480), not "${raw}"`);
  }
  return { width, height };
}

/** Parses the command line. Throws CliUsageError; `help` is true when --help was given. */
export function parseCliArgs(argv: string[], env: NodeJS.ProcessEnv = {}): { help: boolean; options: CliOptions } {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const f of CLI_FLAGS) config[f.flag] = { type: f.arg ? 'string' : 'boolean', ...(f.short ? { short: f.short } : {}) };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options: config, strict: true, allowPositionals: false }).values as typeof values;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const unknown = /^Unknown option '([^']+)'/.exec(err.message);
    if (unknown) throw new CliUsageError(`unknown flag ${unknown[1]}`);
    const missing = /^Option '(-[^ ']+)/.exec(err.message);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && missing) throw new CliUsageError(`${missing[1]} needs a value`);
    const positional = /^Unexpected argument '([^']*)'/.exec(err.message);
    if (positional) throw new CliUsageError(`unexpected argument "${positional[1]}" (flags start with --)`);
    throw new CliUsageError(err.message);
  }
  const str = (k: string): string | null => {
    const v = values[k];
    if (typeof v === 'string') return v;
    const spec = CLI_FLAGS.find((f) => f.flag === k);
    return spec?.env && env[spec.env] ? String(env[spec.env]) : null;
  };
  const options: CliOptions = {
    server: str('server') ?? '127.0.0.1',
    port: values.port === undefined ? DEFAULT_PORTS.control : intFlag('port', String(values.port), 1, 65535),
    user: str('user'),
    room: str('room'),
    create: values.create === true,
    password: str('password'),
    roomPassword: str('room-password'),
    adminPassword: str('admin-password'),
    reconnectAttempts:
      values['reconnect-attempts'] === undefined
        ? DEFAULTS.reconnectAttempts
        : intFlag('reconnect-attempts', String(values['reconnect-attempts']), 0, 1000),
    exec: str('exec'),
    script: str('script'),
    keepGoing: values['keep-going'] === true,
    stay: values.stay === true,
    json: values.json === true,
    camera: str('camera'),
    screen: str('screen'),
    video: {
      ...DEFAULT_VIDEO_SETTINGS,
      ...(values['video-size'] === undefined ? {} : videoSize(String(values['video-size']))),
      ...(values.fps === undefined ? {} : { fps: intFlag('fps', String(values.fps), 1, 60) }),
      ...(values.quality === undefined ? {} : { quality: intFlag('quality', String(values.quality), 1, 100) }),
    },
    saveDir: str('save-dir'),
    saveVideo: values['save-video'] === true,
    downloadDir: str('download-dir'),
    mic: str('mic'),
    speaker: str('speaker'),
    listDevices: values['list-devices'] === true,
    ns: values['no-ns'] !== true,
    aec: values['no-aec'] !== true,
    muted: values.muted === true,
  };
  if (values.help === true) return { help: true, options };
  if (options.server.trim() === '') throw new CliUsageError('--server needs a host name or address');
  if (options.create && !options.room) throw new CliUsageError('--create needs --room NAME');
  if (options.exec !== null && options.script !== null) throw new CliUsageError('give either --exec or --script, not both');
  const scripted = options.exec !== null || options.script !== null;
  if (!scripted && (options.keepGoing || options.stay)) {
    throw new CliUsageError(`--${options.keepGoing ? 'keep-going' : 'stay'} only applies with --exec or --script`);
  }
  if (options.user !== null && options.user.trim() === '') throw new CliUsageError('--user needs a name');
  if (options.saveVideo && !options.saveDir) throw new CliUsageError('--save-video needs --save-dir DIR');
  if (options.downloadDir !== null && options.downloadDir.trim() === '') throw new CliUsageError('--download-dir needs a directory');
  for (const k of ['mic', 'speaker'] as const) {
    const v = options[k];
    if (v !== null && v.trim() === '') throw new CliUsageError(`--${k} needs a device (default, a name or id from --list-devices${k === 'mic' ? ', file:PATH' : ''} or none)`);
    if (k === 'speaker' && v?.startsWith('file:')) throw new CliUsageError('--speaker cannot be a file; use a device name or id, default or none');
  }
  return { help: false, options };
}

// ================================================================ commands

export type Command =
  | { name: 'chat'; text: string }
  | { name: 'rooms' }
  | { name: 'create'; room: string; password?: string; max?: number; persistent: boolean }
  | { name: 'join'; room: string; password?: string; raw: string }
  | { name: 'leave' }
  | { name: 'users'; all: boolean }
  | { name: 'msg'; to: string; text: string }
  | { name: 'hand' }
  | { name: 'react'; reaction: string }
  | { name: 'mute' | 'unmute' | 'promote' | 'demote' | 'host'; user: string }
  | { name: 'self-mute'; on: boolean }
  | { name: 'volume'; user: string; percent: number }
  | { name: 'ns' | 'aec'; on: boolean }
  | { name: 'levels' }
  | { name: 'muteall' }
  | { name: 'kick'; user: string; reason?: string }
  | { name: 'lock' | 'unlock' | 'end' | 'quit' | 'help' }
  | { name: 'history'; limit: number }
  | { name: 'video' | 'audio' | 'screen'; on: boolean }
  | { name: 'stop-video'; user: string; kind: 'video' | 'screen' }
  | { name: 'stats' }
  | { name: 'video-set'; width?: number; height?: number; fps?: number; quality?: number }
  | { name: 'upload'; path: string }
  | { name: 'files' }
  | { name: 'download'; file: string; dest?: string }
  | { name: 'delete'; file: string }
  | { name: 'wait'; seconds: number };

/** A command line that does not parse: printed with the command's usage. */
export class CommandUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandUsageError';
  }
}

/**
 * Takes one word off the front of `s`: a run of non-blanks, or a "quoted" or 'quoted'
 * string (names may hold spaces). Inside double quotes, \" and \\ are escapes.
 * Returns null when nothing is left.
 */
export function takeToken(s: string): [string, string] | null {
  const t = s.trimStart();
  if (t === '') return null;
  const q = t[0];
  if (q === '"' || q === "'") {
    let out = '';
    for (let i = 1; i < t.length; i++) {
      const c = t[i];
      if (c === q) return [out, t.slice(i + 1).trimStart()];
      if (q === '"' && c === '\\' && i + 1 < t.length && (t[i + 1] === '"' || t[i + 1] === '\\')) {
        out += t[++i];
        continue;
      }
      out += c;
    }
    throw new CommandUsageError(`unclosed quote ${q}`);
  }
  const m = /^\S+/.exec(t)!;
  return [m[0], t.slice(m[0].length).trimStart()];
}

export function tokenize(s: string): string[] {
  const out: string[] = [];
  let rest = s;
  for (let t = takeToken(rest); t; t = takeToken(rest)) {
    out.push(t[0]);
    rest = t[1];
  }
  return out;
}

interface CommandSpec {
  name: string;
  usage: string;
  help: string;
  parse: (args: string) => Command;
}

const usage = (spec: string) => new CommandUsageError(`usage: ${spec}`);

function oneUser(name: 'mute' | 'unmute' | 'promote' | 'demote' | 'host', u: string): (a: string) => Command {
  return (a) => {
    const t = tokenize(a);
    if (t.length !== 1) throw usage(u);
    return { name, user: t[0] };
  };
}

function noArgs(name: 'rooms' | 'leave' | 'hand' | 'muteall' | 'lock' | 'unlock' | 'end' | 'quit' | 'help' | 'stats' | 'files' | 'levels', u: string): (a: string) => Command {
  return (a) => {
    if (a.trim() !== '') throw usage(u);
    return { name } as Command;
  };
}

function onOff(name: 'video' | 'audio' | 'screen' | 'ns' | 'aec', u: string): (a: string) => Command {
  return (a) => {
    const v = a.trim().toLowerCase();
    if (v !== 'on' && v !== 'off') throw usage(u);
    return { name, on: v === 'on' };
  };
}

/** Every slash command, once: the parser and /help and --help are made from this table. */
export const COMMANDS: readonly CommandSpec[] = [
  { name: 'rooms', usage: '/rooms', help: 'list the rooms', parse: noArgs('rooms', '/rooms') },
  {
    name: 'create',
    usage: '/create NAME [--private PASSWORD] [--max N] [--persistent]',
    help: 'create a room and join it as its host',
    parse: (a) => {
      const u = '/create NAME [--private PASSWORD] [--max N] [--persistent]';
      const t = tokenize(a);
      const name: string[] = [];
      const cmd: Extract<Command, { name: 'create' }> = { name: 'create', room: '', persistent: false };
      for (let i = 0; i < t.length; i++) {
        if (t[i] === '--private') {
          if (i + 1 >= t.length) throw usage(u);
          cmd.password = t[++i];
        } else if (t[i] === '--max') {
          const n = Number(t[++i]);
          if (!Number.isInteger(n) || n < 1) throw new CommandUsageError(`--max needs a whole number of participants; ${usage(u).message}`);
          cmd.max = n;
        } else if (t[i] === '--persistent') {
          cmd.persistent = true;
        } else if (t[i].startsWith('--')) {
          throw new CommandUsageError(`unknown option ${t[i]}; ${usage(u).message}`);
        } else {
          name.push(t[i]);
        }
      }
      if (name.length === 0) throw usage(u);
      cmd.room = name.join(' ');
      return cmd;
    },
  },
  {
    name: 'join',
    usage: '/join ROOM [PASSWORD]',
    help: 'join a room by id, id prefix or name (quote a name with spaces)',
    parse: (a) => {
      const t = tokenize(a);
      if (t.length < 1 || t.length > 2) throw usage('/join ROOM [PASSWORD]');
      return { name: 'join', room: t[0], password: t[1], raw: a.trim() };
    },
  },
  { name: 'leave', usage: '/leave', help: 'leave your room', parse: noArgs('leave', '/leave') },
  {
    name: 'users',
    usage: '/users [all]',
    help: 'list the people in your room (everyone online when not in a room, or with "all")',
    parse: (a) => {
      const v = a.trim().toLowerCase();
      if (v !== '' && v !== 'all') throw usage('/users [all]');
      return { name: 'users', all: v === 'all' };
    },
  },
  {
    name: 'msg',
    usage: '/msg USER TEXT',
    help: 'send a private message',
    parse: (a) => {
      const t = takeToken(a);
      if (!t || t[1].trim() === '') throw usage('/msg USER TEXT');
      return { name: 'msg', to: t[0], text: t[1] };
    },
  },
  { name: 'hand', usage: '/hand', help: 'raise your hand, or lower it when raised', parse: noArgs('hand', '/hand') },
  {
    name: 'react',
    usage: '/react EMOJI',
    help: 'send a reaction to the room',
    parse: (a) => {
      const r = a.trim();
      if (!r) throw usage('/react EMOJI');
      return { name: 'react', reaction: r };
    },
  },
  {
    name: 'mute',
    usage: '/mute [USER]',
    help: 'mute your microphone (nothing is sent); with USER: mute someone (host, moderator)',
    parse: (a) => (a.trim() === '' ? { name: 'self-mute', on: true } : oneUser('mute', '/mute [USER]')(a)),
  },
  {
    name: 'unmute',
    usage: '/unmute [USER]',
    help: 'unmute your microphone; with USER: lift their mute and ask them to unmute (host, moderator)',
    parse: (a) => (a.trim() === '' ? { name: 'self-mute', on: false } : oneUser('unmute', '/unmute [USER]')(a)),
  },
  {
    name: 'volume',
    usage: '/volume USER N',
    help: 'how loud you hear USER, 0-200 % (100 is as they send; 0 silences them for you only)',
    parse: (a) => {
      const t = tokenize(a);
      const n = Number(t[1]);
      if (t.length !== 2 || !/^\d{1,3}%?$/.test(t[1]) || !(parseInt(t[1], 10) <= 200)) throw usage('/volume USER N (N from 0 to 200)');
      return { name: 'volume', user: t[0], percent: Number.isNaN(n) ? parseInt(t[1], 10) : n };
    },
  },
  { name: 'levels', usage: '/levels', help: 'audio levels: yours and each participant\'s, and who is the active speaker', parse: noArgs('levels', '/levels') },
  { name: 'ns', usage: '/ns on|off', help: 'noise suppression of your microphone (RNNoise) on or off', parse: onOff('ns', '/ns on|off') },
  { name: 'aec', usage: '/aec on|off', help: 'echo cancellation of your microphone on or off (off: use headphones)', parse: onOff('aec', '/aec on|off') },
  { name: 'muteall', usage: '/muteall', help: 'mute everyone below you (host, moderator)', parse: noArgs('muteall', '/muteall') },
  {
    name: 'kick',
    usage: '/kick USER [REASON]',
    help: 'remove someone from the room for this meeting (host, moderator)',
    parse: (a) => {
      const t = takeToken(a);
      if (!t) throw usage('/kick USER [REASON]');
      return { name: 'kick', user: t[0], reason: t[1].trim() || undefined };
    },
  },
  { name: 'lock', usage: '/lock', help: 'let nobody else in (host, moderator)', parse: noArgs('lock', '/lock') },
  { name: 'unlock', usage: '/unlock', help: 'let people in again (host, moderator)', parse: noArgs('unlock', '/unlock') },
  { name: 'promote', usage: '/promote USER', help: 'make someone a moderator (host)', parse: oneUser('promote', '/promote USER') },
  { name: 'demote', usage: '/demote USER', help: 'make a moderator a participant again (host)', parse: oneUser('demote', '/demote USER') },
  { name: 'host', usage: '/host USER', help: 'hand the host role over (host)', parse: oneUser('host', '/host USER') },
  { name: 'end', usage: '/end', help: 'end the meeting for everyone (host)', parse: noArgs('end', '/end') },
  {
    name: 'history',
    usage: '/history [N]',
    help: 'show the last N messages of the room (default 20)',
    parse: (a) => {
      const v = a.trim();
      if (v === '') return { name: 'history', limit: 20 };
      const n = Number(v);
      if (!/^\d+$/.test(v) || n < 1 || n > LIMITS.maxHistoryPage) throw usage(`/history [N]   (N from 1 to ${LIMITS.maxHistoryPage})`);
      return { name: 'history', limit: n };
    },
  },
  {
    name: 'upload',
    usage: '/upload PATH',
    help: 'share a file with the room (up to 100 MiB unless the server allows more)',
    parse: (a) => {
      const raw = a.trim();
      if (raw === '') throw usage('/upload PATH');
      // A quoted path is one token; an unquoted rest is the path as typed, spaces and all.
      if (raw[0] !== '"' && raw[0] !== "'") return { name: 'upload', path: raw };
      const t = tokenize(raw);
      if (t.length !== 1 || t[0] === '') throw new CommandUsageError(`give one path (quote it if it has spaces); ${usage('/upload PATH').message}`);
      return { name: 'upload', path: t[0] };
    },
  },
  { name: 'files', usage: '/files', help: 'list the files shared in the room', parse: noArgs('files', '/files') },
  {
    name: 'download',
    usage: '/download ID [DEST]',
    help: 'download a shared file (ID: an id prefix from /files) into DEST, a directory or file name (default --download-dir)',
    parse: (a) => {
      const t = tokenize(a);
      if (t.length < 1 || t.length > 2 || t.some((x) => x === '')) throw usage('/download ID [DEST]   (quote a DEST with spaces)');
      return t.length === 2 ? { name: 'download', file: t[0], dest: t[1] } : { name: 'download', file: t[0] };
    },
  },
  {
    name: 'delete',
    usage: '/delete ID',
    help: 'delete a shared file (yours; a host or moderator: any)',
    parse: (a) => {
      const t = tokenize(a);
      if (t.length !== 1 || t[0] === '') throw usage('/delete ID');
      return { name: 'delete', file: t[0] };
    },
  },
  { name: 'video', usage: '/video on|off', help: 'turn your camera on or off (--camera chooses it; default /dev/video0)', parse: onOff('video', '/video on|off') },
  { name: 'screen', usage: '/screen on|off', help: 'share your screen, or stop (--screen chooses it; default $DISPLAY)', parse: onOff('screen', '/screen on|off') },
  {
    name: 'stop-video',
    usage: '/stop-video USER [screen]',
    help: 'turn someone\'s camera (or screen share) off (host, moderator)',
    parse: (a) => {
      const t = tokenize(a);
      if (t.length < 1 || t.length > 2 || (t[1] !== undefined && t[1].toLowerCase() !== 'screen' && t[1].toLowerCase() !== 'video')) {
        throw usage('/stop-video USER [screen]');
      }
      return { name: 'stop-video', user: t[0], kind: t[1]?.toLowerCase() === 'screen' ? 'screen' : 'video' };
    },
  },
  {
    name: 'video-set',
    usage: '/video-set [size WxH] [fps N] [quality N]',
    help: 'change what you send while it runs (capture is not restarted)',
    parse: (a) => {
      const u = '/video-set [size WxH] [fps N] [quality N]';
      const t = tokenize(a);
      if (t.length === 0 || t.length % 2) throw usage(u);
      const cmd: Extract<Command, { name: 'video-set' }> = { name: 'video-set' };
      for (let i = 0; i < t.length; i += 2) {
        const [key, value] = [t[i].toLowerCase(), t[i + 1]];
        if (key === 'size') {
          const m = /^(\d{1,4})x(\d{1,4})$/.exec(value);
          if (!m || Number(m[1]) % 2 || Number(m[2]) % 2 || Number(m[1]) < 16 || Number(m[2]) < 16) {
            throw new CommandUsageError(`size must be WIDTHxHEIGHT in even numbers, e.g. 320x240; ${usage(u).message}`);
          }
          cmd.width = Number(m[1]);
          cmd.height = Number(m[2]);
        } else if (key === 'fps' || key === 'quality') {
          const n = Number(value);
          const max = key === 'fps' ? 60 : 100;
          if (!/^\d+$/.test(value) || n < 1 || n > max) throw new CommandUsageError(`${key} must be 1 to ${max}; ${usage(u).message}`);
          cmd[key] = n;
        } else throw new CommandUsageError(`unknown setting ${key}; ${usage(u).message}`);
      }
      return cmd;
    },
  },
  { name: 'stats', usage: '/stats', help: 'show media figures: what you send and receive (fps, kbit/s, loss, jitter, delay)', parse: noArgs('stats', '/stats') },
  { name: 'audio', usage: '/audio on|off', help: 'your microphone on or off (the same as /unmute and /mute)', parse: onOff('audio', '/audio on|off') },
  {
    name: 'wait',
    usage: '/wait SECONDS',
    help: 'pause (in scripts), printing events meanwhile',
    parse: (a) => {
      const v = a.trim();
      const n = Number(v);
      if (v === '' || !Number.isFinite(n) || n < 0 || n > 86_400) throw usage('/wait SECONDS');
      return { name: 'wait', seconds: n };
    },
  },
  { name: 'quit', usage: '/quit', help: 'disconnect and exit', parse: noArgs('quit', '/quit') },
  { name: 'help', usage: '/help', help: 'list the commands', parse: noArgs('help', '/help') },
];

const COMMAND_BY_NAME = new Map(COMMANDS.map((c) => [c.name, c]));

/**
 * One line of input as a command, or null for a blank line. A line not starting
 * with "/" is chat; "//text" sends "/text". Throws CommandUsageError.
 */
export function parseCommand(line: string): Command | null {
  const s = line.trim();
  if (s === '') return null;
  if (!s.startsWith('/')) return { name: 'chat', text: s };
  if (s.startsWith('//')) return { name: 'chat', text: s.slice(1) };
  const m = /^\/(\S+)\s*([\s\S]*)$/.exec(s)!;
  const spec = COMMAND_BY_NAME.get(m[1].toLowerCase());
  if (!spec) throw new CommandUsageError(`unknown command /${m[1]}; /help lists the commands`);
  return spec.parse(m[2]);
}

/** --exec's text as command lines: ";" separates, "\;" is a literal ";". */
export function splitExec(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && text[i + 1] === ';') {
      cur += ';';
      i++;
    } else if (text[i] === ';') {
      out.push(cur);
      cur = '';
    } else cur += text[i];
  }
  out.push(cur);
  return out.map((l) => l.trim()).filter((l) => l !== '');
}

/** A script file's command lines with their line numbers: blank lines and # comments dropped. */
export function scriptLines(text: string): { line: number; text: string }[] {
  return text
    .split(/\r?\n/)
    .map((t, i) => ({ line: i + 1, text: t.trim() }))
    .filter((l) => l.text !== '' && !l.text.startsWith('#'));
}

export function cliHelp(): string {
  const flags = CLI_FLAGS.map((f) => {
    const left = `${f.short ? `-${f.short}, ` : '    '}--${f.flag}${f.arg ? ` ${f.arg}` : ''}`;
    return `  ${left.padEnd(30)} ${f.help}`;
  });
  const cmds = commandHelp().map((l) => `  ${l}`);
  return [
    'LAN Video Call command-line client',
    '',
    'usage: npx ts-node run_client.ts --user NAME [--server HOST] [--port N] [--room ROOM [--create]] [options]',
    '',
    'flags:',
    ...flags,
    '',
    'commands (type them at the prompt, or give them to --exec/--script):',
    ...cmds,
    `  ${'TEXT'.padEnd(USAGE_COLUMN)} any line not starting with / is chat to your room (//text sends /text)`,
    '',
    'exit codes: 0 done, 1 connection failed or a command failed, 2 wrong command line, 130 interrupted during a script',
    '',
    'examples:',
    '  npx ts-node run_client.ts --user alice --room standup --create',
    '  npx ts-node run_client.ts --user bot --exec "/join standup; hello from a script; /quit"',
    '  npx ts-node run_client.ts --user logger --room standup --json --exec "/history 100"',
    '  npx ts-node run_client.ts --user bot --room standup --exec "/upload \'weekly report.pdf\'; /quit"',
  ].join('\n');
}

const USAGE_COLUMN = Math.max(...COMMANDS.map((c) => c.usage.length));

function commandHelp(): string[] {
  return COMMANDS.map((c) => `${c.usage.padEnd(USAGE_COLUMN)} ${c.help}`);
}

// ================================================================ printing

const pad2 = (n: number) => String(n).padStart(2, '0');

/** `12:03:04` for today, `2026-11-25 12:03:04` for an older moment (history). */
export function formatTime(d: Date, now: Date = new Date()): string {
  const hms = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hms}`;
}

/** A registry hint with its `{placeholders}` filled from the error's details. */
function hintOf(e: ProtocolError): string {
  return e.hint.replace(/\{(\w+)\}/g, (all, k: string) => (k in e.details ? String(e.details[k]) : all));
}

/** `CODE: message. hint` */
export function formatError(e: unknown): string {
  if (e instanceof ProtocolError) {
    const msg = /[.!?]$/.test(e.message) ? e.message : `${e.message}.`;
    const hint = hintOf(e);
    return `${e.code}: ${msg}${hint && !hint.includes('{') ? ` ${hint}` : ''}`;
  }
  if (e instanceof CommandUsageError) return e.message;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function errorJson(e: unknown): Record<string, unknown> {
  if (e instanceof ProtocolError) {
    const out: Record<string, unknown> = { code: e.code, message: e.message, hint: hintOf(e) };
    if (Object.keys(e.details).length) out.details = e.details;
    return out;
  }
  if (e instanceof CommandUsageError) return { code: null, usage: true, message: e.message };
  return { code: null, message: e instanceof Error ? e.message : String(e) };
}

const ROLE_WORDS: Record<RoomRole, string> = { host: 'the host', moderator: 'a moderator', participant: 'a participant' };

const LEAVE_REASONS: Record<string, string> = {
  left: 'left the room',
  moved: 'left the room (moved to another room)',
  kicked: 'was removed from the room',
  disconnected: 'left the room (disconnected)',
};

function leaveWords(reason: string): string {
  return LEAVE_REASONS[reason] ?? `left the room (${reason.replace(/_/g, ' ').toLowerCase()})`;
}

const shortId = (id: string) => id.slice(0, 8);

/** `~/x` as the shell would have it (commands typed at the prompt do not go through a shell). */
function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? os.homedir() + p.slice(1) : p;
}

// C0/C1 controls (escape sequences could repaint the terminal or forge lines) and bidi overrides.
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/** Text from other people made safe for a terminal: a line break continues indented, controls show as U+FFFD. */
export function printable(text: string): string {
  return text.replace(/\r\n|\r|\n/g, '\n    ').replace(UNPRINTABLE, '\ufffd');
}

// ================================================================ the session

/** Where the CLI reads, writes and gets signals; process-backed by default. */
export interface CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
  /** Subscribes to SIGINT/SIGTERM; returns the unsubscribe. */
  onSignal: (handler: (signal: 'SIGINT' | 'SIGTERM') => void) => () => void;
  readFile: (file: string) => string;
}

/**
 * The microphone and speaker this run uses: as given, else the default devices where
 * someone sits at the prompt, and none in scripts and bots (--exec, --script, no terminal).
 */
export function audioDevices(options: CliOptions, io: Pick<CliIo, 'stdin'>): { mic: string; speaker: string } {
  const scripted = options.exec !== null || options.script !== null;
  const fallback = !scripted && io.stdin.isTTY === true ? 'default' : 'none';
  return { mic: options.mic ?? fallback, speaker: options.speaker ?? fallback };
}

/** Whether this run opens a sound card (a file microphone and 'none' do not). */
export function usesAudioDevices(options: CliOptions, io: Pick<CliIo, 'stdin'>): boolean {
  if (options.listDevices) return true;
  const d = audioDevices(options, io);
  return (d.mic !== 'none' && !d.mic.startsWith('file:')) || d.speaker !== 'none';
}

export function processIo(): CliIo {
  return {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    onSignal: (handler) => {
      const onInt = () => handler('SIGINT');
      const onTerm = () => handler('SIGTERM');
      process.on('SIGINT', onInt);
      process.on('SIGTERM', onTerm);
      return () => {
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
      };
    },
    readFile: (file) => fs.readFileSync(file, 'utf8'),
  };
}

/** What a chat line shows: a received ChatEntry, or what you sent with its ack's timestamp. */
type ChatLine = Pick<ChatEntry, 'username' | 'message' | 'timestamp' | 'is_private' | 'recipient'>;

interface ScriptLine {
  where: string;
  cmd: Command;
}

/** Exit codes. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

export class CliSession {
  readonly client: Client;
  readonly media: CliMedia;
  readonly files: FileClient;
  private rl: readline.Interface | null = null;
  private readonly tty: boolean;
  /** stdout is a terminal (and not --json): progress is one line redrawn in place. */
  private readonly ttyOut: boolean;
  /**
   * Transfers under way. In a script they run one at a time, in the command queue; at
   * the prompt they run in the background, so chat and commands go on meanwhile.
   */
  private readonly transfers = new Set<{ ctl: AbortController; settled: Promise<unknown> }>();
  /** The progress line on screen (terminal only), redrawn below each event line. */
  private progressLine: string | null = null;
  /** Last quarter reported (pipes) and when the last JSON progress went out. */
  private queue: Promise<void> = Promise.resolve();
  private closing = false;
  private resolveDone!: (code: number) => void;
  readonly done: Promise<number>;
  private unsubscribeSignals: (() => void) | null = null;
  private phase: 'starting' | 'script' | 'interactive' = 'starting';
  private failures = 0;
  /** Users as last printed, to tell what a USER_UPDATE changed. */
  private readonly seen = new Map<string, UserInfo>();
  /** The command being run, for JSON replies and to tell own changes from others'. */
  private running: Command | null = null;
  /** Errors already printed by runCommand. */
  private readonly reported = new WeakSet<object>();
  private heldJson: string[] | null = [];
  /** chat_ids already printed (the newest ones), so a rejoin's history shows only what was missed. */
  private readonly shownChats = new Set<string>();

  constructor(
    readonly options: CliOptions & { user: string },
    private readonly io: CliIo = processIo(),
  ) {
    this.tty = !options.json && io.stdin.isTTY === true && io.stdout.isTTY === true;
    this.ttyOut = !options.json && io.stdout.isTTY === true;
    this.done = new Promise((r) => (this.resolveDone = r));
    this.client = new Client({
      host: options.server,
      port: options.port,
      username: options.user,
      password: options.password,
      adminPassword: options.adminPassword,
      reconnect: options.reconnectAttempts > 0,
      reconnectAttempts: Math.max(1, options.reconnectAttempts),
    });
    this.client.onListenerError = (event, error) => this.printError(new Error(`while printing ${event}: ${String(error)}`));
    const devices = audioDevices(options, io);
    this.media = new CliMedia(
      this.client,
      {
        mic: devices.mic,
        speaker: devices.speaker,
        ns: options.ns,
        aec: options.aec,
        muted: options.muted,
        camera: options.camera,
        screen: options.screen,
        video: options.video,
        saveDir: options.saveDir,
        saveVideo: options.saveVideo,
      },
      { note: (t) => this.note(t), error: (e) => this.printError(e) },
    );
    this.files = new FileClient(this.client, { downloadDir: options.downloadDir ?? undefined });
    this.files.onListenerError = this.client.onListenerError;
    this.watch();
  }

  // ------------------------------------------------------------ output

  private write(stream: NodeJS.WritableStream, raw: string): void {
    const text = this.options.json ? raw : printable(raw);
    const promptShown = this.rl !== null && this.tty && !this.closing;
    if (promptShown || this.progressLine !== null) {
      // The prompt (with the progress line in it) or the progress line alone stays the
      // last line: the event goes above it.
      readline.clearLine(this.io.stdout, 0);
      readline.cursorTo(this.io.stdout, 0);
      stream.write(text + '\n');
      if (promptShown) this.rl!.prompt(true);
      else this.io.stdout.write(this.progressLine!);
    } else {
      stream.write(text + '\n');
    }
  }

  private stamp(at?: number): string {
    return `[${formatTime(at === undefined ? new Date() : new Date(at * 1000))}]`;
  }

  /** `[t] * text`: something happened (human mode only). */
  private note(text: string): void {
    if (!this.options.json) this.write(this.io.stdout, `${this.stamp()} * ${text}`);
  }

  /** Lines without a stamp (tables), human mode only. */
  private lines(lines: string[]): void {
    if (!this.options.json) for (const l of lines) this.write(this.io.stdout, l);
  }

  private json(event: string, fields: Record<string, unknown>): void {
    const line = JSON.stringify({ timestamp: Date.now() / 1000, event, ...fields });
    if (this.heldJson && event !== 'connected' && event !== 'error') this.heldJson.push(line);
    else this.write(this.io.stdout, line);
  }

  /** Pushes that arrive with CONNECT's reply are held until the `connected` line is out, so it comes first. */
  private releaseJson(): void {
    const held = this.heldJson ?? [];
    this.heldJson = null;
    for (const line of held) this.write(this.io.stdout, line);
  }

  private printError(e: unknown, command?: string): void {
    if (this.options.json) this.json('error', { ...(command ? { command } : {}), ...errorJson(e) });
    else this.write(this.io.stderr, `${this.stamp()} ! ${formatError(e)}`);
  }

  private chatLine(e: ChatLine, own = false): string {
    const t = `[${formatTime(new Date(e.timestamp * 1000))}]`;
    if (!e.is_private) return `${t} ${e.username}: ${e.message}`;
    if (own) return `${t} (private to ${this.nameOf(e.recipient ?? '')}) ${e.username}: ${e.message}`;
    return `${t} (private) ${e.username}: ${e.message}`;
  }

  private nameOf(userId: string): string {
    if (userId === this.client.userId) return 'you';
    return this.client.users.get(userId)?.username ?? this.seen.get(userId)?.username ?? userId;
  }

  private byWhom(by: { user_id: string; username: string } | null): string {
    if (!by) return '';
    return by.user_id === this.client.userId ? ' by you' : ` by ${by.username}`;
  }

  private requireAudio(): AudioCall {
    const a = this.media.audio;
    if (!a) throw new ProtocolError('AUDIO_UNAVAILABLE', { reason: 'this client was started with --mic none --speaker none' });
    return a;
  }

  private roomName(roomId: string | null | undefined): string {
    if (!roomId) return 'the room';
    const r = this.client.rooms.get(roomId);
    return r ? `"${r.room_name}"` : `room ${shortId(roomId)}`;
  }

  private inMyRoom(u: UserInfo): boolean {
    return !!this.client.room && u.room_id === this.client.room.room_id;
  }

  private shown(chatId: string): void {
    this.shownChats.add(chatId);
    if (this.shownChats.size > 2000) this.shownChats.delete(this.shownChats.values().next().value!);
  }

  private remember(users: UserInfo[]): void {
    for (const u of users) this.seen.set(u.user_id, u);
  }

  // ------------------------------------------------------------ events

  private watch(): void {
    const c = this.client;
    if (this.options.json) {
      const names: (keyof ClientEvents)[] = [
        'disconnected', 'reconnecting', 'reconnected', 'chat', 'history', 'user_join', 'user_leave', 'user_update',
        'users', 'rooms', 'room_update', 'room', 'reaction', 'muted', 'unmute_requested', 'kicked', 'role_change',
        'meeting_ended', 'room_deleted', 'server_disconnect', 'video_start', 'video_stop', 'screen_share', 'stop_video',
        'files',
      ];
      for (const name of names) {
        c.on(name, (...args: unknown[]) => {
          const fields: Record<string, unknown> = { data: args[0] ?? null };
          if (name === 'user_join' || name === 'user_leave') fields.room_id = args[1] ?? null;
          this.json(name, fields);
        });
      }
      c.on('connected', (info) => {
        if (info.reconnect) this.json('connected', { data: info });
      });
    } else {
      this.watchHuman();
    }
    c.on('users', (users) => this.remember(users));
    c.on('user_join', (u) => this.remember([u]));
    c.on('reconnect_failed', (e) => {
      this.printError(e);
      if (!this.options.json) this.write(this.io.stderr, `${this.stamp()} ! Gave up reconnecting; exiting.`);
      void this.finish(EXIT.failed, false);
    });
    c.on('disconnected', ({ willReconnect }) => {
      // While starting, a failed CONNECT is reported by run() itself.
      if (!willReconnect && !this.closing && this.phase !== 'starting') {
        if (!this.options.json) this.write(this.io.stderr, `${this.stamp()} ! Connection to the server was lost; exiting.`);
        void this.finish(EXIT.failed, false);
      }
    });
    c.on('server_error', (e) => {
      this.printError(e);
      // Another connection holds this session now: reconnecting would only fight it for the session.
      if (e.code === 'SESSION_REPLACED') void this.finish(EXIT.failed);
    });
    c.on('room', (room) => {
      if (this.rl && this.tty) this.rl.setPrompt(this.prompt(room));
    });
  }

  private watchHuman(): void {
    const c = this.client;
    c.on('chat', (e) => {
      this.shown(e.chat_id);
      this.write(this.io.stdout, this.chatLine(e));
    });
    // On join: the last few messages for context. On a rejoin after a reconnect: only what was missed.
    c.on('history', ({ room_id, messages }) => {
      const fresh = messages.filter((m) => !this.shownChats.has(m.chat_id));
      if (fresh.length === 0) return;
      const show = fresh.slice(-10);
      const more = fresh.length > show.length ? ` (/history ${Math.min(1000, messages.length)} shows more)` : '';
      this.note(`${fresh.length === messages.length ? 'Last' : 'Missed'} ${show.length} message${show.length === 1 ? '' : 's'} in ${this.roomName(room_id)}${more}:`);
      for (const m of show) {
        this.shown(m.chat_id);
        this.write(this.io.stdout, this.chatLine(m, m.user_id === c.userId));
      }
    });
    c.on('user_join', (u, roomId) => {
      if (roomId) this.note(`${u.username} joined the room`);
      else if (!c.room) this.note(`${u.username} is online`);
    });
    c.on('user_leave', (d, roomId) => {
      if (roomId) this.note(`${d.username} ${leaveWords(d.reason)}`);
      else if (!c.room) this.note(`${d.username} went offline`);
    });
    c.on('user_update', (u) => {
      const before = this.seen.get(u.user_id);
      this.seen.set(u.user_id, u);
      if (!before || !this.inMyRoom(u) || before.room_id !== u.room_id) return;
      const self = u.user_id === c.userId;
      const who = self ? 'You' : u.username;
      if (before.hand_raised !== u.hand_raised) {
        // Your own raise/lower is told by /hand's reply; only a host lowering it is news.
        if (!self || (!u.hand_raised && this.running?.name !== 'hand')) {
          this.note(self ? 'Your hand was lowered by a host' : `${who} ${u.hand_raised ? 'raised' : 'lowered'} their hand`);
        }
      }
      if (self) return; // the rest of your own changes are told by your commands' replies and by MUTE_USER
      if (before.is_muted_by_host !== u.is_muted_by_host) {
        this.note(u.is_muted_by_host ? `${u.username} was muted by a host` : `${u.username}'s mute was lifted`);
      }
      if (before.is_video_enabled !== u.is_video_enabled) this.note(`${u.username} turned video ${u.is_video_enabled ? 'on' : 'off'}`);
      if (before.is_audio_enabled !== u.is_audio_enabled) this.note(`${u.username} turned audio ${u.is_audio_enabled ? 'on' : 'off'}`);
      if (before.is_screen_sharing !== u.is_screen_sharing) {
        this.note(`${u.username} ${u.is_screen_sharing ? 'started' : 'stopped'} sharing their screen`);
      }
    });
    c.on('room_update', ({ room, change }) => {
      if (change === 'locked') this.note(`${this.quoted(room)} is now locked: nobody else can join`);
      else if (change === 'unlocked') this.note(`${this.quoted(room)} is unlocked`);
      else if (change !== 'host') this.note(`${this.quoted(room)} changed (${change})`);
    });
    c.on('reaction', (r) => this.note(`${r.username} reacts ${r.reaction}`));
    c.on('muted', (m) => this.note(`You were muted${this.byWhom(m.by)}. Raise your hand (/hand) to ask to speak.`));
    c.on('unmute_requested', (m) => this.note(`Your mute was lifted${this.byWhom(m.by)}; you are asked to unmute (/audio on)`));
    c.on('kicked', (k) => this.note(`You were removed from ${this.roomName(k.room_id)}${this.byWhom(k.by)}: ${k.reason}`));
    c.on('role_change', (r) => {
      const self = r.user_id === c.userId;
      let text = `${self ? 'You are' : `${r.username} is`} now ${ROLE_WORDS[r.role]}`;
      if (r.reason === 'host_left') text += ' (the previous host left)';
      else if (r.reason === 'host_transferred' && r.role === 'host') text += ` (handed over${this.byWhom(r.by)})`;
      else text += r.by ? ` (${r.reason.replace(/_/g, ' ')}${this.byWhom(r.by)})` : '';
      this.note(text);
    });
    c.on('meeting_ended', (m) => this.note(`The meeting in ${this.roomName(m.room_id)} was ended${this.byWhom(m.by)}`));
    c.on('room_deleted', (d) => this.note(`${this.roomName(d.room_id)} was deleted${this.byWhom(d.by)}`));
    c.on('server_disconnect', (d) => {
      this.write(this.io.stderr, `${this.stamp()} ! The server is closing the connection: ${d.reason}${d.code ? ` (${d.code})` : ''}`);
    });
    c.on('disconnected', ({ willReconnect }) => {
      if (willReconnect) this.write(this.io.stderr, `${this.stamp()} ! Connection to the server was lost`);
    });
    c.on('reconnecting', ({ attempt, of, delayMs }) =>
      this.note(`Reconnecting (attempt ${attempt} of ${of}) in ${(delayMs / 1000).toFixed(1)} s...`),
    );
    c.on('reconnected', ({ room }) => this.note(room ? `Reconnected; back in "${room.room_name}"` : 'Reconnected (not in a room)'));
    c.on('files', ({ room_id, files, change }) => {
      if (!change) {
        if (files.length) this.note(`${files.length} file${files.length === 1 ? '' : 's'} shared in ${this.roomName(room_id)} (/files lists them)`);
        return;
      }
      const { kind, file, by } = change;
      const self = by?.user_id === c.userId;
      // Only this session uploads or deletes as you: the command's own note tells it
      // (with background transfers, which command is running says nothing).
      if (self) return;
      const who = by?.username ?? null;
      if (kind === 'added') {
        const id = shortId(file.file_id);
        this.note(`${who ?? file.uploader_name} shared "${file.name}" (${formatBytes(file.size)}, id ${id}): /download ${id}`);
      } else if (kind === 'deleted') this.note(who ? `${who} deleted "${file.name}"` : `"${file.name}" was deleted`);
      else this.note(`"${file.name}" expired`);
    });
  }

  private quoted(room: RoomInfo): string {
    return `"${room.room_name}"`;
  }

  private promptText(room: RoomInfo | null = this.client.room): string {
    return room ? `${this.options.user}@${room.room_name}> ` : `${this.options.user}> `;
  }

  /** The prompt, led by the progress line while a transfer runs (so typing is not overwritten by it). */
  private prompt(room: RoomInfo | null = this.client.room): string {
    return (this.progressLine !== null ? `${this.progressLine}  ` : '') + this.promptText(room);
  }

  /** Redraws the prompt (keeping what is typed) after its text changed. */
  private redrawPrompt(): void {
    if (!this.rl || !this.tty || this.closing) return;
    this.rl.setPrompt(this.prompt());
    this.rl.prompt(true);
  }

  // ------------------------------------------------------------ running

  /** Connects, joins --room, then runs the script or the prompt. Resolves with the exit code. */
  async run(script: ScriptLine[] | null): Promise<number> {
    this.unsubscribeSignals = this.io.onSignal((signal) => this.onSignal(signal));
    try {
      const me = await this.client.connect();
      if (this.closing) {
        // Interrupted while connecting (a signal arrived just as connect() resolved).
        await this.client.close().catch(() => undefined);
        return this.done;
      }
      if (this.options.json) {
        this.json('connected', { data: { user: me, host: this.options.server, port: this.options.port } });
        this.releaseJson();
      } else this.note(`Connected to ${this.options.server}:${this.options.port} as ${me.username}${me.is_admin ? ' (admin)' : ''}`);
      this.remember([...this.client.users.values()]);
      if (this.options.room) await this.startRoom(this.options.room);
    } catch (e) {
      this.releaseJson();
      if (!this.closing) {
        if (!(e && typeof e === 'object' && this.reported.has(e))) this.printError(e);
        await this.finish(EXIT.failed);
      }
      return this.done;
    }
    if (script) {
      this.phase = 'script';
      void this.runScript(script);
    } else {
      this.phase = 'interactive';
      if (!this.options.json && this.tty) this.note('Type /help for the commands, Ctrl+C to quit');
      this.readInput(true);
    }
    return this.done;
  }

  private async startRoom(ref: string): Promise<void> {
    const pw = this.options.roomPassword ?? undefined;
    if (this.options.create) {
      const rooms = await this.client.listRooms();
      if (!rooms.some((r) => r.room_name.toLowerCase() === ref.toLowerCase())) {
        await this.runCommand({ name: 'create', room: ref, password: pw, persistent: false });
        return;
      }
    }
    await this.runCommand({ name: 'join', room: ref, password: pw, raw: ref });
  }

  private async runScript(script: ScriptLine[]): Promise<void> {
    for (const { where, cmd } of script) {
      if (this.closing) return;
      try {
        await this.runCommand(cmd);
      } catch (e) {
        if (this.closing) return;
        this.failures++;
        if (!this.options.json) this.write(this.io.stderr, `${this.stamp()} ! ${where} failed`);
        if (!this.options.keepGoing) {
          await this.finish(EXIT.failed);
          return;
        }
      }
    }
    if (this.closing) return;
    if (this.options.stay) {
      this.phase = 'interactive';
      this.note('Script done; staying connected (Ctrl+C or /quit to leave)');
      this.readInput(false);
    } else {
      await this.finish(this.failures ? EXIT.failed : EXIT.ok);
    }
  }

  /** Reads commands from stdin; EOF quits when `quitOnEnd` (interactive), else only stops reading (--stay). */
  private readInput(quitOnEnd: boolean): void {
    const rl = readline.createInterface({
      input: this.io.stdin,
      output: this.tty ? this.io.stdout : undefined,
      terminal: this.tty,
      prompt: this.prompt(),
    });
    this.rl = rl;
    rl.on('line', (line) => {
      this.queue = this.queue.then(() => this.interactiveLine(line));
    });
    // In a terminal readline takes Ctrl+C itself.
    rl.on('SIGINT', () => this.onSignal('SIGINT'));
    rl.on('close', () => {
      if (this.closing) return;
      if (quitOnEnd) this.queue = this.queue.then(() => this.finish(this.failures && this.phase === 'script' ? EXIT.failed : EXIT.ok));
    });
    if (this.tty) rl.prompt();
  }

  private async interactiveLine(line: string): Promise<void> {
    if (this.closing) return;
    let cmd: Command | null;
    try {
      cmd = parseCommand(line);
    } catch (e) {
      this.printError(e);
      return;
    }
    if (cmd && (cmd.name === 'upload' || cmd.name === 'download') && this.phase === 'interactive') {
      // In the background: chat and commands typed meanwhile are not held up by it.
      this.runCommand(cmd, true).catch(() => undefined /* printed by runCommand */);
      this.note(`${cmd.name === 'upload' ? 'Uploading' : 'Downloading'} in the background; go on meanwhile (Ctrl+C cancels it and quits)`);
    } else if (cmd) {
      try {
        await this.runCommand(cmd);
      } catch {
        /* printed by runCommand */
      }
    }
    if (this.rl && this.tty && !this.closing) this.rl.prompt();
  }

  private onSignal(signal: 'SIGINT' | 'SIGTERM'): void {
    if (this.closing) {
      // A second Ctrl+C while saying goodbye: stop waiting.
      this.resolveDone(EXIT.interrupted);
      return;
    }
    void this.finish(this.phase === 'script' ? EXIT.interrupted : this.failures ? EXIT.failed : EXIT.ok, true, `${signal}: disconnecting`);
  }

  /** Disconnects (DISCONNECT is sent when `goodbye`) and resolves `done` with `code`. Idempotent. */
  async finish(code: number, goodbye = true, why?: string): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (why && !this.options.json) this.write(this.io.stderr, `${this.stamp()} ! ${why}`);
    this.rl?.close();
    this.rl = null;
    const transfers = [...this.transfers];
    for (const transfer of transfers) {
      // Cancelled on the server (an upload) or its .part removed (a download) before we go.
      const why = new Error('The transfer was cancelled: the client is closing');
      why.name = 'AbortError';
      transfer.ctl.abort(why);
    }
    await Promise.all(transfers.map((t) => t.settled));
    if (transfers.length && !this.options.json) this.write(this.io.stderr, `${this.stamp()} ! Transfer${transfers.length > 1 ? 's' : ''} cancelled`);
    await this.media.close().catch((e: unknown) => this.printError(e));
    try {
      if (goodbye) await this.client.close();
      else await this.client.close().catch(() => undefined);
    } catch {
      /* closing anyway */
    }
    this.unsubscribeSignals?.();
    this.resolveDone(code);
  }

  /**
   * Runs one command, printing its outcome. A failure is printed and rethrown (the
   * script runner counts it); in JSON mode each success is a `reply` line.
   */
  async runCommand(cmd: Command, background = false): Promise<void> {
    // A background transfer is not "the command running": the prompt's next one is.
    if (!background) this.running = cmd;
    try {
      const data = await this.execute(cmd);
      if (this.options.json && cmd.name !== 'help' && cmd.name !== 'quit') this.json('reply', { command: cmd.name, ok: true, data: data ?? null });
    } catch (e) {
      if (!this.closing) this.printError(e, cmd.name);
      if (e && typeof e === 'object') this.reported.add(e);
      throw e;
    } finally {
      if (!background) this.running = null;
    }
  }

  private async execute(cmd: Command): Promise<unknown> {
    const c = this.client;
    switch (cmd.name) {
      case 'chat': {
        const ack = await c.sendChat(cmd.text);
        this.shown(ack.chat_id);
        const line = { username: c.user?.username ?? this.options.user, message: cmd.text, timestamp: ack.timestamp, is_private: false, recipient: null };
        if (!this.options.json) this.write(this.io.stdout, this.chatLine(line, true));
        return ack;
      }
      case 'msg': {
        const ack = await c.sendPrivate(cmd.to, cmd.text);
        const recipient = c.findUser(cmd.to)?.user_id ?? cmd.to;
        const line = { username: c.user?.username ?? this.options.user, message: cmd.text, timestamp: ack.timestamp, is_private: true, recipient };
        if (!this.options.json) this.write(this.io.stdout, this.chatLine(line, true));
        return ack;
      }
      case 'rooms': {
        const rooms = await c.listRooms();
        if (rooms.length === 0) this.note('No rooms yet. Create one: /create NAME');
        else {
          this.note(`${rooms.length} room${rooms.length === 1 ? '' : 's'}:`);
          this.lines(
            rooms.map((r) => {
              const flags = [r.is_private && 'private', r.is_locked && 'locked', r.is_persistent && 'persistent', r.room_id === c.room?.room_id && 'you are here'].filter(Boolean);
              return `    ${shortId(r.room_id)}  ${`"${r.room_name}"`.padEnd(20)} ${`${r.participant_count}/${r.max_participants}`.padEnd(7)} ${r.host_name ? `host ${r.host_name}` : 'no host'}${flags.length ? `  [${flags.join(', ')}]` : ''}`;
            }),
          );
        }
        return { rooms };
      }
      case 'create': {
        const room = await c.createRoom({ name: cmd.room, password: cmd.password ?? null, maxParticipants: cmd.max, persistent: cmd.persistent });
        this.note(`Created ${cmd.persistent ? 'persistent ' : ''}${room.is_private ? 'private ' : ''}room "${room.room_name}" (id ${shortId(room.room_id)})`);
        const joined = await this.join(room.room_id, cmd.password);
        return { room: joined.room, participants: joined.participants };
      }
      case 'join': {
        let ref = cmd.room;
        let password = cmd.password;
        // `/join team standup` means the room "team standup" when one is called that.
        if (cmd.password !== undefined && cmd.raw !== cmd.room) {
          await c.listRooms();
          const whole = [...c.rooms.values()].filter((r) => r.room_name.toLowerCase() === cmd.raw.toLowerCase());
          if (whole.length === 1) {
            ref = whole[0].room_id;
            password = undefined;
          }
        }
        const r = await this.join(await this.resolveRoom(ref), password);
        return { room: r.room, participants: r.participants };
      }
      case 'leave': {
        const room = c.room;
        await c.leaveRoom();
        this.note(`You left ${room ? this.quoted(room) : 'the room'}`);
        return null;
      }
      case 'users': {
        const inRoom = !!c.room && !cmd.all;
        const users = await c.listUsers(inRoom ? c.room!.room_id : undefined);
        this.remember(users);
        this.note(inRoom ? `${users.length} in ${this.quoted(c.room!)}:` : `${users.length} online:`);
        this.lines(users.map((u) => `    ${this.describeUser(u, !inRoom)}`));
        return { users };
      }
      case 'hand': {
        const up = c.user?.hand_raised === true;
        const r = up ? await c.lowerHand() : await c.raiseHand();
        this.note(r.user.hand_raised ? 'You raised your hand' : 'You lowered your hand');
        return r;
      }
      case 'react': {
        const r = await c.react(cmd.reaction);
        this.note(`You react ${cmd.reaction}`);
        return r;
      }
      case 'mute':
        // The room hears of it through USER_UPDATE; printed there.
        return c.mute(cmd.user);
      case 'unmute':
        return c.unmute(cmd.user);
      case 'muteall': {
        const r = await c.muteAll();
        if (r.muted.length === 0) this.note('Nobody to mute');
        return r;
      }
      case 'kick':
        // USER_LEAVE (reason kicked) tells the room, you included.
        return c.kick(cmd.user, cmd.reason);
      case 'lock':
        return c.lockRoom(true);
      case 'unlock':
        return c.lockRoom(false);
      case 'promote':
        return c.promote(cmd.user);
      case 'demote':
        return c.demote(cmd.user);
      case 'host':
        return c.transferHost(cmd.user);
      case 'end':
        await c.endMeeting();
        return null;
      case 'history': {
        const r = await c.chatHistory(cmd.limit);
        if (r.messages.length === 0) this.note(`No messages in ${this.roomName(r.room_id)} yet`);
        else {
          this.note(`Last ${r.messages.length} message${r.messages.length === 1 ? '' : 's'} in ${this.roomName(r.room_id)}:`);
          for (const m of r.messages) if (!this.options.json) this.write(this.io.stdout, this.chatLine(m, m.user_id === c.userId));
        }
        return r;
      }
      case 'video':
        await this.media.set('camera', cmd.on);
        return { video: cmd.on };
      case 'screen':
        await this.media.set('screen', cmd.on);
        return { screen: cmd.on };
      case 'stop-video': {
        const r = await c.stopVideo(cmd.user, cmd.kind);
        this.note(`${r.user.username}'s ${cmd.kind === 'screen' ? 'screen share' : 'camera'} is off`);
        return r;
      }
      case 'video-set': {
        const v = this.media.video;
        if (cmd.width && cmd.height) v.setSize(cmd.width, cmd.height);
        if (cmd.fps) v.setFps(cmd.fps);
        if (cmd.quality) v.setQuality(cmd.quality);
        const s = v.settings;
        this.note(`Video settings: ${s.width}x${s.height}, ${s.fps} fps, quality ${s.quality}`);
        return { ...s };
      }
      case 'stats': {
        const lines = this.media.statsLines();
        this.lines(lines);
        return { lines };
      }
      case 'audio':
      case 'self-mute': {
        const on = cmd.name === 'audio' ? cmd.on : !cmd.on;
        const a = this.media.audio;
        // Without audio devices the flag is still signalled, as the original client did.
        if (!a) return c.setAudio(on);
        if (on) await a.unmute();
        else await a.mute();
        return { muted: a.muted, sending: a.sending };
      }
      case 'volume': {
        const a = this.requireAudio();
        const u = c.findUser(cmd.user);
        if (!u) throw new ProtocolError('USER_NOT_FOUND', { user: cmd.user });
        a.setVolume(u.user_id, cmd.percent / 100);
        this.note(`You hear ${u.username} at ${cmd.percent}%`);
        return { user_id: u.user_id, volume: cmd.percent };
      }
      case 'ns': {
        const a = this.requireAudio();
        await a.setNs(cmd.on);
        this.note(`Noise suppression is ${a.settings.ns ? 'on' : 'off'}`);
        return { ns: a.settings.ns };
      }
      case 'aec': {
        const a = this.requireAudio();
        a.setAec(cmd.on);
        this.note(`Echo cancellation is ${cmd.on ? 'on' : 'off'}`);
        return { aec: cmd.on };
      }
      case 'levels': {
        const lines = this.media.levelLines();
        this.lines(lines);
        return { lines, levels: this.media.audio?.levels() ?? null, active_speaker: c.activeSpeaker };
      }
      case 'upload': {
        const started = performance.now();
        const file = await this.transferring('upload', (signal, onProgress) => this.files.upload(expandHome(cmd.path), { signal, onProgress }));
        this.note(`You shared "${file.name}" (${formatBytes(file.size)}${this.took(file.size, started)}; id ${shortId(file.file_id)}, MD5 ${file.md5})`);
        return { file };
      }
      case 'download': {
        const started = performance.now();
        const dest = cmd.dest === undefined ? undefined : expandHome(cmd.dest);
        const r = await this.transferring('download', (signal, onProgress) => this.files.download(cmd.file, dest, { signal, onProgress }));
        this.note(`Saved "${r.file.name}" as ${r.path} (${formatBytes(r.file.size)}${this.took(r.file.size, started)}; MD5 verified)`);
        return { file: r.file, path: r.path };
      }
      case 'files': {
        const files = await c.listFiles();
        const where = this.roomName(c.room?.room_id);
        if (files.length === 0) this.note(`No files in ${where} yet. Share one: /upload PATH`);
        else {
          this.note(`${files.length} file${files.length === 1 ? '' : 's'} in ${where} (/download ID to get one):`);
          const nameWidth = Math.min(40, Math.max(...files.map((f) => [...f.name].length)));
          const sizeWidth = Math.max(...files.map((f) => formatBytes(f.size).length));
          const uploaderWidth = Math.max(...files.map((f) => [...f.uploader_name].length));
          this.lines(
            files.map((f) => {
              const name = f.name + ' '.repeat(Math.max(0, nameWidth - [...f.name].length));
              const up = f.uploader_name + ' '.repeat(Math.max(0, uploaderWidth - [...f.uploader_name].length));
              return `    ${shortId(f.file_id)}  ${name}  ${formatBytes(f.size).padStart(sizeWidth)}  ${up}  ${formatTime(new Date(f.uploaded_at * 1000))}`;
            }),
          );
        }
        return { files };
      }
      case 'delete': {
        const id = c.resolveFile(cmd.file);
        const known = c.files.find((f) => f.file_id === id);
        const r = await c.deleteFile(id);
        this.note(`You deleted ${known ? `"${known.name}"` : `file ${shortId(r.file_id)}`}`);
        return r;
      }
      case 'wait':
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, cmd.seconds * 1000);
          void this.done.then(() => {
            clearTimeout(t);
            resolve();
          });
        });
        return { seconds: cmd.seconds };
      case 'help':
        if (this.options.json) this.json('help', { commands: COMMANDS.map((s) => ({ usage: s.usage, help: s.help })) });
        else this.lines(['Commands:', ...commandHelp().map((l) => `    ${l}`), `    ${'TEXT'.padEnd(USAGE_COLUMN)} chat to your room (//text sends /text)`]);
        return null;
      case 'quit':
        await this.finish(this.failures ? EXIT.failed : EXIT.ok);
        return null;
    }
  }

  /**
   * Runs one transfer with progress shown the way the output allows, abortable by
   * finish() (Ctrl+C, /quit from another source, a lost connection).
   */
  private async transferring<T>(
    op: 'upload' | 'download',
    run: (signal: AbortSignal, onProgress: (p: TransferProgress) => void) => Promise<T>,
  ): Promise<T> {
    const ctl = new AbortController();
    const shown = { quarter: 0, jsonAt: 0 };
    const onRetry = (r: { op: string; name: string; failures: number; of: number; delayMs: number; reason: string }) => {
      if (this.options.json) this.json('transfer_retry', { data: r });
      else this.write(this.io.stderr, `${this.stamp()} ! ${op === 'upload' ? 'Upload' : 'Download'} of "${r.name}" interrupted (${r.reason}); resuming in ${(r.delayMs / 1000).toFixed(1)} s (try ${r.failures} of ${r.of})`);
    };
    this.files.on('retry', onRetry);
    const p = run(ctl.signal, (pr) => this.showProgress(pr, shown));
    const entry = { ctl, settled: p.catch(() => undefined) };
    this.transfers.add(entry);
    try {
      return await p;
    } finally {
      this.files.off('retry', onRetry);
      this.transfers.delete(entry);
      if (this.transfers.size === 0) this.clearProgress();
    }
  }

  /** Terminal: one line redrawn in place. Pipes: a note every 25%. JSON: at most two lines a second, and the last. */
  private showProgress(p: TransferProgress, shown: { quarter: number; jsonAt: number }): void {
    const last = p.done >= p.size && p.eta_s === 0;
    if (this.options.json) {
      const now = performance.now();
      if (!last && now - shown.jsonAt < 500) return;
      shown.jsonAt = now;
      this.json('progress', { data: p });
      return;
    }
    if (this.ttyOut) {
      const columns = (this.io.stdout as { columns?: number }).columns ?? 80;
      const atPrompt = this.rl !== null && this.tty;
      // At the prompt the line shares the row with the prompt and what is being typed.
      const width = Math.max(40, columns - 1 - (atPrompt ? this.promptText().length + 20 : 0));
      this.progressLine = formatProgress(printable(p.name) === p.name ? p : { ...p, name: printable(p.name) }, width);
      if (atPrompt) this.redrawPrompt();
      else {
        readline.clearLine(this.io.stdout, 0);
        readline.cursorTo(this.io.stdout, 0);
        this.io.stdout.write(this.progressLine);
      }
      return;
    }
    const quarter = Math.floor(fraction(p.done, p.size) * 4);
    if (quarter <= shown.quarter) return;
    shown.quarter = quarter;
    const eta = p.done < p.size && p.eta_s !== null ? `, ETA ${formatDuration(p.eta_s)}` : '';
    const attempt = p.attempt > 1 ? `, connection ${p.attempt}` : '';
    this.note(`${p.op === 'upload' ? 'Uploading' : 'Downloading'} "${p.name}": ${quarter * 25}% (${formatAmount(p.done, p.size)}, ${formatBytes(p.rate_bps)}/s${eta}${attempt})`);
  }

  private clearProgress(): void {
    if (this.progressLine === null) return;
    this.progressLine = null;
    if (this.rl && this.tty) return this.redrawPrompt();
    // In a script the prompt is not shown: the line is only cleared.
    readline.clearLine(this.io.stdout, 0);
    readline.cursorTo(this.io.stdout, 0);
  }

  /** `, 1.2 s at 85.3 MB/s` for a completion note. */
  private took(bytes: number, startedMs: number): string {
    const s = (performance.now() - startedMs) / 1000;
    return s >= 0.05 ? ` in ${s.toFixed(1)} s, ${formatBytes(bytes / s)}/s` : '';
  }

  private async join(roomId: string, password: string | undefined): Promise<{ room: RoomInfo; participants: UserInfo[] }> {
    const r = await this.client.joinRoom(roomId, password ?? null);
    this.remember(r.participants);
    const me = r.participants.find((p) => p.user_id === this.client.userId);
    const others = r.participants.filter((p) => p.user_id !== this.client.userId);
    const who = others.length ? `; here: ${others.map((p) => `${p.username}${p.role && p.role !== 'participant' ? ` (${p.role})` : ''}`).join(', ')}` : '; nobody else is here yet';
    this.note(`You joined "${r.room.room_name}" (id ${shortId(r.room.room_id)})${me?.role ? ` as ${ROLE_WORDS[me.role]}` : ''}${who}`);
    return r;
  }

  /** A room by id, unique name (any case) or unique id prefix; an ambiguous name is refused. */
  private async resolveRoom(ref: string): Promise<string> {
    const rooms = await this.client.listRooms();
    if (rooms.some((r) => r.room_id === ref)) return ref;
    const named = rooms.filter((r) => r.room_name.toLowerCase() === ref.toLowerCase());
    if (named.length === 1) return named[0].room_id;
    if (named.length > 1) {
      throw new ProtocolError(
        'ROOM_NOT_FOUND',
        { room_id: ref },
        `${named.length} rooms are named "${ref}" (ids ${named.map((r) => shortId(r.room_id)).join(', ')}); give the id`,
      );
    }
    const prefixed = rooms.filter((r) => r.room_id.startsWith(ref));
    if (prefixed.length === 1) return prefixed[0].room_id;
    // Unknown: the server answers ROOM_NOT_FOUND with its hint.
    return ref;
  }

  private describeUser(u: UserInfo, showRoom: boolean): string {
    const tags = [
      u.user_id === this.client.userId && 'you',
      u.role && u.role !== 'participant' && u.role,
      u.is_admin && 'admin',
    ].filter(Boolean);
    const state = [
      u.hand_raised && 'hand raised',
      u.is_muted_by_host && 'muted by host',
      u.is_video_enabled && 'video on',
      u.is_audio_enabled && 'audio on',
      u.is_screen_sharing && 'sharing screen',
      showRoom && (u.room_id ? `in ${this.roomName(u.room_id)}` : 'in no room'),
    ].filter(Boolean);
    return `${u.username}${tags.length ? ` (${tags.join(', ')})` : ''}${state.length ? ` - ${state.join(', ')}` : ''}`;
  }
}

// ================================================================ entry

/** Reads --exec/--script into commands; a line that does not parse is a usage error (nothing runs). */
export function loadScript(options: CliOptions, io: Pick<CliIo, 'readFile'>): ScriptLine[] | null {
  let lines: { where: string; text: string }[];
  if (options.exec !== null) {
    lines = splitExec(options.exec).map((text, i) => ({ where: `--exec command ${i + 1} (${text})`, text }));
  } else if (options.script !== null) {
    let text: string;
    try {
      text = io.readFile(options.script);
    } catch (e) {
      throw new CliUsageError(`cannot read --script ${options.script}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    lines = scriptLines(text).map((l) => ({ where: `${options.script}:${l.line} (${l.text})`, text: l.text }));
  } else return null;
  return lines.map(({ where, text }) => {
    try {
      return { where, cmd: parseCommand(text)! };
    } catch (e) {
      throw new CliUsageError(`${where}: ${(e as Error).message}`);
    }
  });
}

/** Asks in the terminal; null when the answer is empty or input ended, 'interrupted' on Ctrl+C. */
function ask(io: CliIo, question: string): Promise<string | null | 'interrupted'> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: io.stdin, output: io.stdout, terminal: true });
    let settled = false;
    const settle = (v: string | null | 'interrupted') => {
      if (settled) return;
      settled = true;
      rl.close();
      resolve(v);
    };
    rl.question(question, (a) => settle(a.trim() || null));
    rl.on('close', () => settle(null));
    rl.on('SIGINT', () => {
      io.stdout.write('\n');
      settle('interrupted');
    });
  });
}

/** --list-devices: what PortAudio sees, as --mic / --speaker take it (name or id). */
function listDevices(io: CliIo): number {
  let devices: ReturnType<typeof listAudioDevices>;
  try {
    devices = listAudioDevices();
  } catch (e) {
    const err = e as Error & { hint?: string };
    io.stderr.write(`error: ${err.message}${err.hint ? `. ${err.hint}` : ''}\n`);
    return EXIT.failed;
  }
  const row = (d: (typeof devices)[number], ch: number) =>
    `  ${String(d.id).padStart(3)}  ${d.name}  (${d.hostApi}, ${ch} channel${ch === 1 ? '' : 's'}, ${d.defaultSampleRate} Hz)`;
  const inputs = devices.filter((d) => d.maxInputChannels > 0);
  const outputs = devices.filter((d) => d.maxOutputChannels > 0);
  io.stdout.write(
    [
      'Microphones (--mic ID or NAME):',
      ...(inputs.length ? inputs.map((d) => row(d, d.maxInputChannels)) : ['  none']),
      'Speakers (--speaker ID or NAME):',
      ...(outputs.length ? outputs.map((d) => row(d, d.maxOutputChannels)) : ['  none']),
      'Also: --mic file:PATH (a looped sound file), and none for either.',
    ].join('\n') + '\n',
  );
  return EXIT.ok;
}

/**
 * Runs the client with parsed options; resolves with the exit code. Usage errors
 * (bad script, missing --user) are printed to stderr and give 2.
 */
export async function runCli(options: CliOptions, io: CliIo = processIo()): Promise<number> {
  if (options.listDevices) return listDevices(io);
  let script: ScriptLine[] | null;
  try {
    script = loadScript(options, io);
    if (script && script.length === 0) throw new CliUsageError(`${options.exec !== null ? '--exec' : '--script'} has no commands`);
  } catch (e) {
    if (e instanceof CliUsageError) {
      io.stderr.write(`error: ${e.message}\nrun with --help for usage\n`);
      return EXIT.usage;
    }
    throw e;
  }
  let user = options.user;
  if (user === null && !script && io.stdin.isTTY && io.stdout.isTTY) {
    const answer = await ask(io, 'Your name: ');
    if (answer === 'interrupted') return EXIT.interrupted;
    user = answer;
  }
  if (user === null) {
    io.stderr.write('error: --user NAME is required\nrun with --help for usage\n');
    return EXIT.usage;
  }
  const session = new CliSession({ ...options, user }, io);
  return session.run(script);
}
