#!/bin/sh
# make lint: formatting, static analysis, and the rule that a context sees only the kernel.
set -u
status=0
files=$(find src adapters contexts test -name '*.[ch]' | sort)

echo "lint: clang-format"
if ! clang-format --dry-run --Werror $files; then
    echo "lint: formatting differs; run 'make format'" >&2
    status=1
fi

echo "lint: context isolation"
for dir in contexts/*/; do
    ctx=$(basename "$dir")
    bad=$(grep -rnE '#include[[:space:]]*[<"]' "$dir" |
        grep -E 'libpq-fe\.h|hiredis|librdkafka|rdkafka\.h|<event2/|"adapters/|contexts/' |
        grep -v "contexts/$ctx/" || true)
    if [ -n "$bad" ]; then
        echo "lint: context $ctx includes what it must not (another context, an adapter," \
            "libpq, hiredis, librdkafka or libevent):" >&2
        echo "$bad" >&2
        status=1
    fi
done

echo "lint: cppcheck"
if ! cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
    --inline-suppr --suppress=missingIncludeSystem --std=c11 -D__GNUC__ \
    -Isrc -I. src adapters contexts; then
    status=1
fi

echo "lint: systemd unit"
# Checked as systemd would load it (the binary path swapped for one that exists here), and
# its hardening kept at systemd's "OK" exposure or better.
unit_dir=$(mktemp -d)
sed 's|/usr/local/bin/app|/bin/true|g' deploy/systemd/app.service >"$unit_dir/app.service"
problems=$(systemd-analyze verify "$unit_dir/app.service" 2>&1)
if [ -n "$problems" ]; then
    echo "lint: deploy/systemd/app.service:" >&2
    echo "$problems" >&2
    status=1
fi
exposure=$(systemd-analyze security --offline=true "$unit_dir/app.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for app.service: \([0-9.]*\).*/\1/p')
if ! awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'; then
    echo "lint: deploy/systemd/app.service: exposure ${exposure:-unknown}, above 2.0" >&2
    status=1
fi
rm -rf "$unit_dir"

[ $status -eq 0 ] && echo "lint: ok"
exit $status
