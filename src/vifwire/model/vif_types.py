"""The vocabulary of port bindings: vif types, vnic types and detail keys.

Values are the wire strings Neutron (neutron-lib) and Nova use, so bindings
can be passed through untouched.
"""

from __future__ import annotations

OVS = "ovs"
BRIDGE = "bridge"
TAP = "tap"
QBG = "802.1qbg"
QBH = "802.1qbh"
MACVTAP = "macvtap"
HW_VEB = "hw_veb"
HOSTDEV = "hostdev_physical"
IB_HOSTDEV = "ib_hostdev"
VHOSTUSER = "vhostuser"
IOVISOR = "iovisor"
MIDONET = "midonet"
IVS = "ivs"
VROUTER = "vrouter"
AGILIO_OVS = "agilio_ovs"
DVS = "dvs"

BINDING_FAILED = "binding_failed"
UNBOUND = "unbound"

#: Every vif_type vifwire accepts.
SUPPORTED = (
    OVS, BRIDGE, TAP, QBG, QBH, MACVTAP, HW_VEB, HOSTDEV, IB_HOSTDEV,
    VHOSTUSER, IOVISOR, MIDONET, IVS, VROUTER, AGILIO_OVS, DVS,
)

#: Types that Neutron/Nova define but that cannot be wired by a libvirt/LXD host.
KNOWN_UNSUPPORTED = {
    "hyperv": "is for Hyper-V hosts",
    "other": "carries no wiring information",
    "vif": "is a placeholder type",
    "distributed": "is not a host binding",
}

VNIC_NORMAL = "normal"
VNIC_DIRECT = "direct"
VNIC_MACVTAP = "macvtap"
VNIC_DIRECT_PHYSICAL = "direct-physical"
VNIC_BAREMETAL = "baremetal"
VNIC_VIRTIO_FORWARDER = "virtio-forwarder"
VNIC_VDPA = "vdpa"
VNIC_ACCELERATOR_DIRECT = "accelerator-direct"
VNIC_ACCELERATOR_DIRECT_PHYSICAL = "accelerator-direct-physical"
VNIC_REMOTE_MANAGED = "remote-managed"
VNIC_SMARTNIC = "smart-nic"

VNIC_TYPES = (
    VNIC_NORMAL, VNIC_DIRECT, VNIC_MACVTAP, VNIC_DIRECT_PHYSICAL, VNIC_BAREMETAL,
    VNIC_VIRTIO_FORWARDER, VNIC_VDPA, VNIC_ACCELERATOR_DIRECT,
    VNIC_ACCELERATOR_DIRECT_PHYSICAL, VNIC_REMOTE_MANAGED, VNIC_SMARTNIC,
)

#: OVS vnic types with no tap: the guest gets the VF (with ``vdpa``, the VF's
#: vhost-vdpa device) and the OVS port is the VF's representor; Nova
#: (``_nova_to_osvif_vif_ovs``, nova/network/os_vif_util.py) makes them VIFHostDevice.
VNIC_REPRESENTOR = (VNIC_DIRECT, VNIC_REMOTE_MANAGED, VNIC_VDPA)

MACVTAP_MODES = ("vepa", "bridge", "private", "passthrough")
VHOSTUSER_MODES = ("client", "server")
#: ``vhostuser_mode`` when the binding leaves it out: QEMU is the server
#: (Nova's ``_set_vhostuser_settings``, nova/network/os_vif_util.py).
VHOSTUSER_DEFAULT_MODE = "server"

#: Types whose host side is a kernel device that vifwire can wire for a container.
LXD_SUPPORTED = (OVS, BRIDGE, TAP, MACVTAP)
