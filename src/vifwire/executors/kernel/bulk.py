"""Deleting links: a port's own (by name, else by MAC), and many at once
(unplug of many ports, gc, benchmarks).

Every link deletion waits for RCU grace periods under RTNL; deleting links
one request at a time pays that per link. Deleting a *link group*
(``ip link del group N``, ip-link(8)) unregisters the whole group in one
batch and pays it once.
"""

from __future__ import annotations

import errno
import secrets
from collections.abc import Iterable

from vifwire.errors import HostError
from vifwire.executors.base import HostContext
from vifwire.executors.kernel.common import channel, fail, log
from vifwire.executors.kernel.owner import recorded_mark, refusal, removable
from vifwire.netlink.channel import Channel, NetlinkError, attr, ifinfo, same_mac, str_attr, u32
from vifwire.planner.plan import Step
from vifwire.netlink.constants import (
    IFLA_GROUP, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, RTM_DELLINK, RTM_NEWLINK,
)

#: Link groups used by :func:`remove_links_bulk`: base | random 16 bits per call,
#: so that concurrent bulk removals (other processes) never share a group.
BULK_GROUP_BASE = 0x76770000

#: Bridges deleted per group request. Every bridge deletion waits for a full
#: RCU grace period (``br_multicast_dev_del()`` ends in ``rcu_barrier()``),
#: under RTNL, so a group of 1000 bridges would stall every netlink user on the
#: host for ~17 s; groups of 16 (~0.3 s each) let others in between.
BULK_BRIDGE_CHUNK = 16


def find_by_mac(ctx: HostContext, mac: str, kinds: Iterable[str] | None = None) -> str | None:
    """Name of the link with MAC ``mac`` (optionally of one of ``kinds``), or None.

    Unplug's fallback for interfaces named by older versions. Raises
    :class:`HostError` if several links match (deleting a guess is worse than
    leaving it).
    """
    wanted = set(kinds) if kinds else None
    found = [l for l in channel(ctx).links()
             if l.address and same_mac(l.address, mac) and (wanted is None or l.kind in wanted)]
    if not found:
        return None
    if len(found) > 1:
        raise HostError(ctx.port_id, f"find_by_mac {mac}",
                        "several interfaces have this MAC: " + ", ".join(l.name for l in found))
    return found[0].name


def remove_link(ctx: HostContext, step: Step, name: str, mac: str | None, kinds: tuple[str, ...],
                also: tuple[str, ...] = ()) -> None:
    """Unplug a port's own link: by name, else by another name, else by MAC.

    Only a link :func:`~.owner.removable` for the step's recorded mark is
    deleted; one that is not vifwire's, or is another port's, is left alone.
    """
    ch = channel(ctx)
    mark = recorded_mark(step)
    try:
        for candidate in (name, *also):
            link = ch.get_link(candidate)
            if link is None:
                continue
            if not removable(link, mark, kinds):
                log.warning("%s not removed: %s", candidate, refusal(link, mark))
                return
            ch.forget(candidate)
            ch.del_link(index=link.index)
            log.debug("%s deleted", candidate)
            return
        if mac:
            found = [l for l in ch.links() if l.kind in kinds and l.address and same_mac(l.address, mac)
                     and removable(l, mark, kinds)]
            if len(found) > 1:
                raise HostError(ctx.port_id, f"find_by_mac {mac}",
                                "several interfaces have this MAC: " + ", ".join(l.name for l in found))
            if found:
                ch.forget(found[0].name)
                ch.del_link(index=found[0].index)
                log.debug("%s deleted (found by MAC %s)", found[0].name, mac)
    except NetlinkError as e:
        raise fail(ctx, step, f"cannot delete {name}: {e}") from e


