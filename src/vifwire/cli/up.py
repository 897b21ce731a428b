"""``vifwire up``: plug a file of ports, show them, check them, tear them down.

With ``--sandbox`` (the README's first command) the "host" is a throwaway
network namespace, with its own private Open vSwitch when any port needs OVS,
stand-in uplinks for macvtap/802.1Qbg sources, and - for container ports - one
guest namespace per port behind its ``tin`` end, so traffic can be shown
(:mod:`vifwire.sandbox.demo`). Everything is removed on exit, on error and on
Ctrl-C. The wiring itself goes through :class:`vifwire.service.WiringService`
like every other command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import replace
from typing import Any

import click

from vifwire.clikit import options as opt
from vifwire.cli.common import host_options, load_file, progress, table, verbose_options


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--sandbox/--no-sandbox", default=False,
              help="Work in a throwaway namespace (with a private OVS) instead of the real host.")
@click.option("--hold", is_flag=True, help="Keep everything wired until Ctrl-C before tearing down.")
@host_options
@opt.guest_options
@click.option("--hypervisor", type=click.Choice(["libvirt", "lxd"]), default=None,
              help="Guest hypervisor [default: lxd in the sandbox, which has no VMs; libvirt otherwise].")
@click.option("--libvirt-version", default="10.0.0", show_default=True, metavar="X.Y.Z")
@click.option("--firewall/--no-firewall", default=False, show_default=True,
              help="Host firewalling required (OVS hybrid plugging unless the network filters).")
@click.option("--anti-spoof", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@verbose_options
def up(file: Any, sandbox: bool, hold: bool, as_json: bool, **kw: Any) -> None:
    """Plug every port in FILE, show what was wired, run check, then tear it all down.

    \b
    vifwire up examples/ports.json --sandbox     # safe: a throwaway namespace
    vifwire up ports.json                        # the real host (needs root)
    """
    from vifwire.planner.generic import plan
    from vifwire.service.wiring import WiringService

    bindings = load_file(file)
    hypervisor = kw.get("hypervisor") or ("lxd" if sandbox else "libvirt")
    kw["hypervisor"] = hypervisor
    guest = opt.with_host_devices(opt.guest_from(kw), bindings)
    out = click.echo if not as_json else (lambda *a, **k: None)
    summary: dict[str, Any] = {"sandbox": sandbox, "hypervisor": hypervisor}

    with contextlib.ExitStack() as stack:
        _cleanup_on_signals(stack)
        host_ns = kw.get("netns")
        state = kw.get("state")
        if sandbox:
            import tempfile

            from vifwire.sandbox import netns

            host_ns = stack.enter_context(netns.sandbox("up"))
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vifwire-up-"))
            state = f"{tmp}/state.db"
            out(f"sandbox: host namespace {host_ns}")
        facts = opt.facts_from({**kw, "ovs_datapath": "netdev" if sandbox else kw.get("ovs_datapath")})
        guest_ns: dict[str, str] = {}
        items = []
        for b in bindings:
            f = facts
            if sandbox and hypervisor == "lxd":
                from vifwire.sandbox import netns

                guest_ns[b.port_id] = stack.enter_context(netns.sandbox("g"))
                f = replace(facts, guest_netns=guest_ns[b.port_id])
            items.append((b, plan(b, f, guest)))

        ovsdb = kw.get("ovsdb")
        if sandbox:
            from vifwire.sandbox import demo

            ovsdb = demo.underlay(stack, host_ns, items, out) or ovsdb
        svc = stack.enter_context(WiringService(netns=host_ns, state=state or None, ovsdb=ovsdb,
                                                ovs_timeout=kw.get("ovs_timeout") or 10.0))
        # Tear down what we plug, whatever happens next.
        stack.callback(lambda: svc.unplug(all_ports=True))

        prog, tick = progress(len(items), "plugging")
        t0 = time.perf_counter()
        if prog:
            with prog:
                results = svc.plug_plans(items, progress=tick)
        else:
            results = svc.plug_plans(items)
        elapsed = time.perf_counter() - t0
        summary["plug_seconds"] = round(elapsed, 4)
        summary["ports"] = [{"port_id": r.port_id, "ok": r.ok, "strategy": r.strategy,
                             "devices": r.devices, "error": r.error} for r in results]
        if not as_json:
            table("wired", ["port", "vif_type", "strategy", "host devices", "guest", "result"],
                  [[r.port_id[:13], r.plan.vif_type, r.strategy, " ".join(r.devices) or "-",
                    guest_ns.get(r.port_id, "-"), "ok" if r.ok else "[red]failed[/red]"] for r in results])
            out(f"plugged {sum(r.ok for r in results)}/{len(results)} port(s) in {elapsed * 1000:.1f} ms")
        for r in results:
            if not r.ok:
                click.echo(f"vifwire: {r.error}", err=True)

        checked = svc.check()
        summary["check"] = checked.to_json()
        for pid, lines in checked.drift.items():
            for line in lines:
                out(f"check: {pid}: {line}")
        out(f"check: {checked.checked} port(s), "
            f"{'clean' if checked.clean else f'{len(checked.drift)} with drift'}")

        if sandbox and guest_ns:
            from vifwire.sandbox import demo

            summary["traffic"] = demo.traffic(items, results, guest_ns, host_ns, out)
        if hold:
            out("wired; press Ctrl-C to tear down")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        out("tearing down")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    if not all(r.ok for r in results) or summary["check"]["drift"]:
        sys.exit(1)


def _cleanup_on_signals(stack: contextlib.ExitStack) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the ExitStack tears everything down.

    Only in this process: helpers forked by pyroute2 (to enter namespaces)
    inherit the handler, and must simply exit instead of unwinding our stack.
    """
    owner = os.getpid()

    def _raise(signum, frame):  # noqa: ARG001
        if os.getpid() != owner:
            os._exit(0)
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        old = signal.signal(sig, _raise)
        stack.callback(signal.signal, sig, old)
