#!/usr/bin/env bash
# Installs everything tnet and its tests need on a fresh Debian machine of this kind, then builds.
# Idempotent: apt-get runs only for what is missing; npm ci only when node_modules is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(nftables iproute2 iputils-ping socat bind9-dnsutils dnsmasq-base jq procps docker.io busybox-static)
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
  npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error
fi
npx tsc -p tsconfig.json
chmod +x dist/cli/main.js
echo "setup: ready (node $(node --version), $(nft --version))" >&2
