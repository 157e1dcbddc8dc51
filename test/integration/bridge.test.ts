import t from 'tap';
import { assertClean, background, inSandbox, isolate, leftovers, makeOutside, netnsOf, ping, sh, stateDir, until } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
const { networkView, endpointView } = await import('../../libnetwork/views.js');

const fetchTcp = (where: string, host: string, port: number) =>
  sh(`${where} socat -T 2 - TCP:${host}:${port},connect-timeout=2 </dev/null`).out.trim();

t.test('two sandboxes on one bridge: ping, NAT out, published ports from host, outside and hairpin', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const out = makeOutside(t);
  await c.createNetwork({ name: 'web', subnet: '10.31.0.0/24', ipv6: true, subnet6: 'fd31::/64' });
  await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  const ea = await c.connect('web', 'a');
  const eb = await c.connect('web', 'b', { ports: [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8080, hostPortEnd: 0 }] });
  t.equal(ea.ipv4?.toString(), '10.31.0.2', 'first free address goes to the first endpoint');
  t.equal(eb.ipv4?.toString(), '10.31.0.3');
  t.ok(ping('a', eb.ipv4!.toString()), 'a pings b over IPv4');
  t.ok(ping('a', eb.ipv6!.toString()), 'a pings b over IPv6');
  t.ok(ping('a', out.ip), 'a reaches the outside namespace through NAT');
  t.match(inSandbox('a', 'ip route show default').out, /default via 10\.31\.0\.1 dev eth0/, 'default route via the gateway');

  const server = background(t, `ip netns exec ${netnsOf('b')} socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:'echo hello-from-b'`);
  t.ok(await until(() => inSandbox('b', 'ss -ltn').out.includes(':80')), 'server listening in b');
  t.equal(fetchTcp('', out.hostIp, 8080), 'hello-from-b', 'published port answers from the host (host address)');
  t.equal(fetchTcp('', '127.0.0.1', 8080), 'hello-from-b', 'published port answers from the host on 127.0.0.1');
  t.equal(fetchTcp(`ip netns exec ${out.ns}`, out.hostIp, 8080), 'hello-from-b', 'published port answers from the outside');
  t.equal(fetchTcp(`ip netns exec ${netnsOf('a')}`, out.hostIp, 8080), 'hello-from-b', 'published port answers from another sandbox on the bridge (hairpin)');
  server.kill();

  await c.deleteSandbox('a');
  await c.deleteSandbox('b');
  await c.deleteNetwork('web');
  c.close();
  await assertClean(t);
});

t.test('ICC off, isolation between networks, internal networks', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const out = makeOutside(t);
  await c.createNetwork({ name: 'noicc', options: { 'com.docker.network.bridge.enable_icc': 'false' } });
  await c.createNetwork({ name: 'other' });
  await c.createNetwork({ name: 'priv', internal: true });
  for (const s of ['a', 'b', 'c', 'd', 'e']) await c.createSandbox({ name: s });
  const a = await c.connect('noicc', 'a');
  const b = await c.connect('noicc', 'b');
  const cc = await c.connect('other', 'c');
  const d = await c.connect('priv', 'd');
  const e = await c.connect('priv', 'e');
  t.notOk(ping('a', b.ipv4!.toString()), 'ICC off: a cannot reach b on the same bridge');
  t.ok(ping('a', out.ip), 'ICC off still reaches the outside');
  t.notOk(ping('c', a.ipv4!.toString()), 'other network cannot reach noicc');
  t.notOk(ping('a', cc.ipv4!.toString()), 'noicc cannot reach the other network');
  t.ok(ping('d', e.ipv4!.toString()), 'internal: members reach each other');
  t.notOk(ping('d', out.ip), 'internal: no way out');
  t.equal(inSandbox('d', 'ip route show default').out.trim(), '', 'internal: no default route');
  t.notOk(ping('c', d.ipv4!.toString()), 'internal: no way in from another network');
  t.rejects(c.connect('priv', 'c', { ports: [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 9000, hostPortEnd: 0 }] }), /internal/, 'internal networks publish no ports');
  for (const s of ['a', 'b', 'c', 'd', 'e']) await c.deleteSandbox(s);
  for (const n of ['noicc', 'other', 'priv']) await c.deleteNetwork(n);
  c.close();
  await assertClean(t);
});

