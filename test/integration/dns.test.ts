import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { assertClean, background, isolate, makeOutside, sh, stateDir, until } from './harness.js';

// Sandboxes resolving each other by name through tnet's DNS service: a Controller and the service
// in this process (as in `tnet daemon`), real namespaces, real dig and glibc (getent) inside the
// sandboxes through `ip netns exec`, which reads /etc/netns/tn-NAME/resolv.conf as any program
// in the sandbox would. The host's resolver is a dnsmasq in its own namespace ("outside").

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
const { startDnsService } = await import('../../dns/service.js');
type Controller = import('../../libnetwork/controller.js').Controller;
type DnsService = import('../../dns/service.js').DnsService;

const have = (cmd: string, arg: string) => spawnSync(cmd, [arg], { stdio: 'ignore' }).error === undefined;
if (!have('dig', '-v') || !have('dnsmasq', '--version')) {
  t.plan(0, 'needs dig (bind9-dnsutils) and dnsmasq (dnsmasq-base): run scripts/setup.sh');
  process.exit(0);
}

// ---------------------------------------------------------------- helpers

// Asynchronous: the DNS server runs in this process, a synchronous child would block it.
const run = promisify(execFile);
async function exec(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, args, { timeout: 20_000 });
    return r.stdout + r.stderr;
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    return (x.stdout ?? '') + (x.stderr ?? '') + (x.stdout || x.stderr ? '' : x.message);
  }
}

interface Dig {
  out: string;
  status: string | undefined;
  flags: string;
  /** The data of each answer record, in order. */
  answers: string[];
  /** dig's own measure of the exchange, ms. */
  ms: number | undefined;
}

/** dig inside a sandbox, at the nameserver of its resolv.conf (unless args say @server). */
async function dig(sandbox: string, ...args: string[]): Promise<Dig> {
  // the first bare argument is the name, given with -q: dig would take a name like "a" or "ns" for a type
  const i = args.findIndex((x, k) => !/^[-+@]/.test(x) && args[k - 1] !== '-x');
  const argv = i < 0 ? args : [...args.slice(0, i), '-q', args[i]!, ...args.slice(i + 1)];
  const out = await exec('ip', ['netns', 'exec', `tn-${sandbox}`, 'dig', '+time=3', '+tries=1', ...argv]);
  const answers: string[] = [];
  const sec = out.split(';; ANSWER SECTION:\n')[1];
  if (sec) for (const line of sec.split('\n')) {
    if (!line.trim()) break;
    answers.push(line.trim().split(/\s+/).slice(4).join(' '));
  }
  return {
    out,
    status: /status: (\w+)/.exec(out)?.[1],
    flags: /;; flags: ([^;]*);/.exec(out)?.[1] ?? '',
    answers,
    ms: /Query time: (\d+) msec/.exec(out) ? Number(/Query time: (\d+) msec/.exec(out)![1]) : undefined,
  };
}

/** glibc's resolver in the sandbox (getent ahostsv4): the addresses, or [] when the name does not resolve. */
async function getent(sandbox: string, name: string): Promise<string[]> {
  const out = await exec('ip', ['netns', 'exec', `tn-${sandbox}`, 'getent', 'ahostsv4', name]);
  return [...new Set(out.split('\n').filter((l) => /STREAM/.test(l)).map((l) => l.split(/\s+/)[0]!))];
}

/** A dnsmasq in its own namespace standing in for the host's resolver; it logs every query it gets. */
function upstream(tt: Test): { ip: string; queries: () => string[]; resolvConf: string } {
  const out = makeOutside(tt, 'up');
  const dir = stateDir(tt);
  const logFile = join(dir, 'dnsmasq.log');
  background(
    tt,
    `ip netns exec ${out.ns} dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll ` +
      `--user=root --pid-file= --listen-address=${out.ip} --bind-interfaces --log-queries --log-facility=${logFile} ` +
      `--address=/ready.test/192.0.2.1 --address=/ext.example/192.0.2.10 --address=/web.lab.example/192.0.2.20 --local=/example/`,
  );
  const resolvConf = join(dir, 'resolv.conf');
  writeFileSync(resolvConf, `nameserver ${out.ip}\nsearch lab.example corp.example\n`);
  return {
    ip: out.ip,
    resolvConf,
    queries: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '').split('\n').filter((l) => / query\[/.test(l)),
  };
}

