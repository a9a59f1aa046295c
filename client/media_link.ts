/**
 * The client's side of the media plane: one UDP socket per server media port,
 * registration (HELLO -> cookie -> HELLO with cookie -> REGISTERED) and keepalives,
 * a clock offset to the server (from the hello round trips), sending frames as paced
 * fragments, reassembling what the relay forwards, and a reception report on the
 * feedback port once a second. docs/PROTOCOL.md ("Media plane") is the wire format.
 *
 * Time: capture timestamps on the wire are in the SERVER's time base, so a receiver
 * on another machine can estimate end-to-end delay without synchronised clocks:
 * wire time = local nowUs() + clockOffsetUs, where the offset comes from the hello
 * exchange with the least round-trip time (NTP's clock filter, simplified).
 */
import dgram from 'node:dgram';
import dns from 'node:dns/promises';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { ProtocolError } from '../shared/errors';
import { TypedEmitter } from '../shared/events';
import { Logger } from '../shared/log';
import {
  decodeSenderAggregates,
  encodeControlPacket,
  encodeMediaPacket,
  encodeReceptionRecords,
  fragmentFrame,
  MAX_MEDIA_PAYLOAD,
  MAX_RECORDS_PER_REPORT,
  MediaFlags,
  MediaKind,
  MEDIA_HEADER_BYTES,
  LEVEL_SILENT,
  mediaPacketProblem,
  nowUs,
  OFFSET,
  readU64,
  tokenFromHex,
  writeU64,
  type ReceptionRecord,
  type SenderAggregate,
  type StreamKindName,
  MEDIA_PORT_NAMES,
  STREAM_KINDS,
  STREAM_KIND_NAME,
  HELLO_PAYLOAD_BYTES,
  FEEDBACK_PORT_INDEX,
  PORT_INDEX_OF_KIND,
  type MediaPortName,
} from '../shared/protocol/media_packet';
import type { MediaGrant } from '../shared/protocol/messages';
import { StreamReassembler, type ReassembledFrame } from './reassembler';
import { ipLiteralLookup } from '../shared/udp';

const PORT_INDEX = Object.fromEntries(MEDIA_PORT_NAMES.map((n, i) => [n, i])) as Record<MediaPortName, number>;

export interface MediaLinkOptions {
  /** The server (the control connection's host). */
  host: string;
  grant: MediaGrant;
  /** Send to these ports instead of the grant's (tests put an impairment proxy in between). */
  portsOverride?: Partial<Record<MediaPortName, number>>;
  /** Keepalive (hello) period once registered. */
  keepaliveMs?: number;
  /** Hello retry period while not registered. */
  helloRetryMs?: number;
  /** Registration that does not complete in this time is reported (MEDIA_UNREACHABLE). */
  registrationTimeoutMs?: number;
  reportIntervalMs?: number;
  /**
   * Pacing rate for frame fragments (Mbit/s). A 40 KB frame is spread over a few
   * milliseconds instead of leaving at line rate, so switch and socket buffers are
   * not flooded by every camera's frames at once. 0 turns pacing off.
   */
  pacingMbps?: number;
  /** Bytes a frame may send at once before pacing applies. */
  pacingBurstBytes?: number;
  /** Receive-side: an incomplete frame is dropped this long after its first fragment. */
  frameDeadlineMs?: number;
  logger?: Logger;
}

/** A whole frame received from another participant. */
export interface ReceivedFrame extends ReassembledFrame {
  kindName: StreamKindName;
  /** Capture-to-reassembled delay in ms (clock offsets applied). */
  delayMs: number;
}

/** One audio datagram as it arrived (audio is not reassembled: one packet is one 20 ms frame). */
export interface ReceivedAudioPacket {
  streamId: number;
  seq: number;
  /** The sender's frame index: +1 per 20 ms of its clock, counting on through silence. */
  frameIndex: number;
  /** RFC 6464 level, -dBov (0 loudest, 127 silence). */
  level: number;
  /** The sender's voice activity detector said speech. */
  voice: boolean;
  /** Audio payload (client/audio/audio_payload.ts); a copy, safe to keep. */
  payload: Buffer;
  /** Capture time, server time base (µs). */
  captureTsUs: number;
  /** Arrival, server time base (µs). */
  arrivalUs: number;
}

export type MediaLinkEvents = {
  audio: [ReceivedAudioPacket];
  /** Every port is registered with the relay. */
  registered: [{ clockOffsetUs: number; rttMs: number }];
  frame: [ReceivedFrame];
  /** The relay's aggregate of receivers' reports about our streams (once a second). */
  sender_report: [SenderAggregate[]];
  error: [ProtocolError];
  closed: [];
};

