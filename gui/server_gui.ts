/**
 * The terminal monitor of the server (`run_server.ts --monitor`): a blessed dashboard
 * of users, rooms, traffic, transfers and the log, with the operator's actions.
 *
 * It reads only `server.snapshot()` and the server's events (stats.ts, the observer
 * API) and acts only through consoleAction / stopListeners / startListeners /
 * reconfigure / close. What is shown comes from gui/monitor_view.ts; this file
 * places it and routes keys. All keys go through one handler so that an open modal
 * (question, form, prompt, help) can swallow them: blessed's own key bindings would
 * fire behind its back.
 */
import fs from 'node:fs';
import path from 'node:path';
import blessed from 'blessed';
import type { Server } from '../server/main_server';
import type { ConsoleAction, NetworkConfig, ServerSnapshot } from '../server/stats';
import { LOG_LEVEL_RANK as LOG_RANK, stderrSink, type LogLevel } from '../shared/log';
import {
  BANDWIDTH_SAMPLES,
  cleanText,
  computeLayout,
  computeRates,
  describeError,
  escapeTags,
  fit,
  footerKeys,
  formatCompactBits,
  formatHeaderLines,
  formatLogLine,
  formatRoomsTable,
  formatTrafficLines,
  formatTransfers,
  formatUsersTable,
  LOG_FILTER_LEVELS,
  LogBuffer,
  logMatches,
  logWindow,
  NETWORK_FIELDS,
  nextLogLevel,
  parseNetworkForm,
  renderGraph,
  RingBuffer,
  textWidth,
  truncate,
  type Layout,
  type LogFilterLevel,
  type Rates,
  type Rect,
} from './monitor_view';

type Box = blessed.Widgets.BoxElement;
type List = blessed.Widgets.ListElement & { selected: number };
type Key = blessed.Widgets.Events.IKeyEventArg;

export interface ServerMonitorOptions {
  server: Server;
  /** Every log line is appended here while the monitor owns the terminal. */
  logFile: string;
  input?: NodeJS.ReadStream;
  output?: NodeJS.WriteStream;
  /** How often the snapshot is taken and the rates computed (ms). */
  refreshMs?: number;
  title?: string;
}

type Panel = 'users' | 'rooms' | 'log';
const PANELS: readonly Panel[] = ['users', 'rooms', 'log'];

interface Modal {
  onKey(ch: string | undefined, key: Key): void;
  element: Box;
}

/**
 * Every line is cut to its width before it gets here; blessed's own wrapping would
 * push a full-width line with colour tags onto a next, hidden, row.
 */
function box(opts: blessed.Widgets.BoxOptions): Box {
  return blessed.box({ wrap: false, ...opts } as blessed.Widgets.BoxOptions);
}

const NOTICE_MS = 6000;
/** Events arrive in bursts (a room emptying): one redraw for the burst. */
const EVENT_DEBOUNCE_MS = 100;
const RECORDING_NOTICE = 'Recording is not available in this version of the server';
const KICK_REASON = 'Removed by the server operator';

const HELP = [
  'Tab / Shift-Tab   focus Users, Rooms, Log',
  '↑ ↓               move the selection (PageUp/PageDown in the log)',
  'k                 kick the selected user (asks first)',
  'm                 host-mute / unmute the selected user',
  'l                 lock / unlock the selected room',
  'r                 recording (not in this version)',
  's                 stop / start the listeners',
  'c                 change host and ports',
  '/                 filter the log by text (empty clears)',
  'v                 log level: debug, info, warn, error',
  '?                 this help (Esc or ? closes)',
  'Ctrl+L            redraw the screen',
  'q / Ctrl+C        close the server and quit',
];

export class ServerMonitor {
  readonly done: Promise<number>;
  private resolveDone!: (code: number) => void;
  private readonly opts: ServerMonitorOptions;
  private readonly server: Server;
  private readonly refreshMs: number;
  private readonly title: string;

