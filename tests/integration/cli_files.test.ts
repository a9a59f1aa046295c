/**
 * The CLI's file commands in-process (runCli with piped streams) against a real Server:
 * /upload, /files, /download, /delete with their notes, what others see of it, --json
 * progress lines, and Ctrl+C during an upload cancelling it on the server.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { parseCliArgs, runCli, type CliIo } from '../../client/cli';
import { Harness, waitUntil } from '../kit/server';

const h = new Harness();
const dirs: string[] = [];
const sessions: { signal: (s: 'SIGINT') => void; exited: Promise<number> }[] = [];

afterEach(async () => {
  for (const s of sessions.splice(0)) {
    s.signal('SIGINT');
    await s.exited;
  }
  await h.closeAll();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-cli-files-'));
  dirs.push(d);
  return d;
}

/** runCli on piped streams (not a terminal): output collected, signals delivered by hand. */
function cli(args: string[]) {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const handlers = new Set<(s: 'SIGINT' | 'SIGTERM') => void>();
  const io: CliIo = {
    stdin,
    stdout,
    stderr,
    onSignal: (fn) => {
      handlers.add(fn);
      return () => handlers.delete(fn);
    },
    readFile: (f) => fs.readFileSync(f, 'utf8'),
  };
  const exited = runCli(parseCliArgs(args).options, io);
  const session = { signal: (s: 'SIGINT') => handlers.forEach((fn) => fn(s)), exited };
  sessions.push(session);
  return { ...session, out: () => out, err: () => err, stdout, type: (line: string) => stdin.write(line + '\n') };
}

function randomFile(file: string, size: number): string {
  const b = randomBytes(size);
  fs.writeFileSync(file, b);
  return createHash('md5').update(b).digest('hex');
}

