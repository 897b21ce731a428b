"""``vifwire fleet``: the controller's side of fleet mode, talking only to etcd (docs/fleet.md).

It writes desired ports and reads what the agents report; it never touches a
host. Bindings are checked with the same loader the agents use before they
are written, so a bad file is refused here, once, rather than failing on
every host.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from vifwire.cli.common import verbose_options
from vifwire.clikit import options as opt


def etcd_options(fn):
    for o in reversed([
        click.option("--etcd", envvar="VIFWIRE_ETCD", required=True, metavar="URL[,URL...]",
                     help="etcd endpoints. [env VIFWIRE_ETCD]"),
        click.option("--etcd-cacert", default=None, metavar="FILE", help="CA that signed etcd's certificate."),
        click.option("--etcd-cert", default=None, metavar="FILE", help="Client certificate."),
        click.option("--etcd-key", default=None, metavar="FILE", help="Key of the client certificate."),
    ]):
        fn = o(fn)
    return fn


def _etcd(kw: dict[str, Any]):
    from vifwire.fleetkit.etcd import Etcd

    urls = [u.strip() for u in kw.pop("etcd").split(",") if u.strip()]
    return Etcd(urls, cacert=kw.pop("etcd_cacert"), cert=kw.pop("etcd_cert"), key=kw.pop("etcd_key"))


def _host(value: str) -> str:
    from vifwire.fleetkit import keys

    try:
        keys.check_host(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    return value


@click.group()
def fleet() -> None:
    """Desired ports in etcd, converged by each host's agent (vifwire agent --etcd).

    \b
    Examples:
      vifwire fleet apply ports.json --host hv1 --etcd http://127.0.0.1:2379
      vifwire fleet status --host hv1 --wait 60
      vifwire fleet hosts
    """


@fleet.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--host", required=True, metavar="NAME", help="The host whose desired ports these are.")
@etcd_options
@opt.host_fact_options
@opt.guest_options
@verbose_options
@click.pass_context
def apply(ctx: click.Context, file, host: str, **kw: Any) -> None:
    """Put the ports of FILE (one or a list) as HOST's desired ports.

    Each port is one key; the host facts and guest options given here are
    stored with it. Ports already desired and not in FILE are left as they
    are (delete them with `fleet delete`).
    """
    from vifwire.fleetkit import keys
    from vifwire.model.loader import load_text
    from vifwire.model.text import documents, parse_document

    host = _host(host)
    text = file.read()
    bindings = load_text(text, origin=file.name)  # refuses a bad file with the loader's lines (exit 2)
    docs = documents(parse_document(text, file.name))
    from vifwire.cli.common import explicit
    from vifwire.cli.wiring import FACT_OPTIONS, GUEST_OPTIONS, fact_json, guest_json

    given = explicit(ctx, FACT_OPTIONS + GUEST_OPTIONS)  # only what was asked for: the agent's own defaults otherwise
    facts = {k: fact_json(k, kw.pop(k)) for k in FACT_OPTIONS if k in given}
    guest = {k: guest_json(k, kw.pop(k)) for k in GUEST_OPTIONS if k in given}
    items = {}
    for b, doc in zip(bindings, docs):
        value: dict[str, Any] = {"ports": doc}
        if facts:
            value["facts"] = facts
        if guest:
            value["guest"] = guest
        items[keys.desired_key(host, b.port_id)] = json.dumps(value, sort_keys=True).encode()
    etcd = _etcd(kw)
    rev = etcd.put_many(items)
    click.echo(f"{len(items)} port(s) desired on {host} (revision {rev})")


@fleet.command()
@click.argument("port_ids", nargs=-1, required=True)
@click.option("--host", required=True, metavar="NAME")
@etcd_options
@verbose_options
def delete(port_ids: tuple[str, ...], host: str, **kw: Any) -> None:
    """Stop desiring PORT_IDs on HOST (its agent unplugs them)."""
    from vifwire.fleetkit import keys

    host = _host(host)
    rev = _etcd(kw).delete([keys.desired_key(host, p) for p in port_ids])
    click.echo(f"{len(port_ids)} port(s) no longer desired on {host} (revision {rev})")


@fleet.command()
@click.option("--host", default=None, metavar="NAME", help="Only this host (default: every host).")
@click.option("--wait", type=click.FloatRange(0, 86400), default=None, metavar="SECONDS",
              help="Return when every desired port has a status for its latest revision (exit 1 if any failed).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@etcd_options
@verbose_options
def status(host: str | None, wait: float | None, as_json: bool, **kw: Any) -> None:
    """Desired ports against what the agents report."""
    from vifwire.errors import VifwireError

    etcd = _etcd(kw)
    deadline = time.monotonic() + (wait or 0)
    while True:
        rows = _rows(etcd, _host(host) if host else None)
        pending = [r for r in rows if r["state"] == "pending"]
        if wait is None or not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
    failed = [r for r in rows if r["state"] == "failed"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows)
    if wait is not None and pending:
        raise VifwireError(f"{len(pending)} desired port(s) have no status for their latest revision "
                           f"after {wait:g} s")
    if failed and wait is not None:
        raise VifwireError(f"{len(failed)} port(s) failed")


def _rows(etcd, host: str | None) -> list[dict[str, Any]]:
    from vifwire.fleetkit import keys

    desired, _ = etcd.get_prefix(keys.PREFIX + "/hosts/" + (f"{host}/" if host else ""))
    statuses, _ = etcd.get_prefix(keys.PREFIX + "/status/" + (f"{host}/" if host else ""))
    by_key = {}
    for kv in statuses:
        h, _, pid = kv.key[len(keys.PREFIX + "/status/"):].partition("/")
        by_key[(h, pid)] = json.loads(kv.value)
    rows = []
    for kv in desired:
        h, _, rest = kv.key[len(keys.PREFIX + "/hosts/"):].partition("/")
        pid = rest[len("ports/"):]
        st = by_key.get((h, pid))
        state = "pending" if st is None or st.get("desired_revision", 0) < kv.mod_revision else st["state"]
        rows.append({"host": h, "port_id": pid, "state": state, "desired_revision": kv.mod_revision,
                     "error": (st or {}).get("error"), "strategy": (st or {}).get("strategy"),
                     "devices": (st or {}).get("devices") or [], "guest": (st or {}).get("guest")})
    return rows


def _table(rows: list[dict[str, Any]]) -> None:
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    counts = Counter((r["host"], r["state"]) for r in rows)
    t = Table("host", "plugged", "failed", "pending", box=None)
    for h in sorted({r["host"] for r in rows}):
        t.add_row(h, *(str(counts[(h, s)]) for s in ("plugged", "failed", "pending")))
    Console(highlight=False).print(t)
    for r in rows:
        if r["state"] == "failed":
            click.echo(f"{r['host']} {r['port_id']}: {r['error']}")


@fleet.command()
@click.option("--json", "as_json", is_flag=True)
@etcd_options
@verbose_options
def hosts(as_json: bool, **kw: Any) -> None:
    """Agents alive (their liveness keys, held by leases)."""
    from vifwire.fleetkit import keys

    items, _ = _etcd(kw).get_prefix(keys.AGENTS_PREFIX)
    agents = [json.loads(kv.value) for kv in items]
    if as_json:
        click.echo(json.dumps(agents, indent=2))
        return
    for a in agents:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a.get("started", 0)))
        click.echo(f"{a.get('host')}  version {a.get('version')}  up since {started} UTC")
    click.echo(f"{len(agents)} agent(s) alive")
