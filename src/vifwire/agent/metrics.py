"""The agent's Prometheus metrics (prefix ``vifwire_``; docs/agent.md, "Metrics").

Counters and histograms are updated by the writer and the repairer as things
happen; what describes the host now (ports by state, OVSDB connected, the
anti-spoofing drop counters per port and reason) is read at scrape time by a
collector, so a scrape never reports a number older than itself. The registry
is the agent's own, not prometheus_client's global one: two agents in one
process (tests) never mix their numbers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from vifwire.service.results import PortResult

log = logging.getLogger("vifwire.agent.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Latency buckets (seconds): a warm single plug is ~1-5 ms, a 1000-port round ~1 s.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HostReadings:
    """What the collector asks the agent at scrape time (plain callables, so
    this module knows nothing of the service)."""

    def __init__(self, ports_by_state: Callable[[], dict[str, int]], ovsdb_connected: Callable[[], bool | None],
                 drops: Callable[[], dict[str, dict[str, int]]], port_of_device: Callable[[], dict[str, str]]):
        self.ports_by_state = ports_by_state
        self.ovsdb_connected = ovsdb_connected
        self.drops = drops
        self.port_of_device = port_of_device


class _HostCollector:
    def __init__(self, readings: HostReadings):
        self.r = readings

    def describe(self) -> Iterable:
        return []  # values are only known at scrape time

    def collect(self) -> Iterable:
        ports = GaugeMetricFamily("vifwire_ports", "Recorded ports by state", labels=["state"])
        try:
            for state, n in sorted(self.r.ports_by_state().items()):
                ports.add_metric([state], n)
        except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
            log.warning("metrics: cannot read the records: %s", exc)
        yield ports
        connected = self.r.ovsdb_connected()
        if connected is not None:
            yield GaugeMetricFamily("vifwire_ovsdb_connected", "1 if the agent's OVSDB session is up",
                                    value=1 if connected else 0)
        drops = CounterMetricFamily("vifwire_antispoof_dropped_packets",
                                    "Packets dropped by the anti-spoofing filters, by port and reason",
                                    labels=["port", "device", "reason"])
        try:
            owners = self.r.port_of_device()
            for dev, by_reason in sorted(self.r.drops().items()):
                for reason, packets in sorted(by_reason.items()):
                    drops.add_metric([owners.get(dev, ""), dev, reason], packets)
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: cannot read the drop counters: %s", exc)
        yield drops


class AgentMetrics:
    """The agent's metrics registry and the hooks that feed it."""

    def __init__(self, readings: HostReadings | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.plug_seconds = Histogram("vifwire_plug_seconds", "Plug latency per port, request to answer",
                                      ["strategy"], buckets=_BUCKETS, registry=r)
        self.unplug_seconds = Histogram("vifwire_unplug_seconds", "Unplug latency of a bulk unplug round",
                                        buckets=_BUCKETS, registry=r)
        self.failures = Counter("vifwire_failures", "Ports that failed to plug or repair, by reason",
                                ["reason"], registry=r)
        self.drift_found = Counter("vifwire_drift_found", "Ports found drifted from their records",
                                   registry=r)
        self.drift_repaired = Counter("vifwire_drift_repaired", "Drifted ports put back", registry=r)
        self.reconcile_seconds = Gauge("vifwire_reconcile_seconds", "Duration of the last full reconcile",
                                       registry=r)
        self.ovs_wait_seconds = Histogram("vifwire_ovs_wait_seconds",
                                          "Time waiting for ovs-vswitchd to report ports up", buckets=_BUCKETS,
                                          registry=r)
        self.rounds = Counter("vifwire_writer_rounds", "Group-commit rounds run by the writer", registry=r)
        self.etcd_up = Gauge("vifwire_etcd_connected", "Fleet mode: 1 while the agent can read etcd",
                             registry=r)
        if readings is not None:
            r.register(_HostCollector(readings))

    # hooks (called by the writer and the repairer)

    def plugged(self, results: list[PortResult], seconds: float) -> None:
        for res in results:
            if res.ok:
                self.plug_seconds.labels(res.strategy).observe(seconds)
            else:
                self.failures.labels(failure_reason(res.error)).inc()

    def failed(self, errors: list[str | None]) -> None:
        for e in errors:
            self.failures.labels(failure_reason(e)).inc()

    def unplugged(self, n: int, seconds: float) -> None:
        self.unplug_seconds.observe(seconds)

    def round(self) -> None:
        """One writer round ran (however many jobs and ports it held)."""
        self.rounds.inc()

    def drift(self, n: int) -> None:
        self.drift_found.inc(n)

    def repaired(self, n: int) -> None:
        self.drift_repaired.inc(n)

    def etcd_connected(self, up: bool) -> None:
        """Fleet mode: whether the agent can read its desired ports (docs/fleet.md)."""
        self.etcd_up.set(1 if up else 0)

    def reconciled(self, seconds: float) -> None:
        self.reconcile_seconds.set(seconds)

    def ovs_waited(self, seconds: float) -> None:
        self.ovs_wait_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def failure_reason(error: str | None) -> str:
    """A low-cardinality label from a failure line ``port P: STEP [device]: problem``:
    the step kind (``ovs_port``, ``macvtap``...), never a device or port name."""
    if not error:
        return "unknown"
    parts = error.split(": ")
    if len(parts) >= 3 and parts[0].startswith("port ") and parts[1].strip():
        return parts[1].split()[0]
    return "other"
