"""The generic VIF driver (docs/architecture.md): binding + host facts -> plan.

One function, :func:`plan`, replaces the per-plugin ``libvirt_vif_driver``
setting (one admin-chosen driver per network plugin): the wiring is derived from the
binding's ``vif_type`` and details, and from facts about the host, never from
admin configuration. Every decision is written into the plan's ``reason`` so
an operator can see *why* a port was wired the way it was.

Pure: no host access, no I/O; guest configuration comes from the renderers,
which are pure too.
"""

from __future__ import annotations

from vifwire.errors import VifError
from vifwire.model import names, vif_types as vt
from vifwire.model.binding import (
    Binding, BridgeSpec, MacvtapSpec, OvsSpec, QbgSpec, TapSpec, VhostUserSpec,
)
from vifwire.planner.facts import LIBVIRT_VIRTUALPORT_MIN, HostFacts
from vifwire.planner.lxd import lxd_steps, lxd_takes_peer
from vifwire.planner.plan import GuestConfig, Plan, Step
from vifwire.renderers.options import GuestOptions

#: vifwire's marker in OVS Interface external_ids, so gc can tell its ports.
OVS_OWNER_KEY = "vifwire-owner"


def plan(binding: Binding, facts: HostFacts | None = None, guest: GuestOptions | None = None,
         render: bool = True) -> Plan:
    """Plan the wiring of one port. Raises :class:`VifError` when it cannot be done."""
    facts = facts or HostFacts()
    guest = guest or GuestOptions()
    if facts.hypervisor == "lxd":
        strategy, reason, steps = _plan_lxd(binding, facts)
        ovs_strategy = None
    else:
        strategy, reason, steps, ovs_strategy = _plan_libvirt(binding, facts, guest)
    steps = steps + _security_steps(binding, facts, strategy) + _gateway_steps(binding, facts, strategy) \
        + lxd_steps(binding, facts, guest)  # last: the container gets its NIC once the host side is done
    return Plan(
        port_id=binding.port_id, instance_id=binding.instance_id, devname=binding.devname,
        mac=binding.mac, vif_type=binding.vif_type, vnic_type=binding.vnic_type,
        hypervisor=facts.hypervisor, strategy=strategy, reason=reason, steps=steps,
        guest=render_guest(binding, facts, guest, ovs_strategy) if render else None,
    )


def render_guest(binding: Binding, facts: HostFacts, guest: GuestOptions,
                 ovs_strategy: str | None = None) -> GuestConfig:
    if facts.hypervisor == "lxd":
        from vifwire.renderers.lxd import render_devices

        return GuestConfig(kind="lxd", devices=render_devices(binding, guest))
    from vifwire.renderers.libvirt import render_interface_xml

    return GuestConfig(kind="libvirt", xml=render_interface_xml(binding.vif, guest, ovs_strategy))


# ----------------------------------------------------------------------------
# libvirt guests


