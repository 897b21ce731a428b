"""The in-process back end: a :class:`~vifwire.service.wiring.WiringService` of this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from vifwire.model.binding import Binding
    from vifwire.planner.facts import HostFacts
    from vifwire.planner.plan import Plan
    from vifwire.service.results import CheckResult, PortResult, UnplugResult
    from vifwire.service.wiring import WiringService
    from vifwire.store.base import Attachment


class LocalBackend:
    """``fail_at``: the engine's fault injection, for tests."""

    def __init__(self, svc: WiringService, fail_at: int | None = None):
        self.svc = svc
        self.fail_at = fail_at

    def plug(self, items: Sequence[tuple[Binding, Plan]]) -> list[PortResult]:
        return self.svc.plug_plans(items, fail_at=self.fail_at)

    def unplug(self, bindings: Sequence[Binding], facts: HostFacts) -> UnplugResult:
        return self.svc.unplug(bindings=bindings, facts=facts)

    def check(self, ids: Sequence[str]) -> CheckResult:
        return self.svc.check(ids)

    def record(self, port_id: str) -> Attachment | None:
        return self.svc.store.get(port_id)

    def records(self) -> list[Attachment]:
        return self.svc.store.all(netns=self.svc.netns)
