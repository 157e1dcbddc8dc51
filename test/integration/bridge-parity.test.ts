/**
 * Published ports as Docker's bridge serves them (issue 13, items 3 and 4), with real traffic:
 * - through a host address from other sandboxes: a sandbox's own published port, a sandbox on
 *   another tnet network, a peer on an enable_icc=false network; plain traffic between those
 *   stays dropped;
 * - on IPv6: [::1] and a host IPv6 address to an IPv4-only network (the userland proxy), [::1]
 *   on a dual-stack network; the proxy holds its ports exactly while the mapping exists, and a
 *   restart of the controller brings it back.
 */
import { type ChildProcess, exec } from 'node:child_process';
import t, { type Test } from 'tap';
import { assertClean, background, inSandbox, isolate, makeOutside, netnsOf, sh, stateDir, until } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');

/**
 * The client runs without blocking this process: the userland proxy lives in it (the controller's
 * driver), and a synchronous spawn would stall the very proxy it talks to.
 */
async function run(cmd: string): Promise<string> {
  return new Promise((resolve) => exec(cmd, { timeout: 10_000 }, (_e, out) => resolve(String(out).trim())));
}
/** One line from a TCP server, or '' when nothing answers. `host` may be an IPv6 address. */
const fetchTcp = (where: string, host: string, port: number) => {
  const h = host.includes(':') ? `[${host}]` : host;
  return run(`${where} socat -T 2 - TCP:${h}:${port},connect-timeout=2 </dev/null 2>/dev/null`);
};
const fetchUdp = (where: string, host: string, port: number) => {
  const h = host.includes(':') ? `[${host}]` : host;
  return run(`echo x | ${where} socat -T 2 - UDP:${h}:${port} 2>/dev/null`);
};
const nsx = (sb: string) => `ip netns exec ${netnsOf(sb)}`;
const tcp = (hostPort: number, hostIp = '') => ({ proto: 'tcp' as const, containerPort: 80, hostIp, hostPort, hostPortEnd: 0 });
const udp = (hostPort: number, hostIp = '') => ({ proto: 'udp' as const, containerPort: 53, hostIp, hostPort, hostPortEnd: 0 });

/** A TCP server on port 80 of a sandbox (both families) that answers `hello-from-NAME`. */
async function serve(tt: Test, sb: string): Promise<ChildProcess> {
  const child = background(tt, `ip netns exec ${netnsOf(sb)} socat TCP6-LISTEN:80,ipv6only=0,reuseaddr,fork SYSTEM:'echo hello-from-${sb}'`);
  tt.ok(await until(() => inSandbox(sb, 'ss -ltn').out.includes(':80 ')), `server listening in ${sb}`);
  return child;
}

/** Stops the servers: a process left in a sandbox keeps its namespace, and its veth, alive. */
const stopAll = (children: ChildProcess[]) => {
  for (const c of children) c.kill('SIGKILL');
};

/** Whether anything in this namespace listens on the port (TCP or UDP, any family). */
const listening = (port: number) => new RegExp(`:${port}\\s`).test(sh('ss -lntuH').out);

t.test('published ports through a host address from other sandboxes (own port, other network, ICC off)', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const out = makeOutside(t);
  await c.createNetwork({ name: 'n1', subnet: '10.61.0.0/24' });
  await c.createNetwork({ name: 'n2', subnet: '10.62.0.0/24' });
  await c.createNetwork({ name: 'noicc', subnet: '10.63.0.0/24', options: { icc: 'false' } });
  await c.createNetwork({ name: 'priv', subnet: '10.66.0.0/24', internal: true });
  for (const s of ['a', 'b', 'c', 'p', 'q', 'i']) await c.createSandbox({ name: s });
  const a = await c.connect('n1', 'a', { ports: [tcp(8081)] });
  await c.connect('n1', 'b');
  await c.connect('n2', 'c', { ports: [udp(8053)] });
  await c.connect('noicc', 'p');
  const q = await c.connect('noicc', 'q', { ports: [tcp(8083)] });
  await c.connect('priv', 'i');
  const servers: ChildProcess[] = [];
  for (const s of ['a', 'c', 'q']) servers.push(await serve(t, s));
  servers.push(background(t, `ip netns exec ${netnsOf('c')} socat UDP-RECVFROM:53,fork SYSTEM:'echo udp-from-c'`));

  t.equal(await fetchTcp(nsx('b'), out.hostIp, 8081), 'hello-from-a', 'same network (hairpin) still works');
  t.equal(await fetchTcp(nsx('a'), out.hostIp, 8081), 'hello-from-a', "a sandbox reaches its own published port through the host's address");
  t.equal(await fetchTcp(nsx('a'), '10.61.0.1', 8081), 'hello-from-a', "and through its own gateway's address");
  t.equal(await fetchTcp(nsx('c'), out.hostIp, 8081), 'hello-from-a', 'a sandbox on another tnet network reaches the published port');
  t.equal(await fetchTcp(nsx('c'), '10.62.0.1', 8081), 'hello-from-a', "... also through its own gateway's address");
  t.equal(await fetchTcp(nsx('p'), out.hostIp, 8083), 'hello-from-q', 'ICC off: a peer reaches the published port through the host');
  t.ok(await until(async () => (await fetchUdp(nsx('a'), out.hostIp, 8053)) === 'udp-from-c', 5000), 'UDP: another network reaches a published UDP port');

  // Plain traffic between networks and between ICC-off peers stays dropped.
  t.equal(await fetchTcp(nsx('c'), a.ipv4!.toString(), 80), '', 'another network still cannot reach the container directly');
  t.equal(await fetchTcp(nsx('a'), c.endpointsOfSandbox(c.sandbox('c').id)[0]!.ipv4!.toString(), 80), '', 'nor the other way round');
  t.equal(await fetchTcp(nsx('p'), q.ipv4!.toString(), 80), '', 'ICC off: the peer still cannot reach the container directly');
  t.equal(await fetchTcp(nsx('i'), '10.66.0.1', 8081), '', 'an internal network reaches no published port (as with Docker)');

  stopAll(servers);
  for (const s of ['a', 'b', 'c', 'p', 'q', 'i']) await c.deleteSandbox(s);
  for (const n of ['n1', 'n2', 'noicc', 'priv']) await c.deleteNetwork(n);
  c.close();
  await assertClean(t);
});

