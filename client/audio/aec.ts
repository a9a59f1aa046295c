/**
 * Acoustic echo canceller: removes from the microphone signal what the loudspeaker
 * played (the far end) after it went through the room.
 *
 * Pipeline, per block of 240 samples (5 ms at 48 kHz; 4 blocks per 20 ms frame, so
 * the live 960-sample frames need no FIFO):
 *
 * 1. Far-end alignment and delay estimation (aec_delay.ts). Every far block is
 *    transformed once when it is pushed and kept in a ring indexed by far block
 *    number: a FIFO in push order, as Speex's echo_playback/echo_capture and WebRTC's
 *    render queue. The near side reads it at its own pace from a read position set
 *    when both streams run (the newest far sample is "current") and moved forward,
 *    compensated, whenever the far side gets further ahead (start-up priming, bursts,
 *    a late near frame); a binary-spectrum delay estimator (WebRTC's) finds the bulk
 *    device delay as a lag back from it (up to maxDelayMs) so the adaptive filter only
 *    has to model the room. Far pauses and output underruns (silence the device
 *    played but nobody pushed) are padded with silence.
 *
 * 2. Linear echo canceller: a partitioned-block frequency-domain adaptive filter, the
 *    multi-delay filter (MDF) of Soo & Pang ("Multidelay block frequency domain
 *    adaptive filter", IEEE Trans. ASSP 38(2), 1990), with the learning-rate control
 *    of J.-M. Valin ("On Adjusting the Learning Rate in Frequency Domain Echo
 *    Cancellation With Double-Talk", IEEE Trans. ASLP 15(3), 2007), ported from
 *    Speex's mdf.c: the step in each bin is the estimated residual-echo-to-error
 *    ratio, derived from the "leakage" regression of error power on echo-estimate
 *    power, which stays unbiased when the near end talks: this is the double-talk
 *    handling, there is no hard detector to miss. Also from mdf.c: the two-path
 *    structure (a background filter adapts, a foreground filter produces the output
 *    and is only replaced when the background is significantly better, and the
 *    background is reset when it diverges), proportionate (PNLMS-like) per-partition
 *    step, alternate gradient constraint (AUMDF), pre-emphasis, saturation guard.
 *    Partition length = block = 240, FFT 512 (240 + 240 + 32 zeros: overlap-save
 *    with a linear, not circular, convolution over each partition).
 *
 * 3. Residual echo suppressor: a per-bin gain on a 50% overlapped sqrt-Hann STFT of
 *    the linear output. The residual echo power per bin is the echo estimate's power
 *    times a per-band leakage, estimated with the same regression as Valin's (the
 *    covariance of the fluctuations of error power and echo-estimate power over
 *    their variance), so it measures the echo left in the output, not the near-end
 *    speech. The gain is a decision-directed Wiener gain (Ephraim & Malah 1984 as
 *    used by Speex's preprocessor echo suppression) against that residual only:
 *    bins where the near end dominates keep a gain near 1, which is what keeps
 *    double-talk intact (WebRTC's legacy NLP instead scales whole bands by the
 *    far/near coherence and cuts the near end). Costs one block (5 ms) of latency.
 *
 * Samples are handled internally in int16 units (x32768) so the constants of mdf.c
 * keep their meaning. Nothing is allocated per frame.
 */
import { RealFft } from './aec_fft';
import { BinarySpectrum, BlockDelayEstimator, delayBandEdges } from './aec_delay';

export interface EchoCancellerOptions {
  sampleRate?: number /* 48000 */;
  /** Length of the room response the adaptive filter models (default 200 ms). */
  filterMs?: number;
  /** Largest device delay searched (default 500 ms). */
  maxDelayMs?: number;
  /** Residual echo suppressor on (default true); off leaves only the linear filter. */
  suppressor?: boolean;
}

export interface EchoCancellerStats {
  /** Estimated device delay (speaker write -> echo at the mic), null until known. */
  delayMs: number | null;
  /** Echo return loss enhancement over the last ~1 s of far-end activity (mic / output power). */
  erleDb: number;
  /** Same, for the linear filter alone (before the residual suppressor). */
  linearErleDb: number;
  /** Near-end speech detected while the far end is active. */
  doubleTalk: boolean;
  /** The far end is playing something. */
  farActive: boolean;
  /** The adaptive filter has passed its initial adaptation. */
  converged: boolean;
  /** Valin's leakage estimate: residual echo / echo estimate (power). */
  leak: number;
  /** Samples of latency added between processNear's input and output. */
  latencySamples: number;
  /** Far/mic timeline re-synchronisations (far stream stopped, near stalled, drift). */
  resyncs: number;
}

const BLOCK = 240;
const FFT_SIZE = 512;
const BINS = FFT_SIZE / 2 + 1;
const PREEMPH = 0.9;
/** mdf.c: "We don't really hope to get better than 33 dB (MIN_LEAK-3dB) attenuation anyway". */
const MIN_LEAK = 0.005;
/** Filter starts this many blocks before the estimated delay (direct path margin). */
const PRE_BLOCKS = 2;
/** Suppressor bands (for the residual leakage regression). */
const SUP_BANDS = 24;
const INT16 = 32768;
/** Above this frequency only the first half of the filter adapts (see kEnd). */
const HF_SPLIT_HZ = 8000;

/** Y += sum_j W_j * X_{slot j} over the valid partitions (complex, per bin). */
function spectralMulAccum(
  Wr: Float64Array, Wi: Float64Array, Xr: Float64Array, Xi: Float64Array,
  slots: Int32Array, M: number, kEnd: Int32Array, Yr: Float64Array, Yi: Float64Array,
): void {
  Yr.fill(0);
  Yi.fill(0);
  for (let j = 0; j < M; j++) {
    const s = slots[j];
    if (s < 0) continue;
    const xb = s * BINS;
    const wb = j * BINS;
    const end = kEnd[j];
    for (let k = 0; k < end; k++) {
      const xr = Xr[xb + k];
      const xi = Xi[xb + k];
      const wr = Wr[wb + k];
      const wi = Wi[wb + k];
      Yr[k] += wr * xr - wi * xi;
      Yi[k] += wr * xi + wi * xr;
    }
  }
}

/** W_j += prop_j * mu * conj(X_{slot j}) * E for every valid partition; bin 0 (DC: mic offset, not echo) untouched. */
function gradientStep(
  Wr: Float64Array, Wi: Float64Array, Xr: Float64Array, Xi: Float64Array,
  slots: Int32Array, M: number, kEnd: Int32Array, prop: Float64Array, mu: Float64Array, Er: Float64Array, Ei: Float64Array,
): void {
  for (let j = 0; j < M; j++) {
    const s = slots[j];
    if (s < 0) continue;
    const xb = s * BINS;
    const wb = j * BINS;
    const p = prop[j];
    const end = kEnd[j];
    for (let k = 1; k < end; k++) {
      const g = p * mu[k];
      const xr = Xr[xb + k];
      const xi = Xi[xb + k];
      const er = Er[k];
      const ei = Ei[k];
      Wr[wb + k] += g * (xr * er + xi * ei);
      Wi[wb + k] += g * (xr * ei - xi * er);
    }
  }
}

