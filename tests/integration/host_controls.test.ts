/**
 * Host controls end to end: roles, host mute, kick and ban, lock, promote/demote,
 * host transfer and automatic hand-over, end meeting, admin and server passwords.
 * A real Server on 127.0.0.1:0 and real library Clients over TCP.
 *
 * Negative checks ("nobody else got it") use a HEARTBEAT round trip on the
 * bystander's connection as a barrier: pushes to one connection keep their order.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Client } from '../../client/main_client';
import type { Server, ServerOptions } from '../../server/main_server';
import { MT, type RoomInfo } from '../../shared/protocol/messages';
import { flush, Harness, record, rejectsWith, waitUntil } from '../kit/server';

const h = new Harness();
afterEach(() => h.closeAll());

const ALL = { can_mute_others: true, can_kick_users: true, can_manage_rooms: true, can_record: true };
const NONE = { can_mute_others: false, can_kick_users: false, can_manage_rooms: false, can_record: false };

interface Meeting {
  server: Server;
  room: RoomInfo;
  /** Joined in this order: the first is the host. */
  clients: Client[];
}

const meeting = (names: string[], o: { persistent?: boolean; server?: ServerOptions } = {}): Promise<Meeting> => h.meeting(names, o);

/** What `viewer` believes about `subject`. */
const view = (viewer: Client, subject: Client) => viewer.users.get(subject.userId!);

describe('roles', () => {
  it('the first joiner is host with every permission; later joiners are participants with none', async () => {
    const { room, clients } = await meeting(['Alice', 'Bob', 'Carol']);
    const [alice, bob, carol] = clients;
    expect(alice.user).toMatchObject({ role: 'host', permissions: ALL });
    expect(bob.user).toMatchObject({ role: 'participant', permissions: NONE });
    expect(carol.user).toMatchObject({ role: 'participant', permissions: NONE });
    for (const viewer of clients) {
      expect(view(viewer, alice)).toMatchObject({ role: 'host', permissions: ALL });
      expect(view(viewer, bob)).toMatchObject({ role: 'participant', permissions: NONE });
    }
    const current = (await carol.listRooms()).find((r) => r.room_id === room.room_id)!;
    expect(current).toMatchObject({ host_id: alice.userId, host_name: 'Alice', participant_count: 3 });
  });
});

describe('host mute', () => {
  it('MUTE_USER marks the target muted by host for everyone; the target gets "muted"; AUDIO_START is MUTED_BY_HOST; UNMUTE_USER clears it', async () => {
    const { clients } = await meeting(['Alice', 'Bob', 'Carol']);
    const [alice, bob, carol] = clients;
    await bob.setAudio(true);
    await waitUntil(() => clients.every((c) => view(c, bob)?.is_audio_enabled === true), 5000, 'Bob audible');

    const muted = record(bob, 'muted');
    const carolMuted = record(carol, 'muted');
    const r = await alice.mute('Bob');
    expect(r.user).toMatchObject({ user_id: bob.userId, is_muted_by_host: true, is_muted: true, is_audio_enabled: false });
    await waitUntil(() => clients.every((c) => view(c, bob)?.is_muted_by_host === true), 5000, 'everyone sees Bob muted by host');
    for (const c of clients) expect(view(c, bob)).toMatchObject({ is_muted: true, is_audio_enabled: false });
    await waitUntil(() => muted.length === 1, 5000, 'Bob gets "muted"');
    expect(muted[0][0]).toEqual({ user_id: bob.userId, by: { user_id: alice.userId, username: 'Alice' } });
    await flush(carol);
    expect(carolMuted).toEqual([]);

    await rejectsWith(bob.setAudio(true), 'MUTED_BY_HOST');
    // Muting someone already muted is harmless.
    await alice.mute('Bob');

    const asked = record(bob, 'unmute_requested');
    await alice.unmute('Bob');
    await waitUntil(() => clients.every((c) => view(c, bob)?.is_muted_by_host === false), 5000, 'mute lifted everywhere');
    await waitUntil(() => asked.length === 1, 5000, 'Bob gets "unmute_requested"');
    expect(asked[0][0]).toEqual({ user_id: bob.userId, by: { user_id: alice.userId, username: 'Alice' } });
    const back = await bob.setAudio(true);
    expect(back.user).toMatchObject({ is_audio_enabled: true, is_muted: false, is_muted_by_host: false });
  });

  it('MUTE_ALL mutes every participant, moderators only when asked, never the host', async () => {
    const { clients } = await meeting(['Alice', 'Bob', 'Carol', 'Dave']);
    const [alice, bob, carol, dave] = clients;
    await alice.promote('Bob');
    const carolMuted = record(carol, 'muted');
    const daveMuted = record(dave, 'muted');
    const bobMuted = record(bob, 'muted');

    const r = await alice.muteAll();
    expect(r.muted.sort()).toEqual([carol.userId, dave.userId].sort());
    await waitUntil(() => carolMuted.length === 1 && daveMuted.length === 1, 5000, 'Carol and Dave muted');
    await waitUntil(
      () => clients.every((c) => view(c, carol)?.is_muted_by_host && view(c, dave)?.is_muted_by_host),
      5000,
      'everyone sees the mutes',
    );
    await flush(bob);
    expect(bobMuted).toEqual([]);
    expect(view(alice, bob)?.is_muted_by_host).toBe(false);
    expect(view(alice, alice)?.is_muted_by_host).toBe(false);

    const r2 = await alice.muteAll(true);
    expect(r2.muted).toEqual([bob.userId]); // the others are muted already
    await waitUntil(() => bobMuted.length === 1, 5000, 'Bob muted too');
    await rejectsWith(carol.setAudio(true), 'MUTED_BY_HOST');
  });
});

