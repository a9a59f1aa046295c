/**
 * Sessions end to end: heartbeat timeouts, link loss, request timeouts, automatic
 * reconnect across an in-process server restart, session resume, and graceful
 * shutdown. A real Server on 127.0.0.1 with a real data directory; real library
 * Clients, plus raw TCP sockets speaking the framing by hand where a misbehaving
 * peer is needed, and a small TCP relay in front of the server to cut or stall a
 * link without the server noticing.
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { Client } from '../../client/main_client';
import { ChatClient } from '../../client/chat_client';
import { encodeFrame, FrameDecoder } from '../../shared/protocol/framing';
import { MT, type Envelope } from '../../shared/protocol/messages';
import { flush, Harness, record, rejectsWith, tmpDataDir, waitUntil } from '../kit/server';

const h = new Harness();
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await h.closeAll();
});

/** Server timing for the heartbeat tests: a silent peer is dropped after about a second. */
const FAST = { heartbeatIntervalMs: 200, connectionTimeoutMs: 1000 } as const;

type Msg = Envelope<string, Record<string, unknown>>;

/** A raw control connection: frames by hand, no heartbeats, no library. */
class RawConn {
  readonly received: Msg[] = [];
  closed = false;
  private readonly decoder = new FrameDecoder();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.decoder.push(chunk)) if (f.ok) this.received.push(f.value as Msg);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => (this.closed = true));
  }

  static open(port: number): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        const c = new RawConn(socket);
        cleanups.push(() => void socket.destroy());
        resolve(c);
      });
    });
  }

  send(type: string, data: Record<string, unknown>, extra: Partial<Msg> = {}): string {
    const message_id = randomUUID();
    this.socket.write(
      encodeFrame({ type, data, sender: null, recipient: null, room_id: null, timestamp: Date.now() / 1000, message_id, ...extra }),
    );
    return message_id;
  }

  async waitFor(pred: (m: Msg) => boolean, what: string, timeoutMs = 5000): Promise<Msg> {
    await waitUntil(() => this.received.some(pred), timeoutMs, what);
    return this.received.find(pred)!;
  }

  /** Send and wait for the SUCCESS/ACK/ERROR that answers it. */
  async request(type: string, data: Record<string, unknown>, extra: Partial<Msg> = {}): Promise<Msg> {
    const id = this.send(type, data, extra);
    return this.waitFor((m) => m.reply_to === id, `reply to ${type}`);
  }

  waitClosed(timeoutMs: number, what: string): Promise<void> {
    return waitUntil(() => this.closed, timeoutMs, what);
  }
}

/**
 * A TCP relay between clients and the server. `hold()` stops forwarding on the
 * connections open now and keeps their bytes (a link that stalls), `release()`
 * delivers them late; `cutClients()` drops the client sides only, so the server
 * still holds the old connection, as after a Wi-Fi drop nobody told it about.
 */
interface RelayPair {
  client: net.Socket;
  upstream: net.Socket;
  cut: boolean;
  held: boolean;
  up: Buffer[];
  down: Buffer[];
}

class Relay {
  private readonly pairs: RelayPair[] = [];
  private readonly server: net.Server;

