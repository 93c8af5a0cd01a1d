#!/usr/bin/env bash
# fixture-repo.sh DEST_BARE_REPO
#
# Turn the e2e "shop" fixture into a git repository and write it as a bare repository at DEST
# (e.g. $SLIPWAY_SANDBOX/origin/shop.git), served to the test hosts by file:// URL:
#
#   v1.0.0  e2e/fixtures/shop/                      (annotated tag)
#   v1.1.0  + e2e/fixtures/shop-releases/v1.1.0/    (annotated tag; branch `main` points here)
#   v1.2.0  + e2e/fixtures/shop-releases/v1.2.0/    (annotated tag)
#   v1.3.0  + e2e/fixtures/shop-releases/v1.3.0/    (annotated tag)
#   v1.4.0  v1.1.0 + e2e/fixtures/shop-releases/v1.4.0/ (annotated tag; a side line off v1.1.0)
#   v1.5.0  v1.2.0 + e2e/fixtures/shop-releases/v1.5.0/ (annotated tag; a side line off v1.2.0)
#   ticker-v1  e2e/fixtures/shop-releases/ticker-v1/    (annotated tag; a root commit: not the
#   ticker-v2  + e2e/fixtures/shop-releases/ticker-v2/  shop but the one-service app of the
#   ticker-v3  + e2e/fixtures/shop-releases/ticker-v3/  queue, gate and re-deploy tests)
#
# Each release is laid over its parent: the release before it in RELEASES unless PARENT names
# another (`none`: an empty tree, a root commit).
# Author, committer, dates and file modes are fixed, and no user or system git config is read, so
# commit and tag ids are the same on every machine and every run. DEST is replaced only when its
# refs differ from the freshly built ones (a second run leaves it untouched). DEST is made
# world-readable so the deploy user can clone it.
set -euo pipefail

DEST=${1:?usage: $0 DEST_BARE_REPO}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FIXTURES=$(cd "$HERE/../fixtures" && pwd)
RELEASES=(v1.0.0 v1.1.0 v1.2.0 v1.3.0 v1.4.0 v1.5.0 ticker-v1 ticker-v2 ticker-v3 idle-v1 idle-v2)
declare -A PARENT=(
    [v1.0.0]=none
    [v1.4.0]=v1.1.0
    [v1.5.0]=v1.2.0
    [ticker-v1]=none
    [idle-v1]=none
)
declare -A DATE=(
    [v1.0.0]="2025-01-06T10:00:00+00:00"
    [v1.1.0]="2025-02-03T10:00:00+00:00"
    [v1.2.0]="2025-03-03T10:00:00+00:00"
    [v1.3.0]="2025-04-07T10:00:00+00:00"
    [v1.4.0]="2025-05-05T10:00:00+00:00"
    [v1.5.0]="2025-07-07T10:00:00+00:00"
    [ticker-v1]="2025-06-02T10:00:00+00:00"
    [ticker-v2]="2025-06-02T11:00:00+00:00"
    [ticker-v3]="2025-06-02T12:00:00+00:00"
    [idle-v1]="2025-08-04T10:00:00+00:00"
    [idle-v2]="2025-08-04T11:00:00+00:00"
)
declare -A MESSAGE=(
    [v1.0.0]="Shop 1.0.0: db, backend and frontend"
    [v1.1.0]="Shop 1.1.0: item descriptions and GET /api/items/{id}"
    [v1.2.0]="Shop 1.2.0: health endpoint reports unhealthy"
    [v1.3.0]="Shop 1.3.0: stock levels (migration 0003)"
    [v1.4.0]="Shop 1.4.0: a slow migration that counts its runs (0004, after 0002)"
    [v1.5.0]="Shop 1.5.0: item colors (0005, after 0002) and the unhealthy /health of 1.2.0"
    [ticker-v1]="Ticker 1.0.0: one service, healthy after one healthcheck interval"
    [ticker-v2]="Ticker 2.0.0"
    [ticker-v3]="Ticker 3.0.0"
    [idle-v1]="Idle 1.0.0: one service from a prebuilt image, up only"
    [idle-v2]="Idle 2.0.0"
)
MAIN_AT=v1.1.0

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=fixture-repo
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_pkgs git

