/**
 * The one registry of error codes. Every ERROR the server sends and every error the
 * client library raises carries one of these codes. Codes are stable: never rename
 * or reuse one; add new ones. docs/PROTOCOL.md lists them all (a test checks that
 * each code is used in the code base and documented).
 *
 * `message` is a template: `{name}` is replaced from the error's details.
 * `hint` tells the user what to do next.
 * `scope` says who produces it: 'wire' codes are sent by the server in ERROR on the
 * control connection, 'file' codes by the file server in its ERROR (or NACK) frame,
 * 'local' codes are raised by the client library without a server reply.
 */
export interface ErrorSpec {
  message: string;
  hint: string;
  scope: 'wire' | 'file' | 'local';
  /** The server closes the control connection after sending this error. */
  fatal?: boolean;
}

const spec = <T extends Record<string, ErrorSpec>>(t: T) => t;

export const ERROR_CODES = spec({
  // --- framing and envelope (server side of TCP 8888) ---
  FRAME_TOO_LARGE: {
    message: 'Frame of {size} bytes is larger than the limit of {limit} bytes',
    hint: 'Send smaller messages; files go through the file server, not the control connection.',
    scope: 'wire',
    fatal: true,
  },
  FRAME_INVALID_UTF8: {
    message: 'Frame body is not valid UTF-8',
    hint: 'Encode the JSON body as UTF-8.',
    scope: 'wire',
  },
  FRAME_INVALID_JSON: {
    message: 'Frame body is not valid JSON: {reason}',
    hint: 'Send one JSON object per frame.',
    scope: 'wire',
  },
  FRAME_TOO_DEEP: {
    message: 'JSON nesting depth exceeds the limit of {limit}',
    hint: 'Flatten the payload; no message type needs deep nesting.',
    scope: 'wire',
  },
  FRAME_TRUNCATED: {
    message: 'Connection closed in the middle of a frame ({have} of {need} bytes)',
    hint: 'Send the whole frame before closing the connection.',
    scope: 'local',
  },
  INVALID_ENVELOPE: {
    message: 'Message is not a valid envelope: {reason}',
    hint: 'Send an object with type, data, sender, recipient, room_id, timestamp and message_id (docs/PROTOCOL.md).',
    scope: 'wire',
  },
  UNKNOWN_MESSAGE_TYPE: {
    message: 'Unknown message type "{type}"',
    hint: 'Use one of the message types listed in docs/PROTOCOL.md.',
    scope: 'wire',
  },
  INVALID_PAYLOAD: {
    message: 'Invalid data for {type}: {reason}',
    hint: 'Check the payload fields of this message type in docs/PROTOCOL.md.',
    scope: 'wire',
  },
  NOT_A_REQUEST: {
    message: '{type} is sent by the server only',
    hint: 'Clients do not send this message type.',
    scope: 'wire',
  },
  NOT_SUPPORTED: {
    message: '{type} is not handled on the control connection by this server: {why}',
    hint: 'Media frames travel on the UDP media ports and file bytes on the file server port (ask for a ticket with FILE_UPLOAD_START or FILE_DOWNLOAD_REQUEST); recording is not available on this server yet.',
    scope: 'wire',
  },
  // --- sessions ---
  NOT_CONNECTED: {
    message: 'Send CONNECT before {type}',
    hint: 'Start every connection with CONNECT {username}.',
    scope: 'wire',
  },
  ALREADY_CONNECTED: {
    message: 'This connection is already signed in as {username}',
    hint: 'Open a new connection to sign in as someone else.',
    scope: 'wire',
  },
  INVALID_USERNAME: {
    message: 'Username {reason}',
    hint: 'Choose a name of 1 to 32 printable characters.',
    scope: 'wire',
  },
  USERNAME_TAKEN: {
    message: 'The name "{username}" is already in use on this server',
    hint: 'Pick another name, or wait until the other session with this name leaves.',
    scope: 'wire',
  },
  SERVER_PASSWORD_REQUIRED: {
    message: 'This server needs a password',
    hint: 'Connect again with the server password (--password on the CLI).',
    scope: 'wire',
  },
  WRONG_SERVER_PASSWORD: {
    message: 'Wrong server password',
    hint: 'Ask the person who runs the server for the password.',
    scope: 'wire',
  },
  WRONG_ADMIN_PASSWORD: {
    message: 'Wrong admin password',
    hint: 'Connect without an admin password, or ask the person who runs the server for it.',
    scope: 'wire',
  },
  UNSUPPORTED_PROTOCOL_VERSION: {
    message: 'Protocol version {version} is not supported; this server speaks version {supported}',
    hint: 'Update the client to a version that speaks this server\'s protocol.',
    scope: 'wire',
    fatal: true,
  },
  HEARTBEAT_TIMEOUT: {
    message: 'No message for {seconds} s; the connection is considered dead',
    hint: 'Send HEARTBEAT every few seconds; check the network between client and server.',
    scope: 'wire',
    fatal: true,
  },
  // Never reaches the slow peer itself (its socket is full); others see it as USER_LEAVE's reason.
  SLOW_CONSUMER: {
    message: 'The connection fell {bytes} bytes behind and was closed',
    hint: 'Read from the socket promptly; reconnect to catch up.',
    scope: 'wire',
    fatal: true,
  },
  SESSION_REPLACED: {
    message: 'This session was taken over by a new connection of {username}',
    hint: 'Nothing to do: you are connected from the newer connection.',
    scope: 'wire',
    fatal: true,
  },
  SERVER_SHUTTING_DOWN: {
    message: 'The server is shutting down',
    hint: 'Wait for the server to come back; the client reconnects by itself.',
    scope: 'wire',
    fatal: true,
  },
  LISTENERS_STOPPED: {
    message: "The server's listeners were stopped by its operator",
    hint: 'Wait: the client reconnects by itself when they start again; if the server moved to another address or port, connect there.',
    scope: 'wire',
    fatal: true,
  },
  RATE_LIMITED: {
    message: 'Too many {what}; limit is {limit} per second',
    hint: 'Slow down and send again in a moment.',
    scope: 'wire',
  },
  INTERNAL_ERROR: {
    message: 'Internal server error while handling {type}',
    hint: 'Try again; if it keeps happening, send the server log to whoever runs the server.',
    scope: 'wire',
  },
  // --- rooms ---
  TOO_MANY_ROOMS: {
    message: 'This server already has {limit} rooms',
    hint: 'Join an existing room, or ask an admin to delete rooms that are no longer used.',
    scope: 'wire',
  },
  ROOM_NOT_FOUND: {
    message: 'No room with id {room_id}',
    hint: 'List the rooms (/rooms) and use one of their ids.',
    scope: 'wire',
  },
  INVALID_ROOM_NAME: {
    message: 'Room name {reason}',
    hint: 'Choose a name of 1 to 64 printable characters.',
    scope: 'wire',
  },
  ROOM_PASSWORD_REQUIRED: {
    message: 'Room "{room_name}" is private and needs a password',
    hint: 'Join again with the room password.',
    scope: 'wire',
  },
  WRONG_ROOM_PASSWORD: {
    message: 'Wrong password for room "{room_name}"',
    hint: 'Ask the room\'s host for the password.',
    scope: 'wire',
  },
  ROOM_FULL: {
    message: 'Room "{room_name}" is full ({max} participants)',
    hint: 'Wait until someone leaves, or ask the host to raise the capacity.',
    scope: 'wire',
  },
  ROOM_LOCKED: {
    message: 'Room "{room_name}" is locked',
    hint: 'Ask the host to unlock the room.',
    scope: 'wire',
  },
  BANNED_FROM_ROOM: {
    message: 'You were removed from "{room_name}" and cannot rejoin this meeting',
    hint: 'Ask the host to end the meeting or to start a new one.',
    scope: 'wire',
  },
  NOT_IN_ROOM: {
    message: 'You are not in a room',
    hint: 'Join a room first (/join).',
    scope: 'wire',
  },
  // --- people and permissions ---
  USER_NOT_FOUND: {
    message: 'No user {user}',
    hint: 'List the users (/users) and use one of their names.',
    scope: 'wire',
  },
  TARGET_NOT_IN_ROOM: {
    message: '{username} is not in your room',
    hint: 'Host actions apply to people in the same room.',
    scope: 'wire',
  },
  PERMISSION_DENIED: {
    message: 'Only {needed} can {action}',
    hint: 'Ask the host of the room.',
    scope: 'wire',
  },
  CANNOT_TARGET_SELF: {
    message: 'You cannot {action} yourself',
    hint: 'Choose someone else.',
    scope: 'wire',
  },
  MUTED_BY_HOST: {
    message: 'The host has muted you',
    hint: 'Raise your hand and ask the host to let you speak.',
    scope: 'wire',
  },
  INVALID_RECIPIENT: {
    message: 'Private message recipient {recipient} is not online',
    hint: 'List the users (/users) and pick someone online.',
    scope: 'wire',
  },
  // --- files (control connection) ---
  FILE_TOO_LARGE: {
    message: 'File of {size} bytes is larger than the limit of {limit} bytes',
    hint: 'Share a smaller file, or ask whoever runs the server to raise --max-file-size.',
    scope: 'wire',
  },
  QUOTA_EXCEEDED: {
    message: 'Storing {size} more bytes would exceed {what} of {limit} bytes ({used} bytes used)',
    hint: 'Delete files that are no longer needed (/files, /delete ID), or ask whoever runs the server to raise the quota.',
    scope: 'wire',
  },
  DISK_FULL: {
    message: 'The server has no room for the file: {reason}',
    hint: 'Ask whoever runs the server to free disk space, then upload again.',
    scope: 'wire',
  },
  TOO_MANY_FILES: {
    message: 'This room already holds {limit} files',
    hint: 'Delete files that are no longer needed (/delete ID) before sharing more.',
    scope: 'wire',
  },
  FILE_NOT_FOUND: {
    message: 'No file {file_id} in your room',
    hint: 'List the room\'s files (/files) and use one of their ids.',
    scope: 'wire',
  },
  UPLOAD_NOT_FOUND: {
    message: 'No partial upload {upload_id} to resume',
    hint: 'Upload the file again from the start; partial uploads are kept for a limited time.',
    scope: 'wire',
  },
  // --- file server (TCP file port) ---
  TICKET_INVALID: {
    message: 'File server ticket refused: {reason}',
    hint: 'Ask for a new ticket with FILE_UPLOAD_START or FILE_DOWNLOAD_REQUEST on the control connection; a ticket works once, within a minute.',
    scope: 'file',
  },
  FILE_FRAME_INVALID: {
    message: 'Bad file server frame: {reason}',
    hint: 'Follow the file server framing in docs/PROTOCOL.md; the transfer connection is closed.',
    scope: 'file',
  },
  CHUNK_MD5_MISMATCH: {
    message: 'Chunk at offset {offset} does not match its MD5',
    hint: 'Nothing to do: the chunk is sent again from that offset.',
    scope: 'file',
  },
  FILE_MD5_MISMATCH: {
    message: 'The file does not match its MD5 (expected {expected}, got {actual})',
    hint: 'Transfer the file again; if it keeps failing, the file may have changed while it was read.',
    scope: 'file',
  },
  TRANSFER_TIMEOUT: {
    message: 'Nothing arrived for {seconds} s on the file transfer',
    hint: 'The client resumes by itself; check the network between client and server.',
    scope: 'file',
  },
  FILE_SERVER_BUSY: {
    message: 'The file server already has {limit} connections open',
    hint: 'Try again in a moment.',
    scope: 'file',
  },
  // --- raised by the client library itself ---
  LOCAL_FILE_ERROR: {
    message: 'Cannot {action} {path}: {reason}',
    hint: 'Check the path and its permissions, and that the disk has room.',
    scope: 'local',
  },
  TRANSFER_FAILED: {
    message: '{op} of "{name}" failed after {attempts} attempts: {reason}',
    hint: 'Check that the server\'s file port ({port}, TCP) is reachable from here, then try again.',
    scope: 'local',
  },
  MEDIA_UNREACHABLE: {
    message: 'The media relay at {host} did not answer on UDP port(s) {ports}',
    hint: 'Video and audio need the UDP media ports (8889-8892 by default) open between you and the server: check the firewall on both machines.',
    scope: 'local',
  },
  CAPTURE_FAILED: {
    message: 'Capture from {source} stopped: {reason}',
    hint: 'Check that the device exists and no other program holds it (for a camera: ls /dev/video*; for a screen: the DISPLAY is right); it is retried automatically.',
    scope: 'local',
  },
  AUDIO_UNAVAILABLE: {
    message: 'No audio system: {reason}',
    hint: 'Install PulseAudio (or PipeWire with pipewire-pulse) and the ALSA pulse plugin (Debian: pulseaudio libasound2-plugins; npm run setup as root installs them), or start with --mic none --speaker none.',
    scope: 'local',
  },
  AUDIO_DEVICE_NOT_FOUND: {
    message: 'No {dir} device matches "{spec}"; available: {available}',
    hint: 'Pick a device from --list-devices by id or name, or use --mic none / --speaker none.',
    scope: 'local',
  },
  AUDIO_DEVICE_AMBIGUOUS: {
    message: '"{spec}" matches several {dir} devices: {candidates}',
    hint: 'Give the device id or its exact name (see --list-devices).',
    scope: 'local',
  },
  AUDIO_DEVICE_OPEN_FAILED: {
    message: 'Could not open {dir} device "{device}": {reason}',
    hint: 'Check that the device exists and is not held by another program; try --mic default / --speaker default, or --mic none / --speaker none.',
    scope: 'local',
  },
  AUDIO_DEVICE_LOST: {
    message: 'The {dir} {device} stopped: {reason}',
    hint: 'Plug the device back in or check PulseAudio; it is retried (every 2 s after the first few tries) and audio resumes by itself.',
    scope: 'local',
  },
  AUDIO_FILE_UNREADABLE: {
    message: 'Cannot use "{path}" as microphone: {reason}',
    hint: 'Give a readable audio file that ffmpeg can decode (wav, mp3, ogg, flac, ...), e.g. --mic file:voice.wav.',
    scope: 'local',
  },
  REQUEST_TIMEOUT: {
    message: 'No reply to {type} within {ms} ms',
    hint: 'Check that the server is running and reachable, then try again.',
    scope: 'local',
  },
  CONNECTION_LOST: {
    message: 'Connection to the server was lost before {type} was answered',
    hint: 'The client reconnects by itself; repeat the action once it is back.',
    scope: 'local',
  },
  CONNECT_FAILED: {
    message: 'Could not connect to {host}:{port}: {reason}',
    hint: 'Check the address and port, and that the server is running (npm start).',
    scope: 'local',
  },
  CLIENT_CLOSED: {
    message: 'The client was closed',
    hint: 'Create a new client to connect again.',
    scope: 'local',
  },
});

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** `{name}` replaced from `details`; a name without a value stays as it is. */
function fillTemplate(template: string, details: Record<string, unknown>): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => (k in details ? String(details[k]) : `{${k}}`));
}

export function formatErrorMessage(code: ErrorCode, details: Record<string, unknown> = {}): string {
  return fillTemplate(ERROR_CODES[code].message, details);
}

/** An error with a stable code from the registry. */
export class ProtocolError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, details: Record<string, unknown> = {}, message?: string) {
    super(message ?? formatErrorMessage(code, details));
    this.name = 'ProtocolError';
    this.code = code;
    // A hint may name a detail too ("the server's file port ({port})").
    this.hint = fillTemplate(ERROR_CODES[code].hint, details);
    this.details = details;
  }

  get fatal(): boolean {
    return (ERROR_CODES[this.code] as ErrorSpec).fatal === true;
  }

  /** The data of an ERROR message carrying this error. */
  toWire(): { code: ErrorCode; message: string; hint: string; details?: Record<string, unknown> } {
    const out: { code: ErrorCode; message: string; hint: string; details?: Record<string, unknown> } = {
      code: this.code,
      message: this.message,
      hint: this.hint,
    };
    if (Object.keys(this.details).length > 0) out.details = this.details;
    return out;
  }
}
