#!/usr/bin/env bash
# Make a Docker engine (plus docker-compose v1) available for the e2e tests.
#
#   docker.sh start   install docker.io + docker-compose if missing; if `docker info` fails, start
#                     dockerd in the background (log: $SLIPWAY_SANDBOX/dockerd.log, pid file:
#                     $SLIPWAY_SANDBOX/dockerd.pid) and wait until it answers; then check once per
#                     daemon instance that compose networking works (service-name DNS between
#                     containers, host -> container IP). If it does not and this script started
#                     dockerd, restart it once with --iptables=false --ip-masq=false and check again.
#   docker.sh stop    stop the dockerd this script started (never one started by someone else).
#   docker.sh check   run the networking check only.
#
# Environment: SLIPWAY_SANDBOX (default /tmp/slipway-sandbox), SLIPWAY_DOCKERD_ARGS (extra dockerd
# arguments, word-split), SLIPWAY_DOCKER_TIMEOUT (seconds to wait for the daemon, default 60).
#
# Why the iptables fallback: dockerd programs NAT/filter rules with iptables. On hosts whose kernel
# lacks nf_tables/ip_tables support (some VMs, nested containers) dockerd either refuses to start or
# containers on a compose network cannot reach each other. Nothing here needs NAT (no published
# ports, no outbound traffic from containers), and containers on one bridge talk at layer 2, so
# --iptables=false --ip-masq=false is a safe fallback. On the machine this was written on
# (Debian 12, iptables 1.8.9 nf_tables backend) the default mode works and no fallback is used.
set -euo pipefail

SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
PIDFILE=$SANDBOX/dockerd.pid
LOG=$SANDBOX/dockerd.log
ARGSFILE=$SANDBOX/dockerd.args
NETOK=$SANDBOX/docker-netcheck.ok
TIMEOUT=${SLIPWAY_DOCKER_TIMEOUT:-60}

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=docker
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


our_pid() { # prints the pid of the dockerd we started, if it is still alive
    [[ -s $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == dockerd ]] || return 1
    echo "$pid"
}

