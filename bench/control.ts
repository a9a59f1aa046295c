/**
 * bench:control — chat throughput and delivery latency in a 50-person room, for the
 * product's server and, in the same run, for a bare server that only frames and
 * echoes; the ratio says what the product's work per message (validation, users and
 * rooms, SQLite, ids, envelopes) costs against the least any server on this framing
 * could do.
 *
 *   npm run bench:control [-- --rounds N] [--messages N] [--only ours|bare] [--quiet-wait S] [--cpu-prof]
 *
 * --rounds N     rounds of (ours, bare), alternating which goes first (default 3); the
 *                figures are medians over rounds, every round is in the JSON
 * --messages N   throughput-phase message count (default 20,000)
 * --only M       run one server only (no ratio)
 * --quiet-wait S before each measured phase, wait until other processes use < 0.3 cores,
 *                at most S s in all (default 120, 0 = never wait); the CPU other processes
 *                used during each phase is reported either way (figures from a busy
 *                machine mean little: this bench wants both cores)
 * --cpu-prof     profile the server children (node --cpu-prof) and print their hottest
 *                functions per phase; profiles stay in a temp dir (path printed)
 *
 * Last line: `bench:control ratio=R msgs_per_s=N p99_ms=X` (R = ours / bare delivered
 * throughput, N = ours delivered messages per second, X = ours p99 delivery latency at
 * 1,000 messages/s; medians over rounds). Figures also go to bench/results/control.json.
 * Targets: R >= 0.5 and X < 10 ms; a miss is reported, the exit code is 1 only when the
 * run itself failed (lost, duplicated or refused messages, a timeout).
 *
 * Method. Each server runs in its own child process (bench/server_child.ts) so it and
 * this load generator share the cores like a real deployment; on loopback only.
 *  - ours: Server with a fresh temp data dir, chat rate limit lifted. 50 real Clients
 *    (client/main_client.ts) connect, one creates a persistent room (every message is an
 *    SQLite insert) and all 50 join it.
 *  - bare: 50 thin clients connect to the bare server (no CONNECT, no room: every other
 *    connection is "the room").
 *  Phases, the same for both: warm-up (2,000 messages, not counted), then
 *   1. throughput: 10 senders blast 20,000 messages, each keeping at most 32 un-ACKed;
 *      a message counts as delivered when all 49 others got it. Reported: accepted/s
 *      (all ACKs in) and delivered/s (all 49 x 20,000 deliveries in) — the headline.
 *      Besides the window, at most 2,000 sent messages may be not yet fully delivered:
 *      both servers ACK before the receivers have read the pushes, so the window alone
 *      does not bound the data queued to receivers (the server drops a receiver as a
 *      slow consumer past 8 MiB); the cap keeps that under ~1 MiB per receiver.
 *   2. latency: 1,000 messages/s offered for 5 s (10 senders x 100/s, paced on a 1 ms
 *      timer, open loop); latency = performance.now() when a receiver's chat event fires
 *      minus performance.now() just before the sender's send call, same process; the
 *      message text carries a sequence number that indexes the send times.
 *      p50/p99/max over all 245,000 deliveries. Also reported: latency from the
 *      scheduled send time (includes the generator's own timer lag).
 *
 * Fairness. The generator's per-message work is the same for both servers: the thin
 * client used against the bare server (BarePeer below) does exactly what Client.request
 * and Client's receive path do — a randomUUID message_id, a pending-map entry with a
 * timeout timer, the same 7-field envelope, encodeFrame, the same FrameDecoder, the same
 * TypedEmitter 'message' and 'chat' events and reply_to matching. The bare server ACKs
 * each message with a small frame (ours ACKs too), encodes each chat frame once and
 * writes it to the 49 others (ours does the same: one encode, many writes). What
 * differs is only what a server must do: ours validates, rate-limits, stores, and sends
 * a ChatEntry envelope (about 560 bytes, 1.5x the 375-byte echoed request) instead of the echo.
 * Server CPU per message and event-loop utilization (ELU) are reported for both, and
 * the generator's too, to show which side was saturated; so are event-loop delay (a 2 ms
 * timer's lateness, p99/max) and GC pauses, in both processes, to tell a server stall
 * from a generator stall.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Client } from '../client/main_client';
import { TypedEmitter } from '../shared/events';
import { encodeFrame, FrameDecoder } from '../shared/protocol/framing';
import {
  BENCH_DIR,
  finalLine,
  forkTs,
  hotFunctions,
  machineCpu,
  machineCpuBetween,
  machineInfo,
  median,
  round,
  waitForQuiet,
  sleep,
  summarize,
  writeResults,
  type ForkedChild,
  type HotFunction,
  LoopMonitor,
  type LatencySummary,
  type LoopStalls,
  type ChildStatsBase,
  type MachineCpu,
  runBench,
} from './lib';

const ROOM_SIZE = 50;
const RECIPIENTS = ROOM_SIZE - 1;
const SENDERS = 10;
const WINDOW = 32;
const WARMUP_MESSAGES = 2_000;
const DEFAULT_MESSAGES = 20_000;
const UNDELIVERED_CAP = 2_000;
const LATENCY_RATE = 1_000;
const LATENCY_SECONDS = 5;
const PHASE_TIMEOUT_MS = 90_000;
const DRAIN_TIMEOUT_MS = 15_000;
const OVERALL_TIMEOUT_MS = 20 * 60_000;
const REQUEST_TIMEOUT_MS = 60_000;
/** Before each measured phase, wait up to this long for other processes to use less than QUIET_CORES. */
const DEFAULT_QUIET_WAIT_S = 120;
const DEFAULT_ROUNDS = 3;
const QUIET_CORES = 0.3;
const TARGET_RATIO = 0.5;
const TARGET_P99_MS = 10;
/** A chat line of ordinary length; the sequence number goes in front. */
const FILLER = 'the quick brown fox jumps over the lazy dog, again and again, in a 50-person room';

