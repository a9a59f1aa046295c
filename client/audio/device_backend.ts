/**
 * The audio device backend: naudiodon (PortAudio) loaded lazily, the device list,
 * device selection by id or name, and the errors of this layer.
 *
 * naudiodon is required on first use only, so programs that never touch audio never
 * initialise PortAudio. Facts about naudiodon 2.3.6 that shape this layer (read in
 * node_modules/naudiodon/src, and measured against PulseAudio 16 through the ALSA
 * pulse plugin):
 * - PortAudio's ALSA host probes every PCM the ALSA configuration defines (jack,
 *   oss, surround*, usb_stream, ...) and libasound/libjack print ~150 lines to
 *   stderr doing so ("jack server is not running ..."). When PulseAudio is in use we
 *   point ALSA_CONFIG_PATH at a four-line configuration that defines only `pulse`
 *   and `default` (both the pulse plugin): no probing noise, and init takes ~20 ms
 *   instead of ~80 ms. `LVC_AUDIO_ALSA=system` keeps the system configuration (to
 *   reach raw hw: devices next to a sound server).
 * - The device latency fields are truncated to integer seconds by the binding
 *   (always 0), so they are not passed on.
 * - A failed AudioIO construction leaves PortAudio initialised (no Pa_Terminate), so
 *   from then on the device list is the one cached at that moment.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ProtocolError } from '../../shared/errors';

/** The codes of this layer; their messages and hints are in the one registry (shared/errors.ts). */
export type AudioErrorCode =
  | 'AUDIO_UNAVAILABLE'
  | 'AUDIO_DEVICE_NOT_FOUND'
  | 'AUDIO_DEVICE_AMBIGUOUS'
  | 'AUDIO_DEVICE_OPEN_FAILED'
  | 'AUDIO_DEVICE_LOST'
  | 'AUDIO_FILE_UNREADABLE';

/** An error of the device layer, with a stable code and what the user can do. */
export class AudioDeviceError extends ProtocolError {
  declare readonly code: AudioErrorCode;

  constructor(code: AudioErrorCode, details: Record<string, unknown> = {}) {
    super(code, details);
    this.name = 'AudioDeviceError';
  }
}

// ---------------------------------------------------------------------------
// naudiodon, typed as far as this layer uses it

export interface NaDeviceInfo {
  id: number;
  name: string;
  maxInputChannels: number;
  maxOutputChannels: number;
  defaultSampleRate: number;
  hostAPIName: string;
}

export interface NaStreamOptions {
  channelCount: number;
  sampleFormat: number;
  sampleRate: number;
  deviceId: number;
  closeOnError: boolean;
  framesPerBuffer: number;
  maxQueue: number;
  highwaterMark: number;
}

/** The stream naudiodon returns: a Node stream plus start/quit. (abort() is broken in 2.3.6: it passes two arguments to a native quit that accepts one, and throws.) */
export interface NaIoStream extends NodeJS.EventEmitter {
  start(): void;
  quit(cb?: () => void): Promise<void>;
  write(chunk: Buffer, cb?: (err?: unknown) => void): boolean;
  destroy(err?: Error): void;
}

export interface Naudiodon {
  SampleFormat16Bit: number;
  getDevices(): NaDeviceInfo[];
  getHostAPIs(): { defaultHostAPI: number; HostAPIs: { id: number; name: string; defaultInput: number; defaultOutput: number }[] };
  AudioIO(o: { inOptions?: NaStreamOptions; outOptions?: NaStreamOptions }): NaIoStream;
}

const ALSA_PULSE_ONLY_CONF = `# written by lan-video-call: only the PulseAudio plugin, so PortAudio probes nothing else
pcm.!default { type pulse }
ctl.!default { type pulse }
pcm.pulse { type pulse }
ctl.pulse { type pulse }
`;

const ALSA_PLUGIN_DIRS = ['/usr/lib/x86_64-linux-gnu/alsa-lib', '/usr/lib/aarch64-linux-gnu/alsa-lib', '/usr/lib64/alsa-lib', '/usr/lib/alsa-lib'];

