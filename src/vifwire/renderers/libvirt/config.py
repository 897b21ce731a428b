"""``LibvirtConfigGuestInterface`` and its ``format_dom()``, mirrored.

Every vif-type renderer fills an :class:`InterfaceConf` the way Nova fills
``nova.virt.libvirt.config.LibvirtConfigGuestInterface``, and
:func:`format_interface` writes the element in the same children order as
Nova's ``format_dom`` -- so the output matches Nova 34 byte for byte
(docs/libvirt-rendering.md, "How this is proven").
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, SubElement

from vifwire.renderers.options import Bandwidth


class InterfaceConf:
    """Mirror of ``nova.virt.libvirt.config.LibvirtConfigGuestInterface``."""

    def __init__(self) -> None:
        self.net_type: str | None = None
        self.target_dev: str | None = None
        self.model: str | None = None
        self.mac_addr: str | None = None
        self.source_dev: str | None = None
        self.source_mode = "private"
        self.vporttype: str | None = None
        self.vportparams: list[tuple[str, str]] = []
        self.driver_name: str | None = None
        self.driver_packed = False
        self.vhostuser_mode: str | None = None
        self.vhostuser_path: str | None = None
        self.vhostuser_type: str | None = None
        self.vhost_queues: int | None = None
        self.vhost_rx_queue_size: int | None = None
        self.vhost_tx_queue_size: int | None = None
        self.bw_in = Bandwidth()
        self.bw_out = Bandwidth()
        self.vlan: Any = None
        self.mtu: int | str | None = None
        self.managed: str | None = None
        # pci_slot split into libvirt address attributes (hostdev only)
        self.pci: dict[str, str] | None = None


def format_interface(c: InterfaceConf) -> Element:
    """``LibvirtConfigGuestInterface.format_dom`` (same children order)."""
    dev = Element("interface")
    dev.set("type", c.net_type)
    if c.net_type == "hostdev":
        dev.set("managed", "yes")
    SubElement(dev, "mac", address=c.mac_addr)
    if c.model:
        SubElement(dev, "model", type=c.model)

    drv: dict[str, str] | None = None
    if c.driver_name or c.driver_packed or c.net_type == "vhostuser":
        drv = {}
        if c.driver_name and c.net_type != "vhostuser":
            drv["name"] = c.driver_name
        if c.driver_packed:
            drv["packed"] = "on"
    if drv is not None:
        if c.vhost_queues is not None:
            drv["queues"] = str(c.vhost_queues)
        if c.vhost_rx_queue_size is not None:
            drv["rx_queue_size"] = str(c.vhost_rx_queue_size)
        if c.vhost_tx_queue_size is not None:
            drv["tx_queue_size"] = str(c.vhost_tx_queue_size)
        if drv:
            SubElement(dev, "driver", drv)

    if c.net_type == "ethernet":
        if c.mtu is not None:
            SubElement(dev, "mtu", size=str(c.mtu))
    elif c.net_type == "direct":
        SubElement(dev, "source", dev=c.source_dev, mode=c.source_mode)
    elif c.net_type == "vdpa":
        SubElement(dev, "source", dev=c.source_dev)
    elif c.net_type == "hostdev":
        src = SubElement(dev, "source")
        addr = SubElement(src, "address", type="pci")
        for key in ("domain", "bus", "slot", "function"):
            addr.set(key, "0x" + c.pci[key])
    elif c.net_type == "vhostuser":
        SubElement(dev, "source", type=c.vhostuser_type,
                   mode=c.vhostuser_mode, path=c.vhostuser_path)
    elif c.net_type == "bridge":
        SubElement(dev, "source", bridge=c.source_dev)
        if c.mtu is not None:
            SubElement(dev, "mtu", size=str(c.mtu))

    if c.vlan and c.net_type in ("direct", "hostdev"):
        vlan = SubElement(dev, "vlan")
        SubElement(vlan, "tag", id=str(c.vlan))

    if c.target_dev is not None:
        if c.managed is not None:
            SubElement(dev, "target", dev=c.target_dev, managed=c.managed)
        else:
            SubElement(dev, "target", dev=c.target_dev)

    if c.vporttype is not None:
        vport = SubElement(dev, "virtualport", type=c.vporttype)
        if c.vporttype == "802.1Qbg":
            # libvirt: at most one <parameters> (Nova writes one per key).
            SubElement(vport, "parameters", dict(c.vportparams))
        else:
            for key, value in c.vportparams:
                SubElement(vport, "parameters", {key: value})

    if c.bw_in.average is not None or c.bw_out.average is not None:
        bw = SubElement(dev, "bandwidth")
        for tag, b in (("inbound", c.bw_in), ("outbound", c.bw_out)):
            if b.average is None:
                continue
            e = SubElement(bw, tag, average=str(b.average))
            if b.peak is not None:
                e.set("peak", str(b.peak))
            if b.burst is not None:
                e.set("burst", str(b.burst))
    return dev


def format_hostdev_pci(pci: dict[str, str]) -> Element:
    """``LibvirtConfigGuestHostdevPCI.format_dom``."""
    dev = Element("hostdev", mode="subsystem", type="pci", managed="yes")
    src = SubElement(dev, "source")
    attrs = {k: (v if v.startswith("0x") else "0x" + v) for k, v in pci.items()}
    SubElement(src, "address", attrs)
    return dev
