/**
 * Issue 13 items 5 and 6 on the lab face, with real namespaces and traffic: a network with
 * libnetwork's generic container_iface_prefix and an unknown key is made (the key shown as
 * ignored), bad values are still refused with nothing changed, `-p 80` gets a host port from the
 * kernel's ephemeral range that the sandbox answers on, and the control API's GET /ports/SANDBOX
 * (what `tnet port SANDBOX` prints) shows that mapping.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { assertClean, background, inSandbox, isolate, leftovers, netnsOf, sh, stateDir, until } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
const { controlServer } = await import('../../libnetwork/api/server.js');
const { formatPorts } = await import('../../cli/port.js');

const fetchTcp = (host: string, port: number) => sh(`socat -T 2 - TCP:${host}:${port},connect-timeout=2 </dev/null 2>/dev/null`).out.trim();

t.test('generic options, ignored keys, ephemeral host ports and GET /ports on a lab sandbox', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const api = await controlServer(Promise.resolve(c));
  const [first, last] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number) as [number, number];

  const net = await c.createNetwork({ name: 'po', subnet: '10.71.0.0/24', options: { 'iface-prefix': 'ceth', 'foo.bar': '1', mtu: '1400' } });
  t.same(net.options, { 'com.docker.network.container_iface_prefix': 'ceth', 'foo.bar': '1', 'com.docker.network.driver.mtu': '1400' }, 'short forms expanded, the unknown key kept');
  const view = (await api.inject({ method: 'GET', url: '/networks/po' })).json() as Record<string, unknown>;
  t.match(view, { bridge: `tn-${net.id.slice(0, 12)}`, container_iface_prefix: 'ceth', ignored_options: 'foo.bar' }, 'network inspect: the prefix and the ignored key');
  t.match(sh(`ip -o link show tn-${net.id.slice(0, 12)}`).out, /mtu 1400/, 'the honoured keys still apply (MTU)');

  // Bad values of known keys: refused, nothing made.
  const before = JSON.stringify([leftovers(), c.networks().length]);
  const bad: [string, Record<string, string>, RegExp][] = [
    ['a bridge name the kernel would rewrite', { 'com.docker.network.bridge.name': 'br%d' }, /bridge name "br%d" contains "%"/],
    ['an interface prefix the kernel would rewrite', { 'com.docker.network.container_iface_prefix': 'c%d' }, /contains "%"/],
    ['a bad MTU', { 'com.docker.network.driver.mtu': 'big', 'foo.bar': '1' }, /MTU "big"/],
    ['a bad boolean', { icc: 'yes' }, /enable_icc="yes" is not a boolean/],
  ];
  for (const [what, options, re] of bad) await t.rejects(c.createNetwork({ name: 'x1', options }), { message: re, code: 'invalid-argument' }, what);
  t.equal(JSON.stringify([leftovers(), c.networks().length]), before, 'nothing was made by the refused requests');

  await c.createSandbox({ name: 's1' });
  const ep = await c.connect('po', 's1', { ports: [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 0, hostPortEnd: 0 }] });
  const hostPort = ep.ports[0]!.hostPort;
  t.ok(hostPort >= first && hostPort <= last, `-p 80: host port ${hostPort} inside the kernel's ephemeral range ${first}-${last}`);
  t.equal(ep.ifname, 'ceth0', "the sandbox's interface takes the network's prefix");
  const server = background(t, `ip netns exec ${netnsOf('s1')} socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:'echo hello-from-s1'`);
  t.ok(await until(() => inSandbox('s1', 'ss -ltn').out.includes(':80 ')), 'server listening in s1');
  t.equal(fetchTcp('127.0.0.1', hostPort), 'hello-from-s1', 'the sandbox answers on the chosen host port');

  const ports = (await api.inject({ method: 'GET', url: '/ports/s1' })).json() as { what: string; mappings: Parameters<typeof formatPorts>[0] };
  t.equal(ports.what, 'sandbox "s1"', 'GET /ports/s1 finds the sandbox by name');
  t.same(formatPorts(ports.mappings), [`80/tcp -> 0.0.0.0:${hostPort}`], 'GET /ports/s1: the mapping, as tnet port prints it');
  t.same(formatPorts(ports.mappings, { port: 80, proto: 'tcp' }), [`0.0.0.0:${hostPort}`], 'tnet port s1 80: the host side only');
  t.equal((await api.inject({ method: 'GET', url: `/ports/${ep.id.slice(0, 10)}` })).json().what, `endpoint ${ep.id.slice(0, 12)}`, 'and by endpoint id prefix');

  server.kill('SIGKILL'); // a process inside keeps the namespace, and its veth, alive
  await api.close();
  await c.deleteSandbox('s1');
  await c.deleteNetwork('po');
  c.close();
  await assertClean(t);
});
