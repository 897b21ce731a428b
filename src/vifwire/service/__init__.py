"""The use cases every front end calls: plug, unplug, check, gc, list, render.

Front ends (the CLI, the agent, the CNI plugin, the fleet controller) parse
their input, call :class:`WiringService` and format its typed results; they
never sequence executors themselves and never import each other. See
docs/architecture.md.
"""

from vifwire.service.results import CheckResult, GarbageItem, GcResult, PortResult, UnplugResult
from vifwire.service.wiring import WiringService

__all__ = ["WiringService", "PortResult", "UnplugResult", "CheckResult", "GcResult", "GarbageItem"]
