import { describe, expect, it } from 'vitest';
import type { LogRecord } from '../../shared/log';
import type { MonitorRoom, MonitorUser, ServerSnapshot } from '../../server/stats';
import type { FileTransferStats } from '../../server/file_server';
import {
  BANDWIDTH_SAMPLES,
  cleanText,
  computeLayout,
  computeRates,
  describeError,
  escapeTags,
  formatBitRate,
  formatByteRate,
  formatBytes,
  footerKeys,
  formatDuration,
  formatHeaderLines,
  formatLogLine,
  formatRoomsTable,
  formatTrafficLines,
  formatTransfers,
  formatUsersTable,
  LogBuffer,
  logWindow,
  nextLogLevel,
  parseNetworkForm,
  renderGraph,
  RingBuffer,
  stripTags,
  textWidth,
  truncate,
  worstLoss,
  streamLoss,
} from '../../gui/monitor_view';
import { ProtocolError } from '../../shared/errors';

function user(name: string, over: Partial<MonitorUser> = {}): MonitorUser {
  return {
    user_id: `u-${name}`,
    username: name,
    room_id: 'r1',
    room_name: 'Standup',
    is_online: true,
    is_muted: false,
    is_muted_by_host: false,
    is_video_enabled: true,
    is_audio_enabled: true,
    is_screen_sharing: false,
    hand_raised: false,
    role: 'participant',
    is_admin: false,
    is_reconnecting: false,
    stream_id: 1,
    last_seen: 0,
    permissions: { can_mute_others: false, can_kick_users: false, can_manage_rooms: false, can_record: false },
    remote: '127.0.0.1:50000',
    connected_at: 0,
    ...over,
  };
}

function room(name: string, over: Partial<MonitorRoom> = {}): MonitorRoom {
  return {
    room_id: `r-${name}`,
    room_name: name,
    created_by: 'u-alice',
    created_by_name: 'alice',
    created_at: 0,
    max_participants: 10,
    is_private: false,
    participant_count: 3,
    is_recording: false,
    settings: {},
    is_locked: false,
    is_persistent: false,
    host_id: 'u-alice',
    host_name: 'alice',
    members: [],
    ...over,
  };
}

function snapshot(over: {
  time?: number;
  msgsIn?: number;
  msgsOut?: number;
  mediaIn?: number;
  mediaOut?: number;
  dropped?: number;
  receiverDrops?: number;
  fileIn?: number;
  fileOut?: number;
  users?: MonitorUser[];
  rooms?: MonitorRoom[];
  transfers?: FileTransferStats[];
  state?: ServerSnapshot['status']['state'];
  lastError?: { message: string; hint: string } | null;
  serverName?: string;
}): ServerSnapshot {
  const bound = { control: 8888, video: 9000, audio: 9001, screen: 9002, feedback: 9003, file: 9004 };
  const state = over.state ?? 'running';
  return {
    time: over.time ?? 1_000_000,
    status: {
      state,
      server_name: over.serverName ?? 'Office',
      started_at: 0,
      uptime_s: 93784,
      network: { host: '0.0.0.0', port: 8888, videoPort: 9000, audioPort: 9001, screenPort: 9002, feedbackPort: 9003, filePort: 9004 },
      bound: state === 'running' ? bound : null,
      lan_addresses: ['192.168.1.5', '10.0.0.2'],
      last_error: over.lastError ?? null,
      data_dir: '/tmp/data',
      database: '/tmp/data/db.sqlite',
    },
    control: { messagesIn: over.msgsIn ?? 0, messagesOut: over.msgsOut ?? 0, bytesIn: 0, bytesOut: 0, errors: 0, connections: 0 },
    users: over.users ?? [],
    rooms: over.rooms ?? [],
    media: {
      ports: { video: 9000, audio: 9001, screen: 9002, feedback: 9003 },
      totals: {
        packets_in: 0,
        bytes_in: over.mediaIn ?? 0,
        packets_out: 0,
        bytes_out: over.mediaOut ?? 0,
        dropped: { malformed: over.dropped ?? 0, unknown_stream: 0, bad_token: 0, unregistered: 0, wrong_port: 0, not_allowed: 0, bad_report: 0 },
        receiver_drops: over.receiverDrops ?? 0,
      },
      participants: [],
    },
    files: {
      listening: true,
      port: 9004,
      files: 0,
      stored_bytes: 0,
      transfers: over.transfers ?? [],
      uploads: [],
      counters: {
        uploads_done: 0,
        downloads_done: 0,
        bytes_in: over.fileIn ?? 0,
        bytes_out: over.fileOut ?? 0,
        chunks_refused: 0,
        chunks_dropped: 0,
        tickets_refused: 0,
        frames_refused: 0,
        connections_refused: 0,
      },
    },
  };
}

