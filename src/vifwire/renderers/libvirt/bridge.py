"""The bridge/tap/ethernet family: a tap the guest's traffic leaves by.

os-vif's ``bridge`` kind (Nova 33's ``_nova_to_osvif_vif_bridge``) and the
legacy ``get_config_iovisor`` / ``get_config_midonet`` / ``get_config_tap``
of ``nova/virt/libvirt/vif.py``: all give ``<interface type="bridge">`` or
``type="ethernet"`` (docs/libvirt-rendering.md, "What is rendered, per
vif_type").
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import Element

from vifwire.renderers.libvirt.base import RendererBase, is_int
from vifwire.renderers.libvirt.config import format_interface
from vifwire.renderers.libvirt.constants import UINT_MAX, UNSIGNED


class BridgeFamily(RendererBase):
    """Bridge and tap vif types."""

    def osvif_kind_bridge(self) -> tuple:
        # Nova 33's _nova_to_osvif_vif_bridge (Nova 34 dropped the type).
        bridge, field = self.network_bridge()
        return ("bridge", self.vif_name(), bridge, field)

    # -- legacy path (get_config_*)

    def legacy_iovisor(self) -> Element:
        conf = self.legacy_base()
        self.ethernet(conf, self.legacy_devname())
        self.bandwidth(conf)
        return format_interface(conf)

    def legacy_midonet(self) -> Element:
        conf = self.legacy_base()
        self.ethernet(conf, self.legacy_devname())
        return format_interface(conf)

    def legacy_tap(self) -> Element:
        conf = self.legacy_base()
        self.ethernet(conf, self.legacy_devname())
        conf.managed = "no"
        net = self.vif.get("network")
        if isinstance(net, Mapping) and net:
            mtu = self.net_meta(net).get("mtu")
            if mtu:
                if not (is_int(mtu) and 0 <= mtu <= UINT_MAX or
                        isinstance(mtu, str) and UNSIGNED.match(mtu)
                        and int(mtu) <= UINT_MAX):
                    self.fail("network.meta.mtu", f"{mtu!r} is not a valid "
                              "MTU (libvirt's schema: unsigned integer)")
                conf.mtu = mtu
        return format_interface(conf)
