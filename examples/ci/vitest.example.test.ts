/**
 * A CI test with a lab, in vitest: the lab (examples/line.yml) is made for the tests and dies
 * with them, also when the run is killed. Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and a
 * built tnet (`npm run build`).
 *
 *   npx vitest run -c examples/ci/vitest.config.ts
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, type Lab } from 'tnet';

const LINE = fileURLToPath(new URL('../line.yml', import.meta.url));

describe.skipIf(process.getuid?.() !== 0)('the line lab', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await createLab(LINE);
  });
  afterAll(() => lab?.destroy());

  test('r1 reaches r3 through r2', async () => {
    const ping = await lab.exec('r1', 'ping -c1 -W1 10.0.23.2');
    expect(ping.code).toBe(0);
    expect(ping.stdout).toMatch(/ttl=63/); // one router in between
  });

  test('a failing command gives its exit code and output', async () => {
    const r = await lab.exec('r3', 'ping -c1 -W1 192.0.2.1');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/unreachable|100% packet loss/);
  });
});
