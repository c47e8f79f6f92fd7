#!/usr/bin/env bash
# Runs the built cmocka test programs: the harness's checks of itself, unit tests without
# services, then integration and end-to-end tests against a fresh private PostgreSQL, Redis
# and Kafka broker. Usage: test/run.sh [unit|all] (also: integration, e2e, soak, chaos);
# APP_TEST_ONLY, a shell pattern, runs only the programs whose name matches (e.g.
# 'test_outages').
# Prints a summary and exits non-zero if anything failed: a failed test, a failed group
# setup or teardown, a crash, a timeout, a sanitizer report in the log of any app a test
# started, or, under CI=true, a skipped test.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

cd "$(dirname "$0")/.."
root=$(pwd -P)
mode=${1:-all}
case "$mode" in
unit) kinds="unit" ;;
integration) kinds="integration" ;;
e2e) kinds="e2e" ;;
all) kinds="unit integration e2e" ;;
soak) kinds="soak" ;;   # make soak: long, never part of all
chaos) kinds="chaos" ;; # make chaos: likewise
*)
    echo "usage: $0 [unit|integration|e2e|all|soak|chaos]" >&2
    exit 2
    ;;
esac

services=$root/deploy/local/services.sh
run_dir=$root/build/test-run
log_dir=$root/build/test-logs
# A hung test must not hang CI: each program gets this long, then SIGTERM (then SIGKILL).
per_test_timeout=${APP_TEST_TIMEOUT:-600}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

rm -rf "$log_dir"
mkdir -p "$log_dir"

names=()
passes=()
fails=()
skips=()
verdicts=()
interrupted=0
services_up=0

# Programs of one kind, built from a source that still exists (a stale binary of a deleted
# test is not run).
# (programs KIND [PREFIX]: PREFIX is test_ unless given.)
programs()
{
    local bin name
    for bin in "build/test/test/$1"/"${2:-test_}"*; do
        name=$(basename "$bin")
        case "$name" in
        *.o | *.d) continue ;;
        esac
        [ -f "$bin" ] && [ -x "$bin" ] && [ -f "test/$1/$name.c" ] || continue
        # shellcheck disable=SC2254 # a pattern on purpose
        case "$1:$name" in
        harness:*) ;;
        *:${APP_TEST_ONLY:-*}) ;;
        *) continue ;;
        esac
        echo "$bin"
    done
}

# Sum of N over the cmocka lines "[  PASSED  ] N test(s)." (or FAILED, SKIPPED).
count()
{
    sed -nE "s/^\[  $1 *\] ([0-9]+) test\(s\).*/\1/p" "$2" | awk '{ n += $1 } END { print n + 0 }'
}

# cmocka 1.1.5 prints "[  FAILED  ] GROUP TEARDOWN" and still exits 0, and counts neither a
# failed group setup nor teardown in its "N test(s)" lines: each such line is one failure.
count_group_failures()
{
    grep -cE '\[  FAILED  \] GROUP (SETUP|TEARDOWN)' "$1" || true
}

# A sanitizer's report opens with one of these (ASan, LSan, UBSan).
sanitizer_marks='ERROR: (Address|Leak)Sanitizer|WARNING: AddressSanitizer|: runtime error: |SUMMARY: UndefinedBehaviorSanitizer'

