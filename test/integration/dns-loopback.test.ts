import { execFile, spawn, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { DnsServer } from '../../dns/index.js';

// tnet's DNS server with a real dnsmasq as the upstream (standing in for the host's resolver) and
// dig as the client, everything on loopback: no namespace, no unshare, nothing outside 127.0.0.0/8.
// The namespace version (sandboxes resolving each other through 127.0.0.11) belongs with the
// controller's integration tests.

const have = (cmd: string, arg: string) => spawnSync(cmd, [arg], { stdio: 'ignore' }).error === undefined;
if (!have('dig', '-v') || !have('dnsmasq', '--version')) {
  t.plan(0, 'needs dig (bind9-dnsutils) and dnsmasq (dnsmasq-base): run scripts/setup.sh');
  process.exit(0);
}

const UP = '127.0.0.120';
const UP_PORT = 5400 + (process.pid % 500);
const SB = '127.0.0.121';
const GW = '127.0.0.122';

const dnsmasq = spawn(
  'dnsmasq',
  [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--log-facility=-',
    `--listen-address=${UP}`,
    `--port=${UP_PORT}`,
    '--bind-interfaces',
    '--pid-file=',
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
    '--address=/ext.example/192.0.2.10',
    '--local=/example/', // everything else under example: NXDOMAIN
  ],
  { stdio: 'ignore' },
);
const stopDnsmasq = () => {
  if (dnsmasq.pid !== undefined && dnsmasq.exitCode === null && dnsmasq.signalCode === null) process.kill(dnsmasq.pid, 'SIGTERM');
};
t.teardown(stopDnsmasq);
// tap's timeout kills this process: take dnsmasq along
process.on('exit', stopDnsmasq);
for (const sig of ['SIGTERM', 'SIGINT'] as const)
  process.once(sig, () => {
    stopDnsmasq();
    process.exit(1);
  });

// async: the server runs in this process, a synchronous dig would block it
const run = promisify(execFile);
const dig = async (server: string, port: number, ...args: string[]): Promise<string> => {
  try {
    return (await run('dig', [`@${server}`, '-p', String(port), '+time=3', '+tries=1', ...args])).stdout;
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? e);
  }
};

// wait for dnsmasq
for (let i = 0; i < 50 && !(await dig(UP, UP_PORT, '+short', 'ext.example')).includes('192.0.2.10'); i++) await new Promise((r) => setTimeout(r, 100));

const s = new DnsServer({ upstreams: [`${UP}:${UP_PORT}`], upstreamTimeoutMs: 500, forwardDeadlineMs: 1500 });
s.setNetwork({ networkId: 'n1', name: 'app', internal: false, subnets: ['127.0.0.120/29', 'fd00:1::/64'] });
s.setNetwork({ networkId: 'n2', name: 'other', internal: false });
s.setEndpoint({ endpointId: 'a', networkId: 'n1', names: ['alpha', 'svc'], ipv4: '10.7.0.2', ipv6: 'fd00:1::2', sandboxId: 'sa' });
s.setEndpoint({ endpointId: 'b', networkId: 'n1', names: ['beta', 'svc'], ipv4: '10.7.0.3', sandboxId: 'sb' });
s.setEndpoint({ endpointId: 'c', networkId: 'n2', names: ['gamma'], ipv4: '10.8.0.2', sandboxId: 'sc' });
for (let i = 0; i < 40; i++) s.setEndpoint({ endpointId: `m${i}`, networkId: 'n1', names: ['crowd'], ipv4: `10.7.1.${i + 1}` });
s.setSandboxNetworks('sa', ['n1']);
s.setSandboxNetworks('sb', ['n1']);
s.setSandboxNetworks('sc', ['n2']);
const la = await s.addListener({ host: SB, port: 0 }, { sandboxId: 'sa' });
const lc = await s.addListener({ host: SB, port: 0 }, { sandboxId: 'sc' });
const lg = await s.addListener({ host: GW, port: 0 }, { networkId: 'n1' });
t.teardown(() => s.close());
const A = la.udp!.port;

t.test('sandboxes on one network resolve each other: names, aliases, name.network, PTR', async (t) => {
  t.equal((await dig(SB, A, '+short', 'beta')).trim(), '10.7.0.3');
  t.equal((await dig(SB, A, '+short', 'BETA.app')).trim(), '10.7.0.3', 'case-insensitive name.network');
  t.equal((await dig(SB, A, '+short', 'alpha', 'AAAA')).trim(), 'fd00:1::2');
  t.same((await dig(SB, A, '+short', 'svc')).trim().split('\n').sort(), ['10.7.0.2', '10.7.0.3'], 'an alias on two endpoints');
  t.equal((await dig(SB, A, '+short', '-x', '10.7.0.3')).trim(), 'beta.app.');
  t.equal((await dig(SB, A, '+short', '-x', 'fd00:1::2')).trim(), 'alpha.app.');
  t.match((await dig(SB, A, 'beta', 'AAAA')), /status: NOERROR.*\n.*ANSWER: 0/, 'a name without IPv6: NOERROR, no answer');
  t.match((await dig(SB, A, 'nobody.app')), /status: NXDOMAIN/);
});

t.test('a sandbox on another network does not see them', async (t) => {
  t.equal((await dig(SB, lc.udp!.port, '+short', 'gamma')).trim(), '10.8.0.2');
  t.notMatch((await dig(SB, lc.udp!.port, '+short', 'beta')), /10\.7\./);
  t.notMatch((await dig(SB, lc.udp!.port, '+short', 'beta.app')), /10\.7\./);
});

t.test('external names go to the upstream over UDP and TCP; NXDOMAIN passes through', async (t) => {
  t.equal((await dig(SB, A, '+short', 'ext.example')).trim(), '192.0.2.10');
  t.equal((await dig(SB, A, '+short', '+tcp', 'ext.example')).trim(), '192.0.2.10');
  t.match((await dig(SB, A, 'missing.example')), /status: NXDOMAIN/);
});

t.test('UDP answers too large are truncated with TC; dig retries over TCP and gets them all', async (t) => {
  t.match((await dig(SB, A, '+noedns', '+ignore', 'crowd')), /flags: qr aa tc rd/);
  t.equal((await dig(SB, A, '+noedns', '+short', 'crowd')).trim().split('\n').length, 40);
});

t.test('the gateway listener answers its subnet and refuses others', async (t) => {
  t.equal((await dig(GW, lg.udp!.port, '-b', '127.0.0.123', '+short', 'alpha.app')).trim(), '10.7.0.2');
  t.match((await dig(GW, lg.udp!.port, '-b', '127.0.0.1', 'alpha.app')), /status: REFUSED/);
  t.match((await dig(GW, lg.udp!.port, '-b', '127.0.0.1', 'ext.example')), /status: REFUSED/, 'not an open resolver');
});

t.test('a dead upstream gives SERVFAIL within the timeout', async (t) => {
  if (dnsmasq.pid !== undefined) process.kill(dnsmasq.pid, 'SIGKILL');
  await new Promise((r) => dnsmasq.once('exit', r));
  const t0 = Date.now();
  t.match((await dig(SB, A, 'ext.example')), /status: SERVFAIL/);
  t.ok(Date.now() - t0 < 1500, `SERVFAIL after ${Date.now() - t0} ms`);
  t.equal((await dig(SB, A, '+short', 'alpha')).trim(), '10.7.0.2', 'local names still answer');
});
