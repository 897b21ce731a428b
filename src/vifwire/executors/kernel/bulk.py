"""Deleting many links at once (unplug of many ports, gc, benchmarks).

Every link deletion waits for RCU grace periods under RTNL; deleting links
one request at a time pays that per link. Deleting a *link group*
(``ip link del group N``, ip-link(8)) unregisters the whole group in one
batch and pays it once.
"""

from __future__ import annotations

import errno
import secrets

from vifwire.errors import HostError
from vifwire.executors.base import HostContext
from vifwire.executors.kernel.common import channel, log
from vifwire.netlink.channel import Channel, NetlinkError, attr, ifinfo, str_attr, u32
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
