/**
 * SQLite persistence (better-sqlite3) in the data directory: persistent rooms, their
 * chat history, the index of shared files, and versioned migrations that later
 * features extend (recordings). Synchronous by design: each statement is a few
 * microseconds and the server's event loop is the only writer, so there is nothing to
 * wait for.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { ChatEntry } from '../shared/protocol/messages';

export const DB_FILE_NAME = 'lanvc.sqlite';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * Append-only: never edit a migration that has shipped; add the next version.
 * Each runs once, in a transaction, and is recorded in schema_migrations.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'rooms and chat',
    sql: `
      CREATE TABLE rooms (
        room_id          TEXT PRIMARY KEY,
        room_name        TEXT NOT NULL,
        created_by       TEXT NOT NULL,
        created_by_name  TEXT NOT NULL,
        created_at       REAL NOT NULL,
        max_participants INTEGER NOT NULL,
        is_private       INTEGER NOT NULL,
        password_hash    TEXT,
        settings         TEXT NOT NULL DEFAULT '{}'
      );
      CREATE TABLE chat_messages (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        chat_id   TEXT NOT NULL UNIQUE,
        room_id   TEXT NOT NULL REFERENCES rooms(room_id) ON DELETE CASCADE,
        user_id   TEXT NOT NULL,
        username  TEXT NOT NULL,
        message   TEXT NOT NULL,
        timestamp REAL NOT NULL
      );
      CREATE INDEX chat_messages_room ON chat_messages(room_id, id);
    `,
  },
  {
    version: 2,
    name: 'files',
    // No foreign key to rooms: a temporary room's files are indexed too, and it is not
    // in the rooms table. The file server removes a room's files when the room goes.
    sql: `
      CREATE TABLE files (
        file_id       TEXT PRIMARY KEY,
        room_id       TEXT NOT NULL,
        name          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        md5           TEXT NOT NULL,
        chunk_size    INTEGER NOT NULL,
        chunk_md5s    BLOB NOT NULL,
        uploader_id   TEXT NOT NULL,
        uploader_name TEXT NOT NULL,
        owner_key     TEXT NOT NULL,
        uploaded_at   REAL NOT NULL,
        expires_at    REAL
      );
      CREATE INDEX files_room ON files(room_id, uploaded_at);
      CREATE INDEX files_owner ON files(owner_key);
      CREATE INDEX files_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
    `,
  },
];

export interface StoredRoom {
  room_id: string;
  room_name: string;
  created_by: string;
  created_by_name: string;
  created_at: number;
  max_participants: number;
  is_private: boolean;
  password_hash: string | null;
  settings: Record<string, unknown>;
}

interface RoomRow extends Omit<StoredRoom, 'is_private' | 'settings'> {
  is_private: number;
  settings: string;
}

interface ChatRow {
  id: number;
  chat_id: string;
  room_id: string;
  user_id: string;
  username: string;
  message: string;
  timestamp: number;
}

/** A row to write is a row as read. */
type ChatInsert = ChatRow;

/**
 * A shared file as indexed: the file object of the wire (FileInfo) plus what only the
 * server needs, the MD5 of each chunk as verified at upload (16 bytes each, in order;
 * downloads send them so a byte that rots on disk is caught) and the uploader's name
 * key (quotas and delete rights follow the name across sessions).
 */
export interface StoredFile {
  file_id: string;
  room_id: string;
  name: string;
  size: number;
  md5: string;
  chunk_size: number;
  chunk_md5s: Buffer;
  uploader_id: string;
  uploader_name: string;
  owner_key: string;
  uploaded_at: number;
  expires_at: number | null;
}

/** A file as listed: everything but the chunk MD5s, which only a download needs. */
export type ListedFile = Omit<StoredFile, 'chunk_md5s'>;
const LISTED_FILE_COLUMNS = 'file_id, room_id, name, size, md5, chunk_size, uploader_id, uploader_name, owner_key, uploaded_at, expires_at';

