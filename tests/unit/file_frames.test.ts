/**
 * File-server framing (shared/protocol/file_frames.ts).
 *
 * The encoder is checked against bytes written out by hand (8-byte prefix, msgpack map
 * spelled byte by byte), the decoder is fed every split point of two frames and random
 * chunkings (fast-check), and each way a frame can be bad is refused with
 * FILE_FRAME_INVALID, once, after which the decoder yields nothing more.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeFileFrame,
  encodeFileFrameHead,
  FILE_FRAME_PREFIX_BYTES,
  FileFrameDecoder,
  MAX_CHUNK_SIZE,
  MAX_FILE_HEADER_BYTES,
  errorFrame,
  type DecodedFileFrame,
} from '../../shared/protocol/file_frames';
import { ProtocolError } from '../../shared/errors';
import { cut, hex } from '../kit/bytes';

const ascii = (s: string): number[] => [...Buffer.from(s, 'ascii')];
const md5 = (b: Uint8Array | string): string => createHash('md5').update(b).digest('hex');

/** {type: "ACK", offset: 5} as msgpack, by hand: fixmap(2), fixstr keys and values, fixint 5. */
const ACK_HEADER = [0x82, 0xa4, ...ascii('type'), 0xa3, ...ascii('ACK'), 0xa6, ...ascii('offset'), 0x05];
const ACK_FRAME = [0, 0, 0, ACK_HEADER.length, 0, 0, 0, 0, ...ACK_HEADER];

/** {type: "FILE_UPLOAD_CHUNK", offset: 0, md5: md5("abc")} + "abc"; the 32-char md5 needs str8 (0xd9 0x20). */
const ABC_MD5 = '900150983cd24fb0d6963f7d28e17f72';
const CHUNK_HEADER = [
  0x83,
  0xa4, ...ascii('type'), 0xb1, ...ascii('FILE_UPLOAD_CHUNK'),
  0xa6, ...ascii('offset'), 0x00,
  0xa3, ...ascii('md5'), 0xd9, 0x20, ...ascii(ABC_MD5),
];
const CHUNK_FRAME = [0, 0, 0, CHUNK_HEADER.length, 0, 0, 0, 3, ...CHUNK_HEADER, ...ascii('abc')];

function feed(dec: FileFrameDecoder, chunks: Uint8Array[]): DecodedFileFrame[] {
  return chunks.flatMap((c) => dec.push(c));
}


/** Frames as comparable values: header and body as hex, or the error's code and reason. */
function outcomes(frames: DecodedFileFrame[]): unknown[] {
  return frames.map((f) => (f.ok ? { header: f.frame.header, body: hex(f.frame.body) } : { code: f.error.code, reason: f.error.details.reason }));
}

function prefix(headerLength: number, bodyLength: number): Buffer {
  const b = Buffer.alloc(FILE_FRAME_PREFIX_BYTES);
  b.writeUInt32BE(headerLength, 0);
  b.writeUInt32BE(bodyLength, 4);
  return b;
}

describe('encoder: bytes built by hand', () => {
  it('ACK {offset: 5} is 00 00 00 12 00 00 00 00 then the msgpack map', () => {
    expect(md5('abc')).toBe(ABC_MD5);
    expect(hex(encodeFileFrame({ type: 'ACK', offset: 5 }))).toBe(hex(Buffer.from(ACK_FRAME)));
    expect(hex(encodeFileFrame({ type: 'ACK', offset: 5 }).subarray(0, 8))).toBe('00 00 00 12 00 00 00 00');
  });

  it('a chunk frame carries its body length in bytes 4-7 and the raw body after the header', () => {
    const frame = encodeFileFrame({ type: 'FILE_UPLOAD_CHUNK', offset: 0, md5: ABC_MD5 }, Buffer.from('abc'));
    expect(hex(frame)).toBe(hex(Buffer.from(CHUNK_FRAME)));
  });

  it('encodeFileFrameHead is the frame without its body (the body is written after it, uncopied)', () => {
    const head = encodeFileFrameHead({ type: 'FILE_UPLOAD_CHUNK', offset: 0, md5: ABC_MD5 }, 3);
    expect(hex(Buffer.concat([head, Buffer.from('abc')]))).toBe(hex(Buffer.from(CHUNK_FRAME)));
  });

  it('refuses a body on a frame type without one, and a chunk without a body', () => {
    expect(() => encodeFileFrame({ type: 'ACK', offset: 0 }, Buffer.from('x'))).toThrow(/carries no body/);
    expect(() => encodeFileFrame({ type: 'FILE_DOWNLOAD_CHUNK', offset: 0, md5: ABC_MD5 })).toThrow(/needs a body/);
    expect(() => encodeFileFrameHead({ type: 'FILE_DOWNLOAD_CHUNK', offset: 0, md5: ABC_MD5 }, MAX_CHUNK_SIZE + 1)).toThrow(/larger/);
  });

  it('errorFrame carries the code, message, hint and details of a ProtocolError', () => {
    const f = errorFrame(new ProtocolError('TICKET_INVALID', { reason: 'expired' }));
    expect(f).toEqual({
      type: 'ERROR',
      code: 'TICKET_INVALID',
      message: 'File server ticket refused: expired',
      hint: expect.stringMatching(/new ticket/),
      details: { reason: 'expired' },
    });
  });
});

