/**
 * The media relay (an SFU): four UDP sockets (camera video, audio, screen, feedback),
 * registration of each participant's address per port, and forwarding of every
 * media datagram to the other registered members of the sender's room. It never
 * decodes a payload: it reads a few header fields at fixed offsets, checks them,
 * zeroes the sender's secret token and sends the same buffer to each receiver.
 *
 * It knows nothing of chat or roles (CONVENTIONS.md 8): the control plane tells it
 * who is in which room and what each participant may send (`allow`), and it obeys
 * at once, so a host mute or a kick takes effect on the next packet.
 *
 * Registration (docs/PROTOCOL.md, "Media plane"): a HELLO with a valid token gets a
 * HELLO_ACK carrying a cookie bound to the source address; only a HELLO that echoes
 * that cookie registers the address. A forged source address never sees its cookie,
 * so nobody can point the relay's traffic at a third party, and an ACK is never
 * larger than the HELLO that caused it, so nothing is amplified.
 */
import dgram from 'node:dgram';
import { createHmac, randomBytes } from 'node:crypto';
import { TypedEmitter } from '../shared/events';
import { ipLiteralLookup } from '../shared/udp';
import { Logger } from '../shared/log';
import {
  decodeReceptionRecords,
  encodeControlPacket,
  encodeSenderAggregates,
  MediaFlags,
  MediaKind,
  MEDIA_HEADER_BYTES,
  mediaPacketProblem,
  nowUs,
  OFFSET,
  readU64,
  writeU64,
  type ReceptionRecord,
  type SenderAggregate,
  type StreamKindName,
  MEDIA_PORT_NAMES,
  STREAM_KINDS,
  STREAM_KIND_NAME,
  HELLO_PAYLOAD_BYTES,
  PORT_INDEX_OF_KIND,
  FEEDBACK_PORT_INDEX,
  type MediaPortName,
  type MediaPorts,
} from '../shared/protocol/media_packet';
import { ActiveSpeakerDetector, SPEAKER_TICK_MS } from './active_speaker';

export { MEDIA_PORT_NAMES, type MediaPortName, type MediaPorts };

const EMPTY_TOKEN = Buffer.alloc(8);

export type DropReason =
  | 'malformed'
  | 'unknown_stream'
  | 'bad_token'
  | 'unregistered'
  | 'wrong_port'
  | 'not_allowed'
  | 'bad_report';

export interface MediaServerOptions {
  host: string;
  ports: MediaPorts;
  logger?: Logger;
  /** A registered address that sends nothing (no keepalive) for this long is forgotten. */
  registrationTtlMs?: number;
  /** How often senders get their aggregated receiver reports. */
  reportIntervalMs?: number;
  /** A receiver's queued bytes on one socket beyond which its packets are dropped (counted). */
  maxSendQueueBytes?: number;
  /** Socket buffer sizes asked of the kernel (it may cap them at net.core.[rw]mem_max). */
  socketBufferBytes?: number;
}

/** What a participant may send: the control plane's decision (camera on, not host-muted, sharing). */
export interface MediaAllow {
  video: boolean;
  audio: boolean;
  screen: boolean;
}

export interface MediaParticipantInit {
  userId: string;
  username?: string;
  roomId: string;
  token: Buffer;
  allow: MediaAllow;
}

interface Registration {
  address: string;
  port: number;
  lastSeen: number;
}

interface StreamCounters {
  packets: number;
  bytes: number;
  /** Copies sent to receivers. */
  forwarded: number;
  forwardedBytes: number;
  /** Dropped because the sender may not send this kind now (camera off, host mute). */
  dropped: number;
}

interface ReceiverCounters {
  packets: number;
  bytes: number;
  /** Not sent because this receiver's socket queue was full. */
  dropped: number;
  /** Not sent because the receiver paused the stream. */
  paused: number;
}

const newStream = (): StreamCounters => ({ packets: 0, bytes: 0, forwarded: 0, forwardedBytes: 0, dropped: 0 });
const newReceiver = (): ReceiverCounters => ({ packets: 0, bytes: 0, dropped: 0, paused: 0 });

