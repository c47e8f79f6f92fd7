#!/usr/bin/env bash
# make bench: throughput of the release build on this machine, each figure reported as a
# ratio against a baseline measured in the same run, so results compare across machines.
# The app runs with the default configuration (log level info: every request logged).
#   0. the ceilings: pgbench appending one registration's event per transaction with 8
#      clients (test/bench/append_ceiling.sql, into a schema made by the log's own migration),
#      and redis-benchmark GET with 50 clients
#   1. GET /health/live            the HTTP stack alone (baseline for reads)
#   2. GET /v1/users/{id}          from the read model in Redis, on the HTTP loop thread; the
#      same for a product and an order; the user's again with every read on a worker
#      (redis.loop_reads=false); then with an API key and a rate limit (against the plain read)
#   3. POST /v1/users, max_batch=1 one transaction per command (baseline for writes)
#   4. POST /v1/users, group commit concurrent commands share a transaction
#   5. POST /v1/users, each with an Idempotency-Key (against 4: the cost of recording keys)
#   6. rebuilding the user read model from 100,000 events: the live projection after Redis
#      lost its data (baseline) against `app replay` (buffered, pipelined writes)
#   7. adding stock to a product with a 10,000-event stream, one request at a time: folding
#      the whole stream (snapshots.product=0, baseline) against loading from a snapshot, both
#      with the aggregate cache off, and against the default (the cache)
#   8. orders the placement saga settles per second, from the first order placed (for 2 s)
#      to the last one settled: one at a time (subscriptions.lanes=1, baseline) against
#      several at once (the default)
#      then orders as products age: BENCH_ORDERS (default 100,000) in ten rounds, each
#      round's confirmed orders shipped after it; the mean settle rate against the
#      registrations of 4, and the last round against the first
#   9. the same with the contexts split into three services (one database each, Kafka and
#      HTTP between them) against the monolith's figure of 8
#  10. the Kafka inbox: events a split order service copies from the user topic into its
#      database per second, against the rate the user service's relay produced them
#  13. latency under a constant arrival rate (build/paced, timed from when each request was
#      due): the read of 2 and the write of 4, each at half the rate wrk reached, p50 and p99
#  12. the access log's cost: the read of 2 and the write of 4 with log level warn (no line
#      per request), each against itself at info
#  11. tracing on, every trace sampled (ratio 1.0), exporting to a real OpenTelemetry
#      Collector (test/tools/otelcol): the read of 2 and the group-commit write of 4, each
#      against itself untraced
# Private PostgreSQL, Redis and Kafka (deploy/local/kafka.sh) on free ports under
# build/bench-run; nothing else touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
run_dir=build/bench-run
services=deploy/local/services.sh

command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install -y wrk" >&2; exit 1; }
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n 1)
[ -n "$pgbench" ] || { echo "bench: pgbench is missing: sh deploy/local/deps.sh" >&2; exit 1; }
command -v redis-benchmark >/dev/null ||
    { echo "bench: redis-benchmark is missing: apt-get install -y redis-tools" >&2; exit 1; }
bash deploy/local/kafka.sh available ||
    { echo "bench: the split figures need a Kafka broker: sh deploy/local/deps.sh kafka" >&2; exit 1; }
[ -x ./app ] || { echo "bench: build ./app first (make app)" >&2; exit 1; }
[ -x build/paced ] || { echo "bench: build build/paced first (make build/paced)" >&2; exit 1; }

rm -rf "$run_dir"
mkdir -p "$run_dir"
pg_port=$(bash $services free-port)
redis_port=$(bash $services free-port "$pg_port")
http_port=$(bash $services free-port "$pg_port" "$redis_port")
app_pid=
svc_pids=()
cleanup()
{
    [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null && wait "$app_pid" 2>/dev/null
    local pid
    for pid in "${svc_pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    bash deploy/local/kafka.sh stop "$run_dir" >/dev/null 2>&1 || true
    bash $services stop "$run_dir" >/dev/null 2>&1 || true
}
otel_pid=
trap 'cleanup; [ -z "$otel_pid" ] || kill "$otel_pid" 2>/dev/null || true' EXIT
bash $services start "$run_dir" "$pg_port" "$redis_port" >/dev/null
while IFS='=' read -r name value; do
    export "$name=$value"
done < <(bash $services env "$run_dir")
export APP_HTTP_LISTEN=127.0.0.1:$http_port
base=http://127.0.0.1:$http_port

start_app()
{
    ./app --config config/app.yaml 2>>"$run_dir/app.log" &
    app_pid=$!
    for _ in $(seq 100); do
        curl -fs "$base/health/live" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: the app did not start; see $run_dir/app.log" >&2
    exit 1
}
max_rss_kb=0
max_rss_phase=
# What the app ran last, named in the footprint line; in a file, since bench() runs in a
# command substitution's subshell.
set_phase() { echo "$1" >"$run_dir/phase"; }
set_phase start
stop_app()
{
    local phase
    phase=$(cat "$run_dir/phase")
    # The resident set at the end of each run; the largest is reported (footprint).
    local rss
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$app_pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -le "$max_rss_kb" ] || { max_rss_kb=$rss; max_rss_phase=$phase; }
    echo "${rss:-0} $phase" >>"$run_dir/rss.txt"
    kill "$app_pid"
    wait "$app_pid" || true
    app_pid=
}
rate() # wrk output -> requests per second
{
    awk '/^Requests\/sec:/ {print $2}'
}
non2xx() # wrk output -> failed requests
{
    awk '/Non-2xx or 3xx responses:/ {print $5} END {}' | head -n 1
}
bench() # name url [wrk args...]
{
    local name=$1 url=$2 out
    shift 2
    set_phase "$name"
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@" "$url")
    local bad
    bad=$(echo "$out" | non2xx)
    if [ -n "$bad" ]; then
        echo "bench: $name: $bad responses were not 2xx" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | rate
}

