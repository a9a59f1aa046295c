/**
 * What the server monitor shows, as pure functions of ServerSnapshot values and
 * widths: no blessed, no server. gui/server_gui.ts only places these strings.
 *
 * Width rule: every function that takes a width returns lines no wider than it, in
 * terminal cells as blessed counts them (fullUnicode). User text (names, room names,
 * log messages) goes through cleanText() first so it can carry no escape sequence;
 * lines meant for a widget with `tags: true` also go through escapeTags().
 */
import { formatBytes } from '../client/progress';
import { formatLogContext, LOG_LEVEL_RANK, type LogRecord } from '../shared/log';
import type { FileServerStats } from '../server/file_server';
import type { MediaStats } from '../server/media_server';
import type { MonitorRoom, MonitorUser, NetworkConfig, ServerSnapshot } from '../server/stats';

// ------------------------------------------------------------------ text and widths

export const ELLIPSIS = '…';

/**
 * Control characters (C0, DEL, C1) could move the cursor or start an escape sequence;
 * bidi controls reorder what follows; joiners and variation selectors change how wide
 * a terminal draws the previous character behind blessed's back. Emoji drawn two
 * cells wide are not in blessed's wide table, so they would shift the rest of the row:
 * they become '?'.
 */
const STRIP = /[\u0000-\u001f\u007f-\u009f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff\ufff9-\ufffb]/g;
const WIDE_EMOJI = /\p{Emoji_Presentation}/gu;

export function cleanText(s: string): string {
  return s.normalize('NFC').replace(STRIP, '').replace(WIDE_EMOJI, '?');
}

const helpers = require('blessed/lib/helpers') as { escape(s: string): string };

/** blessed's escape: a `{` or `}` in user text must not open a tag in a `tags: true` widget. */
export function escapeTags(s: string): string {
  return helpers.escape(s);
}

/**
 * blessed's own cell widths (combining marks 0, East Asian wide 2): the panels are laid
 * out by blessed, so a width that disagreed with it would misalign the columns.
 */
const unicode = require('blessed/lib/unicode') as { charWidth(s: string, i?: number): number; strWidth(s: string): number };

export function textWidth(s: string): number {
  return /^[\x20-\x7e]*$/.test(s) ? s.length : unicode.strWidth(s);
}

/** Cut to at most `width` cells, ending with "…" when something was cut. */
export function truncate(s: string, width: number): string {
  if (width <= 0) return '';
  if (textWidth(s) <= width) return s;
  let out = '';
  let w = 0;
  for (const ch of s) {
    const cw = unicode.charWidth(ch);
    if (w + cw > width - 1) break;
    out += ch;
    w += cw;
  }
  return out + ELLIPSIS;
}

/** Exactly `width` cells: cut, then padded with spaces. */
export function fit(s: string, width: number, align: 'left' | 'right' = 'left'): string {
  const t = truncate(s, width);
  const pad = ' '.repeat(Math.max(0, width - textWidth(t)));
  return align === 'left' ? t + pad : pad + t;
}

// ------------------------------------------------------------------ numbers

