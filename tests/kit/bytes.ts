/** Test kit: byte helpers shared by the stream decoder tests (split points, readable dumps). */

/** Hex dump for readable failures: "00 00 00 07 7b ...". */
export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex').replace(/(..)(?!$)/g, '$1 ');
}

/** Cut `buf` at the given sorted offsets. */
export function cut(buf: Uint8Array, offsets: number[]): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let prev = 0;
  for (const o of offsets) {
    parts.push(buf.subarray(prev, o));
    prev = o;
  }
  parts.push(buf.subarray(prev));
  return parts;
}
