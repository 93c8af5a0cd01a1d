# Helpers shared by the sandbox scripts. Set LOG_TAG before sourcing: `LOG_TAG=hosts; . lib.sh`.
# shellcheck shell=bash

_t0=${EPOCHREALTIME/./}
phase() { # one line per phase, with seconds since the previous one
    local now=${EPOCHREALTIME/./}
    printf '[%s] %s (%d.%01ds)\n' "$LOG_TAG" "$1" $(((now - _t0) / 1000000)) $(((now - _t0) / 100000 % 10)) >&2
    _t0=$now
}

die() { echo "[$LOG_TAG] ERROR: $*" >&2; exit 1; }

# quiet CMD...: run CMD without output; on failure show the tail of what it printed
quiet() {
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if ((rc != 0)); then
        printf '[%s] command failed (%d): %s\n%s\n' "$LOG_TAG" "$rc" "$*" "$(tail -n 40 <<<"$out")" >&2
    fi
    return $rc
}

# ensure_pkgs PKG...: apt-get install the Debian packages that are missing. Services the packages
# ship (the system sshd on port 22, the system dockerd) are kept from starting: the sandbox starts
# its own, on loopback only.
ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    quiet apt-get update -qq
    local policy=/usr/sbin/policy-rc.d created='' rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
    fi
    DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    [[ -n $created ]] && rm -f "$policy"
    ((rc == 0)) || return $rc
    phase "installed ${missing[*]}"
}