  private constructor(private readonly targetPort: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
      const pair: RelayPair = { client, upstream, cut: false, held: false, up: [], down: [] };
      this.pairs.push(pair);
      client.on('data', (d: Buffer) => (pair.held ? pair.up.push(d) : upstream.write(d)));
      upstream.on('data', (d: Buffer) => {
        if (pair.cut) return;
        if (pair.held) pair.down.push(d);
        else client.write(d);
      });
      client.on('error', () => undefined);
      upstream.on('error', () => undefined);
      client.on('close', () => {
        if (!pair.cut) upstream.destroy();
      });
      upstream.on('close', () => client.destroy());
    });
  }

  static async start(targetPort: number): Promise<Relay> {
    const r = new Relay(targetPort);
    await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => r.close());
    return r;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Stall every connection open now, both ways; later connections pass. */
  hold(): void {
    for (const p of this.pairs) p.held = true;
  }

  /** Deliver what was held, late, and pass traffic again. */
  release(): void {
    for (const p of this.pairs) {
      p.held = false;
      for (const d of p.up.splice(0)) if (!p.upstream.destroyed) p.upstream.write(d);
      for (const d of p.down.splice(0)) if (!p.client.destroyed) p.client.write(d);
    }
  }

  /** Drop every client-side socket; the server-side ones stay open and silent. */
  cutClients(): void {
    for (const p of this.pairs) {
      p.cut = true;
      p.client.destroy();
    }
  }

  /** Drop both sides: the server sees the connection close without a goodbye. */
  cutBoth(): void {
    for (const p of this.pairs) {
      p.cut = true;
      p.client.destroy();
      p.upstream.destroy();
    }
  }

  /** Server-side sockets of cut pairs that the server has not closed yet. */
  get heldUpstreams(): number {
    return this.pairs.filter((p) => p.cut && !p.upstream.destroyed).length;
  }

  close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('heartbeat timeout', () => {
  it('a raw connection that sends CONNECT and then nothing is dropped, and its peers get USER_LEAVE', async () => {
    const s = await h.server(FAST);
    const alice = await h.client(s, 'Alice');
    const room = await alice.createRoom({ name: 'R' });
    await alice.joinRoom(room.room_id);
    const leaves = record(alice, 'user_leave');

    const raw = await RawConn.open(s.port);
    const hello = await raw.request(MT.CONNECT, { username: 'Silent' });
    expect(hello.type).toBe(MT.SUCCESS);
    expect(hello.data).toMatchObject({ heartbeat_interval: 0.2, connection_timeout: 1 });
    const silentId = (hello.data as { user_id: string }).user_id;
    const joined = await raw.request(MT.ROOM_JOIN, { room_id: room.room_id });
    expect(joined.type).toBe(MT.SUCCESS);
    await waitUntil(() => alice.users.get(silentId)?.room_id === room.room_id, 5000, 'Alice sees Silent join');

    // Now silence. Alice's client heartbeats on its own and stays.
    await raw.waitClosed(10_000, 'the silent connection to be dropped');
    const err = raw.received.find((m) => m.type === MT.ERROR);
    expect(err?.data).toMatchObject({ code: 'HEARTBEAT_TIMEOUT' });

    await waitUntil(() => leaves.some(([d, r]) => d.user_id === silentId && r === null), 5000, 'USER_LEAVE (offline)');
    const inRoom = leaves.find(([d, r]) => d.user_id === silentId && r === room.room_id);
    expect(inRoom?.[0]).toEqual({ user_id: silentId, username: 'Silent', reason: 'HEARTBEAT_TIMEOUT' });
    expect(alice.users.has(silentId)).toBe(false);
    expect(alice.connected).toBe(true);
    // The name is free again.
    const again = await h.client(s, 'Silent');
    expect(again.connected).toBe(true);
  });

  it('a library Client that heartbeats far too rarely is dropped; it reports the link loss', async () => {
    const s = await h.server(FAST);
    const alice = await h.client(s, 'Alice');
    const lazy = await h.client(s, 'Lazy', { heartbeatIntervalMs: 600_000 });
    const leaves = record(alice, 'user_leave');
    const gone = record(lazy, 'disconnected');
    await waitUntil(() => gone.length === 1, 10_000, 'Lazy to be dropped');
    expect(gone[0][0]).toMatchObject({ willReconnect: false });
    expect(lazy.connected).toBe(false);
    await waitUntil(() => leaves.some(([d]) => d.username === 'Lazy'), 5000, 'peers get USER_LEAVE');
    expect(leaves.find(([d]) => d.username === 'Lazy')![0].reason).toBe('HEARTBEAT_TIMEOUT');
    // A client that heartbeats as told stays: one more round trip proves it.
    await flush(alice);
    expect(alice.connected).toBe(true);
  });

  it('a connection that never sends CONNECT is dropped too', async () => {
    const s = await h.server(FAST);
    const raw = await RawConn.open(s.port);
    await raw.waitClosed(10_000, 'the mute connection to be dropped');
    expect(raw.received.map((m) => (m.data as { code?: string }).code)).toEqual(['HEARTBEAT_TIMEOUT']);
    await waitUntil(() => s.stats().connections === 0, 5000, 'the server to release the connection');
  });

  it('anything but CONNECT first is NOT_CONNECTED, and the connection stays usable', async () => {
    const s = await h.server();
    const raw = await RawConn.open(s.port);
    const r = await raw.request(MT.ROOM_LIST, {});
    expect(r.type).toBe(MT.ERROR);
    expect(r.data).toMatchObject({ code: 'NOT_CONNECTED' });
    const ok = await raw.request(MT.CONNECT, { username: 'Late' });
    expect(ok.type).toBe(MT.SUCCESS);
  });
});

