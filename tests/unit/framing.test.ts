/**
 * Control-connection framing (shared/protocol/framing.ts).
 *
 * Encoders are checked against bytes written out by hand, so encoder and decoder cannot
 * agree on the same bug; the decoder is fed every split point of one and of two frames
 * (pg-protocol's split-buffer suite) and random chunkings with garbage (fast-check).
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  FrameDecoder,
  FRAME_HEADER_BYTES,
  encodeFrame,
  encodeFrameText,
  jsonDepthExceeds,
  type DecodedFrame,
} from '../../shared/protocol/framing';
import { ProtocolError, type ErrorCode } from '../../shared/errors';
import { LIMITS } from '../../shared/constants';
import { cut, hex } from '../kit/bytes';

// ------------------------------------------------------------------ helpers

/** A frame built by hand: 4-byte big-endian length written byte by byte, then the body. */
function handFrame(body: number[] | Uint8Array): Buffer {
  const n = body.length;
  return Buffer.from([(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff, ...body]);
}


/** Feed the chunks in order and collect every frame, checking push never throws. */
function feed(dec: FrameDecoder, chunks: Uint8Array[]): DecodedFrame[] {
  const out: DecodedFrame[] = [];
  for (const c of chunks) out.push(...dec.push(c));
  return out;
}


/** Frames reduced to something `toEqual` can compare: the value, or the error code. */
type Outcome = { ok: true; value: unknown } | { ok: false; code: ErrorCode; fatal: boolean };
function outcomes(frames: DecodedFrame[]): Outcome[] {
  return frames.map((f) =>
    f.ok ? { ok: true, value: f.value } : { ok: false, code: f.error.code, fatal: f.fatal },
  );
}

/** What JSON can carry of a value (e.g. -0 becomes 0). */
const viaJson = (v: unknown): unknown => JSON.parse(JSON.stringify(v));

/** Nesting depth of objects/arrays of a parsed value, computed on the value, not the bytes. */
function valueDepth(v: unknown): number {
  if (Array.isArray(v)) return 1 + v.reduce((m: number, x) => Math.max(m, valueDepth(x)), 0);
  if (v !== null && typeof v === 'object') {
    return 1 + Object.values(v).reduce((m: number, x) => Math.max(m, valueDepth(x)), 0);
  }
  return 0;
}

/** UTF-8 validity by an independent route: a lossy round trip changes invalid input. */
function isValidUtf8(b: Uint8Array): boolean {
  return Buffer.from(Buffer.from(b).toString('utf8'), 'utf8').equals(Buffer.from(b));
}

/** `depth` nested arrays: nestedArrays(2) === '[[]]'. */
const nestedArrays = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);
/** `depth` nested objects: nestedObjects(2) === '{"a":{}}'. */
const nestedObjects = (depth: number): string => '{"a":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1);

// Frames used by the split-point tests, all written out by hand.
// {"a":1}
const A_BYTES = [0x00, 0x00, 0x00, 0x07, 0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d];
// "é€😀": 6 UTF-16 code units but 11 UTF-8 bytes; a cut can fall inside a character.
const UNICODE_BODY = [0x22, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0x22];
const UNICODE_BYTES = [0x00, 0x00, 0x00, 0x0b, ...UNICODE_BODY];
// {"t":"CHAT_MESSAGE","m":["x",{"k":null}]}
const CHAT_JSON = '{"t":"CHAT_MESSAGE","m":["x",{"k":null}]}';

// ------------------------------------------------------------------ encoder

