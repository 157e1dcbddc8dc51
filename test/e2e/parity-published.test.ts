/**
 * Published ports side by side (issue 13, items 3 and 4): the same steps against a network of
 * Docker's own bridge driver (the oracle) and a tnet network, in one dockerd with its default
 * --iptables=true, and the outcomes compared. Between tnet's networks and Docker's bridge
 * networks both directions, a container's own port through a host address, an ICC-off peer,
 * [::1] and a host IPv6 address. The file runs in its own network + mount namespace.
 */
import { exec } from 'node:child_process';
import t from 'tap';
import { makeOutside, sh, until } from '../integration/harness.js';
import { type Dockerd, importBusybox, isolateDocker, startDockerd, startTnet, tnetLeftovers, logsOnFailure } from './docker-harness.js';

await isolateDocker();

/** An HTTP GET from the host (or `where`) with socat; the body, or '' when nothing answers. Never blocks the event loop. */
function get(where: string, host: string, port: number): Promise<string> {
  const h = host.includes(':') ? `[${host}]` : host;
  return new Promise((resolve) =>
    exec(`printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ${where} socat -T 3 - TCP:${h}:${port},connect-timeout=3 2>/dev/null`, { timeout: 15_000 }, (_e, out) => {
      const s = String(out);
      const i = s.indexOf('\r\n\r\n');
      resolve(i < 0 ? '' : s.slice(i + 4).trim());
    }),
  );
}

/**
 * An HTTP GET from inside a container, with the host's socat (the containers mount the host's
 * /usr read-only; busybox-static's wget crashes here); the body, or '' when nothing answers.
 */
