/**
 * The server monitor as an operator uses it: `run_server.ts --monitor` in a real
 * terminal (tmux), typed at with send-keys and read with capture-pane, with real
 * run_client.ts processes connected to it.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connectRefused, freePort, killAll, runCli, runTs, type RunningProcess } from '../kit/processes';
import { tmpDataDir, waitUntil } from '../kit/server';
import { TmuxSession } from '../kit/tmux';

const procs: RunningProcess[] = [];
const sessions: TmuxSession[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const s of sessions.splice(0)) s.kill();
  await killAll(procs);
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function hasTmux(): boolean {
  try {
    execFileSync('tmux', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
// Under CI every part must be there: a missing tmux fails instead of skipping.
const itTmux = hasTmux() || process.env.CI ? it : it.skip;

async function startMonitor(width: number, height: number): Promise<{ tmux: TmuxSession; port: number; dir: string }> {
  const dir = tmpDataDir('lanvc-monitor-');
  dirs.push(dir);
  const port = await freePort();
  // A resume window longer than the test's stop (the stop-start step takes seconds under load).
  const args = ['--monitor', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dir, '--resume-grace', '60000'];
  for (const k of ['video', 'audio', 'screen', 'feedback', 'file']) args.push(`--${k}-port`, '0');
  const tmux = TmuxSession.start('mon', `node -r ts-node/register run_server.ts ${args.join(' ')}`, { width, height, dir });
  sessions.push(tmux);
  await tmux.waitFor((_, t) => t.includes(`127.0.0.1:${port}`) && /running/i.test(t), 'the monitor showing a running server');
  return { tmux, port, dir };
}

function cli(port: number, user: string, ...more: string[]): RunningProcess {
  const p = runCli(['--port', String(port), '--user', user, ...(more.includes('--reconnect-attempts') ? [] : ['--reconnect-attempts', '0']), ...more]);
  procs.push(p);
  return p;
}

/** Rows as a layout: box-drawing characters kept, everything else blank. */
const skeleton = (rows: string[]) => rows.map((r) => [...r].map((ch) => (/[\u2500-\u257f]/.test(ch) ? ch : ' ')).join('').trimEnd());

/**
 * The screen once its layout has stopped changing: a capture can land while tmux is
 * still taking in a full redraw (one render is many writes at 200x60).
 */
async function settled(tmux: TmuxSession): Promise<string[]> {
  let last = tmux.capture();
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 150));
    const now = tmux.capture();
    if (JSON.stringify(skeleton(now)) === JSON.stringify(skeleton(last))) return now;
    last = now;
  }
  throw new Error(`the layout kept changing; last screen:\n${last.join('\n')}`);
}

