"""Apply plans transactionally; unplug and check from records.

The engine is the only place that sequences steps. It follows the
desired-state pattern of nmstate: apply every step of a port, and if any step
fails, run the undos of the steps already applied, newest first, so the host is
exactly as it was. The store is updated around it so that what is recorded is
never more than what exists: a port is ``plugged`` only after its last step
succeeded.

Batching keeps a run of many ports at the kernel floor without changing any
port's order: a ``batched`` handler (anti-spoofing: one nftables transaction)
gets the step of every port that has reached it in one ``apply_many``, and
the ports then go on (see :meth:`Wiring._apply_steps`); a ``deferrable``
handler (OVS ports, always last) gets the trailing steps after every port's
kernel steps; ``verify_many`` and ``remove_bulk`` let check and unplug read or
change the host once per run.

The engine is not thread-safe on its own; :class:`vifwire.service.WiringService`
serialises calls per namespace and across processes.

Fault injection for tests: ``fail_at=k`` makes step *k* of each port fail
before it runs (``k == len(steps)`` fails after the last step, before the
record is committed).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from vifwire.errors import HostError, VifwireError
from vifwire.executors.base import HostContext
from vifwire.executors.registry import GC_MODULES, gc_module, handler
from vifwire.model.binding import Binding
from vifwire.planner.plan import LINK_KINDS, Plan, Step, StepKind
from vifwire.store.base import Attachment, Store

log = logging.getLogger("vifwire.executors.engine")

#: Unplug order for bulk removal: the container's NIC first (LXD gives the
#: tin end back to the host, docs/lxd.md), policy, then ports, then links, then bridges.
REMOVE_ORDER = (StepKind.LXD_NIC, StepKind.GUEST_IP, StepKind.ANTISPOOF, StepKind.ADDRESSES, StepKind.PROXY_NDP, StepKind.ROUTES, StepKind.SYSCTLS, StepKind.OVS_PORT,
                StepKind.MASTER, StepKind.TAP, StepKind.MACVTAP, StepKind.VETH, StepKind.VLAN, StepKind.BRIDGE,
                StepKind.OVS_BRIDGE, StepKind.REQUIRE_LINK)
assert set(REMOVE_ORDER) == set(StepKind), "every step kind has an unplug position"


@dataclass
class _Run:
    """One port's plug in progress."""

    plan: Plan
    undos: list[tuple[Step, Callable[[], None]]] = field(default_factory=list)
    deferred: list[tuple[int, Step]] = field(default_factory=list)
    first: int = 0  # the next step to apply
    error: BaseException | None = None


@dataclass
class PlugResult:
    port_id: str
    ok: bool
    plan: Plan
    error: str | None = None
    changed: int = 0  # steps that changed something


