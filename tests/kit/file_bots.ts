/**
 * Test kit: file transfer bots in a process of their own, so a test can load the file
 * server without loading its own event loop (tests/integration/files_load.test.ts).
 *
 *   node -r ts-node/register tests/kit/file_bots.ts PORT ROOM_ID DEST_DIR SPEC_JSON
 *
 * SPEC_JSON: {"uploads": [PATH, ...], "downloads": [FILE_ID, ...]}. One client per
 * transfer signs in (up-N, down-N) and joins the room; then it prints `ready`, waits
 * for a line `go` on stdin, runs every transfer at once, prints one line
 * `done {"ms": .., "uploads": [FileInfo], "downloads": [PATH]}` and exits 0 (1 on a
 * failure, with the error on stderr).
 */
import readline from 'node:readline';
import { Client } from '../../client/main_client';
import { FileClient } from '../../client/file_client';

async function main(): Promise<void> {
  const [port, roomId, dest, specJson] = process.argv.slice(2);
  const spec = JSON.parse(specJson) as { uploads: string[]; downloads: string[] };
  const join = async (name: string) => {
    const c = new Client({ host: '127.0.0.1', port: Number(port), username: name, reconnect: false, media: false, requestTimeoutMs: 20_000 });
    await c.connect();
    await c.joinRoom(roomId);
    return c;
  };
  const ups = await Promise.all(spec.uploads.map((_, i) => join(`up-${i}`)));
  const downs = await Promise.all(spec.downloads.map((_, i) => join(`down-${i}`)));
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (l) => {
      if (l.trim() === 'go') {
        rl.close();
        resolve();
      }
    });
  });
  const t0 = performance.now();
  const [uploads, downloads] = await Promise.all([
    Promise.all(spec.uploads.map((file, i) => new FileClient(ups[i]).upload(file))),
    Promise.all(spec.downloads.map((id, i) => new FileClient(downs[i], { downloadDir: dest }).download(id))),
  ]);
  const ms = performance.now() - t0;
  process.stdout.write(`done ${JSON.stringify({ ms, uploads, downloads: downloads.map((d) => d.path) })}\n`);
  await Promise.all([...ups, ...downs].map((c) => c.close()));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`file_bots: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
