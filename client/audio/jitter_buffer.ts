/**
 * One sender's adaptive jitter buffer: Opus packets in, in any order and at any time;
 * one 20 ms frame of PCM out per tick of the output device's clock.
 *
 * Target delay (after WebRTC NetEQ's DelayManager, webrtc/modules/audio_coding/neteq):
 * each packet's delay relative to its expected time is d = arrival - frame * 20 ms (the
 * two clocks' offset is unknown and does not matter). The fastest packet of the last 1 s
 * (a running minimum, so a slow drift between clocks is followed) is the reference; a
 * packet's relative delay r = d - min is how much later than the fastest it came. r goes
 * into a histogram (1 ms buckets) with exponential forgetting; the target is its
 * `quantile` (0.97), clamped to [minDelayMs, maxDelayMs].
 * Forgetting starts as a plain average and tightens to `forgetFactor` per packet
 * (NetEQ's start-up ramp), so the target is right after a few packets and falls back a
 * few seconds after jitter stops.
 *
 * Playout: frame f is played at tick time `now`; its playout delay is
 * P = now - (f * 20 + min), how long after the fastest possible arrival it plays. A
 * packet is on time when r <= P, so P is steered into [target, target + 20): each
 * tick plays the next frame (P unchanged) unless P has left that band:
 * - P below target (jitter grew, or the sender's clock is slower than ours): insert a
 *   frame of the decoder's concealment without advancing (NetEQ "expand"), P += 20;
 * - P 20 ms or more above target (jitter fell, or the sender's clock is faster): play two
 *   frames in one, spliced where they are most alike (a one-shot WSOLA step, NetEQ
 *   "accelerate"), P -= 20.
 * Inside a soft margin this waits for a quiet frame (level 12 dB under the running mean,
 * or under -50 dBov) so that time is cut or stretched where it is not heard; outside it,
 * it acts on any frame. This is what keeps clock drift (0.5-1 % between machines) from
 * growing the buffer without bound or underrunning it forever.
 *
 * Loss: a missing frame is taken from a later packet's redundant copy (audio_payload.ts;
 * the very bytes the sender encoded, so the PCM is the same as if it had arrived); else
 * the decoder conceals it. After `concealFrames` concealed frames in a row one more
 * fades out, then silence: a sender who stopped (mute, DTX, left) is silent 100 ms later,
 * and the buffer goes idle, resets the decoder and rebuffers to the target when packets
 * come again. The first real frame after silence fades in over 5 ms.
 *
 * Limits: frame indexes are u32 and wrap; they are unwrapped against the playout point.
 * At most CAPACITY frames ahead of the playout point are kept (fixed slots, no other
 * allocation per packet); a packet outside [next - PAST_LIMIT, next + CAPACITY) is
 * dropped, unless RESYNC_AFTER of them agree on a new timeline, each 1..8 frames after
 * the last (a sender that restarted its counter; stray packets in between do not hide
 * it): then the buffer starts over on it.
 */
import { FRAME_MS, FRAME_SAMPLES, LEVEL_SILENT_DBOV, levelDbov } from './format';
import type { AudioDecoder } from './opus_codec';

export interface JitterBufferOptions {
  /** Lowest target delay (default 20 ms). */
  minDelayMs?: number;
  /** Highest target delay (default 200 ms). */
  maxDelayMs?: number;
  /** Share of packets the target delay should cover (default 0.97). */
  quantile?: number;
  /** Histogram forgetting per packet (default 0.985: old jitter is forgotten in about 3-4 s). */
  forgetFactor?: number;
  /**
   * Span of the running minimum delay (default 1000 ms). NetEQ uses 2 s; a shorter span
   * follows a sender whose clock is slower than ours more closely (with the minimum
   * lagging behind a rising delay, every relative delay reads up to span x drift too
   * high: 10 ms at 1 % drift), at the price of a noisier minimum.
   */
  delayWindowMs?: number;
  /** Concealed frames at full level before the fade to silence (default 3). */
  concealFrames?: number;
}

export type PullSource = 'audio' | 'fec' | 'plc' | 'silence';

export interface PulledFrame {
  pcm: Int16Array;
  source: PullSource;
  /**
   * The sender's frame index (u32) this output stands for: the frame played (the later
   * one when two were played as one), or the lost frame concealed; null for an inserted
   * frame and for silence while idle. Lets a caller map playout to capture time.
   */
  frameIndex: number | null;
}

