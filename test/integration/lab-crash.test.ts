/**
 * A lab create killed (kill -9) at several points leaves nothing behind after `destroy` or after
 * the next create: the create runs in a child process (this file, with TNET_LAB_CHILD) that kills
 * itself at the named failpoint (libnetwork/failpoint.ts). A sample of the points, not all of
 * them: the suite stays fast.
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { assertClean, isolate, sh, stateDir, until } from './harness.js';

type LabSpec = import('../../libnetwork/lab/topology.js').LabSpec;
const spec: LabSpec = {
  name: 'crash',
  networks: { lan: {} },
  nodes: { a: { run: ['sleep 313.7'] }, b: {}, c: {} },
  links: [{ endpoints: ['a', 'b'] }, { endpoints: ['b', 'c'] }, { endpoints: ['a', 'lan'] }, { endpoints: ['c', 'lan'] }],
};

const child = process.env.TNET_LAB_CHILD;
if (child) {
  const { Controller } = await import('../../libnetwork/controller.js');
  const c = await Controller.open({ stateDir: child });
  await c.applyLab(spec);
  c.close();
  process.exit(0);
}

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');

function crash(dir: string, failpoint: string): boolean {
  const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!], {
    env: { ...process.env, TNET_LAB_CHILD: dir, TNET_FAILPOINT: failpoint, TNET_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return r.signal === 'SIGKILL';
}

/** Processes running `sleep 313.7` (an unusual argument: other tests' sleeps are not ours) that this test's labs started (by their command line). */
const sleepers = () => sh("ps -eo pid=,args= | awk '$2 == \"sleep\" && $3 == \"313.7\" {print $1}'").out.split('\n').filter(Boolean);

// (also passed here, left out for time: lab:node-intent then destroy, lab:attached then create)
const points: [string, 'destroy' | 'create'][] = [
  ['lab:nodes', 'create'],
  ['lab:wires', 'destroy'],
  ['lab:running', 'destroy'],
];

for (const [point, then] of points) {
  t.test(`killed at ${point}, then ${then}`, async (tt) => {
    const dir = stateDir(tt);
    const before = new Set(sleepers());
    tt.ok(crash(dir, point), `the create was killed at ${point}`);
    const c = await Controller.open({ stateDir: dir });
    tt.teardown(() => c.close());
    if (then === 'create') {
      const r = await c.applyLab(spec);
      tt.ok(r.plan.wires.length === 2, 'the next create makes the lab');
      const b = r.plan.wires[0]!.b.addresses[0]!.split('/')[0]!;
      tt.ok(await until(() => sh(`ip netns exec ${c.labNodeNetns('crash', 'a')} ping -c1 -W1 ${b}`).code === 0, 8000), 'and it works');
    }
    await c.destroyLab('crash');
    tt.ok(await until(() => sleepers().every((p) => before.has(p)), 8000), 'no run: process is left');
    tt.same(c.labs(), [], 'no lab recorded');
    tt.same((await c.pools()).filter((p) => p.owner === 'lab:crash'), [], 'no pool left');
    tt.same(c.networks(), [], 'no network left');
    tt.same(c.sandboxes(), [], 'no sandbox left');
    await assertClean(tt);
  });
}