describe('requests and link loss', () => {
  it('requests pending when the link drops fail with CONNECTION_LOST; new ones fail at once', async () => {
    const s = await h.server();
    const relay = await Relay.start(s.port);
    const c = await h.client(relay.port, 'Alice');
    relay.hold(); // the requests below are never answered
    const pending = [c.request(MT.ROOM_LIST, {}), c.request(MT.USER_LIST, {}), c.sendChat('lost')];
    const settled = Promise.allSettled(pending);
    relay.cutClients();
    const results = await settled;
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'CONNECTION_LOST' });
    }
    expect((results[0] as PromiseRejectedResult).reason.details).toEqual({ type: 'ROOM_LIST' });
    await rejectsWith(c.request(MT.ROOM_LIST, {}), 'CONNECTION_LOST');
  });

  it('requests pending when the server closes fail with CONNECTION_LOST', async () => {
    const s = await h.server();
    const c = await h.client(s, 'Alice');
    const room = await c.createRoom({ name: 'R', password: 'pw' });
    // Written before the server closes; the server stops reading in close().
    const p = c.joinRoom(room.room_id, 'pw');
    const closing = s.close();
    await rejectsWith(p, 'CONNECTION_LOST');
    await closing;
  });

  it('a request with no reply within its time is REQUEST_TIMEOUT; the late reply is ignored', async () => {
    const s = await h.server();
    const relay = await Relay.start(s.port);
    const c = await h.client(relay.port, 'Alice', { requestTimeoutMs: 300 });
    const errors = record(c, 'server_error');
    const created: string[] = [];
    c.on('rooms', (rooms) => created.push(...rooms.map((r) => r.room_name)));
    relay.hold();
    const err = await c.request(MT.ROOM_LIST, {}).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ name: 'ProtocolError', code: 'REQUEST_TIMEOUT', details: { type: 'ROOM_LIST', ms: 300 } });
    await rejectsWith(c.request(MT.ROOM_CREATE, { room_name: 'Late' }, { timeoutMs: 150 }), 'REQUEST_TIMEOUT');

    // The stalled link recovers: the server now answers both requests, too late.
    relay.release();
    const rooms = await c.listRooms();
    // The timed-out ROOM_CREATE did reach the server (a timeout says "no answer", not "not done").
    expect(rooms.map((r) => r.room_name)).toEqual(['Late']);
    await flush(c);
    expect(errors).toEqual([]);
    expect(c.connected).toBe(true);
  });

  it('a Client whose server goes silent drops the link by itself and reconnects', async () => {
    const s = await h.server(FAST);
    const relay = await Relay.start(s.port);
    const bob = await h.client(s, 'Bob');
    const room = await bob.createRoom({ name: 'R', persistent: true });
    await bob.joinRoom(room.room_id);
    const alice = await h.client(relay.port, 'Alice', { reconnect: true, reconnectAttempts: 10, reconnectBaseDelayMs: 50 });
    await alice.joinRoom(room.room_id);
    const drops = record(alice, 'disconnected');
    const back = record(alice, 'reconnected');
    relay.hold(); // TCP stays up; nothing gets through either way
    await waitUntil(() => drops.length === 1, 10_000, 'Alice gives up on the silent link');
    expect(drops[0][0].willReconnect).toBe(true);
    await waitUntil(() => back.length === 1, 10_000, 'Alice back');
    expect(back[0][0].room?.room_id).toBe(room.room_id);
    await waitUntil(() => bob.users.get(alice.userId!)?.room_id === room.room_id, 5000, 'Bob sees Alice in the room');
  });
});