export interface JitterBufferPacket {
  /** The header's frame_id: u32, +1 per 20 ms of the sender's clock, counting on while it sends nothing. */
  frameIndex: number;
  primary: Buffer;
  redundant: readonly { distance: number; data: Buffer }[];
  /** Local arrival time, ms, on the clock pull() is given. */
  arrivalMs: number;
}

export interface JitterBufferStats {
  playing: boolean;
  targetDelayMs: number;
  /** Playout delay P of the frame last played (see the header comment); 0 while idle. */
  bufferedMs: number;
  /** Frames held (primaries and copies not yet played). */
  queuedFrames: number;
  received: number;
  /** Arrived after their frame was played or concealed. */
  late: number;
  duplicates: number;
  /** Frame indexes too far from the playout point (dropped). */
  outOfRange: number;
  /** Times the buffer started over on a new timeline. */
  resyncs: number;
  /** Frames played from a redundant copy. */
  fecRecovered: number;
  /** Frames concealed (loss, late packet, insertion). */
  concealed: number;
  /** Packets the decoder refused. */
  corrupt: number;
  /** Frames dropped to shorten the delay (accelerate). */
  driftDropped: number;
  /** Frames inserted to lengthen it (expand). */
  driftInserted: number;
  silentFrames: number;
}

/** Frames held ahead of the playout point: 1.28 s, well over any target. Power of two. */
export const CAPACITY = 64;
const MASK = CAPACITY - 1;
/** Packets this far behind the playout point (5 s) are late; further back, out of range. */
export const PAST_LIMIT = 250;
/** Out-of-range packets in a row, each 1..RESYNC_STEP frames after the last, that make a new timeline. */
export const RESYNC_AFTER = 3;
const RESYNC_STEP = 8;
/** Timelines followed at once, so a few stray packets in between cannot hide a real one. */
const CANDIDATES = 8;
/** After a restart the window begins this many frames before the first packet (reordered ones still fit). */
const REBASE_BACK = 16;
const BUCKET_MS = 1;
const DELAY_WINDOW_MAX = 256;
/** A delay jump this big is a re-anchored sender clock, not jitter. */
const CLOCK_JUMP_MS = 10_000;
const U32 = 2 ** 32;
/** Always quiet enough to cut or stretch: near digital silence. */
const QUIET_DBOV = 55;
/** At the edge of the band, a frame must be this far under the running mean level. */
const QUIET_BELOW_MEAN_DB = 35;
/** Beyond the soft band by this much, act on any frame; this far beyond it, on every tick. */
const HARD_MARGIN_MS = 20;
const URGENT_MARGIN_MS = 80;
/** Share of frames missing at play time (per frame, forgetting over ~4 s) that turns the copy headroom on, and off. */
const LOSS_ON = 0.01;
const LOSS_OFF = 0.003;
const LOSS_FORGET = 0.995;
const FADE_IN_SAMPLES = 240;
const SPLICE_SAMPLES = 120;
const SPLICE_STEP = 8;

interface Slot {
  frame: number;
  primary: Buffer | null;
  red: Buffer | null;
  hadPrimary: boolean;
}

export class JitterBuffer {
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly quantile: number;
  private readonly forget: number;
  private readonly window: number;
  private readonly concealFrames: number;

  private readonly slots: Slot[] = [];
  private buffered = 0;
  private anchored = false;
  private playing = false;
  /** While playing: the next frame to play. While idle: frames below it are late. */
  private next = 0;

  // running minimum of d over the window: a monotonic deque in fixed arrays
  private readonly dqT = new Float64Array(DELAY_WINDOW_MAX);
  private readonly dqD = new Float64Array(DELAY_WINDOW_MAX);
  private dqHead = 0;
  private dqLen = 0;
  private minD = 0;

  private readonly hist: Float64Array;
  private observed = 0;
  /** The jitter quantile alone, ms. */
  private jitterTarget = 0;
  private target: number;
  private lossRate = 0;
  private headroom = 0;
  /** Farthest copy distance in the latest packet: how far back copies reach. */
  private copyDepth = 1;

  /** Timelines that out-of-range packets suggest: last index and how many packets extended it. */
  private readonly candExt = new Float64Array(CANDIDATES).fill(NaN);
  private readonly candCount = new Uint8Array(CANDIDATES);
  private readonly candAge = new Float64Array(CANDIDATES);
  private candClock = 0;

