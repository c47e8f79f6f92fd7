#!/bin/sh
# Checks (and as root installs) the Debian 12 packages needed to build, run, test and lint.
# shellcheck disable=SC2086 # package lists are split on purpose
# Usage: deps.sh [build|unit|run|test|lint|kafka|fuzz|all]...   (default: all; groups can be combined)
set -eu

build_pkgs="build-essential pkg-config libevent-dev libpq-dev libhiredis-dev librdkafka-dev
    libcjson-dev libyaml-dev"
# The private PostgreSQL 15 and Redis of `make run` and `make test` (deploy/local/services.sh).
server_pkgs="postgresql redis-server"
unit_pkgs="libcmocka-dev"
# Tools the tests check files with: promtool (in prometheus) checks the metrics exposition;
# Python's venv holds the Python test tools from PyPI (test/tools/pyvenv.sh). The Go test
# tools need a newer Go than Debian's golang (1.19): test/tools/go.sh uses the machine's, or
# fetches Go's own toolchain from the Go module proxy with curl.
check_pkgs="prometheus python3-venv curl"
lint_pkgs="clang-format clang-tidy cppcheck systemd"
# The real Kafka broker of the tests runs on Java; kcat checks that it answers.
kafka_pkgs="default-jre-headless maven kcat"
# libFuzzer: Debian's clang and its runtime libraries.
fuzz_pkgs="clang libclang-rt-14-dev"

want=""
[ $# -gt 0 ] || set -- all
for group in "$@"; do
    case "$group" in
    build) want="$want $build_pkgs" ;;
    unit) want="$want $build_pkgs $unit_pkgs $check_pkgs" ;;
    run) want="$want $build_pkgs $server_pkgs" ;;
    test) want="$want $build_pkgs $unit_pkgs $check_pkgs $server_pkgs" ;;
    lint) want="$want $lint_pkgs" ;;
    kafka) want="$want $kafka_pkgs" ;;
    fuzz) want="$want $build_pkgs $fuzz_pkgs" ;;
    all) want="$want $build_pkgs $unit_pkgs $check_pkgs $server_pkgs $lint_pkgs $kafka_pkgs $fuzz_pkgs" ;;
    -h | --help)
        echo "usage: $0 [build|unit|run|test|lint|kafka|fuzz|all]..."
        exit 0
        ;;
    *)
        echo "deps: unknown group '$group' (expected build, unit, run, test, lint, kafka, fuzz or all)" >&2
        exit 2
        ;;
    esac
done

if [ "${APP_SKIP_DEPS:-}" = 1 ]; then
    exit 0
fi
if ! command -v dpkg-query >/dev/null 2>&1; then
    # Not Debian: the package names below mean nothing here, so only warn.
    echo "deps: dpkg-query not found; not a Debian system, skipping the package check" >&2
    exit 0
fi

# The alert-rule check of the tests (test/tools) runs on Node.js. One from elsewhere
# (NodeSource, nvm) will do, so the Debian packages are wanted only when there is none.
case " $* " in
*" test "* | *" all "*)
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        want="$want nodejs npm"
    fi
    ;;
esac

want=$(printf '%s\n' $want | sort -u)
# One dpkg-query call for all packages keeps the no-op case fast. Unknown packages print
# nothing on stdout (an error on stderr), so they end up missing too.
installed=$(dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' $want 2>/dev/null |
    awk 'substr($2, 2, 1) == "i" { print $1 }' || true)
missing=""
for pkg in $want; do
    case "
$installed
" in
    *"
$pkg
"*) ;;
    *) missing="$missing $pkg" ;;
    esac
done
missing=${missing# }

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages: $missing" >&2
    echo "deps: install them with:" >&2
    echo "sudo apt-get install -y --no-install-recommends $missing" >&2
    exit 1
fi

echo "deps: installing $missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing </dev/null
