"""``vifwire agent`` (also installed as ``vifwire-agent``): run the per-host agent.

Registered in the ``vifwire`` command's lazy table by name, the way git and
kubectl find their plugins: the CLI does not import the agent.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from vifwire.clikit import options as opt
from vifwire.clikit.options import host_options, verbose_options


def _addr(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:9851")
    return (host.strip("[]") or "127.0.0.1", int(port))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--socket", "socket_path", default="/run/vifwire/agent.sock", show_default=True, metavar="PATH",
              help="The API's Unix socket (mode 0660; never on TCP).")
@click.option("--socket-group", default=None, metavar="NAME",
              help="Members of this group may change the host through the socket (root always may; "
                   "anyone who can open it may read).")
@click.option("--metrics-addr", callback=_addr, default=None, metavar="HOST:PORT",
              help="Also serve GET /metrics (read-only) on TCP.")
@click.option("--repair", type=click.Choice(["auto", "report"]), default="auto", show_default=True,
              help="Drift of recorded ports: put it back (auto) or only report it (events, metrics).")
@click.option("--resync-interval", type=click.FloatRange(0.2, 86400), default=30.0, show_default=True,
              metavar="SECONDS", help="Check every recorded port this often (netlink changes are seen at once).")
@click.option("--etcd", envvar="VIFWIRE_ETCD", default=None, metavar="URL[,URL...]",
              help="Fleet mode: converge to this host's desired ports in etcd and report status there "
                   "(docs/fleet.md). [env VIFWIRE_ETCD]")
@click.option("--host", "fleet_host", envvar="VIFWIRE_HOST", default=None, metavar="NAME",
              help="Fleet mode: this host's name in etcd (default: the hostname). [env VIFWIRE_HOST]")
@click.option("--etcd-cacert", default=None, metavar="FILE", help="CA bundle that signed etcd's certificate.")
@click.option("--etcd-cert", default=None, metavar="FILE", help="Client certificate for etcd.")
@click.option("--etcd-key", default=None, metavar="FILE", help="Key of the client certificate.")
@host_options
@opt.guest_options
@opt.host_fact_options
@verbose_options
def agent(socket_path: str, socket_group: str | None, metrics_addr: tuple[str, int] | None, repair: str,
          resync_interval: float, etcd: str | None, fleet_host: str | None, etcd_cacert: str | None,
          etcd_cert: str | None, etcd_key: str | None, **kw: Any) -> None:
    """Run the per-host agent: the wiring service, always warm, behind an API.

    Serves HTTP/1.1 + JSON on a Unix socket (GET /v1/openapi.json describes
    it; docs/agent.md): plug, unplug, check, gc, list, events (long poll),
    health and Prometheus metrics. Plugs that arrive together are committed
    together (one OVSDB and one nftables transaction), each port still
    all-or-nothing. At start-up every recorded port is verified (and
    repaired) before any change is taken; while running, drift of what the
    agent owns is repaired (--repair auto) or reported.

    Host facts and guest options given here are the defaults for every
    request; a request may override them.

    \b
    Examples:
      vifwire agent --netns host1 --state /var/lib/vifwire/state.db
      vifwire plug --agent /run/vifwire/agent.sock port.json
      curl --unix-socket /run/vifwire/agent.sock http://x/v1/ports
    """
    from vifwire.agent.agent import Agent
    from vifwire.agent.config import AgentConfig

    root = logging.getLogger("vifwire")
    if not root.handlers:
        root.addHandler(opt.STDERR_HANDLER)
        root.propagate = False
        root.setLevel(logging.INFO)
    cfg = AgentConfig(socket=socket_path, netns=kw.get("netns"), state=kw.get("state"), ovsdb=kw.get("ovsdb"),
                      ovs_timeout=kw.get("ovs_timeout") or 10.0, socket_group=socket_group,
                      metrics_addr=metrics_addr, repair=repair, resync_interval=resync_interval,
                      facts=opt.facts_from(kw), guest=opt.guest_from(kw),
                      fleet=_fleet(etcd, fleet_host, etcd_cacert, etcd_cert, etcd_key))
    Agent(cfg).run()


def _fleet(etcd: str | None, host: str | None, cacert: str | None, cert: str | None, key: str | None):
    if not etcd:
        if host or cacert or cert or key:
            raise click.BadParameter("needs --etcd (fleet mode)", param_hint="--host/--etcd-*")
        return None
    import socket

    from vifwire.agent.config import FleetConfig
    from vifwire.fleetkit import keys

    host = host or socket.gethostname()
    try:
        keys.check_host(host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    if bool(cert) != bool(key):
        raise click.BadParameter("give both --etcd-cert and --etcd-key", param_hint="--etcd-cert")
    urls = tuple(u.strip() for u in etcd.split(",") if u.strip())
    return FleetConfig(urls=urls, host=host, cacert=cacert, cert=cert, key=key)


def main() -> None:
    """The ``vifwire-agent`` console script."""
    from vifwire.errors import VifwireError

    try:
        agent.main(prog_name="vifwire-agent", standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"vifwire-agent: {exc.format_message()}", err=True)
        raise SystemExit(2)
    except click.exceptions.Abort:
        raise SystemExit(130)
    except VifwireError as exc:
        for line in str(exc).splitlines():
            click.echo(f"vifwire-agent: {line}", err=True)
        raise SystemExit(exc.exit_code)
