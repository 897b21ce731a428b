"""Commands that touch nothing: validate, render, plan.

They need only the model, the planner and the renderers, so they start
without importing netlink, OVSDB, nftables or rich.
"""

from __future__ import annotations

from typing import Any

import click

from vifwire.clikit import options as opt
from vifwire.cli.common import load_file, verbose_options


# --------------------------------------------------------------------------- validate

@click.command()
@verbose_options
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--json", "as_json", is_flag=True, help="Print the validated bindings as JSON.")
def validate(file: Any, as_json: bool) -> None:
    """Check FILE: exit 0 if every port is valid, else exit 2 with one line per problem."""
    bindings = load_file(file)
    if as_json:
        import json

        click.echo(json.dumps([b.to_json() for b in bindings], indent=2))
    else:
        click.echo(f"{len(bindings)} port(s) valid", err=True)


# --------------------------------------------------------------------------- render

@click.group()
def render() -> None:
    """Print guest configuration for each port in FILE (nothing is touched)."""


@render.command("libvirt")
@verbose_options
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@opt.guest_options
@opt.host_fact_options
def render_libvirt(file: Any, **kw: Any) -> None:
    """One libvirt <interface> (or <hostdev>) element per port, as Nova 34 renders it.

    The OVS wiring follows the binding like Nova does; host facts
    (--firewall, --libvirt-version) may change it the way the generic driver
    decides (docs/libvirt-rendering.md), e.g. hybrid plugging when host firewalling is needed.
    A vdpa port needs its VF's vhost-vdpa device: --vdpa-dev, or found in /sys on this host.
    """
    from vifwire.service.wiring import render as render_guests

    bindings = load_file(file)
    guest, facts = opt.with_host_devices(opt.guest_from(kw), bindings), opt.facts_from(kw, force_hypervisor="libvirt")
    click.echo("\n".join(g.xml or "" for g in render_guests(bindings, facts, guest)))


@render.command("lxd")
@verbose_options
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@opt.bandwidth_options
def render_lxd(file: Any, **kw: Any) -> None:
    """LXD/Incus profile devices (JSON) for the ports in FILE, as nova-lxd makes them."""
    import json

    from vifwire.renderers.lxd import render_devices

    guest = opt.guest_from(kw)
    devices: dict[str, Any] = {}
    for b in load_file(file):
        devices.update(render_devices(b, guest))
    click.echo(json.dumps(devices, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- plan

@click.command("plan")
@verbose_options
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@opt.guest_options
@opt.host_fact_options
@opt.lxd_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_cmd(file: Any, as_json: bool, **kw: Any) -> None:
    """Show what would be done for each port: strategy, why, host steps, guest config."""
    from vifwire.service.wiring import plan_all

    bindings = load_file(file)
    guest, facts = opt.with_host_devices(opt.guest_from(kw), bindings), opt.facts_from(kw)
    plans = plan_all(bindings, facts, guest)
    if as_json:
        import json

        click.echo(json.dumps([p.to_json() for p in plans], indent=2))
        return
    for p in plans:
        click.echo(f"port {p.port_id}  ({p.vif_type}, vnic {p.vnic_type}, {p.hypervisor})")
        click.echo(f"  strategy: {p.strategy}")
        click.echo(f"  why:      {p.reason}")
        click.echo("  host steps:" + ("" if p.steps else " none"))
        for i, s in enumerate(p.steps, 1):
            click.echo(f"    {i}. {s.describe()}" + (f"   # {s.why}" if s.why else ""))
        if p.guest and p.guest.xml:
            click.echo("  guest (libvirt):")
            for line in p.guest.xml.splitlines():
                click.echo("    " + line)
        elif p.guest and p.guest.devices:
            import json

            click.echo("  guest (lxd devices): " + json.dumps(p.guest.devices, sort_keys=True))
        click.echo("")
