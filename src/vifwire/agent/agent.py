"""The agent: one per host, holding the wiring service open for every caller.

Composition only: the :class:`~vifwire.service.wiring.WiringService` (the use
cases), the :class:`~.writer.Writer` (group commit), the
:class:`~.events.EventLog`, the :class:`~.metrics.AgentMetrics`, the
:class:`~.repair.Repairer` (start-up reconcile, drift watch, self-repair) and
the listeners (:mod:`.server`). Start-up order matters: the socket listens
first (``/v1/health`` answers "not ready"), the reconcile runs, then changes
are taken - a caller never changes a host whose records were not verified.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter

from vifwire.agent.api import Api
from vifwire.agent.config import AgentConfig
from vifwire.agent.events import EventLog
from vifwire.agent.metrics import AgentMetrics, HostReadings
from vifwire.agent.writer import Writer

log = logging.getLogger("vifwire.agent")

class Agent:
    """The composition root (implements :class:`~.config.AgentHandle`)."""

    def __init__(self, config: AgentConfig):
        from vifwire.service.wiring import WiringService

        self.config = config
        self.svc = WiringService(netns=config.netns, state=config.state, ovsdb=config.ovsdb,
                                 ovs_timeout=config.ovs_timeout, index_claims=True)
        self.events = EventLog()
        self.metrics = AgentMetrics(HostReadings(self._ports_by_state, self._ovsdb_connected,
                                                 self.svc.drop_counters, self._port_of_device))
        self.writer = Writer(self.svc, self.events, self.metrics)
        self.api = Api(self)
        self.stopping = threading.Event()
        self._ready = threading.Event()
        self._servers: list = []
        self.repairer = None
        self.fleet = None
        from importlib.metadata import PackageNotFoundError, version

        try:
            self.version = version("vifwire")
        except PackageNotFoundError:
            self.version = "unknown"

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # ------------------------------------------------------------- readings

    def _ports_by_state(self) -> dict[str, int]:
        return dict(Counter(a.status for a in self.svc.store.all(netns=self.svc.netns)))

    def _ovsdb_connected(self) -> bool | None:
        host = self.svc.host
        if host.ovsdb_client is None:
            return None
        return not host.ovsdb_down

    def _port_of_device(self) -> dict[str, str]:
        return {d: a.port_id for a in self.svc.store.all(netns=self.svc.netns) for d in a.devices}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen, reconcile, then take changes. Raises UsageError if the socket is taken."""
        from vifwire.agent.repair import Repairer
        from vifwire.agent.server import MetricsServer, Permissions, UnixApiServer, serve_in_thread

        perms = Permissions(self.config.socket_group)
        self.svc.host  # the namespace must exist before anything listens
        self.svc.store.check_writable()
        if self.config.fleet is not None:
            self._claim_fleet()
        api = UnixApiServer(self.config.socket, self.api.handle, perms, perms.gid)
        self._servers.append(api)
        serve_in_thread(api, "vifwire-api")
        if self.config.metrics_addr:
            ms = MetricsServer(self.config.metrics_addr, self.api.handle)
            self._servers.append(ms)
            serve_in_thread(ms, "vifwire-metrics")
        log.info("listening on %s", self.config.socket)
        self.writer.start()
        self.repairer = Repairer(self)
        t0 = time.perf_counter()
        self.repairer.startup()
        took = time.perf_counter() - t0
        self.metrics.reconciled(took)
        self._ready.set()
        log.info("ready: start-up reconcile took %.1f ms", took * 1e3)
        self.repairer.start()
        if self.fleet is not None:
            self.fleet.start()

    def _claim_fleet(self) -> None:
        """Fleet mode: one agent per host name (raises UsageError if another is alive)."""
        from vifwire.agent.fleet import AnotherAgent, FleetSync
        from vifwire.errors import UsageError
        from vifwire.fleetkit.etcd import EtcdError

        self.fleet = FleetSync(self, self.config.fleet)
        try:
            self.fleet.claim()
        except AnotherAgent as exc:
            raise UsageError(str(exc)) from None
        except EtcdError as exc:
            log.warning("fleet: etcd not reachable at start (%s): serving the local API, retrying", exc)
            self.metrics.etcd_connected(False)

    def stop(self) -> None:
        """Stop accepting, finish in-flight changes, close everything."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.events.wake_all()
        for s in self._servers:
            s.shutdown()
        if self.fleet is not None:
            self.fleet.stop()
        if self.repairer is not None:
            self.repairer.stop()
        self.writer.stop()
        for s in self._servers:
            s.wait_idle(30.0)  # in-flight requests get their answers before the process exits
        for s in self._servers:
            s.server_close()
        self.svc.close()
        log.info("stopped")

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, stop cleanly."""
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping", signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
            while not done.wait(1.0):
                pass
        finally:
            self.stop()
