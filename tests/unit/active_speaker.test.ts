import { describe, expect, it } from 'vitest';
import { ActiveSpeakerDetector, SPEAKER_TICK_MS } from '../../server/active_speaker';

const FRAMES = SPEAKER_TICK_MS / 20;

/** Feeds one tick of packets: each talker's level, or null for silence (no VOICE). */
function tick(d: ActiveSpeakerDetector, talk: Record<string, number | null>): ReturnType<ActiveSpeakerDetector['tick']> {
  for (let f = 0; f < FRAMES; f++) {
    for (const [who, level] of Object.entries(talk)) d.note(who, level ?? 100, level !== null);
  }
  return d.tick();
}

function run(d: ActiveSpeakerDetector, ticks: number, talk: Record<string, number | null>): (string | null)[] {
  const changes: (string | null)[] = [];
  for (let i = 0; i < ticks; i++) {
    const c = tick(d, talk);
    if (c) changes.push(c.userId);
  }
  return changes;
}

describe('active speaker', () => {
  it('the one who talks takes the floor within 400 ms; silence keeps the last speaker', () => {
    const d = new ActiveSpeakerDetector();
    expect(run(d, 2, { ann: 25, bob: null })).toEqual(['ann']);
    expect(d.speaker).toBe('ann');
    expect(d.levelOf('ann')).toBe(25);
    expect(run(d, 25, { ann: null, bob: null })).toEqual([]);
    expect(d.speaker).toBe('ann');
  });

  it('the floor changes hands when someone else talks clearly more for a while, not for a cough', () => {
    const d = new ActiveSpeakerDetector();
    run(d, 10, { ann: 30, bob: null, cat: null });
    // A 100 ms cough by cat while ann goes on talking.
    for (let f = 0; f < 5; f++) d.note('cat', 10, true);
    expect(run(d, 1, { ann: 30 })).toEqual([]);
    expect(run(d, 5, { ann: 30, bob: null, cat: null })).toEqual([]);
    expect(d.speaker).toBe('ann');
    // Ann stops; bob talks: bob within about a second.
    const changes: (string | null)[] = [];
    let ticks = 0;
    while (d.speaker !== 'bob' && ticks < 20) {
      const c = tick(d, { ann: null, bob: 30, cat: null });
      if (c) changes.push(c.userId);
      ticks++;
    }
    expect(changes).toEqual(['bob']);
    expect(ticks * SPEAKER_TICK_MS).toBeLessThanOrEqual(1000);
  });

  it('two people talking at once: the louder holds it; a soft interjection never takes it', () => {
    const d = new ActiveSpeakerDetector();
    run(d, 5, { ann: 20 });
    expect(run(d, 30, { ann: 20, bob: 45 })).toEqual([]);
    expect(d.speaker).toBe('ann');
  });

  it('a speaker who leaves hands the floor to the most active member, or to nobody', () => {
    const d = new ActiveSpeakerDetector();
    run(d, 5, { ann: 20, bob: 40 });
    expect(d.speaker).toBe('ann');
    expect(d.remove('bob')).toBeNull();
    run(d, 3, { ann: 20, cat: 35 });
    expect(d.remove('ann')).toEqual({ userId: 'cat', level: 35 });
    run(d, 30, { cat: null });
    expect(d.remove('cat')).toEqual({ userId: null, level: 127 });
    expect(d.size).toBe(0);
  });

  it('frames below the -70 dBov floor, or without VOICE, never make a speaker', () => {
    const d = new ActiveSpeakerDetector();
    expect(run(d, 20, { ann: 90 })).toEqual([]);
    for (let i = 0; i < 20; i++) {
      for (let f = 0; f < FRAMES; f++) d.note('bob', 10, false);
      expect(d.tick()).toBeNull();
    }
    expect(d.speaker).toBeNull();
  });

  it('sending more packets than 20 ms frames (a flood, duplicates) earns nothing extra', () => {
    const d = new ActiveSpeakerDetector();
    run(d, 5, { ann: 20 });
    // Bob sends ten times a tick's worth of packets at a lower level than ann's.
    for (let i = 0; i < 20; i++) {
      for (let f = 0; f < FRAMES; f++) d.note('ann', 20, true);
      for (let f = 0; f < FRAMES * 10; f++) d.note('bob', 30, true);
      d.tick();
    }
    expect(d.speaker).toBe('ann');
  });
});
