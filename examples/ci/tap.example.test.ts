/**
 * A CI test with a lab, in tap: the lab (examples/line.yml) is made for the test and dies with
 * it, also when the test is killed. Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and a built
 * tnet (`npm run build`).
 *
 *   npx tap examples/ci/tap.example.test.ts
 */
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { createLab } from 'tnet';

const LINE = fileURLToPath(new URL('../line.yml', import.meta.url));

t.test('r1 reaches r3 through r2', { skip: process.getuid?.() !== 0 && 'labs need root' }, async (t) => {
  const lab = await createLab(LINE);
  t.teardown(() => lab.destroy());

  const ping = await lab.exec('r1', 'ping -c1 -W1 10.0.23.2');
  t.equal(ping.code, 0, 'r1 pings r3');
  t.match(ping.stdout, /ttl=63/, 'one router in between');

  const trace = await lab.exec('r1', ['ip', 'route', 'get', '10.0.23.2']);
  t.match(trace.stdout, /via 10\.0\.12\.2/, 'the route goes through r2');
});
