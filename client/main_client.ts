/**
 * The client library: one control connection to the server with typed events,
 * requests matched to replies by message_id (a Map of id -> {resolve, reject, timer},
 * cleared on reply, timeout and link loss), heartbeats, and automatic reconnect with
 * backoff that takes the session over (resume token) and rejoins the room.
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { DEFAULT_PORTS, DEFAULTS, LIMITS, PROTOCOL_VERSION } from '../shared/constants';
import { isErrorCode, ProtocolError } from '../shared/errors';
import { TypedEmitter } from '../shared/events';
import { encodeFrame, FrameDecoder } from '../shared/protocol/framing';
import { MediaLink, type MediaLinkOptions, type ReceivedAudioPacket, type ReceivedFrame } from './media_link';
import type { SenderAggregate, StreamKindName } from '../shared/protocol/media_packet';
import {
  MT,
  type MediaGrant,
  type ChatEntry,
  type Envelope,
  type ErrorData,
  type FileInfo,
  type PushData,
  type RequestData,
  type RequestType,
  type ResponseData,
  type RoomInfo,
  type UserInfo,
} from '../shared/protocol/messages';

export interface ClientOptions {
  host?: string;
  port?: number;
  username: string;
  /** Server password, when the server has one. */
  password?: string | null;
  /** Signs in as admin. */
  adminPassword?: string | null;
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Reconnect by itself when the link drops (default true). */
  reconnect?: boolean;
  reconnectAttempts?: number;
  reconnectBaseDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /** Overrides the heartbeat interval the server announces. */
  heartbeatIntervalMs?: number;
  capabilities?: string[];
  /** Open the UDP media link when joining a room (default true). */
  media?: boolean;
  /** Media link tuning; `portsOverride` sends media through other ports (tests: an impairment proxy). */
  mediaOptions?: Partial<Omit<MediaLinkOptions, 'host' | 'grant'>>;
}

/** A whole frame from another participant, with who sent it. */
export interface MediaFrame extends ReceivedFrame {
  user_id: string | null;
  username: string | null;
}