class Participant {
  readonly tokenHi: number;
  readonly tokenLo: number;
  readonly reg: (Registration | null)[] = [null, null, null, null];
  /** Keys `${senderUserId}:${kind}` of streams this receiver paused. */
  readonly paused = new Set<string>();
  /** Per kind sent (index: kind). */
  readonly sent: StreamCounters[] = [newStream(), newStream(), newStream(), newStream()];
  /** Per port received from the relay. */
  readonly received: ReceiverCounters[] = [newReceiver(), newReceiver(), newReceiver(), newReceiver()];
  /** Latest reception report about each of this sender's streams, per receiver: key `${kind}:${receiverUserId}`. */
  readonly reportsAbout = new Map<string, { record: ReceptionRecord; at: number; receiver: string }>();
  allowed: boolean[];

  constructor(
    readonly userId: string,
    readonly username: string,
    readonly roomId: string,
    readonly streamId: number,
    readonly token: Buffer,
    allow: MediaAllow,
  ) {
    this.tokenHi = token.readUInt32BE(0);
    this.tokenLo = token.readUInt32BE(4);
    this.allowed = Participant.allowArray(allow);
  }

  static allowArray(a: MediaAllow): boolean[] {
    const out = [false, false, false, false];
    out[MediaKind.VIDEO] = a.video;
    out[MediaKind.AUDIO] = a.audio;
    out[MediaKind.SCREEN] = a.screen;
    return out;
  }
}

export interface MediaStats {
  ports: MediaPorts;
  totals: {
    packets_in: number;
    bytes_in: number;
    packets_out: number;
    bytes_out: number;
    dropped: Record<DropReason, number>;
    /** Copies not sent because a receiver's queue was full. */
    receiver_drops: number;
  };
  participants: ParticipantStats[];
}

export interface ParticipantStats {
  user_id: string;
  username: string;
  room_id: string;
  stream_id: number;
  registered: Record<MediaPortName, string | null>;
  allowed: MediaAllow;
  /** Streams this participant sends, by kind. */
  sending: Record<StreamKindName, StreamCounters>;
  /** What the relay sent this participant, by port. */
  receiving: Record<StreamKindName, ReceiverCounters>;
  /** Receivers' latest reports about this participant's streams, aggregated. */
  reports: Partial<Record<StreamKindName, SenderAggregate>>;
  paused: string[];
}

export type MediaServerEvents = {
  listening: [MediaPorts];
  /** The room's dominant speaker changed (server/active_speaker.ts); user_id null: nobody. */
  active_speaker: [{ room_id: string; user_id: string | null; level: number }];
  registered: [{ user_id: string; port: MediaPortName; address: string }];
  closed: [];
};

export class MediaServer extends TypedEmitter<MediaServerEvents> {
  private readonly log: Logger;
  private readonly sockets: dgram.Socket[] = [];
  private readonly boundPorts: number[] = [0, 0, 0, 0];
  private readonly streams = new Map<number, Participant>();
  private readonly byUser = new Map<string, Participant>();
  /** Room id -> members, as an array: the forwarding loop iterates it per packet. */
  private readonly rooms = new Map<string, Participant[]>();
  private readonly cookieKey = randomBytes(32);
  private nextStreamId = (randomBytes(4).readUInt32BE(0) % 0x7fffffff) + 1;
  private timer: NodeJS.Timeout | null = null;
  private speakerTimer: NodeJS.Timeout | null = null;
  /** Room id -> who speaks there; created by the first audio packet of the room. */
  private readonly speakers = new Map<string, ActiveSpeakerDetector>();
  private closing: Promise<void> | null = null;
  private readonly ttlMs: number;
  private readonly reportIntervalMs: number;
  private readonly maxSendQueueBytes: number;
  private readonly totals = {
    packets_in: 0,
    bytes_in: 0,
    packets_out: 0,
    bytes_out: 0,
    receiver_drops: 0,
    dropped: { malformed: 0, unknown_stream: 0, bad_token: 0, unregistered: 0, wrong_port: 0, not_allowed: 0, bad_report: 0 } as Record<
      DropReason,
      number
    >,
  };