describe('kick', () => {
  it('the kicked client gets "kicked", the others user_leave with reason kicked; no rejoin (even from a new connection) until the meeting ends', async () => {
    const { server, room, clients } = await meeting(['Alice', 'Bob', 'Carol'], { persistent: true });
    const [alice, bob, carol] = clients;
    const kicked = record(bob, 'kicked');
    const aliceLeaves = record(alice, 'user_leave');
    const carolLeaves = record(carol, 'user_leave');

    await alice.kick('Bob', 'disruptive');
    await waitUntil(() => kicked.length === 1, 5000, 'Bob gets "kicked"');
    expect(kicked[0][0]).toEqual({
      user_id: bob.userId,
      room_id: room.room_id,
      by: { user_id: alice.userId, username: 'Alice' },
      reason: 'disruptive',
    });
    expect(bob.room).toBeNull();
    for (const leaves of [aliceLeaves, carolLeaves]) {
      await waitUntil(() => leaves.some(([d]) => d.user_id === bob.userId), 5000, 'user_leave for Bob');
      const [d, roomId] = leaves.find(([x]) => x.user_id === bob.userId)!;
      expect(d).toEqual({ user_id: bob.userId, username: 'Bob', reason: 'kicked' });
      expect(roomId).toBe(room.room_id);
    }
    await waitUntil(() => view(alice, bob)?.room_id === null, 5000, 'Alice sees Bob out of the room');
    // Bob is still online, only out of the room.
    expect(view(carol, bob)).toBeDefined();

    await rejectsWith(bob.joinRoom(room.room_id), 'BANNED_FROM_ROOM');
    await bob.close();
    const bob2 = await h.client(server, 'Bob');
    await rejectsWith(bob2.joinRoom(room.room_id), 'BANNED_FROM_ROOM');
    await bob2.close();
    const bob3 = await h.client(server, 'BOB'); // names are one name case-insensitively
    await rejectsWith(bob3.joinRoom(room.room_id), 'BANNED_FROM_ROOM');

    const ended = record(carol, 'meeting_ended');
    await alice.endMeeting();
    await waitUntil(() => ended.length === 1, 5000, 'meeting ended');
    const j = await bob3.joinRoom(room.room_id);
    expect(j.room.room_id).toBe(room.room_id);
    expect(bob3.user?.role).toBe('host'); // first into the new meeting
  });

  it('a kick without a reason carries the default reason', async () => {
    const { clients } = await meeting(['Alice', 'Bob']);
    const [alice, bob] = clients;
    const kicked = record(bob, 'kicked');
    await alice.kick('Bob');
    await waitUntil(() => kicked.length === 1, 5000, 'kicked');
    expect(kicked[0][0].reason).toBe('Removed by the host');
  });
});

