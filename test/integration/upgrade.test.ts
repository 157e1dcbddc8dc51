/**
 * Upgrade: a state directory written by release 0.1.0 (test/fixtures/state-0.1.0.sql, made by that
 * release's own code: see make-state-0.1.0.ts) opens under this release. The migrations turn the
 * Docker flag into an owner and make the host interface optional; every network, sandbox,
 * endpoint, pool and allocation is found intact, the kernel is rebuilt from it (as after a
 * reboot), the sandboxes carry traffic, and nothing already handed out is handed out again.
 */
import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { assertClean, inSandbox, isolate, stateDir } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');

const FIXTURES = join(import.meta.dirname, '../fixtures');
interface Expected {
  instance: string;
  networks: { id: string; name: string; driver: string; docker: boolean; internal: boolean; subnets: { ipv4: string | null; ipv6: string | null }; gateways: { ipv4: string | null; ipv6: string | null }; pools: { ipv4: string | null; ipv6: string | null }; options: Record<string, string>; labels: Record<string, string> }[];
  sandboxes: { id: string; name: string; kind: string; netns: string }[];
  endpoints: { id: string; name: string; network: string; sandbox: string | null; ipv4: string | null; ipv6: string | null; mac: string; aliases: string[]; ports: unknown[]; hostIfname: string; ifname: string; gatewayProvider: boolean }[];
  pools: { id: string; addressSpace: string; subnet: string; range: string; gateway: string | null; aux: Record<string, string>; owner: string | null; shared: boolean; refs: number; addresses: { address: string; kind: string; owner: string | null }[] }[];
}
const want = JSON.parse(readFileSync(join(FIXTURES, 'state-0.1.0.json'), 'utf8')) as Expected;

t.test('a 0.1.0 state directory upgrades with every network, endpoint and allocation intact', async (t) => {
  const dir = stateDir(t);
  const db = new Database(join(dir, 'tnet.db'));
  db.exec(readFileSync(join(FIXTURES, 'state-0.1.0.sql'), 'utf8'));
  db.close();

  const c = await Controller.open({ stateDir: dir });
  t.equal(c.instance, want.instance, 'the instance (the owner tag on its kernel objects) is kept');
  t.equal(c.scope, '', 'existing state keeps the unscoped kernel names it made (tn-NAME, inet tnet)');

  const nets = c.networks();
  t.same(
    nets.map((n) => ({
      id: n.id, name: n.name, driver: n.driver, owner: n.owner, addresses: n.addresses, internal: n.internal,
      subnets: { ipv4: n.ipv4?.subnet.toString() ?? null, ipv6: n.ipv6?.subnet.toString() ?? null },
      gateways: { ipv4: n.ipv4?.gateway?.toString() ?? null, ipv6: n.ipv6?.gateway?.toString() ?? null },
      pools: { ipv4: n.ipv4?.poolId ?? null, ipv6: n.ipv6?.poolId ?? null }, options: n.options, labels: n.labels,
    })).sort((a, b) => a.id.localeCompare(b.id)),
    want.networks.map((n) => ({
      id: n.id, name: n.name, driver: n.driver, owner: n.docker ? 'docker' : '', addresses: n.docker ? 'external' : 'tnet', internal: n.internal,
      subnets: n.subnets, gateways: n.gateways, pools: n.pools, options: n.options, labels: n.labels,
    })).sort((a, b) => a.id.localeCompare(b.id)),
    'every network: the Docker flag became owner "docker" with external addresses',
  );
  t.same(
    c.sandboxes().map((s) => ({ id: s.id, name: s.name, kind: s.kind, netns: s.netns, owner: s.owner })).sort((a, b) => a.id.localeCompare(b.id)),
    want.sandboxes.map((s) => ({ id: s.id, name: s.name, kind: s.kind, netns: s.netns, owner: '' })).sort((a, b) => a.id.localeCompare(b.id)),
    'every sandbox, unowned',
  );
  const netName = new Map(nets.map((n) => [n.id, n.name]));
  t.same(
    c.endpoints().map((e) => ({
      id: e.id, name: e.name, network: netName.get(e.networkId), sandbox: e.sandboxId ? c.sandbox(e.sandboxId).name : null,
      ipv4: e.ipv4?.toString() ?? null, ipv6: e.ipv6?.toString() ?? null, mac: e.mac, aliases: e.aliases, ports: e.ports,
      hostIfname: e.hostIfname, ifname: e.ifname, gatewayProvider: e.gatewayProvider,
    })).sort((a, b) => a.id.localeCompare(b.id)),
    want.endpoints.map((e) => ({
      id: e.id, name: e.name, network: e.network, sandbox: e.sandbox, ipv4: e.ipv4, ipv6: e.ipv6, mac: e.mac, aliases: e.aliases, ports: e.ports,
      hostIfname: e.hostIfname, ifname: e.ifname, gatewayProvider: e.gatewayProvider,
    })).sort((a, b) => a.id.localeCompare(b.id)),
    'every endpoint with its addresses, MAC, aliases, ports and host interface',
  );
  const pools = await c.pools();
  const got = [];
  for (const p of pools) {
    got.push({
      id: p.id, addressSpace: p.addressSpace, subnet: p.subnet.toString(), range: p.range.toString(), gateway: p.gateway?.toString() ?? null,
      aux: Object.fromEntries(Object.entries(p.auxAddresses).map(([k, a]) => [k, a.toString()])), owner: p.owner ?? null, shared: p.shared, refs: p.refs,
      addresses: (await c.addressesOf(p.id)).map((a) => ({ address: a.address.toString(), kind: a.kind, owner: a.owner ?? null })),
    });
  }
  t.same(
    got.sort((a, b) => a.id.localeCompare(b.id)),
    want.pools.map((p) => ({
      id: p.id, addressSpace: p.addressSpace, subnet: p.subnet, range: p.range, gateway: p.gateway, aux: p.aux, owner: p.owner, shared: p.shared, refs: p.refs,
      addresses: p.addresses,
    })).sort((a, b) => a.id.localeCompare(b.id)),
    'every pool and every allocation with its kind and owner',
  );

  // The kernel is rebuilt from the upgraded state (this namespace is fresh, as after a reboot).
  const lab = c.endpoints().filter((e) => e.sandboxId);
  for (const e of lab) {
    const sb = c.sandbox(e.sandboxId!).name;
    t.match(inSandbox(sb, `ip -o addr show dev ${e.ifname}`).out, new RegExp(`${e.ipv4!.toString().replace(/\./g, '\\.')}/`), `${sb} ${e.ifname} has ${e.ipv4} again`);
  }
  const [first, ...others] = lab.filter((e) => netName.get(e.networkId) === 'frontend');
  for (const e of others) {
    t.equal(inSandbox(c.sandbox(first!.sandboxId!).name, `ping -c1 -W1 ${e.ipv4}`).code, 0, `frontend: ${c.sandbox(first!.sandboxId!).name} pings ${e.ipv4}`);
  }

  // Nothing already handed out is handed out again.
  const taken = new Set(want.pools.flatMap((p) => p.addresses.map((a) => a.address)));
  await c.createSandbox({ name: 'newcomer' });
  const ep = await c.connect('frontend', 'newcomer');
  t.notOk(taken.has(ep.ipv4!.toString()), `a new endpoint gets a free address (${ep.ipv4})`);

  for (const s of c.sandboxes()) await c.deleteSandbox(s.name);
  for (const n of c.networks()) await c.deleteNetwork(n.id, { owner: n.owner, removeEndpoints: true });
  c.close();
  await assertClean(t);
});