/** An audio packet from another participant, with who sent it. */
export interface MediaAudioPacket extends ReceivedAudioPacket {
  user_id: string | null;
  username: string | null;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export type ClientEvents = {
  /** Signed in (first time or after a reconnect). */
  connected: [{ user: UserInfo; resumed: boolean; reconnect: boolean }];
  /** The link dropped; `willReconnect` says whether the client tries again. */
  disconnected: [{ reason: string; willReconnect: boolean }];
  reconnecting: [{ attempt: number; of: number; delayMs: number }];
  reconnected: [{ room: RoomInfo | null }];
  reconnect_failed: [ProtocolError];
  /** Every envelope received, before any other event. */
  message: [Envelope<string, Record<string, unknown>>];
  chat: [ChatEntry];
  history: [PushData<'CHAT_HISTORY'>];
  /** A user came online (room_id null) or joined your room. */
  user_join: [UserInfo, string | null];
  /** A user left your room (room_id set) or went offline (room_id null). */
  user_leave: [PushData<'USER_LEAVE'>, string | null];
  user_update: [UserInfo];
  users: [UserInfo[]];
  rooms: [RoomInfo[]];
  room_update: [PushData<'ROOM_UPDATE'>];
  /** You joined or left a room (null). */
  room: [RoomInfo | null];
  reaction: [PushData<'REACTION'>];
  muted: [PushData<'MUTE_USER'>];
  unmute_requested: [PushData<'UNMUTE_USER'>];
  kicked: [PushData<'KICK_USER'>];
  role_change: [PushData<'ROLE_CHANGE'>];
  meeting_ended: [PushData<'END_MEETING'>];
  room_deleted: [PushData<'ROOM_DELETE'>];
  /** The server announced it is closing the connection. */
  server_disconnect: [PushData<'DISCONNECT'>];
  /** An ERROR that answers no pending request. */
  server_error: [ProtocolError];
  /** The media link is registered with the relay (after joining a room). */
  media_ready: [MediaLink];
  /** The media link failed (e.g. MEDIA_UNREACHABLE: UDP blocked); control goes on. */
  media_error: [ProtocolError];
  /** A whole camera or screen frame from a room member. */
  frame: [MediaFrame];
  /** An audio packet from a room member (not reassembled: the audio client's jitter buffer orders them). */
  audio: [MediaAudioPacket];
  /** The room's dominant speaker changed (decided by the server for everyone). */
  active_speaker: [PushData<'ACTIVE_SPEAKER'>];
  /** How receivers get our streams, aggregated by the relay (once a second). */
  sender_report: [SenderAggregate[]];
  video_start: [PushData<'VIDEO_START'>];
  video_stop: [PushData<'VIDEO_STOP'>];
  screen_share: [PushData<'SCREEN_SHARE'>];
  /** A host turned your camera or screen share off. */
  stop_video: [PushData<'STOP_VIDEO'>];
  /** Your room's file list: on joining (no `change`) and when a file is added, deleted or expires. */
  files: [PushData<'FILE_LIST'>];
  closed: [];
};

interface Pending {
  type: string;
  resolve: (data: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Turns an ERROR's data into a ProtocolError with the server's message. */
export function errorFromWire(data: ErrorData | Record<string, unknown>): ProtocolError {
  const code = isErrorCode(data.code) ? data.code : 'INTERNAL_ERROR';
  const details = (data.details && typeof data.details === 'object' ? data.details : {}) as Record<string, unknown>;
  return new ProtocolError(code, details, typeof data.message === 'string' ? data.message : undefined);
}

export class Client extends TypedEmitter<ClientEvents> {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  private readonly opts: Required<Omit<ClientOptions, 'password' | 'adminPassword' | 'heartbeatIntervalMs' | 'capabilities' | 'mediaOptions'>> &
    Pick<ClientOptions, 'password' | 'adminPassword' | 'heartbeatIntervalMs' | 'capabilities' | 'mediaOptions'>;
  /** The UDP media link while in a room (null otherwise, or with media: false). */
  media: MediaLink | null = null;
  private mediaGrant: MediaGrant | null = null;
  private readonly streamOwners = new Map<number, UserInfo>();
  state: ClientState = 'idle';
  /** Yourself, as the server last described you. */
  user: UserInfo | null = null;
  /** Everyone online, by user_id. */
  readonly users = new Map<string, UserInfo>();
  /** Every room, by room_id. */
  readonly rooms = new Map<string, RoomInfo>();
  /** The room you are in, or null. */
  room: RoomInfo | null = null;
  /** Files shared in your room, oldest first, as the server last listed them (empty outside a room). */
  files: FileInfo[] = [];
  /** The room's dominant speaker as the server last said (ACTIVE_SPEAKER); null: nobody yet. */
  activeSpeaker: { user_id: string; username: string } | null = null;
  private activeSpeakerRoomId: string | null = null;
  /** The room `files` belongs to. */
  private filesRoomId: string | null = null;
  /**
   * The room a ROOM_JOIN is under way for: its FILE_LIST push is handled in the same
   * socket read as the join's reply, before joinRoom() has set `room`.
   */
  private joiningRoomId: string | null = null;
  serverCapabilities: string[] = [];
  serverName = '';
  protocolVersion = 0;
  private socket: net.Socket | null = null;
  private readonly pending = new Map<string, Pending>();
  private resumeToken: string | null = null;
  private roomPassword: string | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private lastReceived = 0;
  private timeoutMs: number = DEFAULTS.connectionTimeoutMs;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectWake: (() => void) | null = null;
  private closedByUser = false;
  private reconnectRunning = false;

  constructor(options: ClientOptions) {
    super();
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port ?? DEFAULT_PORTS.control;
    this.username = options.username;
    this.opts = {
      host: this.host,
      port: this.port,
      username: options.username,
      password: options.password,
      adminPassword: options.adminPassword,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
      reconnect: options.reconnect ?? true,
      reconnectAttempts: options.reconnectAttempts ?? DEFAULTS.reconnectAttempts,
      reconnectBaseDelayMs: options.reconnectBaseDelayMs ?? DEFAULTS.reconnectBaseDelayMs,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? DEFAULTS.reconnectMaxDelayMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      capabilities: options.capabilities,
      media: options.media ?? true,
      mediaOptions: options.mediaOptions,
    };
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  get userId(): string | null {
    return this.user?.user_id ?? null;
  }

  /** Members of your room. */
  get participants(): UserInfo[] {
    const roomId = this.room?.room_id;
    return roomId ? [...this.users.values()].filter((u) => u.room_id === roomId) : [];
  }

  // ------------------------------------------------------------ connection

  /** Connect and sign in. Rejects with CONNECT_FAILED or the server's error (e.g. USERNAME_TAKEN). */
  async connect(): Promise<UserInfo> {
    if (this.state === 'closed') throw new ProtocolError('CLIENT_CLOSED');
    if (this.state === 'connected' && this.user) return this.user;
    this.state = 'connecting';
    try {
      return await this.open(false);
    } catch (e) {
      if (this.state === 'connecting') this.state = 'idle';
      throw e;
    }
  }

  private async open(isReconnect: boolean): Promise<UserInfo> {
    const socket = await this.dial();
    if (this.closedByUser) {
      // close() ran while we were dialing: this connection must not outlive it.
      socket.destroy();
      throw new ProtocolError('CLIENT_CLOSED');
    }
    this.socket = socket;
    const decoder = new FrameDecoder({ maxFrameBytes: LIMITS.maxInboundFrameBytes });
    this.lastReceived = performance.now();
    socket.on('data', (chunk: Buffer) => {
      this.lastReceived = performance.now();
      for (const f of decoder.push(chunk)) {
        if (f.ok) this.onMessage(f.value as Envelope<string, Record<string, unknown>>);
        else if (f.fatal) socket.destroy(f.error);
      }
    });
    socket.on('error', () => {
      /* reported through 'close' */
    });
    const onClose = () => this.onClose(socket);
    socket.once('close', onClose);
    let reply: ResponseData<'CONNECT'>;
    try {
      reply = await this.request(MT.CONNECT, {
        username: this.username,
        user_id: '',
        password: this.opts.password ?? undefined,
        admin_password: this.opts.adminPassword ?? undefined,
        protocol_version: PROTOCOL_VERSION,
        capabilities: this.opts.capabilities ?? ['reply_to', 'error_codes', 'resume'],
        resume_token: this.resumeToken ?? undefined,
      });
    } catch (e) {
      // Not signed in: this link never counted as connected, so its close is not a drop.
      socket.off('close', onClose);
      socket.destroy();
      if (this.socket === socket) this.socket = null;
      throw e;
    }
    if (this.closedByUser) {
      socket.destroy();
      throw new ProtocolError('CLIENT_CLOSED');
    }
    this.user = reply.user;
    this.users.set(reply.user.user_id, reply.user);
    this.resumeToken = reply.resume_token;
    this.serverCapabilities = reply.capabilities;
    this.serverName = reply.server_name;
    this.protocolVersion = reply.protocol_version;
    this.timeoutMs = reply.connection_timeout * 1000;
    this.state = 'connected';
    this.startHeartbeat(this.opts.heartbeatIntervalMs ?? reply.heartbeat_interval * 1000);
    this.emit('connected', { user: reply.user, resumed: reply.resumed, reconnect: isReconnect });
    return reply.user;
  }

  private dial(): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port });
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ProtocolError('CONNECT_FAILED', { host: this.host, port: this.port, reason: 'timed out' }));
      }, this.opts.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ProtocolError('CONNECT_FAILED', { host: this.host, port: this.port, reason: e.code ?? e.message }));
      });
    });
  }

  private startHeartbeat(intervalMs: number): void {
    this.stopHeartbeat();
    this.heartbeatTimer = setInterval(() => {
      // A server silent for the whole timeout is gone even if TCP has not noticed.
      if (performance.now() - this.lastReceived > this.timeoutMs) {
        this.socket?.destroy();
        return;
      }
      this.request(MT.HEARTBEAT, {}).catch(() => {
        /* a lost heartbeat shows up as link loss */
      });
    }, intervalMs);
    this.heartbeatTimer.unref();
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private onClose(socket: net.Socket): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.stopHeartbeat();
    this.failPending();
    const wasConnected = this.state === 'connected';
    if (this.closedByUser || this.state === 'closed') return;
    const willReconnect = wasConnected && this.opts.reconnect;
    this.state = willReconnect ? 'reconnecting' : 'idle';
    this.emit('disconnected', { reason: 'connection lost', willReconnect });
    if (willReconnect && !this.reconnectRunning) {
      this.reconnectRunning = true;
      void this.reconnectLoop().finally(() => (this.reconnectRunning = false));
    }
  }

  private failPending(): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError('CONNECTION_LOST', { type: p.type }));
      this.pending.delete(id);
    }
  }

  private async reconnectLoop(): Promise<void> {
    const n = this.opts.reconnectAttempts;
    let lastError: ProtocolError = new ProtocolError('CONNECT_FAILED', { host: this.host, port: this.port, reason: 'not tried' });
    for (let attempt = 1; attempt <= n; attempt++) {
      // Exponential backoff with full jitter on the upper half, so many clients do not return in lockstep.
      const base = Math.min(this.opts.reconnectMaxDelayMs, this.opts.reconnectBaseDelayMs * 2 ** (attempt - 1));
      const delayMs = Math.round(base / 2 + Math.random() * (base / 2));
      this.emit('reconnecting', { attempt, of: n, delayMs });
      await new Promise<void>((resolve) => {
        this.reconnectWake = resolve;
        this.reconnectTimer = setTimeout(resolve, delayMs);
      });
      this.reconnectTimer = null;
      this.reconnectWake = null;
      if (this.closedByUser) return;
      try {
        await this.open(true);
        await this.rejoin();
        this.emit('reconnected', { room: this.room });
        return;
      } catch (e) {
        lastError = e instanceof ProtocolError ? e : new ProtocolError('CONNECT_FAILED', { host: this.host, port: this.port, reason: String(e) });
        if (this.closedByUser) return;
        if (this.state === 'connected') {
          // Signed in but the room is gone or refused us: stay connected, out of the room.
          this.setRoom(null);
          this.emit('reconnected', { room: null });
          return;
        }
        this.state = 'reconnecting';
      }
    }
    this.state = 'idle';
    this.emit('reconnect_failed', lastError);
  }

  /**
   * Try the reconnect sequence again by hand (after 'reconnect_failed'), rejoining the
   * room held before the link dropped. Resolves once signed in, or rejects.
   */
  async reconnect(): Promise<void> {
    if (this.state === 'closed') throw new ProtocolError('CLIENT_CLOSED');
    if (this.state === 'connected') return;
    this.state = 'reconnecting';
    try {
      await this.open(true);
    } catch (e) {
      this.state = 'idle';
      throw e;
    }
    await this.rejoin().catch(() => this.setRoom(null));
    this.emit('reconnected', { room: this.room });
  }

  private async rejoin(): Promise<void> {
    const roomId = this.room?.room_id;
    if (!roomId) return;
    const r = await this.request(MT.ROOM_JOIN, { room_id: roomId, password: this.roomPassword ?? undefined });
    this.setRoom(r.room);
    for (const p of r.participants) this.users.set(p.user_id, p);
    this.attachMedia(r.media);
  }

  /** Say goodbye (DISCONNECT) and close for good. Pending requests fail with CLIENT_CLOSED. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.closedByUser = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectWake?.();
    const socket = this.socket;
    if (socket && this.state === 'connected') {
      try {
        await this.request(MT.DISCONNECT, { user_id: this.userId }, { timeoutMs: 1000 });
      } catch {
        /* closing anyway */
      }
    } else if (socket && !socket.destroyed) {
      // CONNECT may already be on its way: say goodbye behind it, so the server does not
      // hold a place for a resume that will never come.
      this.request(MT.DISCONNECT, {}, { timeoutMs: 1000 }).catch(() => undefined);
    }
    this.state = 'closed';
    this.stopHeartbeat();
    await this.detachMedia();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError('CLIENT_CLOSED'));
      this.pending.delete(id);
    }
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.end();
        setTimeout(() => socket.destroy(), 500).unref();
      });
    }
    this.socket = null;
    this.emit('closed');
  }

  // ------------------------------------------------------------ requests

  /** Send a request and resolve with its SUCCESS/ACK data; reject with the ERROR's ProtocolError. */
  request<T extends RequestType>(
    type: T,
    data: RequestData<T>,
    opts: { timeoutMs?: number; recipient?: string | null; room_id?: string | null } = {},
  ): Promise<ResponseData<T>> {
    const socket = this.socket;
    if (!socket || socket.destroyed) return Promise.reject(new ProtocolError('CONNECTION_LOST', { type }));
    const message_id = randomUUID();
    const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs;
    return new Promise<ResponseData<T>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(message_id);
        reject(new ProtocolError('REQUEST_TIMEOUT', { type, ms: timeoutMs }));
      }, timeoutMs);
      this.pending.set(message_id, { type, resolve: resolve as (d: unknown) => void, reject, timer });
      const env: Envelope<T, RequestData<T>> = {
        type,
        data,
        sender: this.userId,
        recipient: opts.recipient ?? null,
        room_id: opts.room_id ?? this.room?.room_id ?? null,
        timestamp: Date.now() / 1000,
        message_id,
      };
      socket.write(encodeFrame(env));
    });
  }

  private onMessage(env: Envelope<string, Record<string, unknown>>): void {
    if (!env || typeof env !== 'object' || typeof env.type !== 'string') return;
    const data = (env.data ?? {}) as Record<string, unknown>;
    this.emit('message', env);
    if ((env.type === MT.SUCCESS || env.type === MT.ACK || env.type === MT.ERROR) && env.reply_to) {
      const p = this.pending.get(env.reply_to);
      if (p) {
        this.pending.delete(env.reply_to);
        clearTimeout(p.timer);
        if (env.type === MT.ERROR) p.reject(errorFromWire(data));
        else p.resolve(data);
        return;
      }
    }
    switch (env.type) {
      case MT.ERROR:
        this.emit('server_error', errorFromWire(data));
        break;
      case MT.CHAT_MESSAGE:
        this.emit('chat', data as unknown as ChatEntry);
        break;
      case MT.CHAT_HISTORY:
        this.emit('history', data as unknown as PushData<'CHAT_HISTORY'>);
        break;
      case MT.USER_LIST: {
        const users = (data as PushData<'USER_LIST'>).users;
        this.users.clear();
        for (const u of users) this.users.set(u.user_id, u);
        this.emit('users', users);
        break;
      }
      case MT.USER_JOIN: {
        const u = data as unknown as UserInfo;
        this.users.set(u.user_id, u);
        this.emit('user_join', u, env.room_id ?? null);
        break;
      }
      case MT.USER_UPDATE: {
        const u = data as unknown as UserInfo;
        this.users.set(u.user_id, u);
        if (u.user_id === this.userId) this.user = u;
        this.emit('user_update', u);
        break;
      }
      case MT.USER_LEAVE: {
        const d = data as PushData<'USER_LEAVE'>;
        if (!env.room_id) this.users.delete(d.user_id);
        else {
          const u = this.users.get(d.user_id);
          if (u && u.room_id === env.room_id) this.users.set(d.user_id, { ...u, room_id: null, role: null });
        }
        this.emit('user_leave', d, env.room_id ?? null);
        break;
      }
      case MT.ROOM_LIST: {
        const rooms = (data as PushData<'ROOM_LIST'>).rooms;
        this.rooms.clear();
        for (const r of rooms) this.rooms.set(r.room_id, r);
        if (this.room) this.room = this.rooms.get(this.room.room_id) ?? this.room;
        this.emit('rooms', rooms);
        break;
      }
      case MT.ROOM_UPDATE: {
        const d = data as PushData<'ROOM_UPDATE'>;
        this.rooms.set(d.room.room_id, d.room);
        if (this.room?.room_id === d.room.room_id) this.room = d.room;
        this.emit('room_update', d);
        break;
      }
      case MT.VIDEO_START:
        this.emit('video_start', data as PushData<'VIDEO_START'>);
        break;
      case MT.VIDEO_STOP:
        this.emit('video_stop', data as PushData<'VIDEO_STOP'>);
        break;
      case MT.SCREEN_SHARE:
        this.emit('screen_share', data as PushData<'SCREEN_SHARE'>);
        break;
      case MT.STOP_VIDEO:
        this.emit('stop_video', data as PushData<'STOP_VIDEO'>);
        break;
      case MT.FILE_LIST: {
        const d = data as PushData<'FILE_LIST'>;
        // A late push for a room already left must not show its files as ours.
        if (d.room_id !== this.room?.room_id && d.room_id !== this.joiningRoomId) break;
        this.files = d.files;
        this.filesRoomId = d.room_id;
        this.emit('files', d);
        break;
      }
      case MT.REACTION:
        this.emit('reaction', data as PushData<'REACTION'>);
        break;
      case MT.MUTE_USER:
        this.emit('muted', data as PushData<'MUTE_USER'>);
        break;
      case MT.UNMUTE_USER:
        this.emit('unmute_requested', data as PushData<'UNMUTE_USER'>);
        break;
      case MT.KICK_USER:
        this.setRoom(null);
        this.emit('kicked', data as PushData<'KICK_USER'>);
        break;
      case MT.ROLE_CHANGE:
        this.emit('role_change', data as PushData<'ROLE_CHANGE'>);
        break;
      case MT.END_MEETING:
        this.setRoom(null);
        this.emit('meeting_ended', data as PushData<'END_MEETING'>);
        break;
      case MT.ROOM_DELETE:
        this.emit('room_deleted', data as PushData<'ROOM_DELETE'>);
        break;
      case MT.ACTIVE_SPEAKER: {
        const d = data as PushData<'ACTIVE_SPEAKER'>;
        if (d.room_id !== this.room?.room_id && d.room_id !== this.joiningRoomId) break;
        this.activeSpeaker = d.user_id ? { user_id: d.user_id, username: d.username ?? d.user_id } : null;
        this.activeSpeakerRoomId = d.room_id;
        this.emit('active_speaker', d);
        break;
      }
      case MT.DISCONNECT:
        this.emit('server_disconnect', data as PushData<'DISCONNECT'>);
        break;
      default:
        break;
    }
  }

  private setRoom(room: RoomInfo | null, password?: string | null): void {
    const changed = (this.room?.room_id ?? null) !== (room?.room_id ?? null);
    this.room = room;
    // The joiner's ACTIVE_SPEAKER arrives with the ROOM_JOIN reply, before this runs: keep it.
    if (changed && this.activeSpeakerRoomId !== (room?.room_id ?? null)) this.activeSpeaker = null;
    if ((room?.room_id ?? null) !== this.filesRoomId) {
      this.files = [];
      this.filesRoomId = null;
    }
    if (password !== undefined) this.roomPassword = password;
    if (!room) {
      this.roomPassword = null;
      void this.detachMedia();
    }
    if (changed) this.emit('room', room);
  }

  // ------------------------------------------------------------ media link

  /** Opens (or keeps) the media link for a grant from ROOM_JOIN. */
  private attachMedia(grant: MediaGrant | undefined): void {
    if (!this.opts.media || !grant || this.state === 'closed') return;
    const same = this.mediaGrant && this.mediaGrant.token === grant.token && this.mediaGrant.stream_id === grant.stream_id;
    if (same && this.media) return;
    void this.detachMedia();
    const link = new MediaLink({ ...this.opts.mediaOptions, host: this.host, grant });
    this.media = link;
    this.mediaGrant = grant;
    link.on('frame', (f) => {
      const owner = this.ownerOf(f.streamId);
      this.emit('frame', { ...f, user_id: owner?.user_id ?? null, username: owner?.username ?? null });
    });
    link.on('audio', (a) => {
      const owner = this.ownerOf(a.streamId);
      this.emit('audio', { ...a, user_id: owner?.user_id ?? null, username: owner?.username ?? null });
    });
    link.on('sender_report', (r) => this.emit('sender_report', r));
    link.on('error', (e) => this.emit('media_error', e));
    // Registered (again, after an address change) or not: both come as the link's events.
    link.on('registered', () => this.media === link && this.emit('media_ready', link));
    link.start().catch(() => undefined);
  }

  private async detachMedia(): Promise<void> {
    const link = this.media;
    this.media = null;
    this.mediaGrant = null;
    this.streamOwners.clear();
    if (link) await link.close();
  }

  /** The room member whose streams carry this stream id. */
  ownerOf(streamId: number): UserInfo | undefined {
    const cached = this.streamOwners.get(streamId);
    if (cached && this.users.get(cached.user_id)?.stream_id === streamId) return this.users.get(cached.user_id);
    for (const u of this.users.values()) {
      if (u.stream_id === streamId) {
        this.streamOwners.set(streamId, u);
        return u;
      }
    }
    return undefined;
  }

  /** Resolves when the media link is registered (rejects with its error, or NOT_IN_ROOM without one). */
  waitForMedia(timeoutMs = 10_000): Promise<MediaLink> {
    const link = this.media;
    if (!link) return Promise.reject(new ProtocolError('NOT_IN_ROOM'));
    if (link.registered) return Promise.resolve(link);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new ProtocolError('MEDIA_UNREACHABLE', { host: this.host, ports: 'all' })), timeoutMs);
      const onReady = (l: MediaLink) => done(null, l);
      const onError = (e: ProtocolError) => done(e);
      const done = (e: ProtocolError | null, l?: MediaLink) => {
        clearTimeout(timer);
        this.off('media_ready', onReady);
        this.off('media_error', onError);
        if (e) reject(e);
        else resolve(l!);
      };
      this.on('media_ready', onReady);
      this.on('media_error', onError);
    });
  }

  /**
   * Sends one 20 ms audio packet (payload: client/audio/audio_payload.ts) with its frame
   * index, level (-dBov) and VOICE flag; false without a registered link.
   */
  sendAudio(payload: Buffer, frameIndex: number, captureTsUs: number, level: number, voice: boolean): boolean {
    if (!this.media?.registered) return false;
    this.media.sendAudio(payload, frameIndex, captureTsUs, level, voice);
    return true;
  }

  /** Sends a camera or screen frame (JPEG) to the room; false without a registered link. */
  sendFrame(kind: StreamKindName, data: Buffer, captureTsUs: number, o: { layer?: number; level?: number; flags?: number } = {}): boolean {
    if (!this.media?.registered) return false;
    this.media.sendFrame(kind, data, captureTsUs, o);
    return true;
  }

  /** Pause (or resume) receiving one member's stream. */
  setStreamPaused(nameOrId: string, kind: StreamKindName, paused: boolean): Promise<ResponseData<'MEDIA_SUBSCRIBE'>> {
    const u = this.findUser(nameOrId);
    return this.request(MT.MEDIA_SUBSCRIBE, { user_id: u?.user_id ?? nameOrId, kind, paused });
  }

  /** A host turns someone's camera (or screen share) off. */
  stopVideo(nameOrId: string, kind: 'video' | 'screen' = 'video'): Promise<ResponseData<'STOP_VIDEO'>> {
    return this.request(MT.STOP_VIDEO, { ...this.ref(nameOrId), kind });
  }

  // ------------------------------------------------------------ conveniences

  /** A user by id, or by name (case-insensitive), among those online. */
  findUser(nameOrId: string): UserInfo | undefined {
    const byId = this.users.get(nameOrId);
    if (byId) return byId;
    const key = nameOrId.normalize('NFC').toLowerCase();
    for (const u of this.users.values()) if (u.username.normalize('NFC').toLowerCase() === key) return u;
    return undefined;
  }

  private ref(nameOrId: string): { user_id: string } | { username: string } {
    const u = this.findUser(nameOrId);
    return u ? { user_id: u.user_id } : { username: nameOrId };
  }

  async listRooms(): Promise<RoomInfo[]> {
    const r = await this.request(MT.ROOM_LIST, {});
    this.rooms.clear();
    for (const room of r.rooms) this.rooms.set(room.room_id, room);
    return r.rooms;
  }

  async listUsers(roomId?: string): Promise<UserInfo[]> {
    const r = await this.request(MT.USER_LIST, { room_id: roomId });
    if (!roomId) {
      this.users.clear();
    }
    for (const u of r.users) this.users.set(u.user_id, u);
    return r.users;
  }

  async createRoom(o: {
    name: string;
    password?: string | null;
    maxParticipants?: number;
    persistent?: boolean;
    settings?: Record<string, unknown>;
  }): Promise<RoomInfo> {
    const r = await this.request(MT.ROOM_CREATE, {
      room_name: o.name,
      is_private: !!o.password,
      password: o.password ?? undefined,
      max_participants: o.maxParticipants,
      persistent: o.persistent ?? false,
      settings: o.settings,
    });
    this.rooms.set(r.room.room_id, r.room);
    return r.room;
  }

  /** Join by room id, or by name when exactly one room has it. */
  async joinRoom(roomIdOrName: string, password?: string | null): Promise<ResponseData<'ROOM_JOIN'>> {
    const roomId = this.resolveRoom(roomIdOrName);
    this.joiningRoomId = roomId;
    let r: ResponseData<'ROOM_JOIN'>;
    try {
      r = await this.request(MT.ROOM_JOIN, { room_id: roomId, password: password ?? undefined });
    } finally {
      this.joiningRoomId = null;
    }
    for (const p of r.participants) this.users.set(p.user_id, p);
    const me = r.participants.find((p) => p.user_id === this.userId);
    if (me) this.user = me;
    this.setRoom(r.room, password ?? null);
    this.attachMedia(r.media);
    return r;
  }

  resolveRoom(roomIdOrName: string): string {
    if (this.rooms.has(roomIdOrName)) return roomIdOrName;
    const key = roomIdOrName.toLowerCase();
    const matches = [...this.rooms.values()].filter((r) => r.room_name.toLowerCase() === key);
    if (matches.length === 1) return matches[0].room_id;
    const prefix = [...this.rooms.values()].filter((r) => r.room_id.startsWith(roomIdOrName));
    return prefix.length === 1 ? prefix[0].room_id : roomIdOrName;
  }

  async leaveRoom(): Promise<void> {
    if (!this.room) throw new ProtocolError('NOT_IN_ROOM');
    await this.request(MT.ROOM_LEAVE, { room_id: this.room.room_id });
    this.setRoom(null);
  }

  deleteRoom(roomIdOrName: string): Promise<ResponseData<'ROOM_DELETE'>> {
    return this.request(MT.ROOM_DELETE, { room_id: this.resolveRoom(roomIdOrName) });
  }

  /** Chat to your room. */
  sendChat(message: string): Promise<ResponseData<'CHAT_MESSAGE'>> {
    return this.request(MT.CHAT_MESSAGE, { room_id: this.room?.room_id ?? null, message });
  }

  /** A private message to one user (by name or id). */
  sendPrivate(to: string, message: string): Promise<ResponseData<'CHAT_MESSAGE'>> {
    const u = this.findUser(to);
    return this.request(MT.CHAT_MESSAGE, { message }, { recipient: u?.user_id ?? to });
  }

  chatHistory(limit?: number, before?: string): Promise<ResponseData<'CHAT_HISTORY'>> {
    return this.request(MT.CHAT_HISTORY, { room_id: this.room?.room_id ?? null, limit, before });
  }

  raiseHand(): Promise<ResponseData<'RAISE_HAND'>> {
    return this.request(MT.RAISE_HAND, {});
  }
  lowerHand(of?: string): Promise<ResponseData<'LOWER_HAND'>> {
    return this.request(MT.LOWER_HAND, of ? this.ref(of) : {});
  }
  react(reaction: string): Promise<ResponseData<'REACTION'>> {
    return this.request(MT.REACTION, { reaction });
  }
  setVideo(on: boolean): Promise<ResponseData<'VIDEO_START'>> {
    return this.request(on ? MT.VIDEO_START : MT.VIDEO_STOP, { user_id: this.userId });
  }
  setAudio(on: boolean): Promise<ResponseData<'AUDIO_START'>> {
    return this.request(on ? MT.AUDIO_START : MT.AUDIO_STOP, { user_id: this.userId });
  }
  setScreenShare(active: boolean): Promise<ResponseData<'SCREEN_SHARE'>> {
    return this.request(MT.SCREEN_SHARE, { active });
  }
  mute(who: string): Promise<ResponseData<'MUTE_USER'>> {
    return this.request(MT.MUTE_USER, this.ref(who));
  }
  unmute(who: string): Promise<ResponseData<'UNMUTE_USER'>> {
    return this.request(MT.UNMUTE_USER, this.ref(who));
  }
  muteAll(includeModerators = false): Promise<ResponseData<'MUTE_ALL'>> {
    return this.request(MT.MUTE_ALL, { include_moderators: includeModerators });
  }
  kick(who: string, reason?: string): Promise<ResponseData<'KICK_USER'>> {
    return this.request(MT.KICK_USER, { ...this.ref(who), reason });
  }
  lockRoom(locked = true): Promise<ResponseData<'ROOM_LOCK'>> {
    return this.request(locked ? MT.ROOM_LOCK : MT.ROOM_UNLOCK, { room_id: this.room?.room_id ?? null });
  }
  promote(who: string): Promise<ResponseData<'PROMOTE_USER'>> {
    return this.request(MT.PROMOTE_USER, this.ref(who));
  }
  demote(who: string): Promise<ResponseData<'DEMOTE_USER'>> {
    return this.request(MT.DEMOTE_USER, this.ref(who));
  }
  transferHost(who: string): Promise<ResponseData<'TRANSFER_HOST'>> {
    return this.request(MT.TRANSFER_HOST, this.ref(who));
  }
  async endMeeting(): Promise<void> {
    await this.request(MT.END_MEETING, { room_id: this.room?.room_id ?? null });
    this.setRoom(null);
  }

  // ------------------------------------------------------------ files (the bytes go through FileClient)

  /** The room's files (your room by default; another room for an admin); refreshes `files` for your room. */
  async listFiles(roomId?: string): Promise<FileInfo[]> {
    const r = await this.request(MT.FILE_LIST, { room_id: roomId ?? this.room?.room_id ?? null });
    if (r.room_id === this.room?.room_id) {
      this.files = r.files;
      this.filesRoomId = r.room_id;
    }
    return r.files;
  }

  /** Delete a file of your room by id, unique id prefix or unique name (uploader, host, moderator or admin). */
  deleteFile(fileIdOrPrefix: string): Promise<ResponseData<'FILE_DELETE'>> {
    return this.request(MT.FILE_DELETE, { file_id: this.resolveFile(fileIdOrPrefix) });
  }

  /**
   * A file id from an id, a unique id prefix or a unique name among `files`. An unknown
   * reference is returned as it is, for the server to answer FILE_NOT_FOUND with its
   * hint; an ambiguous one is refused here, naming the candidates.
   */
  resolveFile(ref: string): string {
    if (this.files.some((f) => f.file_id === ref)) return ref;
    const prefixed = ref === '' ? [] : this.files.filter((f) => f.file_id.startsWith(ref));
    if (prefixed.length === 1) return prefixed[0].file_id;
    const named = prefixed.length ? [] : this.files.filter((f) => f.name === ref);
    if (named.length === 1) return named[0].file_id;
    const many = prefixed.length > 1 ? prefixed : named;
    if (many.length > 1) {
      throw new ProtocolError(
        'FILE_NOT_FOUND',
        { file_id: ref },
        `${many.length} files match "${ref}" (ids ${many.map((f) => f.file_id.slice(0, 8)).join(', ')}); give more of the id`,
      );
    }
    return ref;
  }
}
