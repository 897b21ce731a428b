"""Addresses: the ``addresses`` step (host side) and ``guest_ip`` (inside the guest).

``addresses`` puts gateway addresses on a host device (ip-address(8)):
a routed host end's own 169.254.1.1/32 and fe80::1, which die with the
device, or a subnet's gateway on a network bridge (``shared``: it stays
with the bridge, as CNI ``bridge``'s ``isGateway`` leaves it). IPv6
addresses are added with ``IFA_F_NODAD``: a gateway that waits a second for
duplicate address detection is a second of every pod's start-up.

``guest_ip`` configures the guest end inside the guest's namespace, through
a netlink socket opened there (:func:`guest_channel`): addresses, then
routes (``onlink`` for a gateway outside every prefix, such as
169.254.1.1 on a /32). Unplug has nothing to do for it: the guest end goes
with its host end. Listed in :mod:`vifwire.executors.registry`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import time
from collections.abc import Iterator

from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.common import KernelView, ViewVerifier, channel, fail, log
from vifwire.netlink.channel import Channel, NetlinkError, Route, attr, parse_attrs, u32
from vifwire.netlink.constants import (
    IFA_ADDRESS, IFA_F_NODAD, IFA_F_PERMANENT, IFA_FLAGS, IFA_LOCAL, IFADDRMSG, NLM_F_CREATE, NLM_F_EXCL,
    RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE,
    RTM_DELADDR, RTM_DELROUTE, RTM_GETADDR, RTM_NEWADDR, RTM_NEWROUTE, RTMSG, RTN_UNICAST, RTNH_F_ONLINK,
    RTPROT_BOOT,
)
from vifwire.netlink.netns import NsWorker, netns_file
from vifwire.planner.plan import Step

Iface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL)


def _fam(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def addr_body(iface: Iface, index: int) -> bytes:
    """An ``ifaddrmsg`` for ``iface`` on ``index`` (link scope for link-local and /32 gateways)."""
    ip = iface.ip
    scope = RT_SCOPE_LINK if ip.is_link_local else RT_SCOPE_UNIVERSE
    flags = IFA_F_PERMANENT | (IFA_F_NODAD if ip.version == 6 else 0)
    body = IFADDRMSG.pack(_fam(ip.version), iface.network.prefixlen, flags & 0xFF, scope, index)
    body += attr(IFA_LOCAL, ip.packed) + attr(IFA_ADDRESS, ip.packed) + u32(IFA_FLAGS, flags)
    return body


def addresses_of(ch: Channel, index: int) -> set[Iface]:
    """The addresses on link ``index`` (one dump of the namespace's addresses)."""
    out: set[Iface] = set()
    for payload in ch.dump(RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        fam, plen, _fl, _scope, idx = IFADDRMSG.unpack_from(payload)
        if idx != index:
            continue
        a = parse_attrs(payload, IFADDRMSG.size)
        raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
        if raw:
            out.add(ipaddress.ip_interface((ipaddress.ip_address(raw), plen)))
    return out


def add_addresses(ch: Channel, index: int, wanted: list[Iface]) -> list[Iface]:
    """Add what is missing; returns what was added (already there = not ours to undo)."""
    added = []
    for iface in wanted:
        try:
            ch.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, addr_body(iface, index))
            added.append(iface)
        except NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise
    return added


def del_addresses(ch: Channel, index: int, ifaces: list[Iface]) -> None:
    for iface in ifaces:
        try:
            ch.request(RTM_DELADDR, 0, addr_body(iface, index))
        except NetlinkError as e:
            if e.errno not in _GONE:
                raise


class AddressesHandler(ViewVerifier):
    """Host addresses (gateways) on a device an earlier step made or requires.

    Deferred with the OVS steps (engine, phase 2): an OVS bridge's own
    device exists only once ovs-vswitchd has seen the bridge, so a step
    with ``wait`` waits up to that many seconds for the device to appear.
    """

    #: a port's own device takes its addresses with it (engine: skip at unplug)
    gone_with_device = True
    deferrable = True

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        out: list[Undo | None | Exception] = []
        for s in steps:
            try:
                out.append(self.apply(s, ctx))
            except Exception as exc:  # noqa: BLE001 - one port's failure is that port's
                out.append(exc)
        return out

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        ch = channel(ctx)
        link = ch.get_link(a["dev"])
        deadline = time.monotonic() + float(a.get("wait") or 0)
        while link is None and time.monotonic() < deadline:
            time.sleep(0.01)
            link = ch.get_link(a["dev"])
        if link is None:
            raise fail(ctx, step, f"{a['dev']} does not exist")
        wanted = [ipaddress.ip_interface(x) for x in a.get("addresses", [])]
        try:
            if a.get("up") and not link.up:
                ch.set_link(index=link.index, up=True)
            added = add_addresses(ch, link.index, wanted)
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot add {', '.join(map(str, wanted))} to {a['dev']}: {e}") from e
        if a.get("shared") or not added:
            return None  # a shared device's gateway serves the other ports too
        log.debug("%s: added %s", a["dev"], ", ".join(map(str, added)))
        return lambda: del_addresses(ch, link.index, added)

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        if a.get("shared"):
            return  # stays with the network's device
        ch = channel(ctx)
        index = ch.index_of(a["dev"], refresh=True)
        if index is not None:
            try:
                del_addresses(ch, index, [ipaddress.ip_interface(x) for x in a.get("addresses", [])])
            except NetlinkError as e:
                raise fail(ctx, step, f"cannot remove addresses from {a['dev']}: {e}") from e

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        index = view.index_of(a["dev"])
        if index is None:
            return [f"{a['dev']}: missing"]
        have = addresses_of(view.ch, index)
        return [f"{a['dev']}: address {x} missing" for x in a.get("addresses", [])
                if ipaddress.ip_interface(x) not in have]


@contextlib.contextmanager
def guest_channel(netns: str) -> Iterator[Channel]:
    """A netlink channel opened inside the guest's namespace (a path or a name).

    Raises ``FileNotFoundError`` when the namespace is gone."""
    from vifwire.netlink.channel import open_socket

    with NsWorker(netns_file(netns), name="vifwire-guest") as worker:
        ch = Channel(open_socket(worker))
    try:
        yield ch
    finally:
        ch.close()


def route_body(dst: ipaddress.IPv4Network | ipaddress.IPv6Network, gw: str | None, oif: int) -> bytes:
    """A guest route (main table, protocol boot as ``ip route add`` makes it)."""
    fam = _fam(dst.version)
    scope = RT_SCOPE_UNIVERSE if gw else RT_SCOPE_LINK
    flags = RTNH_F_ONLINK if gw else 0
    body = RTMSG.pack(fam, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, flags)
    if dst.prefixlen:
        body += attr(RTA_DST, dst.network_address.packed)
    if gw:
        body += attr(RTA_GATEWAY, ipaddress.ip_address(gw).packed)
    return body + u32(RTA_TABLE, RT_TABLE_MAIN) + u32(RTA_OIF, oif)


def _routes(a: dict) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str | None]]:
    return [(ipaddress.ip_network(r["dst"]), r.get("gw")) for r in a.get("routes", [])]