describe('lock', () => {
  it('lock and unlock: the room update reaches the room; newcomers are refused while locked', async () => {
    const { server, room, clients } = await meeting(['Alice', 'Bob']);
    const [alice, bob] = clients;
    const dave = await h.client(server, 'Dave');
    const updates = record(bob, 'room_update');

    const locked = await alice.lockRoom(true);
    expect(locked.room.is_locked).toBe(true);
    await waitUntil(() => updates.some(([u]) => u.change === 'locked'), 5000, 'ROOM_UPDATE locked');
    expect(bob.room?.is_locked).toBe(true);
    await waitUntil(() => dave.rooms.get(room.room_id)?.is_locked === true, 5000, 'room list shows the lock');
    await rejectsWith(dave.joinRoom(room.room_id), 'ROOM_LOCKED');

    const unlocked = await alice.lockRoom(false);
    expect(unlocked.room.is_locked).toBe(false);
    await waitUntil(() => updates.some(([u]) => u.change === 'unlocked'), 5000, 'ROOM_UPDATE unlocked');
    await dave.joinRoom(room.room_id);
    expect(dave.room?.room_id).toBe(room.room_id);
  });

  it('the lock goes with the meeting: an emptied persistent room is open again', async () => {
    const { server, room, clients } = await meeting(['Alice'], { persistent: true });
    const [alice] = clients;
    await alice.lockRoom(true);
    await alice.leaveRoom();
    const bob = await h.client(server, 'Bob');
    await bob.joinRoom(room.room_id);
    expect(bob.room?.is_locked).toBe(false);
  });
});

describe('moderators and host transfer', () => {
  it('promote: ROLE_CHANGE to all; a moderator can mute and kick participants, not the host, and cannot promote; demote undoes it', async () => {
    const { clients } = await meeting(['Alice', 'Bob', 'Carol', 'Dave']);
    const [alice, bob, carol, dave] = clients;
    const changes = clients.map((c) => record(c, 'role_change'));

    const p = await alice.promote('Bob');
    expect(p.user).toMatchObject({ role: 'moderator', permissions: { can_mute_others: true, can_kick_users: true } });
    for (const ch of changes) {
      await waitUntil(() => ch.length === 1, 5000, 'ROLE_CHANGE everywhere');
      expect(ch[0][0]).toEqual({
        user_id: bob.userId,
        username: 'Bob',
        role: 'moderator',
        previous_role: 'participant',
        by: { user_id: alice.userId, username: 'Alice' },
        reason: 'promoted',
      });
    }
    await waitUntil(() => clients.every((c) => view(c, bob)?.role === 'moderator'), 5000, 'users maps show moderator');
    await rejectsWith(alice.promote('Bob'), 'INVALID_PAYLOAD'); // already a moderator

    // What a moderator may do...
    await bob.mute('Carol');
    await waitUntil(() => view(alice, carol)?.is_muted_by_host === true, 5000, 'Carol muted by the moderator');
    await bob.unmute('Carol');
    await bob.lockRoom(true);
    await bob.lockRoom(false);
    const kicked = record(dave, 'kicked');
    await bob.kick('Dave');
    await waitUntil(() => kicked.length === 1, 5000, 'Dave kicked by the moderator');
    expect(kicked[0][0].by).toEqual({ user_id: bob.userId, username: 'Bob' });

    // ...and may not.
    await rejectsWith(bob.mute('Alice'), 'PERMISSION_DENIED');
    await rejectsWith(bob.kick('Alice'), 'PERMISSION_DENIED');
    await rejectsWith(bob.promote('Carol'), 'PERMISSION_DENIED');
    await rejectsWith(bob.demote('Bob'), 'PERMISSION_DENIED');
    await rejectsWith(bob.transferHost('Carol'), 'PERMISSION_DENIED');
    await rejectsWith(bob.endMeeting(), 'PERMISSION_DENIED');
    await waitUntil(() => view(alice, alice)?.is_muted_by_host === false, 5000, 'host not muted');

    // A moderator does not act on another moderator.
    await alice.promote('Carol');
    await rejectsWith(bob.mute('Carol'), 'PERMISSION_DENIED');
    await rejectsWith(bob.kick('Carol'), 'PERMISSION_DENIED');

    const d = await alice.demote('Bob');
    expect(d.user).toMatchObject({ role: 'participant', permissions: NONE });
    await waitUntil(
      () => changes[2].some(([c]) => c.user_id === bob.userId && c.role === 'participant'),
      5000,
      'Carol sees the demotion',
    );
    const demotion = changes[2].find(([c]) => c.user_id === bob.userId && c.role === 'participant')![0];
    expect(demotion).toMatchObject({ previous_role: 'moderator', reason: 'demoted', by: { user_id: alice.userId } });
    await rejectsWith(bob.mute('Carol'), 'PERMISSION_DENIED');
    await rejectsWith(alice.demote('Bob'), 'INVALID_PAYLOAD'); // not a moderator any more
  });

  it('transfer host: both role changes and the new host_id are seen by all; the old host loses host powers', async () => {
    const { room, clients } = await meeting(['Alice', 'Bob', 'Carol']);
    const [alice, bob, carol] = clients;
    const changes = clients.map((c) => record(c, 'role_change'));

    const r = await alice.transferHost('Bob');
    expect(r.room).toMatchObject({ room_id: room.room_id, host_id: bob.userId, host_name: 'Bob' });
    for (const ch of changes) {
      await waitUntil(() => ch.length === 2, 5000, 'two ROLE_CHANGEs everywhere');
      const byUser = new Map(ch.map(([c]) => [c.user_id, c]));
      expect(byUser.get(alice.userId!)).toMatchObject({ role: 'participant', previous_role: 'host', reason: 'host_transferred' });
      expect(byUser.get(bob.userId!)).toMatchObject({ role: 'host', previous_role: 'participant', reason: 'host_transferred' });
    }
    await waitUntil(() => clients.every((c) => c.room?.host_id === bob.userId), 5000, 'everyone\'s room shows Bob as host');
    await waitUntil(
      () => clients.every((c) => view(c, bob)?.role === 'host' && view(c, alice)?.role === 'participant'),
      5000,
      'users maps show the new roles',
    );
    expect(view(carol, bob)?.permissions).toEqual(ALL);
    expect(view(carol, alice)?.permissions).toEqual(NONE);

    await rejectsWith(alice.mute('Carol'), 'PERMISSION_DENIED');
    await bob.mute('Alice');
    await waitUntil(() => view(carol, alice)?.is_muted_by_host === true, 5000, 'new host mutes the old one');
  });
});