const names = ['alice', 'Bob with a rather long display name indeed', '山田太郎', 'Zoë', 'x'];
const users = names.map((n, i) =>
  user(n, {
    user_id: `u${i}`,
    is_admin: i === 0,
    is_muted_by_host: i === 1,
    is_muted: i === 1,
    is_reconnecting: i === 2,
    hand_raised: i === 3,
    role: i === 0 ? 'host' : 'participant',
    room_name: i === 4 ? null : 'A room whose name is long too',
  }),
);

describe('text', () => {
  it('counts East Asian wide characters as two cells and cuts with an ellipsis', () => {
    expect(textWidth('abc')).toBe(3);
    expect(textWidth('山田')).toBe(4);
    expect(textWidth('Zoë')).toBe(3);
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('abcd', 4)).toBe('abcd');
    expect(truncate('山田太郎', 5)).toBe('山田…');
    expect(textWidth(truncate('山田太郎', 5))).toBeLessThanOrEqual(5);
  });

  it('removes control characters and escape sequences from user text', () => {
    expect(cleanText('ev\x1b[31mil\x07\r\n\u009b')).toBe('ev[31mil');
    expect(cleanText('a\u202eb')).toBe('ab');
    expect(cleanText('party 🎉')).toBe('party ?');
  });

  it('escapes blessed tags the way blessed.escape does', () => {
    expect(escapeTags('{red-fg}x{/red-fg}')).toBe('{open}red-fg{close}x{open}/red-fg{close}');
    expect(stripTags(escapeTags('{bold}hi{/bold}'))).toBe('{bold}hi{/bold}');
  });
});

describe('numbers', () => {
  it('formats durations with days', () => {
    expect(formatDuration(0)).toBe('00:00:00');
    expect(formatDuration(3723)).toBe('01:02:03');
    expect(formatDuration(93784)).toBe('1d 02:03:04');
  });
  it('formats bytes and rates', () => {
    expect(formatBitRate(1_200_000)).toBe('1.2 Mbit/s');
    expect(formatBitRate(850_000)).toBe('850 kbit/s');
    expect(formatBitRate(12)).toBe('12 bit/s');
    expect(formatBytes(1536)).toBe('1.5 kB');
    expect(formatByteRate(0)).toBe('0 B/s');
    expect(formatByteRate(12_345_678)).toBe('12.3 MB/s');
  });
});

describe('tables', () => {
  for (const width of [30, 46, 80, 200]) {
    it(`users and rooms tables fit ${width} columns`, () => {
      const t = formatUsersTable(users, width);
      for (const line of [t.header, ...t.rows]) expect(textWidth(line)).toBeLessThanOrEqual(width);
      expect(t.rows).toHaveLength(users.length);
      const rooms = [room('Standup'), room('A very long room name that goes on and on', { is_locked: true, is_private: true })];
      const r = formatRoomsTable(rooms, width);
      for (const line of [r.header, ...r.rows]) expect(textWidth(line)).toBeLessThanOrEqual(width);
    });
  }

  it('shows every column and the whole name at 200 columns', () => {
    const t = formatUsersTable(users, 200);
    expect(t.header.split(/\s+/)).toEqual(['name', 'room', 'role', 'mic', 'cam', 'scr', 'hand', 'flags', 'loss%']);
    // Names are 32 characters at most on the wire: the column stops there.
    expect(t.rows[1]).toContain('Bob with a rather long display …');
    expect(t.rows[3]).toContain('Zoë');
    expect(t.rows[0]).toContain('admin');
    expect(t.rows[1]).toContain('host-muted');
    expect(t.rows[2]).toContain('reconnecting');
    expect(t.rows[3]).toMatch(/\bup\b/);
  });

  it('cuts long names with an ellipsis and keeps the columns aligned at 80', () => {
    const t = formatUsersTable(users, 46);
    expect(t.rows[1]).toContain('…');
    const col = t.header.indexOf('role');
    expect(col).toBeGreaterThan(0);
    // ASCII rows: the role column starts at the same offset in the header and the row.
    expect(t.rows[0].slice(col, col + 4)).toBe('host');
  });

  it('neutralises tag and escape injection in names', () => {
    const evil = user('{red-fg}x\x1b[2J', { room_name: '{bold}r' });
    const t = formatUsersTable([evil], 80);
    expect(t.rows[0]).not.toContain('\x1b');
    expect(t.rows[0]).toContain('{red-fg}x[2J');
    // In a tags: true widget the braces are escaped, so blessed shows them as text.
    const header = formatHeaderLines(snapshot({ serverName: '{red-fg}evil' }), 80)[0];
    expect(header).toContain('{open}red-fg{close}evil');
    expect(stripTags(header)).toContain('{red-fg}evil');
  });

  it('lists transfers or "none"', () => {
    expect(formatTransfers(snapshot({}).files, 40, 5)).toEqual(['none']);
    const t: FileTransferStats = { id: 'f', op: 'upload', user: 'alice', name: 'report.pdf', size: 1000, done_bytes: 455, started_at: 0, rate_bps: 1_200_000 };
    const lines = formatTransfers(snapshot({ transfers: [t] }).files, 60, 5);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/report\.pdf\s+alice\s+up\s+45%\s+1\.2 MB\/s/);
    const many = formatTransfers(snapshot({ transfers: Array.from({ length: 6 }, () => t) }).files, 60, 4);
    expect(many).toHaveLength(4);
    expect(many[3]).toBe('+4 more');
  });
});

