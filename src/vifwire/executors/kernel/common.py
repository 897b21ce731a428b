"""What the kernel handlers share: the namespace's sessions, failures, link
fix-ups and drift lines, and the per-check view of a namespace.

Sessions live on the :class:`~vifwire.executors.base.HostContext` as typed
attributes, opened on first use while holding ``ctx.lock``: ``ctx.worker``
(the namespace's thread, :class:`KernelWorker`), ``ctx.ipr`` (pyroute2 on a
socket of the namespace) and ``ctx.netlink`` (the fast
:class:`~vifwire.netlink.channel.Channel` on that socket). A namespace that
does not exist is an error, never created (docs/architecture.md).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

from vifwire.errors import HostError
from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.owner import PENDING_GROUP, mark_of
from vifwire.netlink.channel import Channel, Link, NetlinkError, Route, open_ipr, open_socket, same_mac
from vifwire.netlink.constants import RT_TABLE_MAIN, RTN_UNICAST
from vifwire.netlink.netns import NsWorker, netns_file
from vifwire.planner.plan import Step

log = logging.getLogger("vifwire.executors.kernel")

#: Route protocol of vifwire's host routes (``ip route ... proto 158``). Not in
#: /etc/iproute2/rt_protos nor in the kernel's RTPROT_* list; only routes with
#: it are ever replaced or deleted.
VIFWIRE_RTPROT = 158


# ---------------------------------------------------------------------------
# sessions


def _open_tun_files(n: int) -> list[int]:
    return [os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC) for _ in range(n)]


class KernelWorker(NsWorker):
    """The namespace's thread, plus a small pool of ``/dev/net/tun`` files.

    A tap is created in the namespace its tun file was opened in (the
    ``TUNSETIFF`` ioctl itself then runs on the caller), so the files are
    opened on the namespace's thread, a few at a time.
    """

    TUN_POOL = 16

    def __init__(self, netns: str | None):
        super().__init__(netns)
        self.tun_pool: list[int] = []

    def tun_fd(self) -> int:
        """An unattached ``/dev/net/tun`` file opened inside the namespace."""
        if not self.tun_pool:
            self.tun_pool.extend(self.call(_open_tun_files, 1 if self.inline else self.TUN_POOL))
        return self.tun_pool.pop()

    def close(self, timeout: float = 5.0) -> None:
        for fd in self.tun_pool:
            os.close(fd)
        self.tun_pool.clear()
        super().close(timeout)


def check_netns(ctx: HostContext) -> None:
    if ctx.netns and not os.path.exists(netns_file(ctx.netns)):
        raise HostError(ctx.port_id, f"netns {ctx.netns}", "the namespace does not exist")


def worker(ctx: HostContext) -> KernelWorker:
    """The namespace's thread (tun files, /proc/sys/net)."""
    with ctx.lock:  # sessions are opened once, under the namespace's lock
        if ctx.worker is None:
            check_netns(ctx)
            ctx.worker = KernelWorker(ctx.netns)
        return ctx.worker


def ipr(ctx: HostContext) -> Any:
    """The namespace's long-lived pyroute2 IPRoute (for callers that want its
    parsed messages; the plug path uses :func:`channel` and never imports pyroute2)."""
    with ctx.lock:
        if ctx.ipr is None:
            ctx.ipr = open_ipr(worker(ctx))
        return ctx.ipr


def channel(ctx: HostContext) -> Channel:
    """The namespace's fast netlink channel (its own socket, opened in the namespace)."""
    with ctx.lock:
        if ctx.netlink is None:
            ctx.netlink = Channel(open_socket(worker(ctx)))
        return ctx.netlink


# ---------------------------------------------------------------------------
# failures, links


def fail(ctx: HostContext, step: Step, problem: str) -> HostError:
    return HostError(ctx.port_id, step.describe(), problem)


def mtu_of(args: dict) -> int | None:
    mtu = args.get("mtu")
    return int(mtu) if mtu else None


def fix_link(ch: Channel, link: Link, mtu: int | None = None, mac: str | None = None,
             up: bool = True, mark: str | None = None) -> Undo | None:
    """Bring an existing link to mtu/mac/up (and ownership ``mark``, see
    :mod:`.owner`); undo restores what was changed."""
    kw: dict[str, Any] = {}
    back: dict[str, Any] = {}
    if mark is not None and (link.alias != mark or link.group == PENDING_GROUP):
        kw["alias"], back["alias"] = mark, link.alias or ""
        if link.group == PENDING_GROUP:
            kw["group"], back["group"] = 0, link.group
    if mtu is not None and link.mtu != mtu:
        kw["mtu"], back["mtu"] = mtu, link.mtu
    if mac and not same_mac(link.address, mac):
        kw["address"], back["address"] = mac, link.address
    if up and not link.up:
        kw["up"], back["up"] = True, False
    if not kw:
        return None
    ch.set_link(index=link.index, **kw)
    log.debug("%s reconfigured: %s", link.name, ", ".join(sorted(kw)))
    index = link.index

    def undo() -> None:
        try:
            ch.set_link(index=index, **back)
        except NetlinkError as e:
            if e.errno != errno.ENODEV:
                raise
    return undo


def chain(undos: list[Undo | None]) -> Undo | None:
    """One undo for several (run in reverse); None when none changed anything."""
    todo = [u for u in undos if u]
    if not todo:
        return None

    def undo() -> None:
        for fn in reversed(todo):
            fn()
    return undo


