"""The agent's writer on its own: group commit and per-port order.

The service under the writer is a recorder (no host): these tests look only
at how jobs become rounds - the wiring itself is tested against real agents
in test_agent_api.py and test_agent_lifecycle.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from vifwire.agent.events import EventLog, EventType
from vifwire.agent.writer import Job, JobKind, Writer
from vifwire.service.results import PortResult, UnplugResult


@dataclass
class FakeBinding:
    port_id: str
    mac: str
    ipv4: tuple = ()
    ipv6: tuple = ()


@dataclass
class FakePlan:
    port_id: str
    devs: list = field(default_factory=list)
    strategy: str = "routed-tap"
    guest: object = None

    def devices(self) -> list:
        return self.devs


class Recorder:
    """Stands in for WiringService: records each call, takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.02):
        self.delay = delay
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def conflicts(self, groups):
        return [[] for _ in groups]

    def plug_plans(self, items, check_conflicts=True):
        with self.lock:
            self.calls.append(("plug", [b.port_id for b, _ in items]))
        time.sleep(self.delay)
        return [PortResult(b.port_id, True, p, changed=1) for b, p in items]

    def unplug(self, ids, bindings=(), all_ports=False, facts=None):
        with self.lock:
            self.calls.append(("unplug", ["*"] if all_ports else list(ids)))
        time.sleep(self.delay)
        return UnplugResult(list(ids), [], [])


_MACS = itertools.count(1)


def plug_job(pid: str, mac: str | None = None, ip: str | None = None) -> Job:
    """A job for one port; a MAC of its own unless given (jobs sharing one are not batched)."""
    n = next(_MACS)
    b = FakeBinding(pid, mac or f"fa:16:3e:00:{n >> 8 & 255:02x}:{n & 255:02x}", (ip,) if ip else ())
    return Job(JobKind.PLUG, items=[(b, FakePlan(pid, [f"tap{pid}"]))])


def run(svc: Recorder, jobs: list[Job], first: Job | None = None) -> list[tuple[str, list[str]]]:
    """Submit ``first`` (it occupies the writer), then ``jobs`` while it runs."""
    w = Writer(svc, EventLog())
    w.start()
    try:
        if first is not None:
            w.submit(first)
            time.sleep(svc.delay / 4)
        for j in jobs:
            w.submit(j)
        for j in [*([first] if first else []), *jobs]:
            j.wait(10)
    finally:
        w.stop()
    return svc.calls


def test_jobs_queued_together_are_one_round():
    svc = Recorder()
    calls = run(svc, [plug_job(f"p{i}") for i in range(20)], first=plug_job("first"))
    assert calls == [("plug", ["first"]), ("plug", [f"p{i}" for i in range(20)])]


def test_the_same_port_keeps_arrival_order_across_rounds():
    svc = Recorder()
    jobs = [plug_job("a"), Job(JobKind.UNPLUG, ids=["a"]), plug_job("a"), plug_job("b")]
    calls = run(svc, jobs, first=plug_job("x"))
    # "a" three times in order, each in its own round; "b" rides with the first
    assert calls[0] == ("plug", ["x"])
    order = [(kind, ids) for kind, ids in calls[1:]]
    a_ops = [kind for kind, ids in order if "a" in ids]
    assert a_ops == ["plug", "unplug", "plug"]
    assert ("plug", ["a", "b"]) in order


def test_jobs_sharing_a_mac_or_an_address_are_not_in_one_round():
    svc = Recorder()
    jobs = [plug_job("a", mac="fa:16:3e:00:00:01"), plug_job("b", mac="FA:16:3E:00:00:01"),
            plug_job("c", ip="10.0.0.1"), plug_job("d", ip="10.0.0.1"), plug_job("e")]
    calls = run(svc, jobs, first=plug_job("x"))
    rounds = [ids for _, ids in calls[1:]]
    assert rounds[0] == ["a", "c", "e"]
    assert rounds[1] == ["b", "d"]


def test_an_unplug_of_everything_runs_alone():
    svc = Recorder()
    jobs = [plug_job("a"), Job(JobKind.UNPLUG, all_ports=True), plug_job("b")]
    calls = run(svc, jobs, first=plug_job("x"))
    assert calls[1:] == [("plug", ["a"]), ("unplug", ["*"]), ("plug", ["b"])]


def test_every_job_is_answered_when_a_round_fails():
    class Broken(Recorder):
        def plug_plans(self, items, check_conflicts=True):
            raise RuntimeError("store gone")

    jobs = [plug_job("a"), plug_job("b")]
    w = Writer(Broken(), EventLog())
    w.start()
    try:
        for j in jobs:
            w.submit(j)
        for j in jobs:
            assert j.done.wait(5)
            assert isinstance(j.error, RuntimeError)
    finally:
        w.stop()


def test_the_openapi_document_in_docs_is_the_served_one():
    """docs/agent.md embeds the document GET /v1/openapi.json serves; regenerate
    it with ``python -m vifwire.agent.openapi`` when the API changes."""
    import json
    import pathlib

    from vifwire.agent.openapi import document

    text = (pathlib.Path(__file__).parent.parent / "docs" / "agent.md").read_text()
    section = text[text.index("## OpenAPI document"):]
    start = section.index("```json\n") + len("```json\n")
    embedded = json.loads(section[start:section.index("```", start)])
    assert embedded == document()


def test_a_reader_from_before_a_restart_is_told_to_relist():
    log = EventLog()
    log.emit(EventType.PLUGGED, "a")
    evs, last, lost = log.since(57)  # a sequence number the new process never gave out
    assert (evs, last, lost) == ([], 1, True)
    evs, last, lost = log.since(0)
    assert len(evs) == 1 and not lost
