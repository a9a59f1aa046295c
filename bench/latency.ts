/**
 * bench:latency — glass-to-glass on loopback, minus the glass: capture-to-reassembled
 * and capture-to-decoded delay of a 640x480 camera at 30 fps through the real server,
 * with JPEG encode and decode timed per frame in the same run, so that what the
 * transport adds (fragmenting, pacing, UDP, the relay, reassembly, event-loop waits)
 * is seen apart from the codec.
 *
 *   npm run bench:latency [-- --seconds S] [--quiet-wait S]
 *
 * --seconds S     seconds of frames per pacing mode (default 10: two segments of 5 s)
 * --quiet-wait S  before measuring, wait until other processes use < 0.3 cores, at most
 *                 S s (default 15, 0 = never wait); the CPU other processes used is
 *                 reported either way
 *
 * Last line: `bench:latency transport_p95_ms=X decoded_p95_ms=Y` (X = p95 over frames of
 * capture-to-reassembled minus that frame's encode time; Y = p95 of capture-to-decoded;
 * both with the client's default pacing). Figures also go to bench/results/latency.json.
 * Target: X < 5 ms; a miss is reported, the exit code is 1 only when the run itself
 * failed (frames lost, nothing measured).
 *
 * Method.
 *  - The Server (TCP and UDP ports 0, temp data dir) runs in a child process
 *    (bench/latency_child.ts), so the relay has a loop of its own; the clients, the
 *    encoder and the decoder share this process, as in a real client (sharp encodes and
 *    decodes on libuv's thread pool; the event loop only waits for it).
 *  - Two rooms, each with a sender and a receiver (real Clients with their MediaLinks):
 *    in one the sender paces as shipped (100 Mbit/s after a 16 KiB burst), in the other
 *    with pacing off (mediaOptions.pacingMbps = 0). Segments of 5 s alternate between
 *    them (paced first in odd rounds) so both see the same machine; 1 s of each is sent
 *    first as a warm-up and not counted.
 *  - Source: 30 raw 640x480 RGB frames of ffmpeg's testsrc2 with light temporal noise (a
 *    camera's sensor noise; ~30 KB as JPEG, 26 datagrams) read into memory before the
 *    run, cycled. "Capture" is a 30 fps timer (drift-free schedule): capture timestamp =
 *    nowUs() at the tick, then the raw frame is encoded with sharp JPEG q80 at once
 *    (encode time = until the JPEG is in hand), then Client.sendFrame(video, jpeg,
 *    captureTs).
 *  - Receiver: on each `frame` event, capture-to-reassembled = completeUs - captureTsUs
 *    (the event's delayMs: both in the server's time base; the two links' clock offsets
 *    are in the JSON, ~0 on loopback), then sharp(jpeg).raw().toBuffer() at once:
 *    decode time, and capture-to-decoded = nowUs() after it - the capture timestamp
 *    (same process, same clock).
 *  - Per frame: transport = capture-to-reassembled - encode; also after-codec =
 *    capture-to-decoded - encode - decode (the transport plus any wait for the thread
 *    pool). p50/p95/p99/max of each, per pacing mode.
 *  - "Alone" figures: before the clients start, every source frame is encoded and its
 *    JPEG decoded, one at a time, twice (the first pass is a warm-up): codec times with
 *    nothing else running, to compare with the in-run ones.
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { Client, type MediaFrame } from '../client/main_client';
import { nowUs } from '../shared/protocol/media_packet';
import {
  BENCH_DIR,
  finalLine,
  forkTs,
  LoopMonitor,
  machineCpu,
  machineCpuBetween,
  machineInfo,
  round,
  sleep,
  waitForQuiet,
  waitUntil,
  writeResults,
  type ForkedChild,
  type LoopStalls,
  summarize,
  type LatencySummary,
  runBench,
  testsrc2RawFrames,
} from './lib';

const WIDTH = 640;
const HEIGHT = 480;
const FPS = 30;
const JPEG_QUALITY = 80;
const SOURCE_FRAMES = 30;
/** ffmpeg's noise filter strength: testsrc2 plus a camera's sensor noise, ~30 KB at q80. */
const NOISE = 6;
const SEGMENT_S = 5;
const WARMUP_S = 1;
const DEFAULT_SECONDS = 10;
const TARGET_TRANSPORT_P95_MS = 5;
const QUIET_CORES = 0.3;
const DEFAULT_QUIET_WAIT_S = 15;
const OVERALL_TIMEOUT_MS = 4 * 60_000;
/** After a segment's last capture, how long to wait for its frames to arrive and decode. */
const SETTLE_MS = 1000;

