#!/usr/bin/env -S npx ts-node
/**
 * The server with its terminal dashboard, as the original's run_server_gui.py:
 * `npx ts-node run_server_gui.ts [options]` is `run_server.ts --monitor [options]`.
 */
import { main } from './run_server';

main(process.argv.slice(2), { monitor: true }).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
