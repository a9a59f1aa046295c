/**
 * Test kit: a terminal program driven through tmux, as a person at a keyboard would:
 * keys go in with send-keys, the screen comes out with capture-pane. Each session runs
 * on its own tmux server socket (-L), so tests never touch a user's tmux or each other.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './processes';

let sessionCount = 0;

export class TmuxSession {
  private readonly socket: string;
  private readonly exitFile: string;
  private closed = false;

  private constructor(
    readonly name: string,
    dir: string,
  ) {
    // A fresh socket name each time: a tmux server just killed may still hold the old one.
    this.socket = `lanvc-${process.pid}-${name}-${++sessionCount}`;
    this.exitFile = path.join(dir, `${name}.exit`);
  }

  /**
   * Runs `command` (a shell command line, in the repo root) in a detached tmux session of
   * `width` x `height`. The exit code is written to a file so it can be read after the
   * pane has gone.
   */
  static start(name: string, command: string, o: { width: number; height: number; dir: string; env?: Record<string, string> }): TmuxSession {
    const t = new TmuxSession(name, o.dir);
    const env = Object.entries({ TERM: 'screen-256color', ...o.env })
      .map(([k, v]) => `${k}=${shellQuote(v)}`)
      .join(' ');
    const wrapped = `cd ${shellQuote(REPO_ROOT)} && env ${env} ${command}; echo $? > ${shellQuote(t.exitFile)}`;
    t.tmux('-f', '/dev/null', 'new-session', '-d', '-s', name, '-x', String(o.width), '-y', String(o.height), wrapped);
    // A detached session takes the size given here and keeps it when resized by command.
    t.tmux('set-option', '-t', name, 'window-size', 'manual');
    return t;
  }

  private tmux(...args: string[]): string {
    return execFileSync('tmux', ['-L', this.socket, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** The visible screen, one string per row (plain text, no colours). */
  capture(): string[] {
    return this.tmux('capture-pane', '-p', '-t', this.name).replace(/\n$/, '').split('\n');
  }

  /** Keys in tmux's names: 'Down', 'Tab', 'Escape', 'Enter', 'C-c', or literal text with literal: true. */
  send(keys: string[], o: { literal?: boolean } = {}): void {
    this.tmux('send-keys', '-t', this.name, ...(o.literal ? ['-l'] : []), ...keys);
  }

  resize(width: number, height: number): void {
    this.tmux('resize-window', '-t', this.name, '-x', String(width), '-y', String(height));
  }

  /** Resolves with the screen once `test` holds for it; on timeout throws with the last screen. */
  async waitFor(test: (rows: string[], text: string) => boolean, what: string, timeoutMs = 20_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    let rows: string[] = [];
    for (;;) {
      if (this.exitCode() !== null) throw new Error(`the program exited (${this.exitCode()}) while waiting for ${what}; last screen:\n${rows.join('\n')}`);
      try {
        rows = this.capture();
      } catch {
        rows = [];
      }
      if (test(rows, rows.join('\n'))) return rows;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; screen:\n${rows.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The program's exit code once it has exited, else null. */
  exitCode(): number | null {
    try {
      const text = fs.readFileSync(this.exitFile, 'utf8').trim();
      return text === '' ? null : Number(text);
    } catch {
      return null;
    }
  }

  async waitExit(timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.exitCode() === null) {
      if (Date.now() > deadline) throw new Error(`the program did not exit within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return this.exitCode()!;
  }

  /** Kills the session and its tmux server (and so the program, if still running). Idempotent. */
  kill(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.tmux('kill-server');
    } catch {
      // Already gone with its last session.
    }
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