describe('refusals', () => {
  it('a participant trying each host action gets PERMISSION_DENIED, and nothing changes', async () => {
    const { clients } = await meeting(['Alice', 'Bob', 'Carol']);
    const [alice, bob, carol] = clients;
    await carol.raiseHand();
    const attempts: [string, () => Promise<unknown>][] = [
      ['mute', () => bob.mute('Carol')],
      ['unmute', () => bob.unmute('Carol')],
      ['mute all', () => bob.muteAll()],
      ['kick', () => bob.kick('Carol')],
      ['lock', () => bob.lockRoom(true)],
      ['unlock', () => bob.lockRoom(false)],
      ['promote', () => bob.promote('Carol')],
      ['demote', () => bob.demote('Carol')],
      ['transfer host', () => bob.transferHost('Carol')],
      ['end meeting', () => bob.endMeeting()],
      ['lower someone\'s hand', () => bob.lowerHand('Carol')],
      ['mute the host', () => bob.mute('Alice')],
      ['kick the host', () => bob.kick('Alice')],
    ];
    for (const [what, attempt] of attempts) {
      await expect(attempt(), what).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    }
    await flush(alice, carol);
    expect(view(alice, carol)).toMatchObject({ is_muted_by_host: false, role: 'participant', hand_raised: true, room_id: alice.room!.room_id });
    expect(alice.room?.is_locked).toBe(false);
    expect(alice.user?.role).toBe('host');
  });

  it('CANNOT_TARGET_SELF, TARGET_NOT_IN_ROOM and USER_NOT_FOUND', async () => {
    const { server, clients } = await meeting(['Alice', 'Bob']);
    const [alice] = clients;
    for (const act of [() => alice.mute('Alice'), () => alice.kick('Alice'), () => alice.promote('Alice'), () => alice.transferHost('Alice')]) {
      await rejectsWith(act(), 'CANNOT_TARGET_SELF');
    }
    const outsider = await h.client(server, 'Olga'); // online, in no room
    const elsewhere = await h.client(server, 'Erik'); // in another room
    const other = await elsewhere.createRoom({ name: 'Other' });
    await elsewhere.joinRoom(other.room_id);
    await waitUntil(() => alice.findUser('Olga') !== undefined && alice.findUser('Erik')?.room_id === other.room_id, 5000, 'Alice knows both');
    for (const who of ['Olga', 'Erik']) {
      await rejectsWith(alice.mute(who), 'TARGET_NOT_IN_ROOM');
      await rejectsWith(alice.kick(who), 'TARGET_NOT_IN_ROOM');
      await rejectsWith(alice.promote(who), 'TARGET_NOT_IN_ROOM');
      await rejectsWith(alice.transferHost(who), 'TARGET_NOT_IN_ROOM');
    }
    await rejectsWith(alice.mute('Nobody'), 'USER_NOT_FOUND');
    expect(outsider.user?.is_muted_by_host).toBe(false);
    expect(elsewhere.room?.room_id).toBe(other.room_id);
  });
});

