"""What the agent is given (:class:`AgentConfig`) and what its parts may use
of it (:class:`AgentHandle`).

The API and the repairer are handed the running agent but need only a few
of its parts; naming them here keeps those modules from importing the module
that composes them (:mod:`.agent` imports them, not the other way round).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from vifwire.planner.facts import HostFacts
from vifwire.renderers.options import GuestOptions

if TYPE_CHECKING:
    from vifwire.agent.events import EventLog
    from vifwire.agent.metrics import AgentMetrics
    from vifwire.agent.writer import Writer
    from vifwire.service.wiring import WiringService

DEFAULT_SOCKET = "/run/vifwire/agent.sock"


@dataclass(frozen=True)
class FleetConfig:
    """Fleet mode: where etcd is, and the host name this agent serves (docs/fleet.md)."""

    urls: tuple[str, ...]
    host: str
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    socket: str = DEFAULT_SOCKET
    netns: str | None = None
    state: str | None = None
    ovsdb: str | None = None
    ovs_timeout: float = 10.0
    socket_group: str | None = None
    metrics_addr: tuple[str, int] | None = None
    repair: str = "auto"  # auto: put drift back; report: only say so
    resync_interval: float = 30.0  # full check this often, besides netlink notifications
    facts: HostFacts = field(default_factory=HostFacts)
    guest: GuestOptions = field(default_factory=GuestOptions)
    fleet: FleetConfig | None = None  # fleet mode: desired ports from etcd (docs/fleet.md)


class AgentHandle(Protocol):
    """The running agent as the API and the repairer see it."""

    config: AgentConfig
    svc: WiringService
    events: EventLog
    writer: Writer
    metrics: AgentMetrics
    stopping: threading.Event
    version: str

    @property
    def ready(self) -> bool: ...

    def wait_ready(self, timeout: float) -> bool: ...
