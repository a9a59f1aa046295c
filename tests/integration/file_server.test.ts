/**
 * The file server (server/file_server.ts) end to end: a real Server on loopback with
 * real clients on the control connection for tickets, and a raw file-protocol peer
 * (tests/kit/file_peer.ts) on the file port, so each test decides exactly which frames
 * go out, including the ones a good client never sends. Files are checked byte for
 * byte, and on disk under DATA_DIR/files.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Client } from '../../client/main_client';
import type { Server, ServerOptions } from '../../server/main_server';
import { DEFAULTS, LIMITS } from '../../shared/constants';
import { safeFileName } from '../../shared/file_names';
import { encodeFileFrame, MIN_CHUNK_SIZE } from '../../shared/protocol/file_frames';
import { MT, type FileInfo, type PushData } from '../../shared/protocol/messages';
import { FilePeer, md5hex, receiveDownload, sendChunks, WRONG_MD5 } from '../kit/file_peer';
import { RawClient } from '../kit/raw_client';
import { Harness, rejectsWith, sleep, tmpDataDir, waitUntil } from '../kit/server';

/** Small chunks keep every test fast while still crossing many chunk boundaries. */
const CS = MIN_CHUNK_SIZE;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const h = new Harness();
const peers: FilePeer[] = [];
const raws: RawClient[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) p.destroy();
  for (const r of raws.splice(0)) r.destroy();
  await h.closeAll();
});

async function peer(port: number): Promise<FilePeer> {
  const p = await FilePeer.connect(port);
  peers.push(p);
  return p;
}

const filesDir = (s: Server) => path.join(path.resolve(s.options.dataDir), 'files');
const partialDir = (s: Server) => path.join(filesDir(s), 'partial');
const partials = (s: Server) => fs.readdirSync(partialDir(s));

/** Files are unlinked off the event loop (a 100 MB unlink can take tens of ms): wait, briefly. */
async function gone(file: string): Promise<void> {
  await waitUntil(() => !fs.existsSync(file), 2000, `${file} to be removed`);
}
async function noPartials(s: Server): Promise<void> {
  await waitUntil(() => partials(s).length === 0, 2000, 'the partial file to be removed');
}

async function meeting(names: string[] = ['alice', 'bob'], server: ServerOptions = {}, persistent = false) {
  return h.meeting(names, { server, persistent });
}

function start(c: Client, name: string, size: number, extra: { chunk_size?: number; resume_id?: string } = {}) {
  return c.request(MT.FILE_UPLOAD_START, { name, size, chunk_size: CS, ...extra });
}

/** A whole upload at the raw protocol level; resolves with the DONE file object. */
async function upload(c: Client, name: string, data: Buffer, chunkSize = CS): Promise<FileInfo> {
  const s = await start(c, name, data.length, { chunk_size: chunkSize });
  const p = await peer(s.port);
  p.open(s.ticket);
  const ready = (await p.nextOfType('READY')).header;
  expect(ready).toMatchObject({ op: 'upload', id: s.upload_id, offset: 0, size: data.length, chunk_size: s.chunk_size });
  await sendChunks(p, data, s.chunk_size);
  p.end(md5hex(data));
  const done = await p.nextOfType('DONE');
  await p.closedWithin();
  return done.header.file;
}

async function download(c: Client, fileId: string, offset?: number) {
  const r = await c.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: fileId });
  const p = await peer(r.port);
  p.open(r.ticket, offset === undefined ? {} : { offset });
  const got = await receiveDownload(p);
  await p.closedWithin();
  return { ...got, reply: r };
}

/** FILE_LIST pushes (not replies) as they arrive. */
function fileListPushes(c: Client): PushData<'FILE_LIST'>[] {
  const out: PushData<'FILE_LIST'>[] = [];
  c.on('message', (env) => {
    if (env.type === MT.FILE_LIST) out.push(env.data as unknown as PushData<'FILE_LIST'>);
  });
  return out;
}

