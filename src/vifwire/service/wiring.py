"""WiringService: the one API under every front end.

One instance serves one host namespace and one store, and may live as long
as its process (an agent) or one command (the CLI). It is safe to share
between threads: calls that change the host hold the namespace's lock and,
across processes, the state lock (:mod:`vifwire.service.locks`), so two
callers never lose each other's work. Reads of records need neither.

Inputs are typed (bindings from :mod:`vifwire.model.loader`, facts, guest
options); results are the dataclasses of :mod:`vifwire.service.results`;
failures are :class:`vifwire.errors.VifwireError` subclasses carrying the one
line a user sees. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from vifwire.errors import UsageError
from vifwire.store.base import StoreError
from vifwire.service.locks import StateLock
from vifwire.service.results import CheckResult, GarbageItem, GcResult, PortResult, UnplugResult

if TYPE_CHECKING:  # imported where used: `vifwire list` needs none of them and starts faster
    from vifwire.errors import VifError
    from vifwire.model.binding import Binding
    from vifwire.planner.facts import HostFacts
    from vifwire.planner.plan import GuestConfig, Plan
    from vifwire.renderers.options import GuestOptions
    from vifwire.store.base import Attachment, Store

log = logging.getLogger("vifwire.service")

DEFAULT_STATE = "/var/lib/vifwire/state.db"
NETNS_RUN_DIR = "/var/run/netns"


def load(text: str, origin: str = "<input>") -> list[Binding]:
    """JSON text (one port or a list) -> validated bindings; raises InvalidInput."""
    from vifwire.model.loader import load_text

    return load_text(text, origin=origin)


def plan_all(bindings: Iterable[Binding], facts: HostFacts | None = None,
             guest: GuestOptions | None = None) -> list[Plan]:
    """Plan every port (pure); raises VifError for the first that cannot be planned."""
    from vifwire.planner.generic import plan

    return [plan(b, facts, guest) for b in bindings]


def render(bindings: Iterable[Binding], facts: HostFacts | None = None,
           guest: GuestOptions | None = None) -> list[GuestConfig]:
    """The guest configuration of every port (libvirt XML or LXD devices); touches nothing."""
    return [p.guest for p in plan_all(bindings, facts, guest) if p.guest is not None]


class WiringService:
    """Plug, unplug, check, gc and list the ports of one host namespace."""

    def __init__(self, *, netns: str | None = None, state: str | None = None, ovsdb: str | None = None,
                 ovs_timeout: float = 10.0, store: Store | None = None, index_claims: bool = False):
        """``index_claims``: keep the records' MACs, addresses and devices in
        memory for :meth:`conflicts` (a long-lived caller; a one-shot command
        asks the store once instead)."""
        self.netns = netns
        self.state_path = state or (store.path if store is not None else DEFAULT_STATE)
        self.ovsdb = ovsdb
        self.ovs_timeout = ovs_timeout
        self._store = store
        self._own_store = store is None
        self._host = None
        self._state_lock = StateLock(self.state_path)
        self._open_guard = threading.Lock()
        self._index_claims = index_claims
        self._claims = None

    # ----------------------------------------------------------- resources

    @property
    def store(self) -> Store:
        with self._open_guard:
            if self._store is None:
                from vifwire.store.sqlite import SqliteStore

                self._store = SqliteStore(self.state_path)
            return self._store

    @property
    def host(self):
        """The :class:`~vifwire.executors.base.HostContext` (opened on first use)."""
        with self._open_guard:
            if self._host is None:
                if self.netns and not os.path.exists(_netns_file(self.netns)):
                    raise UsageError(f"netns: network namespace {self.netns!r} does not exist")
                from vifwire.executors.base import HostContext

                self._host = HostContext(netns=self.netns, ovsdb=self.ovsdb, ovs_timeout=self.ovs_timeout)
            return self._host

    def close(self) -> None:
        with self._open_guard:
            if self._host is not None:
                self._host.close()
                self._host = None
            if self._store is not None and self._own_store:
                self._store.close()
                self._store = None
            self._state_lock.close()

    def __enter__(self) -> "WiringService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _changing(self, what: str, exclusive: bool = True) -> Iterator[None]:
        """Hold the namespace lock, then the state lock (always in that order)."""
        host = self.host
        t0 = time.perf_counter()
        with host.lock, self._state_lock.hold(exclusive=exclusive):
            waited = time.perf_counter() - t0
            if waited > 0.05:
                log.info("%s waited %.2f s for other callers", what, waited)
            yield

    def _wiring(self, fail_at: int | None = None, progress: Callable[[str], None] | None = None):
        from vifwire.executors.engine import Wiring

        return Wiring(self.host, self.store, fail_at=fail_at, progress=progress)

    # ---------------------------------------------------------- use cases

    def plug(self, bindings: Sequence[Binding], facts: HostFacts | None = None,
             guest: GuestOptions | None = None, *, instance: str | None = None, wait: float | None = None,
             progress: Callable[[str], None] | None = None, fail_at: int | None = None) -> list[PortResult]:
        """Wire every port, each all-or-nothing, and record it.

        ``wait``: also wait up to that many seconds for OVS to report each OVS
        port up with an ofport (raises HostError naming the ports that are not).
        ``fail_at``: fault injection for tests (see the engine).
        """
        if instance:
            bindings = [b.replace(instance_id=instance) for b in bindings]
        items = list(zip(bindings, plan_all(bindings, facts, guest)))
        return self.plug_plans(items, wait=wait, progress=progress, fail_at=fail_at)

    def plug_plans(self, items: Sequence[tuple[Binding, Plan]], *, wait: float | None = None,
                   progress: Callable[[str], None] | None = None, fail_at: int | None = None,
                   check_conflicts: bool = True) -> list[PortResult]:
        """:meth:`plug` for ports already planned (each with its own facts, e.g. its own guest namespace).

        ``check_conflicts=False``: the caller ran :meth:`conflicts` itself (the
        agent, once for a whole group commit)."""
        items = list(items)
        t0 = time.perf_counter()
        with self._changing("plug"):
            self.store.check_writable()  # a locked or broken database fails here, before the host is touched
            if check_conflicts:
                errors = self.conflicts([items])[0]
                if errors:
                    from vifwire.errors import InvalidInput

                    raise InvalidInput(errors)
            try:
                raw = self._wiring(fail_at, progress).plug(items)
            finally:
                self._wrote([b.port_id for b, _ in items])
            results = [PortResult(r.port_id, r.ok, r.plan, r.error, r.changed) for r in raw]
            if wait is not None:
                self.wait_plugged(results, wait)
        log.info("plug: %d of %d port(s) ok in %.1f ms", sum(r.ok for r in results), len(results),
                 (time.perf_counter() - t0) * 1e3)
        return results

    def conflicts(self, groups: Sequence[Sequence[tuple[Binding, Plan]]]) -> list[list[VifError]]:
        """For each group of ports (one request), what clashes with another
        recorded port of this namespace: the same MAC, device, or address on
        the same network (or both routed). Records are read once for all groups.

        Two ports with one address would each get a host route to it and the
        second would take the first's traffic; one MAC twice breaks the
        anti-spoofing filter's promise. Re-plugging the same port id is the
        idempotent case, not a conflict. The loader applies the same rules
        within one request (vifwire.model.duplicates).
        """
        from vifwire.errors import VifError

        out: list[list[VifError]] = []
        for items in groups:
            mine = {b.port_id for b, _ in items}
            macs: dict[str, str] = {}
            ips: dict[str, list[tuple[str, str | None, str]]] = {}  # ip -> (port, network, vif_type)
            devices: dict[str, str] = {}
            keys = ({b.mac.lower() for b, _ in items}, {ip for b, _ in items for ip in (*b.ipv4, *b.ipv6)},
                    {d for _, p in items for d in p.devices()}, mine)
            claims = self._claim_index().claims(*keys) if self._index_claims else \
                self.store.claims(self.netns, *keys)
            for c in claims:
                if c.kind == "mac":
                    macs[c.value.lower()] = c.port_id
                elif c.kind == "ip":
                    ips.setdefault(c.value, []).append((c.port_id, c.network_id, c.vif_type))
                else:
                    devices[c.value] = c.port_id
            errors: list[VifError] = []
            for b, p in items:
                if b.mac.lower() in macs:
                    errors.append(VifError(b.port_id, "mac_address",
                                           f"{b.mac} is also the MAC of port {macs[b.mac.lower()]} (recorded)"))
                for ip in (*b.ipv4, *b.ipv6):
                    for other, net, vif_type in ips.get(ip, ()):
                        # one L2 network, or one routing table (routed taps): the same
                        # address twice is a clash; tenants' networks may overlap
                        if net is None or b.network_id is None or net == b.network_id or \
                                (vif_type == "tap" and b.vif_type == "tap"):
                            errors.append(VifError(b.port_id, "fixed_ips",
                                                   f"{ip} is also an address of port {other} (recorded)"))
                            break
                for dev in p.devices():
                    if dev in devices:
                        errors.append(VifError(b.port_id, "devname",
                                               f"{dev} is a device of port {devices[dev]} (recorded)"))
            out.append(errors)
        return out

    def _claim_index(self):
        from vifwire.service.claims import ClaimIndex

        store = self.store  # takes the guard itself
        with self._open_guard:
            if self._claims is None:
                self._claims = ClaimIndex(store, self.netns)
            return self._claims

    def owner_of_device(self, name: str) -> str | None:
        """The recorded port of this namespace that owns device ``name``, if any."""
        if self._index_claims:
            return self._claim_index().owner_of_device(name)
        claims = self.store.claims(self.netns, (), (), (name,), ())
        return claims[0].port_id if claims else None

    def _wrote(self, port_ids: Iterable[str] | None) -> None:
        """Records of these ports (``None``: any) were written: the claim index re-reads them."""
        if self._claims is not None:
            self._claims.touch(port_ids)

    def wait_plugged(self, results: list[PortResult], timeout: float) -> None:
        """Wait until OVS reports every OVS port of ``results`` up with an ofport
        (raises HostError naming the ones that are not)."""
        from vifwire.planner.plan import StepKind

        names = [s.args["name"] for r in results if r.ok for s in r.plan.steps if s.op == StepKind.OVS_PORT]
        if names:
            from vifwire.executors.ovs import wait_plugged

            wait_plugged(self.host, names, timeout)

    def unplug(self, ids: Iterable[str] = (), *, bindings: Iterable[Binding] = (), all_ports: bool = False,
               facts: HostFacts | None = None) -> UnplugResult:
        """Remove ports' wiring in bulk; what is not there is success.

        By id (from the record), by binding (the record if there is one, else
        the plan: devices are then found by name or the guest MAC), or every
        port recorded for this namespace. When the state database cannot be
        read (corrupt), ports given by id (or all) are unplugged from the
        host's ownership marks instead.
        """
        ids, bindings = list(ids), list(bindings)
        if not ids and not bindings and not all_ports:
            raise UsageError("unplug: give port ids, bindings or all")
        t0 = time.perf_counter()
        with self._changing("unplug"):
            try:
                return self._unplug_recorded(ids, bindings, all_ports, facts, t0)
            except StoreError as exc:
                from vifwire.service.rebuild import is_broken

                if bindings or not is_broken(exc):
                    raise
                return self._unplug_by_marks(ids, all_ports, exc)
            finally:
                self._wrote(None if all_ports else [*ids, *(b.port_id for b in bindings)])

    def _unplug_recorded(self, ids: list[str], bindings: list[Binding], all_ports: bool,
                         facts: HostFacts | None, t0: float) -> UnplugResult:
        from vifwire.planner.generic import plan

        store = self.store
        targets: list[Attachment | Plan] = []
        missing: list[str] = []
        if all_ports:
            targets += store.all(netns=self.netns)
        for pid in ids:
            a = store.get(pid)
            if a is None:
                missing.append(pid)
            else:
                targets.append(a)
        problems: list[str] = []
        unrecorded = [b for b in bindings if store.get(b.port_id) is None]
        others = self._devices_of_others({b.port_id for b in unrecorded}) if unrecorded else {}
        for b in bindings:
            a = store.get(b.port_id)
            if a is not None:
                targets.append(a)
                continue
            p = plan(b, facts, render=False)
            taken = [f"{d} is a device of port {others[d]} (recorded)" for d in p.devices() if d in others]
            if taken:  # a guessed plan must not take another port's device or filters with it
                problems.append(f"port {b.port_id}: devname: {'; '.join(taken)}; not touched")
                continue
            targets.append(p)
        problems += self._wiring().unplug(targets) if targets else []
        log.info("unplug: %d port(s) in %.1f ms, %d problem(s)", len(targets), (time.perf_counter() - t0) * 1e3,
                 len(problems))
        return UnplugResult([t.port_id for t in targets], missing, problems)

    def _unplug_by_marks(self, ids: list[str], all_ports: bool, exc: StoreError) -> UnplugResult:
        """The state database cannot be read: unplug what the host's ownership
        marks say the ports own (docs/operations.md, "Recovery"); nothing is recorded."""
        from vifwire.executors.engine import Wiring
        from vifwire.service import rebuild
        from vifwire.store.base import NullStore

        ports, _ = rebuild.survey(self.host)
        chosen = sorted(ports) if all_ports else [pid for pid in ids if pid in ports]
        plans = [rebuild.plan_of(ports[pid]) for pid in chosen if ports[pid].steps]
        log.warning("%s; unplugging %d port(s) from the host's marks", exc, len(plans))
        problems = Wiring(self.host, NullStore()).unplug(plans)
        return UnplugResult([p.port_id for p in plans], [pid for pid in ids if pid not in ports], problems)

    def repair(self, ids: Iterable[str] | None = None) -> list[PortResult]:
        """Apply recorded ports' own plans again (every port of this namespace,
        or ``ids``): what drifted is put back, what is right is not touched.
        A record left ``plugging`` by a crash is finished this way."""
        wanted = set(ids) if ids is not None else None
        t0 = time.perf_counter()
        with self._changing("repair"):
            atts = [a for a in self.store.all(netns=self.netns) if wanted is None or a.port_id in wanted]
            try:
                raw = self._wiring().reapply(atts) if atts else []
            finally:
                self._wrote(a.port_id for a in atts)
        log.info("repair: %d port(s) in %.1f ms", len(raw), (time.perf_counter() - t0) * 1e3)
        return [PortResult(r.port_id, r.ok, r.plan, r.error, r.changed) for r in raw]

    def rebuild(self):
        """Recreate the records of this namespace from the host's ownership marks
        (:mod:`vifwire.service.rebuild`); a broken database is moved aside first."""
        from vifwire.service import rebuild

        with self._open_guard:  # the file under our store may be moved aside
            if self._store is not None and self._own_store:
                self._store.close()
                self._store = None
            self._claims = None
        return rebuild.rebuild(self.host, self.state_path)

    def _devices_of_others(self, ports: set[str]) -> dict[str, str]:
        """device -> port id, for the recorded ports of this namespace not in ``ports``."""
        return {dev: a.port_id for a in self.store.all(netns=self.netns) if a.port_id not in ports
                for dev in a.devices}

    def check(self, ids: Iterable[str] | None = None) -> CheckResult:
        """Compare the host with the records (one read of each kind of host state per call)."""
        wanted = set(ids) if ids else None
        with self._changing("check", exclusive=False):
            if wanted is not None and len(wanted) <= 64:  # a few ports: their records, not every record
                found = (self.store.get(pid) for pid in sorted(wanted))
                atts = [a for a in found if a is not None and a.netns == self.netns]
            else:
                atts = [a for a in self.store.all(netns=self.netns) if wanted is None or a.port_id in wanted]
            drift = self._wiring().check(atts)
        return CheckResult(len(drift), {k: v for k, v in drift.items() if v})

    def drop_counters(self) -> dict[str, dict[str, int]]:
        """Packets the anti-spoofing filters dropped, ``{ifname: {reason: packets}}``
        (read from the nftables counters now; no lock: counters only grow)."""
        from vifwire.executors.firewall import drop_counters

        return drop_counters(self.host)

    def ovs_port_names(self) -> set[str] | None:
        """Port names in OVSDB now, if an OVSDB session is already open (else None)."""
        from vifwire.executors.ovs import port_names_now

        return port_names_now(self.host)

    def list(self) -> list[Attachment]:
        """Every recorded attachment (all namespaces); needs no host access."""
        return self.store.all()

    def gc(self, force: bool = False) -> GcResult:
        """What carries vifwire's marks but no record owns; ``force`` removes it.

        A backend that cannot be read (OVSDB down) is a problem in the
        result, not an empty answer; what the other backends hold is still
        reported (and removed with ``force``).
        """
        with self._changing("gc", exclusive=force):
            w = self._wiring()
            raw, problems = w.survey(self.store.all(netns=self.netns))
            if force:
                w.collect(raw)
        items = [GarbageItem(kind=g["kind"], name=g["name"], module=g["module"],
                             extra={k: v for k, v in g.items() if k not in ("kind", "name", "module")})
                 for g in raw]
        return GcResult(items, force, problems)


def _netns_file(name: str) -> str:
    return name if "/" in name else os.path.join(NETNS_RUN_DIR, name)
