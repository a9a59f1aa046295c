/**
 * The one source of truth for control messages: every message type name, the
 * envelope, and a validated payload schema for each request, each reply and each
 * push. Server and client import these; nothing else spells a type name as a raw
 * string. docs/PROTOCOL.md describes the same for humans.
 *
 * Compatibility rule (../shared/ORIGINAL_PROTOCOL.md): the original's names, fields and
 * exchanges are a floor. Fields may be added, never renamed or removed. Unknown
 * extra fields in a request are ignored, so newer clients work with this server.
 */
import { z } from 'zod';
import { LIMITS, PROTOCOL_VERSION } from '../constants';

/** Every message type. The first block is the original's, in its order. */
export const MESSAGE_TYPES = [
  // original
  'CONNECT', 'DISCONNECT', 'HEARTBEAT', 'USER_JOIN', 'USER_LEAVE', 'USER_LIST',
  'ROOM_CREATE', 'ROOM_JOIN', 'ROOM_LEAVE', 'ROOM_LIST', 'VIDEO_FRAME', 'AUDIO_FRAME',
  'VIDEO_START', 'VIDEO_STOP', 'AUDIO_START', 'AUDIO_STOP', 'SCREEN_SHARE',
  'CHAT_MESSAGE', 'CHAT_HISTORY', 'FILE_UPLOAD_START', 'FILE_UPLOAD_CHUNK',
  'FILE_UPLOAD_END', 'FILE_DOWNLOAD_REQUEST', 'FILE_DOWNLOAD_CHUNK', 'FILE_DOWNLOAD_END',
  'FILE_LIST', 'FILE_DELETE', 'MUTE_USER', 'UNMUTE_USER', 'KICK_USER',
  'RECORDING_START', 'RECORDING_STOP', 'SUCCESS', 'ERROR', 'ACK',
  // added by this product
  'USER_UPDATE', 'ROOM_UPDATE', 'ROOM_DELETE', 'RAISE_HAND', 'LOWER_HAND', 'REACTION',
  'MUTE_ALL', 'ROOM_LOCK', 'ROOM_UNLOCK', 'PROMOTE_USER', 'DEMOTE_USER', 'TRANSFER_HOST',
  'ROLE_CHANGE', 'END_MEETING', 'STOP_VIDEO', 'MEDIA_SUBSCRIBE', 'ACTIVE_SPEAKER',
] as const;

export type MessageType = (typeof MESSAGE_TYPES)[number];

/** `MT.CHAT_MESSAGE === 'CHAT_MESSAGE'`: use these instead of string literals. */
export const MT = Object.freeze(Object.fromEntries(MESSAGE_TYPES.map((t) => [t, t]))) as {
  readonly [K in MessageType]: K;
};

const MESSAGE_TYPE_SET: ReadonlySet<string> = new Set(MESSAGE_TYPES);
export function isMessageType(t: unknown): t is MessageType {
  return typeof t === 'string' && MESSAGE_TYPE_SET.has(t);
}

// ---------------------------------------------------------------- envelope

const id = z.string().min(1).max(128);
/** Addressing fields: an empty string (an original client before it has an id) means none. */
const addr = z
  .string()
  .max(128)
  .nullish()
  .transform((v) => (v === '' ? null : v));

/**
 * The envelope as received. Lenient where the original was: `data` may be missing
 * (treated as {}), the addressing fields may be missing or null.
 */
export const EnvelopeSchema = z.object({
  type: z.string().min(1).max(64),
  data: z.record(z.string(), z.unknown()).nullish().transform((d) => d ?? {}),
  sender: addr,
  recipient: addr,
  room_id: addr,
  timestamp: z.number().finite().nullish(),
  message_id: addr,
  /** Added: on SUCCESS/ERROR/ACK, the message_id of the request answered. */
  reply_to: addr,
});
export type IncomingEnvelope = z.infer<typeof EnvelopeSchema>;

/** The envelope as sent: every field present, as the original sent it. */
export interface Envelope<T extends string = MessageType, D = Record<string, unknown>> {
  type: T;
  data: D;
  sender: string | null;
  recipient: string | null;
  room_id: string | null;
  /** Seconds since the epoch, float. */
  timestamp: number;
  message_id: string;
  reply_to?: string | null;
}

// ---------------------------------------------------------------- objects

export const ROLES = ['host', 'moderator', 'participant'] as const;
export type RoomRole = (typeof ROLES)[number];

