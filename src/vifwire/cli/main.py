"""The ``vifwire`` command.

Exit codes: 0 success, 2 invalid input, 3 drift found by ``check``, 1 anything
else. Messages go to stderr, one line per problem; a traceback is never shown
(set ``VIFWIRE_DEBUG=1`` to see one).

The command modules (offline, wiring, up) are thin: they parse options, call
:class:`vifwire.service.WiringService` (or the pure planner/renderers) and
format its results. Imports are kept lazy so ``vifwire render`` starts fast.
"""

from __future__ import annotations

import os
import sys

import click

import importlib

from vifwire.cli.common import verbose_options

#: command name -> (module, function): a command's module is imported only when
#: that command runs (or --help lists them all), so `vifwire plug` does not pay
#: for `up`'s or `render`'s imports (click's documented lazy-group pattern).
COMMANDS = {
    "validate": ("vifwire.cli.offline", "validate"),
    "render": ("vifwire.cli.offline", "render"),
    "plan": ("vifwire.cli.offline", "plan_cmd"),
    "plug": ("vifwire.cli.wiring", "plug"),
    "unplug": ("vifwire.cli.wiring", "unplug"),
    "check": ("vifwire.cli.wiring", "check"),
    "list": ("vifwire.cli.wiring", "list_cmd"),
    "gc": ("vifwire.cli.wiring", "gc"),
    "up": ("vifwire.cli.up", "up"),
    "state": ("vifwire.cli.state", "state"),
    "fleet": ("vifwire.cli.fleet", "fleet"),
    # another front end's own command, found by name (a plugin, like git's and
    # kubectl's): the CLI does not import the agent
    "agent": ("vifwire.agent.command", "agent"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vifwire")
@verbose_options
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
    -v/--verbose (repeatable) and --log-level work on every command.

    \b
    Container runtimes (podman, containerd, CRI-O): the CNI plugin
    vifwire-cni, installed beside this command (docs/cni.md); its
    attachments show up in list, check and gc like any other port.
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
