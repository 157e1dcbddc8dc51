/**
 * The global store against a real etcd with TLS client authentication (test/etcd-harness.ts),
 * inside this test's own network namespace: the shared contract (test/global-store-contract.ts:
 * leases, watches across a restart and a compaction, concurrent network and address allocation,
 * duplicate VTEPs), plus what needs a real server: a client without a certificate is refused
 * clearly, and a host killed with -9 (a child process) is withdrawn within TTL + 1 s.
 */
import { spawn } from 'node:child_process';
import t from 'tap';
import { assertClean, isolate } from './harness.js';

const child = process.env.TNET_GLOBAL_STORE_CHILD;
if (child) {
  // A "host": opens the store, publishes its VTEP and one peer, says so, and waits to be killed.
  const { EtcdGlobalStore } = await import('../../libnetwork/store/etcd.js');
  const { PeerTable } = await import('../../libnetwork/store/peers.js');
  const o = JSON.parse(child) as { url: string; ca: string; cert: string; key: string; ttl: number };
  const s = await EtcdGlobalStore.open(o);
  const p = new PeerTable(s, 'host-killed');
  await p.publishVtep('192.0.2.9');
  await p.publishPeer({ network: 'killnet', endpointId: 'ek', ip: '10.9.0.2', mac: '02:00:00:00:09:02', name: 'k1' });
  process.stdout.write('ready\n');
  setInterval(() => undefined, 1000);
} else {
  await isolate();
  const { startEtcd } = await import('../etcd-harness.js');
  const { EtcdGlobalStore } = await import('../../libnetwork/store/etcd.js');
  const { PeerTable } = await import('../../libnetwork/store/peers.js');
  const { isTnetError } = await import('../../libnetwork/errors.js');
  const { CASES, clean } = await import('../global-store-contract.js');
  type ContractEnv = import('../global-store-contract.js').ContractEnv;

  if (!(await import('node:fs')).existsSync('/usr/bin/etcd')) {
    t.plan(0, 'etcd is not installed (Debian etcd-server): run scripts/setup');
    process.exit(0);
  }
  const TTL = 2;
  const etcd = await startEtcd();
  t.teardown(() => etcd.destroy());
  const opts = { url: etcd.url, ...etcd.tls, ttl: TTL, timeoutMs: 1500 };
  const env: ContractEnv = {
    ttl: TTL,
    open: (o) => EtcdGlobalStore.open({ ...opts, ttl: o?.ttl ?? TTL }),
    compact: async () => void (await etcd.compact()),
    outage: { stop: () => etcd.stop(), start: () => etcd.start() },
  };

  t.test('a client without a certificate is refused, with the endpoint and the fix named', async (t) => {
    const err = await EtcdGlobalStore.open({ url: etcd.url, ca: etcd.tls.ca, ttl: TTL, timeoutMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(isTnetError(err, 'unavailable'), `unavailable: ${String(err)}`);
    t.match((err as Error).message, etcd.url.replace('etcds://', ''), 'names the endpoint');
    const refused = await EtcdGlobalStore.open({ url: etcd.url.replace(/:(\d+)$/, ':1'), ...etcd.tls, ttl: TTL, timeoutMs: 1000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(isTnetError(refused, 'unavailable'), 'a closed port: unavailable');
    t.match((refused as Error).message, /127\.0\.0\.1:1/);
    await t.rejects(EtcdGlobalStore.open({ url: etcd.url, ca: etcd.tls.ca, cert: etcd.tls.cert }), { code: 'invalid-argument' }, 'a certificate without its key');
    await t.rejects(EtcdGlobalStore.open({ url: etcd.url, ca: '/nonexistent/ca.pem' }), { code: 'invalid-argument', message: /CA "\/nonexistent\/ca.pem" cannot be read/ });
  });

  t.test('plain etcd:// (no TLS) works the same', async (t) => {
    const plain = await startEtcd({ tls: false });
    t.teardown(() => plain.destroy());
    t.match(plain.url, /^etcd:\/\//);
    const s = await EtcdGlobalStore.open({ url: plain.url, ttl: TTL });
    t.equal(await s.create('/test/plain', 'v', { leased: true }), true);
    t.equal((await s.get('/test/plain'))?.lease, s.lease, 'under the lease');
    await s.close();
    const s2 = await EtcdGlobalStore.open({ url: plain.url, ttl: TTL });
    t.equal(await s2.get('/test/plain'), undefined, 'revoked by close()');
    await s2.close();
    // etcd authentication: a user and password (in the options or the URL) are used; a wrong one is refused clearly.
    plain.ctl('user', 'add', 'root:rootpw');
    plain.ctl('auth', 'enable');
    const authed = await EtcdGlobalStore.open({ url: plain.url.replace('etcd://', 'etcd://root:rootpw@'), ttl: TTL });
    t.equal(await authed.create('/test/auth', 'v'), true, 'USER:PASSWORD@ in the URL works');
    await authed.delete('/test/auth');
    await authed.close();
    const opted = await EtcdGlobalStore.open({ url: plain.url, username: 'root', password: 'rootpw', ttl: TTL });
    t.ok(await opted.list('/test/'), 'username/password options work');
    await opted.close();
    const wrong = await EtcdGlobalStore.open({ url: plain.url, username: 'root', password: 'nope', ttl: TTL, timeoutMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(isTnetError(wrong, 'unavailable'), `a wrong password: ${String(wrong)}`);
    t.match((wrong as Error).message, /refused the credentials/);
    t.notMatch((wrong as Error).message, /nope/, 'the password is not in the message');
  });

  for (const c of CASES) {
    t.test(c.name, async (t) => {
      await c.run(env);
      t.pass(c.name);
    });
  }

  t.test('a lease etcd ended under a live host: lease-lost, a new lease, its keys written again', async (t) => {
    const a = await env.open();
    const b = await env.open();
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    const events: import('../../libnetwork/store/global.js').StoreEvent[] = [];
    a.onStoreEvent((e) => events.push(e));
    await a.put('/test/renew/mine', '1', { leased: true });
    await a.put('/test/renew/taken', 'a', { leased: true });
    const old = a.lease;
    // What etcd does to a host it has not heard from for the TTL, done at once: the lease ends.
    etcd.ctl('lease', 'revoke', BigInt(old).toString(16));
    await b.put('/test/renew/taken', 'b'); // another host takes one of its keys meanwhile
    const end = Date.now() + (TTL + 2) * 1000;
    while (!events.some((e) => e.type === 'lease-renewed') && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    t.same(events.filter((e) => e.type.startsWith('lease')).map((e) => e.type), ['lease-lost', 'lease-renewed']);
    const renewed = events.find((e) => e.type === 'lease-renewed') as Extract<(typeof events)[number], { type: 'lease-renewed' }>;
    t.same(renewed.republished, ['/test/renew/mine'], 'its own key is back');
    t.same(renewed.conflicts, ['/test/renew/taken'], 'the key taken meanwhile is reported, not overwritten');
    t.not(a.lease, old, 'a new lease');
    t.equal((await b.get('/test/renew/mine'))?.lease, a.lease, 'under the new lease');
    t.equal((await b.get('/test/renew/taken'))?.value, 'b');
    await b.commit([], [{ deletePrefix: '/test/' }]);
  });

  t.test('a host killed with -9: its peers leave every watcher within TTL + 1 s', async (t) => {
    const s = await env.open();
    t.teardown(() => s.close());
    const w = new PeerTable(s, 'host-watcher').watchPeers('killnet');
    const it = w[Symbol.asyncIterator]();
    const proc = spawn(process.execPath, [...process.execArgv, process.argv[1]!], {
      env: { ...process.env, TNET_GLOBAL_STORE_CHILD: JSON.stringify(opts) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.teardown(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    });
    await new Promise<void>((resolve, reject) => {
      proc.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      proc.once('exit', (code) => reject(new Error(`the child host exited (${code}) before publishing`)));
    });
    // Its peer arrives (in the first resync or as an add).
    let seen = false;
    while (!seen) {
      const r = await it.next();
      if (r.done) break;
      const e = r.value;
      seen = (e.type === 'resync' && e.peers.some((p) => p.endpointId === 'ek')) || (e.type === 'add' && e.peer.endpointId === 'ek');
    }
    t.ok(seen, 'the remote peer was delivered');
    proc.kill('SIGKILL');
    const t0 = Date.now();
    const r = await Promise.race([it.next(), new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), (TTL + 4) * 1000))]);
    const ms = Date.now() - t0;
    t.not(r, 'timeout', 'the dead host was withdrawn');
    if (r !== 'timeout') t.same(!r.done && r.value.type === 'remove' && r.value.peer.endpointId, 'ek', 'a remove of its peer');
    t.ok(ms <= (TTL + 1) * 1000, `withdrawn ${ms} ms after kill -9 (TTL ${TTL} s)`);
    t.same((await new PeerTable(s, 'host-watcher').hosts()).map((h) => h.host), [], 'its VTEP record expired too');
    await w.close();
    await clean(s);
  });

  t.test('nothing is left: no key in etcd, no process, no link', async (t) => {
    const s = await env.open();
    await clean(s);
    t.pass('no key is left in etcd');
    await s.close();
    await etcd.destroy();
    t.equal(etcd.pid(), undefined, 'etcd stopped');
    await assertClean(t);
  });
}
