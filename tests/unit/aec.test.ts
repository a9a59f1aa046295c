/**
 * Echo canceller on real speech (espeak-ng) through synthetic rooms. Figures are
 * printed so they can be quoted; timing is printed, never asserted (TESTING.md).
 */
import { describe, expect, it } from 'vitest';
import { EchoCanceller, type EchoCancellerOptions } from '../../client/audio/aec';
import { FRAME_SAMPLES } from '../../client/audio/format';
import * as K from '../kit/audio_signals';

const ready = K.speechAvailable();
if (!ready && process.env.CI === 'true') throw new Error('espeak-ng and sox are required (apt-get install espeak-ng sox)');
const maybe = ready ? describe : describe.skip;
if (!ready) console.warn('SKIPPING aec tests: espeak-ng or sox missing (apt-get install espeak-ng sox)');

interface Run {
  /** Output shifted back by the canceller's latency: out[i] lines up with mic[i]. */
  out: Float32Array;
  aec: EchoCanceller;
  msPerFrame: number;
  delayMs: number | null;
}

/** Live-like loop: push the far frame, then process the mic frame, 20 ms at a time. */
function run(far: Float32Array | null, mic: Float32Array, opts: EchoCancellerOptions = {}, aec = new EchoCanceller(opts)): Run {
  const n = mic.length - (mic.length % FRAME_SAMPLES);
  const raw = new Float32Array(n);
  const t0 = performance.now();
  for (let i = 0; i < n; i += FRAME_SAMPLES) {
    if (far) aec.pushFar(far.subarray(i, i + FRAME_SAMPLES));
    raw.set(aec.processNear(mic.subarray(i, i + FRAME_SAMPLES)), i);
  }
  const msPerFrame = (performance.now() - t0) / (n / FRAME_SAMPLES); // includes JIT warm-up
  const lat = aec.stats().latencySamples;
  const out = new Float32Array(n);
  out.set(raw.subarray(lat));
  return { out, aec, msPerFrame, delayMs: aec.stats().delayMs };
}

const f1 = (x: number) => x.toFixed(1);