function getFrom(d: Dockerd, ctr: string, host: string, port: number): string {
  const h = host.includes(':') ? `[${host}]` : host;
  const r = d.docker('exec', ctr, 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /usr/bin/socat -T 3 - TCP:${h}:${port},connect-timeout=3`);
  const i = r.out.indexOf('\r\n\r\n');
  return i < 0 ? '' : r.out.slice(i + 4).trim();
}

const ipOf = (d: Dockerd, ctr: string, net: string) =>
  d.docker('inspect', '-f', `{{with index .NetworkSettings.Networks "${net}"}}{{.IPAddress}}{{end}}`, ctr).out;

const OK = 'hello-from-container';
const yes = (s: string) => (s === OK ? 'answers' : 'no answer');

t.test("published ports: Docker's bridge and tnet side by side", async (t) => {
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  const out = makeOutside(t);
  logsOnFailure(t, tnet, d, () => [sh('iptables-save -c').out.slice(-6000), sh('nft list table inet tnet').out.slice(-6000)]);
  const r6 = sh(`ip addr add 2001:db8:1::1/64 dev xh-ext nodad && ip -n ${out.ns} addr add 2001:db8:1::2/64 dev eth0 nodad`);
  t.equal(r6.code, 0, `a host IPv6 address on the outside link ${r6.out}`);
  const host6 = '2001:db8:1::1';
  const http = ['sh', '-c', 'httpd -p 80 -h /www; sleep 600'];

  // One network of each driver per role, and a client on each.
  const nets = {
    bridge: { srv: 'bs', cli: 'bc', noicc: 'bn', net: 'pbr', noiccNet: 'pbr-noicc', port: 18501, noiccPort: 18511, subnet: '10.71' },
    tnet: { srv: 'ts', cli: 'tc', noicc: 'tn', net: 'ptn', noiccNet: 'ptn-noicc', port: 18502, noiccPort: 18512, subnet: '10.72' },
  } as const;
  for (const [driver, n] of Object.entries(nets)) {
    d.ok(t, 'network', 'create', '-d', driver, '--subnet', `${n.subnet}.0.0/24`, n.net);
    d.ok(t, 'network', 'create', '-d', driver, '--subnet', `${n.subnet}.1.0/24`, '-o', 'com.docker.network.bridge.enable_icc=false', n.noiccNet);
    d.ok(t, 'run', '-d', '--name', n.srv, '--network', n.net, '-v', '/usr:/usr:ro', '-p', `${n.port}:80`, img, ...http);
    d.ok(t, 'run', '-d', '--name', n.cli, '--network', n.net, '-v', '/usr:/usr:ro', img, 'sleep', '600');
    d.ok(t, 'run', '-d', '--name', `${n.noicc}1`, '--network', n.noiccNet, '-v', '/usr:/usr:ro', '-p', `${n.noiccPort}:80`, img, ...http);
    d.ok(t, 'run', '-d', '--name', `${n.noicc}2`, '--network', n.noiccNet, '-v', '/usr:/usr:ro', img, 'sleep', '600');
  }
  // A client on dockerd's default bridge: another network for both.
  d.ok(t, 'run', '-d', '--name', 'dc', '-v', '/usr:/usr:ro', img, 'sleep', '600');
  const b = nets.bridge;
  const n = nets.tnet;
  t.ok(await until(async () => (await get('', '127.0.0.1', b.port)) === OK && (await get('', '127.0.0.1', n.port)) === OK, 10_000), 'both published ports answer on 127.0.0.1');

  const compare = (what: string, oracle: string, tnetSide: string) => {
    t.comment(`${what}: bridge ${yes(oracle)}, tnet ${yes(tnetSide)}`);
    t.equal(yes(tnetSide), yes(oracle), `${what}: tnet behaves as Docker's bridge`);
  };
  // Between tnet's and dockerd's bridges, dockerd's isolation chain applies too: tnet's rules in
  // DOCKER-USER send a tnet bridge's traffic to DOCKER-ISOLATION-STAGE-2, which would drop a
  // connection to a published port (DNATed) in one direction or the other: the jump skips
  // `--ctstate DNAT` (libnetwork/plugin/docker.ts, DockerUserChain).
  t.match(sh('iptables-save -t filter').out, /DOCKER-USER -i tn\S+ ! -o tn\S+ -m conntrack ! --ctstate DNAT/, "tnet's isolation jump in DOCKER-USER skips published ports");
  const h = out.hostIp;

  // Item 3: through a host address, from other containers.
  compare('same network (hairpin)', getFrom(d, b.cli, h, b.port), getFrom(d, n.cli, h, n.port));
  compare("a container's own published port via the host address", getFrom(d, b.srv, h, b.port), getFrom(d, n.srv, h, n.port));
  compare('ICC off: a peer reaches the published port via the host address', getFrom(d, `${b.noicc}2`, h, b.noiccPort), getFrom(d, `${n.noicc}2`, h, n.noiccPort));
  compare("from dockerd's default bridge", getFrom(d, 'dc', h, b.port), getFrom(d, 'dc', h, n.port));
  compare('from the other tnet network / the other bridge network', getFrom(d, `${b.noicc}2`, h, b.port), getFrom(d, `${n.noicc}2`, h, n.port));
  compare("tnet -> a bridge network's published port (oracle: bridge -> bridge)", getFrom(d, `${b.noicc}2`, h, b.port), getFrom(d, n.cli, h, b.port));
  compare("bridge network -> tnet's published port (oracle: bridge -> bridge)", getFrom(d, `${b.noicc}2`, h, b.port), getFrom(d, b.cli, h, n.port));
  // Isolation is unchanged: no way to a container's own address across networks.
  compare('tnet -> a bridge container directly (isolated)', getFrom(d, `${b.noicc}2`, ipOf(d, b.srv, b.net), 80), getFrom(d, n.cli, ipOf(d, b.srv, b.net), 80));
  compare('bridge -> a tnet container directly (isolated)', getFrom(d, `${b.noicc}2`, ipOf(d, b.srv, b.net), 80), getFrom(d, b.cli, ipOf(d, n.srv, n.net), 80));
  compare('ICC off: the peer directly (dropped)', getFrom(d, `${b.noicc}2`, ipOf(d, `${b.noicc}1`, b.noiccNet), 80), getFrom(d, `${n.noicc}2`, ipOf(d, `${n.noicc}1`, n.noiccNet), 80));

  // Item 4: IPv6 on the host, networks without IPv6.
  compare('[::1] from the host', await get('', '::1', b.port), await get('', '::1', n.port));
  compare("the host's IPv6 address from the host", await get('', host6, b.port), await get('', host6, n.port));
  compare("the host's IPv6 address from outside", await get(`ip netns exec ${out.ns}`, host6, b.port), await get(`ip netns exec ${out.ns}`, host6, n.port));
  compare('127.0.0.1 from the host', await get('', '127.0.0.1', b.port), await get('', '127.0.0.1', n.port));

  // Item 4 on dual-stack networks: [::1] cannot be DNATed out of the host (no route_localnet
  // for IPv6); the other IPv6 addresses are NAT's.
  const dual = { bridge: { ctr: 'b6', net: 'pbr6', port: 18503, subnet: '10.73' }, tnet: { ctr: 't6', net: 'ptn6', port: 18504, subnet: '10.74' } } as const;
  for (const [driver, x] of Object.entries(dual)) {
    d.ok(t, 'network', 'create', '-d', driver, '--ipv6', '--subnet', `${x.subnet}.0.0/24`, '--subnet', `fd${x.subnet.slice(3)}::/64`, x.net);
    d.ok(t, 'run', '-d', '--name', x.ctr, '--network', x.net, '-p', `${x.port}:80`, img, ...http);
  }
  t.ok(await until(async () => (await get('', '127.0.0.1', dual.tnet.port)) === OK, 10_000), 'dual stack: the tnet port answers on 127.0.0.1');
  // dockerd's bridge gets its IPv6 gateway with duplicate address detection: ~2 s before it is usable.
  await until(async () => (await get('', '::1', dual.bridge.port)) === OK, 10_000);
  compare('dual stack: [::1] from the host', await get('', '::1', dual.bridge.port), await get('', '::1', dual.tnet.port));
  compare("dual stack: the host's IPv6 address from outside", await get(`ip netns exec ${out.ns}`, host6, dual.bridge.port), await get(`ip netns exec ${out.ns}`, host6, dual.tnet.port));
  compare('dual stack: 127.0.0.1 from the host', await get('', '127.0.0.1', dual.bridge.port), await get('', '127.0.0.1', dual.tnet.port));
  d.ok(t, 'rm', '-f', dual.bridge.ctr, dual.tnet.ctr);
  d.ok(t, 'network', 'rm', dual.bridge.net, dual.tnet.net);

  // Gone with the container, both families.
  d.ok(t, 'rm', '-f', n.srv, b.srv);
  compare('[::1] after the container is removed', await get('', '::1', b.port), await get('', '::1', n.port));
  t.notOk(new RegExp(`:${n.port}\\s`).test(sh('ss -lntH').out), "tnet's proxy let go of the port");

  d.ok(t, 'rm', '-f', b.cli, n.cli, `${b.noicc}1`, `${b.noicc}2`, `${n.noicc}1`, `${n.noicc}2`, 'dc');
  for (const x of Object.values(nets)) d.ok(t, 'network', 'rm', x.net, x.noiccNet);
  sh('ip addr del 2001:db8:1::1/64 dev xh-ext');
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made remains');
});
