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

[ $status -eq 0 ] && echo "lint: ok"
exit $status
