"""The ``vifwire`` command.

Exit codes: 0 success, 2 invalid input, 3 drift found by ``check``, 1 anything
else. Messages go to stderr, one line per problem; a traceback is never shown
(set ``VIFWIRE_DEBUG=1`` to see one).

Imports are kept lazy so ``vifwire render`` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from vifwire.cli import options as opt


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vifwire")
def cli() -> None:
    """vifwire wires the network interfaces (VIFs) of VMs and containers into the host.

    It reads the port *binding* the network service hands out (a Neutron port,
    or a Nova network_info VIF: vif_type + vif_details) and

    \b
      1. renders the guest's configuration: a libvirt <interface> element that
         matches Nova's, or LXD profile devices (nova-lxd semantics);
      2. plans and applies the host wiring: taps, tap/tin veth pairs, Linux
         bridges, OVS ports (plain and hybrid qbr/qvb/qvo), macvtaps, routes
         and anti-spoofing filters - transactionally, rolled back on failure.

    FILE is a JSON file (or - for stdin) holding one port or a list of ports.

    \b
    Examples:
      vifwire validate ports.json
      vifwire plan ports.json --hypervisor lxd --firewall
      vifwire render libvirt ports.json --virt-type qemu --queues 4
      vifwire render lxd ports.json --bandwidth-in 1000,2000,
      vifwire up examples/ports.json --sandbox

    \b
    Exit codes: 0 ok, 2 invalid input, 3 drift (check), 1 other failure.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group, turning every error into one line."""
    from vifwire.errors import VifwireError

    try:
        cli.main(args=argv, prog_name="vifwire", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vifwire: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"vifwire: {exc.format_message()}", err=True)
        sys.exit(2)
    except VifwireError as exc:
        for line in str(exc).splitlines() or [exc.__class__.__name__]:
            click.echo(f"vifwire: {line}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vifwire: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the one place that must catch all
        if os.environ.get("VIFWIRE_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        click.echo(f"vifwire: internal error: {exc.__class__.__name__}: {msg}", err=True)
        sys.exit(1)


def _load(file: Any):
    from vifwire.model.loader import load_text

    text = opt.read_input(file)
    return load_text(text, origin=getattr(file, "name", "<input>"))


# --------------------------------------------------------------------------- validate

@cli.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--json", "as_json", is_flag=True, help="Print the validated bindings as JSON.")
def validate(file: Any, as_json: bool) -> None:
    """Check FILE: exit 0 if every port is valid, else exit 2 with one line per problem."""
    bindings = _load(file)
    if as_json:
        import json

        click.echo(json.dumps([b.model_dump(mode="json") for b in bindings], indent=2))
    else:
        click.echo(f"{len(bindings)} port(s) valid", err=True)


# --------------------------------------------------------------------------- render

@cli.group()
def render() -> None:
    """Print guest configuration for each port in FILE (nothing is touched)."""


@render.command("libvirt")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@opt.guest_options
@opt.host_fact_options
def render_libvirt(file: Any, **kw: Any) -> None:
    """One libvirt <interface> (or <hostdev>) element per port, as Nova 34 renders it.

    The OVS wiring follows the binding like Nova does; host facts
    (--firewall, --libvirt-version) may change it the way the generic driver
    decides (seed 004), e.g. hybrid plugging when host firewalling is needed.
    """
    from vifwire.planner.generic import plan

    guest, facts = opt.guest_from(kw), opt.facts_from(kw, force_hypervisor="libvirt")
    out = []
    for b in _load(file):
        p = plan(b, facts, guest)
        out.append(p.guest.xml)
    click.echo("\n".join(out))


@render.command("lxd")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@opt.bandwidth_options
def render_lxd(file: Any, **kw: Any) -> None:
    """LXD/Incus profile devices (JSON) for the ports in FILE, as nova-lxd makes them."""
    import json

    from vifwire.renderers.lxd import render_devices

    guest = opt.guest_from(kw)
    devices: dict[str, Any] = {}
    for b in _load(file):
        devices.update(render_devices(b, guest))
    click.echo(json.dumps(devices, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- plan

@cli.command("plan")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@opt.guest_options
@opt.host_fact_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_cmd(file: Any, as_json: bool, **kw: Any) -> None:
    """Show what would be done for each port: strategy, why, host steps, guest config."""
    from vifwire.planner.generic import plan

    guest, facts = opt.guest_from(kw), opt.facts_from(kw)
    plans = [plan(b, facts, guest) for b in _load(file)]
    if as_json:
        import json

        click.echo(json.dumps([p.model_dump(mode="json") for p in plans], indent=2))
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


from vifwire.cli import wiring as _wiring  # noqa: E402,F401  (registers the wiring commands)
