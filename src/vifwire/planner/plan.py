"""The plan: what the generic driver decided, as data.

A plan is the contract between the planner and the executors. It is plain,
JSON-serialisable data so that it can be printed (``vifwire plan``), stored
with the attachment, and replayed backwards at unplug time without the
binding being available any more.

Host step kinds (``Step.op``, a :class:`StepKind`) and their ``args``:

``tap``          name, mac?, mtu?, multiqueue - a persistent tap, up
``veth``         name, peer, mtu?, peer_netns?, peer_mac?, host_mac? - a veth pair,
                 both ends up; the peer (``tin``, the guest end) gets the guest's
                 MAC and is created directly in ``peer_netns`` when given
``bridge``       name, mtu?, shared - ensure a Linux bridge (fwd delay 0, STP off,
                 no IPv6); ``shared`` bridges outlive the port and are removed
                 only with the last port, and only if vifwire created them
``master``       name, master - enslave a link to a bridge
``macvtap``      name, source, mode, mac?, mtu? - a macvtap on ``source``
``vlan``         name, parent, vlan_id - ensure a VLAN sub-interface
``require_link`` name, why - the link must exist (nothing is created)
``ovs_bridge``   name, datapath_type - ensure an OVS bridge exists (never removed)
``ovs_port``     bridge, name, iface_type, external_ids, mtu_request?, tag?, options
``routes``       dev, addresses - host routes (/32, /128) to the guest via dev
``sysctls``      dev, values {name: value} - per-device sysctls
``proxy_ndp``    dev, addresses - IPv6 neighbour proxy entries
``antispoof``    ifname, mac, ipv4, ipv6, pairs, bridged - anti-spoofing filter
``addresses``    dev, addresses (CIDRs), shared, up - host addresses (a gateway);
                 ``shared`` ones (a network bridge's) stay when the port goes
``guest_ip``     netns, ifname, addresses (CIDRs), routes [{dst, gw}] - the guest
                 end's addresses and routes, set inside the guest's namespace
``lxd_nic``      instance, socket, device, nic {type, nictype, parent, hwaddr}, mac -
                 the LXD instance's NIC device ``device`` (its ``parent`` the tin
                 end); detached by name, else by ``mac`` (docs/lxd.md)

Link-creating steps (tap, veth, macvtap, the port's own bridge) also carry
``owner`` (the port id): the ownership mark the executor writes on the device
and checks before it touches one (docs/operations.md). Tap, veth and macvtap
steps may carry ``no_ipv6``: the step's devices in the host's namespace on
which IPv6 is disabled before they come up (docs/kernel.md, "IPv6 on").
A veth step with ``peer_to_guest`` has a peer that the guest's hypervisor
(LXD) moves into the guest and back: either place is right (docs/lxd.md).

At unplug time the engine gives the port's veth step ``mac`` (the guest MAC) as a
hint, so a pair named by an older version can still be
found by MAC (docs/architecture.md, "Containers").
"""

from __future__ import annotations

from enum import StrEnum
from dataclasses import dataclass, field
from typing import Any


class StepKind(StrEnum):
    """Every kind of host step a plan may hold; each has exactly one handler
    in :mod:`vifwire.executors.registry` (a test holds that)."""

    TAP = "tap"
    VETH = "veth"
    BRIDGE = "bridge"
    MASTER = "master"
    MACVTAP = "macvtap"
    VLAN = "vlan"
    REQUIRE_LINK = "require_link"
    OVS_BRIDGE = "ovs_bridge"
    OVS_PORT = "ovs_port"
    ROUTES = "routes"
    SYSCTLS = "sysctls"
    PROXY_NDP = "proxy_ndp"
    ANTISPOOF = "antispoof"
    ADDRESSES = "addresses"
    GUEST_IP = "guest_ip"
    LXD_NIC = "lxd_nic"


