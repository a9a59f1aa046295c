/**
 * The audio device layer against real parts: a private PulseAudio (tests/kit/pulse.ts)
 * with null sinks, reached by naudiodon/PortAudio through the ALSA pulse plugin, and
 * the bundled ffmpeg for files. Streams are routed in-process with the per-stream
 * `env` option (PULSE_SOURCE / PULSE_SINK, read by libpulse when a stream opens).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AudioDeviceError,
  DeviceCapture,
  DevicePlayback,
  FileCapture,
  NullPlayback,
  listAudioDevices,
  resolveDevice,
} from '../../client/audio/devices';
import { FRAME_SAMPLES, SAMPLE_RATE, int16ToFloat } from '../../client/audio/format';
import { REPO_ROOT } from '../kit/processes';
import { concatFrames, startPulse, type Pulse } from '../kit/pulse';
import { alignedCorrelation, writeWav } from '../kit/audio_signals';
import { which } from '../kit/xvfb';

const IS_CI = process.env.CI === 'true' || process.env.CI === '1';
const MISSING = ['pulseaudio', 'pactl', 'pacat', 'parec', 'paplay'].filter((c) => !which(c));
if (MISSING.length && IS_CI) throw new Error(`CI=true and PulseAudio tools missing (${MISSING.join(', ')}): run \`npm run setup\` as root`);
if (MISSING.length) console.warn(`SKIPPING audio device tests: ${MISSING.join(', ')} not installed (\`npm run setup\` as root installs them)`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A rising sweep with an uneven envelope: correlates well only at the right lag. */
function chirp(seconds: number, f0 = 300, f1 = 3000, amplitude = 0.5): Int16Array {
  const n = Math.round(seconds * SAMPLE_RATE);
  const out = new Int16Array(n);
  let phase = 0;
  for (let i = 0; i < n; i++) {
    const t = i / n;
    phase += (2 * Math.PI * (f0 + (f1 - f0) * t)) / SAMPLE_RATE;
    const env = 0.6 + 0.4 * Math.sin(2 * Math.PI * 3.3 * t);
    out[i] = Math.round(amplitude * env * 32767 * Math.sin(phase));
  }
  return out;
}

