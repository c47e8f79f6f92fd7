#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM) on
# loopback, for the tests: the org.apache.kafka jars from Maven Central (test/kafka/pom.xml),
# cached so that the second run fetches nothing.
#
#   kafka.sh available                 exit 0 when java and mvn (or cached jars) are here
#   kafka.sh fetch                     fetch the jars into the cache
#   kafka.sh start RUN_DIR PORT        format storage (first time), start, wait until it answers
#   kafka.sh stop RUN_DIR              stop it (fine if already stopped)
#   kafka.sh stop-broker RUN_DIR       stop it, keeping data and port (outage tests)
#   kafka.sh start-broker RUN_DIR      start it again on the same port
#
# Layout: RUN_DIR/kafka/{server.properties,data,kafka.log,kafka.pid,port}.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/test/kafka/pom.xml")
cache=${APP_KAFKA_CACHE:-${HOME:-/root}/.cache/app-kafka}/$version
WAIT_SECONDS=${APP_KAFKA_WAIT_SECONDS:-90}

die()
{
    echo "kafka: $*" >&2
    exit 1
}

say()
{
    echo "kafka: $*"
}

fetch()
{
    [ -f "$cache/lib/.complete" ] && return 0
    command -v mvn >/dev/null || die "mvn is missing: apt-get install -y maven"
    say "fetching Apache Kafka $version from Maven Central into $cache"
    rm -rf "$cache/lib"
    mkdir -p "$cache/lib"
    mvn -q -B -f "$root/test/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$cache/lib" >"$cache/fetch.log" 2>&1 ||
        { tail -n 20 "$cache/fetch.log" >&2; die "could not fetch the Kafka jars"; }
    touch "$cache/lib/.complete"
}

java_args()
{
    jargs=(-Xms256m -Xmx512m -XX:+UseSerialGC -Dkafka.logs.file="$dir/kafka.log"
        -Dlog4j2.configurationFile="$root/test/kafka/log4j2.properties" -cp "$cache/lib/*")
}

java_cmd()
{
    java_args
    java "${jargs[@]}" "$@"
}

port_open()
{
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Answers when the broker serves metadata, not merely when the port is open.
answers()
{
    if command -v kcat >/dev/null; then
        kcat -b "127.0.0.1:$1" -L -m 2 >/dev/null 2>&1
    else
        port_open "$1"
    fi
}

start_broker()
{
    local port
    port=$(cat "$dir/port")
    if [ -f "$dir/kafka.pid" ] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
        say "already running on 127.0.0.1:$port"
        return 0
    fi
    port_open "$port" && die "127.0.0.1:$port is taken by something else"
    java_args
    nohup java "${jargs[@]}" kafka.Kafka "$dir/server.properties" >>"$dir/kafka.out" 2>&1 &
    echo $! >"$dir/kafka.pid"
    local waited=0
    until answers "$port"; do
        if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
            tail -n 30 "$dir/kafka.out" "$dir/kafka.log" >&2 2>/dev/null || true
            die "the broker exited while starting"
        fi
        [ $waited -ge $((WAIT_SECONDS * 2)) ] && {
            tail -n 30 "$dir/kafka.log" >&2 2>/dev/null || true
            die "no answer on 127.0.0.1:$port after ${WAIT_SECONDS}s"
        }
        sleep 0.5
        waited=$((waited + 1))
    done
    say "started on 127.0.0.1:$port (log: $dir/kafka.log)"
}

stop_broker()
{
    [ -f "$dir/kafka.pid" ] || return 0
    local pid
    pid=$(cat "$dir/kafka.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/kafka.pid"
    say "stopped"
}

cmd=${1:-}
case "$cmd" in
available)
    command -v java >/dev/null && { [ -f "$cache/lib/.complete" ] || command -v mvn >/dev/null; }
    exit $?
    ;;
fetch)
    fetch
    exit 0
    ;;
start)
    [ $# -eq 3 ] || die "usage: kafka.sh start RUN_DIR PORT"
    dir=$(mkdir -p "$2/kafka" && cd "$2/kafka" && pwd)
    command -v java >/dev/null || die "java is missing: apt-get install -y default-jre-headless"
    fetch
    if [ ! -f "$dir/server.properties" ]; then
        cport=$(bash "$here/services.sh" free-port "$3")
        sed -e "s|@PORT@|$3|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA@|$dir/data|g" \
            "$root/test/kafka/server.properties" >"$dir/server.properties"
        echo "$3" >"$dir/port"
    fi
    if [ ! -f "$dir/data/meta.properties" ]; then
        cluster=$(java_cmd kafka.tools.StorageTool random-uuid 2>>"$dir/kafka.out")
        java_cmd kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" \
            >>"$dir/kafka.out" 2>&1 || { tail -n 20 "$dir/kafka.out" >&2; die "format failed"; }
    fi
    start_broker
    ;;
start-broker)
    [ $# -eq 2 ] || die "usage: kafka.sh start-broker RUN_DIR"
    dir=$(cd "$2/kafka" && pwd)
    start_broker
    ;;
stop | stop-broker)
    [ $# -eq 2 ] || die "usage: kafka.sh $cmd RUN_DIR"
    [ -d "$2/kafka" ] || exit 0
    dir=$(cd "$2/kafka" && pwd)
    stop_broker
    ;;
*)
    sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
