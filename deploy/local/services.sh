#!/usr/bin/env bash
# A private, loopback-only PostgreSQL 15 and Redis under one run directory, for `make run`
# and `make test`; the system instances are never touched.
#
#   services.sh start RUN_DIR PG_PORT REDIS_PORT   start both (reuses running ones)
#   services.sh stop RUN_DIR                       stop both (fine if already stopped)
#   services.sh start-redis RUN_DIR REDIS_PORT     start Redis only
#   services.sh stop-redis RUN_DIR                 stop Redis only (tests of an outage)
#   services.sh start-postgres RUN_DIR PG_PORT     start PostgreSQL only
#   services.sh stop-postgres RUN_DIR              stop PostgreSQL only (tests of an outage)
#   services.sh restart-postgres RUN_DIR MODE      pg_ctl restart -m MODE (fast or immediate)
#   services.sh status RUN_DIR                     exit 0 only if both answer
#   services.sh env RUN_DIR                        APP_POSTGRES_DSN=... and APP_REDIS_URL=...
#   services.sh free-port [NOT_THIS_PORT]...       a free loopback port from 20000 up to the
#                                                  kernel's ephemeral range (32768)
#
# Layout: RUN_DIR/pg/{data,postgres.log}, RUN_DIR/redis/{appendonlydir,redis.pid,redis.log},
# RUN_DIR/ports (the ports, so stop and env need only RUN_DIR).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

WAIT_SECONDS=${APP_SERVICES_WAIT_SECONDS:-60}

die()
{
    echo "services: $*" >&2
    exit 1
}

say()
{
    echo "services: $*"
}

usage()
{
    sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

is_root()
{
    [ "$(id -u)" = 0 ]
}

check_port()
{
    case "$1" in
    '' | *[!0-9]*) die "port '$1' is not a number" ;;
    esac
    [ "$1" -ge 1 ] && [ "$1" -le 65535 ] || die "port $1 is out of range"
}

# True if something listens on the port: a connect to 127.0.0.1 catches wildcard and
# loopback listeners, ss catches the rest.
port_busy()
{
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        return 0
    fi
    if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; then
        return 0
    fi
    return 1
}

log_tail()
{
    if [ -f "$1" ]; then
        echo "---- last lines of $1 ----" >&2
        tail -n 25 "$1" >&2 || true
        echo "----" >&2
    fi
}

find_pg_bin()
{
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/postgres" ] ||
        die "no PostgreSQL server in /usr/lib/postgresql/*/bin; run: sh deploy/local/deps.sh run"
    echo "$dir"
}

# The postgres server refuses to run as root, so as root it runs as the postgres user,
# from / so that a private working directory does not get in its way.
as_pg()
{
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# ---- run directory and the ports file ----

RUN=""
PG_PORT=""
REDIS_PORT=""
PG_ROOT=""
PG_SOCKET_DIR=""
REC_REDIS_PORT=""

open_run_dir()
{
    [ -n "$1" ] || usage
    case "$1" in
    *"'"* | *'"'* | *$'\n'*) die "run directory '$1' must not contain quotes or newlines" ;;
    esac
    mkdir -p "$1" 2>/dev/null || die "cannot create run directory $1"
    RUN=$(cd "$1" && pwd -P) || die "cannot enter run directory $1"
    # One start or stop at a time per run directory.
    exec 9>"$RUN/.lock"
    flock -w "$WAIT_SECONDS" 9 || die "another services.sh holds $RUN/.lock"
    read_ports
    REC_REDIS_PORT=$REDIS_PORT
}

read_ports()
{
    [ -f "$RUN/ports" ] || return 0
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
        PG_PORT) PG_PORT=$value ;;
        REDIS_PORT) REDIS_PORT=$value ;;
        PG_ROOT) PG_ROOT=$value ;;
        PG_SOCKET_DIR) PG_SOCKET_DIR=$value ;;
        esac
    done <"$RUN/ports"
}

write_ports()
{
    {
        echo "PG_PORT=$PG_PORT"
        echo "REDIS_PORT=$REDIS_PORT"
        echo "PG_ROOT=$PG_ROOT"
        echo "PG_SOCKET_DIR=$PG_SOCKET_DIR"
    } >"$RUN/ports.tmp"
    mv -f "$RUN/ports.tmp" "$RUN/ports"
}

# ---- PostgreSQL ----

