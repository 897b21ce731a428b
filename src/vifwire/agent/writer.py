"""The agent's one writer: group commit of everything that changes the host.

Request threads parse and plan (in parallel) and hand a :class:`Job` to the
writer; the writer takes every job queued at that moment and runs them as one
round: one bulk unplug, then one plug of all the ports (one OVSDB transaction
and one ovs-vswitchd wait, one nftables transaction, one SQLite transaction),
each port still its own all-or-nothing unit inside it (docs/agent.md,
"Concurrency"). While a round runs the next jobs queue up, so the busier the
agent, the bigger the rounds - felix's dataplane driver batches the same way.

Order per port is arrival order: a job that touches a port (or a MAC or a
device) already in the round waits for the next round, and so does every
later job touching its ports. Jobs for different ports never wait for each
other beyond one round.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable

from vifwire.agent.events import EventLog, EventType

if TYPE_CHECKING:
    from vifwire.agent.metrics import AgentMetrics
    from vifwire.model.binding import Binding
    from vifwire.planner.facts import HostFacts
    from vifwire.planner.plan import Plan
    from vifwire.service.wiring import WiringService

log = logging.getLogger("vifwire.agent.writer")

#: Ports in one round at most (a bigger burst is split over rounds).
MAX_ROUND_PORTS = 2000
#: How long a busy writer waits for the callers of its last round to come back.
LINGER = 0.010


class JobKind(StrEnum):
    PLUG = "plug"
    UNPLUG = "unplug"
    REPAIR = "repair"  # re-apply recorded plans (ids, or every port when ids is None)
    CALL = "call"  # anything else that must not run beside a change (gc --force)


class Shutdown(Exception):
    """The agent is stopping and takes no new changes."""


@dataclass
class Job:
    kind: JobKind
    items: list[tuple[Binding, Plan]] = field(default_factory=list)  # plug
    ids: list[str] | None = None  # unplug / repair
    bindings: list[Binding] = field(default_factory=list)  # unplug without a record
    all_ports: bool = False
    facts: HostFacts | None = None
    ovs_wait: float | None = None  # plug: also wait for OVS to report each OVS port up with an ofport
    call: Callable[[], Any] | None = None
    reason: str = ""  # repair: why (for the events)
    enqueued: float = field(default_factory=time.monotonic)
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def exclusive(self) -> bool:
        """Runs alone in its round (touches every port, or is opaque)."""
        return self.kind == JobKind.CALL or self.all_ports or (self.kind == JobKind.REPAIR and self.ids is None)

    def ports(self) -> set[str]:
        return {b.port_id for b, _ in self.items} | set(self.ids or ()) | {b.port_id for b in self.bindings}

    def keys(self) -> set[str]:
        """What two jobs in one round must not share: port ids, MACs, devices,
        addresses. A job sharing one waits for the next round, where it is
        checked against the first one's record (same network or not)."""
        keys = {f"port:{p}" for p in self.ports()}
        for b, p in self.items:
            keys.add(f"mac:{b.mac.lower()}")
            keys.update(f"dev:{d}" for d in p.devices())
            keys.update(f"ip:{ip}" for ip in (*b.ipv4, *b.ipv6))
        return keys

    def wait(self, timeout: float | None = None) -> Any:
        if not self.done.wait(timeout):
            raise TimeoutError("the agent did not finish the request in time")
        if self.error is not None:
            raise self.error
        return self.result


