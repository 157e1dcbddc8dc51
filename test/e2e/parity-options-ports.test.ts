/**
 * Docker parity, issue 13 items 5 and 6, side by side in one dockerd (Debian docker.io 20.10): the
 * same steps with Docker's own bridge driver (`-d bridge`) and with tnet (`-d tnet`), outcomes
 * compared.
 * - Item 5: libnetwork's generic key com.docker.network.container_iface_prefix is honoured and an
 *   unknown key (foo.bar) is accepted, as compose files with driver_opts need; tnet says it
 *   ignored it (its log, `tnet network inspect`).
 * - Item 6: `-p 80` without a host port gets one from the kernel's ephemeral range
 *   (net.ipv4.ip_local_port_range, 32768-60999 here) on both; dockerd cannot show tnet's
 *   (moby/libnetwork#2451: `docker port` is empty), `tnet port` shows the mapping the container
 *   really answers on, by container name and by EndpointID.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { until } from '../integration/harness.js';
import { type Dockerd, DOCKER, ROOT, type TnetPlugin, httpGet, importBusybox, isolateDocker, startDockerd, startTnet, tnetLeftovers, logsOnFailure } from './docker-harness.js';

await isolateDocker();


/** The `tnet` command against the daemon the test started (its control socket is in its state directory). */
function tnetCli(tnet: TnetPlugin, d: Dockerd, ...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/cli/main.js'), ...args, '--state-dir', tnet.stateDir, '--socket', join(tnet.stateDir, 'control.sock')], {
    encoding: 'utf8',
    timeout: 60_000,
    // `tnet port CONTAINER` asks the docker command, which finds this test's dockerd through DOCKER_HOST.
    env: { ...process.env, DOCKER_HOST: `unix://${d.sock}`, PATH: `${DOCKER.slice(0, DOCKER.lastIndexOf('/'))}:${process.env.PATH ?? ''}` },
  });
  return { code: r.status ?? 1, out: (r.stdout ?? '').trim(), err: (r.stderr ?? '').trim() };
}

/** The first IPv4 `HOST:PORT` of `docker port`-style lines ('' if none). */
const v4Binding = (lines: string) => lines.split('\n').map((l) => l.replace(/^.*-> /, '').trim()).find((l) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(l)) ?? '';

interface Outcome {
  created: boolean;
  ifaces: string;
  hostPort: number;
  answers: string;
}

