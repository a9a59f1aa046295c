#!/usr/bin/env -S npx ts-node
/**
 * LAN Video Call server: `npx ts-node run_server.ts [options]` (see --help).
 */
import path from 'node:path';
import { parseServerArgs, serverHelp, UsageError } from './server/cli_options';
import { clientAddresses, describeListenError } from './server/listen';
import { Server } from './server/main_server';
import { StoreError } from './server/store';

/** Where the monitor writes the log while it owns the terminal. */
export const MONITOR_LOG_FILE = 'server.log';

export async function main(argv: string[] = process.argv.slice(2), opts: { monitor?: boolean } = {}): Promise<number> {
  let parsed;
  try {
    parsed = parseServerArgs(argv);
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
  const monitor = parsed.monitor || opts.monitor === true;
  if (monitor && !(process.stdin.isTTY && process.stdout.isTTY)) {
    process.stderr.write(
      'error: --monitor draws a dashboard and needs an interactive terminal, but stdin or stdout is not one. ' +
        'Run it in a terminal (or tmux/screen), or run without --monitor to get log lines on stderr.\n',
    );
    return 2;
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
  if (monitor) return runMonitor(server);
  try {
    await server.start();
  } catch (e) {
    if (e instanceof StoreError) {
      process.stderr.write(`error: ${e.message}\n`);
      await server.close();
      return 1;
    }
    const { message, hint } = describeListenError(e, server.options.host, server.options.port);
    process.stderr.write(`error: ${message}. ${hint}\n`);
    await server.close();
    return 1;
  }
  const o = server.options;
  const addrs = clientAddresses(o.host);
  process.stdout.write(
    [
      `LAN Video Call server listening on ${o.host}:${server.port}`,
      `  clients connect to: ${addrs.map((a) => `${a}:${server.port}`).join(', ')}`,
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

/**
 * The dashboard owns the terminal: log lines go to its panel and to DATA_DIR/server.log.
 * A listener that cannot bind does not end the process: the dashboard shows why, and
 * the operator changes the ports (c) or starts again (s).
 */
async function runMonitor(server: Server): Promise<number> {
  // Loaded only here: blessed is large and the plain server does not need it.
  const { ServerMonitor } = await import('./gui/server_gui');
  const monitor = new ServerMonitor({ server, logFile: path.join(path.resolve(server.options.dataDir), MONITOR_LOG_FILE) });
  // Ours before blessed's: its own SIGINT/SIGTERM/SIGQUIT handlers exit at once unless
  // the process has other listeners. A hangup (the ssh session dropped) shuts down
  // as gracefully as q does; the terminal is gone, so nothing is drawn.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGHUP'] as const) {
    process.on(signal, () => void monitor.quit({ terminalGone: signal === 'SIGHUP' }));
  }
  monitor.start();
  await server.startListeners().catch(() => undefined);
  return monitor.done;
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
