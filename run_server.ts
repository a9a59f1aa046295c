#!/usr/bin/env -S npx ts-node
/**
 * LAN Video Call server: `npx ts-node run_server.ts [options]` (see --help).
 */
import os from 'node:os';
import { parseServerArgs, serverHelp, UsageError } from './server/cli_options';
import { Server } from './server/main_server';
import { StoreError } from './server/store';

/** IPv4 addresses of this machine's non-loopback interfaces: what clients should connect to. */
export function lanAddresses(): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) out.push(a.address);
  }
  return out;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseServerArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(serverHelp() + '\n');
    return 0;
  }
  let server: Server;
  try {
    server = new Server(parsed.options);
  } catch (e) {
    if (e instanceof StoreError) {
      process.stderr.write(`error: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  try {
    await server.start();
  } catch (e) {
    if (e instanceof StoreError) {
      process.stderr.write(`error: ${e.message}\n`);
      await server.close();
      return 1;
    }
    const err = e as NodeJS.ErrnoException & { flag?: string; port?: number };
    const port = err.port ?? server.options.port;
    const flag = err.flag ?? '--port';
    // The control port and the file port are TCP; the media ports are UDP.
    const proto = !err.flag || err.flag === '--file-port' ? 'TCP' : 'UDP';
    const hint =
      err.code === 'EADDRINUSE'
        ? `${proto} port ${port} is already in use: is another server running? Stop it or choose another ${flag}.`
        : err.code === 'EACCES'
          ? `not allowed to listen on port ${port}: choose a port above 1023 with ${flag} or run with more privileges.`
          : err.code === 'EADDRNOTAVAIL'
            ? `address ${server.options.host} is not on this machine: choose another --host (0.0.0.0 for all).`
            : `check --host and ${flag}.`;
    process.stderr.write(`error: cannot listen on ${server.options.host}:${port} (${proto}): ${err.message}. ${hint}\n`);
    await server.close();
    return 1;
  }
  const o = server.options;
  const addrs = o.host === '0.0.0.0' ? lanAddresses() : [o.host];
  process.stdout.write(
    [
      `LAN Video Call server listening on ${o.host}:${server.port}`,
      `  clients connect to: ${addrs.length ? addrs.map((a) => `${a}:${server.port}`).join(', ') : `127.0.0.1:${server.port}`}`,
      `  media relay (UDP): ${server.media.describePorts()}`,
      `  file server (TCP): port ${server.files.port}, files in ${server.files.filesDir}`,
      `  data: ${server.databaseFile}`,
      `  server password: ${o.serverPassword ? 'set' : 'none'}; admin: ${o.adminPassword ? 'enabled' : 'disabled (set --admin-password)'}`,
      '  stop with Ctrl+C',
      '',
    ].join('\n'),
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        process.stderr.write(`${signal} again: exiting without waiting\n`);
        resolve(1);
        return;
      }
      stopping = true;
      process.stdout.write(`${signal}: shutting down, telling clients...\n`);
      server.close().then(
        () => resolve(0),
        (e: unknown) => {
          process.stderr.write(`error while shutting down: ${String(e)}\n`);
          resolve(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