export const PermissionsSchema = z.object({
  can_mute_others: z.boolean(),
  can_kick_users: z.boolean(),
  can_manage_rooms: z.boolean(),
  can_record: z.boolean(),
});
export type Permissions = z.infer<typeof PermissionsSchema>;

/** The user object of the original, plus role, hand and host-mute fields. */
export const UserInfoSchema = z.object({
  user_id: z.string(),
  username: z.string(),
  room_id: z.string().nullable(),
  is_online: z.boolean(),
  /** True when the user's audio is muted, by themselves or by the host. */
  is_muted: z.boolean(),
  /** Server-side mute set by a host; the media plane drops this user's audio while set. */
  is_muted_by_host: z.boolean(),
  is_video_enabled: z.boolean(),
  is_audio_enabled: z.boolean(),
  is_screen_sharing: z.boolean(),
  hand_raised: z.boolean(),
  role: z.enum(ROLES).nullable(),
  is_admin: z.boolean(),
  /** The connection dropped and the server holds the user's place for a short while (resume window). */
  is_reconnecting: z.boolean(),
  /** While in a room: the id in the media header of this user's streams (camera, screen, audio); null otherwise. */
  stream_id: z.number().int().nullable(),
  last_seen: z.number(),
  permissions: PermissionsSchema,
});
export type UserInfo = z.infer<typeof UserInfoSchema>;

/** The room object of the original, plus lock, persistence and host fields. */
export const RoomInfoSchema = z.object({
  room_id: z.string(),
  room_name: z.string(),
  created_by: z.string(),
  created_by_name: z.string(),
  created_at: z.number(),
  max_participants: z.number().int(),
  is_private: z.boolean(),
  participant_count: z.number().int(),
  is_recording: z.boolean(),
  settings: z.record(z.string(), z.unknown()),
  is_locked: z.boolean(),
  is_persistent: z.boolean(),
  host_id: z.string().nullable(),
  host_name: z.string().nullable(),
});
export type RoomInfo = z.infer<typeof RoomInfoSchema>;

/** A chat entry of the original (user_id, username, message, timestamp), plus ids. */
export const ChatEntrySchema = z.object({
  chat_id: z.string(),
  /** Server order: increases with each message of a room (or each private message); sort by it, not by timestamp. */
  seq: z.number().int(),
  room_id: z.string().nullable(),
  user_id: z.string(),
  username: z.string(),
  message: z.string(),
  timestamp: z.number(),
  is_private: z.boolean(),
  recipient: z.string().nullable(),
});
export type ChatEntry = z.infer<typeof ChatEntrySchema>;

/** A file shared in a room (FILE_LIST). */
export const FileInfoSchema = z.object({
  file_id: z.string(),
  room_id: z.string(),
  /** Safe to show and to use as a file name: no path, no control characters, at most 255 bytes. */
  name: z.string(),
  size: z.number().int(),
  /** MD5 of the whole file, 32 hex digits. */
  md5: z.string(),
  /** Bytes per chunk on the file server (each chunk carries its own MD5). */
  chunk_size: z.number().int(),
  uploader_id: z.string(),
  uploader_name: z.string(),
  /** Seconds since the epoch. */
  uploaded_at: z.number(),
  /** When the server will remove it (seconds since the epoch), or null to keep it until deleted. */
  expires_at: z.number().nullable(),
});
export type FileInfo = z.infer<typeof FileInfoSchema>;

// ---------------------------------------------------------------- requests

/** A user named by id or by username (either one). */
const target = z
  .object({ user_id: id.optional(), username: z.string().min(1).max(LIMITS.maxUsernameLength).optional() })
  .refine((t) => t.user_id !== undefined || t.username !== undefined, {
    message: 'user_id or username is required',
  });
const roomRef = z.object({ room_id: id.nullish() });