  constructor(private readonly options: MediaServerOptions) {
    super();
    this.log = (options.logger ?? Logger.create('info')).child({ part: 'media' });
    this.ttlMs = options.registrationTtlMs ?? 30_000;
    this.reportIntervalMs = options.reportIntervalMs ?? 1000;
    this.maxSendQueueBytes = options.maxSendQueueBytes ?? 2 * 1024 * 1024;
    this.onListenerError = (event, error) => this.log.error(`observer of ${event} threw: ${String(error)}`);
  }

  get ports(): MediaPorts {
    const [video, audio, screen, feedback] = this.boundPorts;
    return { video, audio, screen, feedback };
  }

  get listening(): boolean {
    return this.sockets.length === 4;
  }

  async start(): Promise<MediaPorts> {
    if (this.closing) throw new Error('media server is closed');
    if (this.sockets.length) return this.ports;
    const wanted = MEDIA_PORT_NAMES.map((n) => this.options.ports[n]);
    try {
      for (let i = 0; i < 4; i++) {
        const sock = dgram.createSocket({ type: 'udp4', reuseAddr: false, lookup: ipLiteralLookup });
        this.sockets.push(sock);
        await new Promise<void>((resolve, reject) => {
          sock.once('error', (e: NodeJS.ErrnoException & { flag?: string; port?: number }) => {
            // Say which of the four ports failed, so the operator knows which flag to change.
            e.flag = `--${MEDIA_PORT_NAMES[i]}-port`;
            e.port = wanted[i];
            reject(e);
          });
          sock.bind(wanted[i], this.options.host, () => {
            sock.removeAllListeners('error');
            resolve();
          });
        });
        this.tuneBuffers(sock);
        this.boundPorts[i] = sock.address().port;
        const portIndex = i;
        sock.on('message', (buf, rinfo) => this.onPacket(portIndex, buf, rinfo));
        sock.on('error', (e) => this.log.warn(`UDP ${MEDIA_PORT_NAMES[portIndex]} socket error: ${e.message}`));
      }
    } catch (e) {
      for (const s of this.sockets.splice(0)) s.close();
      throw e;
    }
    this.timer = setInterval(() => this.tick(), this.reportIntervalMs);
    this.timer.unref();
    this.speakerTimer = setInterval(() => this.speakerTick(), SPEAKER_TICK_MS);
    this.speakerTimer.unref();
    this.log.info(`media relay listening on ${this.options.host} UDP ${this.describePorts()}`);
    this.emit('listening', this.ports);
    return this.ports;
  }

  describePorts(): string {
    return MEDIA_PORT_NAMES.map((n, i) => `${this.boundPorts[i] || this.options.ports[n]} ${n}`).join(', ');
  }

  private tuneBuffers(sock: dgram.Socket): void {
    const size = this.options.socketBufferBytes ?? 4 * 1024 * 1024;
    try {
      sock.setRecvBufferSize(size);
      sock.setSendBufferSize(size);
    } catch (e) {
      this.log.debug(`could not size socket buffers: ${(e as Error).message}`);
    }
  }

