#!/usr/bin/env -S npx ts-node
/**
 * LAN Video Call command-line client: `npx ts-node run_client.ts --user NAME [options]`
 * (see --help). The commands and the printing live in client/cli.ts.
 */
import { cliHelp, CliUsageError, parseCliArgs, processIo, runCli, usesAudioDevices } from './client/cli';
import { divertNativeStdout } from './client/audio/native_stdout';

// Microphone and speaker each hold a libuv pool thread while open (naudiodon's
// blocking reads and writes); leave the default four to files and DNS.
process.env.UV_THREADPOOL_SIZE ??= '8';

/** Where our output goes: stdout, or its diverted copy once audio devices are in play. */
let out: NodeJS.WritableStream = process.stdout;

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
  // PortAudio's C code prints to descriptor 1: keep it out of our output (native_stdout.ts).
  const io = processIo();
  if (usesAudioDevices(parsed.options, io)) {
    const diverted = divertNativeStdout();
    if (diverted) io.stdout = out = diverted;
  }
  return runCli(parsed.options, io);
}

if (require.main === module) {
  main().then(
    // Let what is written reach the pipe before exiting.
    (code) => out.write('', () => process.stderr.write('', () => process.exit(code))),
    (e: unknown) => {
      process.stderr.write(`fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