/** Payload schema of each message a client may send. */
export const REQUEST_SCHEMAS = {
  CONNECT: z.object({
    username: z.string(),
    user_id: z.string().max(128).nullish(),
    /** Server password, when the server has one. */
    password: z.string().max(256).nullish(),
    /** Admin password: signs in with the admin role. */
    admin_password: z.string().max(256).nullish(),
    protocol_version: z.number().int().nonnegative().optional(),
    capabilities: z.array(z.string().max(64)).max(64).optional(),
    /** From an earlier CONNECT's SUCCESS: take over that session if it is still held. */
    resume_token: z.string().max(128).nullish(),
  }),
  DISCONNECT: z.object({ user_id: z.string().nullish() }),
  HEARTBEAT: z.object({}),
  USER_LIST: z.object({ room_id: id.nullish() }),
  ROOM_CREATE: z.object({
    room_name: z.string(),
    is_private: z.boolean().default(false),
    password: z.string().max(LIMITS.maxRoomPasswordLength).nullish(),
    max_participants: z.number().int().min(1).max(10_000).nullish(),
    /** Added: a persistent room and its chat survive restarts; a temporary one vanishes when empty. */
    persistent: z.boolean().default(false),
    /** Free-form room settings, at most LIMITS.maxRoomSettingsBytes of JSON. */
    settings: z
      .record(z.string(), z.unknown())
      .refine((v) => JSON.stringify(v).length <= LIMITS.maxRoomSettingsBytes, {
        message: `settings: at most ${LIMITS.maxRoomSettingsBytes} bytes of JSON`,
      })
      .optional(),
  }),
  ROOM_JOIN: z.object({ room_id: id, password: z.string().max(LIMITS.maxRoomPasswordLength).nullish() }),
  ROOM_LEAVE: roomRef,
  ROOM_LIST: z.object({}),
  ROOM_DELETE: z.object({ room_id: id }),
  CHAT_MESSAGE: z.object({ room_id: id.nullish(), message: z.string() }),
  CHAT_HISTORY: z.object({
    room_id: id.nullish(),
    limit: z.number().int().min(1).max(LIMITS.maxHistoryPage).optional(),
    /** Only entries older than this chat_id. */
    before: z.string().max(64).optional(),
  }),
  VIDEO_START: z.object({ user_id: z.string().nullish() }),
  VIDEO_STOP: z.object({ user_id: z.string().nullish() }),
  AUDIO_START: z.object({ user_id: z.string().nullish() }),
  AUDIO_STOP: z.object({ user_id: z.string().nullish() }),
  /** Signalling only: screen frames travel on UDP. */
  SCREEN_SHARE: z.object({ active: z.boolean().default(true) }),
  RAISE_HAND: z.object({}),
  /** Without a target: lower your own hand. With one: a host lowers someone's hand. */
  LOWER_HAND: z.object({ user_id: id.optional(), username: z.string().min(1).max(LIMITS.maxUsernameLength).optional() }),
  REACTION: z.object({ reaction: z.string().min(1).max(LIMITS.maxReactionLength) }),
  MUTE_USER: target,
  /** Clears the host mute and asks the user to unmute; it never turns a microphone on. */
  UNMUTE_USER: target,
  MUTE_ALL: z.object({ room_id: id.nullish(), include_moderators: z.boolean().default(false) }),
  KICK_USER: z.intersection(target, z.object({ reason: z.string().max(500).optional() })),
  ROOM_LOCK: roomRef,
  ROOM_UNLOCK: roomRef,
  PROMOTE_USER: target,
  DEMOTE_USER: target,
  TRANSFER_HOST: target,
  END_MEETING: roomRef,
  /** A host turns someone's camera (or screen share) off; they may turn it on again themselves. */
  STOP_VIDEO: z.intersection(target, z.object({ kind: z.enum(['video', 'screen']).default('video') })),
  /** Pause or resume receiving one participant's stream (a client pauses what it does not show). */
  MEDIA_SUBSCRIBE: z.object({
    user_id: id,
    kind: z.enum(['video', 'screen', 'audio']),
    paused: z.boolean(),
  }),
  /**
   * Ask to upload a file to the room: the reply carries a single-use ticket for the file
   * server (TCP file port), where the bytes go. The size is checked before any byte moves.
   */
  FILE_UPLOAD_START: z.object({
    room_id: id.nullish(),
    /** As the user sees it; the server makes it safe (no path, no control characters). */
    name: z.string().min(1).max(LIMITS.maxFileNameInput),
    size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
    /** Preferred chunk size; the server clamps it to its limits. */
    chunk_size: z.number().int().positive().optional(),
    /** Continue this earlier upload (its upload_id) instead of starting anew. */
    resume_id: z.string().min(1).max(64).optional(),
  }),
  /** Ask to download a file of your room: the reply carries a ticket for the file server. */
  FILE_DOWNLOAD_REQUEST: z.object({ file_id: id }),
  FILE_LIST: roomRef,
  /** The uploader, a host or moderator of the room, or an admin. */
  FILE_DELETE: z.object({ file_id: id }),
} as const;

