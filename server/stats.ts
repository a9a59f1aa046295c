/**
 * The observer API: what the server monitor (and tests) may read of a running
 * server, as plain data, and the admin actions it may take. The monitor never
 * reaches into Server internals; it calls `server.snapshot()` about once a second,
 * listens to the server's events for an early refresh, and acts through
 * `server.consoleAction()` (the same handlers and authorization checks as an admin
 * client) and `stopListeners()` / `startListeners()` / `reconfigure()`.
 */
import type { RoomInfo, UserInfo } from '../shared/protocol/messages';
import type { FileServerStats } from './file_server';
import type { MediaStats } from './media_server';
import type { SessionCounters } from './session';

/**
 * stopped: no socket is bound (before start, after stopListeners, or after a failed start);
 * starting / stopping: in between; running: every listener is bound; closed: for good.
 */
export type ServerState = 'stopped' | 'starting' | 'running' | 'stopping' | 'closed';

/** Where the server listens: what `reconfigure()` changes (the `c` key of the monitor). */
export interface NetworkConfig {
  host: string;
  /** Control port (TCP). */
  port: number;
  videoPort: number;
  audioPort: number;
  screenPort: number;
  feedbackPort: number;
  /** File server port (TCP). */
  filePort: number;
}

/** Ports actually bound (0 asks the OS for one); null while stopped. */
export interface BoundPorts {
  control: number;
  video: number;
  audio: number;
  screen: number;
  feedback: number;
  file: number;
}

export interface MonitorUser extends UserInfo {
  room_name: string | null;
  /** Remote address of the control connection, host:port. */
  remote: string;
  /** Seconds since the epoch of sign-in. */
  connected_at: number;
}

export interface MonitorRoom extends RoomInfo {
  /** user_ids of the members, in join order. */
  members: string[];
}

export interface ServerSnapshot {
  /** Date.now() when taken: rates are differences between two snapshots. */
  time: number;
  status: {
    state: ServerState;
    server_name: string;
    /** Seconds since the epoch when the process's Server was created. */
    started_at: number;
    uptime_s: number;
    /** The configuration the listeners use (or will use at the next start). */
    network: NetworkConfig;
    bound: BoundPorts | null;
    /** Addresses clients should be given: the bind host, or every LAN IPv4 address for 0.0.0.0 (127.0.0.1 when there is none); never empty. */
    lan_addresses: string[];
    /** Why the last start failed, with what to do; null after a good start. */
    last_error: { message: string; hint: string } | null;
    data_dir: string;
    database: string;
  };
  control: SessionCounters & { errors: number; connections: number };
  users: MonitorUser[];
  rooms: MonitorRoom[];
  media: MediaStats;
  files: FileServerStats;
}

/**
 * What the monitor may do to users and rooms: each runs the same request handler an
 * admin client's request would, as the "server console" admin user.
 */
export const CONSOLE_ACTIONS = ['KICK_USER', 'MUTE_USER', 'UNMUTE_USER', 'ROOM_LOCK', 'ROOM_UNLOCK', 'END_MEETING'] as const;
export type ConsoleAction = (typeof CONSOLE_ACTIONS)[number];

/** The name shown to users for actions taken at the server's console. */
export const CONSOLE_USERNAME = 'server console';