  private plcRun = 0;
  private sinceAdjust = 0;
  private lastLevel = LEVEL_SILENT_DBOV;
  /** Running speech level (-dBov): follows louder frames fast, quieter ones slowly. */
  private meanLevel = 30;
  private needFadeIn = false;
  private lastP = 0;

  private readonly s: Omit<JitterBufferStats, 'playing' | 'targetDelayMs' | 'bufferedMs' | 'queuedFrames'> = {
    received: 0,
    late: 0,
    duplicates: 0,
    outOfRange: 0,
    resyncs: 0,
    fecRecovered: 0,
    concealed: 0,
    corrupt: 0,
    driftDropped: 0,
    driftInserted: 0,
    silentFrames: 0,
  };

  constructor(
    private readonly decoder: AudioDecoder,
    o: JitterBufferOptions = {},
  ) {
    this.minDelay = o.minDelayMs ?? 20;
    this.maxDelay = o.maxDelayMs ?? 200;
    this.quantile = o.quantile ?? 0.97;
    this.forget = o.forgetFactor ?? 0.985;
    this.window = o.delayWindowMs ?? 1000;
    this.concealFrames = o.concealFrames ?? 3;
    if (!(this.minDelay >= 0 && this.maxDelay >= this.minDelay && this.maxDelay <= (CAPACITY - 4) * FRAME_MS)) {
      throw new RangeError(`need 0 <= minDelayMs <= maxDelayMs <= ${(CAPACITY - 4) * FRAME_MS}`);
    }
    if (!(this.quantile > 0 && this.quantile < 1)) throw new RangeError('quantile must be in (0, 1)');
    if (!(this.forget > 0 && this.forget < 1)) throw new RangeError('forgetFactor must be in (0, 1)');
    for (let i = 0; i < CAPACITY; i++) this.slots.push({ frame: NaN, primary: null, red: null, hadPrimary: false });
    this.hist = new Float64Array(Math.ceil(this.maxDelay / BUCKET_MS) + 1);
    this.target = this.minDelay;
  }

  push(p: JitterBufferPacket): void {
    this.s.received++;
    const u = p.frameIndex;
    if (!Number.isInteger(u) || u < 0 || u >= U32 || !Number.isFinite(p.arrivalMs) || p.primary.length === 0) {
      this.s.outOfRange++;
      return;
    }
    if (!this.anchored) this.rebase(u, p.arrivalMs);
    let ext = this.unwrap(u);
    if (ext >= this.next + CAPACITY || ext < this.next - PAST_LIMIT) {
      if (!this.playing && this.buffered === 0) {
        this.rebase(ext, p.arrivalMs);
      } else {
        if (!this.extendsCandidate(ext)) {
          this.s.outOfRange++;
          return;
        }
        this.s.resyncs++;
        this.goIdle();
        this.dqLen = 0;
        this.rebase(ext, p.arrivalMs);
      }
      ext = this.unwrap(u);
    }

    const slot = this.slots[ext & MASK];
    if (ext < this.next) {
      if (slot.frame === ext && slot.hadPrimary) {
        this.s.duplicates++;
      } else {
        this.s.late++;
        this.observeDelay(ext, p.arrivalMs);
      }
      return;
    }
    if (slot.frame !== ext) this.resetSlot(slot, ext);
    if (slot.hadPrimary) {
      this.s.duplicates++;
      return;
    }
    this.observeDelay(ext, p.arrivalMs);
    if (slot.red === null) this.buffered++;
    slot.primary = p.primary;
    slot.red = null;
    slot.hadPrimary = true;

    let depth = 0;
    for (const r of p.redundant) {
      depth = Math.max(depth, r.distance);
      const e = ext - r.distance;
      if (e < this.next || r.data.length === 0) continue;
      const s = this.slots[e & MASK];
      if (s.frame !== e) this.resetSlot(s, e);
      if (s.hadPrimary || s.red !== null) continue;
      s.red = r.data;
      this.buffered++;
    }
    this.copyDepth = Math.min(depth, 2);
  }