export type RequestType = keyof typeof REQUEST_SCHEMAS;
export type RequestData<T extends RequestType> = z.input<(typeof REQUEST_SCHEMAS)[T]>;
export type ParsedRequestData<T extends RequestType> = z.output<(typeof REQUEST_SCHEMAS)[T]>;

export function isRequestType(t: string): t is RequestType {
  return Object.prototype.hasOwnProperty.call(REQUEST_SCHEMAS, t);
}

/**
 * Original names that this server knows but does not take on the control connection.
 * FILE_UPLOAD_CHUNK/END and FILE_DOWNLOAD_CHUNK/END name frames of the file server
 * (shared/protocol/file_frames.ts): file bytes never travel on the control connection.
 */
const MEDIA_ON_UDP = 'Media travels on the UDP media ports, not in JSON.';
const FILE_BYTES_ON_FILE_PORT =
  'File bytes travel on the file server port (TCP) with a ticket from FILE_UPLOAD_START or FILE_DOWNLOAD_REQUEST, never on the control connection.';
const NOT_YET = 'This feature is not available on this server yet.';

/** Each reserved type with why it is refused (NOT_SUPPORTED's `details.why`). */
export const RESERVED_WHY: Readonly<Partial<Record<MessageType, string>>> = Object.freeze({
  VIDEO_FRAME: MEDIA_ON_UDP,
  AUDIO_FRAME: MEDIA_ON_UDP,
  FILE_UPLOAD_CHUNK: FILE_BYTES_ON_FILE_PORT,
  FILE_UPLOAD_END: FILE_BYTES_ON_FILE_PORT,
  FILE_DOWNLOAD_CHUNK: FILE_BYTES_ON_FILE_PORT,
  FILE_DOWNLOAD_END: FILE_BYTES_ON_FILE_PORT,
  RECORDING_START: NOT_YET,
  RECORDING_STOP: NOT_YET,
});

export const RESERVED_TYPES: ReadonlySet<MessageType> = new Set(Object.keys(RESERVED_WHY) as MessageType[]);

// ---------------------------------------------------------------- replies (SUCCESS data)

/**
 * The media plane credentials given in ROOM_JOIN's SUCCESS: the secret token and
 * stream id to put in every media header, and the server's UDP ports. The client
 * registers with a HELLO on each port it uses (docs/PROTOCOL.md, "Media plane").
 */
export const MediaGrantSchema = z.object({
  /** 16 hex digits: the 64-bit per-session secret of the media header. */
  token: z.string().regex(/^[0-9a-f]{16}$/),
  stream_id: z.number().int().min(1).max(0xffffffff),
  ports: z.object({ video: z.number().int(), audio: z.number().int(), screen: z.number().int(), feedback: z.number().int() }),
  /** Largest payload per datagram. */
  max_payload: z.number().int(),
});
export type MediaGrant = z.infer<typeof MediaGrantSchema>;

const ok = z.object({ message: z.string().optional() });