describe('run_server.ts --monitor', () => {
  it('refuses without a terminal, saying what to do', async () => {
    const p = runTs('run_server.ts', ['--monitor', '--port', '0']);
    procs.push(p);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/needs an interactive terminal.*run without --monitor/);
  });

  itTmux(
    'shows users and their room; k kicks the selected one; follows resizes; s stops and starts the listeners; q quits with 0 and clients are told',
    async () => {
      const { tmux, port, dir } = await startMonitor(120, 40);
      const alice = cli(port, 'Alice', '--room', 'Standup', '--create', '--reconnect-attempts', '20');
      await alice.waitFor(/You joined "Standup"/);
      const bob = cli(port, 'Bob', '--room', 'Standup');
      await bob.waitFor(/You joined "Standup"/);
      await tmux.waitFor((_, t) => t.includes('Alice') && t.includes('Bob') && (t.match(/Standup/g) ?? []).length >= 3, 'both users and their room');

      // Select Bob in the users panel and kick him.
      let asked = '';
      for (let tries = 0; tries < 4 && !asked.includes('Kick Bob'); tries++) {
        if (tries > 0) {
          tmux.send(['n']);
          tmux.send(['Down']);
        }
        tmux.send(['k']);
        asked = (await tmux.waitFor((_, t) => /Kick \S+ from/.test(t), 'the kick question')).join('\n');
      }
      expect(asked).toMatch(/Kick Bob from Standup\?/);
      tmux.send(['y']);
      await bob.waitFor(/You were removed from .*Standup.*server console/);
      await alice.waitFor(/Bob .*removed|Bob was removed|Bob left/);

      // Resizes: the layout at each size is the one a fresh draw at that size makes.
      for (const [w, h] of [
        [80, 24],
        [200, 60],
      ] as const) {
        tmux.resize(w, h);
        await tmux.waitFor((r) => r.length === h && r.some((line) => [...line].length === w && /[┐┤]$/.test(line)), `a ${w}x${h} layout`);
        const rows = await settled(tmux);
        expect(rows.every((line) => [...line].length <= w)).toBe(true);
        expect(rows.join('\n')).toContain('Alice');
        tmux.send(['C-l']);
        await new Promise((r) => setTimeout(r, 300));
        expect(skeleton(rows)).toEqual(skeleton(await settled(tmux)));
      }

      // s: stop (confirming, since users are connected); a new client cannot connect.
      tmux.send(['s']);
      await tmux.waitFor((_, t) => /Stop the listeners\?/.test(t), 'the stop question');
      tmux.send(['y']);
      await tmux.waitFor((_, t) => /stopped/i.test(t), 'the stopped state');
      await alice.waitFor(/LISTENERS_STOPPED/);
      expect(await connectRefused(port)).toBe(true);
      const refused = cli(port, 'Carol', '--exec', '/rooms');
      expect(await refused.exited).not.toBe(0);

      // s again: running, and a new client can connect.
      tmux.send(['s']);
      await tmux.waitFor((_, t) => /running/i.test(t) && !/stopped/i.test(t.split('\n').slice(0, 4).join('\n')), 'the running state again');
      const dave = cli(port, 'Dave', '--exec', '/rooms');
      expect(await dave.exited).toBe(0);
      // Alice was held for the resume window and came back by herself: the room goes on.
      await alice.waitFor(/Reconnected; back in "Standup"/);
      expect(dave.stdout()).toMatch(/Standup/);

      // q: a graceful shutdown; every client is told; exit code 0.
      const erin = cli(port, 'Erin', '--room', 'Standup');
      await erin.waitFor(/You joined "Standup"/);
      tmux.send(['q']);
      expect(await tmux.waitExit()).toBe(0);
      await erin.waitFor(/SERVER_SHUTTING_DOWN/);
      // The log went to the data directory, not to the terminal.
      expect(fs.readFileSync(path.join(dir, 'server.log'), 'utf8')).toMatch(/control server listening on 127\.0\.0\.1/);
    },
    120_000,
  );

  itTmux(
    'SIGINT shuts down as gracefully as q (exit 0, clients told); so does a hangup of the terminal',
    async () => {
      for (const how of ['SIGINT', 'hangup'] as const) {
        const { tmux, port, dir } = await startMonitor(100, 30);
        const c = cli(port, 'Ann', '--room', 'Standup', '--create');
        await c.waitFor(/You joined "Standup"/);
        if (how === 'SIGINT') {
          // The server is the node process whose command line names this test's port (not
          // the shell around it, which must live to write the exit code).
          execFileSync('pkill', ['-INT', '-f', `^node -r ts-node/register run_server.ts --monitor .*--port ${port} `]);
          expect(await tmux.waitExit()).toBe(0);
        } else {
          tmux.kill(); // the terminal goes away: SIGHUP
        }
        await c.waitFor(/SERVER_SHUTTING_DOWN/);
        const log = path.join(dir, 'server.log');
        await waitUntil(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('server closed'), 15_000, `${how}: "server closed" in the log`);
        await killAll(procs);
      }
    },
    90_000,
  );

  itTmux(
    'c changes the control port: the server moves there and clients connect to the new port',
    async () => {
      const { tmux, port } = await startMonitor(100, 30);
      const newPort = await freePort();
      tmux.send(['c']);
      await tmux.waitFor((_, t) => /Network configuration/i.test(t), 'the configuration form');
      // The form opens on the bind address; the next field is the control port.
      tmux.send(['Tab']);
      tmux.send(['C-u']);
      tmux.send([String(newPort)], { literal: true });
      tmux.send(['Enter']);
      await tmux.waitFor((_, t) => t.includes(`127.0.0.1:${newPort}`) && /running/i.test(t), 'the new port in the header');
      expect(await connectRefused(port)).toBe(true);
      const c = cli(newPort, 'Zed', '--exec', '/rooms');
      expect(await c.exited).toBe(0);
      tmux.send(['q']);
      expect(await tmux.waitExit()).toBe(0);
    },
    90_000,
  );
});
