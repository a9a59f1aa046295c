import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  decodeMediaHeader,
  decodeReceptionRecords,
  decodeSenderAggregates,
  encodeMediaPacket,
  encodeReceptionRecords,
  encodeSenderAggregates,
  fragmentFrame,
  MAX_DATAGRAM_BYTES,
  MAX_FRAGMENTS,
  MAX_MEDIA_PAYLOAD,
  MAX_RECORDS_PER_REPORT,
  MEDIA_HEADER_BYTES,
  MediaKind,
  mediaPacketProblem,
  mediaPayload,
  seqAfter,
  tokenFromHex,
} from '../../shared/protocol/media_packet';

const token = Buffer.from('0102030405060708', 'hex');

describe('media header', () => {
  it('encodes exactly the bytes drawn in docs/PROTOCOL.md', () => {
    const buf = encodeMediaPacket(
      {
        kind: MediaKind.SCREEN,
        flags: 0x01,
        layer: 2,
        level: 127,
        streamId: 0xa1b2c3d4,
        token,
        seq: 0xfffffffe,
        frameId: 258,
        fragIndex: 3,
        fragCount: 9,
        captureTsUs: 0x0001_0203_0405_0607,
      },
      Buffer.from('hi'),
    );
    // Built by hand, field by field, big-endian.
    const expected = Buffer.from([
      0x4c, 0x56, 0x01, 0x03, // magic "LV", version 1, kind 3 (screen)
      0x01, 0x02, 0x7f, 0x00, // flags, layer, level, reserved
      0xa1, 0xb2, 0xc3, 0xd4, // stream_id
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // token
      0xff, 0xff, 0xff, 0xfe, // seq
      0x00, 0x00, 0x01, 0x02, // frame_id
      0x00, 0x03, 0x00, 0x09, // frag_index, frag_count
      0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // capture_ts_us
      0x68, 0x69, // payload "hi"
    ]);
    expect(buf).toEqual(expected);
    expect(MEDIA_HEADER_BYTES).toBe(40);
    expect(mediaPacketProblem(buf)).toBeNull();
    expect(decodeMediaHeader(buf)).toMatchObject({ kind: 3, streamId: 0xa1b2c3d4, seq: 0xfffffffe, frameId: 258, fragIndex: 3, fragCount: 9, captureTsUs: 0x0001_0203_0405_0607 });
    expect(mediaPayload(buf).toString()).toBe('hi');
  });

  it('a datagram never exceeds 1240 bytes, so IPv4 + UDP stays under a 1500-byte MTU', () => {
    expect(MAX_DATAGRAM_BYTES + 20 + 8).toBeLessThan(1500);
    expect(() => encodeMediaPacket({ ...decodeMediaHeader(encodeMediaPacket(header())), token }, Buffer.alloc(MAX_MEDIA_PAYLOAD + 1))).toThrow(RangeError);
  });

  it('names what is wrong with a bad datagram', () => {
    const good = encodeMediaPacket(header(), Buffer.alloc(10));
    const mut = (f: (b: Buffer) => void) => {
      const b = Buffer.from(good);
      f(b);
      return b;
    };
    expect(mediaPacketProblem(good.subarray(0, 39))).toBe('too_short');
    expect(mediaPacketProblem(Buffer.alloc(MAX_DATAGRAM_BYTES + 1))).toBe('too_long');
    expect(mediaPacketProblem(mut((b) => (b[0] = 0)))).toBe('bad_magic');
    expect(mediaPacketProblem(mut((b) => (b[2] = 2)))).toBe('bad_version');
    expect(mediaPacketProblem(mut((b) => (b[3] = 77)))).toBe('bad_kind');
    expect(mediaPacketProblem(mut((b) => b.writeUInt16BE(0, 30)))).toBe('bad_fragment');
    expect(mediaPacketProblem(mut((b) => b.writeUInt16BE(MAX_FRAGMENTS + 1, 30)))).toBe('bad_fragment');
    expect(mediaPacketProblem(mut((b) => b.writeUInt16BE(1, 28)))).toBe('bad_fragment'); // index 1 of 1
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1400 }), (bytes) => {
        const b = Buffer.from(bytes);
        if (b.length >= 4) b.writeUInt16BE(0x4c56, 0);
        if (b.length >= 3) b[2] = 1;
        const problem = mediaPacketProblem(b);
        if (problem === null) decodeMediaHeader(b);
      }),
    );
  });

  it('fragments a frame into near-equal pieces that reassemble in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 60_000 }), fc.integer({ min: 100, max: MAX_MEDIA_PAYLOAD }), (size, max) => {
        const frame = Buffer.alloc(size, 7);
        const parts = fragmentFrame(frame, { kind: MediaKind.VIDEO, streamId: 1, token, frameId: 5, firstSeq: 0xffffffff, captureTsUs: 9 }, max);
        expect(parts.length).toBe(Math.max(1, Math.ceil(size / max)));
        const sizes = parts.map((p) => p.length - MEDIA_HEADER_BYTES);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(max);
        parts.forEach((p, i) => {
          const h = decodeMediaHeader(p);
          expect(h).toMatchObject({ fragIndex: i, fragCount: parts.length, frameId: 5, seq: (0xffffffff + i) >>> 0 });
          expect(mediaPacketProblem(p)).toBeNull();
        });
        expect(Buffer.concat(parts.map(mediaPayload)).equals(frame)).toBe(true);
      }),
      { numRuns: 50 },
    );
    expect(() => fragmentFrame(Buffer.alloc(MAX_FRAGMENTS * MAX_MEDIA_PAYLOAD + 1), { kind: 1, streamId: 1, token, frameId: 1, firstSeq: 0, captureTsUs: 0 })).toThrow(RangeError);
  });

  it('serial-number comparison wraps (RFC 1982)', () => {
    expect(seqAfter(1, 0xffffffff)).toBe(true);
    expect(seqAfter(0xffffffff, 1)).toBe(false);
    expect(seqAfter(5, 5)).toBe(false);
  });

  it('tokens are 16 hex digits', () => {
    expect(tokenFromHex('0102030405060708')).toEqual(token);
    expect(() => tokenFromHex('0102')).toThrow(RangeError);
    expect(() => tokenFromHex('zz02030405060708')).toThrow(RangeError);
  });
});