async function waitUpstream(ip: string): Promise<void> {
  const ok = await until(async () => /192\.0\.2\.1\b/.test(await exec('dig', [`@${ip}`, '+time=1', '+tries=1', '+short', 'ready.test'])), 5000);
  if (!ok) throw new Error('dnsmasq did not start');
}

interface Opened {
  c: Controller;
  dns: DnsService;
  /** Close the service, then the controller (once; teardown calls it too). */
  close(): Promise<void>;
}

/** A Controller and the DNS service on it, as `tnet daemon` runs them; closed at teardown at the latest. */
async function open(tt: Test, dir: string, opts: Parameters<typeof startDnsService>[1] = {}): Promise<Opened> {
  const c = await Controller.open({ stateDir: dir, scope: '' }); // tn-NAME, as the daemon names them
  const dns = await startDnsService(c, { ...opts, server: { upstreamTimeoutMs: 500, forwardDeadlineMs: 1500, ...opts.server } });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await dns.close();
    c.close();
  };
  tt.teardown(close);
  return { c, dns, close };
}

/** Delete every sandbox and network, close service and controller, and check the kernel is clean. */
async function finish(tt: Test, o: Opened): Promise<void> {
  for (const sb of o.c.sandboxes()) await o.c.deleteSandbox(sb.id);
  for (const n of o.c.networks()) await o.c.deleteNetwork(n.id);
  await o.close();
  await assertClean(tt);
}

/** Sockets on port 53 inside a sandbox. */
const port53 = (sandbox: string) => sh(`ip netns exec tn-${sandbox} ss -Hlnut 'sport = :53'`).out.trim();

// ---------------------------------------------------------------- tests

t.test('sandboxes resolve each other by name, alias, name.network and address; other networks see nothing', async (t) => {
  const up = upstream(t);
  await waitUpstream(up.ip);
  const o = await open(t, stateDir(t), { resolvConf: up.resolvConf });
  const { c, dns } = o;
  await c.createNetwork({ name: 'n1', subnet: '10.61.0.0/24', ipv6: true, subnet6: 'fd61::/64' });
  await c.createNetwork({ name: 'n2', subnet: '10.62.0.0/24' });
  for (const s of ['a', 'b', 'c', 'd']) await c.createSandbox({ name: s });
  const a = await c.connect('n1', 'a');
  const b = await c.connect('n1', 'b', { aliases: ['web', 'Api'] });
  const cc = await c.connect('n2', 'c');
  const d = await c.connect('n2', 'd', { aliases: ['web'] });
  const bv4 = b.ipv4!.toString();
  const bv6 = b.ipv6!.toString();

  const conf = readFileSync('/etc/netns/tn-a/resolv.conf', 'utf8');
  t.match(conf, /^nameserver 127\.0\.0\.11$/m, 'resolv.conf points at 127.0.0.11');
  t.match(conf, /^search lab\.example corp\.example$/m, "the host's search domains");
  t.match(conf, /^options ndots:0$/m);
  t.notMatch(conf, /198\.51\.100/, 'not the host resolver itself');
  t.match(port53('a'), /127\.0\.0\.11:53/, 'a listener on 127.0.0.11:53 inside the sandbox');
  t.equal(port53('a').split('\n').length, 2, 'UDP and TCP');

  t.same((await dig('a', 'b')).answers, [bv4], 'a resolves b');
  t.same((await dig('b', 'a')).answers, [a.ipv4!.toString()], 'b resolves a');
  t.same((await dig('a', 'b', 'AAAA')).answers, [bv6], 'AAAA');
  t.same((await dig('a', 'web')).answers, [bv4], 'an alias');
  t.same((await dig('a', 'api')).answers, [bv4], 'an alias given in capitals');
  t.same((await dig('a', 'b.n1')).answers, [bv4], 'name.network');
  t.same((await dig('a', 'WEB.N1')).answers, [bv4], 'case-insensitive');
  t.same((await dig('a', '-x', bv4)).answers, ['b.n1.'], 'PTR for the IPv4 address');
  t.same((await dig('a', '-x', bv6)).answers, ['b.n1.'], 'PTR for the IPv6 address');
  t.same(await getent('a', 'b'), [bv4], "glibc's resolver in the sandbox finds b");
  const tcp = await dig('a', '+tcp', 'web.n1');
  t.same(tcp.answers, [bv4], 'over TCP');
  t.match(tcp.out, /\(TCP\)/);

  // the other network: its own names, and a v4-only name asked for AAAA
  t.same((await dig('c', 'd')).answers, [d.ipv4!.toString()], 'c resolves d on n2');
  t.same((await dig('c', 'web')).answers, [d.ipv4!.toString()], "n2's web is d, not n1's b");
  const aaaa = await dig('c', 'd', 'AAAA');
  t.equal(aaaa.status, 'NOERROR', 'AAAA for a v4-only name: NOERROR...');
  t.same(aaaa.answers, [], '...and no answer');
  t.same((await dig('d', '-x', cc.ipv4!.toString())).answers, ['c.n2.']);

  const fwd = dns.server.stats.forwarded;
  for (const name of ['a', 'b', 'api']) {
    const r = await dig('c', name);
    t.equal(r.status, 'NXDOMAIN', `c (on n2) does not see "${name}"`);
    t.same(r.answers, []);
  }
  t.equal(dns.server.stats.forwarded, fwd, 'and those names were not forwarded');
  t.notOk(up.queries().some((q) => /query\[\w+\] (a|b|api|web|d)(\.n1)? from/.test(q)), 'the upstream never heard of a peer name');
  const x = await dig('c', 'b.n1');
  t.same(x.answers, [], 'b.n1 from n2: not answered (n1 is not a zone of c)');
  t.notOk((await dig('c', '-x', bv4)).answers.includes('b.n1.'), "no PTR for n1's addresses from n2");

  // names that are not tnet's go to the host's resolver, over the client's protocol
  t.same((await dig('a', 'ext.example')).answers, ['192.0.2.10'], 'an external name through the upstream');
  t.same((await dig('a', '+tcp', 'ext.example')).answers, ['192.0.2.10'], '...and over TCP');
  t.equal((await dig('a', 'missing.example')).status, 'NXDOMAIN', "the upstream's NXDOMAIN passes through");
  t.ok(up.queries().some((q) => /query\[A\] ext\.example from 198\.51\.100\.1/.test(q)), 'forwarded from the daemon, not the sandbox');
  t.same(await getent('a', 'web.lab.example'), ['192.0.2.20']);
  t.same(await getent('c', 'web'), [d.ipv4!.toString()], 'glibc: a peer name wins over the search domains');
  t.same(await getent('a', 'lab-only'), [], 'nothing invented');
  await finish(t, o);
});