type Mode = 'paced' | 'unpaced';

function log(line: string): void {
  process.stdout.write(line + '\n');
}

// ------------------------------------------------------------ source frames and codec

function rawFrames(): Promise<Buffer[]> {
  return testsrc2RawFrames({ width: WIDTH, height: HEIGHT, count: SOURCE_FRAMES, fps: FPS, noise: NOISE });
}

const encode = (raw: Buffer) => sharp(raw, { raw: { width: WIDTH, height: HEIGHT, channels: 3 } }).jpeg({ quality: JPEG_QUALITY }).toBuffer();
const decode = (jpeg: Buffer) => sharp(jpeg).raw().toBuffer();

/** Latency samples (ms) summarized: bench/lib.ts summarize. */
type Dist = LatencySummary;
const dist = (samples: number[]): Dist => summarize(samples);

/** Encode and decode of every source frame, one at a time, nothing else running (2 passes, the first not counted). */
async function codecAlone(frames: Buffer[]): Promise<{ encode: Dist; decode: Dist; jpeg_bytes: Dist }> {
  const enc: number[] = [];
  const dec: number[] = [];
  const bytes: number[] = [];
  for (let pass = 0; pass < 2; pass++) {
    for (const raw of frames) {
      const t0 = performance.now();
      const jpeg = await encode(raw);
      const t1 = performance.now();
      await decode(jpeg);
      const t2 = performance.now();
      if (pass === 1) {
        enc.push(t1 - t0);
        dec.push(t2 - t1);
        bytes.push(jpeg.length);
      }
    }
  }
  // jpeg_bytes: in bytes, not ms (same shape).
  return { encode: dist(enc), decode: dist(dec), jpeg_bytes: dist(bytes) };
}

// ------------------------------------------------------------ the pipeline

interface FrameRecord {
  mode: Mode;
  round: number;
  measured: boolean;
  captureUs: number;
  captureLagMs: number;
  encodeMs: number;
  jpegBytes: number;
  /** completeUs - captureTsUs of the received frame (server time base). */
  reassembledMs?: number;
  /** The same on this process's clock (completeUs less the receiver's clock offset, minus the capture time): a cross-check. */
  reassembledLocalMs?: number;
  /** First fragment's arrival to the last one's (completeUs - firstArrivalUs): what pacing spreads. */
  spreadMs?: number;
  decodeMs?: number;
  decodedMs?: number;
}

interface Pair {
  mode: Mode;
  sender: Client;
  receiver: Client;
  /** Frame id -> what was sent (the link numbers a stream's frames 1, 2, 3, ...). */
  sent: Map<number, FrameRecord>;
  nextFrameId: number;
  inFlight: number;
  stray: number;
  late: number;
}