  pull(nowMs: number): PulledFrame {
    if (!this.playing && !this.tryStart(nowMs)) return this.silence();
    const f = this.next;
    const P = nowMs - (f * FRAME_MS + this.minD);
    const T = this.target;
    this.lastP = P;
    this.sinceAdjust++;
    const slot = this.slots[f & MASK];
    const present = slot.frame === f && (slot.primary !== null || slot.red !== null);

    if (!present) {
      // Lost, late, or the sender stopped. Below target, wait for it (an insertion);
      // at or above, give it up and move on.
      if (P >= T) {
        this.noteLoss(this.buffered > 0); // with nothing after it, the stream may just have ended
        this.consume(f);
        return this.concealOrSilence(u32(f));
      }
      this.s.driftInserted++;
      return this.concealOrSilence(null);
    }

    const behind = T - P;
    // Insertions are concealment: never more in a row than concealFrames.
    if (
      this.plcRun < this.concealFrames &&
      behind > 0 &&
      (behind > URGENT_MARGIN_MS || (this.sinceAdjust >= 2 && this.quietEnough(this.lastLevel, behind / HARD_MARGIN_MS)))
    ) {
      this.sinceAdjust = 0;
      this.s.driftInserted++;
      return this.concealOrSilence(null);
    }

    this.noteLoss(slot.primary === null);
    let { pcm, source } = this.decodeSlot(slot);
    let frameIndex = f;
    this.consume(f);

    // Cutting a frame leaves P - 20 >= T; the band above that is soft up to the hard
    // margin (never past maxDelay + 20: P stays within one frame of the maximum).
    const excess = P - T;
    const hardExcess = Math.max(FRAME_MS, Math.min(FRAME_MS + HARD_MARGIN_MS, this.maxDelay + FRAME_MS - T));
    if (excess >= FRAME_MS && (this.sinceAdjust >= 2 || excess >= URGENT_MARGIN_MS)) {
      const nextSlot = this.slots[(f + 1) & MASK];
      const nextPresent = nextSlot.frame === f + 1 && (nextSlot.primary !== null || nextSlot.red !== null);
      const urgency = hardExcess > FRAME_MS ? (excess - FRAME_MS) / (hardExcess - FRAME_MS) : 1;
      if (nextPresent && this.quietEnough(levelDbov(pcm), urgency)) {
        const b = this.decodeSlot(nextSlot);
        this.consume(f + 1);
        pcm = splice(pcm, b.pcm);
        if (b.source === 'fec') source = 'fec';
        frameIndex = f + 1;
        this.sinceAdjust = 0;
        this.s.driftDropped++;
      }
    }

    if (this.needFadeIn) {
      for (let i = 0; i < FADE_IN_SAMPLES; i++) pcm[i] = Math.round((pcm[i] * i) / FADE_IN_SAMPLES);
      this.needFadeIn = false;
    }
    this.plcRun = 0;
    this.noteLevel(pcm);
    return { pcm, source, frameIndex: u32(frameIndex) };
  }

  stats(): JitterBufferStats {
    return {
      playing: this.playing,
      targetDelayMs: this.target,
      bufferedMs: this.playing ? this.lastP : 0,
      queuedFrames: this.buffered,
      ...this.s,
    };
  }

  // --- playout ------------------------------------------------------------------------

  /** Idle: start once the earliest held frame has waited the target delay. */
  private tryStart(nowMs: number): boolean {
    if (this.buffered === 0) return false;
    let e = this.firstHeld(this.next);
    if (e < 0) return false;
    let P = nowMs - (e * FRAME_MS + this.minD);
    if (P < this.target) return false;
    // Frames held up so long that playing them would only add delay are dropped as late.
    for (;;) {
      if (P < this.target + 2 * FRAME_MS) break;
      const later = this.firstHeld(e + 1);
      if (later < 0) break;
      this.consume(e);
      this.s.late++;
      e = later;
      P = nowMs - (e * FRAME_MS + this.minD);
    }
    this.next = e;
    this.playing = true;
    this.plcRun = 0;
    this.sinceAdjust = 0;
    // The decoder starts afresh (reset when the buffer went idle): no fade-in needed.
    this.needFadeIn = false;
    return true;
  }

  private firstHeld(from: number): number {
    for (let e = from; e < this.next + CAPACITY; e++) {
      const s = this.slots[e & MASK];
      if (s.frame === e && (s.primary !== null || s.red !== null)) return e;
    }
    return -1;
  }

