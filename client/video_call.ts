/**
 * Camera and screen sharing for a connected Client: owns the VideoSenders (capture +
 * JPEG encode), sends what they produce over the client's media link, and keeps the
 * signalling in step (VIDEO_START / VIDEO_STOP / SCREEN_SHARE). A host's STOP_VIDEO
 * stops the local capture too. The CLI and the GUI both drive it; neither talks to
 * ffmpeg or the media link directly.
 */
import { TypedEmitter } from '../shared/events';
import { Logger } from '../shared/log';
import { DEFAULTS } from '../shared/constants';
import type { Client } from './main_client';
import { VideoSender, type EncodedFrame, type VideoSenderStats } from './video_client';

export type VideoStream = 'camera' | 'screen';

export interface VideoSettings {
  width: number;
  height: number;
  fps: number;
  quality: number;
}

export type VideoCallEvents = {
  /** A local stream started or stopped (`by`: the host who stopped it). */
  local: [{ stream: VideoStream; on: boolean; by?: string }];
  /** A frame was captured, encoded and handed to the media link (sent: false while not registered). */
  sent: [{ stream: VideoStream; frame: EncodedFrame; sent: boolean }];
  /** Capture trouble (CAPTURE_FAILED); capture is retried by the sender. */
  error: [Error & { stream?: VideoStream }];
};

export const DEFAULT_VIDEO_SETTINGS: VideoSettings = {
  width: DEFAULTS.video.width,
  height: DEFAULTS.video.height,
  fps: DEFAULTS.video.fps,
  quality: DEFAULTS.video.jpegQuality,
};

export class VideoCall extends TypedEmitter<VideoCallEvents> {
  private readonly senders: Partial<Record<VideoStream, VideoSender>> = {};
  private readonly log: Logger;
  settings: VideoSettings;
  private readonly onStopVideo: (d: { kind: 'video' | 'screen'; by: { username: string } }) => void;
  private closed = false;
  private readonly onRoom: (room: unknown) => void;

  constructor(
    readonly client: Client,
    settings: Partial<VideoSettings> = {},
    private readonly o: { ffmpegPath?: string; logger?: Logger; screenSettings?: Partial<VideoSettings> } = {},
  ) {
    super();
    this.settings = { ...DEFAULT_VIDEO_SETTINGS, ...settings };
    this.log = (o.logger ?? Logger.create('warn')).child({ part: 'video' });
    this.onListenerError = (event, error) => this.log.error(`observer of ${event} threw: ${String(error)}`);
    this.onStopVideo = (d) => {
      const stream: VideoStream = d.kind === 'screen' ? 'screen' : 'camera';
      void this.stopLocal(stream).then(() => this.emit('local', { stream, on: false, by: d.by.username }));
    };
    client.on('stop_video', this.onStopVideo);
    // Out of the room (left, kicked, meeting ended): the camera goes off, as in any
    // meeting app; nobody would see it and its light would still be on.
    this.onRoom = (room) => {
      if (room || this.closed) return;
      for (const stream of ['camera', 'screen'] as const) {
        if (this.senders[stream]) void this.stop(stream).catch((e: unknown) => this.emit('error', Object.assign(e as Error, { stream })));
      }
    };
    client.on('room', this.onRoom);
  }

  isOn(stream: VideoStream): boolean {
    return !!this.senders[stream];
  }

  /**
   * Starts capturing `source` (see parseVideoSource: /dev/videoN, testsrc2, file:PATH,
   * :0+X,Y@WxH) and sending it; tells the room. Rejects if capture cannot start.
   */
  async start(stream: VideoStream, source: string, settings: Partial<VideoSettings> = {}): Promise<void> {
    if (this.closed) throw new Error('VideoCall is closed');
    await this.stopLocal(stream);
    const s = { ...this.settings, ...(stream === 'screen' ? this.o.screenSettings : {}), ...settings };
    const sender = new VideoSender({
      source,
      kind: stream,
      width: s.width,
      height: s.height,
      fps: s.fps,
      quality: s.quality,
      ffmpegPath: this.o.ffmpegPath,
      logger: this.log,
    });
    const kind = stream === 'camera' ? 'video' : 'screen';
    sender.on('frame', (frame) => {
      const sent = this.client.sendFrame(kind, frame.jpeg, frame.captureTsUs);
      this.emit('sent', { stream, frame, sent });
    });
    sender.on('error', (e) => this.emit('error', Object.assign(e, { stream })));
    this.senders[stream] = sender;
    try {
      await sender.start();
    } catch (e) {
      if (this.senders[stream] === sender) delete this.senders[stream];
      await sender.stop().catch(() => undefined);
      throw e;
    }
    if (stream === 'camera') await this.client.setVideo(true);
    else await this.client.setScreenShare(true);
    this.emit('local', { stream, on: true });
  }

  /** Stops capture and tells the room. */
  async stop(stream: VideoStream): Promise<void> {
    const was = await this.stopLocal(stream);
    if (this.client.connected) {
      if (stream === 'camera') await this.client.setVideo(false);
      else await this.client.setScreenShare(false);
    }
    if (was) this.emit('local', { stream, on: false });
  }

  private async stopLocal(stream: VideoStream): Promise<boolean> {
    const sender = this.senders[stream];
    if (!sender) return false;
    delete this.senders[stream];
    await sender.stop();
    return true;
  }

  /** Live changes, without restarting capture. */
  setQuality(q: number): void {
    this.settings.quality = q;
    for (const s of Object.values(this.senders)) s?.setQuality(q);
  }
  setSize(width: number, height: number): void {
    this.settings.width = width;
    this.settings.height = height;
    this.senders.camera?.setSize(width, height);
  }
  setFps(fps: number): void {
    this.settings.fps = fps;
    this.senders.camera?.setFps(fps);
  }

  stats(): Partial<Record<VideoStream, VideoSenderStats>> {
    const out: Partial<Record<VideoStream, VideoSenderStats>> = {};
    for (const [k, s] of Object.entries(this.senders) as [VideoStream, VideoSender][]) out[k] = s.stats();
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.off('stop_video', this.onStopVideo);
    this.client.off('room', this.onRoom);
    await Promise.all((['camera', 'screen'] as const).map((s) => this.stopLocal(s)));
  }
}
