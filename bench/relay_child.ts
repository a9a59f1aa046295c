/**
 * The relay side of bench/relay.ts, in a process of its own so that it gets one core
 * of the machine's two and the load generator the other (forked by lib.ts forkTs;
 * talks over the IPC channel).
 *
 *   relay_child.ts ours   the product's MediaServer (server/media_server.ts) on
 *                         127.0.0.1, four UDP ports picked by the kernel, log level
 *                         warn, everything else at its defaults (4 MiB socket
 *                         buffers, 2 MiB send-queue cap, 30 s registration TTL).
 *                         Driven directly: participants are added with
 *                         addParticipant() as the control plane would (no TCP, no
 *                         SQLite: that is not the relay's hot path), and the load
 *                         generator registers each participant's address with the
 *                         real HELLO / cookie / HELLO exchange, then keeps it alive.
 *   relay_child.ts bare   the control: one dgram socket and a fixed list of receiver
 *                         addresses given over IPC; every datagram is sent to every
 *                         address on the list except its source. No parsing, no
 *                         token, no registration, no counters. Its socket buffers
 *                         are asked for the same 4 MiB as ours (a kernel setting,
 *                         not work per packet), so only the per-packet work differs.
 *
 * Both relays listen on 127.0.0.1 and the load uses one port of each (ours: video).
 *
 * Commands (IPC; a command is a word, optionally followed by a space and JSON):
 *   `add [{userId, roomId, token}]`  (ours) adds participants; replies with their
 *                                    stream ids, in order, and the relay's ports.
 *   `receivers [port, ...]`          (bare) the fixed receiver list (127.0.0.1).
 *   `stats`   CPU time, event-loop utilization and stalls, clock, relay counters.
 *   `close`   closes the relay, then the process exits by itself (so --cpu-prof
 *             writes its profile). It also exits when the parent goes away.
 */
import dgram from 'node:dgram';
import { ipLiteralLookup } from '../shared/udp';
import { MediaServer } from '../server/media_server';
import { Logger } from '../shared/log';
import { tokenFromHex } from '../shared/protocol/media_packet';
import { serveChild, type ServedChild } from './lib';

/** Socket buffers asked of the kernel, the same as MediaServer's default. */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

async function startOurs(): Promise<ServedChild> {
  const media = new MediaServer({
    host: '127.0.0.1',
    ports: { video: 0, audio: 0, screen: 0, feedback: 0 },
    logger: Logger.create('warn'),
  });
  const ports = await media.start();
  return {
    port: ports.video,
    command: (cmd, arg) => {
      if (cmd !== 'add') throw new Error(`ours: unknown command ${cmd}`);
      const list = arg as { userId: string; roomId: string; token: string }[];
      const streamIds = list.map((p) =>
        media.addParticipant({ userId: p.userId, roomId: p.roomId, token: tokenFromHex(p.token), allow: { video: true, audio: true, screen: true } }),
      );
      return { streamIds, ports: media.ports };
    },
    counters: () => {
      const s = media.stats();
      let registered = 0;
      for (const p of s.participants) if (p.registered.video) registered++;
      return { ...s.totals, registered_video: registered, participants: s.participants.length };
    },
    close: () => media.close(),
  };
}

// ------------------------------------------------------------ the bare relay (the control)

async function startBare(): Promise<ServedChild> {
  // The same socket option as ours (no dns.lookup per send): the comparison is parsing and checks, not socket setup.
  const sock = dgram.createSocket({ type: 'udp4', lookup: ipLiteralLookup });
  let receivers: { port: number; address: string }[] = [];
  sock.on('message', (msg, from) => {
    for (const r of receivers) if (r.port !== from.port || r.address !== from.address) sock.send(msg, r.port, r.address);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      sock.off('error', reject);
      resolve();
    });
  });
  sock.setRecvBufferSize(SOCKET_BUFFER_BYTES);
  sock.setSendBufferSize(SOCKET_BUFFER_BYTES);
  return {
    port: sock.address().port,
    command: (cmd, arg) => {
      if (cmd !== 'receivers') throw new Error(`bare: unknown command ${cmd}`);
      receivers = (arg as number[]).map((port) => ({ port, address: '127.0.0.1' }));
      return { receivers: receivers.length };
    },
    counters: () => ({ receivers: receivers.length, send_queue_bytes: sock.getSendQueueSize() }),
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

serveChild('relay_child', () => {
  const mode = process.argv[2];
  if (mode !== 'ours' && mode !== 'bare') throw new Error(`usage: relay_child.ts ours|bare (got ${mode})`);
  return mode === 'ours' ? startOurs() : startBare();
});
