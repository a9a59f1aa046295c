/**
 * Offline echo cancellation (and noise suppression) of raw files, frame by frame,
 * through the same modules the live client uses: AEC first, then NS.
 *
 *   npm run -s aec -- FAR.raw MIC.raw OUT.raw [--ns] [--no-aec]
 */
import * as fs from 'node:fs';
import { EchoCanceller } from '../client/audio/aec';
import { NoiseSuppressor } from '../client/audio/noise_suppressor';
import { FRAME_SAMPLES, SAMPLE_RATE, bytesToInt16, floatToInt16, int16ToBytes, int16ToFloat } from '../client/audio/format';

const USAGE = `usage: npm run -s aec -- FAR.raw MIC.raw OUT.raw [--ns] [--no-aec]

  FAR.raw   what the loudspeaker played (s16le, mono, 48 kHz)
  MIC.raw   what the microphone captured at the same time (same format)
  OUT.raw   where to write the processed microphone signal (same format)
  --ns      run the noise suppressor (RNNoise) after the echo canceller
  --no-aec  skip the echo canceller (with --ns: noise suppression only)

Processes 20 ms frames exactly as the live client does and prints one summary line:
seconds processed, realtime factor, estimated delay and ERLE over the whole file.
The output keeps the processing latency (AEC 5 ms, NS 10 ms) so it lines up with a
live recording.

example:
  ffmpeg -i far.wav -f s16le -ac 1 -ar 48000 far.raw
  ffmpeg -i mic.wav -f s16le -ac 1 -ar 48000 mic.raw
  npm run -s aec -- far.raw mic.raw out.raw --ns
  ffplay -f s16le -ac 1 -ar 48000 out.raw`;

function fail(message: string): never {
  process.stderr.write(`aec: ${message}\n`);
  process.exit(2);
}

function readPcm(file: string, what: string): Int16Array {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    fail(`cannot read ${what} file ${file} (${code ?? String(err)}); give the path of a raw s16le mono 48 kHz file`);
  }
  if (buf.length % 2 !== 0) {
    fail(`${what} file ${file} has an odd number of bytes (${buf.length}): it is not raw s16le; convert it with: ffmpeg -i INPUT -f s16le -ac 1 -ar 48000 ${file}`);
  }
  return bytesToInt16(buf);
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const flags = argv.filter((a) => a.startsWith('--'));
  const files = argv.filter((a) => !a.startsWith('--'));
  const unknown = flags.filter((f) => f !== '--ns' && f !== '--no-aec');
  if (unknown.length > 0) fail(`unknown option ${unknown.join(' ')}\n${USAGE}`);
  if (files.length !== 3) fail(`expected 3 files (FAR MIC OUT), got ${files.length}\n${USAGE}`);
  const [farPath, micPath, outPath] = files;
  const useNs = flags.includes('--ns');
  const useAec = !flags.includes('--no-aec');

  const far = readPcm(farPath, 'far-end');
  const mic = readPcm(micPath, 'microphone');
  let n = Math.min(far.length, mic.length);
  if (far.length !== mic.length) {
    process.stderr.write(`aec: warning: far-end has ${far.length} samples, microphone ${mic.length}: processing the first ${n}\n`);
  }
  const tail = n % FRAME_SAMPLES;
  if (tail !== 0) process.stderr.write(`aec: warning: last ${tail} samples (< one 20 ms frame) are not processed\n`);
  n -= tail;
  if (n === 0) fail('nothing to process: the inputs are shorter than one 20 ms frame');

  const aec = useAec ? new EchoCanceller({ sampleRate: SAMPLE_RATE }) : null;
  const ns = useNs ? await NoiseSuppressor.create() : null;
  const out = new Int16Array(n);
  const farF = new Float32Array(FRAME_SAMPLES);
  const micF = new Float32Array(FRAME_SAMPLES);
  const outF = new Float32Array(FRAME_SAMPLES);
  // Progress for long files: a live percentage on a terminal, a line every 10% otherwise.
  const showProgress = n > SAMPLE_RATE * 30;
  const tty = process.stderr.isTTY === true;
  let lastPct = -1;
  let micEnergy = 0;
  let outEnergy = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i += FRAME_SAMPLES) {
    int16ToFloat(far.subarray(i, i + FRAME_SAMPLES), farF);
    int16ToFloat(mic.subarray(i, i + FRAME_SAMPLES), micF);
    if (aec) {
      aec.pushFar(farF);
      aec.processNearInto(micF, outF);
    } else outF.set(micF);
    if (ns) ns.processInto(outF, outF);
    floatToInt16(outF, out.subarray(i, i + FRAME_SAMPLES));
    for (let k = 0; k < FRAME_SAMPLES; k++) {
      micEnergy += micF[k] * micF[k];
      outEnergy += outF[k] * outF[k];
    }
    if (showProgress) {
      const pct = Math.floor((100 * (i + FRAME_SAMPLES)) / n);
      if (tty && pct !== lastPct) process.stderr.write(`\raec: ${pct}%`);
      else if (!tty && Math.floor(pct / 10) !== Math.floor(lastPct / 10)) process.stderr.write(`aec: ${pct}%\n`);
      lastPct = pct;
    }
  }
  if (showProgress && tty) process.stderr.write('\n');
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  ns?.destroy();
  try {
    fs.writeFileSync(outPath, int16ToBytes(out));
  } catch (err) {
    fail(`cannot write ${outPath}: ${(err as Error).message}`);
  }
  const audioSec = n / SAMPLE_RATE;
  const stats = aec?.stats();
  const delay = stats?.delayMs == null ? 'unknown' : stats.delayMs.toFixed(1);
  const erle = outEnergy > 0 && micEnergy > 0 ? (10 * Math.log10(micEnergy / outEnergy)).toFixed(1) : 'inf';
  process.stdout.write(
    `aec: processed ${audioSec.toFixed(2)} s in ${seconds.toFixed(2)} s (realtime x${(audioSec / Math.max(seconds, 1e-9)).toFixed(1)})` +
      ` delay_ms=${delay} erle_db=${erle} aec=${useAec ? 'on' : 'off'} ns=${useNs ? 'on' : 'off'} -> ${outPath}\n`,
  );
}

main(process.argv.slice(2)).catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
