"""The OVS family: ``ovs``, ``agilio_ovs`` and ``ivs`` to os-vif kinds.

Mirrors ``nova/network/os_vif_util.py``'s ``_nova_to_osvif_vif_ovs`` (and
friends): hybrid plug (a ``qbr`` Linux bridge), a libvirt ``openvswitch``
virtualport, a tap vifwire creates, or a port someone else creates -- and
the ``ovs_strategy`` override of that choice (docs/libvirt-rendering.md,
"``ovs_strategy``").  Offloaded vnic types fall through to the representor
conversions of :class:`~.direct.DirectFamily`, as in os-vif.
"""

from __future__ import annotations

from vifwire.renderers.libvirt.base import typename
from vifwire.renderers.libvirt.constants import (
    NIC_NAME_LEN,
    VNIC_DIRECT,
    VNIC_REMOTE_MANAGED,
    VNIC_VDPA,
    VNIC_VIRTIO_FORWARDER,
)
from vifwire.renderers.libvirt.direct import DirectFamily


class OvsFamily(DirectFamily):
    """``osvif_kind_*`` of the OVS-backed vif types (os_vif_util's
    ``_nova_to_osvif_vif_ovs``, ``_agilio_ovs``, ``_ivs``)."""

    def _hybrid_bridge_name(self) -> str:
        return ("qbr" + self.vif["id"])[:NIC_NAME_LEN]

    def _applies_strategy(self) -> str | None:
        self.strategy_used = True
        return self.strategy

    def osvif_kind_ovs(self) -> tuple:
        vnic = self.vnic_type
        if vnic in (VNIC_DIRECT, VNIC_VDPA):
            kind = self.representor_hostdev()
            if vnic == VNIC_VDPA:
                # _get_config_os_vif: a VIFHostDevice of vnic_type vdpa is
                # the VF's vhost-vdpa device, not a hostdev.
                return ("vdpa", self.vdpa_path(kind[1]))
            return kind
        if vnic == VNIC_REMOTE_MANAGED:
            return ("hostdev", self.osvif_pci())
        vif_name = self.vif_name()
        strategy = self._applies_strategy()
        hybrid = bool(self.details.get("ovs_hybrid_plug", False))
        create_tap = bool(self.details.get("ovs_create_tap", False))
        create_port = bool(self.vif.get("delegate_create", False))
        if strategy is not None:
            hybrid = strategy == "hybrid"
            create_tap = strategy == "create_tap"
            create_port = strategy in ("delegate", "manual")
        if hybrid:
            return ("bridge", vif_name, self._hybrid_bridge_name(), "id")
        iface_id = self.vif.get("ovs_interfaceid") or self.vif["id"]
        if not isinstance(iface_id, str):
            self.fail("ovs_interfaceid",
                      f"must be a string, got {typename(iface_id)}")
        bridge, _ = self.network_bridge()
        return ("ovs", vif_name, bridge, create_tap, create_port, iface_id)

    def osvif_kind_agilio_ovs(self) -> tuple:
        vnic = self.vnic_type
        if vnic == VNIC_DIRECT:
            return self.representor_hostdev()
        if vnic == VNIC_VIRTIO_FORWARDER:
            self.representor_profile(ovs=True)
            return self.vhostuser(self.vif_name())
        return self.osvif_kind_ovs()

    def osvif_kind_ivs(self) -> tuple:
        vif_name = self.vif_name()
        if self.details.get("ovs_hybrid_plug", False):
            return ("bridge", vif_name, self._hybrid_bridge_name(), "id")
        return ("generic", vif_name)
