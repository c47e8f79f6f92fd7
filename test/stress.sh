#!/usr/bin/env bash
# Runs the whole suite N times in a row (default 5) while stress-ng keeps every core busy,
# to show that no verdict depends on the machine's speed. Usage: test/stress.sh [N]
# (after `make test` has built everything). Prints one line per run and exits non-zero if
# any run failed. stress-ng is installed from Debian when missing (as root).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu
cd "$(dirname "$0")/.."
runs=${1:-5}
if ! command -v stress-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends stress-ng
    else
        echo "stress: stress-ng is missing: sudo apt-get install -y stress-ng" >&2
        exit 1
    fi
fi
cores=$(nproc 2>/dev/null || echo 2)
mkdir -p build/stress
stress-ng --cpu "$cores" --timeout 0 --quiet &
stressor=$!
trap 'kill "$stressor" 2>/dev/null || true; wait "$stressor" 2>/dev/null || true' EXIT

failed=0
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    if bash test/run.sh all >"build/stress/run-$i.log" 2>&1; then
        verdict=passed
    else
        verdict=FAILED
        failed=$((failed + 1))
        cp -r build/test-logs "build/stress/run-$i-logs"
    fi
    echo "run $i: $verdict in $(($(date +%s) - start))s: $(tail -n 1 "build/stress/run-$i.log")"
done
echo "$((runs - failed)) of $runs runs passed under stress-ng --cpu $cores (logs in build/stress)"
[ "$failed" = 0 ]
