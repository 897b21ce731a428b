"""Native OVSDB client for the plug path (no ``ovs-vsctl`` here).

An OVSDB JSON-RPC client (RFC 7047) built for speed (docs/ovs.md):

* **One long-lived connection per endpoint** (:meth:`OvsdbClient.shared`):
  an ``ovs.jsonrpc.Session`` plus an OVSDB ``monitor`` of only the tables and
  columns vifwire needs -- :mod:`.session`.
* **A plain-dict replica** of the monitored rows, converted only when read
  -- :mod:`.replica`.
* **Fast JSON**: the connection reads with :class:`FastJsonParser` (stdlib C
  decoder) when the ``ovs`` wheel lacks its C parser -- :mod:`.fastjson`.
* **One transaction per batch**: :class:`OvsPortSpec` lists become one
  ``transact`` -- :mod:`.ports`.
* **Exact "applied" signal** (``cur_cfg`` reaching ``next_cfg``) and the
  rest of the API -- :mod:`.client`.

Errors (:mod:`.errors`) are :class:`~vifwire.errors.HostError` subclasses.
This package re-exports everything callers use, so they import from
``vifwire.executors.ovsdb`` and not from its modules.
"""

from vifwire.executors.ovsdb.client import OvsdbClient
from vifwire.executors.ovsdb.errors import OvsApplyError, OvsdbError, OvsdbUnavailable
from vifwire.executors.ovsdb.fastjson import FAST_JSON, FastJsonParser
from vifwire.executors.ovsdb.ports import KNOWN_IFACE_TYPES, OvsPortSpec
from vifwire.executors.ovsdb.session import DB_NAME

__all__ = [
    "DB_NAME",
    "FAST_JSON",
    "KNOWN_IFACE_TYPES",
    "FastJsonParser",
    "OvsApplyError",
    "OvsPortSpec",
    "OvsdbClient",
    "OvsdbError",
    "OvsdbUnavailable",
]
