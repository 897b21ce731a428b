"""The use cases every front end calls: plug, unplug, check, gc, list, render.

Front ends (the CLI, the agent, the CNI plugin, the fleet controller) parse
their input, call :class:`WiringService` and format its typed results; they
never sequence executors themselves and never import each other. See
docs/architecture.md.

The names below are imported on first use (PEP 562): the CNI plugin's thin
path imports :mod:`vifwire.service.cni.spec` and must not pay for the
wiring service it does not run.
"""

from __future__ import annotations

import importlib


_WHERE = {"WiringService": "vifwire.service.wiring", "PortResult": "vifwire.service.results",
          "UnplugResult": "vifwire.service.results", "CheckResult": "vifwire.service.results",
          "GcResult": "vifwire.service.results", "GarbageItem": "vifwire.service.results"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vifwire.service' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