describe('automatic host hand-over', () => {
  it('when the host leaves, a moderator is preferred over earlier participants; all get ROLE_CHANGE host_left and host_id updates', async () => {
    const { room, clients } = await meeting(['Alice', 'Bob', 'Carol', 'Dave']);
    const [alice, bob, carol, dave] = clients;
    await alice.promote('Carol'); // Bob joined earlier, but Carol is a moderator
    const rest = [bob, carol, dave];
    const changes = rest.map((c) => record(c, 'role_change'));

    await alice.leaveRoom();
    for (const ch of changes) {
      await waitUntil(() => ch.some(([c]) => c.reason === 'host_left'), 5000, 'ROLE_CHANGE host_left');
      expect(ch.find(([c]) => c.reason === 'host_left')![0]).toEqual({
        user_id: carol.userId,
        username: 'Carol',
        role: 'host',
        previous_role: 'moderator',
        by: null,
        reason: 'host_left',
      });
    }
    await waitUntil(() => rest.every((c) => c.room?.host_id === carol.userId), 5000, 'room.host_id is Carol everywhere');
    await waitUntil(() => view(bob, carol)?.role === 'host', 5000, 'users map shows Carol as host');

    // Carol can act as host now.
    await carol.mute('Dave');

    // With no moderator left, the earliest participant takes over: Bob, not Dave.
    const changes2 = [bob, dave].map((c) => record(c, 'role_change'));
    await carol.close(); // leaving by disconnecting counts too
    for (const ch of changes2) {
      await waitUntil(() => ch.some(([c]) => c.reason === 'host_left'), 5000, 'second hand-over');
      expect(ch.find(([c]) => c.reason === 'host_left')![0]).toMatchObject({
        user_id: bob.userId,
        role: 'host',
        previous_role: 'participant',
        by: null,
      });
    }
    await waitUntil(() => dave.room?.host_id === bob.userId, 5000, 'Dave sees Bob as host');
    await bob.unmute('Dave');
  });
});

describe('end meeting', () => {
  it('everyone gets "meeting_ended"; the temporary room is gone', async () => {
    const { server, room, clients } = await meeting(['Alice', 'Bob', 'Carol']);
    const [alice] = clients;
    const watcher = await h.client(server, 'Watcher');
    await waitUntil(() => watcher.rooms.get(room.room_id)?.participant_count === 3, 5000, 'watcher sees the meeting');
    const ended = clients.map((c) => record(c, 'meeting_ended'));

    await alice.endMeeting();
    for (const e of ended) {
      await waitUntil(() => e.length === 1, 5000, 'meeting_ended');
      expect(e[0][0]).toEqual({ room_id: room.room_id, by: { user_id: alice.userId, username: 'Alice' } });
    }
    for (const c of clients) expect(c.room).toBeNull();
    await waitUntil(() => !watcher.rooms.has(room.room_id), 5000, 'room gone from the list');
    await waitUntil(() => clients.every((c) => view(watcher, c)?.room_id === null), 5000, 'nobody in a room');
    await rejectsWith(watcher.joinRoom(room.room_id), 'ROOM_NOT_FOUND');
    await rejectsWith(clients[1].sendChat('still here?'), 'NOT_IN_ROOM');
  });

  it('a persistent room stays after its meeting ends, empty', async () => {
    const { server, room, clients } = await meeting(['Alice', 'Bob'], { persistent: true });
    await clients[0].endMeeting();
    const watcher = await h.client(server, 'Watcher');
    const rooms = await watcher.listRooms();
    expect(rooms.find((r) => r.room_id === room.room_id)).toMatchObject({ participant_count: 0, host_id: null });
  });
});