describe('encodeFrame / encodeFrameText: bytes built by hand', () => {
  it('encodes {"a":1} as 00 00 00 07 7b 22 61 22 3a 31 7d', () => {
    const out = encodeFrame({ a: 1 });
    expect(hex(out)).toBe('00 00 00 07 7b 22 61 22 3a 31 7d');
    expect(hex(out)).toBe(hex(Buffer.from(A_BYTES)));
  });

  it('counts UTF-8 bytes, not characters, in the length ("é€😀")', () => {
    const s = 'é€😀';
    expect(JSON.stringify(s).length).toBe(6); // UTF-16 units, to show they differ
    const out = encodeFrame(s);
    expect(hex(out)).toBe('00 00 00 0b 22 c3 a9 e2 82 ac f0 9f 98 80 22');
    expect(hex(out)).toBe(hex(Buffer.from(UNICODE_BYTES)));
  });

  it('encodes the empty object as 00 00 00 02 7b 7d', () => {
    expect(hex(encodeFrame({}))).toBe('00 00 00 02 7b 7d');
  });

  it('encodes the empty array, null and a bare number', () => {
    expect(hex(encodeFrame([]))).toBe('00 00 00 02 5b 5d');
    expect(hex(encodeFrame(null))).toBe('00 00 00 04 6e 75 6c 6c');
    expect(hex(encodeFrame(42))).toBe('00 00 00 02 34 32');
  });

  it('encodeFrameText frames the text as given, without re-serializing', () => {
    // Whitespace kept as is: JSON.stringify would have dropped it.
    expect(hex(encodeFrameText('[1, 2]'))).toBe('00 00 00 06 5b 31 2c 20 32 5d');
    expect(hex(encodeFrameText('"ü"'))).toBe('00 00 00 04 22 c3 bc 22');
    expect(hex(encodeFrameText(''))).toBe('00 00 00 00');
  });

  it('writes the length big-endian in all four bytes', () => {
    // 0x00011170 = 70000 bytes: a length that needs three non-zero bytes.
    const body = '"' + 'x'.repeat(70000 - 2) + '"';
    const out = encodeFrameText(body);
    expect(out.length).toBe(4 + 70000);
    expect(hex(out.subarray(0, 5))).toBe('00 01 11 70 22');
    // 0x00010203 = 66051 bytes: every header byte distinct, so a swapped pair shows.
    const body2 = '"' + '€'.repeat(22016) + 'x' + '"'; // 3 bytes per euro sign
    expect(Buffer.byteLength(body2)).toBe(0x010203);
    expect(hex(encodeFrameText(body2).subarray(0, 4))).toBe('00 01 02 03');
  });

  it('encodes the original envelope field for field', () => {
    const env = { type: 'HEARTBEAT', data: {}, sender: null, recipient: null, room_id: null, timestamp: 1.5, message_id: 'm' };
    const json =
      '{"type":"HEARTBEAT","data":{},"sender":null,"recipient":null,"room_id":null,"timestamp":1.5,"message_id":"m"}';
    expect(encodeFrame(env).equals(handFrame([...Buffer.from(json, 'utf8')]))).toBe(true);
  });

  it('the header size is 4 bytes', () => {
    expect(FRAME_HEADER_BYTES).toBe(4);
  });
});

// ------------------------------------------------------------------ split points

