/**
 * What the command-line client does with video: turns the camera and screen share on
 * and off (a VideoCall), and, without a GUI, keeps what it receives on disk
 * (--save-dir: the latest JPEG of each participant's camera and screen; --save-video:
 * also a playable MJPEG/MKV per stream). Printing stays in cli.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ProtocolError } from '../shared/errors';
import { STREAM_KIND_NAME } from '../shared/protocol/media_packet';
import type { Client, MediaFrame } from './main_client';
import { VideoCall, type VideoSettings, type VideoStream } from './video_call';
import { AudioCall } from './audio_call';
import { LatestFrameWriter, MjpegRecorder, safeParticipantName } from './video_files';

export interface CliMediaOptions {
  /** Resolved devices ('none' for no audio that way); both 'none': no audio at all. */
  mic: string;
  speaker: string;
  ns: boolean;
  aec: boolean;
  muted: boolean;
  camera: string | null;
  screen: string | null;
  video: VideoSettings;
  saveDir: string | null;
  saveVideo: boolean;
}

export interface CliMediaOutput {
  note: (text: string) => void;
  error: (e: unknown) => void;
}

export class CliMedia {
  readonly video: VideoCall;
  /** Null with --mic none --speaker none. */
  readonly audio: AudioCall | null;
  private audioStarting: Promise<void> | null = null;
  private readonly latest: LatestFrameWriter | null;
  private readonly recorders = new Map<string, MjpegRecorder>();
  private closed = false;

  constructor(
    private readonly client: Client,
    private readonly o: CliMediaOptions,
    private readonly out: CliMediaOutput,
  ) {
    this.video = new VideoCall(client, o.video);
    this.video.on('error', (e) => out.error(e));
    this.video.on('local', ({ stream, on, by }) => {
      if (by) out.note(`Your ${stream === 'camera' ? 'camera' : 'screen share'} was turned off by ${by}`);
      else out.note(`Your ${stream === 'camera' ? 'camera' : 'screen share'} is ${on ? 'on' : 'off'}`);
    });
    client.on('media_error', (e) => out.error(e));
    if (o.mic === 'none' && o.speaker === 'none') this.audio = null;
    else {
      const a = new AudioCall(client, { mic: o.mic, speaker: o.speaker, ns: o.ns, aec: o.aec, muted: o.muted });
      this.audio = a;
      a.on('error', (e) => out.error(e));
      a.on('device', (d) => {
        const what = d.dir === 'mic' ? 'microphone' : 'speaker';
        if (d.error) out.error(d.error);
        if (d.state === 'unavailable') out.note(`Going on without a ${what}`);
        else if (d.state === 'restored') out.note(`Your ${what} is back (${d.label})`);
      });
      let last: string | null = null;
      a.on('local', (l) => {
        const text = !a.hasMic ? null : l.hostMuted ? 'muted by a host' : l.muted ? 'muted' : 'live';
        if (text && text !== last) out.note(`Your microphone is ${text}`);
        last = text;
      });
    }
    if (o.saveDir) {
      fs.mkdirSync(o.saveDir, { recursive: true });
      this.latest = new LatestFrameWriter(o.saveDir);
      this.latest.on('error', (e) => out.error(e));
      client.on('frame', (f) => this.onFrame(f));
    } else {
      this.latest = null;
    }
    // --camera: the camera comes on when you join a room, as "join with video" does.
    client.on('room', (room) => {
      if (room && o.camera && !this.video.isOn('camera') && !this.closed) this.set('camera', true).catch((e: unknown) => out.error(e));
      // Microphone and speakers open with the first meeting and stay open until exit.
      if (room && this.audio && !this.closed) this.audioStarting ??= this.audio.start().catch((e: unknown) => out.error(e));
    });
  }

  private sourceFor(stream: VideoStream): string {
    if (stream === 'camera') {
      if (this.o.camera) return this.o.camera;
      if (fs.existsSync('/dev/video0')) return '/dev/video0';
      throw new ProtocolError('CAPTURE_FAILED', {
        source: 'the camera',
        reason: 'no camera was given and /dev/video0 does not exist; start with --camera DEVICE, --camera testsrc2 or --camera file:PATH',
      });
    }
    const display = this.o.screen ?? process.env.DISPLAY ?? null;
    if (!display) {
      throw new ProtocolError('CAPTURE_FAILED', {
        source: 'the screen',
        reason: 'no X display: start with --screen :0 (or set DISPLAY)',
      });
    }
    return display;
  }

  /** Camera or screen share on or off. */
  async set(stream: VideoStream, on: boolean): Promise<void> {
    if (on) await this.video.start(stream, this.sourceFor(stream));
    else await this.video.stop(stream);
  }

