/**
 * The meeting server's control plane: TCP 8888, sessions, users, rooms, chat and
 * host controls, and the owner of the UDP media relay and the TCP file server. It owns
 * everything below it (ownership tree, CONVENTIONS.md 7): Server -> {Store,
 * UserManager, RoomManager, MediaServer, FileServer, Session*}; close() is idempotent
 * and releases every socket, timer, file handle and the database. The relay is told
 * directly (addParticipant, removeParticipant, setAllowed), so a host action takes
 * effect on the next datagram; the file server asks (isMember) when a ticket is used.
 *
 * Every request is validated against shared/protocol/messages.ts before a handler
 * sees it; a handler returns the SUCCESS data (or throws a ProtocolError, sent as
 * ERROR with the request's message_id in reply_to).
 */
import net from 'node:net';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import { DEFAULT_HOST, DEFAULT_PORTS, DEFAULTS, LIMITS, PROTOCOL_VERSION, SERVER_CAPABILITIES } from '../shared/constants';
import { ProtocolError } from '../shared/errors';
import { TypedEmitter } from '../shared/events';
import { Logger, type LogLevel } from '../shared/log';
import { encodeFrame } from '../shared/protocol/framing';
import { MAX_MEDIA_PAYLOAD } from '../shared/protocol/media_packet';
import {
  EnvelopeSchema,
  isMessageType,
  isRequestType,
  MT,
  RESERVED_WHY,
  REQUEST_SCHEMAS,
  roomNameProblem,
  usernameProblem,
  type ChatEntry,
  type Envelope,
  type MediaGrant,
  type IncomingEnvelope,
  type MessageType,
  type ParsedRequestData,
  type PushData,
  type PushType,
  type RequestType,
  type ResponseData,
  type RoomInfo,
  type RoomRole,
  type UserInfo,
} from '../shared/protocol/messages';
import { hashPassword, Room, RoomManager, type LeaveResult, type RoleChange } from './room_manager';
import { Session, errorEnvelope, type SessionCounters } from './session';
import { MediaServer, type MediaAllow, type MediaStats } from './media_server';
import { FileServer, OPEN_TIMEOUT_MS, type FileChange, type FileServerStats } from './file_server';
import { Store, StoreError } from './store';
import { ConsoleUser, nameKey, ROLE_RANK, User, UserManager } from './user_manager';
import { clientAddresses, describeListenError, networkConfigProblem } from './listen';
import { CONSOLE_ACTIONS, CONSOLE_USERNAME, type ConsoleAction, type NetworkConfig, type ServerSnapshot, type ServerState } from './stats';

/** The lowest protocol version this server still speaks. */
export const MIN_PROTOCOL_VERSION = 1;

export interface ServerOptions {
  host?: string;
  /** Control port (TCP); 0 picks a free one. */
  port?: number;
  videoPort?: number;
  audioPort?: number;
  screenPort?: number;
  feedbackPort?: number;
  /** File server port (TCP); 0 picks a free one. */
  filePort?: number;
  dataDir?: string;
  /** Largest file FILE_UPLOAD_START accepts (bytes). */
  maxFileBytes?: number;
  /** Chunk size of an upload whose client names none (bytes; clamped to 16 KiB - 4 MiB). */
  fileChunkSize?: number;
  /** Stored bytes per user name (completed files plus uploads under way). */
  userQuotaBytes?: number;
  /** Stored bytes on the whole server. */
  storageQuotaBytes?: number;
  /** Completed files are removed this long after upload; 0 keeps them until deleted. */
  fileRetentionMs?: number;
  /** A partial upload nobody resumes is removed this long after its last progress. */
  partialRetentionMs?: number;
  /** A file server ticket must be used within this long. */
  fileTicketTtlMs?: number;
  /** A transfer connection silent this long is closed (TRANSFER_TIMEOUT). */
  fileIdleTimeoutMs?: number;
  /** A file server connection must send OPEN this soon after connecting. */
  fileOpenTimeoutMs?: number;
  /** Open connections to the file server at most (FILE_SERVER_BUSY beyond). */
  maxFileConnections?: number;
  serverPassword?: string | null;
  adminPassword?: string | null;
  serverName?: string;
  heartbeatIntervalMs?: number;
  connectionTimeoutMs?: number;
  maxFrameBytes?: number;
  maxJsonDepth?: number;
  /** Default capacity of a new room. */
  maxParticipants?: number;
  /** Rooms on this server at most (ROOM_CREATE beyond it: TOO_MANY_ROOMS). */
  maxRooms?: number;
  historyLimit?: number;
  chatRatePerSecond?: number;
  chatBurst?: number;
  maxChatLength?: number;
  emptyRoomGraceMs?: number;
  /**
   * How long a user whose connection dropped without a goodbye keeps their place
   * (room, role, name) for a CONNECT with their resume token. 0 = leave at once.
   */
  resumeGraceMs?: number;
  maxSendBufferBytes?: number;
  /** How long ROOM_LIST pushes are coalesced (ms). */
  listPushDelayMs?: number;
  logLevel?: LogLevel;
  logger?: Logger;
}

export type ResolvedServerOptions = Required<Omit<ServerOptions, 'logger' | 'serverPassword' | 'adminPassword'>> & {
  serverPassword: string | null;
  adminPassword: string | null;
};

export function resolveServerOptions(o: ServerOptions = {}): ResolvedServerOptions {
  return {
    host: o.host ?? DEFAULT_HOST,
    port: o.port ?? DEFAULT_PORTS.control,
    videoPort: o.videoPort ?? DEFAULT_PORTS.video,
    audioPort: o.audioPort ?? DEFAULT_PORTS.audio,
    screenPort: o.screenPort ?? DEFAULT_PORTS.screen,
    feedbackPort: o.feedbackPort ?? DEFAULT_PORTS.feedback,
    filePort: o.filePort ?? DEFAULT_PORTS.file,
    dataDir: o.dataDir ?? DEFAULTS.dataDir,
    maxFileBytes: o.maxFileBytes ?? DEFAULTS.maxFileBytes,
    fileChunkSize: o.fileChunkSize ?? DEFAULTS.files.chunkSize,
    userQuotaBytes: o.userQuotaBytes ?? DEFAULTS.files.userQuotaBytes,
    storageQuotaBytes: o.storageQuotaBytes ?? DEFAULTS.files.storageQuotaBytes,
    fileRetentionMs: o.fileRetentionMs ?? DEFAULTS.files.retentionMs,
    partialRetentionMs: o.partialRetentionMs ?? DEFAULTS.files.partialRetentionMs,
    fileTicketTtlMs: o.fileTicketTtlMs ?? DEFAULTS.files.ticketTtlMs,
    fileIdleTimeoutMs: o.fileIdleTimeoutMs ?? DEFAULTS.files.idleTimeoutMs,
    fileOpenTimeoutMs: o.fileOpenTimeoutMs ?? OPEN_TIMEOUT_MS,
    maxFileConnections: o.maxFileConnections ?? DEFAULTS.files.maxConnections,
    serverPassword: o.serverPassword || null,
    adminPassword: o.adminPassword || null,
    serverName: o.serverName ?? 'LAN Video Call',
    heartbeatIntervalMs: o.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs,
    connectionTimeoutMs: o.connectionTimeoutMs ?? DEFAULTS.connectionTimeoutMs,
    maxFrameBytes: o.maxFrameBytes ?? LIMITS.maxFrameBytes,
    maxJsonDepth: o.maxJsonDepth ?? LIMITS.maxJsonDepth,
    maxParticipants: o.maxParticipants ?? DEFAULTS.maxParticipants,
    maxRooms: o.maxRooms ?? DEFAULTS.maxRooms,
    historyLimit: o.historyLimit ?? DEFAULTS.historyLimit,
    chatRatePerSecond: o.chatRatePerSecond ?? DEFAULTS.chatRatePerSecond,
    chatBurst: o.chatBurst ?? DEFAULTS.chatBurst,
    maxChatLength: o.maxChatLength ?? LIMITS.maxChatLength,
    emptyRoomGraceMs: o.emptyRoomGraceMs ?? DEFAULTS.emptyRoomGraceMs,
    resumeGraceMs: o.resumeGraceMs ?? DEFAULTS.resumeGraceMs,
    maxSendBufferBytes: o.maxSendBufferBytes ?? LIMITS.maxSendBufferBytes,
    listPushDelayMs: o.listPushDelayMs ?? 100,
    logLevel: o.logLevel ?? 'info',
  };
}

