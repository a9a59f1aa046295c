/**
 * client/progress.ts: the CLI's transfer progress line, checked against exact strings.
 */
import { describe, expect, it } from 'vitest';
import { formatAmount, formatBar, formatBytes, formatDuration, formatProgress } from '../../client/progress';

const at42 = { size: 100e6, done: 42e6, rate_bps: 85.3e6, eta_s: 0.68 };

describe('formatProgress', () => {
  it('draws name, bar, percentage, amount, rate and ETA', () => {
    expect(formatProgress({ name: 'report.pdf', ...at42 }, 80)).toBe('report.pdf  [########------------]  42%  42.0/100.0 MB  85.3 MB/s  ETA 1s');
    expect(formatProgress({ name: 'x.bin', size: 104857600, done: 5242880, rate_bps: 12.5e6, eta_s: 7.97 })).toBe(
      'x.bin  [#-------------------]   5%  5.2/104.9 MB  12.5 MB/s  ETA 8s',
    );
  });

  it('shows an empty file as complete, and an unknown ETA as --', () => {
    expect(formatProgress({ name: 'empty.txt', size: 0, done: 0, rate_bps: 0, eta_s: 0 })).toBe('empty.txt  [####################]  100%  0/0 B  0 B/s  ETA 0s');
    expect(formatProgress({ name: 'x.iso', size: 4.7e9, done: 0.25e9, rate_bps: 0, eta_s: null })).toBe('x.iso  [#-------------------]   5%  0.2/4.7 GB  0 B/s  ETA --');
  });

  it('rounds the percentage and the bar down: 100% only when every byte is done', () => {
    expect(formatProgress({ name: 'a', size: 1000, done: 999, rate_bps: 999, eta_s: 0 })).toBe('a  [###################-]  99%  0.9/1.0 kB  999 B/s  ETA 0s');
    expect(formatProgress({ name: 'a', size: 1000, done: 1000, rate_bps: 1000, eta_s: 0 })).toBe('a  [####################]  100%  1.0/1.0 kB  1.0 kB/s  ETA 0s');
  });

  it('fits a narrow terminal: the name is cut first, then the bar, then the rate and ETA go', () => {
    const name = 'a-very-long-file-name-for-the-quarterly-report.pdf';
    const lines = [80, 60, 40, 30].map((w) => formatProgress({ name, ...at42 }, w));
    expect(lines).toEqual([
      'a-very-long-file…  [########------------]  42%  42.0/100.0 MB  85.3 MB/s  ETA 1s',
      'a-very-long-file-nam…  42%  42.0/100.0 MB  85.3 MB/s  ETA 1s',
      'a-very-long-file-na…  42%  42.0/100.0 MB',
      'a-very-lo…  42%  42.0/100.0 MB',
    ]);
    for (const [i, w] of [80, 60, 40, 30].entries()) expect([...lines[i]].length).toBeLessThanOrEqual(w);
    // A name that fits is never cut.
    expect(formatProgress({ name: 'report.pdf', ...at42 }, 73)).toBe('report.pdf  [########------------]  42%  42.0/100.0 MB  85.3 MB/s  ETA 1s');
  });
});

describe('formatBytes, formatAmount, formatDuration, formatBar', () => {
  it('uses decimal units with one decimal', () => {
    expect([0, 999, 1000, 2_100_000, 104_857_600, 999_960, 1e9, 1.5e12].map(formatBytes)).toEqual([
      '0 B', '999 B', '1.0 kB', '2.1 MB', '104.9 MB', '1.0 MB', '1.0 GB', '1.5 TB',
    ]);
    expect(formatBytes(Number.NaN)).toBe('? B');
  });

  it('puts both figures of an amount in the unit of the total', () => {
    expect(formatAmount(42e6, 100e6)).toBe('42.0/100.0 MB');
    expect(formatAmount(512, 900)).toBe('512/900 B');
    expect(formatAmount(5e5, 2e9)).toBe('0.0/2.0 GB');
    expect(formatAmount(99.99e6, 100e6)).toBe('99.9/100.0 MB');
  });

  it('writes whole seconds, then minutes, then hours', () => {
    expect([0, 0.4, 59.4, 59.6, 65, 3599, 3600, 7380].map(formatDuration)).toEqual(['0s', '0s', '59s', '1m00s', '1m05s', '59m59s', '1h00m', '2h03m']);
    expect([null, Number.POSITIVE_INFINITY, -1].map(formatDuration)).toEqual(['--', '--', '--']);
  });

  it('fills a bar cell only when it is wholly done', () => {
    expect(formatBar(0, 100, 10)).toBe('[----------]');
    expect(formatBar(19, 100, 10)).toBe('[#---------]');
    expect(formatBar(100, 100, 10)).toBe('[##########]');
    expect(formatBar(150, 100, 4)).toBe('[####]');
  });
});
