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

KUBECONFIG=$SLIPWAY_SANDBOX/controller.kubeconfig "${CARGO_TARGET_DIR:-target}/debug/slipway-controller" \
  --namespace demo --http-addr 127.0.0.1:18080 >"$SLIPWAY_SANDBOX/logs/controller.log" 2>&1 &
controller_pid=$!
# down.sh stops it (with its SSH master) whether or not this script is still running.
echo "$controller_pid" >"$SLIPWAY_SANDBOX/controller.pid"

# The deploy user clones the reference stack from a copy it owns (git refuses to serve a
# repository owned by someone else).
origin=$SLIPWAY_SANDBOX/deploy-origin/shop.git
mkdir -p "$(dirname "$origin")" && chmod 755 "$(dirname "$origin")"
cp -a "$SLIPWAY_ORIGIN" "$origin" && chown -R "$SLIPWAY_HOST_USER:$SLIPWAY_HOST_USER" "$origin"

k create namespace demo >/dev/null 2>&1 || true
k apply -f manifests/examples/rbac.yaml >/dev/null
k create secret generic shop-ssh \
  --from-file=id_ed25519="$SLIPWAY_HOST_KEY" --from-file=known_hosts="$SLIPWAY_HOST_KNOWN_HOSTS" >/dev/null
db_password=$(openssl rand -hex 12)
k create secret generic shop-env \
  --from-literal=POSTGRES_USER=shop --from-literal=POSTGRES_PASSWORD="$db_password" \
  --from-literal=POSTGRES_DB=shop --from-literal=SECRET_KEY="$(openssl rand -hex 24)" \
  --from-literal=DATABASE_URL="postgresql+psycopg2://shop:$db_password@db:5432/shop" >/dev/null
k label secret shop-ssh shop-env slipway.dev/secret=true >/dev/null

k apply -f - >/dev/null <<YAML
apiVersion: slipway.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  tier: staging
  host: {address: "$SLIPWAY_HOST_ADDR", port: $SLIPWAY_HOST_PORT, user: "$SLIPWAY_HOST_USER", path: /home/$SLIPWAY_HOST_USER/slipway-e2e/swt-demo}
  repository: {url: "file://$origin"}
  sshKeySecretRef: {name: shop-ssh, key: id_ed25519}
  knownHostsSecretRef: {name: shop-ssh, key: known_hosts}
  compose: {files: [docker-compose.yml], projectName: swt-demo}
  envSecretRef: {name: shop-env}
  migrations: {service: backend, upgrade: [alembic, upgrade, head], current: [alembic, current], downgrade: [alembic, downgrade, "{revision}"]}
  health:
    timeoutSeconds: 180
    checks:
      - {name: backend, http: {service: backend, port: 8000, path: /health, expectJson: {status: healthy}}}
      - {name: frontend, http: {service: frontend, port: 80, path: /}}
      - {name: database, exec: {service: db, command: [pg_isready]}}
  policy: {requireIssue: true, autoRollback: false}
YAML

# The admission policy admits a DeployRequest only when slipway.dev/requested-by names the user
# creating it: the admin kubeconfig's user here.
me=$(k auth whoami -o jsonpath='{.status.userInfo.username}')

# follow KIND NAME: prints the request's phases as they change until it ends; fails unless it
# Succeeded.
follow() {
  local last="" phase="" started=$SECONDS
  while ((SECONDS - started < 900)); do
    phase=$(k get "$1" "$2" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    if [[ $phase != "$last" && -n $phase ]]; then
      printf '  %4ss  %s\n' "$((SECONDS - started))" "$phase"
      last=$phase
    fi
    [[ $phase == Succeeded || $phase == Failed || $phase == RolledBack ]] && break
    sleep 1
  done
  [[ $phase == Succeeded ]] || {
    k get "$1" "$2" -o yaml | sed -n '/^status:/,$p' >&2
    echo "$1/$2 ended $phase; controller log: $SLIPWAY_SANDBOX/logs/controller.log" >&2
    return 1
  }
}

# deploy NAME TAG ISSUE: applies a DeployRequest and prints its phases as they change.
deploy() {
  k apply -f - >/dev/null <<YAML
apiVersion: slipway.dev/v1alpha1
kind: DeployRequest
metadata:
  name: $1
  annotations: {slipway.dev/requested-by: "$me"}
spec: {environment: staging, revision: {tag: $2}, issue: "$3"}
YAML
  echo
  echo "\$ kubectl apply deployrequest/$1 (tag $2)"
  follow deployrequest "$1"
}

# rollback NAME REASON: applies a Rollback to the previous release and prints its phases.
rollback() {
  k apply -f - >/dev/null <<YAML
apiVersion: slipway.dev/v1alpha1
kind: Rollback
metadata:
  name: $1
  annotations: {slipway.dev/requested-by: "$me"}
spec: {environment: staging, to: {previous: true}, reason: "$2"}
YAML
  echo
  echo "\$ kubectl apply rollback/$1 (to the previous release: \"$2\")"
  follow rollback "$1"
}

# app PATH: the backend's answer to GET PATH, from inside its container.
app() {
  local backend
  backend=$(docker ps -q --filter label=com.docker.compose.project=swt-demo --filter label=com.docker.compose.service=backend | head -n 1)
  echo "\$ curl http://backend:8000$1   (inside the backend container)"
  docker exec "$backend" curl -fsS "http://127.0.0.1:8000$1"
  echo
}

deploy shop-1 v1.0.0 "#1"
deploy shop-2 v1.1.0 "#2"
echo
app /api/items/1

# and back: the database is downgraded first (v1.1.0's column goes), then v1.0.0 runs again
rollback undo-shop-2 "demo: back to v1.0.0"

echo
echo "\$ kubectl get environments,deployrequests,rollbacks -o wide"
k get environments,deployrequests,rollbacks -o wide
echo
echo "\$ kubectl get env staging -o jsonpath='{.status.current}'"
k get env staging -o jsonpath='{.status.current}'
echo
echo
app /api/version
if [[ $keep == --keep ]]; then
  echo
  echo "Left running. kubectl: $SLIPWAY_KUBECTL --kubeconfig $SLIPWAY_KUBECONFIG -n demo get env,dr"
  echo "Controller log: $SLIPWAY_SANDBOX/logs/controller.log"
  echo "Stop everything (controller, SSH master, hosts, control plane): SLIPWAY_SANDBOX=$SLIPWAY_SANDBOX e2e/scripts/down.sh"
fi
