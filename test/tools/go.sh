#!/bin/sh
# Prints the path of a Go at least as new as VERSION, for the Go test tools:
#   go.sh VERSION        e.g. go.sh 1.26.4 (a go.mod's `go` line)
# The machine's Go when it is new enough (on PATH, or /usr/local/go); else Go's own toolchain
# module from the Go module proxy (golang.org/toolchain, what GOTOOLCHAIN=auto fetches; Debian
# 12's golang is 1.19), of version APP_GO_TOOLCHAIN (1.26.8 by default, enough for every tool
# here), unpacked once under ${APP_GO_TOOLS_CACHE:-~/.cache/app-go-tools}/toolchain-go<it>.
# Run that Go with GOTOOLCHAIN=local.
set -eu
[ $# = 1 ] || {
    echo "usage: go.sh VERSION" >&2
    exit 2
}
want=$1
pinned=${APP_GO_TOOLCHAIN:-1.26.8}

# Whether Go at $1 is at least $want.
new_enough()
{
    have=$("$1" env GOVERSION 2>/dev/null | sed 's/^go//') || return 1
    [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" = "$want" ]
}

for go in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
    if [ -n "$go" ] && [ -x "$go" ] && new_enough "$go"; then
        echo "$go"
        exit 0
    fi
done

[ "$(printf '%s\n%s\n' "$want" "$pinned" | sort -V | head -n1)" = "$want" ] || {
    echo "go.sh: Go $want is wanted, newer than APP_GO_TOOLCHAIN ($pinned)" >&2
    exit 1
}
cache=${APP_GO_TOOLS_CACHE:-${HOME:-/root}/.cache/app-go-tools}/toolchain-go$pinned
case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*)
    echo "go.sh: no Go $want here, and no toolchain for $(uname -m)" >&2
    exit 1
    ;;
esac
module=golang.org/toolchain@v0.0.1-go$pinned.linux-$arch
go=$cache/$module/bin/go
if [ ! -x "$go" ]; then
    proxy=$(printf '%s' "${GOPROXY:-https://proxy.golang.org}" | cut -d, -f1 | cut -d'|' -f1)
    case $proxy in
    http*) ;;
    *) proxy=https://proxy.golang.org ;;
    esac
    url=$proxy/golang.org/toolchain/@v/v0.0.1-go$pinned.linux-$arch.zip
    echo "go.sh: no Go $want here; fetching the toolchain from $url" >&2
    rm -rf "$cache"
    mkdir -p "$cache"
    curl -fsSL --retry 3 -o "$cache/toolchain.zip" "$url" >&2
    # Unpacked keeping each file's mode (zipfile alone drops the executable bits).
    python3 - "$cache/toolchain.zip" "$cache" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = info.external_attr >> 16
        if mode and not info.is_dir():
            os.chmod(path, mode & 0o777)
PY
    rm -f "$cache/toolchain.zip"
fi
new_enough "$go" || {
    echo "go.sh: the toolchain at $go does not run" >&2
    exit 1
}
echo "$go"
