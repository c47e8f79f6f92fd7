#!/bin/sh
# Installs the Python test tools of a requirements file (PyPI, pinned) into a virtual
# environment cached outside the tree, once per version of that file, and prints the path of
# the environment's EXECUTABLE.
#   pyvenv.sh REQUIREMENTS EXECUTABLE
#   e.g. pyvenv.sh test/contract/requirements.txt schemathesis
# Cache: ${APP_PYVENV_CACHE:-~/.cache/app-pyvenv}/<hash of REQUIREMENTS>. Needs python3 with
# venv (Debian's python3-venv; deploy/local/deps.sh test installs it).
set -eu
[ $# = 2 ] || {
    sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
req=$1
exe=$2
[ -f "$req" ] || {
    echo "pyvenv: no requirements file $req" >&2
    exit 1
}
stamp=$(sha256sum "$req" | cut -c1-16)
cache=${APP_PYVENV_CACHE:-${HOME:-/root}/.cache/app-pyvenv}
venv=$cache/$stamp
bin=$venv/bin/$exe
if [ -x "$bin" ] && [ -f "$venv/.complete" ]; then
    echo "$bin"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || {
    echo "pyvenv: python3 is missing (deploy/local/deps.sh test installs python3-venv)" >&2
    exit 1
}
echo "pyvenv: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
rm -rf "$venv"
mkdir -p "$cache"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
touch "$venv/.complete"
[ -x "$bin" ] || {
    echo "pyvenv: $req installs no $exe" >&2
    exit 1
}
echo "$bin"