t.test('published ports answer on IPv6: [::1] and a host IPv6 address, IPv4-only and dual-stack networks', async (t) => {
  const dir = stateDir(t);
  let c = await Controller.open({ stateDir: dir });
  const out = makeOutside(t);
  // A host IPv6 address (on the host's side of the outside link) and its peer outside.
  const r = sh(`ip addr add 2001:db8:1::1/64 dev xh-ext nodad && ip -n ${out.ns} addr add 2001:db8:1::2/64 dev eth0 nodad`);
  t.equal(r.code, 0, `IPv6 on the outside link ${r.out}`);
  const host6 = '2001:db8:1::1';
  await c.createNetwork({ name: 'v4', subnet: '10.64.0.0/24' });
  await c.createNetwork({ name: 'dual', subnet: '10.65.0.0/24', ipv6: true, subnet6: 'fd65::/64' });
  for (const s of ['s4', 's6', 'l4']) await c.createSandbox({ name: s });
  await c.connect('v4', 's4', { ports: [tcp(8084), udp(8085)] });
  await c.connect('dual', 's6', { ports: [tcp(8086)] });
  await c.connect('v4', 'l4', { ports: [tcp(8087, '::1')] });
  const servers: ChildProcess[] = [];
  for (const s of ['s4', 's6', 'l4']) servers.push(await serve(t, s));
  servers.push(background(t, `ip netns exec ${netnsOf('s4')} socat UDP-RECVFROM:53,fork SYSTEM:'echo udp-from-s4'`));

  t.equal(await fetchTcp('', '::1', 8084), 'hello-from-s4', 'IPv4-only network: [::1] answers');
  t.equal(await fetchTcp('', host6, 8084), 'hello-from-s4', "IPv4-only network: the host's IPv6 address answers");
  t.equal(await fetchTcp(`ip netns exec ${out.ns}`, host6, 8084), 'hello-from-s4', "IPv4-only network: the host's IPv6 address answers from outside");
  t.equal(await fetchTcp('', '127.0.0.1', 8084), 'hello-from-s4', 'IPv4-only network: 127.0.0.1 still answers');
  t.ok(await until(async () => (await fetchUdp('', '::1', 8085)) === 'udp-from-s4', 5000), 'IPv4-only network: UDP on [::1] answers');
  t.equal(await fetchUdp(`ip netns exec ${out.ns}`, host6, 8085), 'udp-from-s4', "IPv4-only network: UDP on the host's IPv6 address from outside");
  t.equal(await fetchTcp('', '::1', 8086), 'hello-from-s6', 'dual-stack network: [::1] answers');
  t.equal(await fetchTcp('', host6, 8086), 'hello-from-s6', "dual-stack network: the host's IPv6 address answers");
  t.equal(await fetchTcp(`ip netns exec ${out.ns}`, host6, 8086), 'hello-from-s6', "dual-stack network: the host's IPv6 address answers from outside");
  t.equal(await fetchTcp('', '127.0.0.1', 8086), 'hello-from-s6', 'dual-stack network: 127.0.0.1 answers');
  t.equal(await fetchTcp('', '::1', 8087), 'hello-from-l4', 'a mapping bound to [::1] answers there');
  t.equal(await fetchTcp(`ip netns exec ${out.ns}`, host6, 8087), '', '... and nowhere else');
  t.notOk(listening(8088), 'no port held that was not asked for');

  // The proxy follows the controller: gone with close(), back with the next open (restore).
  c.close();
  t.notOk(listening(8084) || listening(8085) || listening(8086) || listening(8087), 'close(): the proxies let go of their ports');
  c = await Controller.open({ stateDir: dir });
  t.equal(await fetchTcp('', '::1', 8084), 'hello-from-s4', 'after a restart: [::1] answers again (IPv4-only)');
  t.equal(await fetchTcp('', '::1', 8086), 'hello-from-s6', 'after a restart: [::1] answers again (dual stack)');
  t.equal(await fetchTcp('', host6, 8084), 'hello-from-s4', "after a restart: the host's IPv6 address answers again");

  // Revoked with the endpoint: the ports are free again.
  await c.disconnect('v4', 's4');
  await c.disconnect('dual', 's6');
  t.notOk(listening(8084) || listening(8085) || listening(8086), 'disconnect: the proxies let go of their ports');
  t.equal(await fetchTcp('', '::1', 8084), '', 'disconnect: [::1] no longer answers');
  const again = await c.connect('v4', 's6', { ports: [tcp(8084)] });
  t.equal(again.ports[0]?.hostPort, 8084, 'the port can be published again');
  t.equal(await fetchTcp('', '::1', 8084), 'hello-from-s6', 'and [::1] answers for the new endpoint');

  stopAll(servers);
  for (const s of ['s4', 's6', 'l4']) await c.deleteSandbox(s);
  for (const n of ['v4', 'dual']) await c.deleteNetwork(n);
  t.notOk(listening(8084) || listening(8087), 'nothing listens once the sandboxes are gone');
  c.close();
  sh('ip addr del 2001:db8:1::1/64 dev xh-ext');
  await assertClean(t);
});