describe('FrameDecoder: every split point', () => {
  const cases: Array<{ name: string; bytes: Buffer; value: unknown }> = [
    { name: '{"a":1}', bytes: Buffer.from(A_BYTES), value: { a: 1 } },
    { name: '"é€😀"', bytes: Buffer.from(UNICODE_BYTES), value: 'é€😀' },
    { name: 'nested chat-like object', bytes: handFrame([...Buffer.from(CHAT_JSON, 'utf8')]), value: JSON.parse(CHAT_JSON) },
  ];

  for (const c of cases) {
    it(`one frame ${c.name}, cut at every offset 0..len, yields it once`, () => {
      for (let i = 0; i <= c.bytes.length; i++) {
        const dec = new FrameDecoder();
        const first = dec.push(c.bytes.subarray(0, i));
        if (i < c.bytes.length) expect(first, `cut at ${i}`).toEqual([]);
        const all = [...first, ...dec.push(c.bytes.subarray(i))];
        expect(outcomes(all), `cut at ${i}`).toEqual([{ ok: true, value: c.value }]);
        expect(all[0].size).toBe(c.bytes.length - 4);
        expect(dec.bufferedBytes).toBe(0);
        expect(() => dec.end()).not.toThrow();
      }
    });

    it(`one frame ${c.name}, one byte at a time`, () => {
      const dec = new FrameDecoder();
      const out: DecodedFrame[] = [];
      for (let i = 0; i < c.bytes.length; i++) {
        const got = dec.push(c.bytes.subarray(i, i + 1));
        if (i < c.bytes.length - 1) expect(got, `after byte ${i}`).toEqual([]);
        out.push(...got);
      }
      expect(outcomes(out)).toEqual([{ ok: true, value: c.value }]);
    });

    it(`one frame ${c.name}, as plain Uint8Array views (not Buffers) at every offset`, () => {
      // A view with a non-zero byteOffset into a larger ArrayBuffer.
      const backing = new Uint8Array(c.bytes.length + 16);
      backing.set(c.bytes, 8);
      const view = backing.subarray(8, 8 + c.bytes.length);
      for (let i = 0; i <= view.length; i++) {
        const dec = new FrameDecoder();
        const all = feed(dec, [view.subarray(0, i), view.subarray(i)]);
        expect(outcomes(all), `cut at ${i}`).toEqual([{ ok: true, value: c.value }]);
      }
    });
  }

  const A = Buffer.from(A_BYTES);
  const U = Buffer.from(UNICODE_BYTES);
  const two = Buffer.concat([A, U]);
  const expectedTwo = [
    { ok: true, value: { a: 1 } },
    { ok: true, value: 'é€😀' },
  ];

  it('two back-to-back frames, cut at every single offset, yield both in order', () => {
    for (let i = 0; i <= two.length; i++) {
      const dec = new FrameDecoder();
      const first = dec.push(two.subarray(0, i));
      // Nothing is emitted before a frame is complete, and the first one as soon as it is.
      expect(first.length, `cut at ${i}`).toBe(i >= A.length ? (i === two.length ? 2 : 1) : 0);
      const all = [...first, ...dec.push(two.subarray(i))];
      expect(outcomes(all), `cut at ${i}`).toEqual(expectedTwo);
      expect(dec.bufferedBytes).toBe(0);
    }
  });

  it('two back-to-back frames, cut at every pair of offsets, yield both in order', () => {
    for (let i = 0; i <= two.length; i++) {
      for (let j = i; j <= two.length; j++) {
        const dec = new FrameDecoder();
        const all = feed(dec, cut(two, [i, j]));
        expect(outcomes(all), `cuts at ${i},${j}`).toEqual(expectedTwo);
        expect(() => dec.end()).not.toThrow();
      }
    }
  });

  it('two back-to-back frames, one byte at a time', () => {
    const dec = new FrameDecoder();
    const out: DecodedFrame[] = [];
    for (let i = 0; i < two.length; i++) out.push(...dec.push(two.subarray(i, i + 1)));
    expect(outcomes(out)).toEqual(expectedTwo);
  });

  it('a bad frame between two good ones, cut at every pair of offsets', () => {
    const bad = handFrame([0xc3, 0x28]);
    const three = Buffer.concat([A, bad, U]);
    for (let i = 0; i <= three.length; i++) {
      for (let j = i; j <= three.length; j++) {
        const all = feed(new FrameDecoder(), cut(three, [i, j]));
        expect(outcomes(all), `cuts at ${i},${j}`).toEqual([
          expectedTwo[0],
          { ok: false, code: 'FRAME_INVALID_UTF8', fatal: false },
          expectedTwo[1],
        ]);
      }
    }
  });

  it('an empty chunk is a no-op at any point', () => {
    const dec = new FrameDecoder();
    expect(dec.push(new Uint8Array(0))).toEqual([]);
    expect(dec.push(A.subarray(0, 2))).toEqual([]);
    expect(dec.push(Buffer.alloc(0))).toEqual([]);
    expect(outcomes(dec.push(A.subarray(2)))).toEqual([expectedTwo[0]]);
    expect(dec.push(new Uint8Array(0))).toEqual([]);
  });
});

// ------------------------------------------------------------------ properties

/** Random cut offsets into a buffer of length `len`. */
const cutsFor = (len: number, raw: number[]): number[] =>
  [...new Set(raw.map((r) => (len === 0 ? 0 : r % (len + 1))))].sort((a, b) => a - b);

