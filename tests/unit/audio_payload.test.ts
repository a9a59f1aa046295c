import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  MAX_REDUNDANCY,
  RedundancyEncoder,
  decodeAudioPayload,
  encodeAudioPayload,
  type DecodedAudioPayload,
} from '../../shared/protocol/audio_payload';
import { MAX_MEDIA_PAYLOAD } from '../../shared/protocol/media_packet';

const b = (...bytes: number[]) => Buffer.from(bytes);

function ok(x: ReturnType<typeof decodeAudioPayload>): DecodedAudioPayload {
  if ('problem' in x) throw new Error(`unexpected problem ${x.problem}`);
  return x;
}

describe('audio payload: encode against hand-built bytes', () => {
  it('no redundancy: a zero count, then the primary', () => {
    expect(encodeAudioPayload(b(0xaa, 0xbb), [])).toEqual(b(0, 0xaa, 0xbb));
  });

  it('one copy: count, {distance, length BE}, the copy, the primary', () => {
    expect(encodeAudioPayload(b(0xaa, 0xbb), [{ distance: 1, data: b(1, 2, 3) }])).toEqual(
      b(1, /* entry */ 1, 0x00, 0x03, /* copy */ 1, 2, 3, /* primary */ 0xaa, 0xbb),
    );
  });

  it('two copies keep their order; a 300-byte copy shows the big-endian length', () => {
    const big = Buffer.alloc(300, 7);
    const out = encodeAudioPayload(b(9), [
      { distance: 1, data: big },
      { distance: 2, data: b(5) },
    ]);
    expect([...out.subarray(0, 7)]).toEqual([2, 1, 0x01, 0x2c, 2, 0x00, 0x01]);
    expect(out.subarray(7, 307).equals(big)).toBe(true);
    expect([...out.subarray(307)]).toEqual([5, 9]);
  });
});

describe('audio payload: decode', () => {
  it('reads hand-built bytes', () => {
    const d = ok(decodeAudioPayload(b(2, 1, 0, 2, 3, 0, 1, 0x10, 0x11, 0x20, 0xee, 0xef)));
    expect(d.redundant.map((r) => [r.distance, [...r.data]])).toEqual([
      [1, [0x10, 0x11]],
      [3, [0x20]],
    ]);
    expect([...d.primary]).toEqual([0xee, 0xef]);
  });

  it.each([
    ['empty', b(), 'too_short'],
    ['count only', b(0), 'too_short'],
    ['count 3', b(3, 1, 0, 1, 2, 0, 1, 3, 0, 1, 9, 9, 9, 9), 'bad_count'],
    ['count 255', b(255, 1, 2, 3), 'bad_count'],
    ['entries cut short', b(2, 1, 0, 1, 2), 'too_short'],
    ['entries but no primary byte', b(1, 1, 0, 1), 'too_short'],
    ['distance 0', b(1, 0, 0, 1, 7, 8), 'bad_distance'],
    ['the same distance twice', b(2, 1, 0, 1, 1, 0, 1, 7, 7, 8), 'bad_distance'],
    ['a copy of length 0', b(1, 1, 0, 0, 8), 'bad_length'],
    ['a copy running to the end (no primary)', b(1, 1, 0, 2, 7, 8), 'bad_length'],
    ['a copy running past the end', b(1, 1, 0xff, 0xff, 7, 8), 'bad_length'],
  ])('%s -> %s', (_name, bytes, problem) => {
    expect(decodeAudioPayload(bytes)).toEqual({ problem });
  });

  it('returns views into the datagram, not copies', () => {
    const buf = b(1, 1, 0, 1, 0x42, 0x43);
    const d = ok(decodeAudioPayload(buf));
    expect(d.primary.buffer).toBe(buf.buffer);
    expect(d.redundant[0].data.byteOffset).toBe(buf.byteOffset + 4);
  });
});

describe('audio payload: size limit', () => {
  it('drops copies that do not fit, never the primary', () => {
    const primary = Buffer.alloc(1000, 1);
    const out = encodeAudioPayload(primary, [
      { distance: 1, data: Buffer.alloc(300, 2) }, // 1 + 1000 + 303 > 1200: dropped
      { distance: 2, data: Buffer.alloc(100, 3) }, // 1 + 1000 + 103 fits
    ]);
    expect(out.length).toBe(1104);
    const d = ok(decodeAudioPayload(out));
    expect(d.redundant.map((r) => [r.distance, r.data.length])).toEqual([[2, 100]]);
    expect(d.primary.equals(primary)).toBe(true);
  });

  it('a payload of exactly the limit is built; a primary that cannot fit throws', () => {
    expect(encodeAudioPayload(Buffer.alloc(MAX_MEDIA_PAYLOAD - 1), []).length).toBe(MAX_MEDIA_PAYLOAD);
    const exact = encodeAudioPayload(Buffer.alloc(1000), [{ distance: 1, data: Buffer.alloc(196) }]);
    expect(exact.length).toBe(MAX_MEDIA_PAYLOAD);
    expect(ok(decodeAudioPayload(exact)).redundant).toHaveLength(1);
    const over = encodeAudioPayload(Buffer.alloc(1000), [{ distance: 1, data: Buffer.alloc(197) }]);
    expect(ok(decodeAudioPayload(over)).redundant).toHaveLength(0);
    expect(() => encodeAudioPayload(Buffer.alloc(MAX_MEDIA_PAYLOAD), [])).toThrow(RangeError);
    expect(encodeAudioPayload(b(1, 2), [{ distance: 1, data: b(3, 4) }], 6)).toEqual(b(0, 1, 2));
  });

  it('refuses caller errors', () => {
    expect(() => encodeAudioPayload(Buffer.alloc(0), [])).toThrow(RangeError);
    expect(() => encodeAudioPayload(b(1), [{ distance: 0, data: b(1) }])).toThrow(RangeError);
    expect(() => encodeAudioPayload(b(1), [{ distance: 256, data: b(1) }])).toThrow(RangeError);
    expect(() => encodeAudioPayload(b(1), [{ distance: 1, data: Buffer.alloc(0) }])).toThrow(RangeError);
    expect(() =>
      encodeAudioPayload(b(1), [
        { distance: 1, data: b(1) },
        { distance: 1, data: b(2) },
      ]),
    ).toThrow(RangeError);
    expect(() =>
      encodeAudioPayload(
        b(1),
        Array.from({ length: MAX_REDUNDANCY + 1 }, (_, i) => ({ distance: i + 1, data: b(1) })),
      ),
    ).toThrow(RangeError);
  });
});

