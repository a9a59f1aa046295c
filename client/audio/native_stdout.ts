/**
 * naudiodon's C++ code printf()s to the process's standard output ("PortAudio V19.6
 * ...", "Input audio options: ...", "Finishing input ...", "output underflow"), and
 * nothing in JavaScript can turn that off. In a program whose stdout is its interface
 * (the CLI's event lines, --json for other programs) those lines would land between
 * ours, or in a burst at exit. So, before any audio device opens, the program moves
 * its OWN output to a new descriptor of the same file and points descriptor 1, which
 * the C library writes to, at /dev/null:
 *
 *   real = open("/proc/self/fd/1")   the same terminal, pipe or file, a new descriptor
 *   close(1); open("/dev/null")      takes the lowest free descriptor: 1
 *
 * Node has no dup2(), which is why it goes through /proc (Linux). Where that is not
 * possible (another OS; stdout a socket, as a Node parent's 'pipe' is; stdout and
 * stderr one file, `> log 2>&1`) nothing changes and null is returned: the printed
 * lines then show, which is only cosmetic for a person and a known limit for a
 * program reading --json from a socket pair.
 */
import fs from 'node:fs';
import tty from 'node:tty';
import { Writable } from 'node:stream';

export type DivertedStdout = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

let diverted: DivertedStdout | null | undefined;

/** Our stdout on its new descriptor (created once per process), or null if it could not be moved. */
export function divertNativeStdout(): DivertedStdout | null {
  if (diverted !== undefined) return diverted;
  diverted = null;
  if (process.platform !== 'linux') return null;
  let real: number;
  let isFile: boolean;
  try {
    const st = fs.fstatSync(1);
    if (st.isSocket()) return null;
    isFile = st.isFile();
    if (isFile) {
      // `> log 2>&1`: descriptors 1 and 2 share one file position; a new descriptor of its
      // own would write over stderr's lines. Leave it (the C lines then land in the log).
      const err = fs.fstatSync(2);
      if (err.dev === st.dev && err.ino === st.ino) return null;
    }
    // A file: append, never truncate what the shell opened.
    real = fs.openSync('/proc/self/fd/1', isFile ? 'a' : 'w');
  } catch {
    return null;
  }
  try {
    fs.closeSync(1);
    const nul = fs.openSync('/dev/null', 'w');
    if (nul !== 1) fs.closeSync(nul); // descriptor 0 was free: leave 1 closed (C writes then fail quietly)
  } catch {
    // Descriptor 1 stays as it was or closed; our output goes to `real` either way.
  }
  if (tty.isatty(real)) {
    diverted = new tty.WriteStream(real);
  } else {
    // Synchronous, as Node's own stdout is for files and pipes: nothing is lost at exit.
    const w = new Writable({
      write(chunk: Buffer, _enc, cb) {
        try {
          let off = 0;
          while (off < chunk.length) off += fs.writeSync(real, chunk, off);
          cb();
        } catch (e) {
          cb(e as Error);
        }
      },
    });
    w.on('error', () => undefined); // a closed pipe (head, a gone reader) must not crash the client
    diverted = w as DivertedStdout;
  }
  return diverted;
}