t.test('generic options and ephemeral host ports: -d bridge and -d tnet side by side', async (t) => {
  if (process.env.TNET_E2E_PLUGIN === 'plugin') {
    t.plan(0, 'the plugin on its own serves no control API: tnet port needs `tnet daemon`');
    return;
  }
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  logsOnFailure(t, tnet, d);
  const [first, last] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number) as [number, number];
  t.comment(`ephemeral range ${first}-${last}`);

  const outcome: Record<string, Outcome> = {};
  // Docker's bridge first: its docker-proxy then holds its port, and tnet's probe moves past it.
  for (const driver of ['bridge', 'tnet']) {
    const net = `po-${driver}`;
    const ctr = `po-${driver}-c`;
    const created = d.docker('network', 'create', '-d', driver, '-o', 'com.docker.network.container_iface_prefix=ceth', '-o', 'foo.bar=1', net);
    t.equal(created.code, 0, `${driver}: network with container_iface_prefix and an unknown key created ${created.err}`);
    const opts = created.code === 0 ? (JSON.parse(d.ok(t, 'network', 'inspect', net))[0].Options as Record<string, string>) : {};
    t.same(opts, { 'com.docker.network.container_iface_prefix': 'ceth', 'foo.bar': '1' }, `${driver}: docker network inspect shows both options`);
    d.ok(t, 'run', '-d', '--name', ctr, '--network', net, '-p', '80', img, 'sh', '-c', 'httpd -p 80 -h /www; sleep 300');
    const ifaces = d.ok(t, 'exec', ctr, 'ls', '/sys/class/net').split(/\s+/).filter((i) => i !== 'lo').sort().join(' ');
    let binding = '';
    if (driver === 'bridge') {
      binding = v4Binding(d.ok(t, 'port', ctr, '80/tcp'));
    } else {
      t.equal(d.docker('port', ctr).out, '', 'tnet: docker port shows nothing (moby/libnetwork#2451, the documented limitation)');
      const byName = tnetCli(tnet, d, 'port', ctr);
      t.equal(byName.code, 0, `tnet port CONTAINER answers ${byName.err}`);
      t.match(byName.out, /^80\/tcp -> 0\.0\.0\.0:\d+$/m, `tnet port CONTAINER prints docker port's lines:\n${byName.out}`);
      const epId = d.ok(t, 'inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").EndpointID}}`, ctr);
      t.match(epId, /^[0-9a-f]{64}$/, 'the container\'s EndpointID');
      const byId = tnetCli(tnet, d, 'port', epId.slice(0, 12), '80');
      t.equal(byId.code, 0, `tnet port ENDPOINT-ID-PREFIX 80 answers ${byId.err}`);
      binding = v4Binding(byId.out);
      t.equal(v4Binding(byName.out), binding, 'by container name and by EndpointID: the same mapping');
      const missing = tnetCli(tnet, d, 'port', ctr, '81/udp');
      t.equal(missing.code, 3, 'a private port that is not published: exit 3');
      t.match(missing.err, /no public port '81\/udp' published for container "po-tnet-c"/, `  ${missing.err}`);
      // network inspect: the ports of the Docker endpoint, and the ignored key.
      const netId = d.ok(t, 'network', 'inspect', '-f', '{{.Id}}', net);
      const inspect = tnetCli(tnet, d, 'network', 'inspect', netId);
      t.equal(inspect.code, 0, `tnet network inspect ${netId.slice(0, 12)} ${inspect.err}`);
      const view = inspect.code === 0 ? (JSON.parse(inspect.out) as { container_iface_prefix?: string; ignored_options?: string; endpoints: { id: string; ports: { containerPort: number; hostPort: number }[] }[] }) : undefined;
      t.equal(view?.ignored_options, 'foo.bar', 'tnet network inspect: foo.bar ignored');
      t.equal(view?.container_iface_prefix, 'ceth', 'tnet network inspect: the interface prefix');
      t.same(view?.endpoints.find((e) => e.id === epId)?.ports.map((p) => `${p.containerPort}->${p.hostPort}`), [`80->${binding.split(':')[1]}`], 'tnet network inspect: the endpoint\'s published port');
      t.match(tnet.log(), /bridge option \\?"foo\.bar\\?" ignored/, "tnet's log warns that foo.bar was ignored");
    }
    const hostPort = Number(binding.split(':')[1] ?? 0);
    let answers = '';
    await until(() => (answers = httpGet('127.0.0.1', hostPort)) === 'hello-from-container', 5000);
    outcome[driver] = { created: created.code === 0, ifaces, hostPort, answers };
    t.comment(`${driver}: ${JSON.stringify(outcome[driver])}`);
  }

  const b = outcome.bridge!;
  const n = outcome.tnet!;
  t.equal(n.created, b.created, 'both networks are created');
  t.equal(b.ifaces, 'ceth0', "bridge: the container's interface is ceth0");
  t.equal(n.ifaces, b.ifaces, "tnet: the container's interface is named as on the bridge");
  for (const [driver, o] of [['bridge', b], ['tnet', n]] as const) {
    t.ok(o.hostPort >= first && o.hostPort <= last, `${driver}: -p 80 got host port ${o.hostPort}, inside ${first}-${last}`);
    t.equal(o.answers, 'hello-from-container', `${driver}: the container answers on that port`);
  }
  t.not(n.hostPort, b.hostPort, 'tnet chose a port other than the one dockerd holds');

  d.ok(t, 'rm', '-f', 'po-bridge-c', 'po-tnet-c');
  d.ok(t, 'network', 'rm', 'po-bridge', 'po-tnet');
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made is left');
});
