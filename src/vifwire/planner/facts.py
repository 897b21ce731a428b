"""Host facts: what the planner needs to know about the host, as plain data.

The planner never probes the host. Whoever calls it (CLI, API user, tests)
supplies these facts, which keeps planning a pure, repeatable function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: libvirt learned ``<virtualport type="openvswitch">`` in 0.9.11 (libvirt's formatdomain docs, "virtualport").
LIBVIRT_VIRTUALPORT_MIN = (0, 9, 11)


@dataclass(frozen=True)
class HostFacts:
    """Facts about the host a VIF is planned for.

    ``firewall``: host firewalling (security groups applied on the host) is
    required. With OVS this forces the hybrid qbr/qvb/qvo wiring
    unless the network already filters (``port_filter``).
    ``anti_spoof``: ``auto`` filters unless the binding says the back-end
    already filters; ``on``/``off`` force it.
    ``guest_netns``: for container guests whose namespace already exists, the
    ``tin`` end is created directly inside it (named ``guest_ifname`` when
    given, e.g. a CNI runtime's ``CNI_IFNAME``).
    ``guest_ip``: vifwire also gives the guest end its addresses and routes
    (from the binding's subnets), as a CNI plugin must; LXD guests configure
    themselves.
    ``host_gateway``: the host holds the guests' gateway address, so that it
    answers ping too: on each routed host end (169.254.1.1/32, fe80::1, as
    the CNI ``ptp`` plugin does), or the subnet's gateway on the bridge.
    ``lxd_instance``: vifwire also gives the ``tin`` end to this LXD
    instance as a ``physical`` NIC (and takes it back at unplug), through
    the LXD daemon listening on ``lxd_socket`` (``None``:
    :data:`LXD_DEFAULT_SOCKET`); docs/lxd.md.
    """

    hypervisor: Literal["libvirt", "lxd"] = "libvirt"
    libvirt_version: tuple[int, int, int] = (10, 0, 0)
    firewall: bool = False
    ovs_datapath: Literal["system", "netdev"] = "system"
    anti_spoof: Literal["auto", "on", "off"] = "auto"
    guest_netns: str | None = None
    multiqueue: bool = False
    guest_ifname: str | None = None
    guest_ip: bool = False
    host_gateway: bool = False
    lxd_instance: str | None = None
    lxd_socket: str | None = None


#: Where a packaged LXD listens (LXD docs, "Environment variables": ``LXD_DIR``
#: moves it to ``$LXD_DIR/unix.socket``).
LXD_DEFAULT_SOCKET = "/var/lib/lxd/unix.socket"


def lxd_socket_from(environ: Mapping[str, str]) -> str:
    """The LXD socket an environment points at: ``$LXD_DIR/unix.socket``, else
    :data:`LXD_DEFAULT_SOCKET`. Takes the environment as an argument, so the
    front end reads it and planning stays a pure function of its inputs."""
    lxd_dir = environ.get("LXD_DIR")
    return os.path.join(lxd_dir, "unix.socket") if lxd_dir else LXD_DEFAULT_SOCKET


def parse_version(text: str) -> tuple[int, int, int]:
    """``"8.0.0"`` -> ``(8, 0, 0)``; raises ``ValueError`` on nonsense."""
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a version like 8.0.0")
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return (nums[0], nums[1], nums[2])
