/**
 * Defaults shared by server and client. The first block mirrors the original
 * application's constants (../shared/ORIGINAL_PROTOCOL.md); each is an option
 * somewhere, these are only the values used when nobody says otherwise.
 */

export const DEFAULT_PORTS = Object.freeze({
  control: 8888, // TCP: length-prefixed JSON envelopes
  video: 8889, // UDP: camera video
  audio: 8890, // UDP: Opus audio
  screen: 8891, // UDP: screen frames
  feedback: 8892, // UDP: receiver reports
  file: 8891, // TCP: file server (TCP and UDP port spaces are separate)
});

export const DEFAULT_HOST = '0.0.0.0';

/** Bumped when a change is not backward compatible; see docs/PROTOCOL.md "Versioning". */
export const PROTOCOL_VERSION = 1;

/**
 * Capabilities this build of the server offers, announced in CONNECT's SUCCESS; a
 * client uses a feature only when the server lists it. A client lists its own in
 * CONNECT; the server records them (a later feature that changes what the server
 * sends will only do so for clients that list it).
 */
export const SERVER_CAPABILITIES = Object.freeze([
  'reply_to', // SUCCESS/ERROR/ACK carry the request's message_id as reply_to
  'error_codes', // ERROR carries a stable code and a hint
  'resume', // CONNECT with resume_token takes over a session that dropped
  'chat_history', // CHAT_HISTORY pushed on join and on request
  'private_chat', // CHAT_MESSAGE with an envelope recipient
  'hands', // RAISE_HAND / LOWER_HAND
  'reactions', // REACTION
  'host_controls', // MUTE_USER, UNMUTE_USER, MUTE_ALL, KICK_USER, ROOM_LOCK, ...
  'persistent_rooms', // ROOM_CREATE with persistent: true survives a restart
  'media_udp', // ROOM_JOIN grants a media token; camera, audio, screen and feedback travel on UDP
  'media_subscribe', // MEDIA_SUBSCRIBE pauses or resumes one participant's stream
  'stop_video', // STOP_VIDEO: a host turns someone's camera or screen share off
  'files', // FILE_UPLOAD_START / FILE_DOWNLOAD_REQUEST tickets for the file server, FILE_LIST, FILE_DELETE
]);

export const LIMITS = Object.freeze({
  /** Largest control frame body the decoder accepts (bytes). */
  maxFrameBytes: 1024 * 1024,
  /** Deepest JSON nesting the decoder accepts. */
  maxJsonDepth: 32,
  maxUsernameLength: 32,
  maxRoomNameLength: 64,
  maxRoomPasswordLength: 128,
  maxChatLength: 4000,
  maxReactionLength: 16,
  maxRoomSettingsBytes: 4096,
  /** Most messages one CHAT_HISTORY request returns. */
  maxHistoryPage: 200,
  /** Largest frame a client accepts: every server message stays well below it by the limits above. */
  maxInboundFrameBytes: 16 * 1024 * 1024,
  /** Bytes queued to one slow control connection before the server drops it. */
  maxSendBufferBytes: 8 * 1024 * 1024,
  /** Files one room's list holds at most (keeps FILE_LIST well under a control frame). */
  maxFilesPerRoom: 1000,
  /** A file name as given (before it is made safe), in characters. */
  maxFileNameInput: 4096,
});

export const DEFAULTS = Object.freeze({
  heartbeatIntervalMs: 5_000,
  connectionTimeoutMs: 30_000,
  reconnectAttempts: 3,
  reconnectBaseDelayMs: 1_000,
  reconnectMaxDelayMs: 8_000,
  requestTimeoutMs: 10_000,
  maxParticipants: 50,
  /** Rooms on one server (keeps ROOM_LIST bounded). */
  maxRooms: 500,
  historyLimit: 100,
  /** Per-user chat token bucket: sustained messages per second and burst size. */
  chatRatePerSecond: 5,
  chatBurst: 20,
  /** A temporary room nobody ever joined is removed after this long. */
  emptyRoomGraceMs: 5 * 60_000,
  /** A dropped connection keeps the user's place this long for a resume. */
  resumeGraceMs: 10_000,
  maxFileBytes: 100 * 1024 * 1024,
  files: {
    /** Bytes per chunk of a new upload (each chunk carries its own MD5). */
    chunkSize: 256 * 1024,
    /** Stored bytes per user (by name), completed files plus uploads under way. */
    userQuotaBytes: 1024 * 1024 * 1024,
    /** Stored bytes on the whole server. */
    storageQuotaBytes: 10 * 1024 * 1024 * 1024,
    /** Completed files are removed this long after upload; 0 keeps them until deleted. */
    retentionMs: 7 * 24 * 3600_000,
    /** A partial upload nobody resumed is removed after this long without progress. */
    partialRetentionMs: 3600_000,
    /** A ticket must be used within this long, once. */
    ticketTtlMs: 60_000,
    /** A transfer connection silent this long is closed (a partial upload stays for resuming). */
    idleTimeoutMs: 30_000,
    /** Open connections to the file server at most. */
    maxConnections: 256,
  },
  video: { width: 640, height: 480, fps: 30, jpegQuality: 80 },
  dataDir: './data',
});