  private onFrame(f: MediaFrame): void {
    if (f.kindName === 'audio' || this.closed) return;
    const who = `${f.username ?? `stream-${f.streamId}`}-${f.kindName === 'video' ? 'camera' : 'screen'}`;
    this.latest!.write(who, f.data);
    if (!this.o.saveVideo) return;
    let rec = this.recorders.get(who);
    if (!rec) {
      rec = new MjpegRecorder(path.join(this.o.saveDir!, `${safeParticipantName(who)}.mkv`), { overwrite: true });
      rec.on('error', (e) => this.out.error(e));
      this.recorders.set(who, rec);
      this.out.note(`Recording ${who} to ${rec.path}`);
    }
    rec.write(f.data);
  }

  /** Lines for /stats: what we send, what we receive, what the relay says receivers get. */
  statsLines(): string[] {
    const lines: string[] = [];
    const link = this.client.media;
    const local = this.video.stats();
    for (const [stream, s] of Object.entries(local)) {
      lines.push(
        `  sending ${stream}: ${s.width}x${s.height} at ${s.fpsOut.toFixed(1)} fps, quality ${s.quality}, JPEG ${(s.jpegBytesAvg / 1024).toFixed(1)} KB, encode ${s.encodeMsAvg.toFixed(1)} ms (p95 ${s.encodeMsP95.toFixed(1)}), capture restarts ${s.restarts}`,
      );
    }
    if (!link) {
      lines.push('  media: not connected (join a room)');
      return lines;
    }
    const st = link.stats();
    lines.push(`  media link: ${st.registered ? 'registered' : 'NOT registered (UDP blocked?)'}, clock offset ${st.clock_offset_ms.toFixed(2)} ms`);
    for (const r of st.received) {
      const who = this.client.ownerOf(r.stream_id)?.username ?? `stream ${r.stream_id}`;
      const s = r.stats;
      lines.push(
        `  receiving ${who} ${r.kind}: ${s.fps.toFixed(1)} fps, ${s.kbps.toFixed(0)} kbit/s, packet loss ${(s.packetLoss * 100).toFixed(1)}%, frame loss ${(s.frameLoss * 100).toFixed(1)}%, jitter ${s.jitterMs.toFixed(1)} ms, delay ${s.delayMs.toFixed(1)} ms`,
      );
    }
    for (const a of link.latestSenderReport) {
      const name = STREAM_KIND_NAME[a.kind];
      const kind = name === 'video' ? 'camera' : name;
      lines.push(
        `  your ${kind} at ${a.receivers} receiver(s): loss avg ${(a.lossAvgBp / 100).toFixed(1)}% max ${(a.lossMaxBp / 100).toFixed(1)}%, jitter max ${(a.jitterMaxUs / 1000).toFixed(1)} ms, delay max ${(a.delayMaxUs / 1000).toFixed(1)} ms`,
      );
    }
    if (lines.length === 1) lines.push('  no streams yet');
    return lines;
  }

  /** Lines for /levels: own level and each participant's, with the active speaker. */
  levelLines(): string[] {
    if (!this.audio) return ['  audio is off (started with --mic none --speaker none)'];
    const { self, talkers } = this.audio.levels();
    const speaker = this.client.activeSpeaker;
    const lines = [
      `  you: ${meter(self.level)} ${self.sending ? (self.speaking ? 'speaking' : 'live') : this.audio.hostMuted ? 'muted by a host' : this.audio.hasMic ? 'muted' : 'no microphone'}${speaker?.user_id === this.client.userId ? '  (active speaker)' : ''}`,
    ];
    for (const t of talkers) {
      lines.push(
        `  ${t.username}: ${meter(t.level)} ${t.speaking ? 'speaking' : ''}${t.volume !== 1 ? ` volume ${Math.round(t.volume * 100)}%` : ''}${speaker?.user_id === t.user_id ? '  (active speaker)' : ''}`,
      );
    }
    if (!talkers.length) lines.push('  nobody else is sending audio');
    return lines;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.audioStarting;
    await this.audio?.close().catch((e: unknown) => this.out.error(e));
    await this.video.close();
    await Promise.all([...this.recorders.values()].map((r) => r.close().catch(() => undefined)));
    await this.latest?.close();
  }
}

/** A 10-step bar for a -dBov level: full at -10 dBov and louder, empty at -70 and below. */
export function meter(level: number): string {
  const n = Math.max(0, Math.min(10, Math.round((70 - level) / 6)));
  return `[${'#'.repeat(n)}${'.'.repeat(10 - n)}] ${level >= 127 ? ' -inf' : `-${String(level).padStart(3)}`} dBov`;
}
