/**
 * State that cannot be lost, shared or silently replaced: one process per state directory (a
 * second daemon exits 4 naming the holder), the WAL copied into the database file within a
 * second, an empty state next to what a lost one made refused (and --remove-orphans), a full disk
 * and a damaged database explained with the file and the consequence.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { assertClean, isolate, leftovers, sh, stateDir, until } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
const Database = (await import('better-sqlite3')).default;
const { Client } = await import('../../cli/client.js');
const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');

t.test('one process per state directory: a second daemon exits 4 and names the holder', async (t) => {
  const dir = stateDir(t);
  const c = await Controller.open({ stateDir: dir });
  t.teardown(() => c.close());
  if (!existsSync(MAIN)) return t.plan(0, 'dist/ is not built (npx tsc -p tsconfig.json): no daemon to start');
  const r = spawnSync(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', join(dir, 'other.sock'), '--no-docker-plugin'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  t.equal(r.status, 4, 'the second daemon exits 4');
  t.match(r.stderr, new RegExp(`state directory ${dir} is in use by another tnet process \\(pid ${process.pid}\\)`), 'and names the directory and the pid holding it');
  t.notOk(existsSync(join(dir, 'other.sock')), 'it never listened on its socket');
});

t.test('the WAL reaches the database file: losing it loses nothing older than a second', async (t) => {
  const dir = stateDir(t);
  const c = await Controller.open({ stateDir: dir });
  await c.createNetwork({ name: 'kept', subnet: '10.95.0.0/24' });
  await new Promise((r) => setTimeout(r, 1500));
  // The database file alone, as if the WAL were lost now.
  const copy = join(dir, 'copy.db');
  sh(`cp ${join(dir, 'tnet.db')} ${copy}`);
  const db = new Database(copy, { readonly: true });
  const names = (db.prepare('SELECT name FROM networks').all() as { name: string }[]).map((r) => r.name);
  db.close();
  t.same(names, ['kept'], 'the network is in the database file, not only in the WAL');
  await c.deleteNetwork('kept');
  c.close();
  t.equal(statSync(join(dir, 'tnet.db-wal'), { throwIfNoEntry: false })?.size ?? 0, 0, 'close empties the WAL into the file');
  await assertClean(t);
});

t.test('an empty state next to what a lost one made: refused with what was found, then --remove-orphans', async (t) => {
  for (const keepMarker of [true, false]) {
    const dir = stateDir(t);
    // The daemon's instance (unscoped names), as a lost /var/lib/tnet would leave them.
    let c = await Controller.open({ stateDir: dir, scope: '' });
    await c.createNetwork({ name: 'web', subnet: '10.96.0.0/24' });
    await c.createSandbox({ name: 'a' });
    await c.connect('web', 'a');
    const bridge = c.networkDetails(c.network('web')).bridge!;
    const made = leftovers();
    c.close();
    for (const f of ['tnet.db', 'tnet.db-wal', 'tnet.db-shm', ...(keepMarker ? [] : ['instance'])]) rmSync(join(dir, f), { force: true });
    const how = keepMarker ? 'database lost' : 'whole state lost';
    await t.rejects(Controller.open({ stateDir: dir, scope: '' }), { code: 'conflict', message: /is empty .* but the kernel holds objects/ }, `${how}: the start is refused`);
    const msg = await Controller.open({ stateDir: dir, scope: '' }).then(
      () => '',
      (e: Error) => e.message,
    );
    t.match(msg, /namespace\(s\) \(tn-a\)/, `${how}: the message names the namespace (and a second start refuses again)`);
    t.match(msg, /nft table\(s\) \(inet tnet\)/, `${how}: and the nft table`);
    if (keepMarker) t.match(msg, new RegExp(`bridge ${bridge}`), `${how}: and, from the instance id kept next to the database, the bridge`);
    t.match(msg, /--remove-orphans/, `${how}: and says how to remove them`);
    t.same(leftovers(), made, `${how}: the refused start changed nothing`);
    if (keepMarker && existsSync(MAIN)) {
      // The daemon says the same and exits 4; `tnet daemon --remove-orphans` removes them and runs.
      const socket = join(dir, 'tnet.sock');
      const refused = spawnSync(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin'], { encoding: 'utf8', timeout: 30_000 });
      t.equal(refused.status, 4, `${how}: the daemon refuses to start (exit 4)`);
      t.match(refused.stderr, /but the kernel holds objects .*--remove-orphans/, `${how}: and says what it found and what to do`);
      const daemon = spawn(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin', '--remove-orphans'], { stdio: 'ignore' });
      t.teardown(() => void daemon.kill('SIGKILL'));
      t.ok(await until(() => new Client(socket).ping(), 15_000), `${how}: with --remove-orphans it starts`);
      daemon.kill('SIGTERM');
      await until(() => daemon.exitCode !== null, 10_000);
      t.equal(daemon.exitCode, 0, `${how}: and stops cleanly`);
    }
    c = await Controller.open({ stateDir: dir, scope: '', orphans: 'remove' });
    t.same(c.networks(), [], `${how}: --remove-orphans starts with the empty state`);
    // Without the marker a bridge's owner is unknown: the unscoped table and namespaces are
    // found and removed, the untagged-by-marker links are not (their tag names the lost id).
    if (!keepMarker) sh(`ip link del ${bridge}`);
    c.close();
    await assertClean(t, `${how}: nothing of the lost state is left`);
  }
});

t.test('a full disk: the message names the file and says nothing was changed', async (t) => {
  const mnt = stateDir(t);
  if (sh(`mount -t tmpfs -o size=1m tnet-full ${mnt}`).code !== 0) return t.plan(0, 'cannot mount a tmpfs here');
  t.teardown(() => sh(`umount ${mnt}`));
  const dir = join(mnt, 'state');
  const c = await Controller.open({ stateDir: dir });
  sh(`dd if=/dev/zero of=${mnt}/filler bs=4k 2>/dev/null`); // until the disk is full
  const before = leftovers();
  await t.rejects(c.createNetwork({ name: 'nospace', subnet: '10.97.0.0/24' }), {
    message: new RegExp(`the disk holding the state database ${join(dir, 'tnet.db')} is full: .* not recorded`),
  }, 'a network create on a full disk is refused with the file and the consequence');
  t.same(leftovers(), before, 'and nothing was made in the kernel');
  rmSync(join(mnt, 'filler'));
  const n = await c.createNetwork({ name: 'nospace', subnet: '10.97.0.0/24' });
  t.equal(n.name, 'nospace', 'with space again, the same create works');
  await c.deleteNetwork('nospace');
  c.close();
  await assertClean(t);
});

t.test('a damaged database: the message names the file and what it means', async (t) => {
  const dir = stateDir(t);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tnet.db'), Buffer.alloc(8192, 'not a database at all '));
  await t.rejects(Controller.open({ stateDir: dir }), {
    message: new RegExp(`the state database ${join(dir, 'tnet.db')} is damaged or is not a tnet database .*move the file aside`),
  }, 'the start is refused with the file, the meaning and the way out');
  await assertClean(t);
});
