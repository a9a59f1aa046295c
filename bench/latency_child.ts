/**
 * The server side of bench/latency.ts, in a process of its own so that the relay's
 * event loop is not the one that also encodes, decodes and reassembles (forked by
 * lib.ts forkTs; talks over the IPC channel).
 *
 *   latency_child.ts   the product's Server on 127.0.0.1: TCP port 0 and the four UDP
 *                      media ports 0 (picked by the kernel), a fresh temporary data
 *                      directory, log level warn; everything else at its defaults.
 *
 * Commands (IPC): `stats` -> CPU time, event-loop utilization and stalls, clock, the
 * media relay's totals; `close` -> closes the server, then the process exits by
 * itself (so --cpu-prof writes its profile). It also exits when the parent goes away.
 */
import { serveBenchServer, serveChild } from './lib';

serveChild('latency_child', () => serveBenchServer('lanvc-bench-latency-'));
