#!/usr/bin/env bash
# compose-v2.sh - the docker compose v2 CLI plugin for the sandbox's compose-v2 test host.
#
# Built from the Go module github.com/docker/compose/v2 (COMPOSE_VERSION) through the module proxy
# and cached outside the repo, like the control plane (control-plane.sh):
#
#   compose-v2.sh build   build (or reuse) $SLIPWAY_CACHE/bin/docker-compose-v2 (+ version stamp)
#   compose-v2.sh path    print the cached plugin's path; exit 1 if it is not built (or is stale)
#
# hosts.sh installs it as $SLIPWAY_SANDBOX/hosts/hostN/docker-config/cli-plugins/docker-compose on
# the highest-numbered host (N >= 3), so `docker compose` works over SSH on that host only.
# v2.29.7 builds with Go 1.26 and works against Debian 12's dockerd 20.10 (API 1.41): the e2e
# tests drive it through the Docker 28 CLI in /usr/local/bin (first on the deploy user's PATH);
# Debian's 20.10 CLI (/usr/bin/docker) runs it as a plugin too.
#
# Output: quiet unless failing; one line per phase on stderr, with its seconds.
set -euo pipefail

COMPOSE_VERSION=${SLIPWAY_COMPOSE_VERSION:-v2.29.7}
MODULE=github.com/docker/compose/v2
# Bump when the build recipe (flags, ldflags, layout) changes, so the cached binary gets rebuilt.
RECIPE=1

SLIPWAY_CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
BIN_DIR=$SLIPWAY_CACHE/bin
BUILD_ROOT=$SLIPWAY_CACHE/build
LOG_DIR=$SLIPWAY_CACHE/logs
NAME=docker-compose-v2
BIN=$BIN_DIR/$NAME
STAMP=$BIN_DIR/.$NAME.stamp

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=compose-v2
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stamp_key() { echo "recipe=$RECIPE $NAME $MODULE@$COMPOSE_VERSION"; }

is_built() { [[ -x $BIN && -f $STAMP && $(<"$STAMP") == "$(stamp_key)" ]]; }

find_go() {
    if command -v go >/dev/null 2>&1; then GO=$(command -v go)
    elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
    else die "the Go toolchain is needed to build compose v2 (looked in PATH and /usr/local/go/bin)"
    fi
}

# A throwaway main module requiring compose; its package .../cmd is the plugin's main package.
# (compose's go.mod has no replace directives, so the build list is the same as upstream's.)
prepare() { # -> $dir
    local json gomod
    dir=$BUILD_ROOT/compose-$COMPOSE_VERSION
    mkdir -p "$dir"
    if [[ ! -f $dir/.prepared ]]; then
        json=$(cd "$BUILD_ROOT" && env GOFLAGS= GOWORK=off "$GO" mod download -json "$MODULE@$COMPOSE_VERSION") ||
            die "go mod download $MODULE@$COMPOSE_VERSION failed: $json"
        gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json" | head -n1)
        [[ -f $gomod ]] || die "could not find go.mod of $MODULE@$COMPOSE_VERSION"
        printf 'module slipway.local/build/compose\n\ngo %s\n\nrequire %s %s\n' \
            "$(awk '$1 == "go" { print $2; exit }' "$gomod")" "$MODULE" "$COMPOSE_VERSION" >"$dir/go.mod"
        : >"$dir/go.sum"
        touch "$dir/.prepared"
        phase "module $MODULE@$COMPOSE_VERSION downloaded"
    fi
}

cmd_build() {
    if is_built; then phase "cached: $BIN ($COMPOSE_VERSION)"; return 0; fi
    find_go
    mkdir -p "$BIN_DIR" "$BUILD_ROOT" "$LOG_DIR"
    # one Go build at a time per cache (shared with control-plane.sh)
    exec 9>"$SLIPWAY_CACHE/.build.lock"
    flock 9
    if is_built; then exec 9>&-; phase "cached: $BIN ($COMPOSE_VERSION)"; return 0; fi
    local dir log=$LOG_DIR/build-$NAME.log
    prepare
    local ld="-s -w -X $MODULE/internal.Version=$COMPOSE_VERSION"
    if ! (cd "$dir" && env GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 "$GO" build -p 2 -trimpath \
        -ldflags="$ld" -o "$BIN_DIR/.$NAME.tmp" "$MODULE/cmd") >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        die "building $MODULE/cmd failed; full log: $log"
    fi
    # the plugin handshake the docker CLI does: must name itself and report the pinned version
    local meta
    meta=$("$BIN_DIR/.$NAME.tmp" docker-cli-plugin-metadata) || die "the built plugin does not run"
    [[ $meta == *'"Version": "'"$COMPOSE_VERSION"'"'* || $meta == *'"Version":"'"$COMPOSE_VERSION"'"'* ]] ||
        die "the built plugin reports unexpected metadata: $meta"
    mv -f "$BIN_DIR/.$NAME.tmp" "$BIN"
    stamp_key >"$STAMP"
    exec 9>&-
    phase "built $BIN ($MODULE@$COMPOSE_VERSION)"
}

case ${1:-} in
build) cmd_build ;;
path) is_built && echo "$BIN" ;;
*) echo "usage: $0 build | path" >&2; exit 2 ;;
esac
