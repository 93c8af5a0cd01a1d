#!/usr/bin/env bash
# Test "compose hosts" for the e2e tests: N private sshd instances on this machine, all logging in
# the one deploy user `slipway` (shell /bin/sh, member of group docker, home /home/slipway) with an
# ed25519 client key, each with its own host key, on its own loopback address.
#
#   hosts.sh start N   create the user and keys once; start sshd for host1..hostN (stop any hostM,
#                      M > N, left from a bigger run); write the env files; verify each host.
#   hosts.sh stop      stop every sshd started here (the user, keys and env files stay).
#
# Host i listens on 127.0.0.$((10+i)):$((2200+i)) (SLIPWAY_HOST_ADDR_BASE / SLIPWAY_HOST_PORT_BASE
# change the 10 / 2200). Files, under $SLIPWAY_SANDBOX/hosts (default /tmp/slipway-sandbox/hosts):
#   id_ed25519, id_ed25519.pub            client key (root-owned; the tests use it)
#   known_hosts                           all hosts' keys, `[addr]:port ssh-ed25519 ...`
#   env                                   SLIPWAY_HOSTS (count), SLIPWAY_HOSTS_DIR, SLIPWAY_HOST_USER,
#                                         SLIPWAY_HOST_KEY, SLIPWAY_KNOWN_HOSTS
#   host$i/env                            SLIPWAY_HOST_NAME, SLIPWAY_HOST_ADDR, SLIPWAY_HOST_PORT,
#                                         SLIPWAY_HOST_USER, SLIPWAY_HOST_KEY, SLIPWAY_HOST_KNOWN_HOSTS,
#                                         SLIPWAY_HOST_COMPOSE (v1 or v2)
#   host$i/{sshd_config,ssh_host_ed25519_key{,.pub},known_hosts,sshd.pid,sshd.log}
#   host$N/docker-config/cli-plugins/docker-compose   (the compose v2 host only, see below)
# Compose: every host has docker-compose v1 (Debian's 1.29.2). When N >= 3, the highest-numbered
# host is a compose v2 host too: the plugin built by `compose-v2.sh build` sits in its own
# DOCKER_CONFIG directory, which its sshd sets for every session (SetEnv), so `docker compose`
# works there and nowhere else (if the plugin is not built, that host stays v1 and says so). The
# deploy user's PATH over ssh (sshd's default /usr/local/bin:/usr/bin:/bin:/usr/games) picks
# /usr/local/bin/docker where present, else Debian's /usr/bin/docker: both run the plugin.
# The env files are KEY=VALUE lines, sourceable by sh. Usage from a client:
#   . host1/env; ssh -o UserKnownHostsFile=$SLIPWAY_HOST_KNOWN_HOSTS -o StrictHostKeyChecking=yes \
#       -i $SLIPWAY_HOST_KEY -p $SLIPWAY_HOST_PORT $SLIPWAY_HOST_USER@$SLIPWAY_HOST_ADDR docker ps
# If $SLIPWAY_SANDBOX/origin/shop.git exists (fixture-repo.sh), the deploy user's clone of it over
# file:// is verified too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-sandbox}
DIR=$SANDBOX/hosts
USER_NAME=slipway
USER_HOME=/home/$USER_NAME
ADDR_BASE=${SLIPWAY_HOST_ADDR_BASE:-10}
PORT_BASE=${SLIPWAY_HOST_PORT_BASE:-2200}
KEY=$DIR/id_ed25519
SSHD=/usr/sbin/sshd # sshd must be started by absolute path (it re-executes itself)

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=hosts
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


host_addr() { echo "127.0.0.$((ADDR_BASE + $1))"; }
host_port() { echo "$((PORT_BASE + $1))"; }

alive_sshd() { # alive_sshd PIDFILE: prints the pid if it is a running sshd
    [[ -s $1 ]] || return 1
    local pid
    pid=$(<"$1")
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == sshd ]] || return 1
    echo "$pid"
}

