#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM) on
# loopback, for the tests: the org.apache.kafka jars from Maven Central (test/kafka/pom.xml),
# cached so that the second run fetches nothing.
#
#   kafka.sh available                 exit 0 when Java 17+ and mvn (or the cached jars) are here
#   kafka.sh fetch                     fetch the jars into the cache (no-op when cached)
#   kafka.sh start RUN_DIR PORT        format storage (first time), start, wait until it answers
#   kafka.sh stop RUN_DIR              stop it (fine if already stopped)
#   kafka.sh stop-broker RUN_DIR       stop it, keeping data and port (outage tests)
#   kafka.sh start-broker RUN_DIR      start it again on the same port, with the same data
#   kafka.sh status RUN_DIR            exit 0 only if it answers
#
# Layout: RUN_DIR/kafka/{server.properties,data,kafka.log,kafka.out,kafka.pid,port}.
# Jars: ${APP_KAFKA_CACHE:-~/.cache/app-kafka}/VERSION/lib (Maven's ~/.m2 is kept as well).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pom=$root/test/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
cache=${APP_KAFKA_CACHE:-${HOME:-/root}/.cache/app-kafka}/$version
# Any edit of the pom (say a newer log4j) must refetch, not only a new Kafka version.
pom_sum=$(cksum <"$pom" | cut -d' ' -f1)
WAIT_SECONDS=${APP_KAFKA_WAIT_SECONDS:-60}
STOP_SECONDS=20

die()
{
    echo "kafka: $*" >&2
    exit 1
}

say()
{
    echo "kafka: $*"
}

usage()
{
    sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log_tail()
{
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f ----" >&2
        tail -n 30 "$f" >&2 || true
        echo "----" >&2
    done
}

cached()
{
    [ "$(cat "$cache/lib/.complete" 2>/dev/null)" = "$pom_sum" ]
}

# Kafka 4 needs Java 17 for the broker; "1.8.0" parses as 1, which fails too.
java_ok()
{
    local v
    command -v java >/dev/null 2>&1 || return 1
    v=$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$v" ] && [ "$v" -ge 17 ]
}

fetch()
{
    cached && return 0
    command -v mvn >/dev/null 2>&1 || die "mvn is missing: apt-get install -y maven"
    mkdir -p "$cache"
    # Two test runs at once (say two work trees) must not fetch into the same folder.
    exec 8>"$cache/.lock"
    command -v flock >/dev/null 2>&1 && flock 8
    if cached; then
        exec 8>&-
        return 0
    fi
    say "fetching Apache Kafka $version from Maven Central into $cache (once)"
    local tmp=$cache/lib.tmp.$$ start=$SECONDS
    rm -rf "$tmp"
    mkdir -p "$tmp"
    mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$cache/fetch.log" 2>&1 || {
        log_tail "$cache/fetch.log"
        rm -rf "$tmp"
        die "could not fetch the Kafka jars with Maven"
    }
    ls "$tmp"/kafka_2.13-"$version".jar >/dev/null 2>&1 || die "no kafka_2.13 jar after the fetch"
    echo "$pom_sum" >"$tmp/.complete"
    rm -rf "${cache:?}/lib"
    mv "$tmp" "$cache/lib"
    exec 8>&-
    say "fetched $(find "$cache/lib" -name '*.jar' | wc -l) jars in $((SECONDS - start))s"
}

java_args()
{
    # Serial GC and a small heap: one test broker on a 2-core machine next to PostgreSQL,
    # Redis and the sanitizer-built tests.
    jargs=(-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
        -Dkafka.logs.dir="$dir" -Dkafka.logs.file="$dir/kafka.log"
        -Dlog4j2.configurationFile="$root/test/kafka/log4j2.properties" -cp "$cache/lib/*")
}

