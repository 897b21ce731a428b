"""The kernel executor: links, routes, neighbour proxies and sysctls of a
namespace, through netlink (:mod:`vifwire.netlink`).

The handlers live in :mod:`.links`, :mod:`.l3` and :mod:`.sysctl` and are
listed in :mod:`vifwire.executors.registry`; :mod:`.gc` reports leftovers,
:mod:`.bulk` deletes many links at once, :mod:`.common` holds the sessions
and the per-check :class:`~.common.KernelView`. This package itself only
re-exports what callers outside the handlers (tests, benchmarks, the
engine's bulk unplug) use.

Ownership marks: bridges vifwire creates carry ``IFLA_IFALIAS`` =
:data:`VIFWIRE_ALIAS`; host routes use protocol :data:`VIFWIRE_RTPROT`; bulk
removal uses link groups in :data:`BULK_GROUP_BASE`'s range.
"""

from vifwire.executors.kernel.bulk import BULK_BRIDGE_CHUNK, BULK_GROUP_BASE, remove_links_bulk
from vifwire.executors.kernel.common import VIFWIRE_ALIAS, VIFWIRE_RTPROT, channel, ipr, worker
from vifwire.executors.kernel.bulk import find_by_mac
from vifwire.executors.kernel.sysctl import sysctl_write

__all__ = [
    "BULK_BRIDGE_CHUNK", "BULK_GROUP_BASE", "VIFWIRE_ALIAS", "VIFWIRE_RTPROT", "channel",
    "find_by_mac", "ipr", "remove_links_bulk", "sysctl_write", "worker",
]
