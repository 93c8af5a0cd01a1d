#!/usr/bin/env bash
# Runs every test of Slipway: unit tests, and the real-component tests (kube-apiserver + etcd,
# sshd hosts, Docker engine, PostgreSQL + alembic) against one shared sandbox.
#   e2e/run-tests.sh [cargo test args] [-- test binary args]
# The tests that need the sandbox are #[ignore]d (a plain `cargo test` lists them as ignored); this
# script runs them with `--include-ignored`. Arguments before `--` go to cargo, after it to the
# test binaries, e.g. `e2e/run-tests.sh --test remote_ssh -- pool_ --nocapture`.
set -euo pipefail
cargo_args=()
while (($#)) && [[ $1 != -- ]]; do
  cargo_args+=("$1")
  shift
done
(($#)) && shift # the `--`
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SLIPWAY_CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
export SLIPWAY_SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-tests}
start=$SECONDS

"$root/e2e/scripts/down.sh"
rm -rf "$SLIPWAY_SANDBOX"
trap '"$root/e2e/scripts/down.sh"' EXIT
# Compile while the sandbox comes up (the first run builds the control plane and base image).
cargo build --workspace --all-targets --quiet &
build_pid=$!
"$root/e2e/scripts/up.sh"
wait "$build_pid"
# The binary cargo just built (CARGO_TARGET_DIR may put it outside the worktree).
export SLIPWAY_CONTROLLER_BIN=${CARGO_TARGET_DIR:-$root/target}/debug/slipway-controller
export SLIPWAY_PLUGIN_BIN=${CARGO_TARGET_DIR:-$root/target}/debug/kubectl-slipway
# ... and as the controller image the chart runs (its base was built by up.sh).
SLIPWAY_CONTROLLER_IMAGE=$("$root/e2e/scripts/controller-image.sh" image "$SLIPWAY_CONTROLLER_BIN")
export SLIPWAY_CONTROLLER_IMAGE
echo "[tests] sandbox and build ready after $((SECONDS - start)) s" >&2

# The end-to-end tests spend most of their time waiting on hosts (builds, health intervals,
# migrations that sleep), not on this machine's cores: three at a time per test binary.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-3}
set +e
cargo test --workspace --no-fail-fast "${cargo_args[@]}" -- --include-ignored "$@" 2>&1 | tee "$SLIPWAY_SANDBOX/logs/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
# Argo CD's Lua health script and kstatus over the status objects recorded from the controller
# (tools/health; Go build and module caches stay outside the repository, as Go keeps them).
echo "== tools/health: Argo CD health (gopher-lua) and kstatus" >&2
go=$(command -v go || echo /usr/local/go/bin/go)
if ! (cd "$root/tools/health" && GOWORK=off GOFLAGS=-mod=readonly "$go" test -count=1 ./...) 2>&1 | tee "$SLIPWAY_SANDBOX/logs/health.log"; then
  status=1
fi
if [[ -s $SLIPWAY_SANDBOX/logs/benchmarks.txt ]]; then
  echo "== benchmarks"
  cat "$SLIPWAY_SANDBOX/logs/benchmarks.txt"
fi
echo "[tests] finished in $((SECONDS - start)) s (logs: $SLIPWAY_SANDBOX/logs)" >&2
exit "$status"
