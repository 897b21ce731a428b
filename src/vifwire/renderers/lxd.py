"""LXD/Incus profile devices for a VIF, with nova-lxd's semantics (docs/architecture.md, "Containers").

The device is keyed by the port's devname (``tapXXXXXXXX-XX``) so that it
can be found again at detach time; it is a ``physical`` NIC whose parent is
the ``tin`` end of the veth pair vifwire made before the container existed
(or the macvtap device for vif_type macvtap).
"""

from __future__ import annotations

from typing import Any

from vifwire.errors import VifError
from vifwire.model import names, vif_types as vt
from vifwire.renderers.options import Bandwidth, GuestOptions


def _limit(bw: Bandwidth) -> int:
    """nova-lxd: LXD has one rate, so max(average, peak), burst ignored (KB/s)."""
    return max(int(bw.average or 0), int(bw.peak or 0))


def _mbit(kbytes_per_s: int) -> str:
    # nova-lxd: vif_limit * units.k * 8 // units.M
    return f"{kbytes_per_s * 1000 * 8 // 1000000}Mbit"


def render_device(binding: Any, opts: GuestOptions | None = None) -> tuple[str, dict[str, str]]:
    """``(device_name, device)`` for one binding."""
    opts = opts or GuestOptions()
    if binding.vif_type not in vt.LXD_SUPPORTED and binding.vif_type != vt.AGILIO_OVS:
        raise VifError(binding.port_id, "binding:vif_type",
                       f"{binding.vif_type!r} cannot be given to an LXD container "
                       f"(supported: {', '.join(vt.LXD_SUPPORTED)})")
    devname = binding.devname
    parent = devname if binding.vif_type == vt.MACVTAP else names.tin_for(devname)
    device = {"type": "nic", "nictype": "physical", "parent": parent, "hwaddr": binding.vif.get("address") or binding.mac}
    ingress, egress = _limit(opts.bandwidth_in), _limit(opts.bandwidth_out)
    if ingress:
        device["limits.ingress"] = _mbit(ingress)
    if egress:
        device["limits.egress"] = _mbit(egress)
    return devname, device


def render_devices(binding: Any, opts: GuestOptions | None = None) -> dict[str, dict[str, str]]:
    name, dev = render_device(binding, opts)
    return {name: dev}


def device_to_detach(devices: dict[str, dict[str, Any]], devname: str, mac: str) -> str | None:
    """Which profile device to remove for a VIF.

    By devname first (current naming); otherwise the NIC whose ``hwaddr`` is
    the VIF's MAC, for devices made by versions that named them differently
    (the fallback for NICs named by older drivers). ``None`` if neither matches.
    """
    if devname in devices:
        return devname
    mac = mac.lower()
    for key, dev in devices.items():
        if isinstance(dev, dict) and dev.get("type") == "nic" and str(dev.get("hwaddr", "")).lower() == mac:
            return key
    return None
