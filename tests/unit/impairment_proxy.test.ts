/**
 * The UDP impairment proxy of the test kit, through real dgram sockets on loopback:
 * a client socket → proxy → echo target → proxy → client.
 *
 * Timing is asserted loosely (behaviour, not timer precision): this runs on a
 * busy 2-core box next to other test files.
 */
import * as dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { ImpairmentProxy, type Impairment } from '../kit/impairment_proxy';

const HOST = '127.0.0.1';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitUntil(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** Everything opened by a test, closed in afterEach whatever happened. */
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function bindUdp(): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, HOST, () => {
      s.off('error', reject);
      cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
      resolve(s);
    });
  });
}

/** Echoes every datagram back to its sender; remembers the source ports it saw. */
async function echoTarget(): Promise<{ port: number; sourcePorts: Set<number>; received: () => number }> {
  const s = await bindUdp();
  const sourcePorts = new Set<number>();
  let received = 0;
  s.on('message', (msg, rinfo) => {
    received++;
    sourcePorts.add(rinfo.port);
    s.send(msg, rinfo.port, rinfo.address);
  });
  return { port: s.address().port, sourcePorts, received: () => received };
}

async function proxyTo(port: number, seed: number, upstream?: Impairment, downstream?: Impairment): Promise<{ proxy: ImpairmentProxy; port: number }> {
  const proxy = new ImpairmentProxy({ target: { host: HOST, port }, seed, upstream, downstream });
  cleanups.push(() => proxy.close());
  return { proxy, port: await proxy.start() };
}

interface Echo {
  seq: number;
  at: number;
}

/** A client that sends datagrams carrying a 4-byte sequence number and records the echoes. */
async function seqClient(proxyPort: number, size = 64) {
  const s = await bindUdp();
  const sentAt = new Map<number, number>();
  const echoes: Echo[] = [];
  s.on('message', (msg) => echoes.push({ seq: msg.readUInt32BE(0), at: performance.now() }));
  const sendOne = (seq: number) => {
    const b = Buffer.alloc(size);
    b.writeUInt32BE(seq, 0);
    if (!sentAt.has(seq)) sentAt.set(seq, performance.now());
    s.send(b, proxyPort, HOST);
  };
  return {
    socket: s,
    echoes,
    sentAt,
    /**
     * Sends 0..n-1 in batches, yielding to the event loop between them so that
     * proxy and target (same process) read before the kernel's socket buffers fill.
     */
    async send(n: number, batch = 25, pauseMs = 0): Promise<void> {
      for (let i = 0; i < n; i++) {
        sendOne(i);
        if ((i + 1) % batch === 0) await (pauseMs > 0 ? sleep(pauseMs) : new Promise<void>((r) => setImmediate(r)));
      }
    },
  };
}

function inversions(seqs: number[]): number {
  let n = 0;
  let max = -1;
  for (const q of seqs) {
    if (q < max) n++;
    else max = q;
  }
  return n;
}

