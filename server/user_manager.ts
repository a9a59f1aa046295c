/**
 * Online users: one User per signed-in name, whatever connection it currently uses.
 * Names are unique case-insensitively (after Unicode NFC), so "Alice" and "alice"
 * cannot both be online. The user object on the wire is derived here, with
 * permissions derived from the role, never stored separately.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Permissions, RoomRole, UserInfo } from '../shared/protocol/messages';
import type { Session } from './session';
import { CONSOLE_USERNAME } from './stats';

/** Rank for "may act on": admin above host above moderator above participant. */
export const ROLE_RANK: Record<RoomRole, number> = { participant: 0, moderator: 1, host: 2 };
export const ADMIN_RANK = 3;

export function permissionsFor(role: RoomRole | null, isAdmin: boolean): Permissions {
  if (isAdmin || role === 'host') {
    return { can_mute_others: true, can_kick_users: true, can_manage_rooms: true, can_record: true };
  }
  if (role === 'moderator') {
    return { can_mute_others: true, can_kick_users: true, can_manage_rooms: false, can_record: false };
  }
  return { can_mute_others: false, can_kick_users: false, can_manage_rooms: false, can_record: false };
}

/** A token bucket: `rate` per second sustained, `burst` at once. */
export class RateLimiter {
  private tokens: number;
  private last = performance.now();
  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {
    this.tokens = burst;
  }
  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export class User {
  readonly user_id = randomUUID();
  /** Given at CONNECT; a later CONNECT with it takes this user over (resume). */
  readonly resumeToken = randomBytes(18).toString('base64url');
  /** The 64-bit secret of this user's media headers (given in ROOM_JOIN's SUCCESS, never shown to others). */
  readonly mediaToken = randomBytes(8);
  /** The id of this user's media streams while in a room (assigned by the relay on join). */
  streamId: number | null = null;
  readonly connectedAt = Date.now() / 1000;
  roomId: string | null = null;
  role: RoomRole | null = null;
  audioEnabled = false;
  videoEnabled = false;
  screenSharing = false;
  mutedByHost = false;
  handRaised = false;
  lastSeen = Date.now() / 1000;
  /** Set while the connection is gone and the server holds the user's place (resume window). */
  graceTimer: NodeJS.Timeout | null = null;
  session: Session;
  readonly chatLimiter: RateLimiter;
  readonly reactionLimiter: RateLimiter;

  constructor(
    readonly username: string,
    readonly isAdmin: boolean,
    session: Session,
    limits: { chatRatePerSecond: number; chatBurst: number },
  ) {
    this.session = session;
    this.chatLimiter = new RateLimiter(limits.chatRatePerSecond, limits.chatBurst);
    this.reactionLimiter = new RateLimiter(limits.chatRatePerSecond, limits.chatBurst);
  }

  get rank(): number {
    if (this.isAdmin) return ADMIN_RANK;
    return this.role ? ROLE_RANK[this.role] : -1;
  }

  get ref(): { user_id: string; username: string } {
    return { user_id: this.user_id, username: this.username };
  }

  /** Reset what belongs to a meeting when the user leaves a room. */
  resetMeetingState(): void {
    this.roomId = null;
    this.role = null;
    this.handRaised = false;
    this.mutedByHost = false;
  }

  toInfo(): UserInfo {
    return {
      user_id: this.user_id,
      username: this.username,
      room_id: this.roomId,
      is_online: true,
      is_muted: this.mutedByHost || !this.audioEnabled,
      is_muted_by_host: this.mutedByHost,
      is_video_enabled: this.videoEnabled,
      is_audio_enabled: this.audioEnabled && !this.mutedByHost,
      is_screen_sharing: this.screenSharing,
      hand_raised: this.handRaised,
      role: this.role,
      is_admin: this.isAdmin,
      is_reconnecting: this.graceTimer !== null,
      stream_id: this.streamId,
      last_seen: this.lastSeen,
      permissions: permissionsFor(this.role, this.isAdmin),
    };
  }
}

export function nameKey(username: string): string {
  return username.normalize('NFC').toLowerCase();
}

export class UserManager {
  private readonly byId = new Map<string, User>();
  private readonly byName = new Map<string, User>();

  constructor(private readonly limits: { chatRatePerSecond: number; chatBurst: number }) {}

  get size(): number {
    return this.byId.size;
  }

  add(username: string, isAdmin: boolean, session: Session): User {
    const user = new User(username, isAdmin, session, this.limits);
    this.byId.set(user.user_id, user);
    this.byName.set(nameKey(username), user);
    return user;
  }

  remove(user: User): void {
    if (this.byId.get(user.user_id) === user) this.byId.delete(user.user_id);
    if (this.byName.get(nameKey(user.username)) === user) this.byName.delete(nameKey(user.username));
  }

  get(userId: string): User | undefined {
    return this.byId.get(userId);
  }

  getByName(username: string): User | undefined {
    return this.byName.get(nameKey(username));
  }

  /** A user named by id or by username. */
  find(ref: { user_id?: string | null; username?: string | null }): User | undefined {
    if (ref.user_id) return this.byId.get(ref.user_id);
    if (ref.username) return this.getByName(ref.username);
    return undefined;
  }

  all(): IterableIterator<User> {
    return this.byId.values();
  }

  list(): UserInfo[] {
    return [...this.byId.values()].map((u) => u.toInfo());
  }
}

/**
 * The server operator at the monitor: an admin who outranks every admin client, so the
 * console can act on anyone. It is in no room and no user list, and its session never
 * connects, so nothing is ever sent to it.
 */
export class ConsoleUser extends User {
  constructor(session: Session, limits: { chatRatePerSecond: number; chatBurst: number }) {
    super(CONSOLE_USERNAME, true, session, limits);
    session.closed = true;
  }

  override get rank(): number {
    return ADMIN_RANK + 1;
  }
}
