#!/bin/sh
# Builds a Go test tool (a folder of test/tools with its go.mod and go.sum) from the Go module
# proxy, once per version of its sources, and prints the path of the binary.
#   gotool.sh DIR     e.g. gotool.sh test/tools/kongcheck
# Cache: ${APP_GO_TOOLS_CACHE:-~/.cache/app-go-tools}/<name>-<hash of DIR's files>. Modules
# come from the Go module proxy into Go's own module cache. The Go is the one go.mod names, or
# newer: the machine's, or Go's own toolchain from the module proxy (test/tools/go.sh).
set -eu
[ $# = 1 ] && [ -f "$1/go.mod" ] || {
    echo "usage: gotool.sh DIR (a folder with a go.mod)" >&2
    exit 2
}
dir=$(cd "$1" && pwd -P)
name=$(basename "$dir")
stamp=$(cd "$dir" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
cache=${APP_GO_TOOLS_CACHE:-${HOME:-/root}/.cache/app-go-tools}
bin=$cache/$name-$stamp/$name
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
# The Go its go.mod asks for: the machine's, or Go's toolchain from the module proxy (go.sh).
go=$(sh "$(dirname "$0")/go.sh" "$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$dir/go.mod")")
echo "gotool: building $name with $("$go" version | cut -d' ' -f3) (modules from the Go module proxy)" >&2
mkdir -p "$cache/$name-$stamp"
(cd "$dir" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$go" build -trimpath -o "$bin.tmp" .) >&2
mv "$bin.tmp" "$bin"
echo "$bin"