interface PortState {
  sock: dgram.Socket;
  remotePort: number;
  cookie: Buffer | null;
  registered: boolean;
  lastAck: number;
}

interface SendState {
  seq: number;
  frameId: number;
  frames: number;
  packets: number;
  bytes: number;
}

/** Sends queued datagrams at a bounded rate; a new frame flushes what an older one left. */
class Pacer {
  private queue: Buffer[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | null = null;
  private credit: number;
  private last = performance.now();

  constructor(
    private readonly send: (b: Buffer) => void,
    private readonly bytesPerMs: number,
    private readonly burst: number,
  ) {
    this.credit = burst;
  }

  push(packets: Buffer[]): void {
    if (this.bytesPerMs <= 0) {
      for (const p of packets) this.send(p);
      return;
    }
    // What is still queued belongs to an older frame: latency matters more than smoothness.
    this.flushAll();
    this.queue = packets;
    this.head = 0;
    this.drain();
  }

  private refill(): void {
    const now = performance.now();
    this.credit = Math.min(this.burst, this.credit + (now - this.last) * this.bytesPerMs);
    this.last = now;
  }

  private drain(): void {
    this.timer = null;
    this.refill();
    while (this.head < this.queue.length && this.credit > 0) {
      const p = this.queue[this.head++];
      this.credit -= p.length;
      this.send(p);
    }
    if (this.head < this.queue.length) {
      this.timer = setTimeout(() => this.drain(), 1);
    } else {
      this.queue = [];
      this.head = 0;
    }
  }

  flushAll(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (this.head < this.queue.length) this.send(this.queue[this.head++]);
    this.queue = [];
    this.head = 0;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    this.head = 0;
  }
}

export class MediaLink extends TypedEmitter<MediaLinkEvents> {
  readonly streamId: number;
  private readonly token: Buffer;
  private readonly log: Logger;
  private readonly ports: (PortState | null)[] = [null, null, null, null];
  private address = '';
  private readonly reassemblers = new Map<number, StreamReassembler>();
  private readonly sendState = new Map<number, SendState>();
  private readonly pacers = new Map<number, Pacer>();
  private helloTimer: NodeJS.Timeout | null = null;
  private reportTimer: NodeJS.Timeout | null = null;
  private expireTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private registeredAll = false;
  private startedAt = 0;
  private reportedUnreachable = false;
  /** Server time = local time + offset (µs); from the hello round trip with the least RTT. */
  clockOffsetUs = 0;
  private bestRttUs = Infinity;
  private bestRttAt = 0;
  private readonly o: Required<Omit<MediaLinkOptions, 'portsOverride' | 'logger' | 'grant' | 'host'>>;
  /** Datagrams received that were not well-formed or not from the server. */
  readonly rejected = { malformed: 0, foreign: 0, unknown_kind: 0 };
  latestSenderReport: SenderAggregate[] = [];

  constructor(private readonly options: MediaLinkOptions) {
    super();
    this.streamId = options.grant.stream_id;
    this.token = tokenFromHex(options.grant.token);
    this.log = (options.logger ?? Logger.create('warn')).child({ part: 'media' });
    this.o = {
      keepaliveMs: options.keepaliveMs ?? 2000,
      helloRetryMs: options.helloRetryMs ?? 200,
      registrationTimeoutMs: options.registrationTimeoutMs ?? 5000,
      reportIntervalMs: options.reportIntervalMs ?? 1000,
      pacingMbps: options.pacingMbps ?? 100,
      pacingBurstBytes: options.pacingBurstBytes ?? 16 * 1024,
      frameDeadlineMs: options.frameDeadlineMs ?? 500,
    };
    this.onListenerError = (event, error) => this.log.error(`observer of ${event} threw: ${String(error)}`);
  }

  get registered(): boolean {
    return this.registeredAll;
  }

