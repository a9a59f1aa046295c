/**
 * Chat under load: 200 library clients in 10 rooms of 20, each sending N chat
 * messages (pipelined, without waiting for each ACK). Every message must reach each
 * other member of its room exactly once, no other room, and in the order its sender
 * sent it. Bounded in count and time; no timing assertions (timing lives in benchmarks).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Harness } from '../kit/server';
import type { Client } from '../../client/main_client';
import type { ChatEntry } from '../../shared/protocol/messages';
import { MT } from '../../shared/protocol/messages';

const ROOMS = 10;
const PER_ROOM = 20;
const CLIENTS = ROOMS * PER_ROOM;
const MESSAGES_EACH = 10;
/** Clients connected at once: avoids a connect storm against the accept backlog. */
const BATCH = 20;

describe('load: 200 clients in 10 rooms', () => {
  const h = new Harness();

  afterEach(async () => {
    await h.closeAll();
  }, 60_000);

  it(`every chat message reaches each other member of its room exactly once, in order per sender`, { timeout: 120_000 }, async () => {
    const server = await h.server({
      // 10 pipelined messages per client must not hit the per-user chat limit.
      chatRatePerSecond: 10_000,
      chatBurst: 10_000,
      maxParticipants: PER_ROOM,
      heartbeatIntervalMs: 5_000,
    });

    const clients: Client[] = [];
    for (let i = 0; i < CLIENTS; i += BATCH) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(BATCH, CLIENTS - i) }, (_, k) => h.client(server, `u${String(i + k).padStart(3, '0')}`)),
      );
      clients.push(...batch);
    }
    expect(server.stats().users).toBe(CLIENTS);

    // Room r holds clients r*20 .. r*20+19; the first one creates it.
    const roomIds: string[] = [];
    for (let r = 0; r < ROOMS; r++) {
      const room = await clients[r * PER_ROOM].createRoom({ name: `load-${r}`, maxParticipants: PER_ROOM });
      roomIds.push(room.room_id);
    }
    const roomOf = (i: number) => roomIds[Math.floor(i / PER_ROOM)];
    for (let i = 0; i < CLIENTS; i += BATCH) {
      await Promise.all(clients.slice(i, i + BATCH).map((c, k) => c.joinRoom(roomOf(i + k))));
    }
    for (let r = 0; r < ROOMS; r++) expect(server.rooms.get(roomIds[r])?.members.size).toBe(PER_ROOM);

    // Record every chat each client receives, with the room its envelope named.
    const inbox = clients.map(() => [] as Array<{ entry: ChatEntry; envRoom: string | null }>);
    clients.forEach((c, i) =>
      c.on('message', (env) => {
        if (env.type === MT.CHAT_MESSAGE) inbox[i].push({ entry: env.data as unknown as ChatEntry, envRoom: env.room_id });
      }),
    );
    const indexOf = new Map(clients.map((c, i) => [c.userId!, i]));

    // Everyone sends at once, each client's messages pipelined on its connection.
    const acks = await Promise.all(
      clients.map((c, i) =>
        Promise.all(Array.from({ length: MESSAGES_EACH }, (_, seq) => c.sendChat(`from ${i} seq ${seq}`))),
      ),
    );
    for (const perClient of acks) for (const ack of perClient) expect(ack.delivered_to).toBe(PER_ROOM - 1);

    // Barrier: every push written before a client's HEARTBEAT was answered has arrived
    // (each sender's ACK came after the server wrote its pushes; one connection is in order).
    await Promise.all(clients.map((c) => c.request(MT.HEARTBEAT, {})));

    const problems: string[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const mine = roomOf(i);
      const bySender = new Map<number, number[]>();
      for (const { entry, envRoom } of inbox[i]) {
        const from = indexOf.get(entry.user_id);
        if (from === undefined) {
          problems.push(`client ${i} got a chat from unknown user ${entry.user_id}`);
          continue;
        }
        if (from === i) problems.push(`client ${i} got its own message back: ${entry.message}`);
        if (roomOf(from) !== mine || entry.room_id !== mine || envRoom !== mine) {
          problems.push(`client ${i} (room ${mine}) got "${entry.message}" of room ${entry.room_id} (envelope ${envRoom})`);
        }
        const m = /^from (\d+) seq (\d+)$/.exec(entry.message);
        if (!m || Number(m[1]) !== from) {
          problems.push(`client ${i} got a malformed message "${entry.message}" from ${from}`);
          continue;
        }
        const list = bySender.get(from) ?? [];
        list.push(Number(m[2]));
        bySender.set(from, list);
      }
      const expectedSeqs = Array.from({ length: MESSAGES_EACH }, (_, s) => s);
      const roomStart = Math.floor(i / PER_ROOM) * PER_ROOM;
      for (let from = roomStart; from < roomStart + PER_ROOM; from++) {
        if (from === i) continue;
        const got = bySender.get(from) ?? [];
        // Exactly once each and in send order is the same as: the list equals 0..N-1.
        if (JSON.stringify(got) !== JSON.stringify(expectedSeqs)) {
          problems.push(`client ${i} from ${from}: got seqs [${got.join(',')}]`);
        }
      }
      if (inbox[i].length !== (PER_ROOM - 1) * MESSAGES_EACH) {
        problems.push(`client ${i} got ${inbox[i].length} chats, expected ${(PER_ROOM - 1) * MESSAGES_EACH}`);
      }
    }
    expect(problems.slice(0, 20), `${problems.length} problems`).toEqual([]);

    // Each room's history holds its own messages only.
    for (let r = 0; r < ROOMS; r++) {
      const history = server.rooms.get(roomIds[r])!.history;
      expect(history.length).toBe(Math.min(PER_ROOM * MESSAGES_EACH, server.options.historyLimit));
      for (const e of history) expect(roomOf(indexOf.get(e.user_id)!)).toBe(roomIds[r]);
    }
    expect(server.stats().counters.errors).toBe(0);
  });
});
