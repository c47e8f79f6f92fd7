#!/usr/bin/env bash
# `make run`: private PostgreSQL and Redis under ./run, migrations, then ./app in the
# foreground; on exit (Ctrl-C included) the private services stop. Data stays in ./run.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

cd "$(dirname "$0")/../.."
root=$(pwd -P)
run_dir=$root/run
services=$root/deploy/local/services.sh
config=${APP_RUN_CONFIG:-config/app.yaml}
# The defaults of config/app.yaml point at these ports.
pg_port=55432
redis_port=56379

[ -x ./app ] || {
    echo "run: ./app is not built; use 'make run'" >&2
    exit 1
}
[ -f "$config" ] || {
    echo "run: no config file $config" >&2
    exit 1
}

stop_services()
{
    bash "$services" stop "$run_dir" || true
}
trap stop_services EXIT
bash "$services" start "$run_dir" "$pg_port" "$redis_port"

./app --config "$config" migrate

# Where it serves: the environment override, else http.listen of the config file.
listen=${APP_HTTP_LISTEN:-$(awk '
    /^[^[:space:]#]/ { in_http = ($1 == "http:") }
    in_http && $1 == "listen:" { gsub(/["'\'']/, "", $2); print $2; exit }' "$config")}
echo "run: serving on http://${listen:-(http.listen of $config)}; data in $run_dir;" \
    "press Ctrl-C to stop the app and its private PostgreSQL and Redis"

# Ctrl-C reaches the app directly (same process group); the subshell undoes the SIGINT
# ignore that bash gives background jobs. A SIGTERM or SIGHUP to this script is passed on.
interrupted=0
app_pid=""
trap 'interrupted=1' INT
trap 'interrupted=1; [ -z "$app_pid" ] || kill -TERM "$app_pid" 2>/dev/null || true' TERM HUP
(
    trap - INT QUIT
    exec ./app --config "$config"
) &
app_pid=$!

while :; do
    set +e
    wait "$app_pid"
    status=$?
    set -e
    # Above 128 with the app still there: a trap cut the wait short, so wait again.
    if [ "$status" -gt 128 ] && kill -0 "$app_pid" 2>/dev/null; then
        continue
    fi
    break
done
if [ "$status" -gt 128 ]; then
    # The app may have ended while a trap ran: its own status is still there to collect.
    set +e
    wait "$app_pid" 2>/dev/null
    st=$?
    set -e
    [ "$st" = 127 ] || status=$st
fi

if [ "$interrupted" = 1 ] && { [ "$status" = 130 ] || [ "$status" = 143 ]; }; then
    status=0
fi
echo "run: app exited with status $status; stopping PostgreSQL and Redis"
exit "$status"
