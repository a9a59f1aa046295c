/**
 * Receive side of one media stream: turns the datagrams the relay forwards (lost,
 * duplicated, reordered, delayed) back into whole frames, and measures the stream for
 * the once-a-second reception report (shared/protocol/media_packet.ts, ReceptionRecord).
 *
 * Invariants the code relies on:
 * - `horizon` is the newest frame id that is either delivered or given up on. Every
 *   pending frame is after it (serial arithmetic), so "older than the horizon" is one
 *   comparison and a given-up frame can never come back as a zombie that waits for
 *   fragments that were already thrown away.
 * - A frame is delivered whole or never, and delivered ids strictly increase.
 * - Memory is bounded by maxPendingFrames and maxPendingBytes (payload bytes held),
 *   whatever the packets say.
 *
 * Frame loss is counted only from gaps between delivered ids, so a frame that expired,
 * was evicted or superseded, and whose late fragments then arrive, is counted once.
 */
import {
  MAX_FRAGMENTS,
  MEDIA_HEADER_BYTES,
  OFFSET,
  readU64,
  seqDiff,
  type ReceptionRecord,
} from '../shared/protocol/media_packet';

export interface ReassemblerOptions {
  /** Incomplete frames held at most (the oldest is evicted beyond). Default 8. */
  maxPendingFrames?: number;
  /** Payload bytes of incomplete frames held at most (oldest frames evicted beyond). Default 4 MiB. */
  maxPendingBytes?: number;
  /** An incomplete frame is dropped this long after its first fragment arrived. Default 500. */
  deadlineMs?: number;
}

export interface ReassembledFrame {
  streamId: number;
  kind: number;
  layer: number;
  /** Header flags of the frame (KEYFRAME, VOICE). */
  flags: number;
  /** Audio level of the frame in -dBov (LEVEL_SILENT for non-audio). */
  level: number;
  frameId: number;
  /** A buffer of its own: never a view of a datagram. */
  data: Buffer;
  captureTsUs: number;
  firstArrivalUs: number;
  completeUs: number;
  fragments: number;
}

export interface ReassemblerStats {
  /** Every datagram pushed, whatever became of it. */
  packets: number;
  /** Header + payload bytes of every datagram pushed. */
  bytes: number;
  duplicates: number;
  late: number;
  malformed: number;
  framesDelivered: number;
  framesDropped: number;
  /** framesDropped / (framesDelivered + framesDropped), 0 before any frame. */
  frameLoss: number;
  /** Packets expected from the extended highest sequence number (RFC 3550 A.3). */
  expectedPackets: number;
  /** Packets counted against `expectedPackets` (duplicates included, as RFC 3550). */
  receivedPackets: number;
  /** (expected - received) / expected, clamped to 0..1. */
  packetLoss: number;
  /** Delivered frames per second over the last ~1 s. */
  fps: number;
  /** Header + payload kilobits per second over the last ~1 s. */
  kbps: number;
  /** RFC 3550 interarrival jitter over frames (transit = complete - capture). */
  jitterMs: number;
  /** Smoothed capture-to-complete delay. */
  delayMs: number;
  lastDelayMs: number;
  /** Incomplete frames dropped at their deadline. */
  expired: number;
  /** Incomplete frames dropped to stay within the memory bounds. */
  evicted: number;
  /** Incomplete frames discarded because a newer frame completed. */
  superseded: number;
  /** Times the sender was judged to have restarted its counters. */
  resyncs: number;
  pendingFrames: number;
  pendingBytes: number;
}

interface PendingFrame {
  frameId: number;
  fragCount: number;
  have: number;
  bytes: number;
  parts: (Buffer | undefined)[];
  layer: number;
  flags: number;
  level: number;
  captureTsUs: number;
  firstArrivalUs: number;
}

const DEFAULT_MAX_PENDING_FRAMES = 8;
const DEFAULT_MAX_PENDING_BYTES = 4 * 1024 * 1024;
const DEFAULT_DEADLINE_MS = 500;

/**
 * RFC 3550 A.1 probation limits, widened for video: a 1-second outage of a screen
 * share at ~100 fragments x 30 fps is 3,000 packets, which RFC's MAX_DROPOUT (3000)
 * would mistake for a restart and so forget the loss. 65,536 is ~20 s of a busy stream.
 */
const MAX_DROPOUT = 1 << 16;
/** Packets further behind than this are a restart candidate rather than reordering. */
const MAX_MISORDER = 4096;
/**
 * A fragment this many frames behind the horizon cannot be reordering (the deadline is
 * well under a second; this is ~8 s at 30 fps): two in a row mean the sender restarted
 * its frame counter, and without resyncing it would be black-holed as "late" for up to
 * 2^31 frames.
 */
