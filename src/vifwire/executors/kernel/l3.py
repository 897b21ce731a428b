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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

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

#: From this many steps on, a batch resolves device indexes with one link dump
#: instead of one request per device (and reads the proxy table once). A dump
#: costs in proportion to the whole namespace (~40 ms at 1600 links), a
#: request ~0.05 ms: the agent's small rounds of a busy host must not dump.
DUMP_FROM = 256


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


def indexes(ch: Channel, names: list[str]) -> dict[str, int | None]:
    """name -> ifindex for a batch: one dump for many names, requests for a few."""
    if len(names) < DUMP_FROM:
        return {n: ch.index_of(n, refresh=True) for n in names}
    have = {link.name: link.index for link in ch.links()}
    return {n: have.get(n) for n in names}


def settle(steps: list[Step], slow: set[int], added: dict[int, list[Any]], delete: Callable[[Any], Any],
           one: Callable[[Step], Undo | None]) -> list[Undo | None | Exception]:
    """The outcome of each step of a pipelined batch.

    A step in ``slow`` (a request of it failed, or it could not be pipelined)
    has what the batch added for it deleted again and is applied on its own,
    which names its problem; the others get an undo of what was added for
    them (None if nothing was).
    """
    out: list[Undo | None | Exception] = []
    for i, s in enumerate(steps):
        if i in slow:
            for item in reversed(added.pop(i, [])):
                delete(item)
            try:
                out.append(one(s))
            except Exception as exc:  # noqa: BLE001 - this port fails, the batch goes on
                out.append(exc)
        elif added.get(i):
            out.append(_undo_all(list(added[i]), delete))
        else:
            out.append(None)
    return out


def _undo_all(items: list[Any], delete: Callable[[Any], Any]) -> Undo:
    def undo() -> None:
        for item in reversed(items):
            delete(item)
    return undo


def vifwire_routes(ch: Channel, by_index: dict[int, Any]) -> Iterator[tuple[str, int, Any]]:
    """``(address, prefix length, link or None)`` of every protocol-158 route in
    the main table, both families: what gc and state rebuild look at."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in ch.routes(fam, RT_TABLE_MAIN, VIFWIRE_RTPROT):
            if r.dst:
                yield str(ipaddress.ip_address(r.dst)), r.dst_len, (by_index.get(r.oif) if r.oif else None)


def _route_lookup(ch: Channel, addr: IPAddress) -> Route | None:
    """The unicast FIB entry that matches ``addr`` exactly, if any."""
    cur = ch.route_get(family(addr), addr.packed)
    return cur if cur is not None and cur.type == RTN_UNICAST else None


class RoutesHandler(ViewVerifier):
    #: the engine hands every port's routes step of a run to apply_many
    batched = True
    #: routes via a device go when it is deleted (fib_sync_down_dev, net/ipv4/fib_semantics.c;
    #: rt6_sync_down_dev for IPv6): unplug skips them when it deletes the device anyway
    gone_with_device = True

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """All ports' routes in pipelined requests (no round trip per route).

        A step whose request fails (a route already there, a device gone) has
        its other new routes deleted again and goes through :meth:`apply`,
        which knows how to take over vifwire's own stale route or name the
        problem; the other steps are not affected.
        """
        ch = channel(ctx)
        oifs = indexes(ch, list(dict.fromkeys(s.args["dev"] for s in steps)))
        reqs: list[tuple[int, int, bytes]] = []
        owners: list[tuple[int, IPAddress]] = []  # (step index, address) per request
        slow: set[int] = set()
        for i, s in enumerate(steps):
            oif = oifs.get(s.args["dev"])
            try:
                addrs = [ip(t) for t in s.args.get("addresses", [])]
            except ValueError:
                slow.add(i)
                continue
            if oif is None:
                slow.add(i)
                continue
            for addr in addrs:
                reqs.append((RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_body(addr, oif)))
                owners.append((i, addr))
        added: dict[int, list[IPAddress]] = {}
        for (i, addr), err in zip(owners, ch.pipeline(reqs)):
            if err is None:
                added.setdefault(i, []).append(addr)
            else:
                slow.add(i)
        log.debug("routes: %d added in one pipeline, %d step(s) one by one", sum(map(len, added.values())),
                  len(slow))
        return settle(steps, slow, added, lambda addr: delete_route(ch, addr, None), lambda s: self.apply(s, ctx))

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
    #: the engine hands every port's proxy_ndp step of a run to apply_many
    batched = True
    #: proxy entries of a device go when it is deleted (pneigh_ifdown, net/core/neighbour.c)
    gone_with_device = True

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """All ports' entries: one dump of what exists, then pipelined adds.

        The kernel does not report EEXIST for proxy entries, so what is
        already there is read once (one proxy-table dump) instead of asked
        per entry. A step with a failed request goes through :meth:`apply`.
        """
        if len(steps) < DUMP_FROM:
            return settle(steps, set(range(len(steps))), {}, lambda entry: None, lambda s: self.apply(s, ctx))
        ch = channel(ctx)
        idxs = indexes(ch, list(dict.fromkeys(s.args["dev"] for s in steps)))
        have = ch.proxy_neighbours(socket.AF_INET6)
        reqs: list[tuple[int, int, bytes]] = []
        owners: list[tuple[int, ipaddress.IPv6Address, int]] = []
        slow: set[int] = set()
        for i, s in enumerate(steps):
            idx = idxs.get(s.args["dev"])
            try:
                addrs = _v6(s.args.get("addresses", []))
            except ValueError:
                slow.add(i)
                continue
            if idx is None:
                slow.add(i)
                continue
            for addr in addrs:
                if (idx, addr.packed) not in have:
                    reqs.append((RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, _ndp_body(addr, idx)))
                    owners.append((i, addr, idx))
        added: dict[int, list[tuple[ipaddress.IPv6Address, int]]] = {}
        for (i, addr, idx), err in zip(owners, ch.pipeline(reqs)):
            if err is None:
                added.setdefault(i, []).append((addr, idx))
            else:
                slow.add(i)
        log.debug("proxy NDP: %d entries added in one pipeline, %d step(s) one by one",
                  sum(map(len, added.values())), len(slow))
        return settle(steps, slow, added, lambda entry: _ndp_delete(ch, *entry), lambda s: self.apply(s, ctx))

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