# Listener sshd processes started from a config under PREFIX, found by their process title
# ("sshd: /usr/sbin/sshd -f PREFIX.../sshd_config -E ... [listener] ..."), so that an sshd whose pid
# file was deleted with the sandbox is still found.
listeners() { # listeners PREFIX
    local p title
    for p in /proc/[0-9]*; do
        [[ -r $p/comm && $(<"$p/comm") == sshd ]] 2>/dev/null || continue
        title=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ $title == *"$SSHD -f $1"*"sshd_config "*"[listener]"* ]] && echo "${p#/proc/}"
    done
    return 0
}

kill_wait() { # kill_wait PID...
    local pid n
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        n=0
        while kill -0 "$pid" 2>/dev/null && ((n++ < 50)); do sleep 0.1; done
    done
}

stop_host() { # stop_host DIR
    local pids
    pids=$( (alive_sshd "$1/sshd.pid" || true; listeners "$1/") | sort -u)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill_wait $pids
    rm -f "$1/sshd.pid"
}

setup_user() {
    getent group docker >/dev/null || groupadd --system docker
    if ! getent passwd "$USER_NAME" >/dev/null; then
        local skel
        skel=$(mktemp -d) # empty skeleton: no .profile/.bashrc to source
        useradd --create-home --home-dir "$USER_HOME" --skel "$skel" --shell /bin/sh \
            --groups docker --comment "Slipway deploy user" "$USER_NAME"
        rmdir "$skel"
    fi
    id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "$USER_NAME"
    # no password, but not "locked" either (a locked account may not log in even with a key)
    [[ $(getent shadow "$USER_NAME" | cut -d: -f2) == '*' ]] || usermod -p '*' "$USER_NAME"
    # a socket created before the group existed belongs to root:root
    if [[ -S /var/run/docker.sock && $(stat -c %G /var/run/docker.sock) != docker ]]; then
        chgrp docker /var/run/docker.sock && chmod 660 /var/run/docker.sock
    fi

    mkdir -p "$DIR"
    chmod 755 "$SANDBOX" "$DIR"
    [[ -s $KEY ]] || ssh-keygen -q -t ed25519 -N '' -C "slipway-e2e" -f "$KEY"
    install -d -o "$USER_NAME" -g "$USER_NAME" -m 0700 "$USER_HOME/.ssh"
    # The fixture origin (fixture-repo.sh) is a bare repository owned by root, cloned over file://:
    # git >= 2.35.2 refuses that ("dubious ownership") unless the cloning user trusts it. The test
    # deploy user trusts every local repository; on real hosts origins are remote and unaffected.
    local gc=$USER_HOME/.gitconfig
    if ! git config --file "$gc" --get-all safe.directory 2>/dev/null | grep -qxF '*'; then
        git config --file "$gc" --add safe.directory '*'
        chown "$USER_NAME:$USER_NAME" "$gc"
    fi
    # add (never replace) our key: sandboxes with other SLIPWAY_SANDBOX values share this user
    local ak=$USER_HOME/.ssh/authorized_keys pub
    pub=$(cut -d' ' -f1,2 "$KEY.pub")
    # (a stale key of this same sandbox, from before it was wiped, is replaced)
    if ! grep -qxF "$pub slipway-e2e:$SANDBOX" "$ak" 2>/dev/null; then
        { grep -vF " slipway-e2e:$SANDBOX" "$ak" 2>/dev/null || true; echo "$pub slipway-e2e:$SANDBOX"; } >"$ak.new"
        mv "$ak.new" "$ak"
    fi
    chown "$USER_NAME:$USER_NAME" "$ak"
    chmod 0600 "$ak"
}

