#!/bin/sh
# Installs schemathesis (test/contract/requirements.txt) into a virtual environment cached
# outside the tree, once per pinned version, and prints the path of its executable.
#   install.sh            install when missing, print the path
# Cache: ${APP_SCHEMATHESIS_CACHE:-~/.cache/app-schemathesis}/<hash of requirements.txt>.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
req=$here/requirements.txt
stamp=$(sha256sum "$req" | cut -c1-16)
cache=${APP_SCHEMATHESIS_CACHE:-${HOME:-/root}/.cache/app-schemathesis}
venv=$cache/$stamp
bin=$venv/bin/schemathesis
if [ -x "$bin" ] && [ -f "$venv/.complete" ]; then
    echo "$bin"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || {
    echo "contract: python3 is missing (deploy/local/deps.sh test installs python3-venv)" >&2
    exit 1
}
echo "contract: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
rm -rf "$venv"
mkdir -p "$cache"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
touch "$venv/.complete"
echo "$bin"
