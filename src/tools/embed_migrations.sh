#!/bin/sh
# Turns a folder of .sql files into a C table of mod_migration rows named <name>_migrations,
# so the binary carries its migrations and applies them in file-name order.
set -eu
name=$1
dir=$2
printf '/* Generated from %s by src/tools/embed_migrations.sh; do not edit. */\n' "$dir"
printf '#include "kernel/module.h"\n\n'
printf 'const mod_migration %s_migrations[] = {\n' "$name"
for f in $(ls "$dir"/*.sql 2>/dev/null | sort); do
    printf '    {"%s",\n' "$(basename "$f")"
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/     "/' -e 's/$/\\n"/' "$f"
    printf '    },\n'
done
printf '    {NULL, NULL},\n};\n'
