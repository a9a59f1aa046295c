/**
 * bench:monitor — what the server monitor costs the server it watches, with 200 users
 * in 10 rooms: the observer snapshot, the monitor's text formatting, and the whole
 * dashboard (blessed drawing a 200x60 screen once a second) as CPU over a window,
 * measured side by side with the same server and users and no monitor.
 *
 *   npm run bench:monitor [-- --users N] [--window S]
 *
 * Last line: `bench:monitor snapshot_p50_ms=A snapshot_p99_ms=B view_p50_ms=C
 * cpu_pct_without=D cpu_pct_with=E snapshot_kib=F` (CPU as % of one core over the
 * window, this process: server, idle users' heartbeats and, in the second, the
 * monitor). Figures also go to bench/results/monitor.json. No target is set by the
 * issue; the monitor should stay a small fraction of a core.
 *
 * Method. One process: a Server on loopback, N library Clients signed in and joined
 * (20 per room), idle but for heartbeats. The dashboard draws into an in-memory
 * terminal (a writable that reports 200x60 and isTTY), so blessed does all of its work
 * but no real terminal is needed. Windows alternate: without, with, without, with;
 * medians.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { Client } from '../client/main_client';
import { ServerMonitor } from '../gui/server_gui';
import { computeRates, formatHeaderLines, formatRoomsTable, formatTrafficLines, formatTransfers, formatUsersTable } from '../gui/monitor_view';
import type { Server } from '../server/main_server';
import { finalLine, machineInfo, median, round, runBench, sleep, startBenchServer, summarize, writeResults } from './lib';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

/** A terminal that is only memory: blessed writes escape sequences into it and they are dropped. */
function memoryTerminal(cols: number, rows: number): { input: NodeJS.ReadStream; output: NodeJS.WriteStream; bytes: () => number } {
  let bytes = 0;
  const output = new Writable({
    write(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      cb();
    },
  }) as unknown as NodeJS.WriteStream & { columns: number; rows: number; isTTY: boolean };
  output.columns = cols;
  output.rows = rows;
  output.isTTY = true;
  const input = new PassThrough() as unknown as NodeJS.ReadStream & { isTTY: boolean; setRawMode: (b: boolean) => unknown };
  input.isTTY = true;
  input.setRawMode = () => input;
  return { input, output, bytes: () => bytes };
}

async function cpuOver(ms: number): Promise<number> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(ms);
  const c = process.cpuUsage(c0);
  return ((c.user + c.system) / 1000 / (performance.now() - t0)) * 100;
}

const clients: Client[] = [];
let server: Server | null = null;
let dataDir = '';

async function main(): Promise<number> {
  const users = arg('users', 200);
  const windowMs = arg('window', 10) * 1000;
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-bench-monitor-'));
  server = await startBenchServer(dataDir, { maxParticipants: 100 });
  const rooms = Math.max(1, Math.ceil(users / 20));
  for (let r = 0; r < rooms; r++) {
    let roomId = '';
    for (let i = 0; i < 20 && clients.length < users; i++) {
      const c = new Client({ host: '127.0.0.1', port: server.port, username: `u${r}-${i}`, reconnect: false });
      await c.connect();
      if (!roomId) roomId = (await c.createRoom({ name: `room ${r}` })).room_id;
      await c.joinRoom(roomId);
      clients.push(c);
    }
  }
  process.stderr.write(`bench:monitor: ${clients.length} users in ${rooms} rooms\n`);

  // 1. The observer snapshot and the monitor's formatting, alone.
  const snapMs: number[] = [];
  const viewMs: number[] = [];
  let prev = server.snapshot();
  for (let i = 0; i < 500; i++) {
    const t0 = performance.now();
    const s = server.snapshot();
    const t1 = performance.now();
    const rates = computeRates(prev, s);
    formatHeaderLines(s, 200);
    formatUsersTable(s.users, 114, s.media);
    formatRoomsTable(s.rooms, 82);
    formatTrafficLines(s, rates, 114);
    formatTransfers(s.files, 82, 20);
    const t2 = performance.now();
    snapMs.push(t1 - t0);
    viewMs.push(t2 - t1);
    prev = s;
  }
  const snapshotKib = JSON.stringify(server.snapshot()).length / 1024;

  // 2. CPU over a window, without and with the dashboard, alternating.
  const without: number[] = [];
  const withMon: number[] = [];
  let drawnBytes = 0;
  for (let round_ = 0; round_ < 2; round_++) {
    without.push(await cpuOver(windowMs));
    const term = memoryTerminal(200, 60);
    const monitor = new ServerMonitor({ server, logFile: path.join(dataDir, 'server.log'), input: term.input, output: term.output });
    monitor.start();
    withMon.push(await cpuOver(windowMs));
    drawnBytes = term.bytes();
    monitor.stop();
    await monitor.done;
  }

  const snap = summarize(snapMs);
  const view = summarize(viewMs);
  const results = {
    machine: machineInfo(),
    users: clients.length,
    rooms,
    window_s: windowMs / 1000,
    snapshot_ms: snap,
    view_ms: view,
    snapshot_kib: round(snapshotKib, 1),
    cpu_pct_without: without.map((v) => round(v, 2)),
    cpu_pct_with: withMon.map((v) => round(v, 2)),
    terminal_bytes_last_window: drawnBytes,
  };
  const file = writeResults('monitor', results);
  process.stderr.write(`bench:monitor: results in ${file}\n`);
  process.stdout.write(
    finalLine('monitor', {
      snapshot_p50_ms: snap.p50_ms,
      snapshot_p99_ms: snap.p99_ms,
      view_p50_ms: view.p50_ms,
      cpu_pct_without: median(without),
      cpu_pct_with: median(withMon),
      snapshot_kib: round(snapshotKib, 0),
    }) + '\n',
  );
  await cleanup();
  return 0;
}

async function cleanup(): Promise<void> {
  await Promise.all(clients.splice(0).map((c) => c.close().catch(() => undefined)));
  await server?.close().catch(() => undefined);
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
}

runBench('monitor', main, { timeoutMs: 5 * 60_000, cleanup });