const FRAME_RESTART_BEHIND = 256;
/** A forward jump of more frames than this is a discontinuity, not ~36 min of loss. */
const MAX_COUNTED_FRAME_GAP = 1 << 16;

const NONE = -1;

/** Rate window: 10 buckets of 100 ms; the window is the current bucket and the 9 before. */
const RATE_BUCKET_US = 100_000;
const RATE_BUCKETS = 10;

export class StreamReassembler {
  readonly streamId: number;
  readonly kind: number;
  /** Layer of the latest packet (a stream carries one layer at a time). */
  layer = 0;
  /** Arrival time of the latest packet pushed (0 before any): lets the owner forget silent streams. */
  lastArrivalUs = 0;

  private readonly maxPendingFrames: number;
  private readonly maxPendingBytes: number;
  private readonly deadlineUs: number;

  // Few pending frames (8 by default): linear scans beat a Map and allocate nothing.
  private readonly pending: PendingFrame[] = [];
  private heldBytes = 0;

  private started = false;
  private horizon = 0;
  private lastDelivered = 0;
  /** fragCount of the last delivered frame; 0 when nothing real was delivered since (re)start. */
  private lastDeliveredFragCount = 0;
  private restartCandidate = NONE;

  // Sequence accounting (RFC 3550 A.1/A.3). extMax is the extended highest seq
  // (cycles folded in, exact up to 2^53); extBase the first of the current segment.
  private seqStarted = false;
  private extMax = 0;
  private extBase = 0;
  private badSeq = NONE;
  private expectedPkts = 0;
  private receivedPkts = 0;

  private nPackets = 0;
  private nBytes = 0;
  private nDuplicates = 0;
  private nLate = 0;
  private nMalformed = 0;
  private nDelivered = 0;
  private nDropped = 0;
  private nExpired = 0;
  private nEvicted = 0;
  private nSuperseded = 0;
  private nResyncs = 0;

  private hasTransit = false;
  private lastTransitUs = 0;
  private jitterUs = 0;
  private delayUs = 0;
  private lastDelayUs = 0;

  private readonly bucketEpoch = new Float64Array(RATE_BUCKETS).fill(Number.NEGATIVE_INFINITY);
  private readonly bucketBytes = new Float64Array(RATE_BUCKETS);
  private readonly bucketFrames = new Float64Array(RATE_BUCKETS);

  private reportExpected = 0;
  private reportReceived = 0;
  private reportDelivered = 0;
  private reportDropped = 0;

  constructor(streamId: number, kind: number, opts: ReassemblerOptions = {}) {
    const maxFrames = opts.maxPendingFrames ?? DEFAULT_MAX_PENDING_FRAMES;
    const maxBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    const deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
    if (!Number.isInteger(maxFrames) || maxFrames < 1) throw new RangeError('maxPendingFrames must be an integer >= 1');
    if (!(maxBytes >= 1)) throw new RangeError('maxPendingBytes must be >= 1');
    if (!(deadlineMs > 0)) throw new RangeError('deadlineMs must be > 0');
    this.streamId = streamId >>> 0;
    this.kind = kind;
    this.maxPendingFrames = maxFrames;
    this.maxPendingBytes = maxBytes;
    this.deadlineUs = deadlineMs * 1000;
  }

  get pendingFrames(): number {
    return this.pending.length;
  }

  get pendingBytes(): number {
    return this.heldBytes;
  }

