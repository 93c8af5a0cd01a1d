#!/usr/bin/env bash
# The controller image, built without any image registry (the Dockerfile at the repository's root
# makes the same image for those who have one: keep the two in step).
#
#   controller-image.sh base        debootstrap (or reuse) the base: Debian bookworm minbase with
#                                   openssh-client, tini and ca-certificates, and a passwd/group
#                                   entry for uid/gid 65532 (OpenSSH refuses to run for a uid
#                                   without one); imported as slipway-controller-base:<key>
#   controller-image.sh image BIN [TAG]
#                                   that base plus BIN (debug info stripped) as
#                                   /usr/local/bin/slipway-controller, tini as PID 1, user
#                                   65532:65532, HOME=/home/slipway; tagged TAG
#                                   (default slipway-controller:dev). Prints the tag.
#
# The rootfs tarball is cached in $SLIPWAY_CACHE/rootfs/ under a key of suite, architecture,
# packages and recipe (second run: about a second); the final image carries the binary's sha256 as
# a label and is rebuilt only when the binary changed. Needs root (debootstrap) and Docker.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
SUITE=bookworm
VARIANT=minbase
PACKAGES=openssh-client,tini,ca-certificates
# bump when the post-processing of the rootfs below changes
RECIPE=1
# The user the chart runs the controller as (securityContext.runAsUser/runAsGroup). Same lines as
# in the Dockerfile.
PASSWD_LINE='slipway:x:65532:65532:Slipway controller:/home/slipway:/usr/sbin/nologin'
GROUP_LINE='slipway:x:65532:'

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=controller-image
# shellcheck source=lib.sh
. "$HERE/lib.sh"

ARCH=$(dpkg --print-architecture)
KEY=$(printf '%s\n' "$RECIPE" "$SUITE" "$VARIANT" "$ARCH" "$PACKAGES" "$PASSWD_LINE" "$GROUP_LINE" | sha256sum | cut -c1-16)
BASE=slipway-controller-base:$KEY
TARBALL=$CACHE/rootfs/slipway-controller-base-$SUITE-$ARCH-$KEY.tar
LABEL=dev.slipway.rootfs-key
BIN_LABEL=dev.slipway.binary-sha256

build_rootfs() {
    ((EUID == 0)) || die "debootstrap needs root"
    ensure_pkgs debootstrap debian-archive-keyring
    local mirror work dir
    mirror=$(debian_mirror | head -n 1 | sed 's/^ *//')
    [[ -n $mirror ]] || die "no apt source for $SUITE found in /etc/apt (set SLIPWAY_DEBIAN_MIRROR)"
    work=$(mktemp -d "$CACHE/rootfs/build.XXXXXX")
    # shellcheck disable=SC2064
    trap "cleanup_build '$work'" EXIT
    dir=$work/rootfs
    if ! quiet debootstrap --variant="$VARIANT" --arch="$ARCH" --include="$PACKAGES" "$SUITE" "$dir" "$mirror"; then
        [[ -f $dir/debootstrap/debootstrap.log ]] && tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    phase "debootstrap $SUITE ($VARIANT + $PACKAGES) from $mirror"
    echo "$PASSWD_LINE" >>"$dir/etc/passwd"
    echo "$GROUP_LINE" >>"$dir/etc/group"
    mkdir -p "$dir/home/slipway"
    chown 65532:65532 "$dir/home/slipway"
    chmod 0700 "$dir/home/slipway"
    # nothing a controller needs: package caches and lists, docs, man pages, locales, apt itself stays
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* \
        "$dir"/var/log/*.log "$dir"/tmp/* "$dir"/root/.bash_history \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
    : >"$dir/etc/hostname"
    rm -f "$dir/etc/resolv.conf"
    tar --numeric-owner --xattrs -C "$dir" -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    phase "rootfs tarball $(du -m "$TARBALL" | cut -f1) MiB cached at $TARBALL"
    cleanup_build "$work"
    trap - EXIT
}

build_base() {
    if docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$BASE" 2>/dev/null | grep -qx "$KEY"; then
        phase "$BASE is up to date"
        return 0
    fi
    "$HERE/docker.sh" start >&2
    mkdir -p "$CACHE/rootfs"
    exec 9>"$CACHE/rootfs/.lock-controller"
    flock 9
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        phase "$BASE was imported by a concurrent run"
        return 0
    fi
    [[ -s $TARBALL ]] || build_rootfs
    find "$CACHE/rootfs" -maxdepth 1 -name "slipway-controller-base-$SUITE-$ARCH-*.tar" ! -name "$(basename "$TARBALL")" -delete
    quiet docker import \
        -c "LABEL $LABEL=$KEY" \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        "$TARBALL" "$BASE"
    phase "imported $BASE"
}

build_image() {
    local bin=$1 tag=$2 sum work container
    [[ -x $bin ]] || die "no controller binary at $bin (cargo build -p slipway-controller)"
    build_base
    # the stripped copy is what goes in; the label keys on the binary cargo built
    sum=$(sha256sum "$bin" | cut -c1-64)
    if docker image inspect -f "{{index .Config.Labels \"$BIN_LABEL\"}} {{index .Config.Labels \"$LABEL\"}}" "$tag" 2>/dev/null |
        grep -qx "$sum $KEY"; then
        phase "$tag is up to date"
        echo "$tag"
        return 0
    fi
    work=$(mktemp -d)
    objcopy --strip-debug "$bin" "$work/slipway-controller"
    chmod 0755 "$work/slipway-controller"
    container=$(docker create "$BASE" /bin/true)
    # shellcheck disable=SC2064
    trap "docker rm -f '$container' >/dev/null 2>&1; rm -rf '$work'" EXIT
    docker cp "$work/slipway-controller" "$container:/usr/local/bin/slipway-controller" >/dev/null
    # the same configuration as the Dockerfile's last stage
    quiet docker commit \
        -c "LABEL $BIN_LABEL=$sum" \
        -c 'USER 65532:65532' \
        -c 'ENV HOME=/home/slipway' \
        -c 'WORKDIR /home/slipway' \
        -c 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/slipway-controller"]' \
        -c 'CMD []' \
        "$container" "$tag" >/dev/null
    docker rm -f "$container" >/dev/null
    rm -rf "$work"
    trap - EXIT
    phase "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1 / 1000000}'))"
    echo "$tag"
}

case ${1:-} in
base) build_base ;;
image) build_image "${2:?usage: controller-image.sh image BIN [TAG]}" "${3:-slipway-controller:dev}" ;;
*) die "usage: controller-image.sh base | image BIN [TAG]" ;;
esac