/** Whether a PulseAudio server (or pipewire-pulse) is the way to the devices here. */
function pulseInUse(env: NodeJS.ProcessEnv): boolean {
  if (env.PULSE_SERVER) return true;
  const runtime = env.PULSE_RUNTIME_PATH ?? (env.XDG_RUNTIME_DIR ? path.join(env.XDG_RUNTIME_DIR, 'pulse') : null);
  return runtime !== null && fs.existsSync(path.join(runtime, 'native'));
}

/**
 * Before libasound first reads its configuration: with PulseAudio in use, give ALSA
 * a configuration that defines only the pulse plugin (see the file comment). Sets
 * process.env.ALSA_CONFIG_PATH, which libasound re-reads on each configuration
 * update, so it stays set for the life of the process.
 */
function quietAlsa(env: NodeJS.ProcessEnv): void {
  if (env.ALSA_CONFIG_PATH || env.LVC_AUDIO_ALSA === 'system' || process.platform !== 'linux') return;
  if (!ALSA_PLUGIN_DIRS.some((d) => fs.existsSync(path.join(d, 'libasound_module_pcm_pulse.so')))) return;
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const file = path.join(os.tmpdir(), `lvc-alsa-pulse-${uid}.conf`);
  try {
    if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== ALSA_PULSE_ONLY_CONF) {
      const tmp = `${file}.${process.pid}`;
      fs.writeFileSync(tmp, ALSA_PULSE_ONLY_CONF, { mode: 0o644 });
      fs.renameSync(tmp, file);
    }
    env.ALSA_CONFIG_PATH = file;
  } catch {
    // Not writable: keep the system configuration and its noise.
  }
}

let loaded: { mod: Naudiodon } | { error: AudioDeviceError } | undefined;

/**
 * naudiodon, loaded on first call; throws AUDIO_UNAVAILABLE if it cannot load.
 * `env`: variables a stream will be opened with (withEnv), taken into account when
 * deciding whether PulseAudio is in use.
 */
export function loadNaudiodon(env?: Record<string, string | undefined>): Naudiodon {
  if (!loaded) {
    try {
      if (pulseInUse({ ...process.env, ...env })) quietAlsa(process.env);
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require('naudiodon') as Naudiodon;
      loaded = { mod };
    } catch (e) {
      loaded = { error: new AudioDeviceError('AUDIO_UNAVAILABLE', { reason: `naudiodon (PortAudio) did not load: ${(e as Error).message}` }) };
    }
  }
  if ('error' in loaded) throw loaded.error;
  return loaded.mod;
}

// ---------------------------------------------------------------------------
// devices

export type AudioDirection = 'input' | 'output';

export interface AudioDeviceInfo {
  id: number;
  name: string;
  hostApi: string;
  maxInputChannels: number;
  maxOutputChannels: number;
  defaultSampleRate: number;
  isDefaultInput?: boolean;
  isDefaultOutput?: boolean;
}

/**
 * The devices PortAudio sees. Throws AUDIO_UNAVAILABLE if naudiodon cannot load,
 * PortAudio fails to initialise, or it lists no device at all (no sound server
 * running and no sound card). `env` (e.g. PULSE_SERVER) applies while listing.
 */
