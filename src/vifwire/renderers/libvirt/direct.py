"""The direct/hostdev/vhost-user family: the guest reaches a NIC (or a
vhost-user socket) without a host tap.

os-vif's representor and vhost-user conversions (``os_vif_util``:
``_set_representor_datapath_offload_settings``,
``_set_vhostuser_settings``) and the legacy ``get_config_802qbg`` /
``802qbh`` / ``hw_veb`` / ``hostdev_physical`` / ``macvtap`` of
``nova/virt/libvirt/vif.py``.  Where Nova's output fails libvirt's RNG
schema (``/usr/share/libvirt/schemas/domaincommon.rng``) libvirt wins
(docs/libvirt-rendering.md, "Deliberate differences from Nova").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element

from vifwire.renderers.libvirt.base import RendererBase, is_int, typename
from vifwire.renderers.libvirt.config import InterfaceConf, format_hostdev_pci, format_interface
from vifwire.renderers.libvirt.constants import (
    BRIDGE_MODES,
    NIC_NAME_LEN,
    OSVIF_PCI,
    PROFILEID_MAX,
    RAW_PCI,
    RAW_PCI_0X,
    SYSFS_PCI,
    UINT8_HEX,
    UINT24_HEX,
    UNSIGNED,
    UUID,
    VNIC_ACCELERATOR_DIRECT,
    VNIC_DIRECT,
    VNIC_NORMAL,
    VNIC_VIRTIO_FORWARDER,
)


class DirectFamily(RendererBase):
    """Representors, vhost-user, SR-IOV VFs, macvtap and 802.1Qbg/Qbh."""

    # -- os-vif path

    def osvif_kind_vhostuser(self) -> tuple:
        d = self.details
        if not d.get("vhostuser_fp_plug", False) and d.get(
                "vhostuser_ovs_plug", False):
            vif_name = ("vhu" + self.vif["id"])[:NIC_NAME_LEN]
        else:
            vif_name = self.vif_name()
        return self.vhostuser(vif_name)

    def osvif_kind_vrouter(self) -> tuple:
        vnic = self.vnic_type
        if vnic == VNIC_NORMAL:
            return ("generic", self.vif_name())
        if vnic == VNIC_DIRECT:
            return self.representor_hostdev(ovs=False)
        if vnic == VNIC_VIRTIO_FORWARDER:
            self.representor_profile(ovs=False)
            return self.vhostuser(self.vif_name())
        self.fail("binding:vnic_type", f"{vnic!r} is not supported for "
                  "vif_type 'vrouter' (normal, direct, virtio-forwarder)")

    def _profile(self) -> Mapping:
        profile = self.vif.get("profile")
        if not isinstance(profile, Mapping):
            self.fail("binding:profile", "is required (with pci_slot) for "
                      f"vnic_type {self.vnic_type!r}")
        return profile

    def representor_profile(self, ovs: bool) -> None:
        """The representor port profile/offload: needs profile.pci_slot.

        ``VIFPortProfileOVSRepresentor.representor_address`` (``ovs``) is a
        nullable PCIAddressField, the vrouter offload's a plain string.
        """
        profile = self._profile()
        if "pci_slot" not in profile:
            self.fail("binding:profile.pci_slot",
                      f"is required for vnic_type {self.vnic_type!r}")
        if ovs and profile["pci_slot"] is not None:
            self.osvif_pci()
        self.vif_name()

    def representor_hostdev(self, ovs: bool = True) -> tuple:
        self.representor_profile(ovs)
        return ("hostdev", self.osvif_pci())

    def vdpa_path(self, pci: str) -> str:
        """The VF's vhost-vdpa device: what Nova gets from libvirt
        (``Host.get_vdpa_device_path``), here from the options, so the
        renderer stays pure (docs/libvirt-rendering.md, "vdpa ports")."""
        o = self.opts
        devices = {k.lower(): v for k, v in o.vdpa_devices.items()}
        if pci in devices:
            path, field = devices[pci], f"guest.vdpa_devices[{pci}]"
        elif o.vdpa_dev is not None:
            path, field = o.vdpa_dev, "guest.vdpa_dev"
        else:
            self.fail("guest.vdpa_dev", "is required: no vhost-vdpa device "
                      f"is known for VF {pci} (give --vdpa-dev, or bind a "
                      "vDPA device on the VF to vhost_vdpa)")
        if not path.startswith("/"):
            self.fail(field, f"{path!r} is not an absolute path (the "
                      "/dev/vhost-vdpa-N character device)")
        return self.devname(path, field)

    def osvif_pci(self) -> str:
        """os-vif's PCIAddressField on profile.pci_slot."""
        slot = self._profile().get("pci_slot")
        field = "binding:profile.pci_slot"
        if not isinstance(slot, str):
            self.fail(field, "is required (the VF's PCI address)")
        norm = slot.lower()
        if not OSVIF_PCI.match(norm):
            self.fail(field, f"{slot!r} is not a PCI address "
                      "(dddd:bb:ss.f)")
        return norm

    def vhostuser(self, vif_name: str) -> tuple:
        """As Nova's ``_set_vhostuser_settings`` (nova/network/os_vif_util.py)."""
        d = self.details
        mode = d.get("vhostuser_mode", "server")
        if mode not in ("client", "server"):
            self.fail("binding:vif_details.vhostuser_mode",
                      f"{mode!r} is not 'client' or 'server'")
        path = d.get("vhostuser_socket")
        if not path:
            self.fail("binding:vif_details.vhostuser_socket",
                      "is required for a vhost-user port")
        if not isinstance(path, str):
            self.fail("binding:vif_details.vhostuser_socket",
                      f"must be a string, got {typename(path)}")
        if not re.match(r"(/|[a-zA-Z]:\\).", path):
            self.fail("binding:vif_details.vhostuser_socket",
                      f"{path!r} is not an absolute path (libvirt requires one)")
        return ("vhostuser", vif_name, mode, path)

    # -- legacy path (get_config_*)

    def _legacy_detail(self, key: str) -> Any:
        if key not in self.details:
            self.fail(f"binding:vif_details.{key}",
                      f"is required for vif_type {self.vif.get('type')!r}")
        return self.details[key]

    def _legacy_pci_slot(self) -> str:
        profile = self._profile()
        if "pci_slot" not in profile:
            self.fail("binding:profile.pci_slot",
                      f"is required for vif_type {self.vif.get('type')!r}")
        slot = profile["pci_slot"]
        if not isinstance(slot, str):
            self.fail("binding:profile.pci_slot",
                      f"must be a string, got {typename(slot)}")
        return slot

    def _raw_pci(self, slot: str, allow_0x: bool = False) -> dict[str, str]:
        m = (RAW_PCI_0X if allow_0x else RAW_PCI).match(slot)
        if not m:
            self.fail("binding:profile.pci_slot",
                      f"{slot!r} is not a PCI address (dddd:bb:ss.f)")
        return m.groupdict()

    def _vf_netdev(self, slot: str) -> str:
        """pci_utils.get_ifname_by_pci_address: the VF's netdev name."""
        if not SYSFS_PCI.match(slot):
            self.fail("binding:profile.pci_slot",
                      f"{slot!r} is not a PCI address (dddd:bb:ss.f)")
        vf = self.opts.vf_netdev
        if vf is None:
            self.fail("guest.vf_netdev", f"is required: the netdev of VF "
                      f"{slot} cannot be looked up by a pure renderer")
        return self.devname(vf, "guest.vf_netdev")

    def _vlan(self, conf: InterfaceConf, value: Any) -> None:
        conf.vlan = value
        if value and not (is_int(value) and 0 <= value <= 4095 or
                          isinstance(value, str) and UNSIGNED.match(value)
                          and int(value) <= 4095):
            self.fail("binding:vif_details.vlan",
                      f"{value!r} is not a VLAN id 0-4095")

    def legacy_802_1qbg(self) -> Element:
        conf = self.legacy_base()
        params = self.vif.get("qbg_params")
        if not isinstance(params, Mapping):
            self.fail("qbg_params", "is required for vif_type '802.1qbg' "
                      "(managerid, typeid, typeidversion, instanceid)")
        net = self.vif.get("network")
        if not isinstance(net, Mapping):
            self.fail("network", "is required for vif_type '802.1qbg'")
        iface = self.net_meta(net).get("interface")
        if iface is None:
            self.fail("network.meta.interface",
                      "is required for vif_type '802.1qbg' (the uplink)")
        conf.net_type = "direct"
        conf.source_dev = self.devname(iface, "network.meta.interface")
        conf.source_mode = "vepa"
        conf.vporttype = "802.1Qbg"
        for key, check, hi in (("managerid", UINT8_HEX, 255),
                               ("typeid", UINT24_HEX, 16777215),
                               ("typeidversion", UINT8_HEX, 255),
                               ("instanceid", None, None)):
            field = f"qbg_params.{key}"
            if key not in params or params[key] is None:
                self.fail(field, "is required for vif_type '802.1qbg'")
            v = params[key]
            if check is None:
                if not isinstance(v, str) or not UUID.match(v):
                    self.fail(field, f"{v!r} is not a UUID")
            elif is_int(v):
                # Nova hands the value to lxml, which only takes strings;
                # vifwire renders integers in decimal.
                if not 0 <= v <= hi:
                    self.fail(field, f"{v!r} is outside libvirt's range 0-{hi}")
                v = str(v)
            elif not isinstance(v, str):
                self.fail(field, f"must be an integer, got {typename(v)}")
            elif UNSIGNED.match(v):
                if int(v) > hi:
                    self.fail(field, f"{v!r} is outside libvirt's range 0-{hi}")
            elif not check.match(v):
                self.fail(field, f"{v!r} is not an integer 0-{hi} "
                          "(decimal, or hex with 0x)")
            conf.vportparams.append((key, v))
        self.bandwidth(conf)
        return format_interface(conf)

    def legacy_802_1qbh(self) -> Element:
        conf = self.legacy_base()
        slot = self._legacy_pci_slot()
        profileid = self._legacy_detail("profileid")
        if not isinstance(profileid, str):
            self.fail("binding:vif_details.profileid",
                      f"must be a string, got {typename(profileid)}")
        if len(profileid) > PROFILEID_MAX:
            self.fail("binding:vif_details.profileid", "is longer than "
                      f"libvirt's {PROFILEID_MAX} characters")
        self._vf_backend(conf, slot, hostdev=self.vnic_type == VNIC_DIRECT)
        conf.vporttype = "802.1Qbh"
        conf.vportparams.append(("profileid", profileid))
        self.bandwidth(conf)
        return format_interface(conf)

    def _vf_backend(self, conf, slot: str, hostdev: bool) -> None:
        """A VF as a PCI hostdev interface, or as a macvtap passthrough of its
        netdev (Nova's set_vif_host_backend_hostdev_pci_config / _direct_config)."""
        if hostdev:
            conf.net_type = "hostdev"
            conf.pci = self._raw_pci(slot)
            conf.model = None
        else:
            conf.net_type = "direct"
            conf.source_mode = "passthrough"
            conf.source_dev = self._vf_netdev(slot)
            conf.driver_name = "vhost"

    def legacy_hw_veb(self) -> Element:
        conf = self.legacy_base()
        slot = self._legacy_pci_slot()
        vlan = self._legacy_detail("vlan")
        self._vlan(conf, vlan)
        self._vf_backend(conf, slot, hostdev=self.vnic_type in (VNIC_DIRECT, VNIC_ACCELERATOR_DIRECT))
        self.bandwidth(conf)
        return format_interface(conf)

    def legacy_hostdev_physical(self) -> Element:
        return format_hostdev_pci(
            self._raw_pci(self._legacy_pci_slot(), allow_0x=True))

    legacy_ib_hostdev = legacy_hostdev_physical

    def legacy_macvtap(self) -> Element:
        conf = self.legacy_base()
        keys = ("macvtap_source", "macvtap_mode", "physical_interface")
        missing = [k for k in keys if self.details.get(k) is None]
        if missing:
            self.fail(f"binding:vif_details.{missing[0]}",
                      "is required for vif_type 'macvtap' (missing: "
                      f"{', '.join(missing)})")
        mode = self.details["macvtap_mode"]
        if mode not in BRIDGE_MODES:
            self.fail("binding:vif_details.macvtap_mode", f"{mode!r} is not "
                      f"one of {', '.join(BRIDGE_MODES)}")
        conf.net_type = "direct"
        conf.source_mode = mode
        conf.source_dev = self.devname(self.details["macvtap_source"],
                                        "binding:vif_details.macvtap_source")
        conf.model = "virtio"
        self.bandwidth(conf)
        return format_interface(conf)
