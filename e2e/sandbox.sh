#!/usr/bin/env bash
# Runs Slipway's main job on a local sandbox: a real control plane with Slipway installed from
# manifests/, an SSH compose host with a pinned host key, the reference stack's git origin, the
# controller running as its ServiceAccount, and sample objects whose status is printed.
#   e2e/sandbox.sh          bring up, run, print, tear down
#   e2e/sandbox.sh --keep   leave everything running and print how to use it
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SLIPWAY_CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
export SLIPWAY_SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
export SLIPWAY_HOSTS=1
keep=${1:-}

e2e/scripts/down.sh
rm -rf "$SLIPWAY_SANDBOX"
[[ $keep == --keep ]] || trap 'kill "${controller_pid:-}" 2>/dev/null; e2e/scripts/down.sh' EXIT
cargo build --quiet -p slipway-controller &
build_pid=$!
e2e/scripts/up.sh
wait "$build_pid"

# shellcheck disable=SC1091
source "$SLIPWAY_SANDBOX/env"
# shellcheck disable=SC1091
source "$SLIPWAY_SANDBOX/hosts/host1/env"
k() { "$SLIPWAY_KUBECTL" --kubeconfig "$SLIPWAY_KUBECONFIG" -n demo "$@"; }

KUBECONFIG=$SLIPWAY_SANDBOX/controller.kubeconfig target/debug/slipway-controller \
  --namespace demo --http-addr 127.0.0.1:18080 >"$SLIPWAY_SANDBOX/logs/controller.log" 2>&1 &
controller_pid=$!

k create namespace demo >/dev/null 2>&1 || true
k apply -f manifests/examples/rbac.yaml >/dev/null
k create secret generic shop-ssh \
  --from-file=id_ed25519="$SLIPWAY_HOST_KEY" --from-file=known_hosts="$SLIPWAY_HOST_KNOWN_HOSTS" >/dev/null
k create secret generic shop-env \
  --from-literal=POSTGRES_USER=shop --from-literal=POSTGRES_PASSWORD="$(openssl rand -hex 12)" \
  --from-literal=POSTGRES_DB=shop --from-literal=SECRET_KEY="$(openssl rand -hex 24)" >/dev/null
k label secret shop-ssh shop-env slipway.dev/secret=true >/dev/null

k apply -f - >/dev/null <<YAML
apiVersion: slipway.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  tier: staging
  host: {address: "$SLIPWAY_HOST_ADDR", port: $SLIPWAY_HOST_PORT, user: "$SLIPWAY_HOST_USER", path: /home/$SLIPWAY_HOST_USER/slipway-e2e/swt-demo}
  repository: {url: "file://$SLIPWAY_ORIGIN"}
  sshKeySecretRef: {name: shop-ssh, key: id_ed25519}
  knownHostsSecretRef: {name: shop-ssh, key: known_hosts}
  compose: {files: [docker-compose.yml], projectName: swt-demo}
  envSecretRef: {name: shop-env}
  migrations: {service: backend, upgrade: [alembic, upgrade, head], current: [alembic, current], downgrade: [alembic, downgrade, "{revision}"]}
  health:
    checks:
      - {name: backend, http: {service: backend, port: 8000, path: /health, expectJson: {status: healthy}}}
      - {name: frontend, http: {service: frontend, port: 80, path: /}}
      - {name: database, exec: {service: db, command: [pg_isready]}}
  policy: {requireIssue: true}
---
apiVersion: slipway.dev/v1alpha1
kind: DeployRequest
metadata: {name: shop-1}
spec: {environment: staging, revision: {tag: v1.0.0}, issue: "#1"}
---
apiVersion: slipway.dev/v1alpha1
kind: DeployRequest
metadata: {name: shop-2}
spec: {environment: production, revision: {tag: v1.1.0}, issue: "#2"}
YAML

k wait dr/shop-1 --for=jsonpath='{.status.phase}'=Queued --timeout=60s >/dev/null
k wait dr/shop-2 --for=jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'=EnvironmentNotFound --timeout=60s >/dev/null
k wait env/staging --for=jsonpath='{.status.observedGeneration}'=1 --timeout=60s >/dev/null

echo
echo "\$ kubectl get environments,deployrequests -o wide"
k get environments,deployrequests -o wide
echo
echo "\$ kubectl describe deployrequest shop-1"
k describe deployrequest shop-1 | sed -n '/^Status:/,$p'
if [[ $keep == --keep ]]; then
  echo
  echo "Left running. kubectl: $SLIPWAY_KUBECTL --kubeconfig $SLIPWAY_KUBECONFIG -n demo get env,dr"
  echo "Controller log: $SLIPWAY_SANDBOX/logs/controller.log; stop all with: SLIPWAY_SANDBOX=$SLIPWAY_SANDBOX e2e/scripts/down.sh"
fi