def _plan_libvirt(b: Binding, f: HostFacts, g: GuestOptions):
    spec = b.spec
    mtu = b.mtu
    dev = b.devname
    if isinstance(spec, OvsSpec):
        return _plan_ovs_libvirt(b, spec, f, g)
    if isinstance(spec, VhostUserSpec):
        if spec.ovs_plug:
            name = names.derive("vhu", b.port_id)
            iface_type = "dpdkvhostuserclient" if spec.mode == "server" else "dpdkvhostuser"
            options = {"vhost-server-path": spec.socket} if spec.mode == "server" else {}
            bridge = spec.bridge or "br-int"
            # OVS-DPDK bridges are userspace (netdev) bridges, as os-vif makes them
            steps = [Step(op="ovs_bridge", args={"name": bridge, "datapath_type": spec.datapath_type or "netdev"}),
                     _ovs_port(b, bridge, name, spec.interface_id or b.port_id,
                               iface_type=iface_type, options=options, isolate=False)]
            return ("ovs-vhostuser",
                    f"vhostuser_ovs_plug: OVS-DPDK port {iface_type} ({spec.mode} mode socket {spec.socket})",
                    steps, None)
        return ("vhostuser", "vhost-user socket owned by the back-end; nothing to wire on the host", [], None)
    if isinstance(spec, BridgeSpec):
        steps = []
        if spec.vlan is not None and spec.bridge_interface:
            vname = f"vlan{spec.vlan}"
            steps.append(Step(op="vlan", args={"name": vname, "parent": spec.bridge_interface, "vlan_id": spec.vlan},
                              why="network asks for a VLAN on the bridge interface"))
        if spec.should_create_bridge:
            steps.append(Step(op="bridge", args={"name": spec.bridge, "mtu": mtu, "shared": True},
                              why="Linux bridge for the network; libvirt adds the guest's tap to it"))
        else:
            steps.append(Step(op="require_link", args={"name": spec.bridge, "why": "network bridge"}))
        if spec.vlan is not None and spec.bridge_interface:
            steps.append(Step(op="master", args={"name": f"vlan{spec.vlan}", "master": spec.bridge}))
        return ("bridge", f"vif_type bridge: libvirt type=bridge on {spec.bridge}", steps, None)
    if isinstance(spec, TapSpec):
        return ("routed-tap", "vif_type tap: an unbridged tap that the host routes",
                [Step(op="tap", args={"name": dev, "mac": spec.mac, "mtu": mtu, "multiqueue": _mq(f, g),
                                      "owner": b.port_id, **_no_ipv6(dev, routed=b)},
                      why="libvirt opens it with managed='no'")], None)
    if isinstance(spec, MacvtapSpec):
        steps = [Step(op="require_link", args={"name": spec.source, "why": "macvtap source"})]
        return ("macvtap", f"libvirt creates the macvtap on {spec.source} in {spec.mode} mode", steps, None)
    if isinstance(spec, QbgSpec):
        return ("direct-802.1qbg", f"libvirt type=direct on {spec.interface} with an 802.1Qbg virtualport",
                [Step(op="require_link", args={"name": spec.interface, "why": "802.1Qbg uplink"})], None)
    if b.vif_type == vt.QBH:
        return ("direct-802.1qbh", "libvirt attaches the VF with an 802.1Qbh port profile", [], None)
    if b.vif_type == vt.HW_VEB:
        return ("sriov-vf", "SR-IOV VF in VEB mode; libvirt sets the VF's MAC and VLAN", [], None)
    if b.vif_type in (vt.HOSTDEV, vt.IB_HOSTDEV):
        return ("pci-passthrough", "whole PCI device passed through by libvirt", [], None)
    if b.vif_type in (vt.IOVISOR, vt.MIDONET):
        return ("ethernet", f"legacy {b.vif_type}: an unbridged tap the back-end binds",
                [Step(op="tap", args={"name": dev, "mac": None, "mtu": mtu, "multiqueue": _mq(f, g),
                                      "owner": b.port_id})], None)
    return ("ethernet", f"legacy {b.vif_type}: the back-end's agent wires the tap libvirt creates", [], None)


def _nova_ovs_choice(spec: OvsSpec, b: Binding) -> str:
    if spec.hybrid_plug:
        return "hybrid"
    if spec.create_tap:
        return "create_tap"
    if b.vif.get("delegate_create"):
        return "delegate"
    return "virtualport"