/**
 * WAL checkpoints run here, on a connection of their own in a worker thread. SQLite's
 * automatic checkpoint would run inside whichever insert crosses 1000 WAL pages and
 * block the event loop for its fsync (about 5 ms here, every ~200 chat messages),
 * which every user in every room would feel as a hiccup. PASSIVE never blocks the
 * writer; what it cannot copy yet it copies next time.
 */
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.file);
db.pragma('busy_timeout = 1000');
const run = (mode) => {
  try {
    const [r] = db.pragma('wal_checkpoint(' + mode + ')');
    parentPort.postMessage({ ok: true, log: r.log, checkpointed: r.checkpointed });
  } catch (e) {
    parentPort.postMessage({ ok: false, error: String(e && e.message || e) });
  }
};
const timer = setInterval(() => run('PASSIVE'), workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m !== 'close') return;
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/** Chat rows held for a retry when writing fails (disk full), at most. */
const MAX_PENDING_WRITES = 10_000;

export interface StoreOptions {
  /** How often the background checkpoint runs (ms). */
  checkpointIntervalMs?: number;
  /** Told when a deferred chat write fails (the server logs it); the messages are kept for the next try. */
  onWriteError?: (error: Error) => void;
}

export class StoreError extends Error {
  constructor(message: string, readonly hint: string) {
    super(`${message}. ${hint}`);
    this.name = 'StoreError';
  }
}

export class Store {
  readonly file: string;
  private readonly db!: Database.Database;
  private closed = false;
  private readonly stmts;
  private readonly checkpointer: Worker;
  /**
   * Group commit: room messages are written in one transaction per event-loop turn,
   * after the turn's pushes have gone out, so a chat reaches the room without waiting
   * for SQLite. Their ids (the messages' seq) are given here, at once: this server is
   * the only writer. Every read flushes first, so what was said is always readable.
   */
  private pending: ChatInsert[] = [];
  private flushScheduled = false;
  private nextChatId: number;
  private readonly writePending: (rows: ChatInsert[]) => void;
  private readonly onWriteError: (e: Error) => void;
  /** Background checkpoints done, and the last error of one (for the stats API and tests). */
  readonly checkpoints = { count: 0, lastError: null as string | null };

  constructor(dataDir: string, options: StoreOptions = {}) {
    try {
      fs.mkdirSync(dataDir, { recursive: true });
    } catch (e) {
      throw new StoreError(`Cannot create data directory ${dataDir}: ${(e as Error).message}`, 'Choose a writable --data-dir.');
    }
    this.file = path.join(dataDir, DB_FILE_NAME);
    try {
      this.db = new Database(this.file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('wal_autocheckpoint = 0');
      this.migrate();
    } catch (e) {
      // Never leave the file (and its -wal/-shm) open behind a refused open.
      if (this.db?.open) this.db.close();
      if (e instanceof StoreError) throw e;
      throw new StoreError(
        `Cannot open database ${this.file}: ${(e as Error).message}`,
        'Check that the file is a LAN Video Call database and is writable; move it away to start with an empty one.',
      );
    }
    this.stmts = {
      listRooms: this.db.prepare<[], RoomRow>('SELECT * FROM rooms ORDER BY created_at'),
      insertRoom: this.db.prepare(
        `INSERT INTO rooms (room_id, room_name, created_by, created_by_name, created_at, max_participants, is_private, password_hash, settings)
         VALUES (@room_id, @room_name, @created_by, @created_by_name, @created_at, @max_participants, @is_private, @password_hash, @settings)`,
      ),
      deleteRoom: this.db.prepare<[string]>('DELETE FROM rooms WHERE room_id = ?'),
      insertChat: this.db.prepare(
        `INSERT INTO chat_messages (id, chat_id, room_id, user_id, username, message, timestamp)
         VALUES (@id, @chat_id, @room_id, @user_id, @username, @message, @timestamp)`,
      ),
      lastChatId: this.db.prepare<[], { id: number | null }>('SELECT MAX(id) AS id FROM chat_messages'),
      recentChat: this.db.prepare<[string, number], ChatRow>(
        'SELECT * FROM chat_messages WHERE room_id = ? ORDER BY id DESC LIMIT ?',
      ),
      chatBefore: this.db.prepare<[string, string, number], ChatRow>(
        `SELECT * FROM chat_messages WHERE room_id = ? AND id < (SELECT id FROM chat_messages WHERE chat_id = ?)
         ORDER BY id DESC LIMIT ?`,
      ),
      insertFile: this.db.prepare(
        `INSERT INTO files (file_id, room_id, name, size, md5, chunk_size, chunk_md5s, uploader_id, uploader_name, owner_key, uploaded_at, expires_at)
         VALUES (@file_id, @room_id, @name, @size, @md5, @chunk_size, @chunk_md5s, @uploader_id, @uploader_name, @owner_key, @uploaded_at, @expires_at)`,
      ),
      getFile: this.db.prepare<[string], StoredFile>('SELECT * FROM files WHERE file_id = ?'),
      // Without the chunk MD5s (16 bytes per chunk): a list is read on every join and change.
      listFiles: this.db.prepare<[string], ListedFile>(
        `SELECT ${LISTED_FILE_COLUMNS} FROM files WHERE room_id = ? ORDER BY uploaded_at, rowid`,
      ),
      countFiles: this.db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM files WHERE room_id = ?'),
      deleteFile: this.db.prepare<[string]>('DELETE FROM files WHERE file_id = ?'),
      fileUsage: this.db.prepare<[string], { n: number | null }>('SELECT SUM(size) AS n FROM files WHERE owner_key = ?'),
      totalFileUsage: this.db.prepare<[], { n: number | null; files: number }>('SELECT SUM(size) AS n, COUNT(*) AS files FROM files'),
      expiredFiles: this.db.prepare<[number], StoredFile>(
        'SELECT * FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at',
      ),
      fileRoomIds: this.db.prepare<[], { room_id: string }>('SELECT DISTINCT room_id FROM files'),
      allFileIds: this.db.prepare<[], { file_id: string }>('SELECT file_id FROM files'),
    };
    this.nextChatId = (this.stmts.lastChatId.get()?.id ?? 0) + 1;
    this.onWriteError = options.onWriteError ?? (() => undefined);
    this.writePending = this.db.transaction((rows: ChatInsert[]) => {
      for (const r of rows) this.stmts.insertChat.run(r);
    });
    this.checkpointer = this.startCheckpointer(options.checkpointIntervalMs ?? 1000);
  }

  private startCheckpointer(intervalMs: number): Worker {
    const worker = new Worker(CHECKPOINTER, {
      eval: true,
      workerData: { module: require.resolve('better-sqlite3'), file: this.file, intervalMs },
    });
    worker.on('message', (m: { ok: boolean; error?: string }) => {
      if (m.ok) this.checkpoints.count++;
      else this.checkpoints.lastError = m.error ?? 'unknown';
    });
    worker.on('error', (e) => (this.checkpoints.lastError = e.message));
    worker.unref();
    return worker;
  }

  /** The schema version the database is at. */
  get schemaVersion(): number {
    const row = this.db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null };
    return row.v ?? 0;
  }