t.test('internal networks resolve their members and never forward', async (t) => {
  const up = upstream(t);
  await waitUpstream(up.ip);
  const o = await open(t, stateDir(t), { resolvConf: up.resolvConf });
  const { c, dns } = o;
  await c.createNetwork({ name: 'priv', subnet: '10.63.0.0/24', internal: true });
  await c.createSandbox({ name: 'p' });
  await c.createSandbox({ name: 'q' });
  await c.connect('priv', 'p');
  const q = await c.connect('priv', 'q', { aliases: ['vault'] });
  t.same((await dig('p', 'vault.priv')).answers, [q.ipv4!.toString()]);
  const before = dns.server.stats.forwarded;
  const r = await dig('p', 'ext.example');
  t.equal(r.status, 'REFUSED', 'an external name from an internal network: REFUSED at once');
  t.notMatch(r.flags, /\bra\b/, 'no recursion offered');
  t.equal(dns.server.stats.forwarded, before, 'not forwarded');
  t.notOk(up.queries().some((l) => /ext\.example/.test(l)), 'the upstream saw nothing');
  await finish(t, o);
});

t.test('a dead upstream gives SERVFAIL within the timeout while local names answer at once', async (t) => {
  const out = makeOutside(t, 'dead');
  const dir = stateDir(t);
  // 198.51.100.99 is on the outside link and nobody has it: queries vanish (no ICMP), only a timeout ends them
  const conf = join(dir, 'resolv.conf');
  writeFileSync(conf, `nameserver 198.51.100.99\nnameserver ${out.ip}\n`);
  const o = await open(t, dir, { resolvConf: conf, server: { upstreamTimeoutMs: 400, forwardDeadlineMs: 900 } });
  const { c, dns } = o;
  t.same(dns.server.upstreams.map((u) => u.host), ['198.51.100.99', out.ip], "upstreams from the host's resolv.conf");
  await c.createNetwork({ name: 'n', subnet: '10.64.0.0/24' });
  await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  await c.connect('n', 'a');
  const b = await c.connect('n', 'b');
  const t0 = Date.now();
  const slow = dig('a', 'ext.example');
  await new Promise((r) => setTimeout(r, 100));
  const locals = await Promise.all([dig('a', 'b'), dig('a', '+tcp', 'b.n'), dig('a', '-x', b.ipv4!.toString())]);
  for (const l of locals) {
    t.ok(l.answers.length === 1, `local answer while the forward hangs: ${l.answers.join(',')}`);
    t.ok(l.ms !== undefined && l.ms < 50, `answered in ${l.ms} ms`);
  }
  const r = await slow;
  const took = Date.now() - t0;
  t.equal(r.status, 'SERVFAIL', 'both upstreams dead (silent, then port unreachable): SERVFAIL, not silence');
  t.ok(took < 900 + 700, `SERVFAIL after ${took} ms (deadline 900 ms)`);
  t.ok(took >= 350, 'after the first upstream timed out');
  await finish(t, o);
});

