import type { Db } from '../store/db.js';

/** A closed interval [lo, hi] of address values. */
export interface Run {
  lo: bigint;
  hi: bigint;
}

/** Past every IPv4 and IPv6 address: what "no free space above" jumps to. */
export const BEYOND = 1n << 128n;

/** 16-byte big-endian key: memcmp order is numeric order. */
export function key(v: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(v >> 64n, 0);
  b.writeBigUInt64BE(v & 0xffff_ffff_ffff_ffffn, 8);
  return b;
}

export function unkey(b: Buffer): bigint {
  return (b.readBigUInt64BE(0) << 64n) | b.readBigUInt64BE(8);
}

/**
 * Free space kept as disjoint runs [lo, hi] in a table (`owner` TEXT, `lo` BLOB, `hi` BLOB, PRIMARY
 * KEY (owner, lo)), one set of runs per owner key. The run holding a value is one index lookup (the
 * run starting at or below it), so every operation costs a few lookups however many runs there are.
 * Used for the free addresses of a pool (ipam_free, keyed by pool id) and for the free address
 * space subnets are cut from (ipam_space, keyed by scope). Callers run these inside a transaction.
 */
export class Runs {
  private readonly q;

  constructor(db: Db, table: 'ipam_free' | 'ipam_space', column: 'pool' | 'scope') {
    this.q = {
      atOrBelow: db.prepare(`SELECT lo, hi FROM ${table} WHERE ${column} = ? AND lo <= ? ORDER BY lo DESC LIMIT 1`),
      above: db.prepare(`SELECT lo, hi FROM ${table} WHERE ${column} = ? AND lo > ? ORDER BY lo LIMIT 1`),
      insert: db.prepare(`INSERT INTO ${table} (${column}, lo, hi) VALUES (?, ?, ?)`),
      delete: db.prepare(`DELETE FROM ${table} WHERE ${column} = ? AND lo = ?`),
      deleteAll: db.prepare(`DELETE FROM ${table} WHERE ${column} = ?`),
    };
  }

  /** The run starting at or below `v` (it holds `v` only if its hi >= v). */
  atOrBelow(owner: string, v: bigint): Run | undefined {
    return toRun(this.q.atOrBelow.get(owner, key(v)));
  }

  /** The first run starting above `v`. */
  above(owner: string, v: bigint): Run | undefined {
    return toRun(this.q.above.get(owner, key(v)));
  }

  insert(owner: string, lo: bigint, hi: bigint): void {
    this.q.insert.run(owner, key(lo), key(hi));
  }

  /** Drops every run of `owner`. */
  clear(owner: string): void {
    this.q.deleteAll.run(owner);
  }

  /** The lowest free value in [lo, hi], or undefined. */
  firstIn(owner: string, lo: bigint, hi: bigint): bigint | undefined {
    if (lo > hi) return undefined;
    const below = this.atOrBelow(owner, lo);
    if (below && below.hi >= lo) return lo;
    const above = this.above(owner, lo);
    return above && above.lo <= hi ? above.lo : undefined;
  }

  /**
   * undefined if [lo, hi] is all free; otherwise where free space starts again above `lo` (the
   * next run's start, or BEYOND): what a search for a free aligned block jumps to. A run that
   * holds `lo` but ends before `hi` cannot hold an aligned block starting after `lo` either.
   */
  blockedUntil(owner: string, lo: bigint, hi: bigint): bigint | undefined {
    const run = this.atOrBelow(owner, lo);
    if (run && run.hi >= hi) return undefined;
    return this.above(owner, lo)?.lo ?? BEYOND;
  }

  /** Cuts [lo, hi] out of the run holding all of it. False, changing nothing, if no run does. */
  cut(owner: string, lo: bigint, hi: bigint): boolean {
    const run = this.atOrBelow(owner, lo);
    if (!run || run.hi < hi) return false;
    this.q.delete.run(owner, key(run.lo));
    if (run.lo < lo) this.insert(owner, run.lo, lo - 1n);
    if (hi < run.hi) this.insert(owner, hi + 1n, run.hi);
    return true;
  }

  /** Cuts whatever part of [lo, hi] is free (possibly none, possibly several runs). */
  cutAll(owner: string, lo: bigint, hi: bigint): void {
    let run = this.atOrBelow(owner, lo);
    if (!run || run.hi < lo) run = this.above(owner, lo);
    while (run && run.lo <= hi) {
      this.q.delete.run(owner, key(run.lo));
      if (run.lo < lo) this.insert(owner, run.lo, lo - 1n);
      if (hi < run.hi) this.insert(owner, hi + 1n, run.hi);
      run = this.above(owner, run.lo);
    }
  }

  /**
   * Gives [lo, hi] back, merged with the runs next to it so runs stay few. False, changing
   * nothing, if any of it is free already.
   */
  restore(owner: string, lo: bigint, hi: bigint): boolean {
    const left = this.atOrBelow(owner, hi);
    if (left && left.hi >= lo) return false;
    let from = lo;
    let to = hi;
    if (left && left.hi === lo - 1n) {
      this.q.delete.run(owner, key(left.lo));
      from = left.lo;
    }
    const right = this.above(owner, hi);
    if (right && right.lo === hi + 1n) {
      this.q.delete.run(owner, key(right.lo));
      to = right.hi;
    }
    this.insert(owner, from, to);
    return true;
  }
}

function toRun(row: unknown): Run | undefined {
  const r = row as { lo: Buffer; hi: Buffer } | undefined;
  return r && { lo: unkey(r.lo), hi: unkey(r.hi) };
}