describe('audio payload: properties', () => {
  const frameBytes = fc.uint8Array({ minLength: 1, maxLength: 400 }).map((a) => Buffer.from(a));

  it('round-trips any primary and copies that fit', () => {
    fc.assert(
      fc.property(
        frameBytes,
        fc.uniqueArray(fc.integer({ min: 1, max: 255 }), { maxLength: MAX_REDUNDANCY }),
        fc.array(frameBytes, { minLength: MAX_REDUNDANCY, maxLength: MAX_REDUNDANCY }),
        (primary, distances, datas) => {
          const red = distances.map((distance, i) => ({ distance, data: datas[i] }));
          const out = encodeAudioPayload(primary, red);
          expect(out.length).toBeLessThanOrEqual(MAX_MEDIA_PAYLOAD);
          const d = ok(decodeAudioPayload(out));
          expect(d.primary.equals(primary)).toBe(true);
          const fits = 1 + primary.length + red.reduce((s, r) => s + 3 + r.data.length, 0) <= MAX_MEDIA_PAYLOAD;
          if (fits) expect(d.redundant.map((r) => [r.distance, [...r.data]])).toEqual(red.map((r) => [r.distance, [...r.data]]));
        },
      ),
      { numRuns: 500, seed: 7 },
    );
  });

  it('decode never throws, never returns bytes outside the buffer, and what it accepts re-encodes to the same bytes', () => {
    // Random bytes, plus payloads steered towards the valid grammar so both sides are exercised.
    const nearlyValid = fc
      .tuple(
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 40 })), { maxLength: 3 }),
        fc.uint8Array({ maxLength: 120 }),
      )
      .map(([count, entries, tail]) => {
        const head = [count];
        for (const [dist, len] of entries) head.push(dist, len >> 8, len & 0xff);
        return Buffer.concat([Buffer.from(head), Buffer.from(tail)]);
      });
    const anyBytes = fc.uint8Array({ maxLength: MAX_MEDIA_PAYLOAD }).map((a) => Buffer.from(a));
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(nearlyValid, anyBytes), (raw) => {
        // Place the payload inside a larger datagram so a view that strays would show.
        const dgram = Buffer.concat([Buffer.from([0xde, 0xad]), raw, Buffer.from([0xbe, 0xef])]);
        const buf = dgram.subarray(2, 2 + raw.length);
        const r = decodeAudioPayload(buf);
        if ('problem' in r) return;
        accepted++;
        const inside = (x: Buffer) =>
          x.buffer === buf.buffer && x.byteOffset >= buf.byteOffset && x.byteOffset + x.length <= buf.byteOffset + buf.length;
        expect(r.primary.length).toBeGreaterThan(0);
        expect(inside(r.primary)).toBe(true);
        for (const red of r.redundant) {
          expect(red.data.length).toBeGreaterThan(0);
          expect(inside(red.data)).toBe(true);
        }
        expect(encodeAudioPayload(r.primary, r.redundant).equals(buf)).toBe(true);
      }),
      { numRuns: 5000, seed: 11 },
    );
    expect(accepted).toBeGreaterThan(200);
  });
});

describe('RedundancyEncoder', () => {
  it('carries the previous frame at depth 1 and the two previous at depth 2', () => {
    const r1 = new RedundancyEncoder(1);
    expect(r1.payload(10, b(0xa0))).toEqual(b(0, 0xa0));
    expect(r1.payload(11, b(0xa1))).toEqual(b(1, 1, 0, 1, 0xa0, 0xa1));
    const r2 = new RedundancyEncoder(2);
    r2.payload(10, b(0xa0));
    r2.payload(11, b(0xa1));
    expect(r2.payload(12, b(0xa2))).toEqual(b(2, 1, 0, 1, 2, 0, 1, 0xa1, 0xa0, 0xa2));
  });

  it('sends no stale copy after a gap, and counts across the u32 wrap', () => {
    const r = new RedundancyEncoder(1);
    r.payload(100, b(1));
    expect(r.payload(150, b(2))).toEqual(b(0, 2)); // muted in between: frame 100 is not frame 149
    r.payload(0xffffffff, b(3));
    expect(r.payload(0, b(4))).toEqual(b(1, 1, 0, 1, 3, 4));
    r.reset();
    expect(r.payload(1, b(5))).toEqual(b(0, 5));
    expect(() => new RedundancyEncoder(3)).toThrow(RangeError);
  });
});
