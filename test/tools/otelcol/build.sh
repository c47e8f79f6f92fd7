#!/bin/sh
# Builds the tests' OpenTelemetry Collector (manifest.yaml) with the collector's builder, both
# from the Go module proxy, once per version of the manifest, and prints the binary's path.
# About two minutes on two cores the first time. Cache:
# ${APP_GO_TOOLS_CACHE:-~/.cache/app-go-tools}/otelcol-<hash of manifest.yaml>/.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
stamp=$(sha256sum "$here/manifest.yaml" | cut -c1-16)
cache=${APP_GO_TOOLS_CACHE:-${HOME:-/root}/.cache/app-go-tools}/otelcol-$stamp
bin=$cache/dist/otelcol-app
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
go=$(command -v go 2>/dev/null || true)
[ -n "$go" ] || [ ! -x /usr/local/go/bin/go ] || go=/usr/local/go/bin/go
[ -n "$go" ] || {
    echo "otelcol: Go is missing; the collector's builder needs it" >&2
    exit 1
}
version=$(sed -n 's/^  version: //p' "$here/manifest.yaml")
echo "otelcol: building the OpenTelemetry Collector $version (builder and modules from the Go module proxy)" >&2
rm -rf "$cache"
mkdir -p "$cache"
cp "$here/manifest.yaml" "$cache/"
(cd "$cache" && GOBIN="$cache/bin" "$go" install "go.opentelemetry.io/collector/cmd/builder@v$version" &&
    PATH="$(dirname "$go"):$PATH" "$cache/bin/builder" --config manifest.yaml) >&2
[ -x "$bin" ] || {
    echo "otelcol: the builder made no $bin" >&2
    exit 1
}
echo "$bin"
