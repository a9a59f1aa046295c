/**
 * Rooms and chat end to end: a real Server on 127.0.0.1:0 with a real SQLite data
 * directory, and real library Clients (and ChatClients) over TCP.
 *
 * "Nobody else got it" is checked without sleeping: the server pushes to a
 * connection in order, so once a round trip on the bystander's own connection
 * (HEARTBEAT) has come back after the sender's request was answered, anything
 * pushed to that bystander for the request has already arrived.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ChatClient } from '../../client/chat_client';
import type { Client } from '../../client/main_client';
import { MT, type ChatEntry } from '../../shared/protocol/messages';
import type { Server, ServerOptions } from '../../server/main_server';
import { flush, Harness, record, rejectsWith, sleep, tmpDataDir, waitUntil } from '../kit/server';

const h = new Harness();
afterEach(() => h.closeAll());

/** Every emission of `event` on `c`, as argument tuples. */
/** Resolves once everything the server pushed to `c` before now has been received. */
/** A server that does not get in the way of bulk chat (tests of the limit set their own). */
function chattyServer(o: ServerOptions = {}): Promise<Server> {
  return h.server({ chatRatePerSecond: 100_000, chatBurst: 100_000, ...o });
}

describe('room list, create and join', () => {
  it('creates public and private rooms, lists them, and joins them (private with its password)', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const bob = await h.client(s, 'Bob');

    const pub = await alice.createRoom({ name: 'Lobby', maxParticipants: 5 });
    expect(pub).toMatchObject({
      room_name: 'Lobby',
      is_private: false,
      max_participants: 5,
      participant_count: 0,
      created_by: alice.userId,
      created_by_name: 'Alice',
      is_persistent: false,
      is_locked: false,
      host_id: null,
    });
    const priv = await alice.createRoom({ name: 'Secret', password: 'hunter2', persistent: true });
    expect(priv).toMatchObject({ room_name: 'Secret', is_private: true, is_persistent: true });
    expect(JSON.stringify(priv)).not.toContain('hunter2');

    const listed = await bob.listRooms();
    expect(listed.map((r) => r.room_name).sort()).toEqual(['Lobby', 'Secret']);
    expect(bob.rooms.get(priv.room_id)?.is_private).toBe(true);
    expect(JSON.stringify(listed)).not.toMatch(/hunter2|scrypt/);

    const j1 = await alice.joinRoom(pub.room_id);
    expect(j1.already_joined).toBe(false);
    expect(j1.room.participant_count).toBe(1);
    expect(j1.participants.map((p) => p.username)).toEqual(['Alice']);
    expect(alice.room?.room_id).toBe(pub.room_id);

    // By name: the client resolves a unique room name to its id.
    const j2 = await bob.joinRoom('lobby');
    expect(j2.room.room_id).toBe(pub.room_id);
    expect(j2.participants.map((p) => p.username).sort()).toEqual(['Alice', 'Bob']);
    expect(j2.room.participant_count).toBe(2);

    // Joining the room you are in is answered, not refused.
    const again = await bob.joinRoom(pub.room_id);
    expect(again.already_joined).toBe(true);

    // Moving to the private room with its password leaves the first one.
    const aliceSaw = record(alice, 'user_leave');
    const j3 = await bob.joinRoom(priv.room_id, 'hunter2');
    expect(j3.room.room_id).toBe(priv.room_id);
    expect(bob.room?.room_id).toBe(priv.room_id);
    await waitUntil(() => aliceSaw.some(([d, roomId]) => d.user_id === bob.userId && roomId === pub.room_id), 5000, 'Alice sees Bob move out');
    expect(aliceSaw.find(([d]) => d.user_id === bob.userId)?.[0].reason).toBe('moved');
  });

  it('a newcomer in the room is announced to the others with USER_JOIN carrying the user object', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const room = await alice.createRoom({ name: 'R' });
    await alice.joinRoom(room.room_id);
    const joins = record(alice, 'user_join');
    const bob = await h.client(s, 'Bob');
    await bob.joinRoom(room.room_id);
    await waitUntil(() => joins.some(([u, r]) => u.user_id === bob.userId && r === room.room_id), 5000, 'USER_JOIN in room');
    const [u] = joins.find(([x, r]) => x.user_id === bob.userId && r === room.room_id)!;
    expect(u).toMatchObject({ username: 'Bob', room_id: room.room_id, role: 'participant', is_online: true });
  });
});