describe('upload and download round trip', () => {
  it.each([
    ['0 bytes', 0],
    ['1 byte', 1],
    ['one chunk - 1', CS - 1],
    ['one chunk', CS],
    ['one chunk + 1', CS + 1],
  ])('%s: the bytes downloaded are the bytes uploaded', async (_label, size) => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const data = randomBytes(size);
    const file = await upload(alice, 'data.bin', data);
    expect(file).toMatchObject({ name: 'data.bin', size, md5: md5hex(data), chunk_size: CS, uploader_name: 'alice' });
    expect(file.file_id).toMatch(UUID);
    // Stored by id, nothing else left behind.
    expect(fs.readFileSync(path.join(filesDir(server), file.file_id)).equals(data)).toBe(true);
    expect(partials(server)).toEqual([]);

    const got = await download(bob, file.file_id);
    expect(got.ready).toMatchObject({ op: 'download', id: file.file_id, size, offset: 0, chunk_size: CS, md5: md5hex(data) });
    expect(got.data.equals(data)).toBe(true);
    expect(got.end).toEqual({ type: 'FILE_DOWNLOAD_END', size, md5: md5hex(data) });
    expect(got.chunks.length).toBe(Math.ceil(size / CS));
  });

  it('a few MB of random bytes with the server default chunk size, and a download from a chunk offset', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const data = randomBytes(3 * 1024 * 1024 + 12345);
    const s = await alice.request(MT.FILE_UPLOAD_START, { name: 'big.bin', size: data.length });
    expect(s.chunk_size).toBe(DEFAULTS.files.chunkSize);
    expect(s.port).toBe(server.files.port);
    expect(s.expires_in).toBe(DEFAULTS.files.ticketTtlMs / 1000);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    const acks = await sendChunks(p, data, s.chunk_size);
    expect(acks.at(-1)).toBe(data.length);
    p.end(md5hex(data));
    const file = (await p.nextOfType('DONE')).header.file;

    const whole = await download(bob, file.file_id);
    expect(whole.data.equals(data)).toBe(true);

    // Resume a download: from a chunk boundary, only the rest comes.
    const from = 5 * s.chunk_size;
    const rest = await download(bob, file.file_id, from);
    expect(rest.ready.offset).toBe(from);
    expect(rest.chunks[0].offset).toBe(from);
    expect(rest.data.equals(data.subarray(from))).toBe(true);
    expect(server.fileStats().counters).toMatchObject({ uploads_done: 1, downloads_done: 2 });
  });

  it('a download offset that is not a chunk boundary, or past the end, is FILE_FRAME_INVALID', async () => {
    const { clients } = await meeting();
    const [alice] = clients;
    const file = await upload(alice, 'f.bin', randomBytes(3 * CS));
    for (const offset of [CS + 1, 4 * CS]) {
      const r = await alice.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id });
      const p = await peer(r.port);
      p.open(r.ticket, { offset });
      const e = await p.error();
      expect(e.code).toBe('FILE_FRAME_INVALID');
      expect(e.message).toMatch(/offset/);
    }
  });

  it('the declared size is checked before any byte moves: 100 MiB + 1 is FILE_TOO_LARGE and nothing is reserved', async () => {
    const { server, clients } = await meeting();
    const limit = DEFAULTS.maxFileBytes;
    expect(limit).toBe(100 * 1024 * 1024);
    const err = await start(clients[0], 'huge.iso', limit + 1).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FILE_TOO_LARGE', details: { size: limit + 1, limit } });
    expect(server.fileStats().uploads).toEqual([]);
    // Exactly the limit is allowed (only declared here: nothing is sent).
    await expect(start(clients[0], 'max.iso', limit)).resolves.toMatchObject({ size: limit });
  });

  it('bytes past the declared size: ERROR FILE_TOO_LARGE, the partial file is removed', async () => {
    const { server, clients } = await meeting();
    const size = CS + 100;
    const s = await start(clients[0], 'f.bin', size);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    const data = randomBytes(2 * CS);
    p.chunk(0, data.subarray(0, CS));
    expect((await p.nextOfType('ACK')).header.offset).toBe(CS);
    expect(partials(server)).toEqual([`${s.upload_id}.part`]);
    p.chunk(CS, data.subarray(CS));
    const e = await p.error();
    expect(e).toMatchObject({ code: 'FILE_TOO_LARGE', details: { size: 2 * CS, limit: size } });
    await noPartials(server);
    expect(server.fileStats().uploads).toEqual([]);
  });

  it('a chunk shorter than chunk_size that is not the last is FILE_FRAME_INVALID', async () => {
    const { clients } = await meeting();
    const s = await start(clients[0], 'f.bin', 3 * CS);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    p.chunk(0, randomBytes(CS - 1));
    expect((await p.error()).code).toBe('FILE_FRAME_INVALID');
  });
});

describe('MD5 checks', () => {
  it('a chunk with a wrong MD5 gets NACK; chunks behind it are dropped; sent again, it is accepted', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const data = randomBytes(3 * CS + 7);
    const s = await start(alice, 'f.bin', data.length);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    const part = (i: number) => data.subarray(i * CS, Math.min(data.length, (i + 1) * CS));
    p.chunk(0, part(0));
    p.chunk(CS, part(1), WRONG_MD5);
    p.chunk(2 * CS, part(2)); // in flight behind the bad one: dropped
    expect((await p.nextOfType('ACK')).header.offset).toBe(CS);
    const nack = (await p.nextOfType('NACK')).header;
    expect(nack).toMatchObject({ offset: CS, code: 'CHUNK_MD5_MISMATCH' });
    expect(nack.message).toContain(String(CS));
    // From the NACK's offset on.
    p.chunk(CS, part(1));
    p.chunk(2 * CS, part(2));
    p.chunk(3 * CS, part(3));
    expect((await p.nextOfType('ACK')).header.offset).toBe(2 * CS);
    expect((await p.nextOfType('ACK')).header.offset).toBe(3 * CS);
    expect((await p.nextOfType('ACK')).header.offset).toBe(data.length);
    const up = server.fileStats().uploads[0];
    expect(up).toMatchObject({ upload_id: s.upload_id, chunks_refused: 1, chunks_dropped: 1, offset: data.length });
    expect(up.bytes_received).toBe(data.length + part(1).length + part(2).length);
    p.end(md5hex(data));
    const file = (await p.nextOfType('DONE')).header.file;
    expect((await download(bob, file.file_id)).data.equals(data)).toBe(true);
  });

  it('a whole-file MD5 mismatch: ERROR FILE_MD5_MISMATCH, nothing listed, no FILE_LIST push, the partial file is gone', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const pushes = fileListPushes(bob);
    const data = randomBytes(2 * CS);
    const s = await start(alice, 'f.bin', data.length);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    await sendChunks(p, data, CS);
    const claimed = md5hex(Buffer.from('something else'));
    p.end(claimed);
    const e = await p.error();
    expect(e).toMatchObject({ code: 'FILE_MD5_MISMATCH', details: { expected: claimed, actual: md5hex(data) } });
    await noPartials(server);
    expect(await alice.request(MT.FILE_LIST, {})).toMatchObject({ files: [] });
    expect(fs.readdirSync(filesDir(server))).toEqual(['partial']);
    // The same upload cannot be resumed: it is gone.
    await rejectsWith(start(alice, 'f.bin', data.length, { resume_id: s.upload_id }), 'UPLOAD_NOT_FOUND');
    expect(pushes).toEqual([]);
  });
});

