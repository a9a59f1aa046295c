/**
 * The media relay end to end: a real Server (TCP control + UDP relay) and real
 * Clients with their media links on loopback, sending real JPEG frames.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { Client, MediaFrame } from '../../client/main_client';
import { MediaLink } from '../../client/media_link';
import {
  encodeMediaPacket,
  fragmentFrame,
  MediaFlags,
  MediaKind,
  MEDIA_HEADER_BYTES,
  nowUs,
  OFFSET,
  tokenFromHex,
} from '../../shared/protocol/media_packet';
import type { MediaGrant } from '../../shared/protocol/messages';
import { ackCookie, collectFrames, header, hello, jpegSize, RawMediaPeer, testJpeg } from '../kit/media';
import { Harness, rejectsWith, sleep, waitUntil } from '../kit/server';

const h = new Harness();
const peers: RawMediaPeer[] = [];
const links: MediaLink[] = [];
afterEach(async () => {
  await Promise.all(links.splice(0).map((l) => l.close()));
  await Promise.all(peers.splice(0).map((p) => p.close()));
  await h.closeAll();
});

async function peer(): Promise<RawMediaPeer> {
  const p = await RawMediaPeer.open();
  peers.push(p);
  return p;
}

/** Sends `frames` at `fps` from `c` (video unless said); returns what was sent by frame number. */
async function sendFrames(c: Client, frames: Buffer[], fps = 15, kind: 'video' | 'screen' | 'audio' = 'video'): Promise<void> {
  for (const f of frames) {
    expect(c.sendFrame(kind, f, nowUs())).toBe(true);
    await sleep(1000 / fps);
  }
}

/** Keeps sending a small frame every `ms` until stopped. */
function keepSending(c: Client, kind: 'video' | 'screen' | 'audio', frame: Buffer, ms = 20): () => void {
  const t = setInterval(() => c.sendFrame(kind, frame, nowUs()), ms);
  return () => clearInterval(t);
}

const from = (frames: MediaFrame[], c: Client) => frames.filter((f) => f.user_id === c.userId);

