"""Commands that touch the host: plug, unplug, check, list, gc, up.

Heavy modules (pyroute2, OVSDB, nftables, rich) are imported inside the
commands so the pure commands stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from vifwire.cli import options as opt
from vifwire.cli.main import _load, cli


def _host_options(f):
    f = click.option("--netns", default=None, metavar="NAME",
                     help="Network namespace to treat as the host (default: the current one).")(f)
    f = click.option("--state", default=None, metavar="PATH", envvar="VIFWIRE_STATE",
                     help="Attachment database [default: /var/lib/vifwire/state.db; env VIFWIRE_STATE].")(f)
    f = click.option("--ovsdb", default="unix:/var/run/openvswitch/db.sock", envvar="VIFWIRE_OVSDB",
                     show_default=True, metavar="unix:PATH|tcp:IP:PORT",
                     help="Where ovsdb-server listens (env VIFWIRE_OVSDB).")(f)
    f = click.option("--ovs-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
                     help="Seconds to wait for OVS to apply a change before failing and rolling back.")(f)
    return f


def _open(kw: dict[str, Any]):
    from vifwire.executors.base import HostContext
    from vifwire.store.sqlite import DEFAULT_PATH, Store

    netns = kw.get("netns")
    if netns:
        from vifwire.sandbox import netns as ns

        if not ns.exists(netns):
            raise click.BadParameter(f"network namespace {netns!r} does not exist", param_hint="--netns")
    ctx = HostContext(netns=netns, ovsdb=kw.get("ovsdb"), ovs_timeout=kw.get("ovs_timeout") or 10.0)
    return ctx, Store(kw.get("state") or DEFAULT_PATH)


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=True)


def _progress(total: int, label: str):
    """A progress bar on stderr for long runs (only when stderr is a terminal)."""
    if total < 20 or not sys.stderr.isatty():
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, console=__import__("rich.console").console.Console(stderr=True))
    task = prog.add_task(label, total=total)
    return prog, (lambda _pid: prog.advance(task))


def _fail_at() -> int | None:
    raw = os.environ.get("VIFWIRE_FAIL_AT_STEP")
    return int(raw) if raw and raw.isdigit() else None


# --------------------------------------------------------------------------- plug

@cli.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@_host_options
@opt.guest_options
@opt.host_fact_options
@click.option("--guest-netns", default=None, metavar="NAME",
              help="Container guests: create the tin end directly in this existing namespace.")
@click.option("--instance", default=None, metavar="ID", help="Instance (VM/container) id to record.")
@click.option("--wait", type=click.FloatRange(0, 600), default=None, metavar="SECONDS",
              help="Return only when OVS reports each OVS port up with an ofport ('vif plugged').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plug(file: Any, as_json: bool, instance: str | None, wait: float | None, **kw: Any) -> None:
    """Wire the host side of every port in FILE, each port all-or-nothing.

    A port either ends up fully wired and recorded, or the host is left exactly
    as it was (every step has an undo, run in reverse on failure). Plugging the
    same port again is harmless and repairs drift.
    """
    from vifwire.executors.engine import Wiring
    from vifwire.planner.generic import plan

    bindings = _load(file)
    if instance:
        bindings = [b.model_copy(update={"instance_id": instance}) for b in bindings]
    guest, facts = opt.guest_from(kw), opt.facts_from(kw)
    items = [(b, plan(b, facts, guest)) for b in bindings]
    ctx, store = _open(kw)
    with ctx, store:
        prog, tick = _progress(len(items), "plugging")
        w = Wiring(ctx, store, fail_at=_fail_at(), progress=tick)
        if prog:
            with prog:
                results = w.plug(items)
        else:
            results = w.plug(items)
        if wait is not None:
            _wait_plugged(ctx, results, wait)
    _report(results, as_json)
    if not all(r.ok for r in results):
        sys.exit(1)


def _wait_plugged(ctx, results, timeout: float) -> None:
    names = [s.args["name"] for r in results if r.ok for s in r.plan.steps if s.op == "ovs_port"]
    if not names:
        return
    from vifwire.executors import ovs

    ovs.wait_plugged(ctx, names, timeout)


def _report(results, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"port_id": r.port_id, "ok": r.ok, "strategy": r.plan.strategy,
                                "devices": r.plan.devices(), "changed_steps": r.changed, "error": r.error,
                                "guest": r.plan.guest.model_dump(mode="json") if r.plan.guest else None}
                               for r in results], indent=2))
    else:
        from rich.table import Table

        t = Table(title="plug", title_justify="left")
        for col in ("port", "strategy", "devices", "result"):
            t.add_column(col)
        for r in results:
            t.add_row(r.port_id, r.plan.strategy, " ".join(r.plan.devices()) or "-",
                      ("plugged" if r.changed else "unchanged") if r.ok else "[red]failed, rolled back[/red]")
        _console().print(t)
    for r in results:
        if not r.ok:
            click.echo(f"vifwire: {r.error}", err=True)


# --------------------------------------------------------------------------- unplug

@cli.command()
@click.argument("port_ids", nargs=-1)
@click.option("--file", "file", type=click.File("r", encoding="utf-8", errors="surrogateescape"), default=None,
              help="Unplug the ports in this binding file (works without a record, finds devices by name or MAC).")
@click.option("--all", "all_", is_flag=True, help="Unplug every recorded port (in this namespace).")
@_host_options
@opt.host_fact_options
@click.option("--json", "as_json", is_flag=True)
def unplug(port_ids: tuple[str, ...], file: Any, all_: bool, as_json: bool, **kw: Any) -> None:
    """Remove the wiring of ports (by PORT_ID from the record, or from --file).

    Unplugging something that is not there succeeds (CNI DEL semantics). Many
    ports are removed in bulk: one OVSDB transaction, one link-group delete.
    """
    from vifwire.executors.engine import Wiring

    ctx, store = _open(kw)
    with ctx, store:
        targets: list[Any] = []
        missing: list[str] = []
        if all_:
            targets += store.all(netns=ctx.netns)
        for pid in port_ids:
            a = store.get(pid)
            if a is None:
                missing.append(pid)
            else:
                targets.append(a)
        if file is not None:
            from vifwire.planner.generic import plan

            facts = opt.facts_from(kw)
            for b in _load(file):
                a = store.get(b.port_id)
                targets.append(a if a is not None else plan(b, facts, render=False))
        if not targets and not missing and not all_:
            raise click.UsageError("give PORT_IDs, --file FILE or --all")
        problems = Wiring(ctx, store).unplug(targets)
    if as_json:
        click.echo(json.dumps({"unplugged": [getattr(t, "port_id", None) for t in targets],
                               "not_recorded": missing, "problems": problems}, indent=2))
    else:
        for t in targets:
            click.echo(f"unplugged {t.port_id}")
        for pid in missing:
            click.echo(f"{pid}: no record, nothing to do")
    for p in problems:
        click.echo(f"vifwire: {p}", err=True)
    if problems:
        sys.exit(1)


# --------------------------------------------------------------------------- check

@cli.command()
@click.argument("port_ids", nargs=-1)
@_host_options
@click.option("--json", "as_json", is_flag=True)
def check(port_ids: tuple[str, ...], as_json: bool, **kw: Any) -> None:
    """Compare the host with the records: exit 0 if clean, 3 if anything drifted.

    Checks each recorded device (exists, up, MTU, MAC, master), OVS port,
    route, sysctl and filter entry.
    """
    from vifwire.executors.engine import Wiring

    ctx, store = _open(kw)
    with ctx, store:
        atts = [a for a in store.all(netns=ctx.netns) if not port_ids or a.port_id in port_ids]
        drift = Wiring(ctx, store).check(atts)
    dirty = {k: v for k, v in drift.items() if v}
    if as_json:
        click.echo(json.dumps({"checked": len(drift), "drift": dirty}, indent=2))
    else:
        for pid, lines in dirty.items():
            for line in lines:
                click.echo(f"{pid}: {line}")
        click.echo(f"{len(drift)} port(s) checked, {len(dirty)} with drift")
    if dirty:
        sys.exit(3)


# --------------------------------------------------------------------------- list

@cli.command("list")
@_host_options
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool, **kw: Any) -> None:
    """Show the recorded attachments."""
    from vifwire.store.sqlite import DEFAULT_PATH, Store

    with Store(kw.get("state") or DEFAULT_PATH) as store:
        atts = store.all()
    if as_json:
        click.echo(json.dumps([a.to_json() for a in atts], indent=2))
        return
    from rich.table import Table

    t = Table(title=f"{len(atts)} attachment(s)", title_justify="left")
    for col in ("port", "instance", "vif_type", "strategy", "devices", "netns", "status"):
        t.add_column(col)
    for a in atts:
        t.add_row(a.port_id, a.instance_id or "-", a.vif_type, a.strategy, " ".join(a.devices) or "-",
                  a.netns or "-", a.status)
    _console().print(t)


# --------------------------------------------------------------------------- gc

@cli.command()
@_host_options
@click.option("--force", is_flag=True, help="Remove what is found (default: only list it).")
@click.option("--json", "as_json", is_flag=True)
def gc(force: bool, as_json: bool, **kw: Any) -> None:
    """Find wiring that carries vifwire's marks but that no record owns; --force removes it."""
    from vifwire.executors.engine import Wiring

    ctx, store = _open(kw)
    with ctx, store:
        w = Wiring(ctx, store)
        garbage = w.garbage(store.all(netns=ctx.netns))
        if force:
            w.collect(garbage)
    if as_json:
        click.echo(json.dumps({"garbage": garbage, "removed": force}, indent=2))
    else:
        for g in garbage:
            click.echo(f"{g['kind']:10} {g['name']}" + ("  removed" if force else ""))
        click.echo(f"{len(garbage)} item(s)" + (" removed" if force else "; run with --force to remove"))


from vifwire.cli import up as _up  # noqa: E402,F401  (registers `up`)
