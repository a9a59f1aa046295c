/**
 * Audio through the real relay, with real Clients on loopback: packets arrive as
 * 'audio' events with their level and VOICE flag, the server decides and pushes the
 * active speaker, and a host's mute stops forwarding within 100 ms.
 * (The payload here is not Opus: the relay never looks at it.)
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Client, MediaAudioPacket } from '../../client/main_client';
import { nowUs } from '../../shared/protocol/media_packet';
import { Harness, record, sleep, waitUntil } from '../kit/server';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AudioCall } from '../../client/audio_call';
import { sweep, writeWav } from '../kit/audio_signals';

const h = new Harness();
const timers: NodeJS.Timeout[] = [];
const calls: AudioCall[] = [];
afterEach(async () => {
  timers.splice(0).forEach((t) => clearInterval(t));
  await Promise.all(calls.splice(0).map((c) => c.close()));
  await h.closeAll();
});

/** Sends a 20 ms packet every 20 ms with the level (null: silence, no VOICE) that `talk()` says now. */
function talker(c: Client, talk: () => number | null): { sent: () => number } {
  let index = 1;
  let sent = 0;
  const payload = Buffer.alloc(60, 7);
  timers.push(
    setInterval(() => {
      const level = talk();
      if (c.sendAudio(payload, index, nowUs(), level ?? 110, level !== null)) sent++;
      index++;
    }, 20),
  );
  return { sent: () => sent };
}