describe('tickets', () => {
  it('no OPEN in time, no ticket, an unknown ticket, a reused one, a wrong version: refused and closed', async () => {
    const { server, clients } = await meeting(['alice', 'bob'], { fileOpenTimeoutMs: 300 });
    const [alice] = clients;
    const port = server.files.port;

    const silent = await peer(port);
    expect(await silent.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'no OPEN within 0.3 s' } });

    const s = await start(alice, 'f.bin', 10);
    const noTicket = await peer(port);
    noTicket.end('0'.repeat(32));
    expect(await noTicket.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'missing' } });
    // A chunk before OPEN is refused on its prefix, before its body is buffered.
    const chunkFirst = await peer(port);
    chunkFirst.chunk(0, Buffer.from('0123456789'));
    const e = await chunkFirst.error();
    expect(e.code).toBe('FILE_FRAME_INVALID');
    expect(String(e.details?.reason)).toMatch(/send OPEN with a ticket first/);

    const unknown = await peer(port);
    unknown.open('f'.repeat(32));
    expect(await unknown.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'unknown' } });

    const version = await peer(port);
    version.open(s.ticket, { version: 2 });
    expect((await version.error()).code).toBe('FILE_FRAME_INVALID');

    // The wrong version did not use the ticket up; the first real OPEN does.
    const first = await peer(port);
    first.open(s.ticket);
    await first.nextOfType('READY');
    const again = await peer(port);
    again.open(s.ticket);
    expect(await again.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'already used' } });
    expect(server.fileStats().counters.tickets_refused).toBe(4);
  });

  it('asking again for a ticket replaces the last one (regression: every request added a ticket kept for two minutes)', async () => {
    const { server, clients } = await meeting(['alice', 'bob']);
    const [alice, bob] = clients;
    const file = await upload(alice, 'f.bin', randomBytes(1000));
    const tickets: string[] = [];
    for (let i = 0; i < 50; i++) tickets.push((await bob.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id })).ticket);
    const old = await peer(server.files.port);
    old.open(tickets[0]);
    expect(await old.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'unknown' } });
    const newest = await peer(server.files.port);
    newest.open(tickets[49]);
    expect((await newest.nextOfType('READY')).header.op).toBe('download');
    // Another user's ticket for the same file is their own.
    const theirs = await alice.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id });
    const p = await peer(server.files.port);
    p.open(theirs.ticket);
    expect((await p.nextOfType('READY')).header.op).toBe('download');
  });

  it('an expired ticket is refused', async () => {
    const { server, clients } = await meeting(['alice', 'bob'], { fileTicketTtlMs: 200 });
    const s = await start(clients[0], 'f.bin', 10);
    expect(s.expires_in).toBe(0.2);
    await sleep(350);
    const p = await peer(server.files.port);
    p.open(s.ticket);
    expect(await p.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'expired' } });
  });

  it('a ticket whose user has left the room is refused', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const file = await upload(bob, 'f.bin', randomBytes(100));
    const up = await start(alice, 'g.bin', 10);
    const down = await alice.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id });
    await alice.leaveRoom();
    for (const ticket of [up.ticket, down.ticket]) {
      const p = await peer(server.files.port);
      p.open(ticket);
      expect(await p.error()).toMatchObject({ code: 'TICKET_INVALID', details: { reason: 'not in the room anymore' } });
    }
  });

  it("nobody reaches another room's file: FILE_NOT_FOUND for a download, NOT_IN_ROOM for its list", async () => {
    const { server, room, clients } = await meeting();
    const [alice] = clients;
    const file = await upload(alice, 'secret.txt', Buffer.from('in room one'));
    const eve = await h.client(server, 'eve');
    const other = await eve.createRoom({ name: 'Other' });
    await eve.joinRoom(other.room_id);
    await rejectsWith(eve.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id }), 'FILE_NOT_FOUND');
    await rejectsWith(eve.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: 'no-such-file' }), 'FILE_NOT_FOUND');
    await rejectsWith(eve.request(MT.FILE_DELETE, { file_id: file.file_id }), 'FILE_NOT_FOUND');
    await rejectsWith(eve.request(MT.FILE_LIST, { room_id: room.room_id }), 'NOT_IN_ROOM');
    await rejectsWith(eve.request(MT.FILE_UPLOAD_START, { room_id: room.room_id, name: 'x', size: 1 }), 'NOT_IN_ROOM');
    expect(await eve.request(MT.FILE_LIST, {})).toEqual({ room_id: other.room_id, files: [] });
    const lobby = await h.client(server, 'lobby');
    await rejectsWith(lobby.request(MT.FILE_UPLOAD_START, { name: 'x', size: 1 }), 'NOT_IN_ROOM');
    await rejectsWith(lobby.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id }), 'NOT_IN_ROOM');
  });

  it('file bytes on the control connection are refused with NOT_SUPPORTED naming the file port', async () => {
    const { server } = await meeting(['alice']);
    const raw = await RawClient.connect(server.port);
    raws.push(raw);
    await raw.connectAs('mallory');
    for (const type of ['FILE_UPLOAD_CHUNK', 'FILE_UPLOAD_END', 'FILE_DOWNLOAD_CHUNK', 'FILE_DOWNLOAD_END']) {
      const { reply } = await raw.request(type, { offset: 0, data: 'AAAA' });
      expect(reply.data.code, type).toBe('NOT_SUPPORTED');
      expect(reply.data.details.why).toMatch(/file server port \(TCP\).*ticket/);
    }
    const rec = await raw.request('RECORDING_START', {});
    expect(rec.reply.data.details.why).toBe('This feature is not available on this server yet.');
  });
});

