/**
 * Audio for a connected Client: microphone to the room and the room to the speaker.
 * The CLI and the GUI both drive it; neither touches devices, codecs or the media link.
 *
 * ```
 * capture (device | file:PATH)  every 20 ms, 960 samples, the capture clock
 *   -> EchoCanceller.processNear (far end = what the speaker just played)   [aec on]
 *   -> NoiseSuppressor (RNNoise; its voice probability is the VOICE flag)   [ns on]
 *   -> level (-dBov, RFC 6464) -> Opus (VoIP, 32 kbit/s)
 *   -> payload: this frame + the previous one(s) as redundancy
 *   -> Client.sendAudio (UDP 8890; frame index counts on through mute)
 *      muted (by self or host), or no media link: nothing is sent at all
 *
 * Client 'audio' packets -> one JitterBuffer per sender (decode, redundancy, PLC)
 * playback (device | none) pulls every 20 ms on the OUTPUT clock:
 *   -> each sender's next 20 ms x its volume -> Mixer (limiter) -> speaker
 *   -> what was played is the echo canceller's far-end reference
 * ```
 *
 * Self-mute sends AUDIO_STOP and stops sending packets; a host's mute is enforced by
 * the relay (it drops the packets) and shown through USER_UPDATE / MUTE_USER.
 * The active speaker comes from the server (ACTIVE_SPEAKER, one decision for
 * everyone); per-participant levels come from the headers of their packets.
 */
import { TypedEmitter } from '../shared/events';
import { Logger } from '../shared/log';
import { ProtocolError } from '../shared/errors';
import type { Client, ClientEvents, MediaAudioPacket } from './main_client';
import { FRAME_MS, FRAME_SAMPLES, floatToInt16, int16ToFloat, levelDbov, LEVEL_SILENT_DBOV } from './audio/format';
import { Mixer } from './audio/mixer';
import { EchoCanceller } from './audio/aec';
import { NoiseSuppressor } from './audio/noise_suppressor';
import { OpusVoiceDecoder, OpusVoiceEncoder } from './audio/opus_codec';
import { decodeAudioPayload, RedundancyEncoder } from '../shared/protocol/audio_payload';
import { JitterBuffer } from './audio/jitter_buffer';
import { openCapture, openPlayback, type AudioCapture, type AudioPlayback } from './audio/devices';

export interface AudioSettings {
  /** 'default', a device name or id, 'file:PATH' (a looped sound file), or 'none'. */
  mic: string;
  /** 'default', a device name or id, or 'none'. */
  speaker: string;
  ns: boolean;
  aec: boolean;
  /** Opus bitrate, bit/s. */
  bitrate: number;
  dtx: boolean;
  /** Earlier frames repeated in each packet (0-2): one lost packet in a row costs nothing. */
  redundancy: number;
  /** Start muted. */
  muted: boolean;
}

export const DEFAULT_AUDIO_SETTINGS: AudioSettings = {
  mic: 'default',
  speaker: 'default',
  ns: true,
  aec: true,
  bitrate: 32_000,
  dtx: false,
  redundancy: 1,
  muted: false,
};

export interface TalkerLevel {
  user_id: string;
  username: string;
  /** -dBov of their latest packet (127: silent or not heard for 300 ms). */
  level: number;
  /** Their voice activity flag, as of the latest packet. */
  speaking: boolean;
  volume: number;
}

export type AudioCallEvents = {
  /** Our sending state changed: muted by ourselves, by a host, or live. */
  local: [{ muted: boolean; hostMuted: boolean; sending: boolean }];
  /**
   * A device went away (AUDIO_DEVICE_LOST; retried by itself), came back, or cannot be
   * used at all (its AudioDeviceError). `error` is set for lost and unavailable.
   */
  device: [{ dir: 'mic' | 'speaker'; state: 'lost' | 'restored' | 'unavailable'; label: string; error?: ProtocolError }];
  error: [Error];
  /** Each 20 ms frame handed to the speaker (or to nothing with --speaker none): the mix as heard. */
  output: [Int16Array];
};

