/**
 * The error registry (shared/errors.ts) against the code base and docs/PROTOCOL.md
 * (CONVENTIONS.md 5, after Fastify's FST_ERR_* test): every code is raised somewhere,
 * every code is documented with the scope, fatality, message and hint the registry
 * gives it, the documentation lists no code the registry lacks, every message type is
 * documented, and every hint tells the user what to do in a full sentence.
 *
 * "Raised somewhere" means the code appears as a string literal in a .ts file under
 * server/, client/ or shared/ (other than shared/errors.ts) or in run_*.ts. String
 * literals are read with TypeScript's own parser, so a code named only in a comment
 * does not count.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorSpec } from '../../shared/errors';
import { MESSAGE_TYPES } from '../../shared/protocol/messages';

const ROOT = path.resolve(__dirname, '../..');
const REGISTRY_FILE = path.join(ROOT, 'shared', 'errors.ts');
const PROTOCOL_DOC = path.join(ROOT, 'docs', 'PROTOCOL.md');

const CODES = Object.keys(ERROR_CODES) as (keyof typeof ERROR_CODES)[];
const specOf = (code: string): ErrorSpec => (ERROR_CODES as Record<string, ErrorSpec>)[code];

function tsFilesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') out.push(...tsFilesUnder(p));
    } else if (entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      out.push(p);
    }
  }
  return out;
}

/** The source files scanned for uses, errors.ts itself left out. */
function sourceFiles(): string[] {
  const top = fs
    .readdirSync(ROOT)
    .filter((f) => /^run_.*\.ts$/.test(f))
    .map((f) => path.join(ROOT, f));
  return [...['server', 'client', 'shared'].flatMap((d) => tsFilesUnder(path.join(ROOT, d))), ...top].filter(
    (f) => path.resolve(f) !== REGISTRY_FILE,
  );
}

/** The text of every string literal (quoted, or a template without substitutions) in a file. */
function stringLiterals(file: string): string[] {
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) out.push(node.text);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

/** Where each string literal occurs: literal text -> files. */
function literalIndex(): Map<string, string[]> {
  const index = new Map<string, string[]>();
  for (const file of sourceFiles()) {
    for (const lit of new Set(stringLiterals(file))) {
      const files = index.get(lit) ?? [];
      files.push(path.relative(ROOT, file));
      index.set(lit, files);
    }
  }
  return index;
}

const doc = fs.existsSync(PROTOCOL_DOC) ? fs.readFileSync(PROTOCOL_DOC, 'utf8') : '';

interface DocRow {
  code: string;
  scope: string;
  fatal: string;
  message: string;
  hint: string;
}

/** Rows of the table under the "## Error codes" heading: | `CODE` | scope | fatal | message | hint | ... */
function errorTable(): DocRow[] {
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => /^##\s+Error codes\s*$/.test(l));
  if (start < 0) return [];
  const rows: DocRow[] = [];
  for (const line of lines.slice(start + 1)) {
    if (/^##\s/.test(line)) break;
    const m = /^\|\s*`([A-Z0-9_]+)`\s*\|(.*)\|\s*$/.exec(line);
    if (!m) continue;
    const cells = m[2].split('|').map((c) => c.trim());
    rows.push({ code: m[1], scope: cells[0] ?? '', fatal: cells[1] ?? '', message: cells[2] ?? '', hint: cells[3] ?? '' });
  }
  return rows;
}

describe('error codes are used in the code base', () => {
  const index = literalIndex();

  it('the scan reads the code base (sanity: it finds codes raised in server/ and client/)', () => {
    expect(sourceFiles().length).toBeGreaterThan(5);
    expect(index.get('ROOM_FULL')).toContain(path.join('server', 'room_manager.ts'));
    expect(index.get('CONNECT_FAILED')).toContain(path.join('client', 'main_client.ts'));
  });

  it('a code named only in a comment is not counted as used', () => {
    const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'codes-')), 'x.ts');
    fs.writeFileSync(tmp, "// throws 'ROOM_FULL'\n/* 'ROOM_LOCKED' */\nconst r = /'ROOM_FULL'/;\nconst b = { c: 'NOT_IN_ROOM', d: `ROOM_NOT_FOUND`, e: `x${r}` };\n");
    try {
      expect(stringLiterals(tmp)).toEqual(['NOT_IN_ROOM', 'ROOM_NOT_FOUND']);
    } finally {
      fs.rmSync(path.dirname(tmp), { recursive: true, force: true });
    }
  });

  it.each(CODES)('%s appears as a string literal outside shared/errors.ts', (code) => {
    expect(index.has(code), `${code} is in the registry but nothing in server/, client/, shared/ or run_*.ts raises it`).toBe(true);
  });
});

describe('error codes are documented in docs/PROTOCOL.md', () => {
  const rows = errorTable();
  const byCode = new Map(rows.map((r) => [r.code, r]));

  it('docs/PROTOCOL.md exists and has an "Error codes" table', () => {
    expect(doc.length, 'docs/PROTOCOL.md is missing').toBeGreaterThan(0);
    expect(rows.length).toBeGreaterThan(0);
  });

  it('the table lists each code once', () => {
    const seen = rows.map((r) => r.code);
    expect(seen.filter((c, i) => seen.indexOf(c) !== i)).toEqual([]);
  });

  it('every code in the table exists in the registry', () => {
    expect(rows.map((r) => r.code).filter((c) => !(c in ERROR_CODES))).toEqual([]);
  });

  it.each(CODES)('%s is in the table with the registry\'s scope, fatality, message and hint', (code) => {
    const row = byCode.get(code);
    expect(row, `${code} is missing from the error table of docs/PROTOCOL.md`).toBeDefined();
    const spec = specOf(code);
    expect(row!.scope).toBe(spec.scope);
    expect(row!.fatal.startsWith('yes'), `fatal column of ${code}`).toBe(spec.fatal === true);
    expect(row!.message).toBe(spec.message);
    expect(row!.hint).toBe(spec.hint);
  });
});

describe('message types are documented in docs/PROTOCOL.md', () => {
  it.each([...MESSAGE_TYPES])('%s appears (as `%s`)', (type) => {
    expect(doc.includes('`' + type + '`'), `${type} is not documented in docs/PROTOCOL.md`).toBe(true);
  });
});

describe('registry entries', () => {
  it.each(CODES)('%s has a message and a hint that is a full sentence', (code) => {
    const { message, hint } = specOf(code);
    expect(message.trim().length).toBeGreaterThan(0);
    expect(message).toBe(message.trim());
    // A full sentence: starts with a capital letter, has at least two words, ends with . ! or ?
    expect(hint, `hint of ${code}`).toMatch(/^[A-Z][^\n]*[.!?]$/);
    expect(hint.split(/\s+/).length, `hint of ${code}`).toBeGreaterThanOrEqual(2);
  });
});
