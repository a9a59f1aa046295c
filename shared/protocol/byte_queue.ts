/**
 * Bytes received and not yet consumed, for the stream decoders (control framing and
 * file-server framing): chunks are kept as they came and copied only when a read spans
 * two of them or a small remainder would pin a large chunk.
 */

/** Remainders up to this size are copied into a buffer of their own. */
const COMPACT_BELOW = 64 * 1024;

export class ByteQueue {
  private chunks: Buffer[] = [];
  private bytes = 0;

  get length(): number {
    return this.bytes;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.bytes += chunk.length;
  }

  /** The next `n` bytes (n <= length), removed from the queue; a view when they lie in one chunk. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const head = this.chunks[0];
        const k = Math.min(head.length, n - off);
        head.copy(out, off, 0, k);
        off += k;
        if (k === head.length) this.chunks.shift();
        else this.chunks[0] = head.subarray(k);
      }
    }
    this.bytes -= n;
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.bytes = 0;
  }

  /**
   * A small remainder is copied out of the caller's chunk, so the queue neither pins a
   * large chunk for a few bytes nor depends on the caller not reusing it.
   */
  compact(): void {
    if (this.bytes === 0 || this.bytes > COMPACT_BELOW) return;
    if (this.chunks.length === 1 && this.chunks[0].buffer.byteLength === this.bytes) return;
    this.chunks = [Buffer.concat(this.chunks, this.bytes)];
  }
}