  /**
   * Lets go of the four sockets (the monitor's "stop the listeners"); start() binds them
   * again. Participants stay registered with the control plane's grants; the control
   * plane removes them as their connections close.
   */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.speakerTimer) clearInterval(this.speakerTimer);
    this.timer = null;
    this.speakerTimer = null;
    await Promise.all(this.sockets.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.boundPorts.fill(0);
  }

  /** Where the next start() binds. */
  setAddress(host: string, ports: MediaPorts): void {
    this.options.host = host;
    this.options.ports = { ...ports };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.stop();
      this.streams.clear();
      this.byUser.clear();
      this.rooms.clear();
      this.speakers.clear();
      this.emit('closed');
    })();
    return this.closing;
  }

  // ------------------------------------------------------------ membership (from the control plane)

  /** Adds a participant to a room's relay; returns the stream id for its media header. */
  addParticipant(init: MediaParticipantInit): number {
    this.removeParticipant(init.userId);
    let id = this.nextStreamId;
    while (id === 0 || this.streams.has(id)) id = (id + 1) >>> 0;
    this.nextStreamId = (id + 1) >>> 0;
    const p = new Participant(init.userId, init.username ?? init.userId, init.roomId, id, Buffer.from(init.token), init.allow);
    this.streams.set(id, p);
    this.byUser.set(init.userId, p);
    const members = this.rooms.get(init.roomId);
    if (members) members.push(p);
    else this.rooms.set(init.roomId, [p]);
    return id;
  }

  removeParticipant(userId: string): void {
    const p = this.byUser.get(userId);
    if (!p) return;
    this.byUser.delete(userId);
    this.streams.delete(p.streamId);
    const members = this.rooms.get(p.roomId);
    if (members) {
      const rest = members.filter((m) => m !== p);
      if (rest.length) this.rooms.set(p.roomId, rest);
      else this.rooms.delete(p.roomId);
      for (const m of rest) for (const k of [...m.reportsAbout.keys()]) if (k.endsWith(`:${userId}`)) m.reportsAbout.delete(k);
    }
    const speakers = this.speakers.get(p.roomId);
    if (speakers) {
      const change = speakers.remove(userId);
      if (!members || members.length <= 1) this.speakers.delete(p.roomId);
      else if (change) this.emit('active_speaker', { room_id: p.roomId, user_id: change.userId, level: change.level });
    }
  }

  /** The room's current dominant speaker (null: nobody has spoken yet). */
  activeSpeaker(roomId: string): { user_id: string; level: number } | null {
    const d = this.speakers.get(roomId);
    const id = d?.speaker;
    return d && id ? { user_id: id, level: d.levelOf(id) } : null;
  }

  private speakerTick(): void {
    for (const [roomId, d] of this.speakers) {
      const change = d.tick();
      if (change) this.emit('active_speaker', { room_id: roomId, user_id: change.userId, level: change.level });
    }
  }

  /** What the participant may send; takes effect on the next packet. */
  setAllowed(userId: string, allow: MediaAllow): void {
    const p = this.byUser.get(userId);
    if (p) p.allowed = Participant.allowArray(allow);
  }

  /** A receiver pauses (or resumes) one sender's stream of one kind. Returns false if either is not in the relay. */
  setPaused(receiverUserId: string, senderUserId: string, kind: StreamKindName, paused: boolean): boolean {
    const r = this.byUser.get(receiverUserId);
    if (!r || !this.byUser.has(senderUserId)) return false;
    const key = `${senderUserId}:${STREAM_KINDS[kind]}`;
    if (paused) r.paused.add(key);
    else r.paused.delete(key);
    return true;
  }

  streamIdOf(userId: string): number | null {
    return this.byUser.get(userId)?.streamId ?? null;
  }

  // ------------------------------------------------------------ the hot path

  private drop(reason: DropReason): void {
    this.totals.dropped[reason]++;
  }

  private onPacket(portIndex: number, buf: Buffer, rinfo: dgram.RemoteInfo): void {
    const t = this.totals;
    t.packets_in++;
    t.bytes_in += buf.length;
    if (mediaPacketProblem(buf) !== null) return this.drop('malformed');
    const p = this.streams.get(buf.readUInt32BE(OFFSET.streamId));
    if (!p) return this.drop('unknown_stream');
    if (buf.readUInt32BE(OFFSET.token) !== p.tokenHi || buf.readUInt32BE(OFFSET.token + 4) !== p.tokenLo) return this.drop('bad_token');
    const kind = buf[OFFSET.kind];
    if (kind === MediaKind.HELLO) return this.onHello(p, portIndex, buf, rinfo);
    const reg = p.reg[portIndex];
    if (!reg || reg.port !== rinfo.port || reg.address !== rinfo.address) return this.drop('unregistered');
    reg.lastSeen = performance.now();
    if (kind === MediaKind.RECEIVER_REPORT && portIndex === FEEDBACK_PORT_INDEX) return this.onReport(p, buf);
    if (PORT_INDEX_OF_KIND[kind] !== portIndex) return this.drop('wrong_port');
    const sent = p.sent[kind];
    sent.packets++;
    sent.bytes += buf.length;
    if (!p.allowed[kind]) {
      sent.dropped++;
      return this.drop('not_allowed');
    }
    if (kind === MediaKind.AUDIO) {
      let d = this.speakers.get(p.roomId);
      if (!d) this.speakers.set(p.roomId, (d = new ActiveSpeakerDetector()));
      d.note(p.userId, buf[OFFSET.level], (buf[OFFSET.flags] & MediaFlags.VOICE) !== 0);
    }
    // Receivers never see the sender's secret.
    buf.fill(0, OFFSET.token, OFFSET.token + 8);
    const members = this.rooms.get(p.roomId);
    if (!members) return;
    const sock = this.sockets[portIndex];
    const len = buf.length;
    for (let i = 0; i < members.length; i++) {
      const r = members[i];
      if (r === p) continue;
      const to = r.reg[portIndex];
      if (!to) continue;
      const rc = r.received[portIndex];
      if (r.paused.size > 0 && r.paused.has(`${p.userId}:${kind}`)) {
        rc.paused++;
        continue;
      }
      if (sock.getSendQueueSize() > this.maxSendQueueBytes) {
        rc.dropped++;
        t.receiver_drops++;
        continue;
      }
      sock.send(buf, to.port, to.address);
      rc.packets++;
      rc.bytes += len;
      sent.forwarded++;
      sent.forwardedBytes += len;
      t.packets_out++;
      t.bytes_out += len;
    }
  }

  private cookieFor(p: Participant, portIndex: number, rinfo: dgram.RemoteInfo): Buffer {
    return createHmac('sha256', this.cookieKey)
      .update(`${p.streamId}|${portIndex}|${rinfo.address}|${rinfo.port}`)
      .digest()
      .subarray(0, 8);
  }

  private onHello(p: Participant, portIndex: number, buf: Buffer, rinfo: dgram.RemoteInfo): void {
    // Shorter than a full hello: the ACK would be larger than what asked for it.
    if (buf.length < MEDIA_HEADER_BYTES + HELLO_PAYLOAD_BYTES) return this.drop('malformed');
    const cookie = this.cookieFor(p, portIndex, rinfo);
    const echoed = buf.subarray(MEDIA_HEADER_BYTES + 16, MEDIA_HEADER_BYTES + 24);
    let flags = 0;
    if (cookie.equals(echoed)) {
      flags = MediaFlags.REGISTERED;
      const reg = p.reg[portIndex];
      const now = performance.now();
      if (reg && reg.address === rinfo.address && reg.port === rinfo.port) reg.lastSeen = now;
      else {
        p.reg[portIndex] = { address: rinfo.address, port: rinfo.port, lastSeen: now };
        this.log.debug('media address registered', { user: p.username, port: MEDIA_PORT_NAMES[portIndex], from: `${rinfo.address}:${rinfo.port}` });
        this.emit('registered', { user_id: p.userId, port: MEDIA_PORT_NAMES[portIndex], address: `${rinfo.address}:${rinfo.port}` });
      }
    }
    const payload = Buffer.alloc(HELLO_PAYLOAD_BYTES);
    buf.copy(payload, 0, MEDIA_HEADER_BYTES, MEDIA_HEADER_BYTES + 8);
    writeU64(payload, nowUs(), 8);
    cookie.copy(payload, 16);
    const ack = encodeControlPacket(MediaKind.HELLO_ACK, p.streamId, EMPTY_TOKEN, payload, {
      flags,
      seq: buf.readUInt32BE(OFFSET.seq),
      captureTsUs: readU64(buf, OFFSET.captureTs),
    });
    this.sockets[portIndex].send(ack, rinfo.port, rinfo.address);
  }

  private onReport(from: Participant, buf: Buffer): void {
    const records = decodeReceptionRecords(buf.subarray(MEDIA_HEADER_BYTES));
    if (!records) return this.drop('bad_report');
    const now = performance.now();
    for (const rec of records) {
      const sender = this.streams.get(rec.streamId);
      // Reports only about streams of the reporter's own room.
      if (!sender || sender === from || sender.roomId !== from.roomId || !STREAM_KIND_NAME[rec.kind]) continue;
      sender.reportsAbout.set(`${rec.kind}:${from.userId}`, { record: rec, at: now, receiver: from.userId });
    }
  }

  // ------------------------------------------------------------ once a second

  private tick(): void {
    const now = performance.now();
    for (const p of this.streams.values()) {
      for (let i = 0; i < 4; i++) {
        const reg = p.reg[i];
        if (reg && now - reg.lastSeen > this.ttlMs) {
          p.reg[i] = null;
          this.log.debug('media address expired', { user: p.username, port: MEDIA_PORT_NAMES[i] });
        }
      }
      const aggregates = this.aggregate(p, now);
      const to = p.reg[FEEDBACK_PORT_INDEX];
      if (to && aggregates.length) {
        const packet = encodeControlPacket(MediaKind.SENDER_REPORT, p.streamId, EMPTY_TOKEN, encodeSenderAggregates(aggregates), {
          captureTsUs: nowUs(),
        });
        this.sockets[FEEDBACK_PORT_INDEX]?.send(packet, to.port, to.address);
      }
    }
  }

  /** Receivers' fresh reports (last 3 intervals) about each of p's streams, combined. */
  private aggregate(p: Participant, now: number): SenderAggregate[] {
    const byKind = new Map<number, SenderAggregate & { lossSum: number }>();
    const fresh = this.reportIntervalMs * 3;
    for (const [key, { record: r, at }] of p.reportsAbout) {
      if (now - at > fresh) {
        p.reportsAbout.delete(key);
        continue;
      }
      let a = byKind.get(r.kind);
      if (!a) {
        a = { kind: r.kind, layer: r.layer, receivers: 0, lossAvgBp: 0, lossMaxBp: 0, jitterMaxUs: 0, delayMaxUs: 0, framesDelivered: 0, framesDropped: 0, lossSum: 0 };
        byKind.set(r.kind, a);
      }
      a.receivers++;
      a.lossSum += r.lossBp;
      a.lossMaxBp = Math.max(a.lossMaxBp, r.lossBp);
      a.jitterMaxUs = Math.max(a.jitterMaxUs, r.jitterUs);
      a.delayMaxUs = Math.max(a.delayMaxUs, r.delayUs);
      a.framesDelivered += r.framesDelivered;
      a.framesDropped += r.framesDropped;
    }
    return [...byKind.values()].map(({ lossSum, ...a }) => ({ ...a, lossAvgBp: Math.round(lossSum / a.receivers) }));
  }

  // ------------------------------------------------------------ observers

  stats(): MediaStats {
    const now = performance.now();
    const participants: ParticipantStats[] = [];
    for (const p of this.streams.values()) {
      const reports: Partial<Record<StreamKindName, SenderAggregate>> = {};
      for (const a of this.aggregate(p, now)) reports[STREAM_KIND_NAME[a.kind]!] = a;
      const reg = (i: number) => (p.reg[i] ? `${p.reg[i]!.address}:${p.reg[i]!.port}` : null);
      participants.push({
        user_id: p.userId,
        username: p.username,
        room_id: p.roomId,
        stream_id: p.streamId,
        registered: { video: reg(0), audio: reg(1), screen: reg(2), feedback: reg(3) },
        allowed: { video: p.allowed[MediaKind.VIDEO], audio: p.allowed[MediaKind.AUDIO], screen: p.allowed[MediaKind.SCREEN] },
        sending: { video: { ...p.sent[MediaKind.VIDEO] }, audio: { ...p.sent[MediaKind.AUDIO] }, screen: { ...p.sent[MediaKind.SCREEN] } },
        receiving: { video: { ...p.received[0] }, audio: { ...p.received[1] }, screen: { ...p.received[2] } },
        reports,
        paused: [...p.paused],
      });
    }
    return {
      ports: this.ports,
      totals: { ...this.totals, dropped: { ...this.totals.dropped } },
      participants,
    };
  }

  /** One participant's stats, by user id. */
  participantStats(userId: string): ParticipantStats | undefined {
    return this.stats().participants.find((p) => p.user_id === userId);
  }
}
