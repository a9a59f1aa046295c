/**
 * Test kit: a real Server on a free loopback port with its own temporary data
 * directory (a real SQLite file), and real clients connected to it. Everything
 * made here is closed by `closeAll()` (call it in afterEach).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Server, type ServerOptions } from '../../server/main_server';
import { expect } from 'vitest';
import { Client, type ClientEvents, type ClientOptions } from '../../client/main_client';
import { MT, type RoomInfo } from '../../shared/protocol/messages';

export function tmpDataDir(prefix = 'lanvc-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Free media ports: parallel tests must not collide on 8889-8892. */
export const MEDIA_PORTS_ANY = { videoPort: 0, audioPort: 0, screenPort: 0, feedbackPort: 0 } as const;
/** Every port but the control port free: media (UDP 8889-8892) and the file server (TCP 8891). */
export const PORTS_ANY = { ...MEDIA_PORTS_ANY, filePort: 0 } as const;

export class Harness {
  readonly servers: Server[] = [];
  readonly clients: Client[] = [];
  readonly dirs: string[] = [];

  /** A started server on 127.0.0.1:0 with a fresh data directory unless one is given. */
  async server(options: ServerOptions = {}): Promise<Server> {
    const dataDir = options.dataDir ?? tmpDataDir();
    if (!options.dataDir) this.dirs.push(dataDir);
    const server = new Server({ ...PORTS_ANY, host: '127.0.0.1', port: 0, logLevel: 'warn', listPushDelayMs: 20, ...options, dataDir });
    await server.start();
    this.servers.push(server);
    return server;
  }

  /** A connected client of `server`, signed in as `username`. */
  async client(server: Server | number, username: string, options: Partial<ClientOptions> = {}): Promise<Client> {
    const port = typeof server === 'number' ? server : server.port;
    const client = new Client({ host: '127.0.0.1', port, username, reconnect: false, requestTimeoutMs: 5000, ...options });
    this.clients.push(client);
    await client.connect();
    return client;
  }

  /**
   * A server, a room, and `names` connected and joined into it in order (the first
   * becomes host), once everyone has heard of everyone in the room.
   */
  async meeting(
    names: string[],
    o: { persistent?: boolean; server?: ServerOptions; roomName?: string } = {},
  ): Promise<{ server: Server; room: RoomInfo; clients: Client[] }> {
    const server = await this.server(o.server);
    const clients: Client[] = [];
    for (const n of names) clients.push(await this.client(server, n));
    const room = await clients[0].createRoom({ name: o.roomName ?? 'Standup', persistent: o.persistent ?? false });
    for (const c of clients) await c.joinRoom(room.room_id);
    await waitUntil(
      () => clients.every((c) => clients.every((d) => c.users.get(d.userId!)?.room_id === room.room_id)),
      5000,
      'everyone sees everyone in the room',
    );
    return { server, room, clients };
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.clients.splice(0).map((c) => c.close().catch(() => undefined)));
    await Promise.all(this.servers.splice(0).map((s) => s.close().catch(() => undefined)));
    for (const d of this.dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  }
}

/** Resolves when `predicate` holds, polling every 10 ms; rejects after `timeoutMs`. */
export async function waitUntil(predicate: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Every emission of `event` on `c`, as argument lists, from now on. */
export function record<K extends keyof ClientEvents & string>(c: Client, event: K): ClientEvents[K][] {
  const out: ClientEvents[K][] = [];
  c.on(event, (...args: ClientEvents[K]) => out.push(args));
  return out;
}

/**
 * A HEARTBEAT round trip on each client: the server writes to a connection in order,
 * so once it is answered, everything pushed to that client before has arrived.
 */
export async function flush(...clients: Client[]): Promise<void> {
  await Promise.all(clients.map((c) => c.request(MT.HEARTBEAT, {})));
}

export async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ name: 'ProtocolError', code });
}
