/**
 * The server side of bench/files.ts, in a process of its own (forked by lib.ts forkTs),
 * so the server's hashing and disk writes run on their own core as in a deployment.
 *
 *   files_child.ts ours   the product's Server on 127.0.0.1:0 (control) with its file
 *                         server on a free port and a fresh data directory.
 *   files_child.ts raw    the control: a bare TCP copy with MD5 on this end. A
 *                         connection's first byte says what it wants:
 *                           'U' + the file's bytes: piped through an MD5 into a file,
 *                               fsynced, then the MD5 (32 hex digits) is sent back;
 *                           'D': the last file received is piped through an MD5 into
 *                               the socket, which is then ended.
 *                         Node streams with 256 KiB reads, the same chunk size as the
 *                         product's default, and no framing, tickets or checks.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { serveChild, startBenchServer, type ServedChild } from './lib';

const CHUNK = 256 * 1024;

/** A pass-through stream that hashes what goes through it. */
export class Md5Tap extends Transform {
  private readonly hash = createHash('md5');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

async function startOurs(dataDir: string): Promise<ServedChild> {
  const server = await startBenchServer(dataDir);
  return {
    port: server.port,
    counters: () => {
      const f = server.fileStats();
      return { files: f.files, stored_bytes: f.stored_bytes, ...f.counters };
    },
    close: async () => {
      await server.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
      return {};
    },
  };
}

async function receive(socket: net.Socket, file: string): Promise<void> {
  const tap = new Md5Tap();
  const out = fs.createWriteStream(file, { highWaterMark: CHUNK });
  // The client half-closes after the upload: the MD5 goes back on the other half.
  await pipeline(socket, tap, out);
  const fd = await fs.promises.open(file, 'r+');
  await fd.sync();
  await fd.close();
  socket.end(tap.digest());
}

async function send(socket: net.Socket, file: string): Promise<void> {
  await pipeline(fs.createReadStream(file, { highWaterMark: CHUNK }), new Md5Tap(), socket);
}

async function startRaw(dataDir: string): Promise<ServedChild> {
  const stored = path.join(dataDir, 'copy.bin');
  const counters = { uploads: 0, downloads: 0 };
  const conns = new Set<net.Socket>();
  // Half-open: an upload ends its side when the bytes are sent and waits for the MD5.
  const tcp = net.createServer({ allowHalfOpen: true }, (socket) => {
    conns.add(socket);
    socket.on('close', () => conns.delete(socket));
    socket.on('error', () => undefined);
    socket.once('readable', () => {
      const first = socket.read(1) as Buffer | null;
      if (!first) return socket.destroy();
      const op = first.toString('latin1');
      const done = op === 'U' ? receive(socket, stored).then(() => counters.uploads++) : op === 'D' ? send(socket, stored).then(() => counters.downloads++) : Promise.reject(new Error(`unknown op ${op}`));
      done.catch(() => socket.destroy());
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(0, '127.0.0.1', () => resolve());
  });
  const a = tcp.address();
  return {
    port: a && typeof a === 'object' ? a.port : 0,
    counters: () => ({ ...counters }),
    close: async () => {
      for (const s of conns) s.destroy();
      await new Promise<void>((r) => tcp.close(() => r()));
      fs.rmSync(dataDir, { recursive: true, force: true });
      return {};
    },
  };
}

if (require.main === module) {
  const mode = process.argv[2];
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `lanvc-bench-files-${mode}-`));
  if (mode === 'ours') serveChild('files_child', () => startOurs(dataDir));
  else if (mode === 'raw') serveChild('files_child', () => startRaw(dataDir));
  else {
    process.stderr.write('usage: files_child.ts ours|raw\n');
    process.exit(2);
  }
}