describe('decoder', () => {
  const TWO = Buffer.from([...ACK_FRAME, ...CHUNK_FRAME]);
  const EXPECTED = [
    { header: { type: 'ACK', offset: 5 }, body: '' },
    { header: { type: 'FILE_UPLOAD_CHUNK', offset: 0, md5: ABC_MD5 }, body: '61 62 63' },
  ];

  it('decodes two frames back to back in one push', () => {
    expect(outcomes(new FileFrameDecoder().push(TWO))).toEqual(EXPECTED);
  });

  it('gives the same frames for every single split point', () => {
    for (let i = 0; i <= TWO.length; i++) {
      const dec = new FileFrameDecoder();
      expect(outcomes(feed(dec, cut(TWO, [i]))), `split at ${i}`).toEqual(EXPECTED);
      expect(dec.bufferedBytes).toBe(0);
      expect(dec.partialBytes).toBe(0);
    }
  });

  it('gives the same frames fed one byte at a time, and reports a partial frame', () => {
    const dec = new FileFrameDecoder();
    const out: DecodedFileFrame[] = [];
    for (let i = 0; i < TWO.length - 1; i++) out.push(...dec.push(TWO.subarray(i, i + 1)));
    expect(dec.partialBytes).toBe(CHUNK_FRAME.length - 1);
    out.push(...dec.push(TWO.subarray(TWO.length - 1)));
    expect(outcomes(out)).toEqual(EXPECTED);
  });

  it('property: any chunking of random valid frames decodes to the same frames', () => {
    const frameArb = fc.oneof(
      fc.record({ offset: fc.nat(2 ** 40) }).map((r) => ({ header: { type: 'ACK' as const, offset: r.offset }, body: Buffer.alloc(0) })),
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => ({
        header: { type: 'FILE_DOWNLOAD_CHUNK' as const, offset: 7, md5: md5(b) },
        body: Buffer.from(b),
      })),
    );
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
        const bytes = Buffer.concat(frames.map((f) => encodeFileFrame(f.header, f.body)));
        const offsets = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const got = feed(new FileFrameDecoder(), cut(bytes, offsets));
        expect(got.map((g) => (g.ok ? { header: g.frame.header, body: hex(g.frame.body) } : g.error.message))).toEqual(
          frames.map((f) => ({ header: f.header, body: hex(f.body) })),
        );
      }),
    );
  });

  it('property: random garbage never throws, and after the first error nothing more comes out', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), (chunks) => {
        const dec = new FileFrameDecoder();
        const got = feed(dec, chunks);
        const firstBad = got.findIndex((g) => !g.ok);
        if (firstBad >= 0) {
          expect(firstBad).toBe(got.length - 1);
          expect(dec.push(Buffer.from(ACK_FRAME))).toEqual([]);
        }
      }),
    );
  });

  it('keeps a 64-bit offset (above 2^32) as a number', () => {
    const [f] = new FileFrameDecoder().push(encodeFileFrame({ type: 'ACK', offset: 2 ** 33 + 1 }));
    expect(f.ok && f.frame.header).toEqual({ type: 'ACK', offset: 2 ** 33 + 1 });
  });
});

