/**
 * Test kit: a seeded user-space UDP impairment proxy.
 *
 * The kernel on the test machines has no netem qdisc, so lossy / slow / jittery
 * networks are simulated here, between a client and a UDP target on loopback:
 *
 *   client ──► [listen socket] ─ upstream lane ─► [per-client socket] ──► target
 *   client ◄── [listen socket] ◄ downstream lane ─ [per-client socket] ◄── target
 *
 * Each lane applies, in this order: loss → duplicate → rate limit (token bucket
 * with a bounded queue) → delay ± jitter (+ explicit reorder hold-back) → send.
 * The rate limiter is one bucket per direction shared by all clients, like one
 * bottleneck link; the other impairments act per datagram.
 *
 * Repeatability: every datagram draws a fixed number of values from its flow's
 * own PRNG stream (one stream per client and direction, allocated in the order
 * clients first appear). So a given seed and input sequence gives the same
 * decisions whatever the impairment settings are, and however upstream,
 * downstream and other clients' traffic interleave in time. Timing (which
 * datagrams a full queue drops, how jitter orders departures) still depends on
 * the clock; the decisions do not.
 */
import * as dgram from 'node:dgram';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';

// pure-rand v8 only has subpath "exports", which this repo's moduleResolution
// (node10) cannot see; the types are taken from the file paths and the runtime
// goes through Node's exports-aware require.
type JumpableRandomGenerator = import('pure-rand/lib/types/JumpableRandomGenerator').JumpableRandomGenerator;
const { xoroshiro128plus } = require('pure-rand/generator/xoroshiro128plus') as typeof import('pure-rand/lib/generator/xoroshiro128plus');
const { uniformFloat64 } = require('pure-rand/distribution/uniformFloat64') as typeof import('pure-rand/lib/distribution/uniformFloat64');

export type Direction = 'upstream' | 'downstream';

export interface Impairment {
  /** Probability 0..1 that a datagram is dropped. */
  loss?: number;
  /** Fixed one-way delay added to every datagram. */
  delayMs?: number;
  /** Uniform ± spread around delayMs (a datagram may overtake earlier ones). */
  jitterMs?: number;
  /** Probability 0..1 that a datagram is held back an extra reorderDelayMs so later ones overtake it. */
  reorder?: number;
  /** Extra hold-back of a reordered datagram. Default 20 ms. */
  reorderDelayMs?: number;
  /** Probability 0..1 that a datagram is sent twice (the copy gets its own jitter). */
  duplicate?: number;
  /** Token-bucket rate in kbit/s (1 kbit = 1000 bit); 0 or absent = unlimited. */
  rateKbps?: number;
  /** Bucket depth. Default max(3000 B, 20 ms worth of rate). */
  burstBytes?: number;
  /** Queue behind the rate limiter; beyond it datagrams are dropped. Default 256 KiB. */
  maxQueueBytes?: number;
  /** Default 4096 datagrams. */
  maxQueuePackets?: number;
}

export interface DirectionStats {
  received: number;
  /** Datagrams sent on, duplicates included. */
  forwarded: number;
  dropped_loss: number;
  /** Dropped because the rate queue or the in-flight (delayed) limit was full, or no client slot was free. */
  dropped_queue: number;
  duplicated: number;
  /** Datagrams that left after a later-arrived datagram of the same flow had already left. */
  reordered: number;
  /** Datagrams the `reorder` probability chose to hold back. */
  held_back: number;
  /** Bytes forwarded. */
  bytes: number;
  bytes_received: number;
  send_errors: number;
}

export interface ProxyStats {
  upstream: DirectionStats;
  downstream: DirectionStats;
  /** Client mappings currently alive. */
  clients: number;
}

export interface PendingWork {
  /** Every timer the proxy holds (delivery, rate drain, idle sweep). 0 after close(). */
  timers: number;
  /** Datagrams waiting behind the rate limiter. */
  queued: number;
  /** Datagrams waiting on a delay timer. */
  inFlight: number;
  /** Open sockets (listen + per-client). */
  sockets: number;
}

export interface Endpoint {
  host: string;
  port: number;
}

export interface ImpairmentProxyOptions {
  target: Endpoint;
  seed: number;
  upstream?: Impairment;
  downstream?: Impairment;
  /** Loopback address to listen on. Default '127.0.0.1'. */
  host?: string;
  /** A client mapping with no traffic either way for this long is closed. Default 60 s; 0 = never. */
  idleTimeoutMs?: number;
  /** Default 256; datagrams from further clients are dropped. */
  maxClients?: number;
  /** Per direction, datagrams waiting on a delay timer. Default 20000. */
  maxInFlight?: number;
}