type Mode = 'ours' | 'bare';

// ------------------------------------------------------------ peers

/** What the phases need of a connected room member, whatever the server. */
interface Peer {
  /** Sends one chat message; resolves with the ACK's data. */
  send(text: string): Promise<unknown>;
  onChat(fn: (text: string) => void): void;
  close(): Promise<void>;
}

interface Pending {
  resolve: (data: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

type Env = { type: string; data: Record<string, unknown>; reply_to?: string | null; [k: string]: unknown };

/**
 * The thin client for the bare server: Client's request and receive paths, minus
 * CONNECT and rooms (the bare server has neither). Kept line for line with
 * client/main_client.ts request() and onMessage() so both servers get the same load.
 */
class BarePeer extends TypedEmitter<{ message: [Env]; chat: [{ message: string }] }> {
  private readonly pending = new Map<string, Pending>();
  /** Stand-ins for the ids a signed-in Client puts in every envelope (same sizes). */
  private readonly userId = randomUUID();
  private readonly roomId: string;
  private lastReceived = 0;

  private constructor(
    private readonly socket: net.Socket,
    roomId: string,
  ) {
    super();
    this.roomId = roomId;
    const decoder = new FrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      this.lastReceived = performance.now();
      for (const f of decoder.push(chunk)) {
        if (f.ok) this.onMessage(f.value as Env);
        else if (f.fatal) socket.destroy(f.error);
      }
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number, roomId: string): Promise<BarePeer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.setNoDelay(true);
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(new BarePeer(socket, roomId));
      });
      socket.once('error', reject);
    });
  }

  request(type: string, data: Record<string, unknown>): Promise<unknown> {
    const socket = this.socket;
    if (socket.destroyed) return Promise.reject(new Error('connection lost'));
    const message_id = randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(message_id);
        reject(new Error(`${type} timed out`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(message_id, { resolve, reject, timer });
      const env = {
        type,
        data,
        sender: this.userId,
        recipient: null,
        room_id: this.roomId,
        timestamp: Date.now() / 1000,
        message_id,
      };
      socket.write(encodeFrame(env));
    });
  }

  sendChat(message: string): Promise<unknown> {
    return this.request('CHAT_MESSAGE', { room_id: this.roomId, message });
  }

  private onMessage(env: Env): void {
    if (!env || typeof env !== 'object' || typeof env.type !== 'string') return;
    const data = (env.data ?? {}) as Record<string, unknown>;
    this.emit('message', env);
    if ((env.type === 'SUCCESS' || env.type === 'ACK' || env.type === 'ERROR') && env.reply_to) {
      const p = this.pending.get(env.reply_to);
      if (p) {
        this.pending.delete(env.reply_to);
        clearTimeout(p.timer);
        if (env.type === 'ERROR') p.reject(new Error(String(data.code)));
        else p.resolve(data);
        return;
      }
    }
    switch (env.type) {
      case 'CHAT_MESSAGE':
        this.emit('chat', data as { message: string });
        break;
      default:
        break;
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 500).unref();
    });
  }
}

async function inBatches<T>(n: number, batch: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let b = 0; b < n; b += batch) {
    const part = await Promise.all(Array.from({ length: Math.min(batch, n - b) }, (_, k) => make(b + k)));
    out.push(...part);
  }
  return out;
}

/** 50 real Clients, signed in, all in one persistent room. */
async function ourPeers(port: number): Promise<Peer[]> {
  const clients = await inBatches(ROOM_SIZE, 10, async (i) => {
    const c = new Client({ host: '127.0.0.1', port, username: `bench${i}`, reconnect: false, requestTimeoutMs: REQUEST_TIMEOUT_MS });
    await c.connect();
    return c;
  });
  const room = await clients[0].createRoom({ name: 'bench-control', persistent: true, maxParticipants: ROOM_SIZE });
  if (!room.is_persistent) throw new Error('the bench room is not persistent');
  for (const c of clients) await c.joinRoom(room.room_id);
  await sleep(300); // join and room-list pushes settle
  return clients.map((c) => ({
    send: (text) => c.sendChat(text),
    onChat: (fn) => c.on('chat', (e) => fn(e.message)),
    close: () => c.close(),
  }));
}