  private screen: blessed.Widgets.Screen | null = null;
  private ui!: {
    header: Box;
    users: Box;
    usersHead: Box;
    usersList: List;
    rooms: Box;
    roomsHead: Box;
    roomsList: List;
    traffic: Box;
    trafficText: Box;
    trafficGraph: Box;
    transfers: Box;
    log: Box;
    footer: Box;
  };
  private layout: Layout | null = null;
  private logStream: fs.WriteStream | null = null;
  private readonly unsubscribe: (() => void)[] = [];
  private tickTimer: NodeJS.Timeout | null = null;
  private eventTimer: NodeJS.Timeout | null = null;
  private logTimer: NodeJS.Timeout | null = null;

  private snap: ServerSnapshot | null = null;
  private lastTick: ServerSnapshot | null = null;
  /** The snapshot the last bandwidth sample was taken from: samples are ~1 s apart whatever refreshMs is. */
  private lastSample: ServerSnapshot | null = null;
  private rates: Rates | null = null;
  private readonly bandwidth = new RingBuffer<number>(BANDWIDTH_SAMPLES);
  private readonly logs = new LogBuffer(2000);
  private logLevel: LogFilterLevel;
  /** The level the server was started with (--log-level), restored when the filter leaves debug. */
  private readonly serverLogLevel: LogLevel;
  private logText = '';
  /** Lines scrolled up from the newest; 0 follows new lines. */
  private logOffset = 0;
  private focus: Panel = 'users';
  private selectedUser: string | null = null;
  private selectedRoom: string | null = null;
  private modal: Modal | null = null;
  private notice: { text: string; error: boolean; until: number } | null = null;
  private quitting = false;
  private finished = false;