def _plan_ovs_libvirt(b: Binding, spec: OvsSpec, f: HostFacts, g: GuestOptions):
    if spec.representor:
        return ("ovs-representor", f"vnic_type {b.vnic_type}: SR-IOV representor port, hardware offload",
                [], None)
    choice, reason = _choose_ovs(b, spec, f)
    nova = _nova_ovs_choice(spec, b)
    ovs_strategy = None if choice == nova else choice
    steps = _ovs_bridge_steps(spec, f)
    mtu = b.mtu
    if choice == "hybrid":
        steps += _hybrid_steps(b, spec)
    elif choice in ("create_tap", "manual"):
        steps.append(Step(op="tap", args={"name": b.devname, "mac": None, "mtu": mtu, "multiqueue": _mq(f, g),
                                          "owner": b.port_id, **_no_ipv6(b.devname)},
                          why="vifwire creates the tap; libvirt opens it"))
        steps.append(_ovs_port(b, spec.bridge, b.devname, spec.interface_id, isolate=spec.isolate_vif,
                               device_ready=True))
    else:  # virtualport / delegate
        steps.append(_ovs_port(b, spec.bridge, b.devname, spec.interface_id, isolate=spec.isolate_vif))
    return ("ovs-" + choice.replace("_", "-"), reason, steps, ovs_strategy)


def _choose_ovs(b: Binding, spec: OvsSpec, f: HostFacts) -> tuple[str, str]:
    """The generic driver's OVS choice (firewall -> hybrid, old libvirt -> manual), binding details first."""
    if spec.hybrid_plug is True:
        return "hybrid", "binding sets ovs_hybrid_plug=true"
    if spec.hybrid_plug is None and f.firewall:
        if spec.port_filter:
            why_not = "host firewalling is required but the network filters (port_filter=true)"
        else:
            return "hybrid", "host firewalling is required and the network does not filter: qbr bridge + qvb/qvo veth"
    else:
        why_not = ("binding sets ovs_hybrid_plug=false" if spec.hybrid_plug is False
                   else "no host firewalling required")
    if spec.create_tap:
        return "create_tap", f"{why_not}; binding sets ovs_create_tap=true: vifwire creates the tap (managed='no')"
    if b.vif.get("delegate_create"):
        return "delegate", f"{why_not}; delegate_create: vifwire creates the OVS port, libvirt the tap"
    if f.libvirt_version >= LIBVIRT_VIRTUALPORT_MIN:
        v = ".".join(map(str, f.libvirt_version))
        return "virtualport", f"{why_not}; libvirt {v} >= 0.9.11 manages the OVS port (virtualport)"
    v = ".".join(map(str, f.libvirt_version))
    return "manual", f"{why_not}; libvirt {v} < 0.9.11 has no virtualport: manual tap + OVS port, type=ethernet"


def _ovs_bridge_steps(spec: OvsSpec, f: HostFacts) -> list[Step]:
    dp = spec.datapath_type or f.ovs_datapath
    return [Step(op="ovs_bridge", args={"name": spec.bridge, "datapath_type": dp})]


def _hybrid_steps(b: Binding, spec: OvsSpec, tap_on_qbr: bool = False) -> list[Step]:
    qbr, qvb, qvo = (names.derive(p, b.port_id) for p in ("qbr", "qvb", "qvo"))
    mtu = b.mtu
    steps = [
        Step(op="bridge", args={"name": qbr, "mtu": mtu, "shared": False, "owner": b.port_id},
             why="per-port Linux bridge where host firewalling applies"),
        Step(op="veth", args={"name": qvb, "peer": qvo, "mtu": mtu, "owner": b.port_id, **_no_ipv6(qvb, qvo)},
             why="links qbr to OVS"),
        Step(op="master", args={"name": qvb, "master": qbr}),
        _ovs_port(b, spec.bridge, qvo, spec.interface_id, isolate=spec.isolate_vif, device_ready=True),
    ]
    return steps


