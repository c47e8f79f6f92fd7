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
# The collector's builder and modules want a recent Go: the machine's, or the toolchain from
# the module proxy (test/tools/go.sh).
go=$(sh "$here/../go.sh" 1.26.0) # the builder's go.mod: go 1.26.0
version=$(sed -n 's/^  version: //p' "$here/manifest.yaml")
echo "otelcol: building the OpenTelemetry Collector $version (builder and modules from the Go module proxy)" >&2
rm -rf "$cache"
mkdir -p "$cache"
cp "$here/manifest.yaml" "$cache/"
(cd "$cache" && export GOTOOLCHAIN=local && GOBIN="$cache/bin" "$go" install "go.opentelemetry.io/collector/cmd/builder@v$version" &&
    PATH="$(dirname "$go"):$PATH" "$cache/bin/builder" --config manifest.yaml) >&2
[ -x "$bin" ] || {
    echo "otelcol: the builder made no $bin" >&2
    exit 1
}
echo "$bin"