describe('resume, takeover, cancel, timeouts', () => {
  it('a dropped upload resumes from the last ACK: READY says where, and the result verifies', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const data = randomBytes(10 * CS + 5);
    const s = await start(alice, 'f.bin', data.length);
    const p1 = await peer(s.port);
    p1.open(s.ticket);
    await p1.nextOfType('READY');
    await sendChunks(p1, data.subarray(0, 5 * CS), CS);
    // Half a frame, then the connection drops: none of it counts.
    const half = encodeFileFrame({ type: 'FILE_UPLOAD_CHUNK', offset: 5 * CS, md5: md5hex(data.subarray(5 * CS, 6 * CS)) }, data.subarray(5 * CS, 6 * CS));
    p1.sendRaw(half.subarray(0, half.length >> 1));
    await sleep(20);
    p1.destroy();
    await waitUntil(() => server.fileStats().uploads[0]?.connected === false, 2000, 'the server to see the drop');
    expect(server.fileStats().uploads[0]).toMatchObject({ upload_id: s.upload_id, offset: 5 * CS });
    expect(partials(server)).toEqual([`${s.upload_id}.part`]);

    // Only the owner, in the same room, for the same size may resume.
    await rejectsWith(start(bob, 'f.bin', data.length, { resume_id: s.upload_id }), 'UPLOAD_NOT_FOUND');
    await rejectsWith(start(alice, 'f.bin', data.length + 1, { resume_id: s.upload_id }), 'UPLOAD_NOT_FOUND');
    await rejectsWith(start(alice, 'f.bin', data.length, { resume_id: 'nope' }), 'UPLOAD_NOT_FOUND');

    const r = await start(alice, 'f.bin', data.length, { resume_id: s.upload_id });
    expect(r.upload_id).toBe(s.upload_id);
    expect(r.ticket).not.toBe(s.ticket);
    const p2 = await peer(r.port);
    p2.open(r.ticket);
    const ready = (await p2.nextOfType('READY')).header;
    expect(ready.offset).toBe(5 * CS);
    await sendChunks(p2, data, CS, ready.offset);
    p2.end(md5hex(data));
    const file = (await p2.nextOfType('DONE')).header.file;
    expect(file.md5).toBe(md5hex(data));
    expect((await download(bob, file.file_id)).data.equals(data)).toBe(true);
  });

  it('an OPEN for an upload another connection still carries takes it over; the old one is closed', async () => {
    const { server, clients } = await meeting();
    const data = randomBytes(4 * CS);
    const s = await start(clients[0], 'f.bin', data.length);
    const p1 = await peer(s.port);
    p1.open(s.ticket);
    await p1.nextOfType('READY');
    await sendChunks(p1, data.subarray(0, 2 * CS), CS);
    const r = await start(clients[0], 'f.bin', data.length, { resume_id: s.upload_id });
    const p2 = await peer(r.port);
    p2.open(r.ticket);
    expect((await p2.nextOfType('READY')).header.offset).toBe(2 * CS);
    await p1.closedWithin();
    await sendChunks(p2, data, CS, 2 * CS);
    p2.end(md5hex(data));
    await p2.nextOfType('DONE');
    expect(server.fileStats().files).toBe(1);
  });

  it('CANCEL removes the partial file and the reservation', async () => {
    const { server, clients } = await meeting();
    const s = await start(clients[0], 'f.bin', 3 * CS);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    await sendChunks(p, randomBytes(CS), CS);
    expect(partials(server)).toHaveLength(1);
    p.send({ type: 'CANCEL' });
    await p.closedWithin();
    await noPartials(server);
    expect(server.fileStats().uploads).toEqual([]);
  });

  it('a silent transfer connection is closed with TRANSFER_TIMEOUT; the upload stays resumable', async () => {
    const { server, clients } = await meeting(['alice', 'bob'], { fileIdleTimeoutMs: 300 });
    const s = await start(clients[0], 'f.bin', 2 * CS);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    await sendChunks(p, randomBytes(CS), CS);
    expect(await p.error()).toMatchObject({ code: 'TRANSFER_TIMEOUT', details: { seconds: 0.3 } });
    expect(server.fileStats().uploads[0]).toMatchObject({ offset: CS, connected: false });
    const r = await start(clients[0], 'f.bin', 2 * CS, { resume_id: s.upload_id });
    const p2 = await peer(r.port);
    p2.open(r.ticket);
    expect((await p2.nextOfType('READY')).header.offset).toBe(CS);
  });

  it('a partial upload nobody resumes is removed after --partial-retention', async () => {
    const { server, clients } = await meeting(['alice', 'bob'], { partialRetentionMs: 300 });
    const s = await start(clients[0], 'f.bin', 2 * CS);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    await sendChunks(p, randomBytes(CS), CS);
    p.destroy();
    await waitUntil(() => server.fileStats().uploads.length === 0, 3000, 'the partial upload to expire');
    await noPartials(server);
    await rejectsWith(start(clients[0], 'f.bin', 2 * CS, { resume_id: s.upload_id }), 'UPLOAD_NOT_FOUND');
  });

  it('more connections than --max-file-connections: FILE_SERVER_BUSY', async () => {
    const { server } = await meeting(['alice'], { maxFileConnections: 2 });
    const a = await peer(server.files.port);
    const b = await peer(server.files.port);
    const c = await peer(server.files.port);
    expect(await c.error()).toMatchObject({ code: 'FILE_SERVER_BUSY', details: { limit: 2 } });
    expect(a.closed || b.closed).toBe(false);
  });
});

