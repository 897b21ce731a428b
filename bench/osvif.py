"""os-vif 5.3.0 for the benches: its virtualenv and the start of its scripts.

os-vif runs in its own venv (``.venv-osvif``; it pins oslo and ovsdbapp
versions of its own), in a child process inside the bench's namespace, with
privsep in-process (``set_client_mode(False)``: root already) and the native
OVSDB interface. This module imports nothing of vifwire, so a bench that uses
it keeps working while src/ is being edited.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OSVIF_VENV = os.path.join(ROOT, ".venv-osvif")
OSVIF_PY = os.path.join(OSVIF_VENV, "bin", "python")
OSVIF_VERSION = "5.3.0"


def ensure_osvif() -> None:
    """Create ``.venv-osvif`` with os-vif 5.3.0 (once)."""
    check = [OSVIF_PY, "-c", "import importlib.metadata as m; print(m.version('os-vif'))"]
    if os.path.exists(OSVIF_PY):
        r = subprocess.run(check, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == OSVIF_VERSION:
            return
    print(f"installing os-vif {OSVIF_VERSION} into {OSVIF_VENV} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", OSVIF_VENV], check=True)
    subprocess.run([os.path.join(OSVIF_VENV, "bin", "pip"), "install", "-q", f"os-vif=={OSVIF_VERSION}"],
                   check=True)


#: The start of every os-vif script: argv[1] the OVSDB endpoint, argv[2] the
#: kind ("plain": VIFOpenVSwitch with create_port/create_tap, "hybrid":
#: VIFBridge), argv[3] a count, argv[4] the MTU; ``make_vif(pid, mac)`` builds
#: one VIF on br-int, ``inst`` is the instance to plug it for.
PROLOGUE = r'''
import json, logging, sys, tempfile, time
logging.disable(logging.CRITICAL)  # ovsdbapp logs "could not open device" for create_tap ports
from oslo_config import cfg
endpoint, kind, n, mtu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
conf.write(f"[os_vif_ovs]\novsdb_connection = {endpoint}\novsdb_interface = native\n"
           "ovs_vsctl_timeout = 600\nisolate_vif = false\n")
conf.close()
cfg.CONF([], project="bench", default_config_files=[conf.name])
import os_vif
from os_vif import objects
os_vif.initialize()
from vif_plug_ovs import privsep
privsep.vif_plug.set_client_mode(False)  # root already: run the privileged calls in-process

net = objects.network.Network(id="4c1e6a0d-0000-4000-8000-000000000001", bridge="br-int", mtu=mtu)
inst = objects.instance_info.InstanceInfo(uuid="0b7f1c8e-1111-4222-8333-444455556666", name="bench")

def make_vif(pid, m):
    if kind == "plain":
        prof = objects.vif.VIFPortProfileOpenVSwitch(interface_id=pid, datapath_type="netdev",
                                                     create_port=True, create_tap=True)
        return objects.vif.VIFOpenVSwitch(id=pid, address=m, network=net, plugin="ovs",
                                          vif_name=("tap" + pid)[:14], port_profile=prof,
                                          has_traffic_filtering=True)
    prof = objects.vif.VIFPortProfileOpenVSwitch(interface_id=pid, datapath_type="netdev")
    return objects.vif.VIFBridge(id=pid, address=m, network=net, plugin="ovs", vif_name=("tap" + pid)[:14],
                                 bridge_name=("qbr" + pid)[:14], port_profile=prof,
                                 has_traffic_filtering=False)
'''