export function listAudioDevices(env?: Record<string, string | undefined>): AudioDeviceInfo[] {
  const na = loadNaudiodon(env);
  let raw: NaDeviceInfo[];
  let defIn = -1;
  let defOut = -1;
  try {
    raw = withEnv(env, () => na.getDevices());
    const apis = withEnv(env, () => na.getHostAPIs());
    const def = apis.HostAPIs.find((h) => h.id === apis.defaultHostAPI) ?? apis.HostAPIs[0];
    if (def) {
      defIn = def.defaultInput;
      defOut = def.defaultOutput;
    }
  } catch (e) {
    throw new AudioDeviceError('AUDIO_UNAVAILABLE', { reason: (e as Error).message });
  }
  if (raw.length === 0) throw new AudioDeviceError('AUDIO_UNAVAILABLE', { reason: 'PortAudio lists no audio device' });
  return raw.map((d) => {
    const info: AudioDeviceInfo = {
      id: d.id,
      name: d.name,
      hostApi: d.hostAPIName,
      maxInputChannels: d.maxInputChannels,
      maxOutputChannels: d.maxOutputChannels,
      defaultSampleRate: d.defaultSampleRate,
    };
    if (d.id === defIn) info.isDefaultInput = true;
    if (d.id === defOut) info.isDefaultOutput = true;
    return info;
  });
}

export interface ResolvedDevice {
  /** PortAudio device index; -1 is the host's default device. */
  id: number;
  name: string;
}

const channelsFor = (d: AudioDeviceInfo, dir: AudioDirection) => (dir === 'input' ? d.maxInputChannels : d.maxOutputChannels);
const describe = (ds: AudioDeviceInfo[]) => (ds.length ? ds.map((d) => `${d.id} "${d.name}"`).join(', ') : '(none)');

/**
 * A device from what the user typed: 'default' (or ''), a numeric id, or a name:
 * the exact name first, then a case-insensitive substring. Only devices with
 * channels in `dir` count. Throws AUDIO_UNAVAILABLE (no device at all),
 * AUDIO_DEVICE_NOT_FOUND or AUDIO_DEVICE_AMBIGUOUS.
 */
export function resolveDevice(spec: string, dir: AudioDirection, devices: AudioDeviceInfo[] = listAudioDevices()): ResolvedDevice {
  const usable = devices.filter((d) => channelsFor(d, dir) > 0);
  if (usable.length === 0) {
    throw new AudioDeviceError('AUDIO_UNAVAILABLE', {
      reason: devices.length ? `PortAudio lists no ${dir} device` : 'PortAudio lists no audio device',
    });
  }
  const s = spec.trim();
  if (s === '' || s.toLowerCase() === 'default') {
    const def = usable.find((d) => (dir === 'input' ? d.isDefaultInput : d.isDefaultOutput));
    return { id: -1, name: def ? def.name : 'default' };
  }
  if (/^\d+$/.test(s)) {
    const d = usable.find((x) => x.id === Number(s));
    if (!d) throw new AudioDeviceError('AUDIO_DEVICE_NOT_FOUND', { dir, spec: s, available: describe(usable) });
    return { id: d.id, name: d.name };
  }
  const exact = usable.filter((d) => d.name === s);
  if (exact.length === 1) return { id: exact[0].id, name: exact[0].name };
  const lower = s.toLowerCase();
  const partial = exact.length > 1 ? exact : usable.filter((d) => d.name.toLowerCase().includes(lower));
  if (partial.length === 1) return { id: partial[0].id, name: partial[0].name };
  if (partial.length > 1) throw new AudioDeviceError('AUDIO_DEVICE_AMBIGUOUS', { dir, spec: s, candidates: describe(partial) });
  throw new AudioDeviceError('AUDIO_DEVICE_NOT_FOUND', { dir, spec: s, available: describe(usable) });
}

// ---------------------------------------------------------------------------
// small shared pieces

/**
 * Runs `fn` (which opens a stream synchronously) with `vars` set in process.env,
 * then restores them. libpulse reads PULSE_SERVER, PULSE_SINK and PULSE_SOURCE when
 * the ALSA pulse plugin connects, which happens inside AudioIO's constructor, so
 * this routes one stream without touching the others.
 */
export function withEnv<T>(vars: Record<string, string | undefined> | undefined, fn: () => T): T {
  if (!vars || Object.keys(vars).length === 0) return fn();
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Bounded backoff: the delay before retry number `attempt` (0-based). */
export function backoffMs(schedule: readonly number[], attempt: number): number {
  return schedule[Math.min(attempt, schedule.length - 1)];
}