async function barePeers(child: ForkedChild): Promise<Peer[]> {
  const roomId = randomUUID();
  const peers = await inBatches(ROOM_SIZE, 10, () => BarePeer.connect(child.port, roomId));
  // The child must have accepted every socket before the load starts.
  let connections = 0;
  for (const deadline = performance.now() + 5000; performance.now() < deadline; await sleep(20)) {
    const s = await child.request<ChildStats>('stats');
    connections = s.counters.connections;
    if (connections === ROOM_SIZE) break;
  }
  if (connections !== ROOM_SIZE) throw new Error(`bare server has ${connections} connections, expected ${ROOM_SIZE}`);
  return peers.map((p) => ({
    send: (text) => p.sendChat(text),
    onChat: (fn) => p.on('chat', (e) => fn(e.message)),
    close: () => p.close(),
  }));
}

// ------------------------------------------------------------ delivery tracking

/** Per-phase bookkeeping, indexed by the sequence number each message text carries. */
class Tracker {
  readonly tagCode: number;
  readonly sentAt: Float64Array;
  readonly senderOf: Int16Array;
  readonly deliveries: Uint8Array;
  /** Latency samples (ms), when the phase records them. */
  readonly latency: Float64Array | null;
  /** The same samples measured from the scheduled send time (paced phase). */
  readonly latencyFromSchedule: Float64Array | null;
  /** Per message: actual send time minus scheduled send time (paced phase). */
  readonly scheduleLag: Float64Array | null;
  /** Per message: its slowest delivery (paced phase). */
  readonly slowest: Float64Array | null;
  /** Deliveries at or over the p99 target (paced phase). */
  overTarget = 0;
  nLatency = 0;
  delivered = 0;
  fullyDelivered = 0;
  lastFullAt = 0;
  duplicates = 0;
  selfDeliveries = 0;
  stray = 0;
  onFull: (() => void) | null = null;

  constructor(
    readonly tag: string,
    readonly count: number,
    recordLatency: boolean,
  ) {
    this.tagCode = tag.charCodeAt(0);
    this.sentAt = new Float64Array(count);
    this.senderOf = new Int16Array(count).fill(-1);
    this.deliveries = new Uint8Array(count);
    this.latency = recordLatency ? new Float64Array(count * RECIPIENTS) : null;
    this.latencyFromSchedule = recordLatency ? new Float64Array(count * RECIPIENTS) : null;
    this.scheduleLag = recordLatency ? new Float64Array(count) : null;
    this.slowest = recordLatency ? new Float64Array(count) : null;
  }

  text(seq: number): string {
    return `${this.tag}${seq} ${FILLER}`;
  }

  deliver(receiver: number, text: string, now: number): void {
    const sp = text.indexOf(' ');
    const seq = text.charCodeAt(0) === this.tagCode && sp > 1 ? Number(text.slice(1, sp)) : -1;
    if (!(seq >= 0 && seq < this.count) || this.senderOf[seq] < 0) {
      this.stray++;
      return;
    }
    if (this.senderOf[seq] === receiver) this.selfDeliveries++;
    const c = ++this.deliveries[seq];
    this.delivered++;
    if (this.latency && this.nLatency < this.latency.length) {
      const ms = now - this.sentAt[seq];
      this.latency[this.nLatency] = ms;
      this.latencyFromSchedule![this.nLatency] = ms + this.scheduleLag![seq];
      this.nLatency++;
      if (ms > this.slowest![seq]) this.slowest![seq] = ms;
      if (ms >= TARGET_P99_MS) this.overTarget++;
    }
    if (c === RECIPIENTS) {
      this.fullyDelivered++;
      this.lastFullAt = now;
      this.onFull?.();
    } else if (c > RECIPIENTS) {
      this.duplicates++;
    }
  }

  problems(): string[] {
    const p: string[] = [];
    if (this.fullyDelivered !== this.count) p.push(`${this.count - this.fullyDelivered} of ${this.count} messages not delivered to all ${RECIPIENTS}`);
    if (this.duplicates) p.push(`${this.duplicates} duplicate deliveries`);
    if (this.selfDeliveries) p.push(`${this.selfDeliveries} messages echoed to their sender`);
    if (this.stray) p.push(`${this.stray} deliveries of unknown messages`);
    return p;
  }
}

/** Routes every peer's chat events to the current phase's tracker. */
class Receivers {
  current: Tracker | null = null;
  strayOutsidePhase = 0;
  constructor(peers: Peer[]) {
    peers.forEach((p, i) =>
      p.onChat((text) => {
        const t = this.current;
        if (t) t.deliver(i, text, performance.now());
        else this.strayOutsidePhase++;
      }),
    );
  }
}

// ------------------------------------------------------------ phases

