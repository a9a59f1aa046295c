/**
 * run_client.ts as a real child process against a real in-process server (port 0),
 * with library clients from the Harness on the other side. The command parser is
 * also checked in-process (client/cli.ts).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../shared/errors';
import type { Server } from '../../server/main_server';
import type { Client } from '../../client/main_client';
import {
  CLI_FLAGS,
  COMMANDS,
  CliUsageError,
  CommandUsageError,
  parseCliArgs,
  parseCommand,
  printable,
  scriptLines,
  splitExec,
} from '../../client/cli';
import { Harness, tmpDataDir, waitUntil } from '../kit/server';
import { killAll, runCli, type RunningProcess } from '../kit/processes';

const ROOT = path.resolve(__dirname, '..', '..');

type CliProcess = RunningProcess;

const procs: CliProcess[] = [];
const h = new Harness();
const dirs: string[] = [];

afterEach(async () => {
  await killAll(procs);
  await h.closeAll();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** run_client.ts as a child process, with no password taken from the environment unless given. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const p = runCli(args, env);
  procs.push(p);
  return p;
}

/** The CLI's flags to reach `server` as `user`. */
const to = (server: Server, user: string, ...more: string[]) => ['--port', String(server.port), '--user', user, ...more];

/** A port nothing listens on (bound a moment ago, then closed). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address() as net.AddressInfo;
      s.close(() => resolve(a.port));
    });
  });
}

/** Joins the room named `name` once it exists. */
async function joinByName(c: Client, name: string): Promise<void> {
  await waitUntil(() => [...c.rooms.values()].some((r) => r.room_name === name), 10_000, `room "${name}"`);
  await c.joinRoom(name);
}

/** `! CODE: message. hint` as the CLI prints a registry error. */
function errorLine(code: keyof typeof ERROR_CODES): RegExp {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`! ${code}: .*${esc(ERROR_CODES[code].hint)}`);
}