describe('downloads', () => {
  it('a slow reader holds the server back (bounded memory), and deleting the file does not break the download', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const data = randomBytes(16 * 1024 * 1024);
    const file = await upload(alice, 'big.bin', data, 256 * 1024);
    const r = await bob.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id });
    const p = await peer(r.port);
    p.socket.pause();
    p.open(r.ticket);
    // The reader reads nothing: the server stops once the socket buffers are full.
    const sent = () => server.fileStats().transfers.find((t) => t.op === 'download')?.done_bytes ?? -1;
    await waitUntil(() => sent() > 0, 3000, 'the download to start');
    let last = -1;
    for (let i = 0; i < 20 && sent() !== last; i++) {
      last = sent();
      await sleep(50);
    }
    expect(sent()).toBeLessThan(data.length);
    // Deleted while under way: the name goes, the open file stays for this download.
    await alice.request(MT.FILE_DELETE, { file_id: file.file_id });
    await gone(path.join(filesDir(server), file.file_id));
    p.socket.resume();
    const got = await receiveDownload(p);
    expect(got.data.equals(data)).toBe(true);
    await rejectsWith(bob.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: file.file_id }), 'FILE_NOT_FOUND');
  });
});

describe('the room sees its files', () => {
  it('FILE_LIST is pushed to the room on add and delete, saying what changed and who did it', async () => {
    const { room, clients } = await meeting();
    const [alice, bob] = clients;
    const pushes = fileListPushes(bob);
    const f1 = await upload(alice, 'one.txt', Buffer.from('one'));
    await waitUntil(() => pushes.length === 1, 3000, 'FILE_LIST after the upload');
    expect(pushes[0]).toEqual({
      room_id: room.room_id,
      files: [f1],
      change: { kind: 'added', file: f1, by: { user_id: alice.userId, username: 'alice' } },
    });
    const f2 = await upload(bob, 'two.txt', Buffer.from('two'));
    await waitUntil(() => pushes.length === 2, 3000, 'FILE_LIST after the second upload');
    expect(pushes[1].files).toEqual([f1, f2]);
    const list = await alice.request(MT.FILE_LIST, {});
    expect(list).toEqual({ room_id: room.room_id, files: [f1, f2] });

    const del = await alice.request(MT.FILE_DELETE, { file_id: f1.file_id });
    expect(del).toEqual({ file_id: f1.file_id, message: 'Deleted "one.txt"' });
    await waitUntil(() => pushes.length === 3, 3000, 'FILE_LIST after the delete');
    expect(pushes[2]).toEqual({
      room_id: room.room_id,
      files: [f2],
      change: { kind: 'deleted', file: f1, by: { user_id: alice.userId, username: 'alice' } },
    });
  });

  it('a joiner gets the room\'s FILE_LIST right after CHAT_HISTORY, without `change`', async () => {
    const { server, room, clients } = await meeting();
    const f = await upload(clients[0], 'one.txt', Buffer.from('one'));
    const carol = await h.client(server, 'carol');
    const types: string[] = [];
    let list: PushData<'FILE_LIST'> | null = null;
    carol.on('message', (env) => {
      types.push(env.type);
      if (env.type === MT.FILE_LIST) list = env.data as unknown as PushData<'FILE_LIST'>;
    });
    await carol.joinRoom(room.room_id);
    await waitUntil(() => list !== null, 3000, 'FILE_LIST on join');
    expect(types[types.indexOf('CHAT_HISTORY') + 1]).toBe('FILE_LIST');
    expect(list).toEqual({ room_id: room.room_id, files: [f] });
  });

  it('who may delete: the uploader (by name, also from a new session), a host, an admin; not another participant', async () => {
    const { server, clients } = await meeting(['alice', 'bob', 'carol'], { adminPassword: 'root-pw' });
    const [alice, bob, carol] = clients; // alice is the host
    const f1 = await upload(bob, 'b1.txt', Buffer.from('1'));
    const f2 = await upload(bob, 'b2.txt', Buffer.from('2'));
    const f3 = await upload(bob, 'b3.txt', Buffer.from('3'));
    const denied = await carol.request(MT.FILE_DELETE, { file_id: f1.file_id }).catch((e: unknown) => e);
    expect(denied).toMatchObject({ code: 'PERMISSION_DENIED' });
    expect((denied as Error).message).toMatch(/uploader.*host.*delete this file/);
    await expect(alice.request(MT.FILE_DELETE, { file_id: f1.file_id })).resolves.toMatchObject({ file_id: f1.file_id });

    // The uploader's right follows the name across sessions.
    const room = bob.room!.room_id;
    await bob.close();
    const bob2 = await h.client(server, 'bob');
    await bob2.joinRoom(room);
    await expect(bob2.request(MT.FILE_DELETE, { file_id: f2.file_id })).resolves.toMatchObject({ file_id: f2.file_id });

    const admin = await h.client(server, 'root', { adminPassword: 'root-pw' });
    // An admin may list and delete in a room they are not in.
    expect((await admin.request(MT.FILE_LIST, { room_id: room })).files.map((f) => f.file_id)).toEqual([f3.file_id]);
    await expect(admin.request(MT.FILE_DELETE, { file_id: f3.file_id })).resolves.toMatchObject({ file_id: f3.file_id });
    await rejectsWith(admin.request(MT.FILE_DELETE, { file_id: f3.file_id }), 'FILE_NOT_FOUND');
    expect(server.fileStats().files).toBe(0);
  });

  it('hostile and odd names are stored by id and listed by a safe name; two uploads of one name are two files', async () => {
    const { server, clients } = await meeting();
    const names = ['../../etc/passwd', 'a/b', 'nul\u0000byte.txt', `${'x'.repeat(300)}.txt`, 'résumé ✓ 日本語.pdf', 'same.txt', 'same.txt'];
    const listed: FileInfo[] = [];
    for (const n of names) listed.push(await upload(clients[0], n, Buffer.from(n)));
    expect(listed.map((f) => f.name)).toEqual(names.map((n) => safeFileName(n)));
    expect(listed[0].name).toBe('passwd');
    expect(listed[1].name).toBe('b');
    expect(listed[2].name).toBe('nulbyte.txt');
    expect(Buffer.byteLength(listed[3].name)).toBeLessThanOrEqual(255);
    expect(listed[3].name.endsWith('.txt')).toBe(true);
    expect(listed[4].name).toBe('résumé ✓ 日本語.pdf');
    expect(listed[5].file_id).not.toBe(listed[6].file_id);
    // On disk: only ids under DATA_DIR/files, nothing named after what a client sent.
    const entries = fs.readdirSync(filesDir(server)).filter((e) => e !== 'partial');
    expect(entries.sort()).toEqual(listed.map((f) => f.file_id).sort());
    const data = fs.readdirSync(path.resolve(server.options.dataDir));
    expect(data.filter((e) => !e.startsWith('lanvc.sqlite'))).toEqual(['files']);
  });
});

