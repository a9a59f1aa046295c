/**
 * The command-line client with audio, as people run it: run_client.ts processes, a
 * bot whose microphone is a looped speech file, and a listener whose speaker is a
 * PulseAudio null sink (a private daemon) that the test records.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCliArgs, parseCommand, CliUsageError, CommandUsageError } from '../../client/cli';
import { int16ToFloat } from '../../client/audio/format';
import { spawn, type ChildProcess } from 'node:child_process';
import { killAll, REPO_ROOT, runCli, type RunningProcess } from '../kit/processes';
import { startPulse, type Pulse, type Recorder } from '../kit/pulse';
import { Harness, sleep, waitUntil } from '../kit/server';
import { which } from '../kit/xvfb';
import { rmsDb, segmentedCorrelation, speech, writeWav } from '../kit/audio_signals';

const IS_CI = process.env.CI === 'true' || process.env.CI === '1';
const MISSING = ['pulseaudio', 'pactl', 'parec', 'espeak-ng', 'sox'].filter((c) => !which(c));
if (MISSING.length && IS_CI) throw new Error(`CI=true and audio test tools missing (${MISSING.join(', ')}): run \`npm run setup\` as root`);
const run = MISSING.length ? describe.skip : describe;

let pulse: Pulse;
let drain: Recorder | undefined;
let dir: string;
const procs: RunningProcess[] = [];
const spawned: ChildProcess[] = [];
const h = new Harness();
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lvc-cli-audio-'));
  if (MISSING.length) return;
  pulse = await startPulse({ sinks: ['ear'] });
  // Read the sink all along, as a sound card plays all along (an unread null sink stalls its players).
  drain = pulse.record('ear', { discard: true });
}, 30_000);
afterAll(async () => {
  await drain?.stop();
  await pulse?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const p of spawned.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await killAll(procs);
  await h.closeAll();
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}): RunningProcess {
  const p = runCli(args, env);
  procs.push(p);
  return p;
}

describe('CLI audio flags and commands', () => {
  it('parse, and refuse what makes no sense', () => {
    const { options } = parseCliArgs(['--mic', 'file:/tmp/a.wav', '--speaker', 'none', '--muted', '--no-ns', '--no-aec']);
    expect(options).toMatchObject({ mic: 'file:/tmp/a.wav', speaker: 'none', muted: true, ns: false, aec: false, listDevices: false });
    expect(parseCliArgs([]).options).toMatchObject({ mic: null, speaker: null, ns: true, aec: true, muted: false });
    expect(parseCliArgs(['--list-devices']).options.listDevices).toBe(true);
    expect(() => parseCliArgs(['--speaker', 'file:x.wav'])).toThrow(/--speaker cannot be a file/);
    expect(() => parseCliArgs(['--mic', ' '])).toThrow(CliUsageError);
    expect(parseCommand('/mute')).toEqual({ name: 'self-mute', on: true });
    expect(parseCommand('/unmute')).toEqual({ name: 'self-mute', on: false });
    expect(parseCommand('/mute bob')).toEqual({ name: 'mute', user: 'bob' });
    expect(parseCommand('/volume bob 150')).toEqual({ name: 'volume', user: 'bob', percent: 150 });
    expect(parseCommand('/volume bob 0')).toEqual({ name: 'volume', user: 'bob', percent: 0 });
    expect(() => parseCommand('/volume bob 201')).toThrow(CommandUsageError);
    expect(() => parseCommand('/volume bob')).toThrow(/usage: \/volume USER N/);
    expect(parseCommand('/ns off')).toEqual({ name: 'ns', on: false });
    expect(parseCommand('/aec on')).toEqual({ name: 'aec', on: true });
    expect(() => parseCommand('/aec maybe')).toThrow(/usage: \/aec on\|off/);
    expect(parseCommand('/levels')).toEqual({ name: 'levels' });
  });
});

run('CLI audio (PulseAudio)', () => {
  it('--list-devices prints the devices and nothing of PortAudio\'s own chatter; without a sound server it says what to do', async () => {
    const ok = cli(['--list-devices'], { PULSE_SERVER: pulse.server });
    expect(await ok.exited).toBe(0);
    expect(ok.stdout().split('\n').filter(Boolean)).toEqual([
      'Microphones (--mic ID or NAME):',
      expect.stringMatching(/^ +\d+ {2}pulse {2}\(ALSA, \d+ channels, \d+ Hz\)$/),
      expect.stringMatching(/^ +\d+ {2}default {2}\(ALSA/),
      'Speakers (--speaker ID or NAME):',
      expect.stringMatching(/^ +\d+ {2}pulse/),
      expect.stringMatching(/^ +\d+ {2}default/),
      'Also: --mic file:PATH (a looped sound file), and none for either.',
    ]);
    const none = cli(['--list-devices'], { PULSE_SERVER: `unix:${dir}/no-such-socket` });
    expect(await none.exited).toBe(1);
    expect(none.stderr()).toMatch(/No audio system: .*start with --mic none --speaker none/);
  }, 60_000);

  it('without a sound server the client says so, goes on without audio, and chat works', async () => {
    const server = await h.server();
    const c = cli(
      ['--port', String(server.port), '--user', 'deaf', '--room', 'Quiet', '--create', '--mic', 'default', '--speaker', 'default', '--stay', '--exec', '/wait 0'],
      { PULSE_SERVER: `unix:${dir}/no-such-socket` },
    );
    await c.waitFor(/Going on without a microphone/, 20_000);
    expect(c.stderr()).toMatch(/AUDIO_UNAVAILABLE: No audio system: .*start with --mic none --speaker none/);
    expect(c.stdout()).toMatch(/Going on without a speaker/);
    c.type('hello, can anyone hear me?');
    await c.waitFor(/deaf: hello, can anyone hear me\?/, 5000);
    c.type('/quit');
    expect(await c.exited).toBe(0);
  }, 60_000);

  it('a bot talks from a file and a listener hears it on its speaker; /mute sends nothing at all, /unmute resumes; --json stays pure JSON with devices open', async () => {
    const server = await h.server();
    const says = await speech('Good morning everyone. This is the radio bot reading the news at nine.', 'en+m3');
    const wav = path.join(dir, 'news.wav');
    writeWav(wav, says);
    const port = String(server.port);
    const bot = cli(['--port', port, '--user', 'radio', '--room', 'Radio', '--create', '--mic', `file:${wav}`, '--speaker', 'none', '--no-ns', '--stay', '--exec', '/wait 0']);
    await bot.waitFor(/Your microphone is live/, 20_000);
    // The listener's stdout is a file, as with `> log` (a Node parent's 'pipe' is a socket
    // pair, which cannot be reopened: see client/audio/native_stdout.ts).
    const earOut = path.join(dir, 'ear.jsonl');
    const outFd = fs.openSync(earOut, 'w');
    const ear = spawn(process.execPath, ['-r', 'ts-node/register', 'run_client.ts', '--port', port, '--user', 'ear', '--room', 'Radio', '--mic', 'none', '--speaker', 'default', '--json', '--stay', '--exec', '/wait 0'], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...pulse.env({ sink: 'ear' }) },
      stdio: ['pipe', outFd, 'pipe'],
    });
    fs.closeSync(outFd);
    spawned.push(ear);
    const earStdout = () => fs.readFileSync(earOut, 'utf8');
    await waitUntil(() => (server.media.participantStats(server.snapshot().users.find((u) => u.username === 'ear')?.user_id ?? '')?.receiving.audio.packets ?? 0) > 100, 20_000, 'the listener receives audio');
    await sleep(2500); // PortAudio's start-up, then a steady stream
    const rec = pulse.record('ear');
    await sleep(says.length / 48 + 1200);
    const heard = int16ToFloat(await rec.stop());
    const c = segmentedCorrelation(heard, says, { maxLagSeconds: says.length / 48_000 + 1 });
    console.log(`CLI bot -> CLI listener: correlation median ${c.median.toFixed(3)}, mean ${c.mean.toFixed(3)} over ${c.segments} pieces of 100 ms`);
    expect(c.median).toBeGreaterThanOrEqual(0.8);

    // Self-mute: the room is told, and the relay gets nothing more from the bot (not silence: nothing).
    const botId = server.snapshot().users.find((u) => u.username === 'radio')!.user_id;
    bot.type('/mute');
    await bot.waitFor(/Your microphone is muted/, 5000);
    await sleep(300);
    const before = server.media.participantStats(botId)!.sending.audio.packets;
    const silent = pulse.record('ear');
    await sleep(1500);
    expect(server.media.participantStats(botId)!.sending.audio.packets).toBe(before);
    const quiet = int16ToFloat(await silent.stop());
    expect(rmsDb(quiet.subarray(Math.round(0.3 * 48_000)))).toBeLessThan(-45); // speech is around -20
    bot.type('/unmute');
    await bot.waitFor(/Your microphone is live[\s\S]*Your microphone is live/, 5000);
    await waitUntil(() => server.media.participantStats(botId)!.sending.audio.packets > before + 20, 5000, 'sending again');

    // Commands at the listener: volume, levels.
    ear.stdin!.write('/volume radio 50\n/levels\n');
    await waitUntil(() => /"active_speaker"/.test(earStdout()), 10_000, 'the listener prints /levels');
    ear.stdin!.write('/quit\n');
    await new Promise((r) => ear.once('exit', r));
    // Every stdout line of the listener (which opened a sound card) is JSON, to the end.
    const lines = earStdout().split('\n').filter((l) => l.trim() !== '');
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
    expect(lines.some((l) => /"volume":50/.test(l))).toBe(true);
    expect(earStdout()).not.toMatch(/PortAudio|audio options|Finishing/);
  }, 120_000);
});
