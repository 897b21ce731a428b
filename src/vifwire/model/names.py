"""Device names: how they are derived and what the kernel accepts.

Derivations follow Nova/os-vif exactly (prefix + port id, cut to 14
characters, ``NIC_NAME_LEN``) so that devices made by vifwire, Nova and
os-vif for the same port have the same names and can be found by each other.
"""

from __future__ import annotations

NIC_NAME_LEN = 14
IFNAMSIZ = 15  # usable bytes in a Linux interface name (16 with the NUL)

#: Prefixes vifwire (and Nova/os-vif/nova-lxd) give the devices of a port.
PREFIXES = ("tap", "tin", "qbr", "qvb", "qvo", "vhu")


def derive(prefix: str, port_id: str) -> str:
    return (prefix + port_id)[:NIC_NAME_LEN]


def local_mac(first: int, seed: str) -> str:
    """A locally administered unicast MAC: ``first`` (02, 06, ...) and 5 bytes of SHA-256 of ``seed``."""
    import hashlib

    raw = hashlib.sha256(seed.encode()).digest()[:5]
    return f"{first:02x}:" + ":".join(f"{b:02x}" for b in raw)


def host_mac(port_id: str) -> str:
    """A port's host end MAC (``06:``...), derived from its id, so that it can
    be reported before the device exists (a CNI result names it)."""
    return local_mac(0x06, "host-end/" + port_id)


def tin_for(devname: str) -> str:
    """nova-lxd's guest end: the devname with ``tap`` replaced by ``tin``."""
    if devname.startswith("tap"):
        return "tin" + devname[3:]
    return ("tin" + devname)[:NIC_NAME_LEN]


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid Linux interface name, or ``None``.

    Mirrors the kernel's ``dev_valid_name()``: 1-15 bytes, not ``.``/``..``,
    no ``/``, ``:``, whitespace or NUL.
    """
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "is empty"
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) > IFNAMSIZ:
        return f"{name!r} is {len(raw)} bytes long, the limit is {IFNAMSIZ}"
    if name in (".", ".."):
        return f"{name!r} is not a valid interface name"
    if "\x00" in name:
        return "contains a NUL byte"
    if "/" in name:
        return f"{name!r} contains '/'"
    if ":" in name:
        return f"{name!r} contains ':'"
    if any(c.isspace() for c in name):
        return f"{name!r} contains whitespace"
    if not name.isprintable():
        return f"{name!r} contains a control character"
    return None


#: Names an OVS bridge may not take: the kernel datapath's own device
#: (``ovs-system``) and the userspace datapath's (``ovs-netdev``).
OVS_RESERVED = ("ovs-system", "ovs-netdev")


def ovs_bridge_problem(name: object) -> str | None:
    """Why ``name`` cannot be an OVS bridge (its internal port is a kernel
    interface of the same name), or ``None``."""
    problem = name_problem(name)
    if problem:
        return problem
    if name in OVS_RESERVED:
        return f"{name!r} is the name of Open vSwitch's datapath device"
    return None
