/**
 * The processes of bench/audio.ts other than the bench itself (forked by lib.ts
 * forkTs; talk over the IPC channel):
 *
 *   audio_child.ts server   the product's Server on 127.0.0.1: TCP port 0 and the four
 *                           UDP media ports 0, a fresh temporary data directory, log
 *                           level warn; everything else at its defaults. Its relay has
 *                           an event loop of its own (as on a real LAN, where it runs on
 *                           another machine).
 *   audio_child.ts client   one client as a user runs it, so that its CPU time is its
 *                           own (process.cpuUsage): nothing until told `join`, then a
 *                           Client in the given room with an AudioCall on real devices
 *                           (PulseAudio streams routed by the given PULSE_* variables),
 *                           noise suppression and echo cancellation on (the defaults).
 *
 * Commands (IPC): `stats` -> CPU time, clock, event-loop utilization and stalls, plus
 * the relay's totals (server) or the AudioCall's stats and per-thread CPU ticks
 * (client); `calibrate {talkers}` (client, before join) -> CPU per 20 ms of the
 * signal processing alone (see calibrate()); `join {port, room, micEnv, speakerEnv}`
 * (client) -> joins and starts the call; `close` -> closes
 * everything, then the process exits by itself (so --cpu-prof writes its profile).
 * Either exits when the parent goes away.
 */
import fs from 'node:fs';
import { AudioCall } from '../client/audio_call';
import { EchoCanceller } from '../client/audio/aec';
import { FRAME_SAMPLES, floatToInt16, levelDbov } from '../client/audio/format';
import { JitterBuffer } from '../client/audio/jitter_buffer';
import { Mixer } from '../client/audio/mixer';
import { NoiseSuppressor } from '../client/audio/noise_suppressor';
import { OpusVoiceDecoder, OpusVoiceEncoder } from '../client/audio/opus_codec';
import { Client } from '../client/main_client';
import { decodeAudioPayload, RedundancyEncoder } from '../shared/protocol/audio_payload';
import { loop, scale, delay, mix, speech } from '../tests/kit/audio_signals';
import { serveBenchServer, serveChild, type ServedChild } from './lib';

export interface JoinRequest {
  port: number;
  room: string;
  /** PULSE_SERVER / PULSE_SOURCE for the microphone, PULSE_SERVER / PULSE_SINK for the speaker. */
  micEnv: Record<string, string>;
  speakerEnv: Record<string, string>;
}

function startServer(): Promise<ServedChild> {
  return serveBenchServer('lanvc-bench-audio-');
}

/**
 * CPU ticks (user + system, 1/CLK_TCK s, usually 10 ms) of each thread of this process,
 * from /proc/self/task (Linux; empty elsewhere). The main thread's id is the pid; the
 * others are V8's helpers, libuv's pool (naudiodon's blocking reads and writes) and
 * PortAudio's callback threads (all named "node").
 */
function threadTicks(): { tid: number; ticks: number }[] {
  try {
    return fs.readdirSync('/proc/self/task').map((t) => {
      const stat = fs.readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // f[0] is field 3 (state): utime is field 14, stime field 15.
      return { tid: Number(t), ticks: Number(f[11]) + Number(f[12]) };
    });
  } catch {
    return [];
  }
}

export interface Calibration {
  frames: number;
  /** CPU µs (process.cpuUsage) per 20 ms frame: AEC (pushFar + processNear) + RNNoise + level + Opus encode + redundancy. */
  send_us_per_frame: number;
  /** The same split by stage (CPU µs per frame). */
  aec_us_per_frame: number;
  ns_us_per_frame: number;
  opus_us_per_frame: number;
  /** CPU µs per 20 ms tick for `talkers` streams: payload parse + jitter buffer push/pull (Opus decode) + mixer. */
  receive_us_per_tick: number;
  talkers: number;
}

/**
 * The client's signal processing alone, in this process before it joins (nothing else
 * running): the CPU it costs per 20 ms, send and receive side, on espeak-ng speech with
 * an echo, so that the call's CPU can be split into DSP and the rest.
 */
