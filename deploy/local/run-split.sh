#!/usr/bin/env bash
# `make run-split`: the split deployment on one machine. Under ./run it starts a Kafka broker
# (the tests' one, deploy/local/kafka.sh), one PostgreSQL holding a database per service with
# a role per context, and Redis; then three ./app processes, one context each:
#   user       http://127.0.0.1:8081   database app_user,      role user_service
#   inventory  http://127.0.0.1:8082   database app_inventory, role inventory_service
#   order      http://127.0.0.1:8083   database app_order,     role order_service
# The order service sends commands and queries to the other two over HTTP (remote.*) and reads
# their events from Kafka into its inbox (kafka.inbox). It prints what each serves; Ctrl-C
# stops the three and the private services. Logs: run/split/<context>.log.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

cd "$(dirname "$0")/../.."
root=$(pwd -P)
run_dir=$root/run
services=$root/deploy/local/services.sh
kafka=$root/deploy/local/kafka.sh
config=${APP_RUN_CONFIG:-config/app.yaml}
pg_port=55432
redis_port=56379
kafka_port=${APP_SPLIT_KAFKA_PORT:-59092}
contexts=(user inventory order)
declare -A port=([user]=8081 [inventory]=8082 [order]=8083)

die()
{
    echo "run-split: $*" >&2
    exit 1
}

[ -x ./app ] || die "./app is not built; use 'make run-split'"
bash "$kafka" available || die "the Kafka broker needs Java and Maven: sh deploy/local/deps.sh kafka"
for c in "${contexts[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port[$c]}") 2>/dev/null; then
        die "port ${port[$c]} (the $c service) is in use"
    fi
done

pids=()
stop_all()
{
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    bash "$kafka" stop "$run_dir" || true
    bash "$services" stop "$run_dir" || true
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

bash "$services" start "$run_dir" "$pg_port" "$redis_port"
bash "$kafka" start "$run_dir" "$kafka_port"

admin="host=127.0.0.1 port=$pg_port user=app"
# Where the order service finds the other two.
remotes=(APP_REMOTE_USER=http://127.0.0.1:${port[user]}
    APP_REMOTE_INVENTORY=http://127.0.0.1:${port[inventory]})
for c in "${contexts[@]}"; do
    db=app_$c
    if [ "$(psql -X -tA -d "$admin dbname=app" \
        -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
        psql -X -q -d "$admin dbname=app" -c "CREATE DATABASE $db" >/dev/null
    fi
    # The administrator migrates (the order service's inboxes too); the service then
    # connects as its context's role, which owns what was made.
    extra=()
    [ "$c" != order ] || extra=("${remotes[@]}")
    env APP_CONTEXTS="$c" APP_POSTGRES_DSN="$admin dbname=$db" APP_POSTGRES_CONTEXT_ROLES=true \
        APP_KAFKA_ENABLED=true APP_KAFKA_INBOX=true "${extra[@]}" \
        ./app --config "$config" migrate
done

# One token for the internal endpoints, new at each start; its SHA-256 is what they check.
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
token_sha256=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
mkdir -p "$run_dir/split"

start()
{
    local c=$1
    shift
    (
        trap - INT QUIT
        export APP_CONTEXTS=$c APP_HTTP_LISTEN=127.0.0.1:${port[$c]} \
            APP_POSTGRES_DSN="host=127.0.0.1 port=$pg_port dbname=app_$c user=${c}_service" \
            APP_REDIS_KEY_PREFIX="$c:" APP_KAFKA_ENABLED=true \
            APP_KAFKA_BROKERS=127.0.0.1:$kafka_port APP_KAFKA_INBOX=true \
            APP_INTERNAL_TOKEN_SHA256=$token_sha256 APP_REMOTE_TOKEN=$token
        for kv in "$@"; do
            export "${kv?}"
        done
        exec ./app --config "$config" >"$run_dir/split/$c.log" 2>&1
    ) &
    pids+=($!)
}

live()
{
    local reply
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    read -r reply <&3 || true
    exec 3>&-
    case "$reply" in
    *" 200 "*) return 0 ;;
    esac
    return 1
}

wait_live()
{
    local c=$1 i
    for ((i = 0; i < 300; i++)); do
        live "${port[$c]}" 2>/dev/null && return 0
        sleep 0.1
    done
    tail -n 20 "$run_dir/split/$c.log" >&2 || true
    die "the $c service did not come up (log: run/split/$c.log)"
}

start user
start inventory
start order "${remotes[@]}"
for c in "${contexts[@]}"; do
    wait_live "$c"
done

for c in "${contexts[@]}"; do
    echo
    echo "run-split: $c on http://127.0.0.1:${port[$c]} (Kong service \"$c\" in deploy/kong/kong.yml):"
    extra=()
    [ "$c" != order ] || extra=("${remotes[@]}")
    env APP_CONTEXTS="$c" "${extra[@]}" ./app --config "$config" routes |
        grep -E "[[:space:]]$c\$" | sed 's/^/  /'
done
echo
echo "run-split: Kafka on 127.0.0.1:$kafka_port; data in $run_dir; logs in $run_dir/split;" \
    "press Ctrl-C to stop everything"

# Until Ctrl-C, or until one service ends by itself: then the others stop too.
set +e
wait -n "${pids[@]}"
status=$?
set -e
echo "run-split: a service exited with status $status; stopping the others" >&2
exit "$status"
