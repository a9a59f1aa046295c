/**
 * run_server.ts as a real process: flags, errors, graceful shutdown, and the
 * acceptance case "kill the server and start it again: clients reconnect and are
 * back in their room".
 */
import fs from 'node:fs';
import path from 'node:path';
import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Client } from '../../client/main_client';
import { runTs, startServerProcess, freePort, type RunningProcess } from '../kit/processes';
import { tmpDataDir, waitUntil } from '../kit/server';

const procs: RunningProcess[] = [];
const clients: Client[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close().catch(() => undefined)));
  for (const p of procs.splice(0)) {
    if (p.proc.exitCode === null && p.proc.signalCode === null) {
      p.proc.kill('SIGKILL');
      await p.exited;
    }
  }
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function dir(): string {
  const d = tmpDataDir();
  dirs.push(d);
  return d;
}

async function client(port: number, username: string): Promise<Client> {
  const c = new Client({ port, username, reconnectAttempts: 12, reconnectBaseDelayMs: 200, reconnectMaxDelayMs: 1000 });
  clients.push(c);
  await c.connect();
  return c;
}

describe('run_server.ts', () => {
  it('--help lists every flag and exits 0', async () => {
    const p = runTs('run_server.ts', ['--help']);
    expect(await p.exited).toBe(0);
    for (const flag of ['--host', '--port', '--video-port', '--audio-port', '--screen-port', '--feedback-port', '--file-port', '--data-dir', '--server-password', '--admin-password', '--log-level', '--config', '--help']) {
      expect(p.stdout()).toContain(flag);
    }
  });

  it('an unknown flag exits 2 and points to --help', async () => {
    const p = runTs('run_server.ts', ['--no-such-flag']);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/--help/);
  });

  it('a port in use exits 1 and says what to do', async () => {
    const blocker = net.createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', () => r()));
    try {
      const p = runTs('run_server.ts', ['--host', '127.0.0.1', '--port', String(port), '--data-dir', dir()]);
      procs.push(p);
      expect(await p.exited).toBe(1);
      expect(p.stderr()).toMatch(/already in use.*--port/);
    } finally {
      blocker.close();
    }
  });

  it('a UDP media port in use exits 1 and names the flag to change', async () => {
    const blocker = dgram.createSocket('udp4');
    await new Promise<void>((r) => blocker.bind(0, '127.0.0.1', () => r()));
    const udpPort = blocker.address().port;
    try {
      const p = runTs('run_server.ts', ['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', dir(), '--video-port', '0', '--audio-port', '0', '--screen-port', String(udpPort), '--feedback-port', '0']);
      procs.push(p);
      expect(await p.exited).toBe(1);
      expect(p.stderr()).toMatch(new RegExp(`UDP port ${udpPort} is already in use.*choose another --screen-port`));
    } finally {
      blocker.close();
    }
  });

  it('a TCP file port in use exits 1, names --file-port and says TCP', async () => {
    const blocker = net.createServer();
    const filePort = await freePort();
    await new Promise<void>((r) => blocker.listen(filePort, '127.0.0.1', () => r()));
    try {
      const p = runTs('run_server.ts', ['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', dir(), '--video-port', '0', '--audio-port', '0', '--screen-port', '0', '--feedback-port', '0', '--file-port', String(filePort)]);
      procs.push(p);
      expect(await p.exited).toBe(1);
      expect(p.stderr()).toMatch(new RegExp(`\\(TCP\\).*TCP port ${filePort} is already in use.*choose another --file-port`));
    } finally {
      blocker.close();
    }
  });

  it('reads a config file; an unknown key is refused with the list of known keys', async () => {
    const d = dir();
    const bad = path.join(d, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ prot: 1 }));
    const p = runTs('run_server.ts', ['--config', bad]);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/unknown key "prot".*video-port/);

    const good = path.join(d, 'good.json');
    const port = await freePort();
    // The file server on a free port: TCP 8891 may be taken by a parallel run.
    fs.writeFileSync(good, JSON.stringify({ host: '127.0.0.1', port, 'data-dir': path.join(d, 'data'), serverPassword: 'sesame', 'log-level': 'warn', 'file-port': 0 }));
    const s = runTs('run_server.ts', ['--config', good]);
    procs.push(s);
    await s.waitFor(/listening on 127\.0\.0\.1:\d+/);
    expect(s.stdout()).toContain(`127.0.0.1:${port}`);
    const refused = new Client({ port, username: 'eve', reconnect: false });
    await expect(refused.connect()).rejects.toMatchObject({ code: 'SERVER_PASSWORD_REQUIRED' });
    await refused.close();
    const ok = new Client({ port, username: 'eve', password: 'sesame', reconnect: false });
    clients.push(ok);
    await ok.connect();
    expect(fs.existsSync(path.join(d, 'data', 'lanvc.sqlite'))).toBe(true);
  });

  it('SIGTERM shuts down gracefully: clients are told, exit code 0', async () => {
    const s = await startServerProcess(dir());
    procs.push(s);
    const c = await client(s.port, 'alice');
    const told = c.waitFor('server_disconnect', 10_000);
    s.proc.kill('SIGTERM');
    const [msg] = await told;
    expect(msg).toMatchObject({ code: 'SERVER_SHUTTING_DOWN', reconnect: true });
    expect(await s.exited).toBe(0);
  });

  it('kill -9 the server and start it again: clients reconnect, are back in their room, and history survived', async () => {
    const data = dir();
    const s1 = await startServerProcess(data);
    procs.push(s1);
    const alice = await client(s1.port, 'alice');
    const bob = await client(s1.port, 'bob');
    const room = await alice.createRoom({ name: 'standup', persistent: true });
    await alice.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
    const got = bob.waitFor('chat');
    await alice.sendChat('before the crash');
    expect((await got)[0].message).toBe('before the crash');

    const aliceBack = alice.waitFor('reconnected', 25_000);
    const bobBack = bob.waitFor('reconnected', 25_000);
    s1.proc.kill('SIGKILL');
    await s1.exited;
    const s2 = await startServerProcess(data, [], s1.port);
    procs.push(s2);
    expect((await aliceBack)[0].room?.room_id).toBe(room.room_id);
    expect((await bobBack)[0].room?.room_id).toBe(room.room_id);
    expect(alice.room?.room_id).toBe(room.room_id);

    // Chat works again, and the history from before the crash is there for a newcomer.
    await waitUntil(() => bob.participants.some((p) => p.username === 'alice'), 5000, 'bob sees alice');
    const again = bob.waitFor('chat');
    await alice.sendChat('after the restart');
    expect((await again)[0].message).toBe('after the restart');
    const carol = await client(s2.port, 'carol');
    const hist = carol.waitFor('history');
    await carol.joinRoom(room.room_id);
    const messages = (await hist)[0].messages.map((m) => m.message);
    expect(messages).toEqual(['before the crash', 'after the restart']);
  });
});
