/**
 * client/cli.ts: parsing of the file commands (/upload, /files, /download, /delete) and
 * the --download-dir flag.
 */
import { describe, expect, it } from 'vitest';
import { CliUsageError, COMMANDS, CommandUsageError, parseCliArgs, parseCommand } from '../../client/cli';

describe('file commands', () => {
  it('/upload takes one path: quoted, or the unquoted rest as typed', () => {
    expect(parseCommand('/upload report.pdf')).toEqual({ name: 'upload', path: 'report.pdf' });
    expect(parseCommand('/upload "weekly report.pdf"')).toEqual({ name: 'upload', path: 'weekly report.pdf' });
    expect(parseCommand("/upload '/tmp/a b/c.txt'")).toEqual({ name: 'upload', path: '/tmp/a b/c.txt' });
    expect(parseCommand('/upload weekly  report.pdf ')).toEqual({ name: 'upload', path: 'weekly  report.pdf' });
    expect(parseCommand('/UPLOAD ~/x.bin')).toEqual({ name: 'upload', path: '~/x.bin' });
    expect(() => parseCommand('/upload')).toThrow(/usage: \/upload PATH/);
    expect(() => parseCommand('/upload "a b" c')).toThrow(/quote it if it has spaces/);
    expect(() => parseCommand('/upload "a b')).toThrow(/unclosed quote/);
    expect(() => parseCommand('/upload ""')).toThrow(CommandUsageError);
  });

  it('/files takes nothing', () => {
    expect(parseCommand('/files')).toEqual({ name: 'files' });
    expect(() => parseCommand('/files all')).toThrow(/usage: \/files/);
  });

  it('/download takes an id and an optional destination', () => {
    expect(parseCommand('/download 1a2b3c4d')).toEqual({ name: 'download', file: '1a2b3c4d' });
    expect(parseCommand('/download 1a2b ~/Downloads/')).toEqual({ name: 'download', file: '1a2b', dest: '~/Downloads/' });
    expect(parseCommand('/download 1a2b "my dir/copy.bin"')).toEqual({ name: 'download', file: '1a2b', dest: 'my dir/copy.bin' });
    expect(() => parseCommand('/download')).toThrow(/usage: \/download ID \[DEST\]/);
    expect(() => parseCommand('/download 1a2b my dir/x')).toThrow(/quote a DEST with spaces/);
  });

  it('/delete takes one id', () => {
    expect(parseCommand('/delete 1a2b')).toEqual({ name: 'delete', file: '1a2b' });
    expect(() => parseCommand('/delete')).toThrow(/usage: \/delete ID/);
    expect(() => parseCommand('/delete a b')).toThrow(/usage: \/delete ID/);
  });

  it('are listed in the command table (and so in /help and --help)', () => {
    const usages = COMMANDS.map((c) => c.usage);
    for (const u of ['/upload PATH', '/files', '/download ID [DEST]', '/delete ID']) expect(usages).toContain(u);
  });
});

describe('--download-dir', () => {
  it('defaults to none (the current directory) and takes a directory', () => {
    expect(parseCliArgs(['-u', 'a']).options.downloadDir).toBeNull();
    expect(parseCliArgs(['-u', 'a', '--download-dir', '/tmp/in']).options.downloadDir).toBe('/tmp/in');
    expect(() => parseCliArgs(['-u', 'a', '--download-dir', ' '])).toThrow(CliUsageError);
    expect(() => parseCliArgs(['-u', 'a', '--download-dir'])).toThrow(/--download-dir needs a value/);
  });
});
