/**
 * The driver conformance suite: every built-in driver goes through the same life, with real
 * traffic, and leaves nothing behind: create, join (two sandboxes ping), leave and join again,
 * restore after a restart of the controller, a kill -9 at each crash point of a join and of a
 * network create (repaired by the next start), delete. A new driver registers a fixture below
 * (what its networks need: options, a parent link...) and must pass unchanged.
 *
 * The crash cases run the controller in a child process (this file, with TNET_CONFORMANCE_CHILD)
 * that kills itself at the named failpoint (libnetwork/failpoint.ts).
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { assertClean, inSandbox, isolate, leftovers, ping, sh, stateDir } from './harness.js';

await isolate();
type Controller = import('../../libnetwork/controller.js').Controller;
const { builtinDrivers } = await import('../../drivers/index.js');

interface Fixture {
  readonly options?: Record<string, string>;
  readonly setup?: () => Promise<void> | void;
  /** Opens the controller its networks need (default: a plain one). */
  readonly open?: (dir: string) => Promise<Controller>;
  /** A network create is committed for every host once the global store has it: a crash after that leaves it made. */
  readonly createCommitsGlobally?: boolean;
}

/** What each driver's networks need here. A driver without a fixture fails the suite: add one. */
const FIXTURES: Record<string, Fixture> = {
  bridge: {},
  // A veth as the parent (the test's own link, xh-*: not tnet's), its far end up for carrier.
  macvlan: {
    options: { parent: 'xh-mvp' },
    setup: () => void sh('ip link add xh-mvp type veth peer name xh-mvq && ip link set xh-mvq up && ip link set xh-mvp up'),
  },
  // A host of a cluster of one: a real etcd (plain, on loopback) and a VTEP on a veth of the test's.
  overlay: {
    setup: async () => {
      sh('ip link add xh-ov0 type veth peer name xh-ov1 && ip addr add 10.79.0.1/24 dev xh-ov0 && ip link set xh-ov1 up && ip link set xh-ov0 up');
      const { startEtcd } = await import('../etcd-harness.js');
      const etcd = await startEtcd({ tls: false });
      process.env.TNET_CONFORMANCE_STORE = etcd.url;
      t.teardown(() => etcd.destroy());
    },
    open: async (dir) => {
      const { Controller } = await import('../../libnetwork/controller.js');
      const { EtcdGlobalStore } = await import('../../libnetwork/store/etcd.js');
      const { IpAddr } = await import('../../libnetwork/ipam/address.js');
      const c = await Controller.open({ stateDir: dir, vtep: IpAddr.parse('10.79.0.1') });
      const store = await EtcdGlobalStore.open({ url: process.env.TNET_CONFORMANCE_STORE!, ttl: 2 });
      await c.joinCluster(store);
      const close = c.close.bind(c);
      // The store goes with the controller here (the daemon closes its own); the lease is left to
      // expire, as a restart does.
      c.close = () => {
        close();
        void store.close({ revoke: false });
      };
      return c;
    },
    createCommitsGlobally: true,
  },
};

async function openFor(type: string, dir: string): Promise<Controller> {
  const fixture = FIXTURES[type];
  if (fixture?.open) return fixture.open(dir);
  const { Controller } = await import('../../libnetwork/controller.js');
  return Controller.open({ stateDir: dir });
}

const child = process.env.TNET_CONFORMANCE_CHILD;
if (child) {
  // The child: open the state, do one operation, and (with TNET_FAILPOINT) die in the middle of it.
  const [dir, type, op, ...args] = JSON.parse(child) as [string, string, string, ...string[]];
  const c = await openFor(type, dir);
  if (op === 'connect') await c.connect(args[0]!, args[1]!);
  else if (op === 'disconnect') await c.disconnect(args[0]!, args[1]!);
  else if (op === 'create-network') await c.createNetwork({ name: args[0]!, driver: args[1]!, subnet: args[2]! });
  c.close();
  process.exit(0);
}

/** Runs the child step; true when it was killed (SIGKILL) as armed. */
function crash(dir: string, type: string, failpoint: string, op: string, ...args: string[]): boolean {
  const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!], {
    env: { ...process.env, TNET_CONFORMANCE_CHILD: JSON.stringify([dir, type, op, ...args]), TNET_FAILPOINT: failpoint },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return r.signal === 'SIGKILL';
}