/** "02:03:04", or "1d 02:03:04" from a day on. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const two = (n: number) => String(n).padStart(2, '0');
  const hms = `${two(Math.floor((s % 86400) / 3600))}:${two(Math.floor((s % 3600) / 60))}:${two(s % 60)}`;
  return s >= 86400 ? `${Math.floor(s / 86400)}d ${hms}` : hms;
}

/** 3 significant digits at most: 999, 1.2 k, 12.3 k, 123 k ... (decimal prefixes). */
function scaled(n: number, units: readonly string[], sep: string): string {
  let v = Math.max(0, n);
  let i = 0;
  while (v >= 999.5 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 || v >= 99.95 ? 0 : 1)}${sep}${units[i]}`;
}

/** The CLI's transfer figures (client/progress.ts), so both read alike. */
export { formatBytes };
export function formatByteRate(bytesPerSecond: number): string {
  return formatBytes(bytesPerSecond) + '/s';
}
export function formatBitRate(bitsPerSecond: number): string {
  return scaled(bitsPerSecond, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'], ' ');
}
/** Short axis label: "850k", "1.2M". */
export function formatCompactBits(bitsPerSecond: number): string {
  return scaled(bitsPerSecond, ['', 'k', 'M', 'G'], '');
}

// ------------------------------------------------------------------ rates

export interface Rates {
  /** Seconds between the two snapshots. */
  interval_s: number;
  msgs_in: number;
  msgs_out: number;
  media_in_kbps: number;
  media_out_kbps: number;
  /** Packets the relay dropped, every reason, receiver queue drops included. */
  dropped_per_s: number;
  file_in_Bps: number;
  file_out_Bps: number;
}

export function totalDropped(media: MediaStats): number {
  return Object.values(media.totals.dropped).reduce((a, b) => a + b, 0) + media.totals.receiver_drops;
}

/** Rates between two successive snapshots; a counter that went down (a restart) counts as 0. */
export function computeRates(prev: ServerSnapshot, cur: ServerSnapshot): Rates {
  const dt = (cur.time - prev.time) / 1000;
  const per = (a: number, b: number) => (dt > 0 ? Math.max(0, b - a) / dt : 0);
  return {
    interval_s: Math.max(0, dt),
    msgs_in: per(prev.control.messagesIn, cur.control.messagesIn),
    msgs_out: per(prev.control.messagesOut, cur.control.messagesOut),
    media_in_kbps: (per(prev.media.totals.bytes_in, cur.media.totals.bytes_in) * 8) / 1000,
    media_out_kbps: (per(prev.media.totals.bytes_out, cur.media.totals.bytes_out) * 8) / 1000,
    dropped_per_s: per(totalDropped(prev.media), totalDropped(cur.media)),
    file_in_Bps: per(prev.files.counters.bytes_in, cur.files.counters.bytes_in),
    file_out_Bps: per(prev.files.counters.bytes_out, cur.files.counters.bytes_out),
  };
}

/** The worst loss any receiver reports about any stream, in percent. */
export function worstLoss(media: MediaStats): { percent: number; username: string; kind: string } | null {
  let worst: { percent: number; username: string; kind: string } | null = null;
  for (const p of media.participants) {
    for (const [kind, agg] of Object.entries(p.reports)) {
      if (!agg) continue;
      const percent = agg.lossMaxBp / 100;
      if (!worst || percent > worst.percent) worst = { percent, username: p.username, kind };
    }
  }
  return worst;
}

// ------------------------------------------------------------------ ring buffer and graph

/** A bounded FIFO: pushing beyond capacity forgets the oldest item. */
export class RingBuffer<T> {
  private readonly items: T[] = [];
  private start = 0;
  /** Items ever pushed: gives each item a stable absolute index. */
  total = 0;

  constructor(readonly capacity: number) {
    if (!(capacity >= 1)) throw new RangeError('capacity must be at least 1');
  }
  get length(): number {
    return this.items.length;
  }
  push(item: T): void {
    if (this.items.length < this.capacity) this.items.push(item);
    else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
    }
    this.total++;
  }
  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }
  /** Absolute index of toArray()[0]. */
  get firstIndex(): number {
    return this.total - this.items.length;
  }
}

/** 5 minutes of bandwidth at one sample a second. */
export const BANDWIDTH_SAMPLES = 300;

const BLOCKS = '▁▂▃▄▅▆▇█';

export interface GraphOptions {
  /** Axis label of a value (default: String). */
  label?: (v: number) => string;
  /** Samples per column (averaged); columns hold samples whose absolute index / bucket is equal. */
  bucket?: number;
  /** Absolute index of samples[0], so buckets do not shift as samples arrive. */
  firstIndex?: number;
}

/**
 * A bar graph of the newest samples, newest on the right: exactly `height` rows of
 * exactly `width` cells. The left column holds the y axis: the max at the top, 0 at the
 * bottom. The tallest column reaches the top row with a full block.
 */
export function renderGraph(samples: readonly number[], width: number, height: number, opts: GraphOptions = {}): string[] {
  if (width <= 0 || height <= 0) return Array.from({ length: Math.max(0, height) }, () => '');
  const bucket = Math.max(1, Math.floor(opts.bucket ?? 1));
  const first = opts.firstIndex ?? 0;
  const cols: number[] = [];
  let curKey: number | null = null;
  let sum = 0;
  let n = 0;
  samples.forEach((v, i) => {
    const key = Math.floor((first + i) / bucket);
    if (curKey !== null && key !== curKey) {
      cols.push(sum / n);
      sum = 0;
      n = 0;
    }
    curKey = key;
    sum += Number.isFinite(v) ? Math.max(0, v) : 0;
    n++;
  });
  if (n > 0) cols.push(sum / n);

  const max = cols.reduce((a, b) => Math.max(a, b), 0);
  const label = opts.label ?? String;
  const top = label(max);
  const labelWidth = Math.max(textWidth(top), 1) + 1;
  const withAxis = width - labelWidth >= 4;
  const plotW = withAxis ? width - labelWidth : width;
  const shown = cols.slice(-plotW);
  const rows: string[] = [];
  for (let r = height - 1; r >= 0; r--) {
    let line = '';
    for (let c = 0; c < plotW - shown.length; c++) line += ' ';
    for (const v of shown) {
      // In eighths of a row; anything above zero shows at least the lowest block.
      let h = max > 0 ? Math.round((v / max) * height * 8) : 0;
      if (v > 0 && h === 0) h = 1;
      const level = Math.min(8, Math.max(0, h - r * 8));
      line += level === 0 ? ' ' : BLOCKS[level - 1];
    }
    if (withAxis) {
      const text = r === height - 1 ? top : r === 0 ? '0' : '';
      const tick = r === height - 1 || r === 0 ? '┤' : '│';
      line = fit(text, labelWidth - 1, 'right') + tick + line;
    }
    rows.push(line);
  }
  return rows;
}

// ------------------------------------------------------------------ tables

export interface Column {
  title: string;
  /** Narrowest useful width; a column that cannot get it is dropped. */
  min: number;
  max?: number;
  /** Share of the spare width (0: never wider than its content). */
  weight?: number;
  /** Columns with a higher value are dropped first when the width is too small; 0 never. */
  drop?: number;
  align?: 'left' | 'right';
}

export interface Table {
  header: string;
  rows: string[];
}

/** Widths of the kept columns (null for a dropped one). One space between columns. */
export function layoutColumns(columns: readonly Column[], cells: readonly string[][], width: number): (number | null)[] {
  const content = columns.map((c, i) => {
    const w = Math.max(textWidth(c.title), ...cells.map((row) => textWidth(row[i] ?? '')));
    return Math.max(c.min, Math.min(w, c.max ?? Infinity));
  });
  const kept = columns.map(() => true);
  const need = () => columns.reduce((s, c, i) => s + (kept[i] ? c.min + 1 : 0), -1);
  while (need() > width) {
    let worst = -1;
    columns.forEach((c, i) => {
      if (kept[i] && (c.drop ?? 0) > 0 && (worst < 0 || (c.drop ?? 0) > (columns[worst].drop ?? 0))) worst = i;
    });
    if (worst < 0) break;
    kept[worst] = false;
  }
  const widths = columns.map((c, i) => (kept[i] ? c.min : 0));
  let spare = width - need();
  // Grow each column towards its content, wider ones by their weight; spare beyond
  // the content is left at the right rather than padding the cells.
  let grew = true;
  while (spare > 0 && grew) {
    grew = false;
    for (let i = 0; i < columns.length && spare > 0; i++) {
      if (!kept[i] || widths[i] >= content[i]) continue;
      const add = Math.min(Math.max(1, columns[i].weight ?? 0), spare, content[i] - widths[i]);
      widths[i] += add;
      spare -= add;
      grew = true;
    }
  }
  return widths.map((w, i) => (kept[i] ? w : null));
}

export function formatTable(columns: readonly Column[], cells: readonly string[][], width: number): Table {
  const widths = layoutColumns(columns, cells, width);
  const line = (row: readonly string[]) =>
    truncate(
      columns
        .map((c, i) => (widths[i] === null ? null : fit(row[i] ?? '', widths[i]!, c.align)))
        .filter((s): s is string => s !== null)
        .join(' ')
        .trimEnd(),
      width,
    );
  return { header: line(columns.map((c) => c.title)), rows: cells.map(line) };
}

const on = (b: boolean, yes = 'on', no = '-') => (b ? yes : no);

export function userFlags(u: MonitorUser): string {
  const flags: string[] = [];
  if (u.is_admin) flags.push('admin');
  if (u.is_muted_by_host) flags.push('host-muted');
  if (u.is_reconnecting) flags.push('reconnecting');
  else if (!u.is_online) flags.push('offline');
  return flags.join(',');
}

/**
 * Loss receivers report about each stream a user sends, worst receiver per stream:
 * "v0.5 a2.0" (video, audio, screen); "" when nobody has reported.
 */
export function streamLoss(media: MediaStats | undefined, userId: string): string {
  const p = media?.participants.find((x) => x.user_id === userId);
  if (!p) return '';
  return Object.entries(p.reports)
    .filter(([, agg]) => agg && agg.receivers > 0)
    .map(([kind, agg]) => `${kind[0]}${(agg!.lossMaxBp / 100).toFixed(1)}`)
    .join(' ');
}

export function formatUsersTable(users: readonly MonitorUser[], width: number, media?: MediaStats): Table {
  const columns: Column[] = [
    { title: 'name', min: 6, max: 32, weight: 3 },
    { title: 'room', min: 4, max: 32, weight: 2, drop: 3 },
    { title: 'role', min: 4, drop: 4 },
    { title: 'mic', min: 3, drop: 2 },
    { title: 'cam', min: 3, drop: 5 },
    { title: 'scr', min: 3, drop: 6 },
    { title: 'hand', min: 4, drop: 7 },
    { title: 'flags', min: 5, max: 40, weight: 1, drop: 1 },
    { title: 'loss%', min: 5, max: 20, drop: 8 },
  ];
  const cells = users.map((u) => [
    cleanText(u.username),
    u.room_name === null ? '-' : cleanText(u.room_name),
    u.role === 'participant' ? 'part' : u.role === 'moderator' ? 'mod' : (u.role ?? '-'),
    u.is_muted ? 'off' : on(u.is_audio_enabled),
    on(u.is_video_enabled),
    on(u.is_screen_sharing),
    on(u.hand_raised, 'up'),
    userFlags(u),
    streamLoss(media, u.user_id) || '-',
  ]);
  return formatTable(columns, cells, width);
}

export function formatRoomsTable(rooms: readonly MonitorRoom[], width: number): Table {
  const columns: Column[] = [
    { title: 'name', min: 6, max: 40, weight: 3 },
    { title: 'users', min: 5, align: 'right' },
    { title: 'priv', min: 4, drop: 3 },
    { title: 'lock', min: 4, drop: 1 },
    { title: 'rec', min: 3, drop: 4 },
    { title: 'host', min: 4, max: 32, weight: 1, drop: 2 },
  ];
  const cells = rooms.map((r) => [
    cleanText(r.room_name),
    `${r.participant_count}/${r.max_participants}`,
    on(r.is_private, 'yes'),
    on(r.is_locked, 'yes'),
    on(r.is_recording, 'yes'),
    r.host_name === null ? '-' : cleanText(r.host_name),
  ]);
  return formatTable(columns, cells, width);
}

/** Transfers under way, at most `maxLines` lines, "none" when there are none. */
export function formatTransfers(files: FileServerStats, width: number, maxLines: number): string[] {
  if (maxLines <= 0) return [];
  if (files.transfers.length === 0) return [truncate('none', width)];
  const columns: Column[] = [
    { title: 'file', min: 6, max: 40, weight: 2 },
    { title: 'user', min: 4, max: 32, weight: 1, drop: 2 },
    { title: 'op', min: 4, drop: 3 },
    { title: '%', min: 4, align: 'right' },
    { title: 'rate', min: 9, align: 'right', drop: 1 },
  ];
  const cells = files.transfers.map((t) => [
    cleanText(t.name),
    cleanText(t.user),
    t.op === 'upload' ? 'up' : 'down',
    `${t.size > 0 ? Math.floor((100 * t.done_bytes) / t.size) : 100}%`,
    formatByteRate(t.rate_bps),
  ]);
  const table = formatTable(columns, cells, width);
  const body = maxLines - 1;
  if (table.rows.length <= body) return [table.header, ...table.rows];
  if (body <= 0) return [truncate(`${table.rows.length} transfers`, width)];
  return [table.header, ...table.rows.slice(0, body - 1), truncate(`+${table.rows.length - (body - 1)} more`, width)];
}

/** The text of the traffic panel above the graph. */
export function formatTrafficLines(snap: ServerSnapshot, rates: Rates | null, width: number): string[] {
  const r = rates ?? computeRates(snap, snap);
  const num = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const loss = worstLoss(snap.media);
  const lines = [
    `in  ${num(r.msgs_in)} msg/s  ${formatBitRate(r.media_in_kbps * 1000)}  files ${formatByteRate(r.file_in_Bps)}`,
    `out ${num(r.msgs_out)} msg/s  ${formatBitRate(r.media_out_kbps * 1000)}  files ${formatByteRate(r.file_out_Bps)}`,
    `dropped ${num(r.dropped_per_s)}/s (${totalDropped(snap.media)})  worst loss ` +
      (loss ? `${loss.percent.toFixed(1)}% ${cleanText(loss.username)} ${loss.kind}` : '-'),
  ];
  return lines.map((l) => truncate(l, width));
}

// ------------------------------------------------------------------ header and footer

const STATE_COLOUR: Record<string, string> = {
  running: 'green',
  starting: 'yellow',
  stopping: 'yellow',
  stopped: 'red',
  closed: 'gray',
};

/** A piece of a tagged line: `text` is plain (it is escaped here), `style` a blessed tag like "green-fg". */
export interface Segment {
  text: string;
  style?: string;
}

/** Segments cut to `width` plain cells, as a `tags: true` line with the text escaped. */
export function renderSegments(segments: readonly Segment[], width: number): string {
  let left = width;
  let out = '';
  for (const s of segments) {
    if (left <= 0) break;
    const text = truncate(s.text, left);
    left -= textWidth(text);
    out += s.style ? `{${s.style}}${escapeTags(text)}{/${s.style}}` : escapeTags(text);
  }
  return out;
}

/** A tagged line's plain text, as blessed shows it. */
export function stripTags(line: string): string {
  return line.replace(/\{(\/?[\w\-,;!#]*)\}/g, (m, tag: string) => (tag === 'open' ? '{' : tag === 'close' ? '}' : ''));
}

/** Three tagged lines: who and how long; where it listens; where clients connect (or why it is stopped). */
export function formatHeaderLines(snap: ServerSnapshot, width: number): string[] {
  const st = snap.status;
  const b = st.bound;
  const net = st.network;
  const line1: Segment[] = [
    { text: cleanText(st.server_name), style: 'bold' },
    { text: '  ' },
    { text: st.state, style: `${STATE_COLOUR[st.state] ?? 'white'}-fg` },
    { text: `  up ${formatDuration(st.uptime_s)}  users ${snap.users.length}  rooms ${snap.rooms.length}` },
  ];
  const ports = b
    ? `control ${net.host}:${b.control}  media udp v${b.video} a${b.audio} s${b.screen} fb${b.feedback}  files tcp ${b.file}`
    : `control ${net.host}:${net.port}  media udp v${net.videoPort} a${net.audioPort} s${net.screenPort} fb${net.feedbackPort}  files tcp ${net.filePort} (configured)`;
  let line3: Segment[];
  if (st.state === 'running' && b) {
    line3 = [{ text: `clients connect to: ${st.lan_addresses.map((a) => `${a}:${b.control}`).join('  ')}`, style: 'cyan-fg' }];
  } else if (st.last_error) {
    line3 = [{ text: `error: ${cleanText(st.last_error.message)} — ${cleanText(st.last_error.hint)}`, style: 'red-fg' }];
  } else {
    line3 = [{ text: st.state === 'stopped' ? 'listeners stopped: press s to start them' : `${st.state}…` }];
  }
  return [renderSegments(line1, width), renderSegments([{ text: ports }], width), renderSegments(line3, width)];
}

const FOOTER_KEYS = [
  'Tab panel  ↑↓ select  k kick  m mute  l lock  s stop/start  c config  / filter  v level  r rec  ? help  q quit',
  'Tab ↑↓  k kick  m mute  l lock  s stop/start  c config  / filter  v level  ? help  q quit',
  'Tab ↑↓ k kick m mute l lock s stop c cfg / filter v level ? help q quit',
];

/** The widest key list that fits. */
export function footerKeys(width: number): string {
  return truncate(FOOTER_KEYS.find((k) => textWidth(k) <= width) ?? FOOTER_KEYS[FOOTER_KEYS.length - 1], width);
}

// ------------------------------------------------------------------ log

export const LOG_FILTER_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogFilterLevel = (typeof LOG_FILTER_LEVELS)[number];

export function nextLogLevel(l: LogFilterLevel): LogFilterLevel {
  return LOG_FILTER_LEVELS[(LOG_FILTER_LEVELS.indexOf(l) + 1) % LOG_FILTER_LEVELS.length];
}

/**
 * One panel line: local time, level, message, then context (the log file has the
 * context first; in a narrow panel the message matters more). Control characters removed.
 */
export function formatLogLine(r: LogRecord, width = Infinity): string {
  const d = new Date(r.time);
  const two = (n: number) => String(n).padStart(2, '0');
  const ctx = formatLogContext(r.context);
  const text = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${r.level.toUpperCase().padEnd(5)} ${r.message}${ctx ? ' ' : ''}${ctx}`;
  return truncate(cleanText(text), width);
}

