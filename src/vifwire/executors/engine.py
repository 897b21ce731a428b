"""Apply plans transactionally; unplug and check from records.

The engine is the only place that sequences steps. It follows the
desired-state pattern of nmstate: apply every step of a port, and if any step
fails, run the undos of the steps already applied, newest first, so the host is
exactly as it was. The store is updated around it so that what is recorded is
never more than what exists: a port is ``plugged`` only after its last step
succeeded.

Fault injection for tests: ``fail_at=k`` makes step *k* of each port fail
before it runs (``k == len(steps)`` fails after the last step, before the
record is committed).
"""

from __future__ import annotations

import importlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from vifwire.errors import HostError, VifwireError
from vifwire.executors.base import HANDLERS, Handler, HostContext
from vifwire.model.binding import Binding
from vifwire.planner.plan import Plan, Step
from vifwire.store.sqlite import Attachment, Store

_OP_MODULES = {
    **dict.fromkeys(("tap", "veth", "bridge", "master", "macvtap", "vlan", "require_link",
                     "routes", "sysctls", "proxy_ndp"), "vifwire.executors.kernel"),
    **dict.fromkeys(("ovs_bridge", "ovs_port"), "vifwire.executors.ovs"),
    "antispoof": "vifwire.executors.firewall",
}

#: Device-creating ops whose links the bulk path deletes in one go.
_LINK_OPS = ("tap", "veth", "macvtap", "vlan", "bridge")

#: Unplug order for bulk removal: policy first, then ports, then links, then bridges.
_REMOVE_ORDER = ("antispoof", "proxy_ndp", "routes", "sysctls", "ovs_port", "master",
                 "tap", "macvtap", "veth", "vlan", "bridge", "ovs_bridge", "require_link")


_GC_MODULES = ("vifwire.executors.firewall", "vifwire.executors.ovs", "vifwire.executors.kernel")


def handler(op: str) -> Handler:
    if op not in HANDLERS:
        module = _OP_MODULES.get(op)
        if module is None:
            raise HostError(None, op, "no executor knows this step")
        importlib.import_module(module)
    return HANDLERS[op]