async function makePair(port: number, mode: Mode): Promise<Pair> {
  const mediaOptions = mode === 'unpaced' ? { pacingMbps: 0 } : {};
  const sender = new Client({ host: '127.0.0.1', port, username: `lat-${mode}-tx`, reconnect: false, mediaOptions });
  const receiver = new Client({ host: '127.0.0.1', port, username: `lat-${mode}-rx`, reconnect: false });
  await sender.connect();
  await receiver.connect();
  const room = await sender.createRoom({ name: `bench-latency-${mode}` });
  await sender.joinRoom(room.room_id);
  await receiver.joinRoom(room.room_id);
  await Promise.all([sender.waitForMedia(), receiver.waitForMedia()]);
  await sender.setVideo(true);
  const pair: Pair = { mode, sender, receiver, sent: new Map(), nextFrameId: 1, inFlight: 0, stray: 0, late: 0 };
  receiver.on('frame', (f: MediaFrame) => {
    const rec = pair.sent.get(f.frameId);
    if (!rec || f.kindName !== 'video') {
      pair.stray++;
      return;
    }
    if (rec.reassembledMs !== undefined) {
      pair.stray++;
      return;
    }
    rec.reassembledMs = f.delayMs;
    rec.reassembledLocalMs = (f.completeUs - (receiver.media?.clockOffsetUs ?? 0) - rec.captureUs) / 1000;
    rec.spreadMs = (f.completeUs - f.firstArrivalUs) / 1000;
    pair.inFlight++;
    const t0 = nowUs();
    decode(f.data).then(
      () => {
        const t1 = nowUs();
        rec.decodeMs = (t1 - t0) / 1000;
        rec.decodedMs = (t1 - rec.captureUs) / 1000;
        pair.inFlight--;
      },
      () => {
        pair.stray++;
        pair.inFlight--;
      },
    );
  });
  return pair;
}

/** Captures at FPS for `seconds` and sends through `pair`; resolves once the frames have arrived (or SETTLE_MS passed). */
async function segment(pair: Pair, frames: Buffer[], seconds: number, round: number, measured: boolean, startFrame: number): Promise<FrameRecord[]> {
  const interval = 1000 / FPS;
  const count = Math.round(seconds * FPS);
  const records: FrameRecord[] = [];
  let encoding = 0;
  const t0 = performance.now() + 5;
  await new Promise<void>((resolve) => {
    let k = 0;
    const tick = () => {
      const scheduled = t0 + k * interval;
      const captureLagMs = performance.now() - scheduled;
      const captureUs = nowUs();
      const raw = frames[(startFrame + k) % frames.length];
      encoding++;
      encode(raw).then(
        (jpeg) => {
          const encodeMs = (nowUs() - captureUs) / 1000;
          encoding--;
          const rec: FrameRecord = { mode: pair.mode, round, measured, captureUs, captureLagMs: round2(captureLagMs), encodeMs, jpegBytes: jpeg.length };
          if (pair.sender.sendFrame('video', jpeg, captureUs)) {
            pair.sent.set(pair.nextFrameId++, rec);
            records.push(rec);
          } else {
            pair.late++;
          }
        },
        () => {
          encoding--;
          pair.late++;
        },
      );
      k++;
      if (k < count) setTimeout(tick, Math.max(0, t0 + k * interval - performance.now()));
      else resolve();
    };
    setTimeout(tick, Math.max(0, t0 - performance.now()));
  });
  const deadline = performance.now() + SETTLE_MS;
  while (performance.now() < deadline) {
    if (encoding === 0 && pair.inFlight === 0 && records.every((r) => r.decodedMs !== undefined)) break;
    await sleep(10);
  }
  return records;
}

function round2(n: number): number {
  return round(n, 3);
}

interface ModeFigures {
  frames_sent: number;
  frames_received: number;
  frames_lost: number;
  capture_to_reassembled: Dist;
  /** Cross-check on this process's clock alone (no clock offsets involved). */
  capture_to_reassembled_local_clock: Dist;
  capture_to_decoded: Dist;
  encode: Dist;
  decode: Dist;
  /** Per frame: capture-to-reassembled - encode. */
  transport: Dist;
  /** Per frame: capture-to-decoded - encode - decode. */
  after_codec: Dist;
  /** Per frame: from the encoded JPEG to the first fragment's arrival (transport - spread). */
  to_first_fragment: Dist;
  /** Per frame: first fragment to last (the part pacing stretches). */
  fragment_spread: Dist;
  capture_lag: Dist;
  per_round_transport_p95_ms: number[];
}