class Writer:
    """The thread that applies jobs in rounds."""

    def __init__(self, svc: WiringService, events: EventLog, metrics: AgentMetrics | None = None):
        self.svc = svc
        self.events = events
        self.metrics = metrics
        self._pending: list[Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vifwire-writer", daemon=True)
        self.rounds = 0  # rounds run (tests and metrics look at batching)
        self._touched: dict[str, float] = {}  # port -> when a round that changed it ended
        self._touched_lock = threading.Lock()
        self._busy: set[str] = set()  # ports of the round running now

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                raise Shutdown("the agent is shutting down")
            self._pending.append(job)
            self._cond.notify_all()
        return job

    def stop(self, timeout: float = 60.0) -> None:
        """Take no new jobs, finish the queued ones, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        last = queued = 0  # jobs in the previous round; jobs that queued while it ran
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                if last > 1 and not self._stopping:
                    # Busy: the callers answered by the last round are sending
                    # their next requests now, beside those that queued while
                    # it ran. Waiting a moment for them makes one round of what
                    # would be two (each round has a fixed cost); an idle agent
                    # never waits.
                    want = last + queued
                    deadline = time.monotonic() + LINGER
                    while len(self._pending) < want and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                batch = self._take()
            last = len(batch)
            try:
                self._round(batch)
            except BaseException as exc:  # noqa: BLE001 - every job must be answered
                log.exception("round failed")
                for job in batch:
                    if not job.done.is_set():
                        job.error = exc
                        job.done.set()
            with self._cond:
                queued = len(self._pending)

    def _take(self) -> list[Job]:
        """The jobs of the next round (called with the lock held)."""
        taken: list[Job] = []
        used: set[str] = set()
        blocked: set[str] = set()
        rest: list[Job] = []
        ports = 0
        for job in self._pending:
            if job.exclusive:
                if not taken and not rest:
                    taken.append(job)
                    rest.extend(self._pending[1:])
                    break
                rest.append(job)
                blocked.add("*")
                continue
            keys = job.keys()
            if "*" in blocked or keys & (used | blocked) or (taken and ports + len(job.items) > MAX_ROUND_PORTS):
                rest.append(job)
                blocked |= keys
                continue
            taken.append(job)
            used |= keys
            ports += len(job.items)
        self._pending = rest
        return taken

    def recently_changed(self, seconds: float) -> set[str]:
        """Ports a round is changing now or changed within the last ``seconds``
        (``"*"``: every port) - the repairer takes their netlink notifications
        for the echo of our own changes."""
        cutoff = time.monotonic() - seconds
        with self._touched_lock:
            for pid in [p for p, t in self._touched.items() if t < cutoff]:
                del self._touched[pid]
            return set(self._touched) | self._busy

    def _round(self, jobs: list[Job]) -> None:
        self.rounds += 1
        if self.metrics:
            self.metrics.round()
        ports = set().union(*(j.ports() | ({"*"} if j.exclusive else set()) for j in jobs))
        with self._touched_lock:
            self._busy = ports
        try:
            self._run_round(jobs)
        finally:
            now = time.monotonic()
            with self._touched_lock:
                self._busy = set()
                for pid in ports:
                    self._touched[pid] = now

    def _run_round(self, jobs: list[Job]) -> None:
        if len(jobs) == 1 and jobs[0].kind in (JobKind.CALL, JobKind.REPAIR):
            self._single(jobs[0])
            return
        unplugs = [j for j in jobs if j.kind == JobKind.UNPLUG]
        plugs = [j for j in jobs if j.kind == JobKind.PLUG]
        repairs = [j for j in jobs if j.kind == JobKind.REPAIR]
        if unplugs:
            self._unplug(unplugs)
        for j in repairs:
            self._single(j)
        if plugs:
            self._plug(plugs)

    def _single(self, job: Job) -> None:
        try:
            if job.kind == JobKind.CALL:
                job.result = job.call()
            else:
                job.result = self._repair(job)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            job.error = exc
        job.done.set()

    def _repair(self, job: Job) -> list:
        results = self.svc.repair(job.ids)
        for r in results:
            if not r.ok:
                self.events.emit(EventType.FAILED, r.port_id, f"repair: {r.error}")
            elif r.changed:
                self.events.emit(EventType.REPAIRED, r.port_id, job.reason or f"{r.changed} step(s) re-applied")
        if self.metrics:
            self.metrics.repaired(sum(1 for r in results if r.ok and r.changed))
            self.metrics.failed([r.error for r in results if not r.ok])
        return results

    def _unplug(self, jobs: list[Job]) -> None:
        ids = [i for j in jobs for i in (j.ids or ())]
        bindings = [b for j in jobs for b in j.bindings]
        all_ports = any(j.all_ports for j in jobs)
        t0 = time.perf_counter()
        try:
            res = self.svc.unplug(ids, bindings=bindings, all_ports=all_ports, facts=jobs[0].facts)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the round
            for j in jobs:
                j.error = exc
                j.done.set()
            return
        took = time.perf_counter() - t0
        from vifwire.service.results import UnplugResult

        for pid in res.unplugged:
            self.events.emit(EventType.UNPLUGGED, pid, "unplug")
        if self.metrics:
            self.metrics.unplugged(len(res.unplugged), took)
        for j in jobs:
            mine = j.ports()
            if j.all_ports or len(jobs) == 1:
                j.result = res
            else:
                j.result = UnplugResult([p for p in res.unplugged if p in mine],
                                        [p for p in res.not_recorded if p in mine],
                                        [line for line in res.problems if _about(line, mine)])
            j.done.set()

    def _plug(self, jobs: list[Job]) -> None:
        from vifwire.errors import InvalidInput

        t0 = time.perf_counter()
        try:
            conflicts = self.svc.conflicts([j.items for j in jobs])
        except Exception as exc:  # noqa: BLE001 - the store cannot be read: every caller hears it
            for j in jobs:
                j.error = exc
                j.done.set()
            return
        ready: list[Job] = []
        for j, errors in zip(jobs, conflicts):
            if errors:
                j.error = InvalidInput(errors)
                j.done.set()
            else:
                ready.append(j)
        if not ready:
            return
        items = [it for j in ready for it in j.items]
        try:
            results = self.svc.plug_plans(items, check_conflicts=False)
        except Exception as exc:  # noqa: BLE001
            for j in ready:
                j.error = exc
                j.done.set()
            return
        by_port = {r.port_id: r for r in results}
        took = time.perf_counter() - t0
        log.debug("round: %d job(s), %d port(s) in %.1f ms", len(ready), len(items), took * 1e3)
        for r in results:
            if r.ok:
                self.events.emit(EventType.PLUGGED, r.port_id, "plug" if r.changed else "plug (unchanged)")
            else:
                self.events.emit(EventType.FAILED, r.port_id, r.error or "plug failed")
        now = time.monotonic()
        for j in ready:
            j.result = [by_port[b.port_id] for b, _ in j.items]
            if self.metrics:
                self.metrics.plugged(j.result, now - j.enqueued)
        for j in ready:  # after every port of the round is in: the ofports come together
            if j.ovs_wait is not None:
                w0 = time.perf_counter()
                try:
                    self.svc.wait_plugged(j.result, j.ovs_wait)
                except Exception as exc:  # noqa: BLE001 - plugged, but not up in time: the caller hears it
                    j.error = exc
                if self.metrics:
                    self.metrics.ovs_waited(time.perf_counter() - w0)
            j.done.set()


def _about(line: str, ports: set[str]) -> bool:
    """A problem line names its port as ``port ID: ...``; lines naming none concern everyone."""
    if not line.startswith("port "):
        return True
    return line[5:].split(":", 1)[0] in ports
