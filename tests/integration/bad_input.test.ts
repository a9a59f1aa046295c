/**
 * Hostile and broken input on the control port (TCP 8888 in production, port 0 here).
 * Each attack is answered with an ERROR carrying a stable code, or with a closed
 * connection, and afterwards the server still serves: it accepts a new connection, and
 * two library clients in one room keep chatting (a message sent after the attack arrives).
 *
 * The attacker is tests/kit/raw_client.ts, which shares no code with the product.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Harness, waitUntil } from '../kit/server';
import { RawClient, rawEnvelope, rawFrame, rawFrameBytes, type RawEnvelope } from '../kit/raw_client';
import type { Server } from '../../server/main_server';
import type { Client } from '../../client/main_client';
import { ERROR_CODES } from '../../shared/errors';
import { LIMITS } from '../../shared/constants';

const MiB = 1024 * 1024;

/** Codes an attack may legitimately produce. INTERNAL_ERROR is never one of them. */
const WIRE_CODES = new Set(
  Object.entries(ERROR_CODES)
    .filter(([code, spec]) => spec.scope === 'wire' && code !== 'INTERNAL_ERROR')
    .map(([code]) => code),
);

describe('bad input on the control port', () => {
  let h: Harness;
  let server: Server;
  let alice: Client;
  let bob: Client;
  const raws: RawClient[] = [];
  let probeSeq = 0;

  async function raw(): Promise<RawClient> {
    const c = await RawClient.connect(server.port);
    raws.push(c);
    return c;
  }

  beforeEach(async () => {
    h = new Harness();
    server = await h.server({ chatRatePerSecond: 1000, chatBurst: 1000 });
    alice = await h.client(server, 'alice');
    bob = await h.client(server, 'bob');
    const room = await alice.createRoom({ name: 'bystanders' });
    await alice.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
  });

  afterEach(async () => {
    const all = raws.flatMap((c) => c.received);
    for (const c of raws.splice(0)) {
      if (!c.isClosed) c.destroy();
      await c.closed;
    }
    await h.closeAll();
    // Whatever the server answered, it never failed internally.
    expect(all.filter((m) => m.type === 'ERROR' && m.data?.code === 'INTERNAL_ERROR')).toEqual([]);
  });

  /** Two library clients of `srv` in one room, to watch the chat keep flowing. */
  async function bystanders(srv: Server, names: [string, string]): Promise<[Client, Client]> {
    const a = await h.client(srv, names[0]);
    const b = await h.client(srv, names[1]);
    const room = await a.createRoom({ name: 'bystanders' });
    await a.joinRoom(room.room_id);
    await b.joinRoom(room.room_id);
    return [a, b];
  }

  /** The server is up, takes a new connection, and the bystanders' chat still flows. */
  async function stillServing(label: string, srv: Server = server, pair: [Client, Client] = [alice, bob]): Promise<void> {
    const [from, to] = pair;
    expect(srv.listening).toBe(true);
    const probe = await RawClient.connect(srv.port);
    raws.push(probe);
    const hb = await probe.request('HEARTBEAT', {});
    expect(hb.reply.type).toBe('ERROR');
    expect(hb.reply.data.code).toBe('NOT_CONNECTED');
    const c = await probe.connectAs(`probe${++probeSeq}`);
    expect(c.reply.type).toBe('SUCCESS');
    await probe.close();

    const text = `still chatting after ${label}`;
    const received = new Promise<void>((resolve) => {
      const onChat = (e: { message: string; user_id: string }) => {
        if (e.message === text && e.user_id === from.userId) {
          to.off('chat', onChat);
          resolve();
        }
      };
      to.on('chat', onChat);
    });
    const ack = await from.sendChat(text);
    expect(ack.delivered_to).toBe(1);
    await received;
  }

  /** The next ERROR on `c`; checks that its code is the expected one and a wire code. */
  async function nextError(c: RawClient, code: string, timeoutMs = 5000): Promise<RawEnvelope> {
    const e = await c.nextOfType('ERROR', () => true, timeoutMs);
    expect(e.data.code, JSON.stringify(e.data)).toBe(code);
    expect(WIRE_CODES.has(e.data.code)).toBe(true);
    expect(typeof e.data.message).toBe('string');
    return e;
  }

  /** The connection still works after a non-fatal error: CONNECT on it succeeds. */
  async function sameConnectionWorks(c: RawClient, name: string): Promise<void> {
    const r = await c.connectAs(name);
    expect(r.reply.type, JSON.stringify(r.reply.data)).toBe('SUCCESS');
    expect(r.reply.reply_to).toBe(r.sent.message_id);
  }

  it('unframed random bytes: an ERROR with a framing code, or a closed connection', async () => {
    const c = await raw();
    const bytes = randomBytes(64 * 1024);
    await c.sendRaw(bytes);
    await c.close();
    for (const m of c.received) {
      expect(m.type).toBe('ERROR');
      expect(WIRE_CODES.has(m.data.code)).toBe(true);
    }
    // The first four random bytes are the declared length: over 1 MiB unless the first
    // byte is 0 and the second below 0x10 (about 1 in 4096).
    if (bytes.readUInt32BE(0) > LIMITS.maxFrameBytes) expect(c.received.map((m) => m.data.code)).toEqual(['FRAME_TOO_LARGE']);
    await stillServing('random bytes');
  });

  it('random bytes inside a well-formed frame: FRAME_INVALID_UTF8 or FRAME_INVALID_JSON, and the connection stays usable', async () => {
    const c = await raw();
    for (let i = 0; i < 20; i++) c.socket.write(rawFrameBytes(randomBytes(1 + ((i * 97) % 3000))));
    for (let i = 0; i < 20; i++) {
      const e = await c.nextOfType('ERROR');
      // A short random body can be valid JSON (a digit): then it is not an envelope.
      expect(['FRAME_INVALID_UTF8', 'FRAME_INVALID_JSON', 'FRAME_TOO_DEEP', 'INVALID_ENVELOPE']).toContain(e.data.code);
    }
    await sameConnectionWorks(c, 'mallory');
    await stillServing('random frame bodies');
  });

  it('a declared length of 4 GiB (0xFFFFFFFF): FRAME_TOO_LARGE, then the server closes the connection', async () => {
    const c = await raw();
    await c.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7b, 0x7d]));
    const e = await nextError(c, 'FRAME_TOO_LARGE');
    expect(e.data.details).toMatchObject({ size: 0xffffffff, limit: LIMITS.maxFrameBytes });
    const closed = await c.closed;
    expect(closed.ended || closed.error !== null).toBe(true);
    await stillServing('a 4 GiB length');
  });

  it('a declared length one byte over the limit is refused; exactly the limit is read', async () => {
    const over = await raw();
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(LIMITS.maxFrameBytes + 1);
    await over.sendRaw(hdr);
    await nextError(over, 'FRAME_TOO_LARGE');
    await over.closed;

    // A frame of exactly maxFrameBytes is accepted (it is a bad envelope, but it is read).
    const at = await raw();
    const env = JSON.stringify({ type: 'HEARTBEAT', data: {}, pad: '' });
    const body = Buffer.from(env.replace('"pad":""', `"pad":"${'x'.repeat(LIMITS.maxFrameBytes - env.length)}"`));
    expect(body.length).toBe(LIMITS.maxFrameBytes);
    await at.sendRaw(rawFrameBytes(body));
    await nextError(at, 'NOT_CONNECTED');
    await sameConnectionWorks(at, 'edge');
    await stillServing('frames at the size limit');
  });

  it('a truncated frame, then close: the server drops the connection quietly', async () => {
    const c = await raw();
    await c.connectAs('trunc');
    const frame = rawFrame(rawEnvelope('HEARTBEAT', {}));
    await c.sendRaw(frame.subarray(0, frame.length - 5));
    await c.close();
    expect(c.received.filter((m) => m.type === 'ACK')).toEqual([]);
    // The half-sent user's place is held for a resume, and the name can be signed in again.
    await waitUntil(() => server.users.getByName('trunc')?.toInfo().is_reconnecting === true, 5000, 'trunc to be held');
    const again = await raw();
    await again.connectAs('trunc');
    await again.close();
    await stillServing('a truncated frame');
  });

  it('a truncated header (2 of 4 bytes), then close', async () => {
    const c = await raw();
    await c.sendRaw(Buffer.from([0x00, 0x00]));
    await c.close();
    expect(c.received).toEqual([]);
    await stillServing('a truncated header');
  });

  it('invalid UTF-8 bodies: FRAME_INVALID_UTF8 each, and the connection stays usable', async () => {
    const c = await raw();
    const bodies = [
      Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), // bytes that never occur in UTF-8
      Buffer.from([0x22, 0xc0, 0xaf, 0x22]), // overlong encoding of '/'
      Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]), // an encoded UTF-16 surrogate
      Buffer.from([0x22, 0xe2, 0x82, 0x22]), // a sequence cut short
      Buffer.concat([Buffer.from('{"type":"HEARTBEAT","data":{"x":"'), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]), Buffer.from('"}}')]),
    ];
    for (const b of bodies) c.socket.write(rawFrameBytes(b));
    for (let i = 0; i < bodies.length; i++) await nextError(c, 'FRAME_INVALID_UTF8');
    await sameConnectionWorks(c, 'utf8');
    await stillServing('invalid UTF-8');
  });

  it('invalid JSON bodies: FRAME_INVALID_JSON each, and the connection stays usable', async () => {
    const c = await raw();
    const bodies = ['{"type": "HEARTBEAT",', '', 'nul', "{'type': 'HEARTBEAT'}", '{"type":"HEARTBEAT"} trailing', '\u0000', 'NaN'];
    for (const b of bodies) c.socket.write(rawFrameBytes(Buffer.from(b, 'utf8')));
    for (let i = 0; i < bodies.length; i++) await nextError(c, 'FRAME_INVALID_JSON');
    await sameConnectionWorks(c, 'json');
    await stillServing('invalid JSON');
  });

  it('valid JSON of the wrong shape: INVALID_ENVELOPE, with reply_to when the message_id is readable', async () => {
    const c = await raw();
    const shapes: unknown[] = [
      [1, 2, 3],
      42,
      null,
      'HEARTBEAT',
      true,
      {},
      { type: 42, data: {}, message_id: 'm-type-number' },
      { type: 'HEARTBEAT', data: [1, 2], message_id: 'm-data-array' },
      { type: 'HEARTBEAT', data: 'x', message_id: 'm-data-string' },
      { type: '', data: {}, message_id: 'm-empty-type' },
      { type: 'HEARTBEAT', data: {}, sender: 7, message_id: 'm-sender-number' },
      { type: 'HEARTBEAT', data: {}, timestamp: 'now', message_id: 'm-ts-string' },
      { type: 'HEARTBEAT', data: {}, message_id: 123 },
      { type: 'HEARTBEAT', data: {}, message_id: 'x'.repeat(500) },
    ];
    for (const s of shapes) c.sendJson(s);
    for (const s of shapes) {
      const e = await nextError(c, 'INVALID_ENVELOPE');
      const id = s && typeof s === 'object' && !Array.isArray(s) ? (s as { message_id?: unknown }).message_id : undefined;
      if (typeof id === 'string' && id.length <= 128) expect(e.reply_to).toBe(id);
      if (id === undefined || typeof id !== 'string') expect(e.reply_to ?? null).toBeNull();
    }
    await sameConnectionWorks(c, 'shapes');
    await stillServing('wrong shapes');
  });

  it('an unknown type: UNKNOWN_MESSAGE_TYPE with reply_to (also names that are Object.prototype keys)', async () => {
    const c = await raw();
    const types = ['NOT_A_TYPE', 'connect', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'x'.repeat(64)];
    for (const t of types) {
      const { sent, reply } = await c.request(t, {});
      expect(reply.type).toBe('ERROR');
      expect(reply.data.code, t).toBe('UNKNOWN_MESSAGE_TYPE');
      expect(reply.reply_to).toBe(sent.message_id);
    }
    await sameConnectionWorks(c, 'unknown');
    const after = await c.request('NOT_A_TYPE_EITHER', {});
    expect(after.reply.data.code).toBe('UNKNOWN_MESSAGE_TYPE');
    await stillServing('unknown types');
  });

  it('deep nesting: FRAME_TOO_DEEP for 10,000 "[" and for deep but valid JSON', async () => {
    const c = await raw();
    c.socket.write(rawFrameBytes(Buffer.from('['.repeat(10_000))));
    c.socket.write(rawFrameBytes(Buffer.from('['.repeat(10_000) + ']'.repeat(10_000))));
    let deep: unknown = {};
    for (let i = 0; i < LIMITS.maxJsonDepth + 5; i++) deep = { d: deep };
    c.sendJson(rawEnvelope('HEARTBEAT', { deep: deep as Record<string, unknown> }));
    for (let i = 0; i < 3; i++) await nextError(c, 'FRAME_TOO_DEEP');
    // Brackets inside strings do not count as nesting.
    const s = c.send('HEARTBEAT', { text: '['.repeat(10_000) } as Record<string, unknown>);
    const r = await c.nextOfType('ERROR', (m) => m.reply_to === s.message_id);
    expect(r.data.code).toBe('NOT_CONNECTED');
    await sameConnectionWorks(c, 'deep');
    await stillServing('deep nesting');
  });

  it('a 10 MB string (over the 1 MiB frame limit): FRAME_TOO_LARGE, then the connection is closed', async () => {
    const c = await raw();
    await c.connectAs('huge');
    const env = rawEnvelope('CHAT_MESSAGE', { message: 'x'.repeat(10 * 1000 * 1000) });
    const frame = rawFrame(env);
    expect(frame.length).toBeGreaterThan(10 * MiB - MiB);
    void c.sendRaw(frame);
    const e = await nextError(c, 'FRAME_TOO_LARGE');
    expect(e.data.details?.size).toBe(frame.length - 4);
    await c.closed;
    await waitUntil(() => !server.users.getByName('huge'), 5000, 'huge to go offline');
    await stillServing('a 10 MB frame');
  });

  it('10,000 HEARTBEATs in one write: 10,000 ACKs, in order, each naming its request', async () => {
    const c = await raw();
    await c.connectAs('flood');
    const envs = Array.from({ length: 10_000 }, () => rawEnvelope('HEARTBEAT', {}));
    await c.sendRaw(Buffer.concat(envs.map((e) => rawFrame(e))));
    await waitUntil(() => c.received.filter((m) => m.type === 'ACK').length >= envs.length || c.isClosed, 20_000, '10,000 ACKs');
    const acks = c.received.filter((m) => m.type === 'ACK');
    expect(acks.map((a) => a.reply_to)).toEqual(envs.map((e) => e.message_id));
    expect(c.received.filter((m) => m.type === 'ERROR')).toEqual([]);
    expect(c.isClosed).toBe(false);
    await stillServing('10,000 HEARTBEATs');
  });

  it('10,000 unknown types in one write: 10,000 ERRORs, in order, each naming its request', async () => {
    const c = await raw();
    const envs = Array.from({ length: 10_000 }, (_, i) => rawEnvelope(`NOPE_${i}`, {}));
    await c.sendRaw(Buffer.concat(envs.map((e) => rawFrame(e))));
    await waitUntil(() => c.received.length >= envs.length || c.isClosed, 20_000, '10,000 ERRORs');
    expect(c.received.every((m) => m.type === 'ERROR' && m.data.code === 'UNKNOWN_MESSAGE_TYPE')).toBe(true);
    expect(c.received.map((m) => m.reply_to)).toEqual(envs.map((e) => e.message_id));
    c.skipReceived();
    await sameConnectionWorks(c, 'flood2');
    await stillServing('10,000 unknown types');
  });

  it('requests before CONNECT: NOT_CONNECTED with reply_to, and CONNECT still works afterwards', async () => {
    const c = await raw();
    for (const [type, data] of [
      ['HEARTBEAT', {}],
      ['ROOM_LIST', {}],
      ['ROOM_CREATE', { room_name: 'x', is_private: false, password: '', max_participants: 5 }],
      ['CHAT_MESSAGE', { message: 'hi' }],
      ['DISCONNECT', { user_id: null }],
    ] as const) {
      const { sent, reply } = await c.request(type, data);
      expect(reply.type).toBe('ERROR');
      expect(reply.data.code, type).toBe('NOT_CONNECTED');
      expect(reply.reply_to).toBe(sent.message_id);
    }
    await sameConnectionWorks(c, 'early');
    await stillServing('requests before CONNECT');
  });

  it('server-only types sent by a client: NOT_A_REQUEST, before and after CONNECT', async () => {
    const c = await raw();
    const serverOnly = ['SUCCESS', 'ERROR', 'ACK', 'USER_JOIN', 'USER_LEAVE', 'ROLE_CHANGE', 'ROOM_UPDATE'];
    for (const t of serverOnly) {
      const { sent, reply } = await c.request(t, { message: 'spoof' });
      expect(reply.type).toBe('ERROR');
      expect(reply.data.code, t).toBe('NOT_A_REQUEST');
      expect(reply.reply_to).toBe(sent.message_id);
    }
    await sameConnectionWorks(c, 'spoofer');
    for (const t of serverOnly) {
      const { reply } = await c.request(t, { message: 'spoof' });
      expect(reply.data.code, t).toBe('NOT_A_REQUEST');
    }
    // Media inside JSON is refused: it travels on UDP.
    const media = await c.request('VIDEO_FRAME', { frame: 'AAAA' });
    expect(media.reply.data.code).toBe('NOT_SUPPORTED');
    await stillServing('server-only types');
  });

  it('payloads of the wrong shape: INVALID_PAYLOAD with reply_to', async () => {
    const c = await raw();
    const bad = await c.request('CONNECT', { username: 42 });
    expect(bad.reply.data.code).toBe('INVALID_PAYLOAD');
    expect(bad.reply.reply_to).toBe(bad.sent.message_id);
    await sameConnectionWorks(c, 'payloads');
    for (const [type, data] of [
      ['ROOM_JOIN', {}],
      ['ROOM_JOIN', { room_id: 5 }],
      ['ROOM_CREATE', { room_name: 'r', max_participants: 'many' }],
      ['ROOM_CREATE', { room_name: 'r', max_participants: -1 }],
      ['CHAT_MESSAGE', { message: { nested: true } }],
      ['CHAT_MESSAGE', { room_id: 'x'.repeat(500), message: 'hi' }],
      ['SCREEN_SHARE', { active: 'yes' }],
    ] as const) {
      const { sent, reply } = await c.request(type, data as Record<string, unknown>);
      expect(reply.type).toBe('ERROR');
      expect(reply.data.code, `${type} ${JSON.stringify(data)}`).toBe('INVALID_PAYLOAD');
      expect(reply.reply_to).toBe(sent.message_id);
    }
    // A second CONNECT on a signed-in connection.
    const twice = await c.request('CONNECT', { username: 'other', user_id: '' });
    expect(twice.reply.data.code).toBe('ALREADY_CONNECTED');
    await stillServing('bad payloads');
  });

  // Frames that arrived before a fatal one in the same write are whole, valid requests:
  // they are handled and answered, in order, before the FRAME_TOO_LARGE that ends the connection.
  it('valid frames before an oversized length in the same write are still handled first', async () => {
    const c = await raw();
    await c.connectAs('early-bird');
    const roomId = alice.room!.room_id;
    const join = await c.request('ROOM_JOIN', { room_id: roomId, password: null });
    expect(join.reply.type).toBe('SUCCESS');
    c.skipReceived();
    const bobGot: string[] = [];
    bob.on('chat', (e) => bobGot.push(e.message));
    const hb = rawEnvelope('HEARTBEAT', {});
    const chat = rawEnvelope('CHAT_MESSAGE', { message: 'before the bomb' }, { room_id: roomId });
    const bomb = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    await c.sendRaw(Buffer.concat([rawFrame(hb), rawFrame(chat), bomb]));
    await c.closed;
    const answers = c.received.filter((m) => m.type === 'ACK' || m.type === 'ERROR');
    expect(answers.map((m) => (m.type === 'ERROR' ? `ERROR:${m.data.code}` : `${m.type}:${m.reply_to}`))).toEqual([
      `ACK:${hb.message_id}`,
      `ACK:${chat.message_id}`,
      'ERROR:FRAME_TOO_LARGE',
    ]);
    await stillServing('frames before a fatal one');
    // The chat was sent before the bad frame; it must not be lost.
    expect(bobGot).toContain('before the bomb');
  });

  it('a peer that never reads while flooding requests is dropped (SLOW_CONSUMER), not buffered without bound', async () => {
    const srv = await h.server({ maxSendBufferBytes: 64 * 1024 });
    const pair = await bystanders(srv, ['ann', 'ben']);
    const c = await RawClient.connect(srv.port);
    raws.push(c);
    const reasons: string[] = [];
    srv.on('user_offline', (u, reason) => {
      if (u.username === 'sleeper') reasons.push(reason);
    });
    await c.connectAs('sleeper');
    c.socket.pause(); // never read again
    const flood = Buffer.concat(Array.from({ length: 40_000 }, () => rawFrame(rawEnvelope('HEARTBEAT', {}))));
    void c.sendRaw(flood);
    await waitUntil(() => !srv.users.getByName('sleeper'), 15_000, 'the non-reading peer to be dropped');
    expect(reasons).toEqual(['SLOW_CONSUMER']);
    c.destroy();
    await c.closed;
    await stillServing('a peer that never reads', srv, pair);
  });

  it('a silent connection, and one dripping a frame byte by byte, are dropped after the connection timeout', async () => {
    const srv = await h.server({ connectionTimeoutMs: 1000, heartbeatIntervalMs: 200 });
    const silent = await RawClient.connect(srv.port);
    const drip = await RawClient.connect(srv.port);
    raws.push(silent, drip);
    const frame = rawFrame(rawEnvelope('CONNECT', { username: 'drip', user_id: '' }));
    let i = 0;
    const timer = setInterval(() => {
      if (i < frame.length && !drip.isClosed) void drip.sendRaw(frame.subarray(i, ++i));
    }, 40);
    try {
      for (const c of [silent, drip]) {
        const e = await c.nextOfType('ERROR', () => true, 10_000);
        expect(e.data.code).toBe('HEARTBEAT_TIMEOUT');
        await c.closed;
      }
    } finally {
      clearInterval(timer);
    }
    expect(i).toBeLessThan(frame.length);
    const pair = await bystanders(srv, ['cat', 'dan']);
    await stillServing('silent connections', srv, pair);
  });

  it('property: random byte strings never crash the server (50 runs)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 4096 }), fc.boolean(), async (bytes, alsoFramed) => {
        const c = await RawClient.connect(server.port);
        try {
          await c.sendRaw(bytes);
          if (alsoFramed) await c.sendRaw(rawFrameBytes(bytes));
          // A HEARTBEAT after the garbage: answered if the stream is still in sync, else lost.
          await c.sendRaw(rawFrame(rawEnvelope('HEARTBEAT', {})));
          await c.close(1000);
        } finally {
          if (!c.isClosed) c.destroy();
          await c.closed;
        }
        expect(c.badFrames).toEqual([]);
        for (const m of c.received) {
          expect(m.type).toBe('ERROR');
          expect(WIRE_CODES.has(m.data?.code), JSON.stringify(m.data)).toBe(true);
        }
        expect(server.listening).toBe(true);
      }),
      { numRuns: 50 },
    );
    // Every attacker connection was released.
    await waitUntil(() => server.stats().connections === 2, 5000, 'attacker connections to close');
    await stillServing('random byte strings');
  });

  it('property: random JSON values in well-formed frames get one ERROR each, never INTERNAL_ERROR (50 runs)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.jsonValue({ maxDepth: 6 }), { minLength: 1, maxLength: 20 }), async (values) => {
        const c = await RawClient.connect(server.port);
        try {
          for (const v of values) c.sendJson(v);
          const marker = c.send('HEARTBEAT', {});
          await c.next((m) => m.reply_to === marker.message_id, 5000);
          const replies = c.received.filter((m) => m.type === 'ERROR' || m.type === 'SUCCESS' || m.type === 'ACK');
          // One reply per random value, then the marker's.
          expect(replies).toHaveLength(values.length + 1);
          for (const m of replies.slice(0, -1)) {
            expect(m.type).toBe('ERROR');
            expect(WIRE_CODES.has(m.data.code), JSON.stringify(m.data)).toBe(true);
          }
        } finally {
          c.destroy();
          await c.closed;
        }
      }),
      { numRuns: 50 },
    );
    await stillServing('random JSON values');
  });
});