/** The normalized correlation of `signal` with the stretch of `recording` where it best aligns. */
function heardPeak(recording: Int16Array, signal: Int16Array): number {
  return alignedCorrelation(int16ToFloat(recording), int16ToFloat(signal), { maxLagSeconds: recording.length / SAMPLE_RATE }).peak;
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lvc-audio-dev-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(MISSING.length > 0)('audio devices through PulseAudio', () => {
  let pulse: Pulse;
  beforeAll(async () => {
    pulse = await startPulse({ sinks: ['micA', 'spkA'] });
  });
  afterAll(async () => {
    await pulse?.stop();
  });

  it('lists the pulse and default devices and resolves them by id and name', () => {
    const env = pulse.env();
    const devices = listAudioDevices(env);
    const names = devices.map((d) => d.name);
    expect(names).toContain('pulse');
    expect(names).toContain('default');
    const pulseDev = devices.find((d) => d.name === 'pulse')!;
    expect(pulseDev.hostApi).toBe('ALSA');
    expect(pulseDev.maxInputChannels).toBeGreaterThan(0);
    expect(pulseDev.maxOutputChannels).toBeGreaterThan(0);
    expect(devices.filter((d) => d.isDefaultInput)).toHaveLength(1);
    expect(devices.filter((d) => d.isDefaultOutput)).toHaveLength(1);

    expect(resolveDevice(String(pulseDev.id), 'input', devices)).toEqual({ id: pulseDev.id, name: 'pulse' });
    expect(resolveDevice('pulse', 'output', devices)).toEqual({ id: pulseDev.id, name: 'pulse' });
    expect(resolveDevice('PUL', 'input', devices)).toEqual({ id: pulseDev.id, name: 'pulse' });
    expect(resolveDevice('default', 'input', devices).id).toBe(-1);

    // 'e' is in both names.
    let err: unknown = null;
    try {
      resolveDevice('e', 'input', devices);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AudioDeviceError);
    expect((err as AudioDeviceError).code).toBe('AUDIO_DEVICE_AMBIGUOUS');
    expect((err as AudioDeviceError).message).toMatch(/"pulse".*"default"|"default".*"pulse"/);

    for (const spec of ['no such device', '999']) {
      try {
        resolveDevice(spec, 'output', devices);
        expect.unreachable(`resolved ${spec}`);
      } catch (e) {
        expect((e as AudioDeviceError).code).toBe('AUDIO_DEVICE_NOT_FOUND');
        expect((e as AudioDeviceError).message).toContain('"pulse"');
        expect((e as AudioDeviceError).hint).toMatch(/--list-devices/);
      }
    }
  });

  it('captures what is played into a null sink as 960-sample frames at 50 frames/s', async () => {
    const cap = new DeviceCapture('default', { env: pulse.env({ source: 'micA.monitor' }) });
    cleanups.push(() => cap.stop());
    const frames: { pcm: Int16Array; captureUs: number; at: number }[] = [];
    const lost: string[] = [];
    cap.on('frame', (pcm, captureUs) => frames.push({ pcm, captureUs, at: Date.now() }));
    cap.on('lost', (r) => lost.push(r));
    await cap.start();
    await until(() => frames.length >= 10, 10_000, 'first captured frames');

    const signal = chirp(1.5);
    const from = frames.length;
    const t0 = Date.now();
    await pulse.play('micA', signal);
    await sleep(500);
    const t1 = Date.now();
    const got = frames.slice(from);

    expect(lost).toEqual([]);
    expect(got.every((f) => f.pcm.length === FRAME_SAMPLES)).toBe(true);
    const rate = (got.length * 1000) / (t1 - t0);
    expect(rate).toBeGreaterThan(45);
    expect(rate).toBeLessThan(55);
    // captureUs advances by one frame (20 ms) per frame.
    const steps = got.slice(1).map((f, i) => f.captureUs - got[i].captureUs);
    expect(steps.filter((d) => Math.abs(d - 20_000) > 2_000).length).toBeLessThanOrEqual(2);

    const heard = concatFrames(got.map((f) => f.pcm));
    expect(heardPeak(heard, signal)).toBeGreaterThanOrEqual(0.8);
  });

  it('plays pulled frames into a null sink, and reports each frame in order as played', async () => {
    const signal = chirp(1.5);
    const frames: Int16Array[] = [];
    for (let o = 0; o + FRAME_SAMPLES <= signal.length; o += FRAME_SAMPLES) frames.push(signal.slice(o, o + FRAME_SAMPLES));
    const silence = new Int16Array(FRAME_SAMPLES);
    let armed = false;
    let next = 0;
    const pulled: Int16Array[] = [];
    const pb = new DevicePlayback(
      'default',
      () => {
        const f = armed && next < frames.length ? frames[next++] : silence;
        pulled.push(f);
        return f;
      },
      { env: pulse.env({ sink: 'spkA' }) },
    );
    cleanups.push(() => pb.stop());
    const played: Int16Array[] = [];
    const handed: number[] = [];
    pb.on('played', (pcm, at) => {
      played.push(pcm);
      handed.push(at);
    });
    const rec = pulse.record('spkA');
    cleanups.push(() => rec.stop());
    await pb.start();
    await until(() => played.length >= 10, 10_000, 'playback to start');
    const flowingAt = played.length;
    armed = true;
    await until(() => next >= frames.length, 10_000, 'the signal to be pulled');
    await sleep(600);
    await pb.stop();
    const recorded = await rec.stop();

    // Every pulled frame was reported, in order, and nothing else was.
    expect(played.length).toBe(pulled.length);
    for (let i = 0; i < played.length; i++) expect(played[i]).toBe(pulled[i]);
    expect(handed.every((t, i) => i === 0 || t >= handed[i - 1])).toBe(true);
    // The device clock paced the pulls: 50 frames/s once flowing.
    const span = (handed[handed.length - 1] - handed[flowingAt]) / 1e6;
    const rate = (handed.length - 1 - flowingAt) / span;
    expect(rate).toBeGreaterThan(45);
    expect(rate).toBeLessThan(55);

    expect(heardPeak(recorded, signal)).toBeGreaterThanOrEqual(0.8);
  });

  it('keeps a --speaker none pipeline running on a drift-free 20 ms clock', async () => {
    let pulls = 0;
    const np = new NullPlayback(() => {
      pulls++;
      return new Int16Array(FRAME_SAMPLES);
    });
    cleanups.push(() => np.stop());
    let played = 0;
    np.on('played', () => played++);
    await np.start();
    await sleep(2000);
    await np.stop();
    expect(pulls).toBeGreaterThanOrEqual(98);
    expect(pulls).toBeLessThanOrEqual(102);
    expect(played).toBe(pulls);
  });
});

describe.skipIf(MISSING.length > 0)('a microphone that disappears', () => {
  let pulse: Pulse;
  beforeAll(async () => {
    // Only one sink: with another source left PulseAudio would move the stream there
    // instead of ending it (a ~1 s gap, also reported as lost, but less exact to test).
    pulse = await startPulse({ sinks: ['usbmic'] });
  });
  afterAll(async () => {
    await pulse?.stop();
  });

  it("is reported lost once, retried, and restored when it comes back", async () => {
    const cap = new DeviceCapture('default', { env: pulse.env({ source: 'usbmic.monitor' }), retryMs: [200, 400] });
    cleanups.push(() => cap.stop());
    const events: string[] = [];
    let frames = 0;
    cap.on('frame', () => frames++);
    cap.on('lost', (r) => events.push(`lost: ${r}`));
    cap.on('restored', () => events.push('restored'));
    cap.on('error', (e) => events.push(`error: ${e.message}`));
    await cap.start();
    await until(() => frames >= 10, 10_000, 'first frames');

    await pulse.removeSink('usbmic');
    await until(() => events.length > 0, 5000, "'lost'");
    expect(events[0]).toMatch(/^lost: no audio for \d+ ms/);
    // Several failed reopens later, still one 'lost' and the process is fine.
    await sleep(1500);
    expect(events).toHaveLength(1);
    const framesWhileLost = frames;

    await pulse.addSink('usbmic');
    await until(() => events.includes('restored'), 15_000, "'restored'");
    expect(events).toEqual([events[0], 'restored']);
    expect(cap.reopens).toBeGreaterThanOrEqual(1);
    const after = frames;
    await sleep(1000);
    expect(frames - after).toBeGreaterThanOrEqual(40);
    expect(framesWhileLost).toBeLessThanOrEqual(after);
  });
});

describe('a sound file as microphone', () => {
  it('delivers 50 frames/s in real time and loops the file', async () => {
    const half = chirp(0.5); // 25 frames
    const wav = path.join(tmp, 'loop.wav');
    writeWav(wav, half);
    const fc = new FileCapture(wav);
    cleanups.push(() => fc.stop());
    const frames: { pcm: Int16Array; captureUs: number }[] = [];
    fc.on('frame', (pcm, captureUs) => frames.push({ pcm, captureUs }));
    await fc.start();
    const from = frames.length;
    await sleep(3000);
    const n = frames.length - from;
    await fc.stop();
    expect(n).toBeGreaterThanOrEqual(148);
    expect(n).toBeLessThanOrEqual(152);
    expect(frames.every((f) => f.pcm.length === FRAME_SAMPLES)).toBe(true);
    // Frame k is frame k of the file, and the file comes round every 25 frames.
    for (let k = 0; k < 25; k++) expect(Array.from(frames[k].pcm)).toEqual(Array.from(half.subarray(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)));
    for (let k = 0; k + 25 < frames.length; k += 7) expect(Array.from(frames[k + 25].pcm)).toEqual(Array.from(frames[k].pcm));
    // Timestamps are the schedule: exactly 20 ms apart.
    for (let k = 1; k < frames.length; k++) expect(frames[k].captureUs - frames[k - 1].captureUs).toBe(20_000);
  });

  it('rejects a missing or undecodable file with a clear error', async () => {
    const missing = new FileCapture(path.join(tmp, 'nope.wav'));
    await expect(missing.start()).rejects.toMatchObject({ code: 'AUDIO_FILE_UNREADABLE', message: expect.stringMatching(/nope\.wav.*file not found/) });
    const junk = path.join(tmp, 'junk.wav');
    fs.writeFileSync(junk, Buffer.from('this is not audio at all'.repeat(40)));
    const bad = new FileCapture(junk);
    cleanups.push(() => bad.stop());
    const err = await bad.start().then(
      () => null,
      (e: AudioDeviceError) => e,
    );
    expect(err).toBeInstanceOf(AudioDeviceError);
    expect(err!.code).toBe('AUDIO_FILE_UNREADABLE');
    expect(err!.message).toContain('junk.wav');
    expect(err!.hint).toMatch(/--mic file:/);
  });
});

describe('no audio system', () => {
  /** Runs a script in a child process, so this process's PortAudio is not involved; resolves with its stdout. */
  function child(code: string, env: NodeJS.ProcessEnv): Promise<{ out: string; code: number | null; ms: number }> {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      const p = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', code], {
        cwd: REPO_ROOT,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.resume();
      const timer = setTimeout(() => {
        p.kill('SIGKILL');
        reject(new Error(`child did not finish within 20 s; stdout: ${out}`));
      }, 20_000);
      p.once('exit', (c) => {
        clearTimeout(timer);
        resolve({ out, code: c, ms: Date.now() - t0 });
      });
    });
  }

  const script = `
    const { DeviceCapture, DevicePlayback } = require('./client/audio/devices');
    (async () => {
      const res = {};
      for (const [k, make] of [['mic', () => new DeviceCapture('default')], ['speaker', () => new DevicePlayback('default', () => new Int16Array(960))]]) {
        const dev = make();
        try { await dev.start(); res[k] = 'opened'; await dev.stop(); }
        catch (e) { res[k] = { code: e.code, message: e.message, hint: e.hint }; }
      }
      process.stdout.write('\\nRESULT ' + JSON.stringify(res) + '\\n');
    })();`;

  for (const alsa of ['pulse-only', 'system'] as const) {
    it(`fails with AUDIO_UNAVAILABLE, not a crash or a hang (ALSA configuration: ${alsa})`, async () => {
      const runtime = fs.mkdtempSync(path.join(tmp, 'xdg-'));
      const env: NodeJS.ProcessEnv = { ...process.env, PULSE_SERVER: `unix:${path.join(runtime, 'no-such-socket')}`, XDG_RUNTIME_DIR: runtime, HOME: runtime };
      delete env.ALSA_CONFIG_PATH;
      delete env.PULSE_SINK;
      delete env.PULSE_SOURCE;
      if (alsa === 'system') env.LVC_AUDIO_ALSA = 'system';
      const r = await child(script, env);
      const line = r.out.split('\n').find((l) => l.startsWith('RESULT '));
      expect(line, `child output: ${r.out}`).toBeTruthy();
      const res = JSON.parse(line!.slice('RESULT '.length)) as Record<string, { code: string; hint: string }>;
      for (const k of ['mic', 'speaker']) {
        expect(res[k].code).toBe('AUDIO_UNAVAILABLE');
        expect(res[k].hint).toMatch(/--mic none --speaker none/);
      }
      expect(r.code).toBe(0);
    });
  }
});