describe('room chat', () => {
  it('reaches everyone in the room and no one outside it (other room, no room)', async () => {
    const s = await h.server();
    const [alice, bob, carol, dave, erin] = await Promise.all(
      ['Alice', 'Bob', 'Carol', 'Dave', 'Erin'].map((n) => h.client(s, n)),
    );
    const r1 = await alice.createRoom({ name: 'One' });
    const r2 = await alice.createRoom({ name: 'Two' });
    for (const c of [alice, bob, carol]) await c.joinRoom(r1.room_id);
    await dave.joinRoom(r2.room_id);

    const got = new Map<Client, ChatEntry[]>();
    for (const c of [alice, bob, carol, dave, erin]) {
      const l: ChatEntry[] = [];
      got.set(c, l);
      c.on('chat', (e) => l.push(e));
    }

    const ack = await alice.sendChat('hello room one');
    expect(ack.delivered_to).toBe(2);
    expect(typeof ack.chat_id).toBe('string');

    await waitUntil(() => got.get(bob)!.length === 1 && got.get(carol)!.length === 1, 5000, 'Bob and Carol get the chat');
    for (const c of [bob, carol]) {
      expect(got.get(c)![0]).toEqual({
        chat_id: ack.chat_id,
        seq: ack.seq,
        room_id: r1.room_id,
        user_id: alice.userId,
        username: 'Alice',
        message: 'hello room one',
        timestamp: ack.timestamp,
        is_private: false,
        recipient: null,
      });
    }
    await flush(alice, dave, erin);
    expect(got.get(alice)).toEqual([]); // no echo to the sender: the ACK is its copy
    expect(got.get(dave)).toEqual([]);
    expect(got.get(erin)).toEqual([]);

    // Dave's room chat stays in Dave's room.
    await dave.sendChat('room two only');
    await flush(alice, bob, carol);
    expect(got.get(bob)).toHaveLength(1);
    expect(got.get(carol)).toHaveLength(1);
  });

  it('accepts room_id given only in the envelope (a gap of the original)', async () => {
    const { server: s, room, clients: [alice, bob] } = await h.meeting(['Alice', 'Bob'], { roomName: 'R' });
    const got = record(bob, 'chat');
    await alice.request(MT.CHAT_MESSAGE, { message: 'envelope only' }, { room_id: room.room_id });
    await waitUntil(() => got.length === 1, 5000, 'chat with room_id only in the envelope');
    expect(got[0][0]).toMatchObject({ message: 'envelope only', room_id: room.room_id });
  });

  it('a private message reaches only its recipient; an unknown recipient is INVALID_RECIPIENT', async () => {
    const s = await h.server();
    const [alice, bob, carol] = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => h.client(s, n)));
    const room = await alice.createRoom({ name: 'R' });
    for (const c of [alice, bob, carol]) await c.joinRoom(room.room_id);
    const bobGot = record(bob, 'chat');
    const carolGot = record(carol, 'chat');
    const aliceGot = record(alice, 'chat');

    const ack = await alice.sendPrivate('bob', 'just for you');
    expect(ack.delivered_to).toBe(1);
    expect(ack.recipient).toBe(bob.userId);
    await waitUntil(() => bobGot.length === 1, 5000, 'Bob gets the private message');
    expect(bobGot[0][0]).toEqual({
      chat_id: ack.chat_id,
      seq: ack.seq,
      room_id: null,
      user_id: alice.userId,
      username: 'Alice',
      message: 'just for you',
      timestamp: ack.timestamp,
      is_private: true,
      recipient: bob.userId,
    });
    await flush(alice, carol);
    expect(carolGot).toEqual([]);
    expect(aliceGot).toEqual([]);

    await rejectsWith(alice.sendPrivate('nobody-by-that-name', 'hello?'), 'INVALID_RECIPIENT');
    await flush(bob, carol);
    expect(bobGot).toHaveLength(1);
    expect(carolGot).toEqual([]);
  });

  it('ChatClient keeps private conversations per peer', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const bob = await h.client(s, 'Bob');
    const aChat = new ChatClient(alice);
    const bChat = new ChatClient(bob);
    await waitUntil(() => alice.findUser('Bob') !== undefined, 5000, 'Alice knows Bob is online');
    await aChat.sendPrivate('Bob', 'one');
    await waitUntil(() => bChat.privateMessages(alice.userId!).length === 1, 5000, 'Bob has Alice\'s message');
    await bChat.sendPrivate('Alice', 'two');
    await waitUntil(() => aChat.privateMessages(bob.userId!).length === 2, 5000, 'Alice has both');
    expect(aChat.privateMessages(bob.userId!).map((m) => m.message)).toEqual(['one', 'two']);
    expect(bChat.privateMessages(alice.userId!).map((m) => m.message)).toEqual(['one', 'two']);
    expect(aChat.unreadCount(bob.userId!)).toBe(1);
    expect(bChat.unreadCount(alice.userId!)).toBe(1);
  });

  it('regression: a private message sent before the USER_JOIN of its recipient arrived is filed under the recipient\'s user_id', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const aChat = new ChatClient(alice);
    const bob = await h.client(s, 'Bob');
    const bChat = new ChatClient(bob);
    // Sent at once: Alice's client may not have heard of Bob yet and names him by name.
    await aChat.sendPrivate('Bob', 'one');
    await waitUntil(() => bChat.privateMessages(alice.userId!).length === 1, 5000, 'Bob has Alice\'s message');
    await bChat.sendPrivate('Alice', 'two');
    await waitUntil(() => aChat.privateMessages(bob.userId!).some((m) => m.message === 'two'), 5000, 'Alice has the reply');
    // One conversation with Bob, not one under "Bob" and another under his id.
    expect(aChat.privateMessages(bob.userId!).map((m) => m.message)).toEqual(['one', 'two']);
    expect(aChat.privateMessages('Bob')).toEqual([]);
  });
});