export interface ProxyGroup {
  proxies: Record<string, ImpairmentProxy>;
  /** name → port the proxy listens on (give these to the clients). */
  ports: Record<string, number>;
  setImpairment(direction: Direction, impairment: Impairment): void;
  stats(): Record<string, ProxyStats>;
  close(): Promise<void>;
}

interface Settings {
  loss: number;
  delayMs: number;
  jitterMs: number;
  reorder: number;
  reorderDelayMs: number;
  duplicate: number;
  /** bytes per ms; 0 = unlimited */
  rate: number;
  burst: number;
  maxQueueBytes: number;
  maxQueuePackets: number;
}

interface Flow {
  rng: JumpableRandomGenerator;
  nextSeq: number;
  maxSentSeq: number;
}

interface Mapping {
  key: string;
  clientAddress: string;
  clientPort: number;
  socket: dgram.Socket;
  upstreamPort: number | null;
  lastSeen: number;
  up: Flow;
  down: Flow;
  closed: boolean;
}

interface Packet {
  data: Buffer;
  mapping: Mapping;
  flow: Flow;
  seq: number;
  jitterU: number;
  heldBack: boolean;
}

interface Lane {
  direction: Direction;
  s: Settings;
  stats: DirectionStats;
  tokens: number;
  lastRefill: number;
  queue: Packet[];
  queueHead: number;
  queueBytes: number;
  drainTimer: NodeJS.Timeout | null;
  inFlight: number;
}

// xoroshiro128plus takes a 32-bit seed into a mostly-constant state; its first outputs are poor.
const WARM_UP_DRAWS = 32;

function emptyStats(): DirectionStats {
  return {
    received: 0,
    forwarded: 0,
    dropped_loss: 0,
    dropped_queue: 0,
    duplicated: 0,
    reordered: 0,
    held_back: 0,
    bytes: 0,
    bytes_received: 0,
    send_errors: 0,
  };
}

function probability(name: string, v: number | undefined): number {
  const x = v ?? 0;
  if (!Number.isFinite(x) || x < 0 || x > 1) throw new RangeError(`${name} must be within 0..1, got ${v}`);
  return x;
}

function nonNegative(name: string, v: number | undefined, dflt: number): number {
  const x = v ?? dflt;
  if (!Number.isFinite(x) || x < 0) throw new RangeError(`${name} must be a finite number >= 0, got ${v}`);
  return x;
}

function settingsOf(imp: Impairment = {}): Settings {
  const rate = nonNegative('rateKbps', imp.rateKbps, 0) / 8; // kbit/s → bytes/ms
  return {
    loss: probability('loss', imp.loss),
    delayMs: nonNegative('delayMs', imp.delayMs, 0),
    jitterMs: nonNegative('jitterMs', imp.jitterMs, 0),
    reorder: probability('reorder', imp.reorder),
    reorderDelayMs: nonNegative('reorderDelayMs', imp.reorderDelayMs, 20),
    duplicate: probability('duplicate', imp.duplicate),
    rate,
    burst: Math.max(1, nonNegative('burstBytes', imp.burstBytes, Math.max(3000, rate * 20))),
    maxQueueBytes: nonNegative('maxQueueBytes', imp.maxQueueBytes, 256 * 1024),
    maxQueuePackets: nonNegative('maxQueuePackets', imp.maxQueuePackets, 4096),
  };
}

function loopbackHost(what: string, host: string): string {
  const h = host === 'localhost' ? '127.0.0.1' : host;
  // Test traffic must stay on loopback (tests/TESTING rules); refuse anything else early.
  if ((isIP(h) === 4 && h.startsWith('127.')) || h === '::1') return h;
  throw new Error(`ImpairmentProxy: ${what} must be a loopback address (127.0.0.0/8 or ::1), got ${host}`);
}

export class ImpairmentProxy {
  private readonly target: Endpoint;
  private readonly host: string;
  private readonly idleTimeoutMs: number;
  private readonly maxClients: number;
  private readonly maxInFlight: number;
  private readonly lanes: Record<Direction, Lane>;
  /** Source of per-flow streams: each new flow clones it, then it jumps 2^64 draws ahead. */
  private readonly streams: JumpableRandomGenerator;
  private readonly mappings = new Map<string, Mapping>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private listen: dgram.Socket | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private startPromise: Promise<number> | null = null;
  private closePromise: Promise<void> | null = null;
  private closed = false;
  private listenPort = 0;

