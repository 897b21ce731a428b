"""``LibvirtGenericVIFDriver.get_config``: dispatch and the os-vif path.

:class:`Renderer` puts the families together and does what Nova does
before and after the per-type part: pick the os-vif or the legacy path by
vif_type, convert the network and MAC like ``nova_to_osvif_vif``, and turn
an os-vif kind into the interface config like ``_get_config_os_vif``
(docs/libvirt-rendering.md, "What is rendered, per vif_type").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element

from vifwire.renderers.libvirt.base import typename
from vifwire.renderers.libvirt.bridge import BridgeFamily
from vifwire.renderers.libvirt.config import format_interface
from vifwire.renderers.libvirt.constants import (
    BRIDGE_NAME,
    LEGACY_TYPES,
    NOT_RENDERED_TYPES,
    OS_VIF_TYPES,
    RAW_PCI,
    UINT_MAX,
    UNI_MAC,
    UUID,
)
from vifwire.renderers.libvirt.ovs import OvsFamily


class Renderer(OvsFamily, BridgeFamily):
    """The whole driver: every vif type's ``get_config`` on one object."""

    # -- dispatch (LibvirtGenericVIFDriver.get_config)

    def render(self) -> Element:
        vif_type = self.vif.get("type")
        if vif_type is None:
            self.fail("binding:vif_type", "is missing")
        if not isinstance(vif_type, str):
            self.fail("binding:vif_type",
                      f"must be a string, got {typename(vif_type)}")
        if vif_type in OS_VIF_TYPES:
            result = self._render_os_vif(vif_type)
        elif vif_type in LEGACY_TYPES:
            result = getattr(self, "legacy_" + vif_type.replace(".", "_"))()
        elif vif_type in NOT_RENDERED_TYPES:
            self.fail("binding:vif_type", f"{vif_type!r} is not rendered by "
                      "the libvirt driver (Nova: unexpected vif_type)")
        else:
            self.fail("binding:vif_type", f"unsupported vif_type {vif_type!r}")
        if self.strategy is not None and not self.strategy_used:
            self.fail("ovs_strategy", f"{self.strategy!r} does not apply to "
                      f"vif_type {vif_type!r} with vnic_type "
                      f"{self.vnic_type!r} (no OVS tap to wire)")
        return result

    # -- os-vif path (nova_to_osvif_vif + _get_config_os_vif)

    def _render_os_vif(self, vif_type: str) -> Element:
        vif = self.vif
        vif_id = vif.get("id")
        if not isinstance(vif_id, str) or not vif_id:
            self.fail("id", "is required (a port UUID string)")
        mtu = self._osvif_network()
        mac = self._osvif_mac()
        kind = getattr(self, "osvif_kind_" + vif_type)()

        conf = self.base_config(mac, self.vnic_type)
        what = kind[0]
        if what == "generic":
            self.ethernet(conf, kind[1])
        elif what == "bridge":
            conf.net_type = "bridge"
            conf.source_dev = self._bridge_name(kind[2], kind[3])
            conf.target_dev = self.devname(kind[1], "devname")
        elif what == "ovs":
            _, vif_name, bridge, create_tap, create_port, iface_id = kind
            if create_tap:
                self.ethernet(conf, vif_name)
                conf.managed = "no"
            elif create_port:
                self.ethernet(conf, vif_name)
            else:
                conf.net_type = "bridge"
                conf.source_dev = self._bridge_name(bridge, "network.bridge")
                conf.target_dev = self.devname(vif_name, "devname")
                if not UUID.match(iface_id):
                    self.fail("ovs_interfaceid", f"{iface_id!r} is not a "
                              "UUID (libvirt's openvswitch interfaceid)")
                conf.vporttype = "openvswitch"
                conf.vportparams.append(("interfaceid", iface_id))
        elif what == "vhostuser":
            _, vif_name, mode, path = kind
            conf.driver_name = None
            conf.net_type = "vhostuser"
            conf.vhostuser_type = "unix"
            conf.vhostuser_mode = mode
            conf.vhostuser_path = path
            if self.opts.rx_queue_size:
                conf.vhost_rx_queue_size = self.opts.rx_queue_size
            if self.opts.tx_queue_size:
                conf.vhost_tx_queue_size = self.opts.tx_queue_size
            conf.target_dev = self.devname(vif_name, "devname")
        elif what == "vdpa":
            # designer.set_vif_host_backend_vdpa_config
            conf.net_type = "vdpa"
            conf.source_dev = kind[1]
            if self.opts.rx_queue_size:
                conf.vhost_rx_queue_size = self.opts.rx_queue_size
            if self.opts.tx_queue_size:
                conf.vhost_tx_queue_size = self.opts.tx_queue_size
        elif what == "hostdev":
            # designer.set_vif_host_backend_hw_veb(conf, 'hostdev', addr, None)
            conf.net_type = "hostdev"
            conf.vlan = None
            conf.pci = RAW_PCI.match(kind[1]).groupdict()
            conf.model = None

        # Nova: no bandwidth for VIFVHostUser and VIFHostDevice.
        if what not in ("vhostuser", "hostdev", "vdpa"):
            self.bandwidth(conf)
        conf.mtu = mtu
        if mtu is not None and conf.net_type in ("ethernet", "bridge"):
            if not 0 <= mtu <= UINT_MAX:
                self.fail("network.meta.mtu", f"{mtu!r} is not a valid MTU "
                          "(libvirt's schema: unsigned integer)")
        return format_interface(conf)

    def _osvif_network(self) -> int | None:
        """_nova_to_osvif_network: what the renderer needs is the MTU."""
        net = self.vif.get("network")
        if not isinstance(net, Mapping):
            self.fail("network", "is required for vif_type "
                      f"{self.vif.get('type')!r}")
        if net.get("id") is None:
            self.fail("network.id", "is required")
        meta = self.net_meta(net)
        if (meta.get("should_create_vlan") is not None
                and meta.get("vlan") is None):
            self.fail("network.meta.vlan",
                      "is required when should_create_vlan is set")
        if meta.get("vlan") is not None and meta.get("should_create_vlan") is not None:
            self._int(meta["vlan"], "network.meta.vlan")
        mtu = meta.get("mtu")
        if mtu is None:
            return None
        return self._int(mtu, "network.meta.mtu")

    def _osvif_mac(self) -> str:
        """os-vif's MACAddressField: lower-cased, '-' accepted as ':'."""
        mac = self.vif.get("address")
        if not isinstance(mac, str):
            self.fail("address", "is required (the port's MAC address)")
        norm = mac.lower().replace("-", ":")
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", norm):
            self.fail("address", f"{mac!r} is not a MAC address")
        if not UNI_MAC.match(norm):
            self.fail("address", f"{mac!r} is a multicast MAC address "
                      "(libvirt requires unicast)")
        return norm

    def _bridge_name(self, bridge: str | None, field: str) -> str:
        if bridge is None:
            self.fail(field, "is required (the bridge to attach to)")
        if not BRIDGE_NAME.match(bridge):
            self.fail(field, f"{bridge!r} is not a valid bridge name for libvirt")
        return bridge

    def _int(self, value: Any, field: str) -> int:
        """oslo IntegerField coercion (int(value))."""
        if isinstance(value, bool):
            self.fail(field, f"must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            self.fail(field, f"must be an integer, got {value!r}")
