/**
 * Md5Stream (shared/md5_stream.ts): the same digest as node:crypto whether it hashes in
 * place or on its worker thread, whatever the buffers (handed over, views into larger
 * buffers, reused by the caller).
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Md5Stream, WORKER_MIN_BYTES } from '../../shared/md5_stream';

const md5 = (...parts: Uint8Array[]) => {
  const h = createHash('md5');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

describe('Md5Stream', () => {
  it('hashes small inputs in place', async () => {
    const s = new Md5Stream(3);
    s.update(Buffer.from('abc'));
    expect(await s.digest()).toBe('900150983cd24fb0d6963f7d28e17f72');
  });

  it('on its worker: the same digest for handed-over chunks, views and a reused buffer', async () => {
    const chunks = Array.from({ length: 40 }, () => randomBytes(256 * 1024));
    const expected = md5(...chunks);
    const s = new Md5Stream(WORKER_MIN_BYTES);
    const scratch = Buffer.alloc(256 * 1024);
    chunks.forEach((c, i) => {
      if (i % 3 === 0) {
        const own = Buffer.from(c); // owns its whole ArrayBuffer: moved, not copied
        s.update(own, true);
        expect(own.byteLength).toBe(0); // detached: the worker has it now
      } else if (i % 3 === 1) {
        const big = Buffer.concat([Buffer.alloc(7), c, Buffer.alloc(9)]);
        s.update(big.subarray(7, 7 + c.length), true); // a view: copied even when handed over
      } else {
        c.copy(scratch);
        s.update(scratch); // copied: the caller overwrites scratch next
        scratch.fill(0);
      }
    });
    expect(await s.digest()).toBe(expected);
  });

  it('refuses update after digest; after close, updates are ignored', async () => {
    const s = new Md5Stream(0);
    await s.digest();
    expect(() => s.update(Buffer.from('x'))).toThrow(/after digest/);
    const w = new Md5Stream(WORKER_MIN_BYTES);
    w.close();
    expect(() => w.update(Buffer.from('late write'))).not.toThrow();
  });
});