describe('limits', () => {
  it('per-user and total quotas count stored files and uploads under way, before any byte moves', async () => {
    const { server, clients } = await meeting(['alice', 'bob'], { userQuotaBytes: 50_000, storageQuotaBytes: 80_000 });
    const [alice, bob] = clients;
    const a1 = await upload(alice, 'a1.bin', randomBytes(40_000));
    const mine = await start(alice, 'a2.bin', 20_000).catch((e: unknown) => e);
    expect(mine).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { size: 20_000, what: 'your storage quota', limit: 50_000, used: 40_000 } });

    const b1 = await start(bob, 'b1.bin', 30_000); // reserved from here on
    const total = await start(bob, 'b2.bin', 20_000).catch((e: unknown) => e);
    expect(total).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { size: 20_000, what: "the server's storage quota", limit: 80_000, used: 70_000 } });
    expect((total as Error).message).toBe("Storing 20000 more bytes would exceed the server's storage quota of 80000 bytes (70000 bytes used)");

    // Giving up the reservation frees it; deleting a file frees its bytes.
    const p = await peer(b1.port);
    p.open(b1.ticket);
    await p.nextOfType('READY');
    p.send({ type: 'CANCEL' });
    await p.closedWithin();
    await expect(start(bob, 'b2.bin', 20_000)).resolves.toMatchObject({ size: 20_000 });
    await alice.request(MT.FILE_DELETE, { file_id: a1.file_id });
    await expect(start(alice, 'a2.bin', 20_000)).resolves.toMatchObject({ size: 20_000 });
    expect(server.fileStats().stored_bytes).toBe(0);
  });

  it('a room holds at most 1000 files, uploads under way included: TOO_MANY_FILES', async () => {
    const { clients } = await meeting();
    const limit = LIMITS.maxFilesPerRoom;
    await Promise.all(Array.from({ length: limit }, (_, i) => start(clients[0], `empty-${i}`, 0)));
    const e = await start(clients[1], 'one-too-many', 0).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: 'TOO_MANY_FILES', details: { limit } });
  });

  it('garbage and oversized headers on the file port: FILE_FRAME_INVALID, and the server keeps serving', async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const data = randomBytes(4 * CS);
    // An upload under way on another connection must not notice.
    const s = await start(alice, 'f.bin', data.length);
    const good = await peer(s.port);
    good.open(s.ticket);
    await good.nextOfType('READY');
    await sendChunks(good, data.subarray(0, 2 * CS), CS);

    const prefix = (hLen: number, bLen: number) => {
      const b = Buffer.alloc(8);
      b.writeUInt32BE(hLen, 0);
      b.writeUInt32BE(bLen, 4);
      return b;
    };
    const attacks: [string, Buffer][] = [
      ['random bytes', randomBytes(4096)],
      ['header longer than 16 KiB', prefix(16 * 1024 + 1, 0)],
      ['empty header', prefix(0, 0)],
      ['body longer than 4 MiB', prefix(10, 4 * 1024 * 1024 + 1)],
      ['header that is not msgpack', Buffer.concat([prefix(4, 0), Buffer.from([0xc1, 0xc1, 0xc1, 0xc1])])],
      ['unknown frame type', encodeFileFrame({ type: 'CANCEL' }).fill(0x41, 9)],
    ];
    for (const [what, bytes] of attacks) {
      const bad = await peer(server.files.port);
      bad.sendRaw(bytes);
      const e = await bad.error();
      expect(e.code, what).toBe('FILE_FRAME_INVALID');
    }
    // A frame type only the server sends, right after a good OPEN.
    const down = await upload(bob, 'x.txt', Buffer.from('x'));
    const r = await bob.request(MT.FILE_DOWNLOAD_REQUEST, { file_id: down.file_id });
    const odd = await peer(r.port);
    odd.open(r.ticket);
    odd.send({ type: 'ACK', offset: 0 });
    // It may finish the 1-byte download before it reads the ACK; either way it never crashes.
    await odd.closedWithin();

    await sendChunks(good, data, CS, 2 * CS);
    good.end(md5hex(data));
    await good.nextOfType('DONE');
    expect(server.fileStats().listening).toBe(true);
    expect(server.fileStats().counters.frames_refused).toBeGreaterThanOrEqual(attacks.length);
  });
});