describe('media relay', () => {
  it('three senders in a room: each receives the other two streams as whole 640x480 JPEGs, never its own; another room receives nothing', async () => {
    const { server, clients } = await h.meeting(['ann', 'bob', 'cat']);
    const dan = await h.client(server, 'dan');
    const other = await dan.createRoom({ name: 'Elsewhere' });
    await dan.joinRoom(other.room_id);
    const all = [...clients, dan];
    await Promise.all(all.map((c) => c.waitForMedia()));
    for (const c of all) await c.setVideo(true);
    const got = new Map(all.map((c) => [c, collectFrames(c)] as const));
    const sent = new Map<Client, Buffer[]>();
    for (const [i, c] of clients.entries()) sent.set(c, await Promise.all(Array.from({ length: 12 }, (_, n) => testJpeg(n + i * 100))));
    await Promise.all(clients.map((c) => sendFrames(c, sent.get(c)!)));
    await waitUntil(() => clients.every((c) => got.get(c)!.length >= 24 * 0.9), 5000, 'frames to arrive');
    await sleep(200);

    for (const c of clients) {
      const frames = got.get(c)!;
      expect(from(frames, c)).toHaveLength(0);
      for (const o of clients.filter((x) => x !== c)) {
        const theirs = from(frames, o);
        // Loopback loses nothing at this rate; allow one straggler.
        expect(theirs.length).toBeGreaterThanOrEqual(11);
        for (const f of theirs) {
          expect(f.kindName).toBe('video');
          // Frame ids count from 1: frame id k is the k-th frame sent, byte for byte.
          expect(f.data.equals(sent.get(o)![f.frameId - 1])).toBe(true);
        }
        expect(await jpegSize(theirs[0].data)).toEqual({ width: 640, height: 480 });
        // Delay estimate on loopback: positive and small.
        expect(theirs[0].delayMs).toBeGreaterThanOrEqual(0);
        expect(theirs[0].delayMs).toBeLessThan(1000);
      }
    }
    expect(got.get(dan)!).toHaveLength(0);
    const stats = server.mediaStats();
    const danStats = stats.participants.find((p) => p.user_id === dan.userId)!;
    expect(danStats.receiving.video.packets).toBe(0);
    const annStats = stats.participants.find((p) => p.user_id === clients[0].userId)!;
    expect(annStats.sending.video.forwarded).toBe(annStats.sending.video.packets * 2);
    expect(annStats.registered.video).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('registration: only a hello with the right token AND the cookie sent to that address registers it; acks are never larger than hellos', async () => {
    const { server, clients } = await h.meeting(['ann', 'bob']);
    const [ann, bob] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await bob.setVideo(true);
    const annFrames = collectFrames(ann);
    const ports = server.media.ports;
    // A third member whose media we drive by hand.
    const eve = await h.client(server, 'eve', { media: false });
    const joined = await eve.joinRoom(clients[0].room!.room_id);
    const grant = joined.media!;
    expect(grant.token).toMatch(/^[0-9a-f]{16}$/);
    await eve.setVideo(true);
    const p1 = await peer();
    const p2 = await peer();
    const drops = () => server.mediaStats().totals.dropped;
    const frame = encodeMediaPacket(header(grant), Buffer.from('not registered yet'));

    // Media before registering: dropped and counted, nothing forwarded.
    await p1.send(frame, ports.video);
    await waitUntil(() => drops().unregistered >= 1, 2000, 'unregistered drop');

    // Wrong token: no answer at all (nothing to reflect), counted.
    const bad = { ...grant, token: randomBytes(8).toString('hex') };
    await p1.send(hello(bad), ports.video);
    await waitUntil(() => drops().bad_token >= 1, 2000, 'bad token drop');

    // Right token, no cookie: an ACK with a cookie, not registered, no larger than the hello.
    const h1 = hello(grant);
    await p1.send(h1, ports.video);
    await waitUntil(() => p1.received.length === 1, 2000, 'ack');
    const ack = p1.received[0].buf;
    expect(ack[OFFSET.kind]).toBe(MediaKind.HELLO_ACK);
    expect(ack[OFFSET.flags] & MediaFlags.REGISTERED).toBe(0);
    expect(ack.length).toBeLessThanOrEqual(h1.length);
    expect(ack.subarray(OFFSET.token, OFFSET.token + 8).equals(Buffer.alloc(8))).toBe(true);

    // p1's cookie presented from another address (a spoofer cannot see it anyway): not registered.
    await p2.send(hello(grant, ackCookie(ack)), ports.video);
    await waitUntil(() => p2.received.length === 1, 2000, 'ack to p2');
    expect(p2.received[0].buf[OFFSET.flags] & MediaFlags.REGISTERED).toBe(0);
    expect(server.media.participantStats(eve.userId!)!.registered.video).toBeNull();

    // A header-only hello (shorter than its ACK would be) is not answered.
    await p2.send(encodeMediaPacket(header(grant, { kind: MediaKind.HELLO })), ports.video);
    await waitUntil(() => drops().malformed >= 1, 2000, 'short hello dropped');
    expect(p2.received).toHaveLength(1);

    // Echoing its own cookie registers p1; now its frames reach ann.
    await p1.send(hello(grant, ackCookie(ack)), ports.video);
    await waitUntil(() => p1.received.length === 2, 2000, 'second ack');
    expect(p1.received[1].buf[OFFSET.flags] & MediaFlags.REGISTERED).toBe(MediaFlags.REGISTERED);
    expect(server.media.participantStats(eve.userId!)!.registered.video).toBe(`127.0.0.1:${p1.port}`);
    const jpeg = await testJpeg(5, 320, 240);
    for (const pkt of fragmentFrame(jpeg, { kind: MediaKind.VIDEO, streamId: grant.stream_id, token: tokenFromHex(grant.token), frameId: 1, firstSeq: 1, captureTsUs: nowUs() })) {
      await p1.send(pkt, ports.video);
    }
    await waitUntil(() => from(annFrames, eve).length === 1, 3000, 'eve frame at ann');
    expect(from(annFrames, eve)[0].data.equals(jpeg)).toBe(true);
    // ...and the same frame from the unregistered p2 is dropped.
    const before = drops().unregistered;
    await p2.send(encodeMediaPacket(header(grant, { frameId: 2, seq: 100 }), Buffer.from('x')), ports.video);
    await waitUntil(() => drops().unregistered === before + 1, 2000, 'p2 dropped');
    // Media on the wrong port is dropped too.
    await p1.send(encodeMediaPacket(header(grant, { kind: MediaKind.SCREEN }), Buffer.from('x')), ports.video);
    await waitUntil(() => drops().wrong_port >= 1, 2000, 'wrong port');
  });

  it('UDP blocked: the client says MEDIA_UNREACHABLE once, keeps trying, and chat goes on', async () => {
    const server = await h.server();
    const gone = await peer(); // a port where nothing answers: a firewall that drops UDP
    const deaf = gone.port;
    const ann = await h.client(server, 'ann', {
      mediaOptions: { portsOverride: { video: deaf, audio: deaf, screen: deaf, feedback: deaf }, registrationTimeoutMs: 400 },
    });
    const errors: string[] = [];
    ann.on('media_error', (e) => errors.push(e.code));
    const room = await ann.createRoom({ name: 'Walled' });
    await ann.joinRoom(room.room_id);
    await rejectsWith(ann.waitForMedia(3000), 'MEDIA_UNREACHABLE');
    await sleep(600);
    expect(errors).toEqual(['MEDIA_UNREACHABLE']);
    expect((await ann.sendChat('chat still works')).seq).toBeGreaterThan(0);
    expect(gone.received.length).toBeGreaterThan(2); // it kept trying
    expect(ann.sendFrame('video', Buffer.from('x'), nowUs())).toBe(false);
  });

  it('fuzzed datagrams on every port crash neither the server nor a client, and media goes on', async () => {
    const { server, clients } = await h.meeting(['ann', 'bob']);
    const [ann, bob] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await ann.setVideo(true);
    const bobFrames = collectFrames(bob);
    const grant = (await h.client(server, 'zed', { media: false }).then((z) => z.joinRoom(ann.room!.room_id))).media!;
    const p = await peer();
    const ports = Object.values(server.media.ports);
    const valid = encodeMediaPacket(header(grant), Buffer.alloc(100));
    const mutants: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from([0x4c]),
      valid.subarray(0, MEDIA_HEADER_BYTES - 1),
      randomBytes(65507),
      Buffer.concat([valid, Buffer.alloc(2000)]),
    ];
    const withField = (o: number, write: (b: Buffer) => void) => {
      const b = Buffer.from(valid);
      write(b);
      return b;
    };
    mutants.push(withField(0, (b) => b.writeUInt16BE(3, OFFSET.fragCount) && b.writeUInt16BE(3, OFFSET.fragIndex)));
    mutants.push(withField(0, (b) => b.writeUInt16BE(0, OFFSET.fragCount)));
    mutants.push(withField(0, (b) => b.writeUInt16BE(65535, OFFSET.fragCount)));
    mutants.push(withField(0, (b) => (b[OFFSET.kind] = 200)));
    mutants.push(withField(0, (b) => (b[OFFSET.version] = 9)));
    mutants.push(withField(0, (b) => (b[OFFSET.kind] = MediaKind.RECEIVER_REPORT)));
    for (let i = 0; i < 300; i++) {
      const b = randomBytes(1 + Math.floor(Math.random() * 1300));
      if (i % 2) valid.copy(b, 0, 0, Math.min(b.length, 4)); // valid magic and version, random rest
      mutants.push(b);
    }
    for (const port of ports) for (const m of mutants) await p.send(m, port).catch(() => undefined);

    // The server is alive and well: control answers, and media still flows.
    await ann.sendChat('still here?');
    const jpeg = await testJpeg(1, 320, 240);
    await sendFrames(ann, [jpeg, jpeg, jpeg], 30);
    await waitUntil(() => from(bobFrames, ann).length >= 3, 3000, 'frames after fuzz');
    const drops = server.mediaStats().totals.dropped;
    expect(drops.malformed + drops.unknown_stream + drops.unregistered + drops.bad_token).toBeGreaterThan(ports.length * 300);

    // A client's link fed garbage "by the server" (a raw socket in the relay's place).
    const fake = await peer();
    const fakeGrant: MediaGrant = {
      token: '0011223344556677',
      stream_id: 42,
      ports: { video: fake.port, audio: fake.port, screen: fake.port, feedback: fake.port },
      max_payload: 1200,
    };
    const link = new MediaLink({ host: '127.0.0.1', grant: fakeGrant, registrationTimeoutMs: 500 });
    links.push(link);
    const errors: string[] = [];
    link.on('error', (e) => errors.push(e.code));
    await expect(link.start()).rejects.toMatchObject({ code: 'MEDIA_UNREACHABLE' });
    await waitUntil(() => fake.received.length > 0, 2000, 'hello at the fake relay');
    const lp = link.localPorts();
    const frameParts = fragmentFrame(jpeg, { kind: MediaKind.VIDEO, streamId: 7, token: Buffer.alloc(8), frameId: 1, firstSeq: 1, captureTsUs: nowUs() });
    for (const port of Object.values(lp)) {
      for (const m of mutants) await new Promise<void>((r) => fake.sock.send(m, port, '127.0.0.1', () => r()));
      for (const f of frameParts.slice(1)) await new Promise<void>((r) => fake.sock.send(f, port, '127.0.0.1', () => r()));
    }
    await sleep(100);
    const s = link.stats();
    expect(s.rejected.malformed).toBeGreaterThan(0);
    // A foreign sender (not the relay's address and port) is ignored.
    const stranger = await peer();
    await stranger.send(frameParts[0], lp.video);
    await waitUntil(() => link.stats().rejected.foreign >= 1, 2000, 'foreign packet ignored');
  });

  it('a host stopping a camera, a mute, a kick and a leave stop forwarding at once; everyone is told', async () => {
    const { server, clients } = await h.meeting(['ann', 'bob', 'cat', 'dot']);
    const [ann, bob, cat, dot] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    for (const c of clients) {
      await c.setVideo(true);
      await c.setAudio(true);
    }
    const got = new Map(clients.map((c) => [c, collectFrames(c)] as const));
    const small = await testJpeg(2, 160, 120);
    const stops = [bob, cat, dot].map((c) => keepSending(c, 'video', small));
    const stopAudio = keepSending(bob, 'audio', Buffer.alloc(80, 1));
    // Audio is not reassembled: each packet arrives as an 'audio' event.
    let bobAudioAtAnn = 0;
    ann.on('audio', (a) => {
      if (a.user_id === bob.userId) bobAudioAtAnn++;
    });
    try {
      await waitUntil(() => from(got.get(ann)!, bob).length > 5 && from(got.get(ann)!, cat).length > 5, 3000, 'flowing');

      // STOP_VIDEO: bob is told, the room is told who did it, the relay drops bob's camera.
      const told = bob.waitFor('stop_video');
      const seen = cat.waitFor('video_stop');
      await ann.stopVideo('bob');
      expect((await told)[0]).toMatchObject({ kind: 'video', by: { username: 'ann' } });
      expect((await seen)[0]).toMatchObject({ user_id: bob.userId, by: { username: 'ann' } });
      await sleep(100); // fragments already on the wire
      const bobAtAnn = from(got.get(ann)!, bob).filter((f) => f.kindName === 'video').length;
      const droppedBefore = server.media.participantStats(bob.userId!)!.sending.video.dropped;
      await sleep(400);
      expect(from(got.get(ann)!, bob).filter((f) => f.kindName === 'video').length).toBe(bobAtAnn);
      expect(server.media.participantStats(bob.userId!)!.sending.video.dropped).toBeGreaterThan(droppedBefore);
      // Bob may turn his camera on again himself.
      const restarted = cat.waitFor('video_start');
      await bob.setVideo(true);
      expect((await restarted)[0]).toMatchObject({ user_id: bob.userId, stream_id: bob.user!.stream_id ?? expect.any(Number) });
      await waitUntil(() => from(got.get(ann)!, bob).filter((f) => f.kindName === 'video').length > bobAtAnn, 2000, 'video again');

      // Host mute: bob's audio stops being forwarded.
      await waitUntil(() => bobAudioAtAnn > 0, 2000, 'audio flowing');
      await ann.mute('bob');
      await sleep(100);
      const audioAtAnn = bobAudioAtAnn;
      await sleep(300);
      expect(bobAudioAtAnn).toBe(audioAtAnn);
      expect(server.media.participantStats(bob.userId!)!.allowed.audio).toBe(false);

      // Kick cat: nothing from or to cat within 1 s.
      await ann.kick('cat');
      await sleep(150);
      const catAtAnn = from(got.get(ann)!, cat).length;
      const catReceived = got.get(cat)!.length;
      await sleep(1000);
      expect(from(got.get(ann)!, cat).length).toBe(catAtAnn);
      expect(got.get(cat)!.length).toBe(catReceived);
      expect(server.media.participantStats(cat.userId!)).toBeUndefined();
      expect(cat.media).toBeNull();

      // Dot leaves: the same.
      await dot.leaveRoom();
      await sleep(150);
      const dotAtAnn = from(got.get(ann)!, dot).length;
      await sleep(500);
      expect(from(got.get(ann)!, dot).length).toBe(dotAtAnn);
      expect(server.media.participantStats(dot.userId!)).toBeUndefined();
    } finally {
      stops.forEach((s) => s());
      stopAudio();
    }
  });

  it('only a host may stop someone else\'s camera; screen share is signalled and relayed on its own port', async () => {
    const { clients } = await h.meeting(['ann', 'bob']);
    const [ann, bob] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await rejectsWith(bob.stopVideo('ann'), 'PERMISSION_DENIED');
    const told = ann.waitFor('screen_share');
    await bob.setScreenShare(true);
    expect((await told)[0]).toMatchObject({ user_id: bob.userId, active: true, by: null });
    const frames = collectFrames(ann);
    const shot = await testJpeg(3, 1280, 720);
    await sendFrames(bob, [shot], 10, 'screen');
    await waitUntil(() => frames.length === 1, 3000, 'screen frame');
    expect(frames[0]).toMatchObject({ kindName: 'screen', user_id: bob.userId });
    expect(frames[0].data.equals(shot)).toBe(true);
    const stopped = bob.waitFor('stop_video');
    await ann.stopVideo('bob', 'screen');
    expect((await stopped)[0].kind).toBe('screen');
    expect(bob.users.get(bob.userId!)?.is_screen_sharing ?? bob.user?.is_screen_sharing).toBe(false);
  });

  it('a receiver can pause one stream: it stops getting it, others do not; resuming brings it back', async () => {
    const { server, clients } = await h.meeting(['ann', 'bob', 'cat']);
    const [ann, bob, cat] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await bob.setVideo(true);
    const annFrames = collectFrames(ann);
    const catFrames = collectFrames(cat);
    const stop = keepSending(bob, 'video', await testJpeg(4, 160, 120));
    try {
      await waitUntil(() => annFrames.length > 3, 2000, 'flowing');
      await ann.setStreamPaused('bob', 'video', true);
      await sleep(100);
      const n = annFrames.length;
      const m = catFrames.length;
      await sleep(400);
      expect(annFrames.length).toBe(n);
      expect(catFrames.length).toBeGreaterThan(m);
      expect(server.media.participantStats(ann.userId!)!.receiving.video.paused).toBeGreaterThan(0);
      await ann.setStreamPaused('bob', 'video', false);
      await waitUntil(() => annFrames.length > n, 2000, 'resumed');
      await rejectsWith(ann.setStreamPaused('nobody-here', 'video', true), 'TARGET_NOT_IN_ROOM');
    } finally {
      stop();
    }
  });

  it('receivers report once a second; the relay aggregates them for the stats API and the sender', async () => {
    const { server, clients } = await h.meeting(['ann', 'bob', 'cat'], { server: {} });
    const [ann] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await ann.setVideo(true);
    const reports: unknown[] = [];
    ann.on('sender_report', (r) => reports.push(r));
    const stop = keepSending(ann, 'video', await testJpeg(6, 320, 240), 50);
    try {
      await waitUntil(() => server.media.participantStats(ann.userId!)?.reports.video?.receivers === 2, 5000, 'aggregated reports');
      const agg = server.media.participantStats(ann.userId!)!.reports.video!;
      expect(agg.framesDelivered).toBeGreaterThan(0);
      expect(agg.lossMaxBp).toBe(0);
      await waitUntil(() => reports.length > 0, 3000, 'sender report at ann');
      expect(ann.media!.latestSenderReport[0]).toMatchObject({ kind: MediaKind.VIDEO, receivers: 2 });
      const recv = clients[1].media!.stats().received.find((r) => r.kind === 'video')!;
      expect(recv.stats.framesDelivered).toBeGreaterThan(0);
      expect(recv.stats.fps).toBeGreaterThan(0);
    } finally {
      stop();
    }
  });
});