interface Talker {
  streamId: number;
  userId: string | null;
  username: string;
  jb: JitterBuffer;
  level: number;
  speaking: boolean;
  lastPacketMs: number;
  malformed: number;
}

/** Voices decoded at once at most (a room's capacity is 50 by default). */
const MAX_TALKERS = 64;
/** A talker not heard from for this long is forgotten (decoder freed). */
const FORGET_MS = 10_000;
const LEVEL_HOLD_MS = 300;

export class AudioCall extends TypedEmitter<AudioCallEvents> {
  readonly settings: AudioSettings;
  private readonly log: Logger;
  private capture: AudioCapture | null = null;
  private playback: AudioPlayback | null = null;
  private aec: EchoCanceller | null = null;
  private ns: NoiseSuppressor | null = null;
  private nsGeneration = 0;
  private encoder: OpusVoiceEncoder;
  private readonly mixer = new Mixer();
  private readonly talkers = new Map<number, Talker>();
  /** Volume by user id (1 = as sent). */
  private readonly volumes = new Map<string, number>();
  private frameIndex = 1;
  /** Puts copies of our previous frame(s) into each packet. */
  private red: RedundancyEncoder;
  private selfMuted: boolean;
  private selfLevel = LEVEL_SILENT_DBOV;
  private selfVoice = false;
  private started = false;
  private closed = false;
  private readonly nearF = new Float32Array(FRAME_SAMPLES);
  private readonly farF = new Float32Array(FRAME_SAMPLES);
  private readonly aecOut = new Float32Array(FRAME_SAMPLES);
  private readonly nsOut = new Float32Array(FRAME_SAMPLES);
  private readonly counters = { captured: 0, sent: 0, played: 0, malformed: 0, encodeErrors: 0, processingUs: 0 };
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    readonly client: Client,
    settings: Partial<AudioSettings> = {},
    private readonly o: {
      logger?: Logger;
      /** Environment for opening the microphone / speaker only (e.g. PULSE_SOURCE, PULSE_SINK): tests and benchmarks route several calls in one process. */
      micEnv?: Record<string, string>;
      speakerEnv?: Record<string, string>;
    } = {},
  ) {
    super();
    this.settings = { ...DEFAULT_AUDIO_SETTINGS, ...settings };
    this.selfMuted = this.settings.muted;
    this.log = (o.logger ?? Logger.create('warn')).child({ part: 'audio' });
    this.onListenerError = (event, error) => this.log.error(`observer of ${event} threw: ${String(error)}`);
    this.encoder = new OpusVoiceEncoder({ bitrate: this.settings.bitrate, dtx: this.settings.dtx });
    this.red = new RedundancyEncoder(this.settings.redundancy);
    this.listen('audio', (p) => this.onPacket(p));
    // Into a room (joined, rejoined after a reconnect): say whether our microphone is on.
    // Another room's voices are not this room's.
    this.listen('room', (room) => {
      this.resetTalkers();
      if (room) void this.announce();
    });
    // A host's mute mutes us ourselves too: lifting it only asks, and we go live again only
    // when the user unmutes (UNMUTE_USER never turns a microphone on).
    this.listen('muted', () => {
      this.selfMuted = true;
      this.red.reset();
      this.emitLocal();
    });
    this.listen('reconnected', () => void this.announce());
    this.listen('user_update', (u) => {
      if (u.user_id === this.client.userId) this.emitLocal();
    });
    this.listen('user_leave', (d) => {
      for (const [id, t] of this.talkers) if (t.userId === d.user_id) this.talkers.delete(id);
    });
  }

  private listen<K extends keyof ClientEvents>(event: K, fn: (...a: ClientEvents[K]) => void): void {
    this.client.on(event, fn);
    this.unsubscribe.push(() => this.client.off(event, fn));
  }

  /**
   * Opens the microphone and the speaker. A device that cannot be opened is reported
   * (`device` event, state 'unavailable') and the call goes on without it: without a
   * microphone you still hear, without a speaker you can still talk.
   */
  async start(): Promise<void> {
    if (this.closed) throw new Error('AudioCall is closed');
    if (this.started) return;
    this.started = true;
    if (this.settings.aec) this.aec = new EchoCanceller();
    if (this.settings.ns) await this.enableNs();
    const playback = await this.openOutput();
    // close() may have run during an await: what opened meanwhile closes again.
    if (this.closed) return void (await playback.stop());
    this.playback = playback;
    const capture = await this.openInput();
    if (this.closed) return void (await capture?.stop());
    this.capture = capture;
    await this.announce();
  }

  private async openOutput(): Promise<AudioPlayback> {
    if (this.settings.speaker !== 'none') {
      try {
        const p = openPlayback(this.settings.speaker, () => this.pull(), { env: this.o.speakerEnv });
        // What the speaker plays is what the microphone may hear back.
        p.on('played', (pcm: Int16Array) => this.onPlayed(pcm));
        this.watchDevice('speaker', p);
        await p.start();
        return p;
      } catch (e) {
        this.emit('device', { dir: 'speaker', state: 'unavailable', label: this.settings.speaker, error: asProtocolError(e) });
      }
    }
    // No speaker: the receive side still runs on a timer (levels, statistics), unheard.
    const none = openPlayback('none', () => this.pull());
    await none.start();
    return none;
  }

  private async openInput(): Promise<AudioCapture | null> {
    if (this.settings.mic === 'none') return null;
    try {
      const c = openCapture(this.settings.mic, { env: this.o.micEnv });
      c.on('frame', (pcm: Int16Array, captureUs: number) => this.onCaptured(pcm, captureUs));
      this.watchDevice('mic', c);
      await c.start();
      return c;
    } catch (e) {
      this.emit('device', { dir: 'mic', state: 'unavailable', label: this.settings.mic, error: asProtocolError(e) });
      return null;
    }
  }

  /** A device's trouble as `device` events: lost (AUDIO_DEVICE_LOST; it retries by itself) and restored. */
  private watchDevice(dir: 'mic' | 'speaker', device: AudioCapture | AudioPlayback): void {
    // 'lost', 'restored' and 'error' carry the same arguments on both kinds of device.
    const d = device as AudioCapture;
    d.on('lost', (reason) => {
      const error = new ProtocolError('AUDIO_DEVICE_LOST', { dir: dir === 'mic' ? 'microphone' : 'speaker', device: d.label, reason });
      this.emit('device', { dir, state: 'lost', label: d.label, error });
    });
    d.on('restored', () => this.emit('device', { dir, state: 'restored', label: d.label }));
    d.on('error', (e: Error) => this.emit('error', e));
  }

  /** True when a microphone is open (so unmuting means something). */
  get hasMic(): boolean {
    return this.capture !== null;
  }

  get muted(): boolean {
    return this.selfMuted;
  }

  get hostMuted(): boolean {
    return this.client.user?.is_muted_by_host === true;
  }

  /** Whether captured frames leave this machine right now. */
  get sending(): boolean {
    return this.capture !== null && !this.selfMuted && !this.hostMuted && this.client.room !== null;
  }

  /** Self-mute: AUDIO_STOP, and no packet is sent (not zeros: nothing). */
  async mute(): Promise<void> {
    this.selfMuted = true;
    this.red.reset();
    this.emitLocal();
    if (this.client.room && this.client.connected) await this.client.setAudio(false);
  }

  /** Unmute: AUDIO_START (refused with MUTED_BY_HOST while a host has us muted). */
  async unmute(): Promise<void> {
    if (!this.started) {
      // Devices open with the first room; announce() tells the server then.
      this.selfMuted = false;
      return;
    }
    if (!this.capture) throw new ProtocolError('AUDIO_UNAVAILABLE', { reason: `no microphone is open (--mic ${this.settings.mic})` });
    if (this.client.room && this.client.connected) await this.client.setAudio(true);
    this.selfMuted = false;
    this.emitLocal();
  }

  private async announce(): Promise<void> {
    if (!this.started || !this.client.room || !this.client.connected) return;
    const on = this.capture !== null && !this.selfMuted;
    try {
      // Both ways: a /mute typed while the link was down must reach the server too.
      if (on || this.client.user?.is_audio_enabled) await this.client.setAudio(on);
    } catch (e) {
      if ((e as ProtocolError).code !== 'MUTED_BY_HOST') this.emit('error', e as Error);
    }
    this.emitLocal();
  }

  private emitLocal(): void {
    this.emit('local', { muted: this.selfMuted, hostMuted: this.hostMuted, sending: this.sending });
  }

  /** Volume for one participant: 0 (silenced for me) .. 2 (twice as loud); 1 is as sent. */
  setVolume(userId: string, volume: number): void {
    if (!Number.isFinite(volume) || volume < 0 || volume > 2) throw new RangeError('volume must be between 0 and 2');
    this.volumes.set(userId, volume);
  }

  volumeOf(userId: string): number {
    return this.volumes.get(userId) ?? 1;
  }

  async setNs(on: boolean): Promise<void> {
    this.settings.ns = on;
    if (on) await this.enableNs();
    else {
      this.nsGeneration++;
      this.ns?.destroy();
      this.ns = null;
    }
  }

  private async enableNs(): Promise<void> {
    if (this.ns) return;
    const generation = ++this.nsGeneration;
    try {
      const ns = await NoiseSuppressor.create();
      // Turned off, turned on again, or closed while it loaded: only the latest request counts.
      if (generation !== this.nsGeneration || this.closed || this.ns) ns.destroy();
      else this.ns = ns;
    } catch (e) {
      this.settings.ns = false;
      this.emit('error', new Error(`noise suppression is off: ${(e as Error).message}`));
    }
  }

  setAec(on: boolean): void {
    this.settings.aec = on;
    this.aec = on ? (this.aec ?? new EchoCanceller()) : null;
  }

  // ------------------------------------------------------------ sending

  private onCaptured(pcm: Int16Array, captureUs: number): void {
    if (this.closed) return;
    const t0 = performance.now();
    this.counters.captured++;
    const index = this.frameIndex;
    this.frameIndex = (this.frameIndex + 1) >>> 0;
    let frame = int16ToFloat(pcm, this.nearF);
    // In place, through two fixed buffers: nothing is allocated per frame on this path.
    if (this.aec) {
      this.aec.processNearInto(frame, this.aecOut);
      frame = this.aecOut;
    }
    if (this.ns) {
      this.ns.processInto(frame, this.nsOut);
      frame = this.nsOut;
    }
    const level = levelDbov(frame);
    // RNNoise's voice probability; without the suppressor, anything louder than -50 dBov
    // counts as speech (a crude stand-in, documented in PROTOCOL.md; a noisy room then reads as speaking).
    const voice = this.ns ? this.ns.lastVad >= 0.5 : level <= 50;
    this.selfLevel = level;
    this.selfVoice = voice;
    if (!this.sending) {
      this.red.reset();
      this.counters.processingUs += (performance.now() - t0) * 1000;
      return;
    }
    let opus: Buffer;
    try {
      opus = this.encoder.encode(floatToInt16(frame));
    } catch (e) {
      this.counters.encodeErrors++;
      if (this.counters.encodeErrors === 1) this.emit('error', e as Error);
      return;
    }
    const payload = this.red.payload(index, opus);
    if (this.client.sendAudio(payload, index, captureUs, level, voice)) this.counters.sent++;
    this.counters.processingUs += (performance.now() - t0) * 1000;
  }

  // ------------------------------------------------------------ receiving

  private onPacket(p: MediaAudioPacket): void {
    if (this.closed) return;
    let t = this.talkers.get(p.streamId);
    if (!t) {
      // Only room members we know of (their USER_JOIN comes before their media), and a bounded number.
      if (!p.user_id || this.talkers.size >= MAX_TALKERS) {
        this.counters.malformed++;
        return;
      }
      t = {
        streamId: p.streamId,
        userId: p.user_id,
        username: p.username ?? `stream ${p.streamId}`,
        jb: new JitterBuffer(new OpusVoiceDecoder()),
        level: LEVEL_SILENT_DBOV,
        speaking: false,
        lastPacketMs: 0,
        malformed: 0,
      };
      this.talkers.set(p.streamId, t);
    }
    if (p.user_id && !t.userId) {
      t.userId = p.user_id;
      t.username = p.username ?? t.username;
    }
    const decoded = decodeAudioPayload(p.payload);
    if ('problem' in decoded) {
      t.malformed++;
      this.counters.malformed++;
      return;
    }
    const now = performance.now();
    t.lastPacketMs = now;
    t.level = p.level;
    t.speaking = p.voice;
    t.jb.push({ frameIndex: p.frameIndex, primary: decoded.primary, redundant: decoded.redundant, arrivalMs: now });
  }

  /** The playback clock asks for the next 20 ms. */
  private pull(): Int16Array {
    const now = performance.now();
    this.mixer.begin();
    for (const [id, t] of this.talkers) {
      if (now - t.lastPacketMs > FORGET_MS) {
        this.talkers.delete(id);
        continue;
      }
      const out = t.jb.pull(now);
      if (out.source === 'silence') continue;
      this.mixer.add(out.pcm, t.userId ? this.volumeOf(t.userId) : 1);
    }
    const out = floatToInt16(this.mixer.finish());
    this.emit('output', out);
    return out;
  }

  /** A frame went to the speaker: it is what the microphone may hear back. */
  private onPlayed(pcm: Int16Array): void {
    this.counters.played++;
    this.aec?.pushFar(int16ToFloat(pcm, this.farF));
  }

  private resetTalkers(): void {
    this.talkers.clear();
  }

  // ------------------------------------------------------------ observers

  /** Our own level and each participant's we hear (for speaking indicators). */
  levels(): { self: { level: number; speaking: boolean; sending: boolean }; talkers: TalkerLevel[] } {
    const now = performance.now();
    const talkers: TalkerLevel[] = [];
    for (const t of this.talkers.values()) {
      if (!t.userId) continue;
      const fresh = now - t.lastPacketMs < LEVEL_HOLD_MS;
      talkers.push({
        user_id: t.userId,
        username: t.username,
        level: fresh ? t.level : LEVEL_SILENT_DBOV,
        speaking: fresh && t.speaking,
        volume: this.volumeOf(t.userId),
      });
    }
    return { self: { level: this.selfLevel, speaking: this.selfVoice && this.sending, sending: this.sending }, talkers };
  }

  stats(): {
    mic: string | null;
    speaker: string | null;
    ns: boolean;
    aec: boolean;
    aecStats: ReturnType<EchoCanceller['stats']> | null;
    counters: AudioCall['counters'];
    limited: number;
    talkers: { user_id: string | null; username: string; malformed: number; jitter: ReturnType<JitterBuffer['stats']> }[];
  } {
    return {
      mic: this.capture?.label ?? null,
      speaker: this.playback?.label ?? null,
      ns: this.ns !== null,
      aec: this.aec !== null,
      aecStats: this.aec?.stats() ?? null,
      counters: { ...this.counters },
      limited: this.mixer.limited,
      talkers: [...this.talkers.values()].map((t) => ({ user_id: t.userId, username: t.username, malformed: t.malformed, jitter: t.jb.stats() })),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const off of this.unsubscribe) off();
    await Promise.all([this.capture?.stop(), this.playback?.stop()]);
    this.capture = null;
    this.playback = null;
    this.ns?.destroy();
    this.ns = null;
    this.talkers.clear();
    if (this.client.room && this.client.connected && this.client.user?.is_audio_enabled) await this.client.setAudio(false).catch(() => undefined);
  }
}

function asProtocolError(e: unknown): ProtocolError {
  if (e instanceof ProtocolError) return e;
  return new ProtocolError('AUDIO_UNAVAILABLE', { reason: (e as Error)?.message ?? String(e) });
}

export { FRAME_MS };
