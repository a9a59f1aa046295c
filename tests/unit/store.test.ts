/**
 * The SQLite store (server/store.ts) on a real database file in a temporary
 * directory: migrations, refusal of a newer schema, chat paging, the rooms ->
 * chat_messages cascade, and the files index (migration 2). The database is inspected
 * with a second, independent better-sqlite3 connection, so the store cannot vouch for
 * itself.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { DB_FILE_NAME, MIGRATIONS, Store, StoreError, type StoredFile, type StoredRoom } from '../../server/store';
import type { ChatEntry } from '../../shared/protocol/messages';

const NEWEST = MIGRATIONS[MIGRATIONS.length - 1].version;

const dirs: string[] = [];
const stores: Store[] = [];

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-store-'));
  dirs.push(d);
  return d;
}

function open(dir: string, options?: ConstructorParameters<typeof Store>[1]): Store {
  const s = new Store(dir, options);
  stores.push(s);
  return s;
}

/** A read-only look at the database file, apart from the Store under test. */
function inspect<T>(dir: string, fn: (db: Database.Database) => T): T {
  const db = new Database(path.join(dir, DB_FILE_NAME), { readonly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

function room(id: string, extra: Partial<StoredRoom> = {}): StoredRoom {
  return {
    room_id: id,
    room_name: `Room ${id}`,
    created_by: 'u-creator',
    created_by_name: 'Creator',
    created_at: 1_700_000_000.5,
    max_participants: 50,
    is_private: false,
    password_hash: null,
    settings: {},
    ...extra,
  };
}

function chat(roomId: string, n: number): Omit<ChatEntry, 'seq'> & { room_id: string } {
  return {
    chat_id: `${roomId}-c${n}`,
    room_id: roomId,
    user_id: 'u-1',
    username: 'Alice',
    message: `message ${n}`,
    // Equal timestamps on purpose: order must come from insertion, not the clock.
    timestamp: 1_700_000_100,
    is_private: false,
    recipient: null,
  };
}

afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('Store migrations', () => {
  it('a fresh database gets every migration once, each recorded with its version and name', () => {
    const dir = tmpDir();
    const s = open(dir);
    expect(s.file).toBe(path.join(dir, DB_FILE_NAME));
    expect(fs.existsSync(s.file)).toBe(true);
    expect(s.schemaVersion).toBe(NEWEST);
    s.close();

    const rows = inspect(dir, (db) =>
      db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all(),
    ) as { version: number; name: string; applied_at: number }[];
    expect(rows.map((r) => [r.version, r.name])).toEqual(MIGRATIONS.map((m) => [m.version, m.name]));
    for (const r of rows) expect(r.applied_at).toBeGreaterThan(0);

    const tables = inspect(dir, (db) =>
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all(),
    ) as { name: string }[];
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['chat_messages', 'files', 'rooms', 'schema_migrations']));
  });

  it('migration versions are strictly increasing (append-only list)', () => {
    const versions = MIGRATIONS.map((m) => m.version);
    expect(versions[0]).toBe(1);
    for (let i = 1; i < versions.length; i++) expect(versions[i]).toBeGreaterThan(versions[i - 1]);
  });

  it('reopening is idempotent: no migration runs twice and the data is kept', async () => {
    const dir = tmpDir();
    const s1 = open(dir);
    s1.saveRoom(room('r1', { is_private: true, password_hash: 'scrypt$x', settings: { topic: 'plans', n: 2 } }));
    s1.insertChat(chat('r1', 1));
    await s1.close();
    const before = inspect(dir, (db) => db.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all());

    for (let i = 0; i < 3; i++) {
      const again = open(dir);
      expect(again.schemaVersion).toBe(NEWEST);
      await again.close();
    }
    const after = inspect(dir, (db) => db.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all());
    expect(after).toEqual(before);

    const s2 = open(dir);
    expect(s2.listRooms()).toEqual([room('r1', { is_private: true, password_hash: 'scrypt$x', settings: { topic: 'plans', n: 2 } })]);
    expect(s2.chatHistory('r1', 10).map((e) => e.chat_id)).toEqual(['r1-c1']);
  });

  it('a database at a newer schema version is refused with a clear error, and left untouched', () => {
    const dir = tmpDir();
    open(dir).close();
    const file = path.join(dir, DB_FILE_NAME);
    const db = new Database(file);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(NEWEST + 1, 'from the future', 1);
    db.close();

    let error: unknown;
    try {
      open(dir);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(StoreError);
    const err = error as StoreError;
    expect(err.message).toContain(`schema version ${NEWEST + 1}`);
    expect(err.message).toContain(`newer than this server knows (${NEWEST})`);
    expect(err.message).toContain(file);
    expect(err.hint).toMatch(/newer server|--data-dir/);

    const versions = inspect(dir, (d) => d.prepare('SELECT version FROM schema_migrations ORDER BY version').all());
    expect(versions).toEqual([...MIGRATIONS.map((m) => ({ version: m.version })), { version: NEWEST + 1 }]);
  });

  it('a refused database is not left open (no file handle leaks from the failed constructor)', (ctx) => {
    if (!fs.existsSync('/proc/self/fd')) ctx.skip('needs /proc/self/fd (Linux)');
    const dir = tmpDir();
    open(dir).close();
    const file = path.join(dir, DB_FILE_NAME);
    const db = new Database(file);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(NEWEST + 1, 'from the future', 1);
    db.close();
    const handlesOn = (f: string) =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(f);
        } catch {
          return false;
        }
      }).length;
    expect(handlesOn(file)).toBe(0);
    expect(() => open(dir)).toThrow(StoreError);
    expect(handlesOn(file)).toBe(0);
  });

  it('a file that is not a database is refused with a StoreError that says what to do', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, DB_FILE_NAME), 'this is not an SQLite database, just some text that is long enough '.repeat(20));
    expect(() => open(dir)).toThrow(StoreError);
    expect(() => open(dir)).toThrow(/Cannot open database/);
  });

  it('an unwritable data directory path is refused with a StoreError', () => {
    const dir = tmpDir();
    const blocker = path.join(dir, 'file');
    fs.writeFileSync(blocker, 'x');
    expect(() => open(path.join(blocker, 'sub'))).toThrow(StoreError);
  });

  it('close() is idempotent', () => {
    const s = open(tmpDir());
    s.close();
    expect(() => s.close()).not.toThrow();
  });
});