/** mdf_adjust_prop: per-partition step proportional to the partition's weight magnitude (PNLMS-like). */
function adjustProp(Wr: Float64Array, Wi: Float64Array, M: number, prop: Float64Array): void {
  let maxSum = 1;
  let propSum = 1;
  for (let j = 0; j < M; j++) {
    let tmp = 1;
    const wb = j * BINS;
    for (let k = 0; k < BINS; k++) {
      const a = Wr[wb + k];
      const b = Wi[wb + k];
      tmp += a * a + b * b;
    }
    const v = Math.sqrt(tmp);
    prop[j] = v;
    if (v > maxSum) maxSum = v;
  }
  for (let j = 0; j < M; j++) {
    prop[j] += 0.1 * maxSum;
    propSum += prop[j];
  }
  for (let j = 0; j < M; j++) prop[j] = (0.99 * prop[j]) / propSum;
}

export class EchoCanceller {
  private readonly rate: number;
  private readonly M: number;
  private readonly maxLagBlocks: number;
  private readonly ringBlocks: number;
  private readonly suppress: boolean;
  private readonly fft = new RealFft(FFT_SIZE);

  // --- far end ---
  private readonly farRe: Float64Array;
  private readonly farIm: Float64Array;
  /** |X|^2 of each stored far block. */
  private readonly farPow: Float32Array;
  private readonly farEnergy: Float64Array;
  private readonly farBitsRing: Int32Array;
  /** Which far block number each ring slot holds (-1: none). */
  private readonly slotBlock: Float64Array;
  private readonly farPrev = new Float64Array(BLOCK);
  private readonly farCur = new Float64Array(BLOCK);
  private farFill = 0;
  private farPreemMem = 0;
  /** Far samples pushed (after gap padding). */
  private farWritten = 0;
  private everFar = false;
  /**
   * Read position of the far FIFO: near sample n is paired with far sample n + skew
   * (lag 0 of the delay search). Set when both streams have started, so that the
   * newest far sample is "current" (see anchorFar); afterwards it only moves in whole
   * blocks, and every move is compensated in the delay, so the far block each near
   * block is matched with never jumps.
   */
  private skew = 0;
  private anchored = false;
  /** Mean of how far the far end is ahead of the read position when a frame is pushed (samples). */
  private farLead = 0;
  private lastLead = 0;
  private leadSpread = 0;
  private lowRun = 0;
  private lowSum = 0;
  /** Pushes since the read position was set (the lead statistics settle first). */
  private leadPushes = 0;
  /** Blocks left, after a far pause, during which a one-block lag change moves the filter. */
  private relockBlocks = 0;
  private resyncCount = 0;
  private readonly farBinary: BinarySpectrum;

  // --- near end ---
  private readonly nearBuf = new Float64Array(BLOCK);
  private nearFill = 0;
  private nearPos = 0;
  private nearBlock = 0;
  private nearPreemMem = 0;
  private deemMem = 0;
  private readonly nearBinary: BinarySpectrum;
  private readonly delayEst: BlockDelayEstimator;
  private delayBlocks = 0;
  private delayKnown = false;

  // --- adaptive filter (re/im, M partitions x BINS) ---
  private readonly Wr: Float64Array;
  private readonly Wi: Float64Array;
  private readonly Fr: Float64Array;
  private readonly Fi: Float64Array;
  private readonly prop: Float64Array;
  private readonly power = new Float64Array(BINS);
  private readonly power1 = new Float64Array(BINS);
  private readonly Eh = new Float64Array(BINS);
  private readonly Yh = new Float64Array(BINS);
  private Pey = 1;
  private Pyy = 1;
  private leak = 1;
  private adapted = false;
  private sumAdapt = 0;
  private cancelCount = 0;
  private saturated = 0;
  private Davg1 = 0;
  private Davg2 = 0;
  private Dvar1 = 0;
  private Dvar2 = 0;
  private readonly slots: Int32Array;
  private readonly slotValid: Uint8Array;
  private readonly gradSlots: Int32Array;
  /**
   * Bins modelled by each partition: the full band for the first half of the filter,
   * below HF_SPLIT_HZ for the rest. Rooms absorb high frequencies faster (air and
   * surfaces), so the long tail is a low-frequency affair; this saves a third of the
   * multiply-adds, the bulk of the CPU.
   */
  private readonly kEnd: Int32Array;

  // --- scratch ---
  private readonly tRe = new Float64Array(BINS);
  private readonly tIm = new Float64Array(BINS);
  private readonly t2Re = new Float64Array(BINS);
  private readonly t2Im = new Float64Array(BINS);
  private readonly tBuf = new Float64Array(FFT_SIZE);
  private readonly tBuf2 = new Float64Array(FFT_SIZE);
  private readonly yFg = new Float64Array(BLOCK);
  private readonly yBg = new Float64Array(BLOCK);
  private readonly eFg = new Float64Array(BLOCK);
  private readonly eBg = new Float64Array(BLOCK);
  private readonly dPre = new Float64Array(BLOCK);
  private readonly Rf = new Float64Array(BINS);
  private readonly Yf = new Float64Array(BINS);
  private readonly window: Float64Array;
  /** Error spectrum of the last block and the far block it was computed against (for the next gradient step). */
  private readonly gradEr = new Float64Array(BINS);
  private readonly gradEi = new Float64Array(BINS);
  private gradBase = 0;
  private gradValid = false;
  private readonly cRe = new Float64Array(BINS);
  private readonly cIm = new Float64Array(BINS);
  private readonly dPrePrev = new Float64Array(BLOCK);
  private readonly peakTaps = new Float64Array(2 * BLOCK);
  private curA = 0;
  private lastLoudFar = -1e9;
  private readonly farBitsAt = (k: number): number => {
    const s = this.slotOf(this.curA - k);
    return s >= 0 ? this.farBitsRing[s] >>> 0 : -1;
  };

  // --- suppressor ---
  private readonly supWin: Float64Array;
  private readonly supBandOf: Int32Array;
  private readonly linPrev = new Float64Array(BLOCK);
  private readonly linCur = new Float64Array(BLOCK);
  private readonly echoPrev = new Float64Array(BLOCK);
  private readonly echoCur = new Float64Array(BLOCK);
  private readonly olaTail = new Float64Array(BLOCK);
  private readonly gain = new Float64Array(BINS);
  private readonly prevGainPow = new Float64Array(BINS);
  private readonly resid = new Float64Array(BINS);
  private readonly bEh = new Float64Array(SUP_BANDS);
  private readonly bYh = new Float64Array(SUP_BANDS);
  private readonly bPey = new Float64Array(SUP_BANDS);
  private readonly bPyy = new Float64Array(SUP_BANDS);
  private readonly bLeak = new Float64Array(SUP_BANDS);
  private readonly bE = new Float64Array(SUP_BANDS);
  private readonly bY = new Float64Array(SUP_BANDS);