def _ovs_port(b: Binding, bridge: str, name: str, iface_id: str, iface_type: str = "",
              options: dict | None = None, isolate: bool = False, device_ready: bool = False) -> Step:
    """An OVS port with the external_ids Neutron agents look for.

    ``device_ready``: an earlier step of the plan creates the kernel device, so
    OVS must give the port an ofport before the plug counts as done.
    """
    ext = {"iface-id": iface_id, "iface-status": "active", "attached-mac": b.mac, OVS_OWNER_KEY: b.port_id}
    if b.instance_id:
        ext["vm-uuid"] = b.instance_id
    args = {"bridge": bridge, "name": name, "iface_type": iface_type, "external_ids": ext,
            "mtu_request": b.mtu, "tag": 4095 if isolate else None, "options": options or {},
            "device_ready": device_ready}
    return Step(op="ovs_port", args=args,
                why="dead VLAN 4095 until the agent sets the tag" if isolate else "")


def _no_ipv6(*devices: str, routed: Binding | None = None) -> dict[str, list[str]]:
    """``no_ipv6``: the host-side devices that carry no address, on which the
    executor disables IPv6 before they come up (docs/kernel.md, "IPv6 on").

    Bridge and OVS ports, and a container's end until the container takes it
    (moved to another namespace, a device starts again with that namespace's
    defaults), never need IPv6: left on, each new one runs DAD, router
    solicitations and MLD, flooded to every port of its bridge, which makes
    plugging cost grow with the number of ports. A routed host end needs
    IPv6 only for a guest with IPv6 addresses (routes, the gateway's NDP).
    """
    if routed is not None and list(routed.ipv6):
        devices = devices[1:]
    return {"no_ipv6": list(devices)} if devices else {}


def _mq(f: HostFacts, g: GuestOptions) -> bool:
    return bool(f.multiqueue or (g.queues and g.queues > 1))


# ----------------------------------------------------------------------------
# LXD / LXC guests (docs/architecture.md, "Containers"): a tap/tin veth pair made before the container


def _plan_lxd(b: Binding, f: HostFacts):
    if b.vif_type not in vt.LXD_SUPPORTED and b.vif_type != vt.AGILIO_OVS:
        raise VifError(b.port_id, "binding:vif_type",
                       f"{b.vif_type!r} cannot be wired to an LXD container (supported: {', '.join(vt.LXD_SUPPORTED)})")
    if b.vnic_type != vt.VNIC_NORMAL and b.vif_type != vt.MACVTAP:
        raise VifError(b.port_id, "binding:vnic_type", f"{b.vnic_type!r} cannot be wired to an LXD container")
    spec = b.spec
    tap = b.devname
    tin = f.guest_ifname if f.guest_netns and f.guest_ifname else names.tin_for(b.devname)
    mtu = b.mtu
    if isinstance(spec, MacvtapSpec):
        return ("macvtap", f"macvtap on {spec.source} ({spec.mode}) passed to the container as a physical NIC",
                [Step(op="macvtap", args={"name": tap, "source": spec.source, "mode": spec.mode,
                                          "mac": b.mac, "mtu": mtu, "owner": b.port_id, **_no_ipv6(tap)})])
    # the tin end, while it is on the host, and a bridged tap end need no IPv6
    host_ends = [tap] + ([] if f.guest_netns else [tin])
    routed = None if isinstance(spec, (OvsSpec, BridgeSpec)) else b
    veth = Step(op="veth", args={"name": tap, "peer": tin, "mtu": mtu, "peer_netns": f.guest_netns,
                                "peer_mac": b.mac, "owner": b.port_id, **_no_ipv6(*host_ends, routed=routed)},
                why="tap end on the host, tin end for the container, made before it exists")
    if f.guest_ip:  # the host end's MAC is part of a CNI result: known before the device exists
        veth.args["host_mac"] = names.host_mac(b.port_id)
    if lxd_takes_peer(f):  # LXD moves the tin into the container and back (docs/lxd.md)
        veth.args["peer_to_guest"] = True
    if isinstance(spec, OvsSpec):
        choice, reason = _choose_ovs(b, spec, f)
        steps = _ovs_bridge_steps(spec, f)
        if choice == "hybrid":
            qbr = names.derive("qbr", b.port_id)
            steps += _hybrid_steps(b, spec) + [veth, Step(op="master", args={"name": tap, "master": qbr})]
            return "veth-ovs-hybrid", reason + "; container veth tap end on qbr", steps
        steps += [veth, _ovs_port(b, spec.bridge, tap, spec.interface_id, isolate=spec.isolate_vif,
                                  device_ready=True)]
        return "veth-ovs", "container veth, tap end on OVS bridge " + spec.bridge, steps
    if isinstance(spec, BridgeSpec):
        steps = []
        if spec.should_create_bridge:
            steps.append(Step(op="bridge", args={"name": spec.bridge, "mtu": mtu, "shared": True}))
        else:
            steps.append(Step(op="require_link", args={"name": spec.bridge, "why": "network bridge"}))
        steps += [veth, Step(op="master", args={"name": tap, "master": spec.bridge})]
        return "veth-bridge", f"container veth, tap end on Linux bridge {spec.bridge}", steps
    return "veth-routed", "vif_type tap: container veth, tap end unbridged and routed by the host", [veth]