/** This process's event-loop delay and GC pauses, per phase. */
const generatorStalls = new LoopMonitor();

interface Probe {
  server: ChildStats;
  generator: LoopStalls;
  genCpu: NodeJS.CpuUsage;
  genElu: EventLoopUtilization;
  machine: MachineCpu | null;
  at: number;
}

interface ChildStats extends ChildStatsBase {
  counters: Record<string, number>;
}

async function probe(child: ForkedChild): Promise<Probe> {
  const server = await child.request<ChildStats>('stats');
  return { server, generator: generatorStalls.take(), genCpu: process.cpuUsage(), genElu: performance.eventLoopUtilization(), machine: machineCpu(), at: performance.now() };
}

/** CPU and event-loop figures between two probes (per message for CPU). */
function load(a: Probe, b: Probe, messages: number) {
  const serverCpuUs = b.server.cpu_user_us + b.server.cpu_system_us - (a.server.cpu_user_us + a.server.cpu_system_us);
  const genCpuUs = b.genCpu.user + b.genCpu.system - (a.genCpu.user + a.genCpu.system);
  const wallUs = (b.at - a.at) * 1000;
  const m = machineCpuBetween(a.machine, b.machine);
  return {
    server_cpu_us_per_msg: round(serverCpuUs / messages, 1),
    server_cpu_util: round(serverCpuUs / wallUs, 3),
    server_elu: round(b.server.elu_since_last, 3),
    server_rss_mb: b.server.rss_mb,
    /** Event-loop delay (how late a 2 ms timer fired) and GC pauses during the phase. */
    server_stalls: b.server.stalls,
    generator_stalls: b.generator,
    generator_cpu_us_per_msg: round(genCpuUs / messages, 1),
    generator_cpu_util: round(genCpuUs / wallUs, 3),
    generator_elu: round(performance.eventLoopUtilization(b.genElu, a.genElu).utilization, 3),
    /** Whole machine, in cores (of os.cpus().length): everything, and the part neither bench process used. */
    machine_busy_cores: m?.busy_cores ?? null,
    machine_steal_cores: m?.steal_cores ?? null,
    other_processes_cores: m ? round(m.busy_cores - (serverCpuUs + genCpuUs) / wallUs, 2) : null,
  };
}

interface BlastResult {
  messages: number;
  complete: boolean;
  problems: string[];
  seconds_to_accept: number;
  seconds_to_deliver: number;
  accepted_per_s: number;
  delivered_per_s: number;
  deliveries_per_s: number;
  ack: LatencySummary;
  cap_stalls: number;
}

/**
 * Senders 0..SENDERS-1 send `count` messages as fast as the server takes them: each keeps
 * at most WINDOW un-ACKed, and no more than UNDELIVERED_CAP may be short of full delivery.
 */
/** Resolves when the phase is over with a function that builds the figures (sorting is kept out of the measured window). */
function blast(peers: Peer[], rx: Receivers, tag: string, count: number): Promise<() => BlastResult> {
  const t = new Tracker(tag, count, false);
  rx.current = t;
  const ackMs = new Float64Array(count);
  const inflight = new Int32Array(SENDERS);
  let next = 0;
  let acked = 0;
  let refused = 0;
  let firstError: unknown = null;
  let wrongFanout = 0;
  let acceptedAt = 0;
  let capStalls = 0;
  let stalled = false;
  const t0 = performance.now();
  return new Promise((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      t.onFull = null;
      rx.current = null;
      const problems = t.problems();
      if (acked + refused < count) problems.push(`${count - acked - refused} messages never ACKed`);
      if (refused) problems.push(`${refused} messages refused (first: ${String(firstError)})`);
      if (wrongFanout) problems.push(`${wrongFanout} ACKs with delivered_to != ${RECIPIENTS}`);
      const deliveredAt = t.fullyDelivered === count ? t.lastFullAt : performance.now();
      const acceptedEnd = acceptedAt || performance.now();
      resolve(() => ({
        messages: count,
        complete: problems.length === 0,
        problems,
        seconds_to_accept: round((acceptedEnd - t0) / 1000, 3),
        seconds_to_deliver: round((deliveredAt - t0) / 1000, 3),
        accepted_per_s: round((acked * 1000) / (acceptedEnd - t0), 0),
        delivered_per_s: round((t.fullyDelivered * 1000) / (deliveredAt - t0), 0),
        deliveries_per_s: round((t.delivered * 1000) / (deliveredAt - t0), 0),
        ack: summarize(ackMs, acked),
        cap_stalls: capStalls,
      }));
    };
    const check = () => {
      if (acked + refused === count && !acceptedAt) acceptedAt = performance.now();
      if (acceptedAt && t.fullyDelivered === count) finish();
    };
    const pump = (i: number) => {
      while (inflight[i] < WINDOW && next < count) {
        if (next - t.fullyDelivered >= UNDELIVERED_CAP) {
          capStalls++;
          stalled = true;
          return;
        }
        const seq = next++;
        inflight[i]++;
        t.senderOf[seq] = i;
        const sentAt = performance.now();
        t.sentAt[seq] = sentAt;
        peers[i].send(t.text(seq)).then(
          (ack) => {
            const n = (ack as { delivered_to?: unknown }).delivered_to;
            if (typeof n === 'number' && n !== RECIPIENTS) wrongFanout++;
            ackMs[acked++] = performance.now() - sentAt;
            inflight[i]--;
            check();
            pump(i);
          },
          (e: unknown) => {
            refused++;
            firstError ??= e;
            inflight[i]--;
            check();
            pump(i);
          },
        );
      }
    };
    t.onFull = () => {
      if (stalled && next - t.fullyDelivered < UNDELIVERED_CAP) {
        stalled = false;
        for (let i = 0; i < SENDERS; i++) pump(i);
      }
      check();
    };
    const timer = setTimeout(finish, PHASE_TIMEOUT_MS);
    for (let i = 0; i < SENDERS; i++) pump(i);
  });
}

