/**
 * The server side of bench/control.ts, in a process of its own so that the server
 * and the load generator share the machine's cores the way a real deployment
 * shares them with its users (forked by lib.ts forkTs; talks over the IPC channel).
 *
 *   server_child.ts ours   the product's Server on 127.0.0.1:0, a fresh temporary data
 *                          directory (real SQLite file), log level warn, and the
 *                          per-user chat rate limit lifted (it defaults to 5/s and a
 *                          burst of 20, which would refuse a benchmark's load).
 *   server_child.ts bare   the control: a minimal net server that only frames and
 *                          echoes. Each connection has the same FrameDecoder; every
 *                          CHAT_MESSAGE frame is encoded once (encodeFrame) and written
 *                          to every other connection. Every frame with a message_id
 *                          gets a minimal ACK frame naming it, so the senders' window
 *                          of unacknowledged messages works as it does with the real
 *                          server (which ACKs each chat message). No validation, no
 *                          users, no rooms, no SQLite. Writes are batched per loop
 *                          turn exactly as the product's Session does (cork/uncork).
 *
 * Commands (IPC): `stats` -> CPU time, event-loop utilization, clock, counters;
 * `close` -> closes the server (reporting the chat rows in SQLite for `ours`), then
 * the process exits by itself (so --cpu-prof writes its profile). It also exits when
 * the parent goes away.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { encodeFrame, FrameDecoder } from '../shared/protocol/framing';
import { serveChild, startBenchServer, type ServedChild } from './lib';

/** High enough never to bind: the bench measures the server, not its rate limiter. */
const UNLIMITED_CHAT = 1e9;

async function startOurs(): Promise<ServedChild> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-bench-'));
  const server = await startBenchServer(dataDir, { chatRatePerSecond: UNLIMITED_CHAT, chatBurst: UNLIMITED_CHAT });
  return {
    port: server.port,
    counters: () => {
      const s = server.stats();
      return { connections: s.connections, users: s.users, ...s.counters };
    },
    close: async () => {
      const file = server.databaseFile;
      await server.close();
      let chatRows = -1;
      try {
        const db = new Database(file, { readonly: true });
        chatRows = (db.prepare('SELECT COUNT(*) AS n FROM chat_messages').get() as { n: number }).n;
        db.close();
      } catch {
        /* reported as -1 */
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
      return { chat_rows: chatRows };
    },
  };
}

async function startBare(): Promise<ServedChild> {
  const conns = new Set<net.Socket>();
  const counters = { connections: 0, messagesIn: 0, messagesOut: 0, bytesIn: 0 };
  // The same transport batching as the product's Session.sendFrame: writes are corked
  // until the loop has handled every ready socket, so the control measures framing and
  // fan-out, not a syscall per frame that the product does not pay either.
  const corked = new Set<net.Socket>();
  const flush = () => {
    for (const s of corked) s.uncork();
    corked.clear();
  };
  const write = (s: net.Socket, frame: Buffer) => {
    if (!corked.has(s)) {
      if (corked.size === 0) setImmediate(flush);
      corked.add(s);
      s.cork();
    }
    s.write(frame);
  };
  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    const decoder = new FrameDecoder();
    conns.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => conns.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      counters.bytesIn += chunk.length;
      for (const f of decoder.push(chunk)) {
        if (!f.ok) {
          if (f.fatal) socket.destroy();
          continue;
        }
        counters.messagesIn++;
        const env = f.value as { type?: unknown; message_id?: unknown };
        if (env.type === 'CHAT_MESSAGE') {
          const frame = encodeFrame(env);
          for (const other of conns) {
            if (other !== socket && !other.destroyed) {
              write(other, frame);
              counters.messagesOut++;
            }
          }
        }
        if (typeof env.message_id === 'string') {
          write(socket, encodeFrame({ type: 'ACK', data: {}, reply_to: env.message_id }));
          counters.messagesOut++;
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(0, '127.0.0.1', () => resolve());
  });
  const a = tcp.address();
  return {
    port: a && typeof a === 'object' ? a.port : 0,
    counters: () => ({ ...counters, connections: conns.size }),
    close: async () => {
      for (const s of conns) s.destroy();
      await new Promise<void>((r) => tcp.close(() => r()));
      return {};
    },
  };
}

serveChild('server_child', () => {
  const mode = process.argv[2];
  if (mode !== 'ours' && mode !== 'bare') throw new Error(`usage: server_child.ts ours|bare (got ${mode})`);
  return mode === 'ours' ? startOurs() : startBare();
});
