"""``vifwire state``: the attachment database itself (``state rebuild``).

Parses options, calls :meth:`vifwire.service.WiringService.rebuild` and prints its
result; the recovery logic lives in the service.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vifwire.cli.common import host_options, service, verbose_options


@click.group()
def state() -> None:
    """The attachment database (recovery)."""


@state.command()
@host_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@verbose_options
def rebuild(as_json: bool, **kw: Any) -> None:
    """Recreate the records of a namespace's ports from the host's ownership marks.

    A database that cannot be opened as vifwire's (corrupt, not vifwire's) is
    moved aside to PATH.broken-<timestamp> (with its -wal/-shm) and a fresh one
    is made; one record per port id found in the marks (links aliased
    vifwire:<port id>, OVS rows with external_ids:vifwire-owner, protocol-158
    routes, proxy NDP and filter entries on its devices) is written with status
    `recovered`: enough to unplug the port (`vifwire unplug --all` or by id);
    `check` reports it as drift until the port is plugged again. What cannot
    be mapped to a port id is listed.
    """
    with service(kw) as svc:
        res = svc.rebuild()
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
        return
    for path in res.moved_aside:
        click.echo(f"moved aside: {path}")
    click.echo(f"recovered {len(res.recovered)} port(s) into {res.state}"
               + (f"; {len(res.kept)} already recorded, kept" if res.kept else ""))
    for u in res.unmapped:
        click.echo(f"not mapped: {u.line()}")
