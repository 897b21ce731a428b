"""A thin adapter over LXD's REST API on its Unix socket (docs/lxd.md).

Plain HTTP/1.1 from the standard library, not pylxd: vifwire makes a few GET,
PUT and operation-wait calls per attach or detach, and pylxd would bring
requests, requests-unixsocket, ws4py, cryptography and a websocket stack
with it (docs/lxd.md, "Why not pylxd"). The adapter knows LXD's protocol
(sync and async answers, operations, ETags) and nothing about which
devices to make or remove: that is the planner's and the executor's.
"""

from vifwire.lxd.client import (
    Instance, LxdClient, LxdConflict, LxdError, LxdTimeout, LxdUnreachable, NoSuchInstance,
)

__all__ = ["Instance", "LxdClient", "LxdConflict", "LxdError", "LxdTimeout", "LxdUnreachable", "NoSuchInstance"]