PGBIN=""

# Picks the real folder of the PostgreSQL files (RUN_DIR/pg, or a /tmp folder that RUN_DIR/pg
# links to when the postgres user cannot reach RUN_DIR) and the Unix socket folder.
pg_paths()
{
    PGBIN=$(find_pg_bin)
    local link="$RUN/pg"
    if is_root; then
        id postgres >/dev/null 2>&1 ||
            die "no 'postgres' user; install the server: sh deploy/local/deps.sh run"
        if [ ! -e "$link" ] && [ ! -L "$link" ]; then
            mkdir -p "$link"
            chown postgres: "$link"
            if ! runuser -u postgres -- test -w "$link" -a -x "$link" 2>/dev/null; then
                # A parent folder is closed to other users (e.g. under /root).
                rmdir "$link"
                local tmp
                tmp=$(mktemp -d /tmp/app-pg.XXXXXX)
                ln -s "$tmp" "$link"
                say "postgres cannot reach $RUN; its files are in $tmp (linked from $link)"
            fi
        fi
    fi
    if [ -L "$link" ]; then
        PG_ROOT=$(readlink -f "$link")
    else
        PG_ROOT=$link
    fi
    mkdir -p "$PG_ROOT"
    is_root && chown postgres: "$PG_ROOT"

    # A Unix socket path is at most 107 bytes: ".s.PGSQL.NNNNN" must fit after the folder.
    PG_SOCKET_DIR=$PG_ROOT
    if [ ${#PG_SOCKET_DIR} -gt 90 ] || [[ "$PG_SOCKET_DIR" =~ [^A-Za-z0-9._/+-] ]]; then
        PG_SOCKET_DIR=/tmp/app-pgsock-$(printf '%s' "$PG_ROOT" | cksum | cut -d' ' -f1)
    fi
    mkdir -p "$PG_SOCKET_DIR"
    chmod 700 "$PG_SOCKET_DIR"
    is_root && chown postgres: "$PG_SOCKET_DIR"
    return 0
}

pg_running()
{
    [ -f "$PG_ROOT/data/PG_VERSION" ] &&
        as_pg "$PGBIN/pg_ctl" -D "$PG_ROOT/data" status >/dev/null 2>&1
}

pg_running_port()
{
    sed -n 4p "$PG_ROOT/data/postmaster.pid" 2>/dev/null
}

psql_admin()
{
    PGCONNECT_TIMEOUT=5 PGSSLMODE=disable "$PGBIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

# PostgreSQL's cache: an eighth of the machine's memory, between PostgreSQL's own default
# (128 MB, sized for the smallest machines) and 1 GB. The log and its indexes outgrow 128 MB
# within one make bench, and from then on every append evicts pages: at half the write rate
# p99 went from about 10 ms to 60-70 ms.
pg_shared_buffers_mb()
{
    local kb
    kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null)
    kb=$((${kb:-0} / 8 / 1024))
    [ "$kb" -lt 128 ] && kb=128
    [ "$kb" -gt 1024 ] && kb=1024
    echo "$kb"
}

pg_write_config()
{
    local data="$PG_ROOT/data"
    # Loaded after postgresql.conf, rewritten at every start so a new port takes effect.
    if ! grep -q "^include_if_exists = 'app_local.conf'" "$data/postgresql.conf"; then
        echo "include_if_exists = 'app_local.conf'" >>"$data/postgresql.conf"
    fi
    cat >"$data/app_local.conf" <<EOF
# Written by deploy/local/services.sh at every start: a private, loopback-only instance.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 300
shared_buffers = $(pg_shared_buffers_mb)MB
fsync = on
synchronous_commit = on
logging_collector = off
timezone = 'UTC'
EOF
    cat >"$data/pg_hba.conf" <<EOF
# Written by deploy/local/services.sh: trust, but only over the socket and the loopback.
local all all trust
host all all 127.0.0.1/32 trust
EOF
    is_root && chown postgres: "$data/app_local.conf" "$data/pg_hba.conf"
    return 0
}

pg_start()
{
    pg_paths
    local data="$PG_ROOT/data" log="$PG_ROOT/postgres.log"
    if pg_running; then
        local running
        running=$(pg_running_port)
        [ "$running" = "$PG_PORT" ] ||
            die "PostgreSQL of $RUN already runs on port $running, not $PG_PORT; stop it first"
        say "postgres: reusing the running instance on 127.0.0.1:$PG_PORT"
    else
        if port_busy "$PG_PORT"; then
            die "port $PG_PORT is taken by another process (not the PostgreSQL of $RUN);" \
                "stop it or choose another port"
        fi
        if [ ! -f "$data/PG_VERSION" ]; then
            say "postgres: initdb in $data"
            if [ -d "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
                die "$data exists but holds no database; remove it"
            fi
            as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
                --no-locale >"$PG_ROOT/initdb.log" 2>&1 || {
                log_tail "$PG_ROOT/initdb.log"
                die "initdb failed"
            }
        fi
        pg_write_config
        is_root && [ -e "$log" ] && chown postgres: "$log"
        # 9>&-: the server must not inherit (and so hold) the lock of the run directory.
        if ! as_pg "$PGBIN/pg_ctl" -D "$data" -l "$log" -w -t "$WAIT_SECONDS" start \
            >/dev/null 2>&1 9>&-; then
            log_tail "$log"
            die "PostgreSQL did not start on 127.0.0.1:$PG_PORT (log: $log)"
        fi
        say "postgres: started on 127.0.0.1:$PG_PORT (log: $log)"
    fi
    local i=0
    until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; do
        i=$((i + 1))
        if [ $i -ge "$WAIT_SECONDS" ]; then
            log_tail "$log"
            die "PostgreSQL on 127.0.0.1:$PG_PORT does not answer after ${WAIT_SECONDS}s"
        fi
        sleep 1
    done
    # The application's role owns its database; it needs no superuser rights. CREATEROLE lets
    # `app migrate` with postgres.context_roles create a role per context (an older run
    # directory's app gets it too).
    if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'app'")" != 1 ]; then
        psql_admin -c "CREATE ROLE app LOGIN CREATEDB CREATEROLE" || die "cannot create role app"
    elif [ "$(psql_admin -c "SELECT rolcreaterole FROM pg_roles WHERE rolname = 'app'")" != t ]; then
        psql_admin -c "ALTER ROLE app CREATEROLE" || die "cannot give role app CREATEROLE"
    fi
    if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'app'")" != 1 ]; then
        psql_admin -c "CREATE DATABASE app OWNER app" || die "cannot create database app"
    fi
}

pg_stop()
{
    [ -e "$RUN/pg" ] || return 0
    pg_paths
    if pg_running; then
        as_pg "$PGBIN/pg_ctl" -D "$PG_ROOT/data" -m fast -w -t "$WAIT_SECONDS" stop \
            >/dev/null 2>&1 || {
            log_tail "$PG_ROOT/postgres.log"
            die "PostgreSQL of $RUN did not stop"
        }
        say "postgres: stopped"
    fi
}

# ---- Redis ----

redis_pid()
{
    local pid
    pid=$(cat "$RUN/redis/redis.pid" 2>/dev/null) || return 1
    case "$pid" in
    '' | *[!0-9]*) return 1 ;;
    esac
    kill -0 "$pid" 2>/dev/null || return 1
    # A stale pid file may name a recycled pid that is no Redis.
    if [ -r "/proc/$pid/comm" ] && ! grep -q redis "/proc/$pid/comm"; then
        return 1
    fi
    echo "$pid"
}

