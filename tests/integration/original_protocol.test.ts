/**
 * Acceptance test of wire compatibility with the original Python application
 * (../../../shared/ORIGINAL_PROTOCOL.md): clients that speak only the original's
 * protocol (tests/kit/raw_client.ts, which shares no code with the product) connect
 * to a real server, create and join rooms, chat, leave and disconnect.
 *
 * Also checks this product's additions on the same wire: reply_to on every
 * SUCCESS/ERROR/ACK, and protocol_version/capabilities in CONNECT's SUCCESS.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness } from '../kit/server';
import { RawClient, type RawEnvelope } from '../kit/raw_client';
import type { Server } from '../../server/main_server';

const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

const USER_FIELDS = [
  'user_id',
  'username',
  'room_id',
  'is_online',
  'is_muted',
  'is_video_enabled',
  'is_audio_enabled',
  'is_screen_sharing',
  'last_seen',
  'permissions',
] as const;
const PERMISSION_FIELDS = ['can_mute_others', 'can_kick_users', 'can_manage_rooms', 'can_record'] as const;
const ROOM_FIELDS = [
  'room_id',
  'room_name',
  'created_by',
  'created_at',
  'max_participants',
  'is_private',
  'participant_count',
  'is_recording',
  'settings',
] as const;

/** Every message of the original carries the seven envelope fields, with these types. */
function expectEnvelope(m: RawEnvelope): void {
  expect(Object.keys(m)).toEqual(
    expect.arrayContaining(['type', 'data', 'sender', 'recipient', 'room_id', 'timestamp', 'message_id']),
  );
  expect(typeof m.type).toBe('string');
  expect(m.data !== null && typeof m.data === 'object' && !Array.isArray(m.data)).toBe(true);
  for (const k of ['sender', 'recipient', 'room_id'] as const) {
    expect(m[k] === null || typeof m[k] === 'string', `${m.type}.${k} is a string or null`).toBe(true);
  }
  // Seconds since the epoch as a float: within a minute of now, not milliseconds.
  expect(typeof m.timestamp).toBe('number');
  expect(Math.abs(m.timestamp - Date.now() / 1000)).toBeLessThan(60);
  expect(m.message_id).toMatch(UUID4);
}

function expectUserObject(u: Record<string, any>, expected: { user_id?: string; username?: string; room_id?: string | null } = {}): void {
  for (const f of USER_FIELDS) expect(u, `user object has ${f}`).toHaveProperty(f);
  expect(typeof u.user_id).toBe('string');
  expect(typeof u.username).toBe('string');
  expect(u.room_id === null || typeof u.room_id === 'string').toBe(true);
  for (const f of ['is_online', 'is_muted', 'is_video_enabled', 'is_audio_enabled', 'is_screen_sharing'] as const) {
    expect(typeof u[f], `user.${f}`).toBe('boolean');
  }
  expect(u.is_online).toBe(true);
  expect(typeof u.last_seen).toBe('number');
  for (const f of PERMISSION_FIELDS) expect(typeof u.permissions?.[f], `permissions.${f}`).toBe('boolean');
  if (expected.user_id !== undefined) expect(u.user_id).toBe(expected.user_id);
  if (expected.username !== undefined) expect(u.username).toBe(expected.username);
  if (expected.room_id !== undefined) expect(u.room_id).toBe(expected.room_id);
}

function expectRoomObject(r: Record<string, any>): void {
  for (const f of ROOM_FIELDS) expect(r, `room object has ${f}`).toHaveProperty(f);
  expect(typeof r.room_id).toBe('string');
  expect(typeof r.room_name).toBe('string');
  expect(typeof r.created_by).toBe('string');
  expect(typeof r.created_at).toBe('number');
  expect(Number.isInteger(r.max_participants)).toBe(true);
  expect(typeof r.is_private).toBe('boolean');
  expect(Number.isInteger(r.participant_count)).toBe(true);
  expect(typeof r.is_recording).toBe('boolean');
  expect(r.settings !== null && typeof r.settings === 'object').toBe(true);
}

