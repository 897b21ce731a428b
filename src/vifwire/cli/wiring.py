"""Commands that touch the host: plug, unplug, check, list, gc.

Each runs one of two ways: in-process (it calls
:class:`vifwire.service.WiringService`) or, with ``--agent SOCKET``, as a thin
client of the per-host agent (:mod:`vifwire.client`). Either way the command
ends up holding the same JSON-shaped data - the results' ``to_json()``,
which is exactly what the agent's API answers with - and one formatter per
command (the ``show_*`` functions) prints it and picks the exit code, so the
two paths cannot drift apart in what they say.

The ``--agent`` path must stay light (one request in a short process): it
imports neither the service nor the model, and rich only for a terminal.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import click

from vifwire.clikit import options as opt
from vifwire.cli.common import (TABLE_LIMIT, agent_client, agent_option, counts, explicit, fail_at, host_options,
                                load_file, progress, service, table, verbose_options, verbosity)

_FILE = click.File("r", encoding="utf-8", errors="surrogateescape")

#: Plug options the agent takes per request (``facts``/``guest`` of ``POST
#: /v1/ports``); with --agent only those the user gave are sent, the rest
#: come from the agent's own command line.
FACT_OPTIONS = ("hypervisor", "libvirt_version", "firewall", "ovs_datapath", "anti_spoof", "lxd_instance", "lxd_socket",
                "guest_netns")
GUEST_OPTIONS = ("virt_type", "model", "queues", "rx_queue_size", "tx_queue_size", "packed", "bandwidth_in",
                 "bandwidth_out", "vf_netdev", "vdpa_dev")


# --------------------------------------------------------------------------- plug

@click.command()
@click.argument("file", type=_FILE)
@agent_option
@host_options
@opt.guest_options
@opt.host_fact_options
@opt.lxd_options
@click.option("--guest-netns", default=None, metavar="NAME",
              help="Container guests: create the tin end directly in this existing namespace.")
@click.option("--instance", default=None, metavar="ID", help="Instance (VM/container) id to record.")
@click.option("--wait", type=click.FloatRange(0, 600), default=None, metavar="SECONDS",
              help="Return only when OVS reports each OVS port up with an ofport ('vif plugged').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@verbose_options
@click.pass_context
def plug(ctx: click.Context, file: Any, agent: str | None, as_json: bool, instance: str | None,
         wait: float | None, **kw: Any) -> None:
    """Wire the host side of every port in FILE, each port all-or-nothing.

    A port either ends up fully wired and recorded, or the host is left exactly
    as it was (every step has an undo, run in reverse on failure). Plugging the
    same port again is harmless and repairs drift. Above 50 ports the table is
    summarised (-v shows it all); failures are always listed.

    With --agent the per-host agent does the work; host facts and guest
    options given here override the agent's own for this request.

    A vdpa port's vhost-vdpa device is looked up in /sys by its VF's PCI
    address, unless --vdpa-dev names it.

    Containers: with --hypervisor lxd --lxd-instance NAME each port's NIC
    (the tin end, a 'physical' NIC named after the tap) is also added to that
    LXD instance through LXD's API, last, hot-plugged if it is running; a
    failure there (no such instance, no LXD at --lxd-socket) rolls the host
    back like any other step (docs/lxd.md).
    """
    if agent:
        client = agent_client(ctx, agent)
        given = explicit(ctx, FACT_OPTIONS + GUEST_OPTIONS)
        ports = client.plug(opt.read_input(file), {k: fact_json(k, kw[k]) for k in FACT_OPTIONS if k in given},
                            {k: guest_json(k, kw[k]) for k in GUEST_OPTIONS if k in given}, wait=wait, instance=instance,
                            origin=getattr(file, "name", "<input>"))
        show_plug(ports, as_json)
        return
    bindings = load_file(file)
    guest, facts = opt.with_host_devices(opt.guest_from(kw), bindings), opt.facts_from(kw)
    with service(kw) as svc:
        prog, tick = progress(len(bindings), "plugging")
        if prog:
            with prog:
                results = svc.plug(bindings, facts, guest, instance=instance, wait=wait, progress=tick,
                                   fail_at=fail_at())
        else:
            results = svc.plug(bindings, facts, guest, instance=instance, wait=wait, fail_at=fail_at())
    show_plug([r.to_json() for r in results], as_json)


def fact_json(name: str, value: Any) -> Any:
    """A host-fact option's value as the agent's API (and fleet mode's keys) take it."""
    return bool(value) if name == "firewall" else value


def guest_json(name: str, value: Any) -> Any:
    """A guest option's value as the agent's API (and fleet mode's keys) take it."""
    if name in ("rx_queue_size", "tx_queue_size"):
        return int(value) if value else None
    if name in ("bandwidth_in", "bandwidth_out"):
        return {"average": value.average, "peak": value.peak, "burst": value.burst}
    if name == "packed":
        return bool(value)
    return value


def port_state(p: dict[str, Any]) -> str:
    """What a plug did to one port (PortResult.state, from its JSON)."""
    return ("plugged" if p.get("changed_steps") else "unchanged") if p.get("ok") else "failed"


def show_plug(ports: list[dict[str, Any]], as_json: bool) -> None:
    """Print a plug's port results; exit 1 if any port failed."""
    if as_json:
        click.echo(json.dumps(ports, indent=2))
    else:
        def summary() -> list[str]:
            return [counts("strategy", Counter(p["strategy"] for p in ports)),
                    counts("result", Counter(port_state(p) for p in ports))]

        table("plug", ["port", "strategy", "devices", "result"],
              [[p["port_id"], p["strategy"], " ".join(p["devices"]) or "-",
                {"plugged": "plugged", "unchanged": "unchanged"}.get(port_state(p), "[red]failed, rolled back[/red]")]
               for p in ports], summary)
    for line in failure_lines(ports):
        click.echo(f"vifwire: {line}", err=True)
    if not all(p.get("ok") for p in ports):
        sys.exit(1)


def failure_lines(ports: list[dict[str, Any]]) -> list[str]:
    """One line per distinct failure: a cause shared by many ports (OVSDB down,
    a missing uplink) is said once with the count; each port's own line is in
    --json."""
    by_cause: dict[str, list[str]] = {}
    for p in ports:
        if p.get("ok"):
            continue
        prefix = f"port {p['port_id']}: "
        error = p.get("error")
        cause = error[len(prefix):] if error and error.startswith(prefix) else (error or "failed")
        by_cause.setdefault(cause, []).append(p["port_id"])
    lines = []
    for cause, ids in by_cause.items():
        if len(ids) == 1:
            lines.append(f"port {ids[0]}: {cause}")
        else:
            lines.append(f"{len(ids)} ports ({ids[0]} and {len(ids) - 1} more): {cause}")
    return lines


# --------------------------------------------------------------------------- unplug

@click.command()
@click.argument("port_ids", nargs=-1)
@click.option("--file", "file", type=_FILE, default=None,
              help="Unplug the ports in this binding file (works without a record, finds devices by name or MAC).")
@click.option("--all", "all_", is_flag=True, help="Unplug every recorded port (in this namespace).")
@agent_option
@host_options
@opt.host_fact_options
@opt.lxd_options
@click.option("--json", "as_json", is_flag=True)
@verbose_options
@click.pass_context
def unplug(ctx: click.Context, port_ids: tuple[str, ...], file: Any, all_: bool, agent: str | None, as_json: bool,
           **kw: Any) -> None:
    """Remove the wiring of ports (by PORT_ID from the record, or from --file).

    Unplugging something that is not there succeeds (CNI DEL semantics). Many
    ports are removed in bulk: one OVSDB transaction, one nftables
    transaction, one link-group delete. With --agent the agent unplugs, with
    its own host facts.

    A port plugged with --lxd-instance is first detached from its LXD
    instance (its device found by name, else by the port's MAC for devices
    older versions named differently); LXD gives the tin end back and the
    pair is deleted. --lxd-instance here applies to --file ports without a
    record (docs/lxd.md).
    """
    if agent:
        # the delete API takes no facts: refuse rather than silently unplug with others
        from vifwire.client import parse_ports

        client = agent_client(ctx, agent, refuse=FACT_OPTIONS[:-1])
        docs = parse_ports(opt.read_input(file), getattr(file, "name", "<input>")) if file is not None else []
        if not port_ids and not docs and not all_:
            raise click.UsageError("give PORT_IDs, --file FILE or --all")
        show_unplug(client.unplug(port_ids, docs, all_), as_json)
        return
    bindings = load_file(file) if file is not None else []
    if not port_ids and not bindings and not all_:
        raise click.UsageError("give PORT_IDs, --file FILE or --all")
    with service(kw) as svc:
        res = svc.unplug(port_ids, bindings=bindings, all_ports=all_, facts=opt.facts_from(kw))
    show_unplug(res.to_json(), as_json)


def show_unplug(res: dict[str, Any], as_json: bool) -> None:
    """Print an unplug's result; exit 1 if something could not be removed."""
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        unplugged = res["unplugged"]
        if len(unplugged) > TABLE_LIMIT and verbosity() == 0:
            click.echo(f"unplugged {len(unplugged)} port(s)")
        else:
            click.echo("".join(f"unplugged {pid}\n" for pid in unplugged), nl=False)
        for pid in res["not_recorded"]:
            click.echo(f"{pid}: no record, nothing to do")
    for p in res["problems"]:
        click.echo(f"vifwire: {p}", err=True)
    if res["problems"]:
        sys.exit(1)


# --------------------------------------------------------------------------- check

@click.command()
@click.argument("port_ids", nargs=-1)
@agent_option
@host_options
@click.option("--json", "as_json", is_flag=True)
@verbose_options
@click.pass_context
def check(ctx: click.Context, port_ids: tuple[str, ...], agent: str | None, as_json: bool, **kw: Any) -> None:
    """Compare the host with the records: exit 0 if clean, 3 if anything drifted.

    Checks each recorded device (exists, up, MTU, MAC, master), OVS port,
    route, sysctl and filter entry, reading each kind of host state once.
    """
    if agent:
        res = agent_client(ctx, agent).check(port_ids or None)
    else:
        with service(kw) as svc:
            res = svc.check(port_ids or None).to_json()
    show_check(res, as_json)


def show_check(res: dict[str, Any], as_json: bool) -> None:
    """Print a check's drift; exit 3 if there is any."""
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        for pid, lines in res["drift"].items():
            for line in lines:
                click.echo(f"{pid}: {line}")
        click.echo(f"{res['checked']} port(s) checked, {len(res['drift'])} with drift")
    if res["drift"]:
        sys.exit(3)


# --------------------------------------------------------------------------- list

@click.command("list")
@agent_option
@host_options
@click.option("--json", "as_json", is_flag=True)
@verbose_options
@click.pass_context
def list_cmd(ctx: click.Context, agent: str | None, as_json: bool, **kw: Any) -> None:
    """Show the recorded attachments (summarised above 50; -v for all).

    In-process every namespace's records are listed; an agent lists those of
    the namespace it wires.
    """
    if agent:
        atts = agent_client(ctx, agent).list()
    else:
        from vifwire.service.wiring import WiringService

        with WiringService(state=kw.get("state")) as svc:  # records only: the host is not opened
            atts = [a.to_json() for a in svc.list()]
    show_list(atts, as_json)


def show_list(atts: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(atts, indent=2))
        return

    def summary() -> list[str]:
        return [counts("strategy", Counter(a["strategy"] for a in atts)),
                counts("status", Counter(a["status"] for a in atts)),
                counts("netns", Counter(a["netns"] or "-" for a in atts))]

    table(f"{len(atts)} attachment(s)", ["port", "instance", "vif_type", "strategy", "devices", "netns", "status"],
          [[a["port_id"], a["instance_id"] or "-", a["vif_type"], a["strategy"], " ".join(a["devices"]) or "-",
            a["netns"] or "-", a["status"]] for a in atts], summary)


# --------------------------------------------------------------------------- gc

@click.command()
@agent_option
@host_options
@click.option("--force", is_flag=True, help="Remove what is found (default: only list it).")
@click.option("--json", "as_json", is_flag=True)
@verbose_options
@click.pass_context
def gc(ctx: click.Context, agent: str | None, force: bool, as_json: bool, **kw: Any) -> None:
    """Find wiring that carries vifwire's marks but that no record owns; --force removes it.

    Exits 1 if a backend that may hold vifwire's things (OVSDB) cannot be read:
    "nothing found" is only said when everything was looked at.
    """
    if agent:
        res = agent_client(ctx, agent).gc(force)
    else:
        with service(kw) as svc:
            res = svc.gc(force).to_json()
    show_gc(res, force, as_json)


def show_gc(res: dict[str, Any], force: bool, as_json: bool) -> None:
    """Print what gc found (or removed); exit 1 if a backend could not be read."""
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        for g in res["garbage"]:
            click.echo(f"{g['kind']:10} {g['name']}" + ("  removed" if force else ""))
        click.echo(f"{len(res['garbage'])} item(s)" + (" removed" if force else "; run with --force to remove"))
    for p in res["problems"]:
        click.echo(f"vifwire: {p}", err=True)
    if res["problems"]:
        sys.exit(1)
