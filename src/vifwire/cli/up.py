"""``vifwire up``: plug a file of ports, show them, check them, tear them down.

With ``--sandbox`` (the README's first command) the "host" is a throwaway
network namespace, with its own private Open vSwitch when any port needs OVS,
dummy uplinks for macvtap/802.1Qbg sources, and - for container ports - one
guest namespace per port behind its ``tin`` end, so traffic can be shown.
Everything is removed on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
import time
from typing import Any

import click

from vifwire.cli import options as opt
from vifwire.cli.main import _load, cli
from vifwire.cli.wiring import _console, _host_options, _progress


@cli.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--sandbox/--no-sandbox", default=False,
              help="Work in a throwaway namespace (with a private OVS) instead of the real host.")
@click.option("--hold", is_flag=True, help="Keep everything wired until Ctrl-C before tearing down.")
@_host_options
@opt.guest_options
@click.option("--hypervisor", type=click.Choice(["libvirt", "lxd"]), default=None,
              help="Guest hypervisor [default: lxd in the sandbox, which has no VMs; libvirt otherwise].")
@click.option("--libvirt-version", default="10.0.0", show_default=True, metavar="X.Y.Z")
@click.option("--firewall/--no-firewall", default=False, show_default=True,
              help="Host firewalling required (OVS hybrid plugging unless the network filters).")
@click.option("--anti-spoof", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def up(file: Any, sandbox: bool, hold: bool, as_json: bool, **kw: Any) -> None:
    """Plug every port in FILE, show what was wired, run check, then tear it all down.

    \b
    vifwire up examples/ports.json --sandbox     # safe: a throwaway namespace
    vifwire up ports.json                        # the real host (needs root)
    """
    from vifwire.executors.base import HostContext
    from vifwire.executors.engine import Wiring
    from vifwire.planner.generic import plan
    from vifwire.store.sqlite import Store

    bindings = _load(file)
    hypervisor = kw.get("hypervisor") or ("lxd" if sandbox else "libvirt")
    kw["hypervisor"] = hypervisor
    guest = opt.guest_from(kw)
    out = click.echo if not as_json else (lambda *a, **k: None)
    summary: dict[str, Any] = {"sandbox": sandbox, "hypervisor": hypervisor}

    with contextlib.ExitStack() as stack:
        _cleanup_on_signals(stack)
        host_ns = None
        state = kw.get("state")
        if sandbox:
            from vifwire.sandbox import netns

            host_ns = stack.enter_context(netns.sandbox("up"))
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vifwire-up-"))
            state = f"{tmp}/state.db"
            out(f"sandbox: host namespace {host_ns}")
        elif kw.get("netns"):
            host_ns = kw["netns"]
        facts = opt.facts_from({**kw, "ovs_datapath": "netdev" if sandbox else kw.get("ovs_datapath")})
        guest_ns: dict[str, str] = {}
        items = []
        for b in bindings:
            f = facts
            if sandbox and hypervisor == "lxd":
                from vifwire.sandbox import netns

                g = stack.enter_context(netns.sandbox("g"))
                guest_ns[b.port_id] = g
                from dataclasses import replace

                f = replace(facts, guest_netns=g)
            items.append((b, plan(b, f, guest)))

        ctx = stack.enter_context(HostContext(netns=host_ns, ovsdb=kw.get("ovsdb"),
                                              ovs_timeout=kw.get("ovs_timeout") or 10.0))
        if sandbox:
            _sandbox_underlay(stack, ctx, items, out)
        store = stack.enter_context(Store(state or "/var/lib/vifwire/state.db"))
        wiring = Wiring(ctx, store)
        # Tear down what we plug, whatever happens next.
        stack.callback(lambda: wiring.unplug(store.all(netns=host_ns)))

        prog, tick = _progress(len(items), "plugging")
        wiring.progress = tick
        t0 = time.perf_counter()
        if prog:
            with prog:
                results = wiring.plug(items)
        else:
            results = wiring.plug(items)
        elapsed = time.perf_counter() - t0
        summary["plug_seconds"] = round(elapsed, 4)
        summary["ports"] = [{"port_id": r.port_id, "ok": r.ok, "strategy": r.plan.strategy,
                             "devices": r.plan.devices(), "error": r.error} for r in results]
        if not as_json:
            _table(results, guest_ns)
            out(f"plugged {sum(r.ok for r in results)}/{len(results)} port(s) in {elapsed * 1000:.1f} ms")
        for r in results:
            if not r.ok:
                click.echo(f"vifwire: {r.error}", err=True)

        drift = wiring.check(store.all(netns=host_ns))
        dirty = {k: v for k, v in drift.items() if v}
        summary["check"] = {"checked": len(drift), "drift": dirty}
        for pid, lines in dirty.items():
            for line in lines:
                out(f"check: {pid}: {line}")
        out(f"check: {len(drift)} port(s), {'clean' if not dirty else f'{len(dirty)} with drift'}")

        if sandbox and guest_ns:
            summary["traffic"] = _traffic(items, results, guest_ns, ctx, out)
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
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the ExitStack tears everything down."""

    def _raise(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        old = signal.signal(sig, _raise)
        stack.callback(signal.signal, sig, old)


def _sandbox_underlay(stack, ctx, items, out) -> None:
    """What a real host would already have: uplinks and an OVS."""
    from pyroute2 import IPRoute

    needed = set()
    for _, p in items:
        for s in p.steps:
            if s.op == "require_link":
                needed.add(s.args["name"])
            elif s.op == "macvtap":
                needed.add(s.args["source"])
    with IPRoute(netns=ctx.netns) as ipr:
        for name in sorted(needed):
            if not ipr.link_lookup(ifname=name):
                # this kernel has no dummy driver: a veth end stands in for an uplink
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": (name + "p")[:15]})
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
                out(f"sandbox: stand-in uplink {name}")
    if any(s.op.startswith("ovs_") for _, p in items for s in p.steps):
        from vifwire.sandbox.ovs_daemon import PrivateOVS

        ovs = stack.enter_context(PrivateOVS().start(ctx.netns))
        ctx.ovsdb = ovs.endpoint
        out(f"sandbox: private Open vSwitch ({ovs.endpoint}, userspace datapath)")


def _table(results, guest_ns) -> None:
    from rich.table import Table

    t = Table(title="wired", title_justify="left")
    for col in ("port", "vif_type", "strategy", "host devices", "guest", "result"):
        t.add_column(col)
    for r in results:
        t.add_row(r.port_id[:13], r.plan.vif_type, r.plan.strategy, " ".join(r.plan.devices()) or "-",
                  guest_ns.get(r.port_id, "-"), "ok" if r.ok else "[red]failed[/red]")
    _console().print(t)


def _traffic(items, results, guest_ns, ctx, out) -> dict[str, Any]:
    """Give each container guest its addresses and ping between them."""
    from vifwire.model import names
    from vifwire.sandbox import guests

    ok = {r.port_id for r in results if r.ok}
    routed = {"veth-routed"}
    configured = []
    for b, p in items:
        if b.port_id not in ok or b.port_id not in guest_ns or p.strategy == "macvtap":
            continue
        if not b.ipv4:
            continue
        guests.configure(guest_ns[b.port_id], names.tin_for(b.devname), list(b.ipv4), [],
                         routed=p.strategy in routed)
        configured.append((b, p))
    if any(p.strategy in routed for _, p in configured):
        _routed_gateway(ctx)
    report = []
    for b, p in configured:
        for b2, p2 in configured:
            if b2 is b:
                continue
            same_l2 = _segment(p) == _segment(p2) and _segment(p) is not None
            both_routed = p.strategy in routed and p2.strategy in routed
            if not (same_l2 or both_routed):
                continue
            good = guests.ping(guest_ns[b.port_id], b2.ipv4[0])
            report.append({"from": b.port_id, "to": b2.port_id, "address": b2.ipv4[0], "reached": good})
            out(f"traffic: {b.port_id[:13]} ({p.strategy}) -> {b2.ipv4[0]} ({p2.strategy}): "
                f"{'reached' if good else 'NOT reached'}")
    return {"pings": report}


def _segment(p) -> str | None:
    """The L2 segment a port lands on: its OVS bridge, else its Linux bridge."""
    for s in p.steps:
        if s.op == "ovs_port":
            return "ovs:" + s.args["bridge"]
    for s in p.steps:
        if s.op == "master":
            return s.args["master"]
    return None


def _routed_gateway(ctx) -> None:
    """The link-local gateway routed guests use, answered by the sandbox host."""
    from pyroute2 import IPRoute

    from vifwire.sandbox import guests

    with IPRoute(netns=ctx.netns) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        if not ipr.get_addr(index=lo, address=guests.ROUTED_GW4):
            ipr.addr("add", index=lo, address=guests.ROUTED_GW4, prefixlen=32)
