"""Open vSwitch steps (``ovs_bridge``, ``ovs_port``) over native OVSDB.

One long-lived :class:`~vifwire.executors.ovsdb.OvsdbClient` per
:class:`HostContext` (``ctx.ovsdb_client``, on the endpoint ``ctx.ovsdb``);
no ``ovs-vsctl``. OVSDB is the protocol of RFC 7047; the tables and columns
are those of ``ovs-vswitchd.conf.db(5)``. See docs/ovs.md.

Both handlers are *deferrable*: the engine runs every kernel step of every
port of a run first and then hands all ``ovs_bridge`` steps, then all
``ovs_port`` steps, to :meth:`apply_many` in one batch each, so

* the bridges a run needs are ensured once (one transaction, only if one is
  missing);
* all ports of the run go into OVSDB in **one** transaction
  (:meth:`OvsPortHandler.apply_many`), and one wait for ovs-vswitchd follows:
  until ``cur_cfg`` reaches the transaction's ``next_cfg`` and every port whose
  kernel device already exists (``device_ready``: hybrid ``qvo``, a
  container's ``tap`` end, a tap vifwire made) has an ``ofport``.  A port
  OVS did not create fails its plug (and is rolled back); the plug never
  waits past ``ctx.ovs_timeout``;
* unplug removes all ports of the run in one transaction
  (:meth:`OvsPortHandler.remove_bulk`) and waits for ovs-vswitchd once;
* ``check`` compares all ports (bridges) of the run with one read of the
  client's replica (:meth:`OvsPortHandler.verify_many`).

Failures:

* ovsdb-server unreachable (or stopped answering): every call raises
  :class:`~vifwire.executors.ovsdb.OvsdbUnavailable` within the timeout; the
  context remembers it, so the remaining calls of the same run fail fast
  (they still try to reconnect, with a short timeout) instead of each paying
  the full timeout;
* ovs-vswitchd not applying the change in time (stopped, hung): the ports of
  the batch fail with a message naming what is missing; their OVSDB rows are
  removed again (or restored, for ports that existed) without waiting for
  ovs-vswitchd, so OVSDB is back to what it was even while it is stopped;
* a port OVSDB refuses (exists on another bridge, name clash...): the batch
  is split in halves until the culprits are isolated, so the other ports of
  the run still go in (O(k log n) transactions for k bad ports).

Undo of a port that existed before the plug restores its columns exactly
(``external_ids``/``options`` maps replaced, not merged).  An OVS bridge is
removed by an undo only if vifwire created it in that run *and* no other port
is on it by then (checked by an OVSDB ``wait`` in the same transaction).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from vifwire.errors import HostError
from vifwire.executors.base import HostContext, Undo
from vifwire.executors.ovsdb import (
    OvsApplyError,
    OvsdbClient,
    OvsdbError,
    OvsdbUnavailable,
    OvsPortSpec,
)
from vifwire.planner.generic import OVS_OWNER_KEY
from vifwire.planner.plan import Step

log = logging.getLogger("vifwire.executors.ovs")

#: After ovsdb-server was found unreachable in a run, further calls of the
#: same run try to reconnect for this long only (seconds).
DOWN_RETRY_TIMEOUT = 0.2


# --------------------------------------------------------------------------
# connection


def _timeout(ctx: HostContext) -> float:
    """The timeout for the next OVSDB call on this handle."""
    if ctx.ovsdb_down:
        return min(ctx.ovs_timeout, DOWN_RETRY_TIMEOUT)
    return ctx.ovs_timeout


def client(ctx: HostContext) -> OvsdbClient:
    """The handle's OVSDB client (connects on first use, and again after a close)."""
    if not ctx.ovsdb:
        raise HostError(ctx.port_id, "ovsdb", "no OVSDB endpoint configured (--ovsdb / VIFWIRE_OVSDB)")
    c = ctx.ovsdb_client
    if c is not None and not c.closed:
        return c
    with ctx.lock:
        c = ctx.ovsdb_client
        if c is not None and not c.closed:
            return c
        try:
            c = OvsdbClient(ctx.ovsdb, timeout=_timeout(ctx))
        except OvsdbUnavailable:
            ctx.ovsdb_down = True
            raise
        c.timeout = ctx.ovs_timeout
        ctx.ovsdb_client = c
        return c