t.test('TC for a name with many addresses; dig retries over TCP and gets them all', async (t) => {
  const o = await open(t, stateDir(t), { upstreams: [] });
  const { c, dns } = o;
  await c.createNetwork({ name: 'crowd', subnet: '10.65.0.0/24' });
  const N = 40;
  const addrs: string[] = [];
  for (let i = 0; i < N; i++) {
    await c.createSandbox({ name: `m${i}` });
    addrs.push((await c.connect('crowd', `m${i}`, { aliases: ['svc'] })).ipv4!.toString());
  }
  const udp = await dig('m0', '+noedns', '+ignore', 'svc');
  t.match(udp.flags, /\btc\b/, 'UDP without EDNS (512 bytes): truncated');
  t.ok(udp.answers.length < N, `${udp.answers.length} of ${N} fit`);
  const full = await dig('m0', '+noedns', 'svc');
  t.match(full.out, /Truncated, retrying in TCP mode/);
  t.same([...full.answers].sort(), [...addrs].sort(), 'all of them over TCP');
  const edns = await dig('m0', '+bufsize=4096', 'svc');
  t.notMatch(edns.flags, /\btc\b/, 'an EDNS client with room gets them over UDP');
  t.equal(edns.answers.length, N);
  const again = await dig('m0', '+bufsize=4096', 'svc');
  t.not(again.answers.join(), edns.answers.join(), 'shuffled per answer');
  await finish(t, o);
});

t.test('records follow connect, disconnect and sandbox delete at once', async (t) => {
  const o = await open(t, stateDir(t), { upstreams: [] });
  const { c, dns } = o;
  await c.createNetwork({ name: 'n', subnet: '10.66.0.0/24' });
  await c.createNetwork({ name: 'm', subnet: '10.67.0.0/24' });
  await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  await c.connect('n', 'a');
  t.equal((await dig('a', 'b')).status, 'NXDOMAIN', 'b is on no network yet');
  const b1 = await c.connect('n', 'b', { aliases: ['old'] });
  t.same((await dig('a', 'b')).answers, [b1.ipv4!.toString()], 'resolves right after connect');
  t.same((await dig('a', 'old')).answers, [b1.ipv4!.toString()]);
  await c.disconnect('n', 'b');
  t.equal((await dig('a', 'b')).status, 'NXDOMAIN', 'gone right after disconnect');
  t.equal((await dig('a', 'old.n')).status, 'NXDOMAIN');
  t.same((await dig('a', '-x', b1.ipv4!.toString())).answers, [], 'PTR gone too');
  const b2 = await c.connect('n', 'b', { aliases: ['new'] });
  t.same((await dig('a', 'new')).answers, [b2.ipv4!.toString()], 'a reconnect with another alias');
  t.equal((await dig('a', 'old')).status, 'NXDOMAIN');
  // b joins a second network: its scope grows
  await c.createSandbox({ name: 'z' });
  const z = await c.connect('m', 'z');
  t.equal((await dig('b', 'z')).status, 'NXDOMAIN');
  const bm = await c.connect('m', 'b');
  t.same((await dig('b', 'z')).answers, [z.ipv4!.toString()], 'a second network: its names too');
  t.same((await dig('z', 'b')).answers, [bm.ipv4!.toString()], "b's address on m, seen from m");
  await c.deleteSandbox('b');
  t.equal((await dig('a', 'b')).status, 'NXDOMAIN', 'gone right after the sandbox is deleted');
  t.equal((await dig('a', 'new.n')).status, 'NXDOMAIN');
  t.equal((await dig('z', 'b.m')).status, 'NXDOMAIN');
  t.notOk(dns.status().sandboxes[b2.sandboxId!], "the deleted sandbox's listener is gone");
  // a sandbox created later gets its listener and resolv.conf
  await c.createSandbox({ name: 'late' });
  await c.connect('n', 'late');
  t.same((await dig('late', 'a')).answers, [c.endpointsOfSandbox(c.sandbox('a').id)[0]!.ipv4!.toString()]);
  t.equal(Object.values(dns.status().sandboxes).filter((s) => s.listening).length, 3, 'a, z and late listen');
  // closing the service closes every listener
  await dns.close();
  t.equal(port53('a'), '', 'no socket left on :53 after close');
  t.equal(port53('late'), '');
  await finish(t, o);
});