describe('Store rooms and chat', () => {
  it('rooms round-trip with booleans and settings, ordered by creation time', () => {
    const s = open(tmpDir());
    s.saveRoom(room('late', { created_at: 300 }));
    s.saveRoom(room('early', { created_at: 100, is_private: true, password_hash: 'h', settings: { a: [1, 2] } }));
    const rooms = s.listRooms();
    expect(rooms.map((r) => r.room_id)).toEqual(['early', 'late']);
    expect(rooms[0]).toEqual(room('early', { created_at: 100, is_private: true, password_hash: 'h', settings: { a: [1, 2] } }));
    expect(rooms[1].is_private).toBe(false);
    expect(rooms[1].password_hash).toBeNull();
  });

  it('chatHistory returns the newest `limit` entries oldest first, and pages back with `before`', () => {
    const s = open(tmpDir());
    s.saveRoom(room('r1'));
    s.saveRoom(room('r2'));
    const seqs: number[] = [];
    for (let i = 0; i < 10; i++) {
      seqs.push(s.insertChat(chat('r1', i)));
      s.insertChat(chat('r2', i)); // interleaved: must never leak into r1's pages
    }
    // seq (the row id) grows with every insert: clients sort by it.
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]);
    const ids = (l: ChatEntry[]) => l.map((e) => e.chat_id.replace('r1-', ''));

    const last3 = s.chatHistory('r1', 3);
    expect(ids(last3)).toEqual(['c7', 'c8', 'c9']);
    expect(last3[0]).toEqual({
      chat_id: 'r1-c7',
      seq: seqs[7],
      room_id: 'r1',
      user_id: 'u-1',
      username: 'Alice',
      message: 'message 7',
      timestamp: 1_700_000_100,
      is_private: false,
      recipient: null,
    });

    // Page back until nothing is left: every entry once, in order.
    const seen: string[] = [];
    let page = last3;
    while (page.length > 0) {
      seen.unshift(...ids(page));
      page = s.chatHistory('r1', 3, page[0].chat_id);
      expect(page.length).toBeLessThanOrEqual(3);
    }
    expect(seen).toEqual(Array.from({ length: 10 }, (_, i) => `c${i}`));

    expect(ids(s.chatHistory('r1', 4, 'r1-c5'))).toEqual(['c1', 'c2', 'c3', 'c4']);
    expect(s.chatHistory('r1', 5, 'r1-c0')).toEqual([]);
    expect(s.chatHistory('r1', 100)).toHaveLength(10);
    expect(s.chatHistory('r1', 5, 'no-such-chat-id')).toEqual([]);
    expect(s.chatHistory('no-such-room', 5)).toEqual([]);
  });

  it('deleting a room removes its chat (foreign key cascade) and nothing else', () => {
    const dir = tmpDir();
    const s = open(dir);
    s.saveRoom(room('gone'));
    s.saveRoom(room('kept'));
    for (let i = 0; i < 5; i++) {
      s.insertChat(chat('gone', i));
      s.insertChat(chat('kept', i));
    }
    s.deleteRoom('gone');
    expect(s.listRooms().map((r) => r.room_id)).toEqual(['kept']);
    expect(s.chatHistory('gone', 100)).toEqual([]);
    expect(s.chatHistory('kept', 100)).toHaveLength(5);
    s.close();

    const counts = inspect(dir, (db) =>
      db.prepare('SELECT room_id, COUNT(*) AS n FROM chat_messages GROUP BY room_id ORDER BY room_id').all(),
    );
    expect(counts).toEqual([{ room_id: 'kept', n: 5 }]);
  });

  it('chat for a room that does not exist is refused (foreign keys are on), reported, and does not block later writes', () => {
    const errors: Error[] = [];
    const s = open(tmpDir(), { onWriteError: (e) => errors.push(e) });
    s.saveRoom(room('r1'));
    s.insertChat(chat('nowhere', 1));
    s.insertChat(chat('r1', 2));
    s.flush();
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/FOREIGN KEY/i)]);
    expect(s.chatHistory('r1', 10).map((e) => e.chat_id)).toEqual(['r1-c2']);
  });

  it('a chat_id is stored once', () => {
    const errors: Error[] = [];
    const s = open(tmpDir(), { onWriteError: (e) => errors.push(e) });
    s.saveRoom(room('r1'));
    s.insertChat(chat('r1', 1));
    s.insertChat(chat('r1', 1));
    s.flush();
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/UNIQUE/i)]);
    expect(s.chatHistory('r1', 10)).toHaveLength(1);
  });

  it('group commit: messages are written at the end of this loop turn without a read, and a read sees them at once', async () => {
    const dir = tmpDir();
    const s = open(dir);
    s.saveRoom(room('r1'));
    const seqs = [s.insertChat(chat('r1', 1)), s.insertChat(chat('r1', 2))];
    expect(seqs[1]).toBe(seqs[0] + 1);
    const count = () => inspect(dir, (db) => (db.prepare('SELECT COUNT(*) AS n FROM chat_messages').get() as { n: number }).n);
    expect(count()).toBe(0); // not yet: deferred to after this turn's pushes
    await new Promise((r) => setImmediate(r));
    expect(count()).toBe(2);
    s.insertChat(chat('r1', 3));
    expect(s.chatHistory('r1', 10).map((e) => e.chat_id)).toEqual(['r1-c1', 'r1-c2', 'r1-c3']);
  });

  it('seq continues after a reopen', async () => {
    const dir = tmpDir();
    const s1 = new Store(dir);
    s1.saveRoom(room('r1'));
    const a = s1.insertChat(chat('r1', 1));
    await s1.close();
    const s2 = open(dir);
    expect(s2.insertChat(chat('r1', 2))).toBe(a + 1);
  });
});