interface PacedResult {
  messages: number;
  offered_per_s: number;
  achieved_per_s: number;
  complete: boolean;
  problems: string[];
  latency: LatencySummary;
  latency_from_schedule: LatencySummary;
  send_lag: LatencySummary;
  ack: LatencySummary;
  /** Share of deliveries at or over the p99 target. */
  over_target_fraction: number;
  /** Per TIMELINE_MS of send time: the slowest delivery (ms) and messages with any delivery over the target. */
  timeline: { from_s: number; max_ms: number; messages_over_target: number }[];
}

/** LATENCY_RATE messages/s for LATENCY_SECONDS, round-robin over the senders, open loop. */
function paced(peers: Peer[], rx: Receivers, tag: string): Promise<() => PacedResult> {
  const count = LATENCY_RATE * LATENCY_SECONDS;
  const t = new Tracker(tag, count, true);
  rx.current = t;
  const interval = 1000 / LATENCY_RATE;
  const ackMs = new Float64Array(count);
  let acked = 0;
  let refused = 0;
  let firstError: unknown = null;
  let next = 0;
  let lastSendAt = 0;
  const t0 = performance.now() + 1;
  return new Promise((resolve) => {
    let finished = false;
    let drainTimer: NodeJS.Timeout | null = null;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (drainTimer) clearTimeout(drainTimer);
      t.onFull = null;
      rx.current = null;
      const problems = t.problems();
      if (acked + refused < count) problems.push(`${count - acked - refused} messages never ACKed`);
      if (refused) problems.push(`${refused} messages refused (first: ${String(firstError)})`);
      const sendEnd = lastSendAt || performance.now();
      resolve(() => ({
        messages: count,
        offered_per_s: LATENCY_RATE,
        achieved_per_s: round((next * 1000) / (sendEnd - t0 + interval), 0),
        complete: problems.length === 0,
        problems,
        latency: summarize(t.latency!, t.nLatency),
        latency_from_schedule: summarize(t.latencyFromSchedule!, t.nLatency),
        send_lag: summarize(t.scheduleLag!, next),
        ack: summarize(ackMs, acked),
        over_target_fraction: round(t.overTarget / Math.max(1, t.nLatency), 5),
        timeline: timeline(t, interval),
      }));
    };
    const check = () => {
      if (next === count && acked + refused === count && t.fullyDelivered === count) finish();
    };
    t.onFull = check;
    const tick = () => {
      if (finished) return;
      const now = performance.now();
      while (next < count && t0 + next * interval <= now) {
        const seq = next++;
        const i = seq % SENDERS;
        t.senderOf[seq] = i;
        const sentAt = performance.now();
        t.sentAt[seq] = sentAt;
        t.scheduleLag![seq] = sentAt - (t0 + seq * interval);
        peers[i].send(t.text(seq)).then(
          () => {
            ackMs[acked++] = performance.now() - sentAt;
            check();
          },
          (e: unknown) => {
            refused++;
            firstError ??= e;
            check();
          },
        );
      }
      if (next < count) {
        setTimeout(tick, 1);
      } else {
        lastSendAt = performance.now();
        drainTimer = setTimeout(finish, DRAIN_TIMEOUT_MS);
        check();
      }
    };
    setTimeout(tick, 1);
  });
}

const TIMELINE_MS = 250;

function timeline(t: Tracker, intervalMs: number): PacedResult['timeline'] {
  const per = Math.max(1, Math.round(TIMELINE_MS / intervalMs));
  const out: PacedResult['timeline'] = [];
  for (let from = 0; from < t.count; from += per) {
    let max = 0;
    let over = 0;
    for (let seq = from; seq < Math.min(t.count, from + per); seq++) {
      const v = t.slowest![seq];
      if (v > max) max = v;
      if (v >= TARGET_P99_MS) over++;
    }
    out.push({ from_s: round((from * intervalMs) / 1000, 2), max_ms: round(max, 1), messages_over_target: over });
  }
  return out;
}

// ------------------------------------------------------------ one server

