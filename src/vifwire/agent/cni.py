"""``POST /v1/cni``: a CNI invocation carried out by the agent (docs/cni.md).

The plugin hands over its CNI_* variables and stdin; the agent runs the
same use case the plugin would run in-process
(:func:`vifwire.service.cni.invoke.invoke`) with the writer as back end, so
CNI attachments are group-committed, ordered per port and repaired like
every other port. The namespace path in CNI_NETNS must be visible to the
agent: it runs in the runtime's mount namespace (docs/cni.md, "Agent").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from vifwire.agent.writer import Job, JobKind

if TYPE_CHECKING:
    from vifwire.agent.config import AgentHandle
    from vifwire.model.binding import Binding
    from vifwire.planner.facts import HostFacts
    from vifwire.planner.plan import Plan
    from vifwire.service.results import CheckResult, PortResult, UnplugResult
    from vifwire.store.base import Attachment


class WriterBackend:
    """Changes through the agent's writer; reads straight from its service."""

    def __init__(self, agent: AgentHandle):
        self.agent = agent

    def plug(self, items: Sequence[tuple[Binding, Plan]]) -> list[PortResult]:
        return self.agent.writer.submit(Job(JobKind.PLUG, items=list(items))).wait()

    def unplug(self, bindings: Sequence[Binding], facts: HostFacts) -> UnplugResult:
        return self.agent.writer.submit(Job(JobKind.UNPLUG, bindings=list(bindings), facts=facts)).wait()

    def check(self, ids: Sequence[str]) -> CheckResult:
        return self.agent.svc.check(ids)

    def record(self, port_id: str) -> Attachment | None:
        return self.agent.svc.store.get(port_id)

    def records(self) -> list[Attachment]:
        return self.agent.svc.store.all(netns=self.agent.svc.netns)


def run(agent: AgentHandle, env: dict[str, str], config: str) -> dict[str, Any]:
    """``{"exit": code, "output": what the plugin prints}``.

    The configuration's ``state`` and ``ovsdb`` are the plugin's settings
    for its in-process path; the agent always uses its own.
    """
    from vifwire.service.cni.invoke import invoke

    backend = WriterBackend(agent)
    code, output = invoke(env, config, lambda conf: backend)
    return {"exit": code, "output": output}