class GuestIpHandler:
    """The guest end's addresses and routes, inside the guest's namespace."""

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        try:
            with guest_channel(a["netns"]) as ch:
                link = ch.get_link(a["ifname"])
                if link is None:
                    raise fail(ctx, step, f"{a['ifname']} does not exist in {a['netns']}")
                add_addresses(ch, link.index, [ipaddress.ip_interface(x) for x in a.get("addresses", [])])
                for dst, gw in _routes(a):
                    try:
                        ch.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_body(dst, gw, link.index))
                    except NetlinkError as e:
                        if e.errno != errno.EEXIST:
                            raise fail(ctx, step, f"route {dst} via {gw or a['ifname']}: {e}") from e
        except FileNotFoundError as e:
            raise fail(ctx, step, f"namespace {a['netns']} does not exist") from e
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot configure {a['ifname']} in {a['netns']}: {e}") from e
        log.debug("guest %s in %s: %d address(es), %d route(s)", a["ifname"], a["netns"],
                  len(a.get("addresses", [])), len(a.get("routes", [])))
        return None  # goes with the guest end, which the veth step's undo deletes

    def remove(self, step: Step, ctx: HostContext) -> None:
        return None  # the guest end goes with its host end (veth)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        where = f"{a['ifname']} in {a['netns']}"
        try:
            with guest_channel(a["netns"]) as ch:
                link = ch.get_link(a["ifname"])
                if link is None:
                    return [f"{where}: missing"]
                out = [] if link.up else [f"{where}: down"]
                have = addresses_of(ch, link.index)
                out += [f"{where}: address {x} missing" for x in a.get("addresses", [])
                        if ipaddress.ip_interface(x) not in have]
                for dst, gw in _routes(a):
                    if not _has_route(ch, dst, gw, link.index):
                        out.append(f"{where}: route {dst} via {gw or 'the link'} missing")
                return out
        except FileNotFoundError:
            return [f"{where}: the namespace is gone"]


def _has_route(ch: Channel, dst, gw: str | None, oif: int) -> bool:
    want_gw = ipaddress.ip_address(gw).packed if gw else b""
    for r in ch.routes(_fam(dst.version), RT_TABLE_MAIN, RTPROT_BOOT):
        r: Route
        if r.dst_len == dst.prefixlen and r.oif == oif and r.gateway == want_gw \
                and (r.dst or b"") == (dst.network_address.packed if dst.prefixlen else b""):
            return True
    return False
