#!/usr/bin/env -S npx ts-node
/**
 * LAN Video Call command-line client: `npx ts-node run_client.ts --user NAME [options]`
 * (see --help). The commands and the printing live in client/cli.ts.
 */
import { cliHelp, CliUsageError, parseCliArgs, runCli } from './client/cli';

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseCliArgs(process.argv.slice(2), process.env);
  } catch (e) {
    if (e instanceof CliUsageError) {
      process.stderr.write(`error: ${e.message}\nrun with --help for usage\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(cliHelp() + '\n');
    return 0;
  }
  return runCli(parsed.options);
}

if (require.main === module) {
  main().then(
    // Let what is written reach the pipe before exiting.
    (code) => process.stdout.write('', () => process.stderr.write('', () => process.exit(code))),
    (e: unknown) => {
      process.stderr.write(`fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