  /**
   * Takes one datagram of this stream (it passed mediaPacketProblem). Returns the frame
   * this packet completes, else null. Never throws.
   */
  push(packet: Buffer, arrivalUs: number): ReassembledFrame | null {
    this.nPackets++;
    this.nBytes += packet.length;
    this.lastArrivalUs = arrivalUs;
    this.addRate(arrivalUs, packet.length, 0);

    // The caller promised a valid packet of this stream; these checks cost a few reads
    // and keep a routing bug from corrupting frames or allocating absurd part arrays.
    if (packet.length < MEDIA_HEADER_BYTES) {
      this.nMalformed++;
      return null;
    }
    const fragCount = packet.readUInt16BE(OFFSET.fragCount);
    const fragIndex = packet.readUInt16BE(OFFSET.fragIndex);
    if (
      fragCount === 0 ||
      fragCount > MAX_FRAGMENTS ||
      fragIndex >= fragCount ||
      packet.readUInt32BE(OFFSET.streamId) !== this.streamId ||
      packet[OFFSET.kind] !== this.kind
    ) {
      this.nMalformed++;
      return null;
    }

    this.countSeq(packet.readUInt32BE(OFFSET.seq));
    const frameId = packet.readUInt32BE(OFFSET.frameId);
    const layer = packet[OFFSET.layer];
    this.layer = layer;

    if (!this.started) {
      // Counting starts at the first frame seen: nothing before it is loss.
      this.started = true;
      this.horizon = this.lastDelivered = (frameId - 1) >>> 0;
    }
    // Enforced here too, not only by the owner's timer, so a frame is never delivered
    // past its deadline whatever the timer's granularity.
    if (this.pending.length !== 0) this.expire(arrivalUs);

    const ahead = seqDiff(frameId, this.horizon);
    if (ahead <= 0) {
      if (ahead > -FRAME_RESTART_BEHIND) {
        this.restartCandidate = NONE;
        if (frameId === this.lastDelivered && this.lastDeliveredFragCount !== 0) {
          // Every fragment of a delivered frame was received, so this one is a copy.
          if (fragCount === this.lastDeliveredFragCount) this.nDuplicates++;
          else this.nMalformed++;
        } else this.nLate++;
        return null;
      }
      if (!this.maybeResync(frameId)) return null;
    } else this.restartCandidate = NONE;

    let p: PendingFrame | undefined;
    for (let i = 0; i < this.pending.length; i++) {
      if (this.pending[i].frameId === frameId) {
        p = this.pending[i];
        break;
      }
    }
    const len = packet.length - MEDIA_HEADER_BYTES;

    if (p) {
      // A frame is one encoding: a different count or layer under the same id is not ours to splice.
      if (p.fragCount !== fragCount || p.layer !== layer) {
        this.nMalformed++;
        return null;
      }
      if (p.parts[fragIndex] !== undefined) {
        this.nDuplicates++;
        return null;
      }
    } else if (fragCount === 1) {
      // Whole in one datagram (all audio, small frames): nothing to hold.
      const data = Buffer.allocUnsafe(len);
      packet.copy(data, 0, MEDIA_HEADER_BYTES);
      return this.deliver(
        frameId,
        data,
        1,
        layer,
        packet[OFFSET.flags],
        packet[OFFSET.level],
        readU64(packet, OFFSET.captureTs),
        arrivalUs,
        arrivalUs,
      );
    } else {
      if (this.pending.length >= this.maxPendingFrames) {
        const oldest = this.oldestIndex();
        if (seqDiff(frameId, this.pending[oldest].frameId) < 0) {
          // The newcomer would be the oldest: evicting it is refusing it.
          this.giveUpTo(frameId);
          this.nEvicted++;
          return null;
        }
        this.evict(oldest);
      }
      p = {
        frameId,
        fragCount,
        have: 0,
        bytes: 0,
        parts: new Array<Buffer | undefined>(fragCount),
        layer,
        flags: packet[OFFSET.flags],
        level: packet[OFFSET.level],
        captureTsUs: readU64(packet, OFFSET.captureTs),
        firstArrivalUs: arrivalUs,
      };
      this.pending.push(p);
    }

    while (this.heldBytes + len > this.maxPendingBytes && this.pending.length !== 0) {
      const oldest = this.oldestIndex();
      const victim = this.pending[oldest];
      this.evict(oldest);
      if (victim === p) return null;
    }

    // A copy: the datagram may be a view into a larger or reused buffer.
    const part = Buffer.allocUnsafe(len);
    packet.copy(part, 0, MEDIA_HEADER_BYTES);
    p.parts[fragIndex] = part;
    p.have++;
    p.bytes += len;
    this.heldBytes += len;
    if (p.have !== p.fragCount) return null;

    this.removeAt(this.pending.indexOf(p));
    const data = Buffer.concat(p.parts as Buffer[], p.bytes);
    return this.deliver(frameId, data, p.fragCount, p.layer, p.flags, p.level, p.captureTsUs, p.firstArrivalUs, arrivalUs);
  }

  /** Drops incomplete frames whose deadline passed (and any older ones with them); returns how many. */
  expire(nowUs: number): number {
    let newestDead = NONE;
    let newestKey = -1;
    for (let i = 0; i < this.pending.length; i++) {
      const p = this.pending[i];
      if (nowUs - p.firstArrivalUs >= this.deadlineUs) {
        const key = (p.frameId - this.horizon) >>> 0;
        if (key > newestKey) {
          newestKey = key;
          newestDead = p.frameId;
        }
      }
    }
    if (newestDead === NONE) return 0;
    const n = this.giveUpTo(newestDead);
    this.nExpired += n;
    return n;
  }