async function calibrate(talkers: number, frames = 250, warmup = 50): Promise<Calibration> {
  const total = (frames + warmup) * FRAME_SAMPLES;
  const a = await speech('Let us go through the numbers for this quarter and then talk about the plan for the next release.');
  const b = await speech('I think the audio sounds fine on my side.', 'en+f3');
  const far = loop(a, total);
  const mic = mix(scale(delay(far, 2400), 0.3), loop(b, total));
  const aec = new EchoCanceller();
  const ns = await NoiseSuppressor.create();
  const enc = new OpusVoiceEncoder();
  const red = new RedundancyEncoder(1);
  const payloads: Buffer[] = [];
  const stage = [0, 0, 0];
  const us = (c: NodeJS.CpuUsage) => c.user + c.system;
  for (let f = 0; f < frames + warmup; f++) {
    const c0 = process.cpuUsage();
    aec.pushFar(far.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES));
    const e = aec.processNear(mic.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES));
    const c1 = process.cpuUsage();
    const y = ns.process(e);
    const c2 = process.cpuUsage();
    levelDbov(y);
    payloads.push(red.payload(f + 1, enc.encode(floatToInt16(y))));
    const c3 = process.cpuUsage();
    if (f >= warmup) {
      stage[0] += us(c1) - us(c0);
      stage[1] += us(c2) - us(c1);
      stage[2] += us(c3) - us(c2);
    }
  }
  const sendUs = stage[0] + stage[1] + stage[2];
  ns.destroy();
  const jbs = Array.from({ length: talkers }, () => new JitterBuffer(new OpusVoiceDecoder()));
  const mixer = new Mixer();
  let recvUs = 0;
  for (let f = 0; f < frames + warmup; f++) {
    const c0 = process.cpuUsage();
    mixer.begin();
    for (let t = 0; t < talkers; t++) {
      const d = decodeAudioPayload(payloads[(f + t * 23) % payloads.length]);
      if ('problem' in d) throw new Error(d.problem);
      jbs[t].push({ frameIndex: f + 1, primary: d.primary, redundant: d.redundant, arrivalMs: f * 20 });
      const out = jbs[t].pull(f * 20 + 1);
      if (out.source !== 'silence') mixer.add(out.pcm, 1);
    }
    floatToInt16(mixer.finish());
    const c = process.cpuUsage(c0);
    if (f >= warmup) recvUs += c.user + c.system;
  }
  return {
    frames,
    send_us_per_frame: sendUs / frames,
    aec_us_per_frame: stage[0] / frames,
    ns_us_per_frame: stage[1] / frames,
    opus_us_per_frame: stage[2] / frames,
    receive_us_per_tick: recvUs / frames,
    talkers,
  };
}

async function startClient(): Promise<ServedChild> {
  let client: Client | null = null;
  let call: AudioCall | null = null;
  const problems: string[] = [];
  /** Devices lost and restored by themselves (an underrun on a loaded machine): reported, not fatal. */
  const warnings: string[] = [];
  return {
    port: 0,
    stats: () => ({ call: call?.stats() ?? null, problems, warnings, pid: process.pid, threads: threadTicks() }),
    command: async (cmd, arg) => {
      if (cmd === 'calibrate') return calibrate((arg as { talkers: number }).talkers);
      if (cmd !== 'join') throw new Error(`unknown command ${cmd}`);
      if (client) throw new Error('already joined');
      const j = arg as JoinRequest;
      client = new Client({ host: '127.0.0.1', port: j.port, username: 'audio-cpu-rx', reconnect: false });
      await client.connect();
      await client.joinRoom(j.room);
      await client.waitForMedia();
      call = new AudioCall(client, { mic: 'default', speaker: 'default' }, { micEnv: j.micEnv, speakerEnv: j.speakerEnv });
      call.on('device', (d) => {
        if (d.state === 'unavailable') problems.push(`${d.dir} ${d.state}: ${d.error?.message}`);
        else warnings.push(`${d.dir} ${d.state}${d.error ? `: ${d.error.message}` : ''}`);
      });
      call.on('error', (e) => problems.push(e.message));
      await call.start();
      return { user_id: client.userId, problems };
    },
    close: async () => {
      await call?.close().catch(() => undefined);
      await client?.close().catch(() => undefined);
      return { problems, warnings };
    },
  };
}

const role = process.argv[2];
if (role !== 'server' && role !== 'client') {
  process.stderr.write('usage: audio_child.ts server|client (forked by bench/audio.ts)\n');
  process.exit(2);
}
serveChild('audio_child', role === 'server' ? startServer : startClient);