  private migrate(): void {
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)',
    );
    const current = this.schemaVersion;
    const newest = MIGRATIONS[MIGRATIONS.length - 1].version;
    if (current > newest) {
      throw new StoreError(
        `Database ${this.file} is at schema version ${current}, newer than this server knows (${newest})`,
        'Run a newer server, or point --data-dir at another directory.',
      );
    }
    const record = this.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
    for (const m of MIGRATIONS) {
      if (m.version <= current) continue;
      this.db.transaction(() => {
        this.db.exec(m.sql);
        record.run(m.version, m.name, Date.now() / 1000);
      })();
    }
  }

  listRooms(): StoredRoom[] {
    return this.stmts.listRooms.all().map((r) => ({
      ...r,
      is_private: r.is_private !== 0,
      settings: parseSettings(r.settings),
    }));
  }

  saveRoom(room: StoredRoom): void {
    this.stmts.insertRoom.run({ ...room, is_private: room.is_private ? 1 : 0, settings: JSON.stringify(room.settings) });
  }

  deleteRoom(roomId: string): void {
    this.flush();
    this.stmts.deleteRoom.run(roomId);
  }

  /** The row id the next room message will have: its seq, known before it is written. */
  reserveChatId(): number {
    return this.nextChatId++;
  }

  /**
   * Stores a room message, written in this loop turn's group commit (after the turn's
   * socket writes: callers push first, then store). Returns its row id, the seq.
   */
  insertChat(entry: Omit<ChatEntry, 'seq'> & { room_id: string; seq?: number }): number {
    const id = entry.seq ?? this.reserveChatId();
    this.pending.push({
      id,
      chat_id: entry.chat_id,
      room_id: entry.room_id,
      user_id: entry.user_id,
      username: entry.username,
      message: entry.message,
      timestamp: entry.timestamp,
    });
    if (!this.flushScheduled) {
      // Queued behind the socket uncorks of the pushes made before this call, in the same
      // check phase: the room hears the message first, and the write follows at once.
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return id;
  }

  /** Writes the messages not yet written, in one transaction. */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0 || this.closed) return;
    const rows = this.pending;
    this.pending = [];
    try {
      this.writePending(rows);
    } catch {
      this.writeOneByOne(rows);
    }
  }

  /**
   * A batch failed: write row by row. A row the database refuses for what it is (a
   * constraint: unknown room, duplicate id) is dropped and reported, so it cannot block
   * the others forever; on any other error (disk full) the rest is kept for the next
   * try, up to a bound, so a disk that stays full does not grow memory without end.
   */
  private writeOneByOne(rows: ChatInsert[]): void {
    for (let i = 0; i < rows.length; i++) {
      try {
        this.stmts.insertChat.run(rows[i]);
      } catch (e) {
        const err = e as Error & { code?: string };
        if (err.code?.startsWith('SQLITE_CONSTRAINT')) {
          this.onWriteError(new Error(`chat message ${rows[i].chat_id} not stored: ${err.message}`));
          continue;
        }
        this.pending = rows.slice(i).concat(this.pending);
        const dropped = this.pending.length - MAX_PENDING_WRITES;
        if (dropped > 0) this.pending.splice(0, dropped);
        this.onWriteError(new Error(`${err.message}${dropped > 0 ? `; ${dropped} oldest messages dropped from history` : ''}`));
        // Try again in a second even if nobody writes or reads meanwhile.
        setTimeout(() => this.flush(), 1000).unref();
        return;
      }
    }
  }

  /** The newest `limit` room messages (older than `beforeChatId` when given), oldest first. */
  chatHistory(roomId: string, limit: number, beforeChatId?: string): ChatEntry[] {
    this.flush();
    const rows = beforeChatId
      ? this.stmts.chatBefore.all(roomId, beforeChatId, limit)
      : this.stmts.recentChat.all(roomId, limit);
    return rows.reverse().map((r) => ({
      chat_id: r.chat_id,
      seq: r.id,
      room_id: r.room_id,
      user_id: r.user_id,
      username: r.username,
      message: r.message,
      timestamp: r.timestamp,
      is_private: false,
      recipient: null,
    }));
  }

  // ---------------------------------------------------------------- files

  insertFile(file: StoredFile): void {
    this.stmts.insertFile.run(file);
  }

  getFile(fileId: string): StoredFile | undefined {
    return this.stmts.getFile.get(fileId);
  }

  /** A room's files, oldest first (without their chunk MD5s: getFile has them). */
  listFiles(roomId: string): ListedFile[] {
    return this.stmts.listFiles.all(roomId);
  }

  countFiles(roomId: string): number {
    return this.stmts.countFiles.get(roomId)?.n ?? 0;
  }

  /** Removes the file's row; true when there was one. */
  deleteFile(fileId: string): boolean {
    return this.stmts.deleteFile.run(fileId).changes > 0;
  }

  /** Bytes of completed files stored under this owner key (the uploader's name key). */
  fileUsage(ownerKey: string): number {
    return this.stmts.fileUsage.get(ownerKey)?.n ?? 0;
  }

  /** Bytes and count of every completed file on the server. */
  totalFileUsage(): { bytes: number; files: number } {
    const r = this.stmts.totalFileUsage.get();
    return { bytes: r?.n ?? 0, files: r?.files ?? 0 };
  }

  /** Files whose expires_at is at or before `nowSec` (seconds since the epoch). */
  expiredFiles(nowSec: number): StoredFile[] {
    return this.stmts.expiredFiles.all(nowSec);
  }

  /** Every room that has files (to find files of rooms that no longer exist). */
  fileRoomIds(): string[] {
    return this.stmts.fileRoomIds.all().map((r) => r.room_id);
  }

  /** Every indexed file id (to find files on disk that nothing lists). */
  fileIds(): Set<string> {
    return new Set(this.stmts.allFileIds.all().map((r) => r.file_id));
  }

  /** Closes the database; resolves once the checkpoint worker has closed its connection too. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.flush();
    this.closed = true;
    const exited = new Promise<void>((resolve) => this.checkpointer.once('exit', () => resolve()));
    // Held while it shuts down: an unref'd worker would let the process exit with close() pending.
    this.checkpointer.ref();
    this.checkpointer.postMessage('close');
    this.db.close();
    return exited;
  }
}

function parseSettings(s: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(s);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
