/**
 * File names from other people made safe to show and to save under. The server stores
 * files by id and only ever shows this name; the client applies it again before saving
 * a download (it never trusts a name from the network).
 *
 * sanitize-filename removes what no file system accepts (/ ? < > \ : * | ", control
 * characters, trailing dots and spaces) and refuses reserved names (".", "..", CON, NUL,
 * COM1 ...). Around it: only the last path component counts (a client that sends
 * "../../etc/passwd" means "passwd"), invisible and bidirectional-override characters go
 * (they make "evil\u202Etxt.exe" look like "evilexe.txt"), and a long name is cut to 255
 * bytes keeping its extension.
 */
import path from 'node:path';
import sanitize from 'sanitize-filename';
import { INVISIBLE_OR_CONTROL_CLASS } from './protocol/messages';

/** Most file systems allow 255 bytes per name. */
export const MAX_FILE_NAME_BYTES = 255;
/** An extension longer than this is treated as part of the name when cutting. */
const MAX_KEPT_EXTENSION_BYTES = 32;

const INVISIBLE = new RegExp(INVISIBLE_OR_CONTROL_CLASS, 'gu');

/** `name` cut to `maxBytes` of UTF-8 at a code point boundary, keeping a short extension. */
export function truncateFileName(name: string, maxBytes = MAX_FILE_NAME_BYTES): string {
  if (Buffer.byteLength(name) <= maxBytes) return name;
  const dot = name.lastIndexOf('.');
  const ext = dot > 0 && Buffer.byteLength(name.slice(dot)) <= MAX_KEPT_EXTENSION_BYTES ? name.slice(dot) : '';
  const budget = maxBytes - Buffer.byteLength(ext);
  let stem = '';
  let used = 0;
  for (const cp of name.slice(0, name.length - ext.length)) {
    const n = Buffer.byteLength(cp);
    if (used + n > budget) break;
    stem += cp;
    used += n;
  }
  return stem + ext;
}

/** A name safe to list and to create in any directory; `fallback` when nothing usable is left. */
export function safeFileName(raw: string, fallback = 'file'): string {
  const last = raw.normalize('NFC').split(/[\\/]/).pop() ?? '';
  const visible = last.replace(INVISIBLE, '').trim();
  const cut = truncateFileName(visible);
  let safe = sanitize(cut);
  // A reserved device name (CON, nul.txt) keeps its text behind an underscore.
  if (safe === '' && cut.replace(/\./g, '') !== '') safe = sanitize(truncateFileName(`_${cut}`));
  safe = safe.trim();
  return safe === '' ? fallback : safe;
}

/**
 * A path in `dir` for `name` that does not exist yet: "report.pdf", then
 * "report (1).pdf", "report (2).pdf" ... `exists` is injectable for tests.
 */
export function uniqueFilePath(dir: string, name: string, exists: (p: string) => boolean): string {
  const first = path.join(dir, name);
  if (!exists(first)) return first;
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 && Buffer.byteLength(name.slice(dot)) <= MAX_KEPT_EXTENSION_BYTES ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  for (let i = 1; ; i++) {
    // The stem gives way to the counter: cutting the whole name could cut the counter off
    // again, and a name already 255 bytes long would then never become free.
    const tail = ` (${i})${ext}`;
    const candidate = path.join(dir, truncateFileName(stem, MAX_FILE_NAME_BYTES - Buffer.byteLength(tail)) + tail);
    if (!exists(candidate)) return candidate;
  }
}
