/**
 * `tnet doctor` through the daemon and the command: clean state exits 0; each kind of damage a
 * crash or a hand can leave is reported in plain words with the record it belongs to (exit 1);
 * --json gives the same findings; --repair fixes them (exit 0) and traffic flows again.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { assertClean, isolate, sh, stateDir, until } from './harness.js';

await isolate();
const { Client } = await import('../../cli/client.js');
const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');

t.test('tnet doctor reports what differs, --json, --repair', async (t) => {
  if (!existsSync(MAIN)) return t.plan(0, 'dist/ is not built (npx tsc -p tsconfig.json): no daemon to start');
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const client = new Client(socket);
  const daemon: ChildProcess = spawn(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin'], { stdio: 'ignore' });
  t.teardown(() => void daemon.kill('SIGKILL'));
  t.ok(await until(() => client.ping(), 15_000), 'daemon answers');
  const tnet = (...args: string[]) => {
    const r = spawnSync(process.execPath, [MAIN, '--state-dir', dir, '--socket', socket, ...args], { encoding: 'utf8', timeout: 30_000 });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  await client.call('POST', '/networks', { name: 'web', subnet: '10.98.0.0/24' });
  for (const s of ['a', 'b']) {
    await client.call('POST', '/sandboxes', { name: s });
    await client.call('POST', '/connect', { network: 'web', sandbox: s });
  }
  let r = tnet('doctor');
  t.equal(r.code, 0, 'clean: exit 0');
  t.match(r.out, /no differences/, 'and says so');

  // Damage by hand what a crash could leave: an interface down, an address and the default route
  // gone, lo down, a stray namespace named like the daemon's sandboxes.
  sh('ip -n tn-a link set eth0 down; ip -n tn-b addr flush dev eth0; ip -n tn-b link set lo down; ip netns add tn-ghost');
  r = tnet('doctor');
  t.equal(r.code, 1, 'differences: exit 1');
  t.match(r.out, /wrong\s+eth0 in netns tn-a \(endpoint of sandbox a on network web\): interface eth0 is down/, 'the interface that is down, with its record');
  t.match(r.out, /missing\s+eth0 in netns tn-b \(endpoint of sandbox b on network web\): address 10\.98\.0\.\d+\/24 is missing on eth0/, 'the address that is missing');
  t.match(r.out, /missing\s+eth0 in netns tn-b .*default route via 10\.98\.0\.1 on eth0 is missing/, 'the default route that went with it');
  t.match(r.out, /wrong\s+lo in netns tn-b \(sandbox b\): lo is down/, 'lo down');
  t.match(r.out, /stray\s+netns tn-ghost: named like this instance's sandboxes, but no sandbox record wants it/, 'the stray namespace');
  const json = JSON.parse(tnet('doctor', '--json').out) as { problem: string; object: string; record?: string; detail: string }[];
  t.equal(json.length, 6, '--json: the same six findings');
  t.ok(json.every((f) => f.problem && f.object && f.detail), '--json: each has a problem, an object and a detail');
  t.notOk(sh('ip netns exec tn-a ping -c1 -W1 10.98.0.1').code === 0, 'a has lost the gateway');

  sh('ip netns del tn-ghost'); // not the daemon's to remove: it never tagged it
  r = tnet('doctor', '--repair');
  t.equal(r.code, 0, '--repair: exit 0, nothing left');
  t.match(r.out, /found 5 difference\(s\)[\s\S]*all repaired/, '--repair lists what it found and says all are repaired');
  t.equal(tnet('doctor').code, 0, 'a check after the repair is clean');
  t.ok(sh('ip netns exec tn-a ping -c1 -W1 10.98.0.1').code === 0 && sh('ip netns exec tn-b ping -c1 -W1 127.0.0.1').code === 0, 'traffic flows again');

  // What only the bridge driver knows: its firewall table (asked through the driver's diagnose).
  sh('nft delete table inet tnet');
  r = tnet('doctor');
  t.equal(r.code, 1, 'the firewall table gone: exit 1');
  t.match(r.out, /missing\s+nft table inet tnet: 1 bridge network\(s\) have no firewall table/, 'the bridge driver reports its missing table');
  t.equal(tnet('doctor', '--repair').code, 0, '--repair rebuilds it');
  t.equal(sh('nft list table inet tnet').code, 0, 'the table is back');

  for (const s of ['a', 'b']) await client.call('DELETE', `/sandboxes/${s}`);
  await client.call('DELETE', '/networks/web');
  daemon.kill('SIGTERM');
  await until(() => daemon.exitCode !== null);
  await assertClean(t);
});

t.test('the doctor checks the DNS listeners its DNS service reports', async (t) => {
  const { Controller } = await import('../../libnetwork/controller.js');
  const dir = stateDir(t);
  const c = await Controller.open({ stateDir: dir });
  await c.createNetwork({ name: 'dnsnet', subnet: '10.99.0.0/24' });
  const a = await c.createSandbox({ name: 'a' });
  await c.createSandbox({ name: 'b' });
  t.same(await c.diagnose(), [], 'no DNS service reported: nothing to check');
  c.reportDnsListeners(() => ({
    sandboxes: {
      [a.id]: { address: '127.0.0.11:53 in netns tn-x-a', listening: false, error: 'EADDRINUSE' },
      gone: { address: '127.0.0.11:53 in netns tn-x-old', listening: true },
    },
    gateways: {},
  }));
  const found = (await c.diagnose()).map((f) => `${f.problem} ${f.object}${f.record ? ` (${f.record})` : ''}: ${f.detail}`);
  t.same(found.sort(), [
    'missing DNS listener 127.0.0.11:53 (sandbox b): the sandbox has no DNS listener: names do not resolve in it',
    'stray DNS listener 127.0.0.11:53 in netns tn-x-old: it serves a sandbox that no record has',
    'wrong DNS listener 127.0.0.11:53 in netns tn-x-a (sandbox a): not listening: EADDRINUSE',
  ], 'a missing, a failed and a stray listener, each in plain words');
  for (const s of ['a', 'b']) await c.deleteSandbox(s);
  await c.deleteNetwork('dnsnet');
  c.close();
  await assertClean(t);
});