  constructor(opts: ImpairmentProxyOptions) {
    if (!Number.isInteger(opts.seed)) throw new TypeError(`seed must be an integer, got ${opts.seed}`);
    if (!Number.isInteger(opts.target.port) || opts.target.port <= 0 || opts.target.port > 65535) {
      throw new RangeError(`target port must be 1..65535, got ${opts.target.port}`);
    }
    this.target = { host: loopbackHost('target host', opts.target.host), port: opts.target.port };
    this.host = loopbackHost('listen host', opts.host ?? '127.0.0.1');
    if (isIP(this.host) !== isIP(this.target.host)) {
      throw new Error('ImpairmentProxy: listen host and target host must be of the same IP family');
    }
    this.idleTimeoutMs = nonNegative('idleTimeoutMs', opts.idleTimeoutMs, 60_000);
    this.maxClients = nonNegative('maxClients', opts.maxClients, 256);
    this.maxInFlight = nonNegative('maxInFlight', opts.maxInFlight, 20_000);
    const now = performance.now();
    const lane = (direction: Direction, imp?: Impairment): Lane => {
      const s = settingsOf(imp);
      return { direction, s, stats: emptyStats(), tokens: s.burst, lastRefill: now, queue: [], queueHead: 0, queueBytes: 0, drainTimer: null, inFlight: 0 };
    };
    this.lanes = { upstream: lane('upstream', opts.upstream), downstream: lane('downstream', opts.downstream) };
    this.streams = xoroshiro128plus(opts.seed);
    for (let i = 0; i < WARM_UP_DRAWS; i++) this.streams.next();
  }

  /**
   * Proxies several targets (e.g. a media server's video/audio/screen/feedback
   * ports), each with its own proxy and its own seed derived from `opts.seed`
   * and the target's position.
   */
  static async many(
    targets: Endpoint[] | Record<string, Endpoint>,
    opts: Omit<ImpairmentProxyOptions, 'target'>,
  ): Promise<ProxyGroup> {
    const entries: [string, Endpoint][] = Array.isArray(targets) ? targets.map((t, i) => [String(i), t]) : Object.entries(targets);
    const proxies: Record<string, ImpairmentProxy> = {};
    const ports: Record<string, number> = {};
    try {
      for (const [i, [name, target]] of entries.entries()) {
        // Distinct streams per target; the golden-ratio step keeps nearby seeds apart.
        const p = new ImpairmentProxy({ ...opts, target, seed: (opts.seed + Math.imul(i + 1, 0x9e3779b1)) | 0 });
        proxies[name] = p;
        ports[name] = await p.start();
      }
    } catch (e) {
      await Promise.all(Object.values(proxies).map((p) => p.close()));
      throw e;
    }
    return {
      proxies,
      ports,
      setImpairment: (direction, impairment) => {
        for (const p of Object.values(proxies)) p.setImpairment(direction, impairment);
      },
      stats: () => Object.fromEntries(Object.entries(proxies).map(([n, p]) => [n, p.stats()])),
      close: async () => {
        await Promise.all(Object.values(proxies).map((p) => p.close()));
      },
    };
  }

  /** Binds the listening socket; resolves with its port. Calling it again returns the same port. */
  start(): Promise<number> {
    if (this.closed) return Promise.reject(new Error('ImpairmentProxy: start() after close()'));
    if (this.startPromise) return this.startPromise;
    this.startPromise = new Promise<number>((resolve, reject) => {
      const sock = dgram.createSocket(isIP(this.host) === 6 ? 'udp6' : 'udp4');
      this.listen = sock;
      const onBindError = (err: Error) => reject(err);
      sock.once('error', onBindError);
      sock.on('message', (msg, rinfo) => this.fromClient(msg, rinfo));
      sock.bind(0, this.host, () => {
        sock.off('error', onBindError);
        // After bind, errors are per-send (reported to send callbacks); keep the process alive on stray ones.
        sock.on('error', () => undefined);
        this.listenPort = sock.address().port;
        if (this.idleTimeoutMs > 0) {
          this.sweepTimer = setInterval(() => this.sweepIdle(), Math.max(100, Math.min(this.idleTimeoutMs, 10_000)));
          this.sweepTimer.unref();
        }
        resolve(this.listenPort);
      });
    });
    return this.startPromise;
  }

  /** Port the proxy listens on (0 before start()). */
  get port(): number {
    return this.listenPort;
  }

  stats(): ProxyStats {
    return {
      upstream: { ...this.lanes.upstream.stats },
      downstream: { ...this.lanes.downstream.stats },
      clients: this.mappings.size,
    };
  }