t.test('a lab node with only a point-to-point link and no gateway still resolves through 127.0.0.11', async (t) => {
  const up = upstream(t);
  await waitUpstream(up.ip);
  const o = await open(t, stateDir(t), { resolvConf: up.resolvConf });
  const { c, dns } = o;
  await c.createNetwork({ name: 'lan', subnet: '10.68.0.0/24' });
  await c.createSandbox({ name: 'r1' });
  await c.createSandbox({ name: 'r2' });
  const e1 = await c.connect('lan', 'r1');
  const e2 = await c.connect('lan', 'r2');
  // a point-to-point link between the two nodes; their tnet interface goes down, which takes the
  // connected route and the default route with it: no gateway, no route to anything but the peer
  const p = sh(
    'ip link add p2p0 netns tn-r1 type veth peer name p2p0 netns tn-r2 && ' +
      'ip -n tn-r1 addr add 192.168.77.0/31 dev p2p0 && ip -n tn-r2 addr add 192.168.77.1/31 dev p2p0 && ' +
      'ip -n tn-r1 link set p2p0 up && ip -n tn-r2 link set p2p0 up && ip -n tn-r1 link set eth0 down',
  );
  t.equal(p.code, 0, p.out);
  t.equal(sh('ip -n tn-r1 route show default').out.trim(), '', 'r1 has no default route');
  t.same(sh('ip -n tn-r1 -4 route show').out.trim().split('\n').map((l) => l.split(' ')[0]), ['192.168.77.0/31'], 'only the point-to-point route');
  t.equal(sh('ip netns exec tn-r1 ping -c1 -W1 10.68.0.1').code === 0, false, 'the gateway is unreachable');
  t.same((await dig('r1', 'r2')).answers, [e2.ipv4!.toString()], 'the peer by name');
  t.same((await dig('r1', '-x', e1.ipv4!.toString())).answers, ['r1.lan.']);
  t.same((await dig('r1', 'ext.example')).answers, ['192.0.2.10'], 'external names too: the daemon forwards them');
  t.same(await getent('r1', 'r2.lan'), [e2.ipv4!.toString()]);
  await finish(t, o);
});

t.test('listeners come back when the controller and the service restart on the same state', async (t) => {
  const dir = stateDir(t);
  const first = await open(t, dir, { upstreams: [] });
  const { c: c1 } = first;
  let c = c1;
  await c.createNetwork({ name: 'n', subnet: '10.69.0.0/24' });
  await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  await c.connect('n', 'a');
  const b = await c.connect('n', 'b', { aliases: ['db'] });
  t.same((await dig('a', 'db')).answers, [b.ipv4!.toString()]);
  await first.close();
  t.equal(port53('a'), '', 'closed with the service');
  t.equal((await dig('a', 'db')).status, undefined, 'nobody answers while the daemon is down');
  const o = await open(t, dir, { upstreams: [] });
  c = o.c;
  t.match(port53('a'), /127\.0\.0\.11:53/, 'listening again');
  t.same((await dig('a', 'db')).answers, [b.ipv4!.toString()], 'resolves after the restart (records loaded from the controller)');
  t.same((await dig('b', '+tcp', 'a.n')).answers.length, 1, 'TCP too');
  t.same((await dig('a', '-x', b.ipv4!.toString())).answers, ['b.n.']);
  // and keeps following the new controller
  await c.disconnect('n', 'b');
  t.equal((await dig('a', 'db')).status, 'NXDOMAIN');
  await finish(t, o);
});

