"""Commands that touch the host: plug, unplug, check, list, gc.

Each parses its options, calls :class:`vifwire.service.WiringService` and
formats the typed result (a table, or ``--json``); the use cases live in the
service.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from vifwire.clikit import options as opt
from vifwire.cli.common import (counts, fail_at, host_options, load_file, progress, service, table,
                                verbose_options)

_FILE = click.File("r", encoding="utf-8", errors="surrogateescape")


# --------------------------------------------------------------------------- plug

@click.command()
@click.argument("file", type=_FILE)
@host_options
@opt.guest_options
@opt.host_fact_options
@click.option("--guest-netns", default=None, metavar="NAME",
              help="Container guests: create the tin end directly in this existing namespace.")
@click.option("--instance", default=None, metavar="ID", help="Instance (VM/container) id to record.")
@click.option("--wait", type=click.FloatRange(0, 600), default=None, metavar="SECONDS",
              help="Return only when OVS reports each OVS port up with an ofport ('vif plugged').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@verbose_options
def plug(file: Any, as_json: bool, instance: str | None, wait: float | None, **kw: Any) -> None:
    """Wire the host side of every port in FILE, each port all-or-nothing.

    A port either ends up fully wired and recorded, or the host is left exactly
    as it was (every step has an undo, run in reverse on failure). Plugging the
    same port again is harmless and repairs drift. Above 50 ports the table is
    summarised (-v shows it all); failures are always listed.
    """
    bindings = load_file(file)
    guest, facts = opt.guest_from(kw), opt.facts_from(kw)
    with service(kw) as svc:
        prog, tick = progress(len(bindings), "plugging")
        if prog:
            with prog:
                results = svc.plug(bindings, facts, guest, instance=instance, wait=wait, progress=tick,
                                   fail_at=fail_at())
        else:
            results = svc.plug(bindings, facts, guest, instance=instance, wait=wait, fail_at=fail_at())
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        from vifwire.service.results import summarise

        def summary() -> list[str]:
            s = summarise(results)
            return [counts("strategy", s["strategy"]), counts("result", s["state"])]

        table("plug", ["port", "strategy", "devices", "result"],
              [[r.port_id, r.strategy, " ".join(r.devices) or "-",
                {"plugged": "plugged", "unchanged": "unchanged"}.get(r.state, "[red]failed, rolled back[/red]")]
               for r in results], summary)
    for line in failure_lines(results):
        click.echo(f"vifwire: {line}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)


def failure_lines(results: list) -> list[str]:
    """One line per distinct failure: a cause shared by many ports (OVSDB down,
    a missing uplink) is said once with the count; each port's own line is in
    --json."""
    by_cause: dict[str, list[str]] = {}
    for r in results:
        if r.ok:
            continue
        prefix = f"port {r.port_id}: "
        cause = r.error[len(prefix):] if r.error and r.error.startswith(prefix) else (r.error or "failed")
        by_cause.setdefault(cause, []).append(r.port_id)
    lines = []
    for cause, ports in by_cause.items():
        if len(ports) == 1:
            lines.append(f"port {ports[0]}: {cause}")
        else:
            lines.append(f"{len(ports)} ports ({ports[0]} and {len(ports) - 1} more): {cause}")
    return lines


# --------------------------------------------------------------------------- unplug

@click.command()
@click.argument("port_ids", nargs=-1)
@click.option("--file", "file", type=_FILE, default=None,
              help="Unplug the ports in this binding file (works without a record, finds devices by name or MAC).")
@click.option("--all", "all_", is_flag=True, help="Unplug every recorded port (in this namespace).")
@host_options
@opt.host_fact_options
@click.option("--json", "as_json", is_flag=True)
@verbose_options
def unplug(port_ids: tuple[str, ...], file: Any, all_: bool, as_json: bool, **kw: Any) -> None:
    """Remove the wiring of ports (by PORT_ID from the record, or from --file).

    Unplugging something that is not there succeeds (CNI DEL semantics). Many
    ports are removed in bulk: one OVSDB transaction, one nftables
    transaction, one link-group delete.
    """
    bindings = load_file(file) if file is not None else []
    if not port_ids and not bindings and not all_:
        raise click.UsageError("give PORT_IDs, --file FILE or --all")
    with service(kw) as svc:
        res = svc.unplug(port_ids, bindings=bindings, all_ports=all_, facts=opt.facts_from(kw))
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    else:
        from vifwire.cli.common import TABLE_LIMIT, verbosity

        if len(res.unplugged) > TABLE_LIMIT and verbosity() == 0:
            click.echo(f"unplugged {len(res.unplugged)} port(s)")
        else:
            click.echo("".join(f"unplugged {pid}\n" for pid in res.unplugged), nl=False)
        for pid in res.not_recorded:
            click.echo(f"{pid}: no record, nothing to do")
    for p in res.problems:
        click.echo(f"vifwire: {p}", err=True)
    if res.problems:
        sys.exit(1)


# --------------------------------------------------------------------------- check

@click.command()
@click.argument("port_ids", nargs=-1)
@host_options
@click.option("--json", "as_json", is_flag=True)
@verbose_options
def check(port_ids: tuple[str, ...], as_json: bool, **kw: Any) -> None:
    """Compare the host with the records: exit 0 if clean, 3 if anything drifted.

    Checks each recorded device (exists, up, MTU, MAC, master), OVS port,
    route, sysctl and filter entry, reading each kind of host state once.
    """
    with service(kw) as svc:
        res = svc.check(port_ids or None)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    else:
        for pid, lines in res.drift.items():
            for line in lines:
                click.echo(f"{pid}: {line}")
        click.echo(f"{res.checked} port(s) checked, {len(res.drift)} with drift")
    if not res.clean:
        sys.exit(3)


# --------------------------------------------------------------------------- list

@click.command("list")
@host_options
@click.option("--json", "as_json", is_flag=True)
@verbose_options
def list_cmd(as_json: bool, **kw: Any) -> None:
    """Show the recorded attachments (summarised above 50; -v for all)."""
    from vifwire.service.wiring import WiringService

    with WiringService(state=kw.get("state")) as svc:  # records only: the host is not opened
        atts = svc.list()
    if as_json:
        click.echo(json.dumps([a.to_json() for a in atts], indent=2))
        return
    from collections import Counter

    def summary() -> list[str]:
        return [counts("strategy", Counter(a.strategy for a in atts)),
                counts("status", Counter(a.status for a in atts)),
                counts("netns", Counter(a.netns or "-" for a in atts))]

    table(f"{len(atts)} attachment(s)", ["port", "instance", "vif_type", "strategy", "devices", "netns", "status"],
          [[a.port_id, a.instance_id or "-", a.vif_type, a.strategy, " ".join(a.devices) or "-", a.netns or "-",
            a.status] for a in atts], summary)


# --------------------------------------------------------------------------- gc

@click.command()
@host_options
@click.option("--force", is_flag=True, help="Remove what is found (default: only list it).")
@click.option("--json", "as_json", is_flag=True)
@verbose_options
def gc(force: bool, as_json: bool, **kw: Any) -> None:
    """Find wiring that carries vifwire's marks but that no record owns; --force removes it.

    Exits 1 if a backend that may hold vifwire's things (OVSDB) cannot be read:
    "nothing found" is only said when everything was looked at.
    """
    with service(kw) as svc:
        res = svc.gc(force)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    else:
        for g in res.items:
            click.echo(f"{g.kind:10} {g.name}" + ("  removed" if force else ""))
        click.echo(f"{len(res.items)} item(s)" + (" removed" if force else "; run with --force to remove"))
    for p in res.problems:
        click.echo(f"vifwire: {p}", err=True)
    if not res.ok:
        sys.exit(1)
