"""Fleet mode's etcd adapter: the key layout and a small, typed etcd client.

A kit like :mod:`vifwire.clikit`: the agent and the ``vifwire fleet`` command
import it, it imports no front end and not the service, so both sides of the
fleet protocol share one definition of keys, revisions and failures.

The client names are resolved lazily: etcd3gw pulls in requests (~0.1 s of
imports), which a command that only builds keys should not pay for.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["KV", "Compacted", "Etcd", "EtcdError", "Event", "Lease", "LeaseExpired", "Watch", "keys"]
_FROM_ETCD = {"KV", "Compacted", "Etcd", "EtcdError", "Event", "Lease", "LeaseExpired", "Watch"}


def __getattr__(name: str) -> Any:
    if name in _FROM_ETCD:
        return getattr(importlib.import_module("vifwire.fleetkit.etcd"), name)
    if name == "keys":
        return importlib.import_module("vifwire.fleetkit.keys")
    raise AttributeError(f"module 'vifwire.fleetkit' has no attribute {name!r}")
