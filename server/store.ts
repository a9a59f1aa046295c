/**
 * SQLite persistence (better-sqlite3) in the data directory: persistent rooms, their
 * chat history, and versioned migrations that later features extend (files,
 * recordings). Synchronous by design: each statement is a few microseconds and the
 * server's event loop is the only writer, so there is nothing to wait for.
 */
import fs from 'node:fs';
import path from 'node:path';
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

  constructor(dataDir: string) {
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
        `INSERT INTO chat_messages (chat_id, room_id, user_id, username, message, timestamp)
         VALUES (@chat_id, @room_id, @user_id, @username, @message, @timestamp)`,
      ),
      recentChat: this.db.prepare<[string, number], ChatRow>(
        'SELECT * FROM chat_messages WHERE room_id = ? ORDER BY id DESC LIMIT ?',
      ),
      chatBefore: this.db.prepare<[string, string, number], ChatRow>(
        `SELECT * FROM chat_messages WHERE room_id = ? AND id < (SELECT id FROM chat_messages WHERE chat_id = ?)
         ORDER BY id DESC LIMIT ?`,
      ),
    };
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
    this.stmts.deleteRoom.run(roomId);
  }

  /** Stores a room message; returns its row id, which is the message's seq. */
  insertChat(entry: Omit<ChatEntry, 'seq'> & { room_id: string }): number {
    const r = this.stmts.insertChat.run({
      chat_id: entry.chat_id,
      room_id: entry.room_id,
      user_id: entry.user_id,
      username: entry.username,
      message: entry.message,
      timestamp: entry.timestamp,
    });
    return Number(r.lastInsertRowid);
  }

  /** The newest `limit` room messages (older than `beforeChatId` when given), oldest first. */
  chatHistory(roomId: string, limit: number, beforeChatId?: string): ChatEntry[] {
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

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
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