# Every app a test program starts logs to that program's own folder (APP_TEST_LOG_DIR, see
# test/support/services.c); a sanitizer report in any of them is a failure of the program,
# even when the test that started the app never looked at how it ended. Sets reports to the
# number of logs with one.
scan_app_logs()
{
    local dir=$1 file
    reports=0
    for file in "$dir"/*.log; do
        [ -f "$file" ] || continue
        if grep -qE "$sanitizer_marks" "$file"; then
            echo "==== sanitizer report in ${file#"$root"/}:"
            grep -m 5 -E "$sanitizer_marks" "$file" | sed 's/^/    /'
            reports=$((reports + 1))
        fi
    done
}

# Runs one program; sets p, f, s and verdict. Its app logs go to $log_dir/NAME.apps/.
run_one()
{
    local bin=$1 log=$2 status reports groups
    local apps=${log%.log}.apps
    mkdir -p "$apps"
    set +e
    # --foreground: Ctrl-C reaches the test itself, not only this script.
    APP_TEST_LOG_DIR=$apps timeout --foreground -k 10 "$per_test_timeout" "./$bin" 2>&1 |
        tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    p=$(count PASSED "$log")
    f=$(count FAILED "$log")
    s=$(count SKIPPED "$log")
    groups=$(count_group_failures "$log")
    f=$((f + groups))
    scan_app_logs "$apps"
    f=$((f + reports))
    if [ "$status" = 0 ]; then
        verdict=ok
        [ "$groups" = 0 ] || verdict="a group setup or teardown failed"
        [ "$reports" = 0 ] || verdict="sanitizer report in $reports app log(s)"
        # A program that passes without cmocka's summary counts as one test.
        [ $((p + f + s)) -gt 0 ] || p=1
    else
        case "$status" in
        124) verdict="timed out after ${per_test_timeout}s" ;;
        13[0-9] | 1[4-9][0-9]) verdict="killed by signal $((status - 128))" ;;
        *) verdict="exit status $status" ;;
        esac
        # A crash, sanitizer report or timeout fails at least one test.
        [ "$f" -gt 0 ] || f=1
    fi
    if [ "$s" -gt 0 ] && in_ci; then
        # CI skips nothing: a skipped test is a check that did not run.
        verdict="$verdict; $s skipped, and CI skips nothing"
        f=$((f + s))
    fi
}

run_program()
{
    local bin=$1 log p f s verdict
    log=$log_dir/$(echo "${bin#build/test/test/}" | tr / _).log
    echo
    echo "==== $bin"
    run_one "$bin" "$log"
    names+=("$bin")
    passes+=("$p")
    fails+=("$f")
    skips+=("$s")
    verdicts+=("$verdict")
    if [ "$s" -gt 0 ]; then
        echo "==== $bin: $verdict ($p passed, $f failed, $s skipped)"
    else
        echo "==== $bin: $verdict ($p passed, $f failed)"
    fi
}

# The harness's own checks: each test/harness/must_fail_*.c holds a failure that the lines
# above must catch (a failing group teardown, an app that leaks at exit, a skip in CI...).
# Such a program passes here only when this script counts it as failed.
run_must_fail()
{
    local bin=$1 log p f s verdict name
    name=$(basename "$bin")
    log=$log_dir/harness_$name.log
    echo
    echo "==== $bin (must fail)"
    # Each runs as CI would, where a skip is a failure too.
    CI=true run_one "$bin" "$log" >"$log.out" 2>&1
    names+=("$bin")
    skips+=(0)
    if [ "$f" -gt 0 ]; then
        passes+=(1)
        fails+=(0)
        verdicts+=("caught: $verdict")
    else
        passes+=(0)
        fails+=(1)
        verdicts+=("NOT CAUGHT: the harness counted it as passed")
        cat "$log.out"
    fi
    echo "==== $bin: ${verdicts[${#verdicts[@]} - 1]}"
}

stop_services()
{
    if [ "$services_up" = 1 ]; then
        bash "$services" stop "$run_dir" >/dev/null || true
        services_up=0
    fi
}

start_services()
{
    local attempt pg_port redis_port
    bash "$services" stop "$run_dir" >/dev/null 2>&1 || true
    if [ -L "$run_dir/pg" ]; then
        rm -rf "$(readlink -f "$run_dir/pg")"
    fi
    rm -rf "$run_dir" 2>/dev/null || {
        echo "test: cannot remove $run_dir (made by another user?)" >&2
        return 1
    }
    # Another program may take a port between the pick and the start: retry with new ones.
    for attempt in 1 2 3; do
        pg_port=$(bash "$services" free-port)
        redis_port=$(bash "$services" free-port "$pg_port")
        services_up=1
        if bash "$services" start "$run_dir" "$pg_port" "$redis_port"; then
            export APP_POSTGRES_DSN="host=127.0.0.1 port=$pg_port dbname=app user=app"
            export APP_REDIS_URL="redis://127.0.0.1:$redis_port/0"
            export APP_TEST_RUN_DIR=$run_dir
            export APP_TEST_PG_PORT=$pg_port
            export APP_TEST_REDIS_PORT=$redis_port
            export APP_TEST_APP_BINARY=$root/build/test/app
            export APP_TEST_SERVICES=$services
            return 0
        fi
        stop_services
        echo "test: starting the services failed (attempt $attempt)" >&2
    done
    return 1
}

# ---- Kafka (real broker) ----
# A real single-node broker (deploy/local/kafka.sh) for the Kafka tests, started only when
# such tests are built. Without Java and Maven they are skipped, and said to be, except in
# CI, which never skips them: there the packages are installed, and a broker that cannot
# start fails the run.
kafka=$root/deploy/local/kafka.sh
kafka_up=0
kafka_note=""
kafka_failed=0
in_ci()
{
    case "${CI:-}" in
    true | 1 | yes) return 0 ;;
    esac
    return 1
}
start_kafka()
{
    local k attempt port wanted=0
    for k in $kinds; do
        ls "build/test/test/$k"/test_kafka_* >/dev/null 2>&1 && wanted=1
        [ "$k" != chaos ] || wanted=1
    done
    [ "$wanted" = 1 ] || return 0
    if ! bash "$kafka" available; then
        if in_ci; then
            sh deploy/local/deps.sh kafka || true
            if ! bash "$kafka" available; then
                echo "test: CI needs Java 17 and Maven for the real Kafka broker" >&2
                kafka_note="the Kafka broker could not run: no Java/Maven in CI"
                kafka_failed=1
                return 1
            fi
        else
            kafka_note="real-broker Kafka tests skipped: no Java/Maven; install with:"
            kafka_note="$kafka_note apt-get install -y default-jre-headless maven (or run in CI)"
            echo "test: $kafka_note" >&2
            return 0
        fi
    fi
    # Another program may take the port between the pick and the start: retry with new ones.
    for attempt in 1 2; do
        port=$(bash "$services" free-port "$APP_TEST_PG_PORT" "$APP_TEST_REDIS_PORT")
        kafka_up=1
        if bash "$kafka" start "$run_dir" "$port"; then
            export APP_TEST_KAFKA_BROKERS=127.0.0.1:$port
            export APP_TEST_KAFKA_RUN_DIR=$run_dir
            return 0
        fi
        stop_kafka
        echo "test: the Kafka broker did not start (attempt $attempt)" >&2
    done
    if in_ci; then
        kafka_note="the Kafka broker did not start (see the log above)"
        kafka_failed=1
    else
        kafka_note="real-broker Kafka tests skipped: the broker did not start (see the log above)"
    fi
    return 1
}
stop_kafka()
{
    if [ "$kafka_up" = 1 ]; then
        bash "$kafka" stop "$run_dir" >/dev/null 2>&1 || true
        kafka_up=0
    fi
}

trap 'stop_kafka; stop_services' EXIT
trap 'interrupted=1' INT TERM HUP

setup_failed=0
# The harness checks itself first: they take a second, and a harness that cannot see a
# failure makes every later verdict worthless.
while read -r bin; do
    [ -n "$bin" ] || continue
    [ "$interrupted" = 0 ] || break
    run_must_fail "$bin"
done < <(programs harness must_fail_)

for kind in $kinds; do
    mapfile -t list < <(programs "$kind")
    [ ${#list[@]} -gt 0 ] || continue
    if [ "$kind" != unit ] && [ "$services_up" = 0 ]; then
        if ! start_services; then
            setup_failed=1
            echo "test: cannot start PostgreSQL and Redis; skipping integration and e2e" >&2
            break
        fi
        start_kafka || true
        [ -x build/test/app ] || echo "test: warning: build/test/app is not built" >&2
    fi
    for bin in "${list[@]}"; do
        [ "$interrupted" = 0 ] || break
        run_program "$bin"
    done
    [ "$interrupted" = 0 ] || break
done

stop_kafka
stop_services

total_pass=0
total_fail=0
total_skip=0
echo
echo "==== summary"
for i in "${!names[@]}"; do
    printf '%-52s %4s passed %4s failed  %s\n' "${names[$i]}" "${passes[$i]}" "${fails[$i]}" \
        "${verdicts[$i]}"
    total_pass=$((total_pass + passes[i]))
    total_fail=$((total_fail + fails[i]))
    total_skip=$((total_skip + skips[i]))
done
[ ${#names[@]} -gt 0 ] || echo "no test programs found under build/test/test (mode: $mode)"
echo "${#names[@]} programs; logs in ${log_dir#"$root"/}"
[ -z "$kafka_note" ] || echo "$kafka_note"
[ "$setup_failed" = 0 ] || echo "services did not start: integration and e2e tests did not run"
[ "$interrupted" = 0 ] || echo "interrupted: not every test ran"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"

if [ "$interrupted" = 1 ]; then
    exit 130
fi
if [ "$total_fail" -gt 0 ] || [ "$setup_failed" = 1 ] || [ "$kafka_failed" = 1 ] ||
    [ $((total_pass + total_fail)) = 0 ]; then
    exit 1
fi
exit 0
