import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { assertClean, inSandbox, isolate, leftovers, ping, sh, stateDir, until } from './harness.js';

await isolate();
const { Client } = await import('../../cli/client.js');
const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');

type Ep = { ipv4?: string; ifname: string };
type Sb = { name: string; endpoints: (Ep & { network?: string })[] };

function startDaemon(dir: string, socket: string): ChildProcess {
  return spawn(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket], { stdio: 'ignore' });
}

t.test('kill -9 in the middle of creating 50 endpoints loses nothing committed and leaves nothing half-made', async (t) => {
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const client = new Client(socket);
  let daemon = startDaemon(dir, socket);
  t.teardown(() => void daemon.kill('SIGKILL'));
  t.ok(await until(() => client.ping(), 10_000), 'daemon answers');
  await client.call('POST', '/networks', { name: 'crash', subnet: '10.60.0.0/24' });

  let done = 0;
  const work = Array.from({ length: 50 }, async (_, i) => {
    await client.call('POST', '/sandboxes', { name: `s${i}` });
    await client.call('POST', '/connect', { network: 'crash', sandbox: `s${i}` });
    // Kill the moment the 15th finishes, with the other 35 in flight: polling for it raced a
    // daemon fast enough to finish all 50 between two polls.
    if (++done === 15) daemon.kill('SIGKILL');
  }).map((p) => p.then(() => true, () => false)); // settled here: the kill makes some fail
  const settled = await Promise.all(work);
  t.ok(settled.includes(false), `the kill interrupted work in flight (${done} of 50 finished)`);

  daemon = startDaemon(dir, socket);
  t.ok(await until(() => client.ping(), 10_000), 'daemon restarts');
  const sbs = await client.call<Sb[]>('GET', '/sandboxes');
  const eps = sbs.flatMap((s) => s.endpoints.map((e) => ({ sandbox: s.name, ...e })));
  t.ok(eps.length >= done, `every endpoint acknowledged before the kill is still there (${eps.length} >= ${done})`);
  const addrs = eps.map((e) => e.ipv4);
  t.equal(new Set(addrs).size, addrs.length, 'no address handed out twice');

  // Nothing half-made: exactly the links, namespaces and nft entries of what the store holds.
  const left = leftovers();
  t.same(left.netns.sort(), sbs.map((s) => `tn-${s.name}`).sort(), 'namespaces = committed sandboxes');
  t.equal(left.links.length, 1 + eps.length, 'links = one bridge + one veth per committed endpoint');
  t.match(sh('nft list table inet tnet').out, /n-[0-9a-f]{12}-in/, 'the network firewall is in place');
  for (const e of eps) {
    const r = sh(`ip -n tn-${e.sandbox} -4 -o addr show dev eth0`).out;
    if (!r.includes(`${e.ipv4}/24`)) t.fail(`${e.sandbox} lost its address ${e.ipv4}`);
  }
  const first = eps[0]!;
  const unreachable = eps.slice(1).filter((e) => !ping(first.sandbox, e.ipv4!));
  t.same(unreachable.map((e) => e.sandbox), [], `${first.sandbox} pings every other committed endpoint`);

  // The pool carries on without reusing an address.
  await client.call('POST', '/sandboxes', { name: 'after' });
  const ep = await client.call<Ep>('POST', '/connect', { network: 'crash', sandbox: 'after' });
  t.notOk(addrs.includes(ep.ipv4), `a new endpoint gets a fresh address (${ep.ipv4})`);

  for (const s of [...sbs.map((s) => s.name), 'after']) await client.call('DELETE', `/sandboxes/${s}`);
  await client.call('DELETE', '/networks/crash');
  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null);
  await assertClean(t);
});

/** The daemon's Docker plugin socket answers Plugin.Activate (and is root-only). */
function activate(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, method: 'POST', path: '/Plugin.Activate' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end('{}');
  });
}