/** At least `level`, and containing `text` (case-insensitive) in the line as shown. */
export function logMatches(r: LogRecord, level: LogFilterLevel, text: string): boolean {
  if (LOG_LEVEL_RANK[r.level] < LOG_LEVEL_RANK[level]) return false;
  return text === '' || formatLogLine(r).toLowerCase().includes(text.toLowerCase());
}

export class LogBuffer {
  private readonly ring: RingBuffer<LogRecord>;
  constructor(capacity = 2000) {
    this.ring = new RingBuffer(capacity);
  }
  get length(): number {
    return this.ring.length;
  }
  push(r: LogRecord): void {
    this.ring.push(r);
  }
  filter(level: LogFilterLevel, text = ''): LogRecord[] {
    return this.ring.toArray().filter((r) => logMatches(r, level, text));
  }
}

/** The slice of `total` lines a panel of `height` rows shows, `offset` lines up from the bottom (clamped). */
export function logWindow(total: number, height: number, offset: number): { start: number; end: number; offset: number } {
  const maxOffset = Math.max(0, total - height);
  const o = Math.min(Math.max(0, Math.floor(offset)), maxOffset);
  const end = total - o;
  return { start: Math.max(0, end - height), end, offset: o };
}

// ------------------------------------------------------------------ layout

