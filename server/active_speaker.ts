/**
 * Who is speaking in a room, decided in one place (the relay) from what every audio
 * packet already carries: the sender's level (RFC 6464 -dBov, header byte 6) and its
 * voice-activity flag (VOICE). No payload is decoded.
 *
 * The idea is that of dominant speaker identification (Volfin & Cohen, "Dominant
 * speaker identification for multipoint videoconferencing", 2013, as used by Jitsi):
 * score each participant's speech activity over a short window, and only hand the
 * floor to someone else when their activity stays clearly above the current
 * speaker's for a while, so a cough or a short "yes" does not flip the video layout.
 * Simplified here to one time scale:
 *
 * - each audio packet with VOICE adds `max(0, FLOOR_DBOV - level)` (how far above a
 *   -70 dBov floor the frame is, in dB) to the sender's sum for the current tick;
 *   packets without VOICE, and frames never sent (self-mute, DTX), add nothing;
 * - every tick (200 ms) the sum becomes a per-frame mean and feeds an exponential
 *   average (time constant ≈ 400 ms);
 * - someone with activity above MIN_ACTIVITY takes the floor when nobody has it, or
 *   when their average beats the current speaker's by SWITCH_MARGIN dB for
 *   SWITCH_TICKS ticks in a row (≥ 400 ms);
 * - silence keeps the last speaker (as meeting products do); a speaker who leaves
 *   hands the floor to the most active remaining member, or to nobody.
 */

export const SPEAKER_TICK_MS = 200;
const FRAMES_PER_TICK = SPEAKER_TICK_MS / 20;
const FLOOR_DBOV = 70;
/** Mean dB above the floor a participant must keep to be considered speaking. */
const MIN_ACTIVITY = 6;
const SWITCH_MARGIN = 3;
const SWITCH_TICKS = 2;
/** EWMA weight of the newest tick: 1 - exp(-200/400). */
const ALPHA = 1 - Math.exp(-SPEAKER_TICK_MS / 400);

interface Talker {
  sum: number;
  /** Voiced packets this tick: more than a tick's worth of frames (a flood, duplicates) adds nothing. */
  frames: number;
  /** Loudest (lowest -dBov) voiced frame this tick. */
  peak: number;
  activity: number;
  level: number;
}

export interface SpeakerChange {
  userId: string | null;
  /** The speaker's recent level in -dBov (127 when nobody). */
  level: number;
}

export class ActiveSpeakerDetector {
  private readonly talkers = new Map<string, Talker>();
  private current: string | null = null;
  private challenger: string | null = null;
  private challengeTicks = 0;

  get speaker(): string | null {
    return this.current;
  }

  levelOf(userId: string): number {
    return this.talkers.get(userId)?.level ?? 127;
  }

  /** One audio packet from `userId` (called on the relay's hot path: no allocation after the first). */
  note(userId: string, levelDbov: number, voice: boolean): void {
    let t = this.talkers.get(userId);
    if (!t) {
      t = { sum: 0, frames: 0, peak: 127, activity: 0, level: 127 };
      this.talkers.set(userId, t);
    }
    if (!voice || t.frames >= FRAMES_PER_TICK) return;
    t.frames++;
    if (levelDbov < FLOOR_DBOV) t.sum += FLOOR_DBOV - levelDbov;
    if (levelDbov < t.peak) t.peak = levelDbov;
  }

  /** The member left the room (or the relay). Returns a change when they held the floor. */
  remove(userId: string): SpeakerChange | null {
    this.talkers.delete(userId);
    if (this.challenger === userId) this.challenger = null;
    if (this.current !== userId) return null;
    let best: string | null = null;
    let bestActivity = MIN_ACTIVITY;
    for (const [id, t] of this.talkers) {
      if (t.activity >= bestActivity) {
        best = id;
        bestActivity = t.activity;
      }
    }
    this.current = best;
    return { userId: best, level: best ? this.levelOf(best) : 127 };
  }

  get size(): number {
    return this.talkers.size;
  }

  /** Every SPEAKER_TICK_MS: returns the new speaker when the floor changed hands. */
  tick(): SpeakerChange | null {
    let best: string | null = null;
    let bestActivity = -1;
    for (const [id, t] of this.talkers) {
      t.activity += ALPHA * (t.sum / FRAMES_PER_TICK - t.activity);
      t.level = t.sum > 0 ? t.peak : Math.min(127, t.level + 6);
      t.sum = 0;
      t.frames = 0;
      t.peak = 127;
      if (t.activity > bestActivity) {
        best = id;
        bestActivity = t.activity;
      }
    }
    if (best === null || bestActivity < MIN_ACTIVITY || best === this.current) {
      this.challenger = null;
      this.challengeTicks = 0;
      return null;
    }
    const holder = this.current ? this.talkers.get(this.current) : undefined;
    if (holder && bestActivity < holder.activity + SWITCH_MARGIN) {
      this.challenger = null;
      this.challengeTicks = 0;
      return null;
    }
    if (holder) {
      this.challengeTicks = this.challenger === best ? this.challengeTicks + 1 : 1;
      this.challenger = best;
      if (this.challengeTicks < SWITCH_TICKS) return null;
    }
    this.current = best;
    this.challenger = null;
    this.challengeTicks = 0;
    return { userId: best, level: this.levelOf(best) };
  }
}
