/**
 * RNNoise wrapper on real speech (espeak-ng) in white and babble-like noise at 5 dB SNR.
 * Figures are printed so they can be quoted; timing is printed, never asserted.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES, NS_FRAME_SAMPLES } from '../../client/audio/format';
import { NoiseSuppressor } from '../../client/audio/noise_suppressor';
import * as K from '../kit/audio_signals';

const ready = K.speechAvailable();
if (!ready && process.env.CI === 'true') throw new Error('espeak-ng and sox are required (apt-get install espeak-ng sox)');
const maybe = ready ? describe : describe.skip;
if (!ready) console.warn('SKIPPING noise suppressor tests: espeak-ng or sox missing (apt-get install espeak-ng sox)');

const LAT = NoiseSuppressor.LATENCY_SAMPLES;
const created: NoiseSuppressor[] = [];
afterEach(() => {
  for (const ns of created.splice(0)) ns.destroy();
});

async function make(): Promise<NoiseSuppressor> {
  const ns = await NoiseSuppressor.create();
  created.push(ns);
  return ns;
}

/** Runs 20 ms frames; returns the output shifted back by RNNoise's latency and the VAD per frame. */
async function denoise(x: Float32Array): Promise<{ out: Float32Array; vad: number[]; msPer480: number }> {
  const ns = await make();
  const n = x.length - (x.length % FRAME_SAMPLES);
  const raw = new Float32Array(n);
  const vad: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i += FRAME_SAMPLES) {
    raw.set(ns.process(x.subarray(i, i + FRAME_SAMPLES)), i);
    vad.push(ns.lastVad);
  }
  const msPer480 = (performance.now() - t0) / (n / NS_FRAME_SAMPLES);
  const out = new Float32Array(n);
  out.set(raw.subarray(LAT));
  return { out, vad, msPer480 };
}

async function talk(): Promise<Float32Array> {
  const s = await K.speechSequence(
    [
      { text: 'The meeting starts at nine, so please be on time and bring your notes.' },
      { text: 'We will talk about the new office and the schedule for the move.', voice: 'en+f3' },
      { text: 'Questions can be sent by chat during the call.', voice: 'en-us+m4' },
    ],
    900,
  );
  return K.concat(K.silence(1500), s, K.silence(1000));
}

maybe('NoiseSuppressor', () => {
  for (const kind of ['white', 'babble'] as const) {
    it(`${kind} noise at 5 dB SNR: noise-only parts >= 10 dB quieter, speech kept, VAD follows speech`, async () => {
      const clean = await talk();
      const noise = kind === 'white' ? K.whiteNoise(clean.length, 21, -30) : await K.babble(clean.length, -30);
      const { mix } = K.mixAtSnr(clean, noise, 5);
      const { out, vad, msPer480 } = await denoise(mix);
      const n = out.length - LAT;
      // Speech where clean speech is active (padded), noise-only well away from it.
      const speechSegs = K.activeSegments(clean.subarray(0, n), { thresholdDb: -35, relative: true, padMs: 40, bridgeMs: 150 });
      const noiseOnly = K.complement(
        speechSegs.map(([a, b]) => [a - K.ms(150), b + K.ms(150)] as K.Segment),
        [K.ms(300), n],
      ).filter(([a, b]) => b - a >= K.ms(200));
      const reduction = 10 * Math.log10(K.energy(mix, noiseOnly) / K.energy(out, noiseOnly));
      const cleanSp = K.cut(clean, speechSegs);
      const corrOut = K.normalizedCorrelation(cleanSp, K.cut(out, speechSegs), { maxLagSamples: 96 });
      const corrIn = K.normalizedCorrelation(cleanSp, K.cut(mix, speechSegs), { maxLagSamples: 96 });
      const speechLoss = -10 * Math.log10(K.energy(out, speechSegs) / K.energy(clean, speechSegs));
      // VAD per 20 ms frame: mean over frames fully inside speech vs fully in noise-only parts.
      const inside = (segs: K.Segment[], f: number) => segs.some(([a, b]) => f * FRAME_SAMPLES >= a && (f + 1) * FRAME_SAMPLES <= b);
      const mean = (xs: number[]) => xs.reduce((s, v) => s + v, 0) / Math.max(1, xs.length);
      const vadSpeech = mean(vad.filter((_, f) => inside(speechSegs, f)));
      const vadNoise = mean(vad.filter((_, f) => inside(noiseOnly, f)));
      console.log(
        `[ns:${kind}] noise_reduction_db=${reduction.toFixed(1)} speech_corr=${corrOut.peak.toFixed(3)} (noisy input ${corrIn.peak.toFixed(3)})` +
          ` lag=${corrOut.lag} speech_level_change_db=${(-speechLoss).toFixed(1)} vad_speech=${vadSpeech.toFixed(2)} vad_noise=${vadNoise.toFixed(2)}` +
          ` ms_per_480=${msPer480.toFixed(3)} noise_only_s=${(K.segmentsLength(noiseOnly) / K.RATE).toFixed(1)}`,
      );
      expect(K.segmentsLength(noiseOnly)).toBeGreaterThan(K.sec(2));
      expect(reduction).toBeGreaterThanOrEqual(10);
      expect(corrOut.peak).toBeGreaterThanOrEqual(0.7);
      expect(corrOut.peak).toBeGreaterThan(corrIn.peak - 0.1);
      expect(Math.abs(corrOut.lag)).toBeLessThanOrEqual(2);
      expect(vadSpeech).toBeGreaterThan(vadNoise + 0.2);
    });
  }

  it('adds no latency beyond RNNoise own 480 samples, and passes clean speech', async () => {
    const clean = await talk();
    const ns = await make();
    const n = clean.length - (clean.length % FRAME_SAMPLES);
    const raw = new Float32Array(n);
    for (let i = 0; i < n; i += FRAME_SAMPLES) raw.set(ns.process(clean.subarray(i, i + FRAME_SAMPLES)), i);
    const c = K.normalizedCorrelation(clean.subarray(0, n), raw, { maxLagSamples: 2400 });
    console.log(`[ns:latency] lag_samples=${c.lag} corr=${c.peak.toFixed(3)}`);
    expect(c.lag).toBe(LAT);
    expect(c.peak).toBeGreaterThan(0.9);
  });

  it('rejects frames that are not a multiple of 480 and refuses use after destroy()', async () => {
    const ns = await make();
    expect(() => ns.process(new Float32Array(500))).toThrow(/multiple of 480/);
    const out = ns.process(new Float32Array(480).fill(NaN));
    expect(out.every((v) => Number.isFinite(v))).toBe(true);
    ns.destroy();
    ns.destroy();
    expect(() => ns.process(new Float32Array(480))).toThrow(/destroy/);
  });
});
