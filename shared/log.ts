/**
 * A small leveled logger. Lines carry `[key:value]` context so they can be grepped:
 *   2026-11-26T06:00:00.000Z INFO  [room:ab12][user:alice] joined
 * Output goes to a sink (stderr by default); the monitor swaps in its own.
 */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Higher is more severe; a logger writes records at or above its level's rank. */
export const LOG_LEVEL_RANK: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
const RANK = LOG_LEVEL_RANK;

export interface LogRecord {
  time: number;
  level: Exclude<LogLevel, 'silent'>;
  context: Record<string, string | number | boolean | null | undefined>;
  message: string;
}

export type LogSink = (record: LogRecord, line: string) => void;

export const stderrSink: LogSink = (_r, line) => {
  process.stderr.write(line + '\n');
};

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** A record's context as `[key:value]` tags, empty values left out. */
export function formatLogContext(context: LogRecord['context']): string {
  return Object.entries(context)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `[${k}:${v}]`)
    .join('');
}

export function formatLogRecord(r: LogRecord): string {
  const ctx = formatLogContext(r.context);
  return `${new Date(r.time).toISOString()} ${r.level.toUpperCase().padEnd(5)} ${ctx}${ctx ? ' ' : ''}${r.message}`;
}

export class Logger {
  constructor(
    private readonly state: { level: LogLevel; sink: LogSink },
    private readonly context: LogRecord['context'] = {},
  ) {}

  static create(level: LogLevel = 'info', sink: LogSink = stderrSink): Logger {
    return new Logger({ level, sink });
  }

  get level(): LogLevel {
    return this.state.level;
  }
  set level(l: LogLevel) {
    this.state.level = l;
  }
  setSink(sink: LogSink): void {
    this.state.sink = sink;
  }

  /** A logger that adds `[key:value]` context to every line; shares level and sink. */
  child(context: LogRecord['context']): Logger {
    return new Logger(this.state, { ...this.context, ...context });
  }

  enabled(level: Exclude<LogLevel, 'silent'>): boolean {
    return RANK[level] >= RANK[this.state.level];
  }

  debug(message: string, ctx?: LogRecord['context']): void {
    this.write('debug', message, ctx);
  }
  info(message: string, ctx?: LogRecord['context']): void {
    this.write('info', message, ctx);
  }
  warn(message: string, ctx?: LogRecord['context']): void {
    this.write('warn', message, ctx);
  }
  error(message: string, ctx?: LogRecord['context']): void {
    this.write('error', message, ctx);
  }

  private write(level: Exclude<LogLevel, 'silent'>, message: string, ctx?: LogRecord['context']): void {
    if (!this.enabled(level)) return;
    const record: LogRecord = { time: Date.now(), level, context: ctx ? { ...this.context, ...ctx } : this.context, message };
    this.state.sink(record, formatLogRecord(record));
  }
}
