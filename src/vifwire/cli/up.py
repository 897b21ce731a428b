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
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the ExitStack tears everything down.

    Only in this process: helpers forked by pyroute2 (to enter namespaces)
    inherit the handler, and must simply exit instead of unwinding our stack.
    """
    import os

    owner = os.getpid()

    def _raise(signum, frame):  # noqa: ARG001
        if os.getpid() != owner:
            os._exit(0)
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
    """Give each container guest its addresses, ping between them, then show a
    routed guest's spoofed packet being dropped and counted by its filter."""
    import select
    import socket
    import time

    from pyroute2 import IPRoute

    from vifwire.model import names
    from vifwire.sandbox import guests

    def spoof_demo(ctx, guest_ns, src, dst, out) -> dict[str, Any]:
        """Send a spoofed-source ICMP echo from ``src``'s guest to ``dst``; report the drop counter."""
        from vifwire.executors.antispoof import AntiSpoof
        from vifwire.executors.nft import Nft
        from vifwire.sandbox import tunvm

        spoofed = "192.0.2.66"  # TEST-NET-1: owned by no port
        with IPRoute(netns=ctx.netns) as ipr:
            idx = ipr.link_lookup(ifname=src.devname)[0]
            gw_mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")  # the host end answers for the gateway

        def raw(ifname: str) -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind((ifname, 0))
            s.setblocking(False)
            return s

        anti = AntiSpoof(ctx.get(f"nft:{ctx.netns}", lambda: Nft(ctx.netns)))
        tx = tunvm.run_in_netns(guest_ns[src.port_id], raw, names.tin_for(src.devname))
        rx = tunvm.run_in_netns(guest_ns[dst.port_id], raw, names.tin_for(dst.devname))
        try:
            before = anti.drops(src.devname).get("ip4", 0)
            tx.send(tunvm.echo4_frame(gw_mac, src.mac, spoofed, dst.ipv4[0], 0x5f5f, 1))
            arrived = False
            end = time.monotonic() + 1.0
            while (left := end - time.monotonic()) > 0 and not arrived:
                if select.select([rx], [], [], left)[0]:
                    arrived = tunvm.parse(rx.recv(65535)).ip_src == spoofed
            after = before
            for _ in range(20):
                after = anti.drops(src.devname).get("ip4", 0)
                if after > before:
                    break
                time.sleep(0.05)
        finally:
            tx.close()
            rx.close()
        blocked = after > before and not arrived
        still = any(guests.ping(guest_ns[src.port_id], dst.ipv4[0]) for _ in range(3))
        out(f"traffic: spoof {src.port_id[:13]} (source {spoofed}, not its {src.ipv4[0]}) -> {dst.ipv4[0]}: "
            f"{'blocked' if blocked else 'NOT blocked'}, drop counter ip4 {before} -> {after}; "
            f"legit traffic afterwards: {'reached' if still else 'NOT reached'}")
        return {"from": src.port_id, "source": spoofed, "to": dst.ipv4[0], "blocked": blocked,
                "drops_before": before, "drops_after": after, "legit_after": still}

    ok = {r.port_id for r in results if r.ok}
    routed = {"veth-routed"}
    configured = []
    for b, p in items:
        if b.port_id not in ok or b.port_id not in guest_ns or p.strategy == "macvtap":
            continue
        if not b.ipv4:
            continue
        tin = names.tin_for(b.devname)
        # the container's NIC carries the port's MAC, as LXD sets it from the
        # device's hwaddr (the anti-spoofing filter allows only that MAC)
        with IPRoute(netns=guest_ns[b.port_id]) as ipr:
            idx = ipr.link_lookup(ifname=tin)
            if idx and ipr.get_links(idx[0])[0].get_attr("IFLA_ADDRESS") != b.mac:
                ipr.link("set", index=idx[0], state="down")
                ipr.link("set", index=idx[0], address=b.mac)
        is_routed = p.strategy in routed
        guests.configure(guest_ns[b.port_id], tin, list(b.ipv4), list(b.ipv6) if is_routed else [],
                         routed=is_routed)
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
            good = any(guests.ping(guest_ns[b.port_id], b2.ipv4[0]) for _ in range(3))
            report.append({"from": b.port_id, "to": b2.port_id, "address": b2.ipv4[0], "reached": good})
            out(f"traffic: {b.port_id[:13]} ({p.strategy}) -> {b2.ipv4[0]} ({p2.strategy}): "
                f"{'reached' if good else 'NOT reached'}")
    result: dict[str, Any] = {"pings": report}
    # a spoof attempt: a routed, filtered guest sends with a source address it does not own
    filtered = [(b, p) for b, p in configured if p.strategy in routed and any(s.op == "antispoof" for s in p.steps)]
    others = [(b, p) for b, p in configured if p.strategy in routed]
    if filtered and len(others) > 1:
        src, _ = filtered[0]
        dst = next(b for b, _ in others if b is not src)
        result["spoof"] = spoof_demo(ctx, guest_ns, src, dst, out)
    return result


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
    """The gateways routed guests use, answered by the sandbox host: 169.254.1.1
    on its lo (ARP from the guest's tap), fe80::1 by the proxy NDP entry vifwire
    adds on each tap. IPv6 forwards only with forwarding on host-wide, which a
    routed compute host has; here it is set in the sandbox namespace only."""
    from pyroute2 import IPRoute

    from vifwire.sandbox import guests, tunvm

    if not ctx.netns:
        return  # only ever the sandbox's own namespace
    with IPRoute(netns=ctx.netns) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        if not ipr.get_addr(index=lo, address=guests.ROUTED_GW4):
            ipr.addr("add", index=lo, address=guests.ROUTED_GW4, prefixlen=32)
    if tunvm.sysctl_read(ctx.netns, "net/ipv6/conf/all/forwarding") not in (None, "1"):
        tunvm.sysctl_write(ctx.netns, "net/ipv6/conf/all/forwarding", "1")