echo "bench: $(nproc) cores, $DURATION per run, $CONNECTIONS connections, $THREADS wrk threads"

# 0. The ceilings: what PostgreSQL and Redis do by themselves on this machine, now.
seconds=${DURATION%s}
PGOPTIONS='--client-min-messages=warning' psql "$APP_POSTGRES_DSN" -qX -v ON_ERROR_STOP=1 \
    -c 'DROP SCHEMA IF EXISTS bench_ceiling CASCADE' -c 'CREATE SCHEMA bench_ceiling' >/dev/null
sed 's/{{schema}}/bench_ceiling/g' adapters/postgres/migrations/001_event_store.sql |
    PGOPTIONS='--client-min-messages=warning' psql "$APP_POSTGRES_DSN" -qX -v ON_ERROR_STOP=1 >/dev/null
pg_ceiling=$("$pgbench" -n -M prepared -c 8 -j 2 -T "$seconds" -f test/bench/append_ceiling.sql \
    "$APP_POSTGRES_DSN" 2>&1 | awk '/^tps = / {print $3; exit}')
[ -n "$pg_ceiling" ] || { echo "bench: pgbench gave no figure" >&2; exit 1; }
PGOPTIONS='--client-min-messages=warning' psql "$APP_POSTGRES_DSN" -qX \
    -c 'DROP SCHEMA bench_ceiling CASCADE' >/dev/null
redis_ceiling=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -c 50 -n 400000 -t get -q 2>/dev/null |
    tr '\r' '\n' | awk '/^GET: / {print $2}' | tail -n 1)
[ -n "$redis_ceiling" ] || { echo "bench: redis-benchmark gave no figure" >&2; exit 1; }