describe('reconnect', () => {
  it('the Client reconnects by itself when the server restarts on the same port and dataDir, and is back in its persistent room', async () => {
    const dataDir = tmpDataDir();
    h.dirs.push(dataDir);
    const s1 = await h.server({ dataDir });
    const port = s1.port;
    const opts = { reconnect: true, reconnectAttempts: 10, reconnectBaseDelayMs: 100, reconnectMaxDelayMs: 1000 };
    const alice = await h.client(s1, 'Alice', opts);
    const bob = await h.client(s1, 'Bob', opts);
    const room = await alice.createRoom({ name: 'Daily', persistent: true, password: 'pw' });
    await alice.joinRoom(room.room_id, 'pw');
    await bob.joinRoom(room.room_id, 'pw');
    await alice.sendChat('before the restart');
    const oldAliceId = alice.userId;

    const events = { alice: record(alice, 'reconnected'), bob: record(bob, 'reconnected') };
    const byeAlice = record(alice, 'server_disconnect');
    const drops = record(alice, 'disconnected');
    await s1.close();
    expect(byeAlice[0]?.[0]).toMatchObject({ reconnect: true });
    await waitUntil(() => drops.length === 1, 5000, 'Alice notices the drop');
    expect(drops[0][0].willReconnect).toBe(true);
    expect(alice.state).toBe('reconnecting');

    const s2 = await h.server({ dataDir, port });
    expect(s2.port).toBe(port);
    await waitUntil(() => events.alice.length === 1 && events.bob.length === 1, 20_000, 'both reconnected');
    expect(events.alice[0][0].room?.room_id).toBe(room.room_id);
    expect(events.bob[0][0].room?.room_id).toBe(room.room_id);
    expect(alice.connected && bob.connected).toBe(true);
    expect(alice.room?.room_id).toBe(room.room_id);
    expect(alice.userId).not.toBe(oldAliceId); // a new server knows nobody: a fresh sign-in

    // The others see it.
    await waitUntil(
      () => alice.users.get(bob.userId!)?.room_id === room.room_id && bob.users.get(alice.userId!)?.room_id === room.room_id,
      5000,
      'each sees the other back in the room',
    );
    const carol = await h.client(s2, 'Carol');
    const j = await carol.joinRoom(room.room_id, 'pw');
    expect(j.participants.map((p) => p.username).sort()).toEqual(['Alice', 'Bob', 'Carol']);

    // And chat flows, with the history from before the restart.
    const got = record(bob, 'chat');
    await alice.sendChat('after the restart');
    await waitUntil(() => got.length === 1, 5000, 'chat after reconnect');
    const hist = await carol.chatHistory();
    expect(hist.messages.map((m) => m.message)).toEqual(['before the restart', 'after the restart']);
  });

  it('after a restart a client whose temporary room is gone is back online, in no room', async () => {
    const dataDir = tmpDataDir();
    h.dirs.push(dataDir);
    const s1 = await h.server({ dataDir });
    const port = s1.port;
    const alice = await h.client(s1, 'Alice', { reconnect: true, reconnectAttempts: 10, reconnectBaseDelayMs: 100, reconnectMaxDelayMs: 1000 });
    const room = await alice.createRoom({ name: 'Temp' });
    await alice.joinRoom(room.room_id);
    const back = record(alice, 'reconnected');
    const roomEvents = record(alice, 'room');
    await s1.close();
    await h.server({ dataDir, port });
    await waitUntil(() => back.length === 1, 20_000, 'reconnected');
    expect(back[0][0].room).toBeNull();
    expect(alice.room).toBeNull();
    expect(roomEvents).toEqual([[null]]);
    expect(alice.connected).toBe(true);
    expect(await alice.listRooms()).toEqual([]);
  });

  it('"reconnect_failed" fires once the attempts are exhausted', async () => {
    const s = await h.server();
    const c = await h.client(s, 'Alice', { reconnect: true, reconnectAttempts: 3, reconnectBaseDelayMs: 20, reconnectMaxDelayMs: 50 });
    const attempts = record(c, 'reconnecting');
    const failed = record(c, 'reconnect_failed');
    await s.close();
    await waitUntil(() => failed.length === 1, 10_000, 'reconnect_failed');
    expect(attempts.map(([a]) => [a.attempt, a.of])).toEqual([
      [1, 3],
      [2, 3],
      [3, 3],
    ]);
    expect(failed[0][0]).toMatchObject({ name: 'ProtocolError', code: 'CONNECT_FAILED' });
    expect(c.state).toBe('idle');
    expect(c.connected).toBe(false);
  });

  it('a client closed while reconnecting stops trying', async () => {
    const s = await h.server();
    const c = await h.client(s, 'Alice', { reconnect: true, reconnectAttempts: 50, reconnectBaseDelayMs: 20, reconnectMaxDelayMs: 50 });
    const attempts = record(c, 'reconnecting');
    const failed = record(c, 'reconnect_failed');
    await s.close();
    await waitUntil(() => attempts.length >= 2, 10_000, 'a couple of attempts');
    await c.close();
    const n = attempts.length;
    expect(c.state).toBe('closed');
    await rejectsWith(c.connect(), 'CLIENT_CLOSED');
    // Bounded look for stray attempts: a closed client must not keep dialling.
    await new Promise((r) => setTimeout(r, 200));
    expect(attempts.length).toBe(n);
    expect(failed).toEqual([]);
  });
});