# deterministic, config-independent git
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME=/nonexistent LC_ALL=C TZ=UTC
export GIT_AUTHOR_NAME="Shop Developers" GIT_AUTHOR_EMAIL="dev@shop.example"
export GIT_COMMITTER_NAME="Shop Developers" GIT_COMMITTER_EMAIL="dev@shop.example"
git_() { git -c core.autocrlf=false -c core.fileMode=true -c init.defaultBranch=main -c tag.gpgSign=false -c commit.gpgSign=false "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree=$work/tree
mkdir -p "$tree"
git_ init -q "$tree"

copy_over() { # copy_over SRC_DIR: lay SRC over the tree, normalising modes
    tar -C "$1" --exclude=.env --exclude=__pycache__ --exclude='*.pyc' -cf - . | tar -C "$tree" -xf -
}

for rel in "${RELEASES[@]}"; do
    case ${PARENT[$rel]:-} in
    "") ;; # on top of the release before it, as checked out
    none)  # from an empty tree, as a root commit (v1.0.0 is the first commit anyway)
        if git_ -C "$tree" rev-parse -q --verify HEAD >/dev/null; then
            git_ -C "$tree" checkout -q --orphan "line-$rel"
            git_ -C "$tree" rm -r -q -f .
        fi
        ;;
    *) git_ -C "$tree" checkout -q --detach "refs/tags/${PARENT[$rel]}^{commit}" ;;
    esac
    if [[ $rel == v1.0.0 ]]; then
        copy_over "$FIXTURES/shop"
    else
        copy_over "$FIXTURES/shop-releases/$rel"
    fi
    # file modes from the file name only, never from the checkout the script runs in
    find "$tree" -path "$tree/.git" -prune -o -type f -exec chmod 0644 {} + -o -type d -exec chmod 0755 {} +
    find "$tree" -path "$tree/.git" -prune -o -type f -name '*.sh' -exec chmod 0755 {} +
    export GIT_AUTHOR_DATE=${DATE[$rel]} GIT_COMMITTER_DATE=${DATE[$rel]}
    # a fresh index: tar restores mtimes, so a same-size file replaced by an overlay would look
    # unchanged to the stat-based index and the commit would silently keep the old content
    rm -f "$tree/.git/index"
    git_ -C "$tree" add -A
    git_ -C "$tree" commit -q -m "${MESSAGE[$rel]}"
    git_ -C "$tree" tag -a "$rel" -m "Release $rel"
done
git_ -C "$tree" branch -q -f main "$MAIN_AT" 2>/dev/null || {
    # `main` is the checked-out branch: move it with update-ref instead
    git_ -C "$tree" update-ref refs/heads/main "$(git_ -C "$tree" rev-parse "$MAIN_AT^{commit}")"
}

bare=$work/bare.git
git_ init -q --bare "$bare"
git_ -C "$tree" push -q "$bare" refs/heads/main:refs/heads/main 'refs/tags/*:refs/tags/*'
git_ -C "$bare" symbolic-ref HEAD refs/heads/main
git_ -C "$bare" config receive.denyNonFastForwards false
git_ -C "$bare" gc -q --prune=now
phase "built fixture repository ($(git_ -C "$bare" rev-parse --short main) at main)"

refs() { git_ -C "$1" for-each-ref --format='%(objectname) %(refname)' 2>/dev/null; }
if [[ -d $DEST ]] && [[ "$(refs "$DEST")" == "$(refs "$bare")" ]]; then
    phase "$DEST already up to date"
    exit 0
fi

mkdir -p "$(dirname "$DEST")"
exec 9>"$DEST.lock"
flock 9
chmod -R a+rX "$bare"
rm -rf "$DEST.new"
mv "$bare" "$DEST.new"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
# the deploy user must be able to reach DEST: open up parent directories we own, up to the first one
# that is already traversable by others
d=$(dirname "$DEST")
while [[ $d != / && -O $d && -z $(find "$d" -maxdepth 0 -perm -o=x) ]]; do
    chmod a+rx "$d"
    d=$(dirname "$d")
done
phase "wrote $DEST ($(refs "$DEST" | wc -l) refs)"
