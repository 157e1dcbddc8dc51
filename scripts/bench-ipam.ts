/**
 * IPAM pool-request benchmark (lab scale): how long a pool request takes once thousands of pools
 * exist. A benchmark, not a test: it prints one JSON line per case on stdout.
 *
 * Command (no root needed, from the repository root; runs the TypeScript sources directly):
 *
 *   node --import ./node_modules/@tapjs/typescript/dist/esm/import.mjs scripts/bench-ipam.ts [--n 2000]
 *
 * Options: --n N (pools per case, default 2000), --one-tx (run each case inside one enclosing
 * transaction, which takes the per-commit fsync out and measures the algorithm alone).
 *
 * Cases, each on a fresh state database in a temp directory (removed afterwards):
 *   explicit-31   N explicit top-level /31 pools 10.0.0.0/31, 10.0.0.2/31, ... (a lab's links as pools)
 *   auto-24       N auto-chosen IPv4 pools, with the default pools' bases cut into /24s
 *                 (172.17.0.0/16 .. 172.24.0.0/13 and 192.168.0.0/16, size 24)
 *   children-31   N /31 child pools carved, lowest free first, from one /20 parent pool
 *
 * Each line: {case, n, total_ms, per_op_us_median, last_100_ms}: total wall time, the median of
 * the per-request times, and the time of the last 100 requests (what a request costs once the
 * database is full). A case the code does not support prints {case, error}.
 * Every request is its own IMMEDIATE transaction with synchronous=FULL (as in the daemon), unless
 * --one-tx; on a slow disk the commit, not the allocator, then dominates.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_V4_POOLS } from '../libnetwork/ipam/defaults.js';
import { Ipam, type PoolRequest } from '../libnetwork/ipam/ipam.js';
import { type Db, openDb } from '../libnetwork/store/db.js';

const { values } = parseArgs({
  options: { n: { type: 'string', default: '2000' }, 'one-tx': { type: 'boolean', default: false } },
});
const N = Number(values.n);
if (!Number.isInteger(N) || N < 1) throw new Error(`--n must be a positive integer, not ${values.n}`);
const oneTx = values['one-tx'] === true;

interface Case {
  name: string;
  options?: ConstructorParameters<typeof Ipam>[1];
  /** Runs once before the timed requests; returns what the requests need. */
  setup?: (ipam: Ipam) => string;
  request: (i: number, ctx: string | undefined) => PoolRequest;
}

const cases: Case[] = [
  {
    name: 'explicit-31',
    request: (i) => {
      const v = (10 << 24) + 2 * i;
      return { subnet: `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/31`, noGateway: true };
    },
  },
  {
    name: 'auto-24',
    options: { v4Pools: DEFAULT_V4_POOLS.map((p) => ({ base: p.base, size: 24 })) },
    request: () => ({}),
  },
  {
    name: 'children-31',
    // A parent pool that only carves children (PoolRequest.childrenOnly).
    setup: (ipam) => ipam.requestPool({ subnet: '10.128.0.0/20', childrenOnly: true }).id,
    request: (_i, parent) => ({ parent, prefixLength: 31, noGateway: true }),
  },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function runCase(c: Case): Record<string, unknown> {
  const dir = mkdtempSync(join(tmpdir(), 'tnet-bench-ipam-'));
  let db: Db | undefined;
  try {
    db = openDb(dir);
    const ipam = new Ipam(db, { ulaSeed: 'bench', ...(c.options ?? {}) });
    const ctx = c.setup?.(ipam);
    const times: number[] = [];
    const body = () => {
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        ipam.requestPool(c.request(i, ctx));
        times.push(performance.now() - t0);
      }
    };
    const t0 = performance.now();
    if (oneTx) db.transaction(body).immediate();
    else body();
    const total = performance.now() - t0;
    const pools = ipam.listPools().length - (ctx === undefined ? 0 : 1);
    if (pools !== N) throw new Error(`expected ${N} pools, found ${pools}`);
    return {
      case: c.name,
      n: N,
      total_ms: Math.round(total * 10) / 10,
      per_op_us_median: Math.round(median(times) * 1000),
      last_100_ms: Math.round(times.slice(-100).reduce((a, b) => a + b, 0) * 10) / 10,
      ...(oneTx ? { one_tx: true } : {}),
    };
  } catch (e) {
    return { case: c.name, n: N, error: e instanceof Error ? e.message : String(e) };
  } finally {
    db?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const c of cases) process.stdout.write(JSON.stringify(runCase(c)) + '\n');