describe('FrameDecoder: properties (fast-check)', () => {
  it('random JSON values, encoded, concatenated and chunked at random, decode to the same values', () => {
    fc.assert(
      fc.property(
        fc.array(fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (values, rawCuts) => {
          const stream = Buffer.concat(values.map((v) => encodeFrame(v)));
          const dec = new FrameDecoder();
          const frames = feed(dec, cut(stream, cutsFor(stream.length, rawCuts)));
          expect(outcomes(frames)).toEqual(values.map((v) => ({ ok: true, value: viaJson(v) })));
          expect(frames.map((f) => f.size)).toEqual(values.map((v) => Buffer.byteLength(JSON.stringify(v), 'utf8')));
          expect(dec.bufferedBytes).toBe(0);
          dec.end();
        },
      ),
      { numRuns: 300 },
    );
  });

  type Item = { body: Uint8Array; expect: (f: DecodedFrame) => void };

  const expectOk = (value: unknown) => (f: DecodedFrame) => {
    expect(f.ok).toBe(true);
    if (f.ok) expect(f.value).toEqual(value);
  };
  const expectBad = (...codes: ErrorCode[]) => (f: DecodedFrame) => {
    expect(f.ok).toBe(false);
    if (!f.ok) {
      expect(codes).toContain(f.error.code);
      expect(f.fatal).toBe(false);
      expect(f.error).toBeInstanceOf(ProtocolError);
    }
  };

  const maxDepth = LIMITS.maxJsonDepth;

  /** A good frame (or, if it happens to nest too deep, a refused one). */
  const validItem: fc.Arbitrary<Item> = fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }).map((v) => ({
    body: Buffer.from(JSON.stringify(v), 'utf8'),
    expect: valueDepth(v) > maxDepth ? expectBad('FRAME_TOO_DEEP') : expectOk(viaJson(v)),
  }));

  /** Bytes with a sequence that is never valid UTF-8 wherever it lands. */
  const invalidUtf8Item: fc.Arbitrary<Item> = fc
    .tuple(
      fc.uint8Array({ maxLength: 20 }),
      fc.constantFrom([0xff], [0xfe], [0xc0, 0x80], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe0, 0x80, 0xaf]),
      fc.uint8Array({ maxLength: 20 }),
    )
    .map(([a, bad, b]) => ({ body: Buffer.concat([a, Buffer.from(bad), b]), expect: expectBad('FRAME_INVALID_UTF8') }));

  /** Valid UTF-8 that is never JSON: nothing in JSON starts with '}' or '@' (after whitespace). */
  const invalidJsonItem: fc.Arbitrary<Item> = fc
    .oneof(
      fc.tuple(fc.constantFrom('}', ' }', '@'), fc.string({ unit: 'binary', maxLength: 20 })).map(([p, s]) => p + s),
      fc.constantFrom('undefined', "'x'", '{"a":1,}', '[1,]', 'NaN', '{"a"}', '"unterminated', ' '),
    )
    .map((text) => ({ body: Buffer.from(text, 'utf8'), expect: expectBad('FRAME_INVALID_JSON') }));

  /** Valid JSON nested deeper than the limit. */
  const tooDeepItem: fc.Arbitrary<Item> = fc
    .tuple(fc.integer({ min: maxDepth + 1, max: maxDepth + 40 }), fc.boolean())
    .map(([d, arrays]) => ({
      body: Buffer.from(arrays ? nestedArrays(d) : nestedObjects(d), 'utf8'),
      expect: expectBad('FRAME_TOO_DEEP'),
    }));

  /**
   * Any bytes at all; the expectation comes from independent oracles (Buffer round trip for
   * UTF-8, JSON.parse plus a depth walk on the value). Includes the zero-length body.
   */
  const randomBytesItem: fc.Arbitrary<Item> = fc.uint8Array({ maxLength: 40 }).map((body) => {
    if (!isValidUtf8(body)) return { body, expect: expectBad('FRAME_INVALID_UTF8') };
    const text = Buffer.from(body).toString('utf8');
    let parsed: { v: unknown } | null = null;
    try {
      parsed = { v: JSON.parse(text) };
    } catch {
      /* not JSON */
    }
    if (parsed === null) {
      const opens = [...body].filter((c) => c === 0x5b || c === 0x7b).length;
      return { body, expect: opens > maxDepth ? expectBad('FRAME_INVALID_JSON', 'FRAME_TOO_DEEP') : expectBad('FRAME_INVALID_JSON') };
    }
    return { body, expect: valueDepth(parsed.v) > maxDepth ? expectBad('FRAME_TOO_DEEP') : expectOk(parsed.v) };
  });

  it('garbage frames interleaved with good ones: good ones intact and in order, bad ones non-fatal; push never throws', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            { arbitrary: validItem, weight: 3 },
            { arbitrary: invalidUtf8Item, weight: 1 },
            { arbitrary: invalidJsonItem, weight: 1 },
            { arbitrary: tooDeepItem, weight: 1 },
            { arbitrary: randomBytesItem, weight: 2 },
          ),
          { maxLength: 25 },
        ),
        fc.array(fc.nat(), { maxLength: 40 }),
        (items, rawCuts) => {
          // Length prefixes written by hand, so the stream does not depend on encodeFrame.
          const stream = Buffer.concat(items.map((it) => handFrame(it.body)));
          const dec = new FrameDecoder();
          const chunks = cut(stream, cutsFor(stream.length, rawCuts));
          let frames: DecodedFrame[] = [];
          expect(() => {
            frames = feed(dec, chunks);
          }).not.toThrow();
          expect(frames.length).toBe(items.length);
          frames.forEach((f, i) => {
            items[i].expect(f);
            expect(f.size).toBe(items[i].body.length);
          });
          expect(dec.bufferedBytes).toBe(0);
          expect(() => dec.end()).not.toThrow();
        },
      ),
      { numRuns: 300 },
    );
  });

  it('jsonDepthExceeds agrees with the depth of the parsed value for random JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), fc.integer({ min: 0, max: 8 }), (v, limit) => {
        const bytes = Buffer.from(JSON.stringify(v), 'utf8');
        expect(jsonDepthExceeds(bytes, limit)).toBe(valueDepth(v) > limit);
      }),
      { numRuns: 500 },
    );
  });
});