/** A reply of the product names the request it answers. */
function expectReplyTo(reply: RawEnvelope, sent: RawEnvelope, type: 'SUCCESS' | 'ERROR' | 'ACK'): void {
  expect(reply.type, `reply to ${sent.type}: ${JSON.stringify(reply.data)}`).toBe(type);
  expect(reply.reply_to).toBe(sent.message_id);
}

/** The original's ERROR: data.message is a human-readable string (the product adds a code). */
function expectError(reply: RawEnvelope, sent: RawEnvelope, code: string): void {
  expectReplyTo(reply, sent, 'ERROR');
  expect(typeof reply.data.message).toBe('string');
  expect(reply.data.message.length).toBeGreaterThan(0);
  expect(reply.data.code).toBe(code);
}

/**
 * After a HEARTBEAT round trip, everything the server wrote to this connection before
 * it handled the HEARTBEAT has arrived (one connection, handled in order, TCP in order).
 */
async function barrier(c: RawClient): Promise<void> {
  const { sent, reply } = await c.request('HEARTBEAT', {});
  expectReplyTo(reply, sent, 'ACK');
}

describe('original protocol on TCP 8888 (raw clients written from ORIGINAL_PROTOCOL.md)', () => {
  let h: Harness;
  let server: Server;
  const raws: RawClient[] = [];

  async function raw(): Promise<RawClient> {
    const c = await RawClient.connect(server.port);
    raws.push(c);
    return c;
  }

  beforeEach(async () => {
    h = new Harness();
    server = await h.server();
  });

  afterEach(async () => {
    // Every message any raw client received had the original's envelope.
    const all = raws.flatMap((c) => c.received);
    for (const c of raws.splice(0)) await c.close();
    await h.closeAll();
    for (const m of all) expectEnvelope(m);
  });

  it('CONNECT {username, user_id: ""} -> SUCCESS {user_id, message}, with protocol_version, capabilities and reply_to', async () => {
    const a = await raw();
    const { sent, reply } = await a.connectAs('alice');
    expectReplyTo(reply, sent, 'SUCCESS');
    expect(typeof reply.data.user_id).toBe('string');
    expect(reply.data.user_id.length).toBeGreaterThan(0);
    expect(typeof reply.data.message).toBe('string');
    // Additions of this product.
    expect(Number.isInteger(reply.data.protocol_version)).toBe(true);
    expect(reply.data.protocol_version).toBeGreaterThanOrEqual(1);
    expect(Array.isArray(reply.data.capabilities)).toBe(true);
    expect(reply.data.capabilities).toContain('reply_to');
    expect(a.userId).toBe(reply.data.user_id);
  });

  it('others get USER_JOIN with the full user object when someone connects', async () => {
    const a = await raw();
    const b = await raw();
    const c = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    const joinB = await a.nextOfType('USER_JOIN', (m) => m.data.username === 'bob');
    expectUserObject(joinB.data, { user_id: b.userId!, username: 'bob', room_id: null });
    await c.connectAs('carol');
    for (const peer of [a, b]) {
      const joinC = await peer.nextOfType('USER_JOIN', (m) => m.data.username === 'carol');
      expectUserObject(joinC.data, { user_id: c.userId!, username: 'carol', room_id: null });
      expect(joinC.data.permissions).toEqual({
        can_mute_others: false,
        can_kick_users: false,
        can_manage_rooms: false,
        can_record: false,
      });
    }
    // Nobody is told about their own arrival.
    await barrier(c);
    expect(c.received.filter((m) => m.type === 'USER_JOIN' && m.data.user_id === c.userId)).toEqual([]);
  });

  it('HEARTBEAT {} -> ACK with reply_to', async () => {
    const a = await raw();
    await a.connectAs('alice');
    for (let i = 0; i < 3; i++) {
      const { sent, reply } = await a.request('HEARTBEAT', {});
      expectReplyTo(reply, sent, 'ACK');
    }
  });

  it('a whole meeting: create, list, join, chat (room_id in data and only in the envelope), leave, disconnect', async () => {
    const a = await raw();
    const b = await raw();
    const c = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    await c.connectAs('carol');

    // ROOM_CREATE with the original's four fields.
    const created = await a.request('ROOM_CREATE', { room_name: 'Standup', is_private: false, password: '', max_participants: 10 });
    expectReplyTo(created.reply, created.sent, 'SUCCESS');
    const room = created.reply.data.room;
    expectRoomObject(room);
    expect(room).toMatchObject({
      room_name: 'Standup',
      is_private: false,
      max_participants: 10,
      participant_count: 0,
      is_recording: false,
      created_by: a.userId,
    });
    const roomId: string = room.room_id;

    // ROOM_LIST is pushed to everyone online, with the new room in it.
    for (const peer of [a, b, c]) {
      const list = await peer.nextOfType('ROOM_LIST', (m) => m.data.rooms?.some((r: any) => r.room_id === roomId));
      const listed = list.data.rooms.find((r: any) => r.room_id === roomId);
      expectRoomObject(listed);
      expect(listed.room_name).toBe('Standup');
    }

    // ROOM_JOIN {room_id, password} -> SUCCESS {room, participants}.
    const joinA = await a.request('ROOM_JOIN', { room_id: roomId, password: '' });
    expectReplyTo(joinA.reply, joinA.sent, 'SUCCESS');
    expectRoomObject(joinA.reply.data.room);
    expect(joinA.reply.data.room.room_id).toBe(roomId);
    expect(joinA.reply.data.room.participant_count).toBe(1);
    expect(joinA.reply.data.participants).toHaveLength(1);
    expectUserObject(joinA.reply.data.participants[0], { user_id: a.userId!, room_id: roomId });

    const joinB = await b.request('ROOM_JOIN', { room_id: roomId, password: '' });
    expectReplyTo(joinB.reply, joinB.sent, 'SUCCESS');
    expect(joinB.reply.data.room.participant_count).toBe(2);
    expect(joinB.reply.data.participants.map((p: any) => p.user_id).sort()).toEqual([a.userId, b.userId].sort());
    for (const p of joinB.reply.data.participants) expectUserObject(p, { room_id: roomId });

    // The room's others get USER_JOIN <user object>, with the room in the envelope.
    const userJoin = await a.nextOfType('USER_JOIN', (m) => m.data.user_id === b.userId && m.data.room_id === roomId);
    expectUserObject(userJoin.data, { user_id: b.userId!, username: 'bob', room_id: roomId });
    expect(userJoin.room_id).toBe(roomId);

    // CHAT_MESSAGE with room_id in data.
    const chat1 = a.send('CHAT_MESSAGE', { room_id: roomId, message: 'hello from data' }, { room_id: roomId });
    const ack1 = await a.nextOfType('ACK', (m) => m.reply_to === chat1.message_id);
    expectReplyTo(ack1, chat1, 'ACK');
    const got1 = await b.nextOfType('CHAT_MESSAGE', (m) => m.data.message === 'hello from data');
    expect(got1.data).toMatchObject({ user_id: a.userId, message: 'hello from data' });
    expect(got1.room_id).toBe(roomId);
    expect(typeof got1.data.username).toBe('string');
    expect(typeof got1.data.timestamp).toBe('number');

    await barrier(a);
    await barrier(c);
    // The sender does not get its own message back; someone outside the room gets nothing.
    expect(a.received.filter((m) => m.type === 'CHAT_MESSAGE')).toEqual([]);
    expect(c.received.filter((m) => m.type === 'CHAT_MESSAGE')).toEqual([]);
    expect(c.received.filter((m) => m.type === 'USER_JOIN' && m.room_id === roomId)).toEqual([]);

    // ROOM_LEAVE {room_id}: the room gets USER_LEAVE {user_id}.
    const leave = await b.request('ROOM_LEAVE', { room_id: roomId });
    expectReplyTo(leave.reply, leave.sent, 'SUCCESS');
    const userLeave = await a.nextOfType('USER_LEAVE', (m) => m.data.user_id === b.userId);
    expect(userLeave.room_id).toBe(roomId);

    // A chat after bob left does not reach him.
    const chat2 = a.send('CHAT_MESSAGE', { room_id: roomId, message: 'only me now' }, { room_id: roomId });
    expectReplyTo(await a.nextOfType('ACK', (m) => m.reply_to === chat2.message_id), chat2, 'ACK');
    await barrier(b);
    expect(b.received.filter((m) => m.type === 'CHAT_MESSAGE' && m.data.message === 'only me now')).toEqual([]);

    // DISCONNECT {user_id}: the others get USER_LEAVE, and the connection ends.
    c.send('DISCONNECT', { user_id: c.userId });
    for (const peer of [a, b]) {
      const gone = await peer.nextOfType('USER_LEAVE', (m) => m.data.user_id === c.userId);
      expect(gone.data.user_id).toBe(c.userId);
    }
    await c.closed;
    expect(c.isClosed).toBe(true);
  });

  // Regression: the original accepted a chat only when room_id was in data; its own helper
  // put room_id only in the envelope, and those messages were silently dropped.
  it('CHAT_MESSAGE with room_id only in the envelope reaches the room (the original dropped it)', async () => {
    const a = await raw();
    const b = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    const created = await a.request('ROOM_CREATE', { room_name: 'Envelope', is_private: false, password: '', max_participants: 50 });
    const roomId: string = created.reply.data.room.room_id;
    await a.request('ROOM_JOIN', { room_id: roomId, password: '' });
    await b.request('ROOM_JOIN', { room_id: roomId, password: '' });

    // data has no room_id key at all, as the original's helper sent it.
    const s1 = a.send('CHAT_MESSAGE', { message: 'envelope only' }, { room_id: roomId });
    expectReplyTo(await a.nextOfType('ACK', (m) => m.reply_to === s1.message_id), s1, 'ACK');
    const g1 = await b.nextOfType('CHAT_MESSAGE', (m) => m.data.message === 'envelope only');
    expect(g1.data).toMatchObject({ user_id: a.userId, message: 'envelope only' });
    expect(g1.room_id).toBe(roomId);

    // data.room_id null: the envelope still names the room.
    const s2 = b.send('CHAT_MESSAGE', { room_id: null, message: 'null in data' }, { room_id: roomId });
    expectReplyTo(await b.nextOfType('ACK', (m) => m.reply_to === s2.message_id), s2, 'ACK');
    const g2 = await a.nextOfType('CHAT_MESSAGE', (m) => m.data.message === 'null in data');
    expect(g2.data).toMatchObject({ user_id: b.userId, message: 'null in data' });
    expect(g2.room_id).toBe(roomId);

    // The envelope's room_id is really read (not just "the sender's current room"):
    // naming another room there is refused, and nothing reaches the sender's room.
    const other = await b.request('ROOM_CREATE', { room_name: 'Other', is_private: false, password: '', max_participants: 50 });
    const otherId: string = other.reply.data.room.room_id;
    const s3 = a.send('CHAT_MESSAGE', { message: 'wrong room' }, { room_id: otherId });
    expectError(await a.nextOfType('ERROR', (m) => m.reply_to === s3.message_id), s3, 'NOT_IN_ROOM');
    await barrier(b);
    expect(b.received.filter((m) => m.type === 'CHAT_MESSAGE' && m.data.message === 'wrong room')).toEqual([]);

    // Both are stored in the room's history, as chat entries of the original.
    const c = await raw();
    await c.connectAs('carol');
    await c.request('ROOM_JOIN', { room_id: roomId, password: '' });
    const history = await c.nextOfType('CHAT_HISTORY');
    const texts = history.data.messages.map((e: any) => e.message);
    expect(texts).toEqual(['envelope only', 'null in data']);
    for (const e of history.data.messages) {
      expect(typeof e.user_id).toBe('string');
      expect(typeof e.username).toBe('string');
      expect(typeof e.timestamp).toBe('number');
    }
  });

  it('a private room needs its password; failures answer ERROR {message} with reply_to', async () => {
    const a = await raw();
    const b = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    const created = await a.request('ROOM_CREATE', { room_name: 'Secret', is_private: true, password: 'pw1', max_participants: 5 });
    expectReplyTo(created.reply, created.sent, 'SUCCESS');
    expect(created.reply.data.room.is_private).toBe(true);
    expect(JSON.stringify(created.reply.data)).not.toContain('pw1');
    const roomId: string = created.reply.data.room.room_id;

    const wrong = await b.request('ROOM_JOIN', { room_id: roomId, password: 'nope' });
    expectError(wrong.reply, wrong.sent, 'WRONG_ROOM_PASSWORD');
    const none = await b.request('ROOM_JOIN', { room_id: roomId, password: '' });
    expectError(none.reply, none.sent, 'ROOM_PASSWORD_REQUIRED');
    const right = await b.request('ROOM_JOIN', { room_id: roomId, password: 'pw1' });
    expectReplyTo(right.reply, right.sent, 'SUCCESS');

    const missing = await a.request('ROOM_JOIN', { room_id: 'no-such-room', password: '' });
    expectError(missing.reply, missing.sent, 'ROOM_NOT_FOUND');
    const notIn = await a.request('CHAT_MESSAGE', { room_id: roomId, message: 'hi' });
    expectError(notIn.reply, notIn.sent, 'NOT_IN_ROOM');
    const leaveNone = await a.request('ROOM_LEAVE', { room_id: roomId });
    expectError(leaveNone.reply, leaveNone.sent, 'NOT_IN_ROOM');

    // A second CONNECT with a name in use is refused.
    const d = await raw();
    const taken = await d.request('CONNECT', { username: 'alice', user_id: '' });
    expectError(taken.reply, taken.sent, 'USERNAME_TAKEN');
  });

  it('VIDEO_START / AUDIO_START {user_id}: peers see the status change', async () => {
    const a = await raw();
    const b = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    const v = await a.request('VIDEO_START', { user_id: a.userId });
    expectReplyTo(v.reply, v.sent, 'SUCCESS');
    const upd = await b.next((m) => m.data?.user_id === a.userId && m.data?.is_video_enabled === true);
    expectUserObject(upd.data, { user_id: a.userId! });
    const au = await a.request('AUDIO_START', { user_id: a.userId });
    expectReplyTo(au.reply, au.sent, 'SUCCESS');
    const upd2 = await b.next((m) => m.data?.user_id === a.userId && m.data?.is_audio_enabled === true);
    expect(upd2.data.is_muted).toBe(false);
  });

  it('a connection that drops without DISCONNECT: the others get USER_LEAVE once the resume window ends', async () => {
    await server.close();
    server = await h.server({ resumeGraceMs: 300 });
    const a = await raw();
    const b = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    b.destroy();
    // First the place is held (is_reconnecting), then the user leaves.
    const held = await a.nextOfType('USER_UPDATE', (m) => m.data.user_id === b.userId);
    expect(held.data.is_reconnecting).toBe(true);
    const gone = await a.nextOfType('USER_LEAVE', (m) => m.data.user_id === b.userId);
    expect(gone.data.user_id).toBe(b.userId);
    // The name is free again.
    const b2 = await raw();
    const again = await b2.connectAs('bob');
    expectReplyTo(again.reply, again.sent, 'SUCCESS');
  });

  it('a dropped name can be signed in again at once, without the old place (no resume token)', async () => {
    const a = await raw();
    const b = await raw();
    await a.connectAs('alice');
    await b.connectAs('bob');
    b.destroy();
    await a.nextOfType('USER_UPDATE', (m) => m.data.user_id === b.userId && m.data.is_reconnecting === true);
    const b2 = await raw();
    const again = await b2.connectAs('bob');
    expectReplyTo(again.reply, again.sent, 'SUCCESS');
    // The old user left and a new one came: peers are told both.
    await a.nextOfType('USER_LEAVE', (m) => m.data.user_id === b.userId);
    const joined = await a.nextOfType('USER_JOIN', (m) => m.data.username === 'bob' && m.data.user_id !== b.userId);
    expect(joined.data.is_reconnecting).toBe(false);
  });
});