# ----------------------------------------------------------------------------
# routing and anti-spoofing (docs/routed.md)

_ROUTED = {"routed-tap", "veth-routed"}
_BRIDGED = {"bridge", "veth-bridge", "ovs-hybrid", "veth-ovs-hybrid"}


def _security_steps(b: Binding, f: HostFacts, strategy: str) -> list[Step]:
    """Anti-spoofing first, then open the path (sysctls, routes).

    The filter goes in before forwarding is enabled on the device, so there is
    no moment at which the guest is routed but not filtered.

    Routed guests need no per-guest subnet or host address (docs/routed.md,
    "Gateways"): their IPv4 gateway 169.254.1.1 is answered by proxy ARP, and
    their IPv6 gateway is ``fe80::``, the subnet-router anycast address of the
    link-local prefix (RFC 4291, 2.6.1), which the kernel answers on every
    device with IPv6 forwarding on. Nothing per device is added for it: a
    proxy NDP entry per device would put every entry for one address in one
    hash chain of a table the whole host shares.
    """
    steps: list[Step] = []
    v4, v6 = list(b.ipv4), list(b.ipv6)
    if strategy in _ROUTED | _BRIDGED and not (f.anti_spoof == "off" or (f.anti_spoof == "auto" and b.port_filter)):
        pairs = [{"ip": p.ip, "mac": p.mac} for p in b.allowed_address_pairs]
        steps.append(Step(op="antispoof", args={
            "ifname": b.devname, "mac": b.mac, "ipv4": v4, "ipv6": v6,
            "pairs": pairs, "bridged": strategy in _BRIDGED},
            why="only the port's MAC and addresses may leave the guest"))
    if strategy in _ROUTED and (v4 or v6):
        values = {
            # routed, never a router the guest could configure; IPv6
            # forwarding also makes the device answer for fe80::
            "ipv4/conf/{dev}/forwarding": "1", "ipv6/conf/{dev}/forwarding": "1",
            "ipv6/conf/{dev}/accept_ra": "0",
            # the host answers ARP for the gateway (and any off-link address) itself,
            # at once rather than after a random delay of up to 0.8 s
            "ipv4/conf/{dev}/proxy_arp": "1", "ipv4/neigh/{dev}/proxy_delay": "0",
        }
        if v6:
            # an anycast address is answered after proxy_delay too (ndisc_recv_ns)
            values["ipv6/neigh/{dev}/proxy_delay"] = "0"
        steps.append(Step(op="sysctls", args={"dev": b.devname, "values": values},
                          why="routed guest reaches its gateways (proxy ARP, fe80:: anycast)"))
        steps.append(Step(op="routes", args={"dev": b.devname, "addresses": v4 + v6},
                          why="host routes (/32, /128) to the guest's addresses"))
    return steps


# ----------------------------------------------------------------------------
# the gateway on the host and the guest's own addresses (docs/cni.md)

