#!/bin/sh
# Whole-command cost of container ports on one Linux bridge with IPv6 on (the
# kernel default), as a user pays it: a fresh namespace, `vifwire plug` of N
# ports (--hypervisor lxd), `vifwire unplug --all`, the namespace removed.
# Time it from a shell, paired against another source tree, e.g.:
#   farm-bench -n 7 --vs 'sh bench/bridge_whole.sh /path/to/old/tree 400' -- sh bench/bridge_whole.sh . 400
# Usage: sh bench/bridge_whole.sh SOURCE_TREE [N]   (root; only its own namespace is touched)
set -e
SRC=$(cd "$1" && pwd)
N=${2:-400}
PY=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
NS=vw-bw-$$
TMP=$(mktemp -d)
ip netns add "$NS"
trap 'ip netns del "$NS"; rm -rf "$TMP"' EXIT
"$PY" - "$N" > "$TMP/ports.json" <<'PYEOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps([{
    "id": f"{i:08x}-0000-4000-8000-0000000000b1", "mac_address": f"fa:16:3e:b1:{i >> 8:02x}:{i & 255:02x}",
    "network_id": "4c1e6a0d-0000-4000-8000-0000000000b1", "device_id": f"c{i}",
    "fixed_ips": [{"subnet_id": "s", "ip_address": f"10.81.{i >> 8}.{i & 255}"}],
    "binding:vif_type": "bridge", "binding:vif_details": {"bridge_name": "brvw-bw"}, "binding:host_id": "h",
    "network": {"mtu": 1450}} for i in range(1, n + 1)]))
PYEOF
run() { PYTHONPATH="$SRC/src" "$PY" -c 'import sys; from vifwire.cli.main import main; sys.exit(main())' "$@" >/dev/null; }
run plug "$TMP/ports.json" --hypervisor lxd --netns "$NS" --state "$TMP/state.db"
run unplug --all --netns "$NS" --state "$TMP/state.db"