  stats(nowUs: number): ReassemblerStats {
    const frames = this.nDelivered + this.nDropped;
    const expected = this.expectedPkts;
    const { spanUs, bytes, frames: windowFrames } = this.windowSums(nowUs);
    return {
      packets: this.nPackets,
      bytes: this.nBytes,
      duplicates: this.nDuplicates,
      late: this.nLate,
      malformed: this.nMalformed,
      framesDelivered: this.nDelivered,
      framesDropped: this.nDropped,
      frameLoss: frames > 0 ? this.nDropped / frames : 0,
      expectedPackets: expected,
      receivedPackets: this.receivedPkts,
      packetLoss: expected > 0 ? clamp((expected - this.receivedPkts) / expected, 0, 1) : 0,
      fps: spanUs > 0 ? (windowFrames * 1e6) / spanUs : 0,
      kbps: spanUs > 0 ? (bytes * 8 * 1e3) / spanUs : 0,
      jitterMs: this.jitterUs / 1000,
      delayMs: this.delayUs / 1000,
      lastDelayMs: this.lastDelayUs / 1000,
      expired: this.nExpired,
      evicted: this.nEvicted,
      superseded: this.nSuperseded,
      resyncs: this.nResyncs,
      pendingFrames: this.pending.length,
      pendingBytes: this.heldBytes,
    };
  }

  /**
   * The reception record for the interval since the previous call. Intervals are cut
   * by the calls themselves; `_nowUs` is accepted for symmetry with stats().
   */
  takeReport(_nowUs: number): ReceptionRecord {
    const expected = this.expectedPkts - this.reportExpected;
    const received = this.receivedPkts - this.reportReceived;
    const delivered = this.nDelivered - this.reportDelivered;
    const dropped = this.nDropped - this.reportDropped;
    this.reportExpected = this.expectedPkts;
    this.reportReceived = this.receivedPkts;
    this.reportDelivered = this.nDelivered;
    this.reportDropped = this.nDropped;
    return {
      streamId: this.streamId,
      kind: this.kind,
      layer: this.layer,
      // Duplicates can make received exceed expected: that is no loss, not negative loss.
      lossBp: expected > 0 ? clamp(Math.round(((expected - received) * 10000) / expected), 0, 10000) : 0,
      expected,
      received,
      framesDelivered: delivered,
      framesDropped: dropped,
      jitterUs: Math.round(this.jitterUs),
      delayUs: Math.max(0, Math.round(this.delayUs)),
    };
  }

  // ------------------------------------------------------------ internals

  private deliver(
    frameId: number,
    data: Buffer,
    fragments: number,
    layer: number,
    flags: number,
    level: number,
    captureTsUs: number,
    firstArrivalUs: number,
    completeUs: number,
  ): ReassembledFrame {
    // Older incomplete frames can never be delivered now (ids must increase).
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if (seqDiff(this.pending[i].frameId, frameId) < 0) {
        this.removeAt(i);
        this.nSuperseded++;
      }
    }
    const gap = ((frameId - this.lastDelivered) >>> 0) - 1;
    if (gap <= MAX_COUNTED_FRAME_GAP) this.nDropped += gap;
    this.nDelivered++;
    this.lastDelivered = this.horizon = frameId;
    this.lastDeliveredFragCount = fragments;

    const transit = completeUs - captureTsUs;
    // A caller's bad clock (NaN) must not poison the smoothed values for good.
    if (Number.isFinite(transit)) {
      if (this.hasTransit) {
        this.jitterUs += (Math.abs(transit - this.lastTransitUs) - this.jitterUs) / 16;
        // 1/8 as TCP's SRTT: follows a delay change within a few frames, smooths one-offs.
        this.delayUs += (transit - this.delayUs) / 8;
      } else {
        this.delayUs = transit;
        this.hasTransit = true;
      }
      this.lastTransitUs = this.lastDelayUs = transit;
    }
    this.addRate(completeUs, 0, 1);

