"""Benchmark of the netlink executor against the ``ip -batch`` floor.

For N VIFs of each wiring type, in a fresh sandbox namespace per round:

* vifwire plug: the kernel handlers applying each VIF's steps (as a plan
  would list them), one VIF after the other, one HostContext for the run;
* the floor: ``ip -n NS -batch FILE`` doing the same device operations;
* unplug one by one: each VIF's steps removed in reverse (a sample of
  ``--unplug-sample`` VIFs: every removal pays an RCU grace period, so the
  per-VIF cost is flat and sampling keeps the run short); the floor is
  ``ip -batch`` with ``link del`` per device of the sample;
* bulk unplug: :func:`remove_links_bulk` of every device of all N VIFs;
  its floor is ``ip -batch`` moving the devices into a group and deleting it
  (``link del group``), on the N - sample VIFs left there, scaled to N.

Two kernel settings (``--ipv6``), applied to the sandbox namespace only:

* ``on``: the kernel default. Every new host-side device runs IPv6 autoconf
  (link-local address, DAD, router solicitations, MLD reports). That work
  runs in kernel workqueues that take RTNL, and on a bridge every one of those
  multicasts is flooded to all N ports, so at N=1000 it dominates whatever is
  measured, for ``ip`` as much as for vifwire;
* ``off``: ``net.ipv6.conf.{all,default}.disable_ipv6=1`` in the sandbox, so
  the numbers show the device operations themselves.

Each kind's steps carry what the planner gives that wiring: ``no_ipv6`` on
the host-side ends that carry no address (vifwire writes ``disable_ipv6=1``
before they come up); the floor does the nearest thing ``ip`` can, setting
``addrgenmode none`` before the device comes up. ``tap`` is a routed tap for
a guest with IPv6 addresses, so it keeps IPv6 (a tap has no carrier before
its guest opens it).

Every namespace is emptied (bulk removal, untimed for the floor) before it is
deleted: the kernel tears a namespace down asynchronously, and 1000 leftover
devices would otherwise be destroyed while the next measurement runs.

Medians over ``--rounds`` rounds. Runs as root, entirely inside namespaces
it creates (``vifwire.sandbox.netns``), which are always removed.

    .venv/bin/python bench/kernel_bench.py [--sizes 200 1000] [--rounds 3] [--ipv6 on off]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vifwire.executors import kernel as K
from vifwire.executors.base import HostContext
from vifwire.executors.registry import handler
from vifwire.planner.plan import LINK_KINDS, Plan, Step
from vifwire.sandbox import netns

MTU = 1450


def mac(i: int) -> str:
    return f"fa:16:3e:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def _plan(steps: list[Step], i: int) -> Plan:
    return Plan(port_id=f"p{i}", devname=f"tap{i:05d}", mac=mac(i), vif_type="bench",
                vnic_type="normal", hypervisor="lxd", strategy="bench", reason="bench", steps=steps)


@dataclass
class Kind:
    name: str
    steps: Callable[[int], list[Step]]  # VIF i -> its steps
    batch: Callable[[int], list[str]]  # VIF i -> ip -batch lines creating it
    batch_del: Callable[[int], list[str]]  # VIF i -> ip -batch lines removing it
    setup: Callable[[str], None] = lambda ns: None  # prerequisites (not timed)
    note: str = ""

    def owned_steps(self, i: int) -> list[Step]:
        """VIF i's steps with the ``owner`` the planner gives link steps, so
        that unplug removes the links it is measured removing."""
        out = []
        for st in self.steps(i):
            if st.op in LINK_KINDS and not st.args.get("shared"):
                st = Step(op=st.op, args={**st.args, "owner": f"p{i}"}, why=st.why)
            out.append(st)
        return out


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def _setup_bridge(ns: str) -> None:
    # made as the planner's bridge step makes a network's bridge (IPv6 off)
    with HostContext(netns=ns) as ctx:
        handler("bridge").apply(Step(op="bridge", args={"name": "br0", "mtu": MTU, "shared": True}), ctx)


def _setup_source(ns: str) -> None:
    # this kernel has no dummy driver; a veth end is as good a macvtap source
    _ip(ns, "link", "add", "src0", "mtu", "1500", "up", "type", "veth", "peer", "name", "src1")
    _ip(ns, "link", "set", "src1", "up")


KINDS = [
    Kind(
        "tap",
        lambda i: [Step(op="tap", args={"name": f"tap{i:05d}", "mac": mac(i), "mtu": MTU, "multiqueue": False})],
        lambda i: [f"tuntap add tap{i:05d} mode tap vnet_hdr",
                   f"link set tap{i:05d} address {mac(i)} mtu {MTU} up"],
        lambda i: [f"link del tap{i:05d}"],
    ),
    Kind(
        "veth tap/tin",
        lambda i: [Step(op="veth", args={"name": f"tap{i:05d}", "peer": f"tin{i:05d}", "mtu": MTU,
                                         "no_ipv6": [f"tap{i:05d}", f"tin{i:05d}"]})],
        lambda i: [f"link add tap{i:05d} mtu {MTU} up type veth peer name tin{i:05d} mtu {MTU}",
                   f"link set tap{i:05d} addrgenmode none", f"link set tin{i:05d} addrgenmode none",
                   f"link set tin{i:05d} up"],
        lambda i: [f"link del tap{i:05d}"],
        note="a container's pair on the host, as planned for a routed port without IPv6 addresses",
    ),
    Kind(
        "veth + bridge",
        lambda i: [Step(op="bridge", args={"name": "br0", "mtu": MTU, "shared": True}),
                   Step(op="veth", args={"name": f"tap{i:05d}", "peer": f"tin{i:05d}", "mtu": MTU,
                                         "no_ipv6": [f"tap{i:05d}", f"tin{i:05d}"]}),
                   Step(op="master", args={"name": f"tap{i:05d}", "master": "br0"})],
        lambda i: [f"link add tap{i:05d} mtu {MTU} up type veth peer name tin{i:05d} mtu {MTU}",
                   f"link set tap{i:05d} addrgenmode none", f"link set tin{i:05d} addrgenmode none",
                   f"link set tin{i:05d} up", f"link set tap{i:05d} master br0"],
        lambda i: [f"link del tap{i:05d}"],
        setup=_setup_bridge,
        note="shared br0 exists (ensured per VIF by the bridge step, as planned)",
    ),
    Kind(
        "hybrid qbr+qvb/qvo",
        lambda i: [Step(op="bridge", args={"name": f"qbr{i:05d}", "mtu": MTU, "shared": False}),
                   Step(op="veth", args={"name": f"qvb{i:05d}", "peer": f"qvo{i:05d}", "mtu": MTU,
                                         "no_ipv6": [f"qvb{i:05d}", f"qvo{i:05d}"]}),
                   Step(op="master", args={"name": f"qvb{i:05d}", "master": f"qbr{i:05d}"})],
        lambda i: [f"link add qbr{i:05d} mtu {MTU} type bridge forward_delay 0 stp_state 0",
                   f"link set qbr{i:05d} addrgenmode none up",
                   f"link add qvb{i:05d} mtu {MTU} up type veth peer name qvo{i:05d} mtu {MTU}",
                   f"link set qvb{i:05d} addrgenmode none", f"link set qvo{i:05d} addrgenmode none",
                   f"link set qvo{i:05d} up", f"link set qvb{i:05d} master qbr{i:05d}"],
        lambda i: [f"link del qvb{i:05d}", f"link del qbr{i:05d}"],
    ),
    Kind(
        "macvtap",
        lambda i: [Step(op="macvtap", args={"name": f"mvt{i:05d}", "source": "src0", "mode": "bridge",
                                            "mac": mac(i), "mtu": MTU, "no_ipv6": [f"mvt{i:05d}"]})],
        lambda i: [f"link add link src0 name mvt{i:05d} mtu {MTU} address {mac(i)} type macvtap mode bridge",
                   f"link set mvt{i:05d} addrgenmode none up"],
        lambda i: [f"link del mvt{i:05d}"],
        setup=_setup_source,
        note="source is a veth end (no dummy driver on this kernel)",
    ),
]


@dataclass
class Result:
    plug: list[float] = field(default_factory=list)  # ms per VIF
    floor: list[float] = field(default_factory=list)
    unplug: list[float] = field(default_factory=list)
    unplug_floor: list[float] = field(default_factory=list)
    bulk: list[float] = field(default_factory=list)  # seconds total
    bulk_floor: list[float] = field(default_factory=list)


def _plug(ctx: HostContext, kind: Kind, n: int) -> float:
    all_steps = [kind.owned_steps(i) for i in range(n)]
    t = time.perf_counter()
    for steps in all_steps:
        for s in steps:
            handler(s.op).apply(s, ctx)
    return time.perf_counter() - t


def _run_batch(ns: str, lines: list[str]) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write("".join(ln + "\n" for ln in lines))
        path = f.name
    try:
        t = time.perf_counter()
        subprocess.run(["ip", "-n", ns, "-batch", path], check=True)
        return time.perf_counter() - t
    finally:
        os.unlink(path)


def _batch(ns: str, lines: list[str]) -> float:
    """Seconds ``ip -batch`` spends on ``lines``, its own start-up excluded
    (vifwire's timings exclude opening its socket and helper thread, too)."""
    startup = statistics.median(_run_batch(ns, []) for _ in range(3))
    return max(_run_batch(ns, lines) - startup, 1e-9)


def _ctx(ns: str) -> HostContext:
    ctx = HostContext(netns=ns, port_id="bench")
    K.channel(ctx)  # open the namespace's socket and helper outside the timings
    K.worker(ctx)
    return ctx


@contextlib.contextmanager
def _sandbox():
    """A sandbox namespace; creation is retried (it needs RTNL, which other
    users of this shared machine may hold for a while)."""
    for attempt in range(5):
        try:
            cm = netns.sandbox("kb")
            ns = cm.__enter__()
            break
        except (TimeoutError, OSError, subprocess.TimeoutExpired):  # sandbox cleans up after itself
            if attempt == 4:
                raise
            time.sleep(2)
    try:
        yield ns
    finally:
        cm.__exit__(None, None, None)


def _prepare(ns: str, kind: Kind, ipv6: bool) -> None:
    if not ipv6:
        with HostContext(netns=ns) as ctx:
            for conf in ("all", "default"):
                K.worker(ctx).call(K.sysctl_write, f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "1")
    kind.setup(ns)


def _empty(ns: str, names: list[str]) -> None:
    with HostContext(netns=ns) as ctx:
        K.remove_links_bulk(ctx, names)


def run_round(kind: Kind, n: int, sample: int, res: Result, ipv6: bool) -> None:
    plans = [_plan(kind.owned_steps(i), i) for i in range(n)]
    names = [d for p in plans for d in p.devices()]
    # vifwire: plug N, unplug a sample one by one, bulk-unplug the rest
    with _sandbox() as ns:
        _prepare(ns, kind, ipv6)
        with _ctx(ns) as ctx:
            res.plug.append(_plug(ctx, kind, n) * 1000 / n)
            k = min(sample, n)
            t = time.perf_counter()
            for p in plans[:k]:
                for s in reversed(p.steps):
                    handler(s.op).remove(s, ctx)
            res.unplug.append((time.perf_counter() - t) * 1000 / k)
            # restore the sample so that bulk removal sees all N VIFs
            for p in plans[:k]:
                for s in p.steps:
                    handler(s.op).apply(s, ctx)
            t = time.perf_counter()
            K.remove_links_bulk(ctx, names)
            res.bulk.append(time.perf_counter() - t)
            left = [d for d in names if K.channel(ctx).get_link(d) is not None]
            if left:
                raise SystemExit(f"bulk removal left {len(left)} links: {left[:5]}")
            _empty(ns, ["br0", "src0"])
    time.sleep(0.5)
    # the floor: ip -batch
    with _sandbox() as ns:
        _prepare(ns, kind, ipv6)
        res.floor.append(_batch(ns, [ln for i in range(n) for ln in kind.batch(i)]) * 1000 / n)
        k = min(sample, n)
        res.unplug_floor.append(_batch(ns, [ln for i in range(k) for ln in kind.batch_del(i)]) * 1000 / k)
        # bulk floor: the same group trick, by ip (devices of the sample are gone)
        rest = [d for p in plans[k:] for d in p.devices()]
        scale = len(names) / max(len(rest), 1)
        res.bulk_floor.append(scale * _batch(ns, [f"link set {d} group 4242" for d in rest]
                                                 + ["link del group 4242"]))
        _empty(ns, names + ["br0", "src0"])
    time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unplug-sample", type=int, default=50)
    ap.add_argument("--kinds", nargs="*", help="subset of: " + ", ".join(k.name for k in KINDS))
    ap.add_argument("--ipv6", nargs="+", choices=["on", "off"], default=["off", "on"],
                    help="IPv6 autoconf in the sandbox (see the module docstring)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (creates network namespaces)", file=sys.stderr)
        return 1
    kinds = [k for k in KINDS if not args.kinds or k.name in args.kinds]
    results: dict[tuple[str, str, int], Result] = {}
    for v6 in args.ipv6:
        for kind in kinds:
            for n in args.sizes:
                res = results.setdefault((v6, kind.name, n), Result())
                for _ in range(args.rounds):
                    run_round(kind, n, args.unplug_sample, res, v6 == "on")
                print(f"  ipv6 {v6:3} {kind.name:20} N={n:5}: plug {statistics.median(res.plug):.3f} ms/VIF, "
                      f"floor {statistics.median(res.floor):.3f}, unplug {statistics.median(res.unplug):.2f}, "
                      f"bulk {statistics.median(res.bulk):.3f} s", file=sys.stderr, flush=True)
    med = statistics.median
    big, small = max(args.sizes), min(args.sizes)
    for kind in kinds:
        print(f"\n{kind.name}" + (f"  ({kind.note})" if kind.note else ""))
        print(f"  {'IPv6':>4} {'N':>5} {'plug ms/VIF':>12} {'ip -batch':>10} {'ratio':>6} {'r/round':>7} {'unplug ms/VIF':>14} "
              f"{'ip unplug':>10} {'bulk unplug s':>14} {'ip bulk s':>10}")
        for v6 in args.ipv6:
            for n in args.sizes:
                r = results[(v6, kind.name, n)]
                per_round = med(p / f for p, f in zip(r.plug, r.floor))
                print(f"  {v6:>4} {n:>5} {med(r.plug):>12.3f} {med(r.floor):>10.3f} "
                      f"{med(r.plug) / med(r.floor):>6.2f} {per_round:>7.2f} {med(r.unplug):>14.2f} "
                      f"{med(r.unplug_floor):>10.2f} "
                      f"{med(r.bulk):>14.3f} {med(r.bulk_floor):>10.3f}")
            if big != small:
                rb, rs = results[(v6, kind.name, big)], results[(v6, kind.name, small)]
                print(f"  {v6:>4} per-VIF plug cost N={big} vs N={small}: {med(rb.plug) / med(rs.plug):.2f}x "
                      f"(ip -batch: {med(rb.floor) / med(rs.floor):.2f}x)")
    print(f"\nmedians of {args.rounds} rounds; ratio = median plug / median floor; r/round = median of the"
          " per-round ratios (vifwire and ip measured back to back); unplug = sample of"
          f" {args.unplug_sample} VIFs removed one by one; IPv6 = autoconf in the sandbox namespace")
    return 0


if __name__ == "__main__":
    sys.exit(main())