type QuietCheck = Awaited<ReturnType<typeof waitForQuiet>>;

interface ServerRun {
  mode: Mode;
  warmup: BlastResult;
  throughput: BlastResult & { load: ReturnType<typeof load>; before: QuietCheck };
  latency: PacedResult & { load: ReturnType<typeof load>; before: QuietCheck };
  stray_outside_phases: number;
  server_close: Record<string, unknown>;
  server_stats: ChildStats;
  profile?: { file: string; throughput: ReturnType<typeof hotFunctions>; latency: ReturnType<typeof hotFunctions> };
}

const children = new Set<ForkedChild>();

/** What is left of --quiet-wait (one budget for the whole invocation). */
let quietBudgetMs = 0;

/** Before a measured phase: wait (within the budget) for other processes to calm down, and say so. */
async function quiet(mode: Mode, phase: string): Promise<QuietCheck> {
  const started = performance.now();
  // One short look even with no budget left: the reading is recorded either way.
  const q = await waitForQuiet(Math.max(1000, quietBudgetMs), QUIET_CORES);
  quietBudgetMs = Math.max(0, quietBudgetMs - (performance.now() - started));
  if (!q.quiet) log(`${mode}: machine still busy before the ${phase} phase (${q.busy_cores} cores used by other processes after ${q.waited_s} s); measuring anyway`);
  else if (q.waited_s > 1.5) log(`${mode}: waited ${q.waited_s} s for other processes to quiet down before the ${phase} phase`);
  return q;
}

async function runServer(mode: Mode, messages: number, cpuProf: boolean): Promise<ServerRun> {
  const profDir = cpuProf ? fs.mkdtempSync(path.join(os.tmpdir(), `lanvc-bench-prof-${mode}-`)) : null;
  const child = await forkTs(path.join(BENCH_DIR, 'server_child.ts'), [mode], {
    nodeArgs: profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [],
  });
  children.add(child);
  try {
    const peers = mode === 'ours' ? await ourPeers(child.port) : await barePeers(child);
    const rx = new Receivers(peers);
    log(`${mode}: 50 clients in the room; warm-up ${WARMUP_MESSAGES} messages`);
    const warmup = (await blast(peers, rx, 'W', WARMUP_MESSAGES))();
    if (!warmup.complete) throw new Error(`${mode} warm-up failed: ${warmup.problems.join('; ')}`);
    await sleep(200);

    const quietThroughput = await quiet(mode, 'throughput');
    const p0 = await probe(child);
    const throughputDone = await blast(peers, rx, 'T', messages);
    const p1 = await probe(child);
    const throughput = throughputDone();
    const tLoad = load(p0, p1, messages);
    log(
      `${mode} throughput: ${messages} msgs, accepted ${throughput.accepted_per_s}/s, delivered ${throughput.delivered_per_s}/s ` +
        `(${throughput.deliveries_per_s} deliveries/s) in ${throughput.seconds_to_deliver} s; ACK p50 ${throughput.ack.p50_ms} ms p99 ${throughput.ack.p99_ms} ms` +
        (throughput.cap_stalls ? `; undelivered cap hit ${throughput.cap_stalls}x` : ''),
    );
    log(loadLine(tLoad, true));
    if (!throughput.complete) log(`  PROBLEMS: ${throughput.problems.join('; ')}`);
    await sleep(500);

    const quietLatency = await quiet(mode, 'latency');
    const p2 = await probe(child);
    const latencyDone = await paced(peers, rx, 'L');
    const p3 = await probe(child);
    const latency = latencyDone();
    const lLoad = load(p2, p3, latency.messages);
    log(
      `${mode} latency: ${LATENCY_RATE}/s x ${LATENCY_SECONDS} s, ${latency.latency.count} deliveries: ` +
        `p50 ${latency.latency.p50_ms} ms, p99 ${latency.latency.p99_ms} ms, max ${latency.latency.max_ms} ms; ` +
        `${round(latency.over_target_fraction * 100, 2)}% >= ${TARGET_P99_MS} ms; from scheduled send time p99 ${latency.latency_from_schedule.p99_ms} ms ` +
        `(send lag p99 ${latency.send_lag.p99_ms} ms)`,
    );
    log(`  slowest delivery per ${TIMELINE_MS} ms (ms): ${latency.timeline.map((w) => w.max_ms).join(' ')}`);
    log(loadLine(lLoad, false));
    if (!latency.complete) log(`  PROBLEMS: ${latency.problems.join('; ')}`);

    const server_stats = await child.request<ChildStats>('stats');
    await Promise.all(peers.map((p) => p.close().catch(() => undefined)));
    const server_close = await child.request<Record<string, unknown>>('close', 20_000);
    await Promise.race([child.exited, sleep(10_000)]);
    await child.kill();
    children.delete(child);

    const run: ServerRun = {
      mode,
      warmup,
      throughput: { ...throughput, load: tLoad, before: quietThroughput },
      latency: { ...latency, load: lLoad, before: quietLatency },
      stray_outside_phases: rx.strayOutsidePhase,
      server_close,
      server_stats,
    };
    if (profDir) {
      const file = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
      if (file) {
        const full = path.join(profDir, file);
        run.profile = {
          file: full,
          throughput: hotFunctions(full, 25, { fromUs: p0.server.hrtime_us, toUs: p1.server.hrtime_us }),
          latency: hotFunctions(full, 25, { fromUs: p2.server.hrtime_us, toUs: p3.server.hrtime_us }),
        };
      } else {
        log(`${mode}: no .cpuprofile written in ${profDir}`);
      }
    }
    return run;
  } finally {
    if (children.has(child)) {
      await child.kill();
      children.delete(child);
    }
  }
}

