/**
 * The monitor's side of the server: snapshot() (the observer API), consoleAction()
 * (admin actions through the request handlers), and stopListeners / startListeners /
 * reconfigure. A real Server on 127.0.0.1 with real library Clients over TCP and UDP.
 */
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileClient, type TransferProgress } from '../../client/file_client';
import { ProtocolError } from '../../shared/errors';
import { networkConfigProblem } from '../../server/listen';
import { CONSOLE_USERNAME, type ServerState } from '../../server/stats';
import { connectRefused, freePort } from '../kit/processes';
import { flush, Harness, record, rejectsWith, tmpDataDir, waitUntil } from '../kit/server';

const h = new Harness();
afterEach(() => h.closeAll());

/** A UDP port is free when we can bind it ourselves. */
function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

describe('snapshot', () => {
  it('shows users with room, role and media flags, rooms with members, ports and counters', async () => {
    const { server, room, clients } = await h.meeting(['Alice', 'Bob']);
    const [alice, bob] = clients;
    await bob.setVideo(true);
    await alice.raiseHand();
    await alice.lockRoom();
    await flush(alice, bob);
    const snap = server.snapshot();
    expect(snap.status.state).toBe('running');
    expect(snap.status.bound).toMatchObject({ control: server.port, file: server.files.port, ...server.media.ports });
    expect(snap.status.lan_addresses).toEqual(['127.0.0.1']);
    expect(snap.status.last_error).toBeNull();
    const byName = new Map(snap.users.map((u) => [u.username, u]));
    expect(byName.get('Alice')).toMatchObject({ room_id: room.room_id, room_name: 'Standup', role: 'host', hand_raised: true });
    expect(byName.get('Bob')).toMatchObject({ room_name: 'Standup', role: 'participant', is_video_enabled: true });
    expect(byName.get('Bob')!.remote).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(snap.rooms).toHaveLength(1);
    expect(snap.rooms[0]).toMatchObject({ room_name: 'Standup', participant_count: 2, is_locked: true, members: [alice.userId, bob.userId] });
    expect(snap.control.connections).toBe(2);
    expect(snap.control.messagesIn).toBeGreaterThan(6);
    expect(snap.media.participants.map((p) => p.username).sort()).toEqual(['Alice', 'Bob']);
    expect(snap.files.listening).toBe(true);
    // Plain data: it survives a JSON round trip unchanged (no sockets, no class instances).
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
  });
});

describe('consoleAction', () => {
  it('KICK_USER removes the user from the room, bans the name there, and the room hears it from the server console', async () => {
    const { server, room, clients } = await h.meeting(['Alice', 'Bob', 'Carol']);
    const [alice, bob] = clients;
    const kicked = record(bob, 'kicked');
    const left = record(alice, 'user_leave');
    await server.consoleAction('KICK_USER', { user_id: bob.userId!, reason: 'Removed by the server operator' });
    await waitUntil(() => kicked.length === 1 && left.length > 0, 5000, 'Bob kicked');
    expect(kicked[0][0]).toMatchObject({ room_id: room.room_id, reason: 'Removed by the server operator', by: { username: CONSOLE_USERNAME } });
    expect(server.snapshot().users.find((u) => u.username === 'Bob')).toMatchObject({ room_id: null, is_online: true });
    await rejectsWith(bob.joinRoom(room.room_id), 'BANNED_FROM_ROOM');
  });

  it('the console outranks an admin client: it may mute and unmute them', async () => {
    const server = await h.server({ adminPassword: 'root' });
    const admin = await h.client(server, 'Root', { adminPassword: 'root' });
    const room = await admin.createRoom({ name: 'Ops' });
    await admin.joinRoom(room.room_id);
    const muted = record(admin, 'muted');
    const r = await server.consoleAction('MUTE_USER', { user_id: admin.userId! });
    expect(r.user).toMatchObject({ is_muted_by_host: true });
    await waitUntil(() => muted.length === 1, 5000, 'admin told');
    await server.consoleAction('UNMUTE_USER', { username: 'Root' });
    expect(server.snapshot().users[0].is_muted_by_host).toBe(false);
  });

  it('ROOM_LOCK and ROOM_UNLOCK: joiners are refused while locked, and everyone sees the change', async () => {
    const { server, room, clients } = await h.meeting(['Alice']);
    const dave = await h.client(server, 'Dave');
    await server.consoleAction('ROOM_LOCK', { room_id: room.room_id });
    await waitUntil(() => clients[0].room?.is_locked === true, 5000, 'Alice sees the lock');
    await rejectsWith(dave.joinRoom(room.room_id), 'ROOM_LOCKED');
    await server.consoleAction('ROOM_UNLOCK', { room_id: room.room_id });
    await dave.joinRoom(room.room_id);
    expect(server.snapshot().rooms[0].participant_count).toBe(2);
  });

  it('nobody may sign in as the server console', async () => {
    const server = await h.server();
    await rejectsWith(h.client(server, 'Server Console'), 'INVALID_USERNAME');
  });

  it('refuses bad input with a stable code and changes nothing', async () => {
    const { server, room } = await h.meeting(['Alice']);
    await rejectsWith(server.consoleAction('KICK_USER', { user_id: 'no-such-user' }), 'USER_NOT_FOUND');
    await rejectsWith(server.consoleAction('ROOM_LOCK', { room_id: 42 }), 'INVALID_PAYLOAD');
    await rejectsWith(server.consoleAction('ROOM_LOCK', { room_id: 'nope' }), 'ROOM_NOT_FOUND');
    await rejectsWith(server.consoleAction('ROOM_CREATE' as never, { room_name: 'x' }), 'NOT_A_REQUEST');
    expect(server.snapshot().rooms.find((r) => r.room_id === room.room_id)).toMatchObject({ is_locked: false, participant_count: 1 });
  });
});