    return {
      streamId: this.streamId,
      kind: this.kind,
      layer,
      flags,
      level,
      frameId,
      data,
      captureTsUs,
      firstArrivalUs,
      completeUs,
      fragments,
    };
  }

  /**
   * A fragment far behind the horizon: late, unless it is the second in a row of a
   * restarted sender (consecutive, frame ids at most one apart). Returns true after
   * resyncing, when the packet should be processed as a new stream's.
   */
  private maybeResync(frameId: number): boolean {
    if (this.restartCandidate !== NONE && ((frameId - this.restartCandidate) >>> 0) <= 1) {
      const from = this.restartCandidate;
      this.nSuperseded += this.pending.length;
      this.pending.length = 0;
      this.heldBytes = 0;
      this.horizon = this.lastDelivered = (from - 1) >>> 0;
      this.lastDeliveredFragCount = 0;
      // Transit across a restart compares two unrelated clocks' worth of history.
      this.hasTransit = false;
      this.restartCandidate = NONE;
      this.nResyncs++;
      return true;
    }
    this.restartCandidate = frameId;
    this.nLate++;
    return false;
  }

  /** Gives up on `frameId` and every pending frame not after it; returns how many pending frames went. */
  private giveUpTo(frameId: number): number {
    let n = 0;
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if (seqDiff(this.pending[i].frameId, frameId) <= 0) {
        this.removeAt(i);
        n++;
      }
    }
    if (seqDiff(frameId, this.horizon) > 0) this.horizon = frameId;
    return n;
  }

  private evict(index: number): void {
    this.giveUpTo(this.pending[index].frameId);
    this.nEvicted++;
  }

  private oldestIndex(): number {
    let best = 0;
    let bestKey = Infinity;
    for (let i = 0; i < this.pending.length; i++) {
      const key = (this.pending[i].frameId - this.horizon) >>> 0;
      if (key < bestKey) {
        bestKey = key;
        best = i;
      }
    }
    return best;
  }

  /** Order of `pending` carries no meaning, so removal swaps in the last entry. */
  private removeAt(i: number): void {
    const p = this.pending[i];
    this.heldBytes -= p.bytes;
    const last = this.pending.pop()!;
    if (last !== p) this.pending[i] = last;
  }

  /** RFC 3550 A.1 update_seq, with a restart folded into running totals instead of resetting them. */
  private countSeq(seq: number): void {
    if (!this.seqStarted) {
      this.seqStarted = true;
      this.extMax = this.extBase = seq;
      this.expectedPkts = 1;
      this.receivedPkts = 1;
      return;
    }
    const d = seqDiff(seq, this.extMax >>> 0);
    if (d > 0 && d <= MAX_DROPOUT) {
      this.extMax += d;
      this.expectedPkts += d;
      this.receivedPkts++;
      this.badSeq = NONE;
    } else if (d <= 0 && d >= -MAX_MISORDER) {
      // Before the segment's first packet: never counted as expected, so not as received either.
      if (this.extMax + d >= this.extBase) this.receivedPkts++;
      this.badSeq = NONE;
    } else if (seq === this.badSeq) {
      // Two in a row after a jump: the sender restarted. The new segment starts at the
      // previous (uncounted) packet, so both are counted.
      this.extMax = seq + 2 ** 32;
      this.extBase = this.extMax - 1;
      this.expectedPkts += 2;
      this.receivedPkts += 2;
      this.badSeq = NONE;
    } else {
      this.badSeq = (seq + 1) >>> 0;
    }
  }

  private addRate(tUs: number, bytes: number, frames: number): void {
    const b = Math.floor(tUs / RATE_BUCKET_US);
    if (!Number.isFinite(b)) return;
    const i = ((b % RATE_BUCKETS) + RATE_BUCKETS) % RATE_BUCKETS;
    if (this.bucketEpoch[i] !== b) {
      this.bucketEpoch[i] = b;
      this.bucketBytes[i] = 0;
      this.bucketFrames[i] = 0;
    }
    this.bucketBytes[i] += bytes;
    this.bucketFrames[i] += frames;
  }

  /** Sums over the current bucket and the RATE_BUCKETS - 1 before it: a 0.9..1.0 s window. */
  private windowSums(nowUs: number): { spanUs: number; bytes: number; frames: number } {
    const nb = Math.floor(nowUs / RATE_BUCKET_US);
    if (!Number.isFinite(nb)) return { spanUs: 0, bytes: 0, frames: 0 };
    const first = nb - RATE_BUCKETS + 1;
    let bytes = 0;
    let frames = 0;
    for (let i = 0; i < RATE_BUCKETS; i++) {
      const e = this.bucketEpoch[i];
      if (e >= first && e <= nb) {
        bytes += this.bucketBytes[i];
        frames += this.bucketFrames[i];
      }
    }
    return { spanUs: nowUs - first * RATE_BUCKET_US, bytes, frames };
  }
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}
