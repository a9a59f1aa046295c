/**
 * Audio end to end through real parts: a private PulseAudio with null sinks (the
 * microphones are sinks we play known signals into, read back through their
 * monitors; the speakers are sinks we record), naudiodon/PortAudio devices, Opus, the
 * real relay, the jitter buffer, and the test kit's seeded impairment proxy.
 * Several clients run in this process; each one's devices are routed by the
 * PULSE_SOURCE / PULSE_SINK environment its streams are opened with.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AudioCall, type AudioSettings } from '../../client/audio_call';
import type { Client } from '../../client/main_client';
import { floatToInt16, int16ToFloat, SAMPLE_RATE } from '../../client/audio/format';
import { ImpairmentProxy, type ProxyGroup } from '../kit/impairment_proxy';
import { startPulse, type Pulse, type Recorder } from '../kit/pulse';
import { Harness, sleep, waitUntil } from '../kit/server';
import { killAll, runCli, type RunningProcess } from '../kit/processes';
import { which } from '../kit/xvfb';
import { alignedCorrelation, longestSilenceMs, rmsDb, scale, segmentedCorrelation, speech, speechAvailable, sweep, trimSilence } from '../kit/audio_signals';

const IS_CI = process.env.CI === 'true' || process.env.CI === '1';
const MISSING = ['pulseaudio', 'pactl', 'pacat', 'parec', 'espeak-ng', 'sox'].filter((c) => !which(c));
if (MISSING.length && IS_CI) throw new Error(`CI=true and audio test tools missing (${MISSING.join(', ')}): run \`npm run setup\` as root`);
const run = MISSING.length ? describe.skip : describe;
if (MISSING.length) console.warn(`SKIPPING audio end-to-end tests: ${MISSING.join(', ')} not installed`);

const SINKS = ['micA', 'spkA', 'micB', 'spkB', 'micC', 'spkC', 'spk5', 'spk15'];
let pulse: Pulse;
let drains: Recorder[] = [];
const h = new Harness();
const calls: AudioCall[] = [];
const groups: ProxyGroup[] = [];
const procs: RunningProcess[] = [];

beforeAll(async () => {
  if (MISSING.length) return;
  expect(speechAvailable()).toBe(true);
  pulse = await startPulse({ sinks: SINKS });
  // A null sink that nobody reads stalls its players for ~0.75 s at a time (measured), which
  // a client takes for a lost speaker: every sink is read for the whole file, as a sound card
  // always plays.
  drains = SINKS.map((s) => pulse.record(s, { discard: true }));
}, 30_000);
afterAll(async () => {
  await Promise.all(drains.map((d) => d.stop()));
  await pulse?.stop();
});
afterEach(async () => {
  await killAll(procs);
  await Promise.all(calls.splice(0).map((c) => c.close()));
  await Promise.all(groups.splice(0).map((g) => g.close()));
  await h.closeAll();
});

/** An AudioCall on real devices: its microphone hears sink `mic`, its speaker plays into sink `spk` (or none). */
async function call(c: Client, mic: string | null, spk: string | null, settings: Partial<AudioSettings> = {}): Promise<AudioCall> {
  const a = new AudioCall(
    c,
    { mic: mic ? 'default' : 'none', speaker: spk ? 'default' : 'none', ...settings },
    { micEnv: mic ? pulse.env({ source: `${mic}.monitor` }) : undefined, speakerEnv: spk ? pulse.env({ sink: spk }) : undefined },
  );
  const problems: string[] = [];
  a.on('device', (d) => d.error && problems.push(`${d.dir} ${d.state}: ${d.error.message}`));
  a.on('device', (d) => d.state !== 'unavailable' && console.log(`${c.username}'s ${d.dir}: ${d.state} ${d.error?.message ?? ''}`));
  a.on('error', (e) => problems.push(e.message));
  calls.push(a);
  await a.start();
  expect(problems).toEqual([]);
  return a;
}

/** Waits until every call's devices deliver (PortAudio over pulse takes up to ~2 s to start). */
async function warm(...cs: AudioCall[]): Promise<void> {
  const base = cs.map((c) => c.stats().counters);
  await waitUntil(
    () =>
      cs.every((c, i) => {
        const s = c.stats();
        const n = s.counters;
        return (!s.mic || n.captured > base[i].captured + 25) && (c.settings.speaker === 'none' || n.played > base[i].played + 25);
      }),
    10_000,
    'audio devices running',
  );
  // Then a second more, as people do not speak the moment they join: PortAudio's start-up
  // (busy for up to 2 s) and the first adjustments of the jitter buffers are over by then.
  await sleep(1000);
}