/** Data of the SUCCESS (or ACK) that answers each request. */
export const RESPONSE_SCHEMAS = {
  CONNECT: z.object({
    user_id: z.string(),
    message: z.string(),
    username: z.string(),
    user: UserInfoSchema,
    protocol_version: z.number().int(),
    capabilities: z.array(z.string()),
    server_name: z.string(),
    heartbeat_interval: z.number(),
    connection_timeout: z.number(),
    resume_token: z.string(),
    /** True when this CONNECT took over a session that had dropped. */
    resumed: z.boolean(),
  }),
  DISCONNECT: ok,
  HEARTBEAT: z.object({ server_time: z.number() }),
  USER_LIST: z.object({ users: z.array(UserInfoSchema) }),
  ROOM_CREATE: z.object({ room: RoomInfoSchema }),
  ROOM_JOIN: z.object({
    room: RoomInfoSchema,
    participants: z.array(UserInfoSchema),
    already_joined: z.boolean(),
    /** How to reach the media plane (absent from a server without one). */
    media: MediaGrantSchema.optional(),
  }),
  ROOM_LEAVE: ok,
  ROOM_LIST: z.object({ rooms: z.array(RoomInfoSchema) }),
  ROOM_DELETE: ok,
  CHAT_MESSAGE: z.object({
    chat_id: z.string(),
    seq: z.number().int(),
    timestamp: z.number(),
    delivered_to: z.number().int(),
    /** For a private message: the recipient's user_id, however it was named. */
    recipient: z.string().nullable(),
  }),
  CHAT_HISTORY: z.object({ room_id: z.string(), messages: z.array(ChatEntrySchema) }),
  VIDEO_START: z.object({ user: UserInfoSchema }),
  VIDEO_STOP: z.object({ user: UserInfoSchema }),
  AUDIO_START: z.object({ user: UserInfoSchema }),
  AUDIO_STOP: z.object({ user: UserInfoSchema }),
  SCREEN_SHARE: z.object({ user: UserInfoSchema }),
  RAISE_HAND: z.object({ user: UserInfoSchema }),
  LOWER_HAND: z.object({ user: UserInfoSchema }),
  REACTION: ok,
  MUTE_USER: z.object({ user: UserInfoSchema }),
  UNMUTE_USER: z.object({ user: UserInfoSchema }),
  MUTE_ALL: z.object({ muted: z.array(z.string()) }),
  KICK_USER: ok,
  ROOM_LOCK: z.object({ room: RoomInfoSchema }),
  ROOM_UNLOCK: z.object({ room: RoomInfoSchema }),
  PROMOTE_USER: z.object({ user: UserInfoSchema }),
  DEMOTE_USER: z.object({ user: UserInfoSchema }),
  TRANSFER_HOST: z.object({ room: RoomInfoSchema }),
  END_MEETING: ok,
  STOP_VIDEO: z.object({ user: UserInfoSchema }),
  MEDIA_SUBSCRIBE: z.object({ user_id: z.string(), kind: z.string(), paused: z.boolean() }),
  FILE_UPLOAD_START: z.object({
    upload_id: z.string(),
    /** Single-use; give it in OPEN on the file server within expires_in seconds. */
    ticket: z.string(),
    /** The file server's TCP port. */
    port: z.number().int(),
    chunk_size: z.number().int(),
    /** The name the file will be listed under. */
    name: z.string(),
    size: z.number().int(),
    expires_in: z.number(),
  }),
  FILE_DOWNLOAD_REQUEST: z.object({ ticket: z.string(), port: z.number().int(), file: FileInfoSchema, expires_in: z.number() }),
  FILE_LIST: z.object({ room_id: z.string(), files: z.array(FileInfoSchema) }),
  FILE_DELETE: z.object({ file_id: z.string(), message: z.string() }),
} as const satisfies Record<RequestType, z.ZodType>;

export type ResponseData<T extends RequestType> = z.output<(typeof RESPONSE_SCHEMAS)[T]>;

// ---------------------------------------------------------------- pushes (server -> client)

const userRef = z.object({ user_id: z.string(), username: z.string() });