@dataclass
class _Run:
    """One port's plug in progress."""

    plan: Plan
    undos: list[tuple[Step, Callable[[], None]]] = field(default_factory=list)
    deferred: list[tuple[int, Step]] = field(default_factory=list)
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
    """One run against one host: a host context plus the store."""

    ctx: HostContext
    store: Store
    fail_at: int | None = None
    progress: Callable[[str], None] | None = None
    _results: list[PlugResult] = field(default_factory=list)

    # ------------------------------------------------------------------ plug

    def plug(self, items: list[tuple[Binding, Plan]]) -> list[PlugResult]:
        """Plug every port; each port is its own transaction."""
        before = {b.port_id: self.store.get(b.port_id) for b, _ in items}
        # Replug with a different plan: take the old wiring down first.
        stale = [a for (b, p), a in zip(items, before.values())
                 if a is not None and a.plan.get("steps") != p.model_dump(mode="json")["steps"]]
        if stale:
            self.unplug(stale)
            for a in stale:
                before[a.port_id] = None
        self.store.put_many((self._row(b, p) for b, p in items), status="plugging")
        runs = []
        for b, p in items:
            runs.append(self._phase1(p))
            if self.progress:
                self.progress(b.port_id)
        self._phase2(runs)
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
                results.append(PlugResult(run.plan.port_id, False, run.plan, msg))
            else:
                results.append(PlugResult(run.plan.port_id, True, run.plan, changed=len(run.undos)))
        ok = [r.port_id for r in results if r.ok]
        failed = [r.port_id for r in results if not r.ok]
        if ok:
            self.store.set_status(ok, "plugged")
        if failed:
            restore = [before[pid] for pid in failed if before.get(pid) is not None]
            self.store.delete(pid for pid in failed if before.get(pid) is None)
            for a in restore:
                self.store.put_many([_attachment_row(a)], status=a.status)
        return results

    def _phase1(self, plan: Plan) -> "_Run":
        """Apply a port's steps in order, leaving batchable ones for phase 2."""
        self.ctx.port_id = plan.port_id
        run = _Run(plan)
        try:
            for k, step in enumerate(plan.steps):
                h = handler(step.op)
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
        return run

    def _phase2(self, runs: list["_Run"]) -> None:
        """Batchable steps (OVS ports) of all ports, one batch per operation.

        They come last in every plan that has them and nothing after them
        depends on them, so deferring keeps each port's order intact.
        """
        by_op: dict[str, list[tuple[_Run, int, Step]]] = {}
        for run in runs:
            if run.error is None:
                for k, step in run.deferred:
                    by_op.setdefault(step.op, []).append((run, k, step))
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
            try:
                outcomes = handler(op).apply_many([s for _, s in todo], self.ctx)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed
                outcomes = [exc] * len(todo)
            for (run, step), out in zip(todo, outcomes):
                if isinstance(out, Exception):
                    run.error = out
                elif out is not None:
                    run.undos.append((step, out))

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

        Works from plans alone. Removal is grouped by operation so each
        executor can do it in bulk (one OVSDB transaction, one link-group
        delete). Returns problems (empty = all gone).
        """
        plans = [a if isinstance(a, Plan) else Plan.model_validate(a.plan) for a in attachments]
        problems: list[str] = []
        by_op: dict[str, list[Step]] = {}
        for p in plans:
            for s in p.steps:
                by_op.setdefault(s.op, []).append(_with_mac(s, p))
        for op in _REMOVE_ORDER + tuple(o for o in by_op if o not in _REMOVE_ORDER):
            steps = by_op.get(op)
            if not steps:
                continue
            h = handler(op)
            if op in _LINK_OPS and len(plans) > 1:
                problems += self._remove_links_bulk(op, steps)
            bulk = getattr(h, "remove_bulk", None)
            try:
                if bulk is not None and len(steps) > 1:
                    bulk(steps, self.ctx)
                    continue
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{op}: {exc}")
            for s in steps:
                try:
                    h.remove(s, self.ctx)
                except Exception as exc:  # noqa: BLE001 - remove what we can, report the rest
                    problems.append(f"{s.describe()}: {exc}")
        self.store.delete(p.port_id for p in plans)
        return problems

    def _remove_links_bulk(self, op: str, steps: list[Step]) -> list[str]:
        names = []
        for s in steps:
            if op == "bridge" and s.args.get("shared"):
                continue
            names.append(s.args["name"])
            if op == "veth" and not s.args.get("peer_netns"):
                pass  # deleting one end deletes the pair
        if not names:
            return []
        kernel = importlib.import_module("vifwire.executors.kernel")
        try:
            kernel.remove_links_bulk(self.ctx, names)
        except Exception as exc:  # noqa: BLE001 - the per-step pass below still runs
            return [f"bulk delete: {exc}"]
        return []

    # ----------------------------------------------------------------- check

    def check(self, attachments: Iterable[Attachment]) -> dict[str, list[str]]:
        drift: dict[str, list[str]] = {}
        for a in attachments:
            plan = Plan.model_validate(a.plan)
            lines: list[str] = []
            if a.status != "plugged":
                lines.append(f"record status is {a.status!r} (a plug did not finish)")
            for s in plan.steps:
                try:
                    lines += handler(s.op).verify(s, self.ctx)
                except VifwireError as exc:
                    lines.append(str(exc))
                except Exception as exc:  # noqa: BLE001
                    lines.append(f"{s.describe()}: cannot verify: {exc}")
            drift[a.port_id] = lines
        return drift

    # -------------------------------------------------------------------- gc

    def garbage(self, attachments: Iterable[Attachment]) -> list[dict[str, str]]:
        """Things with vifwire's marks that no record owns (links, OVS ports, filters, routes)."""
        owned: dict[str, set] = {"links": set(), "ovs_ports": set(), "filters": set(), "routes": set()}
        for a in attachments:
            for s in Plan.model_validate(a.plan).steps:
                if s.op in _LINK_OPS or s.op == "veth":
                    owned["links"].add(s.args["name"])
                    if s.op == "veth" and not s.args.get("peer_netns"):
                        owned["links"].add(s.args["peer"])
                elif s.op == "ovs_port":
                    owned["ovs_ports"].add(s.args["name"])
                elif s.op == "antispoof":
                    owned["filters"].add(s.args["ifname"])
                elif s.op in ("routes", "sysctls", "proxy_ndp"):
                    owned["links"].add(s.args["dev"])
                    if s.op == "routes":
                        owned["routes"].update((s.args["dev"], str(ipaddress.ip_interface(x).ip))
                                               for x in s.args["addresses"])
        found: list[dict[str, str]] = []
        for module in _GC_MODULES:
            mod = importlib.import_module(module)
            fn = getattr(mod, "garbage", None)
            if fn is None:
                continue
            for item in fn(self.ctx, owned):
                found.append({**item, "module": module})
        return found

    def collect(self, garbage: list[dict[str, str]]) -> None:
        by_module: dict[str, list[dict[str, str]]] = {}
        for g in garbage:
            by_module.setdefault(g["module"], []).append(g)
        for module, items in by_module.items():
            importlib.import_module(module).remove_garbage(self.ctx, items)

    # ---------------------------------------------------------------- helpers

    def _row(self, b: Binding, p: Plan) -> dict[str, Any]:
        return {"port_id": b.port_id, "instance_id": b.instance_id, "vif_type": b.vif_type,
                "devname": b.devname, "mac": b.mac, "netns": self.ctx.netns, "strategy": p.strategy,
                "binding": b.model_dump(mode="json"), "plan": p.model_dump(mode="json"),
                "devices": p.devices()}


def _attachment_row(a: Attachment) -> dict[str, Any]:
    return {"port_id": a.port_id, "instance_id": a.instance_id, "vif_type": a.vif_type, "devname": a.devname,
            "mac": a.mac, "netns": a.netns, "strategy": a.strategy, "binding": a.binding, "plan": a.plan,
            "devices": a.devices}


def _with_mac(step: Step, plan: Plan) -> Step:
    """Give the port's veth the guest MAC as an unplug hint (seed 000).

    The ``tin`` end carries the guest's MAC, so a pair named by an older
    version is still found by MAC when its name is not there.
    """
    if step.op == "veth" and not step.args.get("mac") and step.args.get("name") == plan.devname:
        return Step(op=step.op, args={**step.args, "mac": step.args.get("peer_mac") or plan.mac}, why=step.why)
    return step


def _one_line(port: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"port {port}: {exc.__class__.__name__}: {text}"