/** What the server tells observers (the monitor, the media plane, tests). */
export type ServerEvents = {
  listening: [{ host: string; port: number }];
  /** The listeners started, stopped or failed to start (see snapshot().status). */
  state: [ServerState];
  user_online: [UserInfo];
  user_offline: [UserInfo, string];
  user_update: [UserInfo];
  room_update: [RoomInfo];
  room_removed: [string];
  /** A host mute changed (for observers: the monitor, a recorder; the relay is told directly). */
  mute_changed: [{ user_id: string; room_id: string | null; muted: boolean }];
  /** A user left a room (left, kicked, ended, offline); the relay has already stopped forwarding. */
  room_left: [{ user_id: string; room_id: string; reason: string }];
  chat: [ChatEntry];
  closed: [];
};

export interface ServerStats {
  uptime_s: number;
  listening: boolean;
  host: string;
  port: number;
  connections: number;
  users: number;
  rooms: number;
  counters: SessionCounters & { errors: number };
}

type NoReply = { readonly noReply: true };
const NO_REPLY: NoReply = { noReply: true };

interface Ctx<T extends RequestType> {
  session: Session;
  env: IncomingEnvelope;
  /** The request's message_id, for reply_to. */
  replyTo: string | null;
  data: ParsedRequestData<T>;
}
interface UserCtx<T extends RequestType> extends Ctx<T> {
  user: User;
}
type Result<T extends RequestType> = ResponseData<T> | NoReply;
type Handlers = {
  [T in RequestType]: (ctx: T extends 'CONNECT' ? Ctx<T> : UserCtx<T>) => Result<T> | Promise<Result<T>>;
};

/** Types answered with ACK instead of SUCCESS (keep-alive and high-rate traffic). */
const ACK_REPLIES: ReadonlySet<RequestType> = new Set<RequestType>(['HEARTBEAT', 'CHAT_MESSAGE']);

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
function secretEquals(given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected));
}

export class Server extends TypedEmitter<ServerEvents> {
  readonly options: ResolvedServerOptions;
  readonly log: Logger;
  private readonly store: Store;
  readonly users: UserManager;
  readonly rooms: RoomManager;
  /** The UDP media relay; its stats() is part of the observer API. */
  readonly media: MediaServer;
  /** The TCP file server; its stats() is part of the observer API (fileStats). */
  readonly files: FileServer;
  private readonly sessions = new Set<Session>();
  private tcp: net.Server | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private roomListTimer: NodeJS.Timeout | null = null;
  private readonly startedAt = Date.now();
  private readonly counters: SessionCounters & { errors: number } = {
    messagesIn: 0,
    messagesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    errors: 0,
  };
  private closing: Promise<void> | null = null;
  private readonly handlers: Handlers;
  private stateNow: ServerState = 'stopped';
  private lastError: { message: string; hint: string } | null = null;
  /** Starts, stops and reconfigurations run one at a time, in the order asked. */
  private listenerOps: Promise<unknown> = Promise.resolve();
  /** The admin the monitor acts as (consoleAction): in no room and no user list. */
  private readonly consoleUser: ConsoleUser;

  constructor(options: ServerOptions = {}) {
    super();
    this.options = resolveServerOptions(options);
    this.log = options.logger ?? Logger.create(this.options.logLevel);
    this.onListenerError = (event, error) => this.log.error(`observer of ${event} threw: ${String(error)}`);
    this.store = new Store(path.resolve(this.options.dataDir), {
      onWriteError: (e) => this.log.error(`writing chat history failed, will retry: ${e.message}`, { db: this.store.file }),
    });
    this.users = new UserManager(this.options);
    this.rooms = new RoomManager(this.store, {
      historyLimit: this.options.historyLimit,
      emptyRoomGraceMs: this.options.emptyRoomGraceMs,
      onExpire: (room) => this.roomRemoved(room),
    });
    this.media = new MediaServer({
      host: this.options.host,
      ports: {
        video: this.options.videoPort,
        audio: this.options.audioPort,
        screen: this.options.screenPort,
        feedback: this.options.feedbackPort,
      },
      logger: this.log,
    });
    this.media.on('active_speaker', (e) => this.activeSpeakerChanged(e.room_id, e.user_id, e.level));
    const o = this.options;
    this.files = new FileServer({
      host: o.host,
      port: o.filePort,
      dataDir: o.dataDir,
      store: this.store,
      logger: this.log,
      maxFileBytes: o.maxFileBytes,
      chunkSize: o.fileChunkSize,
      userQuotaBytes: o.userQuotaBytes,
      storageQuotaBytes: o.storageQuotaBytes,
      retentionMs: o.fileRetentionMs,
      partialRetentionMs: o.partialRetentionMs,
      ticketTtlMs: o.fileTicketTtlMs,
      idleTimeoutMs: o.fileIdleTimeoutMs,
      openTimeoutMs: o.fileOpenTimeoutMs,
      maxConnections: o.maxFileConnections,
      // A user held for resume is still in the room: a transfer may go on meanwhile.
      isMember: (userId, roomId) => this.users.get(userId)?.roomId === roomId,
      roomExists: (roomId) => this.rooms.get(roomId) !== undefined,
      onChange: (roomId, change) => this.filesChanged(roomId, change),
    });
    this.handlers = this.makeHandlers();
    this.consoleUser = new ConsoleUser(
      new Session(new net.Socket(), { maxFrameBytes: 0, maxDepth: 0, maxSendBufferBytes: 0 }, () => undefined, { ...this.counters }, () => undefined),
      this.options,
    );
  }

  /** The port actually bound (useful with port 0). */
  get port(): number {
    const a = this.tcp?.address();
    return a && typeof a === 'object' ? a.port : this.options.port;
  }

  get listening(): boolean {
    return this.tcp?.listening ?? false;
  }

  get databaseFile(): string {
    return this.store.file;
  }

  /** Binds every listener (control, media relay, file server); see startListeners. */
  async start(): Promise<{ host: string; port: number }> {
    await this.startListeners();
    return { host: this.options.host, port: this.port };
  }

  get state(): ServerState {
    return this.stateNow;
  }

  /**
   * Binds the control listener, the media relay's four UDP sockets and the file server.
   * If one fails, whatever did bind is let go and the server stays stopped, with the
   * reason in snapshot().status.last_error, so the operator can fix it and start again.
   */
  startListeners(): Promise<void> {
    return this.serially(() => this.doStart());
  }

  /**
   * The monitor's `s`: every client is told (DISCONNECT LISTENERS_STOPPED, reconnect:
   * true) and disconnected, and every socket is let go. Each user's place (room, role)
   * is held for the resume window, as after a dropped connection, so a quick stop and
   * start is a blip: clients reconnect by themselves and resume. Persistent rooms, chat
   * history and files stay whatever the length of the stop.
   */
  stopListeners(): Promise<void> {
    return this.serially(() => this.releaseListeners('LISTENERS_STOPPED', "The server's listeners were stopped by its operator"));
  }

