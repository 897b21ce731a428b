"""The one list of step kind -> handler, and of who reports garbage.

Nothing registers itself: this table is the whole truth, and
``tests/test_structure.py`` fails if a :class:`~vifwire.planner.plan.StepKind`
has no entry or an entry does not resolve. Handlers are named by module and
class and imported on first use, so a run that plugs only routed taps never
imports the OVS client (start-up time is what a CLI user pays).
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from vifwire.errors import HostError
from vifwire.executors.base import Handler
from vifwire.planner.plan import StepKind

_KERNEL_LINKS = "vifwire.executors.kernel.links"

#: step kind -> (module, handler class)
HANDLER_CLASSES: dict[StepKind, tuple[str, str]] = {
    StepKind.TAP: (_KERNEL_LINKS, "TapHandler"),
    StepKind.VETH: (_KERNEL_LINKS, "VethHandler"),
    StepKind.BRIDGE: (_KERNEL_LINKS, "BridgeHandler"),
    StepKind.MASTER: (_KERNEL_LINKS, "MasterHandler"),
    StepKind.MACVTAP: (_KERNEL_LINKS, "MacvtapHandler"),
    StepKind.VLAN: (_KERNEL_LINKS, "VlanHandler"),
    StepKind.REQUIRE_LINK: (_KERNEL_LINKS, "RequireLinkHandler"),
    StepKind.ROUTES: ("vifwire.executors.kernel.l3", "RoutesHandler"),
    StepKind.PROXY_NDP: ("vifwire.executors.kernel.l3", "ProxyNdpHandler"),
    StepKind.SYSCTLS: ("vifwire.executors.kernel.sysctl", "SysctlsHandler"),
    StepKind.OVS_BRIDGE: ("vifwire.executors.ovs", "OvsBridgeHandler"),
    StepKind.OVS_PORT: ("vifwire.executors.ovs", "OvsPortHandler"),
    StepKind.ANTISPOOF: ("vifwire.executors.firewall", "AntiSpoofHandler"),
    StepKind.ADDRESSES: ("vifwire.executors.kernel.addr", "AddressesHandler"),
    StepKind.GUEST_IP: ("vifwire.executors.kernel.addr", "GuestIpHandler"),
    StepKind.LXD_NIC: ("vifwire.executors.lxd", "LxdNicHandler"),
}

#: Modules with ``garbage(ctx, owned)`` and ``remove_garbage(ctx, items)``, in gc order.
GC_MODULES: tuple[str, ...] = (
    "vifwire.executors.firewall",
    "vifwire.executors.ovs",
    "vifwire.executors.kernel.gc",
)

assert set(HANDLER_CLASSES) == set(StepKind), "every step kind needs exactly one handler"

_handlers: dict[StepKind, Handler] = {}
_guard = threading.Lock()


def handler(kind: StepKind | str) -> Handler:
    """The handler for a step kind (one instance per process; handlers are stateless)."""
    try:
        kind = StepKind(kind)
    except ValueError:
        raise HostError(None, str(kind), "no executor knows this step") from None
    h = _handlers.get(kind)
    if h is None:
        with _guard:
            h = _handlers.get(kind)
            if h is None:
                module, name = HANDLER_CLASSES[kind]
                h = _handlers[kind] = getattr(importlib.import_module(module), name)()
    return h


def gc_module(name: str) -> Any:
    """A garbage reporter from :data:`GC_MODULES`."""
    if name not in GC_MODULES:
        raise KeyError(name)
    return importlib.import_module(name)