  /**
   * Opens the sockets and registers on every port. Resolves once registered; rejects
   * with MEDIA_UNREACHABLE after registrationTimeoutMs (the link keeps trying).
   */
  async start(): Promise<void> {
    const host = this.options.host;
    this.address = net.isIP(host) ? host : (await dns.lookup(host, { family: 4 })).address;
    const grantPorts = this.options.grant.ports;
    for (const name of MEDIA_PORT_NAMES) {
      const i = PORT_INDEX[name];
      // The relay's address is resolved once above; skip dns.lookup on every send.
      const sock = dgram.createSocket({ type: 'udp4', lookup: ipLiteralLookup });
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(0, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      try {
        sock.setRecvBufferSize(4 * 1024 * 1024);
      } catch {
        /* the kernel's cap applies */
      }
      sock.on('message', (buf, rinfo) => this.onPacket(i, buf, rinfo));
      sock.on('error', (e) => this.log.warn(`UDP ${name} socket error: ${e.message}`));
      this.ports[i] = { sock, remotePort: this.options.portsOverride?.[name] ?? grantPorts[name], cookie: null, registered: false, lastAck: 0 };
      const bytesPerMs = (this.o.pacingMbps * 1e6) / 8 / 1000;
      if (i !== FEEDBACK_PORT_INDEX) this.pacers.set(i, new Pacer((b) => this.sendRaw(i, b), bytesPerMs, this.o.pacingBurstBytes));
    }
    this.startedAt = performance.now();
    this.sendHellos();
    this.scheduleHello();
    this.reportTimer = setInterval(() => this.sendReports(), this.o.reportIntervalMs);
    this.reportTimer.unref();
    this.expireTimer = setInterval(() => {
      const now = this.serverNowUs();
      for (const r of this.reassemblers.values()) r.expire(now);
    }, 100);
    this.expireTimer.unref();
    if (this.registeredAll) return;
    // The hello timer reports MEDIA_UNREACHABLE once (an 'error' event) and keeps trying.
    await new Promise<void>((resolve, reject) => {
      const onReg = () => {
        this.off('error', onErr);
        resolve();
      };
      const onErr = (e: ProtocolError) => {
        this.off('registered', onReg);
        reject(e);
      };
      this.once('registered', onReg);
      this.once('error', onErr);
    });
  }

  private unreachable(): ProtocolError {
    const missing = MEDIA_PORT_NAMES.filter((n) => !this.ports[PORT_INDEX[n]]?.registered)
      .map((n) => this.ports[PORT_INDEX[n]]?.remotePort)
      .join(', ');
    return new ProtocolError('MEDIA_UNREACHABLE', { host: this.address, ports: missing });
  }

  private scheduleHello(): void {
    if (this.closed) return;
    const period = this.registeredAll ? this.o.keepaliveMs : this.o.helloRetryMs;
    this.helloTimer = setTimeout(() => {
      this.sendHellos();
      if (!this.registeredAll && !this.reportedUnreachable && performance.now() - this.startedAt > this.o.registrationTimeoutMs) {
        this.reportedUnreachable = true;
        this.emit('error', this.unreachable());
      }
      this.scheduleHello();
    }, period);
    this.helloTimer.unref();
  }

  private sendHellos(): void {
    for (let i = 0; i < this.ports.length; i++) this.sendHello(i);
  }

  private sendHello(portIndex: number): void {
    const st = this.ports[portIndex];
    if (!st) return;
    const payload = Buffer.alloc(HELLO_PAYLOAD_BYTES);
    writeU64(payload, nowUs(), 0);
    if (st.cookie) st.cookie.copy(payload, 16);
    this.sendRaw(portIndex, encodeControlPacket(MediaKind.HELLO, this.streamId, this.token, payload));
  }

  private sendRaw(portIndex: number, buf: Buffer): void {
    const st = this.ports[portIndex];
    if (!st || this.closed) return;
    st.sock.send(buf, st.remotePort, this.address);
  }

  /** Local time in the server's time base (µs). */
  serverNowUs(): number {
    return nowUs() + this.clockOffsetUs;
  }

  // ------------------------------------------------------------ receiving

  private onPacket(portIndex: number, buf: Buffer, rinfo: dgram.RemoteInfo): void {
    const st = this.ports[portIndex];
    // Only the relay speaks to us; anything else on the LAN is ignored.
    if (!st || rinfo.address !== this.address || rinfo.port !== st.remotePort) {
      this.rejected.foreign++;
      return;
    }
    if (mediaPacketProblem(buf) !== null) {
      this.rejected.malformed++;
      return;
    }
    const kind = buf[OFFSET.kind];
    if (kind === MediaKind.HELLO_ACK) return this.onAck(portIndex, st, buf);
    if (kind === MediaKind.SENDER_REPORT) {
      const records = decodeSenderAggregates(buf.subarray(MEDIA_HEADER_BYTES));
      if (!records) this.rejected.malformed++;
      else {
        this.latestSenderReport = records;
        this.emit('sender_report', records);
      }
      return;
    }
    if (PORT_INDEX_OF_KIND[kind] !== portIndex) {
      this.rejected.unknown_kind++;
      return;
    }
    const streamId = buf.readUInt32BE(OFFSET.streamId);
    const key = streamId * 4 + kind;
    let r = this.reassemblers.get(key);
    if (!r) {
      // Bounded: a room has at most a few hundred streams; forget the least recently created beyond that.
      if (this.reassemblers.size >= 512) this.reassemblers.delete(this.reassemblers.keys().next().value!);
      r = new StreamReassembler(streamId, kind, { deadlineMs: this.o.frameDeadlineMs });
      this.reassemblers.set(key, r);
    }
    const arrival = this.serverNowUs();
    if (kind === MediaKind.AUDIO) {
      // The reassembler keeps the reception statistics (loss, jitter) for the reports;
      // the audio client's jitter buffer wants every packet, reordered ones included.
      r.push(buf, arrival);
      if (buf.readUInt16BE(OFFSET.fragCount) !== 1) return;
      this.emit('audio', {
        streamId,
        seq: buf.readUInt32BE(OFFSET.seq),
        frameIndex: buf.readUInt32BE(OFFSET.frameId),
        level: Math.min(buf[OFFSET.level], LEVEL_SILENT),
        voice: (buf[OFFSET.flags] & MediaFlags.VOICE) !== 0,
        payload: Buffer.from(buf.subarray(MEDIA_HEADER_BYTES)),
        captureTsUs: readU64(buf, OFFSET.captureTs),
        arrivalUs: arrival,
      });
      return;
    }
    const frame = r.push(buf, arrival);
    if (frame) {
      this.emit('frame', { ...frame, kindName: STREAM_KIND_NAME[kind]!, delayMs: (frame.completeUs - frame.captureTsUs) / 1000 });
    }
  }

  private onAck(portIndex: number, st: PortState, buf: Buffer): void {
    if (buf.length < MEDIA_HEADER_BYTES + HELLO_PAYLOAD_BYTES) return;
    const p = buf.subarray(MEDIA_HEADER_BYTES);
    const t0 = readU64(p, 0);
    const serverUs = readU64(p, 8);
    const t1 = nowUs();
    const rtt = t1 - t0;
    if (t0 > 0 && rtt >= 0 && rtt < 5_000_000) {
      // Prefer the least-delayed exchange; let an old best age out so drift is followed.
      if (rtt <= this.bestRttUs || performance.now() - this.bestRttAt > 30_000) {
        this.bestRttUs = rtt;
        this.bestRttAt = performance.now();
        this.clockOffsetUs = serverUs - (t0 + t1) / 2;
      }
    }
    st.cookie = Buffer.from(p.subarray(16, 24));
    st.lastAck = performance.now();
    const wasRegistered = st.registered;
    st.registered = (buf[OFFSET.flags] & MediaFlags.REGISTERED) !== 0;
    if (!st.registered && wasRegistered) this.registeredAll = false;
    if (!st.registered) {
      // The cookie is new to us (first contact, or our address changed): answer on that port at once.
      this.sendHello(portIndex);
      return;
    }
    if (!this.registeredAll && this.ports.every((s) => s?.registered)) {
      this.registeredAll = true;
      this.log.debug('media registered', { offset_us: Math.round(this.clockOffsetUs), rtt_us: Math.round(rtt) });
      this.emit('registered', { clockOffsetUs: this.clockOffsetUs, rttMs: this.bestRttUs / 1000 });
    }
  }

  // ------------------------------------------------------------ sending

  /**
   * Sends one frame (a JPEG for video/screen) as paced fragments. `captureTsUs` is
   * the local capture time (nowUs() when the frame was captured).
   */
  sendFrame(kind: StreamKindName, data: Buffer, captureTsUs: number, o: { layer?: number; level?: number; flags?: number } = {}): number {
    if (this.closed) return 0;
    const k = STREAM_KINDS[kind];
    const s = this.stateFor(k);
    const packets = fragmentFrame(
      data,
      {
        kind: k,
        streamId: this.streamId,
        token: this.token,
        frameId: s.frameId,
        firstSeq: s.seq,
        captureTsUs: captureTsUs + this.clockOffsetUs,
        layer: o.layer,
        level: o.level,
        flags: o.flags,
      },
      Math.min(MAX_MEDIA_PAYLOAD, this.options.grant.max_payload),
    );
    s.frameId = (s.frameId + 1) >>> 0;
    s.seq = (s.seq + packets.length) >>> 0;
    s.frames++;
    s.packets += packets.length;
    for (const p of packets) s.bytes += p.length;
    const port = PORT_INDEX_OF_KIND[k];
    if (kind === 'audio') for (const p of packets) this.sendRaw(port, p);
    else this.pacers.get(port)!.push(packets);
    return packets.length;
  }

  /**
   * Sends one 20 ms audio packet at once (no pacing: 100-odd bytes). Unlike camera
   * frames the frame id is the caller's frame index, which counts on through silence
   * and self-mute so receivers can place the packet in time; `seq` still counts
   * packets, so receivers measure loss.
   */
  sendAudio(payload: Buffer, frameIndex: number, captureTsUs: number, level: number, voice: boolean): void {
    if (this.closed) return;
    const s = this.stateFor(MediaKind.AUDIO);
    const packet = encodeMediaPacket(
      {
        kind: MediaKind.AUDIO,
        flags: MediaFlags.KEYFRAME | (voice ? MediaFlags.VOICE : 0),
        layer: 0,
        level,
        streamId: this.streamId,
        token: this.token,
        seq: s.seq,
        frameId: frameIndex >>> 0,
        fragIndex: 0,
        fragCount: 1,
        captureTsUs: captureTsUs + this.clockOffsetUs,
      },
      payload,
    );
    s.seq = (s.seq + 1) >>> 0;
    s.frames++;
    s.packets++;
    s.bytes += packet.length;
    this.sendRaw(PORT_INDEX_OF_KIND[MediaKind.AUDIO], packet);
  }

  private stateFor(kind: number): SendState {
    let s = this.sendState.get(kind);
    if (!s) {
      s = { seq: randomBytes(4).readUInt32BE(0), frameId: 1, frames: 0, packets: 0, bytes: 0 };
      this.sendState.set(kind, s);
    }
    return s;
  }

  private sendReports(): void {
    if (this.closed) return;
    const now = this.serverNowUs();
    const records: ReceptionRecord[] = [];
    for (const [key, r] of this.reassemblers) {
      const rec = r.takeReport(now);
      if (rec.expected === 0 && rec.received === 0 && rec.framesDelivered === 0) {
        // Silent for a while: the sender stopped or left. Forget it after ~10 s.
        if (now - r.lastArrivalUs > 10_000_000) this.reassemblers.delete(key);
        continue;
      }
      records.push(rec);
    }
    for (let i = 0; i < records.length; i += MAX_RECORDS_PER_REPORT) {
      const payload = encodeReceptionRecords(records.slice(i, i + MAX_RECORDS_PER_REPORT));
      this.sendRaw(
        FEEDBACK_PORT_INDEX,
        encodeControlPacket(MediaKind.RECEIVER_REPORT, this.streamId, this.token, payload, { captureTsUs: now }),
      );
    }
  }

  // ------------------------------------------------------------ observers

  stats(): {
    stream_id: number;
    registered: boolean;
    clock_offset_ms: number;
    sent: Partial<Record<StreamKindName, { frames: number; packets: number; bytes: number }>>;
    received: { stream_id: number; kind: StreamKindName; stats: ReturnType<StreamReassembler['stats']> }[];
    rejected: MediaLink['rejected'];
  } {
    const now = this.serverNowUs();
    const sent: Partial<Record<StreamKindName, { frames: number; packets: number; bytes: number }>> = {};
    for (const [k, s] of this.sendState) {
      sent[STREAM_KIND_NAME[k]!] = { frames: s.frames, packets: s.packets, bytes: s.bytes };
    }
    return {
      stream_id: this.streamId,
      registered: this.registeredAll,
      clock_offset_ms: this.clockOffsetUs / 1000,
      sent,
      received: [...this.reassemblers].map(([key, r]) => {
        const kind = key % 4;
        return {
          stream_id: Math.floor(key / 4),
          kind: STREAM_KIND_NAME[kind]!,
          stats: r.stats(now),
        };
      }),
      rejected: { ...this.rejected },
    };
  }

  /** Local port of each socket (tests and diagnostics). */
  localPorts(): Record<MediaPortName, number> {
    const p = (i: number) => this.ports[i]?.sock.address().port ?? 0;
    return { video: p(0), audio: p(1), screen: p(2), feedback: p(3) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of [this.helloTimer, this.reportTimer, this.expireTimer]) if (t) clearTimeout(t);
    for (const p of this.pacers.values()) p.stop();
    await Promise.all(
      this.ports.map((st) => (st ? new Promise<void>((r) => st.sock.close(() => r())) : Promise.resolve())),
    );
    this.reassemblers.clear();
    this.emit('closed');
  }
}
