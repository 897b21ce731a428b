"""The validated port binding: one typed model for every vif_type.

A :class:`Binding` is what every later layer works from. It keeps two views:

* ``vif`` - the binding as a Nova ``network_info`` VIF dict. Renderers read it
  so that their output can be compared with Nova's for the very same input.
* ``spec`` - the typed, validated parameters for the vif_type (the "required parameters" of
  docs/libvirt-rendering.md), which the planner reads. Anything the planner needs
  is in ``spec``; it never digs in raw dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union

#: Frozen, keyword-only dataclasses: the loader validates every field itself
#: (one line per problem, docs/libvirt-rendering.md), so the model only holds
#: the result. Plain dataclasses rather than pydantic models keep a one-port
#: CLI call fast: building pydantic's validators for these classes cost
#: ~0.1 s of every process's start-up.
_model = dataclass(frozen=True, kw_only=True)


def _json(value: Any) -> Any:
    """A model value as JSON data (tuples become lists, models dicts)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


class _Spec:
    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@_model
class OvsSpec(_Spec):
    """Open vSwitch port (vif_type ``ovs`` and ``agilio_ovs``).

    ``hybrid_plug``/``create_tap``/``port_filter`` are ``None`` when the
    binding does not say, so the planner can tell "absent" from "false" and
    apply the generic driver's automatic choice (docs/architecture.md) only when the binding is silent.
    """

    kind: Literal["ovs"] = "ovs"
    bridge: str
    interface_id: str
    hybrid_plug: bool | None = None
    create_tap: bool | None = None
    port_filter: bool | None = None
    datapath_type: str | None = None
    isolate_vif: bool = False
    representor: bool = False


@_model
class BridgeSpec(_Spec):
    """Linux bridge (vif_type ``bridge``)."""

    kind: Literal["bridge"] = "bridge"
    bridge: str
    should_create_bridge: bool = True
    vlan: int | None = None
    bridge_interface: str | None = None
    port_filter: bool | None = None


@_model
class TapSpec(_Spec):
    """Unbridged routed TAP (vif_type ``tap``, docs/routed.md)."""

    kind: Literal["tap"] = "tap"
    mac: str | None = None
    port_filter: bool | None = None


@_model
class QbgSpec(_Spec):
    """VEPA 802.1Qbg: all four parameters within libvirt's ranges."""

    kind: Literal["qbg"] = "qbg"
    interface: str
    managerid: int  # 0-255
    typeid: int  # 0-16777215
    typeidversion: int  # 0-255
    instanceid: str


@_model
class QbhSpec(_Spec):
    kind: Literal["qbh"] = "qbh"
    profileid: str
    pci_slot: str


@_model
class MacvtapSpec(_Spec):
    kind: Literal["macvtap"] = "macvtap"
    source: str
    mode: Literal["vepa", "bridge", "private", "passthrough"]
    physical_interface: str
    vlan: int | None = None


@_model
class PciSpec(_Spec):
    """SR-IOV / passthrough types (hw_veb, hostdev_physical, ib_hostdev)."""

    kind: Literal["pci"] = "pci"
    pci_slot: str
    vlan: int | None = None


@_model
class VhostUserSpec(_Spec):
    """vhost-user socket, optionally an OVS(-DPDK) port (``vhostuser_ovs_plug``)."""

    kind: Literal["vhostuser"] = "vhostuser"
    socket: str
    mode: Literal["client", "server"]
    ovs_plug: bool = False
    bridge: str | None = None
    interface_id: str | None = None
    datapath_type: str | None = None


@_model
class EthernetSpec(_Spec):
    """Legacy types Nova renders as a plain ``type="ethernet"`` tap."""

    kind: Literal["ethernet"] = "ethernet"


Spec = Union[OvsSpec, BridgeSpec, TapSpec, QbgSpec, QbhSpec, MacvtapSpec, PciSpec, VhostUserSpec, EthernetSpec]


@_model
class AddressPair(_Spec):
    ip: str  # address or CIDR
    mac: str | None = None


@_model
class Route(_Spec):
    """A route the guest gets (Nova's subnet ``routes``: ``cidr`` via ``gateway``)."""

    dst: str  # network, e.g. 0.0.0.0/0
    gw: str | None = None


@_model
class Subnet(_Spec):
    """One subnet of the port's network, as the network service gave it.

    Only what configuring a guest's interface needs (a container whose
    addresses vifwire sets, docs/cni.md): the prefix, the gateway, the
    port's fixed IPs in it and the extra routes.
    """

    cidr: str | None = None
    gateway: str | None = None
    ips: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()


@_model
class Binding:
    """One port, validated."""

    port_id: str
    vif_type: str
    vnic_type: str = "normal"
    mac: str  # normalised lower-case aa:bb:cc:dd:ee:ff
    devname: str
    mtu: int | None = None
    network_id: str | None = None
    instance_id: str | None = None
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    allowed_address_pairs: tuple[AddressPair, ...] = ()
    subnets: tuple[Subnet, ...] = ()
    spec: Spec
    vif: dict[str, Any] = field(default_factory=dict)  # Nova network_info VIF (for renderers / Nova parity)
    source: Literal["neutron", "nova"] = "nova"

    def to_json(self) -> dict[str, Any]:
        """The binding as JSON data (what the store keeps and ``validate --json`` prints).

        Field by field rather than a generic walk: the ``vif`` dict is JSON
        data already (the loader checked) and is shared, not copied; this runs
        once per port of every plug.
        """
        return {"port_id": self.port_id, "vif_type": self.vif_type, "vnic_type": self.vnic_type,
                "mac": self.mac, "devname": self.devname, "mtu": self.mtu, "network_id": self.network_id,
                "instance_id": self.instance_id, "ipv4": list(self.ipv4), "ipv6": list(self.ipv6),
                "allowed_address_pairs": [{"ip": p.ip, "mac": p.mac} for p in self.allowed_address_pairs],
                "subnets": [s.to_json() for s in self.subnets],
                "spec": {f.name: getattr(self.spec, f.name) for f in dataclasses.fields(self.spec)},
                "vif": self.vif, "source": self.source}

    def replace(self, **changes: Any) -> "Binding":
        return dataclasses.replace(self, **changes)

    @property
    def port_filter(self) -> bool | None:
        return getattr(self.spec, "port_filter", None)
