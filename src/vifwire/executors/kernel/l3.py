"""Layer 3 for routed ports: the ``routes`` and ``proxy_ndp`` steps.

Host routes (/32, /128, scope link, main table) carry protocol
:data:`~vifwire.executors.kernel.common.VIFWIRE_RTPROT`, so vifwire only ever
replaces or deletes its own (docs/routed.md). Neighbour proxy entries
(``ip -6 neigh add proxy``, ip-neighbour(8)) have no owner mark: they are
added only when absent and removed by exact address and device.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

from vifwire.errors import HostError
from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.common import (
    VIFWIRE_RTPROT, KernelView, ViewVerifier, channel, fail, log,
)
from vifwire.netlink.channel import Channel, NetlinkError, Route, attr, u32
from vifwire.netlink.constants import (
    NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NUD_PERMANENT, RT_SCOPE_LINK, RT_TABLE_MAIN, RTA_DST,
    RTA_OIF, RTA_TABLE, RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE, RTMSG, RTN_UNICAST,
)
from vifwire.planner.plan import Step

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV)


def ip(text: str) -> IPAddress:
    """The address of ``text`` (a prefix length, if any, is dropped)."""
    return ipaddress.ip_address(text.split("/", 1)[0])


def family(addr: IPAddress) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def route_body(addr: IPAddress, oif: int | None, proto: int = VIFWIRE_RTPROT) -> bytes:
    """A host route to ``addr`` (full-length prefix, main table, scope link)."""
    body = RTMSG.pack(family(addr), addr.max_prefixlen, 0, 0, RT_TABLE_MAIN, proto, RT_SCOPE_LINK,
                      RTN_UNICAST, 0)
    body += attr(RTA_DST, addr.packed) + u32(RTA_TABLE, RT_TABLE_MAIN)
    if oif:
        body += u32(RTA_OIF, oif)
    return body


def delete_route(ch: Channel, addr: IPAddress, oif: int | None) -> bool:
    """Delete vifwire's route to ``addr`` (via ``oif`` if given); False if absent."""
    try:
        ch.request(RTM_DELROUTE, 0, route_body(addr, oif))
    except NetlinkError as e:
        if e.errno not in _GONE:
            raise
        return False
    return True


def _route_lookup(ch: Channel, addr: IPAddress) -> Route | None:
    """The unicast FIB entry that matches ``addr`` exactly, if any."""
    cur = ch.route_get(family(addr), addr.packed)
    return cur if cur is not None and cur.type == RTN_UNICAST else None


class RoutesHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        dev = a["dev"]
        ch = channel(ctx)
        added: list[IPAddress] = []

        def undo() -> None:
            for addr in reversed(added):
                delete_route(ch, addr, None)
        try:
            oif = ch.index_of(dev, refresh=True)
            if oif is None:
                raise fail(ctx, step, f"device {dev} does not exist")
            for text in a.get("addresses", []):
                addr = ip(text)
                try:
                    ch.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_body(addr, oif))
                    added.append(addr)
                    continue
                except NetlinkError as e:
                    if e.errno != errno.EEXIST:
                        raise
                cur = _route_lookup(ch, addr)
                if cur and cur.dst_len == addr.max_prefixlen and cur.oif == oif:
                    continue  # already there
                if cur and cur.dst_len == addr.max_prefixlen and cur.protocol != VIFWIRE_RTPROT:
                    raise fail(ctx, step, f"a route to {addr} via another device exists (protocol {cur.protocol})")
                # our own stale route via another device (left by a crash): take it over
                ch.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, route_body(addr, oif))
                added.append(addr)
        except HostError:
            undo()
            raise
        except (NetlinkError, ValueError) as e:
            undo()
            raise fail(ctx, step, f"cannot add route via {dev}: {e}") from e
        if not added:
            return None
        log.debug("routes via %s added: %s", dev, ", ".join(map(str, added)))
        return undo

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        ch = channel(ctx)
        oif = ch.index_of(a["dev"], refresh=True)
        if oif is None:
            return  # the routes went away with the device
        for text in a.get("addresses", []):
            addr = ip(text)
            try:
                if delete_route(ch, addr, oif):
                    log.debug("route to %s via %s deleted", addr, a["dev"])
            except NetlinkError as e:
                raise fail(ctx, step, f"cannot delete route to {addr}: {e}") from e

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        oif = view.index_of(a["dev"])
        out = []
        for text in a.get("addresses", []):
            addr = ip(text)
            cur = view.route(family(addr), addr.packed)
            if cur is None:
                out.append(f"{a['dev']}: host route to {addr} is missing")
            elif cur.oif != oif:
                out.append(f"{a['dev']}: host route to {addr} goes via another device")
        return out


# ---------------------------------------------------------------------------
# proxy_ndp


def _v6(addresses: Iterable[str]) -> list[ipaddress.IPv6Address]:
    return [addr for addr in map(ip, addresses) if isinstance(addr, ipaddress.IPv6Address)]


def _ndp_body(addr: ipaddress.IPv6Address, ifindex: int) -> bytes:
    return Channel.proxy_body(socket.AF_INET6, ifindex, addr.packed, NUD_PERMANENT)


def _ndp_delete(ch: Channel, addr: ipaddress.IPv6Address, ifindex: int) -> bool:
    try:
        ch.request(RTM_DELNEIGH, 0, _ndp_body(addr, ifindex))
    except NetlinkError as e:
        if e.errno not in (errno.ENOENT, errno.ENODEV):
            raise
        return False
    return True


class ProxyNdpHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        ch = channel(ctx)
        added: list[tuple[ipaddress.IPv6Address, int]] = []

        def undo() -> None:
            for addr, idx in reversed(added):
                _ndp_delete(ch, addr, idx)
        try:
            idx = ch.index_of(a["dev"], refresh=True)
            if idx is None:
                raise fail(ctx, step, f"device {a['dev']} does not exist")
            for addr in _v6(a.get("addresses", [])):
                # the kernel does not report EEXIST for proxy entries: ask first
                if ch.proxy_neighbour(socket.AF_INET6, idx, addr.packed):
                    continue
                ch.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, _ndp_body(addr, idx))
                added.append((addr, idx))
        except HostError:
            undo()
            raise
        except (NetlinkError, ValueError) as e:
            undo()
            raise fail(ctx, step, f"cannot add proxy NDP entry on {a['dev']}: {e}") from e
        if not added:
            return None
        log.debug("proxy NDP on %s added: %s", a["dev"], ", ".join(str(x) for x, _ in added))
        return undo

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        ch = channel(ctx)
        idx = ch.index_of(a["dev"], refresh=True)
        if idx is None:
            return  # proxy entries die with their device
        for addr in _v6(a.get("addresses", [])):
            try:
                if _ndp_delete(ch, addr, idx):
                    log.debug("proxy NDP entry %s on %s deleted", addr, a["dev"])
            except NetlinkError as e:
                raise fail(ctx, step, f"cannot delete proxy NDP entry {addr}: {e}") from e

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        idx = view.index_of(a["dev"])
        return [f"{a['dev']}: proxy NDP entry for {addr} is missing" for addr in _v6(a.get("addresses", []))
                if idx is None or not view.proxied(idx, addr.packed)]
