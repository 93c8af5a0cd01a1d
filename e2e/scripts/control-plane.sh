#!/usr/bin/env bash
# control-plane.sh - a real (but kubelet-less) Kubernetes control plane for Slipway's e2e tests.
#
# Everything is built from Go modules through the module proxy and cached outside the repo:
#   kube-apiserver + kubectl  from k8s.io/kubernetes  (KUBE_VERSION)
#   etcd                      from go.etcd.io/etcd/server/v3 (etcdmain)
#   helm                      from helm.sh/helm/v3/cmd/helm
#
# Usage:
#   control-plane.sh build                         build (or reuse) the binaries in $SLIPWAY_CACHE/bin
#   control-plane.sh build-node                    build (or reuse) kubelet, kube-scheduler and
#                                                  kube-controller-manager there too (for e2e/scripts/node.sh)
#   control-plane.sh start [DIR]                   fresh certs + etcd + kube-apiserver, wait for /readyz,
#                                                  write DIR/admin.kubeconfig and DIR/env
#   control-plane.sh stop [DIR]                    stop what `start` started (pid files), tolerant
#   control-plane.sh kubeconfig-for-sa NS SA OUT [DIR]
#                                                  write a kubeconfig at OUT authenticating as ServiceAccount NS/SA
#
# DIR defaults to ${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}/control-plane.
# DIR/env is shell-sourceable (`set -a; . DIR/env; set +a`) and holds SLIPWAY_KUBECONFIG,
# SLIPWAY_APISERVER, SLIPWAY_KUBECTL, SLIPWAY_HELM, SLIPWAY_CA_FILE (plus a few extras).
#
# What this is NOT: there is no kube-controller-manager, scheduler or kubelet (e2e/scripts/node.sh
# adds them, for the tests that run Pods). Consequences while they do not run:
#   - the namespace controller does not run, so a deleted Namespace stays Terminating forever
#     (tests should use fresh, uniquely named namespaces and not wait for namespace deletion);
#   - garbage collection (ownerReferences cascading) does not happen;
#   - no "default" ServiceAccount is created in new namespaces, and Pods never run (with the
#     ServiceAccount admission plugin on, creating a Pod is even refused until its SA exists;
#     Deployments etc. are stored fine, they just never get Pods).
# TokenRequest (`kubectl create token`) is served by kube-apiserver itself and works without a
# controller-manager, so the ServiceAccount admission plugin is left enabled (it only matters for Pods).
# A CRD's OpenAPI (`kubectl explain`) is published ~1 s after it turns Established: retry briefly.
#
# Output: quiet unless failing; every phase prints one line "control-plane: <phase> <seconds>s" on stderr.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Versions. v1.37.2 builds with Go 1.26 (its go.mod says `go 1.26.0`); should it ever stop building
# with the installed Go, pin KUBE_VERSION=v1.36.3 instead (staging modules follow as v0.36.3).
KUBE_VERSION="${SLIPWAY_KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${SLIPWAY_ETCD_VERSION:-v3.6.16}"   # latest v3.6.x on the module proxy when written
HELM_VERSION="${SLIPWAY_HELM_VERSION:-v3.22.0}"
# Bump when the build recipe (flags, ldflags, layout) changes, so cached binaries get rebuilt.
RECIPE=1

SLIPWAY_CACHE="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
BIN_DIR="$SLIPWAY_CACHE/bin"
BUILD_ROOT="$SLIPWAY_CACHE/build"
LOG_DIR="$SLIPWAY_CACHE/logs"
DEFAULT_DIR="${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}/control-plane"
START_TIMEOUT="${SLIPWAY_START_TIMEOUT:-90}"   # seconds to wait for etcd and for /readyz each

PROG="control-plane"

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

now_us() { local t="${EPOCHREALTIME/./}"; echo "${t#0}"; }
# phase_log START_US WHAT...  -> "control-plane: WHAT 12.3s"
phase_log() {
  local start="$1"; shift
  local d=$(( $(now_us) - start ))
  printf '%s: %s %d.%01ds\n' "$PROG" "$*" $((d / 1000000)) $(((d % 1000000) / 100000)) >&2
}

# Print the last lines of a log file to stderr (for failures).
log_tail() {
  local f="$1" n="${2:-40}"
  if [[ -f "$f" ]]; then
    printf -- '----- last %d lines of %s -----\n' "$n" "$f" >&2
    tail -n "$n" "$f" >&2 || true
    printf -- '-----\n' >&2
  fi
}