redis_ping()
{
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

redis_start()
{
    command -v redis-server >/dev/null 2>&1 ||
        die "redis-server not found; run: sh deploy/local/deps.sh run"
    local dir="$RUN/redis"
    mkdir -p "$dir"
    if redis_pid >/dev/null; then
        [ "$REC_REDIS_PORT" = "$REDIS_PORT" ] ||
            die "Redis of $RUN already runs on port $REC_REDIS_PORT, not $REDIS_PORT; stop it first"
        say "redis: reusing the running instance on 127.0.0.1:$REDIS_PORT"
    else
        rm -f "$dir/redis.pid"
        if port_busy "$REDIS_PORT"; then
            die "port $REDIS_PORT is taken by another process (not the Redis of $RUN);" \
                "stop it or choose another port"
        fi
        # The append-only file keeps the read models from one `make run` to the next.
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --appendonly yes --save '' >/dev/null 2>&1 9>&- || {
            log_tail "$dir/redis.log"
            die "redis-server failed to start on 127.0.0.1:$REDIS_PORT"
        }
        say "redis: started on 127.0.0.1:$REDIS_PORT (log: $dir/redis.log)"
    fi
    write_ports
    local i=0
    until redis_ping "$REDIS_PORT"; do
        i=$((i + 1))
        if [ $i -ge $((WAIT_SECONDS * 5)) ]; then
            log_tail "$dir/redis.log"
            die "Redis on 127.0.0.1:$REDIS_PORT does not answer after ${WAIT_SECONDS}s"
        fi
        sleep 0.2
    done
}

redis_stop()
{
    local pid i=0
    pid=$(redis_pid) || {
        rm -f "$RUN/redis/redis.pid"
        return 0
    }
    # On SIGTERM Redis flushes the append-only file and exits (no RDB: save is off).
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -ge $((WAIT_SECONDS * 10)) ]; then
            echo "services: Redis (pid $pid) ignores SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$RUN/redis/redis.pid"
    say "redis: stopped"
}

