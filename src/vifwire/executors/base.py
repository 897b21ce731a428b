"""What every executor provides, and the context they share.

An executor turns plan steps into host state. It does not decide anything:
the plan says what to create, with which names and parameters. For each step
operation an executor registers a :class:`Handler` with three verbs:

* ``apply``  - make it so; return an :data:`Undo` that reverts exactly what
  this call changed (``None`` when it changed nothing, e.g. the device was
  already there as wanted). Raise :class:`~vifwire.errors.HostError` on failure
  *after* reverting its own partial work.
* ``remove`` - unplug time: remove what the step creates; absent is success
  (CNI DEL semantics). Used with the recorded plan, not the binding.
* ``verify`` - ``check`` time: a list of drift lines (empty = as recorded).

The engine (:mod:`vifwire.executors.engine`) sequences steps, collects undos
and rolls back in reverse on failure, so handlers stay small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from vifwire.planner.plan import Step

Undo = Callable[[], None]


class Handler(Protocol):
    def apply(self, step: Step, ctx: "HostContext") -> Undo | None: ...

    def remove(self, step: Step, ctx: "HostContext") -> None: ...

    def verify(self, step: Step, ctx: "HostContext") -> list[str]: ...


@dataclass
class HostContext:
    """Long-lived connections to the host being wired.

    ``netns`` is the namespace vifwire treats as "the host" (``None`` = the
    one it runs in). Connections are opened lazily and reused across all ports
    of a run: one netlink socket per namespace, one OVSDB session, one nftables
    context.
    """

    netns: str | None = None
    ovsdb: str | None = None  # endpoint, e.g. unix:/run/openvswitch/db.sock
    ovs_timeout: float = 10.0
    port_id: str | None = None  # the port being worked on (for error messages)
    _cache: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = factory()
        return self._cache[key]

    def close(self) -> None:
        for obj in reversed(list(self._cache.values())):
            close = getattr(obj, "close", None)
            if close:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing must not mask the real error
                    pass
        self._cache.clear()

    def __enter__(self) -> "HostContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: op name -> handler; filled by executor modules via :func:`register`.
HANDLERS: dict[str, Handler] = {}


def register(op: str, handler: Handler) -> None:
    HANDLERS[op] = handler
