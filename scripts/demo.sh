#!/usr/bin/env bash
# The main job, end to end: a bridge network and two sandboxes that ping each other by address and
# by name (tnet's DNS), then a lab from a topology file (examples/line.yml: three nodes in a line,
# point-to-point links) whose ends reach each other by name across the middle node. Runs inside a private network + mount namespace so it never touches this
# machine's own network (pass --host to run on the real host).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} != --host && ${TNET_DEMO_ISOLATED:-} != 1 ]]; then
  mkdir -p /run/netns /etc/netns /run/tnet /run/docker
  # /run/docker too: the daemon serves Docker's plugin socket there, and the host's dockerd must not see ours
  exec unshare --net --mount -- env TNET_DEMO_ISOLATED=1 sh -c \
    'mount --make-rprivate / && mount -t tmpfs demo /run/netns && mount -t tmpfs demo /etc/netns &&
     mount -t tmpfs demo /run/tnet && mount -t tmpfs demo /run/docker && ip link set lo up && exec bash "$0"' "$0"
fi
state=$(mktemp -d /tmp/tnet-demo.XXXXXX)
export TNET_STATE_DIR=$state TNET_SOCKET=/run/tnet/demo.sock
tnet() { node dist/cli/main.js "$@"; }
cleanup() {
  tnet destroy line >/dev/null 2>&1 || true
  tnet sandbox rm a b >/dev/null 2>&1 || true
  tnet network rm demo >/dev/null 2>&1 || true
  [[ -f $state/daemon.pid ]] && kill "$(cat "$state/daemon.pid")" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
set -x
tnet network create demo --subnet 10.123.0.0/24
tnet sandbox create a
tnet sandbox create b
tnet connect demo a
tnet connect demo b --alias web
tnet network ls
tnet sandbox ls
tnet exec a -- ping -c 2 -W 1 10.123.0.3
tnet exec b -- ping -c 2 -W 1 10.123.0.2
tnet exec a -- ping -c 2 -W 1 web          # by name: b's alias, through tnet's DNS on 127.0.0.11
tnet exec b -- ping -c 2 -W 1 a.demo       # NAME.NETWORK
tnet create examples/line.yml              # a lab: r1 - r2 - r3 over point-to-point links
tnet inspect line
tnet exec line r1 -- ping -c 2 -W 1 r3.line  # across r2, by the lab's DNS name
tnet destroy line
set +x
echo "demo: ok — two sandboxes on bridge network 'demo' reach each other by address and by name; lab 'line' made, pinged end to end and destroyed"
