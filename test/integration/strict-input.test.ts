/**
 * Issue 12, "nothing is accepted that cannot work" and "concurrency", through the real CLI and
 * daemon (dist/, built by scripts/test.sh) in a private namespace: the CLI's exit codes (2 for bad
 * input, 4 for a collision, 69 when the daemon cannot be reached or dies in the middle of a request,
 * with what to check), the control API's 4xx for a body the CLI cannot send (no 500, nothing in the
 * daemon's log at error level), publishes that can never match refused before anything changes,
 * `host_binding_ipv4` honoured by `connect -p` (with traffic), DNS name collisions refused, and
 * twenty parallel `tnet network create`: twenty successes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { assertClean, background, inSandbox, isolate, makeOutside, netnsOf, sh, stateDir, until } from './harness.js';

await isolate();
const { Client } = await import('../../cli/client.js');

const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');

function startDaemon(dir: string, socket: string, env: Record<string, string> = {}): ChildProcess {
  const log = openSync(join(dir, 'daemon.out'), 'a');
  const d = spawn(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin', '--dns-upstream', '192.0.2.53'], {
    stdio: ['ignore', log, log], env: { ...process.env, TNET_LOG_LEVEL: 'info', ...env },
  });
  closeSync(log);
  return d;
}

/** Runs the CLI; async, so twenty can run at once. */
function tnet(dir: string, socket: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN, ...args, '--state-dir', dir, '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (err += d));
    p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

/** A raw request on the control socket: what a client other than the CLI may send. */
function raw(socket: string, method: string, path: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const errorsLogged = (dir: string) => readFileSync(join(dir, 'daemon.out'), 'utf8').split('\n').filter((l) => /"level":(50|60)/.test(l));

t.test('the CLI and the control API against a real daemon: exit codes, strict input, publishes, names, parallel creates', async (t) => {
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const client = new Client(socket);
  let daemon = startDaemon(dir, socket);
  t.teardown(() => void daemon.kill('SIGKILL'));
  t.ok(await until(() => client.ping(), 15_000), 'daemon answers');
  const t0 = Date.now();

  // ---- the control API: a body the CLI cannot send, refused with the field, no 500
  const typo = await raw(socket, 'POST', '/networks', '{"name":"n","Subnet":"10.1.0.0/24","interal":true}');
  t.equal(typo.status, 400, 'unknown fields: 400');
  t.match(JSON.parse(typo.body).error.message, /unknown field "Subnet".*did you mean "subnet"/, 'the message names the field and the one meant');
  t.equal((await raw(socket, 'POST', '/networks', '{"name":"n","internal":"true"}')).status, 400, 'no coercion: "true" is not true');
  t.equal((await raw(socket, 'POST', '/networks', '{"name":')).status, 400, 'not JSON: 400');
  t.same(JSON.parse((await raw(socket, 'GET', '/networks', '')).body), [], 'nothing was created');

  // ---- bad input on the command line: exit 2, message naming it, nothing made (a sample: the
  // unit suite tries the whole table through the control API)
  const pending: Promise<() => void>[] = [];
  for (const [args, re] of [
    [['network', 'create', 'lo', '--subnet', '127.0.0.0/8'], /loopback/],
    [['network', 'create', 'one', '--subnet', '10.5.0.7/32'], /too small/],
    [['network', 'create', 'gw', '--subnet', '10.5.0.0/24', '--gateway', '10.6.0.1'], /not in subnet/],
    [['network', 'create', 'll', '--ipv6', '--subnet6', 'fe80::/64'], /link-local/],
    [['network', 'create', 'bad name'], /may only contain/],
    [['network', 'create', 'x', '--nosuch'], /Unknown option/],
  ] as [string[], RegExp][]) {
    // (independent refusals: run together, checked in order)
    pending.push(tnet(dir, socket, ...args).then((r) => () => {
      t.equal(r.code, 2, `tnet ${args.join(' ')}: exit 2`);
      t.match(r.err, re, `tnet ${args.join(' ')}: ${r.err.trim()}`);
    }));
  }
  for (const check of await Promise.all(pending.splice(0))) check();
  t.equal((await tnet(dir, socket, 'network', 'inspect', 'nosuch')).code, 3, 'not found: exit 3');
  t.same(JSON.parse((await tnet(dir, socket, 'network', 'ls', '--json')).out), [], 'no network was made by any refused command');

  // ---- publishes that can never match: refused before anything changes
  const outside = makeOutside(t); // 198.51.100.1 is an address of this (test) host
  const nets3 = await Promise.all([
    tnet(dir, socket, 'network', 'create', 'pub', '--subnet', '10.77.0.0/24'), // IPv4 only
    tnet(dir, socket, 'network', 'create', 'hb', '--subnet', '10.78.0.0/24', '-o', `host-binding-ipv4=${outside.hostIp}`), // a host address
    tnet(dir, socket, 'network', 'create', 'far', '--subnet', '10.79.0.0/24', '-o', 'host-binding-ipv4=192.0.2.99'), // not a host address
  ]);
  t.same(nets3.map((r) => r.code), [0, 0, 0], 'networks pub (IPv4 only), hb and far (host_binding_ipv4 local and not)');
  const made = await Promise.all(['s1', 's2', 'w', 'w.pub', 'W2'].map((s) => tnet(dir, socket, 'sandbox', 'create', s)));
  t.same(made.map((r) => r.code), [0, 0, 0, 0, 0], 'sandboxes s1, s2, w, w.pub, W2');
  for (const [args, code, re] of [
    [['connect', 'pub', 's1', '-p', '[2001:db8::77]:18080:80'], 2, /host address 2001:db8::77 is not an address of this host/],
    [['connect', 'pub', 's1', '-p', '192.0.2.77:18080:80'], 2, /host address 192\.0\.2\.77 is not an address of this host/],
    [['connect', 'pub', 's1', '-p', '18080:80', '-p', '18080:81'], 4, /^tnet: -p 18080:80\/tcp and -p 18080:81\/tcp both ask for host port \*:18080\/tcp; a host port can be published once\n$/],
    [['connect', 'pub', 's1', '-p', '127.0.0.1:18080:80', '-p', '18080:81'], 4, /both ask for host port/],
    [['connect', 'far', 's1', '-p', '18080:80'], 2, /192\.0\.2\.99 \(the host_binding_ipv4 of network "far"\) is not an address of this host/],
    [['connect', 'pub', 's1', '-p', '80:70000'], 2, /not within 1-65535/],
  ] as [string[], number, RegExp][]) {
    pending.push(tnet(dir, socket, ...args).then((r) => () => {
      t.equal(r.code, code, `tnet ${args.join(' ')}: exit ${code}`);
      t.match(r.err, re, `tnet ${args.join(' ')}: ${r.err.trim()}`);
    }));
  }
  for (const check of await Promise.all(pending.splice(0))) check();
  const s1 = JSON.parse((await tnet(dir, socket, 'sandbox', 'inspect', 's1', '--json')).out) as { endpoints: unknown[] };
  t.same(s1.endpoints, [], 's1 has no endpoint: nothing changed');
  t.equal(sh(`ip -n ${netnsOf('s1')} -o link show`).out.trim().split('\n').length, 1, 'only lo in s1');

  // ---- host_binding_ipv4 honoured by connect -p: the port answers there, and only there
  const c2 = await tnet(dir, socket, 'connect', 'hb', 's2', '-p', '18081:80');
  t.equal(c2.code, 0, `connect hb s2 -p 18081:80 ${c2.err}`);
  t.equal((await tnet(dir, socket, 'port', 's2')).out.trim(), `80/tcp -> ${outside.hostIp}:18081`, 'tnet port: bound on the network\'s host_binding_ipv4');
  const server = background(t, `ip netns exec ${netnsOf('s2')} socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:'echo hello-from-s2'`);
  t.ok(await until(() => inSandbox('s2', 'ss -ltn').out.includes(':80 ')), 'server listening in s2');
  t.equal(sh(`ip netns exec ${outside.ns} socat -T 2 - TCP:${outside.hostIp}:18081,connect-timeout=2 </dev/null 2>/dev/null`).out.trim(), 'hello-from-s2', 'from outside, HOST_BINDING:18081 reaches s2');
  t.not(sh(`socat -T 1 - TCP:127.0.0.1:18081,connect-timeout=1 </dev/null 2>/dev/null`).out.trim(), 'hello-from-s2', 'another host address does not');
  server.kill('SIGKILL');

  // ---- DNS names that would answer ambiguously
  t.equal((await tnet(dir, socket, 'connect', 'pub', 'w')).code, 0, 'w joins pub');
  const dot = await tnet(dir, socket, 'connect', 'pub', 'w.pub');
  t.equal(dot.code, 4, 'a sandbox "w.pub" next to w on pub: exit 4');
  t.match(dot.err, /name "w\.pub" is the DNS name of "w" on network "pub"/, dot.err.trim());
  const alias = await tnet(dir, socket, 'connect', 'pub', 's1', '--alias', 'W');
  t.equal(alias.code, 4, 'an alias "W" next to w: exit 4');
  t.match(alias.err, /differs only in case from "w"/, alias.err.trim());
  t.equal((await tnet(dir, socket, 'connect', 'pub', 'W2')).code, 0, 'W2 is no other name: accepted');

  // ---- twenty parallel creates through the CLI: twenty successes
  const tc = Date.now();
  const many = await Promise.all(Array.from({ length: 20 }, (_, i) => tnet(dir, socket, 'network', 'create', `par${i}`)));
  const failed = many.filter((r) => r.code !== 0);
  t.same(failed.map((r) => r.err.trim()), [], `20 parallel tnet network create: 20 successes (${Date.now() - tc} ms)`);
  const nets = JSON.parse((await tnet(dir, socket, 'network', 'ls', '--json')).out) as { name: string; ipv4?: { subnet: string } }[];
  const par = nets.filter((n) => n.name.startsWith('par'));
  t.equal(new Set(par.map((n) => n.ipv4?.subnet)).size, 20, 'twenty distinct automatic subnets');
  const rm = await Promise.all(par.map((n) => tnet(dir, socket, 'network', 'rm', n.name)));
  t.same(rm.filter((r) => r.code !== 0).map((r) => r.err), [], '20 parallel rm: 20 successes');

  t.same(errorsLogged(dir), [], 'the daemon logged no error for any of it');

  // ---- the daemon dies in the middle of a request: exit 69, and what to check
  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null || daemon.signalCode !== null);
  daemon = startDaemon(dir, socket, { TNET_FAILPOINT: 'create-network:pools' });
  t.ok(await until(() => client.ping(), 15_000), 'daemon (armed to die mid-create) answers');
  const lost = await tnet(dir, socket, 'network', 'create', 'doomed');
  t.equal(lost.code, 69, 'killed mid-request: exit 69');
  t.match(lost.err, /stopped in the middle of POST \/networks.*may or may not have been applied.*tnet network ls/s, lost.err.trim());
  await until(() => daemon.exitCode !== null || daemon.signalCode !== null);
  // No daemon, and none can be started for this state directory: 69 too, with a clear message.
  // (a state directory under a file: it cannot be made)
  const none = spawnSync(process.execPath, [MAIN, 'network', 'ls', '--state-dir', join(dir, 'daemon.out', 'x'), '--socket', join(dir, 'none.sock')], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
  t.equal(none.status, 69, 'no daemon and none can start: exit 69');
  t.match(none.stderr, /no tnet daemon answers on .*none\.sock, and none can be started/, none.stderr.trim());

  // The next daemon repairs what the killed one left; the CLI works again.
  daemon = startDaemon(dir, socket);
  t.ok(await until(() => client.ping(), 15_000), 'daemon restarts');
  const after = await tnet(dir, socket, 'network', 'ls', '--json');
  t.equal(after.code, 0, 'tnet network ls after the restart');
  t.notOk((JSON.parse(after.out) as { name: string }[]).some((n) => n.name === 'doomed'), 'the half-made network was undone');

  t.equal((await tnet(dir, socket, 'sandbox', 'rm', 's1', 's2', 'w', 'w.pub', 'W2')).code, 0, 'sandbox rm');
  t.equal((await tnet(dir, socket, 'network', 'rm', 'pub', 'hb', 'far')).code, 0, 'network rm');
  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null || daemon.signalCode !== null);
  t.comment(`strict-input integration: ${Date.now() - t0} ms`);
  await assertClean(t);
});
