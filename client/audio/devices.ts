/**
 * The audio device layer: microphones and speakers through naudiodon (PortAudio),
 * a looped sound file as microphone, and a clock-only speaker for `--speaker none`.
 * Everything here speaks the client's one format (format.ts): 48 kHz mono s16,
 * 960-sample (20 ms) frames.
 *
 *   --mic DEVICE      new DeviceCapture(DEVICE)      (id, name, or 'default')
 *   --mic file:PATH   new FileCapture(PATH)
 *   --speaker DEVICE  new DevicePlayback(DEVICE, pull)
 *   --speaker none    new NullPlayback(pull)
 *   --list-devices    listAudioDevices()
 *
 * Errors carry stable codes (AudioDeviceError.code: AUDIO_UNAVAILABLE,
 * AUDIO_DEVICE_NOT_FOUND, AUDIO_DEVICE_AMBIGUOUS, AUDIO_DEVICE_OPEN_FAILED,
 * AUDIO_FILE_UNREADABLE) and a hint. start() rejects with one of them; once running,
 * nothing throws: a device that stops delivering emits 'lost' once, is retried with
 * a bounded backoff, and emits 'restored' when audio flows again.
 */
import type { TypedEmitter } from '../../shared/events';
import { DeviceCapture, type DeviceCaptureOptions } from './device_capture';
import { FileCapture, type FileCaptureOptions } from './device_file';
import { DevicePlayback, NullPlayback, type DevicePlaybackOptions, type NullPlaybackOptions } from './device_playback';

export type CaptureEvents = {
  /** Exactly FRAME_SAMPLES samples; captureUs = estimated wall-clock µs of its first sample. */
  frame: [pcm: Int16Array, captureUs: number];
  lost: [reason: string];
  restored: [];
  error: [error: Error];
};

export type PlaybackEvents = {
  /**
   * A frame as it is handed to the device (the echo canceller's far-end reference),
   * in order, one per pull; handedUs = wall-clock µs of the hand-over (it reaches the
   * speaker some tens of ms later: see DevicePlayback for what was measured).
   */
  played: [pcm: Int16Array, handedUs: number];
  lost: [reason: string];
  restored: [];
  error: [error: Error];
};

type EmitterSurface<E extends Record<string, unknown[]>> = Pick<TypedEmitter<E>, 'on' | 'once' | 'off' | 'waitFor' | 'removeAllListeners'>;

export interface AudioCapture extends EmitterSurface<CaptureEvents> {
  readonly label: string;
  /** Opens the source; rejects with an AudioDeviceError if it cannot. */
  start(): Promise<void>;
  /** Idempotent; releases the device (or the decoder process). */
  stop(): Promise<void>;
}

/** Pull model: the sink asks for each 960-sample frame when it has room for it. */
export type PullFrame = () => Int16Array;

export interface AudioPlayback extends EmitterSurface<PlaybackEvents> {
  readonly label: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export {
  AudioDeviceError,
  listAudioDevices,
  resolveDevice,
  type AudioErrorCode,
  type AudioDeviceInfo,
  type AudioDirection,
  type ResolvedDevice,
} from './device_backend';
export { DeviceCapture, type DeviceCaptureOptions, FileCapture, type FileCaptureOptions };
export { DevicePlayback, NullPlayback, type DevicePlaybackOptions, type NullPlaybackOptions };
export { FrameTicker } from './device_clock';
/**
 * The one clock of capture, playback and ticker times: the client's media clock
 * (Client.sendAudio's captureTsUs is in it). Not performance.timeOrigin-based time:
 * that differed from Date.now() by ~10 ms in a fresh Node 20 process here.
 */
export { nowUs } from '../../shared/protocol/media_packet';

/**
 * The microphone a `--mic` value names: 'file:PATH' is a FileCapture, anything else
 * (an id, a name, 'default') a DeviceCapture. 'none' means no capture at all: the
 * caller handles it (throws here). Nothing is opened until start().
 */
export function openCapture(spec: string, opts: DeviceCaptureOptions & FileCaptureOptions = {}): AudioCapture {
  if (spec === 'none') throw new TypeError("--mic none: open no capture at all");
  if (spec.startsWith('file:')) return new FileCapture(spec.slice('file:'.length), opts);
  return new DeviceCapture(spec, opts);
}

/** The speaker a `--speaker` value names: 'none' is a NullPlayback, anything else a DevicePlayback. */
export function openPlayback(spec: string, pull: PullFrame, opts: DevicePlaybackOptions & NullPlaybackOptions = {}): AudioPlayback {
  if (spec === 'none') return new NullPlayback(pull, opts);
  return new DevicePlayback(spec, pull, opts);
}