def _call(ctx: HostContext, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """``fn(*args, timeout=..., **kw)``, keeping the handle's "server down" mark."""
    try:
        out = fn(*args, timeout=_timeout(ctx), **kw)
    except OvsdbUnavailable:
        ctx.ovsdb_down = True
        raise
    ctx.ovsdb_down = False
    return out


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _restore_ops(name: str, before: dict) -> list[dict]:
    """Ops that put an existing port's columns back exactly as ``before``."""
    def smap(d: dict | None) -> list:
        return ["map", [[k, v] for k, v in sorted((d or {}).items())]]

    def opt(v: Any) -> Any:
        return ["set", []] if v is None else v

    return [
        {"op": "update", "table": "Interface", "where": [["name", "==", name]],
         "row": {"type": before.get("type") or "", "external_ids": smap(before.get("external_ids")),
                 "options": smap(before.get("options")), "mtu_request": opt(before.get("mtu_request"))}},
        {"op": "update", "table": "Port", "where": [["name", "==", name]],
         "row": {"tag": opt(before.get("tag"))}},
    ]


def _del_bridge_if_unused(ctx: HostContext, name: str) -> None:
    """Remove bridge ``name`` unless a port other than its own is on it
    (checked in the same transaction: an OVSDB ``wait`` on ``Bridge.ports``)."""
    _call(ctx, client(ctx).del_bridge, name, only_if_unused=True)


# --------------------------------------------------------------------------
# helpers


def _spec(step: Step) -> OvsPortSpec:
    a = step.args
    return OvsPortSpec(bridge=a["bridge"], name=a["name"], iface_type=a.get("iface_type") or "",
                       external_ids=dict(a.get("external_ids") or {}), mtu_request=a.get("mtu_request"),
                       tag=a.get("tag"), options=dict(a.get("options") or {}))


def _owner(step: Step, ctx: HostContext) -> str | None:
    return (step.args.get("external_ids") or {}).get(OVS_OWNER_KEY) or ctx.port_id


def _drift(state: dict | None, spec: OvsPortSpec) -> list[str]:
    """How the port in OVSDB differs from ``spec`` (empty: as wanted)."""
    n = spec.name
    if state is None:
        return [f"OVS port {n} is missing from {spec.bridge}"]
    out = []
    if state.get("bridge") != spec.bridge:
        out.append(f"OVS port {n} is on {state.get('bridge')}, recorded {spec.bridge}")
    if (state.get("type") or "") != spec.iface_type:
        out.append(f"OVS port {n}: type is {state.get('type')!r}, recorded {spec.iface_type!r}")
    for col, want in (("external_ids", spec.external_ids), ("options", spec.options)):
        have = state.get(col) or {}
        for k, v in want.items():
            if have.get(k) != v:
                out.append(f"OVS port {n}: {col}:{k} is {have.get(k)!r}, recorded {v!r}")
    if state.get("mtu_request") != spec.mtu_request:
        out.append(f"OVS port {n}: mtu_request is {state.get('mtu_request')}, recorded {spec.mtu_request}")
    if state.get("tag") != spec.tag:
        out.append(f"OVS port {n}: tag is {state.get('tag')}, recorded {spec.tag}")
    return out


def _has_ofport(state: dict | None) -> bool:
    return bool(state) and (state.get("ofport") or 0) > 0


# --------------------------------------------------------------------------
# ovs_bridge


class OvsBridgeHandler:
    """Ensure the integration bridge exists.

    A bridge vifwire did not create is never removed; one created by a plug is
    removed by that plug's undo only if nothing else is on it by then.
    ``remove`` does nothing: the bridge is shared infrastructure.
    """

    deferrable = True

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        out = self.apply_many([step], ctx)[0]
        if isinstance(out, Exception):
            raise out
        return out

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """Ensure each named bridge once.

        A bridge created here gives *every* step naming it an undo that
        removes it if it is unused by then: whichever of the run's failed
        ports rolls back last takes it away, and a port that succeeded keeps
        it.
        """
        t0 = time.perf_counter()
        by_name: dict[str, list[int]] = {}
        for i, s in enumerate(steps):
            by_name.setdefault(s.args["name"], []).append(i)
        results: list[Undo | None | Exception] = [None] * len(steps)
        created = []
        try:
            c = client(ctx)
            have = _call(ctx, c.bridge_names)
            for name, idx in by_name.items():
                if name in have:
                    continue
                dp = steps[idx[0]].args.get("datapath_type") or "system"
                if _call(ctx, c.ensure_bridge, name, dp):
                    created.append(name)
                    undo = (lambda n=name: _del_bridge_if_unused(ctx, n))
                    for i in idx:
                        results[i] = undo
        except HostError as exc:
            return [exc] * len(steps)
        log.debug("ovs_bridge apply_many: %d steps, %d bridges, created %s, %.1f ms",
                  len(steps), len(by_name), created or "none", _ms(t0))
        return results

    def remove(self, step: Step, ctx: HostContext) -> None:
        finish_unplug(ctx)  # the bridge itself stays: shared infrastructure

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        finish_unplug(ctx)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        return self.verify_many([step], ctx)[0]

    def verify_many(self, steps: list[Step], ctx: HostContext) -> list[list[str]]:
        """Drift per step from one read of the replica (raises if OVSDB cannot be read)."""
        have = _call(ctx, client(ctx).bridge_names)
        return [[] if s.args["name"] in have else [f"OVS bridge {s.args['name']} is missing"] for s in steps]


# --------------------------------------------------------------------------
# ovs_port


class OvsPortHandler:
    deferrable = True  # the engine batches these across ports

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        out = self.apply_many([step], ctx)[0]
        if isinstance(out, Exception):
            raise out
        return out

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """Add/converge many ports in one transaction and wait for ovs-vswitchd once.

        Returns, per step, its undo (``None`` if nothing changed) or the
        exception that failed it.  Ports whose kernel device exists
        (``device_ready``) must get an ofport; the others (a tap libvirt makes
        later, a vhost-user socket) only need ovs-vswitchd to have taken the
        change.
        """
        t0 = time.perf_counter()
        n = len(steps)
        results: list[Undo | None | Exception] = [None] * n
        try:
            c = client(ctx)
            specs = [_spec(s) for s in steps]
            for s in specs:
                s.check()
        except HostError as exc:
            return [exc] * n

        # the same port twice in one batch: only the first goes in
        index: dict[str, int] = {}
        for i, s in enumerate(specs):
            if s.name in index:
                results[i] = HostError(_owner(steps[i], ctx), f"ovs_port {s.name}",
                                       "the same OVS port is planned twice in this run")
            else:
                index[s.name] = i
        try:
            before = _call(ctx, c.port_states, list(index))
        except HostError as exc:
            return [exc] * n

        todo = [i for i in index.values() if _drift(before[specs[i].name], specs[i])]
        ready = [i for i in index.values() if steps[i].args.get("device_ready")]
        # unchanged ports whose device is there but that have no ofport yet
        # (e.g. the device was just re-created): wait for them too, patiently
        in_todo = set(todo)
        recheck = [i for i in ready if i not in in_todo and not _has_ofport(before[specs[i].name])]

        committed, target = _commit(c, ctx, steps, specs, todo, results)
        t_commit = _ms(t0)
        if not committed and not recheck:
            log.debug("ovs_port apply_many: %d ports, %d to change, none committed, %.1f ms",
                      n, len(todo), t_commit)
            return results

        waited = [specs[i].name for i in ready if i in committed or i in recheck]
        failed: dict[int, str] = {}
        try:
            if waited:
                _call(ctx, c.wait_applied, waited, fail_fast=not recheck)
            else:
                _call(ctx, c.wait_cfg, cfg=target)
        except OvsApplyError as exc:
            # ovs-vswitchd behind (stopped, hung): nothing of the batch is
            # known to be applied, so every committed port fails; otherwise
            # only the ports it reported without an ofport
            behind = target is not None and c.cfg()[1] < target
            bad = set(exc.failed)
            for i in committed + recheck:
                nm = specs[i].name
                if nm in bad or (behind and i in committed):
                    st = exc.states.get(nm) if exc.states else None
                    failed[i] = (st or {}).get("error") or exc.problem
        except HostError as exc:  # ovsdb-server gone while waiting
            for i in committed + recheck:
                failed[i] = exc.problem

        undo_error = None
        if failed:
            undo_error = _undo_many(
                ctx, [(specs[i].name, before[specs[i].name]) for i in failed if i in committed])
        for i in committed:
            if i not in failed:
                results[i] = _undo_for(ctx, specs[i].name, before[specs[i].name])
        for i, why in failed.items():
            problem = f"OVS did not set the port up: {why}"
            if undo_error and i in committed:
                problem += f"; rollback incomplete, the port may remain in OVSDB ({undo_error})"
            results[i] = HostError(_owner(steps[i], ctx), f"ovs_port {specs[i].name}", problem)
        log.debug("ovs_port apply_many: %d ports, %d changed (next_cfg %s) in %.1f ms, waited for %d "
                  "ofports, %d failed, %.1f ms in all", n, len(committed), target, t_commit, len(waited),
                  len(failed), _ms(t0))
        return results

    def remove(self, step: Step, ctx: HostContext) -> None:
        self.remove_bulk([step], ctx)

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        """Delete the ports in one transaction; wait for ovs-vswitchd once.

        The wait is left to the plan's ``ovs_bridge`` step, which the engine
        removes *after* the kernel devices (see :func:`finish_unplug`), so that
        ovs-vswitchd closing the ports and the kernel deleting the devices run
        at the same time: both mostly wait for RCU grace periods (ovs-vswitchd's
        AF_PACKET closes, the kernel's unregistering), which overlap.
        """
        t0 = time.perf_counter()
        c = client(ctx)
        names = [s.args["name"] for s in steps]
        cfg = _call(ctx, c.del_ports, names, if_exists=True)
        log.debug("ovs_port remove_bulk: %d ports in one transaction (next_cfg %s), %.1f ms",
                  len(names), cfg, _ms(t0))
        if cfg is None:
            return
        with ctx.lock:
            if ctx.ovs_pending is None:
                ctx.ovs_pending = PendingWait(ctx)
            ctx.ovs_pending.expect(cfg)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        return self.verify_many([step], ctx)[0]

    def verify_many(self, steps: list[Step], ctx: HostContext) -> list[list[str]]:
        """Drift per step from one read of the replica (raises if OVSDB cannot be read)."""
        t0 = time.perf_counter()
        specs = [_spec(s) for s in steps]
        states = _call(ctx, client(ctx).port_states, [s.name for s in specs])
        out = []
        for step, spec in zip(steps, specs):
            state = states[spec.name]
            lines = _drift(state, spec)
            if state is not None and step.args.get("device_ready") and not _has_ofport(state):
                lines.append(f"OVS port {spec.name} has no ofport ({state.get('error') or 'not applied'})")
            out.append(lines)
        log.debug("ovs_port verify_many: %d ports from one replica read, %.1f ms", len(steps), _ms(t0))
        return out


def _commit(c: OvsdbClient, ctx: HostContext, steps: list[Step], specs: list[OvsPortSpec],
            todo: list[int], results: list) -> tuple[list[int], int | None]:
    """Commit ``todo`` in one transaction; isolate refused ports by halving.

    Fills ``results`` with the error of every port that could not go in
    and returns the indices that did and the ``next_cfg`` to wait for.
    """
    committed: list[int] = []
    target: int | None = None

    def attempt(idx: list[int]) -> None:
        if not idx:
            return
        nonlocal target
        try:
            cfg = _call(ctx, c.add_ports, [specs[i] for i in idx], may_exist=True)
        except OvsdbUnavailable as exc:
            for i in idx:
                results[i] = HostError(_owner(steps[i], ctx), f"ovs_port {specs[i].name}", exc.problem)
            return
        except OvsdbError as exc:
            if len(idx) == 1:
                i = idx[0]
                results[i] = HostError(_owner(steps[i], ctx), f"ovs_port {specs[i].name}", exc.problem)
                return
            half = len(idx) // 2
            attempt(idx[:half])
            attempt(idx[half:])
            return
        committed.extend(idx)
        if cfg is not None:
            target = max(target or 0, cfg)

    attempt(todo)
    return committed, target


def _undo_many(ctx: HostContext, items: list[tuple[str, dict | None]]) -> str | None:
    """Take back many ports in one transaction (no wait for ovs-vswitchd).

    Returns why that failed (e.g. ovsdb-server gone), None if it worked.
    """
    new = [n for n, b in items if b is None]
    old = [(n, b) for n, b in items if b is not None]
    try:
        c = client(ctx)
        if new:
            _call(ctx, c.del_ports, new, if_exists=True)
        if old:
            _call(ctx, c.transact, lambda: [op for n, b in old for op in _restore_ops(n, b)],
                  "restore-port", None)
    except HostError as exc:
        return exc.problem
    return None


def _wait_removed(ctx: HostContext, c: OvsdbClient, cfg: int) -> None:
    try:
        _call(ctx, c.wait_cfg, cfg=cfg)
    except OvsApplyError as exc:
        raise HostError(ctx.port_id, "ovs del-port", f"removed from OVSDB, but {exc.problem}") from exc


class PendingWait:
    """The ``next_cfg`` an overlapped unplug still has to wait for.

    Kept in ``ctx.ovs_pending``; waited for by :func:`finish_unplug` (the
    ``ovs_bridge`` step's removal, which comes after the devices) or, if no
    such step followed (older records), when the handle is closed
    (:meth:`HostContext.close` closes it before the OVSDB client).
    """

    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.cfg: int | None = None

    def expect(self, cfg: int) -> None:
        self.cfg = max(cfg, self.cfg or 0)

    def finish(self) -> None:
        cfg, self.cfg = self.cfg, None
        if cfg is not None:
            t0 = time.perf_counter()
            _wait_removed(self.ctx, client(self.ctx), cfg)
            log.debug("ovs unplug: ovs-vswitchd applied next_cfg %d after %.1f ms more", cfg, _ms(t0))

    def close(self) -> None:
        try:
            self.finish()
        except HostError:
            pass  # OVSDB is already right; only ovs-vswitchd's confirmation is missing


def finish_unplug(ctx: HostContext) -> None:
    """Wait for ovs-vswitchd to have removed the ports an unplug deleted."""
    pending = ctx.ovs_pending
    if pending is not None:
        pending.finish()


def _undo_for(ctx: HostContext, name: str, before: dict | None) -> Undo:
    """Undo of one committed port: delete it, or restore what it was."""
    def undo() -> None:
        c = client(ctx)
        if before is None:
            _call(ctx, c.del_ports, [name], if_exists=True)
        else:
            _call(ctx, c.transact, lambda: _restore_ops(name, before), "restore-port", name)

    return undo


# --------------------------------------------------------------------------
# plug --wait


def wait_plugged(ctx: HostContext, names: list[str], timeout: float) -> dict[str, dict]:
    """Block until OVS reports every port with an ofport ("network-vif-plugged").

    Returns ``{name: port_state}``.  On timeout raises :class:`HostError`
    saying which ports are missing what (not in OVSDB, an ``error`` such as
    the tap not existing yet, or ovs-vswitchd not having applied the change).
    """
    if not names:
        return {}
    c = client(ctx)
    deadline = time.monotonic() + timeout
    try:
        return c.wait_applied(names, timeout=timeout, fail_fast=False)
    except OvsApplyError as exc:
        raise HostError(exc.failed[0] if len(exc.failed) == 1 else None, "plug --wait",
                        f"not plugged after {timeout:g}s: {exc.problem}") from exc
    except OvsdbUnavailable as exc:
        left = max(0.0, deadline - time.monotonic())
        raise HostError(None, "plug --wait", f"{exc.problem} ({left:.1f}s of the wait left)") from exc


def port_names_now(ctx: HostContext, timeout: float = 1.0) -> set[str] | None:
    """Every port name in OVSDB now, from the handle's open session (None when
    no session is open or it cannot be read): the agent's watch for OVS
    ports removed behind its back. Never connects: an agent without OVS ports
    must not poll a socket that is not there."""
    c = ctx.ovsdb_client
    if c is None or c.closed:
        return None
    try:
        return set(c.port_names(timeout=timeout))
    except OvsdbError:
        return None


# ---------------------------------------------------------------------- gc


def garbage(ctx: HostContext, owned: dict[str, set[str]]) -> list[dict[str, str]]:
    """OVS ports carrying vifwire's owner mark that no record owns."""
    if not ctx.ovsdb:
        return []
    # No OVS on this host (its socket is not there) and no record uses OVS:
    # nothing of ours can be in it - said at once, not after the connect
    # timeout. Otherwise an unread OVSDB may hold our ports, and saying
    # "nothing found" would hide an outage.
    missing = ctx.ovsdb.startswith("unix:") and not os.path.exists(ctx.ovsdb[5:])
    if missing and not owned["ovs_ports"]:
        return []
    try:
        ports = _call(ctx, client(ctx).ports_with_external_id, OVS_OWNER_KEY)
    except OvsdbError as exc:
        raise HostError(None, "gc ovsdb", f"cannot read OVSDB at {ctx.ovsdb}: {exc}") from exc
    return [{"kind": "ovs_port", "name": n, "owner": (st or {}).get("external_ids", {}).get(OVS_OWNER_KEY, "")}
            for n, st in sorted(ports.items()) if n not in owned["ovs_ports"]]


def remove_garbage(ctx: HostContext, items: list[dict[str, str]]) -> None:
    c = client(ctx)
    cfg = _call(ctx, c.del_ports, [i["name"] for i in items], if_exists=True)
    if cfg is not None:
        _call(ctx, c.wait_cfg, cfg=cfg)