t.test('the daemon answers its control socket quickly and keeps state across a graceful restart', async (t) => {
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const client = new Client(socket);
  const t0 = performance.now();
  let daemon = startDaemon(dir, socket);
  t.teardown(() => void daemon.kill('SIGKILL'));
  await until(() => client.ping(), 10_000);
  const ms = performance.now() - t0;
  t.ok(ms < 2000, `daemon answered /ping ${Math.round(ms)} ms after spawn (benchmarked separately)`);
  await client.call('POST', '/networks', { name: 'keep', subnet: '10.61.0.0/24' });
  await client.call('POST', '/sandboxes', { name: 'k1' });
  await client.call('POST', '/sandboxes', { name: 'k2' });
  await client.call('POST', '/connect', { network: 'keep', sandbox: 'k1', ip: '10.61.0.50' });
  const e2 = await client.call<Ep>('POST', '/connect', { network: 'keep', sandbox: 'k2' });
  // The daemon also serves Docker's plugin socket and the sandboxes' DNS.
  const plugin = '/run/docker/plugins/tnet.sock';
  t.match(JSON.parse(await activate(plugin)), { Implements: ['NetworkDriver', 'IpamDriver'] }, 'the Docker plugin socket answers Activate');
  t.equal(statSync(plugin).mode & 0o777, 0o660, 'the plugin socket is root only (0660, group root)');
  t.equal(inSandbox('k1', 'getent hosts k2').out.split(/\s+/)[0], e2.ipv4, 'k1 resolves k2 through the daemon\'s DNS (127.0.0.11)');
  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null);
  t.ok(ping('k1', e2.ipv4!), 'traffic keeps flowing while the daemon is down');
  daemon = startDaemon(dir, socket);
  await until(() => client.ping(), 10_000);
  const sb = await client.call<Sb>('GET', '/sandboxes/k1');
  t.equal(sb.endpoints[0]?.ipv4, '10.61.0.50', 'static address kept across the restart');
  t.ok(ping('k1', e2.ipv4!), 'and still reachable after it');
  t.equal(inSandbox('k1', 'getent hosts k2').out.split(/\s+/)[0], e2.ipv4, 'and k2 still resolves by name after the restart');
  t.equal(inSandbox('k2', 'getent hosts K1.keep').out.split(/\s+/)[0], '10.61.0.50', 'k1.keep resolves from k2, case-insensitively');
  for (const s of ['k1', 'k2']) await client.call('DELETE', `/sandboxes/${s}`);
  await client.call('DELETE', '/networks/keep');
  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null);
  await assertClean(t);
});

t.test('a second daemon on a live socket, and a bad --dns-upstream, are refused before anything starts', async (t) => {
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const client = new Client(socket);
  const daemon = startDaemon(dir, socket);
  t.teardown(() => void daemon.kill('SIGKILL'));
  t.ok(await until(() => client.ping(), 10_000), 'the first daemon answers');

  const second = spawnSync(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket], { encoding: 'utf8', timeout: 20_000 });
  t.equal(second.status, 4, 'a second daemon on the same socket exits 4 (conflict)');
  t.match(second.stderr, /another process is serving .*tnet\.sock/, 'and says which socket is taken');
  t.ok(await client.ping(), 'the first daemon still answers');

  const bad = spawnSync(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', join(dir, 'other.sock'), '--dns-upstream', '8.8.8.8:99999'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(bad.status, 2, 'a bad --dns-upstream exits 2 (bad input)');
  t.match(bad.stderr, /--dns-upstream: upstream "8\.8\.8\.8:99999" has no valid port/, 'and names the upstream');
  t.equal(sh(`test -e ${join(dir, 'other.sock')}`).code, 1, 'and nothing was started for it');

  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null);
  await assertClean(t);
});

t.test('a daemon stopped while it is still starting leaves no socket behind', async (t) => {
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const client = new Client(socket);
  const daemon = startDaemon(dir, socket);
  t.teardown(() => void daemon.kill('SIGKILL'));
  t.ok(await until(() => client.ping(), 10_000), 'the control socket answers');
  daemon.kill('SIGTERM'); // at once: the plugin, fastify and the controller are still loading
  t.ok(await until(() => daemon.exitCode !== null, 10_000), 'the daemon stops');
  t.equal(daemon.exitCode, 0, 'cleanly');
  t.notOk(existsSync(socket), 'its control socket is gone');
  t.notOk(existsSync('/run/docker/plugins/tnet.sock'), 'and its Docker plugin socket');
  await assertClean(t);
});
