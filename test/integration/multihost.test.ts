/**
 * The multi-host harness itself (test/multihost.ts), with plain bridge networks only: each host's
 * daemon answers, the hosts' namespaces are separate, the hosts reach each other and etcd over the
 * underlay, a daemon's kill -9 and restart keep the host's sandboxes, and nothing is left behind.
 */
import { readdirSync } from 'node:fs';
import t from 'tap';
import { isolate } from './harness.js';

await isolate();
const { startCluster, UNDERLAY } = await import('../multihost.js');

t.test('two hosts: separate namespaces, one underlay, daemons that outlive nothing of theirs', async (t) => {
  const cluster = await startCluster(t, { hosts: 2 });
  const [a, b] = cluster.hosts as [import('../multihost.js').Host, import('../multihost.js').Host];

  // Each daemon answers its own socket, and each host is its own machine (hostname, links).
  // (hosts in parallel here and below: each step is a CLI start, ~0.3-1 s on a loaded machine)
  await Promise.all(
    [a, b].map(async (h) => {
      const ls = await h.tnet('network', 'ls');
      t.equal(ls.code, 0, `host ${h.name}: its daemon answers \`tnet network ls\` (${ls.err.trim()})`);
      t.equal((await h.exec('hostname')).out.trim(), h.hostname, `host ${h.name}: its own hostname`);
      t.match((await h.exec('ip -4 -o addr show dev eth0')).out, `${h.ip}/24`, `host ${h.name}: underlay address ${h.ip}`);
      const mac = (JSON.parse((await h.exec('ip -j link show dev eth0')).out) as { address: string }[])[0]?.address;
      t.equal((await h.exec('cat /sys/class/net/eth0/address')).out.trim(), mac, `host ${h.name}: its /sys shows its own links (eth0 ${mac}), not the machine's`);
    }),
  );
  t.not(a.daemonPid(), b.daemonPid(), 'one daemon per host');

  // The hosts reach each other and the store over the underlay (IPv4 and IPv6).
  t.equal((await a.exec(`ping -c1 -W2 ${b.ip}`)).code, 0, `a pings b (${b.ip}) over the underlay`);
  t.equal((await b.exec(`ping -c1 -W2 ${a.ip}`)).code, 0, `b pings a (${a.ip})`);
  t.equal((await a.exec(`ping -6 -c1 -W2 ${b.ip6}`)).code, 0, `a pings b over the IPv6 underlay (${b.ip6})`);
  if (cluster.etcd) {
    const e = cluster.etcd;
    const health = await b.exec(
      `ETCDCTL_API=3 etcdctl --endpoints=${e.url.replace(/^etcds?:/, 'https:')} --cacert=${e.tls.ca} --cert=${e.tls.cert} --key=${e.tls.key} endpoint health`,
    );
    t.equal(health.code, 0, `host b reaches etcd at ${UNDERLAY.gateway} with TLS client auth (${health.out.trim()}${health.err.trim()})`);
  }

  // The same names on both hosts: local-scope networks and sandboxes are each host's own.
  await Promise.all(
    [a, b].map(async (h) => {
      t.equal((await h.tnet('network', 'create', 'lan', '--subnet', '10.80.0.0/24')).code, 0, `host ${h.name}: network lan`);
      for (const s of ['s1', 's2']) t.equal((await h.tnet('sandbox', 'create', s)).code, 0, `host ${h.name}: sandbox ${s}`);
      t.equal((await h.tnet('connect', 'lan', 's1', '--ip', '10.80.0.10')).code, 0, `host ${h.name}: s1 on lan`);
      t.equal((await h.tnet('connect', 'lan', 's2', '--ip', '10.80.0.11')).code, 0, `host ${h.name}: s2 on lan`);
    }),
  );
  t.match((await a.exec('ls /run/netns')).out, /tn-s1/, 'a\'s sandbox s1 is in a\'s /run/netns');
  const onlyA = await a.tnet('sandbox', 'create', 'only-a');
  t.equal(onlyA.code, 0, 'a sandbox made on a only');
  t.notMatch((await b.exec('ls /run/netns')).out, /tn-only-a/, 'is not in b\'s /run/netns');
  t.same(readdirSync('/run/netns'), [], 'and the test namespace\'s /run/netns holds nothing of either host');
  t.equal((await a.sandboxExec('s1', 'ping -c1 -W2 10.80.0.11')).code, 0, 'a: s1 pings s2 on its bridge');
  t.equal((await b.sandboxExec('s1', 'ping -c1 -W2 10.80.0.11')).code, 0, 'b: s1 pings s2 on its bridge');
  t.equal((await a.tnet('connect', 'lan', 'only-a', '--ip', '10.80.0.20')).code, 0, 'only-a on a\'s lan');
  t.equal((await a.sandboxExec('s1', 'ping -c1 -W2 10.80.0.20')).code, 0, 'a: s1 pings only-a');
  t.not((await b.sandboxExec('s1', 'ping -c1 -W1 10.80.0.20')).code, 0, 'b: s1 does not reach a\'s only-a (each host\'s lan is its own L2)');

  // kill -9 of a's daemon: the host (holder) keeps the sandbox and its traffic; the restarted
  // daemon finds everything again.
  const before = a.daemonPid();
  await a.killDaemon();
  t.equal(a.daemonPid(), undefined, 'a\'s daemon is gone');
  t.equal((await a.tnet('network', 'ls')).code, 69, 'the harness does not let the command start a daemon of its own');
  t.match((await a.exec('ls /run/netns')).out, /tn-s1/, 'a\'s sandbox outlives its daemon');
  t.equal((await a.sandboxExec('s1', 'ping -c1 -W2 10.80.0.11')).code, 0, 'and its traffic too');
  await a.startDaemon();
  t.not(a.daemonPid(), before, 'a\'s daemon restarted (a new pid)');
  const sbs = JSON.parse((await a.tnet('sandbox', 'ls', '--json')).out) as { name: string }[];
  t.same(sbs.map((s) => s.name).sort(), ['only-a', 's1', 's2'], 'the restarted daemon knows a\'s sandboxes');
  t.equal((await a.sandboxExec('s1', 'ping -c1 -W2 10.80.0.11')).code, 0, 's1 still pings s2 after the restart');
  t.equal((await b.sandboxExec('s1', 'ping -c1 -W2 10.80.0.11')).code, 0, 'b was not disturbed');

  // A third host joins the underlay later.
  const c = await cluster.addHost();
  t.equal(c.name, 'c', 'the added host is c');
  t.equal((await c.exec(`ping -c1 -W2 ${a.ip}`)).code, 0, 'c pings a over the underlay');
  t.equal((await c.tnet('network', 'ls')).code, 0, 'c\'s daemon answers');

  await Promise.all(
    [a, b].map(async (h) => {
      const sbs = h === a ? ['s1', 's2', 'only-a'] : ['s1', 's2'];
      t.equal((await h.tnet('sandbox', 'rm', ...sbs)).code, 0, `host ${h.name}: sandboxes removed`);
      t.equal((await h.tnet('network', 'rm', 'lan')).code, 0, `host ${h.name}: network removed`);
    }),
  );
  await cluster.finish(t);
});