maybe('EchoCanceller', () => {
  it('acceptance: ERLE >= 25 dB after 2 s, near end intact in double-talk, delay found', async () => {
    const sc = await K.echoScenario({ seconds: 13, delayMs: 40, nearStartSec: 6 });
    const { out, delayMs, aec } = run(sc.far, sc.mic);
    // CPU figure with the JIT warm: a second, fresh canceller on the same scene (printed, not asserted).
    const { msPerFrame } = run(sc.far, sc.mic);
    const farOnly = [K.seg(2, 6)];
    const erle = K.erleDb(sc.mic, out, farOnly);
    const [dtA, dtB] = sc.doubleTalk;
    const afterDt: K.Segment[] = [[dtB + K.ms(300), out.length - K.ms(100)]];
    const erleAfter = K.erleDb(sc.mic, out, afterDt);
    const dt: K.Segment[] = [[dtA, dtB]];
    const corr = K.normalizedCorrelation(K.cut(sc.near, dt), K.cut(out, dt), { maxLagSamples: 480 });
    const micCorr = K.normalizedCorrelation(K.cut(sc.near, dt), K.cut(sc.mic, dt), { maxLagSamples: 480 });
    const atten = -20 * Math.log10(K.projectionGain(K.cut(sc.near, dt), K.cut(out, dt)));
    const perSecond = Array.from({ length: 6 }, (_, s) => f1(K.erleDb(sc.mic, out, [K.seg(s, s + 1)])));
    console.log(
      `[aec:acceptance] erle_2to6s_db=${f1(erle)} erle_per_second=[${perSecond.join(',')}] erle_after_dt_db=${f1(erleAfter)}` +
        ` dt_corr=${corr.peak.toFixed(3)} (mic ${micCorr.peak.toFixed(3)}) dt_lag=${corr.lag} near_atten_db=${atten.toFixed(2)}` +
        ` delay_ms=${delayMs?.toFixed(1)} ms_per_frame=${msPerFrame.toFixed(3)} stats=${JSON.stringify(aec.stats())}`,
    );
    expect(erle).toBeGreaterThanOrEqual(25);
    // Every second after the first two, not just on average.
    for (let s = 2; s < 6; s++) expect(K.erleDb(sc.mic, out, [K.seg(s, s + 1)])).toBeGreaterThanOrEqual(20);
    expect(corr.peak).toBeGreaterThanOrEqual(0.8);
    expect(Math.abs(corr.lag)).toBeLessThanOrEqual(2);
    expect(atten).toBeLessThan(3);
    // Double-talk did not wreck the filter.
    expect(erleAfter).toBeGreaterThanOrEqual(20);
    expect(delayMs).not.toBeNull();
    expect(Math.abs((delayMs ?? 0) - 40)).toBeLessThanOrEqual(5);
  });

  it('passes the near end untouched when no far end was ever pushed', async () => {
    const sc = await K.echoScenario({ seconds: 5, nearStartSec: 0.5 });
    const mic = K.mix(sc.near, K.whiteNoise(sc.near.length, 9, -50));
    const { out, aec } = run(null, mic);
    const n = out.length - K.ms(20);
    let diff = 0;
    for (let i = 0; i < n; i++) diff = Math.max(diff, Math.abs(out[i] - mic[i]));
    console.log(`[aec:near-only] max_abs_diff=${diff.toExponential(2)} latency_samples=${aec.stats().latencySamples}`);
    expect(diff).toBeLessThan(1e-4);
    expect(aec.stats().delayMs).toBeNull();
  });

  it('keeps a near-end talker intact while the far end is silent (far pushed, all zeros)', async () => {
    const sc = await K.echoScenario({ seconds: 5, nearStartSec: 0.5 });
    const { out } = run(new Float32Array(sc.mic.length), sc.near);
    const c = K.normalizedCorrelation(sc.near, out, { maxLagSamples: 48 });
    console.log(`[aec:far-silent] corr=${c.peak.toFixed(4)} lag=${c.lag}`);
    expect(c.peak).toBeGreaterThan(0.999);
    expect(c.lag).toBe(0);
  });

  it('re-converges after the echo path changes mid-stream', async () => {
    const a = await K.echoScenario({ seconds: 14, nearStartSec: null, roomSeed: 3 });
    const b = await K.echoScenario({ seconds: 14, nearStartSec: null, roomSeed: 99, delayMs: 55 });
    const cutAt = K.sec(6);
    const mic = K.concat(a.mic.subarray(0, cutAt), b.mic.subarray(cutAt));
    const { out, aec } = run(a.far, mic);
    const before = K.erleDb(mic, out, [K.seg(3, 6)]);
    const right = K.erleDb(mic, out, [K.seg(6, 7)]);
    const later = K.erleDb(mic, out, [K.seg(10, 14)]);
    console.log(`[aec:path-change] erle_before_db=${f1(before)} erle_first_s_after_db=${f1(right)} erle_4to8s_after_db=${f1(later)} delay_ms=${aec.stats().delayMs?.toFixed(1)}`);
    expect(before).toBeGreaterThanOrEqual(25);
    expect(later).toBeGreaterThanOrEqual(20);
    expect(Math.abs((aec.stats().delayMs ?? 0) - 55)).toBeLessThanOrEqual(5);
  });

  for (const c of [
    { name: '120 ms device delay', delayMs: 120, echoGainDb: undefined as number | undefined, far: 'speech' as const },
    { name: '300 ms delay, echo 4 dB louder than the far end', delayMs: 300, echoGainDb: 4, far: 'speech' as const },
    { name: '80 ms delay, quiet echo (-30 dB)', delayMs: 80, echoGainDb: -30, far: 'speech' as const },
    { name: 'white-noise far end, 200 ms delay', delayMs: 200, echoGainDb: undefined, far: 'noise' as const },
  ]) {
    it(`cancels with ${c.name} and finds the delay within 5 ms`, async () => {
      const sc = await K.echoScenario({ seconds: 8, delayMs: c.delayMs, echoGainDb: c.echoGainDb, far: c.far, nearStartSec: null, noiseDbfs: -80 });
      const { out, delayMs } = run(sc.far, sc.mic);
      const erle = K.erleDb(sc.mic, out, [K.seg(3, 8)]);
      console.log(`[aec:${c.name}] erle_3to8s_db=${f1(erle)} delay_ms=${delayMs?.toFixed(1)}`);
      expect(erle).toBeGreaterThanOrEqual(20);
      expect(Math.abs((delayMs ?? 0) - c.delayMs)).toBeLessThanOrEqual(5);
    });
  }

  it('tolerates far/near jitter (two of one before the other) and a far stream that stops and resumes', async () => {
    const sc = await K.echoScenario({ seconds: 12, nearStartSec: null, delayMs: 60 });
    const aec = new EchoCanceller();
    const rnd = K.seededRandom(4);
    const F = FRAME_SAMPLES;
    const frames = Math.floor(sc.mic.length / F);
    const out = new Float32Array(frames * F);
    let fi = 0;
    let ni = 0;
    // Far is skipped (not pushed) for 1 s in the middle, as when nothing is played.
    const gap = (i: number) => i >= 250 && i < 300;
    while (ni < frames) {
      const farFirst = rnd() < 0.5;
      const burst = rnd() < 0.2 ? 2 : 1;
      for (let r = 0; r < burst; r++) {
        if (farFirst && fi < frames && fi <= ni + 2) {
          if (!gap(fi)) aec.pushFar(sc.far.subarray(fi * F, fi * F + F));
          fi++;
        } else if (ni < frames && ni <= fi + 2) {
          out.set(aec.processNear(sc.mic.subarray(ni * F, ni * F + F)), ni * F);
          ni++;
        }
      }
    }
    // The echo of the far end that was not pushed is in the mic: skip that second and the tail.
    const micGapless = K.mix(sc.mic);
    const lat = aec.stats().latencySamples;
    const aligned = new Float32Array(out.length);
    aligned.set(out.subarray(lat));
    const e1 = K.erleDb(micGapless, aligned, [K.seg(2, 5)]);
    const e2 = K.erleDb(micGapless, aligned, [K.seg(8, 12)]);
    console.log(`[aec:jitter] erle_2to5s_db=${f1(e1)} erle_8to12s_db=${f1(e2)} stats=${JSON.stringify(aec.stats())}`);
    expect(e1).toBeGreaterThanOrEqual(20);
    expect(e2).toBeGreaterThanOrEqual(20);
    // The canceller measures from the pushFar() call: with random call order the first
    // far frame may arrive one frame (20 ms) after its mic frame, so 40..60 ms are both right.
    const d = aec.stats().delayMs ?? 0;
    expect(d).toBeGreaterThanOrEqual(35);
    expect(d).toBeLessThanOrEqual(65);
  });

  it('live feeding: far handed over 2-3 frames ahead of its echo, start-up priming, far bursts, a late near frame', async () => {
    // As with real devices (DevicePlayback 'played' -> pushFar, DeviceCapture 'frame' ->
    // processNear, two independent callbacks): the speaker is primed with 5 frames before
    // the microphone delivers anything, the microphone starts P frames into the far
    // stream (near frame n holds the echo of far frame n + P), each far frame is handed
    // over 2-3 frames before the near frame holding its echo is processed; now and then
    // the far side stalls for 3 frames and catches up in a burst, or a near frame comes
    // late (two back to back). The old "far pushed now = heard now, re-anchor beyond
    // 120 ms" mapping put the echo at a negative lag here and cancelled nothing.
    const sc = await K.echoScenario({ seconds: 12, nearStartSec: null, delayMs: 30 });
    const F = FRAME_SAMPLES;
    const P = 2;
    const mic = sc.mic.subarray(P * F);
    const frames = Math.floor(mic.length / F);
    const aec = new EchoCanceller();
    const out = new Float32Array(frames * F);
    const rnd = K.seededRandom(7);
    let fi = 0;
    let ni = 0;
    const push = () => {
      if (fi * F + F <= sc.far.length) aec.pushFar(sc.far.subarray(fi * F, fi * F + F));
      fi++;
    };
    const near = () => {
      out.set(aec.processNear(mic.subarray(ni * F, ni * F + F)), ni * F);
      ni++;
    };
    for (let k = 0; k < P + 3; k++) push();
    const farStall = new Set([100, 330, 480]);
    const nearLate = new Set([150, 260, 400]);
    while (ni < frames) {
      const ahead = P + 1 + (rnd() < 0.5 ? 1 : 0);
      if (farStall.has(ni)) {
        for (let k = 0; k < 3 && ni < frames; k++) near();
      } else if (nearLate.has(ni)) {
        while (fi < ni + ahead + 1) push();
        near();
      }
      while (fi < ni + ahead) push();
      if (ni < frames) near();
    }
    const lat = aec.stats().latencySamples;
    const aligned = new Float32Array(out.length);
    aligned.set(out.subarray(lat));
    const erle = K.erleDb(mic, aligned, [K.seg(3, 11)]);
    const perSecond = Array.from({ length: 11 }, (_, s) => f1(K.erleDb(mic, aligned, [K.seg(s, s + 1)])));
    console.log(`[aec:live-feeding] erle_3to11s_db=${f1(erle)} erle_per_second=[${perSecond.join(',')}] stats=${JSON.stringify(aec.stats())}`);
    expect(erle).toBeGreaterThanOrEqual(20);
    expect(aec.stats().delayMs).not.toBeNull();
  });

  it('never outputs NaN or Infinity: silence, full-scale clipping noise, NaN input, very long input', () => {
    const aec = new EchoCanceller();
    const F = FRAME_SAMPLES;
    const check = (x: Float32Array) => {
      for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]) || Math.abs(x[i]) > 4) throw new Error(`bad sample ${x[i]} at ${i}`);
    };
    const zeros = new Float32Array(F);
    for (let i = 0; i < 100; i++) {
      aec.pushFar(zeros);
      check(aec.processNear(zeros));
    }
    // Full-scale, clipped white noise on both sides (mic = clipped echo).
    const noise = K.whiteNoise(K.sec(5), 3, 0);
    for (let i = 0; i < noise.length; i++) noise[i] = Math.max(-1, Math.min(1, noise[i]));
    const clippedEcho = K.convolve(noise, K.roomImpulseResponse({ delayMs: 30, directGain: 2 }));
    for (let i = 0; i < clippedEcho.length; i++) clippedEcho[i] = Math.max(-1, Math.min(1, clippedEcho[i]));
    for (let i = 0; i + F <= noise.length; i += F) {
      aec.pushFar(noise.subarray(i, i + F));
      check(aec.processNear(clippedEcho.subarray(i, i + F)));
    }
    const bad = new Float32Array(F).fill(NaN);
    aec.pushFar(bad);
    check(aec.processNear(bad));
    // A long run (1 min) of far noise with a quiet mic; odd frame sizes too.
    const long = K.whiteNoise(K.sec(60), 8, -25);
    const mic = K.scale(K.delay(long, K.ms(50)), 0.3);
    for (let i = 0; i + 1000 <= long.length; i += 1000) {
      aec.pushFar(long.subarray(i, i + 1000));
      check(aec.processNear(mic.subarray(i, i + 1000)));
    }
    const s = aec.stats();
    console.log(`[aec:robustness] stats_after_long_run=${JSON.stringify(s)}`);
    expect(Number.isFinite(s.erleDb)).toBe(true);
    expect(s.latencySamples).toBeLessThanOrEqual(240 + 480);
  });
});
