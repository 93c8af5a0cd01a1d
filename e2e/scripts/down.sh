#!/usr/bin/env bash
# Stops what up.sh started: sshd hosts, the control plane, and a dockerd that up.sh started.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export SLIPWAY_SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
"$root/e2e/scripts/hosts.sh" stop >/dev/null 2>&1
"$root/e2e/scripts/control-plane.sh" stop "$SLIPWAY_SANDBOX/control-plane" >/dev/null 2>&1
# Compose projects the tests left behind (each test names its own, prefixed slipway-).
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ids=$(docker ps -aq --filter label=com.docker.compose.project 2>/dev/null | head -n 500)
  for id in $ids; do
    project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$id" 2>/dev/null)
    [[ $project == slipway-* || $project == t-* ]] && docker rm -f -v "$id" >/dev/null 2>&1
  done
fi
[[ ${SLIPWAY_KEEP_DOCKER:-} == 1 ]] || "$root/e2e/scripts/docker.sh" stop >/dev/null 2>&1
exit 0
