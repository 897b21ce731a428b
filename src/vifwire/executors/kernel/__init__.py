"""The kernel executor: links, routes, neighbour proxies and sysctls of a
namespace, through netlink (:mod:`vifwire.netlink`).

The handlers live in :mod:`.links`, :mod:`.l3` and :mod:`.sysctl` and are
listed in :mod:`vifwire.executors.registry`; :mod:`.gc` reports leftovers,
:mod:`.bulk` deletes many links at once, :mod:`.common` holds the sessions
and the per-check :class:`~.common.KernelView`. This package itself only
re-exports what callers outside the handlers (tests, benchmarks, the
engine's bulk unplug) use.

Ownership marks (:mod:`.owner`): every link vifwire creates for a port
carries ``IFLA_IFALIAS`` = ``vifwire:<port id>`` (:func:`mark_for`), links
shared by a network's ports (bridges, VLANs) :data:`VIFWIRE_ALIAS`; a link is
created in :data:`PENDING_GROUP` until marked; host routes use protocol
:data:`VIFWIRE_RTPROT`; bulk removal uses link groups in
:data:`BULK_GROUP_BASE`'s range.
"""

from vifwire.executors.kernel.bulk import BULK_BRIDGE_CHUNK, BULK_GROUP_BASE, remove_links_bulk
from vifwire.executors.kernel.common import VIFWIRE_RTPROT, channel, ipr, worker
from vifwire.executors.kernel.bulk import find_by_mac
from vifwire.executors.kernel.owner import PENDING_GROUP, VIFWIRE_ALIAS, mark_for, mark_of
from vifwire.executors.kernel.sysctl import sysctl_write

__all__ = [
    "BULK_BRIDGE_CHUNK", "BULK_GROUP_BASE", "PENDING_GROUP", "VIFWIRE_ALIAS", "VIFWIRE_RTPROT", "channel",
    "find_by_mac", "ipr", "mark_for", "mark_of", "remove_links_bulk", "sysctl_write", "worker",
]
