/**
 * The command-line client with video, as a person runs it: run_client.ts processes
 * with a synthetic camera and a viewer that keeps what it receives on disk.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { DEFAULT_FFMPEG_PATH } from '../../client/video_client';
import { parseCliArgs, parseCommand, CliUsageError, CommandUsageError } from '../../client/cli';
import { killAll, runCli, type RunningProcess } from '../kit/processes';
import { Harness, sleep, waitUntil } from '../kit/server';

const procs: RunningProcess[] = [];
const h = new Harness();
const dirs: string[] = [];
afterEach(async () => {
  await killAll(procs);
  await h.closeAll();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** WxH of a JPEG file, read from its SOF marker (synchronous, for polling). */
function sharpSizeSync(file: string): string {
  const b = fs.readFileSync(file);
  for (let i = 2; i + 9 < b.length; ) {
    if (b[i] !== 0xff) return '';
    const marker = b[i + 1];
    const len = b.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xc2) return `${b.readUInt16BE(i + 7)}x${b.readUInt16BE(i + 5)}`;
    i += 2 + len;
  }
  return '';
}

function cli(args: string[]): RunningProcess {
  const p = runCli(args, { DISPLAY: '' });
  procs.push(p);
  return p;
}

describe('CLI video', () => {
  it('flags and commands parse, and refuse what makes no sense', () => {
    const { options } = parseCliArgs(['--camera', 'testsrc2', '--video-size', '320x240', '--fps', '10', '--quality', '60', '--save-dir', '/tmp/x', '--save-video']);
    expect(options).toMatchObject({ camera: 'testsrc2', video: { width: 320, height: 240, fps: 10, quality: 60 }, saveDir: '/tmp/x', saveVideo: true });
    expect(() => parseCliArgs(['--video-size', '641x480'])).toThrow(/even numbers/);
    expect(() => parseCliArgs(['--video-size', 'big'])).toThrow(CliUsageError);
    expect(() => parseCliArgs(['--fps', '0'])).toThrow(/--fps must be a whole number from 1 to 60/);
    expect(() => parseCliArgs(['--quality', '101'])).toThrow(CliUsageError);
    expect(() => parseCliArgs(['--save-video'])).toThrow(/--save-video needs --save-dir/);
    expect(parseCommand('/screen on')).toEqual({ name: 'screen', on: true });
    expect(parseCommand('/stop-video bob')).toEqual({ name: 'stop-video', user: 'bob', kind: 'video' });
    expect(parseCommand('/stop-video "Bob Smith" screen')).toEqual({ name: 'stop-video', user: 'Bob Smith', kind: 'screen' });
    expect(() => parseCommand('/stop-video bob audio')).toThrow(CommandUsageError);
    expect(parseCommand('/stats')).toEqual({ name: 'stats' });
    expect(parseCommand('/video-set size 320x240 fps 10')).toEqual({ name: 'video-set', width: 320, height: 240, fps: 10 });
    expect(() => parseCommand('/video-set size 321x240')).toThrow(CommandUsageError);
    expect(() => parseCommand('/video-set fps')).toThrow(CommandUsageError);
    expect(() => parseCommand('/video-set colour red')).toThrow(/unknown setting colour/);
  });

  it('a bot with --camera testsrc2 is seen by a viewer with --save-dir --save-video: latest JPEGs and a playable MKV; /stats; a host stops the camera', async () => {
    const server = await h.server();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-cli-video-'));
    dirs.push(dir);
    const port = String(server.port);
    const viewer = cli(['--port', port, '--user', 'viewer', '--room', 'demo', '--create', '--save-dir', dir, '--save-video']);
    await viewer.waitFor(/You joined "demo" .* as the host/);
    const bot = cli(['--port', port, '--user', 'bot', '--room', 'demo', '--camera', 'testsrc2', '--video-size', '320x240', '--fps', '10']);
    await bot.waitFor(/Your camera is on/);
    await viewer.waitFor(/bot turned video on/);
    await viewer.waitFor(/Recording bot-camera to .*bot-camera\.mkv/);
    const jpg = path.join(dir, 'bot-camera.jpg');
    await waitUntil(() => fs.existsSync(jpg), 10_000, 'the latest frame file');
    const meta = await sharp(fs.readFileSync(jpg)).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['jpeg', 320, 240]);

    await sleep(1500); // let a second or so of video reach the recording
    viewer.type('/stats');
    await viewer.waitFor(/receiving bot video: [\d.]+ fps, \d+ kbit\/s, packet loss [\d.]+%/);
    bot.type('/stats');
    await bot.waitFor(/sending camera: 320x240 at [\d.]+ fps/);

    // Live changes reach the viewer without restarting capture.
    bot.type('/video-set size 160x120 quality 40');
    await bot.waitFor(/Video settings: 160x120, 10 fps, quality 40/);
    await waitUntil(() => {
      try {
        return fs.readFileSync(jpg).readUInt16BE(0) === 0xffd8 && sharpSizeSync(jpg) === '160x120';
      } catch {
        return false;
      }
    }, 10_000, 'a 160x120 frame at the viewer');
    bot.type('/stats');
    await bot.waitFor(/sending camera: 160x120 at [\d.]+ fps, quality 40, .* capture restarts 0/);

    viewer.type('/stop-video bot');
    await viewer.waitFor(/bot's camera is off/);
    await bot.waitFor(/Your camera was turned off by viewer/);
    viewer.type('/quit');
    expect(await viewer.exited).toBe(0);

    // The recording plays: ffmpeg decodes every frame of it without an error.
    const mkv = path.join(dir, 'bot-camera.mkv');
    const decoded = spawnSync(DEFAULT_FFMPEG_PATH, ['-v', 'error', '-i', mkv, '-f', 'null', '-'], { encoding: 'utf8' });
    expect(decoded.status).toBe(0);
    const probe = spawnSync(DEFAULT_FFMPEG_PATH, ['-i', mkv, '-map', '0:v', '-c', 'copy', '-f', 'null', '-'], { encoding: 'utf8' });
    const counts = [...probe.stderr.matchAll(/frame=\s*(\d+)/g)].map((m) => Number(m[1]));
    const frames = counts[counts.length - 1] ?? 0;
    expect(frames).toBeGreaterThan(3);
    bot.type('/quit');
    expect(await bot.exited).toBe(0);
  }, 60_000);

  it('/video on without a camera and /screen on without a display say what to do', async () => {
    const server = await h.server();
    const p = cli(['--port', String(server.port), '--user', 'alice', '--room', 'r', '--create', '--keep-going', '--exec', '/video on; /screen on']);
    expect(await p.exited).toBe(1);
    if (!fs.existsSync('/dev/video0')) expect(p.stderr()).toMatch(/CAPTURE_FAILED: Capture from the camera stopped: no camera was given.*--camera testsrc2/);
    expect(p.stderr()).toMatch(/CAPTURE_FAILED: Capture from the screen stopped: no X display: start with --screen :0/);
  }, 30_000);
});
