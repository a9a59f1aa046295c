/**
 * Real FFT of a power-of-two size for the echo canceller, on top of fft.js (radix-4).
 * Spectra are kept as separate re/im arrays of size/2+1 bins (DC..Nyquist). Scaling
 * follows Speex's fftwrap (used by mdf.c): the forward transform is scaled by 1/size
 * and the inverse is not, so forward then inverse is the identity and the constants
 * ported from mdf.c keep their meaning. No allocation after construction.
 */
import FFT = require('fft.js');

export class RealFft {
  readonly size: number;
  readonly bins: number;
  private readonly full: FFT;
  private readonly half: FFT;
  private readonly fwdOut: Float64Array;
  private readonly halfIn: Float64Array;
  private readonly halfOut: Float64Array;
  /** e^{+j2πk/size}, k < size/2: the twiddles that split the half-size inverse. */
  private readonly twRe: Float64Array;
  private readonly twIm: Float64Array;

  constructor(size: number) {
    if (size < 8 || (size & (size - 1)) !== 0) throw new Error(`FFT size must be a power of two >= 8, got ${size}`);
    this.size = size;
    this.bins = size / 2 + 1;
    this.full = new FFT(size);
    this.half = new FFT(size / 2);
    this.fwdOut = new Float64Array(2 * size);
    this.halfIn = new Float64Array(size);
    this.halfOut = new Float64Array(size);
    this.twRe = new Float64Array(size / 2);
    this.twIm = new Float64Array(size / 2);
    for (let k = 0; k < size / 2; k++) {
      this.twRe[k] = Math.cos((2 * Math.PI * k) / size);
      this.twIm[k] = Math.sin((2 * Math.PI * k) / size);
    }
  }

  /** re/im (length bins) = DFT(input) / size. `input` has `size` samples. */
  forward(input: Float64Array, re: Float64Array, im: Float64Array): void {
    this.full.realTransform(this.fwdOut, input);
    const s = 1 / this.size;
    const o = this.fwdOut;
    for (let k = 0; k < this.bins; k++) {
      re[k] = o[2 * k] * s;
      im[k] = o[2 * k + 1] * s;
    }
  }

  /**
   * out (length size) = size * IDFT(spectrum): the exact inverse of forward(). Uses one
   * complex FFT of size/2 (even samples in the real part, odd in the imaginary part).
   */
  inverse(re: Float64Array, im: Float64Array, out: Float64Array): void {
    const h = this.size / 2;
    const z = this.halfIn;
    for (let k = 0; k < h; k++) {
      // X[k] and conj(X[h-k]) give the spectra of the even (E) and odd (O) samples.
      const ar = re[k];
      const ai = im[k];
      const br = re[h - k];
      const bi = -im[h - k];
      const er = 0.5 * (ar + br);
      const ei = 0.5 * (ai + bi);
      const dr = 0.5 * (ar - br);
      const di = 0.5 * (ai - bi);
      const or = dr * this.twRe[k] - di * this.twIm[k];
      const oi = dr * this.twIm[k] + di * this.twRe[k];
      // Z = E + jO
      z[2 * k] = er - oi;
      z[2 * k + 1] = ei + or;
    }
    this.half.inverseTransform(this.halfOut, z);
    // fft.js divides its inverse by h; forward() divided by size: undo both.
    const s = this.size;
    const zo = this.halfOut;
    for (let n = 0; n < h; n++) {
      out[2 * n] = zo[2 * n] * s;
      out[2 * n + 1] = zo[2 * n + 1] * s;
    }
  }
}
