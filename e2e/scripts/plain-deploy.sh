#!/usr/bin/env bash
# The baseline of the deploy benchmarks (P1, P3 in e2e/tests/bench.rs): a plain ssh script that
# deploys TAG of a compose app the way Slipway does for an Environment without migrations, with
# the same commands and the same checks, but no Kubernetes, no host jobs and no status writes.
#
#   plain-deploy.sh   (everything from the environment; all required)
#     ADDR PORT USER KEY KNOWN_HOSTS   the host, pinned like the controller pins it
#     DIR PROJECT ORIGIN TAG           checkout on the host, compose project, git origin, release
#     COMPOSE                          "docker-compose" (v1) or "docker compose" (v2)
#     ENV_FILE                         local file uploaded as $DIR/.env (mode 0600)
#     CHECK                            the declared check: service, then argv run in its container
#     INTERVAL TIMEOUT                 seconds between verification rounds, overall deadline
#
# One ssh master for the script's lifetime (its connect is timed with the rest), like the
# controller's pooled master: the comparison is of what runs, not of connection setup.
# The sequence, as the controller's debug log names its remote commands (preflight, then
# rebuild, then verification rounds):
#   test -d .git (clone when absent); git fetch --tags --force --prune; rev-parse HEAD; rev-parse
#   the tag; git status --porcelain; .env.example of the commit (every key present); worktree of
#   the commit under .git with its .env; compose config there (every long-running service has a
#   healthcheck); the project's containers; checkout; .env; compose build; compose up -d
#   --remove-orphans; compose config once; then each round: the project's containers (running
#   and healthy), the declared check. (The controller reads `compose config` in its first round
#   and reuses it while HEAD, `git status` and the `stat` of .env and the compose files stay as
#   they were; it runs those three reads in its first round and in each round that finds the
#   containers ready, which this script does not. A round of either that finds a container still
#   starting runs no check.)
set -euo pipefail
for v in ADDR PORT USER KEY KNOWN_HOSTS DIR PROJECT ORIGIN TAG COMPOSE ENV_FILE CHECK INTERVAL TIMEOUT; do
    [[ -n ${!v:-} ]] || { echo "plain-deploy: $v is not set" >&2; exit 2; }
done
die() { echo "plain-deploy: $*" >&2; exit 1; }
trap 'echo "plain-deploy: line $LINENO failed: $BASH_COMMAND" >&2' ERR

ctl=$(mktemp -d /tmp/pd-XXXXXX)
opts=(-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$KNOWN_HOSTS"
    -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityAgent=none -i "$KEY" -p "$PORT"
    -o "ControlPath=$ctl/m")
ssh "${opts[@]}" -M -f -N -o ControlPersist=yes "$USER@$ADDR"
trap 'ssh "${opts[@]}" -O exit "$USER@$ADDR" 2>/dev/null; rm -rf "$ctl"' EXIT

# r ARGV...: runs ARGV on the host, each argument quoted for its shell.
r() {
    local quoted=() a
    for a in "$@"; do quoted+=("'${a//\'/\'\\\'\'}'"); done
    ssh "${opts[@]}" "$USER@$ADDR" "${quoted[*]}"
}
read -r -a compose <<<"$COMPOSE"
# c DIR ARGS...: compose of the project, in DIR.
c() { local d=$1; shift; r sh -c 'cd "$1" && shift && exec "$@"' sh "$d" "${compose[@]}" -p "$PROJECT" -f docker-compose.yml "$@"; }
upload_env() { r sh -c 'umask 077 && cat >"$1"' sh "$1/.env" <"$ENV_FILE"; }
containers() { r docker ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.ID}} {{.Label "com.docker.compose.service"}} {{.State}} {{.Status}}'; }

# Preflight: nothing that runs changes.
r test -d "$DIR/.git" || r git clone --quiet -- "$ORIGIN" "$DIR"
r git -C "$DIR" fetch --quiet --tags --force --prune origin
r git -C "$DIR" rev-parse --verify --quiet 'HEAD^{commit}' >/dev/null || true
commit=$(r git -C "$DIR" rev-parse --verify --quiet --end-of-options "refs/tags/$TAG^{commit}") || die "no tag $TAG"
[[ -z $(r git -C "$DIR" status --porcelain=v1 --untracked-files=all) ]] || die "$DIR has local changes"
for key in $(r git -C "$DIR" cat-file blob "$commit:.env.example" | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
    grep -q "^$key=" "$ENV_FILE" || die ".env lacks $key"
done
next=$DIR/.git/slipway-plain/next
r git -C "$DIR" worktree prune
if r test -e "$next/.git"; then
    r git -C "$next" checkout --quiet --detach "$commit" --
else
    r git -C "$DIR" worktree add --quiet --detach "$next" "$commit"
fi
upload_env "$next"
grep -q 'healthcheck:' <<<"$(c "$next" config)" || die "a service has no healthcheck"
containers >/dev/null

# Rebuild.
r git -C "$DIR" checkout --quiet --detach "$commit" --
upload_env "$DIR"
c "$DIR" build >/dev/null
c "$DIR" up -d --remove-orphans >/dev/null

# Verify: rounds until every service runs healthy and the declared check passes.
read -r -a check <<<"$CHECK"
deadline=$((SECONDS + TIMEOUT))
c "$DIR" config >/dev/null
while :; do
    ok=1
    while read -r _ _ state status; do
        [[ $state == running && $status != *starting* && $status != *unhealthy* ]] || ok=0
    done < <(containers)
    if ((ok)); then
        id=$(r docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=${check[0]}")
        r docker exec "$id" "${check[@]:1}" >/dev/null 2>&1 && break
    fi
    ((SECONDS < deadline)) || die "not healthy after $TIMEOUT s"
    sleep "$INTERVAL"
done
echo "$commit"