  /**
   * The monitor's `c`: a new bind address or ports. A running server restarts its
   * listeners on them; if they cannot be bound it goes back to the previous ones and
   * throws why. A stopped server uses them at the next start.
   */
  reconfigure(change: Partial<NetworkConfig>): Promise<void> {
    return this.serially(async () => {
      const previous = this.network();
      const next: NetworkConfig = { ...previous };
      for (const [k, v] of Object.entries(change) as [keyof NetworkConfig, never][]) {
        if (v !== undefined && k in next) next[k] = v;
      }
      const problem = networkConfigProblem(next);
      if (problem) throw new Error(`${problem}. Nothing was changed.`);
      const wasRunning = this.stateNow === 'running';
      const where = `${next.host}:${next.port}`;
      if (wasRunning) await this.releaseListeners('LISTENERS_STOPPED', `The server's listeners are restarting on ${where}`);
      this.applyNetwork(next);
      this.log.info('network configuration changed', { host: next.host, port: next.port, file_port: next.filePort });
      if (!wasRunning) {
        // The last start's failure was about the configuration just replaced.
        this.lastError = null;
        return;
      }
      try {
        await this.doStart();
      } catch (e) {
        const failed = this.lastError ?? describeListenError(e, next.host, next.port);
        this.applyNetwork(previous);
        this.log.warn(`could not listen on the new configuration; going back to the previous one: ${failed.message}`);
        const back = await this.doStart().then(
          () => 'The previous configuration was kept.',
          () => `The previous configuration could not be bound either (${this.lastError?.message ?? 'unknown error'}): the listeners are stopped.`,
        );
        throw new Error(`${failed.message}. ${failed.hint} ${back}`);
      }
    });
  }

  /** The configuration the listeners use (or will use at the next start). */
  network(): NetworkConfig {
    const o = this.options;
    return {
      host: o.host,
      port: o.port,
      videoPort: o.videoPort,
      audioPort: o.audioPort,
      screenPort: o.screenPort,
      feedbackPort: o.feedbackPort,
      filePort: o.filePort,
    };
  }

  private applyNetwork(n: NetworkConfig): void {
    Object.assign(this.options, n);
    this.media.setAddress(n.host, { video: n.videoPort, audio: n.audioPort, screen: n.screenPort, feedback: n.feedbackPort });
    this.files.setAddress(n.host, n.filePort);
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const run = this.listenerOps.then(op);
    this.listenerOps = run.catch(() => undefined);
    return run;
  }

  private setState(state: ServerState): void {
    if (this.stateNow === state) return;
    this.stateNow = state;
    this.emit('state', state);
  }