function loadLine(l: ReturnType<typeof load>, perMsgGenerator: boolean): string {
  const stalls = (x: LoopStalls) => `loop delay p99 ${x.loop_delay_p99_ms} ms max ${x.loop_delay_max_ms} ms, GC max ${x.gc_max_ms} ms`;
  return (
    `  server ${l.server_cpu_us_per_msg} us CPU/msg, ELU ${l.server_elu}, ${stalls(l.server_stalls)} | ` +
    `generator ${perMsgGenerator ? `${l.generator_cpu_us_per_msg} us CPU/msg, ` : ''}ELU ${l.generator_elu}, ${stalls(l.generator_stalls)} | ` +
    `other processes ${l.other_processes_cores} cores, steal ${l.machine_steal_cores}`
  );
}

function log(line: string): void {
  process.stdout.write(line + '\n');
}

function printProfile(mode: Mode, phase: string, p: { total_ms: number; functions: HotFunction[] }): void {
  log(`\n${mode} server, ${phase} phase: hottest functions by self time (${p.total_ms} ms sampled)`);
  for (const f of p.functions.slice(0, 20)) {
    log(`  ${String(f.self_pct).padStart(5)}%  ${String(f.self_ms).padStart(8)} ms  ${f.function}  ${f.where}`);
  }
}

// ------------------------------------------------------------ main

