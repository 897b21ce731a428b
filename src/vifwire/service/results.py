"""Typed results of the service's use cases (no printing, no formatting).

Each has ``to_json()`` giving the stable machine form the CLI's ``--json``
prints and an API would answer with.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vifwire.planner.plan import GuestConfig, Plan


@dataclass(frozen=True)
class PortResult:
    """One port of a plug: wired and recorded (``ok``), or rolled back with ``error``."""

    port_id: str
    ok: bool
    plan: Plan
    error: str | None = None
    changed: int = 0  # steps that changed something (0 = it was already as wanted)

    @property
    def strategy(self) -> str:
        return self.plan.strategy

    @property
    def devices(self) -> list[str]:
        return self.plan.devices()

    @property
    def guest(self) -> GuestConfig | None:
        return self.plan.guest

    @property
    def state(self) -> str:
        return ("plugged" if self.changed else "unchanged") if self.ok else "failed"

    def to_json(self) -> dict[str, Any]:
        return {"port_id": self.port_id, "ok": self.ok, "strategy": self.strategy, "devices": self.devices,
                "changed_steps": self.changed, "error": self.error,
                "guest": self.guest.to_json() if self.guest else None}


def summarise(results: list[PortResult]) -> dict[str, Counter]:
    """Counts by strategy and by state: what a long result table is reduced to."""
    return {"strategy": Counter(r.strategy for r in results), "state": Counter(r.state for r in results)}


@dataclass(frozen=True)
class UnplugResult:
    unplugged: list[str] = field(default_factory=list)
    not_recorded: list[str] = field(default_factory=list)  # asked for by id, no record: nothing to do
    problems: list[str] = field(default_factory=list)  # what could not be removed (empty = all gone)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"unplugged": self.unplugged, "not_recorded": self.not_recorded, "problems": self.problems}


@dataclass(frozen=True)
class CheckResult:
    checked: int
    drift: dict[str, list[str]]  # port id -> drift lines, only ports with drift

    @property
    def clean(self) -> bool:
        return not self.drift

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "drift": self.drift}


@dataclass(frozen=True)
class GarbageItem:
    kind: str  # link, route, ovs_port, filter, ...
    name: str
    module: str  # the executor module that reported it (and removes it)
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, str]:
        return {**self.extra, "kind": self.kind, "name": self.name, "module": self.module}


@dataclass(frozen=True)
class GcResult:
    items: list[GarbageItem]
    removed: bool
    problems: list[str] = field(default_factory=list)  # backends that could not be read

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"garbage": [g.to_json() for g in self.items], "removed": self.removed, "problems": self.problems}
