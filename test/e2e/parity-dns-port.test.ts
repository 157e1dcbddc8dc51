/**
 * Docker parity, issue 13 item 2: host port 53 belongs to the user while tnet runs. Side by side in
 * one dockerd (Debian docker.io 20.10), with a tnet network present: a DNS server container
 * published with `-p 53:53/udp -p 53:53/tcp` on Docker's own bridge driver and on tnet, each asked
 * from "outside" (another machine on the LAN) through the host's address, over UDP and TCP.
 *
 * Why it matters: docker-proxy binds 0.0.0.0:53 for a bridge network (and tnet probes the same
 * wildcard bind for its own networks). Any socket on port 53 of any host address makes that bind
 * fail with EADDRINUSE, whatever SO_REUSEADDR the first socket has: docker-proxy's UDP socket does
 * not set it, and a listening TCP socket blocks even sockets that do. So tnet's DNS holds no port
 * on the host unless asked to (TNET_DNS_GATEWAYS=docker); the last test shows what the
 * opt-in costs and the way around it (a host address in `-p`).
 */
import t, { type Test } from 'tap';
import { makeOutside, sh, until } from '../integration/harness.js';
import { type Dockerd, importBusybox, isolateDocker, startDockerd, startTnet, tnetLeftovers, logsOnFailure } from './docker-harness.js';

await isolateDocker();

/** Sockets on port 53 in the host's (this test's) namespace. */
const port53 = () => sh("ss -Hlnut 'sport = :53'").out.trim();

/** A DNS server container: dnsmasq from the host's /usr, answering which.test with `answer`. */
function dnsServer(tt: Test, d: Dockerd, img: string, name: string, net: string, answer: string, publish: string[]): { code: number; err: string } {
  const r = d.docker(
    'run', '-d', '--name', name, '--network', net, ...publish.flatMap((p) => ['-p', p]), '-v', '/usr:/usr:ro', img,
    'sh', '-c',
    'echo root:x:0:0::/:/bin/sh > /etc/passwd; echo root:x:0: > /etc/group; ' +
      'exec /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --user=root --pid-file= ' +
      `--log-facility=- --address=/which.test/${answer}`,
  );
  if (r.code !== 0) tt.comment(`docker run ${name}: exit ${r.code}: ${r.err}`);
  return { code: r.code, err: r.err };
}

/** dig from the outside namespace at the host's address: the addresses it got ('' = no answer, whatever dig printed). */
function ask(ns: string, host: string, tcp: boolean): string {
  const out = sh(`ip netns exec ${ns} dig @${host} +time=2 +tries=2 +short ${tcp ? '+tcp' : '+notcp'} which.test`).out;
  return out.split('\n').filter((l) => /^\d+\.\d+\.\d+\.\d+$/.test(l.trim())).join(' ');
}

interface Setup {
  d: Dockerd;
  img: string;
  out: { ns: string; hostIp: string };
}

async function setup(tt: Test): Promise<Setup> {
  const tnet = await startTnet(tt);
  const d = await startDockerd(tt);
  const img = importBusybox(d);
  const out = makeOutside(tt);
  logsOnFailure(tt, tnet, d);
  // the network whose gateway listener used to hold port 53, and a Docker bridge network
  d.ok(tt, 'network', 'create', '-d', 'tnet', '--subnet', '10.95.0.0/24', '--gateway', '10.95.0.1', 'tdns');
  d.ok(tt, 'network', 'create', '-d', 'bridge', '--subnet', '10.96.0.0/24', 'bdns');
  return { d, img, out };
}

async function finish(tt: Test, s: Setup): Promise<void> {
  s.d.ok(tt, 'network', 'rm', 'tdns', 'bdns');
  tt.ok(await until(() => port53() === '', 5000), 'nothing is left on port 53');
  tt.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made is left');
}

t.test('-p 53:53/udp -p 53:53/tcp works on a bridge network and on a tnet network while a tnet network exists', async (t) => {
  delete process.env.TNET_DNS_GATEWAYS; // the default: tnet's DNS takes no port on the host
  const s = await setup(t);
  const { d, img, out } = s;
  // what a network create used to bring: a listener on the gateway, port 53, in the host's namespace
  await new Promise((r) => setTimeout(r, 500));
  t.equal(port53(), '', 'a tnet network takes no port 53 on the host');

  const cases = [
    { driver: 'bridge', net: 'bdns', answer: '192.0.2.1' },
    { driver: 'tnet', net: 'tdns', answer: '192.0.2.2' },
  ];
  for (const c of cases) {
    const name = `dns-${c.driver}`;
    const r = dnsServer(t, d, img, name, c.net, c.answer, ['53:53/udp', '53:53/tcp']);
    t.equal(r.code, 0, `-d ${c.driver}: docker run -p 53:53/udp -p 53:53/tcp succeeds${r.code ? ` (${r.err})` : ''}`);
    if (r.code === 0) {
      let udp = '';
      await until(() => (udp = ask(out.ns, out.hostIp, false)) === c.answer, 10_000);
      t.equal(udp, c.answer, `-d ${c.driver}: the container answers on the host's port 53 over UDP`);
      t.equal(ask(out.ns, out.hostIp, true), c.answer, `-d ${c.driver}: and over TCP`);
    }
    d.docker('rm', '-f', name);
  }
  t.equal(ask(out.ns, out.hostIp, false), '', 'the port is free again');
  await finish(t, s);
});

t.test('with the opt-in (TNET_DNS_GATEWAYS=docker): tnet answers on the gateway; -p with a host address still works', async (t) => {
  process.env.TNET_DNS_GATEWAYS = 'docker';
  t.teardown(() => void delete process.env.TNET_DNS_GATEWAYS);
  const s = await setup(t);
  const { d, img, out } = s;
  t.ok(await until(() => /10\.95\.0\.1:53/.test(port53()), 5000), 'tnet listens on the tnet network\'s gateway, port 53');

  // the documented cost: a wildcard bind of port 53 now fails, as with any DNS server on the host
  const wild = dnsServer(t, d, img, 'dns-wild', 'bdns', '192.0.2.3', ['53:53/udp']);
  t.not(wild.code, 0, '-d bridge -p 53:53/udp is refused while tnet holds 10.95.0.1:53');
  t.match(wild.err, /address already in use/, `dockerd says why: ${wild.err}`);
  d.docker('rm', '-f', 'dns-wild');

  // the way around it, as on any host running a DNS server: publish on the host's address
  for (const c of [
    { driver: 'bridge', net: 'bdns', answer: '192.0.2.4' },
    { driver: 'tnet', net: 'tdns', answer: '192.0.2.5' },
  ]) {
    const name = `dns-${c.driver}`;
    const r = dnsServer(t, d, img, name, c.net, c.answer, [`${out.hostIp}:53:53/udp`, `${out.hostIp}:53:53/tcp`]);
    t.equal(r.code, 0, `-d ${c.driver}: -p ${out.hostIp}:53:53 succeeds${r.code ? ` (${r.err})` : ''}`);
    if (r.code === 0) {
      let udp = '';
      await until(() => (udp = ask(out.ns, out.hostIp, false)) === c.answer, 10_000);
      t.equal(udp, c.answer, `-d ${c.driver}: answers over UDP`);
      t.equal(ask(out.ns, out.hostIp, true), c.answer, `-d ${c.driver}: and over TCP`);
    }
    d.docker('rm', '-f', name);
  }
  t.match(port53(), /10\.95\.0\.1:53/, "tnet's listener kept serving throughout");
  await finish(t, s);
});