  private async doStart(): Promise<void> {
    if (this.closing) throw new Error('server is closed');
    if (this.tcp) return;
    this.setState('starting');
    const tcp = net.createServer((socket) => this.accept(socket));
    this.tcp = tcp;
    try {
      // The control port opens last: a client let in before the media relay and the
      // file server are bound would get no media grant, and a failure after it would
      // have to wait for that client to leave before the port could close.
      await this.media.start();
      await this.files.start();
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(this.options.port, this.options.host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      // Whatever did bind is let go, so the operator can fix the flag and start again.
      await this.files.stop();
      await this.media.stop();
      this.tcp = null;
      this.lastError = e instanceof StoreError ? { message: e.message, hint: e.hint } : describeListenError(e, this.options.host, this.options.port);
      // Debug only: run_server.ts prints it once, the monitor shows it in its header.
      this.log.debug(`${this.lastError.message}: ${this.lastError.hint}`);
      this.setState('stopped');
      throw e;
    }
    this.lastError = null;
    // Ports asked as 0 are kept as bound, so a restart comes back where clients know it.
    const m = this.media.ports;
    this.applyNetwork({ host: this.options.host, port: this.port, videoPort: m.video, audioPort: m.audio, screenPort: m.screen, feedbackPort: m.feedback, filePort: this.files.port });
    tcp.on('error', (e) => this.log.error(`listener error: ${e.message}`));
    const period = Math.max(50, Math.min(this.options.heartbeatIntervalMs, this.options.connectionTimeoutMs / 4));
    this.sweepTimer = setInterval(() => this.sweep(), period);
    this.sweepTimer.unref();
    const where = { host: this.options.host, port: this.port };
    this.log.info(`control server listening on ${where.host}:${where.port}`, { db: this.store.file });
    this.setState('running');
    this.emit('listening', where);
  }

  /**
   * Tells every client why (one DISCONNECT frame, encoded once), waits for their sockets
   * to close, and lets go of every listener. Used by stop, reconfigure and close.
   */
  private async releaseListeners(code: 'LISTENERS_STOPPED' | 'SERVER_SHUTTING_DOWN', reason: string): Promise<void> {
    if (this.stateNow === 'stopped' && !this.tcp && !this.sessions.size) return;
    this.setState('stopping');
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const tcp = this.tcp;
    const listenerClosed = tcp ? new Promise<void>((r) => tcp.close(() => r())) : Promise.resolve();
    const frame = encodeFrame(this.envelope(MT.DISCONNECT, { reason, code, reconnect: true } satisfies PushData<'DISCONNECT'>));
    const closeReason = code === 'SERVER_SHUTTING_DOWN' ? 'server_shutdown' : 'listeners_stopped';
    const socketsClosed = [...this.sessions].map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.socket.destroyed) return resolve();
          s.socket.once('close', () => resolve());
          s.sendFrame(frame);
          s.close(closeReason);
        }),
    );
    await Promise.all(socketsClosed);
    await listenerClosed;
    this.tcp = null;
    await this.media.stop();
    await this.files.stop();
    this.log.info(code === 'SERVER_SHUTTING_DOWN' ? 'listeners closed for shutdown' : 'listeners stopped; rooms and files are kept');
    this.setState('stopped');
  }

  stats(): ServerStats {
    return {
      uptime_s: (Date.now() - this.startedAt) / 1000,
      listening: this.listening,
      host: this.options.host,
      port: this.port,
      connections: this.sessions.size,
      users: this.users.size,
      rooms: this.rooms.size,
      counters: { ...this.counters },
    };
  }

  /** The media relay's counters, registrations and receiver reports. */
  mediaStats(): MediaStats {
    return this.media.stats();
  }

  /** The file server's stored files, transfers under way and counters. */
  fileStats(): FileServerStats {
    return this.files.stats();
  }

  /** Everything an observer may know, as plain data (server/stats.ts). */
  snapshot(): ServerSnapshot {
    const now = Date.now();
    const running = this.stateNow === 'running';
    const rooms = [...this.rooms.all()];
    const roomName = new Map(rooms.map((r) => [r.room_id, r.room_name]));
    return {
      time: now,
      status: {
        state: this.stateNow,
        server_name: this.options.serverName,
        started_at: this.startedAt / 1000,
        uptime_s: (now - this.startedAt) / 1000,
        network: this.network(),
        bound: running ? { control: this.port, ...this.media.ports, file: this.files.port } : null,
        lan_addresses: clientAddresses(this.options.host),
        last_error: this.lastError,
        data_dir: path.resolve(this.options.dataDir),
        database: this.store.file,
      },
      control: { ...this.counters, connections: this.sessions.size },
      users: [...this.users.all()].map((u) => ({
        ...u.toInfo(),
        room_name: u.roomId ? (roomName.get(u.roomId) ?? null) : null,
        remote: u.session.remote,
        connected_at: u.connectedAt,
      })),
      rooms: rooms.map((r) => ({ ...r.toInfo(), members: [...r.members.keys()] })),
      media: this.media.stats(),
      files: this.files.stats(),
    };
  }

  /**
   * An admin action from the server's console (the monitor): validated by the same
   * schema and run by the same handler as an admin client's request, so the same
   * checks apply and the room hears of it the same way. Throws ProtocolError.
   */
  async consoleAction<T extends ConsoleAction>(type: T, data: unknown): Promise<ResponseData<T>> {
    if (!(CONSOLE_ACTIONS as readonly string[]).includes(type)) throw new ProtocolError('NOT_A_REQUEST', { type });
    const parsed = REQUEST_SCHEMAS[type].safeParse(data ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ProtocolError('INVALID_PAYLOAD', { type, reason: `${issue.path.join('.') || 'data'}: ${issue.message}` });
    }
    const user = this.consoleUser;
    const handler = this.handlers[type] as (ctx: UserCtx<RequestType>) => Result<RequestType> | Promise<Result<RequestType>>;
    const env = { type, data: parsed.data } as unknown as IncomingEnvelope;
    const result = await handler({ session: user.session, env, replyTo: null, data: parsed.data as ParsedRequestData<RequestType>, user });
    this.log.info(`console: ${type}`, { target: (parsed.data as { user_id?: string; room_id?: string }).user_id ?? (parsed.data as { room_id?: string }).room_id });
    return result as ResponseData<T>;
  }

  /** Graceful shutdown: clients are told (DISCONNECT, reconnect: true), then everything is released. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    // A start or stop under way finishes first; then nothing new is accepted.
    await this.listenerOps;
    if (this.roomListTimer) clearTimeout(this.roomListTimer);
    this.roomListTimer = null;
    await this.releaseListeners('SERVER_SHUTTING_DOWN', 'The server is shutting down');
    await this.media.close();
    await this.files.close();
    for (const u of this.users.all()) if (u.graceTimer) clearTimeout(u.graceTimer);
    this.rooms.close();
    await this.store.close();
    this.log.info('server closed');
    this.setState('closed');
    this.emit('closed');
  }

  // ------------------------------------------------------------ connections

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const session = new Session(
      socket,
      {
        maxFrameBytes: this.options.maxFrameBytes,
        maxDepth: this.options.maxJsonDepth,
        maxSendBufferBytes: this.options.maxSendBufferBytes,
      },
      (s, m) => this.dispatch(s, m),
      this.counters,
      (s, e) => this.internalError(s, e, null, 'unknown'),
    );
    this.sessions.add(session);
    this.log.debug('connection opened', { conn: session.id, remote: session.remote });
    socket.on('error', (e) => this.log.debug(`socket error: ${e.message}`, { conn: session.id }));
    socket.on('close', () => this.sessionClosed(session));
    socket.on('end', () => session.close('peer_closed'));
  }

  private sessionClosed(session: Session): void {
    if (!this.sessions.delete(session)) return;
    session.closed = true;
    try {
      session.decoder.end();
    } catch (e) {
      this.log.debug(`connection closed mid-frame: ${(e as Error).message}`, { conn: session.id });
    }
    const user = session.user;
    if (user && user.session === session && !this.closing) {
      // A stop of the listeners is, for the users, an outage the server announced: their
      // places are held for the resume window like those of a dropped connection.
      const unannounced = session.closeReason === null || session.closeReason === 'peer_closed' || session.closeReason === 'listeners_stopped';
      if (unannounced && this.options.resumeGraceMs > 0) this.holdForResume(user);
      else this.userOffline(user, session.closeReason ?? 'connection_lost');
    }
    this.log.debug('connection closed', { conn: session.id, reason: session.closeReason });
  }

  /** Drops connections silent for longer than the timeout (never-signed-in ones too). */
  private sweep(): void {
    const limit = performance.now() - this.options.connectionTimeoutMs;
    for (const s of this.sessions) {
      // Before CONNECT, only signing in counts as a sign of life: garbage cannot hold a socket open.
      if (!s.closed && (s.user ? s.lastSeen : s.openedAt) < limit) {
        this.log.info('dropping silent connection', { conn: s.id, user: s.user?.username });
        s.fail(new ProtocolError('HEARTBEAT_TIMEOUT', { seconds: this.options.connectionTimeoutMs / 1000 }));
      }
    }
  }

  // ------------------------------------------------------------ dispatch

  private dispatch(session: Session, raw: unknown): void | Promise<void> {
    const parsed = EnvelopeSchema.safeParse(raw);
    if (!parsed.success) {
      const replyTo =
        raw && typeof raw === 'object' && typeof (raw as { message_id?: unknown }).message_id === 'string'
          ? String((raw as { message_id: string }).message_id).slice(0, 128)
          : null;
      const issue = parsed.error.issues[0];
      const reason = `${issue.path.join('.') || 'message'}: ${issue.message}`;
      return this.reject(session, new ProtocolError('INVALID_ENVELOPE', { reason }), replyTo);
    }
    const env = parsed.data;
    const replyTo = env.message_id ?? null;
    const type = env.type;
    if (!isMessageType(type)) {
      return this.reject(session, new ProtocolError('UNKNOWN_MESSAGE_TYPE', { type: type.slice(0, 64) }), replyTo);
    }
    const why = RESERVED_WHY[type];
    if (why !== undefined) return this.reject(session, new ProtocolError('NOT_SUPPORTED', { type, why }), replyTo);
    if (!isRequestType(type)) return this.reject(session, new ProtocolError('NOT_A_REQUEST', { type }), replyTo);
    if (session.user) session.user.lastSeen = Date.now() / 1000;
    else if (type !== 'CONNECT') return this.reject(session, new ProtocolError('NOT_CONNECTED', { type }), replyTo);

    const schema = REQUEST_SCHEMAS[type];
    const data = schema.safeParse(env.data);
    if (!data.success) {
      const issue = data.error.issues[0];
      const reason = `${issue.path.join('.') || 'data'}: ${issue.message}`;
      return this.reject(session, new ProtocolError('INVALID_PAYLOAD', { type, reason }), replyTo);
    }
    const handler = this.handlers[type] as (ctx: UserCtx<RequestType>) => Result<RequestType> | Promise<Result<RequestType>>;
    const ctx: UserCtx<RequestType> = { session, env, replyTo, data: data.data as ParsedRequestData<RequestType>, user: session.user! };
    try {
      const result = handler(ctx);
      if (result instanceof Promise) {
        return result.then(
          (r) => this.reply(session, type, r, replyTo),
          (e: unknown) => this.handlerError(session, e, replyTo, type),
        );
      }
      this.reply(session, type, result, replyTo);
    } catch (e) {
      this.handlerError(session, e, replyTo, type);
    }
  }

  private reply(session: Session, type: RequestType, result: Result<RequestType>, replyTo: string | null): void {
    if ('noReply' in result) return;
    session.send(this.envelope(ACK_REPLIES.has(type) ? MT.ACK : MT.SUCCESS, result, { reply_to: replyTo }));
  }

  private reject(session: Session, error: ProtocolError, replyTo: string | null): void {
    this.counters.errors++;
    this.log.debug(`refused: ${error.code} ${error.message}`, { conn: session.id, user: session.user?.username });
    if (error.fatal) {
      session.send(errorEnvelope(error, replyTo));
      session.close(error.code);
    } else {
      session.sendError(error, replyTo);
    }
  }

  private handlerError(session: Session, e: unknown, replyTo: string | null, type: string): void {
    if (e instanceof ProtocolError) this.reject(session, e, replyTo);
    else this.internalError(session, e, replyTo, type);
  }

  private internalError(session: Session, e: unknown, replyTo: string | null, type: string): void {
    this.counters.errors++;
    this.log.error(`handler for ${type} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`, {
      conn: session.id,
      user: session.user?.username,
    });
    session.sendError(new ProtocolError('INTERNAL_ERROR', { type }), replyTo);
  }

  // ------------------------------------------------------------ sending

  envelope<D>(
    type: MessageType,
    data: D,
    extra: { sender?: string | null; recipient?: string | null; room_id?: string | null; reply_to?: string | null } = {},
  ): Envelope<MessageType, D> {
    const env: Envelope<MessageType, D> = {
      type,
      data,
      sender: extra.sender ?? null,
      recipient: extra.recipient ?? null,
      room_id: extra.room_id ?? null,
      timestamp: Date.now() / 1000,
      message_id: randomUUID(),
    };
    if (extra.reply_to !== undefined) env.reply_to = extra.reply_to;
    return env;
  }

  private push<T extends PushType>(user: User, type: T, data: PushData<T>, extra: { room_id?: string | null; sender?: string | null } = {}): void {
    user.session.send(this.envelope(type, data, { ...extra, recipient: user.user_id }));
  }

  private activeSpeakerData(roomId: string, userId: string | null, level: number): PushData<'ACTIVE_SPEAKER'> {
    const u = userId ? this.users.get(userId) : undefined;
    return { room_id: roomId, user_id: u ? userId : null, username: u?.username ?? null, level };
  }

  /** The relay decided a new dominant speaker (server/active_speaker.ts): tell the room. */
  private activeSpeakerChanged(roomId: string, userId: string | null, level: number): void {
    const room = this.rooms.get(roomId);
    if (room) this.pushToRoom(room, MT.ACTIVE_SPEAKER, this.activeSpeakerData(roomId, userId, level));
  }

  /** One encode, many writes. */
  private pushToRoom<T extends PushType>(room: Room, type: T, data: PushData<T>, opts: { except?: User; sender?: string | null } = {}): number {
    const frame = encodeFrame(this.envelope(type, data, { room_id: room.room_id, sender: opts.sender ?? null }));
    let n = 0;
    for (const m of room.members.values()) {
      if (m !== opts.except && m.session.sendFrame(frame)) n++;
    }
    return n;
  }

  private pushToAll<T extends PushType>(type: T, data: PushData<T>, opts: { except?: User; room_id?: string | null } = {}): void {
    const frame = encodeFrame(this.envelope(type, data, { room_id: opts.room_id ?? null }));
    for (const u of this.users.all()) if (u !== opts.except) u.session.sendFrame(frame);
  }

  /** A user's state changed: everyone online gets USER_UPDATE (keeps user lists current). */
  private userChanged(user: User): UserInfo {
    if (user.streamId !== null) this.media.setAllowed(user.user_id, this.mediaAllow(user));
    const info = user.toInfo();
    this.pushToAll(MT.USER_UPDATE, info, { room_id: user.roomId });
    this.emit('user_update', info);
    return info;
  }

  private roomChanged(room: Room, change: string): void {
    const info = room.toInfo();
    this.pushToRoom(room, MT.ROOM_UPDATE, { room: info, change });
    this.emit('room_update', info);
    this.scheduleRoomList();
  }

  private roomRemoved(room: Room): void {
    // Files shared in a room live as long as the room (a persistent room's survive restarts).
    this.files.removeRoomFiles(room.room_id);
    this.emit('room_removed', room.room_id);
    this.scheduleRoomList();
  }

  /** A file was added, deleted or expired: the room gets its new list, saying what changed. */
  private filesChanged(roomId: string, change: FileChange): void {
    const room = this.rooms.get(roomId);
    if (!room || this.closing) return;
    this.pushToRoom(room, MT.FILE_LIST, { room_id: roomId, files: this.files.list(roomId), change });
  }

  /** ROOM_LIST pushes are coalesced: a burst of joins sends one list. */
  private scheduleRoomList(): void {
    if (this.roomListTimer || this.closing) return;
    this.roomListTimer = setTimeout(() => {
      this.roomListTimer = null;
      this.pushToAll(MT.ROOM_LIST, { rooms: this.rooms.list() });
    }, this.options.listPushDelayMs);
    this.roomListTimer.unref();
  }

  private roleChanged(room: Room, change: RoleChange, by: User | null, reason: string): void {
    this.pushToRoom(room, MT.ROLE_CHANGE, {
      user_id: change.user.user_id,
      username: change.user.username,
      role: change.role,
      previous_role: change.previous,
      by: by?.ref ?? null,
      reason,
    });
    this.userChanged(change.user);
  }

  // ------------------------------------------------------------ membership

  /** Takes the user out of the room and tells the observers (the media plane stops forwarding). */
  private detach(room: Room, user: User, reason: string): LeaveResult {
    const wasMutedByHost = user.mutedByHost;
    const result = this.rooms.leave(room, user);
    this.media.removeParticipant(user.user_id);
    user.streamId = null;
    this.emit('room_left', { user_id: user.user_id, room_id: room.room_id, reason });
    if (wasMutedByHost) this.emit('mute_changed', { user_id: user.user_id, room_id: null, muted: false });
    return result;
  }

  private leaveRoom(user: User, reason: string): LeaveResult | null {
    const room = user.roomId ? this.rooms.get(user.roomId) : undefined;
    if (!room) return null;
    const result = this.detach(room, user, reason);
    this.pushToRoom(room, MT.USER_LEAVE, { user_id: user.user_id, username: user.username, reason });
    if (result.newHost) {
      this.log.info(`${result.newHost.user.username} is now host`, { room: room.room_name, reason: 'host_left' });
      this.roleChanged(room, result.newHost, null, 'host_left');
      this.roomChanged(room, 'host');
    }
    if (result.removed) this.roomRemoved(room);
    else this.scheduleRoomList();
    return result;
  }

  /**
   * The connection dropped without a goodbye: keep the user's place (room, role) for
   * resumeGraceMs so a client that reconnects with its resume token carries on as if
   * nothing happened. Everyone sees is_reconnecting meanwhile.
   */
  private holdForResume(user: User): void {
    user.graceTimer = setTimeout(() => {
      user.graceTimer = null;
      if (this.users.get(user.user_id) === user && user.session.closed) this.userOffline(user, 'connection_lost');
    }, this.options.resumeGraceMs);
    user.graceTimer.unref();
    this.log.info('connection lost; holding place for resume', { user: user.username, ms: this.options.resumeGraceMs });
    this.userChanged(user);
  }

  private userOffline(user: User, reason: string): void {
    if (user.graceTimer) clearTimeout(user.graceTimer);
    user.graceTimer = null;
    this.leaveRoom(user, reason);
    this.users.remove(user);
    this.pushToAll(MT.USER_LEAVE, { user_id: user.user_id, username: user.username, reason });
    this.log.info('user offline', { user: user.username, reason });
    this.emit('user_offline', { ...user.toInfo(), is_online: false }, reason);
  }

  /** The user's room, or NOT_IN_ROOM. With a room_id, it must be that room. */
  private roomOf(user: User, roomId?: string | null): Room {
    const id = roomId ?? user.roomId;
    if (!id) throw new ProtocolError('NOT_IN_ROOM');
    const room = this.rooms.get(id);
    if (!room) throw new ProtocolError('ROOM_NOT_FOUND', { room_id: id });
    if (user.roomId !== id && !user.isAdmin) throw new ProtocolError('NOT_IN_ROOM');
    return room;
  }

  /**
   * Authorizes a host action: the actor must rank at least `minRole` in the room
   * (admins anywhere). The room is the actor's, or for an admin the one named.
   */
  private authorize(user: User, action: string, minRole: RoomRole, roomId?: string | null): Room {
    const room = this.roomOf(user, roomId);
    if (!user.isAdmin && (user.roomId !== room.room_id || !user.role || ROLE_RANK[user.role] < ROLE_RANK[minRole])) {
      const needed = minRole === 'host' ? 'the host' : 'the host or a moderator';
      throw new ProtocolError('PERMISSION_DENIED', { needed, action });
    }
    return room;
  }

  /** The target of a host action, in the actor's room, ranked below the actor. */
  private targetOf(
    user: User,
    ref: { user_id?: string; username?: string },
    action: string,
    minRole: RoomRole,
    opts: { allowSelf?: boolean; outrank?: boolean } = {},
  ): { room: Room; target: User } {
    const target = this.users.find(ref);
    if (!target) throw new ProtocolError('USER_NOT_FOUND', { user: ref.username ?? ref.user_id });
    const room = this.authorize(user, action, minRole, user.isAdmin ? (target.roomId ?? user.roomId) : user.roomId);
    if (target.roomId !== room.room_id) throw new ProtocolError('TARGET_NOT_IN_ROOM', { username: target.username });
    if (target === user && !opts.allowSelf) throw new ProtocolError('CANNOT_TARGET_SELF', { action });
    if ((opts.outrank ?? true) && target !== user && target.rank >= user.rank) {
      throw new ProtocolError('PERMISSION_DENIED', { needed: 'someone ranked above them', action });
    }
    return { room, target };
  }

  private setHostMute(target: User, muted: boolean, by: User): void {
    target.mutedByHost = muted;
    // A host's mute also turns the microphone flag off, so lifting it only asks: the user
    // must turn audio on again (AUDIO_START), and never goes live without knowing.
    if (muted) target.audioEnabled = false;
    this.push(target, muted ? MT.MUTE_USER : MT.UNMUTE_USER, { user_id: target.user_id, by: by.ref }, { room_id: target.roomId });
    this.userChanged(target);
    this.emit('mute_changed', { user_id: target.user_id, room_id: target.roomId, muted });
  }

  /** Removes everyone from the room and ends its meeting (END_MEETING to each). */
  private endMeeting(room: Room, by: User | null): void {
    this.pushToRoom(room, MT.END_MEETING, { room_id: room.room_id, by: by?.ref ?? null });
    for (const m of [...room.members.values()]) {
      this.detach(room, m, 'meeting_ended');
      this.userChanged(m);
    }
    room.resetMeeting();
    if (!room.persistent && this.rooms.get(room.room_id)) this.rooms.remove(room);
    if (!this.rooms.get(room.room_id)) this.roomRemoved(room);
    else this.scheduleRoomList();
  }

  /** What the relay forwards from this user: the control plane's state is the only authority. */
  private mediaAllow(user: User): MediaAllow {
    return { video: user.videoEnabled, screen: user.screenSharing, audio: user.audioEnabled && !user.mutedByHost };
  }

  private mediaGrant(user: User): MediaGrant | undefined {
    if (user.streamId === null || !this.media.listening) return undefined;
    return {
      token: user.mediaToken.toString('hex'),
      stream_id: user.streamId,
      ports: this.media.ports,
      max_payload: MAX_MEDIA_PAYLOAD,
    };
  }

  /**
   * Camera or screen on/off: the relay obeys at once (userChanged), and the room is
   * told with VIDEO_START / VIDEO_STOP / SCREEN_SHARE (then USER_UPDATE to everyone).
   */
  private setMediaFlag(user: User, kind: 'video' | 'screen', on: boolean, by: User | null): { user: UserInfo } {
    const before = kind === 'video' ? user.videoEnabled : user.screenSharing;
    if (kind === 'video') user.videoEnabled = on;
    else user.screenSharing = on;
    const room = user.roomId ? this.rooms.get(user.roomId) : undefined;
    if (room && before !== on && user.streamId !== null) {
      const ref = { user_id: user.user_id, username: user.username, stream_id: user.streamId };
      if (kind === 'screen') this.pushToRoom(room, MT.SCREEN_SHARE, { ...ref, active: on, by: by?.ref ?? null }, { except: user, sender: user.user_id });
      else if (on) this.pushToRoom(room, MT.VIDEO_START, ref, { except: user, sender: user.user_id });
      else this.pushToRoom(room, MT.VIDEO_STOP, { ...ref, by: by?.ref ?? null }, { except: user, sender: user.user_id });
    }
    return { user: this.userChanged(user) };
  }

  private setFlag(user: User, apply: () => void): { user: UserInfo } {
    apply();
    return { user: this.userChanged(user) };
  }

  // ------------------------------------------------------------ handlers

  private makeHandlers(): Handlers {
    return {
      CONNECT: ({ session, data, replyTo }) => {
        if (session.user) throw new ProtocolError('ALREADY_CONNECTED', { username: session.user.username });
        if (data.protocol_version !== undefined && data.protocol_version < MIN_PROTOCOL_VERSION) {
          throw new ProtocolError('UNSUPPORTED_PROTOCOL_VERSION', { version: data.protocol_version, supported: PROTOCOL_VERSION });
        }
        const { serverPassword, adminPassword } = this.options;
        if (serverPassword) {
          if (!data.password) throw new ProtocolError('SERVER_PASSWORD_REQUIRED');
          if (!secretEquals(data.password, serverPassword)) throw new ProtocolError('WRONG_SERVER_PASSWORD');
        }
        let isAdmin = false;
        if (data.admin_password) {
          if (!adminPassword || !secretEquals(data.admin_password, adminPassword)) throw new ProtocolError('WRONG_ADMIN_PASSWORD');
          isAdmin = true;
        }
        // Nobody may pass for the operator: actions at the console are signed with this name.
        const problem = usernameProblem(data.username) ?? (nameKey(data.username) === nameKey(CONSOLE_USERNAME) ? 'is reserved for the server operator' : null);
        if (problem) throw new ProtocolError('INVALID_USERNAME', { reason: problem });

        let user = this.users.getByName(data.username);
        let resumed = false;
        if (user && !(data.resume_token && secretEquals(data.resume_token, user.resumeToken))) {
          // Without the token nobody inherits a place; but a name whose connection is
          // already gone (held for resume) is freed for whoever signs in with it now.
          if (!user.session.closed) throw new ProtocolError('USERNAME_TAKEN', { username: data.username });
          this.userOffline(user, 'connection_lost');
          user = undefined;
        }
        if (user) {
          // Resume: the user keeps room, role and state; a half-dead old connection is closed.
          const old = user.session;
          user.session = session;
          if (!old.closed) old.fail(new ProtocolError('SESSION_REPLACED', { username: user.username }));
          if (user.graceTimer) clearTimeout(user.graceTimer);
          user.graceTimer = null;
          resumed = true;
        } else {
          user = this.users.add(data.username, isAdmin, session);
        }
        session.user = user;
        session.capabilities = data.capabilities ?? [];
        const info = user.toInfo();
        session.send(
          this.envelope(
            MT.SUCCESS,
            {
              user_id: user.user_id,
              message: resumed ? `Welcome back, ${user.username}` : `Welcome, ${user.username}`,
              username: user.username,
              user: info,
              protocol_version: Math.min(PROTOCOL_VERSION, data.protocol_version ?? PROTOCOL_VERSION),
              capabilities: [...SERVER_CAPABILITIES],
              server_name: this.options.serverName,
              heartbeat_interval: this.options.heartbeatIntervalMs / 1000,
              connection_timeout: this.options.connectionTimeoutMs / 1000,
              resume_token: user.resumeToken,
              resumed,
            } satisfies ResponseData<'CONNECT'>,
            { reply_to: replyTo },
          ),
        );
        this.push(user, MT.USER_LIST, { users: this.users.list() });
        this.push(user, MT.ROOM_LIST, { rooms: this.rooms.list() });
        if (!resumed) {
          this.pushToAll(MT.USER_JOIN, info, { except: user });
          this.log.info('user online', { user: user.username, conn: session.id, admin: isAdmin || undefined });
          this.emit('user_online', info);
        } else {
          this.log.info('user resumed', { user: user.username, conn: session.id });
          this.userChanged(user);
        }
        return NO_REPLY;
      },

      DISCONNECT: ({ session, replyTo }) => {
        session.send(this.envelope(MT.SUCCESS, { message: 'Goodbye' }, { reply_to: replyTo }));
        session.close('disconnected');
        return NO_REPLY;
      },

      HEARTBEAT: () => ({ server_time: Date.now() / 1000 }),

      USER_LIST: ({ user, data }) => {
        if (!data.room_id) return { users: this.users.list() };
        const room = this.roomOf(user, data.room_id);
        return { users: [...room.members.values()].map((m) => m.toInfo()) };
      },

      ROOM_LIST: () => ({ rooms: this.rooms.list() }),

      ROOM_CREATE: async ({ user, data }) => {
        const problem = roomNameProblem(data.room_name);
        if (problem) throw new ProtocolError('INVALID_ROOM_NAME', { reason: problem });
        if (this.rooms.size >= this.options.maxRooms) throw new ProtocolError('TOO_MANY_ROOMS', { limit: this.options.maxRooms });
        if (data.is_private && !data.password) {
          throw new ProtocolError('INVALID_PAYLOAD', { type: 'ROOM_CREATE', reason: 'password: a private room needs a password' });
        }
        const password_hash = data.is_private && data.password ? await hashPassword(data.password) : null;
        const room = this.rooms.create(user, {
          room_name: data.room_name,
          is_private: data.is_private,
          password_hash,
          max_participants: data.max_participants ?? this.options.maxParticipants,
          persistent: data.persistent,
          settings: data.settings ?? {},
        });
        this.log.info('room created', { room: room.room_name, id: room.room_id, by: user.username, persistent: room.persistent });
        this.emit('room_update', room.toInfo());
        this.scheduleRoomList();
        return { room: room.toInfo() };
      },

      ROOM_JOIN: async ({ user, data, replyTo }) => {
        const room = this.rooms.require(data.room_id);
        if (user.roomId === room.room_id) {
          return {
            room: room.toInfo(),
            participants: [...room.members.values()].map((m) => m.toInfo()),
            already_joined: true,
            media: this.mediaGrant(user),
          };
        }
        await this.rooms.checkJoin(room, user, data.password);
        // The hash took time: look again at what may have changed meanwhile.
        if (this.rooms.get(room.room_id) !== room) throw new ProtocolError('ROOM_NOT_FOUND', { room_id: data.room_id });
        this.rooms.checkCapacity(room, user);
        if (user.roomId) this.leaveRoom(user, 'moved');
        this.rooms.join(room, user);
        user.streamId = this.media.addParticipant({
          userId: user.user_id,
          username: user.username,
          roomId: room.room_id,
          token: user.mediaToken,
          allow: this.mediaAllow(user),
        });
        const info = user.toInfo();
        this.log.info('joined room', { room: room.room_name, user: user.username, role: user.role });
        const participants = [...room.members.values()].map((m) => m.toInfo());
        const reply: ResponseData<'ROOM_JOIN'> = { room: room.toInfo(), participants, already_joined: false, media: this.mediaGrant(user) };
        // SUCCESS first, then history, then tell the others: the joiner sees a consistent order.
        return this.replyThen(user.session, replyTo, reply, () => {
          this.push(user, MT.CHAT_HISTORY, { room_id: room.room_id, messages: room.history.slice() }, { room_id: room.room_id });
          this.push(user, MT.FILE_LIST, { room_id: room.room_id, files: this.files.list(room.room_id) }, { room_id: room.room_id });
          this.pushToRoom(room, MT.USER_JOIN, info, { except: user });
          const speaker = this.media.activeSpeaker(room.room_id);
          if (speaker) this.push(user, MT.ACTIVE_SPEAKER, this.activeSpeakerData(room.room_id, speaker.user_id, speaker.level), { room_id: room.room_id });
          this.userChanged(user);
          this.scheduleRoomList();
        });
      },

      ROOM_LEAVE: ({ user, data }) => {
        if (!user.roomId || (data.room_id && data.room_id !== user.roomId)) throw new ProtocolError('NOT_IN_ROOM');
        this.leaveRoom(user, 'left');
        this.userChanged(user);
        return { message: 'Left the room' };
      },

      ROOM_DELETE: ({ user, data }) => {
        const room = this.rooms.require(data.room_id);
        // The creator's session, not the name: names are not authenticated, and a
        // persistent room outlives the session that made it (then host or admin).
        const isCreator = room.created_by === user.user_id;
        const isHost = room.hostId === user.user_id;
        if (!user.isAdmin && !isCreator && !isHost) {
          throw new ProtocolError('PERMISSION_DENIED', { needed: 'the room\'s creator, its host or an admin', action: 'delete a room' });
        }
        for (const m of room.members.values()) this.push(m, MT.ROOM_DELETE, { room_id: room.room_id, by: user.ref }, { room_id: room.room_id });
        if (room.members.size > 0) this.endMeeting(room, user);
        if (this.rooms.get(room.room_id)) {
          this.rooms.remove(room);
          this.roomRemoved(room);
        }
        this.log.info('room deleted', { room: room.room_name, by: user.username });
        return { message: `Room "${room.room_name}" deleted` };
      },

      CHAT_MESSAGE: ({ user, env, data }) => {
        const text = data.message;
        if (text.trim().length === 0) throw new ProtocolError('INVALID_PAYLOAD', { type: 'CHAT_MESSAGE', reason: 'message: is empty' });
        // Counted in characters (code points), as names are; UTF-16 length is an upper bound.
        if (text.length > this.options.maxChatLength && [...text].length > this.options.maxChatLength) {
          throw new ProtocolError('INVALID_PAYLOAD', {
            type: 'CHAT_MESSAGE',
            reason: `message: longer than ${this.options.maxChatLength} characters`,
          });
        }
        if (!user.chatLimiter.take()) {
          throw new ProtocolError('RATE_LIMITED', { what: 'chat messages', limit: this.options.chatRatePerSecond });
        }
        const now = Date.now() / 1000;
        const recipientId = env.recipient ?? null;
        if (recipientId) {
          const to = this.users.get(recipientId) ?? this.users.getByName(recipientId);
          if (!to) throw new ProtocolError('INVALID_RECIPIENT', { recipient: recipientId });
          const entry: ChatEntry = {
            chat_id: randomUUID(),
            seq: this.rooms.nextSeq(),
            room_id: null,
            user_id: user.user_id,
            username: user.username,
            message: text,
            timestamp: now,
            is_private: true,
            recipient: to.user_id,
          };
          const delivered = to.session.send(this.envelope(MT.CHAT_MESSAGE, entry, { sender: user.user_id, recipient: to.user_id }));
          return { chat_id: entry.chat_id, seq: entry.seq, timestamp: now, delivered_to: delivered ? 1 : 0, recipient: to.user_id };
        }
        const room = this.roomOf(user, data.room_id ?? env.room_id ?? null);
        if (user.roomId !== room.room_id) throw new ProtocolError('NOT_IN_ROOM');
        const entry: ChatEntry = {
          chat_id: randomUUID(),
          seq: this.rooms.nextSeqFor(room),
          room_id: room.room_id,
          user_id: user.user_id,
          username: user.username,
          message: text,
          timestamp: now,
          is_private: false,
          recipient: null,
        };
        // Push first, then store: the store's group commit runs right after these writes leave.
        const delivered = this.pushToRoom(room, MT.CHAT_MESSAGE, entry, { except: user, sender: user.user_id });
        this.rooms.addChat(room, entry);
        this.emit('chat', entry);
        return { chat_id: entry.chat_id, seq: entry.seq, timestamp: now, delivered_to: delivered, recipient: null };
      },

      CHAT_HISTORY: ({ user, data }) => {
        const room = this.roomOf(user, data.room_id);
        return { room_id: room.room_id, messages: this.rooms.history(room, data.limit ?? this.options.historyLimit, data.before) };
      },

      VIDEO_START: ({ user }) => this.setMediaFlag(user, 'video', true, null),
      VIDEO_STOP: ({ user }) => this.setMediaFlag(user, 'video', false, null),
      AUDIO_START: ({ user }) => {
        if (user.mutedByHost) throw new ProtocolError('MUTED_BY_HOST');
        return this.setFlag(user, () => (user.audioEnabled = true));
      },
      AUDIO_STOP: ({ user }) => this.setFlag(user, () => (user.audioEnabled = false)),
      SCREEN_SHARE: ({ user, data }) => this.setMediaFlag(user, 'screen', data.active, null),
      STOP_VIDEO: ({ user, data }) => {
        const { target } = this.targetOf(user, data, data.kind === 'screen' ? "stop someone's screen share" : "stop someone's camera", 'moderator');
        this.push(target, MT.STOP_VIDEO, { user_id: target.user_id, kind: data.kind, by: user.ref }, { room_id: target.roomId });
        this.log.info(`${data.kind} stopped by host`, { user: target.username, by: user.username });
        return this.setMediaFlag(target, data.kind, false, user);
      },
      MEDIA_SUBSCRIBE: ({ user, data }) => {
        const room = this.roomOf(user);
        const target = this.users.get(data.user_id);
        if (!target || target.roomId !== room.room_id) throw new ProtocolError('TARGET_NOT_IN_ROOM', { username: target?.username ?? data.user_id });
        this.media.setPaused(user.user_id, target.user_id, data.kind, data.paused);
        return { user_id: target.user_id, kind: data.kind, paused: data.paused };
      },

      RAISE_HAND: ({ user }) => {
        this.roomOf(user);
        return this.setFlag(user, () => (user.handRaised = true));
      },
      LOWER_HAND: ({ user, data }) => {
        const self = !data.user_id && !data.username ? true : this.users.find(data) === user;
        if (self) {
          this.roomOf(user);
          return this.setFlag(user, () => (user.handRaised = false));
        }
        const { target } = this.targetOf(user, data, 'lower hands', 'moderator', { allowSelf: true, outrank: false });
        return this.setFlag(target, () => (target.handRaised = false));
      },

      REACTION: ({ user, data }) => {
        const room = this.roomOf(user);
        if (!user.reactionLimiter.take()) {
          throw new ProtocolError('RATE_LIMITED', { what: 'reactions', limit: this.options.chatRatePerSecond });
        }
        this.pushToRoom(room, MT.REACTION, { ...user.ref, reaction: data.reaction }, { except: user, sender: user.user_id });
        return { message: 'Sent' };
      },

      MUTE_USER: ({ user, data }) => {
        const { target } = this.targetOf(user, data, 'mute others', 'moderator');
        this.setHostMute(target, true, user);
        this.log.info('muted by host', { user: target.username, by: user.username });
        return { user: target.toInfo() };
      },
      UNMUTE_USER: ({ user, data }) => {
        const { target } = this.targetOf(user, data, 'unmute others', 'moderator');
        this.setHostMute(target, false, user);
        return { user: target.toInfo() };
      },
      MUTE_ALL: ({ user, data }) => {
        const room = this.authorize(user, 'mute everyone', 'moderator', data.room_id);
        const muted: string[] = [];
        for (const m of room.members.values()) {
          if (m === user || m.mutedByHost || m.rank >= user.rank) continue;
          if (m.role === 'moderator' && !data.include_moderators) continue;
          this.setHostMute(m, true, user);
          muted.push(m.user_id);
        }
        return { muted };
      },
      KICK_USER: ({ user, data }) => {
        const { room, target } = this.targetOf(user, data, 'remove people', 'moderator');
        const reason = data.reason ?? 'Removed by the host';
        this.push(target, MT.KICK_USER, { user_id: target.user_id, room_id: room.room_id, by: user.ref, reason }, { room_id: room.room_id });
        room.bans.add(nameKey(target.username));
        this.leaveRoom(target, 'kicked');
        this.userChanged(target);
        this.log.info('kicked', { room: room.room_name, user: target.username, by: user.username });
        return { message: `${target.username} was removed` };
      },
      ROOM_LOCK: ({ user, data }) => {
        const room = this.authorize(user, 'lock the room', 'moderator', data.room_id);
        room.locked = true;
        this.roomChanged(room, 'locked');
        return { room: room.toInfo() };
      },
      ROOM_UNLOCK: ({ user, data }) => {
        const room = this.authorize(user, 'unlock the room', 'moderator', data.room_id);
        room.locked = false;
        this.roomChanged(room, 'unlocked');
        return { room: room.toInfo() };
      },
      PROMOTE_USER: ({ user, data }) => {
        const { room, target } = this.targetOf(user, data, 'promote people', 'host');
        if (target.role !== 'participant') {
          throw new ProtocolError('INVALID_PAYLOAD', { type: 'PROMOTE_USER', reason: `${target.username} is already ${target.role}` });
        }
        const previous = target.role;
        target.role = 'moderator';
        this.roleChanged(room, { user: target, role: 'moderator', previous }, user, 'promoted');
        return { user: target.toInfo() };
      },
      DEMOTE_USER: ({ user, data }) => {
        const { room, target } = this.targetOf(user, data, 'demote people', 'host');
        if (target.role !== 'moderator') {
          throw new ProtocolError('INVALID_PAYLOAD', { type: 'DEMOTE_USER', reason: `${target.username} is not a moderator` });
        }
        target.role = 'participant';
        this.roleChanged(room, { user: target, role: 'participant', previous: 'moderator' }, user, 'demoted');
        return { user: target.toInfo() };
      },
      TRANSFER_HOST: ({ user, data }) => {
        const { room, target } = this.targetOf(user, data, 'hand over the host role', 'host', { outrank: false });
        const old = room.host;
        const change = this.rooms.setHost(room, target);
        if (old && old !== target) {
          old.role = 'participant';
          this.roleChanged(room, { user: old, role: 'participant', previous: 'host' }, user, 'host_transferred');
        }
        this.roleChanged(room, change, user, 'host_transferred');
        this.roomChanged(room, 'host');
        return { room: room.toInfo() };
      },
      END_MEETING: ({ user, data }) => {
        const room = this.authorize(user, 'end the meeting', 'host', data.room_id);
        this.log.info('meeting ended', { room: room.room_name, by: user.username });
        this.endMeeting(room, user);
        return { message: 'Meeting ended' };
      },

      FILE_UPLOAD_START: ({ user, data }) => {
        // Only members share into a room (an admin too: roomOf lets an admin name any room).
        const room = this.roomOf(user, data.room_id);
        if (user.roomId !== room.room_id) throw new ProtocolError('NOT_IN_ROOM');
        return this.files.startUpload({
          user: user.ref,
          roomId: room.room_id,
          name: data.name,
          size: data.size,
          chunkSize: data.chunk_size,
          resumeId: data.resume_id,
        });
      },
      FILE_DOWNLOAD_REQUEST: ({ user, data }) => {
        const room = this.roomOf(user);
        return this.files.requestDownload({ user: user.ref, roomId: room.room_id, fileId: data.file_id });
      },
      FILE_LIST: ({ user, data }) => {
        const room = this.roomOf(user, data.room_id);
        return { room_id: room.room_id, files: this.files.list(room.room_id) };
      },
      FILE_DELETE: ({ user, data }) => {
        if (!user.roomId && !user.isAdmin) throw new ProtocolError('NOT_IN_ROOM');
        const file = this.files.getFile(data.file_id);
        // Another room's file is "not found" too: nobody learns what other rooms hold.
        if (!file || (file.room_id !== user.roomId && !user.isAdmin)) throw new ProtocolError('FILE_NOT_FOUND', { file_id: data.file_id });
        const isUploader = file.owner_key === nameKey(user.username);
        const isRoomModerator = user.roomId === file.room_id && user.role !== null && ROLE_RANK[user.role] >= ROLE_RANK.moderator;
        if (!isUploader && !isRoomModerator && !user.isAdmin) {
          throw new ProtocolError('PERMISSION_DENIED', { needed: 'the uploader, a host or moderator of the room, or an admin', action: 'delete this file' });
        }
        this.files.deleteFile(file.file_id, user.ref);
        return { file_id: file.file_id, message: `Deleted "${file.name}"` };
      },
    };
  }

  /** Send the SUCCESS now, then run `after`: for pushes that must follow the reply. */
  private replyThen(session: Session, replyTo: string | null, data: unknown, after: () => void): NoReply {
    session.send(this.envelope(MT.SUCCESS, data, { reply_to: replyTo }));
    after();
    return NO_REPLY;
  }
}
