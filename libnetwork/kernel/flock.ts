import koffi from 'koffi';
import { lastErrno } from './libc.js';

/**
 * flock(2), which Node does not expose: an advisory lock on an open file that the kernel drops
 * when its holder exits, however it exits (a kill -9 included), so a lock never outlives its process.
 */
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

let flockFn: ((fd: number, op: number) => number) | undefined;

function flock(fd: number, op: number): number {
  flockFn ??= koffi.load('libc.so.6').func('int flock(int fd, int op)') as (fd: number, op: number) => number;
  return flockFn(fd, op);
}

/** Takes an exclusive lock on `fd` without waiting: true if taken, false if another holds it. */
export function flockTry(fd: number): boolean {
  if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = lastErrno();
  if (errno === 'EWOULDBLOCK' || errno === 'EAGAIN') return false;
  throw new Error(`flock: ${errno}`);
}

export function flockRelease(fd: number): void {
  flock(fd, LOCK_UN);
}
