"""gc: what carries vifwire's marks in the kernel but no attachment owns.

Listed in :data:`vifwire.executors.registry.GC_MODULES`; ``vifwire gc`` shows
:func:`garbage` and, with ``--force``, hands it to :func:`remove_garbage`.
"""

from __future__ import annotations

import ipaddress

from vifwire.errors import HostError
from vifwire.executors.base import HostContext
from vifwire.executors.kernel.bulk import remove_links_bulk
from vifwire.executors.kernel.common import channel, log
from vifwire.executors.kernel.l3 import delete_route, vifwire_routes
from vifwire.executors.kernel.owner import mark_of
from vifwire.netlink.channel import NetlinkError

#: Name prefixes of the devices vifwire makes for a port (Nova/os-vif/nova-lxd names):
#: an unowned, unmarked link named so is reported as suspect, never removed.
GC_PREFIXES = ("tap", "tin", "qbr", "qvb", "qvo")


def garbage(ctx: HostContext, owned: dict[str, set]) -> list[dict[str, str]]:
    """Links carrying vifwire's mark (:mod:`.owner`) that no record owns, and
    vifwire-protocol routes no record owns.

    Links are recognised by their mark only: a link named like vifwire's but
    unmarked (another agent's, or made by a vifwire before marks existed) is
    logged as a suspect and never listed for removal. A veth whose peer is
    owned (the ``tin`` of an owned ``tap``) is not garbage.
    """
    ch = channel(ctx)
    links = ch.links()
    by_index = {l.index: l for l in links}
    owned_links = owned.get("links", set())
    out: list[dict[str, str]] = []
    suspects: list[str] = []
    for l in links:
        if l.name in owned_links:
            continue
        peer = by_index.get(l.link) if l.kind == "veth" and l.link_netnsid is None else None
        if peer is not None and peer.name in owned_links:
            continue
        if mark_of(l) is None:
            if l.name.startswith(GC_PREFIXES):
                suspects.append(l.name)
            continue
        out.append({"kind": "link", "name": l.name})
    if suspects:
        log.warning("gc: %d unowned link(s) named like vifwire's carry no vifwire mark and are left alone "
                    "(suspect, not removed): %s", len(suspects), ", ".join(sorted(suspects)[:20])
                    + (", ..." if len(suspects) > 20 else ""))
    owned_routes = owned.get("routes")
    for dst, dst_len, link in vifwire_routes(ch, by_index):
        dev = link.name if link is not None else None
        if owned_routes is not None and (dev, dst) in owned_routes:
            continue
        if owned_routes is None and dev in owned_links:
            continue
        out.append({"kind": "route", "name": f"{dst}/{dst_len}", "dev": dev or ""})
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
    names = {it["name"] for it in items if it.get("kind") == "link"}
    if names:
        # only what still carries vifwire's mark (the survey was a moment ago)
        links = [l.name for l in ch.links() if l.name in names and mark_of(l) is not None]
        remove_links_bulk(ctx, links)
        log.debug("gc: %d links deleted", len(links))