  private decodeSlot(slot: Slot): { pcm: Int16Array; source: PullSource } {
    const fromCopy = slot.primary === null;
    const pcm = this.decoder.decode((slot.primary ?? slot.red) as Buffer);
    if (pcm === null) {
      this.s.corrupt++;
      this.s.concealed++;
      return { pcm: this.decoder.conceal(), source: 'plc' };
    }
    if (fromCopy) this.s.fecRecovered++;
    return { pcm, source: fromCopy ? 'fec' : 'audio' };
  }

  /** Frame `f` has been played or given up: free its slot and move past it. */
  private consume(f: number): void {
    const s = this.slots[f & MASK];
    if (s.frame === f && (s.primary !== null || s.red !== null)) this.buffered--;
    if (s.frame !== f) this.resetSlot(s, f);
    s.primary = null;
    s.red = null;
    if (f >= this.next) this.next = f + 1;
  }

  private concealOrSilence(frameIndex: number | null): PulledFrame {
    this.plcRun++;
    if (this.plcRun > this.concealFrames + 1) {
      if (this.buffered === 0) this.goIdle();
      return this.silence(frameIndex);
    }
    this.s.concealed++;
    const pcm = this.decoder.conceal();
    if (this.plcRun === this.concealFrames + 1) {
      for (let i = 0; i < FRAME_SAMPLES; i++) pcm[i] = Math.round((pcm[i] * (FRAME_SAMPLES - i)) / FRAME_SAMPLES);
      this.needFadeIn = true;
    }
    this.noteLevel(pcm);
    return { pcm, source: 'plc', frameIndex };
  }

  private silence(frameIndex: number | null = null): PulledFrame {
    this.s.silentFrames++;
    this.lastLevel = LEVEL_SILENT_DBOV;
    this.needFadeIn = true;
    return { pcm: new Int16Array(FRAME_SAMPLES), source: 'silence', frameIndex };
  }

  private goIdle(): void {
    if (this.playing) this.decoder.reset();
    this.playing = false;
    this.plcRun = 0;
  }

  /**
   * Whether a frame at `level` (-dBov) may be cut or stretched at this `urgency` (0 at
   * the edge of the band, 1 at the hard margin): the more urgent, the louder a frame may
   * be; at 1 any frame will do. Speech has pauses every second or two, and drift takes
   * longer than that to cross the band.
   */
  private quietEnough(level: number, urgency: number): boolean {
    if (urgency >= 1 || level >= QUIET_DBOV) return true;
    return level >= this.meanLevel + QUIET_BELOW_MEAN_DB * (1 - Math.max(0, urgency));
  }

  /**
   * Tracks how often a frame's own packet is missing when it is due. While that is
   * frequent, the target gets headroom over the jitter quantile so the packet carrying
   * the copy is usually there in time: 20 ms per frame of copy distance (at most 2).
   */
  private noteLoss(missing: boolean): void {
    this.lossRate = LOSS_FORGET * this.lossRate + (missing ? 1 - LOSS_FORGET : 0);
    if (this.headroom === 0 && this.lossRate > LOSS_ON) this.headroom = FRAME_MS * Math.max(1, this.copyDepth);
    else if (this.headroom > 0 && this.lossRate < LOSS_OFF) this.headroom = 0;
    this.updateTarget();
  }

  private updateTarget(): void {
    this.target = Math.max(this.minDelay, Math.min(this.maxDelay, this.jitterTarget + this.headroom));
  }

  private noteLevel(pcm: Int16Array): void {
    this.lastLevel = levelDbov(pcm);
    const rate = this.lastLevel < this.meanLevel ? 0.1 : 0.005;
    this.meanLevel += rate * (this.lastLevel - this.meanLevel);
  }

  // --- timeline -----------------------------------------------------------------------

  /** The extended (unwrapped) index of u32 `u` nearest the playout point. */
  private unwrap(u: number): number {
    const ref = this.next;
    const ref32 = ((ref % U32) + U32) % U32;
    return ref + ((u - ref32) | 0);
  }

  /**
   * Start over around frame `ext` (idle, nothing held). A sender that kept counting while
   * silent keeps its delay d, and the running minimum stays valid; one whose d moved
   * by more than any jitter restarted its clock, and the minimum starts again.
   */
  private rebase(ext: number, arrivalMs: number): void {
    this.clearSlots();
    this.anchored = true;
    this.playing = false;
    this.next = ext - REBASE_BACK;
    this.candExt.fill(NaN);
    this.candCount.fill(0);
    if (this.dqLen > 0 && Math.abs(arrivalMs - ext * FRAME_MS - this.minD) > 2 * this.maxDelay) this.dqLen = 0;
  }

