#!/usr/bin/env bash
# Benchmark: `docker run --rm --network X busybox true` with X a tnet bridge network and with X a
# network of dockerd's built-in bridge driver, RUNS times each (default 50), alternating, in one
# run; plus the plugin's own CreateEndpoint+Join handling time (from its /tnet/timings).
# Prints JSON lines; the last one is the summary. Runs inside a private network + mount namespace
# with its own dockerd (own data-root, exec-root, socket) and tnet plugin; stops both by pid.
#
#   bash scripts/bench-docker.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-50}
if [[ ${TNET_BENCH_ISOLATED:-} != 1 ]]; then
  for b in /usr/sbin/dockerd /usr/bin/docker /bin/busybox; do
    [[ -x $b ]] || { echo "bench-docker: $b missing (apt-get install docker.io busybox-static)" >&2; exit 2; }
  done
  [[ -f dist/cli/daemon.js ]] || npx tsc -p tsconfig.json
  mkdir -p /run/netns /run/docker /run/containerd
  exec unshare --net --mount -- env TNET_BENCH_ISOLATED=1 sh -c \
    'mount --make-rprivate / && mount -t tmpfs bench /run/netns && mount -t tmpfs bench /run/docker &&
     mount -t tmpfs bench /run/containerd && ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi

base=$(mktemp -d /tmp/tnet-bench.XXXXXX)
sock=$base/docker.sock
dk() { /usr/bin/docker -H "unix://$sock" "$@"; }
plugin_pid='' dockerd_pid=''
cleanup() {
  set +e
  if [[ -n $dockerd_pid ]]; then
    ids=$(dk ps -aq 2>/dev/null); [[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
    dk network rm bench-tnet bench-bridge >/dev/null 2>&1
    kill "$dockerd_pid" 2>/dev/null; for _ in $(seq 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$dockerd_pid" 2>/dev/null
    cd_pid=$(cat "$base/exec/containerd/containerd.pid" 2>/dev/null) && [[ -n $cd_pid ]] && kill "$cd_pid" 2>/dev/null
  fi
  [[ -n $plugin_pid ]] && kill "$plugin_pid" 2>/dev/null && wait "$plugin_pid" 2>/dev/null
  awk -v b="$base" '$2 ~ "^"b {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$base"
}
trap cleanup EXIT

TNET_LOG_LEVEL=warn node dist/cli/main.js daemon --state-dir "$base/tnet" --socket "$base/tnet/control.sock" 2>"$base/plugin.log" &
plugin_pid=$!
mkdir -p "$base/data" "$base/exec"; echo '{}' >"$base/daemon.json"
/usr/sbin/dockerd --data-root "$base/data" --exec-root "$base/exec" --pidfile "$base/dockerd.pid" \
  --host "unix://$sock" --config-file "$base/daemon.json" --log-level warn >"$base/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 150); do dk version >/dev/null 2>&1 && break; sleep 0.2; done
root=$base/rootfs; mkdir -p "$root/bin"; cp /bin/busybox "$root/bin/"
for a in sh true; do ln -s busybox "$root/bin/$a"; done
tar -C "$root" -c . | dk import - tnet-bench/busybox >/dev/null

dk network create -d tnet --subnet 10.77.0.0/24 bench-tnet >/dev/null
dk network create -d bridge --subnet 10.78.0.0/24 bench-bridge >/dev/null

timings() { node -e '
  const http = require("http");
  http.get({ socketPath: "/run/docker/plugins/tnet.sock", path: "/tnet/timings" }, (r) => {
    let s = ""; r.on("data", (c) => (s += c)); r.on("end", () => process.stdout.write(s));
  });'; }

one() { # network -> ms
  local t0 t1
  t0=$(date +%s%N)
  dk run --rm --network "$1" tnet-bench/busybox true
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
for _ in 1 2 3; do one bench-tnet >/dev/null; one bench-bridge >/dev/null; done # warm-up
before=$(timings)
tn=() br=()
for i in $(seq "$RUNS"); do
  if ((i % 2)); then tn+=("$(one bench-tnet)"); br+=("$(one bench-bridge)")
  else br+=("$(one bench-bridge)"); tn+=("$(one bench-tnet)"); fi
done
after=$(timings)

node - "$RUNS" "${tn[*]}" "${br[*]}" "$before" "$after" <<'JS'
const [runs, tnText, brText, beforeText, afterText] = process.argv.slice(2);
const us = (s) => s.trim().split(/\s+/).map(Number);
const q = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]; };
const tn = us(tnText), br = us(brText);
const ms = (x) => Math.round(x / 10) / 100;
const before = JSON.parse(beforeText), after = JSON.parse(afterText);
const fresh = (k) => (after[k] ?? []).slice((before[k] ?? []).length);
const ce = fresh('NetworkDriver.CreateEndpoint'), join = fresh('NetworkDriver.Join');
const both = ce.map((x, i) => x + (join[i] ?? 0));
const r2 = (x) => Math.round(x * 1000) / 1000;
console.log(JSON.stringify({ bench: 'docker-run', network: 'tnet', runs: tn.length, p50_ms: ms(q(tn, 50)), p99_ms: ms(q(tn, 99)) }));
console.log(JSON.stringify({ bench: 'docker-run', network: 'dockerd-bridge', runs: br.length, p50_ms: ms(q(br, 50)), p99_ms: ms(q(br, 99)) }));
console.log(JSON.stringify({
  bench: 'plugin-createendpoint+join', samples: both.length, p50_ms: r2(q(both, 50)), p99_ms: r2(q(both, 99)),
  createendpoint_p50_ms: r2(q(ce, 50)), join_p50_ms: r2(q(join, 50)),
}));
const perCall = {};
for (const k of Object.keys(after)) { const f = fresh(k); if (f.length) perCall[k] = { n: f.length, p50_ms: r2(q(f, 50)), p99_ms: r2(q(f, 99)) }; }
console.log(JSON.stringify({ bench: 'plugin-calls', calls: perCall }));
const ratio = q(tn, 50) / q(br, 50);
console.log(JSON.stringify({ bench: 'summary', runs: Number(runs), median_ratio_tnet_over_bridge: Math.round(ratio * 1000) / 1000, target_ratio: 1.1,
  plugin_p50_ms: r2(q(both, 50)), target_plugin_p50_ms: 3 }));
JS
