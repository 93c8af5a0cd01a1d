#!/usr/bin/env bash
# node.sh - a real node for the sandbox's control plane (e2e/scripts/control-plane.sh): the
# scheduler and controller-manager, a containerd of its own with the CRI plugin, and a kubelet.
#
#   node.sh build                 build (or reuse) kubelet, kube-scheduler, kube-controller-manager
#                                 (control-plane.sh build-node) and the pause image (a static Go
#                                 binary FROM scratch, written as an OCI archive), cached in
#                                 $SLIPWAY_CACHE
#   node.sh start [DIR]           start kube-scheduler, kube-controller-manager, containerd and the
#                                 kubelet against the control plane in $SLIPWAY_SANDBOX/control-plane;
#                                 wait until the Node is Ready; write DIR/env
#   node.sh import-image REF [DIR]
#                                 copy an image from the Docker engine into the node's containerd
#                                 (namespace k8s.io), where Pods find it without any registry
#   node.sh stop [DIR]            stop all of it: every Pod's containers, the kubelet, containerd,
#                                 the scheduler and controller-manager; unmount what they mounted
#
# DIR defaults to $SLIPWAY_SANDBOX/node. DIR/env holds SLIPWAY_NODE_NAME, SLIPWAY_NODE_DIR,
# SLIPWAY_CONTAINERD_ADDRESS.
#
# What this node is: one kubelet (cgroupfs driver; the host may have cgroup v1), runc through
# Debian's containerd (the one docker.io brings, run as a separate instance: own root, state,
# socket and config), CNI from Debian's containernetworking-plugins (bridge + host-local), no
# kube-proxy and no cluster DNS. The control plane listens on the loopback only, so Pods that talk
# to it or to the sandbox's SSH hosts run with hostNetwork and KUBERNETES_SERVICE_HOST=127.0.0.1.
# No registry is reachable: images come in through `import-image`, and pulls of docker.io and
# registry.k8s.io are pointed at a closed loopback port so that they fail at once.
#
# While it runs, kube-controller-manager garbage-collects objects whose owner is gone and deletes
# the contents of deleted namespaces: start the node only where tests expect that.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SLIPWAY_CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
BIN_DIR=$SLIPWAY_CACHE/bin
NODE_NAME=slipway-node
# Bump when the pause program or its image changes.
PAUSE_RECIPE=1
PAUSE_REF=slipway.local/pause:$PAUSE_RECIPE
PAUSE_TAR=$SLIPWAY_CACHE/node/pause-$PAUSE_RECIPE.tar
TIMEOUT=${SLIPWAY_NODE_TIMEOUT:-120}
# The Pods' network (CNI bridge; used by Pods without hostNetwork only).
POD_SUBNET=10.88.0.0/24
CNI_BIN_DIR=/usr/lib/cni

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=node
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# build