describe('CLI file commands', { timeout: 30_000 }, () => {
  it('/upload, /files, /download and /delete, with progress notes; others see the room\'s file news', async () => {
    const { server } = await h.meeting(['bob'], { server: { filePort: 0 }, roomName: 'Standup' });
    const port = ['--server', '127.0.0.1', '--port', String(server.port), '--room', 'Standup'];
    const carol = cli(['--user', 'carol', ...port, '--exec', '/wait 60']);
    await waitUntil(() => /You joined "Standup"/.test(carol.out()), 10_000, 'carol in the room');

    const src = tmpDir();
    const dst = tmpDir();
    const file = path.join(src, 'my file.bin');
    const md5 = randomFile(file, 3_000_000);
    const alice = cli(['--user', 'alice', ...port, '--exec', `/upload "${file}"; /files; /download "my file.bin" ${dst}; /delete "my file.bin"; /quit`]);
    expect(await alice.exited).toBe(0);
    const out = alice.out();
    expect(alice.err()).toBe('');
    // Pipes get a note for each quarter reached (events come at most 10 a second, so a
    // fast transfer may skip some), always the last, then the outcome.
    const quarters = [...out.matchAll(/\* Uploading "my file\.bin": (\d+)% \(/g)].map((m) => Number(m[1]));
    expect(quarters.length).toBeGreaterThanOrEqual(1);
    expect(quarters.every((q, i) => q % 25 === 0 && (i === 0 || q > quarters[i - 1]))).toBe(true);
    expect(quarters[quarters.length - 1]).toBe(100);
    expect(out).toMatch(/\* You shared "my file\.bin" \(3\.0 MB[^)]*; id [0-9a-f]{8}, MD5 [0-9a-f]{32}\)/);
    expect(out).toMatch(/\* 1 file in "Standup" \(\/download ID to get one\):\n {4}[0-9a-f]{8} {2}my file\.bin {2}3\.0 MB {2}alice {2}\d\d:\d\d:\d\d\n/);
    expect(out).toContain(`* Saved "my file.bin" as ${path.join(dst, 'my file.bin')} (3.0 MB`);
    expect(out).toContain('* You deleted "my file.bin"');
    // Your own upload and delete are told once, by the command, not again by the push.
    expect(out).not.toMatch(/alice shared|alice deleted/);
    expect(createHash('md5').update(fs.readFileSync(path.join(dst, 'my file.bin'))).digest('hex')).toBe(md5);

    await waitUntil(() => /alice deleted "my file\.bin"/.test(carol.out()), 5000, 'carol told of the delete');
    const id = /\* You shared "my file\.bin" \(.*; id ([0-9a-f]{8})/.exec(out)![1];
    expect(carol.out()).toContain(`* alice shared "my file.bin" (3.0 MB, id ${id}): /download ${id}`);
  });

  it('--json prints progress lines (a few a second, the last at the size) and the files event', async () => {
    const { server } = await h.meeting(['bob'], { server: { filePort: 0 }, roomName: 'Standup' });
    const file = path.join(tmpDir(), 'data.bin');
    randomFile(file, 2_000_000);
    const alice = cli(['--user', 'alice', '--port', String(server.port), '--room', 'Standup', '--json', '--exec', `/upload ${file}; /quit`]);
    expect(await alice.exited).toBe(0);
    const lines = alice
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; command?: string; data: Record<string, unknown> | null });
    const progress = lines.filter((l) => l.event === 'progress').map((l) => l.data!);
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[progress.length - 1]).toMatchObject({ op: 'upload', name: 'data.bin', size: 2_000_000, done: 2_000_000, eta_s: 0 });
    const files = lines.filter((l) => l.event === 'files').map((l) => l.data as { change?: { kind: string } });
    expect(files.some((f) => f.change?.kind === 'added')).toBe(true);
    expect(lines.find((l) => l.event === 'reply' && l.command === 'upload')?.data).toMatchObject({ file: { name: 'data.bin', size: 2_000_000 } });
  });

  it('at the prompt a transfer runs in the background: chat typed after /upload goes out before the upload ends', async () => {
    const { server, clients } = await h.meeting(['bob'], { server: { filePort: 0 }, roomName: 'Standup' });
    const heard: string[] = [];
    clients[0].on('chat', (e) => heard.push(e.message));
    const file = path.join(tmpDir(), 'big.bin');
    randomFile(file, 64 * 1024 * 1024);
    const alice = cli(['--user', 'alice', '--server', '127.0.0.1', '--port', String(server.port), '--room', 'Standup']);
    await waitUntil(() => /You joined "Standup"/.test(alice.out()), 10_000, 'alice in the room');
    alice.type(`/upload ${file}`);
    alice.type('typed while uploading');
    await waitUntil(() => /You shared "big.bin"/.test(alice.out()), 20_000, 'the upload to finish');
    const out = alice.out();
    expect(out).toMatch(/Uploading in the background/);
    // The chat line was sent (and echoed) before the upload's end was printed.
    expect(out.indexOf('alice: typed while uploading')).toBeGreaterThan(-1);
    expect(out.indexOf('alice: typed while uploading')).toBeLessThan(out.indexOf('You shared "big.bin"'));
    expect(heard).toEqual(['typed while uploading']);
  });

  it('Ctrl+C during an upload cancels it on the server and exits 130', async () => {
    const { server, clients } = await h.meeting(['bob'], { server: { filePort: 0 }, roomName: 'Standup' });
    const file = path.join(tmpDir(), 'big.bin');
    randomFile(file, 60_000_000);
    const alice = cli(['--user', 'alice', '--port', String(server.port), '--room', 'Standup', '--exec', `/upload ${file}; /quit`]);
    // Interrupt as soon as a quarter is through.
    alice.stdout.on('data', (d: Buffer) => {
      if (/Uploading "big\.bin": 25%/.test(d.toString())) alice.signal('SIGINT');
    });
    expect(await alice.exited).toBe(130);
    expect(alice.out()).not.toContain('You shared');
    expect(alice.err()).toContain('Transfer cancelled');
    await waitUntil(() => server.fileStats().uploads.length === 0, 5000, 'the partial upload removed');
    expect(await clients[0].listFiles()).toEqual([]);
  });
});
