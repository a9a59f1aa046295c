/**
 * Pure formatting of transfer progress for the CLI:
 *
 *   report.pdf  [########------------]  42%  42.0/100.0 MB  85.3 MB/s  ETA 1s
 *
 * We considered the cli-progress package, but it assumes it owns the terminal line
 * (it writes and rewinds the cursor on its own timer), which fights our readline prompt
 * and the event lines printed while a transfer runs. A small pure formatter whose line
 * the CLI draws through its own writer (CliSession) keeps one place in charge of the
 * terminal, and is testable with exact strings.
 *
 * Sizes are in decimal SI units (1 MB = 1 000 000 bytes), as file managers show them.
 */

/** What a progress line shows; `done` is bytes verified so far. */
export interface ProgressView {
  name: string;
  size: number;
  done: number;
  /** Smoothed bytes per second. */
  rate_bps: number;
  /** Seconds left at that rate; null when unknown (no rate yet). */
  eta_s: number | null;
}

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'] as const;

/** The unit index for `n` bytes: the largest unit that keeps the number at 1 or more. */
function unitOf(n: number): number {
  let i = 0;
  // Compare the rounded figure, so 999 960 bytes is "1.0 MB" rather than "1000.0 kB".
  while (i < UNITS.length - 1 && Math.abs(n) / 1000 ** i >= 999.95) i++;
  return i;
}

function inUnit(n: number, i: number, down = false): string {
  if (i === 0) return String(down ? Math.floor(n) : Math.round(n));
  const v = n / 1000 ** i;
  // The epsilon keeps 5.3 MB exactly from reading 5.2 through floating-point error.
  return (down ? Math.floor(v * 10 + 1e-9) / 10 : v).toFixed(1);
}

/** `512 B`, `2.1 MB`, `104.9 MB`, `1.0 GB`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '? B';
  const i = unitOf(n);
  return `${inUnit(n, i)} ${UNITS[i]}`;
}

/**
 * `42.0/100.0 MB`: both figures in the unit of the total, so they line up. The done
 * figure rounds down, so it never reads as complete before it is.
 */
export function formatAmount(done: number, size: number): string {
  const i = unitOf(size);
  return `${inUnit(done, i, true)}/${inUnit(size, i)} ${UNITS[i]}`;
}

/** Whole seconds: `0s`, `42s`, `1m05s`, `2h03m`; `--` when unknown. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
}

/** Share done, 0..1; an empty file is complete. */
export function fraction(done: number, size: number): number {
  if (size <= 0) return 1;
  return Math.min(1, Math.max(0, done / size));
}

/** `[########------------]` with `inner` cells; a cell is filled only once it is wholly done. */
export function formatBar(done: number, size: number, inner: number): string {
  const filled = Math.floor(fraction(done, size) * inner);
  return `[${'#'.repeat(filled)}${'-'.repeat(inner - filled)}]`;
}

/** Cut to `max` code points, marking the cut with an ellipsis. */
function fit(text: string, max: number): string {
  const cps = [...text];
  if (cps.length <= max) return text;
  if (max <= 1) return cps.slice(0, Math.max(0, max)).join('');
  return `${cps.slice(0, max - 1).join('')}…`;
}

const BAR = 20;
const MIN_BAR = 10;
const MIN_NAME = 8;

/**
 * One progress line at most `width` columns wide (counting code points: a wide
 * character may take two columns). A narrow terminal first shortens the name to
 * 8 characters, then the bar to 10 cells, then drops the bar, then the rate and ETA.
 */
export function formatProgress(p: ProgressView, width = 80): string {
  // The percentage rounds down, so "100%" means every byte is verified.
  const pct = `${Math.floor(fraction(p.done, p.size) * 100)}%`.padStart(3);
  const amount = formatAmount(p.done, p.size);
  const full = `  ${pct}  ${amount}  ${formatBytes(p.rate_bps)}/s  ETA ${formatDuration(p.eta_s)}`;
  const wanted = Math.min([...p.name].length, MIN_NAME);
  const layouts: { bar: number; tail: string }[] = [];
  for (let bar = BAR; bar >= MIN_BAR; bar--) layouts.push({ bar, tail: full });
  layouts.push({ bar: 0, tail: full }, { bar: 0, tail: `  ${pct}  ${amount}` }, { bar: 0, tail: `  ${pct}` });
  const fixed = (l: { bar: number; tail: string }) => (l.bar ? 2 + l.bar + 2 : 0) + l.tail.length;
  const layout = layouts.find((l) => width - fixed(l) >= wanted) ?? layouts[layouts.length - 1];
  const name = fit(p.name, Math.max(1, width - fixed(layout)));
  const line = `${name}${layout.bar ? `  ${formatBar(p.done, p.size, layout.bar)}` : ''}${layout.tail}`;
  return fit(line, Math.max(1, width));
}