t.test('bad input: a clear error naming the problem, and nothing changes', async (t) => {
  const dir = stateDir(t);
  const c = await Controller.open({ stateDir: dir });
  await c.createNetwork({ name: 'n1', subnet: '10.40.0.0/24' });
  await c.createSandbox({ name: 's1' });
  await c.connect('n1', 's1', { ip: '10.40.0.10', ports: [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8081, hostPortEnd: 0 }] });
  await c.createSandbox({ name: 's2' });
  sh('ip link add foreignbr type bridge');
  const before = { nets: c.networks().map((n) => networkView(n)), eps: c.endpoints().map((e) => endpointView(e)), pools: (await c.pools()).length, kernel: leftovers() };
  const cases: [string, () => Promise<unknown>, RegExp, string][] = [
    ['malformed subnet', () => c.createNetwork({ name: 'x1', subnet: '10.0.0.0/33' }), /10\.0\.0\.0\/33/, 'invalid-argument'],
    ['subnet with host bits', () => c.createNetwork({ name: 'x1', subnet: '10.50.0.1/24' }), /host bits/, 'invalid-argument'],
    ['overlapping subnet', () => c.createNetwork({ name: 'x1', subnet: '10.40.0.128/25' }), /10\.40\.0\.0\/24/, 'conflict'],
    ['gateway outside subnet', () => c.createNetwork({ name: 'x1', subnet: '10.51.0.0/24', gateway: '10.52.0.1' }), /10\.52\.0\.1/, 'invalid-argument'],
    ['address outside the pool', () => c.connect('n1', 's2', { ip: '10.99.0.5' }), /10\.99\.0\.5/, 'invalid-argument'],
    ['address already taken', () => c.connect('n1', 's2', { ip: '10.40.0.10' }), /10\.40\.0\.10/, 'conflict'],
    ['unknown network', () => c.connect('nope', 's2'), /network "nope" not found/, 'not-found'],
    ['unknown sandbox', () => c.connect('n1', 'nope'), /sandbox "nope" not found/, 'not-found'],
    ['interface name over 15 bytes', () => c.createNetwork({ name: 'x1', options: { 'com.docker.network.bridge.name': 'a-very-long-bridge' } }), /at most 15/, 'invalid-argument'],
    ['interface name with a bad character', () => c.createNetwork({ name: 'x1', options: { 'com.docker.network.bridge.name': 'br/0' } }), /may not contain/, 'invalid-argument'],
    ['bridge name owned by someone else', () => c.createNetwork({ name: 'x1', options: { 'com.docker.network.bridge.name': 'foreignbr' } }), /foreignbr.*other than tnet/, 'conflict'],
    ['port already published', () => c.connect('n1', 's2', { ports: [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8081, hostPortEnd: 0 }] }), /8081.*already published by sandbox "s1"/, 'conflict'],
    ['deleting a network with endpoints', () => c.deleteNetwork('n1'), /still has 1 endpoint/, 'busy'],
    ['bad sandbox name', () => c.createSandbox({ name: 'bad name' }), /may only contain/, 'invalid-argument'],
    ['bridge name the kernel would rewrite', () => c.createNetwork({ name: 'x1', options: { 'com.docker.network.bridge.name': 'br%d' } }), /contains "%"/, 'invalid-argument'],
    ['bad MTU', () => c.createNetwork({ name: 'x1', options: { 'com.docker.network.driver.mtu': '12' } }), /MTU/, 'invalid-argument'],
  ];
  for (const [what, fn, msg, code] of cases) {
    await t.rejects(fn(), { message: msg, code }, what);
  }
  t.same(
    { nets: c.networks().map((n) => networkView(n)), eps: c.endpoints().map((e) => endpointView(e)), pools: (await c.pools()).length, kernel: leftovers() },
    before,
    'nothing changed: networks, endpoints, pools, links, namespaces, nft',
  );
  // An unknown option is accepted and reported as ignored, as Docker's bridge accepts it (issue 13 item 5).
  const x1 = await c.createNetwork({ name: 'x1', options: { 'com.docker.network.bridge.frobnicate': '1' } });
  t.equal(c.networkDetails(x1).ignored_options, 'com.docker.network.bridge.frobnicate', 'unknown option: accepted, shown as ignored');
  await c.deleteNetwork('x1');

  sh('ip link del foreignbr');
  await c.deleteSandbox('s1');
  await c.deleteSandbox('s2');
  await c.deleteNetwork('n1');
  c.close();
  await assertClean(t);
});