describe('client/cli.ts command parsing', () => {
  it('reads slash commands, chat lines and their arguments', () => {
    expect(parseCommand('hello world')).toEqual({ name: 'chat', text: 'hello world' });
    expect(parseCommand('//not a command')).toEqual({ name: 'chat', text: '/not a command' });
    expect(parseCommand('   ')).toBeNull();
    expect(parseCommand('/msg bob see you at 5')).toEqual({ name: 'msg', to: 'bob', text: 'see you at 5' });
    expect(parseCommand('/msg "Bob Smith" hi')).toEqual({ name: 'msg', to: 'Bob Smith', text: 'hi' });
    expect(parseCommand('/kick bob spamming the chat')).toEqual({ name: 'kick', user: 'bob', reason: 'spamming the chat' });
    expect(parseCommand('/kick bob')).toEqual({ name: 'kick', user: 'bob', reason: undefined });
    expect(parseCommand('/create team standup --private s3cret --max 5 --persistent')).toEqual({
      name: 'create',
      room: 'team standup',
      password: 's3cret',
      max: 5,
      persistent: true,
    });
    expect(parseCommand('/join 1a2b pw')).toEqual({ name: 'join', room: '1a2b', password: 'pw', raw: '1a2b pw' });
    expect(parseCommand('/HISTORY 5')).toEqual({ name: 'history', limit: 5 });
    expect(parseCommand('/history')).toEqual({ name: 'history', limit: 20 });
    // The server answers at most 200 a page: more is refused here, before it is sent.
    expect(parseCommand('/history 200')).toEqual({ name: 'history', limit: 200 });
    expect(() => parseCommand('/history 201')).toThrow(CommandUsageError);
    expect(parseCommand('/video off')).toEqual({ name: 'video', on: false });
    expect(parseCommand('/wait 0.5')).toEqual({ name: 'wait', seconds: 0.5 });
    expect(parseCommand('/react 👍')).toEqual({ name: 'react', reaction: '👍' });
  });

  it('refuses unknown commands and wrong arguments with the usage', () => {
    expect(() => parseCommand('/frobnicate')).toThrow(/unknown command \/frobnicate/);
    expect(() => parseCommand('/msg bob')).toThrow(/usage: \/msg USER TEXT/);
    expect(() => parseCommand('/video maybe')).toThrow(/usage: \/video on\|off/);
    expect(() => parseCommand('/create --max x demo')).toThrow(CommandUsageError);
    expect(() => parseCommand('/mute bob cat')).toThrow(/usage: \/mute \[USER\]/);
    expect(() => parseCommand('/msg "bob hi')).toThrow(/unclosed quote/);
    expect(() => parseCommand('/wait soon')).toThrow(/usage: \/wait SECONDS/);
  });

  it('makes text from others safe for a terminal', () => {
    expect(printable('two\nlines')).toBe('two\n    lines');
    expect(printable('red \u001b[31malert\u0007 \u202eevil')).toBe('red \ufffd[31malert\ufffd \ufffdevil');
    expect(printable('tab\tand emoji 👍 ok')).toBe('tab\tand emoji 👍 ok');
  });

  it('splits --exec on ";" (\\; is literal) and drops # comments from scripts', () => {
    expect(splitExec('/create demo; hello world;; /users ; /quit')).toEqual(['/create demo', 'hello world', '/users', '/quit']);
    expect(splitExec('a\\; b; c')).toEqual(['a; b', 'c']);
    expect(scriptLines('# setup\n/create demo\n\n  # note\nhello\r\n')).toEqual([
      { line: 2, text: '/create demo' },
      { line: 5, text: 'hello' },
    ]);
  });

  it('parses flags with their defaults, and refuses wrong ones', () => {
    const { options } = parseCliArgs(['--user', 'alice']);
    expect(options).toMatchObject({ server: '127.0.0.1', port: 8888, user: 'alice', reconnectAttempts: 3, json: false });
    expect(parseCliArgs(['-u', 'a', '--password', 'pw']).options.password).toBe('pw');
    expect(parseCliArgs(['-u', 'a'], { LVC_SERVER_PASSWORD: 'from-env' }).options.password).toBe('from-env');
    expect(() => parseCliArgs(['--port', 'eighty'])).toThrow(CliUsageError);
    expect(() => parseCliArgs(['--frob'])).toThrow(/unknown flag --frob/);
    expect(() => parseCliArgs(['--create'])).toThrow(/--create needs --room/);
    expect(() => parseCliArgs(['--exec', '/rooms', '--script', 'x'])).toThrow(/either --exec or --script/);
  });
});

