"""Duplicates within one request: what two ports of one load may not share."""

from __future__ import annotations

from vifwire.errors import VifError
from vifwire.model import names, vif_types as vt
from vifwire.model.binding import Binding


def duplicates(bindings: list[Binding]) -> list[VifError]:
    """What two ports of one request may not share, one line per clash naming both ports.

    * the port id (one record, two sets of devices), the devname, and the
      device names derived from the id's first 11 characters (qbr/qvb/qvo/vhu);
    * the MAC, whatever the networks: the anti-spoofing filter and unplug's
      find-by-MAC fallback hold one port per MAC in a namespace;
    * a fixed IP, when both ports are on one network (Neutron allows that
      nowhere) or both are routed (``vif_type tap``: one host route per
      address in the namespace). Tenant networks overlap: 10.0.0.5 on two
      bridged ports of different networks is normal and accepted.
    """
    errors: list[VifError] = []
    ids: dict[str, int] = {}
    devs: dict[str, str] = {}
    derived: dict[str, str] = {}
    macs: dict[str, str] = {}
    ips: dict[str, list[Binding]] = {}
    for index, b in enumerate(bindings):
        if b.port_id in ids:
            errors.append(VifError(b.port_id, "id", f"appears twice in this request (ports #{ids[b.port_id]} "
                                                    f"and #{index})"))
            continue
        ids[b.port_id] = index
        qbr = names.derive("qbr", b.port_id)
        if b.devname in devs:
            errors.append(VifError(b.port_id, "devname", f"{b.devname!r} is also the device of port {devs[b.devname]}"))
        elif qbr in derived:
            errors.append(VifError(b.port_id, "id", f"begins with the same {names.NIC_NAME_LEN - 3} characters as "
                                                    f"port {derived[qbr]}, so their devices would share names "
                                                    f"({qbr}, ...)"))
        devs.setdefault(b.devname, b.port_id)
        derived.setdefault(qbr, b.port_id)
        f_mac = "mac_address" if b.source == "neutron" else "address"
        if b.mac in macs:
            errors.append(VifError(b.port_id, f_mac, f"{b.mac} is also the MAC of port {macs[b.mac]}"))
        macs.setdefault(b.mac, b.port_id)
        f_ip = "fixed_ips" if b.source == "neutron" else "network.subnets"
        for ip in (*b.ipv4, *b.ipv6):
            for other in ips.get(ip, ()):
                same_net = b.network_id is None or other.network_id is None or b.network_id == other.network_id
                if same_net or (b.vif_type == vt.TAP and other.vif_type == vt.TAP):
                    why = "on the same network" if same_net else "both routed by this host"
                    errors.append(VifError(b.port_id, f_ip, f"{ip} is also an address of port {other.port_id} ({why})"))
                    break
            ips.setdefault(ip, []).append(b)
    return errors