export interface Rect {
  top: number;
  left: number;
  width: number;
  height: number;
}
export interface Layout {
  header: Rect;
  users: Rect;
  rooms: Rect;
  traffic: Rect;
  transfers: Rect;
  log: Rect;
  footer: Rect;
}

export const HEADER_ROWS = 3;

/**
 * Header, two rows of two panels (Users | Rooms, Traffic | Transfers), the log and a
 * footer, tiling the screen exactly. The left column is a bit wider: the users table
 * has the most columns.
 */
export function computeLayout(cols: number, rows: number): Layout {
  const width = Math.max(20, cols);
  const height = Math.max(HEADER_ROWS + 1 + 9, rows);
  const body = height - HEADER_ROWS - 1;
  const log = Math.max(3, Math.round(body * 0.3));
  const a = Math.max(3, Math.floor((body - log) / 2));
  const b = body - log - a;
  const leftW = Math.max(10, Math.round(width * 0.58));
  const rightW = width - leftW;
  const r = (top: number, left: number, w: number, h: number): Rect => ({ top, left, width: w, height: h });
  return {
    header: r(0, 0, width, HEADER_ROWS),
    users: r(HEADER_ROWS, 0, leftW, a),
    rooms: r(HEADER_ROWS, leftW, rightW, a),
    traffic: r(HEADER_ROWS + a, 0, leftW, b),
    transfers: r(HEADER_ROWS + a, leftW, rightW, b),
    log: r(HEADER_ROWS + a + b, 0, width, log),
    footer: r(height - 1, 0, width, 1),
  };
}