  pending(): PendingWork {
    const up = this.lanes.upstream;
    const down = this.lanes.downstream;
    let sockets = this.listen ? 1 : 0;
    for (const m of this.mappings.values()) if (!m.closed) sockets++;
    return {
      timers: this.timers.size + (up.drainTimer ? 1 : 0) + (down.drainTimer ? 1 : 0) + (this.sweepTimer ? 1 : 0),
      queued: up.queue.length - up.queueHead + down.queue.length - down.queueHead,
      inFlight: up.inFlight + down.inFlight,
      sockets,
    };
  }

  /** Live client mappings: which client is seen by the target from which source port. */
  clients(): { client: string; upstreamPort: number | null }[] {
    return [...this.mappings.values()].map((m) => ({ client: m.key, upstreamPort: m.upstreamPort }));
  }

  /** Replaces a direction's impairment; datagrams already delayed keep their schedule. */
  setImpairment(direction: Direction, impairment: Impairment): void {
    const lane = this.lanes[direction];
    const s = settingsOf(impairment);
    this.refill(lane);
    lane.s = s;
    lane.tokens = Math.min(lane.tokens, s.burst);
    if (lane.drainTimer) {
      clearTimeout(lane.drainTimer);
      lane.drainTimer = null;
    }
    this.drain(lane);
  }

  /** Idempotent. Drops everything queued or delayed, clears every timer and closes every socket. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const lane of Object.values(this.lanes)) {
      if (lane.drainTimer) clearTimeout(lane.drainTimer);
      lane.drainTimer = null;
      lane.queue = [];
      lane.queueHead = 0;
      lane.queueBytes = 0;
      lane.inFlight = 0;
    }
    const sockets: dgram.Socket[] = [];
    if (this.listen) sockets.push(this.listen);
    for (const m of this.mappings.values()) {
      if (!m.closed) sockets.push(m.socket);
      m.closed = true;
    }
    this.mappings.clear();
    this.listen = null;
    this.closePromise = Promise.all(sockets.map(closeSocket)).then(() => undefined);
    return this.closePromise;
  }

  // ---------------------------------------------------------------------------

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const key = `${rinfo.address}:${rinfo.port}`;
    let m = this.mappings.get(key);
    if (!m) {
      if (this.mappings.size >= this.maxClients) {
        const st = this.lanes.upstream.stats;
        st.received++;
        st.bytes_received += msg.length;
        st.dropped_queue++;
        return;
      }
      m = this.openMapping(key, rinfo);
    }
    m.lastSeen = performance.now();
    this.arrive(this.lanes.upstream, m, m.up, msg);
  }

  private openMapping(key: string, rinfo: dgram.RemoteInfo): Mapping {
    const socket = dgram.createSocket(isIP(this.target.host) === 6 ? 'udp6' : 'udp4');
    const up = this.streams.clone();
    this.streams.jump();
    const down = this.streams.clone();
    this.streams.jump();
    const m: Mapping = {
      key,
      clientAddress: rinfo.address,
      clientPort: rinfo.port,
      socket,
      upstreamPort: null,
      lastSeen: performance.now(),
      up: { rng: up, nextSeq: 0, maxSentSeq: -1 },
      down: { rng: down, nextSeq: 0, maxSentSeq: -1 },
      closed: false,
    };
    socket.on('error', () => undefined);
    socket.on('message', (msg) => {
      if (m.closed || this.closed) return;
      m.lastSeen = performance.now();
      this.arrive(this.lanes.downstream, m, m.down, msg);
    });
    // A distinct loopback port per client, like a NAT, so the target can tell clients apart.
    // Sends issued before the bind completes are queued by dgram itself.
    socket.bind(0, isIP(this.target.host) === 6 ? '::1' : '127.0.0.1', () => {
      if (!m.closed) m.upstreamPort = socket.address().port;
    });
    this.mappings.set(key, m);
    return m;
  }

  private sweepIdle(): void {
    const cutoff = performance.now() - this.idleTimeoutMs;
    for (const [key, m] of this.mappings) {
      if (m.lastSeen < cutoff) {
        m.closed = true;
        this.mappings.delete(key);
        void closeSocket(m.socket);
      }
    }
  }

  private arrive(lane: Lane, m: Mapping, flow: Flow, data: Buffer): void {
    const st = lane.stats;
    st.received++;
    st.bytes_received += data.length;
    // Always the same five draws, whatever is configured, so that datagram n of a
    // flow gets the same decisions under any settings and after setImpairment().
    const r = flow.rng;
    const uLoss = uniformFloat64(r);
    const uDup = uniformFloat64(r);
    const uReorder = uniformFloat64(r);
    const uJitter = uniformFloat64(r);
    const uJitterCopy = uniformFloat64(r);
    const s = lane.s;
    if (uLoss < s.loss) {
      st.dropped_loss++;
      return;
    }
    const seq = flow.nextSeq++;
    const heldBack = uReorder < s.reorder;
    if (heldBack) st.held_back++;
    this.admit(lane, { data, mapping: m, flow, seq, jitterU: uJitter, heldBack });
    if (uDup < s.duplicate) {
      st.duplicated++;
      this.admit(lane, { data, mapping: m, flow, seq, jitterU: uJitterCopy, heldBack: false });
    }
  }

  /** Rate-limiter stage. */
  private admit(lane: Lane, p: Packet): void {
    const s = lane.s;
    if (s.rate <= 0) return this.schedule(lane, p);
    this.refill(lane);
    const size = p.data.length;
    if (lane.queue.length === lane.queueHead && lane.tokens >= Math.min(size, s.burst)) {
      lane.tokens -= size;
      return this.schedule(lane, p);
    }
    if (lane.queueBytes + size > s.maxQueueBytes || lane.queue.length - lane.queueHead >= s.maxQueuePackets) {
      lane.stats.dropped_queue++;
      return;
    }
    lane.queue.push(p);
    lane.queueBytes += size;
    this.armDrain(lane);
  }

