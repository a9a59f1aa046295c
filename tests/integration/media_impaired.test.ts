/**
 * The media plane through a lossy, jittery, reordering network: the seeded UDP
 * impairment proxy of the test kit sits between one receiver and the relay.
 */
import { afterEach, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import type { MediaFrame } from '../../client/main_client';
import { nowUs } from '../../shared/protocol/media_packet';
import { ImpairmentProxy, type ProxyGroup } from '../kit/impairment_proxy';
import { testJpeg } from '../kit/media';
import { Harness, sleep, waitUntil } from '../kit/server';

const h = new Harness();
let group: ProxyGroup | null = null;
afterEach(async () => {
  await group?.close();
  group = null;
  await h.closeAll();
});

describe('media through an impaired network', () => {
  it('at 5% loss and 30 +/- 10 ms jitter with reordering: every delivered frame is whole and valid, the delivered fraction is reported, memory stays bounded', async () => {
    const server = await h.server();
    group = await ImpairmentProxy.many(
      Object.fromEntries(Object.entries(server.media.ports).map(([k, port]) => [k, { host: '127.0.0.1', port }])),
      { seed: 20261126, downstream: { loss: 0.05, delayMs: 30, jitterMs: 10, reorder: 0.02 } },
    );
    const ann = await h.client(server, 'ann');
    const bob = await h.client(server, 'bob', { mediaOptions: { portsOverride: group.ports } });
    const room = await ann.createRoom({ name: 'Lossy' });
    await ann.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
    await Promise.all([ann.waitForMedia(), bob.waitForMedia()]);
    await ann.setVideo(true);
    await waitUntil(() => bob.users.get(ann.userId!)?.stream_id != null, 3000, 'bob knows ann');

    const sent = await Promise.all(Array.from({ length: 8 }, (_, i) => testJpeg(i, 320, 240)));
    const received: MediaFrame[] = [];
    bob.on('frame', (f) => received.push(f));
    // A long run at 30 fps: ~20 s, 600 frames of ~8 fragments each.
    const frames = 600;
    const link = bob.media!;
    let maxPendingBytes = 0;
    let maxPendingFrames = 0;
    let maxStreams = 0;
    let relayLossMaxBp = 0;
    for (let n = 0; n < frames; n++) {
      ann.sendFrame('video', sent[n % sent.length], nowUs());
      if (n % 10 === 0) {
        relayLossMaxBp = Math.max(relayLossMaxBp, server.media.participantStats(ann.userId!)?.reports.video?.lossMaxBp ?? 0);
        const rs = link.stats().received;
        maxStreams = Math.max(maxStreams, rs.length);
        for (const r of rs) {
          maxPendingBytes = Math.max(maxPendingBytes, r.stats.pendingBytes);
          maxPendingFrames = Math.max(maxPendingFrames, r.stats.pendingFrames);
        }
      }
      await sleep(33);
    }
    await sleep(300);

    // Whole and valid: byte-identical to what was sent with that frame id, and decodable.
    for (const f of received) expect(f.data.equals(sent[(f.frameId - 1) % sent.length])).toBe(true);
    for (const f of received.slice(0, 40)) await sharp(f.data).raw().toBuffer();
    // Delivered in increasing frame order, never an older one after a newer one.
    for (let i = 1; i < received.length; i++) expect(received[i].frameId).toBeGreaterThan(received[i - 1].frameId);

    const stats = link.stats().received.find((r) => r.kind === 'video')!.stats;
    const fraction = received.length / frames;
    console.log(
      `impaired: delivered ${received.length}/${frames} frames (${(fraction * 100).toFixed(1)}%), ` +
        `packet loss ${(stats.packetLoss * 100).toFixed(1)}%, frame loss ${(stats.frameLoss * 100).toFixed(1)}%, ` +
        `jitter ${stats.jitterMs.toFixed(1)} ms, delay ${stats.delayMs.toFixed(1)} ms, late ${stats.late}, dup ${stats.duplicates}`,
    );
    // ~8 fragments at 5% loss: about 0.95^8 = 66% of frames arrive whole.
    expect(fraction).toBeGreaterThan(0.4);
    expect(fraction).toBeLessThan(0.9);
    expect(stats.packetLoss).toBeGreaterThan(0.02);
    expect(stats.packetLoss).toBeLessThan(0.09);
    expect(stats.framesDelivered).toBe(received.length);
    expect(stats.frameLoss).toBeCloseTo(1 - received.length / (received[received.length - 1].frameId - received[0].frameId + 1), 2);
    // The jitter the proxy adds is seen (RFC 3550 jitter of a +/-10 ms uniform is several ms).
    expect(stats.jitterMs).toBeGreaterThan(1);
    expect(stats.delayMs).toBeGreaterThan(20);
    // Bounded: what the receiver holds for incomplete frames never grows with the run
    // (at most its 8 frames / 4 MiB, in practice a frame or two), one reassembler per stream.
    expect(maxPendingFrames).toBeGreaterThan(0);
    expect(maxPendingFrames).toBeLessThanOrEqual(8);
    expect(maxPendingBytes).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(maxStreams).toBe(1);

    // The relay heard about it while it happened: bob's reports of ann's stream showed the
    // loss (sampled during the run: the last, partial interval may have seen none).
    expect(relayLossMaxBp).toBeGreaterThan(100);
    expect(group.stats().video.downstream.dropped_loss).toBeGreaterThan(0);
  }, 60_000);

  it('a client whose address changes (a NAT rebinding) is re-learned: it registers again and keeps receiving', async () => {
    const server = await h.server();
    // The proxy forgets an idle mapping after 300 ms, so each of bob's keepalives (every
    // 1 s here) leaves from a new source port, as behind a NAT with a short timeout.
    group = await ImpairmentProxy.many(
      Object.fromEntries(Object.entries(server.media.ports).map(([k, port]) => [k, { host: '127.0.0.1', port }])),
      { seed: 7, idleTimeoutMs: 300 },
    );
    const ann = await h.client(server, 'ann');
    const bob = await h.client(server, 'bob', { mediaOptions: { portsOverride: group.ports, keepaliveMs: 1000 } });
    const room = await ann.createRoom({ name: 'Moving' });
    await ann.joinRoom(room.room_id);
    await bob.joinRoom(room.room_id);
    await Promise.all([ann.waitForMedia(), bob.waitForMedia()]);
    await ann.setVideo(true);
    const first = server.media.participantStats(bob.userId!)!.registered.video;
    const got: MediaFrame[] = [];
    bob.on('frame', (f) => got.push(f));
    const jpeg = await testJpeg(1, 160, 120);
    const seen = new Set<string>([first!]);
    // Frames every 500 ms for 4 s: bob's mapping idles out between them and moves.
    for (let i = 0; i < 8; i++) {
      await sleep(500);
      ann.sendFrame('video', jpeg, nowUs());
      const now = server.media.participantStats(bob.userId!)!.registered.video;
      if (now) seen.add(now);
    }
    await sleep(300);
    expect(seen.size).toBeGreaterThan(1);
    // Re-registration takes a round trip; most frames still arrive.
    expect(got.length).toBeGreaterThanOrEqual(3);
  }, 30_000);
});
