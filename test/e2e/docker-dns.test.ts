/**
 * Names for Docker containers on tnet networks, with a real dockerd (Debian docker.io 20.10):
 * - containers resolve each other by name and alias: dockerd's own 127.0.0.11 answers for plugin
 *   networks too;
 * - `--dns <the network's gateway>` makes tnet the container's upstream: dockerd's 127.0.0.11
 *   forwards what it does not know to tnet's listener on the gateway address, which answers tnet's
 *   names on that network and forwards the rest to tnet's upstreams (here a dnsmasq in an "outside"
 *   namespace, the only resolver reachable: the host's is not);
 * - that listener refuses clients outside the network (not an open resolver).
 *
 * tnet runs as users run it: `tnet daemon` (plugin sockets + DNS service), its upstream given with
 * TNET_DNS_UPSTREAMS (what `--dns-upstream` sets), the gateway listeners turned on with
 * TNET_DNS_GATEWAYS=docker (off by default, since they hold port 53 on the host:
 * test/e2e/parity-dns-port.test.ts).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { background, makeOutside, sh, until } from '../integration/harness.js';
import { type Dockerd, dockerAsync, importBusybox, isolateDocker, startDockerd, startTnet, tnetLeftovers } from './docker-harness.js';

await isolateDocker();

const run = promisify(execFile);

/** `docker ...` that must succeed (asynchronously): stdout. */
async function docker(tt: Test, d: Dockerd, ...args: string[]): Promise<string> {
  const r = await dockerAsync(d, args);
  if (r.code !== 0) tt.fail(`docker ${args.join(' ')}: exit ${r.code}: ${r.err || r.out}`);
  return r.out;
}

/** busybox nslookup inside a container: the addresses it printed (not the server's). */
async function nslookup(d: Dockerd, ctr: string, name: string): Promise<string[]> {
  const r = await dockerAsync(d, ['exec', ctr, 'timeout', '8', 'nslookup', name]);
  return [...(r.out + '\n' + r.err).matchAll(/^Address:\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!);
}

/** A dnsmasq in its own namespace: tnet's upstream (the host's resolver is unreachable in this test's namespace). */
async function upstream(tt: Test): Promise<{ ip: string; ns: string }> {
  const out = makeOutside(tt, 'up');
  background(
    tt,
    `ip netns exec ${out.ns} dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll ` +
      `--user=root --pid-file= --listen-address=${out.ip} --bind-interfaces ` +
      `--address=/ready.test/192.0.2.1 --address=/ext.example/192.0.2.10 --local=/example/`,
  );
  const ok = await until(() => /192\.0\.2\.1\b/.test(sh(`dig @${out.ip} +time=1 +tries=1 +short ready.test`).out), 5000);
  if (!ok) throw new Error('dnsmasq did not start');
  return { ip: out.ip, ns: out.ns };
}

t.test('containers on a tnet network resolve each other by name; with the gateway listeners on, --dns <gateway> makes tnet their upstream', async (t) => {
  const up = await upstream(t);
  process.env.TNET_DNS_UPSTREAMS = up.ip; // the daemon inherits both
  process.env.TNET_DNS_GATEWAYS = 'docker'; // --dns <gateway> is opt-in
  t.teardown(() => {
    delete process.env.TNET_DNS_UPSTREAMS;
    delete process.env.TNET_DNS_GATEWAYS;
  });
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`tnet log:\n${tnet.log().slice(-4000)}`);
    t.comment(`dockerd log:\n${d.log().slice(-4000)}`);
  });

  const netId = await docker(t, d, 'network', 'create', '-d', 'tnet', '--subnet', '10.93.0.0/24', '--gateway', '10.93.0.1', 'dnet');
  t.ok(netId.length > 0, 'network created');
  t.ok(await until(() => /10\.93\.0\.1:53/.test(sh("ss -Hlnu 'sport = :53'").out), 5000), 'tnet listens on the gateway of the Docker network (UDP)');
  t.match(sh("ss -Hlnt 'sport = :53'").out, /10\.93\.0\.1:53/, 'and TCP');

  await docker(t, d, 'run', '-d', '--name', 'c1', '--network', 'dnet', '--network-alias', 'api', img, 'sleep', '300');
  await docker(t, d, 'run', '-d', '--name', 'c2', '--network', 'dnet', img, 'sleep', '300');
  await docker(t, d, 'run', '-d', '--name', 'c3', '--network', 'dnet', '--dns', '10.93.0.1', img, 'sleep', '300');
  const ipOf = async (ctr: string) => docker(t, d, 'inspect', '-f', '{{.NetworkSettings.Networks.dnet.IPAddress}}', ctr);
  const [ip1, ip2] = [await ipOf('c1'), await ipOf('c2')];
  t.match(await docker(t, d, 'exec', 'c1', 'cat', '/etc/resolv.conf'), /nameserver 127\.0\.0\.11/, "dockerd's resolver inside the container");

  // by name: dockerd's 127.0.0.11 on a plugin network
  t.same(await nslookup(d, 'c1', 'c2'), [ip2], 'c1 resolves c2 by name');
  t.same(await nslookup(d, 'c2', 'c1'), [ip1], 'c2 resolves c1 by name');
  t.same(await nslookup(d, 'c2', 'api'), [ip1], 'and by --network-alias');
  t.same(await nslookup(d, 'c3', 'c1'), [ip1], 'with --dns too');

  // --dns <gateway>: dockerd forwards what it does not know to tnet, from inside the container
  // only tnet knows that upstream: the host's resolver is unreachable in this namespace
  t.same(await nslookup(d, 'c3', 'ext.example'), ['192.0.2.10'], "an external name through tnet's upstream");
  t.same(await nslookup(d, 'c1', 'ext.example'), [], "without --dns the container has only the host's resolver (unreachable here)");
  const ep1 = await docker(t, d, 'inspect', '-f', '{{.NetworkSettings.Networks.dnet.EndpointID}}', 'c1');
  t.same(await nslookup(d, 'c3', ep1.slice(0, 12)), [ip1], "tnet's own name for the endpoint (its 12-digit ID) through the same path");

  // a removed container's name goes (dockerd), and tnet's record of its endpoint with it
  const ep2 = await docker(t, d, 'inspect', '-f', '{{.NetworkSettings.Networks.dnet.EndpointID}}', 'c2');
  await docker(t, d, 'rm', '-f', 'c2');
  t.same(await nslookup(d, 'c1', 'c2'), [], 'c2 is gone');
  t.same(await nslookup(d, 'c3', ep2.slice(0, 12)), [], "and so is tnet's record of its endpoint");

  // the gateway listener is no open resolver: a machine outside with a route to it is refused
  t.equal(sh(`ip -n ${up.ns} route add 10.93.0.0/24 via 198.51.100.1`).code, 0, 'the outside machine gets a route to the network');
  const outside = await run('ip', ['netns', 'exec', up.ns, 'dig', '@10.93.0.1', '+time=2', '+tries=1', 'ext.example']).then((r) => r.stdout, (e: { stdout?: string }) => e.stdout ?? '');
  t.match(outside, /status: REFUSED/, 'REFUSED from outside the network');

  await docker(t, d, 'rm', '-f', 'c1', 'c3');
  await docker(t, d, 'network', 'rm', 'dnet');
  t.ok(await until(() => !/10\.93\.0\.1/.test(sh("ss -Hlnu 'sport = :53'").out), 5000), 'the gateway listener went with the network');
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made is left');
});
