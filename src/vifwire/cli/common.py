"""What every command shares: input loading, host options, ``--agent``, verbosity and logging, output helpers.

Heavy modules (rich, the executors) are imported inside functions so that
``vifwire --help``, ``render`` and ``list`` start fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import click
from click.core import ParameterSource

from vifwire.clikit import options as opt
from vifwire.clikit.options import host_options, verbose_options, verbosity  # noqa: F401 - what the commands import

#: Above this many rows a result table is summarised (counts by strategy and
#: state, failures in full); ``--verbose`` shows every row, ``--json`` is the machine form.
TABLE_LIMIT = 50

#: Host options the agent owns (it was started with them); with --agent they
#: would silently mean nothing, so giving one on the command line is refused.
AGENT_OWNED = ("netns", "state", "ovsdb", "ovs_timeout")


def agent_option(f: Callable) -> Callable:
    return click.option("--agent", default=None, metavar="SOCKET", envvar="VIFWIRE_AGENT",
                        help="Ask the per-host agent listening on SOCKET (env VIFWIRE_AGENT) instead of working "
                             "in-process; fails if no agent answers.")(f)


def explicit(ctx: click.Context, names: tuple[str, ...]) -> set[str]:
    """The options among ``names`` the user gave (command line or environment), not defaults."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {n for n in names if ctx.get_parameter_source(n) in given}


def agent_client(ctx: click.Context, socket_path: str, refuse: tuple[str, ...] = ()):
    """The agent's client for a command run with ``--agent``.

    Options the agent owns (``--netns``, ``--state``, ...) and ``refuse``d
    ones are a usage error when typed on the command line; the same from
    the environment (``VIFWIRE_STATE``, a default set for every command) is
    ignored.
    """
    for name in AGENT_OWNED + tuple(refuse):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            flag = next((p.opts[0] for p in ctx.command.params if p.name == name), f"--{name}")
            raise click.UsageError(f"{flag} cannot be used with --agent: the agent at {socket_path} uses its own "
                                   "(drop the option, or drop --agent)")
    from vifwire.client import AgentClient

    return AgentClient(socket_path, hint="start it with `vifwire agent` or drop --agent")


def load_file(file: Any):
    """A binding file (or stdin) -> validated bindings; InvalidInput lists every problem."""
    from vifwire.service.wiring import load

    return load(opt.read_input(file), origin=getattr(file, "name", "<input>"))


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