#: Steps that create kernel links (and so own them).
LINK_KINDS = (StepKind.TAP, StepKind.VETH, StepKind.MACVTAP, StepKind.VLAN, StepKind.BRIDGE)


@dataclass(frozen=True, slots=True)
class Step:
    op: StepKind
    args: dict[str, Any] = field(default_factory=dict)
    why: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.op, StepKind):  # from stored JSON or a caller's string
            object.__setattr__(self, "op", StepKind(self.op))

    def to_json(self) -> dict[str, Any]:
        """JSON data sharing ``args`` (plans are written out, never mutated)."""
        return {"op": self.op.value, "args": self.args, "why": self.why}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Step":
        return cls(op=StepKind(data["op"]), args=dict(data.get("args") or {}), why=data.get("why") or "")

    def describe(self) -> str:
        main = self.args.get("name") or self.args.get("dev") or self.args.get("ifname") or ""
        extra = ""
        if self.op == "veth":
            extra = f" <-> {self.args['peer']}" + (f" (in {self.args['peer_netns']})" if self.args.get("peer_netns") else "")
        elif self.op == "master":
            extra = f" -> {self.args['master']}"
        elif self.op == "ovs_port":
            extra = f" on {self.args['bridge']}"
        elif self.op == "macvtap":
            extra = f" on {self.args['source']} mode {self.args['mode']}"
        elif self.op == "guest_ip":
            extra = f" in {self.args['netns']} " + ",".join(self.args.get("addresses", []))
        elif self.op == "lxd_nic":
            main, extra = self.args["device"], f" -> LXD instance {self.args['instance']}"
        elif self.op in ("routes", "proxy_ndp", "addresses"):
            extra = " " + ",".join(self.args.get("addresses", []))
        return f"{self.op} {main}{extra}".rstrip()


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """The guest side: a libvirt ``<interface>`` (or ``<hostdev>``) or LXD devices."""

    kind: str  # "libvirt" | "lxd"
    xml: str | None = None
    devices: dict[str, dict[str, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "xml": self.xml, "devices": self.devices}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GuestConfig":
        return cls(kind=data["kind"], xml=data.get("xml"), devices=data.get("devices"))


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """Plain data (frozen dataclasses, no validation library): the planner made
    it, and a stored one is read back with :meth:`from_json` on every unplug
    and check, thousands at a time."""

    port_id: str
    instance_id: str | None = None
    devname: str
    mac: str
    vif_type: str
    vnic_type: str
    hypervisor: str
    strategy: str
    reason: str
    steps: list[Step]
    guest: GuestConfig | None = None

    def to_json(self) -> dict[str, Any]:
        return {"port_id": self.port_id, "instance_id": self.instance_id, "devname": self.devname,
                "mac": self.mac, "vif_type": self.vif_type, "vnic_type": self.vnic_type,
                "hypervisor": self.hypervisor, "strategy": self.strategy, "reason": self.reason,
                "steps": [s.to_json() for s in self.steps],
                "guest": self.guest.to_json() if self.guest is not None else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        guest = data.get("guest")
        return cls(port_id=data["port_id"], instance_id=data.get("instance_id"), devname=data["devname"],
                   mac=data["mac"], vif_type=data["vif_type"], vnic_type=data["vnic_type"],
                   hypervisor=data["hypervisor"], strategy=data["strategy"], reason=data["reason"],
                   steps=[Step.from_json(s) for s in data.get("steps") or []],
                   guest=GuestConfig.from_json(guest) if guest else None)

    def devices(self) -> list[str]:
        """Kernel devices this plan creates (and therefore owns)."""
        out = []
        for s in self.steps:
            if s.op in ("tap", "macvtap", "vlan"):
                out.append(s.args["name"])
            elif s.op == "veth":
                out.append(s.args["name"])
                if not s.args.get("peer_netns"):
                    out.append(s.args["peer"])
            elif s.op == "bridge" and not s.args.get("shared"):
                out.append(s.args["name"])
        return out
