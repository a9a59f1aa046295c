/**
 * Safe file names (shared/file_names.ts): what the server lists and what the client
 * saves under, whatever name a peer sent.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_FILE_NAME_BYTES, safeFileName, truncateFileName, uniqueFilePath } from '../../shared/file_names';

describe('safeFileName', () => {
  it.each([
    ['report.pdf', 'report.pdf'],
    ['../../etc/passwd', 'passwd'],
    ['a/b', 'b'],
    ['C:\\Users\\x\\notes.txt', 'notes.txt'],
    ['dir/', 'file'],
    ['x\u0000y.txt', 'xy.txt'],
    ['line\nbreak.txt', 'linebreak.txt'],
    ['\u202Eevil\u202Dtxt.exe', 'eviltxt.exe'],
    ['a<b>c:d"e|f?g*h.txt', 'abcdefgh.txt'],
    ['  spaced.txt  ', 'spaced.txt'],
    ['trailing.dots...', 'trailing.dots'],
    ['CON', '_CON'],
    ['nul.txt', '_nul.txt'],
    ['.', 'file'],
    ['..', 'file'],
    ['', 'file'],
    ['.bashrc', '.bashrc'],
    ['日本語の資料.pdf', '日本語の資料.pdf'],
    ['e\u0301t\u00e9.txt', '\u00e9t\u00e9.txt'], // NFC: e + combining acute becomes é
    ['👩\u200D💻 notes.md', '👩\u200D💻 notes.md'], // the joiner of an emoji sequence stays
  ])('%j -> %j', (raw, safe) => {
    expect(safeFileName(raw)).toBe(safe);
  });

  it('cuts 300 characters to 255 bytes, keeping the extension', () => {
    const out = safeFileName('a'.repeat(300) + '.pdf');
    expect(Buffer.byteLength(out)).toBe(MAX_FILE_NAME_BYTES);
    expect(out.endsWith('.pdf')).toBe(true);
  });

  it('cuts multi-byte names at a character boundary', () => {
    const out = safeFileName('é'.repeat(200) + '.txt'); // 2 bytes each
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(MAX_FILE_NAME_BYTES);
    expect(out).toBe('é'.repeat(125) + '.txt');
    expect(truncateFileName('😀'.repeat(100), 10)).toBe('😀😀'); // 4 bytes each, never half of one
  });

  it('a very long "extension" is not kept whole', () => {
    const out = safeFileName('x.' + 'y'.repeat(400));
    expect(Buffer.byteLength(out)).toBe(MAX_FILE_NAME_BYTES);
    expect(out.startsWith('x.yyy')).toBe(true);
  });

  it('property: any string gives a non-empty name of at most 255 bytes with no separator, control or NUL', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 600 }), (raw) => {
        const out = safeFileName(raw);
        expect(out.length).toBeGreaterThan(0);
        expect(Buffer.byteLength(out)).toBeLessThanOrEqual(MAX_FILE_NAME_BYTES);
        expect(out).not.toMatch(/[/\\\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
        expect(['.', '..']).not.toContain(out);
        expect(safeFileName(out)).toBe(out); // already safe stays as it is
      }),
    );
  });
});

describe('uniqueFilePath', () => {
  it('adds (1), (2) before the extension until the name is free', () => {
    const taken = new Set(['/d/report.pdf', '/d/report (1).pdf']);
    expect(uniqueFilePath('/d', 'report.pdf', (p) => taken.has(p))).toBe('/d/report (2).pdf');
    expect(uniqueFilePath('/d', 'free.pdf', (p) => taken.has(p))).toBe('/d/free.pdf');
    expect(uniqueFilePath('/d', 'noext', (p) => p === '/d/noext')).toBe('/d/noext (1)');
  });

  it('a name of 255 bytes that is taken gets a free one of 255 bytes (regression: the cut removed the counter, forever)', () => {
    const long = 'a'.repeat(251) + '.pdf';
    const taken = new Set([`/d/${long}`]);
    const out = uniqueFilePath('/d', long, (p) => taken.has(p));
    expect(out.endsWith(' (1).pdf')).toBe(true);
    expect(Buffer.byteLength(out.slice('/d/'.length))).toBe(MAX_FILE_NAME_BYTES);
    taken.add(out);
    expect(uniqueFilePath('/d', long, (p) => taken.has(p)).endsWith(' (2).pdf')).toBe(true);
  });
});