describe('storage lifetime', () => {
  it('files and their index survive a restart in a persistent room; partial uploads do not', async () => {
    const dataDir = tmpDataDir();
    h.dirs.push(dataDir);
    const { server, room, clients } = await meeting(['alice', 'bob'], { dataDir }, true);
    const data = randomBytes(2 * CS + 3);
    const file = await upload(clients[0], 'keep.bin', data);
    const s = await start(clients[0], 'partial.bin', 3 * CS);
    const p = await peer(s.port);
    p.open(s.ticket);
    await p.nextOfType('READY');
    await sendChunks(p, randomBytes(CS), CS);
    await server.close();
    expect(fs.readdirSync(path.join(dataDir, 'files', 'partial'))).toEqual([`${s.upload_id}.part`]);

    const again = await h.server({ dataDir });
    expect(fs.readdirSync(path.join(dataDir, 'files', 'partial'))).toEqual([]);
    const carol = await h.client(again, 'carol');
    await carol.joinRoom(room.room_id);
    expect(await carol.request(MT.FILE_LIST, {})).toEqual({ room_id: room.room_id, files: [file] });
    expect((await download(carol, file.file_id)).data.equals(data)).toBe(true);
    await rejectsWith(start(carol, 'partial.bin', 3 * CS, { resume_id: s.upload_id }), 'UPLOAD_NOT_FOUND');
  });

  it("a temporary room's files go with the room, and at a restart files of rooms that are gone are removed", async () => {
    const { server, clients } = await meeting();
    const [alice, bob] = clients;
    const f = await upload(alice, 'f.bin', randomBytes(100));
    const inFlight = await start(bob, 'g.bin', 3 * CS);
    const p = await peer(inFlight.port);
    p.open(inFlight.ticket);
    await p.nextOfType('READY');
    await alice.leaveRoom();
    expect(fs.existsSync(path.join(filesDir(server), f.file_id))).toBe(true);
    await bob.leaveRoom(); // the last one out: the temporary room is removed
    expect(server.fileStats()).toMatchObject({ files: 0, uploads: [] });
    await gone(path.join(filesDir(server), f.file_id));
    expect((await p.error()).code).toBe('UPLOAD_NOT_FOUND');
    await noPartials(server);

    // A server stopped while a temporary room held files: they are removed at the next start.
    const dataDir = tmpDataDir();
    h.dirs.push(dataDir);
    const m = await meeting(['carol', 'dave'], { dataDir });
    const g = await upload(m.clients[0], 'g.bin', randomBytes(100));
    await m.server.close();
    expect(fs.existsSync(path.join(dataDir, 'files', g.file_id))).toBe(true);
    const again = await h.server({ dataDir });
    expect(again.fileStats().files).toBe(0);
    expect(fs.readdirSync(path.join(dataDir, 'files'))).toEqual(['partial']);
  });

  it('files expire after --file-retention: removed from disk, the room told with change "expired"', async () => {
    const { server, clients } = await meeting(['alice', 'bob'], { fileRetentionMs: 400 });
    const pushes = fileListPushes(clients[1]);
    const f = await upload(clients[0], 'short-lived.txt', Buffer.from('bye'));
    expect(f.expires_at).toBeCloseTo(f.uploaded_at + 0.4, 3);
    await waitUntil(() => pushes.some((p) => p.change?.kind === 'expired'), 5000, 'the file to expire');
    expect(pushes.at(-1)).toEqual({ room_id: f.room_id, files: [], change: { kind: 'expired', file: f, by: null } });
    await gone(path.join(filesDir(server), f.file_id));
  });
});

