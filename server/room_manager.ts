/**
 * Rooms and their membership rules: who may join (password, ban, lock, capacity),
 * who is host, and who takes over when the host leaves. Pure state: it never
 * sends anything; the server turns what it returns into pushes.
 */
import { randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto';
import { ProtocolError } from '../shared/errors';
import type { ChatEntry, RoomInfo, RoomRole } from '../shared/protocol/messages';
import type { Store, StoredRoom } from './store';
import { nameKey, ROLE_RANK, type User } from './user_manager';

// scrypt parameters: N=2^14, r=8, p=1 (the interactive-login figures of the scrypt paper
// and Node's defaults): about 30 ms a hash here, done off the event loop.
const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;

function scryptAsync(password: string, salt: Buffer, N: number, r: number, p: number, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, keylen, { N, r, p, maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** `scrypt$N$r$p$salt$hash`, base64url parts. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, SCRYPT.N, SCRYPT.r, SCRYPT.p, SCRYPT.keylen);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  const salt = Buffer.from(parts[4], 'base64url');
  const expected = Buffer.from(parts[5], 'base64url');
  const key = await scryptAsync(password, salt, N, r, p, expected.length);
  return timingSafeEqual(key, expected);
}

export interface RoomOptions {
  room_name: string;
  is_private: boolean;
  password_hash: string | null;
  max_participants: number;
  persistent: boolean;
  settings: Record<string, unknown>;
}

export class Room {
  readonly room_id: string;
  readonly room_name: string;
  readonly created_by: string;
  readonly created_by_name: string;
  readonly created_at: number;
  readonly max_participants: number;
  readonly is_private: boolean;
  readonly password_hash: string | null;
  readonly persistent: boolean;
  readonly settings: Record<string, unknown>;
  locked = false;
  recording = false;
  hostId: string | null = null;
  /** Members in join order (Map keeps insertion order): the host hand-over picks from the front. */
  readonly members = new Map<string, User>();
  /** Names removed by KICK_USER: barred until the meeting ends. */
  readonly bans = new Set<string>();
  /** The newest room messages, oldest first, at most historyLimit. */
  history: ChatEntry[] = [];
  /** Removes a temporary room nobody joined; cleared on the first join. */
  graceTimer: NodeJS.Timeout | null = null;

  constructor(init: StoredRoom & { persistent: boolean }) {
    this.room_id = init.room_id;
    this.room_name = init.room_name;
    this.created_by = init.created_by;
    this.created_by_name = init.created_by_name;
    this.created_at = init.created_at;
    this.max_participants = init.max_participants;
    this.is_private = init.is_private;
    this.password_hash = init.password_hash;
    this.persistent = init.persistent;
    this.settings = init.settings;
  }

  get host(): User | undefined {
    return this.hostId ? this.members.get(this.hostId) : undefined;
  }

  /** The room object on the wire: what is stored, less the password hash, plus the live state. */
  toInfo(): RoomInfo {
    const host = this.host;
    const { password_hash: _secret, ...stored } = this.toStored();
    return {
      ...stored,
      participant_count: this.members.size,
      is_recording: this.recording,
      is_locked: this.locked,
      is_persistent: this.persistent,
      host_id: host?.user_id ?? null,
      host_name: host?.username ?? null,
    };
  }

  toStored(): StoredRoom {
    return {
      room_id: this.room_id,
      room_name: this.room_name,
      created_by: this.created_by,
      created_by_name: this.created_by_name,
      created_at: this.created_at,
      max_participants: this.max_participants,
      is_private: this.is_private,
      password_hash: this.password_hash,
      settings: this.settings,
    };
  }

  /** Ends the meeting's own state: bans, lock, host. Members are removed by the caller. */
  resetMeeting(): void {
    this.bans.clear();
    this.locked = false;
    this.hostId = null;
  }
}

export interface RoleChange {
  user: User;
  role: RoomRole;
  previous: RoomRole | null;
}

export interface LeaveResult {
  /** Set when the host left and someone else took over. */
  newHost: RoleChange | null;
  /** The room had no one left and was removed (temporary rooms). */
  removed: boolean;
}

export class RoomManager {
  private readonly rooms = new Map<string, Room>();
  /** seq of messages that are not stored (temporary rooms); a persistent room's seq is its row id. */
  private seq = 0;

  /** The next seq for a message that is not stored (private messages). */
  nextSeq(): number {
    return ++this.seq;
  }

  constructor(
    private readonly store: Store,
    private readonly opts: { historyLimit: number; emptyRoomGraceMs: number; onExpire: (room: Room) => void },
  ) {
    for (const stored of store.listRooms()) {
      const room = new Room({ ...stored, persistent: true });
      room.history = store.chatHistory(room.room_id, opts.historyLimit);
      this.rooms.set(room.room_id, room);
    }
  }

  get size(): number {
    return this.rooms.size;
  }

  get(roomId: string): Room | undefined {
    return this.rooms.get(roomId);
  }

  require(roomId: string): Room {
    const room = this.rooms.get(roomId);
    if (!room) throw new ProtocolError('ROOM_NOT_FOUND', { room_id: roomId });
    return room;
  }

  all(): IterableIterator<Room> {
    return this.rooms.values();
  }

  list(): RoomInfo[] {
    return [...this.rooms.values()].map((r) => r.toInfo());
  }

  create(creator: User, o: RoomOptions): Room {
    const room = new Room({
      room_id: randomUUID(),
      room_name: o.room_name,
      created_by: creator.user_id,
      created_by_name: creator.username,
      created_at: Date.now() / 1000,
      max_participants: o.max_participants,
      is_private: o.is_private,
      password_hash: o.password_hash,
      settings: o.settings,
      persistent: o.persistent,
    });
    if (room.persistent) this.store.saveRoom(room.toStored());
    this.rooms.set(room.room_id, room);
    this.armGrace(room);
    return room;
  }

  /** A temporary room that stays empty this long is removed. */
  private armGrace(room: Room): void {
    if (room.persistent || this.opts.emptyRoomGraceMs <= 0) return;
    room.graceTimer = setTimeout(() => {
      room.graceTimer = null;
      if (room.members.size === 0 && this.rooms.get(room.room_id) === room) {
        this.remove(room);
        this.opts.onExpire(room);
      }
    }, this.opts.emptyRoomGraceMs);
    room.graceTimer.unref();
  }

  /**
   * Everything that decides whether `user` may enter, in the order a user would want
   * to hear it: banned, then password, then lock, then capacity. Admins pass all.
   */
  async checkJoin(room: Room, user: User, password: string | null | undefined): Promise<void> {
    if (user.isAdmin) return;
    if (room.bans.has(nameKey(user.username))) throw new ProtocolError('BANNED_FROM_ROOM', { room_name: room.room_name });
    if (room.password_hash) {
      if (!password) throw new ProtocolError('ROOM_PASSWORD_REQUIRED', { room_name: room.room_name });
      if (!(await verifyPassword(password, room.password_hash))) {
        throw new ProtocolError('WRONG_ROOM_PASSWORD', { room_name: room.room_name });
      }
    }
    this.checkCapacity(room, user);
  }

  /** The synchronous part of checkJoin, re-run right before joining (state may have moved during the hash). */
  checkCapacity(room: Room, user: User): void {
    if (user.isAdmin) return;
    if (room.bans.has(nameKey(user.username))) throw new ProtocolError('BANNED_FROM_ROOM', { room_name: room.room_name });
    if (room.locked) throw new ProtocolError('ROOM_LOCKED', { room_name: room.room_name });
    if (room.members.size >= room.max_participants) {
      throw new ProtocolError('ROOM_FULL', { room_name: room.room_name, max: room.max_participants });
    }
  }

  /** Adds the user; the first one in an empty room becomes its host. */
  join(room: Room, user: User): void {
    if (room.graceTimer) {
      clearTimeout(room.graceTimer);
      room.graceTimer = null;
    }
    room.members.set(user.user_id, user);
    user.roomId = room.room_id;
    if (!room.host) {
      room.hostId = user.user_id;
      user.role = 'host';
    } else {
      user.role = 'participant';
    }
  }

  leave(room: Room, user: User): LeaveResult {
    const wasHost = room.hostId === user.user_id;
    room.members.delete(user.user_id);
    user.resetMeetingState();
    let newHost: RoleChange | null = null;
    if (wasHost) {
      room.hostId = null;
      const next = this.pickNextHost(room);
      if (next) newHost = this.setHost(room, next);
    }
    let removed = false;
    if (room.members.size === 0) {
      // The meeting is over when the last person leaves: bans and lock go with it.
      room.resetMeeting();
      if (!room.persistent) {
        this.remove(room);
        removed = true;
      }
    }
    return { newHost, removed };
  }

  /** A moderator who joined earliest, else the participant who joined earliest. */
  private pickNextHost(room: Room): User | undefined {
    let best: User | undefined;
    for (const m of room.members.values()) {
      if (!best || (m.role && best.role && ROLE_RANK[m.role] > ROLE_RANK[best.role])) best = m;
    }
    return best;
  }

  setHost(room: Room, user: User): RoleChange {
    const previous = user.role;
    room.hostId = user.user_id;
    user.role = 'host';
    return { user, role: 'host', previous };
  }

  remove(room: Room): void {
    if (room.graceTimer) clearTimeout(room.graceTimer);
    room.graceTimer = null;
    this.rooms.delete(room.room_id);
    if (room.persistent) this.store.deleteRoom(room.room_id);
  }

  /** The seq of a new room message: the row id it will have when stored. */
  nextSeqFor(room: Room): number {
    return room.persistent ? this.store.reserveChatId() : this.nextSeq();
  }

  /** Records a room message (its seq from nextSeqFor): history, and the store for a persistent room. */
  addChat(room: Room, entry: ChatEntry): void {
    if (room.persistent) this.store.insertChat({ ...entry, room_id: room.room_id });
    room.history.push(entry);
    if (room.history.length > this.opts.historyLimit) room.history.splice(0, room.history.length - this.opts.historyLimit);
  }

  /** History for CHAT_HISTORY: from memory when it covers the request, else from the store. */
  history(room: Room, limit: number, before?: string): ChatEntry[] {
    if (!before && limit <= room.history.length) return room.history.slice(-limit);
    if (room.persistent) return this.store.chatHistory(room.room_id, limit, before);
    if (!before) return room.history.slice(-limit);
    const idx = room.history.findIndex((e) => e.chat_id === before);
    return idx <= 0 ? [] : room.history.slice(Math.max(0, idx - limit), idx);
  }

  close(): void {
    for (const room of this.rooms.values()) {
      if (room.graceTimer) clearTimeout(room.graceTimer);
      room.graceTimer = null;
    }
  }
}