  // --- output FIFO ---
  private outRing: Float32Array;
  private outRead = 0;
  private outCount = 0;
  private latency = 0;

  // --- stats ---
  private micPowAvg = 0;
  private outPowAvg = 0;
  private linPowAvg = 0;
  private farActiveNow = false;
  private dtNow = false;
  private dtHold = 0;
  private delayTapSamples = -1;
  private lastPeakCheck = 0;

  constructor(o: EchoCancellerOptions = {}) {
    this.rate = o.sampleRate ?? 48_000;
    const filterMs = o.filterMs ?? 200;
    const maxDelayMs = o.maxDelayMs ?? 500;
    this.suppress = o.suppressor ?? true;
    if (!(this.rate > 0) || !(filterMs > 0) || !(maxDelayMs >= 0)) throw new Error('EchoCanceller: bad options');
    this.M = Math.max(1, Math.ceil((filterMs * this.rate) / 1000 / BLOCK));
    this.maxLagBlocks = Math.ceil((maxDelayMs * this.rate) / 1000 / BLOCK) + 1;
    // Far blocks kept: every lag searched, the filter behind the largest one, and
    // what may be pushed ahead of the mic (the re-sync bound) plus slack.
    this.ringBlocks = this.maxLagBlocks + this.M + this.aheadLimitBlocks() + 4;
    const S = this.ringBlocks;
    this.farRe = new Float64Array(S * BINS);
    this.farIm = new Float64Array(S * BINS);
    this.farPow = new Float32Array(S * BINS);
    this.farEnergy = new Float64Array(S);
    this.farBitsRing = new Int32Array(S);
    this.slotBlock = new Float64Array(S).fill(-1);
    const edges = delayBandEdges(BINS, this.rate);
    this.farBinary = new BinarySpectrum(edges);
    this.nearBinary = new BinarySpectrum(edges);
    this.delayEst = new BlockDelayEstimator(this.maxLagBlocks);

    const MK = this.M * BINS;
    this.Wr = new Float64Array(MK);
    this.Wi = new Float64Array(MK);
    this.Fr = new Float64Array(MK);
    this.Fi = new Float64Array(MK);
    this.prop = new Float64Array(this.M);
    this.slots = new Int32Array(this.M);
    this.slotValid = new Uint8Array(this.M);
    this.gradSlots = new Int32Array(this.M);
    this.kEnd = new Int32Array(this.M);
    const kSplit = Math.min(BINS, Math.ceil((HF_SPLIT_HZ * FFT_SIZE) / this.rate) + 1);
    for (let j = 0; j < this.M; j++) this.kEnd[j] = j < Math.max(PRE_BLOCKS + 1, Math.ceil(this.M / 2)) ? BINS : kSplit;

    // mdf.c's cross-fade window for foreground updates (Hann over 2 blocks).
    this.window = new Float64Array(2 * BLOCK);
    for (let i = 0; i < 2 * BLOCK; i++) this.window[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (2 * BLOCK));
    // Periodic sqrt-Hann: analysis x synthesis sums to 1 at 50% overlap.
    this.supWin = new Float64Array(2 * BLOCK);
    for (let i = 0; i < 2 * BLOCK; i++) this.supWin[i] = Math.sqrt(0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (2 * BLOCK)));
    this.supBandOf = new Int32Array(BINS);
    // Bands: roughly uniform on a log scale above 500 Hz, linear below.
    const hzPerBin = this.rate / FFT_SIZE;
    for (let k = 0; k < BINS; k++) {
      const hz = Math.max(hzPerBin * k, 1);
      const b = hz < 500 ? Math.floor((hz / 500) * 4) : 4 + Math.floor((Math.log(hz / 500) / Math.log(this.rate / 2 / 500)) * (SUP_BANDS - 4));
      this.supBandOf[k] = Math.min(SUP_BANDS - 1, Math.max(0, b));
    }
    this.outRing = new Float32Array(16 * 1024);
    this.reset();
  }

  /** Sets the far read position so that, after a near frame of `pending` samples, the newest far sample is current. */
  private anchorFar(pending: number): void {
    this.skew = this.farWritten - this.nearPos - pending;
    this.anchored = true;
    this.farLead = 0;
    this.lastLead = 0;
    this.leadSpread = 0;
    this.lowRun = 0;
    this.lowSum = 0;
    this.leadPushes = 0;
  }

  /**
   * Moves the far read position forward by `blocks` whole blocks, keeping every near
   * block paired with the same far block: the lag (estimator and filter) grows by
   * the same amount, so nothing has to re-converge.
   */
  private moveReadPosition(blocks: number): void {
    if (blocks <= 0) return;
    this.skew += blocks * BLOCK;
    this.farLead -= blocks * BLOCK;
    this.lastLead -= blocks * BLOCK;
    this.resyncCount++;
    this.delayEst.shift(blocks);
    if (this.delayKnown) {
      this.delayBlocks += blocks;
      if (this.delayBlocks + PRE_BLOCKS >= this.maxLagBlocks) {
        // Beyond the searched range: start the search again.
        this.delayEst.reset();
        this.delayKnown = false;
        this.delayBlocks = 0;
        this.resetFilter();
        this.gradValid = false;
        this.delayTapSamples = -1;
      }
    }
  }

  private aheadLimitBlocks(): number {
    return Math.ceil((0.12 * this.rate) / BLOCK);
  }

  reset(): void {
    this.slotBlock.fill(-1);
    this.farPrev.fill(0);
    this.farCur.fill(0);
    this.farFill = 0;
    this.farPreemMem = 0;
    this.farWritten = 0;
    this.everFar = false;
    this.skew = 0;
    this.anchored = false;
    this.farLead = 0;
    this.lastLead = 0;
    this.leadSpread = 0;
    this.lowRun = 0;
    this.lowSum = 0;
    this.leadPushes = 0;
    this.relockBlocks = 0;
    this.resyncCount = 0;
    this.farBinary.reset();
    this.nearBinary.reset();
    this.delayEst.reset();
    this.delayBlocks = 0;
    this.delayKnown = false;
    this.nearFill = 0;
    this.nearPos = 0;
    this.nearBlock = 0;
    this.nearPreemMem = 0;
    this.deemMem = 0;
    this.dPrePrev.fill(0);
    this.gradValid = false;
    this.lastLoudFar = -1e9;
    this.resetFilter();
    this.linPrev.fill(0);
    this.linCur.fill(0);
    this.echoPrev.fill(0);
    this.echoCur.fill(0);
    this.olaTail.fill(0);
    this.prevGainPow.fill(0);
    this.bEh.fill(0);
    this.bYh.fill(0);
    this.bPey.fill(1);
    this.bPyy.fill(1);
    this.bLeak.fill(1);
    this.outRead = 0;
    this.outCount = 0;
    this.latency = 0;
    this.micPowAvg = 0;
    this.outPowAvg = 0;
    this.linPowAvg = 0;
    this.farActiveNow = false;
    this.dtNow = false;
    this.dtHold = 0;
    this.delayTapSamples = -1;
    this.lastPeakCheck = 0;
  }

  private resetFilter(): void {
    this.Wr.fill(0);
    this.Wi.fill(0);
    this.Fr.fill(0);
    this.Fi.fill(0);
    this.power.fill(0);
    this.power1.fill(0);
    this.Eh.fill(0);
    this.Yh.fill(0);
    this.Pey = 1;
    this.Pyy = 1;
    this.leak = 1;
    this.adapted = false;
    this.sumAdapt = 0;
    this.cancelCount = 0;
    this.saturated = 0;
    this.Davg1 = this.Davg2 = this.Dvar1 = this.Dvar2 = 0;
    // mdf.c: initial proportionate weights decay ~10x over the filter (early taps adapt faster).
    const M = this.M;
    const decay = Math.exp(-2.4 / M);
    let sum = 0;
    let p = 0.7;
    for (let j = 0; j < M; j++) {
      this.prop[j] = p;
      sum += p;
      p *= decay;
    }
    for (let j = 0; j < M; j++) this.prop[j] = (0.8 * this.prop[j]) / sum;
  }

  // ------------------------------------------------------------------ far end

  /**
   * Far end (what the speaker is handed), in the order it is handed over.
   *
   * The far samples form a FIFO that the near side reads at its own pace: near
   * sample n is paired with far sample n + skew, and the device delay (handing over
   * -> echo in the mic) is then found by the delay estimator as a lag back from that
   * read position. Nothing here assumes that pushFar and processNear alternate: the
   * speaker's callback usually runs some frames ahead of the microphone's, by a
   * varying amount, and in bursts after an underrun.
   */
  pushFar(frame: Float32Array): void {
    if (frame.length === 0) return;
    if (!this.everFar) {
      this.everFar = true;
      // Near already running: "handed over now" is read now. Otherwise the read
      // position is set by the first near frame (processNearInto), since the far
      // frames pushed before it (device priming, start-up bursts) were handed
      // over before the microphone started.
      if (this.nearPos > 0) this.anchorFar(0);
    } else if (this.anchored) {
      const expected = this.nearPos + this.skew;
      const behind = expected - this.farWritten;
      const aheadLimit = this.aheadLimitBlocks() * BLOCK;
      if (behind > aheadLimit) {
        // The far stream paused (nothing was handed to the speaker): that time was
        // silence. Resume where a frame handed over now usually lands (the mean lead),
        // on the same sub-block phase as before the pause: then the lag can only be off
        // by whole blocks (the call order jitters), which the delay estimator finds and
        // the filter follows exactly (shiftFilter), with no re-convergence.
        const k = Math.round((this.farLead - this.lastLead) / BLOCK);
        const pad = Math.round(behind + this.lastLead + k * BLOCK);
        if (pad > 0) this.padFar(pad);
        this.delayEst.restart();
        this.relockBlocks = 400;
        this.resyncCount++;
      } else if (-behind > aheadLimit) {
        // Far is far ahead of the read position (mic stalled): move the read
        // position, compensated, so that the ring never drops blocks still needed.
        this.moveReadPosition(Math.ceil(-behind / BLOCK));
      } else {
        const lead = -behind;
        this.lastLead = lead;
        // An output underrun: the device played silence that was never pushed, so
        // every far frame from then on is heard later, and the far side stays behind
        // the read position by as much as the silence lasted. Seen as a lead that
        // stays below its mean (beyond its usual spread) for 8 pushes; padding that
        // much silence (whole blocks: the lead only moves by whole frames) puts the far
        // frames back where the filter expects them.
        const thr = Math.max(6 * BLOCK, 3 * this.leadSpread);
        if (this.leadPushes < 150) this.leadPushes++;
        if (this.leadPushes >= 150 && lead < this.farLead - thr) {
          this.lowSum += lead;
          if (++this.lowRun >= 8) {
            const drop = Math.round((this.farLead - this.lowSum / this.lowRun) / BLOCK) * BLOCK;
            this.lowRun = 0;
            this.lowSum = 0;
            if (drop > 0) {
              this.padFar(drop);
              this.delayEst.restart();
              this.relockBlocks = 400;
              this.resyncCount++;
            }
          }
        } else {
          this.lowRun = 0;
          this.lowSum = 0;
          this.leadSpread += (Math.abs(lead - this.farLead) - this.leadSpread) / 32;
          this.farLead += (lead - this.farLead) / 32;
        }
      }
    }
    for (let i = 0; i < frame.length; i++) {
      let v = frame[i];
      if (!(v === v)) v = 0; // NaN guard
      this.appendFar(v * INT16);
    }
  }

  private appendFar(v: number): void {
    const p = v - PREEMPH * this.farPreemMem;
    this.farPreemMem = v;
    this.farCur[this.farFill++] = p;
    this.farWritten++;
    if (this.farFill === BLOCK) {
      this.farFill = 0;
      this.finishFarBlock();
    }
  }

  private padFar(n: number): void {
    // Whole zero blocks are cheap: no FFT needed once the window is all zeros.
    const capacity = this.ringBlocks * BLOCK;
    if (n > capacity + 2 * BLOCK) {
      const skip = n - capacity;
      // Jump the far timeline forward over a silence longer than everything we keep.
      const blocksBefore = Math.floor(this.farWritten / BLOCK);
      this.farWritten += skip;
      this.farPreemMem = 0;
      this.farPrev.fill(0);
      this.farCur.fill(0);
      // Keep block alignment of partially filled blocks consistent.
      this.farFill = this.farWritten % BLOCK;
      const blocksAfter = Math.floor(this.farWritten / BLOCK);
      for (let b = blocksBefore; b < blocksAfter && b < blocksBefore + this.ringBlocks; b++) {
        this.slotBlock[b % this.ringBlocks] = -1;
      }
      n -= skip;
    }
    for (let i = 0; i < n; i++) this.appendFar(0);
  }

  private finishFarBlock(): void {
    const blockIndex = Math.floor(this.farWritten / BLOCK) - 1;
    const slot = blockIndex % this.ringBlocks;
    const buf = this.tBuf;
    let energy = 0;
    for (let i = 0; i < BLOCK; i++) {
      buf[i] = this.farPrev[i];
      const c = this.farCur[i];
      buf[BLOCK + i] = c;
      energy += c * c;
    }
    for (let i = 2 * BLOCK; i < FFT_SIZE; i++) buf[i] = 0;
    const base = slot * BINS;
    if (energy === 0 && this.farEnergy[(slot + this.ringBlocks - 1) % this.ringBlocks] === 0 && this.isZero(this.farPrev)) {
      for (let k = 0; k < BINS; k++) {
        this.farRe[base + k] = 0;
        this.farIm[base + k] = 0;
        this.farPow[base + k] = 0;
      }
    } else {
      this.fft.forward(buf, this.tRe, this.tIm);
      for (let k = 0; k < BINS; k++) {
        const r = this.tRe[k];
        const i = this.tIm[k];
        this.farRe[base + k] = r;
        this.farIm[base + k] = i;
        this.farPow[base + k] = r * r + i * i;
      }
    }
    this.farEnergy[slot] = energy;
    if (energy > BLOCK * 1000) this.lastLoudFar = blockIndex;
    this.farBitsRing[slot] = this.farBinary.bits(this.farPow.subarray(base, base + BINS)) | 0;
    this.slotBlock[slot] = blockIndex;
    this.farPrev.set(this.farCur);
  }

  private isZero(a: Float64Array): boolean {
    for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
    return true;
  }

  /** Ring slot of far block b, or -1 when that block is not stored. */
  private slotOf(b: number): number {
    if (b < 0) return -1;
    const s = b % this.ringBlocks;
    return this.slotBlock[s] === b ? s : -1;
  }

  // ------------------------------------------------------------------ near end

  processNear(frame: Float32Array): Float32Array {
    const out = new Float32Array(frame.length);
    this.processNearInto(frame, out);
    return out;
  }

  /** processNear without allocating: writes frame.length samples into `out`. */
  processNearInto(frame: Float32Array, out: Float32Array): void {
    if (this.everFar && !this.anchored) this.anchorFar(frame.length);
    for (let i = 0; i < frame.length; i++) {
      let v = frame[i];
      if (!(v === v)) v = 0;
      this.nearBuf[this.nearFill++] = v * INT16;
      this.nearPos++;
      if (this.nearFill === BLOCK) {
        this.nearFill = 0;
        this.processBlock();
      }
    }
    if (this.anchored) {
      // Far samples handed over beyond the read position: the far side runs further
      // ahead than before (a burst, or this near frame came late). Move the read
      // position up to the newest far sample so the echo, which always comes after
      // its far samples were handed over, stays at a positive lag.
      const ahead = this.farWritten - (this.nearPos + this.skew);
      if (ahead > 0) this.moveReadPosition(Math.ceil(ahead / BLOCK));
    }
    // Latency grows (once) only when a caller's frames do not line up with blocks.
    if (this.outCount < frame.length) {
      const missing = frame.length - this.outCount;
      this.ensureOut(missing);
      const start = (this.outRead + this.outRing.length - missing) % this.outRing.length;
      for (let i = 0; i < missing; i++) this.outRing[(start + i) % this.outRing.length] = 0;
      this.outRead = start;
      this.outCount += missing;
      this.latency += missing;
    }
    const ring = this.outRing;
    for (let i = 0; i < frame.length; i++) {
      out[i] = ring[this.outRead];
      this.outRead = (this.outRead + 1) % ring.length;
    }
    this.outCount -= frame.length;
  }

  private ensureOut(extra: number): void {
    if (this.outCount + extra + 2 * BLOCK <= this.outRing.length) return;
    const n = new Float32Array(Math.max(2 * this.outRing.length, this.outCount + extra + 4 * BLOCK));
    for (let i = 0; i < this.outCount; i++) n[i] = this.outRing[(this.outRead + i) % this.outRing.length];
    this.outRing = n;
    this.outRead = 0;
  }

  private pushOut(v: number): void {
    if (this.outCount + 1 > this.outRing.length) this.ensureOut(1);
    this.outRing[(this.outRead + this.outCount) % this.outRing.length] = v;
    this.outCount++;
  }

  private processBlock(): void {
    const t = this.nearBlock++;
    const d = this.nearBuf;
    // Far block heard "now" (lag 0) and the alignment offset A in samples.
    const a = Math.floor(((t + 1) * BLOCK + this.skew) / BLOCK) - 1;

    // Pre-emphasis of the mic (mdf.c), kept running even without far end.
    let saturatedNow = false;
    for (let i = 0; i < BLOCK; i++) {
      const v = d[i];
      if (v > 32000 || v < -32000) saturatedNow = true;
      this.dPre[i] = v - PREEMPH * this.nearPreemMem;
      this.nearPreemMem = v;
    }

    let farActive = false;
    if (this.everFar) {
      // Is anything being played within the filter's span?
      for (let j = 0; j < this.M + PRE_BLOCKS; j++) {
        const s = this.slotOf(a - this.delayBlocks - j);
        if (s >= 0 && this.farEnergy[s] > BLOCK * 10) {
          farActive = true;
          break;
        }
      }
      this.updateDelay(a);
    }
    this.farActiveNow = farActive;

    if (this.everFar) {
      this.linearBlock(a, saturatedNow);
    } else {
      for (let i = 0; i < BLOCK; i++) this.eFg[i] = this.dPre[i];
    }

    // De-emphasis: linear output in the signal domain; echo estimate = mic - output.
    for (let i = 0; i < BLOCK; i++) {
      const o = this.eFg[i] + PREEMPH * this.deemMem;
      this.deemMem = o;
      this.linCur[i] = o;
      this.echoCur[i] = d[i] - o;
    }
    this.suppressBlock(farActive);

    // Stats over far-active blocks (~1 s memory).
    if (farActive) {
      let md = 0;
      let ml = 0;
      for (let i = 0; i < BLOCK; i++) {
        md += d[i] * d[i];
        ml += this.linCur[i] * this.linCur[i];
      }
      const al = 0.005;
      this.micPowAvg += al * (md - this.micPowAvg);
      this.linPowAvg += al * (ml - this.linPowAvg);
    }
    this.dPrePrev.set(this.dPre);
  }

  /** Updates the delay estimate and moves the filter when the bulk delay changed. */
  private updateDelay(a: number): void {
    // Only while something loud enough to match against was handed over within the
    // searched lags (lastLoudFar is set as far blocks arrive: block a itself may not
    // have been pushed yet when the far side runs behind the read position).
    let energy = 0;
    for (let i = 0; i < BLOCK; i++) energy += this.dPre[i] * this.dPre[i];
    if (a - this.lastLoudFar >= this.maxLagBlocks || energy < BLOCK * 100) return;
    // Near binary spectrum from the mic's 2-block window (the far blocks' window).
    const buf = this.tBuf2;
    for (let i = 0; i < BLOCK; i++) {
      buf[i] = this.dPrePrev[i];
      buf[BLOCK + i] = this.dPre[i];
    }
    for (let i = 2 * BLOCK; i < FFT_SIZE; i++) buf[i] = 0;
    this.fft.forward(buf, this.cRe, this.cIm);
    for (let k = 0; k < BINS; k++) this.Rf[k] = this.cRe[k] * this.cRe[k] + this.cIm[k] * this.cIm[k];
    const nearBits = this.nearBinary.bits(this.Rf);
    this.curA = a;
    this.delayEst.update(nearBits, this.farBitsAt);
    const lag = this.delayEst.lag;
    if (lag < 0) return;
    const want = Math.max(0, lag - PRE_BLOCKS);
    if (this.relockBlocks > 0) this.relockBlocks--;
    if (!this.delayKnown || Math.abs(want - this.delayBlocks) >= (this.relockBlocks > 0 ? 1 : 2)) {
      const by = want - this.delayBlocks;
      // Two causes, two moves: the filter learnt the echo where it is while the lag
      // was unknown or wrong (keep its taps at the same absolute lag: shift them), or
      // the echo itself moved (a far pause resumed a few blocks off, an underrun, a
      // new device path: the taps move with it, no shift). A converged filter tells
      // which: its direct path must land at PRE_BLOCKS.
      const jp = this.delayKnown && this.adapted ? this.peakPartition() : -1;
      const lead = Math.min(PRE_BLOCKS, this.M - 1);
      if (jp < 0 || Math.abs(jp - by - lead) <= Math.abs(jp - lead)) this.shiftFilter(by);
      this.delayBlocks = want;
      this.delayKnown = true;
    }
  }

  /** The bulk delay grew by `by` blocks: the same room response now starts `by` partitions earlier. */
  private shiftFilter(by: number): void {
    if (by === 0) return;
    const M = this.M;
    for (const W of [this.Wr, this.Wi, this.Fr, this.Fi]) {
      if (by > 0) {
        for (let j = 0; j < M; j++) {
          const src = j + by;
          if (src < M) W.copyWithin(j * BINS, src * BINS, (src + 1) * BINS);
          else W.fill(0, j * BINS, (j + 1) * BINS);
        }
      } else {
        for (let j = M - 1; j >= 0; j--) {
          const src = j + by;
          if (src >= 0) W.copyWithin(j * BINS, src * BINS, (src + 1) * BINS);
          else W.fill(0, j * BINS, (j + 1) * BINS);
        }
      }
    }
    this.delayTapSamples = -1;
    this.gradValid = false;
  }

  /** MDF with Valin's learning rate and mdf.c's two-path logic; writes eFg (pre-emphasised output). */
  private linearBlock(a: number, saturatedNow: boolean): void {
    const M = this.M;
    const K = BINS;
    const D = this.delayBlocks;
    let newestMissing = false;
    for (let j = 0; j < M; j++) {
      const s = this.slotOf(a - D - j);
      this.slots[j] = s;
      this.slotValid[j] = s >= 0 ? 1 : 0;
      if (j === 0 && s < 0) newestMissing = true;
    }
    const fr = this.farRe;
    const fi = this.farIm;
    const Yr = this.tRe;
    const Yi = this.tIm;
    const buf = this.tBuf;

    // Foreground echo estimate.
    spectralMulAccum(this.Fr, this.Fi, fr, fi, this.slots, M, this.kEnd, Yr, Yi);
    this.fft.inverse(Yr, Yi, buf);
    let Sff = 0;
    for (let i = 0; i < BLOCK; i++) {
      const y = buf[BLOCK + i];
      this.yFg[i] = y;
      const e = this.dPre[i] - y;
      this.eFg[i] = e;
      Sff += e * e;
    }

    // Proportionate step per partition (mdf_adjust_prop); weights move slowly, so every 4th block.
    if (this.adapted && (this.cancelCount & 3) === 0) adjustProp(this.Wr, this.Wi, M, this.prop);

    // Gradient step with the error and step sizes of the previous block (mdf.c applies
    // them at the start of the next call): partition j pairs with far block gradBase-j.
    if (this.saturated === 0 && !newestMissing && this.gradValid) {
      for (let j = 0; j < M; j++) this.gradSlots[j] = this.slotOf(this.gradBase - j);
      gradientStep(this.Wr, this.Wi, fr, fi, this.gradSlots, M, this.kEnd, this.prop, this.power1, this.gradEr, this.gradEi);
    } else if (this.saturated > 0) {
      this.saturated--;
    }
    if (saturatedNow) this.saturated = M + 1;

    // AUMDF (mdf.c): constrain one partition in turn every block, and the partition
    // holding the direct path (PRE_BLOCKS) every other block, where mdf.c does
    // partition 0 every block: half the FFTs for the same convergence here.
    this.cancelCount++;
    const lead = Math.min(PRE_BLOCKS, M - 1);
    if ((this.cancelCount & 1) === 0) this.constrain(lead);
    const turn = this.cancelCount % M;
    if (turn !== lead || (this.cancelCount & 1) === 1) this.constrain(turn);

    // Background echo estimate.
    spectralMulAccum(this.Wr, this.Wi, fr, fi, this.slots, M, this.kEnd, Yr, Yi);
    this.fft.inverse(Yr, Yi, buf);
    let See = 0;
    let Dbf = 10;
    for (let i = 0; i < BLOCK; i++) {
      const y = buf[BLOCK + i];
      this.yBg[i] = y;
      const e = this.dPre[i] - y;
      this.eBg[i] = e;
      See += e * e;
      const df = this.yFg[i] - y;
      Dbf += df * df;
    }

    // Two-path logic (mdf.c, TWO_PATH).
    const dS = Sff - See;
    this.Davg1 = 0.6 * this.Davg1 + 0.4 * dS;
    this.Davg2 = 0.85 * this.Davg2 + 0.15 * dS;
    this.Dvar1 = 0.36 * this.Dvar1 + 0.16 * Sff * Dbf;
    this.Dvar2 = 0.7225 * this.Dvar2 + 0.0225 * Sff * Dbf;
    let updateFg = false;
    if (dS * Math.abs(dS) > Sff * Dbf) updateFg = true;
    else if (this.Davg1 * Math.abs(this.Davg1) > 0.5 * this.Dvar1) updateFg = true;
    else if (this.Davg2 * Math.abs(this.Davg2) > 0.25 * this.Dvar2) updateFg = true;
    if (updateFg) {
      this.Davg1 = this.Davg2 = this.Dvar1 = this.Dvar2 = 0;
      this.Fr.set(this.Wr);
      this.Fi.set(this.Wi);
      // Smooth transition between the old and the new foreground output.
      for (let i = 0; i < BLOCK; i++) {
        const y = this.window[i + BLOCK] * this.yFg[i] + this.window[i] * this.yBg[i];
        this.eFg[i] = this.dPre[i] - y;
      }
    } else {
      let resetBg = false;
      const VAR_BACKTRACK = 4;
      if (-dS * Math.abs(dS) > VAR_BACKTRACK * Sff * Dbf) resetBg = true;
      if (-this.Davg1 * Math.abs(this.Davg1) > VAR_BACKTRACK * this.Dvar1) resetBg = true;
      if (-this.Davg2 * Math.abs(this.Davg2) > VAR_BACKTRACK * this.Dvar2) resetBg = true;
      if (resetBg) {
        this.Wr.set(this.Fr);
        this.Wi.set(this.Fi);
        for (let i = 0; i < BLOCK; i++) {
          this.yBg[i] = this.yFg[i];
          this.eBg[i] = this.eFg[i];
        }
        See = Sff;
        this.Davg1 = this.Davg2 = this.Dvar1 = this.Dvar2 = 0;
      }
    }

    // Statistics of the background filter for the next step size.
    let Sey = 0;
    let Syy = 0;
    for (let i = 0; i < BLOCK; i++) {
      Sey += this.eBg[i] * this.yBg[i];
      Syy += this.yBg[i] * this.yBg[i];
    }
    const s0 = this.slots[0];
    const Sxx = s0 >= 0 ? this.farEnergy[s0] : 0;
    if (!(Syy >= 0 && Sxx >= 0 && See >= 0) || !(Sff < BLOCK * 1e9 && Syy < BLOCK * 1e9 && Sxx < BLOCK * 1e9)) {
      // mdf.c: "The echo canceller screwed up": start again rather than emit garbage.
      this.resetFilter();
      for (let i = 0; i < BLOCK; i++) this.eFg[i] = this.dPre[i];
      return;
    }

    // E = FFT([0, e_bg]), Y = FFT([0, y_bg]) -> power spectra.
    for (let i = 0; i < BLOCK; i++) {
      buf[i] = 0;
      buf[BLOCK + i] = this.eBg[i];
    }
    for (let i = 2 * BLOCK; i < FFT_SIZE; i++) buf[i] = 0;
    this.fft.forward(buf, this.gradEr, this.gradEi); // the next block's gradient uses it
    this.gradBase = a - D;
    this.gradValid = true;
    for (let i = 0; i < BLOCK; i++) buf[BLOCK + i] = this.yBg[i];
    this.fft.forward(buf, Yr, Yi);
    const ss = 0.35 / M;
    const ss1 = 1 - ss;
    for (let k = 0; k < K; k++) {
      this.Rf[k] = this.gradEr[k] * this.gradEr[k] + this.gradEi[k] * this.gradEi[k];
      this.Yf[k] = Yr[k] * Yr[k] + Yi[k] * Yi[k];
      const xf = s0 >= 0 ? this.farPow[s0 * BINS + k] : 0;
      this.power[k] = ss1 * this.power[k] + 1 + ss * xf;
    }

    // Valin 2007: leakage = regression of error power fluctuations on echo-estimate
    // power fluctuations; unaffected by near-end speech, which is uncorrelated with the echo.
    const specAverage = BLOCK / this.rate;
    const beta0 = (2 * BLOCK) / this.rate;
    const betaMax = (0.5 * BLOCK) / this.rate;
    let Pey = 0;
    let Pyy = 0;
    for (let k = 0; k < K; k++) {
      const eh = this.Rf[k] - this.Eh[k];
      const yh = this.Yf[k] - this.Yh[k];
      Pey += eh * yh;
      Pyy += yh * yh;
      this.Eh[k] = (1 - specAverage) * this.Eh[k] + specAverage * this.Rf[k];
      this.Yh[k] = (1 - specAverage) * this.Yh[k] + specAverage * this.Yf[k];
    }
    Pyy = Math.sqrt(Pyy);
    Pey = Pyy > 0 ? Pey / Pyy : 0;
    let tmp = beta0 * Syy;
    if (tmp > betaMax * See) tmp = betaMax * See;
    const alpha = See > 0 ? tmp / See : 0;
    this.Pey = (1 - alpha) * this.Pey + alpha * Pey;
    this.Pyy = (1 - alpha) * this.Pyy + alpha * Pyy;
    if (this.Pyy < 1) this.Pyy = 1;
    if (this.Pey < MIN_LEAK * this.Pyy) this.Pey = MIN_LEAK * this.Pyy;
    if (this.Pey > this.Pyy) this.Pey = this.Pyy;
    this.leak = this.Pey / this.Pyy;
    if (this.leak > 0.5) this.leak = 1; // mdf.c's Q14->Q15 quirk, kept on purpose: be careful while unsure.
    else this.leak *= 2;

    // Residual-to-error ratio, bounded below by the echo visible in the error.
    let RER = (0.0001 * Sxx + 3 * this.leak * Syy) / (See + 1e-9);
    const yInE = (Sey * Sey) / (1 + See * Syy);
    if (RER < yInE) RER = yInE;
    if (RER > 0.5) RER = 0.5;

    if (!this.adapted && this.sumAdapt > M && this.leak * Syy > 0.03 * Syy) this.adapted = true;

    if (this.adapted) {
      for (let k = 0; k < K; k++) {
        let r = this.leak * this.Yf[k];
        const e = this.Rf[k] + 1;
        if (r > 0.5 * e) r = 0.5 * e;
        r = 0.7 * r + 0.3 * RER * e;
        this.power1[k] = r / (e * (this.power[k] + 10));
      }
    } else {
      let adaptRate = 0;
      if (Sxx > (2 * BLOCK * 1000) / 64) {
        let t2 = 0.25 * Sxx;
        if (t2 > 0.25 * See) t2 = 0.25 * See;
        adaptRate = See > 0 ? t2 / See : 0;
      }
      for (let k = 0; k < K; k++) this.power1[k] = adaptRate / (this.power[k] + 10);
      this.sumAdapt += adaptRate;
    }
  }

  /** Zero the taps of partition j beyond the partition length (gradient constraint). */
  private constrain(j: number): void {
    const wb = j * BINS;
    const re = this.cRe;
    const im = this.cIm;
    for (let k = 0; k < BINS; k++) {
      re[k] = this.Wr[wb + k];
      im[k] = this.Wi[wb + k];
    }
    const buf = this.tBuf2;
    this.fft.inverse(re, im, buf);
    for (let i = BLOCK; i < FFT_SIZE; i++) buf[i] = 0;
    this.fft.forward(buf, re, im);
    const end = this.kEnd[j];
    for (let k = 0; k < end; k++) {
      this.Wr[wb + k] = re[k];
      this.Wi[wb + k] = im[k];
    }
  }

  /** Residual echo suppressor on the linear output; emits one block (the previous one) to the FIFO. */
  private suppressBlock(farActive: boolean): void {
    const buf = this.tBuf;
    const win = this.supWin;
    for (let i = 0; i < BLOCK; i++) {
      buf[i] = this.linPrev[i] * win[i];
      buf[BLOCK + i] = this.linCur[i] * win[BLOCK + i];
    }
    for (let i = 2 * BLOCK; i < FFT_SIZE; i++) buf[i] = 0;
    const Er = this.tRe;
    const Ei = this.tIm;
    this.fft.forward(buf, Er, Ei);

    const active = this.suppress && this.everFar;
    if (active) {
      const b2 = this.tBuf2;
      for (let i = 0; i < BLOCK; i++) {
        b2[i] = this.echoPrev[i] * win[i];
        b2[BLOCK + i] = this.echoCur[i] * win[BLOCK + i];
      }
      for (let i = 2 * BLOCK; i < FFT_SIZE; i++) b2[i] = 0;
      this.fft.forward(b2, this.t2Re, this.t2Im);
      this.computeGains(Er, Ei, this.t2Re, this.t2Im, farActive);
      for (let k = 0; k < BINS; k++) {
        Er[k] *= this.gain[k];
        Ei[k] *= this.gain[k];
      }
    }
    this.fft.inverse(Er, Ei, buf);
    let ms = 0;
    for (let i = 0; i < BLOCK; i++) {
      const v = this.olaTail[i] + buf[i] * win[i];
      this.olaTail[i] = buf[BLOCK + i] * win[BLOCK + i];
      let o = v / INT16;
      if (!(o === o)) o = 0;
      ms += v * v;
      this.pushOut(o);
    }
    if (farActive) this.outPowAvg += 0.005 * (ms - this.outPowAvg);
    this.linPrev.set(this.linCur);
    this.echoPrev.set(this.echoCur);
  }

  private computeGains(Er: Float64Array, Ei: Float64Array, Yr: Float64Array, Yi: Float64Array, farActive: boolean): void {
    const K = BINS;
    const bE = this.bE;
    const bY = this.bY;
    bE.fill(0);
    bY.fill(0);
    const resid = this.resid;
    for (let k = 0; k < K; k++) {
      const pe = Er[k] * Er[k] + Ei[k] * Ei[k];
      const py = Yr[k] * Yr[k] + Yi[k] * Yi[k];
      const b = this.supBandOf[k];
      bE[b] += pe;
      bY[b] += py;
      resid[k] = py; // echo estimate power, scaled by the band leakage below
      Yr[k] = pe; // reuse: error power
    }
    // Per-band leakage regression (Valin's estimator, per band).
    const beta0 = (2 * BLOCK) / this.rate;
    const betaMax = (0.5 * BLOCK) / this.rate;
    const specAverage = (4 * BLOCK) / this.rate;
    for (let b = 0; b < SUP_BANDS; b++) {
      const de = bE[b] - this.bEh[b];
      const dy = bY[b] - this.bYh[b];
      this.bEh[b] += specAverage * (bE[b] - this.bEh[b]);
      this.bYh[b] += specAverage * (bY[b] - this.bYh[b]);
      if (bY[b] <= 0 || bE[b] <= 0) continue;
      let tmp = beta0 * bY[b];
      if (tmp > betaMax * bE[b]) tmp = betaMax * bE[b];
      const alpha = tmp / bE[b];
      this.bPey[b] = (1 - alpha) * this.bPey[b] + alpha * de * dy;
      this.bPyy[b] = (1 - alpha) * this.bPyy[b] + alpha * dy * dy;
      let l = this.bPyy[b] > 0 ? this.bPey[b] / this.bPyy[b] : 1;
      if (l < MIN_LEAK / 4) l = MIN_LEAK / 4;
      if (l > 1) l = 1;
      this.bLeak[b] = l;
    }
    const over = 2;
    const ddAlpha = 0.9;
    const gMin = 0.01;
    let nearSum = 0;
    let residSum = 0;
    for (let k = 0; k < K; k++) {
      const r = over * this.bLeak[this.supBandOf[k]] * resid[k] + 1e-6;
      const pe = Yr[k];
      const post = pe / r;
      const prior = ddAlpha * (this.prevGainPow[k] / r) + (1 - ddAlpha) * Math.max(post - 1, 0);
      let g = prior / (1 + prior);
      if (g < gMin) g = gMin;
      if (!(g === g)) g = 1;
      this.gain[k] = g;
      this.prevGainPow[k] = g * g * pe;
      nearSum += Math.max(pe - r, 0);
      residSum += r;
    }
    const dt = farActive && nearSum > 4 * residSum && nearSum > BLOCK * 100;
    if (dt) this.dtHold = 20;
    else if (this.dtHold > 0) this.dtHold--;
    this.dtNow = this.dtHold > 0 && farActive;
  }

  stats(): EchoCancellerStats {
    const erle = (num: number, den: number) => (num > 0 && den > 0 ? 10 * Math.log10(num / den) : 0);
    return {
      delayMs: this.delayMsEstimate(),
      erleDb: erle(this.micPowAvg, this.outPowAvg),
      linearErleDb: erle(this.micPowAvg, this.linPowAvg),
      doubleTalk: this.dtNow,
      farActive: this.farActiveNow,
      converged: this.adapted,
      leak: this.leak,
      latencySamples: BLOCK + this.latency,
      resyncs: this.resyncCount,
    };
  }

  /** Device delay: the estimator's lag, refined by the largest tap of the converged filter. */
  private delayMsEstimate(): number | null {
    if (!this.delayKnown) return null;
    const A = this.skew - BLOCK * Math.floor(this.skew / BLOCK);
    // Lag behind the read position + how far ahead of it a far frame lands when
    // pushed = time from pushFar to the echo, whatever the read position.
    let samples = A + this.delayEst.lag * BLOCK + this.farLead;
    if (this.adapted) {
      if (this.delayTapSamples < 0 || this.nearBlock - this.lastPeakCheck > 50) {
        this.lastPeakCheck = this.nearBlock;
        this.delayTapSamples = this.peakTap();
      }
      if (this.delayTapSamples >= 0) samples = A + this.delayBlocks * BLOCK + this.delayTapSamples + this.farLead;
    }
    return (Math.max(0, samples) * 1000) / this.rate;
  }

  /** The foreground partition with the most energy (Parseval), -1 when the filter is empty. */
  private peakPartition(): number {
    let best = -1;
    let bestE = 0;
    for (let j = 0; j < this.M; j++) {
      let e = 0;
      const wb = j * BINS;
      for (let k = 0; k < BINS; k++) e += this.Fr[wb + k] * this.Fr[wb + k] + this.Fi[wb + k] * this.Fi[wb + k];
      if (e > bestE) {
        bestE = e;
        best = j;
      }
    }
    return best;
  }

  /**
   * The first tap within 6 dB of the strongest one (the direct path), in samples
   * from the filter start; the peak partition is found from spectral energy (Parseval).
   */
  private peakTap(): number {
    const best = this.peakPartition();
    if (best < 0) return -1;
    // Look at the peak partition and the one before it (the onset may straddle them).
    const first = Math.max(0, best - 1);
    const all = this.peakTaps;
    const n = (best - first + 1) * BLOCK;
    for (let j = first; j <= best; j++) {
      const wb = j * BINS;
      for (let k = 0; k < BINS; k++) {
        this.cRe[k] = this.Fr[wb + k];
        this.cIm[k] = this.Fi[wb + k];
      }
      this.fft.inverse(this.cRe, this.cIm, this.tBuf2);
      for (let i = 0; i < BLOCK; i++) all[(j - first) * BLOCK + i] = this.tBuf2[i];
    }
    let maxAbs = 0;
    for (let i = 0; i < n; i++) maxAbs = Math.max(maxAbs, Math.abs(all[i]));
    let firstTap = -1;
    for (let i = 0; i < n; i++) {
      if (Math.abs(all[i]) >= 0.5 * maxAbs) {
        firstTap = i;
        break;
      }
    }
    return firstTap < 0 ? -1 : first * BLOCK + firstTap;
  }
}
