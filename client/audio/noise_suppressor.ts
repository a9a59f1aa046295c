/**
 * Noise suppression with RNNoise (J.-M. Valin, "A Hybrid DSP/Deep Learning Approach to
 * Real-Time Full-Band Speech Enhancement", 2018), compiled to WASM by
 * @echogarden/rnnoise-wasm. RNNoise works on 480-sample (10 ms) frames at 48 kHz with
 * samples scaled like int16 (±32768), and returns a voice probability per frame.
 *
 * Latency: RNNoise analyses a 20 ms window advanced by 10 ms and outputs the overlap-
 * added previous half, so its output is the input delayed by exactly 480 samples
 * (10 ms). This wrapper adds nothing to that: frames go straight through, with no FIFO.
 */
import { NS_FRAME_SAMPLES } from './format';

/** The parts of the Emscripten module that we use. */
interface RnnoiseModule {
  _rnnoise_create(model: number): number;
  _rnnoise_destroy(state: number): void;
  _rnnoise_process_frame(state: number, out: number, input: number): number;
  _rnnoise_get_frame_size(): number;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  HEAPF32: Float32Array;
}

type RnnoiseFactory = (moduleArg?: object) => Promise<RnnoiseModule>;

const RNNOISE_PACKAGE = '@echogarden/rnnoise-wasm';

/**
 * The package is an ES module. Under ts-node (CommonJS output) import() becomes
 * require(), which loads ES modules on Node >= 20.19; under vitest it stays a real
 * import(). Older Node 20 releases get a native import() built at run time.
 */
async function importRnnoise(): Promise<{ default: RnnoiseFactory }> {
  try {
    return (await import(RNNOISE_PACKAGE)) as { default: RnnoiseFactory };
  } catch (err) {
    const nativeImport = new Function('s', 'return import(s)') as (s: string) => Promise<{ default: RnnoiseFactory }>;
    try {
      return await nativeImport(RNNOISE_PACKAGE);
    } catch {
      throw err;
    }
  }
}

let modulePromise: Promise<RnnoiseModule> | null = null;

/** One WASM instance per process; each NoiseSuppressor has its own RNNoise state in it. */
function loadModule(): Promise<RnnoiseModule> {
  if (!modulePromise) {
    modulePromise = importRnnoise().then((m) => m.default());
    modulePromise.catch(() => {
      modulePromise = null; // let a later create() try again
    });
  }
  return modulePromise;
}

const SCALE = 32768;

export class NoiseSuppressor {
  /** Voice probability of the last processed frame (max over its 10 ms sub-frames), 0..1. */
  lastVad = 0;
  /** Samples of delay between input and output (RNNoise's own, see the file comment). */
  static readonly LATENCY_SAMPLES = NS_FRAME_SAMPLES;

  private readonly mod: RnnoiseModule;
  private state: number;
  private readonly ptr: number;

  private constructor(mod: RnnoiseModule) {
    this.mod = mod;
    const size = mod._rnnoise_get_frame_size();
    if (size !== NS_FRAME_SAMPLES) throw new Error(`RNNoise frame size is ${size}, expected ${NS_FRAME_SAMPLES}`);
    this.state = mod._rnnoise_create(0);
    this.ptr = mod._malloc(NS_FRAME_SAMPLES * 4);
    if (!this.state || !this.ptr) throw new Error('RNNoise: out of WASM memory');
  }

  /** Loads the WASM module (once per process) and creates a suppressor state. */
  static async create(): Promise<NoiseSuppressor> {
    return new NoiseSuppressor(await loadModule());
  }

  /** Denoises `frame` (a multiple of 480 samples, floats in [-1, 1]); returns a new frame of the same length. */
  process(frame: Float32Array): Float32Array {
    const out = new Float32Array(frame.length);
    this.processInto(frame, out);
    return out;
  }

  /** process() without allocating: `out` may be `frame` itself. */
  processInto(frame: Float32Array, out: Float32Array): void {
    if (this.state === 0) throw new Error('NoiseSuppressor used after destroy()');
    if (frame.length % NS_FRAME_SAMPLES !== 0) {
      throw new Error(`NoiseSuppressor.process: frame of ${frame.length} samples is not a multiple of ${NS_FRAME_SAMPLES}`);
    }
    let vad = 0;
    for (let off = 0; off < frame.length; off += NS_FRAME_SAMPLES) {
      // HEAPF32 is replaced if the WASM memory grows: read it each time.
      const heap = this.mod.HEAPF32;
      const base = this.ptr >> 2;
      for (let i = 0; i < NS_FRAME_SAMPLES; i++) {
        const v = frame[off + i] * SCALE;
        heap[base + i] = v === v ? v : 0;
      }
      const p = this.mod._rnnoise_process_frame(this.state, this.ptr, this.ptr);
      if (p > vad) vad = p;
      const h = this.mod.HEAPF32;
      for (let i = 0; i < NS_FRAME_SAMPLES; i++) {
        const v = h[base + i] / SCALE;
        out[off + i] = v > 1 ? 1 : v < -1 ? -1 : v;
      }
    }
    this.lastVad = vad;
  }

  /** Frees the RNNoise state; idempotent. */
  destroy(): void {
    if (this.state === 0) return;
    this.mod._rnnoise_destroy(this.state);
    this.mod._free(this.ptr);
    this.state = 0;
  }
}