  private refill(lane: Lane): void {
    const now = performance.now();
    if (lane.s.rate > 0) lane.tokens = Math.min(lane.s.burst, lane.tokens + (now - lane.lastRefill) * lane.s.rate);
    lane.lastRefill = now;
  }

  private armDrain(lane: Lane): void {
    if (lane.drainTimer || this.closed || lane.queue.length === lane.queueHead) return;
    const head = lane.queue[lane.queueHead]!;
    const need = Math.min(head.data.length, lane.s.burst) - lane.tokens;
    const wait = Math.max(1, Math.ceil(need / lane.s.rate));
    lane.drainTimer = setTimeout(() => {
      lane.drainTimer = null;
      this.drain(lane);
    }, wait);
  }

  /** Releases what the bucket allows (everything when the rate limit was lifted). */
  private drain(lane: Lane): void {
    if (this.closed) return;
    const s = lane.s;
    this.refill(lane);
    while (lane.queue.length > lane.queueHead) {
      const head = lane.queue[lane.queueHead]!;
      if (s.rate > 0 && lane.tokens < Math.min(head.data.length, s.burst)) break;
      lane.queueHead++;
      lane.queueBytes -= head.data.length;
      if (s.rate > 0) lane.tokens -= head.data.length;
      this.schedule(lane, head);
    }
    if (lane.queueHead > 1024 && lane.queueHead * 2 > lane.queue.length) {
      lane.queue = lane.queue.slice(lane.queueHead);
      lane.queueHead = 0;
    }
    if (lane.queue.length === lane.queueHead) {
      lane.queue = [];
      lane.queueHead = 0;
    } else if (s.rate > 0) {
      this.armDrain(lane);
    }
  }

  /** Delay stage. */
  private schedule(lane: Lane, p: Packet): void {
    const s = lane.s;
    let delay = s.delayMs + (s.jitterMs > 0 ? (p.jitterU * 2 - 1) * s.jitterMs : 0);
    if (p.heldBack) delay += s.reorderDelayMs;
    // Sending synchronously when there is no delay keeps order exactly (no timer-list interleaving).
    if (delay <= 0) return this.deliver(lane, p);
    if (lane.inFlight >= this.maxInFlight) {
      lane.stats.dropped_queue++;
      return;
    }
    lane.inFlight++;
    const t = setTimeout(() => {
      this.timers.delete(t);
      lane.inFlight--;
      this.deliver(lane, p);
    }, delay);
    this.timers.add(t);
  }

  private deliver(lane: Lane, p: Packet): void {
    if (this.closed || p.mapping.closed) return;
    const st = lane.stats;
    if (p.seq < p.flow.maxSentSeq) st.reordered++;
    else p.flow.maxSentSeq = p.seq;
    st.forwarded++;
    st.bytes += p.data.length;
    const onSent = (err: Error | null) => {
      if (err) st.send_errors++;
    };
    try {
      if (lane.direction === 'upstream') {
        p.mapping.socket.send(p.data, this.target.port, this.target.host, onSent);
      } else {
        this.listen?.send(p.data, p.mapping.clientPort, p.mapping.clientAddress, onSent);
      }
    } catch {
      st.send_errors++;
    }
  }
}

function closeSocket(s: dgram.Socket): Promise<void> {
  return new Promise<void>((resolve) => {
    try {
      s.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}
