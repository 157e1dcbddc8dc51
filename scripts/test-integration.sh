#!/usr/bin/env bash
# The privileged integration tests only (tap, root): every file under test/integration re-runs
# itself in its own network + mount namespace (test/integration/harness.ts), as in scripts/test.sh.
# Extra arguments go to tap, e.g. `bash scripts/test-integration.sh --grep=hairpin`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; exit 1; }
export TNET_LOG_LEVEL=${TNET_LOG_LEVEL:-warn}

echo "== integration tests (tap, root)"
exec npx tap --disable-coverage --allow-empty-coverage --jobs=2 --timeout=900 "$@" test/integration/*.test.ts
