/**
 * Several tnet instances share one host: the host's own (unscoped, as the daemon runs it) and a CI
 * test's library instance (scoped by default), each with its own state, in one network namespace.
 * Same sandbox and network names in both; neither's start, restart, teardown or reconcile
 * disturbs the other's namespaces, links, nft table or traffic.
 */
import t from 'tap';
import { assertClean, isolate, leftovers, sh, stateDir } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
type Controller = import('../../libnetwork/controller.js').Controller;

type C = Controller;
const nsOf = (c: C, sb: string) => c.sandbox(sb).netns.slice('/run/netns/'.length);
const addr = (c: C, sb: string) => c.endpointsOfSandbox(c.sandbox(sb).id)[0]!.ipv4!.toString();
const pings = (c: C, from: string, to: string) => sh(`ip netns exec ${nsOf(c, from)} ping -c1 -W1 ${addr(c, to)}`).code === 0;

t.test('the host instance and a library instance in one namespace: same names, no interference', async (t) => {
  const hostDir = stateDir(t);
  const libDir = stateDir(t);
  const host = await Controller.open({ stateDir: hostDir, scope: '' });
  let lib = await Controller.open({ stateDir: libDir });
  t.equal(host.scope, '', 'the host instance is unscoped');
  t.match(lib.scope, /^[0-9a-f]{8}$/, 'a library instance is scoped by its id unless told otherwise');

  for (const c of [host, lib]) {
    await c.createNetwork({ name: 'web' });
    await c.createSandbox({ name: 'a' });
    await c.createSandbox({ name: 'b' });
    await c.connect('web', 'a');
    await c.connect('web', 'b');
  }
  t.equal(nsOf(host, 'a'), 'tn-a', 'host instance: tn-NAME');
  t.equal(nsOf(lib, 'a'), `tn-${lib.scope}-a`, 'library instance: tn-SCOPE-NAME');
  t.not(host.network('web').ipv4!.subnet.toString(), lib.network('web').ipv4!.subnet.toString(), 'auto-chosen subnets do not collide (each avoids the other\'s routes)');
  const tables = sh('nft list tables').out;
  t.match(tables, /table inet tnet\n/, 'the host instance has table inet tnet');
  t.match(tables, new RegExp(`table inet tnet-${lib.scope}`), 'the library instance has its own table');
  t.ok(pings(host, 'a', 'b') && pings(lib, 'a', 'b'), 'both instances carry traffic');
  t.notOk(sh(`ip netns exec ${nsOf(lib, 'a')} ping -c1 -W1 ${addr(host, 'b')}`).code === 0, 'and stay isolated from each other');

  // A restart of the library instance (its reconcile) leaves the host instance's objects alone.
  const hostObjects = () => {
    const l = leftovers();
    return { links: l.links.filter((x) => host.endpoints().some((e) => e.hostIfname === x) || x === host.networkDetails(host.network('web')).bridge), netns: l.netns.filter((n) => !n.startsWith(`tn-${lib.scope}-`)) };
  };
  const before = hostObjects();
  lib.close();
  lib = await Controller.open({ stateDir: libDir });
  t.same(hostObjects(), before, 'reconcile of one instance keeps the other\'s links and namespaces');
  t.ok(pings(host, 'a', 'b'), 'the host instance still carries traffic after the other restarts');

  // Opening the library state as another scope is refused: its kernel names would change under it.
  await t.rejects(Controller.open({ stateDir: libDir, scope: '' }), { code: 'conflict', message: /scope/ }, 'a state directory keeps its scope');

  // The library instance goes entirely: its table with it, the host instance's stays and works.
  for (const s of ['a', 'b']) await lib.deleteSandbox(s);
  await lib.deleteNetwork('web');
  lib.close();
  t.notMatch(sh('nft list tables').out, /tnet-/, 'the library instance\'s table is gone');
  t.match(sh('nft list table inet tnet').out, /fwd_in/, 'the host instance\'s table is intact');
  t.same(hostObjects(), before, 'and so are its links and namespaces');
  t.ok(pings(host, 'a', 'b'), 'the host instance still carries traffic');

  for (const s of ['a', 'b']) await host.deleteSandbox(s);
  await host.deleteNetwork('web');
  host.close();
  await assertClean(t);
});
