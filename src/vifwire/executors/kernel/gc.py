"""gc: what carries vifwire's marks in the kernel but no attachment owns.

Listed in :data:`vifwire.executors.registry.GC_MODULES`; ``vifwire gc`` shows
:func:`garbage` and, with ``--force``, hands it to :func:`remove_garbage`.
"""

from __future__ import annotations

import ipaddress
import socket

from vifwire.errors import HostError
from vifwire.executors.base import HostContext
from vifwire.executors.kernel.bulk import remove_links_bulk
from vifwire.executors.kernel.common import VIFWIRE_ALIAS, VIFWIRE_RTPROT, channel, log
from vifwire.executors.kernel.l3 import delete_route
from vifwire.netlink.channel import NetlinkError
from vifwire.netlink.constants import RT_TABLE_MAIN

#: Name prefixes of the devices vifwire makes for a port (Nova/os-vif/nova-lxd names).
GC_PREFIXES = ("tap", "tin", "qbr", "qvb", "qvo")


def garbage(ctx: HostContext, owned: dict[str, set]) -> list[dict[str, str]]:
    """Links named like vifwire's that no record owns, and vifwire-protocol routes.

    Links are recognised by name prefix (as the issue asks), so on a host
    shared with another plugging agent review the list before ``--force``.
    A veth whose peer is owned (the ``tin`` of an owned ``tap``) is not
    garbage; a bridge is garbage only if vifwire created it (alias) or it
    is a per-port ``qbr``.
    """
    ch = channel(ctx)
    links = ch.links()
    by_index = {l.index: l for l in links}
    owned_links = owned.get("links", set())
    out: list[dict[str, str]] = []
    for l in links:
        if not l.name.startswith(GC_PREFIXES) or l.name in owned_links:
            continue
        peer = by_index.get(l.link) if l.kind == "veth" and l.link_netnsid is None else None
        if peer is not None and peer.name in owned_links:
            continue
        if l.kind == "bridge" and not (l.name.startswith("qbr") or l.alias == VIFWIRE_ALIAS):
            continue
        out.append({"kind": "link", "name": l.name})
    owned_routes = owned.get("routes")
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in ch.routes(fam, RT_TABLE_MAIN, VIFWIRE_RTPROT):
            if not r.dst:
                continue
            dst = str(ipaddress.ip_address(r.dst))
            link = by_index.get(r.oif) if r.oif else None
            dev = link.name if link is not None else None
            if owned_routes is not None and (dev, dst) in owned_routes:
                continue
            if owned_routes is None and dev in owned_links:
                continue
            out.append({"kind": "route", "name": f"{dst}/{r.dst_len}", "dev": dev or ""})
    return out


def remove_garbage(ctx: HostContext, items: list[dict[str, str]]) -> None:
    ch = channel(ctx)
    for it in items:
        if it.get("kind") != "route":
            continue
        addr = ipaddress.ip_interface(it["name"]).ip
        oif = ch.index_of(it["dev"], refresh=True) if it.get("dev") else None
        try:
            if delete_route(ch, addr, oif):
                log.debug("gc: route %s deleted", it["name"])
        except NetlinkError as e:
            raise HostError(ctx.port_id, "gc", f"cannot delete route {it['name']}: {e}") from e
    links = [it["name"] for it in items if it.get("kind") == "link"]
    if links:
        remove_links_bulk(ctx, links)
        log.debug("gc: %d links deleted", len(links))
