#!/usr/bin/env bash
# Installs everything tnet and its tests need on a fresh Debian machine of this kind, then builds.
# Idempotent: apt-get runs only for what is missing; npm ci only when node_modules is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(nftables iproute2 iputils-ping socat bind9-dnsutils dnsmasq-base jq procps docker.io busybox-static docker-compose frr etcd-server etcd-client openssl)
missing=()
for p in "${PKGS[@]}"; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# better-sqlite3 has no prebuilt binary reachable here: npm builds it from source (~70 s, once).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci" >&2
  # npm ci only: it installs exactly what package-lock.json records and never rewrites it. Falling
  # back to `npm install` would hide a stale lock and give each machine its own dependency tree.
  npm_log=$(mktemp)
  if ! npm ci --no-audit --no-fund --loglevel=error 2>"$npm_log"; then
    # npm's error, without the usage text it prints after a usage error
    sed '/^npm error Clean install a project/,/^npm error Run "npm help ci"/d' "$npm_log" >&2
    if grep -qE 'EUSAGE|in sync|from lock file|does not satisfy' "$npm_log"; then
      cat >&2 <<'MSG'

setup: FAILED: package-lock.json is out of sync with package.json, so `npm ci` refuses to install.
setup: Fix: run `npm install` in the repository (it brings package-lock.json up to date; check
setup: what it changed), then commit package-lock.json together with package.json.
MSG
    else
      echo "setup: FAILED: npm ci failed (see npm's error above); setup does not fall back to npm install" >&2
    fi
    rm -f "$npm_log"
    exit 1
  fi
  cat "$npm_log" >&2
  rm -f "$npm_log"
fi
npx tsc -p tsconfig.json
# tsc copies no JSON: the published lab schema goes next to the module that reads it
cp libnetwork/lab/lab.schema.json dist/libnetwork/lab/lab.schema.json
chmod +x dist/cli/main.js
echo "setup: ready (node $(node --version), $(nft --version))" >&2