write_config() { # write_config I HOSTDIR [DOCKER_CONFIG]
    local i=$1 hd=$2
    cat >"$hd/sshd_config.new" <<EOF
# sshd for the Slipway e2e test host host$i (generated by e2e/scripts/hosts.sh)
ListenAddress $(host_addr "$i"):$(host_port "$i")
HostKey $hd/ssh_host_ed25519_key
PidFile $hd/sshd.pid
LogLevel VERBOSE
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
AllowUsers $USER_NAME
StrictModes yes
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
# port forwards (HTTP checks) and Unix socket forwards (docker.sock) over the master connection
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
# one multiplexed master connection carries many sessions
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 15
ClientAliveCountMax 4
Subsystem sftp internal-sftp
EOF
    [[ -z ${3:-} ]] || printf '# the compose v2 host: its own docker CLI config, with the compose plugin\nSetEnv DOCKER_CONFIG=%s\n' \
        "$3" >>"$hd/sshd_config.new"
    if cmp -s "$hd/sshd_config.new" "$hd/sshd_config"; then
        rm -f "$hd/sshd_config.new"
        return 1 # unchanged
    fi
    mv "$hd/sshd_config.new" "$hd/sshd_config"
}

start_host() { # start_host I N
    local i=$1 hd=$DIR/host$1 addr port changed=0 compose=v1 dc='' plugin
    addr=$(host_addr "$i")
    port=$(host_port "$i")
    mkdir -p "$hd"
    [[ -s $hd/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C "host$i" -f "$hd/ssh_host_ed25519_key"
    if ((i == $2 && i >= 3)); then
        if plugin=$("$HERE/compose-v2.sh" path); then
            compose=v2 dc=$hd/docker-config
            # owned by the deploy user: compose's builder keeps its state in there (buildx/)
            install -d -o "$USER_NAME" -g "$USER_NAME" -m 0755 "$dc"
            install -d -m 0755 "$dc/cli-plugins"
            cmp -s "$plugin" "$dc/cli-plugins/docker-compose" || install -m 0755 "$plugin" "$dc/cli-plugins/docker-compose"
        else
            phase "host$i: the compose v2 plugin is not built (e2e/scripts/compose-v2.sh build): host$i stays a compose v1 host"
        fi
    fi
    [[ $compose == v2 ]] || rm -rf "$hd/docker-config"
    write_config "$i" "$hd" "$dc" && changed=1
    printf '[%s]:%s %s\n' "$addr" "$port" "$(cut -d' ' -f1,2 "$hd/ssh_host_ed25519_key.pub")" >"$hd/known_hosts"
    cat >"$hd/env" <<EOF
SLIPWAY_HOST_NAME=host$i
SLIPWAY_HOST_ADDR=$addr
SLIPWAY_HOST_PORT=$port
SLIPWAY_HOST_USER=$USER_NAME
SLIPWAY_HOST_KEY=$KEY
SLIPWAY_HOST_KNOWN_HOSTS=$hd/known_hosts
SLIPWAY_HOST_COMPOSE=$compose
EOF
    if alive_sshd "$hd/sshd.pid" >/dev/null; then
        ((changed)) || return 0
    fi
    stop_host "$hd" # also an sshd of ours that lost its pid file (sandbox wiped while it ran)
    quiet "$SSHD" -t -f "$hd/sshd_config" || die "invalid sshd config $hd/sshd_config"
    if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
        die "$addr:$port is already taken by another process (set SLIPWAY_HOST_PORT_BASE)"
    fi
    "$SSHD" -f "$hd/sshd_config" -E "$hd/sshd.log" 9>&- || die "sshd for host$i failed to start (log: $hd/sshd.log)"
    local n=0
    until (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; do
        ((n++ < 100)) || die "sshd for host$i not listening on $addr:$port (log: $hd/sshd.log)"
        sleep 0.05
    done
}

ssh_host() { # ssh_host I COMMAND...
    local i=$1
    shift
    ssh -q -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$DIR/host$i/known_hosts" \
        -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o ConnectTimeout=10 \
        -i "$KEY" -p "$(host_port "$i")" "$USER_NAME@$(host_addr "$i")" "$@"
}

verify() { # verify N
    local n=$1 i origin=$SANDBOX/origin/shop.git
    local got want v2hosts=''
    for ((i = 1; i <= n; i++)); do
        [[ $(ssh_host "$i" 'id -un; id -Gn') == "$USER_NAME"*docker* ]] || die "host$i: ssh login or docker group failed"
        # the compose flavor the env file promises: v2 works on the v2 host, and only there
        want=$(sed -n 's/^SLIPWAY_HOST_COMPOSE=//p' "$DIR/host$i/env")
        if ssh_host "$i" 'docker compose version --short' >/dev/null 2>&1; then got=v2; else got=v1; fi
        [[ $got == "$want" ]] || die "host$i should be a compose $want host, but \`docker compose\` $([[ $got == v2 ]] && echo works || echo fails) there"
        [[ $got == v1 ]] || v2hosts+=" host$i"
    done
    quiet ssh_host 1 'docker ps -q >/dev/null && docker-compose version --short >/dev/null' ||
        die "host1: the deploy user cannot run docker / docker-compose"
    if [[ -d $origin ]]; then
        quiet ssh_host 1 "set -e; d=\$(mktemp -d); trap 'rm -rf \"\$d\"' EXIT; git clone -q file://$origin \"\$d/shop\"; git -C \"\$d/shop\" rev-parse -q --verify refs/tags/v1.0.0 >/dev/null" ||
            die "host1: the deploy user cannot clone file://$origin"
        phase "verified $n host(s): strict host key ssh, docker, docker-compose, compose v2 host(s):${v2hosts:- none}, git clone file://$origin"
    else
        phase "verified $n host(s): strict host key ssh, docker, docker-compose, compose v2 host(s):${v2hosts:- none} (no $origin yet: clone not checked)"
    fi
}

cmd_start() {
    local n=${1:?usage: $0 start N}
    if ! [[ $n =~ ^[1-9][0-9]{0,2}$ ]] || ((n > 200)); then die "N must be a number from 1 to 200"; fi
    [[ $SANDBOX != *[[:space:]]* ]] || die "SLIPWAY_SANDBOX must not contain white space"
    ensure_pkgs openssh-server openssh-client git
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
    "$HERE/docker.sh" start
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    setup_user
    phase "deploy user $USER_NAME and client key ready"
    local i hd
    for ((i = 1; i <= n; i++)); do start_host "$i" "$n"; done
    # hosts beyond N from an earlier, bigger run
    for hd in "$DIR"/host*; do
        [[ -d $hd ]] || continue
        i=${hd##*/host}
        if [[ $i =~ ^[0-9]+$ ]] && ((i > n)); then
            stop_host "$hd"
            rm -rf "$hd"
        fi
    done
    cat "$DIR"/host*/known_hosts >"$DIR/known_hosts"
    cat >"$DIR/env" <<EOF
SLIPWAY_HOSTS=$n
SLIPWAY_HOSTS_DIR=$DIR
SLIPWAY_HOST_USER=$USER_NAME
SLIPWAY_HOST_KEY=$KEY
SLIPWAY_KNOWN_HOSTS=$DIR/known_hosts
EOF
    phase "sshd running for $n host(s) on $(host_addr 1):$(host_port 1) .. $(host_addr "$n"):$(host_port "$n")"
    verify "$n"
}

cmd_stop() {
    local pids
    pids=$( (for f in "$DIR"/host*/sshd.pid; do alive_sshd "$f" || true; done; listeners "$DIR/host") | sort -u)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill_wait $pids
    rm -f "$DIR"/host*/sshd.pid
    phase "stopped $(wc -w <<<"$pids") sshd instance(s)"
}

case ${1:-} in
start) cmd_start "${2:-}" ;;
stop) cmd_stop ;;
*) echo "usage: $0 start N | stop" >&2; exit 2 ;;
esac