describe('bad frames: FILE_FRAME_INVALID, once', () => {
  const bad = (bytes: Buffer): string => {
    const dec = new FileFrameDecoder();
    const out = dec.push(bytes);
    expect(out).toHaveLength(1);
    const [f] = out;
    if (f.ok) throw new Error('expected an error');
    expect(f.error.code).toBe('FILE_FRAME_INVALID');
    // Nothing more after the failure, even a good frame.
    expect(dec.push(Buffer.from(ACK_FRAME))).toEqual([]);
    return String(f.error.details.reason);
  };

  it('a header length of 0 or over 16 KiB', () => {
    expect(bad(prefix(0, 0))).toMatch(/header length 0/);
    expect(bad(prefix(MAX_FILE_HEADER_BYTES + 1, 0))).toMatch(/header length 16385/);
  });

  it('a body over the limit, judged on the prefix alone (nothing is buffered for it)', () => {
    expect(bad(prefix(10, MAX_CHUNK_SIZE + 1))).toMatch(/body length 4194305/);
    const small = new FileFrameDecoder({ maxBodyBytes: 1024 });
    const [f] = small.push(prefix(10, 1025));
    expect(!f.ok && f.error.details.reason).toMatch(/larger than 1024/);
  });

  it('a body the type does not carry is refused once the header is in, without waiting for (or buffering) the body', () => {
    const dec = new FileFrameDecoder();
    const out = dec.push(Buffer.concat([prefix(ACK_HEADER.length, MAX_CHUNK_SIZE), Buffer.from(ACK_HEADER)]));
    expect(out.map((f) => !f.ok && f.error.details.reason)).toEqual(['ACK carries no body']);
    expect(dec.bufferedBytes).toBe(0);
  });

  it('maxBodyBytes can be lowered between frames (the server: 0 before OPEN, the chunk size during an upload)', () => {
    const dec = new FileFrameDecoder();
    expect(dec.push(Buffer.from(CHUNK_FRAME))[0].ok).toBe(true);
    dec.maxBodyBytes = 2;
    const [f] = dec.push(Buffer.from(CHUNK_FRAME));
    expect(!f.ok && f.error.details.reason).toBe('body length 3 is larger than 2');
  });

  it('a header that is not msgpack: cut short, or with bytes after the map', () => {
    expect(bad(Buffer.concat([prefix(2, 0), Buffer.from([0x82, 0xa4])]))).toMatch(/not msgpack/);
    expect(bad(Buffer.concat([prefix(ACK_HEADER.length + 1, 0), Buffer.from(ACK_HEADER), Buffer.from([0x00])]))).toMatch(/not msgpack/);
    // 0xc1 is the one byte msgpack never uses.
    expect(bad(Buffer.concat([prefix(1, 0), Buffer.from([0xc1])]))).toMatch(/not a map/);
  });

  it('a header that is not a map, or has an unknown type', () => {
    expect(bad(Buffer.concat([prefix(1, 0), Buffer.from([0x05])]))).toMatch(/not a map/);
    const h = Buffer.from([0x81, 0xa4, ...ascii('type'), 0xa3, ...ascii('BAD')]);
    expect(bad(Buffer.concat([prefix(h.length, 0), h]))).toMatch(/unknown frame type "BAD"/);
  });

  it('a body on ACK, and a chunk without a body', () => {
    expect(bad(Buffer.concat([prefix(ACK_HEADER.length, 1), Buffer.from(ACK_HEADER), Buffer.from('x')]))).toMatch(/ACK carries no body/);
    expect(bad(Buffer.concat([prefix(CHUNK_HEADER.length, 0), Buffer.from(CHUNK_HEADER)]))).toMatch(/needs a body/);
  });

  it('a field of the wrong shape (an MD5 in capitals, a negative offset)', () => {
    const upper = Buffer.from(CHUNK_FRAME);
    const at = upper.indexOf(Buffer.from(ABC_MD5));
    upper.write(ABC_MD5.toUpperCase(), at, 'ascii');
    expect(bad(upper)).toMatch(/FILE_UPLOAD_CHUNK: md5/);
    // offset -1 as msgpack negative fixint 0xff
    const neg = Buffer.from(ACK_FRAME);
    neg[neg.length - 1] = 0xff;
    expect(bad(neg)).toMatch(/ACK: offset/);
  });
});