function figures(records: FrameRecord[], rounds: number): ModeFigures {
  const got = records.filter((r) => r.decodedMs !== undefined && r.reassembledMs !== undefined);
  const transport = (rs: FrameRecord[]) => rs.map((r) => r.reassembledMs! - r.encodeMs);
  return {
    frames_sent: records.length,
    frames_received: got.length,
    frames_lost: records.length - got.length,
    capture_to_reassembled: dist(got.map((r) => r.reassembledMs!)),
    capture_to_reassembled_local_clock: dist(got.map((r) => r.reassembledLocalMs!)),
    capture_to_decoded: dist(got.map((r) => r.decodedMs!)),
    encode: dist(records.map((r) => r.encodeMs)),
    decode: dist(got.map((r) => r.decodeMs!)),
    transport: dist(transport(got)),
    after_codec: dist(got.map((r) => r.decodedMs! - r.encodeMs - r.decodeMs!)),
    to_first_fragment: dist(got.map((r) => r.reassembledMs! - r.encodeMs - r.spreadMs!)),
    fragment_spread: dist(got.map((r) => r.spreadMs!)),
    capture_lag: dist(records.map((r) => r.captureLagMs)),
    per_round_transport_p95_ms: Array.from({ length: rounds }, (_, i) => dist(transport(got.filter((r) => r.round === i + 1))).p95_ms),
  };
}

// ------------------------------------------------------------ main

interface ServerStats {
  hrtime_us: number;
  cpu_user_us: number;
  cpu_system_us: number;
  elu_since_last: number;
  stalls: LoopStalls;
  rss_mb: number;
  media: { packets_in: number; packets_out: number; receiver_drops: number; dropped: Record<string, number> };
}