port_open()
{
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ApiVersions v0 by hand, for machines without kcat: size 11, api key 18, version 0,
# correlation id 1, client id "t"; a reply starts with its size and correlation id 1.
api_versions()
{
    local reply
    # shellcheck disable=SC2016 # $1 is the inner shell's
    reply=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "\000\000\000\013\000\022\000\000\000\000\000\001\000\001t" >&3
        head -c 8 <&3 | od -An -tx1 | tr -d " \n"' _ "$1" 2>/dev/null) || return 1
    [ "${reply:8:8}" = 00000001 ]
}

# True when the broker serves requests, not merely when its port is open.
answers()
{
    if command -v kcat >/dev/null 2>&1; then
        kcat -b "127.0.0.1:$1" -L -m 2 2>/dev/null | grep -q 'broker 1 at'
    else
        api_versions "$1"
    fi
}

running()
{
    local pid
    pid=$(cat "$dir/kafka.pid" 2>/dev/null) || return 1
    # A stale pid file may name a recycled pid: only our broker counts.
    grep -qa 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null
}

start_broker()
{
    local port start=$SECONDS
    port=$(cat "$dir/port")
    if running; then
        say "already running on 127.0.0.1:$port"
        return 0
    fi
    port_open "$port" && die "127.0.0.1:$port is taken by something else"
    java_ok || die "Java 17 or newer is missing: apt-get install -y default-jre-headless"
    java_args
    echo "==== $(date '+%F %T') start" >>"$dir/kafka.out"
    nohup java "${jargs[@]}" kafka.Kafka "$dir/server.properties" >>"$dir/kafka.out" 2>&1 \
        </dev/null &
    echo $! >"$dir/kafka.pid"
    until answers "$port"; do
        if ! running; then
            log_tail "$dir/kafka.out" "$dir/kafka.log"
            rm -f "$dir/kafka.pid"
            die "the broker exited while starting"
        fi
        if [ $((SECONDS - start)) -ge "$WAIT_SECONDS" ]; then
            log_tail "$dir/kafka.out" "$dir/kafka.log"
            stop_broker >/dev/null
            die "no answer on 127.0.0.1:$port after ${WAIT_SECONDS}s"
        fi
        sleep 0.3
    done
    say "started on 127.0.0.1:$port in $((SECONDS - start))s (log: $dir/kafka.log)"
}

stop_broker()
{
    local pid waited=0
    if running; then
        pid=$(cat "$dir/kafka.pid")
        kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null && [ $waited -lt $((STOP_SECONDS * 5)) ]; do
            sleep 0.2
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "kafka: no exit ${STOP_SECONDS}s after SIGTERM; SIGKILL" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped"
    fi
    rm -f "$dir/kafka.pid"
}

# A Kafka cluster id: 16 random bytes, base64url without padding.
cluster_id()
{
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

check_port()
{
    case "$1" in
    '' | *[!0-9]*) die "port '$1' is not a number" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "port $1 is out of range"
    fi
}

cmd=${1:-}
case "$cmd" in
available)
    java_ok || {
        echo "kafka: no Java 17 or newer (apt-get install -y default-jre-headless)" >&2
        exit 1
    }
    cached || command -v mvn >/dev/null 2>&1 || {
        echo "kafka: no Maven and no cached jars (apt-get install -y maven)" >&2
        exit 1
    }
    exit 0
    ;;
fetch)
    fetch
    ;;
start)
    [ $# -eq 3 ] || die "usage: kafka.sh start RUN_DIR PORT"
    check_port "$3"
    dir=$(mkdir -p "$2/kafka" && cd "$2/kafka" && pwd)
    java_ok || die "Java 17 or newer is missing: apt-get install -y default-jre-headless"
    fetch
    if [ "$(cat "$dir/port" 2>/dev/null)" != "$3" ]; then
        # Another port means another broker: begin again rather than mix the two.
        running && die "a broker already runs in $dir on port $(cat "$dir/port")"
        rm -rf "${dir:?}"/*
        cport=$(bash "$here/services.sh" free-port "$3")
        sed -e "s|@PORT@|$3|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA@|$dir/data|g" \
            "$root/test/kafka/server.properties" >"$dir/server.properties"
        echo "$3" >"$dir/port"
    fi
    if [ ! -f "$dir/data/meta.properties" ] && ! running; then
        java_args
        java "${jargs[@]}" kafka.tools.StorageTool format -t "$(cluster_id)" \
            -c "$dir/server.properties" >>"$dir/kafka.out" 2>&1 || {
            log_tail "$dir/kafka.out"
            die "formatting the storage failed"
        }
    fi
    start_broker
    ;;
start-broker)
    [ $# -eq 2 ] || die "usage: kafka.sh start-broker RUN_DIR"
    [ -f "$2/kafka/port" ] || die "no broker in $2 (kafka.sh start first)"
    dir=$(cd "$2/kafka" && pwd)
    start_broker
    ;;
stop | stop-broker)
    [ $# -eq 2 ] || die "usage: kafka.sh $cmd RUN_DIR"
    [ -d "$2/kafka" ] || exit 0
    dir=$(cd "$2/kafka" && pwd)
    stop_broker
    ;;
status)
    [ $# -eq 2 ] || die "usage: kafka.sh status RUN_DIR"
    [ -f "$2/kafka/port" ] || exit 1
    answers "$(cat "$2/kafka/port")"
    ;;
*)
    usage
    ;;
esac