// ------------------------------------------------------------------ limits

describe('FrameDecoder: limits', () => {
  it('uses 1 MiB and depth 32 by default', () => {
    const dec = new FrameDecoder();
    expect(dec.maxFrameBytes).toBe(1024 * 1024);
    expect(dec.maxDepth).toBe(32);
  });

  it('a declared length of 0xFFFFFFFF (4 GiB) is one fatal FRAME_TOO_LARGE, read from the header alone', () => {
    const dec = new FrameDecoder();
    const out = dec.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    expect(out).toHaveLength(1);
    const f = out[0];
    expect(f.ok).toBe(false);
    if (f.ok) return;
    expect(f.fatal).toBe(true);
    expect(f.error.code).toBe('FRAME_TOO_LARGE');
    expect(f.error.fatal).toBe(true);
    expect(f.size).toBe(0xffffffff);
    expect(f.error.details).toEqual({ size: 0xffffffff, limit: 1024 * 1024 });
    expect(f.error.message).toBe('Frame of 4294967295 bytes is larger than the limit of 1048576 bytes');
    // Nothing more comes out, whatever follows, and nothing is kept.
    expect(dec.push(Buffer.from(A_BYTES))).toEqual([]);
    expect(dec.push(Buffer.alloc(100_000, 0x20))).toEqual([]);
    expect(dec.bufferedBytes).toBe(0);
    expect(() => dec.end()).not.toThrow();
  });

  it('the fatal error stops the decoder even inside the same chunk as good frames', () => {
    const dec = new FrameDecoder({ maxFrameBytes: 10 });
    const stream = Buffer.concat([
      Buffer.from(A_BYTES),
      handFrame(new Uint8Array(11).fill(0x20)),
      Buffer.from(A_BYTES),
    ]);
    const out = dec.push(stream);
    expect(outcomes(out)).toEqual([
      { ok: true, value: { a: 1 } },
      { ok: false, code: 'FRAME_TOO_LARGE', fatal: true },
    ]);
    expect(dec.push(Buffer.from(A_BYTES))).toEqual([]);
  });

  it('one byte over the default limit is refused, exactly at the limit is accepted', () => {
    const limit = 1024 * 1024;
    const over = new FrameDecoder();
    const head = Buffer.from([0x00, 0x10, 0x00, 0x01]); // 1 MiB + 1
    expect(outcomes(over.push(head))).toEqual([{ ok: false, code: 'FRAME_TOO_LARGE', fatal: true }]);

    const body = '"' + 'a'.repeat(limit - 2) + '"';
    const frame = Buffer.concat([Buffer.from([0x00, 0x10, 0x00, 0x00]), Buffer.from(body, 'latin1')]);
    expect(frame.length).toBe(4 + limit);
    const dec = new FrameDecoder();
    const out = feed(dec, [frame.subarray(0, 3), frame.subarray(3, 500_000), frame.subarray(500_000)]);
    expect(out).toHaveLength(1);
    expect(out[0].ok).toBe(true);
    expect(out[0].size).toBe(limit);
    if (out[0].ok) expect((out[0].value as string).length).toBe(limit - 2);
  });

  it('a custom maxFrameBytes: limit accepted, limit + 1 refused', () => {
    const body10 = [...Buffer.from('"12345678"')];
    expect(body10).toHaveLength(10);
    expect(outcomes(new FrameDecoder({ maxFrameBytes: 10 }).push(handFrame(body10)))).toEqual([
      { ok: true, value: '12345678' },
    ]);
    const body11 = [...Buffer.from('"123456789"')];
    const out = new FrameDecoder({ maxFrameBytes: 10 }).push(handFrame(body11));
    expect(outcomes(out)).toEqual([{ ok: false, code: 'FRAME_TOO_LARGE', fatal: true }]);
    if (!out[0].ok) expect(out[0].error.details).toEqual({ size: 11, limit: 10 });
  });

  it('depth exactly at maxDepth (32) is accepted, 33 refused with FRAME_TOO_DEEP', () => {
    for (const make of [nestedArrays, nestedObjects]) {
      const ok = new FrameDecoder().push(encodeFrameText(make(32)));
      expect(outcomes(ok)).toEqual([{ ok: true, value: JSON.parse(make(32)) }]);
      const bad = new FrameDecoder().push(encodeFrameText(make(33)));
      expect(outcomes(bad)).toEqual([{ ok: false, code: 'FRAME_TOO_DEEP', fatal: false }]);
      if (!bad[0].ok) expect(bad[0].error.details).toEqual({ limit: 32 });
    }
  });

  it('a custom maxDepth: depth counts objects and arrays mixed; siblings do not add up', () => {
    const dec = new FrameDecoder({ maxDepth: 3 });
    const stream = Buffer.concat([
      encodeFrameText('{"a":[{"b":1}]}'), // 3
      encodeFrameText('{"a":[{"b":[]}]}'), // 4
      encodeFrameText('[[[]],[[]],[[]],{"x":{"y":1}}]'), // 3, wide
      encodeFrameText('1'), // 0
    ]);
    expect(outcomes(dec.push(stream))).toEqual([
      { ok: true, value: { a: [{ b: 1 }] } },
      { ok: false, code: 'FRAME_TOO_DEEP', fatal: false },
      { ok: true, value: [[[]], [[]], [[]], { x: { y: 1 } }] },
      { ok: true, value: 1 },
    ]);
  });

  it('brackets inside strings do not count, including after escaped quotes and backslashes', () => {
    const dec = new FrameDecoder({ maxDepth: 2 });
    // Each line is the JSON text on the wire (String.raw keeps the backslashes as bytes).
    const within = [
      String.raw`["[[[[[{{{{{"]`,
      String.raw`{"[[[[[":"{{{{{"}`,
      String.raw`["a\"[[[[[\"{{{{"]`, // escaped quotes inside the string
      String.raw`["\\",["]]]]\\\"[[[["]]`, // string ending in an escaped backslash, then depth 2
      String.raw`["é[€[😀[[[", {"k":"\u005b\u005b\u005b"}]`,
    ];
    const beyond = [
      String.raw`["\\",[[]]]`, // the "\\" string closes; [[ ]] after it is depth 3
      String.raw`["\"",[[]]]`,
    ];
    const stream = Buffer.concat([...within, ...beyond].map((t) => encodeFrameText(t)));
    expect(outcomes(dec.push(stream))).toEqual([
      ...within.map((t) => ({ ok: true, value: JSON.parse(t) })),
      ...beyond.map(() => ({ ok: false, code: 'FRAME_TOO_DEEP', fatal: false })),
    ]);
  });

  it('jsonDepthExceeds: direct checks', () => {
    const b = (s: string) => Buffer.from(s, 'utf8');
    expect(jsonDepthExceeds(b('[]'), 1)).toBe(false);
    expect(jsonDepthExceeds(b('[[]]'), 1)).toBe(true);
    expect(jsonDepthExceeds(b('"[[[["'), 0)).toBe(false);
    expect(jsonDepthExceeds(b(String.raw`"\"[["`), 0)).toBe(false);
    expect(jsonDepthExceeds(b(String.raw`["\\",[]]`), 1)).toBe(true);
    expect(jsonDepthExceeds(b(nestedArrays(32)), 32)).toBe(false);
    expect(jsonDepthExceeds(b(nestedArrays(33)), 32)).toBe(true);
  });

  it.each([
    ['0xC3 0x28 (lead byte without continuation)', [0xc3, 0x28]],
    ['lone 0xFF', [0xff]],
    ['lone continuation byte 0x80', [0x80]],
    ['overlong "/" 0xC0 0xAF', [0xc0, 0xaf]],
    ['overlong "/" 0xE0 0x80 0xAF', [0xe0, 0x80, 0xaf]],
    ['overlong NUL 0xC0 0x80', [0xc0, 0x80]],
    ['UTF-16 surrogate 0xED 0xA0 0x80', [0xed, 0xa0, 0x80]],
    ['above U+10FFFF 0xF4 0x90 0x80 0x80', [0xf4, 0x90, 0x80, 0x80]],
    ['sequence cut short 0xE2 0x82', [0xe2, 0x82]],
  ])('invalid UTF-8 inside a JSON string, %s, is FRAME_INVALID_UTF8 and the next frame still decodes', (_, bad) => {
    const body = [0x22, ...bad, 0x22]; // "<bad>"
    const dec = new FrameDecoder();
    const out = dec.push(Buffer.concat([handFrame(body), Buffer.from(A_BYTES)]));
    expect(outcomes(out)).toEqual([
      { ok: false, code: 'FRAME_INVALID_UTF8', fatal: false },
      { ok: true, value: { a: 1 } },
    ]);
    expect(out[0].size).toBe(body.length);
    if (!out[0].ok) expect(out[0].error.message).toBe('Frame body is not valid UTF-8');
  });

  it('invalid JSON is FRAME_INVALID_JSON with the parser reason, and the stream stays in sync', () => {
    const dec = new FrameDecoder();
    const out = dec.push(Buffer.concat([handFrame([...Buffer.from('{"a":')]), Buffer.from(A_BYTES)]));
    expect(outcomes(out)).toEqual([
      { ok: false, code: 'FRAME_INVALID_JSON', fatal: false },
      { ok: true, value: { a: 1 } },
    ]);
    if (!out[0].ok) {
      expect(typeof out[0].error.details.reason).toBe('string');
      expect(out[0].error.message.startsWith('Frame body is not valid JSON: ')).toBe(true);
    }
  });

  it('a zero-length body in the middle of a chunk is FRAME_INVALID_JSON', () => {
    const dec = new FrameDecoder();
    const out = dec.push(Buffer.concat([handFrame([]), Buffer.from(A_BYTES)]));
    expect(outcomes(out)).toEqual([
      { ok: false, code: 'FRAME_INVALID_JSON', fatal: false },
      { ok: true, value: { a: 1 } },
    ]);
    expect(out[0].size).toBe(0);
  });

  it('a zero-length body at the end of a chunk is FRAME_INVALID_JSON (push must not throw)', () => {
    // 00 00 00 00 alone, and after a complete frame: the body is complete once the
    // header is, even though no byte of it follows in the chunk.
    for (const chunk of [handFrame([]), Buffer.concat([Buffer.from(A_BYTES), handFrame([])])]) {
      const dec = new FrameDecoder();
      let out: DecodedFrame[] = [];
      expect(() => {
        out = dec.push(chunk);
      }, hex(chunk)).not.toThrow();
      expect(outcomes(out).at(-1)).toEqual({ ok: false, code: 'FRAME_INVALID_JSON', fatal: false });
      expect(dec.bufferedBytes).toBe(0);
      expect(() => dec.end()).not.toThrow();
    }
  });

  it('a zero-length body, cut at every offset, is FRAME_INVALID_JSON between two good frames', () => {
    const stream = Buffer.concat([Buffer.from(A_BYTES), handFrame([]), Buffer.from(UNICODE_BYTES)]);
    for (let i = 0; i <= stream.length; i++) {
      const dec = new FrameDecoder();
      let out: DecodedFrame[] = [];
      expect(() => {
        out = feed(dec, [stream.subarray(0, i), stream.subarray(i)]);
      }, `cut at ${i}`).not.toThrow();
      expect(outcomes(out), `cut at ${i}`).toEqual([
        { ok: true, value: { a: 1 } },
        { ok: false, code: 'FRAME_INVALID_JSON', fatal: false },
        { ok: true, value: 'é€😀' },
      ]);
    }
  });

  it('a truncated stream: end() throws FRAME_TRUNCATED, mid-header and mid-body', () => {
    const frame = Buffer.from(A_BYTES);
    for (let i = 1; i < frame.length; i++) {
      const dec = new FrameDecoder();
      expect(dec.push(frame.subarray(0, i))).toEqual([]);
      let thrown: unknown;
      try {
        dec.end();
      } catch (e) {
        thrown = e;
      }
      expect(thrown, `cut at ${i}`).toBeInstanceOf(ProtocolError);
      const err = thrown as ProtocolError;
      expect(err.code).toBe('FRAME_TRUNCATED');
      const need = i < 4 ? 4 : frame.length;
      expect(err.details).toEqual({ have: i, need });
      expect(err.message).toBe(`Connection closed in the middle of a frame (${i} of ${need} bytes)`);
    }
  });

  it('end() after complete frames, or with nothing fed, does not throw', () => {
    const dec = new FrameDecoder();
    expect(() => dec.end()).not.toThrow();
    dec.push(Buffer.concat([Buffer.from(A_BYTES), Buffer.from(UNICODE_BYTES)]));
    expect(() => dec.end()).not.toThrow();
  });

  it('10,000 frames in one chunk all decode, in order', () => {
    const n = 10_000;
    const stream = Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame({ i, s: 'é'.repeat(i % 7) })));
    const dec = new FrameDecoder();
    const out = dec.push(stream);
    expect(out).toHaveLength(n);
    for (let i = 0; i < n; i++) {
      const f = out[i];
      if (!f.ok || (f.value as { i: number }).i !== i) {
        expect.fail(`frame ${i}: ${JSON.stringify(outcomes([f]))}`);
      }
    }
    expect(out[n - 1]).toEqual({ ok: true, value: { i: n - 1, s: 'é'.repeat((n - 1) % 7) }, size: expect.any(Number) });
    expect(dec.bufferedBytes).toBe(0);
  });
});