// ------------------------------------------------------------------ config form and errors

export const NETWORK_FIELDS: readonly { key: keyof NetworkConfig; label: string }[] = [
  { key: 'host', label: 'host' },
  { key: 'port', label: 'control port' },
  { key: 'videoPort', label: 'video port' },
  { key: 'audioPort', label: 'audio port' },
  { key: 'screenPort', label: 'screen port' },
  { key: 'feedbackPort', label: 'feedback port' },
  { key: 'filePort', label: 'file port' },
];

/**
 * The fields that differ from `current`. Only the shape is checked here (a port is a
 * whole number); ranges and host validity are the server's to judge in reconfigure().
 */
export function parseNetworkForm(
  values: Partial<Record<keyof NetworkConfig, string>>,
  current: NetworkConfig,
): { changes: Partial<NetworkConfig> } | { error: string } {
  const changes: Partial<NetworkConfig> = {};
  for (const { key, label } of NETWORK_FIELDS) {
    const raw = (values[key] ?? String(current[key])).trim();
    if (key === 'host') {
      if (raw === '') return { error: 'host: must not be empty (0.0.0.0 listens on every interface)' };
      if (raw !== current.host) changes.host = raw;
      continue;
    }
    if (!/^\d+$/.test(raw)) return { error: `${label}: "${cleanText(raw)}" is not a port number (0-65535, 0 picks a free port)` };
    const n = Number(raw);
    if (n !== current[key]) changes[key] = n;
  }
  return { changes };
}

/** One line for the status bar: the message, and the hint of a ProtocolError or listen error. */
export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const hint = (e as { hint?: unknown }).hint;
    return cleanText(typeof hint === 'string' && hint ? `${e.message} — ${hint}` : e.message);
  }
  return cleanText(String(e));
}