/** Medians over rounds (runs alternate ours/bare, so slow drift hits both alike). */
function acrossRounds(runs: ServerRun[]) {
  const pick = (f: (r: ServerRun) => number) => runs.map(f);
  return {
    rounds: runs.length,
    delivered_per_s: median(pick((r) => r.throughput.delivered_per_s)),
    accepted_per_s: median(pick((r) => r.throughput.accepted_per_s)),
    server_cpu_us_per_msg: median(pick((r) => r.throughput.load.server_cpu_us_per_msg)),
    latency_p50_ms: median(pick((r) => r.latency.latency.p50_ms)),
    latency_p99_ms: median(pick((r) => r.latency.latency.p99_ms)),
    latency_max_ms: Math.max(...pick((r) => r.latency.latency.max_ms)),
    latency_server_cpu_us_per_msg: median(pick((r) => r.latency.load.server_cpu_us_per_msg)),
    per_round: {
      delivered_per_s: pick((r) => r.throughput.delivered_per_s),
      latency_p99_ms: pick((r) => r.latency.latency.p99_ms),
      server_cpu_us_per_msg: pick((r) => r.throughput.load.server_cpu_us_per_msg),
    },
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'cpu-prof': { type: 'boolean', default: false },
      messages: { type: 'string', default: String(DEFAULT_MESSAGES) },
      rounds: { type: 'string', default: String(DEFAULT_ROUNDS) },
      only: { type: 'string' },
      'quiet-wait': { type: 'string', default: String(DEFAULT_QUIET_WAIT_S) },
    },
  });
  const messages = Number(values.messages);
  if (!Number.isInteger(messages) || messages < 1000 || messages > 1_000_000) throw new Error('--messages must be an integer in [1000, 1000000]');
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 9) throw new Error('--rounds must be an integer in [1, 9]');
  const quietWaitS = Number(values['quiet-wait']);
  if (!(quietWaitS >= 0 && quietWaitS <= 600)) throw new Error('--quiet-wait must be seconds in [0, 600]');
  const only = values.only as Mode | undefined;
  if (only && only !== 'ours' && only !== 'bare') throw new Error('--only must be ours or bare');
  const cpuProf = values['cpu-prof']!;
  const machine = machineInfo();
  log(
    `bench:control on ${machine.cpus} x ${machine.cpu_model}, node ${machine.node}: ${ROOM_SIZE}-person room, ${SENDERS} senders, ` +
      `window ${WINDOW}, ${messages} messages; latency at ${LATENCY_RATE}/s for ${LATENCY_SECONDS} s; ${rounds} round(s)`,
  );

  quietBudgetMs = quietWaitS * 1000;
  const ours: ServerRun[] = [];
  const bare: ServerRun[] = [];
  for (let round = 1; round <= rounds; round++) {
    // Alternate which server goes first, so drift in the machine's speed hits both alike.
    const order: Mode[] = round % 2 === 1 ? ['ours', 'bare'] : ['bare', 'ours'];
    for (const mode of order) {
      if (only && only !== mode) continue;
      if (rounds > 1) log(`-- round ${round}/${rounds}: ${mode}`);
      (mode === 'ours' ? ours : bare).push(await runServer(mode, messages, cpuProf));
    }
  }

  const oursSummary = ours.length ? acrossRounds(ours) : null;
  const bareSummary = bare.length ? acrossRounds(bare) : null;
  const ratio = oursSummary && bareSummary ? oursSummary.delivered_per_s / bareSummary.delivered_per_s : NaN;
  const pairedRatios = ours.length === bare.length ? ours.map((o, k) => round(o.throughput.delivered_per_s / bare[k].throughput.delivered_per_s, 3)) : [];
  const head = (oursSummary ?? bareSummary)!;
  const p50 = head.latency_p50_ms;
  const p99 = head.latency_p99_ms;
  const complete = [...ours, ...bare].every((r) => r.warmup.complete && r.throughput.complete && r.latency.complete);
  const targets = {
    ratio_min: TARGET_RATIO,
    p99_max_ms: TARGET_P99_MS,
    ratio_met: ratio >= TARGET_RATIO,
    p99_met: p99 < TARGET_P99_MS,
  };

  for (const r of [...ours, ...bare]) {
    if (!r.profile) continue;
    printProfile(r.mode, 'throughput', r.profile.throughput);
    printProfile(r.mode, 'latency', r.profile.latency);
    log(`  (profile: ${r.profile.file})`);
  }

  const file = writeResults('control', {
    bench: 'control',
    date: machine.date,
    machine: { ...machine, loadavg_at_end: os.loadavg().map((l) => round(l, 2)) },
    config: {
      room_size: ROOM_SIZE,
      senders: SENDERS,
      window: WINDOW,
      warmup_messages: WARMUP_MESSAGES,
      messages,
      rounds,
      undelivered_cap: UNDELIVERED_CAP,
      latency_rate_per_s: LATENCY_RATE,
      latency_seconds: LATENCY_SECONDS,
      message_text_chars: `T${messages - 1} ${FILLER}`.length,
      cpu_prof: cpuProf,
      quiet_wait_s: quietWaitS,
      quiet_cores: QUIET_CORES,
    },
    /** ours / bare delivered throughput (medians over rounds). */
    ratio: round(ratio, 3),
    paired_ratios: pairedRatios,
    /** Ours: delivered messages/s (median), latency at 1,000/s (median p50/p99 over rounds). */
    msgs_per_s: oursSummary?.delivered_per_s ?? null,
    p50_ms: p50,
    p99_ms: p99,
    targets,
    complete,
    ours: oursSummary,
    bare: bareSummary,
    runs: { ours, bare },
  });

  log('');
  if (oursSummary && bareSummary) {
    const many = rounds > 1 ? ` (medians of ${rounds} rounds; per round ours ${oursSummary.per_round.delivered_per_s.join(', ')}, bare ${bareSummary.per_round.delivered_per_s.join(', ')})` : '';
    log(
      `throughput (delivered to all ${RECIPIENTS}): ours ${oursSummary.delivered_per_s}/s, bare ${bareSummary.delivered_per_s}/s${many}; ` +
        `ratio ${round(ratio, 3)} (target >= ${TARGET_RATIO}: ${targets.ratio_met ? 'met' : 'MISSED'})`,
    );
    log(
      `server CPU per message (throughput phase): ours ${oursSummary.server_cpu_us_per_msg} us, bare ${bareSummary.server_cpu_us_per_msg} us; ` +
        `at ${LATENCY_RATE}/s: ours ${oursSummary.latency_server_cpu_us_per_msg} us, bare ${bareSummary.latency_server_cpu_us_per_msg} us`,
    );
    log(
      `latency at ${LATENCY_RATE}/s: ours p50 ${oursSummary.latency_p50_ms} ms p99 ${oursSummary.latency_p99_ms} ms max ${oursSummary.latency_max_ms} ms; ` +
        `bare p50 ${bareSummary.latency_p50_ms} ms p99 ${bareSummary.latency_p99_ms} ms max ${bareSummary.latency_max_ms} ms ` +
        `(target p99 < ${TARGET_P99_MS} ms: ${targets.p99_met ? 'met' : 'MISSED'})`,
    );
  }
  if (!complete) log('RUN INCOMPLETE: see the PROBLEMS above; figures are not trustworthy');
  log(`results: ${path.relative(process.cwd(), file)}`);
  log(finalLine('control', { ratio: round(ratio, 3), msgs_per_s: head.delivered_per_s, p99_ms: p99 }));
  return complete ? 0 : 1;
}

runBench('control', main, {
  timeoutMs: OVERALL_TIMEOUT_MS,
  cleanup: async (hard) => {
    for (const c of children) {
      if (hard) c.proc.kill('SIGKILL');
      else await c.kill().catch(() => undefined);
    }
  },
});