describe('header', () => {
  it('shows the state, uptime and where clients connect', () => {
    const lines = formatHeaderLines(snapshot({ users: users.slice(0, 2) }), 200).map(stripTags);
    expect(lines[0]).toContain('running');
    expect(lines[0]).toContain('1d 02:03:04');
    expect(lines[0]).toContain('users 2');
    expect(lines[2]).toBe('clients connect to: 192.168.1.5:8888  10.0.0.2:8888');
    for (const w of [80, 40]) for (const l of formatHeaderLines(snapshot({}), w)) expect(textWidth(stripTags(l))).toBeLessThanOrEqual(w);
  });
  it('shows the last error and its hint when stopped', () => {
    const lines = formatHeaderLines(snapshot({ state: 'stopped', lastError: { message: 'port 8888 in use', hint: 'choose another --port' } }), 200);
    expect(lines[0]).toContain('{red-fg}stopped{/red-fg}');
    expect(stripTags(lines[2])).toBe('error: port 8888 in use — choose another --port');
  });
});

describe('footer', () => {
  it('picks the widest key list that fits', () => {
    expect(footerKeys(200)).toContain('s stop/start');
    expect(footerKeys(200)).toContain('r rec');
    expect(footerKeys(80)).toBe('Tab ↑↓ k kick m mute l lock s stop c cfg / filter v level ? help q quit');
    for (const w of [20, 60, 80, 120]) expect(textWidth(footerKeys(w))).toBeLessThanOrEqual(w);
  });
});