start_dockerd() { # start_dockerd EXTRA_ARGS...
    mkdir -p "$SANDBOX"
    # a stale pid file from a killed daemon makes dockerd refuse to start
    if [[ -s /var/run/docker.pid ]] && ! kill -0 "$(</var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    # Docker's default address pools hold 31 networks, one per compose project: benchmark P3
    # (N=20 and 50, a project for Slipway and one for the plain script per host) ran out of them
    # ("could not find an available, non-overlapping IPv4 address pool"). 4,096 /24s from a
    # range no sandbox address uses (the node's pods 10.88.0.0/24, services 10.96.0.0/16).
    local args=(--default-address-pool base=10.208.0.0/12,size=24)
    # shellcheck disable=SC2206 # word splitting of user-supplied extra args is intended
    [[ -n ${SLIPWAY_DOCKERD_ARGS:-} ]] && args+=($SLIPWAY_DOCKERD_ARGS)
    args+=("$@")
    printf '%s\n' "${args[*]:-}" >"$ARGSFILE"
    # With --iptables=false nothing adds ACCEPT rules for new bridges, so a FORWARD policy DROP (as
    # left by any earlier dockerd with iptables) drops the packets between two containers of one
    # compose network whenever br_netfilter hands bridged traffic to iptables (seen here: the
    # compose network check timed out). Stop handing bridged traffic to iptables.
    if [[ " ${args[*]:-} " == *" --iptables=false "* && -w /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
        echo 0 >/proc/sys/net/bridge/bridge-nf-call-iptables
    fi
    local attempt=1 logged
    while :; do
        logged=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
        # 9>&-: the daemon must not inherit (and so hold forever) the start lock
        setsid dockerd "${args[@]}" >>"$LOG" 2>&1 </dev/null 9>&- &
        echo $! >"$PIDFILE"
        local alive=1 i
        for i in $(seq 1 50); do # the panic comes early: up to 10 s for an answer or an exit
            docker info >/dev/null 2>&1 && break
            kill -0 "$(<"$PIDFILE")" 2>/dev/null || { alive=0; break; }
            sleep 0.2
        done
        ((alive)) && break
        # A daemon killed mid-write (a test run interrupted) can leave libnetwork's state store
        # unreadable, and dockerd 20.10 then panics at every start. The store is a cache of
        # network state that dockerd rebuilds: set it aside once and start again.
        local kv=/var/lib/docker/network/files/local-kv.db
        if ((attempt == 1)) && [[ -e $kv ]]; then
            tail -c +"$((logged + 1))" "$LOG" | tail -n 5 >&2
            phase "dockerd exited at start-up; setting its network state store aside ($kv.broken) and starting again"
            mv -f "$kv" "$kv.broken"
            attempt=2
            continue
        fi
        break
    done
    local deadline=$((SECONDS + TIMEOUT))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$(<"$PIDFILE")" 2>/dev/null; then
            tail -n 20 "$LOG" >&2
            die "dockerd exited during start-up (log: $LOG)"
        fi
        ((SECONDS < deadline)) || { tail -n 20 "$LOG" >&2; die "dockerd not ready after ${TIMEOUT}s (log: $LOG)"; }
        sleep 0.2
    done
    phase "dockerd started (pid $(<"$PIDFILE"), args: ${args[*]:-none})"
}

stop_dockerd() {
    local pid
    if ! pid=$(our_pid); then
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.2
    done
    rm -f "$PIDFILE" "$NETOK"
    phase "dockerd stopped (pid $pid)"
}

# --- networking check: a compose project with two containers, by service name, plus host -> IP ---
NETIMG=slipway-netcheck:busybox
CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
# A tiny image: Debian's dynamically linked busybox plus the host's libraries it links to. (The
# busybox-static package is no use: its glibc-static wget/nslookup segfault without NSS modules.)
netcheck_image() {
    docker image inspect "$NETIMG" >/dev/null 2>&1 && return 0
    mkdir -p "$CACHE/debs"
    local deb
    deb=$(find "$CACHE/debs" -name 'busybox_*.deb' | head -n 1)
    if [[ -z $deb ]]; then
        (cd "$CACHE/debs" && { apt-get download -qq busybox >/dev/null 2>&1 ||
            { quiet apt-get update -qq && quiet apt-get download -qq busybox; }; })
        deb=$(find "$CACHE/debs" -name 'busybox_*.deb' | head -n 1)
        [[ -n $deb ]] || die "could not download the busybox package"
    fi
    local d lib
    d=$(mktemp -d)
    dpkg-deb -x "$deb" "$d/pkg"
    mkdir -p "$d/root/bin" "$d/root/www" "$d/root/etc"
    cp "$d/pkg/bin/busybox" "$d/root/bin/busybox"
    for lib in $(ldd "$d/pkg/bin/busybox" | grep -o '/[^ ]*'); do
        mkdir -p "$d/root$(dirname "$lib")"
        cp -L "$lib" "$d/root$lib"
    done
    for a in sh httpd wget nc nslookup sleep cat; do ln -s busybox "$d/root/bin/$a"; done
    echo ok >"$d/root/www/ok"
    tar -C "$d/root" -c . | quiet docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$NETIMG"
    rm -rf "$d"
}

netcheck() {
    netcheck_image
    local d proj rc=0 ip
    d=$(mktemp -d)
    proj=slipwaynetcheck$$
    cat >"$d/docker-compose.yml" <<EOF
version: "3.9"
services:
  server:
    image: $NETIMG
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
  client:
    image: $NETIMG
    command: ["sleep", "600"]
EOF
    (
        cd "$d"
        quiet docker-compose -p "$proj" up -d || exit 1
        # service-name DNS through docker's embedded resolver, container -> container over the bridge
        # (busybox nc: Debian's busybox wget segfaults on this kernel, nc does not)
        local i
        for i in $(seq 1 20); do
            docker-compose -p "$proj" exec -T client sh -c 'printf "GET /ok HTTP/1.0\r\n\r\n" | nc -w 2 server 8080' 2>/dev/null |
                grep -qx ok && break
            ((i < 20)) || { echo "[docker] container -> container (server:8080) failed" >&2; exit 1; }
            sleep 0.5
        done
        # host -> container IP (what SSH-forwarded health checks use)
        ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(docker-compose -p "$proj" ps -q server)") || exit 1
        timeout 5 bash -c "exec 3<>/dev/tcp/$ip/8080" || { echo "[docker] host -> $ip:8080 failed" >&2; exit 1; }
    ) || rc=$?   # NB: errexit is off inside a `( ) ||` list, hence the explicit exits
    (cd "$d" && docker-compose -p "$proj" down -v -t 1 >/dev/null 2>&1) || true
    rm -rf "$d"
    return $rc
}

cmd_start() {
    ensure_pkgs docker.io docker-compose
    mkdir -p "$SANDBOX"
    # one engine per machine, whatever the sandbox: serialise concurrent starts
    exec 9>"$(if [[ -d /run/lock ]]; then echo /run/lock; else echo /tmp; fi)/slipway-docker.lock"
    flock 9
    if ! docker info >/dev/null 2>&1; then
        start_dockerd
    fi
    local daemon
    daemon=$(pidof dockerd || echo unknown)
    if [[ -f $NETOK && $(<"$NETOK") == "$daemon" ]]; then
        return 0
    fi
    if netcheck; then
        echo "$daemon" >"$NETOK"
        phase "compose networking ok"
        return 0
    fi
    if our_pid >/dev/null && ! grep -q -- '--iptables=false' "$ARGSFILE" 2>/dev/null; then
        phase "compose networking failed; restarting dockerd with --iptables=false"
        stop_dockerd
        start_dockerd --iptables=false --ip-masq=false
        daemon=$(pidof dockerd || echo unknown)
        netcheck || die "compose networking still broken with --iptables=false (log: $LOG)"
        echo "$daemon" >"$NETOK"
        phase "compose networking ok (iptables disabled)"
        return 0
    fi
    die "compose networking between containers does not work on this Docker engine"
}

case ${1:-} in
start) cmd_start ;;
stop) stop_dockerd ;;
check) netcheck && phase "compose networking ok" ;;
*) echo "usage: $0 start|stop|check" >&2; exit 2 ;;
esac