describe('ImpairmentProxy', () => {
  it('with no impairment passes every datagram, in order, both ways', async () => {
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 1);
    const c = await seqClient(port);
    await c.send(500);
    await waitUntil(() => c.echoes.length >= 500, 5000, '500 echoes');
    expect(c.echoes.map((e) => e.seq)).toEqual([...Array(500).keys()]);
    const st = proxy.stats();
    for (const d of [st.upstream, st.downstream]) {
      expect(d).toMatchObject({ received: 500, forwarded: 500, dropped_loss: 0, dropped_queue: 0, duplicated: 0, reordered: 0, bytes: 500 * 64 });
    }
    expect(st.clients).toBe(1);
    expect(echo.sourcePorts.size).toBe(1);
    expect(echo.sourcePorts.has(port)).toBe(false);
  });

  it('drops about 30% at loss 0.3, and the same seed drops the same datagrams', async () => {
    const N = 2000;
    const run = async (seed: number) => {
      const echo = await echoTarget();
      const { proxy, port } = await proxyTo(echo.port, seed, { loss: 0.3 });
      const c = await seqClient(port);
      await c.send(N);
      await waitUntil(() => c.echoes.length >= N - proxy.stats().upstream.dropped_loss, 5000, 'all surviving echoes');
      const got = new Set(c.echoes.map((e) => e.seq));
      const dropped = [...Array(N).keys()].filter((q) => !got.has(q));
      const st = proxy.stats().upstream;
      expect(st.received).toBe(N);
      expect(st.dropped_loss).toBe(dropped.length);
      expect(st.forwarded).toBe(N - dropped.length);
      await proxy.close();
      return dropped;
    };
    const a = await run(42);
    const b = await run(42);
    const other = await run(43);
    expect(a.length / N).toBeGreaterThan(0.25);
    expect(a.length / N).toBeLessThan(0.35);
    expect(b).toEqual(a);
    expect(other).not.toEqual(a);
  });

  it('loss decisions do not depend on the other settings (fixed draws per datagram)', async () => {
    const N = 400;
    const run = async (upstream: Impairment) => {
      const echo = await echoTarget();
      const { proxy, port } = await proxyTo(echo.port, 7, upstream);
      const c = await seqClient(port);
      await c.send(N);
      await waitUntil(() => proxy.stats().upstream.received === N && proxy.pending().inFlight === 0, 5000, 'proxy drained');
      await waitUntil(() => c.echoes.length === proxy.stats().upstream.forwarded, 5000, 'echoes');
      const seen = new Set(c.echoes.map((e) => e.seq));
      await proxy.close();
      return [...Array(N).keys()].filter((q) => !seen.has(q));
    };
    const plain = await run({ loss: 0.2 });
    const withMore = await run({ loss: 0.2, duplicate: 0.3, jitterMs: 3, delayMs: 3 });
    expect(plain.length).toBeGreaterThan(0);
    expect(withMore).toEqual(plain);
  });

  it('delays by 30 ± 10 ms', async () => {
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 3, { delayMs: 30, jitterMs: 10 });
    const c = await seqClient(port);
    await c.send(100, 5, 5);
    await waitUntil(() => c.echoes.length >= 100, 5000, '100 echoes');
    const rtts = c.echoes.map((e) => e.at - c.sentAt.get(e.seq)!).sort((x, y) => x - y);
    const median = rtts[50]!;
    // Node timers never fire before their time on their own clock, which may lag real time by ~1 ms.
    expect(rtts[0]).toBeGreaterThanOrEqual(18);
    expect(median).toBeGreaterThan(24);
    expect(median).toBeLessThan(45);
    // The jitter spread shows: not every datagram took the same time.
    expect(rtts[95]! - rtts[4]!).toBeGreaterThan(5);
    expect(proxy.stats().upstream.forwarded).toBe(100);
  });

  it('duplicates about the configured share, every copy delivered', async () => {
    const N = 400;
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 5, { duplicate: 0.5 });
    const c = await seqClient(port);
    await c.send(N);
    const dup = () => proxy.stats().upstream.duplicated;
    await waitUntil(() => c.echoes.length >= N + dup(), 5000, 'all echoes and copies');
    expect(dup() / N).toBeGreaterThan(0.4);
    expect(dup() / N).toBeLessThan(0.6);
    const counts = new Map<number, number>();
    for (const e of c.echoes) counts.set(e.seq, (counts.get(e.seq) ?? 0) + 1);
    expect(counts.size).toBe(N);
    expect([...counts.values()].filter((k) => k === 2).length).toBe(dup());
    expect(Math.max(...counts.values())).toBe(2);
    expect(proxy.stats().upstream.forwarded).toBe(N + dup());
  });

  it('reorders through jitter; keeps order with a fixed delay', async () => {
    const N = 300;
    const echoA = await echoTarget();
    const jittery = await proxyTo(echoA.port, 11, { delayMs: 20, jitterMs: 15 });
    const a = await seqClient(jittery.port);
    const echoB = await echoTarget();
    const steady = await proxyTo(echoB.port, 11, { delayMs: 20 });
    const b = await seqClient(steady.port);
    await Promise.all([a.send(N, 3, 1), b.send(N, 3, 1)]);
    await waitUntil(() => a.echoes.length >= N && b.echoes.length >= N, 5000, 'all echoes');
    const aSeqs = a.echoes.map((e) => e.seq);
    expect(new Set(aSeqs).size).toBe(N);
    expect(inversions(aSeqs)).toBeGreaterThan(0);
    expect(jittery.proxy.stats().upstream.reordered).toBe(inversions(aSeqs));
    expect(b.echoes.map((e) => e.seq)).toEqual([...Array(N).keys()]);
    expect(steady.proxy.stats().upstream.reordered).toBe(0);
  });

  it('reorder holds some datagrams back so later ones overtake them', async () => {
    const N = 300;
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 13, { reorder: 0.1, reorderDelayMs: 25 });
    const c = await seqClient(port);
    await c.send(N, 3, 1);
    await waitUntil(() => c.echoes.length >= N, 5000, 'all echoes');
    const st = proxy.stats().upstream;
    expect(st.held_back).toBeGreaterThan(N * 0.05);
    expect(st.held_back).toBeLessThan(N * 0.15);
    const seqs = c.echoes.map((e) => e.seq);
    expect(inversions(seqs)).toBeGreaterThan(0);
    expect(st.reordered).toBe(inversions(seqs));
  });

  it('caps throughput at the rate and drops beyond the bounded queue', async () => {
    const rateKbps = 1600; // 200 bytes/ms
    const size = 1000;
    const N = 600;
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 17, { rateKbps, maxQueueBytes: 40_000 });
    const c = await seqClient(port, size);
    await c.send(N, 20);
    await waitUntil(() => proxy.stats().upstream.received === N, 5000, 'proxy read everything');
    await waitUntil(() => proxy.pending().queued === 0, 5000, 'rate queue drained');
    await waitUntil(() => c.echoes.length >= proxy.stats().upstream.forwarded, 5000, 'echoes');
    const st = proxy.stats().upstream;
    expect(st.dropped_queue).toBeGreaterThan(0);
    expect(st.forwarded + st.dropped_queue).toBe(N);
    // At most burst + queue + what the rate allowed while sending; nowhere near all of it.
    expect(st.forwarded).toBeLessThan(N / 2);
    const first = c.echoes[0]!.at;
    const last = c.echoes[c.echoes.length - 1]!.at;
    const bytesPerMs = ((c.echoes.length - 1) * size) / (last - first);
    expect(bytesPerMs).toBeLessThan(rateKbps / 8 * 1.3);
    expect(bytesPerMs).toBeGreaterThan(rateKbps / 8 * 0.5);
  });

  it('gives each client its own upstream source port and routes replies back to it', async () => {
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 19);
    const clients = await Promise.all([0, 1, 2].map(() => bindUdp()));
    const got: number[][] = clients.map(() => []);
    clients.forEach((s, i) => s.on('message', (m) => got[i]!.push(m.readUInt8(0))));
    for (let k = 0; k < 5; k++) clients.forEach((s, i) => s.send(Buffer.from([i, k]), port, HOST));
    await waitUntil(() => got.every((g) => g.length === 5), 5000, 'replies to every client');
    got.forEach((g, i) => expect(g).toEqual([i, i, i, i, i]));
    expect(echo.sourcePorts.size).toBe(3);
    expect(proxy.stats().clients).toBe(3);
    const mapped = proxy.clients();
    expect(new Set(mapped.map((m) => m.upstreamPort))).toEqual(echo.sourcePorts);
    expect(new Set(mapped.map((m) => m.client))).toEqual(new Set(clients.map((s) => `${HOST}:${s.address().port}`)));
  });

  it('changes impairment at runtime', async () => {
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 23, { loss: 1 });
    const c = await seqClient(port);
    await c.send(50);
    await waitUntil(() => proxy.stats().upstream.dropped_loss === 50, 5000, 'all dropped');
    expect(c.echoes.length).toBe(0);
    proxy.setImpairment('upstream', {});
    proxy.setImpairment('downstream', { loss: 1 });
    await c.send(50);
    await waitUntil(() => proxy.stats().downstream.dropped_loss === 50, 5000, 'replies dropped');
    expect(echo.received()).toBe(50);
    expect(c.echoes.length).toBe(0);
    proxy.setImpairment('downstream', {});
    await c.send(50);
    await waitUntil(() => c.echoes.length === 50, 5000, 'echoes pass again');
  });

  it('lifting a rate limit releases the queue at once', async () => {
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 29, { rateKbps: 8, burstBytes: 100 }); // 1 byte/ms
    const c = await seqClient(port, 100);
    await c.send(20);
    await waitUntil(() => proxy.stats().upstream.received === 20, 5000, 'proxy read everything');
    expect(proxy.pending().queued).toBeGreaterThan(15);
    proxy.setImpairment('upstream', {});
    expect(proxy.pending().queued).toBe(0);
    await waitUntil(() => c.echoes.length === 20, 5000, 'everything delivered');
    expect(c.echoes.map((e) => e.seq)).toEqual([...Array(20).keys()]);
  });

  it('close() drops what is pending, clears every timer and socket, and is idempotent', async () => {
    const echo = await echoTarget();
    const { proxy, port } = await proxyTo(echo.port, 31, { delayMs: 200, rateKbps: 80, burstBytes: 1000 });
    const c = await seqClient(port, 500);
    await c.send(40);
    await waitUntil(() => proxy.stats().upstream.received === 40, 5000, 'proxy read everything');
    const before = proxy.pending();
    expect(before.timers).toBeGreaterThan(1);
    expect(before.queued + before.inFlight).toBeGreaterThan(0);
    await proxy.close();
    expect(proxy.pending()).toEqual({ timers: 0, queued: 0, inFlight: 0, sockets: 0 });
    const frozen = proxy.stats();
    await c.send(10); // to a closed port: goes nowhere
    await sleep(300);
    expect(proxy.stats()).toEqual({ ...frozen, clients: 0 });
    expect(echo.received()).toBe(0);
    expect(c.echoes.length).toBe(0);
    await proxy.close();
    await expect(proxy.start()).rejects.toThrow(/after close/);
  });

  it('forgets idle clients and maps them afresh when they come back', async () => {
    const echo = await echoTarget();
    const proxy = new ImpairmentProxy({ target: { host: HOST, port: echo.port }, seed: 41, idleTimeoutMs: 100 });
    cleanups.push(() => proxy.close());
    const c = await seqClient(await proxy.start());
    await c.send(3);
    await waitUntil(() => c.echoes.length === 3, 5000, 'echoes');
    const firstPort = proxy.clients()[0]!.upstreamPort;
    await waitUntil(() => proxy.stats().clients === 0, 5000, 'idle mapping expired');
    expect(proxy.pending().sockets).toBe(1);
    await c.send(3);
    await waitUntil(() => c.echoes.length === 6, 5000, 'echoes after re-mapping');
    expect(proxy.stats().clients).toBe(1);
    expect(echo.sourcePorts.size).toBe(2);
    expect(echo.sourcePorts.has(firstPort!)).toBe(true);
  });

  it('refuses non-loopback addresses', () => {
    expect(() => new ImpairmentProxy({ target: { host: '192.168.1.10', port: 9 }, seed: 1 })).toThrow(/loopback/);
    expect(() => new ImpairmentProxy({ target: { host: HOST, port: 9 }, seed: 1, host: '0.0.0.0' })).toThrow(/loopback/);
    expect(() => new ImpairmentProxy({ target: { host: HOST, port: 9 }, seed: 1, upstream: { loss: 2 } })).toThrow(RangeError);
  });

  it('many() proxies several named ports with one call', async () => {
    const [v, a] = [await echoTarget(), await echoTarget()];
    const group = await ImpairmentProxy.many({ video: { host: HOST, port: v.port }, audio: { host: HOST, port: a.port } }, { seed: 37 });
    cleanups.push(() => group.close());
    expect(Object.keys(group.ports)).toEqual(['video', 'audio']);
    expect(group.ports.video).not.toBe(group.ports.audio);
    const cv = await seqClient(group.ports.video!);
    const ca = await seqClient(group.ports.audio!);
    await cv.send(10);
    await ca.send(20);
    await waitUntil(() => cv.echoes.length === 10 && ca.echoes.length === 20, 5000, 'echoes via both');
    expect(v.received()).toBe(10);
    expect(a.received()).toBe(20);
    group.setImpairment('upstream', { loss: 1 });
    await cv.send(10);
    await waitUntil(() => group.stats().video!.upstream.dropped_loss === 10, 5000, 'drops');
    await group.close();
    for (const p of Object.values(group.proxies)) expect(p.pending().sockets).toBe(0);
  });
});
