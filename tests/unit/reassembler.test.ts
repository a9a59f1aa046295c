/**
 * Receive-side frame reassembly and reception statistics (client/reassembler.ts).
 *
 * Frames are cut by the real sender-side fragmentFrame, so the two halves of the media
 * plane are checked against each other; loss, jitter and report numbers are checked
 * against values worked out by hand. Properties (fast-check) drop, duplicate and reorder
 * a stream of frames and require that every delivered frame is exactly the one sent with
 * that id, and that packets with arbitrary header fields never make the reassembler throw
 * or exceed its memory bounds.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { StreamReassembler, type ReassembledFrame } from '../../client/reassembler';
import {
  MAX_MEDIA_PAYLOAD,
  MEDIA_HEADER_BYTES,
  MediaKind,
  OFFSET,
  encodeMediaPacket,
  encodeReceptionRecords,
  fragmentFrame,
  mediaPacketProblem,
  seqAfter,
} from '../../shared/protocol/media_packet';

// ------------------------------------------------------------------ helpers

const SID = 0x01020304;
const KIND = MediaKind.VIDEO;
const TOKEN = Buffer.alloc(8);
/** A realistic server-clock origin (us), so nothing depends on times being small. */
const T0 = 1_700_000_000_000_000;
const FRAME_US = 33_333;

