"""What every command shares: input loading, host options, verbosity and logging, output helpers.

Heavy modules (rich, the executors) are imported inside functions so that
``vifwire --help``, ``render`` and ``list`` start fast.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import click

from vifwire.cli import options as opt

#: Above this many rows a result table is summarised (counts by strategy and
#: state, failures in full); ``--verbose`` shows every row, ``--json`` is the machine form.
TABLE_LIMIT = 50

_LEVELS = ("debug", "info", "warning", "error")

#: The CLI's one log handler (added once, however often options configure logging).
_STDERR = logging.StreamHandler(sys.stderr)
_STDERR.setFormatter(logging.Formatter("vifwire: %(levelname)s %(name)s: %(message)s"))


def load_file(file: Any):
    """A binding file (or stdin) -> validated bindings; InvalidInput lists every problem."""
    from vifwire.service.wiring import load

    return load(opt.read_input(file), origin=getattr(file, "name", "<input>"))


def verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get("vifwire.verbose", 0)) if ctx else 0


def _set_verbose(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value:
        ctx.meta["vifwire.verbose"] = max(int(ctx.meta.get("vifwire.verbose", 0)), value)
        configure_logging()
    return value


def _set_level(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        ctx.meta["vifwire.log_level"] = value
        configure_logging()
    return value


def configure_logging() -> None:
    """stderr logging at WARNING, INFO with -v, DEBUG with -vv, or --log-level."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx else {}
    level_name = meta.get("vifwire.log_level")
    if level_name:
        level = getattr(logging, level_name.upper())
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(int(meta.get("vifwire.verbose", 0)), logging.DEBUG)
    root = logging.getLogger("vifwire")
    if _STDERR not in root.handlers:
        root.addHandler(_STDERR)
        root.propagate = False
    root.setLevel(level)


verbose_options = opt.compose(
    click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbose,
                 help="More output: full tables; -v logs INFO, -vv DEBUG (what each step did, phase timings)."),
    click.option("--log-level", type=click.Choice(_LEVELS, case_sensitive=False), default=None,
                 expose_value=False, callback=_set_level, help="Log level on stderr [default: warning]."),
)


def host_options(f: Callable) -> Callable:
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


def service(kw: dict[str, Any]):
    """The WiringService for the host options of a command."""
    from vifwire.service.wiring import WiringService

    netns = kw.get("netns")
    if netns:
        path = netns if "/" in netns else os.path.join("/var/run/netns", netns)
        if not os.path.exists(path):
            raise click.BadParameter(f"network namespace {netns!r} does not exist", param_hint="--netns")
    return WiringService(netns=netns, state=kw.get("state"), ovsdb=kw.get("ovsdb"),
                         ovs_timeout=kw.get("ovs_timeout") or 10.0)


def fail_at() -> int | None:
    """Fault injection for tests: VIFWIRE_FAIL_AT_STEP=k fails step k of every port."""
    raw = os.environ.get("VIFWIRE_FAIL_AT_STEP")
    return int(raw) if raw and raw.isdigit() else None


def console():
    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=True)


def progress(total: int, label: str):
    """A progress bar on stderr for long runs (only when stderr is a terminal)."""
    if total < 20 or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, console=Console(stderr=True))
    task = prog.add_task(label, total=total)
    return prog, (lambda _pid: prog.advance(task))


def table(title: str, columns: list[str], rows: list[list[str]], summary: Callable[[], list[str]] | None = None
          ) -> None:
    """A rich table; above TABLE_LIMIT rows (without -v) the summary lines instead."""
    if summary is not None and len(rows) > TABLE_LIMIT and verbosity() == 0:
        click.echo(f"{title}: {len(rows)} rows (-v for the full table, --json for machines)")
        for line in summary():
            click.echo("  " + line)
        return
    if not sys.stdout.isatty():
        click.echo(plain_table(title, columns, rows), nl=False)
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    for r in rows:
        t.add_row(*[c if c.startswith("[red]") else escape(c) for c in r])
    console().print(t)


def plain_table(title: str, columns: list[str], rows: list[list[str]]) -> str:
    """Aligned columns for pipes and files, where rich's box drawing and
    truncation help nobody (and importing rich costs ~40 ms of a short command)."""
    cells = [[_unmarkup(c) for c in r] for r in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _unmarkup(cell: str) -> str:
    return cell.replace("[red]", "").replace("[/red]", "")


def counts(label: str, counter: dict[str, int]) -> str:
    return f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
