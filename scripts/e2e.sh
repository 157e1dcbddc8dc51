#!/usr/bin/env bash
# The end-to-end suite against a real Docker engine (tap, root). Each file runs in its own network +
# mount namespace with its own dockerd; files skip with a reason when docker.io is not installed.
#   bash scripts/e2e.sh [test/e2e/FILE.test.ts ...]
set -uo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json || exit 1
files=("$@")
((${#files[@]})) || files=(test/e2e/*.test.ts)
TNET_LOG_LEVEL=${TNET_LOG_LEVEL:-info} exec npx tap --disable-coverage --allow-empty-coverage --jobs=1 --timeout=900 "${files[@]}"