describe('rates', () => {
  it('computes per-second rates from two snapshots 2 s apart', () => {
    const a = snapshot({ time: 10_000, msgsIn: 100, msgsOut: 200, mediaIn: 1_000_000, mediaOut: 3_000_000, dropped: 5, fileIn: 0, fileOut: 0 });
    const b = snapshot({ time: 12_000, msgsIn: 120, msgsOut: 260, mediaIn: 1_250_000, mediaOut: 3_500_000, dropped: 9, receiverDrops: 2, fileIn: 4_000_000, fileOut: 1000 });
    const r = computeRates(a, b);
    expect(r.interval_s).toBe(2);
    expect(r.msgs_in).toBe(10);
    expect(r.msgs_out).toBe(30);
    expect(r.media_in_kbps).toBe(1000); // 250 kB in 2 s = 125 kB/s = 1000 kbit/s
    expect(r.media_out_kbps).toBe(2000);
    expect(r.dropped_per_s).toBe(3); // (9 + 2 - 5) / 2
    expect(r.file_in_Bps).toBe(2_000_000);
    expect(r.file_out_Bps).toBe(500);
    const lines = formatTrafficLines(b, r, 80);
    expect(lines[0]).toBe('in  10.0 msg/s  1.0 Mbit/s  files 2.0 MB/s');
    expect(lines[1]).toBe('out 30.0 msg/s  2.0 Mbit/s  files 500 B/s');
    for (const l of formatTrafficLines(b, r, 30)) expect(textWidth(l)).toBeLessThanOrEqual(30);
  });

  it('counts a counter that went down as zero, and no time as zero', () => {
    const a = snapshot({ time: 10_000, msgsIn: 100 });
    expect(computeRates(a, snapshot({ time: 11_000, msgsIn: 5 })).msgs_in).toBe(0);
    expect(computeRates(a, a).msgs_in).toBe(0);
  });

  it('finds the worst loss in basis points', () => {
    const s = snapshot({});
    const agg = (lossMaxBp: number) => ({ kind: 1, layer: 0, receivers: 2, lossAvgBp: 0, lossMaxBp, jitterMaxUs: 0, delayMaxUs: 0, framesDelivered: 0, framesDropped: 0 });
    s.media.participants = [
      { user_id: 'u-alice', username: 'alice', reports: { video: agg(120), audio: agg(30) } },
      { user_id: 'u-bob', username: 'bob', reports: { screen: agg(250) } },
    ] as unknown as ServerSnapshot['media']['participants'];
    expect(worstLoss(s.media)).toEqual({ percent: 2.5, username: 'bob', kind: 'screen' });
    expect(formatTrafficLines(s, null, 80)[2]).toBe('dropped 0.0/s (0)  worst loss 2.5% bob screen');
    // Per stream, in the users table: the worst receiver's loss of each stream the user sends.
    expect(streamLoss(s.media, 'u-alice')).toBe('v1.2 a0.3');
    expect(streamLoss(s.media, 'u-carol')).toBe('');
    const t = formatUsersTable([user('alice', { user_id: 'u-alice' }), user('carol', { user_id: 'u-carol' })], 200, s.media);
    expect(t.rows[0]).toMatch(/v1\.2 a0\.3$/);
    expect(t.rows[1]).toMatch(/ -$/);
  });
});

describe('ring buffer', () => {
  it('keeps only the newest items', () => {
    const rb = new RingBuffer<number>(3);
    for (let i = 1; i <= 7; i++) rb.push(i);
    expect(rb.length).toBe(3);
    expect(rb.toArray()).toEqual([5, 6, 7]);
    expect(rb.total).toBe(7);
    expect(rb.firstIndex).toBe(4);
  });
  it('holds five minutes of samples at most', () => {
    const rb = new RingBuffer<number>(BANDWIDTH_SAMPLES);
    for (let i = 0; i < 1000; i++) rb.push(i);
    expect(rb.length).toBe(300);
    expect(rb.toArray()[0]).toBe(700);
  });
});

describe('graph', () => {
  it('draws exactly H rows of W cells, the tallest bar full height', () => {
    const samples = [0, 250, 500, 1000, 500];
    const rows = renderGraph(samples, 20, 4, { label: (v) => `${v}` });
    expect(rows).toHaveLength(4);
    for (const r of rows) expect(textWidth(r)).toBe(20);
    // Axis: "1000┤" on top, "   0┤" at the bottom; plot of 15 cells, samples right-aligned.
    expect(rows[0].startsWith('1000┤')).toBe(true);
    expect(rows[3].startsWith('   0┤')).toBe(true);
    const plot = rows.map((r) => [...r].slice(5));
    const col = (i: number) => plot.map((r) => r[15 - samples.length + i]).join('');
    expect(col(3)).toBe('████'); // the max
    expect(col(2)).toBe('  ██'); // half of it
    expect(col(1)).toBe('   █'); // a quarter: one full row of four
    expect(col(0)).toBe('    ');
    expect(plot[0].filter((c) => c === '█')).toHaveLength(1);
  });

  it('averages samples into buckets aligned on their absolute index', () => {
    expect(renderGraph([8, 8, 0, 0], 10, 1, { bucket: 2, firstIndex: 0, label: () => '' })).toEqual([' ┤      █ ']);
    // Shifted by one: buckets {8} {8,0} {0}, the middle one half as tall.
    expect(renderGraph([8, 8, 0, 0], 10, 1, { bucket: 2, firstIndex: 1, label: () => '' })).toEqual([' ┤     █▄ ']);
  });

  it('is blank with no traffic and tiny sizes still hold', () => {
    const rows = renderGraph([0, 0, 0], 12, 3);
    expect(rows).toHaveLength(3);
    for (const r of rows) expect(r.replace(/[0│┤ ]/g, '')).toBe('');
    expect(renderGraph([1, 2, 3], 3, 2).every((r) => textWidth(r) === 3)).toBe(true);
  });
});