#: The gateways a CNI container gets in routed mode, held by the host end
#: itself so that they answer ping at once (no DAD wait): never a per-guest
#: subnet. (A VM's IPv6 gateway is fe80::, see :func:`_security_steps`.)
ROUTED_GW4, ROUTED_GW6 = "169.254.1.1", "fe80::1"


def _gateway_steps(b: Binding, f: HostFacts, strategy: str) -> list[Step]:
    """The host's gateway addresses, then the guest end's addresses and routes.

    Last in the plan: the guest gets its addresses only once the host side
    (filter, routes) is complete. A routed host end holds the gateways itself
    (169.254.1.1/32 and fe80::1 on each host end, as CNI's ``ptp`` does), so
    the gateway answers ping and NDP without a shared device to clean up; a
    bridge holds each subnet's gateway (CNI ``bridge``'s ``isGateway``).
    """
    steps: list[Step] = []
    routed = strategy in _ROUTED
    v4, v6 = list(b.ipv4), list(b.ipv6)
    if f.host_gateway and routed and (v4 or v6):
        gws = ([f"{ROUTED_GW4}/32"] if v4 else []) + ([f"{ROUTED_GW6}/64"] if v6 else [])
        steps.append(Step(op="addresses", args={"dev": b.devname, "addresses": gws, "shared": False},
                          why="the host end holds the routed gateways, so they answer ping"))
    elif f.host_gateway and not routed:
        bridge = getattr(b.spec, "bridge", None)
        gws = [f"{s.gateway}/{s.cidr.split('/')[1]}" for s in b.subnets if s.gateway and s.cidr]
        if bridge and gws:
            # an OVS bridge's device appears when ovs-vswitchd has seen the bridge
            wait = 10 if isinstance(b.spec, OvsSpec) else 0
            steps.append(Step(op="addresses", args={"dev": bridge, "addresses": gws, "shared": True, "up": True,
                                                    "wait": wait},
                              why="the bridge holds the subnets' gateways (stays with the bridge)"))
    if f.guest_ip and f.guest_netns:
        addresses, routes = _guest_addressing(b, routed)
        ifname = f.guest_ifname or names.tin_for(b.devname)
        if addresses or routes:
            steps.append(Step(op="guest_ip", args={"netns": f.guest_netns, "ifname": ifname,
                                                   "addresses": addresses, "routes": routes},
                              why="vifwire configures the guest end (no DHCP in the container)"))
    return steps


def _guest_addressing(b: Binding, routed: bool) -> tuple[list[str], list[dict]]:
    """The guest end's CIDRs and routes: /32 and /128 via the routed gateways,
    or each subnet's prefix with its routes via its gateway (a default route
    when the subnet has a gateway and no routes)."""
    addresses: list[str] = []
    routes: list[dict] = []
    seen: set[tuple[str, str | None]] = set()

    def add(dst: str, gw: str | None) -> None:
        if (dst, gw) not in seen:
            seen.add((dst, gw))
            routes.append({"dst": dst, "gw": gw})

    for sub in b.subnets:
        for ip in sub.ips:
            v6 = ":" in ip
            if routed or not sub.cidr:
                addresses.append(f"{ip}/{128 if v6 else 32}")
            else:
                addresses.append(f"{ip}/{sub.cidr.split('/')[1]}")
        if not sub.ips:
            continue
        v6 = ":" in sub.ips[0]
        default = "::/0" if v6 else "0.0.0.0/0"
        if routed:
            gw = ROUTED_GW6 if v6 else ROUTED_GW4
            for r in sub.routes or ():
                add(r.dst, gw)
            if not sub.routes:
                add(default, gw)
        else:
            for r in sub.routes:
                if r.gw or sub.gateway:
                    add(r.dst, r.gw or sub.gateway)
            if not sub.routes and sub.gateway:
                add(default, sub.gateway)
    return addresses, routes