start_app
id=$(curl -fs "$base/v1/users" -H 'Content-Type: application/json' \
    -d '{"email":"bench.reader@bench.example","name":"Reader"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
for _ in $(seq 50); do curl -fs "$base/v1/users/$id" >/dev/null && break; sleep 0.1; done
curl -fs "$base/v1/products" -H 'Content-Type: application/json' -d \
    '{"sku":"BENCH-READ","name":"Read","price":{"amount":100,"currency":"EUR"},"stock":1000}' >/dev/null
for _ in $(seq 50); do curl -fs "$base/v1/products/BENCH-READ" >/dev/null && break; sleep 0.1; done
order=""
for _ in $(seq 50); do # the order context learns of the new customer and product a moment later
    order=$(curl -fs "$base/v1/orders" -H 'Content-Type: application/json' -d \
        "{\"customerId\":\"$id\",\"lines\":[{\"sku\":\"BENCH-READ\",\"quantity\":1}]}" |
        sed -n 's/.*"id":"\([^"]*\)".*/\1/p') && [ -n "$order" ] && break
    sleep 0.1
done
[ -n "$order" ] || { echo "bench: could not place the order to read" >&2; exit 1; }
for _ in $(seq 50); do curl -fs "$base/v1/orders/$order" >/dev/null && break; sleep 0.1; done
live=$(bench live "$base/health/live")
read_user=$(bench get-user "$base/v1/users/$id")
read_product=$(bench get-product "$base/v1/products/BENCH-READ")
read_order=$(bench get-order "$base/v1/orders/$order")
stop_app
# The same read with every query on a worker (the loop thread does not read Redis itself).
APP_REDIS_LOOP_READS=false start_app
read_workers=$(bench get-user-workers "$base/v1/users/$id")
# The same read with an API key required and a rate limit too high to refuse anything: the
# cost of hashing the key and of every connection drawing from the one caller's bucket.
stop_app
# Start-up: from exec to /health/ready answering 200, migrations already applied; the median
# of five starts (curl every 5 ms, so the figure is a few ms coarse).
ready_ms=()
for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    ./app --config config/app.yaml 2>>"$run_dir/app.log" &
    app_pid=$!
    until curl -fs "$base/health/ready" >/dev/null 2>&1; do
        kill -0 "$app_pid" 2>/dev/null || { echo "bench: the app died; see $run_dir/app.log" >&2; exit 1; }
        sleep 0.005
    done
    ready_ms+=($((($(date +%s%N) - t0) / 1000000)))
    stop_app
done
ready_median=$(printf '%s\n' "${ready_ms[@]}" | sort -n | sed -n 3p)
bench_key=bench-key-0123456789
APP_AUTH_ENABLED=true APP_AUTH_API_KEYS="bench:$(printf %s $bench_key | sha256sum | cut -d' ' -f1)" \
    APP_RATE_LIMIT_REQUESTS_PER_MINUTE=60000000 APP_RATE_LIMIT_BURST=1000000 start_app
read_keyed=$(bench get-user-keyed "$base/v1/users/$id" -H "apikey: $bench_key")
stop_app
start_app
# Write throughput drifts down as the tables grow, so with and without keys run as A B B A
# and each is the mean of its two runs.
grouped_a=$(bench register "$base/v1/users" -s test/bench/register.lua)
keyed_a=$(BENCH_KEYED=1 bench register-keyed "$base/v1/users" -s test/bench/register.lua)
keyed_b=$(BENCH_KEYED=1 bench register-keyed "$base/v1/users" -s test/bench/register.lua)
grouped_b=$(bench register "$base/v1/users" -s test/bench/register.lua)
grouped=$(awk -v a="$grouped_a" -v b="$grouped_b" 'BEGIN { print (a + b) / 2 }')
keyed=$(awk -v a="$keyed_a" -v b="$keyed_b" 'BEGIN { print (a + b) / 2 }')
stop_app
APP_POSTGRES_MAX_BATCH=1 start_app
single=$(bench register-unbatched "$base/v1/users" -s test/bench/register.lua)
stop_app

# 13. Latency at half the maximum rate of the read and of the write (wrk's figures above),
# constant arrival rate, 32 connections.
paced() # rate [paced args...] -> "p50 p99"
{
    local rate=$1 out
    shift
    out=$(build/paced -a "127.0.0.1:$http_port" -r "$rate" -d "${DURATION%s}" -c 32 "$@") || {
        echo "bench: paced: requests failed: $out" >&2
        exit 1
    }
    echo "$out" | sed 's/.* p50_ms=\([0-9.]*\) .* p99_ms=\([0-9.]*\) .*/\1 \2/'
}
half_read=$(awk -v r="$read_user" 'BEGIN { printf "%d", r / 2 }')
half_write=$(awk -v r="$grouped" 'BEGIN { printf "%d", r / 2 }')
start_app
out=$(paced "$half_read" -p "/v1/users/$id")
read -r read_p50 read_p99 <<<"$out"
out=$(paced "$half_write" -m POST -p /v1/users \
    -b "{\"email\":\"paced%n.$(date +%s)@bench.example\",\"name\":\"Paced\"}")
read -r write_p50 write_p99 <<<"$out"
stop_app

# 12. The access log: the same read and write with no line per request, each against a run
# at info right after it (writes drift down as the tables grow).
APP_LOG_LEVEL=warn start_app
read_quiet=$(bench get-user-quiet "$base/v1/users/$id")
write_quiet=$(bench register-quiet "$base/v1/users" -s test/bench/register.lua)
stop_app
start_app
read_logged=$(bench get-user-logged "$base/v1/users/$id")
write_logged=$(bench register-logged "$base/v1/users" -s test/bench/register.lua)
stop_app

# Tracing on at ratio 1.0, every span exported to a real collector (its debug exporter only
# counts them). Writes drift down as the tables grow: the untraced write is measured again
# right after, and the traced one is held against the mean of the two.
otelcol=$(sh test/tools/otelcol/build.sh)
otel_port=$(bash $services free-port "$pg_port" "$redis_port" "$http_port")
printf 'receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:%s\n%s\n' \
    "$otel_port" 'exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]' >"$run_dir/otelcol.yaml"
"$otelcol" --config "$run_dir/otelcol.yaml" >"$run_dir/otelcol.log" 2>&1 &
otel_pid=$!
for _ in $(seq 100); do grep -q 'Everything is ready' "$run_dir/otelcol.log" && break; sleep 0.1; done
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$otel_port start_app
read_traced=$(bench get-user-traced "$base/v1/users/$id")
traced=$(bench register-traced "$base/v1/users" -s test/bench/register.lua)
spans() { curl -fs "$base/metrics" | awk -v o="$1" '$1 == "tracing_spans_total{outcome=\"" o "\"}" {print $2}'; }
spans_exported=$(spans exported)
spans_dropped=$(spans dropped)
[ "${spans_exported:-0}" != 0 ] || { echo "bench: tracing exported no span" >&2; exit 1; }
stop_app
start_app
grouped_c=$(bench register "$base/v1/users" -s test/bench/register.lua)
stop_app
kill "$otel_pid" && wait "$otel_pid" 2>/dev/null || true
otel_pid=
untraced=$(awk -v a="$grouped_b" -v b="$grouped_c" 'BEGIN { print (a + b) / 2 }')

# 100,000 user events (25,000 users, each registered and then changing email three times),
# written straight into the log while no app runs.
REPLAY_USERS=${BENCH_REPLAY_USERS:-25000}
psql "$APP_POSTGRES_DSN" -qX -v ON_ERROR_STOP=1 <<SQL
INSERT INTO user_ctx.events (stream_id, stream_version, event_id, event_type, schema_version,
                             data, metadata)
SELECT 'user-' || u.id, v,
       gen_random_uuid(),
       CASE WHEN v = 1 THEN 'user.user.registered' ELSE 'user.user.email_changed' END, 1,
       CASE WHEN v = 1
            THEN jsonb_build_object('userId', u.id, 'email', 'r' || u.i || '@replay.example',
                                    'name', 'Replay ' || u.i)
            ELSE jsonb_build_object('userId', u.id,
                                    'email', 'r' || u.i || '.' || v || '@replay.example',
                                    'previousEmail', 'r' || u.i || '@replay.example')
       END,
       '{"correlationId":"bench"}'::jsonb
FROM (SELECT i, gen_random_uuid()::text AS id FROM generate_series(1, $REPLAY_USERS) i) u,
     generate_series(1, 4) v
ORDER BY u.i, v;
SQL
user_events=$(psql "$APP_POSTGRES_DSN" -qtAX -c "SELECT count(*) FROM user_ctx.events")
user_head=$(psql "$APP_POSTGRES_DSN" -qtAX -c "SELECT max(global_position) FROM user_ctx.events")

# Baseline: Redis comes back empty; the live projection notices and rebuilds by itself.
redis-cli -u "$APP_REDIS_URL" FLUSHALL >/dev/null
set_phase "rebuilding the user read model"
t0=$(date +%s.%N)
start_app
until curl -fs "$base/health/ready" | grep -q "\"user.projection\":{\"status\":\"running\",\"checkpoint\":$user_head,"; do
    sleep 0.05
done
t1=$(date +%s.%N)
stop_app
live_rebuild=$(awk -v n="$user_events" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')

# `app replay` of the same log (no app running: it switches by itself).
replay_out=$(./app --config config/app.yaml replay --projection user.projection)
replayed=$(echo "$replay_out" | sed -n 's/.*events replayed in .* (\([0-9]*\) events\/s).*/\1/p')
echo "$replay_out" | grep 'events replayed'

# A product whose stream has 10,000 events: created and given stock once through the API,
# then that stock event copied 9,998 times straight into the log while no app runs.
set_phase "creating the product of 10,000 events"
APP_SNAPSHOTS_PRODUCT=0 start_app
curl -fs "$base/v1/products" -H 'Content-Type: application/json' -d \
    '{"sku":"BENCH-SNAP","name":"Bench","price":{"amount":100,"currency":"EUR"},"stock":0}' >/dev/null
curl -fs "$base/v1/products/BENCH-SNAP/stock" -H 'Content-Type: application/json' \
    -d '{"quantity":1}' >/dev/null
stop_app
psql "$APP_POSTGRES_DSN" -qX -v ON_ERROR_STOP=1 <<SQL
INSERT INTO inventory_ctx.events (stream_id, stream_version, event_id, event_type,
                                  schema_version, data, metadata)
SELECT e.stream_id, e.stream_version + g, gen_random_uuid(), e.event_type, e.schema_version,
       e.data, e.metadata
FROM inventory_ctx.events e, generate_series(1, 9998) g
WHERE e.stream_id = 'product-BENCH-SNAP' AND e.stream_version = 2
ORDER BY g;
SQL
product_events=$(psql "$APP_POSTGRES_DSN" -qtAX -c \
    "SELECT count(*) FROM inventory_ctx.events WHERE stream_id = 'product-BENCH-SNAP'")
stock_url="$base/v1/products/BENCH-SNAP/stock"
# Snapshots against folding with the aggregate cache off (each load then reads the stream);
# then the default, where a load reads one event past what the process has cached.
APP_SNAPSHOTS_PRODUCT=0 APP_SNAPSHOTS_CACHE=0 start_app
unsnapped=$(CONNECTIONS=1 THREADS=1 bench add-stock-folding "$stock_url" -s test/bench/add_stock.lua)
stop_app
APP_SNAPSHOTS_PRODUCT=100 APP_SNAPSHOTS_CACHE=0 start_app
curl -fs "$stock_url" -H 'Content-Type: application/json' -d '{"quantity":1}' >/dev/null
snapped=$(CONNECTIONS=1 THREADS=1 bench add-stock-snapshot "$stock_url" -s test/bench/add_stock.lua)
stop_app
start_app
cached=$(CONNECTIONS=1 THREADS=1 bench add-stock-cached "$stock_url" -s test/bench/add_stock.lua)
stop_app

# The saga: 20 products, 100 customers, two-line orders for 2 s, then until all settled.
saga_checkpoint() # base url
{
    curl -fs "$1/health/ready" |
        sed -n 's/.*"order.placement_saga":{"status":"[a-z]*","checkpoint":\([0-9]*\).*/\1/p' |
        grep . || echo 0
}
caught_up() # [base url]: every subscriber running at the head of its log
{
    local ready
    ready=$(curl -fs "${1:-$base}/health/ready") || return 1
    ! grep -qE '"lagEvents":[1-9]|"status":"(rebuilding|failing|standby)"' <<<"$ready"
}
settle_rate() # base url, DSN of the order context's database -> orders settled per second
{
    local url=$1 dsn=$2 before after t0 t1 head
    # Orders need the customers and products in the order context's own read models.
    until caught_up "$url"; do
        sleep 0.1
    done
    before=$(psql "$dsn" -qtAX -c \
        "SELECT count(*) FROM order_ctx.events WHERE event_type = 'order.order.placed'")
    t0=$(date +%s.%N)
    env -u BENCH_ORDERS wrk -t2 -c8 -d2s -s test/bench/place_orders.lua "$url/v1/orders" >/dev/null
    head=$(psql "$dsn" -qtAX -c "SELECT coalesce(max(global_position), 0) FROM order_ctx.events")
    # Every placed order is at or below head: settled once the saga's checkpoint is there.
    until [ "$(saga_checkpoint "$url")" -ge "$head" ]; do
        sleep 0.05
    done
    t1=$(date +%s.%N)
    after=$(psql "$dsn" -qtAX -c \
        "SELECT count(*) FROM order_ctx.events WHERE event_type = 'order.order.placed'")
    if [ "$after" -eq "$before" ]; then
        echo "bench: no order was placed; see $run_dir" >&2
        exit 1
    fi
    awk -v n="$((after - before))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}
saga_rate() # lanes -> orders settled per second
{
    set_phase "placement saga, lanes=$1"
    APP_SUBSCRIPTIONS_LANES=$1 APP_ORDER_PLACEMENT_TIMEOUT_MS=3600000 start_app
    settle_rate "$base" "$APP_POSTGRES_DSN"
    stop_app
}
start_app
for i in $(seq 20); do
    curl -fs "$base/v1/products" -H 'Content-Type: application/json' -d \
        "{\"sku\":\"BENCH-P$i\",\"name\":\"P\",\"price\":{\"amount\":100,\"currency\":\"EUR\"},\"stock\":1000000}" \
        >/dev/null
done
for i in $(seq 100); do
    curl -fs "$base/v1/users" -H 'Content-Type: application/json' \
        -d "{\"email\":\"buyer$i@bench.example\",\"name\":\"Buyer\"}" |
        sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
    echo # the reply has no newline of its own
done | grep . >"$run_dir/customers.txt"
[ "$(wc -l <"$run_dir/customers.txt")" -eq 100 ] ||
    { echo "bench: could not register the saga's customers" >&2; exit 1; }
stop_app
export BENCH_CUSTOMERS=$run_dir/customers.txt
saga_one=$(saga_rate 1)
saga_lanes=$(saga_rate 32)

# Orders as products age: BENCH_ORDERS (default 100,000) two-line orders on the 20 products
# in ten rounds. A round places its share on 8 connections as fast as they are answered and
# is timed from then to the last order settled; then every order it confirmed is shipped, as
# a warehouse would, so that a product holds the reservations of open orders only. The
# figures: the mean rate of the rounds (against the registrations of 4) and the last round
# against the first.
orders_total=${BENCH_ORDERS:-100000}
order_rounds=10
order_count() # event type, after position -> events of that type in the order log after it
{
    psql "$APP_POSTGRES_DSN" -qtAX -c \
        "SELECT count(*) FROM order_ctx.events WHERE event_type = '$1' AND global_position > $2"
}
order_head()
{
    psql "$APP_POSTGRES_DSN" -qtAX -c "SELECT coalesce(max(global_position), 0) FROM order_ctx.events"
}
until_count() # event type, after position, count, wrk pid: waits, then stops wrk
{
    until [ "$(order_count "$1" "$2")" -ge "$3" ]; do
        kill -0 "$4" 2>/dev/null || { echo "bench: wrk stopped early; see $run_dir" >&2; exit 1; }
        sleep 0.05
    done
    kill "$4" 2>/dev/null || true
    wait "$4" 2>/dev/null || true
}
set_phase "orders over time"
APP_ORDER_PLACEMENT_TIMEOUT_MS=3600000 start_app
until caught_up; do
    sleep 0.1
done
round_rates=()
per_round=$((orders_total / order_rounds))
for round in $(seq "$order_rounds"); do
    from=$(order_head)
    t0=$(date +%s.%N)
    BENCH_ORDERS=$per_round BENCH_THREADS=2 wrk -t2 -c8 -d3600s -s test/bench/place_orders.lua \
        "$base/v1/orders" >/dev/null &
    until_count order.order.placed "$from" "$per_round" $!
    head=$(order_head)
    until [ "$(saga_checkpoint "$base")" -ge "$head" ]; do
        sleep 0.05
    done
    t1=$(date +%s.%N)
    placed=$(order_count order.order.placed "$from")
    round_rates+=("$(awk -v n="$placed" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')")
    psql "$APP_POSTGRES_DSN" -qtAX -c "SELECT substr(stream_id, 7) FROM order_ctx.events
        WHERE event_type = 'order.order.confirmed' AND global_position > $from" >"$run_dir/ship.txt"
    confirmed=$(wc -l <"$run_dir/ship.txt")
    [ "$confirmed" -eq "$placed" ] ||
        { echo "bench: round $round: $confirmed of $placed orders confirmed" >&2; exit 1; }
    BENCH_SHIP_IDS=$run_dir/ship.txt BENCH_THREADS=2 wrk -t2 -c8 -d3600s \
        -s test/bench/ship_orders.lua "$base" >/dev/null &
    until_count order.order.shipped "$from" "$confirmed" $!
    head=$(order_head)
    until [ "$(saga_checkpoint "$base")" -ge "$head" ]; do # every line committed
        sleep 0.05
    done
done
stop_app
orders_mean=$(printf '%s\n' "${round_rates[@]}" | awk '{ s += $1 } END { printf "%.0f", s / NR }')
orders_first=${round_rates[0]}
orders_last=${round_rates[$((order_rounds - 1))]}

# ---- the split deployment: three services, a database each, Kafka and HTTP between them ----
kafka_port=$(bash $services free-port "$pg_port" "$redis_port" "$http_port")
bash deploy/local/kafka.sh start "$run_dir" "$kafka_port" >/dev/null
admin_dsn=$APP_POSTGRES_DSN
fresh_db() # name -> its DSN
{
    PGOPTIONS='--client-min-messages=warning' psql "$admin_dsn" -qX -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    echo "$admin_dsn dbname=$1"
}
start_svc() # context port dsn topic-prefix [VAR=value...]: one service in the background
{
    local context=$1 port=$2 dsn=$3 topics=$4
    shift 4
    env APP_CONTEXTS="$context" APP_HTTP_LISTEN="127.0.0.1:$port" APP_POSTGRES_DSN="$dsn" \
        APP_REDIS_KEY_PREFIX="$topics$context:" APP_KAFKA_ENABLED=true \
        APP_KAFKA_BROKERS="127.0.0.1:$kafka_port" APP_KAFKA_TOPIC_PREFIX="$topics" "$@" \
        ./app --config config/app.yaml 2>>"$run_dir/$context.log" &
    svc_pids+=($!)
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: the $context service did not start; see $run_dir/$context.log" >&2
    exit 1
}
stop_svcs()
{
    local pid
    for pid in "${svc_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    svc_pids=()
}
relay_checkpoint() # base url -> the user relay's checkpoint
{
    curl -fs "$1/health/ready" |
        sed -n 's/.*"user.kafka_relay":{"status":"[a-z]*","checkpoint":\([0-9]*\).*/\1/p' |
        grep . || echo 0
}
port_a=$(bash $services free-port "$pg_port" "$redis_port" "$http_port" "$kafka_port")
port_b=$(bash $services free-port "$pg_port" "$redis_port" "$http_port" "$kafka_port" "$port_a")
port_c=$(bash $services free-port "$pg_port" "$redis_port" "$http_port" "$kafka_port" "$port_a" \
    "$port_b")

# 10. The relay produces the whole user log of the runs above to a fresh topic; then an
# order service copies it into its inbox.
all_user_events=$(psql "$admin_dsn" -qtAX -c "SELECT count(*) FROM user_ctx.events")
user_head=$(psql "$admin_dsn" -qtAX -c "SELECT max(global_position) FROM user_ctx.events")
topics=bench$(date +%s).
t0=$(date +%s.%N)
start_svc user "$port_a" "$admin_dsn" "$topics"
until [ "$(relay_checkpoint "http://127.0.0.1:$port_a")" -ge "$user_head" ]; do
    sleep 0.05
done
t1=$(date +%s.%N)
stop_svcs
relayed=$(awk -v n="$all_user_events" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
inbox_dsn=$(fresh_db bench_inbox)
t0=$(date +%s.%N)
start_svc order "$port_b" "$inbox_dsn" "$topics" APP_KAFKA_INBOX=true \
    APP_REMOTE_USER=http://127.0.0.1:1 APP_REMOTE_INVENTORY=http://127.0.0.1:1
until [ "$(psql "$inbox_dsn" -qtAX -c "SELECT count(*) FROM user_inbox.events")" -ge \
    "$all_user_events" ]; do
    sleep 0.1
done
t1=$(date +%s.%N)
stop_svcs
inboxed=$(awk -v n="$all_user_events" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')

# 9. Orders settled by the split services, on the same products and customers as 8.
topics=split$(date +%s).
user_dsn=$(fresh_db bench_split_user)
inventory_dsn=$(fresh_db bench_split_inventory)
order_dsn=$(fresh_db bench_split_order)
start_svc user "$port_a" "$user_dsn" "$topics"
start_svc inventory "$port_b" "$inventory_dsn" "$topics"
start_svc order "$port_c" "$order_dsn" "$topics" APP_KAFKA_INBOX=true \
    APP_REMOTE_USER="http://127.0.0.1:$port_a" APP_REMOTE_INVENTORY="http://127.0.0.1:$port_b" \
    APP_ORDER_PLACEMENT_TIMEOUT_MS=3600000
for i in $(seq 20); do
    curl -fs "http://127.0.0.1:$port_b/v1/products" -H 'Content-Type: application/json' -d \
        "{\"sku\":\"BENCH-P$i\",\"name\":\"P\",\"price\":{\"amount\":100,\"currency\":\"EUR\"},\"stock\":1000000}" \
        >/dev/null
done
for i in $(seq 100); do
    curl -fs "http://127.0.0.1:$port_a/v1/users" -H 'Content-Type: application/json' \
        -d "{\"email\":\"buyer$i@bench.example\",\"name\":\"Buyer\"}" |
        sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
    echo
done | grep . >"$run_dir/split-customers.txt"
# The copies are complete once every customer and product came through Kafka.
until [ "$(psql "$order_dsn" -qtAX -c "SELECT count(*) FROM user_inbox.events")" -ge 100 ] &&
    [ "$(psql "$order_dsn" -qtAX -c "SELECT count(*) FROM inventory_inbox.events")" -ge 20 ]; do
    sleep 0.1
done
saga_split=$(BENCH_CUSTOMERS=$run_dir/split-customers.txt settle_rate "http://127.0.0.1:$port_c" \
    "$order_dsn")
stop_svcs

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
printf '\n%-44s %12s %10s\n' "benchmark" "req/s" "ratio"
printf '%-44s %12.0f %10s\n' "pgbench append, 1 per tx, 8 clients (ceiling)" "$pg_ceiling" "1.00"
printf '%-44s %12.0f %10s\n' "  POST /v1/users, group commit (target 2.0)" "$grouped" \
    "$(ratio "$grouped" "$pg_ceiling")"
printf '%-44s %12.0f %10s\n' "redis-benchmark GET, 50 clients (ceiling)" "$redis_ceiling" "1.00"
printf '%-44s %12.0f %10s\n' "  GET /v1/users/{id} (target 0.6)" "$read_user" \
    "$(ratio "$read_user" "$redis_ceiling")"
printf '%-44s %12.0f %10s\n' "  GET /v1/products/{sku} (target 0.6)" "$read_product" \
    "$(ratio "$read_product" "$redis_ceiling")"
printf '%-44s %12.0f %10s\n' "  GET /v1/orders/{id} (target 0.6)" "$read_order" \
    "$(ratio "$read_order" "$redis_ceiling")"
printf '%-44s %12.0f %10s\n' "  GET /v1/users/{id}, every read on a worker" "$read_workers" \
    "$(ratio "$read_workers" "$redis_ceiling")"
printf '%-44s %12s %10s\n' "latency at half the maximum rate (p99 < 10 ms)" "p50 ms" "p99 ms"
printf '%-44s %12s %10s\n' "  GET /v1/users/{id} at $half_read/s" "$read_p50" "$read_p99"
printf '%-44s %12s %10s\n' "  POST /v1/users at $half_write/s" "$write_p50" "$write_p99"
printf '%-44s %12s %10s\n' "footprint (targets: 64 MB, 100 ms)" "" ""
printf '%-44s %9.1f MB %10s\n' "  largest RSS of an app at the end of a run" "$(awk -v k="$max_rss_kb" 'BEGIN { print k / 1024 }')" ""
printf '%-44s %12s %10s\n' "    (after: $max_rss_phase)" "" ""
sort -rn "$run_dir/rss.txt" | sed -n 2,3p | while read -r kb what; do
    printf '%-44s %9.1f MB %10s\n' "    then: $what" "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')" ""
done
printf '%-44s %9d ms %10s\n' "  ready after start (median of 5)" "$ready_median" ""
printf '%-44s %12s %10s\n' "the access log: info against warn" "req/s" ""
printf '%-44s %12.0f %10s\n' "  GET /v1/users/{id}, log level warn" "$read_quiet" "1.00"
printf '%-44s %12.0f %10s\n' "  the same at info (a line per request)" "$read_logged" \
    "$(ratio "$read_logged" "$read_quiet")"
printf '%-44s %12.0f %10s\n' "  POST /v1/users, log level warn" "$write_quiet" "1.00"
printf '%-44s %12.0f %10s\n' "  the same at info (a line per request)" "$write_logged" \
    "$(ratio "$write_logged" "$write_quiet")"
printf '%-44s %12.0f %10s\n' "GET /health/live (baseline)" "$live" "1.00"
printf '%-44s %12.0f %10s\n' "GET /v1/users/{id} (bus + Redis)" "$read_user" \
    "$(ratio "$read_user" "$live")"
printf '%-44s %12.0f %10s\n' "  with an API key and a rate limit" "$read_keyed" \
    "$(ratio "$read_keyed" "$read_user")"
printf '%-44s %12.0f %10s\n' "POST /v1/users, one command per commit" "$single" "1.00"
printf '%-44s %12.0f %10s\n' "POST /v1/users, group commit" "$grouped" "$(ratio "$grouped" "$single")"
printf '%-44s %12.0f %10s\n' "POST /v1/users, group commit + Idempotency-Key" "$keyed" \
    "$(ratio "$keyed" "$single")"
printf '%-44s %12s %10s\n' "  (keyed against unkeyed group commit)" "" "$(ratio "$keyed" "$grouped")"
printf '%-44s %12s %10s\n' "tracing on, ratio 1.0, to a collector" "req/s" ""
printf '%-44s %12s %10s\n' "  (spans exported ${spans_exported:-0}, dropped ${spans_dropped:-0})" "" ""
printf '%-44s %12.0f %10s\n' "  GET /v1/users/{id}, traced" "$read_traced" \
    "$(ratio "$read_traced" "$read_user")"
printf '%-44s %12.0f %10s\n' "  POST /v1/users, group commit, traced" "$traced" \
    "$(ratio "$traced" "$untraced")"
printf '%-44s %12s %10s\n' "rebuild $user_events user events" "events/s" ""
printf '%-44s %12.0f %10s\n' "  live projection after a flush (baseline)" "$live_rebuild" "1.00"
printf '%-44s %12.0f %10s\n' "  app replay" "$replayed" "$(ratio "$replayed" "$live_rebuild")"
printf '%-44s %12s %10s\n' "add stock, $product_events-event stream, 1 conn." "req/s" ""
printf '%-44s %12s %10s\n' "  (the first two with snapshots.cache=0)" "" ""
printf '%-44s %12.0f %10s\n' "  folding the whole stream (baseline)" "$unsnapped" "1.00"
printf '%-44s %12.0f %10s\n' "  from a snapshot (snapshots.product=100)" "$snapped" \
    "$(ratio "$snapped" "$unsnapped")"
printf '%-44s %12.0f %10s\n' "  from the process's cache (default)" "$cached" \
    "$(ratio "$cached" "$unsnapped")"
printf '%-44s %12s %10s\n' "placement saga, orders settled" "orders/s" ""
printf '%-44s %12.0f %10s\n' "  one at a time (lanes=1, baseline)" "$saga_one" "1.00"
printf '%-44s %12.0f %10s\n' "  32 at once (lanes=32, default)" "$saga_lanes" \
    "$(ratio "$saga_lanes" "$saga_one")"
printf '%-44s %12.0f %10s\n' "  split: three services, Kafka and HTTP" "$saga_split" \
    "$(ratio "$saga_split" "$saga_lanes")"
printf '%-44s %12s %10s\n' "orders, $orders_total in $order_rounds rounds, shipped" "orders/s" ""
printf '%-44s %12.0f %10s\n' "  settled, mean of the rounds (vs. POST users)" "$orders_mean" \
    "$(ratio "$orders_mean" "$grouped")"
printf '%-44s %12.0f %10s\n' "  the first round (baseline)" "$orders_first" "1.00"
printf '%-44s %12.0f %10s\n' "  the last round" "$orders_last" "$(ratio "$orders_last" "$orders_first")"
printf '%-44s\n' "  (the rounds: ${round_rates[*]})"
printf '%-44s %12s %10s\n' "Kafka, $all_user_events user events" "events/s" ""
printf '%-44s %12.0f %10s\n' "  produced by the relay (baseline)" "$relayed" "1.00"
printf '%-44s %12.0f %10s\n' "  copied into a split service's inbox" "$inboxed" \
    "$(ratio "$inboxed" "$relayed")"