// Each case starts one or more ts-node processes (1-2 s each, more on a busy machine).
describe('run_client.ts', { timeout: 60_000 }, () => {
  it('--help lists every flag and every command and exits 0', async () => {
    const p = cli(['--help']);
    expect(await p.exited).toBe(0);
    for (const f of CLI_FLAGS) expect(p.stdout()).toContain(`--${f.flag}`);
    for (const c of COMMANDS) expect(p.stdout()).toContain(c.usage);
    for (const flag of ['--server', '--port', '--user', '--room', '--create', '--password', '--room-password', '--admin-password', '--reconnect-attempts', '--exec', '--script', '--keep-going', '--stay', '--json']) {
      expect(p.stdout()).toContain(flag);
    }
  });

  it('an unknown flag prints the error and "run with --help", exit 2', async () => {
    const p = cli(['--user', 'x', '--colour']);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/unknown flag --colour/);
    expect(p.stderr()).toMatch(/run with --help/);
  });

  it('a script line that does not parse is refused before connecting, exit 2', async () => {
    const p = cli(['--user', 'x', '--port', String(await closedPort()), '--exec', '/create demo; /frobnicate']);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/--exec command 2 \(\/frobnicate\): unknown command/);
    expect(p.stderr()).not.toMatch(/CONNECT_FAILED/);
  });

  it('connecting to a closed port prints CONNECT_FAILED with its hint, exit 1', async () => {
    const port = await closedPort();
    const p = cli(['--user', 'alice', '--port', String(port), '--exec', '/rooms']);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toContain(`CONNECT_FAILED: Could not connect to 127.0.0.1:${port}`);
    expect(p.stderr()).toContain(ERROR_CODES.CONNECT_FAILED.hint);
  });

  it('--exec "/create demo; hello world; /users; /quit": the room is made and a library client in it gets the chat', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    // bob joins the moment the room exists (the server announces it before it answers the CLI).
    server.on('room_update', (room) => {
      if (room.room_name === 'demo' && !bob.room) void bob.joinRoom(room.room_id).catch(() => undefined);
    });
    const chat = bob.waitFor('chat', 20_000);
    const p = cli(to(server, 'alice', '--exec', '/create demo; hello world; /users; /quit'));
    expect(await p.exited).toBe(0);
    const [entry] = await chat;
    expect(entry).toMatchObject({ username: 'alice', message: 'hello world', is_private: false, room_id: bob.room?.room_id });
    expect(p.stdout()).toMatch(/Created room "demo"/);
    expect(p.stdout()).toMatch(/\[\d\d:\d\d:\d\d\] alice: hello world/);
    expect(p.stdout()).toMatch(/2 in "demo":[\s\S]*alice \(you/);
    expect(p.stdout()).toMatch(/\n\s+bob/);
    expect(p.stderr()).toBe('');
    // /quit said goodbye: bob saw alice leave by DISCONNECT, not by a dropped link.
    await waitUntil(() => !bob.users.has(entry.user_id), 5000, 'alice offline');
  });

  it('/msg sends a private message, and one received is printed as private', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    const got = bob.waitFor('chat', 20_000);
    const p = cli(to(server, 'alice'));
    await p.waitFor(/Connected to 127\.0\.0\.1:\d+ as alice/);
    p.type('/msg bob meet me at 5');
    const [entry] = await got;
    expect(entry).toMatchObject({ username: 'alice', message: 'meet me at 5', is_private: true, recipient: bob.userId });
    await p.waitFor(/\(private to bob\) alice: meet me at 5/);
    await bob.sendPrivate('alice', 'ok, see you');
    await p.waitFor(/\[\d\d:\d\d:\d\d\] \(private\) bob: ok, see you/);
    p.proc.stdin!.end();
    expect(await p.exited).toBe(0);
  });

  it('host actions from a CLI host reach a library client: mute, promote, lock, kick', async () => {
    const server = await h.server();
    const p = cli(to(server, 'alice', '--room', 'standup', '--create'));
    await p.waitFor(/You joined "standup" \(id [0-9a-f]{8}\) as the host/);
    const bob = await h.client(server, 'bob');
    await joinByName(bob, 'standup');
    await p.waitFor(/\* bob joined the room/);

    const muted = bob.waitFor('muted');
    p.type('/mute bob');
    expect((await muted)[0].by.username).toBe('alice');
    await p.waitFor(/bob was muted by a host/);

    const role = bob.waitFor('role_change');
    p.type('/promote bob');
    expect((await role)[0]).toMatchObject({ username: 'bob', role: 'moderator', previous_role: 'participant' });
    await p.waitFor(/bob is now a moderator \(promoted by you\)/);

    p.type('/lock');
    await p.waitFor(/"standup" is now locked/);
    const carol = await h.client(server, 'carol');
    await expect(carol.joinRoom(bob.room!.room_id)).rejects.toMatchObject({ code: 'ROOM_LOCKED' });

    const kicked = bob.waitFor('kicked');
    p.type('/kick bob talking over everyone');
    expect((await kicked)[0]).toMatchObject({ reason: 'talking over everyone', by: { username: 'alice' } });
    await p.waitFor(/\* bob was removed from the room/);
    expect(bob.room).toBeNull();

    p.type('/quit');
    expect(await p.exited).toBe(0);
    expect(p.stderr()).toBe('');
  });

  it('a non-host /kick prints PERMISSION_DENIED with its hint and exits 1; --keep-going runs the rest', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    const room = await bob.createRoom({ name: 'bobs room' });
    await bob.joinRoom(room.room_id);

    const p = cli(to(server, 'alice', '--room', 'bobs room', '--exec', '/kick bob; never sent'));
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(errorLine('PERMISSION_DENIED'));
    expect(p.stderr()).toContain(`PERMISSION_DENIED: Only the host or a moderator can remove people. ${ERROR_CODES.PERMISSION_DENIED.hint}`);
    expect(p.stderr()).toMatch(/--exec command 1 \(\/kick bob\) failed/);
    expect(bob.room?.room_id).toBe(room.room_id);

    const chat = bob.waitFor('chat', 20_000);
    const q = cli(to(server, 'carol', '--room', 'bobs room', '--keep-going', '--exec', '/kick bob; sent anyway'));
    expect((await chat)[0]).toMatchObject({ username: 'carol', message: 'sent anyway' });
    expect(await q.exited).toBe(1);
    expect(q.stderr()).toMatch(errorLine('PERMISSION_DENIED'));
  });

  it('joining a locked room prints ROOM_LOCKED with what to do next', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    const room = await bob.createRoom({ name: 'x' });
    await bob.joinRoom(room.room_id);
    await bob.lockRoom(true);
    const p = cli(to(server, 'alice', '--exec', `/join ${room.room_id.slice(0, 8)}`));
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/\[\d\d:\d\d:\d\d\] ! ROOM_LOCKED: Room "x" is locked\. Ask the host to unlock the room\./);
  });

  it('joins a private room with its password; a wrong one prints WRONG_ROOM_PASSWORD and its hint', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    const room = await bob.createRoom({ name: 'team secret', password: 'open sesame' });
    await bob.joinRoom(room.room_id, 'open sesame');

    const wrong = cli(to(server, 'alice', '--exec', '/join "team secret" guess'));
    expect(await wrong.exited).toBe(1);
    expect(wrong.stderr()).toMatch(errorLine('WRONG_ROOM_PASSWORD'));

    const chat = bob.waitFor('chat', 20_000);
    const right = cli(to(server, 'carol', '--room', 'team secret', '--room-password', 'open sesame', '--exec', 'in at last'));
    expect((await chat)[0]).toMatchObject({ username: 'carol', message: 'in at last' });
    expect(await right.exited).toBe(0);
    expect(right.stdout()).toMatch(/You joined "team secret" .*here: bob \(host\)/);
  });

  it('/join takes an unquoted room name with spaces, and an id prefix', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    const room = await bob.createRoom({ name: 'team standup' });
    await bob.joinRoom(room.room_id);
    const chats: string[] = [];
    bob.on('chat', (e) => chats.push(e.message));
    const p = cli(to(server, 'alice', '--exec', `/join team standup; by name; /leave; /join ${room.room_id.slice(0, 6)}; by prefix`));
    expect(await p.exited).toBe(0);
    await waitUntil(() => chats.length === 2, 5000, 'two chats');
    expect(chats).toEqual(['by name', 'by prefix']);
  });

  it('--json prints one JSON object per line: connected, replies, events and errors', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    server.on('room_update', (room) => {
      if (room.room_name === 'j' && !bob.room) void bob.joinRoom(room.room_id).catch(() => undefined);
    });
    const p = cli(to(server, 'alice', '--json', '--keep-going', '--exec', '/create j; hi; /users; /kick nobody; /quit'));
    expect(await p.exited).toBe(1);
    const lines = p.stdout().trim().split('\n');
    const events = lines.map((l) => JSON.parse(l) as { event: string; timestamp: number; [k: string]: any });
    for (const e of events) expect(typeof e.timestamp).toBe('number');
    expect(events[0]).toMatchObject({ event: 'connected', data: { user: { username: 'alice' } } });
    const create = events.find((e) => e.event === 'reply' && e.command === 'create');
    expect(create?.data.room.room_name).toBe('j');
    expect(events.find((e) => e.event === 'reply' && e.command === 'chat')?.data.chat_id).toEqual(expect.any(String));
    expect(events.find((e) => e.event === 'reply' && e.command === 'users')?.data.users.map((u: { username: string }) => u.username).sort()).toEqual(['alice', 'bob']);
    expect(events.find((e) => e.event === 'error')).toMatchObject({
      command: 'kick',
      code: 'USER_NOT_FOUND',
      hint: ERROR_CODES.USER_NOT_FOUND.hint,
    });
  });

  it('--script FILE (with # comments) then --stay prints events until SIGTERM, exit 0', async () => {
    const server = await h.server();
    const d = tmpDataDir('lanvc-cli-');
    dirs.push(d);
    const file = path.join(d, 'meeting.txt');
    fs.writeFileSync(file, '# set up the room\n/create scripted --persistent\n\n# say hi\nhi from the script\n/history 5\n');
    const p = cli(to(server, 'alice', '--script', file, '--stay'));
    await p.waitFor(/Script done; staying connected/);
    expect(p.stdout()).toMatch(/Last 1 message in "scripted":\n\[\d\d:\d\d:\d\d\] alice: hi from the script/);
    const bob = await h.client(server, 'bob');
    await joinByName(bob, 'scripted');
    await p.waitFor(/\* bob joined the room/);
    await bob.sendChat('hello alice');
    await p.waitFor(/\[\d\d:\d\d:\d\d\] bob: hello alice/);
    await bob.react('🎉');
    await p.waitFor(/bob reacts 🎉/);
    await bob.raiseHand();
    await p.waitFor(/bob raised their hand/);
    const left = bob.waitFor('user_leave');
    p.proc.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect((await left)[0]).toMatchObject({ username: 'alice', reason: 'disconnected' });
  });

  it('Ctrl+C (SIGINT) at the prompt sends DISCONNECT and exits 0', async () => {
    const server = await h.server();
    const bob = await h.client(server, 'bob');
    const room = await bob.createRoom({ name: 'r' });
    await bob.joinRoom(room.room_id);
    const p = cli(to(server, 'alice', '--room', 'r'));
    await p.waitFor(/You joined "r" .*as a participant; here: bob \(host\)/);
    const left = bob.waitFor('user_leave');
    p.proc.kill('SIGINT');
    expect(await p.exited).toBe(0);
    // 'disconnected' is what the server records for a DISCONNECT; a dropped link says otherwise.
    expect((await left)[0]).toMatchObject({ username: 'alice', reason: 'disconnected' });
  });

  it('prints role changes, the host hand-over and the end of the meeting', async () => {
    const server = await h.server();
    const p = cli(to(server, 'alice', '--room', 'handover', '--create'));
    await p.waitFor(/as the host/);
    const bob = await h.client(server, 'bob');
    await joinByName(bob, 'handover');
    await p.waitFor(/bob joined the room/);
    p.type('/host bob');
    await p.waitFor(/bob is now the host \(handed over by you\)/);
    await p.waitFor(/You are now a participant/);
    await bob.promote('alice');
    await p.waitFor(/You are now a moderator \(promoted by bob\)/);
    await bob.mute('alice');
    await p.waitFor(/You were muted by bob/);
    await bob.endMeeting();
    await p.waitFor(/The meeting in "handover" was ended by bob/);
    p.type('hello?');
    await p.waitFor(errorLine('NOT_IN_ROOM'));
    p.proc.stdin!.end();
    expect(await p.exited).toBe(0);
  });

  it('prints "reconnecting" and "reconnected" when the server restarts, and is back in its room', async () => {
    const dataDir = tmpDataDir();
    dirs.push(dataDir);
    const first = await h.server({ dataDir });
    const port = first.port;
    const bob = await h.client(first, 'bob');
    const room = await bob.createRoom({ name: 'keep', persistent: true });
    await bob.joinRoom(room.room_id);
    const p = cli(['--port', String(port), '--user', 'alice', '--room', room.room_id, '--reconnect-attempts', '20']);
    await p.waitFor(/You joined "keep"/);
    await first.close();
    // Told by a DISCONNECT push or a SERVER_SHUTTING_DOWN error, depending on the server.
    await p.waitFor(/! .*The server is shutting down/);
    await p.waitFor(/Reconnecting \(attempt 1 of 20\)/);
    await h.server({ dataDir, port });
    await p.waitFor(/Reconnected; back in "keep"/, 25_000);
    p.type('/quit');
    expect(await p.exited).toBe(0);
  });

  it('--reconnect-attempts 0: a lost server ends the CLI with exit 1', async () => {
    const server = await h.server();
    const p = cli(to(server, 'alice', '--reconnect-attempts', '0'));
    await p.waitFor(/Connected to/);
    await server.close();
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/Connection to the server was lost; exiting/);
  });
});