describe('report records', () => {
  it('a reception record is 32 bytes as drawn, and round-trips', () => {
    const rec = { streamId: 0x01020304, kind: 1, layer: 0, lossBp: 250, expected: 100, received: 97, framesDelivered: 15, framesDropped: 1, jitterUs: 3000, delayUs: 12000 };
    const buf = encodeReceptionRecords([rec]);
    expect(buf.subarray(0, 4)).toEqual(Buffer.from([1, 0, 0, 0]));
    expect(buf.subarray(4, 12)).toEqual(Buffer.from([1, 2, 3, 4, 1, 0, 0x00, 0xfa]));
    expect(buf.length).toBe(4 + 32);
    expect(decodeReceptionRecords(buf)).toEqual([rec]);
    expect(decodeReceptionRecords(buf.subarray(0, 20))).toBeNull();
    const bad = Buffer.from(buf);
    bad.writeUInt16BE(10001, 10);
    expect(decodeReceptionRecords(bad)).toBeNull();
    expect(() => encodeReceptionRecords(Array(MAX_RECORDS_PER_REPORT + 1).fill(rec))).toThrow(RangeError);
    expect(4 + MAX_RECORDS_PER_REPORT * 32).toBeLessThanOrEqual(MAX_MEDIA_PAYLOAD);
  });

  it('a sender aggregate is 24 bytes and round-trips', () => {
    const a = { kind: 3, layer: 0, receivers: 4, lossAvgBp: 10, lossMaxBp: 40, jitterMaxUs: 5, delayMaxUs: 6, framesDelivered: 7, framesDropped: 8 };
    const buf = encodeSenderAggregates([a, a]);
    expect(buf.length).toBe(4 + 48);
    expect(buf.subarray(4, 8)).toEqual(Buffer.from([3, 0, 0, 4]));
    expect(decodeSenderAggregates(buf)).toEqual([a, a]);
    expect(decodeSenderAggregates(buf.subarray(0, 30))).toBeNull();
  });
});

function header() {
  return { kind: MediaKind.VIDEO, flags: 1, layer: 0, level: 127, streamId: 1, token, seq: 0, frameId: 1, fragIndex: 0, fragCount: 1, captureTsUs: 0 };
}
