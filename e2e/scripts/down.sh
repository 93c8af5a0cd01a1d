#!/usr/bin/env bash
# Stops what up.sh started: sshd hosts, the control plane, and a dockerd that up.sh started; and a
# node (kubelet, containerd, ...) that a test started.
# Sweeps what a killed test run left behind: the compose projects named swt-* (PROJECT_PREFIX in
# e2e/src/hosts.rs; sandbox.sh's demo too) with their containers, volumes, networks and built
# images, and on the test hosts' deploy user their work dirs ~/slipway-e2e/swt-* and host-job run
# dirs ~/.slipway/swt-*. Nothing without the prefix is touched.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export SLIPWAY_SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
prefix=swt-
# The sandbox's controller (e2e/sandbox.sh), and with it its SSH master.
if [[ -s $SLIPWAY_SANDBOX/controller.pid ]]; then
  pid=$(cat "$SLIPWAY_SANDBOX/controller.pid")
  kill -TERM "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$SLIPWAY_SANDBOX/controller.pid"
fi
# A node a test started (e2e/scripts/node.sh): its Pods, kubelet, containerd, scheduler and
# controller-manager, and the kubelet's mounts.
"$root/e2e/scripts/node.sh" stop "$SLIPWAY_SANDBOX/node" >/dev/null 2>&1
# Controllers the tests and benchmarks of this sandbox started (KUBECONFIG inside it): a test
# process killed before its Drop ran leaves its controller running, deploying and burning CPU.
for environ in /proc/[0-9]*/environ; do
  pid=${environ#/proc/}
  pid=${pid%/environ}
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slipway-control* ]] || continue
  tr '\0' '\n' <"$environ" 2>/dev/null |
    awk -v p="KUBECONFIG=$SLIPWAY_SANDBOX/" 'index($0, p) == 1 { found = 1 } END { exit !found }' || continue
  kill -KILL "$pid" 2>/dev/null
done
"$root/e2e/scripts/hosts.sh" stop >/dev/null 2>&1
"$root/e2e/scripts/control-plane.sh" stop "$SLIPWAY_SANDBOX/control-plane" >/dev/null 2>&1

# ids of the Docker objects listed by `docker $1 ls` whose name or compose project starts with the
# prefix; `docker $1 ls --format` prints "id name project" for each.
swept() {
  local list=(docker "$1" ls)
  [[ $1 == container ]] && list+=(-a)
  "${list[@]}" --format "$2 {{.Label \"com.docker.compose.project\"}}" 2>/dev/null |
    awk -v p="$prefix" 'index($2, p) == 1 || index($3, p) == 1 { print $1 }'
}
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ids=$(swept container '{{.ID}} {{.Names}}')
  # shellcheck disable=SC2086 # word-split lists of ids
  [[ -z $ids ]] || docker rm -f -v $ids >/dev/null 2>&1
  ids=$(swept volume '{{.Name}} {{.Name}}')
  # shellcheck disable=SC2086
  [[ -z $ids ]] || docker volume rm -f $ids >/dev/null 2>&1
  ids=$(swept network '{{.ID}} {{.Name}}')
  # shellcheck disable=SC2086
  [[ -z $ids ]] || docker network rm $ids >/dev/null 2>&1
  # Images compose built are named <project>_<service> (v1) or <project>-<service> (v2). Removed by
  # name, never by id: an id may be shared with another tag (a build that only says FROM).
  names=$(docker image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
    awk -v p="$prefix" 'index($0, p) == 1 && !/:<none>$/')
  # shellcheck disable=SC2086
  [[ -z $names ]] || docker image rm $names >/dev/null 2>&1
fi

# The deploy user of the test hosts (USER_NAME in hosts.sh), shared by every sandbox on this machine.
home=$(getent passwd slipway | cut -d: -f6)
if [[ $home == /?* ]]; then
  for dir in "$home/slipway-e2e" "$home/.slipway"; do
    [[ -d $dir ]] && find "$dir" -mindepth 1 -maxdepth 1 -name "$prefix*" -exec rm -rf -- {} +
  done
fi

[[ ${SLIPWAY_KEEP_DOCKER:-} == 1 ]] || "$root/e2e/scripts/docker.sh" stop >/dev/null 2>&1
exit 0