describe('audio relay', () => {
  it('audio packets keep their frame index, level and VOICE flag, and arrive as audio events (not frames)', async () => {
    const { clients } = await h.meeting(['ann', 'bob']);
    const [ann, bob] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await ann.setAudio(true);
    const frames = record(bob, 'frame');
    const got: MediaAudioPacket[] = [];
    bob.on('audio', (a) => got.push(a));
    for (let i = 0; i < 5; i++) ann.sendAudio(Buffer.from([0, 1, 2, i]), 1000 + i * 3, nowUs(), 20 + i, i % 2 === 0);
    await waitUntil(() => got.length === 5, 2000, 'five packets');
    expect(got.map((a) => [a.frameIndex, a.level, a.voice, a.payload[3], a.username])).toEqual([
      [1000, 20, true, 0, 'ann'],
      [1003, 21, false, 1, 'ann'],
      [1006, 22, true, 2, 'ann'],
      [1009, 23, false, 3, 'ann'],
      [1012, 24, true, 4, 'ann'],
    ]);
    expect(got[1].seq).toBe((got[0].seq + 1) >>> 0);
    expect(frames).toEqual([]);
  });

  it('the server picks the active speaker from levels, tells everyone, switches on a clear change, and tells a joiner', async () => {
    const { server, clients, room } = await h.meeting(['ann', 'bob', 'cat']);
    const [ann, bob, cat] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    for (const c of clients) await c.setAudio(true);
    const heard = clients.map((c) => record(c, 'active_speaker'));
    let phase: 'ann' | 'bob' = 'ann';
    talker(ann, () => (phase === 'ann' ? 25 : null));
    talker(bob, () => (phase === 'bob' ? 20 : null));
    talker(cat, () => null);
    await waitUntil(() => heard.every((e) => e.length >= 1), 2000, 'everyone told');
    for (const e of heard) expect(e[0][0]).toMatchObject({ room_id: room.room_id, user_id: ann.userId, username: 'ann' });
    expect(ann.activeSpeaker).toEqual({ user_id: ann.userId, username: 'ann' });
    await sleep(600);
    expect(heard.map((e) => e.length)).toEqual([1, 1, 1]);

    const switchAt = performance.now();
    phase = 'bob';
    await waitUntil(() => cat.activeSpeaker?.user_id === bob.userId, 2000, 'bob takes the floor');
    expect(performance.now() - switchAt).toBeLessThan(1500);
    expect(heard[2].map((e) => e[0].username)).toEqual(['ann', 'bob']);

    const dan = await h.client(server, 'dan');
    const danHeard = record(dan, 'active_speaker');
    await dan.joinRoom(room.room_id);
    await waitUntil(() => danHeard.length === 1, 2000, 'the joiner is told');
    expect(danHeard[0][0]).toMatchObject({ user_id: bob.userId, username: 'bob' });
    expect(dan.activeSpeaker).toEqual({ user_id: bob.userId, username: 'bob' });

    // The speaker leaves: the floor goes to nobody (ann's turn is well over by now).
    await sleep(1500);
    await bob.leaveRoom();
    await waitUntil(() => heard[2].length === 3, 2000, 'speaker left');
    expect(heard[2][2][0]).toMatchObject({ user_id: null, username: null });
    expect(cat.activeSpeaker).toBeNull();
  });

  it("a host's mute stops forwarding within 100 ms, the muted user is told, and unmuting is refused until lifted", async () => {
    const { clients } = await h.meeting(['ann', 'bob', 'cat']);
    const [ann, bob, cat] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    await bob.setAudio(true);
    const arrivals: number[] = [];
    cat.on('audio', (a) => {
      if (a.user_id === bob.userId) arrivals.push(performance.now());
    });
    talker(bob, () => 30);
    await waitUntil(() => arrivals.length > 10, 2000, 'audio flowing');
    const muted = bob.waitFor('muted');
    const asked = performance.now();
    await ann.mute('bob');
    expect((await muted)[0]).toMatchObject({ by: { username: 'ann' } });
    await sleep(400);
    const last = arrivals[arrivals.length - 1];
    expect(last - asked).toBeLessThan(100);
    await waitUntil(() => bob.user?.is_muted_by_host === true, 1000, "bob's own state shows the mute");
    await expect(bob.setAudio(true)).rejects.toMatchObject({ code: 'MUTED_BY_HOST' });
    // Lifted: that only asks; bob is not heard until he turns audio on himself.
    await ann.unmute('bob');
    const atLift = arrivals.length;
    await sleep(300);
    expect(arrivals.length).toBe(atLift);
    expect(bob.user?.is_audio_enabled).toBe(false);
    await bob.setAudio(true);
    const n = arrivals.length;
    await waitUntil(() => arrivals.length > n + 5, 2000, 'heard again');
  });

  it("the muted user's own client shows a host's mute and stops sending at the source; self-mute sends nothing either", async () => {
    const { server, clients } = await h.meeting(['ann', 'bob', 'cat']);
    const [ann, bob, cat] = clients;
    await Promise.all(clients.map((c) => c.waitForMedia()));
    const wav = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lvc-audio-')), 'tone.wav');
    writeWav(wav, sweep(300, 900, 48_000, 0.3));
    // Bob talks from a file (no sound card needed); cat listens without a speaker.
    const b = new AudioCall(bob, { mic: `file:${wav}`, speaker: 'none', ns: false });
    const c = new AudioCall(cat, { mic: 'none', speaker: 'none' });
    calls.push(b, c);
    const local: { muted: boolean; hostMuted: boolean; sending: boolean }[] = [];
    b.on('local', (l) => local.push(l));
    await b.start();
    await c.start();
    const sent = () => server.media.participantStats(bob.userId!)!.sending.audio.packets;
    await waitUntil(() => sent() > 20 && c.levels().talkers.some((t) => t.username === 'bob'), 5000, 'bob heard by cat');
    expect(b.sending).toBe(true);

    await ann.mute('bob');
    await waitUntil(() => local.some((l) => l.hostMuted && !l.sending), 2000, "bob's AudioCall shows the host's mute");
    expect(b.sending).toBe(false);
    expect(b.hostMuted).toBe(true);
    await sleep(100);
    const atMute = sent();
    await sleep(500);
    // Stopped at the source: the relay does not even receive (and drop) bob's packets.
    expect(sent()).toBe(atMute);
    await expect(b.unmute()).rejects.toMatchObject({ code: 'MUTED_BY_HOST' });

    // Lifting the mute never turns bob's microphone on by itself.
    await ann.unmute('bob');
    await sleep(400);
    expect(sent()).toBe(atMute);
    expect(b.muted).toBe(true);
    await b.unmute();
    await waitUntil(() => sent() > atMute + 10, 3000, 'bob sends again');
    await b.mute();
    await sleep(100);
    const atSelfMute = sent();
    await sleep(500);
    expect(sent()).toBe(atSelfMute);
    expect(bob.user?.is_audio_enabled).toBe(false);
  }, 30_000);
});
