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

# The Debian mirror apt uses on this machine for $SUITE (first one-line or deb822 source), or
# $SLIPWAY_DEBIAN_MIRROR; for debootstrap (images.sh, controller-image.sh).
debian_mirror() {
    if [[ -n ${SLIPWAY_DEBIAN_MIRROR:-} ]]; then
        echo "$SLIPWAY_DEBIAN_MIRROR"
        return
    fi
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk -v suite="$SUITE" '
            $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                          if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # deb822 stanzas are separated by blank lines
        awk -v suite="$SUITE" '
            function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "" && !enabled_no) { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = ""; enabled_no = 0 }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:" { $1 = ""; types = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            tolower($1) == "uris:" { $1 = ""; uris = $0 }
            tolower($1) == "enabled:" && tolower($2) == "no" { enabled_no = 1 }
            END { if (!found) flush() }' "$f"
    done
}

# Removes a debootstrap work dir: debootstrap mounts proc/sys (and may bind /dev) inside it.
cleanup_build() {
    local work=$1 m
    [[ -d $work ]] || return 0
    # deepest mounts first
    for m in $(findmnt -rn -o TARGET | grep -F "$work/" | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work" "$TARBALL.partial"
}