build_pause() {
    [[ -s $PAUSE_TAR ]] && return 0
    local go work
    go=$(command -v go || echo /usr/local/go/bin/go)
    [[ -x $go ]] || die "the Go toolchain is needed to build the pause image"
    mkdir -p "$SLIPWAY_CACHE/node"
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    mkdir -p "$work/src" "$work/rootfs"
    # The Pod sandbox's only process: waits for a signal to end, and reaps whatever is re-parented
    # to it (it is PID 1 of the Pod's namespaces), like Kubernetes' pause.c.
    cat >"$work/src/main.go" <<'EOF'
// Command pause holds a Pod's namespaces until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
    printf 'module slipway.local/pause\n\ngo 1.21\n' >"$work/src/go.mod"
    (cd "$work/src" && env GOWORK=off GOFLAGS= CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$work/rootfs/pause" .) ||
        die "building the pause binary failed"
    # An OCI image archive, written out directly (no Docker needed): one uncompressed layer.
    local oci=$work/oci layer config manifest digest size
    mkdir -p "$oci/blobs/sha256"
    tar -C "$work/rootfs" --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" pause
    layer=$(sha256sum "$work/layer.tar" | cut -c1-64)
    mv "$work/layer.tar" "$oci/blobs/sha256/$layer"
    printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$("$go" env GOARCH)" "$layer" >"$work/config.json"
    config=$(sha256sum "$work/config.json" | cut -c1-64)
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
        "$config" "$(stat -c %s "$work/config.json")" "$layer" "$(stat -c %s "$oci/blobs/sha256/$layer")" >"$work/manifest.json"
    manifest=$(sha256sum "$work/manifest.json" | cut -c1-64)
    size=$(stat -c %s "$work/manifest.json")
    mv "$work/config.json" "$oci/blobs/sha256/$config"
    mv "$work/manifest.json" "$oci/blobs/sha256/$manifest"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$manifest" "$size" "$PAUSE_REF" "${PAUSE_REF##*:}" >"$oci/index.json"
    tar -C "$oci" --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$PAUSE_TAR.partial" oci-layout index.json blobs
    mv "$PAUSE_TAR.partial" "$PAUSE_TAR"
    digest=$manifest
    phase "pause image $PAUSE_REF ($(du -k "$PAUSE_TAR" | cut -f1) KiB, manifest sha256:${digest:0:12}) cached at $PAUSE_TAR"
}

cmd_build() {
    "$HERE/control-plane.sh" build-node
    exec 8>"$SLIPWAY_CACHE/.node-build.lock"
    flock 8
    build_pause
    exec 8>&-
}

# ---------------------------------------------------------------------------------------------
# start / stop

resolve_dir() {
    local d=${1:-$SANDBOX/node}
    mkdir -p "$d"
    (cd "$d" && pwd -P)
}

# pid_of NAME DIR: the pid in DIR/NAME.pid if that process still runs from this DIR
pid_of() {
    local pf=$2/$1.pid pid
    [[ -s $pf ]] || return 1
    pid=$(<"$pf")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$2/" || return 1
    echo "$pid"
}

# stop_pid NAME DIR [GRACE]: TERM, then KILL after GRACE seconds (default 10)
stop_pid() {
    local pid i grace=${3:-10}
    if pid=$(pid_of "$1" "$2"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$2/$1.pid"
}

# launch NAME DIR CMD...: start CMD detached (own session), log to DIR/logs/NAME.log
launch() {
    local name=$1 dir=$2
    shift 2
    setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 9>&- 8>&- &
    echo $! >"$dir/$name.pid"
}

# await WHAT SECONDS NAME DIR CMD...: run CMD until it succeeds; fail naming WHAT and the tail of
# the log of NAME (a process launched in DIR) when it does not within SECONDS or NAME exits
await() {
    local what=$1 limit=$2 name=$3 dir=$4 log=$4/logs/$3.log deadline
    shift 4
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ! pid_of "$name" "$dir" >/dev/null; then
            [[ -f $log ]] && tail -n 30 "$log" >&2
            die "$name exited before $what (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            [[ -f $log ]] && tail -n 30 "$log" >&2
            die "$what not within ${limit}s (log: $log)"
        fi
        sleep 0.2
    done
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        # connect fails -> nothing is listening there
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
}

# Every mount below DIR (the kubelet's volumes, containerd's rootfs and netns mounts), deepest first.
unmount_below() {
    local m
    findmnt -rn -o TARGET | grep -F "$1/" | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

write_containerd_config() {
    local dir=$1 c=$1/containerd
    mkdir -p "$c/root" "$c/state" "$c/opt" "$c/certs.d/docker.io" "$c/certs.d/registry.k8s.io" "$dir/cni/net.d" "$dir/cni/ipam"
    # No registry is reachable from the sandbox: a pull fails at once on a closed loopback port
    # (port 9, discard) instead of trying the internet.
    local r
    for r in docker.io registry.k8s.io; do
        printf 'server = "http://127.0.0.1:9"\n' >"$c/certs.d/$r/hosts.toml"
    done
    cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$c/containerd.sock"

[ttrpc]
  address = "$c/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_REF"
  # root here may not lower oom_score_adj: without this runc fails with "can't get final
  # child's PID from pipe"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
EOF
    cat >"$dir/cni/net.d/10-slipway.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "slipway-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "slipway-cni0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET"}]],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {"type": "loopback"}
  ]
}
EOF
}

# The kubelet's client certificate (CN=system:node:NAME, O=system:nodes: the Node authorizer lets
# it see its own Pods and their Secrets and tokens), signed by the control plane's CA.
kubelet_credentials() {
    local dir=$1 cp=$2 pki=$1/pki
    mkdir -p "$pki"
    (
        cd "$pki"
        umask 077
        cat >ext.cnf <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out kubelet.key 2>/dev/null
        openssl req -new -key kubelet.key -subj "/O=system:nodes/CN=system:node:$NODE_NAME" -out kubelet.csr 2>/dev/null
        openssl x509 -req -in kubelet.csr -CA "$cp/pki/ca.crt" -CAkey "$cp/pki/ca.key" -CAcreateserial \
            -CAserial "$pki/ca.srl" -sha256 -days 365 -extfile ext.cnf -out kubelet.crt 2>/dev/null
    ) || die "could not sign the kubelet's client certificate"
    local server
    server=$(sed -n 's/^SLIPWAY_APISERVER=//p' "$cp/env")
    cat >"$dir/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slipway-e2e
  cluster:
    server: $server
    certificate-authority: $cp/pki/ca.crt
users:
- name: system:node:$NODE_NAME
  user:
    client-certificate: $pki/kubelet.crt
    client-key: $pki/kubelet.key
contexts:
- name: node
  context: {cluster: slipway-e2e, user: "system:node:$NODE_NAME"}
current-context: node
EOF
    chmod 600 "$dir/kubelet.kubeconfig"
}