/** Data of each message the server sends on its own (not as a reply). */
export const PUSH_SCHEMAS = {
  /** A user came online (room_id null) or joined the room in the envelope's room_id: the user object. */
  USER_JOIN: UserInfoSchema,
  /** A user left the room in room_id, or went offline (room_id null). */
  USER_LEAVE: z.object({ user_id: z.string(), username: z.string(), reason: z.string() }),
  USER_LIST: z.object({ users: z.array(UserInfoSchema) }),
  /** A user's state changed (media, hand, mute, role). */
  USER_UPDATE: UserInfoSchema,
  ROOM_LIST: z.object({ rooms: z.array(RoomInfoSchema) }),
  /** The room's settings changed (lock, host, recording); `change` names what. */
  ROOM_UPDATE: z.object({ room: RoomInfoSchema, change: z.string() }),
  CHAT_MESSAGE: ChatEntrySchema,
  CHAT_HISTORY: z.object({ room_id: z.string(), messages: z.array(ChatEntrySchema) }),
  REACTION: z.object({ user_id: z.string(), username: z.string(), reaction: z.string() }),
  /** To the muted user: a host muted you (by = who). */
  MUTE_USER: z.object({ user_id: z.string(), by: userRef }),
  /** To the user: a host lifted the mute and asks you to unmute. */
  UNMUTE_USER: z.object({ user_id: z.string(), by: userRef }),
  /** To the kicked user. */
  KICK_USER: z.object({ user_id: z.string(), room_id: z.string(), by: userRef, reason: z.string() }),
  ROLE_CHANGE: z.object({
    user_id: z.string(),
    username: z.string(),
    role: z.enum(ROLES),
    previous_role: z.enum(ROLES).nullable(),
    /** Who made the change; null when the server handed the host role over by itself. */
    by: userRef.nullable(),
    reason: z.string(),
  }),
  END_MEETING: z.object({ room_id: z.string(), by: userRef.nullable() }),
  ROOM_DELETE: z.object({ room_id: z.string(), by: userRef.nullable() }),
  /** A room member turned the camera on: its frames arrive with this stream_id on the video port. */
  VIDEO_START: z.object({ user_id: z.string(), username: z.string(), stream_id: z.number().int() }),
  /** A room member's camera went off (by = the host who stopped it, or null). */
  VIDEO_STOP: z.object({ user_id: z.string(), username: z.string(), stream_id: z.number().int(), by: userRef.nullable() }),
  /** A room member started (active) or stopped sharing a screen (on the screen port). */
  SCREEN_SHARE: z.object({
    user_id: z.string(),
    username: z.string(),
    stream_id: z.number().int(),
    active: z.boolean(),
    by: userRef.nullable(),
  }),
  /** To the user whose camera or screen a host stopped. */
  STOP_VIDEO: z.object({ user_id: z.string(), kind: z.enum(['video', 'screen']), by: userRef }),
  /**
   * The room's files (newest last), pushed on join and whenever one is added, deleted or
   * expires; `change` says what happened (absent on join).
   */
  FILE_LIST: z.object({
    room_id: z.string(),
    files: z.array(FileInfoSchema),
    change: z
      .object({
        kind: z.enum(['added', 'deleted', 'expired']),
        file: FileInfoSchema,
        by: userRef.nullable(),
      })
      .optional(),
  }),
  /**
   * The room's active (dominant) speaker changed, decided by the relay from the audio
   * levels in the media headers; also sent to a user who joins a room that has one.
   * user_id null: nobody has spoken yet (or the speaker left and nobody else speaks).
   */
  ACTIVE_SPEAKER: z.object({
    room_id: z.string(),
    user_id: z.string().nullable(),
    username: z.string().nullable(),
    /** The speaker's recent audio level in -dBov (0 loudest, 127 silence). */
    level: z.number().int(),
  }),
  /** The server is closing this connection; `reason` says why, `reconnect` whether to come back. */
  DISCONNECT: z.object({ reason: z.string(), code: z.string().optional(), reconnect: z.boolean() }),
} as const;

export type PushType = keyof typeof PUSH_SCHEMAS;
export type PushData<T extends PushType> = z.output<(typeof PUSH_SCHEMAS)[T]>;

export const ErrorDataSchema = z.object({
  code: z.string(),
  message: z.string(),
  hint: z.string().optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type ErrorData = z.infer<typeof ErrorDataSchema>;

// ---------------------------------------------------------------- helpers

/** Seconds since the epoch, as a float, as the original's timestamps are. */
export function nowSeconds(): number {
  return Date.now() / 1000;
}

export { PROTOCOL_VERSION };

/**
 * Control characters, line/paragraph separators, the BOM, and bidirectional
 * overrides/isolates (which can make one name look like another). Joiners
 * (U+200C/U+200D) stay allowed: emoji sequences and Persian words need them.
 */
export const INVISIBLE_OR_CONTROL_CLASS = '[\\p{Cc}\\u2028\\u2029\\uFEFF\\u061C\\u200E\\u200F\\u202A-\\u202E\\u2066-\\u2069]';
const INVISIBLE_OR_CONTROL = new RegExp(INVISIBLE_OR_CONTROL_CLASS, 'u');

/** Why a username is not acceptable, or null when it is. */
export function usernameProblem(name: string): string | null {
  if (name.length === 0 || name.trim().length === 0) return 'is empty';
  if (name !== name.trim()) return 'starts or ends with spaces';
  if ([...name].length > LIMITS.maxUsernameLength) return `is longer than ${LIMITS.maxUsernameLength} characters`;
  if (INVISIBLE_OR_CONTROL.test(name)) return 'contains control characters';
  return null;
}

/** Why a room name is not acceptable, or null when it is. */
export function roomNameProblem(name: string): string | null {
  if (name.trim().length === 0) return 'is empty';
  if (name !== name.trim()) return 'starts or ends with spaces';
  if ([...name].length > LIMITS.maxRoomNameLength) return `is longer than ${LIMITS.maxRoomNameLength} characters`;
  if (INVISIBLE_OR_CONTROL.test(name)) return 'contains control characters';
  return null;
}