const addrOf = (c: Controller, sb: string) => c.endpointsOfSandbox(c.sandbox(sb).id)[0]?.ipv4?.toString();

for (const factory of builtinDrivers) {
  t.test(`driver ${factory.type} conforms`, async (t) => {
    const fixture = FIXTURES[factory.type];
    if (!fixture) return t.fail(`driver ${factory.type} has no conformance fixture: add one to FIXTURES`);
    await fixture.setup?.();
    const dir = stateDir(t);
    const open = () => openFor(factory.type, dir);
    let c = await open();
    const net = await c.createNetwork({ name: 'conf', driver: factory.type, subnet: '10.77.0.0/24', options: fixture.options });
    t.equal(net.driver, factory.type, 'the network has the driver asked for');
    for (const s of ['a', 'b', 'c']) await c.createSandbox({ name: s });
    await c.connect('conf', 'a');
    await c.connect('conf', 'b');
    t.ok(ping('a', addrOf(c, 'b')!), 'join: a pings b');
    t.match(inSandbox('a', 'ip -4 -o addr show dev eth0').out, /10\.77\.0\.\d+\/24/, 'the core configured the address in the sandbox');

    await c.disconnect('conf', 'a');
    t.equal(inSandbox('a', 'ip -o link show dev eth0').code === 0, false, 'leave: the interface is gone from the sandbox');
    await c.connect('conf', 'a');
    t.ok(ping('b', addrOf(c, 'a')!), 'join again: b pings a');

    // Restore after a restart: same kernel objects, same traffic.
    const before = leftovers();
    c.close();
    c = await open();
    t.same(leftovers(), before, 'restore: the kernel objects are the same ones');
    t.ok(ping('a', addrOf(c, 'b')!), 'restore: a still pings b');

    // A kill -9 at each point of a join: the next start undoes it, nothing is left, the others work.
    for (const point of ['connect:allocated', 'connect:joined', 'connect:configured']) {
      c.close();
      t.ok(crash(dir, factory.type, point, 'connect', 'conf', 'c'), `kill -9 at ${point}`);
      c = await open();
      t.same(c.endpointsOfSandbox(c.sandbox('c').id), [], `${point}: the interrupted endpoint is undone`);
      t.same(leftovers(), before, `${point}: nothing half-made is left`);
      await c.connect('conf', 'c');
      t.ok(ping('c', addrOf(c, 'a')!), `${point}: c joins afterwards and pings a`);
      await c.disconnect('conf', 'c');
    }
    // ... and of a leave: the endpoint is gone, its address free again.
    await c.connect('conf', 'c');
    const cAddr = addrOf(c, 'c');
    c.close();
    t.ok(crash(dir, factory.type, 'disconnect:left', 'disconnect', 'conf', 'c'), 'kill -9 at disconnect:left');
    c = await open();
    t.same(c.endpointsOfSandbox(c.sandbox('c').id), [], 'disconnect:left: the endpoint is finished off');
    t.same(leftovers(), before, 'disconnect:left: nothing is left of it');
    t.equal((await c.connect('conf', 'c')).ipv4?.toString(), cAddr, 'its address was released and is handed out again');
    await c.disconnect('conf', 'c');
    // ... and of a network create.
    for (const point of ['create-network:pools', 'create-network:made']) {
      c.close();
      t.ok(crash(dir, factory.type, point, 'create-network', 'half', factory.type, '10.78.0.0/24'), `kill -9 at ${point}`);
      c = await open();
      if (fixture.createCommitsGlobally) {
        t.same(c.networks().map((n) => n.name).sort(), ['conf', 'half'], `${point}: the network the global store has is made here too`);
        await c.deleteNetwork('half');
        t.same(leftovers(), before, `${point}: deleting it leaves nothing`);
        continue;
      }
      t.same(c.networks().map((n) => n.name), ['conf'], `${point}: the half-made network is undone`);
      t.same(leftovers(), before, `${point}: nothing of it is left in the kernel`);
      t.same((await c.pools()).map((p) => p.subnet.toString()).filter((s) => s.startsWith('10.78.')), [], `${point}: its pool is released`);
    }

    for (const s of ['a', 'b', 'c']) await c.deleteSandbox(s);
    await c.deleteNetwork('conf');
    c.close();
    await assertClean(t);
  });
}
