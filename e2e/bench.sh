#!/usr/bin/env bash
# Benchmarks P1..P6 of Slipway (issue 10): brings up the sandbox with enough sshd hosts, builds
# the controller in release mode, runs the benchmarks (e2e/tests/bench.rs, e2e/tests/remote_bench.rs)
# at full size one at a time, prints the table and writes the figures as JSON.
#   e2e/bench.sh [test name filter ...]       e.g. `e2e/bench.sh p1_` for P1 alone
# Sizes (defaults below) come from SLIPWAY_BENCH_*; e2e/run-tests.sh runs the same tests with tiny
# sizes as a smoke test. The sandbox is shared by everything on this machine: this script takes the
# lock /tmp/slipway-e2e.lock itself (do not wrap it in another flock) and tears the sandbox down on exit.
# SLIPWAY_BENCH_PERF_OUT=FILE records a `perf` profile of the controller over P6's window.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${SLIPWAY_BENCH_LOCKED:-} ]]; then
  export SLIPWAY_BENCH_LOCKED=1
  exec flock -o /tmp/slipway-e2e.lock "$root/e2e/bench.sh" "$@"
fi
cd "$root"
export SLIPWAY_CACHE=${SLIPWAY_CACHE:-$HOME/.cache/slipway}
export SLIPWAY_SANDBOX=${SLIPWAY_SANDBOX:-/tmp/slipway-bench}
export SLIPWAY_BENCH_P1_RUNS=${SLIPWAY_BENCH_P1_RUNS:-5}
export SLIPWAY_BENCH_P3_N=${SLIPWAY_BENCH_P3_N:-20,50}
export SLIPWAY_BENCH_P3_REPEATS=${SLIPWAY_BENCH_P3_REPEATS:-3}
export SLIPWAY_BENCH_P4_STORED=${SLIPWAY_BENCH_P4_STORED:-5000}
export SLIPWAY_BENCH_P4_REQUESTS=${SLIPWAY_BENCH_P4_REQUESTS:-200}
export SLIPWAY_BENCH_P5_REQUESTS=${SLIPWAY_BENCH_P5_REQUESTS:-10000}
export SLIPWAY_BENCH_P5_ENVIRONMENTS=${SLIPWAY_BENCH_P5_ENVIRONMENTS:-1000}
export SLIPWAY_BENCH_P5_HOSTS=${SLIPWAY_BENCH_P5_HOSTS:-10}
export SLIPWAY_BENCH_P6_WINDOW_S=${SLIPWAY_BENCH_P6_WINDOW_S:-120}
export SLIPWAY_BENCH_P6_MONITOR_INTERVAL_S=${SLIPWAY_BENCH_P6_MONITOR_INTERVAL_S:-60}
# One test host per Environment for P3's largest N, and at least the P5 hosts.
max_n=$(tr ',' '\n' <<<"$SLIPWAY_BENCH_P3_N" | sort -n | tail -n 1)
export SLIPWAY_HOSTS=${SLIPWAY_HOSTS:-$(( max_n > SLIPWAY_BENCH_P5_HOSTS ? max_n : SLIPWAY_BENCH_P5_HOSTS ))}
# The figures are of the controller as deployed: release build, info logging.
export SLIPWAY_CONTROLLER_BIN=${SLIPWAY_CONTROLLER_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/slipway-controller}
export SLIPWAY_CONTROLLER_LOG=${SLIPWAY_CONTROLLER_LOG:-info,kube=warn}
start=$SECONDS

"$root/e2e/scripts/down.sh"
rm -rf "$SLIPWAY_SANDBOX"
trap '"$root/e2e/scripts/down.sh"' EXIT
(cargo build --quiet --release -p slipway-controller && cargo build --quiet -p slipway-e2e --test bench --test remote_bench --bin bench-report) &
build_pid=$!
"$root/e2e/scripts/up.sh"
wait "$build_pid"
echo "[bench] sandbox ($SLIPWAY_HOSTS hosts) and build ready after $((SECONDS - start)) s" >&2

filters=("$@")
((${#filters[@]})) || filters=("")
for filter in "${filters[@]}"; do
  if ! cargo test --quiet --no-fail-fast -p slipway-e2e --test bench --test remote_bench -- --include-ignored \
    --test-threads=1 --nocapture ${filter:+"$filter"} 2>&1 | tee -a "$SLIPWAY_SANDBOX/logs/bench.log"; then
    echo "[bench] some benchmark failed (log: $SLIPWAY_SANDBOX/logs/bench.log)" >&2
  fi
done
echo
cargo run --quiet -p slipway-e2e --bin bench-report -- "$SLIPWAY_SANDBOX"
echo "[bench] finished in $((SECONDS - start)) s (logs: $SLIPWAY_SANDBOX/logs)" >&2
