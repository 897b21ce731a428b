#!/usr/bin/env bash
# Create (idempotently) the reference-Nova virtualenv used by the libvirt
# differential test: <repo>/.venv-nova with nova==34.0.0 and os-vif==5.3.0.
#
# Usage: tests/oracle/setup_nova_venv.sh [--force]
#   NOVA_VENV=/path   overrides the target directory.
#   PYTHON=python3.x  overrides the interpreter used to create it (>= 3.11).
#
# Re-running is cheap: if the venv already holds exactly these versions (a
# stamp file records them after a successful import check) nothing happens.
# A lock serialises concurrent runs (e.g. parallel pytest workers).
set -euo pipefail

NOVA_VERSION=34.0.0
OS_VIF_VERSION=5.3.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${NOVA_VENV:-$repo/.venv-nova}"
python="${PYTHON:-python3}"
stamp="$venv/.vifwire-oracle-stamp"
want="nova==$NOVA_VERSION os-vif==$OS_VIF_VERSION"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$venv"
fi

mkdir -p "$(dirname "$venv")"
# The lock lives outside the repository so it never shows up in git status.
lock="${TMPDIR:-/tmp}/vifwire-nova-venv-$(printf %s "$venv" | cksum | cut -d' ' -f1).lock"
exec 9>"$lock"
flock 9

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    exit 0
fi

echo "setup_nova_venv: creating $venv ($want)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
log="$venv/pip-install.log"
if ! "$venv/bin/python" -m pip install --disable-pip-version-check \
        "nova==$NOVA_VERSION" "os-vif==$OS_VIF_VERSION" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "setup_nova_venv: pip install failed (full log: $log)" >&2
    exit 1
fi

# Prove the oracle's imports work before stamping the venv as good.
"$venv/bin/python" -W ignore - <<'PY'
import importlib.metadata as md
import nova.virt.libvirt.vif  # noqa: F401
import nova.network.os_vif_util  # noqa: F401
assert md.version("nova") == "34.0.0", md.version("nova")
assert md.version("os-vif") == "5.3.0", md.version("os-vif")
PY
echo "$want" >"$stamp"
echo "setup_nova_venv: done" >&2