// ------------------------------------------------------------------ buffering

describe('FrameDecoder: holds no more than the partial frame', () => {
  it('bufferedBytes never exceeds the bytes fed of the frame not yet complete', () => {
    const stream = Buffer.concat([Buffer.from(A_BYTES), Buffer.from(UNICODE_BYTES), Buffer.from(A_BYTES)]);
    const ends = [A_BYTES.length, A_BYTES.length + UNICODE_BYTES.length, stream.length];
    for (let i = 0; i <= stream.length; i++) {
      const dec = new FrameDecoder();
      dec.push(stream.subarray(0, i));
      const frameStart = [0, ...ends].filter((e) => e <= i).at(-1)!;
      const partial = i - frameStart;
      expect(dec.bufferedBytes, `after ${i} bytes`).toBeLessThanOrEqual(partial);
      if (partial === 0) expect(dec.bufferedBytes).toBe(0);
    }
  });

  it('after a large chunk of complete frames plus a few bytes, only those few bytes are held', () => {
    const many = Buffer.concat(Array.from({ length: 1000 }, (_, i) => encodeFrame({ i })));
    const dec = new FrameDecoder();
    const out = dec.push(Buffer.concat([many, Buffer.from(A_BYTES).subarray(0, 7)]));
    expect(out).toHaveLength(1000);
    expect(dec.bufferedBytes).toBeLessThanOrEqual(7);
    expect(outcomes(dec.push(Buffer.from(A_BYTES).subarray(7)))).toEqual([{ ok: true, value: { a: 1 } }]);
    expect(dec.bufferedBytes).toBe(0);
  });

  it('a declared length under the limit is not buffered ahead of its bytes', () => {
    // Header says 1 MiB; only 10 bytes arrive. The decoder holds those 10, no allocation of N.
    const dec = new FrameDecoder();
    dec.push(Buffer.from([0x00, 0x10, 0x00, 0x00]));
    expect(dec.bufferedBytes).toBe(0);
    dec.push(Buffer.alloc(10, 0x20));
    expect(dec.bufferedBytes).toBe(10);
  });

  it('random chunking: bufferedBytes stays within the current partial frame', () => {
    fc.assert(
      fc.property(
        fc.array(fc.jsonValue({ maxDepth: 3 }), { minLength: 1, maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (values, rawCuts) => {
          const frames = values.map((v) => encodeFrame(v));
          const stream = Buffer.concat(frames);
          const starts: number[] = [];
          let off = 0;
          for (const f of frames) {
            starts.push(off);
            off += f.length;
          }
          const dec = new FrameDecoder();
          let fed = 0;
          for (const c of cut(stream, cutsFor(stream.length, rawCuts))) {
            dec.push(c);
            fed += c.length;
            const start = [...starts, stream.length].filter((s) => s <= fed).at(-1)!;
            expect(dec.bufferedBytes).toBeLessThanOrEqual(fed - start);
          }
          expect(dec.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });
});