t.test("127.0.0.11:53 already taken in one sandbox: a clear logged error; the others are unaffected", async (t) => {
  const dir = stateDir(t);
  const c0 = await Controller.open({ stateDir: dir, scope: '' });
  await c0.createNetwork({ name: 'n', subnet: '10.70.0.0/24' });
  for (const s of ['busy', 'ok']) {
    await c0.createSandbox({ name: s });
    await c0.connect('n', s);
  }
  c0.close();
  // someone else's DNS server inside "busy"
  const squatter = background(t, 'ip netns exec tn-busy socat UDP4-RECVFROM:53,bind=127.0.0.11,fork SYSTEM:true');
  t.ok(await until(() => /127\.0\.0\.11:53/.test(port53('busy'))), 'squatter listening');
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const o = await open(t, dir, { upstreams: [], logger });
  const { c, dns } = o;
  const busyId = c.sandbox('busy').id;
  const st = dns.status().sandboxes[busyId]!;
  t.equal(st.listening, false);
  t.match(st.error, /bind udp 127\.0\.0\.11:53 in netns .*tn-busy.*EADDRINUSE/, 'the error names the operation, the address, the namespace and the errno');
  const logged = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level >= 50);
  t.equal(logged.length, 1, 'one error logged');
  t.match(logged[0]?.msg, /sandbox "busy".*127\.0\.0\.11:53.*EADDRINUSE/);
  t.same((await dig('ok', 'busy')).answers, [c.endpointsOfSandbox(busyId)[0]!.ipv4!.toString()], 'the other sandbox resolves, busy included');
  t.equal(dns.status().sandboxes[c.sandbox('ok').id]!.listening, true);
  // busy's own resolver is the squatter's; once it is gone, busy's next join brings tnet's listener
  squatter.kill('SIGKILL');
  t.ok(await until(() => port53('busy') === ''), 'squatter gone');
  await c.createNetwork({ name: 'm', subnet: '10.71.0.0/24' });
  await c.connect('m', 'busy');
  await dns.settled();
  t.equal(dns.status().sandboxes[busyId]!.listening, true, 'listening after the next join');
  t.same((await dig('busy', 'ok')).answers.length, 1, 'busy resolves its peer');
  await finish(t, o);
});

t.test('gateway listeners (gateways: all): clients on the network get answers, others are refused', async (t) => {
  const up = upstream(t);
  await waitUpstream(up.ip);
  const o = await open(t, stateDir(t), { resolvConf: up.resolvConf, gateways: 'all' });
  const { c, dns } = o;
  await c.createNetwork({ name: 'g', subnet: '10.72.0.0/24' });
  await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  await c.connect('g', 'a');
  const b = await c.connect('g', 'b', { aliases: ['svc'] });
  await dns.settled();
  t.match(sh("ss -Hlnu 'sport = :53'").out, /10\.72\.0\.1:53/, "listening on the gateway address in the daemon's namespace");
  t.same((await dig('a', '@10.72.0.1', 'svc.g')).answers, [b.ipv4!.toString()], 'a sandbox asks the gateway');
  t.same((await dig('a', '@10.72.0.1', 'ext.example')).answers, ['192.0.2.10'], 'and gets external names');
  // a machine outside with a route to the network's gateway: it reaches the socket, and is refused
  t.equal(sh('ip -n ext-up route add 10.72.0.0/24 via 198.51.100.1').code, 0);
  for (const name of ['svc.g', 'ext.example']) {
    const r = await exec('ip', ['netns', 'exec', 'ext-up', 'dig', '@10.72.0.1', '+time=2', '+tries=1', name]);
    t.match(r, /status: REFUSED/, `${name} from outside the subnet: REFUSED (not an open resolver)`);
    t.notMatch(r, /ANSWER SECTION/);
  }
  await c.deleteSandbox('a');
  await c.deleteSandbox('b');
  await c.deleteNetwork('g');
  await dns.settled();
  t.notMatch(sh("ss -Hlnu 'sport = :53'").out, /10\.72\.0\.1/, 'closed with the network');
  await finish(t, o);
});

