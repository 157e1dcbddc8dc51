/**
 * tnet as a Docker plugin, proved with a real dockerd (Debian docker.io 20.10) and real containers.
 * The whole file runs inside its own network + mount namespace (see docker-harness.ts).
 */
import { statSync } from 'node:fs';
import t from 'tap';
import { makeOutside, sh, until } from '../integration/harness.js';
import { type Dockerd, PLUGIN_SOCKET, dockerAsync, httpGet, importBusybox, isolateDocker, pluginCall, startDockerd, startTnet, tnetLeftovers, logsOnFailure } from './docker-harness.js';

await isolateDocker();

t.test('vertical slice: create a tnet network, two containers ping each other, teardown leaves nothing', async (t) => {
  const tnet = await startTnet(t);
  t.ok(tnet.startMs < 1000, `the plugin socket answered ${Math.round(tnet.startMs)} ms after the process started (target 300 on an idle machine)`);
  const st = statSync(PLUGIN_SOCKET);
  t.equal(st.mode & 0o777, 0o660, 'socket mode 0660: never world-writable');
  t.equal(st.uid, 0, 'socket owned by root');
  const d = await startDockerd(t);
  const img = importBusybox(d);
  logsOnFailure(t, tnet, d);

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

/** The IPv4/IPv6 address and MAC of a container on a network, from docker inspect. */
function addrOf(d: Dockerd, ctr: string, net: string): { ip: string; ip6: string; mac: string } {
  const f = `{{with index .NetworkSettings.Networks "${net}"}}{{.IPAddress}} {{.GlobalIPv6Address}} {{.MacAddress}}{{end}}`;
  const [ip = '', ip6 = '', mac = ''] = d.docker('inspect', '-f', f, ctr).out.split(' ');
  return { ip, ip6, mac };
}

/** An HTTP GET with socat (scripts/setup.sh installs it); the body, or '' when nothing answers. */
function wget(where: string, url: string): string {
  const m = /^http:\/\/([^/]+):(\d+)\//.exec(url)!;
  return httpGet(m[1]!, Number(m[2]), where);
}

t.test('with dockerd defaults (--iptables=true, FORWARD policy DROP)', async (t) => {
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  const out = makeOutside(t);
  logsOnFailure(t, tnet, d);
  t.match(sh('iptables -S FORWARD').out, /-P FORWARD DROP/, 'dockerd set the FORWARD policy to DROP');

  await t.test('network create/inspect/rm with bridge options, subnet, gateway, ip-range, aux', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.91.0.0/24', '--gateway', '10.91.0.254', '--ip-range', '10.91.0.128/25',
      '--aux-address', 'host1=10.91.0.5', '-o', 'com.docker.network.bridge.name=tnbr91', '-o', 'com.docker.network.driver.mtu=1400',
      '-o', 'com.docker.network.bridge.enable_icc=true', 'opts');
    const info = JSON.parse(d.ok(t, 'network', 'inspect', 'opts'))[0];
    t.equal(info.Driver, 'tnet');
    t.same(info.IPAM.Config[0], { Subnet: '10.91.0.0/24', IPRange: '10.91.0.128/25', Gateway: '10.91.0.254', AuxiliaryAddresses: { host1: '10.91.0.5' } }, 'IPAM config as given');
    t.equal(info.Options['com.docker.network.bridge.name'], 'tnbr91');
    const link = sh('ip -d -o link show tnbr91').out;
    t.match(link, /mtu 1400/, 'bridge named by the option, with the MTU');
    t.match(sh('ip -o addr show tnbr91').out, /10\.91\.0\.254\/24/, 'bridge holds the gateway');
    d.ok(t, 'run', '-d', '--name', 'o1', '--network', 'opts', img, 'sleep', '300');
    t.match(addrOf(d, 'o1', 'opts').ip, /^10\.91\.0\.(12[89]|1[3-9]\d|2\d\d)$/, 'dynamic address from the ip-range');
    t.match(d.ok(t, 'exec', 'o1', 'ip', 'link', 'show', 'eth0'), /mtu 1400/, 'container interface has the MTU');
    d.ok(t, 'rm', '-f', 'o1');
    d.ok(t, 'network', 'rm', 'opts');
    t.equal(sh('ip link show tnbr91').code, 1, 'bridge gone with the network');
    d.ok(t, 'network', 'create', '-d', 'tnet', '-o', 'com.docker.network.bridge.nosuch=1', 'unkopt');
    t.pass("an unknown driver option is accepted, as by Docker's bridge (tnet logs it as ignored)");
    d.ok(t, 'network', 'rm', 'unkopt');
    const bad = d.docker('network', 'create', '-d', 'tnet', '-o', 'com.docker.network.bridge.name=br%d', 'badopt');
    t.not(bad.code, 0, 'a bridge name the kernel would rewrite is refused');
    t.match(bad.err, /bridge name "br%d" contains "%"/, `clear error: ${bad.err}`);
    t.equal(d.docker('network', 'inspect', 'badopt').code, 1, 'and no network was made');
  });

  await t.test('containers ping each other, reach the outside through NAT, published ports answer', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.92.0.0/24', 'web');
    d.ok(t, 'run', '-d', '--name', 'w1', '--network', 'web', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'w2', '--network', 'web', '-p', '18080:80', '-p', '127.0.0.1:18081:80', '-p', '18090-18095:81',
      img, 'sh', '-c', 'httpd -p 80 -h /www; httpd -p 81 -h /www; sleep 300');
    const w1 = addrOf(d, 'w1', 'web');
    const w2 = addrOf(d, 'w2', 'web');
    t.equal(d.docker('exec', 'w1', 'ping', '-c', '1', '-W', '2', w2.ip).code, 0, 'w1 pings w2');
    t.equal(d.docker('exec', 'w1', 'ping', '-c', '1', '-W', '2', out.ip).code, 0, 'w1 reaches the outside namespace through NAT');
    t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18080/`), 'hello-from-container', 'published port answers from outside');
    t.equal(wget('', `http://${out.hostIp}:18080/`), 'hello-from-container', 'published port answers from the host');
    t.equal(wget('', 'http://127.0.0.1:18080/'), 'hello-from-container', 'published port answers on the host loopback');
    t.equal(wget('', 'http://127.0.0.1:18081/'), 'hello-from-container', 'host-IP binding answers on 127.0.0.1');
    t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18081/`), '', 'host-IP binding does not answer elsewhere');
    t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18090/`), 'hello-from-container', 'a port range publishes its first free port');
    t.equal(wget('', `http://${w2.ip}:80/`), 'hello-from-container', 'host reaches the container directly');
    // dockerd shows no ports of remote drivers in `docker port`/inspect (it cannot read them back:
    // moby/libnetwork#2451); EndpointOperInfo on the socket is where they are.
    const ids = d.ok(t, 'inspect', '-f', '{{.NetworkSettings.Networks.web.NetworkID}} {{.NetworkSettings.Networks.web.EndpointID}}', 'w2').split(' ');
    const oper = (await pluginCall('/NetworkDriver.EndpointOperInfo', { NetworkID: ids[0], EndpointID: ids[1] })).json as { Value: Record<string, unknown> };
    const pm = oper.Value['com.docker.network.portmap'] as { HostPort: number; Port: number; HostIP: string }[];
    t.same(pm.map((p) => `${p.HostIP || '*'}:${p.HostPort}->${p.Port}`).sort(), ['*:18080->80', '*:18090->81', '127.0.0.1:18081->80'], 'EndpointOperInfo shows the ports');
    t.equal(oper.Value['com.docker.network.endpoint.macaddress'], w2.mac, 'and the MAC');
    // UDP: socat from the host's /usr answers each datagram.
    d.ok(t, 'run', '-d', '--name', 'u1', '--network', 'web', '-p', '15353:5353/udp', '-v', '/usr:/usr:ro', img,
      '/usr/bin/socat', 'UDP-RECVFROM:5353,fork', 'EXEC:/bin/echo udp-hello');
    const udp = () => sh(`echo x | ip netns exec ${out.ns} socat -T 2 - UDP:${out.hostIp}:15353 2>/dev/null`).out.trim();
    t.ok(await until(() => udp() === 'udp-hello', 5000), 'published UDP port answers from outside');
    d.ok(t, 'rm', '-f', 'u1');
    const conflictRun = d.docker('run', '-d', '--name', 'w3', '--network', 'web', '-p', '18080:80', img, 'sleep', '300');
    t.not(conflictRun.code, 0, 'a host port already published is refused');
    t.match(conflictRun.err, /18080\/tcp is already allocated/, `clear error: ${conflictRun.err}`);
    d.docker('rm', '-f', 'w3');
    d.ok(t, 'rm', '-f', 'w1', 'w2');
    t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18080/`), '', 'port gone with the container');
    d.ok(t, 'network', 'rm', 'web');
  });

  await t.test('host_binding_ipv4 and enable_ip_masquerade=false; dockerd bridge with tnet IPAM', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '-o', 'com.docker.network.bridge.host_binding_ipv4=127.0.0.1', 'hb');
    d.ok(t, 'run', '-d', '--name', 'h1', '--network', 'hb', '-p', '18400:80', img, 'sh', '-c', 'httpd -p 80 -h /www; sleep 300');
    t.ok(await until(() => wget('', 'http://127.0.0.1:18400/') === 'hello-from-container', 5000), 'default host binding 127.0.0.1 answers');
    t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18400/`), '', 'and nothing else');
    d.ok(t, 'network', 'create', '-d', 'tnet', '-o', 'com.docker.network.bridge.enable_ip_masquerade=false', 'nomasq');
    d.ok(t, 'run', '-d', '--name', 'h2', '--network', 'nomasq', img, 'sleep', '300');
    t.not(d.docker('exec', 'h2', 'ping', '-c', '1', '-W', '1', out.ip).code, 0, 'no masquerade: the outside (no route back) does not answer');
    d.ok(t, 'rm', '-f', 'h1', 'h2');
    d.ok(t, 'network', 'rm', 'hb', 'nomasq');
    d.ok(t, 'network', 'create', '-d', 'bridge', '--ipam-driver', 'tnet', '--subnet', '10.86.0.0/24', 'dbr');
    d.ok(t, 'run', '-d', '--name', 'h3', '--network', 'dbr', img, 'sleep', '300');
    t.equal(addrOf(d, 'h3', 'dbr').ip, '10.86.0.2', "dockerd's bridge driver takes addresses from tnet's IPAM");
    d.ok(t, 'rm', '-f', 'h3');
    d.ok(t, 'network', 'rm', 'dbr');
  });

  await t.test('ICC off: containers on one bridge cannot reach each other, but reach the outside', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '-o', 'com.docker.network.bridge.enable_icc=false', 'noicc');
    d.ok(t, 'network', 'create', '-d', 'tnet', 'other');
    d.ok(t, 'run', '-d', '--name', 'x1', '--network', 'noicc', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'x2', '--network', 'noicc', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'x3', '--network', 'other', img, 'sleep', '300');
    t.not(d.docker('exec', 'x1', 'ping', '-c', '1', '-W', '1', addrOf(d, 'x2', 'noicc').ip).code, 0, 'ICC off: x1 cannot reach x2');
    t.equal(d.docker('exec', 'x1', 'ping', '-c', '1', '-W', '2', out.ip).code, 0, 'ICC off: the outside still answers');
    t.not(d.docker('exec', 'x3', 'ping', '-c', '1', '-W', '1', addrOf(d, 'x1', 'noicc').ip).code, 0, 'another tnet network cannot reach in');
    // dockerd's own bridge networks stay isolated from tnet's, both ways (as between Docker's networks).
    d.ok(t, 'run', '-d', '--name', 'x4', img, 'sleep', '300');
    const x4 = addrOf(d, 'x4', 'bridge').ip;
    t.match(x4, /^172\.17\./, `a container on dockerd's default bridge (${x4})`);
    t.not(d.docker('exec', 'x3', 'ping', '-c', '1', '-W', '1', x4).code, 0, "a tnet container cannot reach dockerd's bridge network");
    t.not(d.docker('exec', 'x4', 'ping', '-c', '1', '-W', '1', addrOf(d, 'x3', 'other').ip).code, 0, "dockerd's bridge network cannot reach a tnet container");
    t.equal(d.docker('exec', 'x4', 'ping', '-c', '1', '-W', '2', out.ip).code, 0, "dockerd's own network still works");
    d.ok(t, 'rm', '-f', 'x1', 'x2', 'x3', 'x4');
    d.ok(t, 'network', 'rm', 'noicc', 'other');
  });

  await t.test('static --ip and --mac-address, internal networks, connect/disconnect, several networks', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.93.0.0/24', 'n1');
    d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.94.0.0/24', '--internal', 'priv');
    d.ok(t, 'run', '-d', '--name', 's1', '--network', 'n1', '--ip', '10.93.0.50', '--mac-address', '02:42:0a:5d:00:32', img, 'sleep', '300');
    t.same(addrOf(d, 's1', 'n1'), { ip: '10.93.0.50', ip6: '', mac: '02:42:0a:5d:00:32' }, 'inspect shows the static IP and MAC');
    t.match(d.ok(t, 'exec', 's1', 'ip', 'addr', 'show', 'eth0'), /02:42:0a:5d:00:32[\s\S]*10\.93\.0\.50\/24/, 'inside: that MAC and IP');
    d.ok(t, 'run', '-d', '--name', 'p1', '--network', 'priv', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'p2', '--network', 'priv', img, 'sleep', '300');
    t.equal(d.docker('exec', 'p1', 'ping', '-c', '1', '-W', '2', addrOf(d, 'p2', 'priv').ip).code, 0, 'internal: members reach each other');
    t.not(d.docker('exec', 'p1', 'ping', '-c', '1', '-W', '1', out.ip).code, 0, 'internal: no way out');
    t.equal(d.ok(t, 'exec', 'p1', 'ls', '/sys/class/net').split(/\s+/).sort().join(' '), 'eth0 lo', 'internal: no docker_gwbridge interface');
    d.ok(t, 'network', 'connect', '--ip', '10.94.0.77', 'priv', 's1');
    t.match(d.ok(t, 'exec', 's1', 'ip', 'addr', 'show', 'eth1'), /10\.94\.0\.77\/24/, 'connect: eth1 with the preferred address');
    t.equal(d.docker('exec', 's1', 'ping', '-c', '1', '-W', '2', addrOf(d, 'p1', 'priv').ip).code, 0, 'connected container reaches the second network');
    t.equal(d.docker('exec', 's1', 'ping', '-c', '1', '-W', '2', out.ip).code, 0, 'and still the outside through the first');
    d.ok(t, 'network', 'disconnect', 'priv', 's1');
    t.not(d.docker('exec', 's1', 'ip', 'link', 'show', 'eth1').code, 0, 'disconnect: eth1 gone');
    d.ok(t, 'rm', '-f', 's1', 'p1', 'p2');
    d.ok(t, 'network', 'rm', 'n1', 'priv');
  });

  await t.test("tnet's IPAM driver: auto pool, explicit subnet/ip-range/gateway/aux, static IP, dual stack", async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '--ipam-driver', 'tnet', 'auto');
    const auto = JSON.parse(d.ok(t, 'network', 'inspect', 'auto'))[0].IPAM.Config[0];
    t.match(auto.Subnet, /^172\.(1[89]|2\d|3[01])\.0\.0\/16$/, `auto pool ${auto.Subnet} (skipping docker0's 172.17/16)`);
    d.ok(t, 'network', 'create', '-d', 'tnet', '--ipam-driver', 'tnet', '--subnet', '10.98.0.0/24', '--ip-range', '10.98.0.128/25',
      '--gateway', '10.98.0.254', '--aux-address', 'host1=10.98.0.5', 'explicit');
    d.ok(t, 'run', '-d', '--name', 'i1', '--network', 'explicit', img, 'sleep', '300');
    t.match(addrOf(d, 'i1', 'explicit').ip, /^10\.98\.0\.(12[89]|1[3-9]\d|2\d\d)$/, 'dynamic address from the range');
    t.match(d.docker('run', '--rm', '--network', 'explicit', '--ip', '10.98.0.5', img, 'true').err, /10\.98\.0\.5/, 'aux address is reserved');
    d.ok(t, 'run', '-d', '--name', 'i3', '--network', 'explicit', '--ip', '10.98.0.200', img, 'sleep', '300');
    t.equal(addrOf(d, 'i3', 'explicit').ip, '10.98.0.200', 'static IP');
    const dup = d.docker('run', '--rm', '--network', 'explicit', '--ip', '10.98.0.200', img, 'true');
    t.not(dup.code, 0, 'a static IP in use is refused');
    t.match(dup.err, /already allocated/, `clear error: ${dup.err}`);
    t.equal(d.docker('exec', 'i1', 'ping', '-c', '1', '-W', '2', '10.98.0.200').code, 0, 'containers on the IPAM network ping');
    d.ok(t, 'rm', '-f', 'i1', 'i3');
    d.ok(t, 'run', '--rm', '--network', 'explicit', '--ip', '10.98.0.200', img, 'true');
    t.pass('the static IP is reusable after its container is gone');

    d.ok(t, 'network', 'create', '-d', 'tnet', '--ipam-driver', 'tnet', '--ipv6', '--subnet', '10.97.0.0/24', '--subnet', 'fd00:97::/64', 'dual');
    d.ok(t, 'run', '-d', '--name', 'd1', '--network', 'dual', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'd2', '--network', 'dual', '--ip6', 'fd00:97::99', img, 'sleep', '300');
    const d2 = addrOf(d, 'd2', 'dual');
    t.equal(d2.ip6, 'fd00:97::99', 'static --ip6');
    t.equal(d.docker('exec', 'd1', 'ping', '-c', '1', '-W', '2', d2.ip).code, 0, 'dual stack: IPv4 ping');
    t.equal(d.docker('exec', 'd1', 'ping', '-6', '-c', '1', '-W', '2', d2.ip6).code, 0, 'dual stack: IPv6 ping');
    t.match(d.ok(t, 'exec', 'd1', 'ip', '-6', 'route'), /default via fd00:97::1/, 'IPv6 default route via the gateway');
    d.ok(t, 'rm', '-f', 'd1', 'd2');

    // 50 quick start/stops, 10 at a time: addresses of live containers are never shared.
    let dups = 0;
    for (let round = 0; round < 5; round++) {
      const names = Array.from({ length: 10 }, (_, i) => `q${round}-${i}`);
      await Promise.all(names.map((n) => dockerAsync(d, ['run', '-d', '--name', n, '--network', 'explicit', img, 'sleep', '60'])));
      const ips = names.map((n) => addrOf(d, n, 'explicit').ip);
      if (new Set(ips).size !== ips.length || ips.some((ip) => !ip)) dups++;
      await Promise.all(names.map((n) => dockerAsync(d, ['rm', '-f', n])));
    }
    t.equal(dups, 0, 'no duplicate addresses over 50 quick container start/stops');
    // dockerd releases a force-removed container's endpoint asynchronously; under load a
    // `network rm` right after 10 parallel `rm -f` can still see it ("has active endpoints").
    for (const n of ['auto', 'explicit', 'dual']) {
      let last = '';
      const removed = await until(() => {
        const r = d.docker('network', 'rm', n);
        last = r.err;
        return r.code === 0 || !/has active endpoints/.test(r.err);
      }, 15_000);
      t.ok(removed && !/has active endpoints/.test(last), `network ${n} removed once dockerd has released its last endpoints`);
    }
    t.notMatch(d.docker('network', 'ls', '--format', '{{.Name}}').out, /^(auto|explicit|dual)$/m, 'auto, explicit and dual are gone');
    t.same(JSON.parse((await pluginCall('/IpamDriver.GetDefaultAddressSpaces', '')).body), {
      LocalDefaultAddressSpace: 'tnet-local', GlobalDefaultAddressSpace: 'tnet-global',
    });
  });

  await t.test('bad input straight on the socket: a clear error, no crash, nothing changed', async (t) => {
    const netId = d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.95.0.0/24', 'keep');
    const state = () => JSON.stringify([sh('ip -o link show').out.replace(/\d+: /g, ''), sh('nft list table inet tnet').out]);
    const before = state();
    const U = 'e'.repeat(64);
    const cases: [string, string | object, number, RegExp][] = [
      ['/NetworkDriver.CreateNetwork', '{"NetworkID": "', 400, /not valid JSON/],
      ['/NetworkDriver.CreateNetwork', { NetworkID: 42 }, 400, /NetworkID must be string/],
      ['/NetworkDriver.CreateNetwork', { NetworkID: U, IPv4Data: [{ Pool: 'banana' }] }, 200, /banana/],
      ['/NetworkDriver.CreateNetwork', { NetworkID: U, IPv4Data: [{ Pool: '10.95.0.0/24' }] }, 200, /overlaps 10\.95\.0\.0\/24/],
      ['/NetworkDriver.CreateEndpoint', { NetworkID: U, EndpointID: U, Interface: { Address: '10.95.0.9/24' } }, 200, /unknown NetworkID/],
      ['/NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: U, Interface: { Address: '10.1.1.1/24' } }, 200, /not in the network's subnet/],
      ['/NetworkDriver.Join', { NetworkID: netId, EndpointID: U, SandboxKey: '/var/run/docker/netns/x' }, 200, /unknown EndpointID/],
      ['/NetworkDriver.Join', { NetworkID: netId, EndpointID: U }, 400, /SandboxKey/],
      ['/NetworkDriver.Leave', { NetworkID: netId, EndpointID: U }, 200, /unknown EndpointID/],
      ['/NetworkDriver.DeleteEndpoint', { NetworkID: U, EndpointID: U }, 200, /unknown NetworkID/],
      ['/NetworkDriver.EndpointOperInfo', { NetworkID: netId, EndpointID: 'x' }, 400, /EndpointID must match/],
      ['/NetworkDriver.CreateNetwork', { NetworkID: U, Options: { big: 'x'.repeat(2 << 20) } }, 413, /too large/],
      ['/IpamDriver.RequestAddress', { PoolID: 'no-such-pool' }, 200, /no IPAM pool/],
      ['/IpamDriver.RequestPool', { Pool: '10.95.0.0/16' }, 200, /overlaps/],
      ['/IpamDriver.ReleasePool', '[]', 200, /must be object/],
    ];
    for (const [path, body, status, re] of cases) {
      const r = await pluginCall(path, body).catch((e: NodeJS.ErrnoException) => e);
      if (r instanceof Error) {
        // A 2 MiB body: the server answers 413 and closes while the client still writes; the
        // client may see the reset before the answer (the unit tests check the 413 itself).
        t.ok(status === 413 && ['EPIPE', 'ECONNRESET'].includes(r.code ?? ''), `${path}: connection closed on a body over the limit (${r.code})`);
        continue;
      }
      const json = r.json as Record<string, string> | undefined;
      const msg = path.startsWith('/Ipam') ? json?.Error : json?.Err;
      t.equal(r.status, status, `${path} ${typeof body === 'string' ? body : JSON.stringify(body).slice(0, 80)} -> ${r.status}`);
      t.match(msg ?? '', re, `  error: ${msg?.slice(0, 160)}`);
    }
    t.equal(state(), before, 'no link or firewall rule changed');
    t.equal((await pluginCall('/Plugin.Activate', '')).status, 200, 'plugin alive');
    d.ok(t, 'run', '--rm', '--network', 'keep', img, 'true');
    t.pass('the network still works');
    d.ok(t, 'network', 'rm', 'keep');
  });

  await t.test('plugin kill -9 and graceful restart with containers running change nothing for them', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.96.0.0/24', 'dur');
    d.ok(t, 'network', 'create', '-d', 'tnet', '--ipam-driver', 'tnet', '--subnet', '10.96.1.0/24', 'dur2');
    d.ok(t, 'run', '-d', '--name', 'k1', '--network', 'dur', '-p', '18200:80', img, 'sh', '-c', 'httpd -p 80 -h /www; sleep 300');
    d.ok(t, 'run', '-d', '--name', 'k2', '--network', 'dur', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'k3', '--network', 'dur2', '--ip', '10.96.1.10', img, 'sleep', '300');
    const k1 = addrOf(d, 'k1', 'dur');
    for (const how of ['SIGKILL', 'SIGTERM'] as const) {
      await tnet.stop(how);
      t.equal(d.docker('exec', 'k2', 'ping', '-c', '1', '-W', '2', k1.ip).code, 0, `${how}: containers still ping while the plugin is down`);
      const ms = await tnet.start();
      t.ok(ms < 3000, `${how}: plugin back and answering in ${Math.round(ms)} ms`);
      t.equal(d.docker('exec', 'k2', 'ping', '-c', '1', '-W', '2', k1.ip).code, 0, `${how}: containers ping after the restart`);
      t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18200/`), 'hello-from-container', `${how}: published port still answers`);
      d.ok(t, 'run', '--rm', '--network', 'dur', img, 'ping', '-c', '1', '-W', '2', k1.ip);
      t.pass(`${how}: a new container joins and reaches the old ones`);
      const more = d.docker('run', '--rm', '--network', 'dur2', img, 'true');
      t.equal(more.code, 0, `${how}: IPAM allocations continue ${more.err}`);
    }
    d.ok(t, 'rm', '-f', 'k3');
    d.ok(t, 'run', '--rm', '--network', 'dur2', '--ip', '10.96.1.10', img, 'true');
    t.pass('a static IP is reusable after plugin kill -9 and restart');
    d.ok(t, 'rm', '-f', 'k1', 'k2');
    d.ok(t, 'network', 'rm', 'dur', 'dur2');
  });

  await t.test('dockerd restart (kill -9): restart-always containers come back on their tnet networks', async (t) => {
    d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.89.0.0/24', 'rs');
    d.ok(t, 'network', 'create', '-d', 'tnet', '--ipam-driver', 'tnet', '--subnet', '10.89.1.0/24', 'rs2');
    d.ok(t, 'run', '-d', '--name', 'r1', '--restart', 'always', '--network', 'rs', img, 'sleep', '300');
    d.ok(t, 'run', '-d', '--name', 'r2', '--restart', 'always', '--network', 'rs2', '--ip', '10.89.1.20', img, 'sleep', '300');
    d.ok(t, 'network', 'connect', 'rs', 'r2');
    await d.kill9();
    await d.start();
    const back = await until(() => d.docker('inspect', '-f', '{{.State.Running}}', 'r2').out === 'true' && d.docker('inspect', '-f', '{{.State.Running}}', 'r1').out === 'true', 30_000);
    t.ok(back, 'both containers running again');
    t.equal(addrOf(d, 'r2', 'rs2').ip, '10.89.1.20', 'the static IP came back');
    t.equal(d.docker('exec', 'r1', 'ping', '-c', '1', '-W', '2', addrOf(d, 'r2', 'rs').ip).code, 0, 'they reach each other again');
    d.ok(t, 'rm', '-f', 'r1', 'r2');
    d.ok(t, 'run', '--rm', '--network', 'rs2', '--ip', '10.89.1.20', img, 'true');
    t.pass('the static IP is reusable after the ungraceful restart');
    d.ok(t, 'network', 'rm', 'rs', 'rs2');
  });

  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'after everything is removed, nothing tnet made remains');
});

t.test('with dockerd --iptables=false', async (t) => {
  // The earlier dockerd of this file left its iptables chains in our private namespace: start clean.
  sh('iptables -F; iptables -X; iptables -t nat -F; iptables -t nat -X; iptables -P FORWARD ACCEPT');
  t.equal(sh('iptables -S DOCKER-USER').code === 0, false, 'no DOCKER-USER chain to begin with');
  const tnet = await startTnet(t);
  const d = await startDockerd(t, { iptables: false, noBridge: true });
  const img = importBusybox(d);
  const out = makeOutside(t, 'nf');
  logsOnFailure(t, tnet);
  d.ok(t, 'network', 'create', '-d', 'tnet', '--subnet', '10.88.0.0/24', 'nf');
  d.ok(t, 'run', '-d', '--name', 'f1', '--network', 'nf', img, 'sleep', '300');
  d.ok(t, 'run', '-d', '--name', 'f2', '--network', 'nf', '-p', '18300:80', img, 'sh', '-c', 'httpd -p 80 -h /www; sleep 300');
  t.equal(d.docker('exec', 'f1', 'ping', '-c', '1', '-W', '2', addrOf(d, 'f2', 'nf').ip).code, 0, 'containers ping each other');
  t.equal(d.docker('exec', 'f1', 'ping', '-c', '1', '-W', '2', out.ip).code, 0, 'the outside through NAT');
  t.equal(wget(`ip netns exec ${out.ns}`, `http://${out.hostIp}:18300/`), 'hello-from-container', 'published port from outside');
  t.equal(wget('', 'http://127.0.0.1:18300/'), 'hello-from-container', 'published port from the host');
  t.equal(sh('iptables-save 2>/dev/null').out.includes('tnet:'), false, 'no iptables rules made (no DOCKER-USER to use)');
  d.ok(t, 'rm', '-f', 'f1', 'f2');
  d.ok(t, 'network', 'rm', 'nf');
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made remains');
});