# ---- commands ----

cmd=${1:-}
if [ "$cmd" = free-port ]; then
    shift
    # Below the kernel's ephemeral range: a service stopped in a test (a restart, an outage)
    # must find its port free when it starts again, and an outgoing connection's local port,
    # drawn from that range, could be holding it by then.
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    top=$((low - 1))
    [ "$top" -gt 21000 ] || top=60000
    for _ in $(seq 1 500); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % (top - 20000 + 1)))
        case " $* " in
        *" $port "*) continue ;;
        esac
        port_busy "$port" || {
            echo "$port"
            exit 0
        }
    done
    die "no free port found in 20000-$top"
fi
[ $# -ge 2 ] || usage
case "$cmd" in
start)
    [ $# -eq 4 ] || usage
    check_port "$3"
    check_port "$4"
    [ "$3" != "$4" ] || die "PostgreSQL and Redis need different ports"
    open_run_dir "$2"
    PG_PORT=$3
    REDIS_PORT=$4
    pg_start
    write_ports
    redis_start
    ;;
start-redis)
    [ $# -eq 3 ] || usage
    check_port "$3"
    open_run_dir "$2"
    REDIS_PORT=$3
    redis_start
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || exit 0
    open_run_dir "$2"
    status=0
    redis_stop || status=1
    (pg_stop) || status=1
    exit $status
    ;;
stop-redis)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || exit 0
    open_run_dir "$2"
    redis_stop
    ;;
start-postgres)
    [ $# -eq 3 ] || usage
    check_port "$3"
    open_run_dir "$2"
    PG_PORT=$3
    pg_start
    write_ports
    ;;
stop-postgres)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || exit 0
    open_run_dir "$2"
    pg_stop
    ;;
restart-postgres)
    [ $# -eq 3 ] || usage
    case "$3" in
    fast | immediate) ;;
    *) die "restart-postgres: MODE is fast or immediate, not $3" ;;
    esac
    open_run_dir "$2"
    pg_paths
    pg_running || die "PostgreSQL of $RUN is not running"
    # 9>&-: the server must not inherit (and so hold) the lock of the run directory.
    as_pg "$PGBIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/postgres.log" -m "$3" -w \
        -t "$WAIT_SECONDS" restart >/dev/null 2>&1 9>&- || {
        log_tail "$PG_ROOT/postgres.log"
        die "PostgreSQL of $RUN did not restart (-m $3)"
    }
    say "postgres: restarted (-m $3)"
    ;;
status)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || die "no run directory $2"
    open_run_dir "$2"
    status=0
    if [ -e "$RUN/pg" ] && pg_paths && pg_running; then
        echo "postgres: running on 127.0.0.1:$(pg_running_port) (data: $PG_ROOT/data)"
    else
        echo "postgres: stopped"
        status=1
    fi
    if [ -n "$REDIS_PORT" ] && redis_pid >/dev/null && redis_ping "$REDIS_PORT"; then
        echo "redis: running on 127.0.0.1:$REDIS_PORT (dir: $RUN/redis)"
    else
        echo "redis: stopped"
        status=1
    fi
    exit $status
    ;;
env)
    [ $# -eq 2 ] || usage
    [ -f "$2/ports" ] || die "no $2/ports: start the services first"
    RUN=$2
    read_ports
    echo "APP_POSTGRES_DSN=host=127.0.0.1 port=$PG_PORT dbname=app user=app"
    echo "APP_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    ;;
*)
    usage
    ;;
esac
