#!/usr/bin/env bash
# Brings up the shared sandbox: a Docker engine, the reference stack's base image, a real
# kube-apiserver + etcd with Slipway installed from manifests/, sshd test hosts and the fixture's
# git origin. Writes $SLIPWAY_SANDBOX/env for the tests. Heavy builds are cached in $SLIPWAY_CACHE.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scripts=$root/e2e/scripts
export SLIPWAY_CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
export SLIPWAY_SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
hosts=${SLIPWAY_HOSTS:-3}
mkdir -p "$SLIPWAY_SANDBOX/logs"
start=$SECONDS

"$scripts/deps.sh"
# The two cold builds (Go control plane, debootstrap base image) overlap. The compose v2 plugin for
# the compose-v2 test host (the last one, when there are 3 or more) is a Go build too: it shares the
# control plane's build lock (the two Go builds take turns on the cores rather than fight over
# them) and is awaited only before the hosts start.
"$scripts/control-plane.sh" start "$SLIPWAY_SANDBOX/control-plane" >"$SLIPWAY_SANDBOX/logs/control-plane.out" 2>&1 &
cp_pid=$!
compose_pid=
if ((hosts >= 3)); then
  "$scripts/compose-v2.sh" build >"$SLIPWAY_SANDBOX/logs/compose-v2.out" 2>&1 &
  compose_pid=$!
fi
"$scripts/docker.sh" start
# The node's binaries (kubelet, kube-scheduler, kube-controller-manager: the same module build as
# the API server, after it, under the same build lock) and its pause image. The node itself starts
# only in the tests that run Pods (e2e/tests/chart.rs: e2e/scripts/node.sh start).
"$scripts/node.sh" build >"$SLIPWAY_SANDBOX/logs/node-build.out" 2>&1 &
node_build_pid=$!
"$scripts/images.sh"
# the controller image's base (run-tests.sh adds the binary once cargo has built it)
"$scripts/controller-image.sh" base
if ! wait "$cp_pid"; then
  tail -n 40 "$SLIPWAY_SANDBOX/logs/control-plane.out" >&2
  echo "[up] the control plane did not start" >&2
  exit 1
fi
cat "$SLIPWAY_SANDBOX/logs/control-plane.out" >&2

# shellcheck disable=SC1091
source "$SLIPWAY_SANDBOX/control-plane/env"
kubectl=("$SLIPWAY_KUBECTL" --kubeconfig "$SLIPWAY_KUBECONFIG")
"${kubectl[@]}" apply --server-side -k "$root/manifests" >/dev/null
# The tests run controllers of their own (processes, containers, the chart's Pod): the plain
# install's Deployment stays at 0 replicas, so that no Pod of it runs when a test starts the node.
"${kubectl[@]}" -n slipway-system scale deployment slipway-controller --replicas=0 >/dev/null
"${kubectl[@]}" wait --for condition=established --timeout=60s crd/environments.slipway.dev crd/deployrequests.slipway.dev crd/rollbacks.slipway.dev >/dev/null
"$scripts/control-plane.sh" kubeconfig-for-sa slipway-system slipway "$SLIPWAY_SANDBOX/controller.kubeconfig"

"$scripts/fixture-repo.sh" "$SLIPWAY_SANDBOX/origin/shop.git"
if [[ -n $compose_pid ]]; then
  if wait "$compose_pid"; then
    cat "$SLIPWAY_SANDBOX/logs/compose-v2.out" >&2
  else
    tail -n 40 "$SLIPWAY_SANDBOX/logs/compose-v2.out" >&2
    echo "[up] WARNING: the compose v2 plugin did not build: host$hosts stays a compose v1 host" >&2
  fi
fi
"$scripts/hosts.sh" start "$hosts"
if wait "$node_build_pid"; then
  cat "$SLIPWAY_SANDBOX/logs/node-build.out" >&2
else
  tail -n 40 "$SLIPWAY_SANDBOX/logs/node-build.out" >&2
  echo "[up] the node's binaries did not build" >&2
  exit 1
fi

{
  cat "$SLIPWAY_SANDBOX/control-plane/env"
  echo "SLIPWAY_HOSTS=$hosts"
  echo "SLIPWAY_ORIGIN=$SLIPWAY_SANDBOX/origin/shop.git"
} >"$SLIPWAY_SANDBOX/env"
echo "[up] sandbox ready in $((SECONDS - start)) s: $SLIPWAY_SANDBOX" >&2
