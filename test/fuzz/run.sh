#!/usr/bin/env bash
# make fuzz: runs every libFuzzer target (build/fuzz/fuzz_*) for FUZZ_SECONDS (default 300)
# each, from its checked-in seed corpus test/fuzz/corpus/<target> (read only: what a run
# finds stays in build/fuzz/corpus/<target>), and prints executions per second and the
# coverage reached. A crash, leak or sanitizer report fails the run, and its input is kept in
# build/fuzz/artifacts/ to become a regression seed.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-300}
failed=()
mkdir -p build/fuzz/artifacts
for bin in build/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    seeds=test/fuzz/corpus/$name
    work=build/fuzz/corpus/$name
    mkdir -p "$work" "$seeds"
    log=build/fuzz/$name.log
    echo "==== $name: $seconds s from $(find "$seeds" -type f | wc -l) seeds"
    set +e
    "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="build/fuzz/artifacts/$name-" "$work" "$seeds" >"$log" 2>&1
    status=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
    echo "$name: ${runs:-?} runs, ${rate:-?} execs/s, ${cov:-no coverage line}"
    if [ "$status" != 0 ]; then
        echo "$name: FAILED (status $status); the end of $log:" >&2
        tail -n 40 "$log" >&2
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran clean"
