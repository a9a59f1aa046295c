/**
 * Where the server listens: the addresses to give to clients, the checks on a network
 * configuration (flags or the monitor's `c` form), and a listen failure said in words
 * an operator can act on. Shared by run_server.ts and the monitor.
 */
import os from 'node:os';
import type { NetworkConfig } from './stats';

/** IPv4 addresses of this machine's non-loopback interfaces: what clients should connect to. */
export function lanAddresses(): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) out.push(a.address);
  }
  return out;
}

/** The addresses to give to clients for a bind host. */
export function clientAddresses(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [host];
  const lan = lanAddresses();
  return lan.length ? lan : ['127.0.0.1'];
}

const PORT_FIELDS = [
  ['port', '--port', 'tcp'],
  ['filePort', '--file-port', 'tcp'],
  ['videoPort', '--video-port', 'udp'],
  ['audioPort', '--audio-port', 'udp'],
  ['screenPort', '--screen-port', 'udp'],
  ['feedbackPort', '--feedback-port', 'udp'],
] as const;

/**
 * What is wrong with a network configuration, or null. Two listeners of one protocol
 * cannot share a port (0 asks the OS for a free one, so zeros never clash).
 */
export function networkConfigProblem(c: NetworkConfig): string | null {
  if (typeof c.host !== 'string' || !c.host.trim() || /\s/.test(c.host)) {
    return 'the bind address must be an address of this machine such as 0.0.0.0 (all) or 192.168.1.10';
  }
  const seen = new Map<string, string>();
  for (const [key, flag, proto] of PORT_FIELDS) {
    const v = c[key];
    if (!Number.isInteger(v) || v < 0 || v > 65535) return `${flag} must be a port 0-65535, not "${String(v)}"`;
    if (v === 0) continue;
    const other = seen.get(`${proto}:${v}`);
    if (other) return `${flag} and ${other} are both ${proto.toUpperCase()} port ${v}: give each its own`;
    seen.set(`${proto}:${v}`, flag);
  }
  return null;
}

/** A listen error as run_server.ts and the monitor show it: what failed, and what to do. */
export function describeListenError(e: unknown, host: string, controlPort: number): { message: string; hint: string } {
  const err = e as NodeJS.ErrnoException & { flag?: string; port?: number };
  const port = err.port ?? controlPort;
  const flag = err.flag ?? '--port';
  // The control port and the file port are TCP; the media ports are UDP.
  const proto = !err.flag || err.flag === '--file-port' ? 'TCP' : 'UDP';
  const hint =
    err.code === 'EADDRINUSE'
      ? `${proto} port ${port} is already in use: is another server running? Stop it or choose another ${flag}.`
      : err.code === 'EACCES'
        ? `not allowed to listen on port ${port}: choose a port above 1023 with ${flag} or run with more privileges.`
        : err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND'
          ? `address ${host} is not on this machine: choose another --host (0.0.0.0 for all).`
          : `check --host and ${flag}.`;
  return { message: `cannot listen on ${host}:${port} (${proto}): ${err.message}`, hint };
}