write_kubelet_config() {
    local dir=$1 cp=$2 port=$3 healthz=$4
    cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The host may have cgroup v1 (kept working by this, until Kubernetes drops it).
failCgroupV1: false
# containerd 1.6 has no RuntimeConfig call to tell the kubelet its cgroup driver: say it here.
cgroupDriver: cgroupfs
# Everything the kubelet creates in the cgroup tree, below one root of ours.
cgroupRoot: /slipway-node
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
imageServiceEndpoint: unix://$dir/containerd/containerd.sock
# Served on the loopback only, to clients with a certificate from the sandbox's CA.
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $cp/pki/ca.crt}
authorization: {mode: AlwaysAllow}
podLogsDir: $dir/pod-logs
volumePluginDir: $dir/kubelet/volume-plugins
registerNode: true
failSwapOn: false
# A test machine, not a production node: no evictions or image GC for a full disk.
evictionHard: {memory.available: 50Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Status updates soon after a change (start-up and readiness latency of the tests).
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
serializeImagePulls: false
resolvConf: /etc/resolv.conf
EOF
}

node_ready() {
    local kc=$1
    [[ $("$BIN_DIR/kubectl" --kubeconfig "$kc" get node "$NODE_NAME" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints}' 2>/dev/null) == "True " ]]
}

cmd_start() {
    local dir cp admin t0
    t0=${EPOCHREALTIME/./}
    dir=$(resolve_dir "${1:-}")
    cp=$SANDBOX/control-plane
    [[ -f $cp/env ]] || die "no control plane at $cp: start the sandbox first (e2e/scripts/up.sh)"
    ((EUID == 0)) || die "the kubelet and containerd need root"
    local b
    for b in kubelet kube-scheduler kube-controller-manager kubectl; do
        [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing: run e2e/scripts/node.sh build"
    done
    [[ -s $PAUSE_TAR ]] || die "the pause image is not built: run e2e/scripts/node.sh build"
    command -v containerd >/dev/null && command -v ctr >/dev/null ||
        die "containerd is missing (apt-get install docker.io; e2e/scripts/deps.sh does)"
    [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local ]] ||
        die "CNI plugins are missing in $CNI_BIN_DIR (apt-get install containernetworking-plugins; e2e/scripts/deps.sh does)"
    cmd_stop "$dir" >/dev/null 2>&1 || true
    rm -rf --one-file-system "$dir"
    mkdir -p "$dir/logs" "$dir/kubelet" "$dir/pod-logs"
    admin=$cp/admin.kubeconfig

    # scheduler and controller-manager, as the sandbox's admin (system:masters), serving nothing
    launch kube-scheduler "$dir" "$BIN_DIR/kube-scheduler" --kubeconfig="$admin" \
        --authentication-kubeconfig="$admin" --authorization-kubeconfig="$admin" \
        --leader-elect=false --bind-address=127.0.0.1 --secure-port="$(free_port)" --cert-dir="$dir/scheduler-certs" --v=1
    launch kube-controller-manager "$dir" "$BIN_DIR/kube-controller-manager" --kubeconfig="$admin" \
        --authentication-kubeconfig="$admin" --authorization-kubeconfig="$admin" \
        --leader-elect=false --bind-address=127.0.0.1 --secure-port="$(free_port)" --cert-dir="$dir/kcm-certs" \
        --root-ca-file="$cp/pki/ca.crt" --service-account-private-key-file="$cp/pki/sa.key" \
        --use-service-account-credentials=false --controllers='*' --flex-volume-plugin-dir="$dir/kcm-flexvolume" --v=1

    write_containerd_config "$dir"
    launch containerd "$dir" containerd --config "$dir/containerd/config.toml"
    local ctr=(ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io)
    await "containerd answering" "$TIMEOUT" containerd "$dir" "${ctr[@]}" version
    "${ctr[@]}" images import "$PAUSE_TAR" >/dev/null || die "importing the pause image into containerd failed"
    phase "containerd up, pause image imported"

    # The kubelet's cgroup root, in every cgroup v1 hierarchy (a new cpuset starts empty: give it
    # its parent's CPUs and memory nodes). On cgroup v2 the kubelet creates it itself.
    local h
    for h in /sys/fs/cgroup/*/; do
        [[ -f $h/cgroup.procs && ! -f /sys/fs/cgroup/cgroup.controllers && $h != */unified/ ]] || continue
        mkdir -p "$h/slipway-node"
        if [[ -f $h/cpuset.cpus ]]; then
            cat "$h/cpuset.cpus" >"$h/slipway-node/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h/slipway-node/cpuset.mems"
        fi
    done
    kubelet_credentials "$dir" "$cp"
    write_kubelet_config "$dir" "$cp" "$(free_port)" "$(free_port)"
    launch kubelet "$dir" "$BIN_DIR/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
        --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" --hostname-override="$NODE_NAME" --v=1
    await "Node $NODE_NAME Ready and untainted" "$TIMEOUT" kubelet "$dir" node_ready "$admin"
    {
        echo "SLIPWAY_NODE_NAME=$NODE_NAME"
        echo "SLIPWAY_NODE_DIR=$dir"
        echo "SLIPWAY_CONTAINERD_ADDRESS=$dir/containerd/containerd.sock"
    } >"$dir/env"
    local now=${EPOCHREALTIME/./}
    printf '[node] Node %s Ready (%d.%01ds since start)\n' "$NODE_NAME" $(((now - t0) / 1000000)) $(((now - t0) / 100000 % 10)) >&2
}

