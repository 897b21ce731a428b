"""Fleet mode: the host's desired ports live in etcd; the agent converges to them (docs/fleet.md).

The way networking-calico and felix share the work: the network service
(or ``vifwire fleet apply``) writes each host's desired ports under
``/vifwire/v1/hosts/<host>/ports/``; this host's agent reads them, plugs and
unplugs through its writer (group commit, per-port order), and writes what
happened to ``/vifwire/v1/status/<host>/``. A lease-bound key under
``/vifwire/v1/agents/`` says the agent is alive and keeps a second agent for
the same host name from starting.

Convergence is a comparison of two sets, never a replay: each record made
from etcd carries the digest of the desired document it was plugged from
(``vif["fleet"]``), so after a restart, an etcd outage or a compacted watch
the agent loads the whole desired set again and touches only what differs:
ports whose digest matches are left alone (same devices, same ifindex);
changed ones are unplugged and plugged again; records made from etcd whose
key is gone are unplugged; records not made from etcd (plugged through the
API or the CLI) are never touched. When etcd cannot be read the host is
kept as it is: nothing is torn down because the agent cannot see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from vifwire.agent.config import FleetConfig
from vifwire.agent.writer import Job, JobKind

if TYPE_CHECKING:
    from vifwire.agent.config import AgentHandle
    from vifwire.fleetkit.etcd import Etcd, Event

log = logging.getLogger("vifwire.agent.fleet")

#: Seconds a liveness lease lives without a refresh (docs/fleet.md, "Keys").
LEASE_TTL = 15
#: Backoff between attempts to reach etcd: doubles from the first to the last.
BACKOFF = (0.5, 5.0)
#: Status writes go in transactions of at most this many keys.
STATUS_BATCH = 100


class AnotherAgent(Exception):
    """An agent for this host name is alive (its lease holds the key)."""


def digest(value: bytes) -> str:
    """What a record remembers of the desired document it was plugged from."""
    return hashlib.sha256(value).hexdigest()[:32]


class FleetSync:
    """Desired state in etcd -> this host, and status back (one thread)."""

    def __init__(self, agent: AgentHandle, config: FleetConfig):
        self.agent = agent
        self.config = config
        self.connected = False
        self.revision = 0  # the etcd revision applied so far
        self._etcd: Etcd | None = None
        self._lease = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._watch = None  # the running watch, cancelled by stop() and by a failed lease refresh

    # ------------------------------------------------------------ lifecycle

    def claim(self) -> None:
        """Take this host's liveness key, or raise :class:`AnotherAgent`.

        Called before the agent listens; with etcd unreachable then, the
        loop claims the key once etcd answers (and stops following etcd,
        loudly, if another agent holds it by then)."""
        from vifwire.fleetkit import keys

        etcd = self._connect()
        lease = etcd.grant_lease(LEASE_TTL)
        info = {"host": self.config.host, "version": self.agent.version, "started": time.time()}
        if not etcd.create_if_absent(keys.agent_key(self.config.host), json.dumps(info).encode(), lease):
            lease.revoke()
            raise AnotherAgent(f"fleet: an agent for host {self.config.host} is alive "
                               f"({keys.agent_key(self.config.host)} exists); not starting a second one")
        self._lease = lease

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vifwire-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel_watch()
        if self._thread is not None:
            self._thread.join(10)
        if self._lease is not None:
            try:
                self._lease.revoke()  # the next agent for this host may start at once
            except Exception:  # noqa: BLE001 - it expires by itself
                pass

    # ------------------------------------------------------------ the loop

    def _connect(self) -> Etcd:
        from vifwire.fleetkit.etcd import Etcd

        if self._etcd is None:
            c = self.config
            self._etcd = Etcd(list(c.urls), cacert=c.cacert, cert=c.cert, key=c.key)
        return self._etcd

    def _run(self) -> None:
        from vifwire.fleetkit.etcd import Compacted, EtcdError

        wait = BACKOFF[0]
        keeper = threading.Thread(target=self._keep_alive, name="vifwire-fleet-lease", daemon=True)
        keeper.start()
        while not self._stop.is_set():
            try:
                if self._lease is None:
                    try:
                        self.claim()
                    except AnotherAgent as exc:
                        log.error("%s", exc)
                        self._stop.wait(LEASE_TTL)
                        continue
                self._resync()
                wait = BACKOFF[0]
                self._follow()
            except Compacted as exc:
                log.warning("fleet: %s; loading the desired ports again", exc)
            except EtcdError as exc:
                if self.connected:
                    log.warning("fleet: etcd lost (%s); the host is kept as it is", exc)
                self._set_connected(False)
                self._stop.wait(wait)
                wait = min(wait * 2, BACKOFF[1])
            except Exception:  # noqa: BLE001 - the loop outlives one bad round
                log.exception("fleet: round failed")
                self._stop.wait(wait)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.agent.metrics.etcd_connected(up)

    def _cancel_watch(self) -> None:
        w = self._watch
        if w is not None:
            try:
                w.cancel()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _keep_alive(self) -> None:
        """Refresh the liveness lease; a refresh that fails also ends the
        watch, which would not notice a hung etcd by itself (the loop then
        reconnects, and claims the key again if the lease expired)."""
        from vifwire.fleetkit.etcd import LeaseExpired

        while not self._stop.wait(LEASE_TTL / 3):
            if self._lease is None:
                continue
            try:
                self._lease.refresh()
            except LeaseExpired:
                log.warning("fleet: liveness lease expired during an outage; claiming the key again")
                self._lease = None
                self._cancel_watch()
            except Exception as exc:  # noqa: BLE001 - etcd down: the loop reports it
                log.debug("fleet: lease refresh failed: %s", exc)
                self._cancel_watch()

    def _resync(self) -> None:
        """Load every desired port and converge to them (start, reconnect, compaction)."""
        from vifwire.fleetkit import keys

        etcd = self._connect()
        items, rev = etcd.get_prefix(keys.desired_prefix(self.config.host))
        self._set_connected(True)
        prefix = keys.desired_prefix(self.config.host)
        desired = {pid: (kv.value, kv.mod_revision) for kv in items
                   if (pid := self._port_id(kv.key, prefix)) is not None}
        self._converge(desired, full=True)
        self.revision = rev
        log.info("fleet: %d desired port(s) at revision %d", len(desired), rev)

    def _follow(self) -> None:
        """Apply the changes after :attr:`revision`.

        A reader thread takes etcd's watch responses as they come; every
        response that arrived while a round ran is merged into the next
        round. One ``fleet apply`` of 1000 ports reaches the watch as 8
        responses (etcd takes at most 128 operations per transaction), and
        each round has a fixed cost: merged, they are one or two rounds
        instead of eight.
        """
        import queue

        from vifwire.fleetkit import keys

        prefix = keys.desired_prefix(self.config.host)
        watch = self._watch = self._connect().watch_prefix(prefix, self.revision + 1)
        got: queue.SimpleQueue = queue.SimpleQueue()
        end = object()

        def read() -> None:
            try:
                for events in watch:
                    got.put(events)
            except BaseException as exc:  # noqa: BLE001 - handed to the converging loop
                got.put(exc)
            got.put(end)

        reader = threading.Thread(target=read, name="vifwire-fleet-watch", daemon=True)
        reader.start()
        try:
            while not self._stop.is_set():
                batches = [got.get()]
                while not got.empty():
                    batches.append(got.get())
                changes: dict[str, tuple[bytes, int] | None] = {}
                for item in batches:
                    if item is end:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    for ev in item:
                        self.revision = max(self.revision, ev.mod_revision)
                        pid = self._port_id(ev.key, prefix)
                        if pid is not None:
                            changes[pid] = (ev.value or b"", ev.mod_revision) if ev.kind == "put" else None
                if changes:
                    self._converge(changes, full=False)
        finally:
            self._watch = None
            watch.cancel()

    @staticmethod
    def _port_id(key: str, prefix: str) -> str | None:
        """The port id of a desired key; None (and a warning) for a stray key, which must not stall the host."""
        from vifwire.fleetkit import keys

        try:
            return keys.port_id_of(key, prefix)
        except ValueError as exc:
            log.warning("fleet: ignoring key %s: %s", key, exc)
            return None

    # ------------------------------------------------------------ converging

    def _converge(self, desired: dict[str, tuple[bytes, int] | None], full: bool) -> None:
        """Make the host match ``desired`` (port id -> (document, revision), None = deleted).

        ``full``: ``desired`` is the whole set, so fleet records missing from it go too.
        """
        records = {a.port_id: a for a in self.agent.svc.store.all(netns=self.agent.svc.netns)}
        owned = {pid: (a.binding.get("vif") or {}).get("fleet") or {} for pid, a in records.items()
                 if (a.binding.get("vif") or {}).get("fleet", {}).get("host") == self.config.host}
        to_plug: list[tuple[str, bytes, int]] = []
        to_unplug: list[str] = []
        unchanged: list[str] = []
        for pid, entry in desired.items():
            if entry is None:
                if pid in owned:
                    to_unplug.append(pid)
                continue
            value, rev = entry
            mark = owned.get(pid)
            if mark and mark.get("digest") == digest(value) and records[pid].status == "plugged":
                unchanged.append(pid)
                continue
            if mark or pid in records:
                to_unplug.append(pid)  # changed: away, then as wanted (only changed ports get new devices)
            to_plug.append((pid, value, rev))
        if full:
            to_unplug += [pid for pid in owned if pid not in desired]
        statuses: dict[str, dict[str, Any] | None] = {}
        if to_unplug:
            res = self.agent.writer.submit(Job(JobKind.UNPLUG, ids=to_unplug)).wait()
            for pid in to_unplug:
                statuses[pid] = None if desired.get(pid) is None else statuses.get(pid)
            if res.problems:
                log.warning("fleet: unplug problems: %s", "; ".join(res.problems))
        if to_plug:
            statuses.update(self._plug(to_plug))
        for pid in unchanged:  # the same document written again has a new revision: report it current
            statuses.setdefault(pid, self._status_of_record(records[pid], desired[pid][1]))
        self._write_status(statuses)
        if to_plug or to_unplug:
            log.info("fleet: %d plugged, %d unplugged, %d unchanged", len(to_plug), len(to_unplug), len(unchanged))

    def _plug(self, items: list[tuple[str, bytes, int]]) -> dict[str, dict[str, Any]]:
        from vifwire.agent import requests as rq
        from vifwire.errors import VifwireError
        from vifwire.hostfacts.vdpa import with_vdpa_devices
        from vifwire.model.loader import load_documents
        from vifwire.service.wiring import plan_all

        cfg = self.agent.config
        out: dict[str, dict[str, Any]] = {}
        planned = []
        for pid, value, rev in items:
            try:
                pr = rq.plug_request(json.loads(value), cfg.facts, cfg.guest)
                docs = pr.ports if isinstance(pr.ports, list) else [pr.ports]
                if len(docs) != 1:
                    raise rq.problem("ports", "a desired key holds exactly one port")
                (binding,) = load_documents(docs)
                if binding.port_id != pid:
                    raise rq.problem("id", f"{binding.port_id!r} is not the key's port id {pid!r}")
                # the record remembers what it was plugged from (see the module's docstring)
                mark = {"host": self.config.host, "digest": digest(value), "revision": rev}
                binding = binding.replace(vif={**binding.vif, "fleet": mark})
                guest = with_vdpa_devices(pr.guest, [binding])  # the host's vhost-vdpa devices, from /sys
                planned.append((binding, plan_all([binding], pr.facts, guest)[0], rev))
            except (VifwireError, ValueError) as exc:
                out[pid] = self._status("failed", rev, error=" ".join(str(exc).split()))
        if planned:
            job = Job(JobKind.PLUG, items=[(b, p) for b, p, _ in planned])
            try:
                results = self.agent.writer.submit(job).wait()
            except VifwireError as exc:
                for b, _, rev in planned:
                    out[b.port_id] = self._status("failed", rev, error=" ".join(str(exc).split()))
                return out
            for (b, _, rev), r in zip(planned, results):
                if r.ok:
                    guest = r.guest.to_json() if r.guest is not None else None
                    out[b.port_id] = self._status("plugged", rev, strategy=r.strategy, devices=r.devices,
                                                  guest=guest)
                else:
                    out[b.port_id] = self._status("failed", rev, error=r.error)
        return out

    def _status_of_record(self, rec, rev: int) -> dict[str, Any]:
        plan = rec.plan
        return self._status("plugged", rev, strategy=rec.strategy, devices=list(rec.devices),
                            guest=plan.get("guest"))

    @staticmethod
    def _status(state: str, rev: int, **fields: Any) -> dict[str, Any]:
        base = {"state": state, "error": None, "strategy": None, "devices": [], "guest": None}
        base.update(fields)
        base.update(desired_revision=rev, at=time.time())
        return base

    def _write_status(self, statuses: dict[str, dict[str, Any] | None]) -> None:
        """Status back to etcd, in batched transactions (deleted ports: their status goes too)."""
        from vifwire.fleetkit import keys

        if not statuses:
            return
        host = self.config.host
        puts = {keys.status_key(host, pid): json.dumps(st).encode() for pid, st in statuses.items() if st}
        deletes = [keys.status_key(host, pid) for pid, st in statuses.items() if not st]
        etcd = self._connect()
        keys_ = list(puts)
        for i in range(0, max(len(keys_), len(deletes)), STATUS_BATCH):
            etcd.put_many({k: puts[k] for k in keys_[i:i + STATUS_BATCH]}, deletes[i:i + STATUS_BATCH])