@dataclass
class Wiring:
    """One run against one host: a host handle plus the store."""

    ctx: HostContext
    store: Store
    fail_at: int | None = None
    progress: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ plug

    def plug(self, items: list[tuple[Binding, Plan]]) -> list[PlugResult]:
        """Plug every port; each port is its own transaction."""
        return self.plug_rows([(self.row(b, p), p) for b, p in items])

    def reapply(self, attachments: Iterable[Attachment]) -> list[PlugResult]:
        """Apply recorded ports' own plans again: what is missing or wrong is
        put back, what is right is left alone (same ifindex). The agent's
        self-repair; a failure rolls back only what this call changed."""
        return self.plug_rows([(attachment_row(a), Plan.from_json(a.plan)) for a in attachments])

    def plug_rows(self, items: list[tuple[dict[str, Any], Plan]]) -> list[PlugResult]:
        """:meth:`plug` from store rows (binding as JSON) and their plans."""
        t0 = time.perf_counter()
        before = {p.port_id: self.store.get(p.port_id) for _, p in items}
        # Replug with a different plan: take the old wiring down first.
        stale = [a for (_, p), a in zip(items, before.values())
                 if a is not None and a.plan.get("steps") != [s.to_json() for s in p.steps]]
        if stale:
            self.unplug(stale)
            for a in stale:
                before[a.port_id] = None
        self.store.put_many((row for row, _ in items), status="plugging")
        t1 = time.perf_counter()
        runs = [_Run(p) for _, p in items]
        self._apply_steps(runs)
        t3 = time.perf_counter()
        self._phase2(runs)
        t4 = time.perf_counter()
        results: list[PlugResult] = []
        for run in runs:
            if run.error is None and self.fail_at is not None and self.fail_at >= len(run.plan.steps):
                run.error = HostError(run.plan.port_id, "commit", f"injected failure at step {self.fail_at}")
            if run.error is not None:
                rollback_errors = self._rollback(run.undos)
                exc = run.error
                msg = exc.line() if isinstance(exc, HostError) else _one_line(run.plan.port_id, exc)
                if rollback_errors:
                    msg += "; rollback incomplete: " + "; ".join(rollback_errors)
                log.info("port %s failed, rolled back: %s", run.plan.port_id, msg)
                results.append(PlugResult(run.plan.port_id, False, run.plan, msg))
            else:
                results.append(PlugResult(run.plan.port_id, True, run.plan, changed=len(run.undos)))
        ok = [r.port_id for r in results if r.ok]
        failed = [r.port_id for r in results if not r.ok]
        if ok:
            try:
                self.store.set_status(ok, "plugged")
            except Exception as exc:  # noqa: BLE001 - what cannot be recorded must not stay wired
                self._unwire_unrecorded(runs, before, exc)
        if failed:
            restore = [before[pid] for pid in failed if before.get(pid) is not None]
            self.store.delete(pid for pid in failed if before.get(pid) is None)
            for a in restore:
                self.store.put_many([attachment_row(a)], status=a.status)
        log.debug("plug of %d port(s): records %.1f ms, steps %.1f ms, deferred batch %.1f ms, commit %.1f ms",
                  len(items), (t1 - t0) * 1e3, (t3 - t1) * 1e3, (t4 - t3) * 1e3, (time.perf_counter() - t4) * 1e3)
        return results

    def _apply_steps(self, runs: list[_Run]) -> None:
        """Every port's steps in its own order, in waves.

        Each port runs its steps one by one until it reaches a ``batched``
        step (anti-spoofing) or its end; then the ports waiting at a batched
        step get it in one ``apply_many`` per kind, and the next wave goes on.
        A port's order is never changed; only ports are interleaved, and
        ports are independent transactions. Deferrable steps are collected
        for :meth:`_phase2`.
        """
        waiting = list(runs)
        while waiting:
            at_batch: dict[StepKind, list[tuple[_Run, int, Step]]] = {}
            for run in waiting:
                k = self._advance(run)
                if k is not None:
                    step = run.plan.steps[k]
                    at_batch.setdefault(step.op, []).append((run, k, step))
                    run.first = k + 1
                elif self.progress:
                    self.progress(run.plan.port_id)
            self._batch(at_batch)
            waiting = [run for entries in at_batch.values() for run, _, _ in entries]

    def _advance(self, run: _Run) -> int | None:
        """Apply a port's steps from ``run.first`` up to its next batched step (returned) or its end."""
        if run.error is not None:
            return None
        plan = run.plan
        self.ctx.port_id = plan.port_id
        try:
            for k in range(run.first, len(plan.steps)):
                step = plan.steps[k]
                h = handler(step.op)
                if getattr(h, "batched", False):
                    return k
                if getattr(h, "deferrable", False):
                    run.deferred.append((k, step))
                    continue
                if self.fail_at == k:
                    raise HostError(plan.port_id, step.op, f"injected failure at step {k}")
                undo = h.apply(step, self.ctx)
                if undo is not None:
                    run.undos.append((step, undo))
        except Exception as exc:  # noqa: BLE001 - any failure must roll back
            run.error = exc
        run.first = len(plan.steps)
        return None

    def _phase2(self, runs: list[_Run]) -> None:
        """Deferrable steps (OVS ports) of all ports, one batch per kind.

        They come last in every plan that has them and nothing after them
        depends on them, so deferring keeps each port's order intact.
        """
        by_op: dict[StepKind, list[tuple[_Run, int, Step]]] = {}
        for run in runs:
            if run.error is None:
                for k, step in run.deferred:
                    by_op.setdefault(step.op, []).append((run, k, step))
        self._batch(by_op)

    def _batch(self, by_op: dict[StepKind, list[tuple[_Run, int, Step]]]) -> None:
        for op, entries in by_op.items():
            todo = []
            for run, k, step in entries:
                if self.fail_at == k:
                    run.error = HostError(run.plan.port_id, step.op, f"injected failure at step {k}")
                elif run.error is None:
                    todo.append((run, step))
            if not todo:
                continue
            self.ctx.port_id = todo[0][0].plan.port_id if len(todo) == 1 else None
            t0 = time.perf_counter()
            try:
                outcomes = handler(op).apply_many([s for _, s in todo], self.ctx)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed
                outcomes = [exc] * len(todo)
            log.debug("%s: batch of %d step(s) in %.1f ms", op, len(todo), (time.perf_counter() - t0) * 1e3)
            for (run, step), out in zip(todo, outcomes):
                if isinstance(out, HostError) and out.port == "<unknown>":
                    out = HostError(run.plan.port_id, out.step, out.problem)  # a batch knows no single port
                if isinstance(out, Exception):
                    run.error = out
                elif out is not None:
                    run.undos.append((step, out))

    def _unwire_unrecorded(self, runs: list[_Run], before: dict[str, Attachment | None], exc: Exception) -> None:
        """The records of a finished run cannot be written: roll every port back and raise.

        Each port's undos restore the host as it was; the ``plugging``
        records are removed if the store lets us (if not, they say "may
        exist", which the next plug or unplug settles). Nothing is left wired
        and unrecorded.
        """
        problems = []
        for run in runs:
            if run.error is None:
                problems += self._rollback(run.undos)
        try:
            self.store.delete(r.plan.port_id for r in runs if before.get(r.plan.port_id) is None)
        except Exception:  # noqa: BLE001 - the store is the thing that is failing
            pass
        text = " ".join(str(exc).split()) or exc.__class__.__name__
        tail = f"; rollback incomplete: {'; '.join(problems)}" if problems else ""
        raise HostError(None, "record", f"cannot record the plug ({text}); every port of it was rolled back{tail}"
                        ) from exc

    @staticmethod
    def _rollback(undos: list[tuple[Step, Callable[[], None]]]) -> list[str]:
        errors = []
        for step, undo in reversed(undos):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                errors.append(f"{step.describe()}: {exc}")
        return errors

    # ---------------------------------------------------------------- unplug

    def unplug(self, attachments: Iterable[Attachment | Plan]) -> list[str]:
        """Remove the wiring of many ports at once; absent things are fine.

        Works from plans alone. Removal is grouped by step kind so each
        executor can do it in bulk (one OVSDB transaction, one nftables
        transaction, one link-group delete). Returns problems (empty = all gone).
        """
        t0 = time.perf_counter()
        plans = [a if isinstance(a, Plan) else Plan.from_json(a.plan) for a in attachments]
        problems: list[str] = []
        by_op: dict[StepKind, list[Step]] = {}
        for p in plans:
            for s in p.steps:
                by_op.setdefault(s.op, []).append(with_mac_hint(s, p))
        dying = {name for p in plans for name in p.devices()}
        for op in REMOVE_ORDER:
            steps = by_op.get(op)
            if not steps:
                continue
            t1 = time.perf_counter()
            h = handler(op)
            if getattr(h, "gone_with_device", False):
                # the kernel removes these with their device, which this run deletes
                steps = [s for s in steps if s.args.get("dev") not in dying]
                if not steps:
                    continue
            bulk = getattr(h, "remove_bulk", None)
            if bulk is None and op in LINK_KINDS and len(plans) > 1:
                problems += self._remove_links_bulk(op, steps)
            if bulk is not None and len(steps) > 1:
                try:
                    bulk(steps, self.ctx)
                    log.debug("unplug %s: %d step(s) in bulk, %.1f ms", op, len(steps),
                              (time.perf_counter() - t1) * 1e3)
                    continue
                except Exception as exc:  # noqa: BLE001 - fall back to one by one
                    problems.append(f"{op}: {exc}")
            for s in steps:
                try:
                    h.remove(s, self.ctx)
                except Exception as exc:  # noqa: BLE001 - remove what we can, report the rest
                    problems.append(f"{s.describe()}: {exc}")
            log.debug("unplug %s: %d step(s), %.1f ms", op, len(steps), (time.perf_counter() - t1) * 1e3)
        self.store.delete(p.port_id for p in plans)
        log.debug("unplug of %d port(s): %.1f ms", len(plans), (time.perf_counter() - t0) * 1e3)
        return problems

    def _remove_links_bulk(self, op: StepKind, steps: list[Step]) -> list[str]:
        """Delete many links with one request (deleting a veth's end deletes the pair)."""
        from vifwire.executors.kernel.bulk import remove_links_bulk

        names = [s.args["name"] for s in steps if not (op == StepKind.BRIDGE and s.args.get("shared"))]
        if not names:
            return []
        try:
            remove_links_bulk(self.ctx, names)
        except Exception as exc:  # noqa: BLE001 - the per-step pass after it still runs
            return [f"bulk delete: {exc}"]
        return []

    # ----------------------------------------------------------------- check

    def check(self, attachments: Iterable[Attachment]) -> dict[str, list[str]]:
        """Drift lines per port, in step order; each kind is verified in one call.

        Handlers with ``verify_many`` read the host once per run (one link
        dump, one table listing) and compare in memory, so checking a thousand
        ports costs about what checking one does.
        """
        t0 = time.perf_counter()
        drift: dict[str, list[str]] = {}
        found: dict[str, list[tuple[int, list[str]]]] = {}
        by_op: dict[StepKind, list[tuple[str, int, Step]]] = {}
        for a in attachments:
            plan = Plan.from_json(a.plan)
            drift[a.port_id] = []
            found[a.port_id] = []
            if a.status != "plugged":
                found[a.port_id].append((-1, [f"record status is {a.status!r} (a plug did not finish)"]))
            for k, s in enumerate(plan.steps):
                by_op.setdefault(s.op, []).append((a.port_id, k, s))
        with self.ctx.read_scope():
            for op, entries in by_op.items():
                h = handler(op)
                steps = [s for _, _, s in entries]
                outcomes: list[list[str]] | None = None
                many = getattr(h, "verify_many", None)
                if many is not None:
                    try:
                        outcomes = many(steps, self.ctx)
                    except Exception as exc:  # noqa: BLE001 - fall back to one by one to name the step
                        log.debug("%s: verify_many failed (%s), verifying one by one", op, exc)
                if outcomes is None:
                    outcomes = [self._verify_one(h, s) for s in steps]
                for (pid, k, _), lines in zip(entries, outcomes):
                    if lines:
                        found[pid].append((k, lines))
        for pid, items in found.items():
            for _, lines in sorted(items, key=lambda kv: kv[0]):
                drift[pid] += lines
        log.debug("check of %d port(s): %.1f ms", len(drift), (time.perf_counter() - t0) * 1e3)
        return drift

    def _verify_one(self, h: Any, s: Step) -> list[str]:
        try:
            return h.verify(s, self.ctx)
        except VifwireError as exc:
            return [str(exc)]
        except Exception as exc:  # noqa: BLE001
            return [f"{s.describe()}: cannot verify: {exc}"]

    # -------------------------------------------------------------------- gc

    def garbage(self, attachments: Iterable[Attachment]) -> list[dict[str, str]]:
        """Things with vifwire's marks that no record owns (links, OVS ports, filters, routes).

        Raises HostError if a backend that may hold vifwire's things cannot be read.
        """
        attachments = list(attachments)
        found, problems = self.survey(attachments)
        if problems:
            raise HostError(None, "gc", "; ".join(problems))
        return found

    @staticmethod
    def owned(attachments: Iterable[Attachment]) -> dict[str, set]:
        """What the records own, by kind: the other side of a garbage survey."""
        owned: dict[str, set] = {"links": set(), "ovs_ports": set(), "filters": set(), "routes": set()}
        for a in attachments:
            for s in Plan.from_json(a.plan).steps:
                if s.op in LINK_KINDS:
                    owned["links"].add(s.args["name"])
                    if s.op == StepKind.VETH and not s.args.get("peer_netns"):
                        owned["links"].add(s.args["peer"])
                elif s.op == StepKind.OVS_PORT:
                    owned["ovs_ports"].add(s.args["name"])
                elif s.op == StepKind.ANTISPOOF:
                    owned["filters"].add(s.args["ifname"])
                elif s.op in (StepKind.ROUTES, StepKind.SYSCTLS, StepKind.PROXY_NDP):
                    owned["links"].add(s.args["dev"])
                    if s.op == StepKind.ROUTES:
                        owned["routes"].update((s.args["dev"], str(ipaddress.ip_interface(x).ip))
                                               for x in s.args["addresses"])
        return owned

    def survey(self, attachments: Iterable[Attachment]) -> tuple[list[dict[str, str]], list[str]]:
        """:meth:`garbage` from every backend that can be read, and a line for each that cannot.

        The backends are independent, so one that is down (OVSDB) does not
        hide what the others hold; the caller reports the problems (gc exits 1).
        """
        owned = self.owned(attachments)
        found: list[dict[str, str]] = []
        problems: list[str] = []
        for module in GC_MODULES:
            try:
                items = gc_module(module).garbage(self.ctx, owned)
            except VifwireError as exc:
                problems.append(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - name the backend, go on with the others
                problems.append(f"{module}: {exc.__class__.__name__}: {' '.join(str(exc).split())}")
                continue
            found.extend({**item, "module": module} for item in items)
        return found, problems

    def collect(self, garbage: list[dict[str, str]]) -> None:
        by_module: dict[str, list[dict[str, str]]] = {}
        for g in garbage:
            by_module.setdefault(g["module"], []).append(g)
        for module, items in by_module.items():
            gc_module(module).remove_garbage(self.ctx, items)

    # ---------------------------------------------------------------- helpers

    def row(self, b: Binding, p: Plan) -> dict[str, Any]:
        """The store row for a binding and its plan."""
        return {"port_id": b.port_id, "instance_id": b.instance_id, "vif_type": b.vif_type,
                "devname": b.devname, "mac": b.mac, "netns": self.ctx.netns, "strategy": p.strategy,
                "binding": b.to_json(), "plan": p.to_json(),
                "devices": p.devices()}


def attachment_row(a: Attachment) -> dict[str, Any]:
    """A recorded attachment as a store row (to put it back after a failed replug)."""
    return {"port_id": a.port_id, "instance_id": a.instance_id, "vif_type": a.vif_type, "devname": a.devname,
            "mac": a.mac, "netns": a.netns, "strategy": a.strategy, "binding": a.binding, "plan": a.plan,
            "devices": a.devices}


def with_mac_hint(step: Step, plan: Plan) -> Step:
    """Give the port's veth the guest MAC as an unplug hint.

    The ``tin`` end carries the guest's MAC, so a pair named by an older
    version of the container driver is still found by MAC when its name is
    not there (docs/architecture.md, "Containers").
    """
    if step.op == StepKind.VETH and not step.args.get("mac") and step.args.get("name") == plan.devname:
        return Step(op=step.op, args={**step.args, "mac": step.args.get("peer_mac") or plan.mac}, why=step.why)
    return step


def _one_line(port: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"port {port}: {exc.__class__.__name__}: {text}"