t.test('sandboxes: false (a Docker-only process next to the daemon) leaves lab sandboxes alone', async (t) => {
  const o = await open(t, stateDir(t), { upstreams: [], sandboxes: false });
  const { c, dns } = o;
  await c.createNetwork({ name: 'n', subnet: '10.73.0.0/24' });
  await c.createSandbox({ name: 'a' });
  await c.connect('n', 'a');
  t.equal(port53('a'), '', 'no listener in the sandbox');
  t.notOk(existsSync('/etc/netns/tn-a/resolv.conf'), 'no resolv.conf written');
  t.same(dns.status().sandboxes, {});
  // the records are still there (a gateway listener of the network would answer them)
  const r = await dns.server.query(Buffer.from('0000010000010000000000000161016e0000010001', 'hex'), { networkId: c.network('n').id }, { clientAddress: '10.73.0.200' });
  t.equal(r?.readUInt16BE(6), 1, 'a.n is known');
  await finish(t, o);
});

/** Binds 0.0.0.0:53 as docker-proxy does for `-p 53:53/udp -p 53:53/tcp`: '' when both binds work, else the errors. */
async function wildcardBind53(): Promise<string> {
  const udp = await new Promise<string>((res) => {
    const u = createSocket('udp4');
    u.once('error', (e: NodeJS.ErrnoException) => {
      u.close();
      res(`udp ${e.code}`);
    });
    u.bind({ address: '0.0.0.0', port: 53 }, () => u.close(() => res('')));
  });
  const tcp = await new Promise<string>((res) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => res(`tcp ${e.code}`));
    s.listen({ host: '0.0.0.0', port: 53 }, () => s.close(() => res('')));
  });
  return [udp, tcp].filter(Boolean).join(', ');
}

/** A network as the Docker face makes it (owner docker, addresses from dockerd's IPAM). */
const dockerNetwork = (c: Controller, n: number) =>
  c.createNetwork({ id: `${n}`.repeat(64).slice(0, 64), owner: 'docker', addresses: 'external', subnet: `10.7${n}.0.0/24`, gateway: `10.7${n}.0.1` });

t.test('by default no gateway listener: port 53 on the host stays free for a wildcard bind (`-p 53`)', async (t) => {
  const o = await open(t, stateDir(t), { upstreams: [] });
  const { c, dns } = o;
  const n = await dockerNetwork(c, 4);
  await c.createNetwork({ name: 'lab', subnet: '10.75.0.0/24' });
  await dns.settled();
  t.same(dns.status().gateways, {}, 'no gateway listener, for a Docker network or a lab network');
  t.equal(sh("ss -Hlnut 'sport = :53'").out.trim(), '', "nothing on port 53 in the daemon's namespace");
  t.equal(await wildcardBind53(), '', '0.0.0.0:53 binds, UDP and TCP');
  await c.deleteNetwork(n.id, { owner: 'docker' });
  await finish(t, o);
});

t.test("gateways: 'docker' listens on a Docker network's gateway, and then holds port 53 against wildcard binds", async (t) => {
  const o = await open(t, stateDir(t), { upstreams: [], gateways: 'docker' });
  const { c, dns } = o;
  const n = await dockerNetwork(c, 6);
  await c.createNetwork({ name: 'lab', subnet: '10.77.0.0/24' });
  await dns.settled();
  t.same(Object.values(dns.status().gateways).flat().map((s) => [s.name, s.address, s.listening]), [[n.name, '10.76.0.1:53', true]], 'one listener: the Docker network\'s gateway');
  t.match(sh("ss -Hlnu 'sport = :53'").out, /10\.76\.0\.1:53/);
  // the kernel's rule the default avoids: a wildcard bind overlaps every address
  t.equal(await wildcardBind53(), 'udp EADDRINUSE, tcp EADDRINUSE', 'a wildcard bind of port 53 fails next to it');
  await c.deleteNetwork(n.id, { owner: 'docker' });
  await dns.settled();
  t.equal(await wildcardBind53(), '', 'and works again once the network is gone');
  await finish(t, o);
});

