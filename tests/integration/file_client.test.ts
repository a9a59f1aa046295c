/**
 * client/file_client.ts against a real Server (with its file server on a free port) and
 * real Clients: sizes around the chunk boundary up to 100 MiB, the size limit refused
 * before any byte moves, progress, names that coexist, downloads that never overwrite,
 * and resuming through a TCP proxy that cuts the connection or corrupts a chunk, with
 * the recorded streams decoded to prove nothing verified is sent twice.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileClient, type TransferProgress } from '../../client/file_client';
import type { Client } from '../../client/main_client';
import { DEFAULTS } from '../../shared/constants';
import { FileFrameDecoder, type FileFrame } from '../../shared/protocol/file_frames';
import type { Server } from '../../server/main_server';
import { Harness, rejectsWith, waitUntil } from '../kit/server';
import { joined, TcpProxy, type ProxyConnection } from '../kit/tcp_proxy';

const CHUNK = DEFAULTS.files.chunkSize;
const MiB = 1024 * 1024;

const h = new Harness();
const dirs: string[] = [];
const proxies: TcpProxy[] = [];

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await h.closeAll();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-files-'));
  dirs.push(d);
  return d;
}

/** A file of random bytes written in 4 MiB pieces; returns its MD5. */
function randomFile(file: string, size: number): string {
  const hash = createHash('md5');
  const fd = fs.openSync(file, 'w');
  try {
    for (let left = size; left > 0; ) {
      const b = randomBytes(Math.min(left, 4 * MiB));
      hash.update(b);
      fs.writeSync(fd, b);
      left -= b.length;
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

function md5Of(file: string): string {
  const hash = createHash('md5');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(4 * MiB);
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Byte-for-byte equality, read in pieces (the files may be 100 MiB). */
function sameBytes(a: string, b: string): boolean {
  if (fs.statSync(a).size !== fs.statSync(b).size) return false;
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const ba = Buffer.allocUnsafe(4 * MiB);
  const bb = Buffer.allocUnsafe(4 * MiB);
  try {
    for (;;) {
      const na = fs.readSync(fa, ba, 0, ba.length, null);
      const nb = fs.readSync(fb, bb, 0, bb.length, null);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** Every frame of a recorded stream, in order. */
function frames(chunks: Buffer[]): FileFrame[] {
  const out: FileFrame[] = [];
  for (const d of new FileFrameDecoder().push(joined(chunks))) {
    if (!d.ok) throw d.error;
    out.push(d.frame);
  }
  return out;
}

function headersOf<T extends FileFrame['header']['type']>(fs_: FileFrame[], type: T): Extract<FileFrame['header'], { type: T }>[] {
  return fs_.map((f) => f.header).filter((x): x is Extract<FileFrame['header'], { type: T }> => x.type === type);
}

/** A meeting of alice and bob on a server with its file server on a free port. */
async function meeting(): Promise<{ server: Server; alice: Client; bob: Client }> {
  const { server, clients } = await h.meeting(['alice', 'bob'], { server: { filePort: 0 } });
  return { server, alice: clients[0], bob: clients[1] };
}

async function proxyFor(server: Server): Promise<TcpProxy> {
  const proxy = await TcpProxy.start(server.fileStats().port);
  proxies.push(proxy);
  return proxy;
}

function expectMonotonic(events: TransferProgress[], size: number): void {
  expect(events.length).toBeGreaterThanOrEqual(2);
  for (let i = 1; i < events.length; i++) expect(events[i].done).toBeGreaterThanOrEqual(events[i - 1].done);
  const last = events[events.length - 1];
  expect(last).toMatchObject({ done: size, size, eta_s: 0 });
}

describe('FileClient upload and download', { timeout: 30_000 }, () => {
  it('moves files of 0 B, 1 B, one chunk -1 and +1, and 5 MB byte for byte, listed for the room', async () => {
    const { alice, bob } = await meeting();
    const up = new FileClient(alice);
    const down = new FileClient(bob);
    const src = tmpDir();
    const dst = tmpDir();
    for (const size of [0, 1, CHUNK - 1, CHUNK + 1, 5_000_000]) {
      const file = path.join(src, `f-${size}.bin`);
      const md5 = randomFile(file, size);
      const pushed = bob.waitFor('files');
      const info = await up.upload(file);
      expect(info).toMatchObject({ name: `f-${size}.bin`, size, md5, uploader_name: 'alice' });
      // The room hears of it, and the list holds it.
      const [push] = await pushed;
      expect(push.change).toMatchObject({ kind: 'added', file: { file_id: info.file_id }, by: { username: 'alice' } });
      expect(bob.files.map((f) => f.file_id)).toContain(info.file_id);
      const got = await down.download(info.file_id.slice(0, 8), dst);
      expect(got.path).toBe(path.join(dst, `f-${size}.bin`));
      expect(md5Of(got.path)).toBe(md5);
      expect(sameBytes(file, got.path)).toBe(true);
    }
    // No .part is left behind.
    expect(fs.readdirSync(dst).filter((n) => n.endsWith('.part'))).toEqual([]);
    expect((await down.list()).map((f) => f.size)).toEqual([0, 1, CHUNK - 1, CHUNK + 1, 5_000_000]);
  });

  it('reports progress: monotonic, at most about 10 a second, ending at the size', async () => {
    const { alice, bob } = await meeting();
    const up = new FileClient(alice);
    const down = new FileClient(bob);
    const file = path.join(tmpDir(), 'progress.bin');
    randomFile(file, 6 * MiB);
    const events: TransferProgress[] = [];
    const t0 = performance.now();
    const info = await up.upload(file, { chunkSize: 64 * 1024, onProgress: (p) => events.push(p) });
    const upMs = performance.now() - t0;
    expectMonotonic(events, info.size);
    expect(events.every((e) => e.op === 'upload' && e.name === 'progress.bin' && e.attempt === 1)).toBe(true);
    expect(events.length).toBeLessThanOrEqual(upMs / 100 + 3);

    const viaEvent: TransferProgress[] = [];
    down.on('progress', (p) => viaEvent.push(p));
    await down.download(info.file_id, tmpDir());
    expectMonotonic(viaEvent, info.size);
    expect(viaEvent.every((e) => e.op === 'download' && e.id === info.file_id)).toBe(true);
  });

  it('moves 100 MiB byte for byte', { timeout: 120_000 }, async () => {
    const { alice, bob } = await meeting();
    const file = path.join(tmpDir(), 'big.bin');
    const md5 = randomFile(file, 100 * MiB);
    const info = await new FileClient(alice).upload(file);
    expect(info).toMatchObject({ size: 100 * MiB, md5 });
    const got = await new FileClient(bob).download(info.file_id, tmpDir());
    expect(md5Of(got.path)).toBe(md5);
    expect(sameBytes(file, got.path)).toBe(true);
  });

  it('refuses 100 MiB + 1 byte with FILE_TOO_LARGE before any byte reaches the file server', async () => {
    const { server, alice } = await meeting();
    const proxy = await proxyFor(server);
    const file = path.join(tmpDir(), 'too-big.bin');
    // Sparse: the size is all that is checked, so no need to write 100 MB.
    fs.writeFileSync(file, '');
    fs.truncateSync(file, DEFAULTS.maxFileBytes + 1);
    const before = server.fileStats();
    await rejectsWith(new FileClient(alice, { portOverride: proxy.port }).upload(file), 'FILE_TOO_LARGE');
    expect(proxy.connections).toHaveLength(0);
    const after = server.fileStats();
    expect(after.counters.bytes_in).toBe(before.counters.bytes_in);
    expect(after.uploads).toEqual([]);
    expect(alice.files).toEqual([]);
  });

  it('keeps two uploads of the same name apart, and a download never overwrites a file', async () => {
    const { alice, bob } = await meeting();
    const up = new FileClient(alice);
    const down = new FileClient(bob);
    const a = path.join(tmpDir(), 'report.txt');
    const b = path.join(tmpDir(), 'report.txt');
    fs.writeFileSync(a, 'first version');
    fs.writeFileSync(b, 'second version');
    const fa = await up.upload(a);
    const fb = await up.upload(b);
    expect(fa.file_id).not.toBe(fb.file_id);
    expect(fa.name).toBe('report.txt');
    expect(fb.name).toBe('report.txt');
    await waitUntil(() => bob.files.length === 2, 5000, 'both files listed');

    const dst = tmpDir();
    fs.writeFileSync(path.join(dst, 'report.txt'), 'mine, keep me');
    const ga = await down.download(fa.file_id, dst);
    const gb = await down.download(fb.file_id, dst);
    expect(path.basename(ga.path)).toBe('report (1).txt');
    expect(path.basename(gb.path)).toBe('report (2).txt');
    expect(fs.readFileSync(path.join(dst, 'report.txt'), 'utf8')).toBe('mine, keep me');
    expect(fs.readFileSync(ga.path, 'utf8')).toBe('first version');
    expect(fs.readFileSync(gb.path, 'utf8')).toBe('second version');
    // An explicit file name that exists is not overwritten either.
    const named = await down.download(fa.file_id, path.join(dst, 'report.txt'));
    expect(path.basename(named.path)).toBe('report (3).txt');
    // Two files of one name: the name is ambiguous, the id prefix is not.
    await rejectsWith(down.download('report.txt', dst), 'FILE_NOT_FOUND');
    await rejectsWith(down.download('ffffffff', dst), 'FILE_NOT_FOUND');
    // The list is of the room you are in.
    await bob.leaveRoom();
    expect(bob.files).toEqual([]);
  });
});

describe('FileClient resume and verification', { timeout: 30_000 }, () => {
  it('resumes an upload cut mid-way: after the cut no chunk before the server\'s verified offset is sent again', async () => {
    const { server, alice, bob } = await meeting();
    const proxy = await proxyFor(server);
    const file = path.join(tmpDir(), 'cut-up.bin');
    const md5 = randomFile(file, 8 * MiB);
    const up = new FileClient(alice, { portOverride: proxy.port, progressIntervalMs: 0, retryBaseDelayMs: 20 });
    let cut = false;
    const retries: unknown[] = [];
    up.on('retry', (r) => retries.push(r));
    const info = await up.upload(file, {
      chunkSize: 64 * 1024,
      onProgress: (p) => {
        if (!cut && p.done >= 2 * MiB) cut = proxy.cutAll() > 0;
      },
    });
    expect(cut).toBe(true);
    expect(retries).toHaveLength(1);
    expect(info.md5).toBe(md5);
    expect(proxy.connections.length).toBe(2);

    const [first, second] = proxy.connections;
    const firstAcks = headersOf(frames(first.toClient), 'ACK').map((a) => a.offset);
    const ready = headersOf(frames(second.toClient), 'READY')[0];
    // The server kept what it verified, at least everything the client saw acknowledged...
    expect(ready.offset).toBeGreaterThanOrEqual(Math.max(...firstAcks));
    expect(ready.offset).toBeGreaterThan(0);
    // ... and the second connection starts exactly there and never goes back.
    const chunks = headersOf(frames(second.toServer), 'FILE_UPLOAD_CHUNK').map((c) => c.offset);
    expect(chunks[0]).toBe(ready.offset);
    expect(chunks.every((o) => o >= ready.offset)).toBe(true);
    expect(chunks).toEqual([...chunks].sort((x, y) => x - y));
    expect(new Set(chunks).size).toBe(chunks.length);

    const got = await new FileClient(bob).download(info.file_id, tmpDir());
    expect(sameBytes(file, got.path)).toBe(true);
  });

  it('an upload that gives up cancels its partial upload on the server (regression: it held the quota for --partial-retention)', async () => {
    const { server, alice } = await meeting();
    const proxy = await proxyFor(server);
    const file = path.join(tmpDir(), 'given-up.bin');
    randomFile(file, 4 * MiB);
    const up = new FileClient(alice, { portOverride: proxy.port, progressIntervalMs: 0, retries: 0 });
    let cut = false;
    await rejectsWith(
      up.upload(file, {
        chunkSize: 64 * 1024,
        onProgress: (p) => {
          if (!cut && p.done >= MiB) cut = proxy.cutAll() > 0;
        },
      }),
      'TRANSFER_FAILED',
    );
    expect(cut).toBe(true);
    // The client said CANCEL on a connection of its own: nothing is held or listed.
    await waitUntil(() => server.fileStats().uploads.length === 0, 3000, 'the partial upload to be cancelled');
    expect(proxy.connections.length).toBe(2);
    expect(headersOf(frames(proxy.connections[1].toServer), 'CANCEL')).toHaveLength(1);
    expect(await alice.listFiles()).toEqual([]);
  });

  it('an upload whose DONE is lost resumes into DONE: listed once, not refused (regression: UPLOAD_NOT_FOUND for a stored file)', async () => {
    const { server, alice } = await meeting();
    const proxy = await proxyFor(server);
    const file = path.join(tmpDir(), 'done-lost.bin');
    const md5 = randomFile(file, 1 * MiB);
    const END = Buffer.from('FILE_UPLOAD_END');
    let endOn = -1;
    proxy.mutateClientToServer((chunk, conn) => {
      if (endOn < 0 && chunk.includes(END)) {
        endOn = conn.id;
        // Long enough for the server to store the file and send DONE (dropped below).
        setTimeout(() => proxy.cutAll(), 300);
      }
      return chunk;
    });
    proxy.mutateServerToClient((chunk, conn) => (conn.id === endOn ? Buffer.alloc(0) : chunk));
    const up = new FileClient(alice, { portOverride: proxy.port, progressIntervalMs: 0, retryBaseDelayMs: 20 });
    const info = await up.upload(file);
    expect(info.md5).toBe(md5);
    expect(proxy.connections.length).toBe(2);
    // The second connection got DONE for the stored file, without a READY: nothing was sent again.
    const second = frames(proxy.connections[1].toClient).map((f) => f.header.type);
    expect(second).toEqual(['DONE']);
    expect(headersOf(frames(proxy.connections[1].toServer), 'FILE_UPLOAD_CHUNK')).toHaveLength(0);
    const listed = await alice.listFiles();
    expect(listed.map((f) => f.file_id)).toEqual([info.file_id]);
  });

  it('resumes a download cut mid-way: the new connection OPENs at the bytes verified', async () => {
    const { server, alice, bob } = await meeting();
    const file = path.join(tmpDir(), 'cut-down.bin');
    const md5 = randomFile(file, 8 * MiB);
    const info = await new FileClient(alice).upload(file, { chunkSize: 64 * 1024 });
    const proxy = await proxyFor(server);
    const down = new FileClient(bob, { portOverride: proxy.port, progressIntervalMs: 0, retryBaseDelayMs: 20 });
    let cut = false;
    let lastDone = -1;
    let verifiedAtRetry = -1;
    down.on('retry', () => (verifiedAtRetry = lastDone));
    const got = await down.download(info.file_id, tmpDir(), {
      onProgress: (p) => {
        lastDone = p.done;
        if (!cut && p.done >= 2 * MiB) cut = proxy.cutAll() > 0;
      },
    });
    expect(cut).toBe(true);
    expect(md5Of(got.path)).toBe(md5);
    expect(sameBytes(file, got.path)).toBe(true);
    expect(proxy.connections.length).toBe(2);
    const open1 = headersOf(frames(proxy.connections[0].toServer), 'OPEN')[0];
    const open2 = headersOf(frames(proxy.connections[1].toServer), 'OPEN')[0];
    expect(open1.offset).toBe(0);
    expect(verifiedAtRetry).toBeGreaterThanOrEqual(2 * MiB);
    expect(open2.offset).toBe(verifiedAtRetry);
    expect(open2.offset! % info.chunk_size).toBe(0);
    const resent = headersOf(frames(proxy.connections[1].toClient), 'FILE_DOWNLOAD_CHUNK').map((c) => c.offset);
    expect(resent[0]).toBe(open2.offset);
  });

  it('a download that gave up keeps its .part, and the next run resumes from its whole chunks', async () => {
    const { server, alice, bob } = await meeting();
    const file = path.join(tmpDir(), 'later.bin');
    const md5 = randomFile(file, 4 * MiB);
    const info = await new FileClient(alice).upload(file, { chunkSize: 64 * 1024 });
    const proxy = await proxyFor(server);
    const dst = tmpDir();
    const flaky = new FileClient(bob, { portOverride: proxy.port, progressIntervalMs: 0, retries: 0 });
    let cut = false;
    await rejectsWith(
      flaky.download(info.file_id, dst, {
        onProgress: (p) => {
          if (!cut && p.done >= MiB) cut = proxy.cutAll() > 0;
        },
      }),
      'TRANSFER_FAILED',
    );
    const parts = fs.readdirSync(dst).filter((n) => n.endsWith('.part'));
    expect(parts).toEqual([`.later.bin.${info.file_id.slice(0, 8)}.part`]);
    const partSize = fs.statSync(path.join(dst, parts[0])).size;
    expect(partSize).toBeGreaterThanOrEqual(MiB);

    const got = await new FileClient(bob, { portOverride: proxy.port }).download(info.file_id, dst);
    expect(md5Of(got.path)).toBe(md5);
    expect(path.basename(got.path)).toBe('later.bin');
    const open = headersOf(frames(proxy.connections[1].toServer), 'OPEN')[0];
    expect(open.offset).toBe(Math.floor(partSize / info.chunk_size) * info.chunk_size);
    expect(fs.readdirSync(dst).filter((n) => n.endsWith('.part'))).toEqual([]);
  });

  it('a chunk corrupted on the way is refused (NACK) and sent again; the upload verifies', async () => {
    const { server, alice, bob } = await meeting();
    const proxy = await proxyFor(server);
    proxy.mutateClientToServer(corruptChunkBody(3));
    const file = path.join(tmpDir(), 'corrupt.bin');
    const md5 = randomFile(file, 2 * MiB);
    const info = await new FileClient(alice, { portOverride: proxy.port }).upload(file, { chunkSize: 64 * 1024 });
    expect(info.md5).toBe(md5);
    // One connection: a NACK is answered on it, no reconnect needed.
    expect(proxy.connections.length).toBe(1);
    const conn = proxy.connections[0];
    const nacks = headersOf(frames(conn.toClient), 'NACK');
    expect(nacks).toEqual([expect.objectContaining({ offset: 2 * 64 * 1024, code: 'CHUNK_MD5_MISMATCH' })]);
    const sent = headersOf(frames(conn.toServer), 'FILE_UPLOAD_CHUNK').map((c) => c.offset);
    expect(sent.filter((o) => o === 2 * 64 * 1024)).toHaveLength(2);
    // Nothing before the refused chunk was sent twice.
    expect(sent.filter((o) => o < 2 * 64 * 1024)).toEqual([0, 64 * 1024]);
    expect(server.fileStats().counters.chunks_refused).toBe(1);
    const got = await new FileClient(bob).download(info.file_id, tmpDir());
    expect(sameBytes(file, got.path)).toBe(true);
  });

  it('aborting a download removes its .part; aborting an upload lists nothing', async () => {
    const { server, alice, bob } = await meeting();
    const file = path.join(tmpDir(), 'abort.bin');
    randomFile(file, 4 * MiB);
    const info = await new FileClient(alice).upload(file, { chunkSize: 64 * 1024 });

    const dst = tmpDir();
    const ctl = new AbortController();
    const down = new FileClient(bob, { progressIntervalMs: 0 });
    const downloading = down.download(info.file_id, dst, { signal: ctl.signal, onProgress: (p) => p.done >= MiB && ctl.abort() });
    await expect(downloading).rejects.toMatchObject({ name: 'AbortError' });
    expect(fs.readdirSync(dst)).toEqual([]);

    const up = new FileClient(alice, { progressIntervalMs: 0 });
    const ctl2 = new AbortController();
    const other = path.join(tmpDir(), 'never.bin');
    randomFile(other, 4 * MiB);
    const uploading = up.upload(other, { chunkSize: 64 * 1024, signal: ctl2.signal, onProgress: (p) => p.done >= MiB && ctl2.abort() });
    await expect(uploading).rejects.toMatchObject({ name: 'AbortError' });
    // The CANCEL removes the partial upload on the server.
    await waitUntil(() => server.fileStats().uploads.length === 0, 5000, 'the partial upload removed');
    expect((await alice.listFiles()).map((f) => f.name)).toEqual(['abort.bin']);
  });
});

/**
 * A mutator that flips the first body byte of the nth frame carrying a body (the nth
 * FILE_UPLOAD_CHUNK) on the first connection, once. It follows the frame prefixes
 * (header length, body length) through the stream.
 */
function corruptChunkBody(nth: number): (chunk: Buffer, conn: ProxyConnection, offset: number) => Buffer {
  let stream = Buffer.alloc(0);
  let frameAt = 0;
  let bodies = 0;
  let target = -1;
  let done = false;
  return (chunk, conn, offset) => {
    if (done || conn.id !== 0) return chunk;
    stream = Buffer.concat([stream, chunk]);
    while (target < 0 && stream.length >= frameAt + 8) {
      const headerLength = stream.readUInt32BE(frameAt);
      const bodyLength = stream.readUInt32BE(frameAt + 4);
      const bodyAt = frameAt + 8 + headerLength;
      if (bodyLength > 0 && ++bodies === nth) target = bodyAt;
      frameAt = bodyAt + bodyLength;
    }
    if (target < 0 || target >= offset + chunk.length) return chunk;
    const out = Buffer.from(chunk);
    out[target - offset] ^= 0xff;
    done = true;
    return out;
  };
}
