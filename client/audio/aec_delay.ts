/**
 * Delay estimation between the far-end reference and the microphone, in blocks.
 *
 * Method: binary-spectrum matching, as in WebRTC's delay estimator
 * (modules/audio_processing/utility/delay_estimator.cc, "BinaryDelayEstimator").
 * Each block's power spectrum is reduced to 32 bits, one per band, set when that
 * band's power is above its own slowly tracked mean. For every candidate lag k the
 * estimator keeps a running mean of the Hamming distance between the near bits now
 * and the far bits k blocks ago; the lag with the smallest mean distance is the
 * delay. Only the pattern of band activity is compared, so the echo path gain, the
 * room colouring and near-end noise hardly matter, and one block costs about
 * (lags) XOR+popcount operations. A candidate is only accepted once it is clearly
 * better than the average lag and has won for a while (hysteresis), so double-talk
 * or a pause in the far end cannot make the estimate jump.
 */

export const DELAY_BANDS = 32;

/** Band edges (in FFT bins) for `bins` bins over 0..sampleRate/2: log-spaced 250 Hz..7 kHz. */
export function delayBandEdges(bins: number, sampleRate: number): Int32Array {
  const edges = new Int32Array(DELAY_BANDS + 1);
  const hzPerBin = sampleRate / 2 / (bins - 1);
  const lo = 250;
  const hi = Math.min(7000, sampleRate * 0.45);
  let prev = Math.max(1, Math.round(lo / hzPerBin));
  edges[0] = prev;
  for (let b = 1; b <= DELAY_BANDS; b++) {
    const hz = lo * Math.pow(hi / lo, b / DELAY_BANDS);
    let e = Math.round(hz / hzPerBin);
    if (e <= prev) e = prev + 1;
    edges[b] = e;
    prev = e;
  }
  return edges;
}

/** Reduces power spectra to 32-bit band-activity words; one instance per signal (far, near). */
export class BinarySpectrum {
  private readonly edges: Int32Array;
  private readonly mean = new Float64Array(DELAY_BANDS);
  private frames = 0;

  constructor(edges: Int32Array) {
    this.edges = edges;
  }

  /** Bits of `power` (per-bin power of one block); updates the per-band thresholds. */
  bits(power: Float64Array | Float32Array): number {
    let word = 0;
    // Fast start, then a ~0.3 s (64 blocks) mean, as WebRTC's MeanEstimator (factor 1/64).
    const a = this.frames < 64 ? 1 / (this.frames + 1) : 1 / 64;
    this.frames++;
    for (let b = 0; b < DELAY_BANDS; b++) {
      let s = 0;
      for (let k = this.edges[b]; k < this.edges[b + 1]; k++) s += power[k];
      const m = this.mean[b];
      if (s > m && this.frames > 1) word |= 1 << b;
      this.mean[b] = m + a * (s - m);
    }
    return word >>> 0;
  }

  reset(): void {
    this.mean.fill(0);
    this.frames = 0;
  }
}

function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

export class BlockDelayEstimator {
  readonly lags: number;
  private readonly meanDist: Float64Array;
  private readonly updates: Int32Array;
  private candidate = -1;
  private candidateRun = 0;
  private accepted = -1;
  private quality = 0;

  /** `lags`: number of candidate lags (blocks 0..lags-1). */
  constructor(lags: number) {
    this.lags = lags;
    this.meanDist = new Float64Array(lags);
    this.updates = new Int32Array(lags);
    this.reset();
  }

  reset(): void {
    this.meanDist.fill(16);
    this.updates.fill(0);
    this.candidate = -1;
    this.candidateRun = 0;
    this.accepted = -1;
    this.quality = 0;
  }

  /**
   * One near block. `farBits(k)` returns the far word k blocks back, or -1 when that
   * block is not (yet) known; only call this while the far end is active.
   */
  update(nearBits: number, farBits: (k: number) => number): void {
    let best = -1;
    let bestVal = Infinity;
    let sum = 0;
    let n = 0;
    for (let k = 0; k < this.lags; k++) {
      const f = farBits(k);
      if (f >= 0) {
        const d = popcount((nearBits ^ f) >>> 0);
        const u = this.updates[k];
        // Quick start (plain mean over the first 50 updates), then a ~0.75 s memory (150 blocks)
        // so that a device-path change (an output underrun) is followed quickly.
        const a = u < 50 ? 1 / (u + 1) : 1 / 150;
        this.meanDist[k] += a * (d - this.meanDist[k]);
        this.updates[k] = u + 1;
      }
      const m = this.meanDist[k];
      if (this.updates[k] >= 20) {
        sum += m;
        n++;
        if (m < bestVal) {
          bestVal = m;
          best = k;
        }
      }
    }
    if (best < 0 || n < 2) return;
    const avg = sum / n;
    this.quality = avg - bestVal;
    // Accept a new lag once it has been the clear winner for 25 consecutive blocks
    // (~125 ms of far-end activity), so short-lived minima never move the filter.
    if (this.quality < 1.5) {
      this.candidateRun = 0;
      return;
    }
    if (best === this.candidate) this.candidateRun++;
    else {
      this.candidate = best;
      this.candidateRun = 1;
    }
    if (this.candidateRun >= 25) this.accepted = this.candidate;
  }

  /**
   * The far timeline had a discontinuity (a pause padded with silence): the lag may
   * have changed by a few blocks. Forget the distance history (quick start again) but
   * keep the accepted lag until a new one has won.
   */
  restart(): void {
    this.meanDist.fill(16);
    this.updates.fill(0);
    this.candidate = -1;
    this.candidateRun = 0;
  }

  /**
   * The lag origin moved back by `by` blocks (the far read position moved forward):
   * what was measured at lag k is now at lag k + by; the lags below `by` start afresh.
   */
  shift(by: number): void {
    if (by <= 0) return;
    const L = this.lags;
    for (let k = L - 1; k >= 0; k--) {
      if (k >= by) {
        this.meanDist[k] = this.meanDist[k - by];
        this.updates[k] = this.updates[k - by];
      } else {
        this.meanDist[k] = 16;
        this.updates[k] = 0;
      }
    }
    const move = (x: number) => (x < 0 || x + by >= L ? -1 : x + by);
    this.candidate = move(this.candidate);
    if (this.candidate < 0) this.candidateRun = 0;
    this.accepted = move(this.accepted);
  }

  /** The accepted lag in blocks, or -1 while unknown. */
  get lag(): number {
    return this.accepted;
  }

  /** How much better the best lag is than the average one, in mismatched bits. */
  get confidence(): number {
    return this.quality;
  }

  /** Mean distance at lag k (for tests and diagnostics). */
  distanceAt(k: number): number {
    return this.meanDist[k];
  }
}
