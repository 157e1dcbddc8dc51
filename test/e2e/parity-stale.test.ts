/**
 * Docker parity, issue 13 item 1, side by side in one dockerd: a container removed, or stopped,
 * while tnet is down. dockerd retries the missing plugin, gives up and reports success, so tnet
 * never hears Leave, DeleteEndpoint or ReleaseAddress. With Docker's own bridge (the oracle) the
 * host port and the static address are free again at once; with tnet they must be too: tnet
 * releases what dockerd let go when it starts (Activate), and when another container asks for the
 * same port or address.
 */
import t from 'tap';
import { until } from '../integration/harness.js';
import { httpGet, importBusybox, isolateDocker, startDockerd, startTnet, tnetLeftovers, logsOnFailure } from './docker-harness.js';

await isolateDocker();


t.test('a container removed or stopped while tnet is down gives back its host port and static address', async (t) => {
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  logsOnFailure(t, tnet, d);
  const serve = ['sh', '-c', 'mkdir -p /www && echo hi-$HOSTNAME > /www/index.html && httpd -p 80 -h /www; sleep 600'];
  const sides = {
    bridge: { net: 'st-bridge', subnet: '10.88.4.0/24', ip: '10.88.4.20', port: 18301, ipam: [] as string[] },
    tnet: { net: 'st-tnet', subnet: '10.88.5.0/24', ip: '10.88.5.20', port: 18302, ipam: ['--ipam-driver', 'tnet'] },
  };
  for (const [driver, s] of Object.entries(sides)) {
    d.ok(t, 'network', 'create', '-d', driver, ...s.ipam, '--subnet', s.subnet, s.net);
    // rm: removed while tnet is down; st: stopped while tnet is down, started again after.
    d.ok(t, 'run', '-d', '--name', `${s.net}-rm`, '--network', s.net, '--ip', s.ip, '-p', `${s.port}:80`, img, ...serve);
    d.ok(t, 'run', '-d', '--name', `${s.net}-st`, '--network', s.net, '--ip', s.ip.replace(/\.20$/, '.21'), '-p', `${s.port + 10}:80`, img, ...serve);
    t.ok(await until(() => httpGet('127.0.0.1', s.port) !== '' && httpGet('127.0.0.1', s.port + 10) !== '', 10_000), `${driver}: both containers answer on their published ports`);
  }

  await tnet.stop('SIGKILL');
  const t0 = performance.now();
  for (const s of Object.values(sides)) {
    const rm = d.docker('rm', '-f', `${s.net}-rm`);
    t.equal(rm.code, 0, `${s.net}: docker rm -f succeeds with the plugin down ${rm.err}`);
    const stop = d.docker('stop', '-t', '1', `${s.net}-st`);
    t.equal(stop.code, 0, `${s.net}: docker stop succeeds with the plugin down ${stop.err}`);
  }
  t.comment(`dockerd gave up on the plugin within ${Math.round(performance.now() - t0)} ms`);
  await tnet.start();

  for (const [driver, s] of Object.entries(sides)) {
    const again = d.docker('run', '-d', '--name', `${s.net}-new`, '--network', s.net, '--ip', s.ip, '-p', `${s.port}:80`, img, ...serve);
    t.equal(again.code, 0, `${driver}: a new container gets the same static address and host port ${again.err}`);
    const start = d.docker('start', `${s.net}-st`);
    t.equal(start.code, 0, `${driver}: the stopped container starts again with its address and port ${start.err}`);
    t.ok(
      await until(() => httpGet('127.0.0.1', s.port).startsWith('hi-') && httpGet('127.0.0.1', s.port + 10).startsWith('hi-'), 10_000),
      `${driver}: both answer on their published ports (${httpGet('127.0.0.1', s.port)}, ${httpGet('127.0.0.1', s.port + 10)})`,
    );
  }
  t.match(tnet.log(), /releasing a stale endpoint its engine let go/, "tnet's log says what it released");

  for (const s of Object.values(sides)) {
    d.ok(t, 'rm', '-f', `${s.net}-new`, `${s.net}-st`);
    d.ok(t, 'network', 'rm', s.net);
  }
  await tnet.stop();
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing of tnet is left');
});