t.test('tnet daemon: TNET_DNS_GATEWAYS with a bad value is refused before anything starts', async (t) => {
  const main = join(import.meta.dirname, '../../dist/cli/main.js'); // built by `npx tsc -p tsconfig.json`
  const dir = stateDir(t);
  const sock = join(dir, 'tnet.sock');
  const bad = spawnSync(process.execPath, [main, 'daemon', '--state-dir', dir, '--socket', sock, '--no-docker-plugin'], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, TNET_DNS_GATEWAYS: 'yes' },
  });
  t.equal(bad.status, 2, 'exit 2 (bad input)');
  t.match(bad.stderr, /TNET_DNS_GATEWAYS: "yes" is not a DNS gateway mode; use one of none, docker, all/, 'naming the variable and the choices');
  t.notOk(existsSync(sock), 'and no control socket was made');
});

t.test('gatewayPort: 0 behind a DNAT of gateway:53: answers on port 53 without holding it', async (t) => {
  // The rules a firewall would add for each gateway listener (here in a table of the test's own):
  // the network's own traffic to its gateway, port 53, goes to the listener's port; conntrack
  // gives the answers the gateway's port 53 back as their source. Before Docker's and tnet's
  // published-port DNAT (priority dstnat), so a `-p 53` elsewhere does not take these queries.
  const up = upstream(t);
  await waitUpstream(up.ip);
  const o = await open(t, stateDir(t), { resolvConf: up.resolvConf, gateways: 'all', gatewayPort: 0 });
  const { c, dns } = o;
  const net = await c.createNetwork({ name: 'g2', subnet: '10.78.0.0/24' });
  await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  await c.connect('g2', 'a');
  const b = await c.connect('g2', 'b', { aliases: ['svc'] });
  await dns.settled();
  const [st] = dns.status().gateways[net.id]!;
  t.ok(st?.listening, `listening on ${st?.address}`);
  const port = st!.port!;
  t.ok(port > 1024 && st!.address === `10.78.0.1:${port}`, `on a port the kernel picked (${port}), shown in the status`);
  t.match(sh(`ss -Hlnu 'sport = :${port}'`).out, /10\.78\.0\.1/, 'UDP on it');
  t.match(sh(`ss -Hlnt 'sport = :${port}'`).out, /10\.78\.0\.1/, 'and TCP on the same port');
  t.equal(sh("ss -Hlnut 'sport = :53'").out.trim(), '', 'nothing on port 53');
  const bridge = sh("ip -o -4 addr show | awk '$4 == \"10.78.0.1/24\" {print $2}'").out.trim();
  t.ok(bridge, `the network's bridge: ${bridge}`);
  const table = 'tnet-test-dnsredirect';
  const rules =
    `table ip ${table} {\n` +
    '  chain prerouting {\n    type nat hook prerouting priority dstnat - 5; policy accept;\n' +
    `    iifname "${bridge}" ip daddr 10.78.0.1 udp dport 53 dnat to 10.78.0.1:${port}\n` +
    `    iifname "${bridge}" ip daddr 10.78.0.1 tcp dport 53 dnat to 10.78.0.1:${port}\n  }\n}\n`;
  t.equal(sh(`printf '%s' '${rules}' | nft -f -`).code, 0, 'the DNAT rules load');
  t.teardown(() => void sh(`nft delete table ip ${table} 2>/dev/null`));

  // a published `-p 53` holds the host's port 53 on every address (as docker-proxy does) meanwhile
  const holders: { close(): void }[] = [];
  const udp = createSocket('udp4');
  await new Promise<void>((res, rej) => {
    udp.once('error', rej);
    udp.bind({ address: '0.0.0.0', port: 53 }, () => res());
  });
  holders.push(udp);
  const tcp = createServer();
  await new Promise<void>((res, rej) => {
    tcp.once('error', rej);
    tcp.listen({ host: '0.0.0.0', port: 53 }, () => res());
  });
  holders.push(tcp);
  t.pass('0.0.0.0:53 binds (UDP and TCP) while the gateway listener runs');

  t.same((await dig('a', '@10.78.0.1', 'svc.g2')).answers, [b.ipv4!.toString()], 'the sandbox asks gateway:53 and gets tnet\'s answer');
  t.same((await dig('a', '@10.78.0.1', '+tcp', 'svc')).answers, [b.ipv4!.toString()], 'over TCP too');
  t.same((await dig('a', '@10.78.0.1', 'ext.example')).answers, ['192.0.2.10'], 'and external names');
  for (const h of holders) h.close();
  sh(`nft delete table ip ${table}`);
  await finish(t, o);
});