let child: ForkedChild | null = null;
const clients: Client[] = [];

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: String(DEFAULT_SECONDS) },
      'quiet-wait': { type: 'string', default: String(DEFAULT_QUIET_WAIT_S) },
    },
  });
  const seconds = Number(values.seconds);
  if (!(seconds >= 2 && seconds <= 60)) throw new Error('--seconds must be in [2, 60]');
  const quietWaitS = Number(values['quiet-wait']);
  if (!(quietWaitS >= 0 && quietWaitS <= 600)) throw new Error('--quiet-wait must be seconds in [0, 600]');
  const rounds = Math.max(1, Math.round(seconds / SEGMENT_S));
  const segmentS = seconds / rounds;
  const machine = machineInfo();
  log(
    `bench:latency on ${machine.cpus} x ${machine.cpu_model}, node ${machine.node}: ${WIDTH}x${HEIGHT} at ${FPS} fps, JPEG q${JPEG_QUALITY}, ` +
      `${seconds} s per pacing mode in ${rounds} alternating segments of ${round(segmentS, 2)} s`,
  );

  const frames = await rawFrames();
  const alone = await codecAlone(frames);
  log(
    `codec alone (${alone.encode.count} frames, one at a time): encode p50 ${alone.encode.p50_ms} ms p95 ${alone.encode.p95_ms} ms; ` +
      `decode p50 ${alone.decode.p50_ms} ms p95 ${alone.decode.p95_ms} ms; JPEG ${round(alone.jpeg_bytes.p50_ms / 1024, 1)} KiB (p50)`,
  );

  child = await forkTs(path.join(BENCH_DIR, 'latency_child.ts'), []);
  const pairs: Record<Mode, Pair> = { paced: await makePair(child.port, 'paced'), unpaced: await makePair(child.port, 'unpaced') };
  for (const p of Object.values(pairs)) clients.push(p.sender, p.receiver);
  // The receiver must know the sender's stream before frames count (the frame event says who sent it).
  await waitUntil(() => Object.values(pairs).every((p) => p.receiver.users.has(p.sender.userId!)), 5000, 'receivers to see their senders');

  // Warm-up: JIT, sharp, sockets; not counted.
  for (const m of ['paced', 'unpaced'] as Mode[]) await segment(pairs[m], frames, WARMUP_S, 0, false, 0);

  const q = await waitForQuiet(Math.max(1000, quietWaitS * 1000), QUIET_CORES);
  if (!q.quiet) log(`machine still busy (${q.busy_cores} cores used by other processes after ${q.waited_s} s); measuring anyway`);
  else if (q.waited_s > 1.5) log(`waited ${q.waited_s} s for other processes to quiet down`);

  const loop = new LoopMonitor();
  const s0 = await child.request<ServerStats>('stats');
  const m0 = machineCpu();
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  const records: Record<Mode, FrameRecord[]> = { paced: [], unpaced: [] };
  for (let r = 1; r <= rounds; r++) {
    const order: Mode[] = r % 2 === 1 ? ['paced', 'unpaced'] : ['unpaced', 'paced'];
    for (const m of order) {
      const recs = await segment(pairs[m], frames, segmentS, r, true, r * 7);
      records[m].push(...recs);
      const f = figures(recs, 1);
      log(
        `round ${r} ${m.padEnd(7)}: ${f.frames_received}/${f.frames_sent} frames; reassembled p50 ${f.capture_to_reassembled.p50_ms} p95 ${f.capture_to_reassembled.p95_ms} ms; ` +
          `decoded p50 ${f.capture_to_decoded.p50_ms} p95 ${f.capture_to_decoded.p95_ms} ms; encode p95 ${f.encode.p95_ms} ms, decode p95 ${f.decode.p95_ms} ms; ` +
          `transport p50 ${f.transport.p50_ms} p95 ${f.transport.p95_ms} ms`,
      );
    }
  }
  const wallUs = (performance.now() - w0) * 1000;
  const c1 = process.cpuUsage(c0);
  const m1 = machineCpu();
  const s1 = await child.request<ServerStats>('stats');
  const stalls = loop.take();
  loop.stop();
  const serverCpu = s1.cpu_user_us + s1.cpu_system_us - (s0.cpu_user_us + s0.cpu_system_us);
  const mc = machineCpuBetween(m0, m1);
  const load = {
    server_cpu_util: round(serverCpu / wallUs, 3),
    server_elu: round(s1.elu_since_last, 3),
    server_stalls: s1.stalls,
    client_process_cpu_util: round((c1.user + c1.system) / wallUs, 3),
    client_process_stalls: stalls,
    other_processes_cores: mc ? round(mc.busy_cores - (serverCpu + c1.user + c1.system) / wallUs, 2) : null,
    machine_steal_cores: mc?.steal_cores ?? null,
    relay: {
      packets_in: s1.media.packets_in - s0.media.packets_in,
      packets_out: s1.media.packets_out - s0.media.packets_out,
      receiver_drops: s1.media.receiver_drops - s0.media.receiver_drops,
      dropped: s1.media.dropped,
    },
  };

  const paced = figures(records.paced, rounds);
  const unpaced = figures(records.unpaced, rounds);
  const offsets = Object.fromEntries(
    Object.values(pairs).map((p) => [p.mode, { sender_clock_offset_ms: round((p.sender.media?.clockOffsetUs ?? NaN) / 1000, 3), receiver_clock_offset_ms: round((p.receiver.media?.clockOffsetUs ?? NaN) / 1000, 3) }]),
  );
  const stray = pairs.paced.stray + pairs.unpaced.stray;
  const late = pairs.paced.late + pairs.unpaced.late;

  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await child.request('close', 20_000).catch(() => undefined);
  await Promise.race([child.exited, sleep(10_000)]);
  await child.kill();
  child = null;

  const problems: string[] = [];
  if (paced.frames_received === 0 || unpaced.frames_received === 0) problems.push('no frames measured');
  const lost = paced.frames_lost + unpaced.frames_lost;
  if (lost > 0) problems.push(`${lost} frames not received and decoded`);
  if (stray) problems.push(`${stray} stray frames (unknown frame id, duplicates or decode errors)`);
  if (late) problems.push(`${late} frames not sent (link not registered or encode failed)`);
  const complete = problems.length === 0;
  const target_met = paced.transport.p95_ms < TARGET_TRANSPORT_P95_MS;

  const row = (name: string, d: Dist) => `  ${name.padEnd(28)} p50 ${String(d.p50_ms).padStart(7)}  p95 ${String(d.p95_ms).padStart(7)}  p99 ${String(d.p99_ms).padStart(7)}  max ${String(d.max_ms).padStart(7)} ms`;
  for (const [name, f] of [['paced (as shipped)', paced], ['pacing off', unpaced]] as [string, ModeFigures][]) {
    log('');
    log(`${name}: ${f.frames_received}/${f.frames_sent} frames`);
    log(row('capture -> reassembled', f.capture_to_reassembled));
    log(row('capture -> decoded', f.capture_to_decoded));
    log(row('encode (in run)', f.encode));
    log(row('decode (in run)', f.decode));
    log(row('transport (reass. - encode)', f.transport));
    log(row('  encoded..1st fragment', f.to_first_fragment));
    log(row('  1st..last fragment', f.fragment_spread));
    log(row('decoded - encode - decode', f.after_codec));
    log(row('capture tick vs schedule', f.capture_lag));
  }
  log('');
  log(
    `load: server CPU ${load.server_cpu_util} cores (ELU ${load.server_elu}, loop delay p99 ${load.server_stalls.loop_delay_p99_ms} ms); ` +
      `client process CPU ${load.client_process_cpu_util} cores (loop delay p99 ${stalls.loop_delay_p99_ms} ms, max ${stalls.loop_delay_max_ms} ms); ` +
      `other processes ${load.other_processes_cores} cores; relay forwarded ${load.relay.packets_out} datagrams, ${load.relay.receiver_drops} dropped`,
  );
  log(
    `transport p95: paced ${paced.transport.p95_ms} ms, pacing off ${unpaced.transport.p95_ms} ms (pacing costs ${round(paced.transport.p95_ms - unpaced.transport.p95_ms, 3)} ms at p95); ` +
      `target < ${TARGET_TRANSPORT_P95_MS} ms: ${target_met ? 'met' : 'MISSED'}`,
  );

  const file = writeResults('latency', {
    bench: 'latency',
    date: machine.date,
    machine: { ...machine, loadavg_at_end: os.loadavg().map((l) => round(l, 2)) },
    config: {
      width: WIDTH,
      height: HEIGHT,
      fps: FPS,
      jpeg_quality: JPEG_QUALITY,
      source: `ffmpeg testsrc2 ${WIDTH}x${HEIGHT} + noise alls=${NOISE}:allf=t, ${SOURCE_FRAMES} raw frames in memory`,
      seconds_per_mode: seconds,
      rounds,
      segment_s: segmentS,
      warmup_s: WARMUP_S,
      settle_ms: SETTLE_MS,
      pacing: { paced: 'client default (100 Mbit/s after a 16 KiB burst)', unpaced: 'pacingMbps 0' },
      server: 'Server in a child process (bench/latency_child.ts); clients, encode and decode in this process',
      quiet_wait_s: quietWaitS,
    },
    transport_p95_ms: paced.transport.p95_ms,
    decoded_p95_ms: paced.capture_to_decoded.p95_ms,
    transport_p95_ms_unpaced: unpaced.transport.p95_ms,
    target: { transport_p95_max_ms: TARGET_TRANSPORT_P95_MS, met: target_met },
    codec_alone: alone,
    paced,
    unpaced,
    clock_offsets: offsets,
    load,
    quiet_before: q,
    complete,
    problems,
  });
  if (!complete) log(`RUN INCOMPLETE: ${problems.join('; ')}`);
  log(`results: ${path.relative(process.cwd(), file)}`);
  log(finalLine('latency', { transport_p95_ms: paced.transport.p95_ms, decoded_p95_ms: paced.capture_to_decoded.p95_ms }));
  return complete ? 0 : 1;
}

runBench('latency', main, {
  timeoutMs: OVERALL_TIMEOUT_MS,
  cleanup: async (hard) => {
    if (hard) return child?.proc.kill('SIGKILL');
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await child?.kill().catch(() => undefined);
  },
});