/** Deterministic bytes (xorshift32), so a failing case replays from its seed. */
function randomBytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** A PRNG in [0, 1) for per-packet decisions in properties. */
function rng(seed: number): () => number {
  let x = (seed | 0) || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

interface SentFrame {
  frameId: number;
  data: Buffer;
  captureTsUs: number;
  packets: Buffer[];
}

/** Frames of the given sizes as a sender emits them: ids +1 per frame, seq continuous. */
function makeStream(
  sizes: number[],
  o: { firstFrameId?: number; firstSeq?: number; maxPayload?: number; seed?: number; layer?: number } = {},
): SentFrame[] {
  let seq = o.firstSeq ?? 1000;
  const out: SentFrame[] = [];
  sizes.forEach((size, i) => {
    const frameId = ((o.firstFrameId ?? 0) + i) >>> 0;
    const data = randomBytes(size, (o.seed ?? 1) * 7919 + i);
    const captureTsUs = T0 + i * FRAME_US;
    const packets = fragmentFrame(
      data,
      { kind: KIND, streamId: SID, token: TOKEN, frameId, firstSeq: seq, captureTsUs, layer: o.layer },
      o.maxPayload ?? MAX_MEDIA_PAYLOAD,
    );
    seq = (seq + packets.length) >>> 0;
    out.push({ frameId, data, captureTsUs, packets });
  });
  return out;
}

/** Pushes packets spaced `stepUs` apart from `t`; returns what was delivered. */
function pushAll(r: StreamReassembler, packets: Buffer[], t = T0, stepUs = 10): ReassembledFrame[] {
  const got: ReassembledFrame[] = [];
  packets.forEach((p, i) => {
    const f = r.push(p, t + i * stepUs);
    if (f) got.push(f);
  });
  return got;
}

function singleFragmentPacket(seq: number, frameId: number, captureTsUs = T0): Buffer {
  return encodeMediaPacket(
    { kind: KIND, flags: 1, layer: 0, level: 127, streamId: SID, token: TOKEN, seq, frameId, fragIndex: 0, fragCount: 1, captureTsUs },
    Buffer.from([frameId & 0xff]),
  );
}

// ------------------------------------------------------------------ delivery

describe('StreamReassembler delivery', () => {
  it('delivers in-order frames byte for byte, 0 bytes to ~100 KB', () => {
    const sizes = [0, 1, 2, 1199, 1200, 1201, 2400, 2401, 5000, 65_537, 100_000];
    const r = new StreamReassembler(SID, KIND);
    for (const f of makeStream(sizes)) {
      const got = pushAll(r, f.packets, f.captureTsUs + 2000);
      expect(got).toHaveLength(1);
      const [g] = got;
      expect(g.frameId).toBe(f.frameId);
      expect(g.fragments).toBe(f.packets.length);
      expect(g.data.equals(f.data)).toBe(true);
      expect(g).toMatchObject({ streamId: SID, kind: KIND, layer: 0, captureTsUs: f.captureTsUs });
      expect(g.completeUs).toBeGreaterThanOrEqual(g.firstArrivalUs);
    }
    const s = r.stats(T0 + sizes.length * FRAME_US);
    expect(s).toMatchObject({ framesDelivered: sizes.length, framesDropped: 0, duplicates: 0, late: 0, malformed: 0, packetLoss: 0 });
    expect(s.pendingFrames).toBe(0);
    expect(s.pendingBytes).toBe(0);
  });

  it('returns data of its own, not a view of the datagrams', () => {
    const r = new StreamReassembler(SID, KIND);
    for (const f of makeStream([500, 3000])) {
      const [g] = pushAll(r, f.packets);
      for (const p of f.packets) p.fill(0xee, MEDIA_HEADER_BYTES);
      expect(g.data.equals(f.data)).toBe(true);
    }
  });

  it('delivers exactly the original for any permutation of its fragments', () => {
    fc.assert(
      fc.property(
        fc
          .tuple(fc.integer({ min: 1, max: 100_000 }), fc.integer())
          .chain(([size, seed]) => {
            const n = Math.max(1, Math.ceil(size / MAX_MEDIA_PAYLOAD));
            const idx = Array.from({ length: n }, (_, i) => i);
            return fc.tuple(fc.constant(size), fc.constant(seed), fc.shuffledSubarray(idx, { minLength: n, maxLength: n }));
          }),
        ([size, seed, order]) => {
          const [f] = makeStream([size], { seed });
          const r = new StreamReassembler(SID, KIND);
          const got = pushAll(r, order.map((i) => f.packets[i]));
          expect(got).toHaveLength(1);
          expect(got[0].data.equals(f.data)).toBe(true);
          expect(r.pendingFrames).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('ignores duplicates, before and after completion, and counts them', () => {
    const [f, g] = makeStream([5000, 5000]);
    const r = new StreamReassembler(SID, KIND);
    const interleaved = f.packets.flatMap((p) => [p, p]);
    const got = pushAll(r, interleaved);
    expect(got).toHaveLength(1);
    expect(got[0].data.equals(f.data)).toBe(true);
    // The last fragment completes the frame on its first copy; its second copy comes after.
    expect(r.stats(T0).duplicates).toBe(f.packets.length);
    expect(pushAll(r, f.packets)).toHaveLength(0);
    expect(r.stats(T0).duplicates).toBe(2 * f.packets.length);
    expect(pushAll(r, g.packets)).toHaveLength(1);
    expect(r.stats(T0)).toMatchObject({ framesDelivered: 2, framesDropped: 0, late: 0 });
  });

  it('never delivers a frame missing a fragment; it counts as dropped once a later frame arrives', () => {
    const [f, g] = makeStream([6000, 6000]);
    for (let missing = 0; missing < f.packets.length; missing++) {
      const r = new StreamReassembler(SID, KIND);
      expect(pushAll(r, f.packets.filter((_, i) => i !== missing))).toHaveLength(0);
      expect(r.stats(T0).framesDropped).toBe(0);
      const got = pushAll(r, g.packets);
      expect(got.map((x) => x.frameId)).toEqual([g.frameId]);
      expect(r.stats(T0)).toMatchObject({ framesDelivered: 1, framesDropped: 1, frameLoss: 0.5, superseded: 1, pendingFrames: 0 });
      // The missing fragment, now too late: dropped, not re-counted.
      expect(r.push(f.packets[missing], T0 + 1000)).toBeNull();
      expect(r.stats(T0)).toMatchObject({ late: 1, framesDropped: 1 });
    }
  });

  it('drops a late fragment of a frame already superseded', () => {
    const [a, b, c] = makeStream([4000, 4000, 4000], { firstFrameId: 5 });
    const r = new StreamReassembler(SID, KIND);
    const heldBack = a.packets[a.packets.length - 1];
    // a and b interleave; b completes while a still waits for its last fragment.
    const order = [a.packets[0], b.packets[0], a.packets[1], b.packets[1], a.packets[2], b.packets[2], ...b.packets.slice(3)];
    const got = pushAll(r, order);
    expect(got.map((x) => x.frameId)).toEqual([6]);
    expect(r.push(heldBack, T0 + 5000)).toBeNull();
    expect(r.stats(T0)).toMatchObject({ late: 1, framesDelivered: 1, framesDropped: 1 });
    expect(pushAll(r, c.packets).map((x) => x.frameId)).toEqual([7]);
  });

  it('drops a packet whose frag_count disagrees with its frame as malformed', () => {
    const [f] = makeStream([3000]);
    const r = new StreamReassembler(SID, KIND);
    r.push(f.packets[0], T0);
    const liar = Buffer.from(f.packets[1]);
    liar.writeUInt16BE(f.packets.length + 1, OFFSET.fragCount);
    expect(mediaPacketProblem(liar)).toBeNull();
    expect(r.push(liar, T0)).toBeNull();
    expect(r.stats(T0).malformed).toBe(1);
    const got = pushAll(r, f.packets.slice(1));
    expect(got).toHaveLength(1);
    expect(got[0].data.equals(f.data)).toBe(true);
    // After delivery, too: a copy with another count is not a duplicate.
    expect(r.push(liar, T0)).toBeNull();
    expect(r.stats(T0)).toMatchObject({ malformed: 2, duplicates: 0 });
  });

  it('refuses packets of another stream or kind (a routing bug) as malformed', () => {
    const [f] = makeStream([10]);
    const r = new StreamReassembler(SID + 1, KIND);
    expect(r.push(f.packets[0], T0)).toBeNull();
    const s = new StreamReassembler(SID, MediaKind.SCREEN);
    expect(s.push(f.packets[0], T0)).toBeNull();
    expect(r.stats(T0).malformed + s.stats(T0).malformed).toBe(2);
    expect(r.push(Buffer.alloc(10), T0)).toBeNull();
    expect(r.stats(T0).malformed).toBe(2);
  });

  it('delivers across the frame id wrap (0xfffffffe .. 1)', () => {
    const frames = makeStream([3000, 10, 3000, 2500], { firstFrameId: 0xfffffffe, firstSeq: 0xfffffffc });
    expect(frames.map((f) => f.frameId)).toEqual([0xfffffffe, 0xffffffff, 0, 1]);
    const r = new StreamReassembler(SID, KIND);
    const got = frames.flatMap((f) => pushAll(r, f.packets, f.captureTsUs + 3000));
    expect(got.map((g) => g.frameId)).toEqual([0xfffffffe, 0xffffffff, 0, 1]);
    got.forEach((g, i) => expect(g.data.equals(frames[i].data)).toBe(true));
    expect(r.stats(T0 + 1e6)).toMatchObject({ framesDropped: 0, packetLoss: 0, late: 0 });

    // Straight from 0xfffffffe to 1: two frames skipped across the wrap.
    const q = new StreamReassembler(SID, KIND);
    expect(pushAll(q, frames[0].packets)).toHaveLength(1);
    expect(pushAll(q, frames[3].packets).map((g) => g.frameId)).toEqual([1]);
    expect(q.stats(T0)).toMatchObject({ framesDelivered: 2, framesDropped: 2 });
    // A fragment of frame 0 is now before the horizon even though 0 < 0xfffffffe numerically.
    expect(q.push(frames[2].packets[0], T0)).toBeNull();
    expect(q.stats(T0).late).toBe(1);
  });

  it('starts counting at the first frame seen', () => {
    const frames = makeStream([10, 10, 10, 10, 10], { firstFrameId: 1000 });
    const r = new StreamReassembler(SID, KIND);
    pushAll(r, frames[2].packets);
    pushAll(r, frames[4].packets);
    expect(r.stats(T0)).toMatchObject({ framesDelivered: 2, framesDropped: 1 });
  });
});

// ------------------------------------------------------------------ memory and deadline

describe('StreamReassembler bounds and deadline', () => {
  it('keeps pending frames and bytes bounded under a flood of incomplete frames', () => {
    const r = new StreamReassembler(SID, KIND);
    const small = new StreamReassembler(SID, KIND, { maxPendingFrames: 3, maxPendingBytes: 10_000 });
    let maxFrames = 0;
    let maxBytes = 0;
    let maxSmallFrames = 0;
    let maxSmallBytes = 0;
    let seq = 0;
    for (let i = 0; i < 10_000; i++) {
      // 3 fragments each, the last never sent.
      const pk = fragmentFrame(randomBytes(3600, i), { kind: KIND, streamId: SID, token: TOKEN, frameId: i, firstSeq: seq, captureTsUs: T0 });
      seq += pk.length;
      for (const p of pk.slice(0, 2)) {
        expect(r.push(p, T0 + i * 100)).toBeNull();
        expect(small.push(p, T0 + i * 100)).toBeNull();
        maxFrames = Math.max(maxFrames, r.pendingFrames);
        maxBytes = Math.max(maxBytes, r.pendingBytes);
        maxSmallFrames = Math.max(maxSmallFrames, small.pendingFrames);
        maxSmallBytes = Math.max(maxSmallBytes, small.pendingBytes);
      }
    }
    expect(maxFrames).toBe(8);
    expect(maxBytes).toBeLessThanOrEqual(8 * 2400);
    expect(maxSmallFrames).toBeLessThanOrEqual(3);
    expect(maxSmallBytes).toBeLessThanOrEqual(10_000);
    const s = r.stats(T0 + 1e9);
    expect(s.evicted + s.expired).toBeGreaterThanOrEqual(10_000 - 8);

    // Still works: a whole frame after the flood is delivered, the flood counted as dropped.
    const [f] = makeStream([3600], { firstFrameId: 10_000, firstSeq: seq });
    expect(pushAll(r, f.packets, T0 + 1e6)).toHaveLength(1);
    expect(r.stats(T0 + 1e6)).toMatchObject({ framesDelivered: 1, framesDropped: 10_000 });
  });

  it('keeps bytes bounded when a single frame exceeds the budget, and recovers after it', () => {
    const r = new StreamReassembler(SID, KIND, { maxPendingBytes: 5000 });
    const [big, next] = makeStream([20_000, 4000]);
    for (const p of big.packets) {
      expect(r.push(p, T0)).toBeNull();
      expect(r.pendingBytes).toBeLessThanOrEqual(5000);
    }
    const got = pushAll(r, next.packets);
    expect(got.map((g) => g.frameId)).toEqual([next.frameId]);
    expect(got[0].data.equals(next.data)).toBe(true);
  });

  it('drops an incomplete frame at its deadline, never delivers it after, counts it once', () => {
    const [a, b] = makeStream([3000, 3000]);
    const r = new StreamReassembler(SID, KIND, { deadlineMs: 500 });
    r.push(a.packets[0], T0);
    r.push(a.packets[1], T0 + 100_000);
    expect(r.expire(T0 + 499_999)).toBe(0);
    expect(r.expire(T0 + 500_000)).toBe(1);
    expect(r.expire(T0 + 600_000)).toBe(0);
    expect(r.push(a.packets[2], T0 + 600_000)).toBeNull();
    expect(r.stats(T0).late).toBe(1);
    expect(pushAll(r, b.packets, T0 + 700_000)).toHaveLength(1);
    expect(r.stats(T0 + 700_000)).toMatchObject({ expired: 1, framesDelivered: 1, framesDropped: 1, pendingFrames: 0 });
  });

  it('enforces the deadline on push as well, without the timer', () => {
    const [a] = makeStream([3000]);
    const r = new StreamReassembler(SID, KIND, { deadlineMs: 50 });
    r.push(a.packets[0], T0);
    r.push(a.packets[1], T0 + 10_000);
    expect(r.push(a.packets[2], T0 + 50_000)).toBeNull();
    expect(r.stats(T0)).toMatchObject({ expired: 1, late: 1, framesDelivered: 0 });
  });

  it('rejects absurd options', () => {
    expect(() => new StreamReassembler(SID, KIND, { maxPendingFrames: 0 })).toThrow(RangeError);
    expect(() => new StreamReassembler(SID, KIND, { maxPendingBytes: 0 })).toThrow(RangeError);
    expect(() => new StreamReassembler(SID, KIND, { deadlineMs: -1 })).toThrow(RangeError);
  });

  it('resyncs when the sender restarts its counters instead of dropping it for good', () => {
    const before = makeStream(Array(5).fill(2000), { firstFrameId: 90_000, firstSeq: 500_000 });
    const after = makeStream(Array(5).fill(2000), { firstFrameId: 0, firstSeq: 0, seed: 2 });
    const r = new StreamReassembler(SID, KIND);
    for (const f of before) expect(pushAll(r, f.packets)).toHaveLength(1);
    const got = after.flatMap((f) => pushAll(r, f.packets, T0 + 1e6));
    // The first frame after the restart loses the packet that raised the suspicion.
    expect(got.map((g) => g.frameId)).toEqual([1, 2, 3, 4]);
    got.forEach((g) => expect(g.data.equals(after[g.frameId].data)).toBe(true));
    const s = r.stats(T0 + 1e6);
    expect(s.resyncs).toBe(1);
    expect(s.framesDropped).toBe(1);
    // Both seq segments are accounted; only the one suspicious packet is unaccounted for.
    expect(s.packetLoss).toBe(0);
  });
});

// ------------------------------------------------------------------ statistics

describe('StreamReassembler statistics', () => {
  it('computes packet loss from sequence gaps as worked out by hand', () => {
    const r = new StreamReassembler(SID, KIND);
    const lost = new Set([103, 107, 108]);
    for (let seq = 100, id = 0; seq < 120; seq++, id++) if (!lost.has(seq)) r.push(singleFragmentPacket(seq, id), T0 + id * 1000);
    // Highest 119, first 100: 20 expected, 17 received.
    let s = r.stats(T0);
    expect(s.expectedPackets).toBe(20);
    expect(s.receivedPackets).toBe(17);
    expect(s.packetLoss).toBeCloseTo(3 / 20, 12);
    expect(s).toMatchObject({ framesDelivered: 17, framesDropped: 3, frameLoss: 3 / 20 });
    expect(r.takeReport(T0)).toMatchObject({ streamId: SID, kind: KIND, expected: 20, received: 17, lossBp: 1500, framesDelivered: 17, framesDropped: 3 });

    // Next interval: 120..129 with 125 lost and 126/127 swapped: 10 expected, 9 received.
    for (const [seq, id] of [[120, 20], [121, 21], [122, 22], [123, 23], [124, 24], [127, 27], [126, 26], [128, 28], [129, 29]]) {
      r.push(singleFragmentPacket(seq, id), T0);
    }
    expect(r.takeReport(T0)).toMatchObject({ expected: 10, received: 9, lossBp: 1000 });
    s = r.stats(T0);
    expect(s.expectedPackets).toBe(30);
    expect(s.receivedPackets).toBe(26);
    expect(s.packetLoss).toBeCloseTo(4 / 30, 12);

    // An empty interval reports nothing lost, and no frames.
    expect(r.takeReport(T0)).toMatchObject({ expected: 0, received: 0, lossBp: 0, framesDelivered: 0, framesDropped: 0 });
  });

  it('counts loss across the sequence wrap, and clamps duplicate-inflated intervals to no loss', () => {
    const r = new StreamReassembler(SID, KIND);
    // 0xfffffffa .. 0x00000005 is 12 packets; 0xfffffffe and 0x00000002 are lost.
    const seqs = [0xfffffffa, 0xfffffffb, 0xfffffffc, 0xfffffffd, 0xffffffff, 0, 1, 3, 4, 5];
    seqs.forEach((seq, i) => r.push(singleFragmentPacket(seq, i), T0));
    expect(r.takeReport(T0)).toMatchObject({ expected: 12, received: 10, lossBp: Math.round((2 / 12) * 10000) });
    // Every packet of the next interval sent twice: received 2x expected.
    for (let seq = 6; seq < 10; seq++) {
      const p = singleFragmentPacket(seq, seq + 10);
      r.push(p, T0);
      r.push(p, T0);
    }
    const rep = r.takeReport(T0);
    expect(rep).toMatchObject({ expected: 4, received: 8, lossBp: 0 });
    expect(() => encodeReceptionRecords([rep])).not.toThrow();
    expect(r.stats(T0).packetLoss).toBe(0);
  });

  it('has zero jitter for perfectly regular arrival and a constant delay', () => {
    const frames = makeStream(Array(40).fill(2500));
    const r = new StreamReassembler(SID, KIND);
    // Every fragment of a frame arrives at once, 5 ms after capture.
    for (const f of frames) for (const p of f.packets) r.push(p, f.captureTsUs + 5000);
    const s = r.stats(frames[39].captureTsUs + 5000);
    expect(s.jitterMs).toBe(0);
    expect(s.delayMs).toBeCloseTo(5, 9);
    expect(s.lastDelayMs).toBeCloseTo(5, 9);
    expect(r.takeReport(T0)).toMatchObject({ jitterUs: 0, delayUs: 5000 });
  });

  it('computes RFC 3550 jitter over frames for jittered arrival', () => {
    const frames = makeStream(Array(20).fill(100));
    const r = new StreamReassembler(SID, KIND);
    const offsets = frames.map((_, i) => (i % 2 === 0 ? 5000 : 15_000));
    frames.forEach((f, i) => r.push(f.packets[0], f.captureTsUs + offsets[i]));
    // |D| is 10 ms for every frame after the first: J_n = J_{n-1} + (10000 - J_{n-1}) / 16.
    let j = 0;
    for (let i = 1; i < 20; i++) j += (10_000 - j) / 16;
    const s = r.stats(T0);
    expect(s.jitterMs).toBeGreaterThan(0);
    expect(s.jitterMs).toBeCloseTo(j / 1000, 9);
    expect(s.lastDelayMs).toBe(15);
    expect(r.takeReport(T0).jitterUs).toBe(Math.round(j));
  });

  it('measures fps and kbps over the last second', () => {
    const frames = makeStream(Array(60).fill(3000), { maxPayload: 1000 });
    const r = new StreamReassembler(SID, KIND);
    for (const f of frames) pushAll(r, f.packets, f.captureTsUs + 2000, 100);
    const now = frames[59].captureTsUs + 2300;
    const s = r.stats(now);
    expect(s.fps).toBeGreaterThan(27);
    expect(s.fps).toBeLessThan(33);
    const perSecond = 30 * (3000 + 3 * MEDIA_HEADER_BYTES) * 8 / 1000;
    expect(s.kbps).toBeGreaterThan(perSecond * 0.9);
    expect(s.kbps).toBeLessThan(perSecond * 1.1);
    expect(s.packets).toBe(180);
    expect(s.bytes).toBe(60 * (3000 + 3 * MEDIA_HEADER_BYTES));
    // Quiet for two seconds: the window is empty.
    expect(r.stats(now + 2e6)).toMatchObject({ fps: 0, kbps: 0 });
  });
});

// ------------------------------------------------------------------ properties

describe('StreamReassembler properties', () => {
  it('under random drop, duplication, reordering: delivers only exact frames, in increasing id order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 8000 }), { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 40, max: MAX_MEDIA_PAYLOAD }),
        fc.oneof(fc.constant(0), fc.constant(0xfffffff0), fc.integer({ min: 0, max: 0xffffffff })),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.record({
          drop: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.3, noNaN: true })),
          dup: fc.double({ min: 0, max: 0.3, noNaN: true }),
          window: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 40 })),
          stepUs: fc.integer({ min: 10, max: 3000 }),
          seed: fc.integer(),
          maxPendingFrames: fc.integer({ min: 1, max: 10 }),
        }),
        (sizes, maxPayload, firstFrameId, firstSeq, net) => {
          const frames = makeStream(sizes, { firstFrameId, firstSeq, maxPayload, seed: net.seed });
          const byId = new Map(frames.map((f) => [f.frameId, f]));
          const rand = rng(net.seed);
          const wire: { p: Buffer; key: number }[] = [];
          frames.flatMap((f) => f.packets).forEach((p, i) => {
            if (rand() < net.drop) return;
            wire.push({ p, key: i + rand() * net.window });
            if (rand() < net.dup) wire.push({ p, key: i + rand() * net.window });
          });
          wire.sort((a, b) => a.key - b.key);
          const r = new StreamReassembler(SID, KIND, { maxPendingFrames: net.maxPendingFrames });
          const got: ReassembledFrame[] = [];
          wire.forEach(({ p }, i) => {
            const f = r.push(p, T0 + i * net.stepUs);
            if (f) got.push(f);
            expect(r.pendingFrames).toBeLessThanOrEqual(net.maxPendingFrames);
          });
          for (let i = 0; i < got.length; i++) {
            const sent = byId.get(got[i].frameId);
            expect(sent).toBeDefined();
            expect(got[i].data.equals(sent!.data)).toBe(true);
            expect(got[i].captureTsUs).toBe(sent!.captureTsUs);
            if (i > 0) expect(seqAfter(got[i].frameId, got[i - 1].frameId)).toBe(true);
          }
          const s = r.stats(T0 + wire.length * net.stepUs);
          expect(s.framesDelivered).toBe(got.length);
          if (got.length > 0 && wire.length > 0) {
            // Every id from the first frame seen to the last delivered is delivered or dropped.
            const firstSeen = wire[0].p.readUInt32BE(OFFSET.frameId);
            expect(s.framesDelivered + s.framesDropped).toBe(((got[got.length - 1].frameId - firstSeen) >>> 0) + 1);
          }
          // Nothing lost, nothing out of order, no deadline hit: everything arrives.
          if (net.drop === 0 && net.window === 0 && net.stepUs <= 1000) expect(got.length).toBe(frames.length);
          expect(s.packetLoss).toBeGreaterThanOrEqual(0);
          expect(s.packetLoss).toBeLessThanOrEqual(1);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never throws and stays bounded on packets with arbitrary header fields', () => {
    const header = fc
      .record({
        fragCount: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 1024 })),
        indexSeed: fc.nat(),
        frameId: fc.oneof(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0xfffffffc, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff })),
        seq: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 0xffffffff })),
        layer: fc.integer({ min: 0, max: 2 }),
        flags: fc.integer({ min: 0, max: 255 }),
        captureTsUs: fc.oneof(fc.constant(0), fc.maxSafeNat(), fc.integer({ min: T0 - 1e6, max: T0 + 1e6 })),
        payload: fc.integer({ min: 0, max: MAX_MEDIA_PAYLOAD }),
        arrival: fc.oneof(fc.integer({ min: -1e6, max: 1e7 }), fc.constant(0)),
      })
      .map((h) => ({
        packet: encodeMediaPacket(
          {
            kind: KIND,
            flags: h.flags,
            layer: h.layer,
            level: 127,
            streamId: SID,
            token: TOKEN,
            seq: h.seq,
            frameId: h.frameId,
            fragIndex: h.indexSeed % h.fragCount,
            fragCount: h.fragCount,
            captureTsUs: h.captureTsUs,
          },
          randomBytes(h.payload, h.indexSeed),
        ),
        arrival: h.arrival,
      }));
    fc.assert(
      fc.property(
        fc.array(header, { minLength: 1, maxLength: 300 }),
        fc.record({
          maxPendingFrames: fc.integer({ min: 1, max: 10 }),
          maxPendingBytes: fc.integer({ min: 1, max: 200_000 }),
          deadlineMs: fc.integer({ min: 1, max: 1000 }),
        }),
        (packets, opts) => {
          const r = new StreamReassembler(SID, KIND, opts);
          let t = T0;
          for (const { packet, arrival } of packets) {
            expect(mediaPacketProblem(packet)).toBeNull();
            t += arrival;
            const f = r.push(packet, t);
            if (f) expect(f.data.length).toBeLessThanOrEqual(f.fragments * MAX_MEDIA_PAYLOAD);
            expect(r.pendingFrames).toBeLessThanOrEqual(opts.maxPendingFrames);
            expect(r.pendingBytes).toBeLessThanOrEqual(opts.maxPendingBytes);
            if (Math.abs(arrival) % 7 === 0) r.expire(t);
          }
          const s = r.stats(t);
          for (const v of Object.values(s)) expect(Number.isFinite(v)).toBe(true);
          expect(s.packets).toBe(packets.length);
          const rep = r.takeReport(t);
          expect(rep.lossBp).toBeGreaterThanOrEqual(0);
          expect(rep.lossBp).toBeLessThanOrEqual(10000);
          expect(() => encodeReceptionRecords([rep])).not.toThrow();
        },
      ),
      { numRuns: 300 },
    );
  });
});
