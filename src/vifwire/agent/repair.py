"""Start-up reconcile and self-repair: the records are the desired state.

At start-up, before any change is taken, every recorded port of the
namespace is checked (one read of each kind of host state). A record a
``kill -9`` left ``plugging`` is finished by applying its recorded plan
again, or - if that fails - unplugged and dropped: every port ends whole and
recorded, or absent and unrecorded (docs/agent.md, "Crashes"). Drift found
is repaired with ``--repair auto`` (only what is missing or wrong is put
back; a correct device keeps its ifindex) or only reported with ``report``.

While running, a thread listens to netlink (:mod:`.watch`): a device the
agent owns that is deleted or changed, or a route through one that is
removed, marks its port; marked ports are checked a moment later (changes
come in bursts) and repaired. OVS ports and filter elements have no cheap
notification here, so every ``--resync-interval`` seconds the whole
namespace is checked too, the way felix resyncs its dataplane. Repairs go
through the writer like any change, so they are serialised with callers'
plugs and unplugs of the same ports. Nothing the agent does not own is ever
touched (the owned set is the records' devices).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from vifwire.agent.events import EventType
from vifwire.agent.writer import Job, JobKind

if TYPE_CHECKING:
    from vifwire.agent.config import AgentHandle

log = logging.getLogger("vifwire.agent.repair")

#: Wait this long after a notification for the rest of its burst.
SETTLE = 0.1
#: Notifications about a port the writer changed this recently are its own echo.
OWN_ECHO = 1.0
#: Longest sleep between looks at the stop flag.
POLL = 0.25
#: How often the OVSDB replica is looked at for ports removed behind our back.
OVS_POLL = 1.0


class Repairer:
    def __init__(self, agent: AgentHandle):
        self.agent = agent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = None

    # ------------------------------------------------------------ start-up

    def startup(self) -> None:
        svc, ev = self.agent.svc, self.agent.events
        records = svc.store.all(netns=svc.netns)
        # a plug a crash interrupted (not "recovered": rebuilt records are
        # checked like the others and never removed here)
        unfinished = [a.port_id for a in records if a.status == "plugging"]
        if unfinished:
            log.warning("%d record(s) left unfinished by a crash: finishing them", len(unfinished))
            results = self._submit(Job(JobKind.REPAIR, ids=unfinished, reason="finished after a crash"))
            failed = [r.port_id for r in results if not r.ok]
            if failed:
                res = self.agent.writer.submit(Job(JobKind.UNPLUG, ids=failed)).wait()
                for pid in res.unplugged:
                    ev.emit(EventType.UNPLUGGED, pid, "could not be finished after a crash; removed")
        self.resync("start-up reconcile")

    def resync(self, why: str, ids: list[str] | None = None) -> dict[str, list[str]]:
        """Check (all, or ``ids``), report drift, repair it with ``--repair auto``."""
        res = self.agent.svc.check(ids)
        if res.drift:
            self.agent.metrics.drift(len(res.drift))
            for pid, lines in res.drift.items():
                self.agent.events.emit(EventType.DRIFT, pid, "; ".join(lines))
            log.warning("%s: %d port(s) drifted", why, len(res.drift))
            if self.agent.config.repair == "auto":
                reason = f"{why}: drift put back"
                self._confirm(self._submit(Job(JobKind.REPAIR, ids=sorted(res.drift), reason=reason)), reason)
        return res.drift

    def _confirm(self, results: list, reason: str) -> None:
        """Drifted ports whose repair reported no changed step (a step that
        reconciles in place, e.g. a filter element put back on a registered
        port, has nothing to undo) are checked again: clean now is repaired."""
        quiet = [r.port_id for r in results if r.ok and not r.changed]
        if not quiet:
            return
        after = self.agent.svc.check(quiet)
        fixed = [pid for pid in quiet if pid not in after.drift]
        for pid in fixed:
            self.agent.events.emit(EventType.REPAIRED, pid, reason)
        self.agent.metrics.repaired(len(fixed))
        for pid, lines in after.drift.items():
            self.agent.events.emit(EventType.FAILED, pid, "repair left drift: " + "; ".join(lines))

    def _submit(self, job: Job) -> list:
        return self.agent.writer.submit(job).wait()

    # ------------------------------------------------------------ watching

    def start(self) -> None:
        from vifwire.agent.watch import LinkWatch

        try:
            self._watch = LinkWatch(self.agent.svc.netns)
        except OSError as exc:
            log.warning("no netlink notifications (%s): drift is found by the periodic resync only", exc)
        self._thread = threading.Thread(target=self._loop, name="vifwire-repair", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._watch is not None:
            self._watch.close()

    def _loop(self) -> None:
        interval = self.agent.config.resync_interval
        next_full = time.monotonic() + interval
        by_index: dict[int, str] = {}
        marked: dict[str, str] = {}  # port -> why
        later: dict[str, float] = {}  # port -> when to look (notified while we were changing it)
        ovs_seen: set[str] = set()  # OVS port names at the last look
        next_ovs = time.monotonic() + OVS_POLL
        while not self._stop.is_set():
            now = time.monotonic()
            for pid in [p for p, t in later.items() if t <= now]:
                marked.setdefault(pid, "deferred")
                del later[pid]
            wake = min([next_full, *later.values()])
            timeout = max(0.0, min(wake - now, SETTLE if marked else POLL))
            changes = self._watch.read(timeout) if self._watch is not None else []
            if self._watch is None:
                self._stop.wait(timeout)
            if changes:
                self._mark(changes, by_index, marked, later)
                continue  # let the burst finish
            try:
                if self._watch is not None and self._watch.overflowed:
                    self._watch.overflowed = False
                    marked.clear()
                    self.resync("netlink overflow resync")
                elif marked:
                    ports = None if "*" in marked else sorted(marked)
                    marked.clear()
                    self.resync("netlink notification", ports)
                if time.monotonic() >= next_ovs:
                    next_ovs = time.monotonic() + OVS_POLL
                    self._ovs_gone(ovs_seen, marked)
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + interval
                    self.resync("periodic resync")
            except Exception as exc:  # noqa: BLE001 - the watch outlives one failed check
                if not self._stop.is_set():
                    log.warning("drift check failed: %s", exc)

    def _ovs_gone(self, seen: set[str], marked: dict[str, str]) -> None:
        """Ports whose OVS port left OVSDB since the last look (``ovs-vsctl
        del-port`` behind our back): the replica the OVSDB monitor keeps is
        read, no request is sent unless updates are pending."""
        svc = self.agent.svc
        now = svc.ovs_port_names()
        if now is None:
            seen.clear()
            return
        recent = self.agent.writer.recently_changed(OWN_ECHO)
        for name in seen - now:
            port = svc.owner_of_device(name)
            if port is not None and port not in recent and "*" not in recent:
                self.agent.events.emit(EventType.DEVICE_GONE, port, f"OVS port {name} was removed")
                marked.setdefault(port, "ovs-gone")
        seen.clear()
        seen.update(now)

    def _mark(self, changes: list, by_index: dict[int, str], marked: dict[str, str],
              later: dict[str, float]) -> None:
        """Mark the ports whose devices changed or went.

        A change to a port a round is making or just made is most likely our
        own echo: a changed link is ignored (the periodic resync still sees
        real drift), a deleted device or route is looked at once the echo
        window has passed - a tap deleted right after its plug is repaired,
        but a plug does not cost a check.
        """
        svc = self.agent.svc
        recent = self.agent.writer.recently_changed(OWN_ECHO)
        for c in changes:
            name = c.name or by_index.get(c.ifindex)
            if c.kind == "link" and c.name:
                by_index[c.ifindex] = c.name
            elif c.kind == "link-gone":
                by_index.pop(c.ifindex, None)
            if name is None:
                if c.kind == "route-gone" and not recent:  # through a device not seen yet: look at everything
                    marked.setdefault("*", c.kind)
                continue
            port = svc.owner_of_device(name)
            if port is None:
                continue
            if port in recent or "*" in recent:
                if c.kind != "link":
                    later[port] = time.monotonic() + OWN_ECHO
                continue
            if c.kind == "link-gone":
                self.agent.events.emit(EventType.DEVICE_GONE, port, f"{name} was deleted")
            marked.setdefault(port, c.kind)