describe('chat history', () => {
  it('arrives on join: the last 100 by default, in order', async () => {
    const s = await chattyServer();
    const alice = await h.client(s, 'Alice');
    const room = await alice.createRoom({ name: 'R' });
    await alice.joinRoom(room.room_id);
    for (let i = 0; i < 105; i++) await alice.sendChat(`m${i}`);

    const bob = await h.client(s, 'Bob');
    const histories = record(bob, 'history');
    await bob.joinRoom(room.room_id);
    await waitUntil(() => histories.length === 1, 5000, 'CHAT_HISTORY on join');
    const [{ room_id, messages }] = histories[0];
    expect(room_id).toBe(room.room_id);
    expect(messages.map((m) => m.message)).toEqual(Array.from({ length: 100 }, (_, i) => `m${i + 5}`));
    for (const m of messages) expect(m).toMatchObject({ user_id: alice.userId, username: 'Alice', room_id: room.room_id });

    // Asked for: the same default, or a smaller limit.
    const asked = await bob.chatHistory();
    expect(asked.messages.map((m) => m.message)).toEqual(messages.map((m) => m.message));
    const last5 = await bob.chatHistory(5);
    expect(last5.messages.map((m) => m.message)).toEqual(['m100', 'm101', 'm102', 'm103', 'm104']);
  });

  it('the historyLimit option sets how many arrive on join', async () => {
    const s = await chattyServer({ historyLimit: 7 });
    const alice = await h.client(s, 'Alice');
    const room = await alice.createRoom({ name: 'R', persistent: true });
    await alice.joinRoom(room.room_id);
    for (let i = 0; i < 20; i++) await alice.sendChat(`m${i}`);
    const bob = await h.client(s, 'Bob');
    const histories = record(bob, 'history');
    await bob.joinRoom(room.room_id);
    await waitUntil(() => histories.length === 1, 5000, 'CHAT_HISTORY on join');
    expect(histories[0][0].messages.map((m) => m.message)).toEqual(Array.from({ length: 7 }, (_, i) => `m${i + 13}`));
  });

  it('an empty room sends an empty history on join', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const room = await alice.createRoom({ name: 'R' });
    const histories = record(alice, 'history');
    await alice.joinRoom(room.room_id);
    await waitUntil(() => histories.length === 1, 5000, 'CHAT_HISTORY on join');
    expect(histories[0][0]).toEqual({ room_id: room.room_id, messages: [] });
  });

  it('ChatClient merges history and live messages without duplicates, and loadOlder pages back (persistent room)', async () => {
    const s = await chattyServer();
    const alice = await h.client(s, 'Alice');
    const aChat = new ChatClient(alice);
    const room = await alice.createRoom({ name: 'Archive', persistent: true });
    await alice.joinRoom(room.room_id);
    const sent: string[] = [];
    for (let i = 0; i < 150; i++) {
      sent.push(`m${i}`);
      await aChat.send(`m${i}`);
      // Distinct millisecond timestamps: equal ones are the regression test below.
      await sleep(2);
    }
    expect(aChat.roomMessages().map((m) => m.message)).toEqual(sent);

    const bob = await h.client(s, 'Bob');
    const bChat = new ChatClient(bob);
    const shown: [string, boolean][] = [];
    bChat.on('message', (e, { own }) => shown.push([e.message, own]));
    await bob.joinRoom(room.room_id);
    await waitUntil(() => bChat.roomMessages(room.room_id).length === 100, 5000, 'history in the ChatClient');
    expect(bChat.roomMessages().map((m) => m.message)).toEqual(sent.slice(50));

    // Live messages from both sides join the same list, once each.
    await aChat.send('live from alice');
    sent.push('live from alice');
    await waitUntil(() => bChat.roomMessages().length === 101, 5000, 'live message');
    await bChat.send('live from bob');
    sent.push('live from bob');
    await waitUntil(() => aChat.roomMessages().length === 152, 5000, 'Alice gets Bob\'s message');
    expect(bChat.roomMessages().map((m) => m.message)).toEqual(sent.slice(50));
    expect(shown).toEqual([
      ['live from alice', false],
      ['live from bob', true],
    ]);
    expect(bChat.unreadCount(room.room_id)).toBe(1);

    // Rejoining pushes the history again: nothing is doubled.
    await bob.leaveRoom();
    const histories = record(bob, 'history');
    await bob.joinRoom(room.room_id);
    await waitUntil(() => histories.length === 1, 5000, 'second CHAT_HISTORY');
    expect(bChat.roomMessages(room.room_id).map((m) => m.message)).toEqual(sent.slice(50));

    // Paging back.
    expect(await bChat.loadOlder(30)).toBe(30);
    expect(bChat.roomMessages().map((m) => m.message)).toEqual(sent.slice(20));
    expect(await bChat.loadOlder(100)).toBe(20);
    expect(bChat.roomMessages().map((m) => m.message)).toEqual(sent);
    expect(await bChat.loadOlder(100)).toBe(0);
    const ids = bChat.roomMessages().map((m) => m.chat_id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('regression: loadOlder keeps the server\'s order for messages sent within the same millisecond', async () => {
    const s = await chattyServer();
    const alice = await h.client(s, 'Alice');
    const room = await alice.createRoom({ name: 'Burst', persistent: true });
    await alice.joinRoom(room.room_id);
    // Sent without waiting: the server stamps many of them with the same timestamp.
    const sent = Array.from({ length: 160 }, (_, i) => `b${i}`);
    await Promise.all(sent.map((m) => alice.sendChat(m)));
    const stored = (await alice.chatHistory(200)).messages.map((m) => m.message);
    expect(stored).toEqual(sent);

    const bob = await h.client(s, 'Bob');
    const bChat = new ChatClient(bob);
    await bob.joinRoom(room.room_id);
    await waitUntil(() => bChat.roomMessages(room.room_id).length === 100, 5000, 'history');
    expect(bChat.roomMessages().map((m) => m.message)).toEqual(sent.slice(60));
    while ((await bChat.loadOlder(25)) > 0) {
      /* page back to the start */
    }
    expect(bChat.roomMessages().map((m) => m.message)).toEqual(sent);
  });

  it('survives a server restart in-process: the persistent room and its chat are back, the temporary room is not', async () => {
    const dataDir = tmpDataDir();
    h.dirs.push(dataDir);
    const s1 = await h.server({ dataDir });
    const alice = await h.client(s1, 'Alice');
    const bob = await h.client(s1, 'Bob');
    const kept = await alice.createRoom({ name: 'Kept', persistent: true, password: 'pw', maxParticipants: 9, settings: { topic: 'x' } });
    const temp = await alice.createRoom({ name: 'Temp' });
    await alice.joinRoom(kept.room_id, 'pw');
    await bob.joinRoom(temp.room_id);
    for (const m of ['first', 'second', 'third']) await alice.sendChat(m);
    await bob.sendChat('in temp');
    await s1.close();

    const s2 = await h.server({ dataDir });
    const carol = await h.client(s2, 'Carol');
    const rooms = await carol.listRooms();
    expect(rooms.map((r) => r.room_name)).toEqual(['Kept']);
    expect(rooms[0]).toMatchObject({
      room_id: kept.room_id,
      room_name: 'Kept',
      is_private: true,
      is_persistent: true,
      max_participants: 9,
      created_by_name: 'Alice',
      settings: { topic: 'x' },
      participant_count: 0,
    });
    await rejectsWith(carol.joinRoom(temp.room_id), 'ROOM_NOT_FOUND');
    await rejectsWith(carol.joinRoom(kept.room_id, 'wrong'), 'WRONG_ROOM_PASSWORD');
    const histories = record(carol, 'history');
    await carol.joinRoom(kept.room_id, 'pw');
    await waitUntil(() => histories.length === 1, 5000, 'history after restart');
    expect(histories[0][0].messages.map((m) => [m.username, m.message])).toEqual([
      ['Alice', 'first'],
      ['Alice', 'second'],
      ['Alice', 'third'],
    ]);
  });
});

describe('room lifetime', () => {
  it('a temporary room vanishes when its last member leaves; a persistent one stays', async () => {
    const s = await h.server();
    const [alice, bob, watcher] = await Promise.all(['Alice', 'Bob', 'Watcher'].map((n) => h.client(s, n)));
    const temp = await alice.createRoom({ name: 'Temp' });
    const perm = await alice.createRoom({ name: 'Perm', persistent: true });
    await waitUntil(() => watcher.rooms.has(temp.room_id) && watcher.rooms.has(perm.room_id), 5000, 'watcher sees both rooms');

    await alice.joinRoom(temp.room_id);
    await bob.joinRoom(temp.room_id);
    await waitUntil(() => watcher.rooms.get(temp.room_id)?.participant_count === 2, 5000, 'count 2');
    await bob.leaveRoom();
    await waitUntil(() => watcher.rooms.get(temp.room_id)?.participant_count === 1, 5000, 'count 1');
    await alice.leaveRoom();
    await waitUntil(() => !watcher.rooms.has(temp.room_id), 5000, 'temporary room gone from the pushed ROOM_LIST');
    await rejectsWith(bob.joinRoom(temp.room_id), 'ROOM_NOT_FOUND');

    await alice.joinRoom(perm.room_id);
    await waitUntil(() => watcher.rooms.get(perm.room_id)?.participant_count === 1, 5000, 'perm count 1');
    await alice.leaveRoom();
    await waitUntil(() => watcher.rooms.get(perm.room_id)?.participant_count === 0, 5000, 'perm count 0');
    expect((await watcher.listRooms()).map((r) => r.room_id)).toEqual([perm.room_id]);
  });

  it('a temporary room also goes when its last member disconnects', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const watcher = await h.client(s, 'Watcher');
    const temp = await alice.createRoom({ name: 'Temp' });
    await alice.joinRoom(temp.room_id);
    await waitUntil(() => watcher.rooms.get(temp.room_id)?.participant_count === 1, 5000, 'count 1');
    await alice.close();
    await waitUntil(() => !watcher.rooms.has(temp.room_id), 5000, 'room gone');
  });
});

describe('refusals, each with its own code', () => {
  it('private room: no password is ROOM_PASSWORD_REQUIRED, a wrong one WRONG_ROOM_PASSWORD', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    const bob = await h.client(s, 'Bob');
    const room = await alice.createRoom({ name: 'Secret', password: 'open sesame' });
    await rejectsWith(bob.joinRoom(room.room_id), 'ROOM_PASSWORD_REQUIRED');
    await rejectsWith(bob.joinRoom(room.room_id, 'open sesam'), 'WRONG_ROOM_PASSWORD');
    expect(bob.room).toBeNull();
    await bob.joinRoom(room.room_id, 'open sesame');
    expect(bob.room?.room_id).toBe(room.room_id);
  });

  it('creating a private room without a password is INVALID_PAYLOAD', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    await rejectsWith(alice.request(MT.ROOM_CREATE, { room_name: 'P', is_private: true }), 'INVALID_PAYLOAD');
  });

  it('a full room (max_participants 2) refuses the third with ROOM_FULL', async () => {
    const s = await h.server();
    const [a, b, c] = await Promise.all(['A', 'B', 'C'].map((n) => h.client(s, n)));
    const room = await a.createRoom({ name: 'Pair', maxParticipants: 2 });
    await a.joinRoom(room.room_id);
    await b.joinRoom(room.room_id);
    await rejectsWith(c.joinRoom(room.room_id), 'ROOM_FULL');
    await b.leaveRoom();
    await c.joinRoom(room.room_id);
  });

  it('two joins racing for the last seat of a private room (password hashing in between): exactly one gets it', async () => {
    const s = await h.server();
    const host = await h.client(s, 'Host');
    const room = await host.createRoom({ name: 'Pair', password: 'pw', maxParticipants: 2 });
    await host.joinRoom(room.room_id, 'pw');
    const racers = await Promise.all(['R1', 'R2', 'R3'].map((n) => h.client(s, n)));
    const results = await Promise.allSettled(racers.map((c) => c.joinRoom(room.room_id, 'pw')));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results.filter((x): x is PromiseRejectedResult => x.status === 'rejected')) {
      expect(r.reason).toMatchObject({ code: 'ROOM_FULL' });
    }
    const info = (await host.listRooms()).find((r) => r.room_id === room.room_id)!;
    expect(info.participant_count).toBe(2);
  });

  it('the server maxParticipants option is the default capacity', async () => {
    const s = await h.server({ maxParticipants: 1 });
    const a = await h.client(s, 'A');
    const b = await h.client(s, 'B');
    const room = await a.createRoom({ name: 'Solo' });
    expect(room.max_participants).toBe(1);
    await a.joinRoom(room.room_id);
    await rejectsWith(b.joinRoom(room.room_id), 'ROOM_FULL');
  });

  it('a locked room refuses newcomers with ROOM_LOCKED', async () => {
    const s = await h.server();
    const a = await h.client(s, 'A');
    const b = await h.client(s, 'B');
    const room = await a.createRoom({ name: 'R' });
    await a.joinRoom(room.room_id);
    await a.lockRoom(true);
    await rejectsWith(b.joinRoom(room.room_id), 'ROOM_LOCKED');
  });

  it('an unknown room is ROOM_NOT_FOUND', async () => {
    const s = await h.server();
    const a = await h.client(s, 'A');
    await rejectsWith(a.joinRoom('00000000-0000-4000-8000-000000000000'), 'ROOM_NOT_FOUND');
  });

  it('chat outside a room is NOT_IN_ROOM', async () => {
    const s = await h.server();
    const a = await h.client(s, 'A');
    await rejectsWith(a.sendChat('anyone?'), 'NOT_IN_ROOM');
    await rejectsWith(a.raiseHand(), 'NOT_IN_ROOM');
    await rejectsWith(a.react('👍'), 'NOT_IN_ROOM');
  });

  it('chat into a room you are not in is NOT_IN_ROOM and reaches no one', async () => {
    const s = await h.server();
    const a = await h.client(s, 'A');
    const b = await h.client(s, 'B');
    const room = await a.createRoom({ name: 'R' });
    await a.joinRoom(room.room_id);
    const got = record(a, 'chat');
    await rejectsWith(b.request(MT.CHAT_MESSAGE, { room_id: room.room_id, message: 'sneaky' }), 'NOT_IN_ROOM');
    await flush(a);
    expect(got).toEqual([]);
  });

  it('empty, blank and too-long chat is INVALID_PAYLOAD (default and option limits)', async () => {
    const s = await h.server({ maxChatLength: 50 });
    const a = await h.client(s, 'A');
    const b = await h.client(s, 'B');
    const room = await a.createRoom({ name: 'R' });
    await a.joinRoom(room.room_id);
    await b.joinRoom(room.room_id);
    const got = record(b, 'chat');
    await rejectsWith(a.sendChat(''), 'INVALID_PAYLOAD');
    await rejectsWith(a.sendChat('   \n\t '), 'INVALID_PAYLOAD');
    await rejectsWith(a.sendChat('x'.repeat(51)), 'INVALID_PAYLOAD');
    await a.sendChat('x'.repeat(50));
    await waitUntil(() => got.length === 1, 5000, 'the 50-character message');
    expect(got[0][0].message).toHaveLength(50);

    const s2 = await h.server();
    const c = await h.client(s2, 'C');
    const room2 = await c.createRoom({ name: 'R' });
    await c.joinRoom(room2.room_id);
    await rejectsWith(c.sendChat('y'.repeat(4001)), 'INVALID_PAYLOAD');
    await c.sendChat('y'.repeat(4000));
  });

  it('chat beyond the rate limit is RATE_LIMITED and is not delivered', async () => {
    // A refill this slow cannot add a token during the test: the burst is all there is.
    const s = await h.server({ chatRatePerSecond: 0.001, chatBurst: 3 });
    const a = await h.client(s, 'A');
    const b = await h.client(s, 'B');
    const room = await a.createRoom({ name: 'R' });
    await a.joinRoom(room.room_id);
    await b.joinRoom(room.room_id);
    const got = record(b, 'chat');
    for (let i = 0; i < 3; i++) await a.sendChat(`ok ${i}`);
    await rejectsWith(a.sendChat('one too many'), 'RATE_LIMITED');
    await rejectsWith(a.sendChat('and another'), 'RATE_LIMITED');
    // The limit is per user: Bob still has his burst.
    await b.sendChat('bob is fine');
    await flush(b);
    expect(got.map(([e]) => e.message)).toEqual(['ok 0', 'ok 1', 'ok 2']);
  });

  it.each([
    ['empty', ''],
    ['blank', '   '],
    ['leading space', ' alice'],
    ['trailing space', 'alice '],
    ['too long', 'x'.repeat(33)],
    ['control character', 'al\u0007ice'],
    ['bidi override', 'al\u202Eice'],
  ])('an invalid username (%s) is INVALID_USERNAME', async (_what, name) => {
    const s = await h.server();
    await rejectsWith(h.client(s, name), 'INVALID_USERNAME');
  });

  it('a 32-character username is accepted', async () => {
    const s = await h.server();
    const c = await h.client(s, 'x'.repeat(32));
    expect(c.user?.username).toBe('x'.repeat(32));
  });

  it.each([
    ['empty', ''],
    ['blank', '  '],
    ['leading space', ' room'],
    ['too long', 'r'.repeat(65)],
    ['control character', 'ro\nom'],
  ])('an invalid room name (%s) is INVALID_ROOM_NAME', async (_what, name) => {
    const s = await h.server();
    const a = await h.client(s, 'A');
    await rejectsWith(a.createRoom({ name }), 'INVALID_ROOM_NAME');
    expect(await a.listRooms()).toEqual([]);
  });

  it('a username already online is USERNAME_TAKEN, case-insensitively; free again once its owner leaves', async () => {
    const s = await h.server();
    const alice = await h.client(s, 'Alice');
    await rejectsWith(h.client(s, 'Alice'), 'USERNAME_TAKEN');
    await rejectsWith(h.client(s, 'alice'), 'USERNAME_TAKEN');
    await rejectsWith(h.client(s, 'ALICE'), 'USERNAME_TAKEN');
    await alice.close();
    const again = await h.client(s, 'aLiCe');
    // One name in two Unicode spellings (precomposed and combining accent) is one name.
    await h.client(s, 'Zo\u00e9');
    await rejectsWith(h.client(s, 'Zoe\u0301'), 'USERNAME_TAKEN');
    await rejectsWith(h.client(s, 'ZO\u00c9'), 'USERNAME_TAKEN');
    expect(again.user?.username).toBe('aLiCe');
  });
});