// ------------------------------------------------------------ a full disk (a small tmpfs)

/**
 * A 4 MiB tmpfs mounted on DATA_DIR/files at module load (root only; CI runs as root).
 * Where mounting is not possible the test is skipped on a laptop, and fails under CI.
 */
const tmpfs = ((): { dataDir: string; files: string; error: string | null } => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-diskfull-'));
  const files = path.join(dataDir, 'files');
  fs.mkdirSync(files);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', files], { stdio: 'pipe' });
    return { dataDir, files, error: null };
  } catch (e) {
    const error = `cannot mount a tmpfs (${(e as Error).message.split('\n')[0]}); run as root to test a full disk`;
    if (!process.env.CI) process.stderr.write(`file_server.test.ts: SKIPPING the disk-full test: ${error}\n`);
    return { dataDir, files, error };
  }
})();

afterAll(() => {
  if (!tmpfs.error) {
    try {
      execFileSync('umount', [tmpfs.files], { stdio: 'pipe' });
    } catch {
      execFileSync('umount', ['-l', tmpfs.files], { stdio: 'pipe' });
    }
  }
  fs.rmSync(tmpfs.dataDir, { recursive: true, force: true });
});

describe('a full disk', () => {
  it.skipIf(tmpfs.error !== null && !process.env.CI)(
    'refuses what cannot fit before transfer, stops with DISK_FULL when the disk fills mid-upload, removes the partial, and goes on',
    async () => {
      if (tmpfs.error) throw new Error(tmpfs.error);
      const { server, clients } = await meeting(['alice', 'bob'], { dataDir: tmpfs.dataDir });
      const [alice, bob] = clients;
      expect(filesDir(server)).toBe(tmpfs.files);

      const tooBig = await start(alice, 'big.bin', 5 * 1024 * 1024).catch((e: unknown) => e);
      expect(tooBig).toMatchObject({ code: 'DISK_FULL' });

      // Fits when it starts; then something else takes the space.
      const data = randomBytes(3 * 1024 * 1024);
      const s = await start(alice, 'big.bin', data.length, { chunk_size: 64 * 1024 });
      const filler = path.join(tmpfs.files, 'filler');
      fs.writeFileSync(filler, Buffer.alloc(2 * 1024 * 1024));
      const p = await peer(s.port);
      p.open(s.ticket);
      await p.nextOfType('READY');
      for (let at = 0; at < data.length; at += s.chunk_size) p.chunk(at, data.subarray(at, at + s.chunk_size));
      const e = await p.error();
      expect(e.code).toBe('DISK_FULL');
      expect(e.message).toMatch(/ENOSPC/);
      await noPartials(server);
      expect(server.fileStats().uploads).toEqual([]);

      // The server goes on: space freed, a small upload works and downloads intact.
      fs.rmSync(filler);
      const small = randomBytes(100_000);
      const f = await upload(bob, 'small.bin', small);
      expect((await download(alice, f.file_id)).data.equals(small)).toBe(true);
    },
  );
});
