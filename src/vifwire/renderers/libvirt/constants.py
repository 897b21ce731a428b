"""Nova 34's and libvirt's constants, in one place.

The renderer's modules share these; they are copied from the sources named
in each section so a Nova or libvirt upgrade is a diff of this file
(docs/libvirt-rendering.md).
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------------------
# Nova 34 constants (nova/network/model.py, nova/virt/libvirt/vif.py,
# nova/conf/libvirt.py, nova/objects/fields.py)

NIC_NAME_LEN = 14

VIRT_TYPES = ("kvm", "lxc", "qemu", "parallels")  # [libvirt]virt_type choices
QUEUE_SIZES = (256, 512, 1024)  # [libvirt]rx_queue_size/tx_queue_size choices

VIF_MODEL_VIRTIO = "virtio"
#: ``VIFModel.ALL``: what the ``hw_vif_model`` image property accepts.
VIF_MODEL_ALL = ("virtio", "ne2k_pci", "pcnet", "rtl8139", "e1000", "e1000e",
                 "netfront", "spapr-vlan", "lan9118", "sriov", "vmxnet",
                 "vmxnet3", "igb")
#: ``VIFModel.LEGACY_VALUES``: legacy spellings Nova maps (after lower()).
VIF_MODEL_LEGACY = {"virtuale1000": "e1000", "virtuale1000e": "e1000e",
                    "virtualpcnet32": "pcnet",
                    "virtualsriovethernetcard": "sriov",
                    "virtualvmxnet": "vmxnet", "virtualvmxnet3": "vmxnet3"}
SUPPORTED_VIF_MODELS = {
    "qemu": ("virtio", "ne2k_pci", "pcnet", "rtl8139", "e1000", "e1000e",
             "lan9118", "spapr-vlan", "vmxnet3", "igb"),
    "kvm": ("virtio", "ne2k_pci", "pcnet", "rtl8139", "e1000", "e1000e",
            "spapr-vlan", "vmxnet3", "igb"),
    "lxc": (),
    "parallels": ("virtio", "rtl8139", "e1000"),
}

VNIC_NORMAL = "normal"
VNIC_DIRECT = "direct"
VNIC_VDPA = "vdpa"
VNIC_VIRTIO_FORWARDER = "virtio-forwarder"
VNIC_REMOTE_MANAGED = "remote-managed"
VNIC_ACCELERATOR_DIRECT = "accelerator-direct"
VNIC_TYPES_DIRECT_PASSTHROUGH = (
    "direct", "direct-physical", "accelerator-direct",
    "accelerator-direct-physical", "remote-managed", "vdpa")

#: vif types Nova converts to os-vif objects (nova/network/os_vif_util.py).
#: ``bridge`` was removed in Nova 34; vifwire keeps Nova 33's conversion.
OS_VIF_TYPES = ("ovs", "ivs", "bridge", "agilio_ovs", "vhostuser", "vrouter")
#: vif types on Nova's legacy (non os-vif) path that libvirt renders.
LEGACY_TYPES = ("iovisor", "802.1qbg", "802.1qbh", "hw_veb",
                "hostdev_physical", "macvtap", "midonet", "tap", "ib_hostdev")
#: Known types Nova's libvirt driver refuses ("Unexpected vif_type").
NOT_RENDERED_TYPES = ("dvs", "binding_failed", "unbound")

#: ``ovs_strategy`` values: how an OVS port reaches the guest.
OVS_STRATEGIES = ("hybrid", "virtualport", "manual", "create_tap", "delegate")

# ---------------------------------------------------------------------------
# libvirt schema patterns (/usr/share/libvirt/schemas/*.rng, libvirt 9.0)

UNI_MAC = re.compile(r"[a-fA-F0-9][02468aAcCeE](:[a-fA-F0-9]{2}){5}\Z")
DEVICE_NAME = re.compile(r"[a-zA-Z0-9_.\-\\:/]+\Z")
BRIDGE_NAME = re.compile(r"[a-zA-Z0-9_.\-\\:/ ]*\Z")
UUID = re.compile(r"([a-fA-F0-9]{32}|[a-fA-F0-9]{8}-([a-fA-F0-9]{4}-){3}"
                   r"[a-fA-F0-9]{12})\Z")
UNSIGNED = re.compile(r"[0-9]+\Z")
UINT8_HEX = re.compile(r"0x[0-9a-fA-F]{1,2}\Z")
UINT24_HEX = re.compile(r"0x[0-9a-fA-F]{1,6}\Z")
BRIDGE_MODES = ("vepa", "bridge", "private", "passthrough")
PROFILEID_MAX = 39
UINT_MAX = 4294967295

# os-vif's PCIAddressField (lower-cased first); a literal dot is required.
OSVIF_PCI = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]\Z")
# nova.pci.utils.parse_address: the form a sysfs VF lookup needs.
SYSFS_PCI = re.compile(
    r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\Z")
# Raw address split like nova.pci.utils.get_pci_address_fields and prefixed
# with 0x, checked against libvirt's pciDomain/pciBus/pciSlot/pciFunc.
RAW_PCI = re.compile(r"(?P<domain>[0-9a-fA-F]{1,8}):(?P<bus>[0-9a-fA-F]{1,2})"
                      r":(?P<slot>[0-1]?[0-9a-fA-F])\.(?P<function>[0-7])\Z")
# Same, for <hostdev> (LibvirtConfigGuestHostdevPCI keeps an existing 0x).
RAW_PCI_0X = re.compile(
    r"(?P<domain>(0x)?[0-9a-fA-F]{1,8}):(?P<bus>(0x)?[0-9a-fA-F]{1,2})"
    r":(?P<slot>(0x)?[0-1]?[0-9a-fA-F])\.(?P<function>(0x)?[0-7])\Z")
