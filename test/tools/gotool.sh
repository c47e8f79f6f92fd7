#!/bin/sh
# Builds a Go test tool (a folder of test/tools with its go.mod and go.sum) from the Go module
# proxy, once per version of its sources, and prints the path of the binary.
#   gotool.sh DIR     e.g. gotool.sh test/tools/kongcheck
# Cache: ${APP_GO_TOOLS_CACHE:-~/.cache/app-go-tools}/<name>-<hash of DIR's files>. Modules
# come from the Go module proxy into Go's own module cache. Needs Go (go.mod says which).
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
go=$(command -v go 2>/dev/null || true)
[ -n "$go" ] || [ ! -x /usr/local/go/bin/go ] || go=/usr/local/go/bin/go
[ -n "$go" ] || {
    echo "gotool: Go is missing; $name needs the Go of $1/go.mod" >&2
    exit 1
}
echo "gotool: building $name with $("$go" version | cut -d' ' -f3) (modules from the Go module proxy)" >&2
mkdir -p "$cache/$name-$stamp"
(cd "$dir" && GOFLAGS=-mod=readonly "$go" build -trimpath -o "$bin.tmp" .) >&2
mv "$bin.tmp" "$bin"
echo "$bin"
