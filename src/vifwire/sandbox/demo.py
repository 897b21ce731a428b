"""The sandbox demo behind ``vifwire up --sandbox``: a stand-in host and guests, and traffic.

A real host already has uplinks and an Open vSwitch; the sandbox namespace
gets stand-ins. Container guests get their addresses, ping each other, and a
routed guest's spoofed packet is shown dropped and counted by its filter.
Reports go through ``out`` (the caller decides whether and how to print).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable


def underlay(stack: contextlib.ExitStack, netns: str, items: list, out: Callable[[str], None]) -> str | None:
    """What a real host would already have: uplinks and, when a port needs it, an OVS.

    Returns the private OVS's OVSDB endpoint (None when no port needs OVS).
    """
    from pyroute2 import IPRoute

    needed = set()
    for _, p in items:
        for s in p.steps:
            if s.op == "require_link":
                needed.add(s.args["name"])
            elif s.op == "macvtap":
                needed.add(s.args["source"])
    with IPRoute(netns=netns) as ipr:
        for name in sorted(needed):
            if not ipr.link_lookup(ifname=name):
                # this kernel has no dummy driver: a veth end stands in for an uplink
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": (name + "p")[:15]})
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
                out(f"sandbox: stand-in uplink {name}")
    if any(s.op.startswith("ovs_") for _, p in items for s in p.steps):
        from vifwire.sandbox.ovs_daemon import PrivateOVS

        ovs = stack.enter_context(PrivateOVS().start(netns))
        out(f"sandbox: private Open vSwitch ({ovs.endpoint}, userspace datapath)")
        return ovs.endpoint
    return None


def traffic(items: list, results: list, guest_ns: dict[str, str], netns: str, out: Callable[[str], None]
            ) -> dict[str, Any]:
    """Give each container guest its addresses, ping between them, then show a
    routed guest's spoofed packet being dropped and counted by its filter."""
    import select
    import socket
    import time

    from pyroute2 import IPRoute

    from vifwire.model import names
    from vifwire.sandbox import guests

    def spoof_demo(netns, guest_ns, src, dst, out) -> dict[str, Any]:
        """Send a spoofed-source ICMP echo from ``src``'s guest to ``dst``; report the drop counter."""
        from vifwire.executors.antispoof import AntiSpoof
        from vifwire.executors.nft import Nft
        from vifwire.sandbox import tunvm

        spoofed = "192.0.2.66"  # TEST-NET-1: owned by no port
        with IPRoute(netns=netns) as ipr:
            idx = ipr.link_lookup(ifname=src.devname)[0]
            gw_mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")  # the host end answers for the gateway

        def raw(ifname: str) -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind((ifname, 0))
            s.setblocking(False)
            return s

        nft = Nft(netns)
        anti = AntiSpoof(nft)
        tx = tunvm.run_in_netns(guest_ns[src.port_id], raw, names.tin_for(src.devname))
        rx = tunvm.run_in_netns(guest_ns[dst.port_id], raw, names.tin_for(dst.devname))
        try:
            before = anti.drops(src.devname).get("ip4", 0)
            tx.send(tunvm.echo4_frame(gw_mac, src.mac, spoofed, dst.ipv4[0], 0x5f5f, 1))
            arrived = False
            end = time.monotonic() + 1.0
            while (left := end - time.monotonic()) > 0 and not arrived:
                if select.select([rx], [], [], left)[0]:
                    arrived = tunvm.parse(rx.recv(65535)).ip_src == spoofed
            after = before
            for _ in range(20):
                after = anti.drops(src.devname).get("ip4", 0)
                if after > before:
                    break
                time.sleep(0.05)
        finally:
            tx.close()
            rx.close()
            nft.close()
        blocked = after > before and not arrived
        still = any(guests.ping(guest_ns[src.port_id], dst.ipv4[0]) for _ in range(3))
        out(f"traffic: spoof {src.port_id[:13]} (source {spoofed}, not its {src.ipv4[0]}) -> {dst.ipv4[0]}: "
            f"{'blocked' if blocked else 'NOT blocked'}, drop counter ip4 {before} -> {after}; "
            f"legit traffic afterwards: {'reached' if still else 'NOT reached'}")
        return {"from": src.port_id, "source": spoofed, "to": dst.ipv4[0], "blocked": blocked,
                "drops_before": before, "drops_after": after, "legit_after": still}

    ok = {r.port_id for r in results if r.ok}
    routed = {"veth-routed"}
    configured = []
    for b, p in items:
        if b.port_id not in ok or b.port_id not in guest_ns or p.strategy == "macvtap":
            continue
        if not b.ipv4:
            continue
        tin = names.tin_for(b.devname)
        # the container's NIC carries the port's MAC, as LXD sets it from the
        # device's hwaddr (the anti-spoofing filter allows only that MAC)
        with IPRoute(netns=guest_ns[b.port_id]) as ipr:
            idx = ipr.link_lookup(ifname=tin)
            if idx and ipr.get_links(idx[0])[0].get_attr("IFLA_ADDRESS") != b.mac:
                ipr.link("set", index=idx[0], state="down")
                ipr.link("set", index=idx[0], address=b.mac)
        is_routed = p.strategy in routed
        guests.configure(guest_ns[b.port_id], tin, list(b.ipv4), list(b.ipv6) if is_routed else [],
                         routed=is_routed)
        configured.append((b, p))
    if any(p.strategy in routed for _, p in configured):
        routed_gateway(netns)
    report = []
    for b, p in configured:
        for b2, p2 in configured:
            if b2 is b:
                continue
            same_l2 = segment(p) == segment(p2) and segment(p) is not None
            both_routed = p.strategy in routed and p2.strategy in routed
            if not (same_l2 or both_routed):
                continue
            good = any(guests.ping(guest_ns[b.port_id], b2.ipv4[0]) for _ in range(3))
            report.append({"from": b.port_id, "to": b2.port_id, "address": b2.ipv4[0], "reached": good})
            out(f"traffic: {b.port_id[:13]} ({p.strategy}) -> {b2.ipv4[0]} ({p2.strategy}): "
                f"{'reached' if good else 'NOT reached'}")
    result: dict[str, Any] = {"pings": report}
    # a spoof attempt: a routed, filtered guest sends with a source address it does not own
    filtered = [(b, p) for b, p in configured if p.strategy in routed and any(s.op == "antispoof" for s in p.steps)]
    others = [(b, p) for b, p in configured if p.strategy in routed]
    if filtered and len(others) > 1:
        src, _ = filtered[0]
        dst = next(b for b, _ in others if b is not src)
        result["spoof"] = spoof_demo(netns, guest_ns, src, dst, out)
    return result


def segment(p) -> str | None:
    """The L2 segment a port lands on: its OVS bridge, else its Linux bridge."""
    for s in p.steps:
        if s.op == "ovs_port":
            return "ovs:" + s.args["bridge"]
    for s in p.steps:
        if s.op == "master":
            return s.args["master"]
    return None


def routed_gateway(netns) -> None:
    """The gateways routed guests use, answered by the sandbox host: 169.254.1.1
    on its lo (ARP from the guest's tap), fe80:: by each tap (subnet-router
    anycast, with the IPv6 forwarding vifwire sets on it). IPv6 forwards only with forwarding on host-wide, which a
    routed compute host has; here it is set in the sandbox namespace only."""
    from pyroute2 import IPRoute

    from vifwire.sandbox import guests, tunvm

    if not netns:
        return  # only ever the sandbox's own namespace
    with IPRoute(netns=netns) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        if not ipr.get_addr(index=lo, address=guests.ROUTED_GW4):
            ipr.addr("add", index=lo, address=guests.ROUTED_GW4, prefixlen=32)
    if tunvm.sysctl_read(netns, "net/ipv6/conf/all/forwarding") not in (None, "1"):
        tunvm.sysctl_write(netns, "net/ipv6/conf/all/forwarding", "1")