  /** Counts `ext` towards the timeline it continues (or starts one); true once one has RESYNC_AFTER packets. */
  private extendsCandidate(ext: number): boolean {
    this.candClock++;
    let victim = 0;
    for (let i = 0; i < CANDIDATES; i++) {
      const d = ext - this.candExt[i];
      if (d >= 1 && d <= RESYNC_STEP) {
        this.candExt[i] = ext;
        this.candAge[i] = this.candClock;
        return ++this.candCount[i] >= RESYNC_AFTER;
      }
      // Replace the weakest timeline: fewest packets, then the stalest.
      const c = this.candCount[i];
      const v = this.candCount[victim];
      if (c < v || (c === v && this.candAge[i] < this.candAge[victim])) victim = i;
    }
    this.candExt[victim] = ext;
    this.candCount[victim] = 1;
    this.candAge[victim] = this.candClock;
    return RESYNC_AFTER <= 1;
  }

  private clearSlots(): void {
    for (const s of this.slots) this.resetSlot(s, NaN);
    this.buffered = 0;
  }

  private resetSlot(s: Slot, frame: number): void {
    s.frame = frame;
    s.primary = null;
    s.red = null;
    s.hadPrimary = false;
  }

  // --- delay estimation ---------------------------------------------------------------

  private observeDelay(ext: number, arrivalMs: number): void {
    const d = arrivalMs - ext * FRAME_MS;
    if (this.dqLen > 0 && Math.abs(d - this.minD) > CLOCK_JUMP_MS) this.dqLen = 0;
    const N = DELAY_WINDOW_MAX;
    while (this.dqLen > 0 && this.dqT[this.dqHead] < arrivalMs - this.window) {
      this.dqHead = (this.dqHead + 1) % N;
      this.dqLen--;
    }
    while (this.dqLen > 0 && this.dqD[(this.dqHead + this.dqLen - 1) % N] >= d) this.dqLen--;
    if (this.dqLen === N) {
      this.dqHead = (this.dqHead + 1) % N;
      this.dqLen--;
    }
    const at = (this.dqHead + this.dqLen) % N;
    this.dqT[at] = arrivalMs;
    this.dqD[at] = d;
    this.dqLen++;
    this.minD = this.dqD[this.dqHead];

    const r = d - this.minD;
    const n = this.observed++;
    const lambda = Math.min(this.forget, n / (n + 1));
    const h = this.hist;
    for (let i = 0; i < h.length; i++) h[i] *= lambda;
    h[Math.min(h.length - 1, Math.floor(r / BUCKET_MS))] += 1 - lambda;
    let cum = 0;
    let k = 0;
    for (; k < h.length - 1; k++) {
      cum += h[k];
      if (cum >= this.quantile) break;
    }
    this.jitterTarget = k * BUCKET_MS;
    this.updateTarget();
  }
}

function u32(ext: number): number {
  return ((ext % U32) + U32) % U32;
}

/**
 * Two consecutive frames as one: `a` until the point where the two are most alike, a
 * short cross-fade, then `b`. Output sample i stays at i of one or the other, so what is
 * cut is a[s..] + b[..s] (exactly one frame) and the ends join their neighbours as before.
 */
function splice(a: Int16Array, b: Int16Array): Int16Array {
  let best = (FRAME_SAMPLES - SPLICE_SAMPLES) >> 1;
  let bestScore = -Infinity;
  for (let s = 0; s + SPLICE_SAMPLES <= FRAME_SAMPLES; s += SPLICE_STEP) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = s; i < s + SPLICE_SAMPLES; i++) {
      ab += a[i] * b[i];
      aa += a[i] * a[i];
      bb += b[i] * b[i];
    }
    const score = ab / Math.sqrt(aa * bb + 1);
    if (score > bestScore) {
      bestScore = score;
      best = s;
    }
  }
  const out = new Int16Array(FRAME_SAMPLES);
  for (let i = 0; i < best; i++) out[i] = a[i];
  for (let i = 0; i < SPLICE_SAMPLES; i++) {
    const w = (i + 0.5) / SPLICE_SAMPLES;
    out[best + i] = Math.round(a[best + i] * (1 - w) + b[best + i] * w);
  }
  for (let i = best + SPLICE_SAMPLES; i < FRAME_SAMPLES; i++) out[i] = b[i];
  return out;
}