  constructor(opts: ServerMonitorOptions) {
    this.server = opts.server;
    this.refreshMs = opts.refreshMs ?? 1000;
    this.title = opts.title ?? 'LAN Video Call server';
    this.opts = opts;
    const level = opts.server.log.level;
    this.serverLogLevel = level;
    this.logLevel = (LOG_FILTER_LEVELS as readonly string[]).includes(level) ? (level as LogFilterLevel) : 'info';
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  start(): void {
    if (this.screen || this.finished) return;
    fs.mkdirSync(path.dirname(path.resolve(this.opts.logFile)), { recursive: true });
    this.logStream = fs.createWriteStream(this.opts.logFile, { flags: 'a' });
    this.logStream.on('error', (e) => {
      // The console belongs to the dashboard: say it there, and keep the panel going.
      this.logStream = null;
      this.setNotice(`cannot write the log file ${this.opts.logFile}: ${e.message}`, true);
    });

    // blessed compiles every terminfo capability up front and prints the few newer
    // ones it cannot parse (e.g. Setulc of screen-256color) with console.error, onto
    // the terminal it is about to take over; it skips them and works on. Keep that off the screen.
    const consoleError = console.error;
    console.error = () => undefined;
    let screen: blessed.Widgets.Screen;
    try {
      screen = blessed.screen({
        input: (this.opts.input ?? process.stdin) as never,
        output: (this.opts.output ?? process.stdout) as never,
        terminal: process.env.TERM || 'xterm',
        fullUnicode: true,
        smartCSR: true,
        autoPadding: true,
        warnings: false,
        title: this.title,
      });
    } finally {
      console.error = consoleError;
    }
    this.screen = screen;
    // ACS line drawing turns into "lqqk" where the terminal's alternate charset is not
    // set up (some ssh and mosh sessions, tmux capture-pane); a UTF-8 locale can draw
    // the box characters themselves.
    const tput = (screen.program as unknown as { tput: { unicode: boolean; brokenACS: boolean } }).tput;
    if (tput.unicode) tput.brokenACS = true;
    this.build(screen);

    this.server.log.setSink((record, line) => {
      this.logs.push(record);
      this.logStream?.write(line + '\n');
      // Keep a scrolled-back view still while lines arrive.
      if (this.logOffset > 0 && logMatches(record, this.logLevel, this.logText)) this.logOffset++;
      this.logTimer ??= setTimeout(() => {
        this.logTimer = null;
        this.safely(() => {
          this.renderLog();
          this.screen?.render();
        });
      }, EVENT_DEBOUNCE_MS);
    });

    const soon = () => this.refreshSoon();
    for (const ev of ['user_online', 'user_offline', 'user_update', 'room_update', 'room_removed', 'state'] as const) {
      this.server.on(ev, soon);
      this.unsubscribe.push(() => this.server.off(ev, soon));
    }
    const onClosed = () => {
      if (!this.quitting) void this.quit();
    };
    this.server.on('closed', onClosed);
    this.unsubscribe.push(() => this.server.off('closed', onClosed));

    screen.on('keypress', (ch: string | undefined, key: Key) => this.safely(() => this.onKey(ch, key)));
    // blessed has already re-allocated its buffers for the new size (SIGWINCH); the
    // panels are placed and their text re-cut for it here.
    screen.on('resize', () =>
      this.safely(() => {
        this.applyLayout();
        this.renderAll();
      }),
    );
    this.tickTimer = setInterval(() => this.safely(() => this.tick()), this.refreshMs);
    this.applyLayout();
    this.tick();
  }

  /**
   * Close the server gracefully, then give the terminal back; `done` resolves with 0 (1 if
   * close failed). `terminalGone` after a hangup.
   */
  async quit(opts: { terminalGone?: boolean } = {}): Promise<void> {
    if (this.quitting || this.finished) return;
    this.quitting = true;
    if (opts.terminalGone) {
      // Writes to a hung-up terminal fail (EIO): draw nothing more, just close cleanly.
      (this.opts.output ?? process.stdout).on('error', () => undefined);
      this.modal = null;
    } else this.closeModal();
    if (this.screen && !opts.terminalGone) {
      const bye = box({
        parent: this.screen,
        top: 'center',
        left: 'center',
        width: 24,
        height: 3,
        border: 'line',
        content: ' shutting down…',
        style: { border: { fg: 'yellow' } },
      });
      bye.setFront();
      this.screen.render();
    }
    let code = 0;
    let failure: string | null = null;
    try {
      await this.server.close();
    } catch (e) {
      code = 1;
      failure = describeError(e);
    }
    this.finish(code);
    if (failure) process.stderr.write(`error while shutting down: ${failure}\n`);
  }

  /** Give the terminal and the log back without closing the server (tests). `done` resolves with 0. */
  stop(): void {
    this.finish(0);
  }

  private finish(code: number): void {
    if (this.finished) return;
    this.finished = true;
    for (const t of [this.tickTimer, this.eventTimer, this.logTimer]) if (t) clearTimeout(t);
    this.tickTimer = this.eventTimer = this.logTimer = null;
    for (const off of this.unsubscribe.splice(0)) off();
    try {
      this.screen?.destroy();
    } catch {
      // The terminal may be gone already (hangup); there is nothing left to restore.
    }
    this.screen = null;
    this.server.log.setSink(stderrSink);
    this.server.log.level = this.serverLogLevel;
    // run_server.ts exits as soon as `done` resolves: the last lines must be on disk first.
    const stream = this.logStream;
    this.logStream = null;
    if (stream) stream.end(() => this.resolveDone(code));
    else this.resolveDone(code);
  }

  /** A drawing bug must not take the server down with it: it becomes a notice. */
  private safely(fn: () => void): void {
    if (this.finished) return;
    try {
      fn();
    } catch (e) {
      this.logStream?.write(`monitor error: ${e instanceof Error ? e.stack : String(e)}\n`);
      this.notice = { text: `monitor error: ${describeError(e)}`, error: true, until: Date.now() + NOTICE_MS };
    }
  }

  // ---------------------------------------------------------------- widgets

  private build(screen: blessed.Widgets.Screen): void {
    const panel = (label: string, tags = false): Box =>
      box({ parent: screen, label: ` ${label} `, border: 'line', tags, style: { border: { fg: 'white' } } });
    const list = (parent: Box): List =>
      blessed.list({
        parent,
        top: 1,
        left: 0,
        right: 0,
        bottom: 0,
        keys: false,
        mouse: false,
        tags: false,
        style: { selected: { inverse: true } },
      }) as List;
    const users = panel('Users');
    const rooms = panel('Rooms');
    const traffic = panel('Traffic');
    this.ui = {
      header: box({ parent: screen, tags: true }),
      users,
      usersHead: box({ parent: users, top: 0, left: 0, right: 0, height: 1, style: { bold: true } }),
      usersList: list(users),
      rooms,
      roomsHead: box({ parent: rooms, top: 0, left: 0, right: 0, height: 1, style: { bold: true } }),
      roomsList: list(rooms),
      traffic,
      trafficText: box({ parent: traffic, top: 0, left: 0, right: 0, height: 3 }),
      trafficGraph: box({ parent: traffic, top: 3, left: 0, right: 0, bottom: 0, style: { fg: 'green' } }),
      transfers: panel('Transfers'),
      log: panel('Log'),
      footer: box({ parent: screen, tags: true }),
    };
  }

  private applyLayout(): void {
    if (!this.screen) return;
    this.layout = computeLayout(this.screen.width as number, this.screen.height as number);
    const place = (el: Box, r: Rect) => {
      el.top = r.top;
      el.left = r.left;
      el.width = r.width;
      el.height = r.height;
    };
    const { ui, layout } = this;
    place(ui.header, layout.header);
    place(ui.users, layout.users);
    place(ui.rooms, layout.rooms);
    place(ui.traffic, layout.traffic);
    place(ui.transfers, layout.transfers);
    place(ui.log, layout.log);
    place(ui.footer, layout.footer);
  }

  // ---------------------------------------------------------------- refresh

  private takeSnapshot(): ServerSnapshot | null {
    try {
      this.snap = this.server.snapshot();
    } catch (e) {
      this.setNotice(`snapshot failed: ${describeError(e)}`, true);
    }
    return this.snap;
  }

  private tick(): void {
    const s = this.takeSnapshot();
    if (!s) return;
    if (this.lastTick && this.lastTick !== s) this.rates = computeRates(this.lastTick, s);
    this.lastTick = s;
    if (!this.lastSample) this.lastSample = s;
    else if (s.time - this.lastSample.time >= 950) {
      const r = computeRates(this.lastSample, s);
      this.bandwidth.push((r.media_in_kbps + r.media_out_kbps) * 1000);
      this.lastSample = s;
    }
    this.renderAll();
  }

  /** An event: redraw from a fresh snapshot soon; rates stay those of the last tick. */
  private refreshSoon(): void {
    if (this.eventTimer || this.finished) return;
    this.eventTimer = setTimeout(() => {
      this.eventTimer = null;
      this.safely(() => {
        this.takeSnapshot();
        this.renderAll();
      });
    }, EVENT_DEBOUNCE_MS);
  }

  private renderAll(): void {
    if (!this.screen || !this.layout) return;
    if (this.snap) {
      this.renderHeader(this.snap);
      this.renderUsers(this.snap);
      this.renderRooms(this.snap);
      this.renderTraffic(this.snap);
      this.renderTransfers(this.snap);
    }
    this.renderLog();
    this.renderFooter();
    this.renderFocus();
    this.screen.render();
  }

  private inner(r: Rect): { w: number; h: number } {
    return { w: Math.max(0, r.width - 2), h: Math.max(0, r.height - 2) };
  }

  private renderHeader(s: ServerSnapshot): void {
    this.ui.header.setContent(formatHeaderLines(s, this.layout!.header.width).join('\n'));
  }

  private renderUsers(s: ServerSnapshot): void {
    const { w } = this.inner(this.layout!.users);
    const table = formatUsersTable(s.users, w, s.media);
    this.ui.users.setLabel(` Users (${s.users.length}) `);
    this.ui.usersHead.setContent(table.header);
    this.selectedUser = this.fillList(this.ui.usersList, table.rows, s.users.map((u) => u.user_id), this.selectedUser, 'no users connected', w);
  }

  private renderRooms(s: ServerSnapshot): void {
    const { w } = this.inner(this.layout!.rooms);
    const table = formatRoomsTable(s.rooms, w);
    this.ui.rooms.setLabel(` Rooms (${s.rooms.length}) `);
    this.ui.roomsHead.setContent(table.header);
    this.selectedRoom = this.fillList(this.ui.roomsList, table.rows, s.rooms.map((r) => r.room_id), this.selectedRoom, 'no rooms', w);
  }

  /** Sets the rows and keeps the same item selected by id (or the same position if it left). */
  private fillList(list: List, rows: string[], ids: string[], selected: string | null, empty: string, w: number): string | null {
    const previous = list.selected ?? 0;
    list.setItems(rows.length ? rows : [truncate(`(${empty})`, w)]);
    if (!ids.length) return null;
    let i = selected === null ? -1 : ids.indexOf(selected);
    if (i < 0) i = Math.min(previous, ids.length - 1);
    list.select(i);
    return ids[i];
  }

  private renderTraffic(s: ServerSnapshot): void {
    const { w, h } = this.inner(this.layout!.traffic);
    const text = formatTrafficLines(s, this.rates, w).slice(0, Math.max(1, h - 2));
    const graphH = Math.max(0, h - text.length);
    const minutes = Math.round((BANDWIDTH_SAMPLES / 60) * 10) / 10;
    this.ui.traffic.setLabel(truncate(` Traffic · graph: media in+out, ${minutes} min `, Math.max(0, w - 2)));
    this.ui.trafficText.height = text.length;
    this.ui.trafficText.setContent(text.join('\n'));
    this.ui.trafficGraph.top = text.length;
    const graph = renderGraph(this.bandwidth.toArray(), w, graphH, {
      label: formatCompactBits,
      // Spread the whole history over the plot (the axis label takes ~6 cells).
      bucket: Math.ceil(BANDWIDTH_SAMPLES / Math.max(1, w - 6)),
      firstIndex: this.bandwidth.firstIndex,
    });
    this.ui.trafficGraph.setContent(graph.join('\n'));
  }

  private renderTransfers(s: ServerSnapshot): void {
    const { w, h } = this.inner(this.layout!.transfers);
    this.ui.transfers.setLabel(` Transfers (${s.files.transfers.length}) `);
    this.ui.transfers.setContent(formatTransfers(s.files, w, h).join('\n'));
  }

  private renderLog(): void {
    if (!this.layout) return;
    const { w, h } = this.inner(this.layout.log);
    const records = this.logs.filter(this.logLevel, this.logText);
    const win = logWindow(records.length, h, this.logOffset);
    this.logOffset = win.offset;
    const label =
      ` Log ≥${this.logLevel}` +
      (this.logText ? ` filter "${this.logText}"` : '') +
      (win.offset ? ` ↑${win.offset} (PageDown)` : '') +
      ' ';
    this.ui.log.setLabel(truncate(label, Math.max(0, w - 2)));
    this.ui.log.setContent(
      records
        .slice(win.start, win.end)
        .map((r) => formatLogLine(r, w))
        .join('\n'),
    );
  }

  private renderFooter(): void {
    const w = this.layout!.footer.width;
    if (this.notice && this.notice.until < Date.now()) this.notice = null;
    const n = this.notice;
    this.ui.footer.setContent(
      n ? `{${n.error ? 'red' : 'green'}-fg}${escapeTags(truncate(n.text, w))}{/}` : escapeTags(footerKeys(w)),
    );
  }

  private renderFocus(): void {
    const boxes: Record<Panel, Box> = { users: this.ui.users, rooms: this.ui.rooms, log: this.ui.log };
    for (const p of PANELS) {
      const style = boxes[p].style as { border: { fg: string; bold?: boolean } };
      style.border.fg = p === this.focus ? 'cyan' : 'white';
    }
  }

  private setNotice(text: string, error = false): void {
    this.notice = { text: cleanText(text), error, until: Date.now() + NOTICE_MS };
    if (this.screen && this.layout) {
      this.renderFooter();
      this.screen.render();
    }
  }

  // ---------------------------------------------------------------- keys

  private onKey(ch: string | undefined, key: Key): void {
    if (this.finished || !key) return;
    if (this.quitting) {
      // A second Ctrl+C while closing: the operator does not want to wait.
      if (key.full === 'C-c') this.finish(1);
      return;
    }
    // Ctrl+C never reaches the process as SIGINT in raw mode: it quits from anywhere,
    // an open question or a busy form included.
    if (key.full === 'C-c') {
      void this.quit();
      return;
    }
    if (this.modal) {
      this.modal.onKey(ch, key);
      return;
    }
    switch (key.full) {
      case 'tab':
      case 'S-tab': {
        const i = PANELS.indexOf(this.focus) + (key.full === 'tab' ? 1 : PANELS.length - 1);
        this.focus = PANELS[i % PANELS.length];
        this.renderAll();
        return;
      }
      case 'up':
      case 'down':
      case 'pageup':
      case 'pagedown':
        return this.move(key.full);
      case 'k':
        return this.askKick();
      case 'm':
        return this.toggleMute();
      case 'l':
        return this.toggleLock();
      case 'r':
        return this.setNotice(RECORDING_NOTICE);
      case 's':
        return this.stopOrStart();
      case 'c':
        return this.openConfigForm();
      case '/':
        return this.openFilterPrompt();
      case 'v':
        this.logLevel = nextLogLevel(this.logLevel);
        // debug lines exist only if the server writes them: it does while the filter asks.
        this.server.log.level = LOG_RANK[this.logLevel] < LOG_RANK[this.serverLogLevel] ? this.logLevel : this.serverLogLevel;
        this.logOffset = 0;
        this.renderAll();
        return;
      case '?':
        return this.openHelp();
      case 'q':
      case 'C-c':
        void this.quit();
        return;
      case 'C-l':
        this.screen?.realloc();
        this.renderAll();
        return;
    }
  }

  private move(k: string): void {
    if (this.focus === 'log') {
      const page = Math.max(1, this.inner(this.layout!.log).h - 1);
      const by = k === 'up' ? 1 : k === 'down' ? -1 : k === 'pageup' ? page : -page;
      this.logOffset = Math.max(0, this.logOffset + by);
      this.renderLog();
      this.screen!.render();
      return;
    }
    const list = this.focus === 'users' ? this.ui.usersList : this.ui.roomsList;
    const ids = this.focus === 'users' ? (this.snap?.users ?? []).map((u) => u.user_id) : (this.snap?.rooms ?? []).map((r) => r.room_id);
    if (!ids.length) return;
    const page = Math.max(1, (list.height as number) - 1);
    const by = k === 'up' ? -1 : k === 'down' ? 1 : k === 'pageup' ? -page : page;
    const i = Math.min(ids.length - 1, Math.max(0, (list.selected ?? 0) + by));
    list.select(i);
    if (this.focus === 'users') this.selectedUser = ids[i];
    else this.selectedRoom = ids[i];
    this.screen!.render();
  }

  /** The selected user, if in a room: kick and mute act on a room's member. */
  private user() {
    const u = this.snap?.users.find((x) => x.user_id === this.selectedUser);
    if (!u) this.setNotice('no user selected', true);
    else if (u.room_id === null) {
      this.setNotice(`${cleanText(u.username)} is not in a room: kick and mute act on a room's members`, true);
      return undefined;
    }
    return u;
  }

  private room() {
    const r = this.snap?.rooms.find((x) => x.room_id === this.selectedRoom);
    if (!r) this.setNotice('no room selected', true);
    return r;
  }

  /** Runs an operator action; its failure (a ProtocolError's message and hint) becomes a notice. */
  private act(what: string, op: () => Promise<unknown>, ok?: string): Promise<boolean> {
    return Promise.resolve()
      .then(op)
      .then(
        () => {
          if (ok) this.setNotice(ok);
          this.refreshSoon();
          return true;
        },
        (e: unknown) => {
          this.setNotice(`${what}: ${describeError(e)}`, true);
          this.refreshSoon();
          return false;
        },
      );
  }

  private console(action: ConsoleAction, data: Record<string, unknown>): () => Promise<unknown> {
    return () => this.server.consoleAction(action, data);
  }

  private askKick(): void {
    const u = this.user();
    if (!u) return;
    const name = cleanText(u.username);
    const where = cleanText(u.room_name ?? 'the room');
    this.ask(`Kick ${name} from ${where}? (y/n)`, () => {
      void this.act(`kick ${name}`, this.console('KICK_USER', { user_id: u.user_id, reason: KICK_REASON }), `${name} was kicked`);
    });
  }

  private toggleMute(): void {
    const u = this.user();
    if (!u) return;
    const name = cleanText(u.username);
    const mute = !u.is_muted_by_host;
    void this.act(
      `${mute ? 'mute' : 'unmute'} ${name}`,
      this.console(mute ? 'MUTE_USER' : 'UNMUTE_USER', { user_id: u.user_id }),
      `${name} ${mute ? 'muted by the host' : 'unmuted'}`,
    );
  }

  private toggleLock(): void {
    const r = this.room();
    if (!r) return;
    const name = cleanText(r.room_name);
    const lock = !r.is_locked;
    void this.act(
      `${lock ? 'lock' : 'unlock'} ${name}`,
      this.console(lock ? 'ROOM_LOCK' : 'ROOM_UNLOCK', { room_id: r.room_id }),
      `room ${name} ${lock ? 'locked' : 'unlocked'}`,
    );
  }

  private stopOrStart(): void {
    const s = this.takeSnapshot();
    if (!s) return;
    const state = s.status.state;
    if (state === 'running') {
      const stop = () => void this.act('stop', () => this.server.stopListeners(), 'listeners stopped: press s to start them again');
      // Users already held for resume have no connection left to cut.
      const n = s.users.filter((u) => !u.is_reconnecting).length;
      if (n > 0) this.ask(`Stop the listeners? ${n} user${n === 1 ? '' : 's'} will be disconnected (y/n)`, stop);
      else stop();
    } else if (state === 'stopped') {
      this.setNotice('starting the listeners…');
      void Promise.resolve()
        .then(() => this.server.startListeners())
        .then(
          () => this.setNotice('listeners started'),
          (e: unknown) => {
            // The thrown error says what failed; last_error adds what to do about it.
            const hint = this.takeSnapshot()?.status.last_error?.hint;
            const msg = describeError(e);
            this.setNotice(`cannot start: ${msg}${hint && !msg.includes(hint) ? ` — ${hint}` : ''}`, true);
          },
        )
        .finally(() => this.refreshSoon());
    } else {
      this.setNotice(`the listeners are ${state}; wait a moment`, true);
    }
  }

  // ---------------------------------------------------------------- modals

  private openModal(element: Box, onKey: Modal['onKey']): void {
    this.closeModal();
    element.setFront();
    this.modal = { element, onKey };
    this.screen?.render();
  }

  private closeModal(): void {
    if (!this.modal) return;
    this.modal.element.destroy();
    this.modal = null;
    this.screen?.render();
  }

  private modalBox(label: string, width: number, height: number, tags = false): Box {
    return box({
      parent: this.screen!,
      top: 'center',
      left: 'center',
      width: Math.min(width, (this.screen!.width as number) - 2),
      height: Math.min(height, (this.screen!.height as number) - 2),
      label: ` ${label} `,
      border: 'line',
      tags,
      style: { border: { fg: 'yellow' } },
    });
  }

  /** A y/n question: y runs `yes`; n or Escape closes it; other keys are ignored. */
  private ask(question: string, yes: () => void): void {
    const width = Math.min(Math.max(30, textWidth(question) + 4), 76);
    const dialog = this.modalBox('Confirm', width, 3);
    dialog.setContent(truncate(question, width - 2));
    this.openModal(dialog, (_ch, key) => {
      if (key.full === 'y') {
        this.closeModal();
        yes();
      } else if (key.full === 'n' || key.full === 'escape') this.closeModal();
    });
  }

  private openHelp(): void {
    const dialog = this.modalBox('Keys', 72, HELP.length + 2);
    dialog.setContent(HELP.map((l) => truncate(l, (dialog.width as number) - 2)).join('\n'));
    this.openModal(dialog, (_ch, key) => {
      if (key.full === 'escape' || key.full === '?') this.closeModal();
    });
  }

  /** Edits a textbox by hand: blessed's readInput grabs every key and inserts tabs. */
  private editField(tb: blessed.Widgets.TextboxElement, ch: string | undefined, key: Key): boolean {
    const value = tb.getValue();
    if (key.full === 'backspace') tb.setValue([...value].slice(0, -1).join(''));
    else if (key.full === 'C-u') tb.setValue('');
    else if (ch && !key.ctrl && !key.meta && [...ch].length === 1 && ch >= ' ' && cleanText(ch) === ch) tb.setValue(value + ch);
    else return false;
    this.screen?.render();
    return true;
  }

  private openFilterPrompt(): void {
    const dialog = this.modalBox('Log filter (Enter applies, empty clears, Esc cancels)', 60, 3);
    const tb = blessed.textbox({ parent: dialog, top: 0, left: 0, right: 0, height: 1, style: { bg: 'blue' } });
    tb.setValue(this.logText);
    this.openModal(dialog, (ch, key) => {
      if (key.full === 'escape') this.closeModal();
      else if (key.full === 'enter') {
        this.logText = tb.getValue().trim();
        this.logOffset = 0;
        this.closeModal();
        this.renderAll();
      } else this.editField(tb, ch, key);
    });
  }

  private openConfigForm(): void {
    const s = this.takeSnapshot();
    if (!s) return;
    const current = s.status.network;
    const form = blessed.form<Record<string, string>>({
      parent: this.screen!,
      top: 'center',
      left: 'center',
      width: Math.min(64, (this.screen!.width as number) - 2),
      height: NETWORK_FIELDS.length + 5,
      label: ' Network configuration ',
      border: 'line',
      keys: false,
      style: { border: { fg: 'yellow' } },
    }) as unknown as Box;
    const boxes = NETWORK_FIELDS.map((f, i) => {
      blessed.text({ parent: form, top: i, left: 1, content: fit(f.label, 14) });
      const tb = blessed.textbox({ parent: form, name: f.key, top: i, left: 16, width: 24, height: 1, style: { bg: 'black' } });
      tb.setValue(String(current[f.key]));
      return tb;
    });
    // Two rows, wrapped by blessed: an error from reconfigure() can be long.
    const status = blessed.box({ parent: form, top: NETWORK_FIELDS.length + 1, left: 1, right: 1, height: 2 });
    const help = 'Tab/↑↓ field  Enter apply  Esc cancel  Ctrl+U clear';
    const say = (text: string, colour = 'white') => {
      (status.style as { fg: string }).fg = colour;
      status.setContent(truncate(cleanText(text), ((form.width as number) - 4) * 2 - 8));
      this.screen?.render();
    };
    let field = 0;
    let busy = false;
    const highlight = () => boxes.forEach((b, i) => ((b.style as { bg: string }).bg = i === field ? 'blue' : 'black'));
    highlight();
    say(help);
    this.openModal(form, (ch, key) => {
      if (busy) return;
      if (key.full === 'escape') return this.closeModal();
      if (['tab', 'down', 'S-tab', 'up'].includes(key.full)) {
        const step = key.full === 'tab' || key.full === 'down' ? 1 : boxes.length - 1;
        field = (field + step) % boxes.length;
        highlight();
        this.screen?.render();
        return;
      }
      if (key.full !== 'enter') {
        this.editField(boxes[field], ch, key);
        return;
      }
      const values = Object.fromEntries(NETWORK_FIELDS.map((f, i) => [f.key, boxes[i].getValue()])) as Partial<Record<keyof NetworkConfig, string>>;
      const parsed = parseNetworkForm(values, current);
      if ('error' in parsed) return say(parsed.error, 'red');
      if (Object.keys(parsed.changes).length === 0) {
        this.closeModal();
        return this.setNotice('network configuration unchanged');
      }
      busy = true;
      say('applying… (a running server restarts its listeners)', 'yellow');
      Promise.resolve()
        .then(() => this.server.reconfigure(parsed.changes))
        .then(
          () => {
            if (this.modal?.element === form) this.closeModal();
            const n = this.takeSnapshot()?.status.network;
            this.setNotice(n ? `network configuration changed: ${n.host}:${n.port}` : 'network configuration changed');
          },
          (e: unknown) => {
            busy = false;
            say(describeError(e), 'red');
          },
        )
        .finally(() => this.refreshSoon());
    });
  }
}