const f32 = (x: Int16Array) => int16ToFloat(x);
const i16 = (x: Float32Array) => floatToInt16(x);

run('audio end to end (PulseAudio devices)', () => {
  it("A's speech reaches B's speaker (correlation ≥ 0.8 after alignment), B's own voice never comes back to B, and each hears the other", async () => {
    const { clients } = await h.meeting(['ann', 'bob']);
    const [ann, bob] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    const a = await call(ann, 'micA', 'spkA');
    const b = await call(bob, 'micB', 'spkB');
    await warm(a, b);
    const annSays = await speech('Hello Bob, can you hear me? The quick brown fox jumps over the lazy dog.', 'en+m3');
    const bobSays = await speech('Yes Ann, I hear you clearly. Seven sheep sleep on a ship.', 'en+f2');
    const atB = pulse.record('spkB');
    const atA = pulse.record('spkA');
    // One after the other, as in a conversation (three talkers at once is the next test).
    await pulse.play('micA', i16(annSays));
    await sleep(300);
    await pulse.play('micB', i16(bobSays));
    await sleep(600);
    const heardByB = f32(await atB.stop());
    const heardByA = f32(await atA.stop());

    // Aligned piece by piece (the jitter buffer may drop or add a frame), judged by the median
    // 100 ms piece (a sound card underrun on a busy machine spoils one or two): see segmentedCorrelation.
    const bHearsAnn = segmentedCorrelation(heardByB, annSays, { maxLagSeconds: 2 });
    const bobStarts = annSays.length / SAMPLE_RATE; // bob speaks after ann
    const aHearsBob = segmentedCorrelation(heardByA, bobSays, { maxLagSeconds: bobStarts + 2 });
    const bHearsItself = alignedCorrelation(heardByB, bobSays, { maxLagSeconds: bobStarts + 2 });
    console.log(
      `A->B: correlation median ${bHearsAnn.median.toFixed(3)}, mean ${bHearsAnn.mean.toFixed(3)}, worst 100 ms ${bHearsAnn.worst.toFixed(3)}, at ${((bHearsAnn.lag / SAMPLE_RATE) * 1000).toFixed(0)} ms into the recording; ` +
        `B->A median ${aHearsBob.median.toFixed(3)}, mean ${aHearsBob.mean.toFixed(3)}; B's own voice at B ${bHearsItself.peak.toFixed(3)}`,
    );
    expect(bHearsAnn.median).toBeGreaterThanOrEqual(0.8);
    expect(aHearsBob.median).toBeGreaterThanOrEqual(0.8);
    expect(Math.abs(bHearsItself.peak)).toBeLessThan(0.2);
    // What B heard of ann is about as loud as she spoke.
    const atLag = alignedCorrelation(heardByB, annSays, { maxLagSeconds: 2 }).aligned;
    expect(Math.abs(rmsDb(atLag) - rmsDb(annSays))).toBeLessThan(6);
    // Levels and the active speaker reached the other side.
    expect(bob.activeSpeaker?.user_id === ann.userId || bob.activeSpeaker?.user_id === bob.userId).toBe(true);
  }, 60_000);

  it('three talkers: B hears A and C at once, each clearly detectable in the mix', async () => {
    const { clients } = await h.meeting(['ann', 'bob', 'cat']);
    const [ann, bob, cat] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    const a = await call(ann, 'micA', null);
    const b = await call(bob, null, 'spkB');
    const c = await call(cat, 'micC', null);
    await warm(a, b, c);
    // Equally loud (in their active parts), as two people at one table.
    const annRaw = await speech('One two three four five, the meeting starts at nine.', 'en+m3');
    const catRaw = await speech('Please share the slides from the budget review now.', 'en+f3');
    const annSays = scale(annRaw, Math.pow(10, (-24 - rmsDb(trimSilence(annRaw))) / 20));
    const catSays = scale(catRaw, Math.pow(10, (-24 - rmsDb(trimSilence(catRaw))) / 20));
    const atB = pulse.record('spkB');
    await Promise.all([pulse.play('micA', i16(annSays)), pulse.play('micC', i16(catSays))]);
    await sleep(600);
    const heard = f32(await atB.stop());
    // In a mix of two equally loud voices each 100 ms piece of one voice correlates about 0.7
    // (less where the other is louder): judged against an utterance nobody said.
    const nobodySaid = await speech('Lunch will be served in the garden after the talks.', 'en+m2');
    const ofAnn = segmentedCorrelation(heard, annSays, { maxLagSeconds: 2 });
    const ofCat = segmentedCorrelation(heard, catSays, { maxLagSeconds: 2 });
    const ofNobody = segmentedCorrelation(heard, nobodySaid, { maxLagSeconds: 2 });
    console.log(
      `three talkers: in B's mix, median correlation ann ${ofAnn.median.toFixed(3)}, cat ${ofCat.median.toFixed(3)}, an utterance nobody said ${ofNobody.median.toFixed(3)}`,
    );
    for (const of of [ofAnn, ofCat]) {
      expect(of.median).toBeGreaterThanOrEqual(0.4);
      expect(of.median).toBeGreaterThanOrEqual(ofNobody.median + 0.15);
    }
    const levels = b.levels().talkers.map((t) => t.username).sort();
    expect(levels).toEqual(['ann', 'cat']);
  }, 60_000);

  it('at 5% and 15% loss with jitter: no silence gap over 60 ms in the listener\'s speaker; quality against the loss-free listener is reported', async () => {
    const server = await h.server();
    const targets = Object.fromEntries(Object.entries(server.media.ports).map(([k, port]) => [k, { host: '127.0.0.1', port }]));
    const lossy = async (loss: number, seed: number) => {
      const g = await ImpairmentProxy.many(targets, { seed, downstream: { loss, delayMs: 10, jitterMs: 15, reorder: 0.02 } });
      groups.push(g);
      return g;
    };
    const g5 = await lossy(0.05, 5);
    const g15 = await lossy(0.15, 15);
    const ann = await h.client(server, 'ann');
    const clean = await h.client(server, 'clean');
    const l5 = await h.client(server, 'lossy5', { mediaOptions: { portsOverride: g5.ports } });
    const l15 = await h.client(server, 'lossy15', { mediaOptions: { portsOverride: g15.ports } });
    const room = await ann.createRoom({ name: 'Lossy' });
    for (const c of [ann, clean, l5, l15]) await c.joinRoom(room.room_id);
    await Promise.all([ann, clean, l5, l15].map((c) => c.waitForMedia()));
    // A continuous signal (a sweep up and down), so any gap in the output is the network's doing;
    // the noise suppressor would treat a pure sweep as noise, so the sender runs without it.
    const a = await call(ann, 'micA', null, { ns: false, aec: false });
    const listeners = [await call(clean, null, 'spkB'), await call(l5, null, 'spk5'), await call(l15, null, 'spk15')];
    await warm(a, ...listeners);
    const up = sweep(300, 2500, 2 * SAMPLE_RATE, 0.4);
    const signal = new Float32Array(up.length * 2);
    signal.set(up);
    signal.set(up.slice().reverse(), up.length);
    // What each listener's pipeline hands its speaker (the gaps are judged there: a sound
    // card underrun on a busy machine is not the network's doing), and what the speaker played.
    const handed: Int16Array[][] = listeners.map(() => []);
    listeners.forEach((l, i) => l.on('output', (f) => handed[i].push(f)));
    const recs = ['spkB', 'spk5', 'spk15'].map((s) => pulse.record(s));
    await pulse.play('micA', i16(signal));
    await sleep(500);
    const outs = (await Promise.all(recs.map((r) => r.stop()))).map(f32);
    const mixes = handed.map((frames) => {
      const all = new Int16Array(frames.length * frames[0].length);
      frames.forEach((f, k) => all.set(f, k * f.length));
      return f32(all);
    });
    const aligned = mixes.map((o) => alignedCorrelation(o, signal, { maxLagSeconds: 3 }));
    const report: string[] = [];
    const gaps: number[] = [];
    const quality: number[] = [];
    for (const [i, name] of ['loss-free', '5% loss', '15% loss'].entries()) {
      // The played part only (100 ms trimmed at each end: onset, tail, a frame or two of time-scaling).
      const trim = Math.round(0.1 * SAMPLE_RATE);
      const part = aligned[i].aligned.subarray(trim, aligned[i].aligned.length - trim);
      const gap = longestSilenceMs(part, { thresholdDb: -45 });
      const vsSent = segmentedCorrelation(outs[i], signal, { maxLagSeconds: 2 });
      const vsClean = i === 0 ? null : segmentedCorrelation(mixes[i], aligned[0].aligned, { maxLagSeconds: 3 });
      const deviceGap = longestSilenceMs(alignedCorrelation(outs[i], signal, { maxLagSeconds: 2 }).aligned.subarray(trim, signal.length - trim), { thresholdDb: -45 });
      const jb = listeners[i].stats().talkers[0]?.jitter;
      gaps.push(gap);
      quality.push(vsSent.median);
      report.push(
        `${name}: longest gap ${gap.toFixed(1)} ms (at the speaker itself ${deviceGap.toFixed(1)} ms), correlation with the sent signal median ${vsSent.median.toFixed(3)}, mean ${vsSent.mean.toFixed(3)}, worst 100 ms ${vsSent.worst.toFixed(3)}` +
          `${vsClean ? `; with the loss-free output median ${vsClean.median.toFixed(3)}, mean ${vsClean.mean.toFixed(3)}` : ''}; ` +
          `jitter buffer target ${jb?.targetDelayMs.toFixed(0)} ms, recovered ${jb?.fecRecovered}, concealed ${jb?.concealed}, late ${jb?.late}, ` +
          `dropped ${jb?.driftDropped}, inserted ${jb?.driftInserted}`,
      );
    }
    console.log(`impaired audio:\n  ${report.join('\n  ')}`);
    for (const [i, name] of ['loss-free', '5% loss', '15% loss'].entries()) {
      expect(gaps[i], `${name}: silence gap`).toBeLessThanOrEqual(60);
      expect(quality[i], `${name}: correlation with the sent signal`).toBeGreaterThan(0.8);
    }
    // The lossy listeners really lost packets, and the redundancy recovered most of them.
    const s15 = listeners[2].stats().talkers[0].jitter;
    expect(s15.fecRecovered).toBeGreaterThan(10);
  }, 90_000);

  it("live echo: B's speaker leaks fully into B's microphone; with echo cancellation A hears its own voice back at least 25 dB quieter than without", async () => {
    const server = await h.server();
    const ann = await h.client(server, 'ann');
    const room = await ann.createRoom({ name: 'Echo' });
    await ann.joinRoom(room.room_id);
    await ann.waitForMedia();
    const a = await call(ann, 'micA', 'spkA');
    // Bob is a real run_client.ts process (his own event loop, as on his own machine) whose
    // microphone is his own speaker's monitor: all he plays comes back, as from a laptop
    // speaker. Noise suppression is off so that what is measured is the echo canceller.
    const bob = runCli(
      ['--port', String(server.port), '--user', 'bob', '--room', 'Echo', '--mic', 'default', '--speaker', 'default', '--no-ns', '--no-aec', '--stay', '--exec', '/wait 0'],
      pulse.env({ source: 'spkB.monitor', sink: 'spkB' }),
    );
    procs.push(bob);
    await bob.waitFor(/Your microphone is live/, 20_000);
    await warm(a);
    await sleep(2500); // bob's PortAudio start-up
    const annSays = await speech('This is Ann talking. If you hear me twice, the echo canceller is not working. One, two, three.', 'en+m3');

    const echoOf = async (): Promise<number> => {
      const atA = pulse.record('spkA');
      await pulse.play('micA', i16(annSays));
      await sleep(500);
      const back = f32(await atA.stop());
      return rmsDb(back);
    };
    const without = await echoOf();
    bob.type('/aec on');
    await bob.waitFor(/Echo cancellation is on/, 5000);
    // Converge on a first utterance, then measure the second.
    await pulse.play('micA', i16(annSays));
    const withAec = await echoOf();
    const erl = without - withAec;
    console.log(`live echo back at A: ${without.toFixed(1)} dBFS without AEC, ${withAec.toFixed(1)} dBFS with: ${erl.toFixed(1)} dB quieter`);
    expect(without).toBeGreaterThan(-40); // the echo is really there without the canceller
    // About 40 dB measured here. A playback underrun (an event loop late by some 30 ms, e.g.
    // several clients and the server in one busy process) moves the echo and costs a
    // re-convergence: that is why bob has a process of his own, as on his own machine.
    expect(erl).toBeGreaterThanOrEqual(25);
  }, 90_000);
});