describe('close while connecting (regression)', () => {
  it('close() during connect(): connect rejects with CLIENT_CLOSED and the user never stays online', async () => {
    const s = await h.server();
    const { Client } = await import('../../client/main_client');
    for (let i = 0; i < 5; i++) {
      const c = new Client({ port: s.port, username: `Quick${i}`, reconnect: false });
      const p = c.connect().then(
        () => null,
        (e: unknown) => e,
      );
      // Close at different points of the handshake: before the dial completes, and after.
      if (i > 0) await new Promise((r) => setTimeout(r, i));
      await c.close();
      const outcome = await p;
      // Closed before the handshake finished: connect must fail. Later, it may have won the race.
      if (i === 0 || outcome !== null) expect(outcome).toMatchObject({ code: 'CLIENT_CLOSED' });
      expect(c.state).toBe('closed');
    }
    await waitUntil(() => s.users.size === 0 && s.stats().connections === 0, 5000, 'no user or connection left');
  });
});

describe('resume', () => {
  it('a Client whose link dropped silently takes its session over on reconnect: same user, same room, no USER_LEAVE to peers', async () => {
    const s = await h.server();
    const relay = await Relay.start(s.port);
    const alice = await h.client(relay.port, 'Alice', { reconnect: true, reconnectAttempts: 10, reconnectBaseDelayMs: 50 });
    const bob = await h.client(s, 'Bob');
    const room = await alice.createRoom({ name: 'R' });
    await alice.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
    await alice.raiseHand();
    const aliceId = alice.userId;
    const bobLeaves = record(bob, 'user_leave');
    const bobJoins = record(bob, 'user_join');
    const connected = record(alice, 'connected');
    const reconnected = record(alice, 'reconnected');

    relay.cutClients(); // the server still holds Alice's old connection
    await waitUntil(() => reconnected.length === 1, 10_000, 'Alice reconnected');
    expect(connected[0][0]).toMatchObject({ resumed: true, reconnect: true });
    expect(alice.userId).toBe(aliceId);
    expect(reconnected[0][0].room?.room_id).toBe(room.room_id);
    expect(alice.user).toMatchObject({ role: 'host', hand_raised: true, room_id: room.room_id });
    // The replaced connection is closed by the server.
    await waitUntil(() => relay.heldUpstreams === 0, 5000, 'old server-side connection closed');

    await flush(bob);
    expect(bobLeaves).toEqual([]);
    expect(bobJoins).toEqual([]);
    expect(bob.users.get(aliceId!)).toMatchObject({ room_id: room.room_id, role: 'host' });

    const got = record(bob, 'chat');
    await alice.sendChat('still me');
    await waitUntil(() => got.length === 1, 5000, 'chat after resume');
    expect(got[0][0]).toMatchObject({ user_id: aliceId, username: 'Alice' });
  });

  it('a link the server SAW drop is resumed within the resume window: same user and role, peers see is_reconnecting and no USER_LEAVE, and chat said meanwhile is fetched', async () => {
    const s = await h.server({ resumeGraceMs: 10_000 });
    const relay = await Relay.start(s.port);
    const alice = await h.client(relay.port, 'Alice', { reconnect: true, reconnectAttempts: 10, reconnectBaseDelayMs: 300 });
    const aChat = new ChatClient(alice);
    const bob = await h.client(s, 'Bob');
    const room = await alice.createRoom({ name: 'R' });
    await alice.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
    const aliceId = alice.userId!;
    const bobLeaves = record(bob, 'user_leave');
    const updates = record(bob, 'user_update');
    const reconnected = record(alice, 'reconnected');

    relay.cutBoth();
    await waitUntil(() => updates.some(([u]) => u.user_id === aliceId && u.is_reconnecting), 5000, 'Bob sees Alice reconnecting');
    await bob.sendChat('said while Alice was away');
    await waitUntil(() => reconnected.length === 1, 10_000, 'Alice reconnected');
    expect(alice.userId).toBe(aliceId);
    expect(alice.user).toMatchObject({ role: 'host', room_id: room.room_id, is_reconnecting: false });
    await waitUntil(
      () => aChat.roomMessages(room.room_id).some((m) => m.message === 'said while Alice was away'),
      5000,
      'the missed message is fetched after the resume',
    );
    await flush(bob);
    expect(bobLeaves).toEqual([]);
    expect(bob.users.get(aliceId)).toMatchObject({ role: 'host', is_reconnecting: false });
  });

  it('a second CONNECT with the resume token takes over the user; the old connection gets SESSION_REPLACED; peers see no USER_LEAVE', async () => {
    const s = await h.server();
    const bob = await h.client(s, 'Bob');
    const room = await bob.createRoom({ name: 'R' });
    await bob.joinRoom(room.room_id);

    const first = await RawConn.open(s.port);
    const hello = await first.request(MT.CONNECT, { username: 'Alice' });
    const { user_id, resume_token, resumed } = hello.data as { user_id: string; resume_token: string; resumed: boolean };
    expect(resumed).toBe(false);
    expect(typeof resume_token).toBe('string');
    expect((await first.request(MT.ROOM_JOIN, { room_id: room.room_id })).type).toBe(MT.SUCCESS);
    await waitUntil(() => bob.users.get(user_id)?.room_id === room.room_id, 5000, 'Bob sees Alice');
    const bobLeaves = record(bob, 'user_leave');

    // Without the token (or with a wrong one) the name is taken.
    const intruder = await RawConn.open(s.port);
    expect((await intruder.request(MT.CONNECT, { username: 'alice' })).data).toMatchObject({ code: 'USERNAME_TAKEN' });
    expect((await intruder.request(MT.CONNECT, { username: 'Alice', resume_token: 'x' + resume_token })).data).toMatchObject({
      code: 'USERNAME_TAKEN',
    });

    const second = await RawConn.open(s.port);
    const back = await second.request(MT.CONNECT, { username: 'Alice', resume_token });
    expect(back.type).toBe(MT.SUCCESS);
    expect(back.data).toMatchObject({ user_id, resumed: true, user: { room_id: room.room_id, role: 'participant' } });

    await first.waitClosed(5000, 'the first connection to be closed');
    expect(first.received.some((m) => m.type === MT.ERROR && (m.data as { code?: string }).code === 'SESSION_REPLACED')).toBe(true);

    await flush(bob);
    expect(bobLeaves).toEqual([]);
    expect(bob.users.get(user_id)?.room_id).toBe(room.room_id);

    // The new connection speaks for Alice in the room.
    const got = record(bob, 'chat');
    const ack = await second.request(MT.CHAT_MESSAGE, { message: 'from the new connection' });
    expect(ack.type).toBe(MT.ACK);
    await waitUntil(() => got.length === 1, 5000, 'chat via the new connection');
    expect(got[0][0]).toMatchObject({ user_id, username: 'Alice', message: 'from the new connection' });

    // The token still works after a takeover (a later drop can be resumed again).
    const third = await RawConn.open(s.port);
    const again = await third.request(MT.CONNECT, { username: 'Alice', resume_token: (back.data as { resume_token: string }).resume_token });
    expect(again.data).toMatchObject({ user_id, resumed: true });
  });
});

describe('graceful shutdown', () => {
  it('closing the server sends DISCONNECT {reconnect: true} first (server_disconnect event)', async () => {
    const s = await h.server();
    const c = await h.client(s, 'Alice');
    const bye = record(c, 'server_disconnect');
    const dropped = record(c, 'disconnected');
    const raw = await RawConn.open(s.port);
    await raw.request(MT.CONNECT, { username: 'Raw' });
    await s.close();
    await waitUntil(() => bye.length === 1 && dropped.length === 1, 5000, 'DISCONNECT and link loss');
    expect(bye[0][0]).toEqual({ reason: expect.any(String), code: 'SERVER_SHUTTING_DOWN', reconnect: true });
    expect(dropped[0][0].willReconnect).toBe(false); // the harness client has reconnect off
    await raw.waitClosed(5000, 'raw connection closed');
    const last = raw.received[raw.received.length - 1];
    expect(last).toMatchObject({ type: MT.DISCONNECT, data: { code: 'SERVER_SHUTTING_DOWN', reconnect: true } });
    // close() is idempotent.
    await s.close();
  });
});