cmd_import_image() {
    local ref=${1:?usage: node.sh import-image REF [DIR]} dir
    dir=$(resolve_dir "${2:-}")
    [[ -S $dir/containerd/containerd.sock ]] || die "no node in $dir (node.sh start)"
    docker save "$ref" | ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io images import - >/dev/null ||
        die "importing $ref into the node's containerd failed"
    phase "imported $ref into the node's containerd"
}

cmd_stop() {
    set +e # best effort: go on past whatever is gone already
    local dir=${1:-$SANDBOX/node}
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P)
    local sock=$dir/containerd/containerd.sock
    # The kubelet first (it would restart what we stop), then every container of every Pod.
    stop_pid kubelet "$dir"
    if pid_of containerd "$dir" >/dev/null; then
        local ctr=(ctr --address "$sock" --namespace k8s.io) id
        for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
            "${ctr[@]}" tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
        done
        for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
            timeout 10 "${ctr[@]}" tasks delete --force "$id" >/dev/null 2>&1 || true
        done
    fi
    stop_pid containerd "$dir"
    # What a dead containerd left: the processes in the kubelet's cgroups (containers), and the
    # shims, whose command line names our socket.
    local pid f
    for f in /sys/fs/cgroup/*/slipway-node; do
        [[ -d $f ]] || continue
        find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r pid; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        break
    done
    for f in /proc/[0-9]*/cmdline; do
        [[ $({ tr '\0' ' ' <"$f"; } 2>/dev/null) == *"-address $sock "* ]] || continue
        pid=${f#/proc/}
        kill -KILL "${pid%/cmdline}" 2>/dev/null || true
    done
    stop_pid kube-controller-manager "$dir"
    stop_pid kube-scheduler "$dir"
    unmount_below "$dir"
    # The kubelet links container logs in /var/log/containers; drop the links into our Pods' logs.
    if [[ -d /var/log/containers ]]; then
        find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
    fi
    # The cgroups it made (empty once the containers are gone), deepest first.
    local d
    for d in /sys/fs/cgroup/*/slipway-node /sys/fs/cgroup/slipway-node; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    ip link delete slipway-cni0 2>/dev/null || true
    # The one path the kubelet does not take from its root dir: the device plugins' registration
    # socket. Removed with its directories when nothing else is in them.
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null
    # CNI's cached results of our network's Pod sandboxes (left when they were killed, not removed)
    local r id
    for r in /var/lib/cni/results/slipway-pods-*; do
        [[ -f $r ]] || continue
        id=${r#/var/lib/cni/results/slipway-pods-}
        id=${id%%-*}
        rm -f "$r" "/var/lib/cni/results/cni-loopback-$id-lo"
    done
    rm -f "$dir/env"
    phase "stopped the node in $dir"
}

case ${1:-} in
build) cmd_build ;;
start) cmd_start "${2:-}" ;;
import-image) cmd_import_image "${2:-}" "${3:-}" ;;
stop) cmd_stop "${2:-}" ;;
*) die "usage: node.sh build | start [DIR] | import-image REF [DIR] | stop [DIR]" ;;
esac