find_go() {
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "the Go toolchain is needed to build the control plane (looked in PATH and /usr/local/go/bin)"
  fi
}

# ---------------------------------------------------------------------------------------------
# build

stamp_key() {  # stamp_key NAME -> the key recorded next to a built binary
  case "$1" in
    kube-apiserver|kubectl|kubelet|kube-scheduler|kube-controller-manager) echo "recipe=$RECIPE $1 k8s.io/kubernetes@$KUBE_VERSION" ;;
    etcd) echo "recipe=$RECIPE etcd go.etcd.io/etcd/server/v3@$ETCD_VERSION" ;;
    helm) echo "recipe=$RECIPE helm helm.sh/helm/v3@$HELM_VERSION" ;;
  esac
}

is_built() {
  local name="$1"
  [[ -x "$BIN_DIR/$name" && -f "$BIN_DIR/.$name.stamp" ]] &&
    [[ "$(<"$BIN_DIR/.$name.stamp")" == "$(stamp_key "$name")" ]]
}

all_built() {
  local b
  for b in etcd kube-apiserver kubectl helm; do is_built "$b" || return 1; done
}

NODE_BINARIES=(kubelet kube-scheduler kube-controller-manager)
node_built() {
  local b
  for b in "${NODE_BINARIES[@]}"; do is_built "$b" || return 1; done
}

# go_env: run the go command the way all builds here want it.
go_env() {
  env GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 "$GO" "$@"
}

# mod_info MODULE@VERSION FIELD -> a field of `go mod download -json` (downloads if needed)
mod_info() {
  local json
  json="$(cd "$BUILD_ROOT" && env GOFLAGS= GOWORK=off "$GO" mod download -json "$1")" ||
    die "go mod download $1 failed: $json"
  sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p" <<<"$json" | head -n1
}

# go_build NAME BUILDDIR LDFLAGS PACKAGE -> $BIN_DIR/NAME (+ stamp)
go_build() {
  local name="$1" dir="$2" ldflags="$3" pkg="$4"
  local log="$LOG_DIR/build-$name.log" t0
  t0="$(now_us)"
  if ! (cd "$dir" && go_env build -p 2 -trimpath -ldflags="$ldflags" -o "$BIN_DIR/.$name.tmp" "$pkg") >"$log" 2>&1; then
    log_tail "$log" 60
    die "building $name ($pkg) failed; full log: $log"
  fi
  mv -f "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
  stamp_key "$name" >"$BIN_DIR/.$name.stamp"
  phase_log "$t0" "build $name ($pkg)"
}

# The build module for k8s.io/kubernetes. k8s.io/kubernetes requires its staging modules
# (k8s.io/api, apimachinery, client-go, ...) at v0.0.0 and resolves them with `replace => ./staging/...`,
# which is ignored when it is used as a dependency; we therefore emit one replace line per staging
# module it requires at v0.0.0, pinned to the matching v0.X.Y release.
prepare_kubernetes() {
  local dir="$BUILD_ROOT/kubernetes-$KUBE_VERSION" gomod staging mods m
  staging="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir"
  [[ -f "$dir/.prepared" ]] && { echo "$dir"; return; }
  gomod="$(mod_info "k8s.io/kubernetes@$KUBE_VERSION" GoMod)"
  [[ -f "$gomod" ]] || die "could not find go.mod of k8s.io/kubernetes@$KUBE_VERSION"
  # every requirement "k8s.io/<x> v0.0.0" (block or single-line form)
  mods="$(awk '{ if ($1 == "require") { $1 = ""; $0 = $0 } }
               $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)"
  [[ -n "$mods" ]] || die "no k8s.io staging requirements found in $gomod"
  {
    echo "module slipway.local/build/kubernetes"
    echo
    echo "go $(awk '$1 == "go" { print $2; exit }' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    for m in $mods; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
    echo ")"
  } >"$dir/go.mod"
  : >"$dir/go.sum"
  touch "$dir/.prepared"
  echo "$dir"
}

