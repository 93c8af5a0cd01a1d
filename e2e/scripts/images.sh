#!/usr/bin/env bash
# Build the e2e base image `slipway-base:bookworm` without any image registry: debootstrap a
# minimal Debian bookworm with PostgreSQL 15, the FastAPI/SQLAlchemy/alembic stack and nginx-light,
# tar it, and `docker import` it.
#
# The rootfs tarball is cached in $SLIPWAY_CACHE/rootfs/ under a key derived from suite, variant,
# architecture and package list; the image carries that key as label `dev.slipway.rootfs-key`.
# So: image present with the right key -> nothing to do (about a second); tarball cached -> only
# re-import; otherwise debootstrap from the Debian mirror configured for apt on this machine
# (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list|*.sources), or $SLIPWAY_DEBIAN_MIRROR.
#
# Needs root (debootstrap) and starts Docker through docker.sh if it is not running.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
IMAGE=slipway-base:bookworm
SUITE=bookworm
VARIANT=minbase
PACKAGES=postgresql,python3-fastapi,python3-uvicorn,python3-alembic,python3-psycopg2,python3-sqlalchemy,nginx-light,curl,ca-certificates
# bump when the post-processing of the rootfs below changes
RECIPE=1

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=images
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ARCH=$(dpkg --print-architecture)
KEY=$(printf '%s\n' "$RECIPE" "$SUITE" "$VARIANT" "$ARCH" "$PACKAGES" | sha256sum | cut -c1-16)
TARBALL=$CACHE/rootfs/slipway-base-$SUITE-$ARCH-$KEY.tar
LABEL=dev.slipway.rootfs-key

# Fast path: the image exists and was imported from this very recipe.
if docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null | grep -qx "$KEY"; then
    phase "$IMAGE is up to date (key $KEY)"
    exit 0
fi

"$HERE/docker.sh" start

# one build at a time per cache (several sandboxes may share this machine)
mkdir -p "$CACHE/rootfs"
exec 9>"$CACHE/rootfs/.lock"
flock 9

build_rootfs() {
    ((EUID == 0)) || die "debootstrap needs root"
    ensure_pkgs debootstrap debian-archive-keyring
    local mirror
    mirror=$(debian_mirror | head -n 1 | sed 's/^ *//')
    [[ -n $mirror ]] || die "no apt source for $SUITE found in /etc/apt (set SLIPWAY_DEBIAN_MIRROR)"
    mkdir -p "$CACHE/rootfs"
    local work
    work=$(mktemp -d "$CACHE/rootfs/build.XXXXXX")
    # debootstrap mounts proc/sys (and may bind /dev) inside the target: unmount before deleting
    # shellcheck disable=SC2064
    trap "cleanup_build '$work'" EXIT
    local dir=$work/rootfs
    if ! quiet debootstrap --variant="$VARIANT" --arch="$ARCH" --include="$PACKAGES" "$SUITE" "$dir" "$mirror"; then
        [[ -f $dir/debootstrap/debootstrap.log ]] && tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    phase "debootstrap $SUITE ($VARIANT, $(tr ',' ' ' <<<"$PACKAGES" | wc -w) extra packages) from $mirror"
    # slim down and make it image-like: no package caches/lists, no default PostgreSQL cluster (the
    # fixture initialises its own data directory on a volume), no host-specific files
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* \
        "$dir"/etc/postgresql/*/main "$dir"/var/lib/postgresql/*/main "$dir"/var/log/*.log \
        "$dir"/tmp/* "$dir"/root/.bash_history
    : >"$dir/etc/hostname"
    rm -f "$dir/etc/resolv.conf"
    printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$dir/etc/apt/sources.list"
    tar --numeric-owner --xattrs -C "$dir" -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    phase "rootfs tarball $(du -m "$TARBALL" | cut -f1) MiB cached at $TARBALL"
    cleanup_build "$work"
    trap - EXIT
}

if docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null | grep -qx "$KEY"; then
    phase "$IMAGE was imported by a concurrent run"
    exit 0
fi
if [[ ! -s $TARBALL ]]; then
    build_rootfs
fi

# remove tarballs of older recipes
find "$CACHE/rootfs" -maxdepth 1 -name "slipway-base-$SUITE-$ARCH-*.tar" ! -name "$(basename "$TARBALL")" -delete

quiet docker import \
    -c "LABEL $LABEL=$KEY" \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    "$TARBALL" "$IMAGE"
phase "imported $IMAGE (key $KEY)"