describe('hands, reactions and what a third client sees', () => {
  it('raise and lower hand reach the others as USER_UPDATE with hand_raised', async () => {
    const { server: s, room, clients: [alice, bob] } = await h.meeting(['Alice', 'Bob'], { roomName: 'R' });
    const updates = record(alice, 'user_update');

    const r = await bob.raiseHand();
    expect(r.user.hand_raised).toBe(true);
    await waitUntil(() => alice.users.get(bob.userId!)?.hand_raised === true, 5000, 'Alice sees the hand');
    expect(updates.some(([u]) => u.user_id === bob.userId && u.hand_raised)).toBe(true);

    await bob.lowerHand();
    await waitUntil(() => alice.users.get(bob.userId!)?.hand_raised === false, 5000, 'Alice sees it lowered');

    // The host may lower someone's hand; a participant may not.
    await bob.raiseHand();
    await rejectsWith(bob.lowerHand('Alice'), 'PERMISSION_DENIED');
    await alice.lowerHand('Bob');
    await waitUntil(() => bob.user?.hand_raised === false, 5000, 'Bob sees his hand lowered');
  });

  it('a reaction reaches the others in the room, not the sender, not outsiders', async () => {
    const s = await h.server();
    const [alice, bob, carol] = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => h.client(s, n)));
    const room = await alice.createRoom({ name: 'R' });
    await alice.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
    const aliceGot = record(alice, 'reaction');
    const bobGot = record(bob, 'reaction');
    const carolGot = record(carol, 'reaction');
    await bob.react('👏');
    await waitUntil(() => aliceGot.length === 1, 5000, 'reaction');
    expect(aliceGot[0][0]).toEqual({ user_id: bob.userId, username: 'Bob', reaction: '👏' });
    await flush(bob, carol);
    expect(bobGot).toEqual([]);
    expect(carolGot).toEqual([]);
    await rejectsWith(bob.react('x'.repeat(17)), 'INVALID_PAYLOAD');
  });

  it('ROOM_LIST and USER_UPDATE pushes keep a third client\'s rooms and users maps current', async () => {
    const s = await h.server();
    const watcher = await h.client(s, 'Watcher');
    const alice = await h.client(s, 'Alice');
    await waitUntil(() => watcher.findUser('Alice') !== undefined, 5000, 'watcher sees Alice online');
    expect(watcher.users.get(alice.userId!)).toMatchObject({ username: 'Alice', room_id: null, is_online: true });

    const room = await alice.createRoom({ name: 'Watched' });
    await waitUntil(() => watcher.rooms.has(room.room_id), 5000, 'watcher sees the new room');
    expect(watcher.rooms.get(room.room_id)).toMatchObject({ room_name: 'Watched', participant_count: 0 });

    await alice.joinRoom(room.room_id);
    await waitUntil(
      () => watcher.rooms.get(room.room_id)?.participant_count === 1 && watcher.users.get(alice.userId!)?.room_id === room.room_id,
      5000,
      'watcher sees Alice in the room',
    );
    expect(watcher.rooms.get(room.room_id)?.host_id).toBe(alice.userId);
    expect(watcher.users.get(alice.userId!)?.role).toBe('host');

    const bob = await h.client(s, 'Bob');
    await bob.joinRoom(room.room_id);
    await waitUntil(() => watcher.rooms.get(room.room_id)?.participant_count === 2, 5000, 'count 2');
    await bob.setVideo(true);
    await waitUntil(() => watcher.users.get(bob.userId!)?.is_video_enabled === true, 5000, 'video flag');
    await bob.setAudio(true);
    await waitUntil(() => watcher.users.get(bob.userId!)?.is_audio_enabled === true, 5000, 'audio flag');
    expect(watcher.users.get(bob.userId!)?.is_muted).toBe(false);
    await bob.setScreenShare(true);
    await waitUntil(() => watcher.users.get(bob.userId!)?.is_screen_sharing === true, 5000, 'screen flag');

    await bob.close();
    await waitUntil(() => !watcher.users.has(bob.userId!), 5000, 'Bob gone from the users map');
    await waitUntil(() => watcher.rooms.get(room.room_id)?.participant_count === 1, 5000, 'count back to 1');

    await alice.leaveRoom();
    await waitUntil(() => watcher.users.get(alice.userId!)?.room_id === null, 5000, 'Alice out of the room');
    await waitUntil(() => !watcher.rooms.has(room.room_id), 5000, 'room gone');
  });
});
