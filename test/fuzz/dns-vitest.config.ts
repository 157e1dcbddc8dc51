import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The DNS fuzz test: `npx vitest run -c test/fuzz/dns-vitest.config.ts`.
// Forked worker with --expose-gc so the test can measure the heap after a full collection.
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/fuzz/dns*.test.ts'],
    environment: 'node',
    pool: 'forks',
    poolOptions: { forks: { execArgv: ['--expose-gc'], singleFork: true } },
    testTimeout: 120_000,
    hookTimeout: 30_000,
  },
});