# build_kubernetes [BINARY...]: the k8s.io/kubernetes commands named (default kube-apiserver and
# kubectl) that are not built yet, from one build module (so they share the Go build cache).
build_kubernetes() {
  local dir info_time major minor ld p b
  local wanted=("$@")
  ((${#wanted[@]})) || wanted=(kube-apiserver kubectl)
  dir="$(prepare_kubernetes)"
  # build date = the release's commit time, from the proxy's .info file (keeps builds reproducible)
  info_time="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(mod_info "k8s.io/kubernetes@$KUBE_VERSION" Info)")"
  major="${KUBE_VERSION#v}"; major="${major%%.*}"
  minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
  ld="-s -w"
  # Stamp the version like the upstream build (hack/lib/version.sh) so `kubectl version`
  # and /version report it; both component-base and client-go carry a copy.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitVersion=$KUBE_VERSION"
    ld+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=${info_time:-1970-01-01T00:00:00Z}"
  done
  for b in "${wanted[@]}"; do
    is_built "$b" || go_build "$b" "$dir" "$ld" "k8s.io/kubernetes/cmd/$b"
  done
}

build_etcd() {
  local dir="$BUILD_ROOT/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  if [[ ! -f "$dir/.prepared" ]]; then
    # etcd's own main package (module go.etcd.io/etcd/v3 at the repo root) is just this.
    cat >"$dir/main.go" <<'EOF'
// Command etcd: the etcd server, built from go.etcd.io/etcd/server/v3/etcdmain.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    printf 'module slipway.local/build/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
      "$ETCD_VERSION" >"$dir/go.mod"
    : >"$dir/go.sum"
    touch "$dir/.prepared"
  fi
  go_build etcd "$dir" "-s -w" .
}

build_helm() {
  local dir="$BUILD_ROOT/helm-$HELM_VERSION" gomod cg major minor ld
  mkdir -p "$dir"
  if [[ ! -f "$dir/.prepared" ]]; then
    gomod="$(mod_info "helm.sh/helm/v3@$HELM_VERSION" GoMod)"
    printf 'module slipway.local/build/helm\n\ngo %s\n\nrequire helm.sh/helm/v3 %s\n' \
      "$(awk '$1 == "go" { print $2; exit }' "$gomod")" "$HELM_VERSION" >"$dir/go.mod"
    : >"$dir/go.sum"
    touch "$dir/.prepared"
  fi
  gomod="$(mod_info "helm.sh/helm/v3@$HELM_VERSION" GoMod)"
  # Same ldflags as helm's Makefile: version, and the Kubernetes version used for
  # .Capabilities.KubeVersion / deprecation lint, derived from its client-go (v0.X.Y -> 1.X).
  cg="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"
  cg="${cg#v}"; major=$(( ${cg%%.*} + 1 )); minor="${cg#*.}"; minor="${minor%%.*}"
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  go_build helm "$dir" "$ld" helm.sh/helm/v3/cmd/helm
}

cmd_build() {
  local t0
  t0="$(now_us)"
  if all_built; then phase_log "$t0" "build: cached in $BIN_DIR"; return 0; fi
  find_go
  mkdir -p "$BIN_DIR" "$BUILD_ROOT" "$LOG_DIR"
  # one build at a time per cache (parallel test runs may all call `start`)
  exec 9>"$SLIPWAY_CACHE/.build.lock"
  flock 9
  if all_built; then exec 9>&-; phase_log "$t0" "build: cached in $BIN_DIR"; return 0; fi
  is_built etcd || build_etcd
  if ! is_built kube-apiserver || ! is_built kubectl; then build_kubernetes; fi
  is_built helm || build_helm
  exec 9>&-
  phase_log "$t0" "build: done in $BIN_DIR"
}

# kubelet, kube-scheduler and kube-controller-manager: the same module build as kube-apiserver,
# so a warm Go build cache (the control plane's) serves most of their packages.
cmd_build_node() {
  local t0
  t0="$(now_us)"
  if node_built; then phase_log "$t0" "build-node: cached in $BIN_DIR"; return 0; fi
  find_go
  mkdir -p "$BIN_DIR" "$BUILD_ROOT" "$LOG_DIR"
  exec 9>"$SLIPWAY_CACHE/.build.lock"
  flock 9
  node_built || build_kubernetes "${NODE_BINARIES[@]}"
  exec 9>&-
  phase_log "$t0" "build-node: done in $BIN_DIR"
}

# ---------------------------------------------------------------------------------------------
# start / stop

# free_ports N -> N distinct free TCP ports on 127.0.0.1 (bound together, then released)
free_ports() {
  local n="$1"
  if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$n"
  else
    local picked=() p
    while ((${#picked[@]} < n)); do
      p=$(( 20000 + RANDOM % 40000 ))
      [[ " ${picked[*]} " == *" $p "* ]] && continue
      # connect fails -> nothing is listening there
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then picked+=("$p"); fi
    done
    echo "${picked[*]}"
  fi
}

# pid_alive PIDFILE DIR -> true if the process in PIDFILE runs and belongs to this sandbox DIR
pid_alive() {
  local pf="$1" dir="$2" pid
  [[ -f "$pf" ]] || return 1
  pid="$(<"$pf")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  local args cmdline
  mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  cmdline="${args[*]}"
  # guard against pid reuse: the command line must mention this sandbox dir
  [[ "$cmdline" == *"$dir/"* ]]
}

# stop_one PIDFILE DIR [SIGNAL]: TERM (or SIGNAL), wait up to 10 s, then KILL
stop_one() {
  local pf="$1" dir="$2" sig="${3:-TERM}" pid i
  if pid_alive "$pf" "$dir"; then
    pid="$(<"$pf")"
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      [[ -d "/proc/$pid" ]] || break
      # a zombie of ours would never go away by itself; it is gone for our purposes
      [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
      sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pf"
}

resolve_dir() {
  local d="${1:-$DEFAULT_DIR}"
  mkdir -p "$d"
  (cd "$d" && pwd -P)
}

cmd_stop() {
  local dir t0
  t0="$(now_us)"
  if [[ -n "${1:-}" && ! -d "$1" ]]; then phase_log "$t0" "stop: nothing at $1"; return 0; fi
  dir="$(resolve_dir "${1:-}")"
  stop_one "$dir/kube-apiserver.pid" "$dir"
  stop_one "$dir/etcd.pid" "$dir"
  rm -f "$dir/env"   # DIR/env exists only while a control plane runs; logs and data stay for post-mortems
  phase_log "$t0" "stop: $dir"
}

gen_certs() {
  local pki="$1"
  mkdir -p "$pki"
  cat >"$pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, IP:10.96.0.1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  (
    cd "$pki"
    umask 077
    o() { openssl "$@" 2>>openssl.log; }
    # ECDSA P-256 (PKCS#8) for the TLS keys: generated in milliseconds, and supported by Go,
    # rustls and OpenSSL clients alike; RSA-2048 for the ServiceAccount token signing key.
    for k in ca apiserver admin; do o genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$k.key"; done
    o genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
    o pkey -in sa.key -pubout -out sa.pub
    o req -x509 -new -config openssl.cnf -extensions v3_ca -key ca.key -sha256 -days 3650 \
      -subj "/CN=slipway-e2e-ca" -out ca.crt
    o req -new -config openssl.cnf -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr
    o x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -CAserial ca.srl -sha256 -days 365 \
      -extfile openssl.cnf -extensions v3_server -out apiserver.crt
    o req -new -config openssl.cnf -key admin.key -subj "/O=system:masters/CN=slipway-admin" -out admin.csr
    o x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAserial ca.srl -sha256 -days 365 \
      -extfile openssl.cnf -extensions v3_client -out admin.crt
    chmod 644 ca.crt apiserver.crt admin.crt sa.pub
  ) || { log_tail "$pki/openssl.log"; die "certificate generation failed"; }
}

b64() { base64 -w0 <"$1"; }

# write_kubeconfig OUT SERVER CA_FILE USER_NAME NAMESPACE (cert CERT KEY | token TOKEN)
# (NAMESPACE may be empty; CA and credentials are embedded so the file stands alone)
write_kubeconfig() {
  local out="$1" server="$2" ca="$3" user="$4" ns="$5" kind="$6" tmp
  tmp="$(mktemp "$(dirname "$out")/.kubeconfig.XXXXXX")"
  {
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slipway-e2e
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$ca")
users:
- name: $user
  user:
EOF
    if [[ "$kind" == cert ]]; then
      printf '    client-certificate-data: %s\n    client-key-data: %s\n' "$(b64 "$7")" "$(b64 "$8")"
    else
      printf '    token: %s\n' "$7"
    fi
    cat <<EOF
contexts:
- name: $user@slipway-e2e
  context:
    cluster: slipway-e2e
    user: $user
EOF
    if [[ -n "$ns" ]]; then printf '    namespace: %s\n' "$ns"; fi
    printf 'current-context: %s@slipway-e2e\n' "$user"
  } >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$out"
}

# env_line KEY VALUE -> KEY=VALUE, shell-quoted only where needed
env_line() {
  if [[ "$2" =~ ^[A-Za-z0-9_./:@%+=,-]*$ ]]; then printf '%s=%s\n' "$1" "$2"
  else printf '%s=%q\n' "$1" "$2"; fi
}

# launch DIR LOG PIDFILE CMD... : start detached (own session, survives this script), record the pid
launch() {
  local dir="$1" log="$2" pf="$3" pid i; shift 3
  setsid "$@" </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$pf"
  # until the child has exec'd, /proc/PID/cmdline is still this script's: wait for the exec so
  # that pid_alive (which checks the command line) is meaningful from here on. On a loaded
  # machine (a cold cargo build beside us) the exec can take seconds: wait up to 60 s.
  for ((i = 0; i < 1200; i++)); do
    pid_alive "$pf" "$dir" && return 0
    [[ -d "/proc/$pid" ]] || return 0
    sleep 0.05
  done
  die "$1 did not start within 60 s"
}

start_etcd() {
  local dir="$1" client="$2" peer="$3"
  launch "$dir" "$dir/etcd.log" "$dir/etcd.pid" "$BIN_DIR/etcd" \
    --name=slipway-e2e \
    --data-dir="$dir/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$client" \
    --advertise-client-urls="http://127.0.0.1:$client" \
    --listen-peer-urls="http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
    --initial-cluster="slipway-e2e=http://127.0.0.1:$peer" \
    --initial-cluster-state=new \
    --unsafe-no-fsync \
    --log-level=warn
}

wait_etcd() {
  local dir="$1" client="$2" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    pid_alive "$dir/etcd.pid" "$dir" || return 2
    if curl -fsS -m 2 "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"health":"true"'; then return 0; fi
    sleep 0.2
  done
  return 1
}

start_apiserver() {
  local dir="$1" port="$2" etcd_client="$3" pki="$1/pki"
  local issuer="https://kubernetes.default.svc.cluster.local"
  # shellcheck disable=SC2086 # SLIPWAY_APISERVER_ARGS is word-split on purpose
  launch "$dir" "$dir/kube-apiserver.log" "$dir/kube-apiserver.pid" "$BIN_DIR/kube-apiserver" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$port" \
    --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="$issuer" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --api-audiences="$issuer" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --enable-priority-and-fairness=false \
    --allow-privileged=true \
    --profiling=false \
    --v=0 \
    ${SLIPWAY_APISERVER_ARGS:-}
  # SLIPWAY_APISERVER_ARGS: extra flags, word-split (e.g. "--feature-gates=Foo=true").
  # --service-cluster-ip-range is only a config value (nothing is contacted there).
  # --endpoint-reconciler-type=none: required with --advertise-address=127.0.0.1; the default
  #   "lease" reconciler refuses to start ("may not be in the loopback range"), since the
  #   "kubernetes" Endpoints would point at a loopback address.
  # --enable-priority-and-fairness=false: ~0.7 s faster to /readyz here, and tests don't need APF.
}

# wait_ready DIR PORT -> 0 ready, 1 timeout, 2 process died
wait_ready() {
  local dir="$1" port="$2" pki="$1/pki" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    pid_alive "$dir/kube-apiserver.pid" "$dir" || return 2
    if [[ "$(curl -sS -m 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
      "https://127.0.0.1:$port/readyz" 2>/dev/null)" == ok ]]; then return 0; fi
    sleep 0.2
  done
  return 1
}

why() { if (($1 == 2)); then echo "exited during startup"; else echo "was not ready within ${START_TIMEOUT}s (SLIPWAY_START_TIMEOUT)"; fi; }

port_in_use_failure() { grep -qiE 'address already in use|bind: ' "$1" 2>/dev/null; }

cmd_start() {
  local dir t0 t1 etcd_client etcd_peer api_port attempt rc
  t0="$(now_us)"
  cmd_build
  command -v openssl >/dev/null 2>&1 || die "openssl is needed (apt-get install openssl)"
  command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"
  dir="$(resolve_dir "${1:-}")"

  # fresh every time: stop a previous instance in this DIR and remove what it left
  if [[ -f "$dir/kube-apiserver.pid" || -f "$dir/etcd.pid" ]]; then
    t1="$(now_us)"
    # its state is thrown away anyway: no graceful shutdown needed
    stop_one "$dir/kube-apiserver.pid" "$dir" KILL
    stop_one "$dir/etcd.pid" "$dir" KILL
    phase_log "$t1" "stopped the previous instance in $dir"
  fi
  rm -rf "$dir/pki" "$dir/etcd-data" "$dir/etcd.log" "$dir/kube-apiserver.log" \
    "$dir/admin.kubeconfig" "$dir/env" "$dir/ca.crt"

  t1="$(now_us)"
  gen_certs "$dir/pki"
  cp "$dir/pki/ca.crt" "$dir/ca.crt"
  phase_log "$t1" "certificates"

  # Ports are picked free and released, so another process could grab one in between:
  # retry with new ports when a bind fails.
  t1="$(now_us)"
  for attempt in 1 2 3; do
    read -r etcd_client etcd_peer < <(free_ports 2)
    rm -rf "$dir/etcd-data"
    start_etcd "$dir" "$etcd_client" "$etcd_peer"
    rc=0; wait_etcd "$dir" "$etcd_client" || rc=$?
    ((rc == 0)) && break
    stop_one "$dir/etcd.pid" "$dir"
    if ((rc == 2)) && port_in_use_failure "$dir/etcd.log" && ((attempt < 3)); then continue; fi
    log_tail "$dir/etcd.log"
    die "etcd $(why "$rc") (client port $etcd_client); log: $dir/etcd.log"
  done
  phase_log "$t1" "etcd ready on 127.0.0.1:$etcd_client"

  t1="$(now_us)"
  for attempt in 1 2 3; do
    read -r api_port < <(free_ports 1)
    start_apiserver "$dir" "$api_port" "$etcd_client"
    rc=0; wait_ready "$dir" "$api_port" || rc=$?
    ((rc == 0)) && break
    stop_one "$dir/kube-apiserver.pid" "$dir"
    if ((rc == 2)) && port_in_use_failure "$dir/kube-apiserver.log" && ((attempt < 3)); then continue; fi
    stop_one "$dir/etcd.pid" "$dir"
    log_tail "$dir/kube-apiserver.log"
    die "kube-apiserver $(why "$rc") (port $api_port); log: $dir/kube-apiserver.log"
  done
  phase_log "$t1" "kube-apiserver ready on https://127.0.0.1:$api_port"

  write_kubeconfig "$dir/admin.kubeconfig" "https://127.0.0.1:$api_port" "$dir/ca.crt" slipway-admin "" \
    cert "$dir/pki/admin.crt" "$dir/pki/admin.key"
  {
    env_line SLIPWAY_KUBECONFIG "$dir/admin.kubeconfig"
    env_line SLIPWAY_APISERVER "https://127.0.0.1:$api_port"
    env_line SLIPWAY_KUBECTL "$BIN_DIR/kubectl"
    env_line SLIPWAY_HELM "$BIN_DIR/helm"
    env_line SLIPWAY_CA_FILE "$dir/ca.crt"
    env_line SLIPWAY_CONTROL_PLANE_DIR "$dir"
    env_line SLIPWAY_ETCD_ENDPOINT "http://127.0.0.1:$etcd_client"
    env_line SLIPWAY_KUBERNETES_VERSION "$KUBE_VERSION"
  } >"$dir/.env.tmp"
  mv -f "$dir/.env.tmp" "$dir/env"
  phase_log "$t0" "start: ready ($dir/env)"
}

cmd_kubeconfig_for_sa() {
  (($# >= 3)) || die "usage: $0 kubeconfig-for-sa NAMESPACE SERVICEACCOUNT OUT [DIR]"
  local ns="$1" sa="$2" out="$3" dir t0 token server
  t0="$(now_us)"
  dir="$(resolve_dir "${4:-}")"
  [[ -f "$dir/env" && -f "$dir/admin.kubeconfig" ]] || die "no control plane in $dir (run: $0 start)"
  server="$(sed -n 's/^SLIPWAY_APISERVER=//p' "$dir/env")"
  token="$("$BIN_DIR/kubectl" --kubeconfig "$dir/admin.kubeconfig" -n "$ns" \
    create token "$sa" --duration=24h 2>"$dir/.token.err")" ||
    { cat "$dir/.token.err" >&2; rm -f "$dir/.token.err"; die "could not create a token for ServiceAccount $ns/$sa"; }
  rm -f "$dir/.token.err"
  mkdir -p "$(dirname "$out")"
  write_kubeconfig "$out" "$server" "$dir/ca.crt" "system:serviceaccount:$ns:$sa" "$ns" token "$token"
  phase_log "$t0" "kubeconfig-for-sa $ns/$sa -> $out"
}

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit 2
}

main() {
  local sub="${1:-}"
  (($#)) && shift
  case "$sub" in
    build) cmd_build ;;
    build-node) cmd_build_node ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kubeconfig-for-sa) cmd_kubeconfig_for_sa "$@" ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
