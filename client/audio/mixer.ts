/**
 * Sums the room's voices into one 20 ms frame for the speaker, with each listener's
 * per-participant volume, and keeps the sum from clipping.
 *
 * Clipping protection is a peak limiter with instant attack and slow release (as in
 * any broadcast limiter; cf. WebRTC's AGC2 limiter): the gain needed to keep the
 * frame's peak under LIMIT is reached at once, then interpolated sample by sample
 * from the previous frame's gain so the change never clicks, and it recovers towards
 * 1 by RELEASE per frame. One voice at normal levels passes untouched (gain 1).
 */
import { FRAME_SAMPLES } from './format';

const LIMIT = 0.97;
/** Gain recovery per 20 ms frame (≈ 0.4 s from -6 dB back to 0 dB). */
const RELEASE = 1.035;

export class Mixer {
  private readonly acc = new Float32Array(FRAME_SAMPLES);
  private gain = 1;
  private inputs = 0;
  /** Frames in which the limiter reduced the gain (for stats and tests). */
  limited = 0;

  /** Starts a new output frame. */
  begin(): void {
    this.acc.fill(0);
    this.inputs = 0;
  }

  /** Adds one voice (s16, 960 samples) at `volume` (1 = as received, 0..2). */
  add(pcm: Int16Array, volume = 1): void {
    if (volume <= 0) return;
    const k = volume / 32768;
    const a = this.acc;
    for (let i = 0; i < FRAME_SAMPLES; i++) a[i] += pcm[i] * k;
    this.inputs++;
  }

  /** The mixed frame, limited; valid until the next begin(). */
  finish(): Float32Array {
    const a = this.acc;
    let peak = 0;
    for (let i = 0; i < FRAME_SAMPLES; i++) {
      const v = a[i] < 0 ? -a[i] : a[i];
      if (v > peak) peak = v;
    }
    const from = this.gain;
    let to = Math.min(1, from * RELEASE);
    if (peak * to > LIMIT) to = LIMIT / peak;
    if (to < 1) this.limited++;
    if (from !== 1 || to !== 1) {
      // Never exceed the limit: where the ramp would (attack), use the target at once.
      const step = (to - from) / FRAME_SAMPLES;
      for (let i = 0; i < FRAME_SAMPLES; i++) {
        const g = to < from ? to : from + step * (i + 1);
        a[i] *= g;
      }
    }
    this.gain = to;
    return a;
  }

  get voices(): number {
    return this.inputs;
  }
}