describe('listeners', () => {
  it('stop: clients are told LISTENERS_STOPPED, places are held, new connections refused; start: a reconnecting client resumes in its room', async () => {
    const { server, room, clients } = await h.meeting(['Alice']);
    const port = server.port;
    const filePort = server.files.port;
    const videoPort = server.media.ports.video;
    const bob = await h.client(server, 'Bob', { reconnect: true, reconnectBaseDelayMs: 50, reconnectMaxDelayMs: 200, reconnectAttempts: 100 });
    await bob.joinRoom(room.room_id);
    const told = record(clients[0], 'server_disconnect');
    const states: ServerState[] = [];
    server.on('state', (s) => states.push(s));

    await server.stopListeners();
    expect(server.state).toBe('stopped');
    expect(states).toEqual(['stopping', 'stopped']);
    await waitUntil(() => told.length === 1, 5000, 'DISCONNECT');
    expect(told[0][0]).toMatchObject({ code: 'LISTENERS_STOPPED', reconnect: true });
    expect(await connectRefused(port)).toBe(true);
    expect(await connectRefused(filePort)).toBe(true);
    expect(await udpFree(videoPort)).toBe(true);
    const snap = server.snapshot();
    // Held for the resume window, as after a dropped connection: still in the room, reconnecting.
    expect(snap.users.map((u) => [u.username, u.room_id, u.is_reconnecting])).toEqual([
      ['Alice', room.room_id, true],
      ['Bob', room.room_id, true],
    ]);
    expect(snap.status.bound).toBeNull();
    expect(snap.rooms.map((r) => r.room_name)).toEqual(['Standup']);

    const resumed = record(bob, 'connected');
    await server.startListeners();
    expect(server.port).toBe(port);
    await waitUntil(() => resumed.length === 1 && bob.room?.room_id === room.room_id, 10_000, 'Bob reconnects into the room');
    expect(resumed[0][0]).toMatchObject({ resumed: true, reconnect: true });
    expect(server.snapshot().users.find((u) => u.username === 'Bob')).toMatchObject({ role: 'participant', is_reconnecting: false });
  });

  it('a stop longer than the resume window: the users go offline and a temporary room ends; a persistent room stays', async () => {
    const server = await h.server({ resumeGraceMs: 300 });
    const a = await h.client(server, 'Alice');
    const temp = await a.createRoom({ name: 'Temp' });
    const kept = await a.createRoom({ name: 'Kept', persistent: true });
    await a.joinRoom(temp.room_id);
    const b = await h.client(server, 'Bob');
    await b.joinRoom(kept.room_id);
    await server.stopListeners();
    await waitUntil(() => server.snapshot().users.length === 0, 5000, 'users offline after the window');
    expect(server.snapshot().rooms.map((r) => r.room_name)).toEqual(['Kept']);
  });

  it('an upload under way when the listeners stop resumes once they start, and the file arrives whole', async () => {
    const { server, room } = await h.meeting(['Alice']);
    const up = await h.client(server, 'Uploader', { reconnect: true, reconnectBaseDelayMs: 50, reconnectMaxDelayMs: 200, reconnectAttempts: 100 });
    await up.joinRoom(room.room_id);
    const dir = tmpDataDir('lanvc-stop-upload-');
    h.dirs.push(dir);
    const file = path.join(dir, 'big.bin');
    const bytes = randomBytes(24 * 1024 * 1024);
    fs.writeFileSync(file, bytes);
    const events: TransferProgress[] = [];
    const upload = new FileClient(up, { retries: 50, retryBaseDelayMs: 50, retryMaxDelayMs: 300 }).upload(file, {
      chunkSize: 64 * 1024,
      onProgress: (p) => events.push(p),
    });
    await waitUntil(() => events.some((e) => e.done > 0), 10_000, 'some bytes verified');
    await server.stopListeners();
    const doneAtStop = events[events.length - 1].done;
    expect(doneAtStop).toBeLessThan(bytes.length);
    await server.startListeners();
    const info = await upload;
    // It went on from where it was (a retry, not a new upload), and the stored bytes are the file's.
    expect(events.some((e) => e.attempt > 1)).toBe(true);
    expect(events.filter((e) => e.attempt > 1).every((e) => e.done >= doneAtStop)).toBe(true);
    const stored = fs.readFileSync(path.join(server.files.filesDir, info.file_id));
    expect(createHash('md5').update(stored).digest('hex')).toBe(createHash('md5').update(bytes).digest('hex'));
  });

  it('reconfigure moves a running server to new ports; a bad or busy configuration is refused and the old one kept', async () => {
    const server = await h.server();
    const [newPort, newFile] = [await freePort(), await freePort()];
    await server.reconfigure({ port: newPort, filePort: newFile });
    expect(server.state).toBe('running');
    expect(server.port).toBe(newPort);
    expect(server.files.port).toBe(newFile);
    const c = await h.client(newPort, 'Eve');
    expect(c.state).toBe('connected');

    await expect(server.reconfigure({ videoPort: 70000 })).rejects.toThrow(/--video-port must be a port 0-65535.*Nothing was changed/);
    await expect(server.reconfigure({ videoPort: 40000, audioPort: 40000 })).rejects.toThrow(/both UDP port 40000/);
    expect(c.state).toBe('connected');

    // A port someone else holds: the server goes back to where it was.
    const blocker = net.createServer();
    const busy = await new Promise<number>((r) => blocker.listen(0, '127.0.0.1', () => r((blocker.address() as net.AddressInfo).port)));
    try {
      await expect(server.reconfigure({ port: busy })).rejects.toThrow(/already in use.*previous configuration was kept/);
      expect(server.state).toBe('running');
      expect(server.port).toBe(newPort);
      expect(server.snapshot().status.network.port).toBe(newPort);
      await h.client(newPort, 'Frank');
    } finally {
      blocker.close();
    }
  });

  it('a start that fails leaves the server stopped with the reason and what to do; it starts once the port is free', async () => {
    const blocker = net.createServer();
    const busy = await new Promise<number>((r) => blocker.listen(0, '127.0.0.1', () => r((blocker.address() as net.AddressInfo).port)));
    const server = await h.server();
    await server.stopListeners();
    await server.reconfigure({ filePort: busy });
    await expect(server.startListeners()).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const snap = server.snapshot();
    expect(snap.status.state).toBe('stopped');
    expect(snap.status.last_error).toMatchObject({ message: expect.stringContaining(`${busy} (TCP)`), hint: expect.stringContaining('--file-port') });
    // Nothing half-bound is left behind: the control port and the media ports bound
    // before the file port failed are free again.
    const n = server.network();
    expect(await connectRefused(n.port)).toBe(true);
    for (const p of [n.videoPort, n.audioPort, n.screenPort, n.feedbackPort]) expect(await udpFree(p)).toBe(true);
    await new Promise<void>((r) => blocker.close(() => r()));
    await server.startListeners();
    expect(server.snapshot().status).toMatchObject({ state: 'running', last_error: null });
  });

  it('stops and starts requested together run in order; close after them is clean and final', async () => {
    const server = await h.server();
    const ops = [server.stopListeners(), server.startListeners(), server.stopListeners(), server.startListeners()];
    await Promise.all(ops);
    expect(server.state).toBe('running');
    await server.close();
    expect(server.state).toBe('closed');
    await expect(server.startListeners()).rejects.toThrow(/closed/);
  });
});

describe('networkConfigProblem', () => {
  const ok = { host: '0.0.0.0', port: 8888, videoPort: 8889, audioPort: 8890, screenPort: 8891, feedbackPort: 8892, filePort: 8891 };
  it('accepts the defaults (the file port and the screen port share 8891: one is TCP, the other UDP)', () => {
    expect(networkConfigProblem(ok)).toBeNull();
  });
  it('names the flag at fault', () => {
    expect(networkConfigProblem({ ...ok, host: ' ' })).toMatch(/bind address/);
    expect(networkConfigProblem({ ...ok, port: 8891 + 0.5 })).toMatch(/--port must be a port/);
    expect(networkConfigProblem({ ...ok, filePort: 8888 })).toMatch(/--file-port and --port are both TCP port 8888/);
    expect(networkConfigProblem({ ...ok, videoPort: 0, audioPort: 0 })).toBeNull();
  });
});

// ProtocolError is what the monitor shows: code, message and hint.
it('console refusals carry a hint to show', async () => {
  const server = await h.server();
  const e = await server.consoleAction('KICK_USER', { username: 'ghost' }).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(ProtocolError);
  expect((e as ProtocolError).hint).toBeTruthy();
});