def _delete_as_group(ch: Channel, names: list[str]) -> None:
    """Move ``names`` into a fresh link group and delete the group (one request)."""
    group = BULK_GROUP_BASE | (secrets.randbits(16) or 1)
    errs = ch.pipeline([(RTM_NEWLINK, 0, ifinfo() + str_attr(IFLA_IFNAME, n) + u32(IFLA_GROUP, group))
                        for n in names])
    if not any(e is None for e in errs):
        return  # none of them exists
    try:
        ch.request(RTM_DELLINK, 0, ifinfo() + u32(IFLA_GROUP, group))
    except NetlinkError as e:
        if e.errno not in (errno.ENODEV, errno.EOPNOTSUPP):
            raise  # EOPNOTSUPP: a link without rtnl dellink; the caller's sweep gets it


def remove_links_bulk(ctx: HostContext, names: list[str]) -> None:
    """Delete many links, paying the RCU grace period once.

    The links are moved into a link group (one ``RTM_NEWLINK`` each,
    pipelined, 128 per datagram) and the group is deleted with a single
    ``RTM_DELLINK``, which unregisters them all in one batch. Bridges among
    ``names`` (found with one kernel-filtered dump) go
    :data:`BULK_BRIDGE_CHUNK` at a time, after the rest. Absent names are
    fine; whatever survives is deleted one by one. Deleting one end of a veth
    deletes the pair.
    """
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        return
    ch = channel(ctx)
    for n in names:
        ch.forget(n)
    try:
        bridges: list[str] = []
        if len(names) > BULK_BRIDGE_CHUNK:
            wanted = set(names)
            kind = attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "bridge"))
            bridges = [l.name for l in ch.links(kind) if l.name in wanted]
        plain = [n for n in names if n not in set(bridges)]
        if plain:
            _delete_as_group(ch, plain)
        for i in range(0, len(bridges), BULK_BRIDGE_CHUNK):
            _delete_as_group(ch, bridges[i:i + BULK_BRIDGE_CHUNK])
        # whatever is still there (a race, or the group delete balked):
        # a no-op RTM_NEWLINK by name answers ENODEV for the ones that are gone
        left = [n for n, e in zip(names, ch.pipeline(
            [(RTM_NEWLINK, 0, ifinfo() + str_attr(IFLA_IFNAME, n)) for n in names])) if e is None]
        for n in left:
            ch.del_link(n)
    except NetlinkError as e:
        raise HostError(ctx.port_id, "bulk remove", f"cannot delete links: {e}") from e
    log.debug("bulk removal of %d links (%d bridges, %d swept one by one)", len(names), len(bridges), len(left))


def remove_own_links(ctx: HostContext, steps: list[Step], kinds: tuple[str, ...]) -> None:
    """Unplug many ports' links (tap, veth, macvtap, vlan, bridge steps) with one dump and one group delete.

    Each step's link is found as :func:`remove_link` finds it one at a time -
    by name, else (a veth whose peer stays on the host) by its peer's name,
    else by the guest MAC among links of ``kinds`` (pairs named by older
    versions) - but from one link dump, and only what is
    :func:`~.owner.removable` for the step goes in :func:`remove_links_bulk`.
    A MAC that several links carry is not guessed at: those ports are named
    in the error, after the others are gone.
    """
    links = channel(ctx).links()
    by_name = {link.name: link for link in links}
    doomed: list[str] = []
    ambiguous: list[str] = []
    for s in steps:
        a = s.args
        mark = recorded_mark(s)
        names = [a["name"]] + ([a["peer"]] if s.op == "veth" and not a.get("peer_netns") else [])
        found = next((by_name[n] for n in names if n in by_name), None)
        if found is not None:
            if removable(found, mark, kinds):
                doomed.append(found.name)
            else:
                log.warning("%s not removed: %s", found.name, refusal(found, mark))
            continue
        if a.get("mac"):
            hits = [link.name for link in links
                    if link.kind in kinds and link.address and same_mac(link.address, a["mac"])
                    and removable(link, mark, kinds)]
            if len(hits) > 1:
                ambiguous.append(f"{a['name']} (MAC {a['mac']}: {', '.join(hits)})")
                continue
            doomed += hits
    remove_links_bulk(ctx, doomed)
    if ambiguous:
        raise HostError(ctx.port_id, "bulk remove", "several interfaces have the MAC of " + "; ".join(ambiguous))