describe('admin', () => {
  it('an admin acts in a room without being in it, joins a locked room, and outranks the host', async () => {
    const { server, room, clients } = await meeting(['Alice', 'Bob'], { server: { adminPassword: 'root-pw' } });
    const [alice, bob] = clients;
    const admin = await h.client(server, 'Admin', { adminPassword: 'root-pw' });
    expect(admin.user).toMatchObject({ is_admin: true, permissions: ALL, room_id: null });
    await waitUntil(() => admin.findUser('Bob')?.room_id === room.room_id, 5000, 'admin knows Bob');

    const muted = record(bob, 'muted');
    await admin.mute('Bob');
    await waitUntil(() => muted.length === 1, 5000, 'Bob muted by admin');
    expect(muted[0][0].by).toEqual({ user_id: admin.userId, username: 'Admin' });
    await waitUntil(() => view(alice, bob)?.is_muted_by_host === true, 5000, 'host sees it');

    await admin.request(MT.ROOM_LOCK, { room_id: room.room_id });
    await waitUntil(() => alice.room?.is_locked === true, 5000, 'locked by admin');
    const dave = await h.client(server, 'Dave');
    await rejectsWith(dave.joinRoom(room.room_id), 'ROOM_LOCKED');

    const j = await admin.joinRoom(room.room_id);
    expect(j.room.participant_count).toBe(3);
    expect(admin.user).toMatchObject({ is_admin: true, permissions: ALL });

    // Inside, the admin can act on the host too.
    const aliceMuted = record(alice, 'muted');
    await admin.mute('Alice');
    await waitUntil(() => aliceMuted.length === 1, 5000, 'host muted by admin');
    await rejectsWith(alice.kick('Admin'), 'PERMISSION_DENIED');

    const ended = record(bob, 'meeting_ended');
    await admin.endMeeting();
    await waitUntil(() => ended.length === 1, 5000, 'ended by admin');
  });

  it('an admin joins a full room', async () => {
    const { server, clients } = await meeting(['Alice'], { server: { adminPassword: 'root-pw' } });
    const [alice] = clients;
    const admin = await h.client(server, 'Admin', { adminPassword: 'root-pw' });
    const small = await alice.createRoom({ name: 'Tiny', maxParticipants: 1 });
    const bob = await h.client(server, 'Bob');
    await bob.joinRoom(small.room_id);
    await admin.joinRoom(small.room_id);
    expect(admin.room?.participant_count).toBe(2);
    expect(admin.user?.role).toBe('participant');
    await admin.leaveRoom();
  });

  it('a wrong admin password is WRONG_ADMIN_PASSWORD, also on a server that has none', async () => {
    const s = await h.server({ adminPassword: 'root-pw' });
    await rejectsWith(h.client(s, 'Mallory', { adminPassword: 'guess' }), 'WRONG_ADMIN_PASSWORD');
    const plain = await h.server();
    await rejectsWith(h.client(plain, 'Mallory', { adminPassword: 'root-pw' }), 'WRONG_ADMIN_PASSWORD');
    const ok = await h.client(s, 'Mallory');
    expect(ok.user?.is_admin).toBe(false);
  });
});

describe('server password', () => {
  it('SERVER_PASSWORD_REQUIRED without one, WRONG_SERVER_PASSWORD with a wrong one, in with the right one', async () => {
    const s = await h.server({ serverPassword: 'lan-only' });
    await rejectsWith(h.client(s, 'Alice'), 'SERVER_PASSWORD_REQUIRED');
    await rejectsWith(h.client(s, 'Alice', { password: 'lan' }), 'WRONG_SERVER_PASSWORD');
    const alice = await h.client(s, 'Alice', { password: 'lan-only' });
    expect(alice.connected).toBe(true);
    // Refused attempts did not hold the name.
    expect((await alice.listUsers()).map((u) => u.username)).toEqual(['Alice']);
  });
});
