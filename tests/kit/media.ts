/**
 * Test kit for the media plane: real JPEG frames made with sharp, collectors of
 * frames received by real clients, and a raw UDP peer that speaks the media header
 * by hand (for registration, bad-token and fuzz tests).
 */
import dgram from 'node:dgram';
import sharp from 'sharp';
import type { Client, MediaFrame } from '../../client/main_client';
import {
  encodeMediaPacket,
  LEVEL_SILENT,
  MediaKind,
  MEDIA_HEADER_BYTES,
  tokenFromHex,
  writeU64,
  type MediaHeader,
} from '../../shared/protocol/media_packet';
import type { MediaGrant } from '../../shared/protocol/messages';

/** A real JPEG of w x h whose content depends on `n` (a gradient pattern with a moving bar). */
export async function testJpeg(n: number, w = 640, h = 480, quality = 80): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  const bar = (n * 17) % w;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const onBar = x >= bar && x < bar + 24;
      raw[i] = onBar ? 255 : (x + n * 7) & 255;
      raw[i + 1] = onBar ? 255 : (y * 2) & 255;
      raw[i + 2] = onBar ? 0 : ((x ^ y) + n * 13) & 255;
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality }).toBuffer();
}

/** Every frame `c` receives from now on. */
export function collectFrames(c: Client): MediaFrame[] {
  const out: MediaFrame[] = [];
  c.on('frame', (f) => out.push(f));
  return out;
}

/** Decodes a JPEG; throws if it is not one. */
export async function jpegSize(data: Buffer): Promise<{ width: number; height: number }> {
  const { info } = await sharp(data).raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height };
}

/** A UDP socket on loopback that speaks the media header by hand. */
export class RawMediaPeer {
  readonly sock = dgram.createSocket('udp4');
  readonly received: { buf: Buffer; port: number }[] = [];

  static async open(): Promise<RawMediaPeer> {
    const p = new RawMediaPeer();
    await new Promise<void>((r) => p.sock.bind(0, '127.0.0.1', () => r()));
    p.sock.on('message', (buf, rinfo) => p.received.push({ buf, port: rinfo.port }));
    return p;
  }

  get port(): number {
    return this.sock.address().port;
  }

  send(buf: Buffer, port: number): Promise<void> {
    return new Promise((resolve, reject) => this.sock.send(buf, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
  }

  close(): Promise<void> {
    return new Promise((r) => this.sock.close(() => r()));
  }
}

export function header(grant: MediaGrant, over: Partial<MediaHeader> = {}): MediaHeader {
  return {
    kind: MediaKind.VIDEO,
    flags: 1,
    layer: 0,
    level: LEVEL_SILENT,
    streamId: grant.stream_id,
    token: tokenFromHex(grant.token),
    seq: 1,
    frameId: 1,
    fragIndex: 0,
    fragCount: 1,
    captureTsUs: 1,
    ...over,
  };
}

/** A HELLO as a client sends it (24-byte payload: time, reserved, cookie). */
export function hello(grant: MediaGrant, cookie?: Buffer, over: Partial<MediaHeader> = {}): Buffer {
  const payload = Buffer.alloc(24);
  writeU64(payload, Date.now() * 1000, 0);
  if (cookie) cookie.copy(payload, 16);
  return encodeMediaPacket(header(grant, { kind: MediaKind.HELLO, ...over }), payload);
}

/** The cookie in a HELLO_ACK. */
export function ackCookie(ack: Buffer): Buffer {
  return Buffer.from(ack.subarray(MEDIA_HEADER_BYTES + 16, MEDIA_HEADER_BYTES + 24));
}