describe('WAL checkpoints off the event loop', () => {
  it('a background worker checkpoints the WAL while the store writes, and shuts down with close()', async () => {
    const dir = tmpDir();
    const s = open(dir, { checkpointIntervalMs: 20 });
    s.saveRoom(room('r1'));
    for (let i = 0; i < 2000; i++) s.insertChat(chat('r1', i));
    const deadline = Date.now() + 5000;
    while (s.checkpoints.count < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(s.checkpoints.lastError).toBeNull();
    expect(s.checkpoints.count).toBeGreaterThanOrEqual(2);
    // After close the worker is gone and the database is whole: every row is there.
    await s.close();
    expect(inspect(dir, (db) => (db.prepare('SELECT COUNT(*) AS n FROM chat_messages').get() as { n: number }).n)).toBe(2000);
  });
});

describe('Store files (migration 2)', () => {
  function file(id: string, extra: Partial<StoredFile> = {}): StoredFile {
    return {
      file_id: id,
      room_id: 'r1',
      name: `${id}.txt`,
      size: 1000,
      md5: '0123456789abcdef0123456789abcdef',
      chunk_size: 16384,
      chunk_md5s: Buffer.alloc(16, 0xab),
      uploader_id: 'u-1',
      uploader_name: 'Alice',
      owner_key: 'alice',
      uploaded_at: 1_700_000_000,
      expires_at: null,
      ...extra,
    };
  }

  it('a version 1 database gets the files table and its index, and keeps its rooms and chat', async () => {
    const dir = tmpDir();
    // Build a version 1 database by hand, the way a server before migration 2 left it.
    const db = new Database(path.join(dir, DB_FILE_NAME));
    db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)');
    db.exec(MIGRATIONS[0].sql);
    db.prepare('INSERT INTO schema_migrations VALUES (1, ?, 1)').run(MIGRATIONS[0].name);
    db.prepare("INSERT INTO rooms VALUES ('old', 'Old', 'u', 'U', 1, 5, 0, NULL, '{}')").run();
    db.close();

    const s = open(dir);
    expect(s.schemaVersion).toBe(NEWEST);
    expect(s.listRooms().map((r) => r.room_id)).toEqual(['old']);
    s.insertFile(file('f1'));
    await s.close();
    const cols = inspect(dir, (d) => (d.prepare('PRAGMA table_info(files)').all() as { name: string; notnull: number }[]).map((c) => [c.name, c.notnull]));
    expect(cols).toEqual([
      ['file_id', 0],
      ['room_id', 1],
      ['name', 1],
      ['size', 1],
      ['md5', 1],
      ['chunk_size', 1],
      ['chunk_md5s', 1],
      ['uploader_id', 1],
      ['uploader_name', 1],
      ['owner_key', 1],
      ['uploaded_at', 1],
      ['expires_at', 0],
    ]);
    const indexes = inspect(dir, (d) => (d.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'files'").all() as { name: string }[]).map((i) => i.name));
    expect(indexes).toContain('files_room');
    const roomIndex = inspect(dir, (d) => (d.prepare("PRAGMA index_info('files_room')").all() as { name: string }[]).map((c) => c.name));
    expect(roomIndex).toEqual(['room_id', 'uploaded_at']);
  });

  it('a file of a room that is not in the rooms table is stored (temporary rooms have files too)', () => {
    const s = open(tmpDir());
    s.insertFile(file('f1', { room_id: 'temporary-room' }));
    expect(s.getFile('f1')?.room_id).toBe('temporary-room');
  });

  it('round-trips every column, the chunk MD5s as bytes', () => {
    const s = open(tmpDir());
    const md5s = Buffer.concat([Buffer.alloc(16, 1), Buffer.alloc(16, 2), Buffer.alloc(16, 3)]);
    const f = file('f1', { chunk_md5s: md5s, expires_at: 1_700_600_000.25, name: 'résumé ✓.pdf' });
    s.insertFile(f);
    const got = s.getFile('f1')!;
    expect(got).toEqual(f);
    expect(Buffer.isBuffer(got.chunk_md5s)).toBe(true);
    expect(s.getFile('nope')).toBeUndefined();
    expect(() => s.insertFile(f)).toThrow(/UNIQUE|PRIMARY/);
  });

  it('lists a room oldest first, counts it, and deletes one file', () => {
    const s = open(tmpDir());
    s.insertFile(file('late', { uploaded_at: 300 }));
    s.insertFile(file('early', { uploaded_at: 100 }));
    s.insertFile(file('same-time-b', { uploaded_at: 200 }));
    s.insertFile(file('other-room', { room_id: 'r2', uploaded_at: 50 }));
    expect(s.listFiles('r1').map((f) => f.file_id)).toEqual(['early', 'same-time-b', 'late']);
    expect(s.countFiles('r1')).toBe(3);
    expect(s.countFiles('r2')).toBe(1);
    expect(s.countFiles('r3')).toBe(0);
    expect(s.deleteFile('early')).toBe(true);
    expect(s.deleteFile('early')).toBe(false);
    expect(s.listFiles('r1').map((f) => f.file_id)).toEqual(['same-time-b', 'late']);
    expect(s.fileRoomIds().sort()).toEqual(['r1', 'r2']);
    expect([...s.fileIds()].sort()).toEqual(['late', 'other-room', 'same-time-b']);
  });

  it('usage sums sizes by owner key and over the server', () => {
    const s = open(tmpDir());
    expect(s.fileUsage('alice')).toBe(0);
    expect(s.totalFileUsage()).toEqual({ bytes: 0, files: 0 });
    s.insertFile(file('a1', { size: 100 }));
    s.insertFile(file('a2', { size: 250, room_id: 'r2' }));
    s.insertFile(file('b1', { size: 7, owner_key: 'bob', uploader_name: 'Bob' }));
    expect(s.fileUsage('alice')).toBe(350);
    expect(s.fileUsage('bob')).toBe(7);
    expect(s.fileUsage('carol')).toBe(0);
    expect(s.totalFileUsage()).toEqual({ bytes: 357, files: 3 });
  });

  it('expiredFiles returns files whose expires_at has passed, never those kept until deleted', () => {
    const s = open(tmpDir());
    s.insertFile(file('forever', { expires_at: null }));
    s.insertFile(file('past', { expires_at: 1000 }));
    s.insertFile(file('now', { expires_at: 2000 }));
    s.insertFile(file('future', { expires_at: 3000 }));
    expect(s.expiredFiles(2000).map((f) => f.file_id)).toEqual(['past', 'now']);
    expect(s.expiredFiles(999)).toEqual([]);
    expect(s.expiredFiles(1e12).map((f) => f.file_id)).toEqual(['past', 'now', 'future']);
  });

  it('files survive a reopen', async () => {
    const dir = tmpDir();
    const s1 = open(dir);
    s1.insertFile(file('kept'));
    await s1.close();
    const s2 = open(dir);
    expect(s2.getFile('kept')).toEqual(file('kept'));
  });
});