describe('log', () => {
  const rec = (level: LogRecord['level'], message: string, context: LogRecord['context'] = {}): LogRecord => ({
    time: new Date(2026, 0, 2, 3, 4, 5).getTime(),
    level,
    context,
    message,
  });

  it('formats a panel line with local time, level, message and context', () => {
    expect(formatLogLine(rec('warn', 'joined', { room: 'ab', user: 'alice' }))).toBe('03:04:05 WARN  joined [room:ab][user:alice]');
    expect(formatLogLine(rec('info', 'evil \x1b[2J{bold}'))).toBe('03:04:05 INFO  evil [2J{bold}');
    expect(formatLogLine(rec('info', 'x'.repeat(100)), 40)).toHaveLength(40);
  });

  it('filters by level and by text, case-insensitively, and stays bounded', () => {
    const buf = new LogBuffer(4);
    buf.push(rec('debug', 'dbg'));
    buf.push(rec('info', 'Alice joined'));
    buf.push(rec('warn', 'slow disk'));
    buf.push(rec('error', 'ALICE kicked', { room: 'r1' }));
    buf.push(rec('info', 'bob joined'));
    expect(buf.length).toBe(4);
    expect(buf.filter('debug').map((r) => r.message)).toEqual(['Alice joined', 'slow disk', 'ALICE kicked', 'bob joined']);
    expect(buf.filter('warn').map((r) => r.message)).toEqual(['slow disk', 'ALICE kicked']);
    expect(buf.filter('info', 'alice').map((r) => r.message)).toEqual(['Alice joined', 'ALICE kicked']);
    expect(buf.filter('error', 'alice').map((r) => r.message)).toEqual(['ALICE kicked']);
    expect(buf.filter('info', 'room:r1').map((r) => r.message)).toEqual(['ALICE kicked']);
  });

  it('cycles the level filter', () => {
    expect(nextLogLevel('debug')).toBe('info');
    expect(nextLogLevel('error')).toBe('debug');
  });

  it('windows the lines from the bottom', () => {
    expect(logWindow(100, 10, 0)).toEqual({ start: 90, end: 100, offset: 0 });
    expect(logWindow(100, 10, 5)).toEqual({ start: 85, end: 95, offset: 5 });
    expect(logWindow(100, 10, 500)).toEqual({ start: 0, end: 10, offset: 90 });
    expect(logWindow(3, 10, 2)).toEqual({ start: 0, end: 3, offset: 0 });
  });
});

describe('layout, form and errors', () => {
  for (const [c, r] of [
    [80, 24],
    [200, 60],
  ]) {
    it(`tiles a ${c}x${r} screen`, () => {
      const l = computeLayout(c, r);
      expect(l.header.height + l.users.height + l.traffic.height + l.log.height + l.footer.height).toBe(r);
      expect(l.users.width + l.rooms.width).toBe(c);
      expect(l.footer.top).toBe(r - 1);
      expect(l.log.top + l.log.height).toBe(r - 1);
      expect(l.traffic.height).toBeGreaterThanOrEqual(6);
    });
  }

  it('parses the network form into changes only', () => {
    const cur = { host: '0.0.0.0', port: 8888, videoPort: 9000, audioPort: 9001, screenPort: 9002, feedbackPort: 9003, filePort: 9004 };
    expect(parseNetworkForm({ host: ' 0.0.0.0 ', port: '8890', videoPort: '9000' }, cur)).toEqual({ changes: { port: 8890 } });
    expect(parseNetworkForm({ audioPort: 'abc' }, cur)).toEqual({ error: 'audio port: "abc" is not a port number (0-65535, 0 picks a free port)' });
    expect(parseNetworkForm({ host: '' }, cur)).toHaveProperty('error');
    // The range is the server's to judge: it is passed on.
    expect(parseNetworkForm({ filePort: '70000' }, cur)).toEqual({ changes: { filePort: 70000 } });
  });

  it('describes a ProtocolError with its hint', () => {
    const e = new ProtocolError('USERNAME_TAKEN', { username: 'alice' });
    expect(describeError(e)).toBe(`${e.message} — ${e.hint}`);
    expect(describeError(new Error('plain'))).toBe('plain');
  });
});
