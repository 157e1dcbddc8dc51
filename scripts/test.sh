#!/usr/bin/env bash
# The whole test suite: setup (idempotent), type checks, unit tests (vitest, no root),
# privileged integration and e2e tests (tap; each file in its own network + mount namespace).
# Ends with one line "N passed, N failed, N skipped" and a non-zero exit on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; exit 1; }
export TNET_LOG_LEVEL=${TNET_LOG_LEVEL:-warn}
out=$(mktemp -d /tmp/tnet-test.XXXXXX)
trap 'rm -rf "$out"' EXIT
status=0

echo "== type check (sources and tests)"
npx tsc -p tsconfig.test.json || status=1

echo "== unit tests (vitest)"
npx vitest run --reporter=default --reporter=json --outputFile="$out/vitest.json" || status=1

echo "== DNS fuzz (100 000 random and mutated packets)"
npx vitest run -c test/fuzz/dns-vitest.config.ts --reporter=default --reporter=json --outputFile="$out/fuzz.json" || status=1

echo "== integration and e2e tests (tap, root)"
files=$(ls test/integration/*.test.ts test/e2e/*.test.ts 2>/dev/null)
# shellcheck disable=SC2086
npx tap --disable-coverage --allow-empty-coverage --jobs=2 --timeout=900 $files 2>&1 | tee "$out/tap.txt" || status=1

# One closing line for both runners.
node - "$out" <<'JS'
const fs = require('fs'); const dir = process.argv[2];
let pass = 0, fail = 0, skip = 0;
try {
  const v = JSON.parse(fs.readFileSync(dir + '/vitest.json', 'utf8'));
  pass += v.numPassedTests; fail += v.numFailedTests; skip += v.numPendingTests + (v.numTodoTests ?? 0);
} catch { fail += 1; console.log('vitest wrote no results'); }
try {
  const f = JSON.parse(fs.readFileSync(dir + '/fuzz.json', 'utf8'));
  pass += f.numPassedTests; fail += f.numFailedTests; skip += f.numPendingTests;
} catch { fail += 1; console.log('the fuzz run wrote no results'); }
const m = [...fs.readFileSync(dir + '/tap.txt', 'utf8').matchAll(/# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, skip: (\d+))?/g)].pop();
if (m) { pass += +(m[2] ?? 0); fail += +(m[3] ?? 0); skip += +(m[4] ?? 0); } else { fail += 1; console.log('tap wrote no summary'); }
console.log(`${pass} passed, ${fail} failed, ${skip} skipped`);
JS
exit $status
