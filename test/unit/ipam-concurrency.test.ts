import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ipam } from '../../libnetwork/ipam/ipam.js';
import { openDb } from '../../libnetwork/store/db.js';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-ipam-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('one database, several connections', () => {
  it('survives closing and reopening the database', () => {
    let db = openDb(dir);
    let ipam = new Ipam(db);
    const p = ipam.requestPool({ subnet: '10.0.0.0/24', owner: 'net1', auxAddresses: { h: '10.0.0.9' } });
    ipam.requestAddress(p.id, { owner: 'a' });
    ipam.requestAddress(p.id, { address: '10.0.0.50', owner: 'b' });
    ipam.holdAddress(p.id, '10.0.0.3', 'c');
    const pools = ipam.listPools();
    const addresses = ipam.listAddresses(p.id);
    db.close();

    db = openDb(dir);
    ipam = new Ipam(db);
    expect(ipam.listPools()).toEqual(pools);
    expect(ipam.listAddresses(p.id)).toEqual(addresses);
    expect(ipam.requestAddress(p.id).toString()).toBe('10.0.0.4'); // .2 allocated, .3 held
    expect(ipam.requestPool({}).subnet.toString()).toBe('172.17.0.0/16');
    db.close();
  });

  it('two Ipam instances on two connections, interleaved, never share an address', () => {
    const db1 = openDb(dir);
    const db2 = openDb(dir);
    try {
      const one = new Ipam(db1);
      const two = new Ipam(db2);
      const p = one.requestPool({ subnet: '10.1.0.0/22' });
      // Pools made by one connection are seen and respected by the other.
      expect(two.getPool(p.id).subnet.toString()).toBe('10.1.0.0/22');
      expect(() => two.requestPool({ subnet: '10.1.2.0/24' })).toThrow(/overlaps 10\.1\.0\.0\/22/);
      expect(two.requestPool({}).subnet.toString()).toBe('172.17.0.0/16');
      expect(one.requestPool({}).subnet.toString()).toBe('172.18.0.0/16');
      const got: bigint[] = [];
      for (let i = 0; i < 500; i++) {
        got.push(one.requestAddress(p.id, { owner: 'one' }).value);
        got.push(two.requestAddress(p.id, { owner: 'two' }).value);
        if (i % 50 === 0) two.releaseAddress(p.id, one.requestAddress(p.id).toString());
      }
      expect(new Set(got).size).toBe(1000);
      expect(one.listAddresses(p.id)).toEqual(two.listAddresses(p.id));
    } finally {
      db1.close();
      db2.close();
    }
  });
});

// Separate processes: the real test of "allocation is atomic in the store". Each worker is the
// library in another Node process (run by vite-node, which compiles the TypeScript on the fly).
const viteNode = fileURLToPath(new URL('../../node_modules/.bin/vite-node', import.meta.url));
const ipamModule = fileURLToPath(new URL('../../libnetwork/ipam/ipam.ts', import.meta.url));
const dbModule = fileURLToPath(new URL('../../libnetwork/store/db.ts', import.meta.url));

/**
 * Writes and starts a worker that prints "ready", waits for a line on stdin, then allocates `count`
 * addresses, printing each once requestAddress has returned (so once it is committed).
 */
function worker(stateDir: string, poolId: string, owner: string, count: number): ChildProcess {
  const script = join(dir, `worker-${owner}.ts`);
  writeFileSync(
    script,
    `import { Ipam } from ${JSON.stringify(ipamModule)};
import { openDb } from ${JSON.stringify(dbModule)};
const ipam = new Ipam(openDb(${JSON.stringify(stateDir)}));
console.log('ready');
process.stdin.once('data', async () => {
  for (let i = 0; i < ${count}; i++) {
    process.stdout.write(ipam.requestAddress(${JSON.stringify(poolId)}, { owner: ${JSON.stringify(owner)} }) + '\\n');
    // Like a daemon between requests: give the other process a moment to take the write lock.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  process.exit(0);
});
`,
  );
  return spawn(viteNode, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
}

/** Lines the child prints; `onLine` sees each as it comes. Resolves when the child exits. */
function lines(child: ChildProcess, onLine: (line: string) => void = () => {}): Promise<string[]> {
  const out: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    out.push(l);
    onLine(l);
  });
  return new Promise((resolve) => child.on('close', () => resolve(out)));
}

describe('separate processes', () => {
  it('two processes allocating at once get distinct addresses', async () => {
    const state = join(dir, 'state');
    const setup = openDb(state);
    const pool = new Ipam(setup).requestPool({ subnet: 'fd00:77::/64' });
    setup.close();

    const kids = [worker(state, pool.id, 'a', 400), worker(state, pool.id, 'b', 400)];
    let ready = 0;
    const outputs = kids.map((k) =>
      lines(k, (l) => {
        // Start both only when both are loaded, so their allocations really overlap in time.
        if (l === 'ready' && ++ready === kids.length) for (const c of kids) c.stdin!.write('go\n');
      }),
    );
    const [a, b] = (await Promise.all(outputs)).map((o) => o.filter((l) => l !== 'ready'));
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0]);
    expect(a).toHaveLength(400);
    expect(b).toHaveLength(400);
    expect(new Set([...a!, ...b!]).size).toBe(800);

    const db = openDb(state);
    try {
      const all = new Ipam(db).listAddresses(pool.id).filter((x) => x.kind === 'dynamic');
      expect(all.map((x) => x.address.toString()).sort()).toEqual([...a!, ...b!].sort());
      // First-free still holds across processes: the 800 dynamic addresses are ::2 .. ::321.
      expect(all[0]!.address.toString()).toBe('fd00:77::2');
      expect(all.at(-1)!.address.toString()).toBe('fd00:77::321');
      // The owners are interleaved in address order: the two really ran at the same time.
      const switches = all.filter((x, i) => i > 0 && x.owner !== all[i - 1]!.owner).length;
      expect(switches).toBeGreaterThan(1);
    } finally {
      db.close();
    }
  }, 30_000);

  it('kill -9 loses no allocation that returned', async () => {
    const state = join(dir, 'state');
    const setup = openDb(state);
    const pool = new Ipam(setup).requestPool({ subnet: '10.3.0.0/16' });
    setup.close();

    const kid = worker(state, pool.id, 'k', 60_000);
    const printed = await lines(kid, (l) => {
      if (l === 'ready') kid.stdin!.write('go\n');
      else if (l === '10.3.1.44') kid.kill('SIGKILL'); // mid-stream, while it is still allocating
    });
    expect(kid.signalCode).toBe('SIGKILL');
    const returned = printed.filter((l) => l !== 'ready');
    expect(returned.length).toBeGreaterThanOrEqual(299); // 10.3.0.2 .. 10.3.1.44

    const db = openDb(state);
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      const ipam = new Ipam(db);
      const stored = new Set(ipam.listAddresses(pool.id).map((x) => x.address.toString()));
      for (const a of returned) expect(stored.has(a)).toBe(true);
      // The free list agrees with the allocations: the next address follows the last one stored.
      const dynamic = ipam.listAddresses(pool.id).filter((x) => x.kind === 'dynamic');
      expect(ipam.requestAddress(pool.id).value).toBe(dynamic.at(-1)!.address.value + 1n);
    } finally {
      db.close();
    }
  }, 30_000);
});
