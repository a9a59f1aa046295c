/**
 * A drift-free frame clock for sources and sinks that have no device clock (a file
 * as microphone, `--speaker none`). Frame n is due at start + n * period: each timer
 * is armed for the next due time computed from the start, never by adding a
 * period to "now", so timer lateness does not accumulate. After a stall it catches
 * up at most `maxCatchUp` frames at once and drops the older ones (the schedule
 * moves forward), so a paused process does not burst seconds of audio.
 */
import { nowUs } from '../../shared/protocol/media_packet';

export interface FrameTickerOptions {
  periodUs: number;
  /** Frames delivered at once after a stall; older due frames are dropped. Default 3. */
  maxCatchUp?: number;
  /** Called once per frame with the frame's due time (wall-clock µs). */
  onTick: (dueUs: number) => void;
  /** Called when frames were dropped after a stall. */
  onDrop?: (frames: number) => void;
}

export class FrameTicker {
  private timer: NodeJS.Timeout | null = null;
  private startUs = 0;
  private next = 0;
  private running = false;
  /** Frames skipped after stalls, since start. */
  dropped = 0;
  /** Frames delivered since start. */
  ticks = 0;

  constructor(private readonly o: FrameTickerOptions) {}

  start(startUs = nowUs()): void {
    if (this.running) return;
    this.running = true;
    this.startUs = startUs;
    this.next = 0;
    this.arm();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  get isRunning(): boolean {
    return this.running;
  }

  private dueUs(n: number): number {
    return this.startUs + n * this.o.periodUs;
  }

  private arm(): void {
    if (!this.running) return;
    const waitMs = Math.max(0, (this.dueUs(this.next) - nowUs()) / 1000);
    this.timer = setTimeout(() => this.fire(), waitMs);
  }

  private fire(): void {
    this.timer = null;
    if (!this.running) return;
    const now = nowUs();
    // Frames due by now: next .. last.
    const last = Math.floor((now - this.startUs) / this.o.periodUs);
    const maxCatchUp = this.o.maxCatchUp ?? 3;
    if (last - this.next + 1 > maxCatchUp) {
      const skip = last - this.next + 1 - maxCatchUp;
      this.next += skip;
      this.dropped += skip;
      try {
        this.o.onDrop?.(skip);
      } catch {
        /* a reporting callback must not stop the clock */
      }
    }
    while (this.running && this.next <= last) {
      const due = this.dueUs(this.next++);
      this.ticks++;
      try {
        this.o.onTick(due);
      } catch {
        /* the owner reports its own errors; the clock keeps going */
      }
    }
    this.arm();
  }
}
