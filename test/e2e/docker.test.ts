/**
 * tnet as a Docker plugin, proved with a real dockerd (Debian docker.io 20.10) and real containers.
 * The whole file runs inside its own network + mount namespace (see docker-harness.ts).
 */
import t from 'tap';
import { sh } from '../integration/harness.js';
import { importBusybox, isolateDocker, pluginCall, startDockerd, startTnet, tnetLeftovers } from './docker-harness.js';

await isolateDocker();

t.test('vertical slice: create a tnet network, two containers ping each other, teardown leaves nothing', async (t) => {
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`plugin log:\n${tnet.log().slice(-4000)}`);
    t.comment(`dockerd log:\n${d.log().slice(-4000)}`);
  });

  const id = d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', 'pnet');
  t.match(id, /^[0-9a-f]{64}$/, 'network created');
  const a = d.ok(t, 'run', '-d', '--name', 'ca', '--network', 'pnet', img, 'sleep', '300');
  const b = d.ok(t, 'run', '-d', '--name', 'cb', '--network', 'pnet', img, 'sleep', '300');
  t.ok(a && b, 'two containers running');
  const ipA = d.ok(t, 'inspect', '-f', '{{.NetworkSettings.Networks.pnet.IPAddress}}', 'ca');
  const ipB = d.ok(t, 'inspect', '-f', '{{.NetworkSettings.Networks.pnet.IPAddress}}', 'cb');
  t.match(ipA, /^10\.99\.0\.\d+$/, `a has an address on the network (${ipA})`);
  t.not(ipA, ipB, 'different addresses');
  t.equal(d.docker('exec', 'ca', 'ping', '-c', '1', '-W', '2', ipB).code, 0, 'a pings b');
  t.equal(d.docker('exec', 'cb', 'ping', '-c', '1', '-W', '2', ipA).code, 0, 'b pings a');
  t.match(d.ok(t, 'exec', 'ca', 'ip', 'route'), /default via 10\.99\.0\.1 dev eth0/, 'default route via the tnet gateway (no docker_gwbridge)');
  t.equal(d.ok(t, 'exec', 'ca', 'ls', '/sys/class/net').split(/\s+/).sort().join(' '), 'eth0 lo', 'one interface: eth0');

  d.ok(t, 'rm', '-f', 'ca', 'cb');
  d.ok(t, 'network', 'rm', 'pnet');
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made is left');
  t.equal((await pluginCall('/Plugin.Activate', '')).status, 200, 'plugin still answering');
  t.comment(sh('ip -o link').out);
});
