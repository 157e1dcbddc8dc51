/**
 * One tnet process per state directory. Two processes on one state (two daemons with different
 * sockets, a daemon and the standalone plugin) would each reconcile the kernel against their own
 * view and remove what the other made (its nft table first). The lock is flock(2) on
 * STATE_DIR/lock, which the kernel drops when the holder dies however it dies (kill -9
 * included): no stale lock to clean up. The file holds the holder's pid, for the message.
 */
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TnetError } from '../errors.js';
import { flockRelease, flockTry } from '../kernel/flock.js';

interface Held {
  fd: number;
  users: number;
}

/** This process's locks, by directory: the daemon takes its lock early and its controller shares it. */
const held = new Map<string, Held>();

export interface StateLock {
  release(): void;
}

/**
 * Takes the state directory's lock, or throws a 'conflict' naming the pid that holds it. Taken
 * again by the same process (the daemon, then its controller), it is shared until the last release.
 */
export function lockStateDir(dir: string): StateLock {
  const file = join(dir, 'lock');
  let h = held.get(file);
  if (!h) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fd = openSync(file, 'a+', 0o600);
    if (!flockTry(fd)) {
      let holder = '';
      try {
        holder = readFileSync(file, 'utf8').trim();
      } catch {
        // unreadable: the message goes without the pid
      }
      closeSync(fd);
      throw new TnetError(
        'conflict',
        `the state directory ${dir} is in use by another tnet process${holder ? ` (pid ${holder})` : ''}: ` +
          'one daemon per state directory, or each would remove what the other made; stop that process, ' +
          'or give this one its own --state-dir',
        { object: `state directory ${dir}` },
      );
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    h = { fd, users: 0 };
    held.set(file, h);
  }
  h.users++;
  let released = false;
  const entry = h;
  return {
    release() {
      if (released) return;
      released = true;
      if (--entry.users > 0) return;
      held.delete(file);
      flockRelease(entry.fd);
      closeSync(entry.fd);
    },
  };
}
