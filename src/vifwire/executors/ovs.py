"""Open vSwitch steps (``ovs_bridge``, ``ovs_port``) over native OVSDB.

One long-lived :class:`~vifwire.executors.ovsdb.OvsdbClient` per endpoint and
run (kept in the :class:`HostContext`). Ports of many VIFs are added in one
OVSDB transaction (:meth:`OvsPortHandler.apply_many`) and removed in one
(:meth:`OvsPortHandler.remove_bulk`), then the handler waits for ovs-vswitchd
to apply the change: a plug never succeeds for a port OVS did not create, and
never waits past the configured timeout.
"""

from __future__ import annotations

from typing import Any, Callable

from vifwire.errors import HostError
from vifwire.executors.base import HostContext, Undo, register
from vifwire.executors.ovsdb import OvsApplyError, OvsdbClient, OvsdbError, OvsPortSpec, _uuid
from vifwire.planner.generic import OVS_OWNER_KEY
from vifwire.planner.plan import Step


def client(ctx: HostContext) -> OvsdbClient:
    if not ctx.ovsdb:
        raise HostError(ctx.port_id, "ovsdb", "no OVSDB endpoint configured (--ovsdb / VIFWIRE_OVSDB)")
    return ctx.get("ovsdb:" + ctx.ovsdb, lambda: OvsdbClient(ctx.ovsdb, timeout=ctx.ovs_timeout))


def _spec(step: Step) -> OvsPortSpec:
    a = step.args
    return OvsPortSpec(bridge=a["bridge"], name=a["name"], iface_type=a.get("iface_type") or "",
                       external_ids=dict(a.get("external_ids") or {}), mtu_request=a.get("mtu_request"),
                       tag=a.get("tag"), options=dict(a.get("options") or {}))


def _matches(state: dict | None, spec: OvsPortSpec) -> bool:
    if state is None or state.get("bridge") != spec.bridge:
        return False
    ext = state.get("external_ids") or {}
    opts = state.get("options") or {}
    return ((state.get("type") or "") == spec.iface_type
            and all(ext.get(k) == v for k, v in spec.external_ids.items())
            and all(opts.get(k) == v for k, v in spec.options.items())
            and state.get("mtu_request") == spec.mtu_request and state.get("tag") == spec.tag)


class OvsBridgeHandler:
    """Ensure the integration bridge exists. A bridge vifwire did not create
    is never removed; one created by a failed plug is removed by its undo."""

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        c = client(ctx)
        name = step.args["name"]
        if c.bridge_exists(name):
            return None
        c.ensure_bridge(name, step.args.get("datapath_type") or "system")
        return lambda: _del_bridge(c, name)

    def remove(self, step: Step, ctx: HostContext) -> None:
        return None  # shared infrastructure: outlives every port

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        if not client(ctx).bridge_exists(step.args["name"]):
            return [f"OVS bridge {step.args['name']} is missing"]
        return []


