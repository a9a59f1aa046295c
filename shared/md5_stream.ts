/**
 * The MD5 of a stream of buffers, computed on a worker thread for large inputs.
 *
 * A transfer hashes every byte twice (each chunk's MD5 and the whole file's). On the
 * thread that also moves the bytes, the second pass sits on the critical path: on this
 * 2-core machine it cost a download about a quarter of its speed. The whole-file pass
 * needs no answer until the end, so it goes to a thread of its own. A buffer the caller
 * is done with and that owns its whole ArrayBuffer is moved to the worker (transferred,
 * no copy); any other is copied once. Copying is not free: a copy into a fresh
 * Uint8Array plus postMessage cost the sending thread about as much as hashing in
 * place (measured with --cpu-prof), so callers hand over their chunks once written.
 * Small inputs are hashed in place: a worker costs a few milliseconds to start.
 */
import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** Inputs at least this large are hashed on a worker thread. */
export const WORKER_MIN_BYTES = 8 * 1024 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash('md5');
parentPort.on('message', (m) => {
  if (m === 'digest') {
    parentPort.postMessage(hash.digest('hex'));
    parentPort.close();
  } else {
    hash.update(new Uint8Array(m));
  }
});
`;

export class Md5Stream {
  private readonly hash: Hash | null;
  private readonly worker: Worker | null;
  private failure: Error | null = null;
  private done = false;
  private closed = false;

  /** `expectedBytes`: how much will be hashed (decides whether a worker is worth it). */
  constructor(expectedBytes: number) {
    if (expectedBytes < WORKER_MIN_BYTES) {
      this.hash = createHash('md5');
      this.worker = null;
      return;
    }
    this.hash = null;
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.on('error', (e) => (this.failure = e));
    // Never the reason the process stays up (a transfer abandoned without close()).
    this.worker.unref();
  }

  /**
   * Adds `data`. With `handOver`, the caller promises not to touch `data` again: when it
   * owns its whole ArrayBuffer, that buffer moves to the worker (and `data` is left
   * empty). Otherwise the worker gets a copy.
   */
  update(data: Uint8Array, handOver = false): void {
    // After close() (a transfer given up), late writes completing may still report in.
    if (this.closed) return;
    if (this.done) throw new Error('Md5Stream: update after digest');
    if (this.hash) {
      this.hash.update(data);
      return;
    }
    if (handOver && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer) {
      this.worker!.postMessage(data.buffer, [data.buffer]);
      return;
    }
    // Uninitialized and unpooled: an ArrayBuffer of exactly this size, filled by the copy.
    const copy = Buffer.allocUnsafeSlow(data.length);
    copy.set(data);
    this.worker!.postMessage(copy.buffer, [copy.buffer]);
  }

  /** The hex digest of everything given to update(); the stream is finished after it. */
  digest(): Promise<string> {
    this.done = true;
    if (this.hash) return Promise.resolve(this.hash.digest('hex'));
    const worker = this.worker!;
    return new Promise<string>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      worker.once('message', (hex: string) => resolve(hex));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the MD5 worker exited (code ${code}) before answering`)));
      worker.postMessage('digest');
    });
  }

  /** Stops the worker (after a failed transfer); harmless after digest(). */
  close(): void {
    this.closed = this.done = true;
    void this.worker?.terminate();
  }
}
