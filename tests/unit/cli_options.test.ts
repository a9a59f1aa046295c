/**
 * The server's option table (server/cli_options.ts): the size and duration kinds the
 * file-sharing flags use, how flags and config files reach ServerOptions, and that
 * a bad value is refused with a message that says what would be accepted.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  formatDuration,
  formatSize,
  parseDuration,
  parseServerArgs,
  parseSize,
  serverHelp,
  UsageError,
} from '../../server/cli_options';
import { resolveServerOptions } from '../../server/main_server';
import { DEFAULTS } from '../../shared/constants';

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['1', 1],
    ['104857600', 104857600],
    ['10B', 10],
    ['1KB', 1000],
    ['1kb', 1000],
    ['1KiB', 1024],
    ['1kib', 1024],
    ['100MB', 100_000_000],
    ['100MiB', 100 * 1024 * 1024],
    ['2GB', 2_000_000_000],
    ['2GiB', 2 * 1024 ** 3],
    ['1.5KB', 1500],
    ['1.5 GiB', 1.5 * 1024 ** 3],
    [' 256KiB ', 256 * 1024],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'MB', '-1', '1e6', '10 apples', '1.5B', '1.0001KB', '0x10', '5 M B', 'ten'])('refuses %j, saying what a size looks like', (text) => {
    const r = parseSize(text);
    expect(typeof r).toBe('string');
    expect(r).toMatch(/bytes|unit/);
  });
});

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['90s', 90_000],
    ['30m', 1_800_000],
    ['12h', 43_200_000],
    ['7d', 604_800_000],
    ['7D', 604_800_000],
    ['1.5h', 5_400_000],
    ['250ms', 250],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('a bare number other than 0 is refused, and the message says to add a unit', () => {
    expect(parseDuration('90')).toMatch(/unit.*90s, 90m, 90h or 90d/);
  });

  it.each(['', 'h', '-5m', '5 minutes', '1w', 'forever'])('refuses %j', (text) => {
    expect(typeof parseDuration(text)).toBe('string');
  });
});

describe('formatSize / formatDuration (help defaults)', () => {
  it('picks the largest unit that divides evenly', () => {
    expect(formatSize(DEFAULTS.maxFileBytes)).toBe('100MiB');
    expect(formatSize(256 * 1024)).toBe('256KiB');
    expect(formatSize(10 * 1024 ** 3)).toBe('10GiB');
    expect(formatSize(1_000_000)).toBe('1MB');
    expect(formatSize(1001)).toBe('1001B');
    expect(formatDuration(DEFAULTS.files.retentionMs)).toBe('7d');
    expect(formatDuration(3_600_000)).toBe('1h');
    expect(formatDuration(90_000)).toBe('90s');
    expect(formatDuration(0)).toBe('0');
    expect(formatDuration(1500)).toBe('1500ms');
  });

  it('what formatSize prints, parseSize reads back', () => {
    for (const n of [0, 1, 1000, 1024, 16384, 4 * 1024 * 1024, 104857600, 10 * 1024 ** 3, 123456789]) {
      expect(parseSize(formatSize(n))).toBe(n);
    }
  });
});

describe('file-sharing flags', () => {
  it('reach ServerOptions in bytes and milliseconds', () => {
    const { options } = parseServerArgs(
      [
        '--max-file-size', '500MB',
        '--file-chunk-size', '1MiB',
        '--user-quota', '2GiB',
        '--storage-quota', '1TB',
        '--file-retention', '30d',
        '--partial-retention', '90m',
      ],
      {},
    );
    expect(options).toEqual({
      maxFileBytes: 500_000_000,
      fileChunkSize: 1024 * 1024,
      userQuotaBytes: 2 * 1024 ** 3,
      storageQuotaBytes: 1e12,
      fileRetentionMs: 30 * 86_400_000,
      partialRetentionMs: 90 * 60_000,
    });
  });

  it('--file-retention 0 keeps files until deleted; --partial-retention 0 is refused', () => {
    expect(parseServerArgs(['--file-retention', '0'], {}).options.fileRetentionMs).toBe(0);
    expect(() => parseServerArgs(['--partial-retention', '0'], {})).toThrow(/--partial-retention: partial-retention must be longer than 0/);
  });

  it('bad values are refused with what would be accepted', () => {
    const cases: [string[], RegExp][] = [
      [['--max-file-size', 'lots'], /max-file-size must be a size in bytes, or a number with a unit: B, KB, MB.*not "lots"/],
      [['--file-retention', '7'], /file-retention must be a duration with its unit: 7s, 7m, 7h or 7d/],
      [['--file-retention', '1 week'], /file-retention must be a duration with a unit: s, m, h or d/],
      [['--file-chunk-size', '1KB'], /file-chunk-size must be 16KiB to 4MiB, not "1KB"/],
      [['--file-chunk-size', '8MiB'], /file-chunk-size must be 16KiB to 4MiB/],
    ];
    for (const [argv, message] of cases) {
      let error: unknown;
      try {
        parseServerArgs(argv, {});
      } catch (e) {
        error = e;
      }
      expect(error, argv.join(' ')).toBeInstanceOf(UsageError);
      expect((error as Error).message, argv.join(' ')).toMatch(message);
    }
  });

  it('a config file may give sizes as numbers of bytes or as strings with units', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanvc-cli-'));
    try {
      const file = path.join(dir, 'c.json');
      fs.writeFileSync(file, JSON.stringify({ 'max-file-size': 1048576, userQuotaBytes: '5GB', 'file-retention': '12h' }));
      expect(parseServerArgs(['--config', file], {}).options).toEqual({
        maxFileBytes: 1048576,
        userQuotaBytes: 5e9,
        fileRetentionMs: 12 * 3_600_000,
      });
      // A bare number for a duration is as ambiguous in a file as on the command line.
      fs.writeFileSync(file, JSON.stringify({ 'file-retention': 3600 }));
      expect(() => parseServerArgs(['--config', file], {})).toThrow(/3600s, 3600m/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--help shows each new flag with its default', () => {
    const help = serverHelp();
    expect(help).toMatch(/--max-file-size SIZE .*default 100MiB/);
    expect(help).toMatch(/--file-chunk-size SIZE .*default 256KiB/);
    expect(help).toMatch(/--user-quota SIZE .*default 1GiB/);
    expect(help).toMatch(/--storage-quota SIZE .*default 10GiB/);
    expect(help).toMatch(/--file-retention DURATION .*0 keeps them.*default 7d/);
    expect(help).toMatch(/--partial-retention DURATION .*default 1h/);
  });

  it('defaults when no flag is given come from DEFAULTS', () => {
    const o = resolveServerOptions({});
    expect(o).toMatchObject({
      maxFileBytes: DEFAULTS.maxFileBytes,
      fileChunkSize: DEFAULTS.files.chunkSize,
      userQuotaBytes: DEFAULTS.files.userQuotaBytes,
      storageQuotaBytes: DEFAULTS.files.storageQuotaBytes,
      fileRetentionMs: DEFAULTS.files.retentionMs,
      partialRetentionMs: DEFAULTS.files.partialRetentionMs,
      fileTicketTtlMs: DEFAULTS.files.ticketTtlMs,
      fileIdleTimeoutMs: DEFAULTS.files.idleTimeoutMs,
      maxFileConnections: DEFAULTS.files.maxConnections,
    });
  });
});
