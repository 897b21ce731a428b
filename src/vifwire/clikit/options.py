"""Options shared by the command-line front ends: host, host facts, guest, logging."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import click

from vifwire.renderers.options import Bandwidth, GuestOptions


def read_input(file: Any) -> str:
    try:
        return file.read()
    except UnicodeDecodeError as exc:
        from vifwire.errors import InvalidInput, VifError

        raise InvalidInput([VifError(getattr(file, "name", "<input>"), "document", f"is not UTF-8: {exc.reason}")])


def _parse_bandwidth(ctx: click.Context, param: click.Parameter, value: str | None) -> Bandwidth:
    if value is None:
        return Bandwidth()
    parts = value.split(",")
    if len(parts) > 3:
        raise click.BadParameter("expected AVG,PEAK,BURST (empty fields allowed, e.g. 1000,,64)")
    parts += [""] * (3 - len(parts))
    nums: list[int | None] = []
    for p in parts:
        p = p.strip()
        if p == "":
            nums.append(None)
        elif p.isdigit():
            nums.append(int(p))
        else:
            raise click.BadParameter(f"{p!r} is not a non-negative integer (KB/s, KB/s, KB)")
    return Bandwidth(average=nums[0], peak=nums[1], burst=nums[2])


def _absolute_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith("/"):
        raise click.BadParameter(f"{value!r} is not an absolute path (e.g. /dev/vhost-vdpa-0)")
    return value


def compose(*decorators: Callable) -> Callable:
    """Several click decorators as one (applied in the order given)."""
    def wrap(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


bandwidth_options = compose(
    click.option("--bandwidth-in", callback=_parse_bandwidth, metavar="AVG,PEAK,BURST",
                 help="Inbound quota in Nova's units (KB/s,KB/s,KB); empty fields allowed."),
    click.option("--bandwidth-out", callback=_parse_bandwidth, metavar="AVG,PEAK,BURST",
                 help="Outbound quota in Nova's units (KB/s,KB/s,KB)."),
)

guest_options = compose(
    click.option("--virt-type", type=click.Choice(["kvm", "qemu", "lxc", "parallels"]), default="kvm",
                 show_default=True, help="libvirt virt type of the guest."),
    click.option("--model", default=None, metavar="MODEL",
                 help="NIC model (virtio, e1000, ...); 'none' omits it. Default as Nova: virtio for kvm/qemu/parallels."),
    click.option("--queues", type=click.IntRange(1, 256), default=None,
                 help="Multiqueue on, with this many queues: Nova's count (the guest's vCPUs, capped by the "
                      "host's tap queue limit), so 1 gives <driver queues='1'> as in Nova. Default: off."),
    click.option("--rx-queue-size", type=click.Choice(["256", "512", "1024"]), default=None,
                 help="virtio RX queue size."),
    click.option("--tx-queue-size", type=click.Choice(["256", "512", "1024"]), default=None,
                 help="virtio TX queue size."),
    click.option("--packed", is_flag=True, help="Use virtio packed virtqueues."),
    bandwidth_options,
    click.option("--vf-netdev", default=None, metavar="NAME",
                 help="The VF's netdev for direct/macvtap types when no real VF can be looked up."),
    click.option("--vdpa-dev", default=None, metavar="PATH", callback=_absolute_path,
                 help="vnic_type vdpa: the VF's vhost-vdpa device (/dev/vhost-vdpa-N). "
                      "Default: looked up in /sys by the port's binding:profile.pci_slot."),
)

host_fact_options = compose(
    click.option("--hypervisor", type=click.Choice(["libvirt", "lxd"]), default="libvirt", show_default=True,
                 help="Guest hypervisor; lxd selects the tap/tin veth wiring made before the container exists."),
    click.option("--libvirt-version", default="10.0.0", show_default=True, metavar="X.Y.Z",
                 help="libvirt version on the host (OVS virtualport needs >= 0.9.11)."),
    click.option("--firewall/--no-firewall", default=False, show_default=True,
                 help="Host firewalling required (forces OVS hybrid plugging unless the network filters)."),
    click.option("--ovs-datapath", type=click.Choice(["system", "netdev"]), default="system", show_default=True,
                 help="Datapath type for OVS bridges vifwire creates."),
    click.option("--anti-spoof", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
                 help="Anti-spoofing filters: auto = unless the binding says port_filter=true."),
)

#: Attach to / detach from an LXD instance (docs/lxd.md): plug, unplug, plan.
lxd_options = compose(
    click.option("--lxd-instance", default=None, metavar="NAME",
                 help="With --hypervisor lxd: also add each port's NIC to this LXD instance (hot-plugged if it "
                      "runs) after wiring the host, and detach it (by device name, else MAC) before unwiring."),
    click.option("--lxd-socket", default=None, metavar="PATH", envvar="VIFWIRE_LXD_SOCKET",
                 help="LXD's Unix socket [default: $LXD_DIR/unix.socket, else /var/lib/lxd/unix.socket; "
                      "env VIFWIRE_LXD_SOCKET]."),
)


def guest_from(kw: dict[str, Any]) -> GuestOptions:
    return GuestOptions(
        virt_type=kw.get("virt_type") or "kvm",
        model=kw.get("model"),
        queues=kw.get("queues"),
        rx_queue_size=int(kw["rx_queue_size"]) if kw.get("rx_queue_size") else None,
        tx_queue_size=int(kw["tx_queue_size"]) if kw.get("tx_queue_size") else None,
        packed=bool(kw.get("packed")),
        bandwidth_in=kw.get("bandwidth_in") or Bandwidth(),
        bandwidth_out=kw.get("bandwidth_out") or Bandwidth(),
        vf_netdev=kw.get("vf_netdev"),
        vdpa_dev=kw.get("vdpa_dev"),
    )


def with_host_devices(guest: GuestOptions, bindings: list[Any]) -> GuestOptions:
    """``guest`` plus what only this host can say about the ports: the
    vhost-vdpa devices of ``vdpa`` ports, from sysfs unless ``--vdpa-dev``
    names one (docs/libvirt-rendering.md, "vdpa ports")."""
    from vifwire.hostfacts.vdpa import vdpa_slots, with_vdpa_devices

    if guest.vdpa_dev is not None and len(vdpa_slots(bindings)) > 1:
        # one vhost-vdpa device cannot serve two VFs
        raise click.BadParameter("names one device, but the ports are vdpa ports of "
                                 f"{len(vdpa_slots(bindings))} VFs (leave it out to look each up in /sys)",
                                 param_hint="--vdpa-dev")
    return with_vdpa_devices(guest, bindings)


def facts_from(kw: dict[str, Any], force_hypervisor: str | None = None, guest_netns: str | None = None):
    from vifwire.planner.facts import HostFacts, lxd_socket_from, parse_version

    try:
        version = parse_version(kw.get("libvirt_version") or "10.0.0")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--libvirt-version")
    return HostFacts(
        hypervisor=force_hypervisor or kw.get("hypervisor") or "libvirt",
        libvirt_version=version,
        firewall=bool(kw.get("firewall")),
        ovs_datapath=kw.get("ovs_datapath") or "system",
        anti_spoof=kw.get("anti_spoof") or "auto",
        guest_netns=guest_netns or kw.get("guest_netns"),
        multiqueue=bool(kw.get("queues") and kw["queues"] > 1),
        lxd_instance=kw.get("lxd_instance") or None,
        lxd_socket=kw.get("lxd_socket") or lxd_socket_from(os.environ),
    )


# ---------------------------------------------------------------- host and logging

_LEVELS = ("debug", "info", "warning", "error")

#: The one stderr log handler of a command (added once, however often options configure logging).
STDERR_HANDLER = logging.StreamHandler(sys.stderr)
STDERR_HANDLER.setFormatter(logging.Formatter("vifwire: %(levelname)s %(name)s: %(message)s"))


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
    if STDERR_HANDLER not in root.handlers:
        root.addHandler(STDERR_HANDLER)
        root.propagate = False
    root.setLevel(level)


verbose_options = compose(
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
