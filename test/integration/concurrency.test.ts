import t from 'tap';
import { assertClean, isolate, ping, stateDir } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');

t.test('100 concurrent endpoint creations on one network: 100 distinct addresses, all reachable', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  await c.createNetwork({ name: 'many', subnet: '10.70.0.0/24' });
  const names = Array.from({ length: 100 }, (_, i) => `c${i}`);
  await Promise.all(names.map((n) => c.createSandbox({ name: n })));
  const eps = await Promise.all(names.map((n) => c.connect('many', n)));
  const addrs = eps.map((e) => e.ipv4!.toString());
  t.equal(new Set(addrs).size, 100, '100 distinct addresses');
  t.equal(new Set(eps.map((e) => e.hostIfname)).size, 100, '100 distinct host interfaces');
  const unreachable = addrs.slice(1).filter((a) => !ping('c0', a));
  t.same(unreachable, [], 'c0 reaches all 99 others');
  // Concurrent creates of one name: exactly one wins.
  const same = await Promise.allSettled([c.createSandbox({ name: 'dup' }), c.createSandbox({ name: 'dup' })]);
  t.equal(same.filter((r) => r.status === 'fulfilled').length, 1, 'one of two concurrent same-name creates wins');
  await Promise.all([...names, 'dup'].map((n) => c.deleteSandbox(n)));
  await c.deleteNetwork('many');
  c.close();
  await assertClean(t);
});