class OvsPortHandler:
    deferrable = True  # the engine batches these across ports

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        result = self.apply_many([step], ctx)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """Add/converge many ports in one transaction and wait for ovs-vswitchd.

        Returns, per step, its undo (``None`` if nothing changed) or the
        exception that failed it. Ports whose device already exists in the
        kernel must get an ofport; the others (a tap libvirt makes later) only
        need ovs-vswitchd to have taken the change.
        """
        c = client(ctx)
        specs = [_spec(s) for s in steps]
        before = {s.name: c.port_state(s.name) for s in specs}
        todo = [s for s in specs if not _matches(before[s.name], s)]
        results: list[Undo | None | Exception] = [None] * len(steps)
        if not todo:
            return results
        try:
            c.add_ports(todo, may_exist=True)
        except OvsdbError as exc:
            if len(todo) == 1:
                return [exc if s.name == todo[0].name else None for s in specs]
            # find the culprit(s) one by one so the others can still go in
            return [self._apply_one(c, s, before[s.name], ctx) if s in todo else None for s in specs]
        ready = [s.args["name"] for s in steps if s.args.get("device_ready")]
        failed: dict[str, str] = {}
        try:
            if ready:
                c.wait_applied(ready, timeout=ctx.ovs_timeout)
            else:
                c.wait_cfg(timeout=ctx.ovs_timeout)
        except OvsApplyError as exc:
            for name in exc.failed or [s.name for s in todo]:
                state = exc.states.get(name) if exc.states else None
                why = (state or {}).get("error") or exc.problem
                failed[name] = why
        for i, s in enumerate(specs):
            if s not in todo:
                continue
            undo = _undo_for(c, s, before[s.name])
            if s.name in failed:
                try:
                    undo()
                except Exception:  # noqa: BLE001 - report the original failure
                    pass
                results[i] = HostError(steps[i].args["external_ids"].get(OVS_OWNER_KEY), f"ovs_port {s.name}",
                                       f"ovs-vswitchd did not create it: {failed[s.name]}")
            else:
                results[i] = undo
        return results

    def _apply_one(self, c: OvsdbClient, s: OvsPortSpec, before: dict | None, ctx: HostContext):
        try:
            c.add_ports([s], may_exist=True)
            c.wait_cfg(timeout=ctx.ovs_timeout)
        except OvsdbError as exc:
            return exc
        return _undo_for(c, s, before)

    def remove(self, step: Step, ctx: HostContext) -> None:
        self.remove_bulk([step], ctx)

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        c = client(ctx)
        names = [s.args["name"] for s in steps]
        if c.del_ports(names, if_exists=True) is not None:
            c.wait_cfg(timeout=ctx.ovs_timeout)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        spec = _spec(step)
        state = client(ctx).port_state(spec.name)
        if state is None:
            return [f"OVS port {spec.name} is missing from {spec.bridge}"]
        out = []
        if state.get("bridge") != spec.bridge:
            out.append(f"OVS port {spec.name} is on {state.get('bridge')}, recorded {spec.bridge}")
        ext = state.get("external_ids") or {}
        for k, v in spec.external_ids.items():
            if ext.get(k) != v:
                out.append(f"OVS port {spec.name}: external_ids:{k} is {ext.get(k)!r}, recorded {v!r}")
        if state.get("mtu_request") != spec.mtu_request:
            out.append(f"OVS port {spec.name}: mtu_request is {state.get('mtu_request')}, recorded {spec.mtu_request}")
        if step.args.get("device_ready") and not (state.get("ofport") or 0) > 0:
            out.append(f"OVS port {spec.name} has no ofport ({state.get('error') or 'not applied'})")
        return out


def _undo_for(c: OvsdbClient, spec: OvsPortSpec, before: dict | None) -> Callable[[], None]:
    if before is None:
        return lambda: c.del_ports([spec.name], if_exists=True)
    old = OvsPortSpec(bridge=before["bridge"] or spec.bridge, name=spec.name, iface_type=before.get("type") or "",
                      external_ids=dict(before.get("external_ids") or {}), mtu_request=before.get("mtu_request"),
                      tag=before.get("tag"), options=dict(before.get("options") or {}))
    return lambda: c.add_ports([old], may_exist=True)


def _del_bridge(c: OvsdbClient, name: str) -> None:
    """Remove a bridge vifwire created (rollback only)."""

    def build() -> list[dict[str, Any]]:
        br = c._idl.lookup("Bridge", name)
        root = next(iter(c._idl.tables["Open_vSwitch"].rows.values()), None)
        if br is None or root is None:
            return []
        return [{"op": "mutate", "table": "Open_vSwitch", "where": [["_uuid", "==", _uuid(root.uuid)]],
                 "mutations": [["bridges", "delete", ["set", [_uuid(br.uuid)]]]]}]

    with c._lock:
        c._transact(build, "del-br", None, c._deadline(None))


def wait_plugged(ctx: HostContext, names: list[str], timeout: float) -> dict[str, dict]:
    """Block until OVS reports each port up with an ofport ("network-vif-plugged")."""
    return client(ctx).wait_applied(names, timeout=timeout, fail_fast=False)


# ---------------------------------------------------------------------- gc

def garbage(ctx: HostContext, owned: dict[str, set[str]]) -> list[dict[str, str]]:
    if not ctx.ovsdb:
        return []
    try:
        ports = client(ctx).ports_with_external_id(OVS_OWNER_KEY)
    except OvsdbError:
        return []  # no OVS here: nothing of ours can be in it
    return [{"kind": "ovs_port", "name": n} for n in sorted(ports) if n not in owned["ovs_ports"]]


def remove_garbage(ctx: HostContext, items: list[dict[str, str]]) -> None:
    c = client(ctx)
    if c.del_ports([i["name"] for i in items], if_exists=True) is not None:
        c.wait_cfg(timeout=ctx.ovs_timeout)


register("ovs_bridge", OvsBridgeHandler())
register("ovs_port", OvsPortHandler())