def undo_delete(ch: Channel, name: str, mark: str | None = None) -> Undo:
    """Rollback of a link this run created: deleted only while it still
    carries the run's ``mark`` (or is pending), never something that took its name."""
    def undo() -> None:
        if mark is None:
            ch.del_link(name)
            return
        link = ch.get_link(name)
        if link is not None and mark_of(link) in (mark, ""):
            ch.forget(name)
            ch.del_link(index=link.index)
    return undo


def link_drift(link: Link | None, name: str, kind: str | None = None, mtu: int | None = None,
               mac: str | None = None, up: bool = True) -> list[str]:
    if link is None:
        return [f"{name}: missing"]
    out = []
    if kind and link.kind != kind:
        out.append(f"{name}: kind is {link.kind or 'none'}, recorded {kind}")
    if up and not link.up:
        out.append(f"{name}: is down, recorded up")
    if mtu is not None and link.mtu != mtu:
        out.append(f"{name}: mtu is {link.mtu}, recorded {mtu}")
    if mac and not same_mac(link.address, mac):
        out.append(f"{name}: mac is {link.address}, recorded {mac.lower()}")
    return out


# ---------------------------------------------------------------------------
# check: one look at the namespace per verify_many call


class KernelView:
    """What ``check`` compares records with, read once per ``verify_many`` call.

    ``check`` of N ports hands each handler all its steps at once; the view
    turns them into O(1) netlink exchanges per namespace: one link dump
    (``RTEXT_FILTER_SKIP_STATS``), one kernel-filtered route dump per family
    (main table, protocol :data:`VIFWIRE_RTPROT`), one neighbour-proxy dump.
    Below :attr:`DUMP_AT` steps (``check`` of one port, ``verify`` of one
    step) the view asks for each link, route and entry instead: dumping a
    host with thousands of ports to look at one costs more than a few
    requests. Every part is read lazily and only for the call that built the
    view: nothing is kept across checks.
    """

    DUMP_AT = 8

    def __init__(self, ch: Channel, steps: int = 1):
        self.ch = ch
        self.dumped = steps >= self.DUMP_AT
        self._by_name: dict[str, Link | None] = {}
        self._by_index: dict[int, Link | None] = {}
        self._routes: dict[int, dict[bytes, Route]] = {}
        self._proxies: dict[int, set[tuple[int, bytes]]] = {}
        if self.dumped:
            for link in ch.links():
                self._by_name[link.name] = self._by_index[link.index] = link

    def link(self, name: str) -> Link | None:
        if self.dumped or name in self._by_name:
            return self._by_name.get(name)
        link = self._by_name[name] = self.ch.get_link(name)
        if link is not None:
            self._by_index[link.index] = link
        return link

    def link_at(self, index: int) -> Link | None:
        if not index:
            return None
        if self.dumped or index in self._by_index:
            return self._by_index.get(index)
        link = self._by_index[index] = self.ch.get_link(index=index)
        return link

    def index_of(self, name: str) -> int | None:
        link = self.link(name)
        return link.index if link is not None else None

    def route(self, family: int, dst: bytes) -> Route | None:
        """vifwire's host route to ``dst`` (a full-length prefix, unicast, protocol
        :data:`VIFWIRE_RTPROT`), or None.

        Dumped: the main table's entry (the lowest metric if several). Asked
        for one by one: the entry the kernel matches for ``dst``
        (``RTM_F_FIB_MATCH``), which is the same one unless policy routing
        puts another table first.
        """
        if not self.dumped:
            cur = self.ch.route_get(family, dst)
            ok = cur is not None and cur.type == RTN_UNICAST and cur.protocol == VIFWIRE_RTPROT \
                and cur.dst_len == len(dst) * 8
            return cur if ok else None
        routes = self._routes.get(family)
        if routes is None:
            routes = self._routes[family] = {}
            for r in self.ch.routes(family, RT_TABLE_MAIN, VIFWIRE_RTPROT):
                if r.dst_len != len(r.dst) * 8:
                    continue
                best = routes.get(r.dst)
                if best is None or r.priority < best.priority:
                    routes[r.dst] = r
        return routes.get(dst)

    def proxied(self, ifindex: int, dst: bytes, family: int = socket.AF_INET6) -> bool:
        """Is there a neighbour proxy entry for ``dst`` on ``ifindex``?"""
        if not self.dumped:
            return self.ch.proxy_neighbour(family, ifindex, dst)
        entries = self._proxies.get(family)
        if entries is None:
            entries = self._proxies[family] = self.ch.proxy_neighbours(family)
        return (ifindex, dst) in entries


class ViewVerifier:
    """``verify``/``verify_many`` for handlers whose drift comes from a :class:`KernelView`."""

    def drift(self, step: Step, view: KernelView) -> list[str]:
        raise NotImplementedError

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        return self.verify_many([step], ctx)[0]

    def verify_many(self, steps: list[Step], ctx: HostContext) -> list[list[str]]:
        if not steps:
            return []
        view = ctx.kernel_view if ctx.reading else None
        if view is None or (not view.dumped and len(steps) >= KernelView.DUMP_AT):
            view = KernelView(channel(ctx), len(steps))
            if ctx.reading:
                ctx.kernel_view = view  # the other kernel handlers of this check use it too
        return [self.drift(s, view) for s in steps]
