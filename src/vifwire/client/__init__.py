"""A client of the per-host agent's API, for every front end that talks to it.

:mod:`.agent` holds :class:`AgentClient` and its errors; :mod:`.http` the
bare HTTP/1.1-over-a-Unix-socket exchange. The names below are imported on
first use (PEP 562), so that the CNI plugin's thin path can use :mod:`.http`
alone without paying for the rest (a few milliseconds of every pod's
start-up, docs/cni.md).
"""

from __future__ import annotations

import importlib

__all__ = ["AgentClient", "AgentError", "AgentUnavailable", "DEFAULT_SOCKET", "documents", "parse_ports"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'vifwire.client' has no attribute {name!r}")
    return getattr(importlib.import_module("vifwire.client.agent"), name)
