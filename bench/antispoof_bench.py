"""Benchmark: cost of plugging one port's anti-spoofing filter vs. ports installed.

Runs entirely inside a throwaway network namespace (vifwire.sandbox.netns);
no real interfaces are needed because the filter is keyed by interface *name*.

    sudo .venv/bin/python bench/antispoof_bench.py [--sizes 100,1000,5000] [--reps 9]

For every size N it bulk-loads N ports (one transaction), then times
``AntiSpoof.add_port`` of --reps fresh ports (median and min), removes them
again (timing remove_port without and with ``hint=``), times add_port of an
installed port unchanged (re-plug) and changed (new CIDR pair: read back +
diff), and reads ``rule_path_length()``.

    sudo .venv/bin/python bench/antispoof_bench.py --batch 1000 [--rounds 3]

times the step handler's batch verbs, what a run of N routed ports costs
(``vifwire.executors.firewall.AntiSpoofHandler``): ``apply_many`` of N new
ports into an empty table (one transaction), ``verify_many`` of them (one
read of the sets), ``apply_many`` again (a re-plug: nothing changes), and
``remove_bulk`` (one transaction); next to them the floor, the same two
transactions handed to libnftables as prebuilt text (what is left is the
library and the kernel), and the per-port paths a run
used to take: one transaction per port (``install_port``) and one
``port_entries`` per port (three table listings each, timed on a sample of
20 ports and scaled to N).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import time

from vifwire.executors.antispoof import AntiSpoof, PortFilter
from vifwire.executors.nft import Nft
from vifwire.sandbox import netns


#: namespaces that are removed even when their creation fails half-way
sandbox = netns.sandbox


def port(i: int, bridged: bool = False) -> PortFilter:
    hi, lo = divmod(i, 250)
    return PortFilter(
        ifname=f"tap{i:06d}",
        mac=f"fa:16:3e:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}",
        ipv4=[f"10.98.{hi % 250}.{lo + 1}"] if i < 62500 else [],
        ipv6=[f"fd98::{i >> 16:x}:{i & 0xFFFF:x}:1"],
        allowed_pairs=[(f"10.97.{hi % 250}.{lo + 1}", None)] if i % 10 == 0 else [],
        bridged=bridged,
    )


def timed(fn) -> float:
    gc.collect()  # keep Python's GC of the big listings out of the timings
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_size(asp: AntiSpoof, have: int, target: int, reps: int, bridged: bool) -> dict:
    if target > have:
        t = timed(lambda: asp.add_ports(port(i, bridged) for i in range(have, target)))
        print(f"  bulk-loaded ports {have}..{target - 1} in {t:.2f}s", file=sys.stderr)
        time.sleep(0.5)  # let the kernel's deferred hash-table resizes settle
    base = 900_000
    fresh = [port(base + r, bridged) for r in range(reps)]
    # plug: `reps` new ports one after the other (population grows by reps)
    adds = [timed(lambda pf=pf: asp.add_port(pf)) for pf in fresh]
    # unplug them again, alternating plain remove_port and remove_port(hint=)
    removes, hinted = [], []
    for r, pf in enumerate(fresh):
        if r % 2:
            removes.append(timed(lambda pf=pf: asp.remove_port(pf.ifname)))
        else:
            hinted.append(timed(lambda pf=pf: asp.remove_port(pf.ifname, hint=pf)))
    existing = port(target // 2, bridged)
    few = max(3, reps // 3)
    replug = [timed(lambda: asp.add_port(existing)) for _ in range(few)]
    changed = []
    for r in range(few):
        pf = port(target // 2, bridged)
        pf.allowed_pairs = [(f"10.96.{r}.0/24", None)]
        changed.append(timed(lambda: asp.add_port(pf)))
    asp.add_port(existing)
    return {
        "ports": target,
        "add_ms": statistics.median(adds) * 1e3,
        "add_min_ms": min(adds) * 1e3,
        "replug_ms": statistics.median(replug) * 1e3,
        "change_ms": statistics.median(changed) * 1e3,
        "remove_ms": statistics.median(removes) * 1e3,
        "hinted_ms": statistics.median(hinted) * 1e3,
        "path": asp.rule_path_length(),
    }


def run_batch(n: int, rounds: int) -> None:
    from vifwire.executors.antispoof.elements import want_text
    from vifwire.executors.antispoof.transaction import add_cmds, delete_cmds, transaction_text
    from vifwire.executors.base import HostContext
    from vifwire.executors.firewall import AntiSpoofHandler, anti_spoof
    from vifwire.planner.plan import Step

    def step(pf: PortFilter) -> Step:
        return Step(op="antispoof", args={"ifname": pf.ifname, "mac": pf.mac, "ipv4": pf.ipv4, "ipv6": pf.ipv6,
                                          "pairs": [{"ip": ip, "mac": m} for ip, m in pf.allowed_pairs],
                                          "bridged": pf.bridged})

    h = AntiSpoofHandler()
    cols: dict[str, list[float]] = {}
    for r in range(rounds):
        with sandbox("asbatch") as ns, HostContext(netns=ns) as ctx:
            anti = anti_spoof(ctx)
            anti.ensure()
            pfs = [port(i) for i in range(n)]
            steps = [step(pf) for pf in pfs]
            texts = [want_text(pf) for pf in pfs]
            add_doc = transaction_text(add_cmds(texts, registry="create"))
            del_doc = transaction_text(delete_cmds(texts))
            got = {
                "apply_many (new)": timed(lambda: h.apply_many(steps, ctx)),
                "verify_many": timed(lambda: h.verify_many(steps, ctx)),
                "apply_many (re-plug)": timed(lambda: h.apply_many(steps, ctx)),
                "remove_bulk": timed(lambda: h.remove_bulk(steps, ctx)),
                # the floor: the same transactions as prebuilt text, libnftables and the kernel only
                "floor: libnftables add": timed(lambda: ctx.nft.run_text(add_doc)),
                "floor: libnftables delete": timed(lambda: ctx.nft.run_text(del_doc)),
                "per port: install_port x N": timed(lambda: [anti.install_port(pf) for pf in pfs]),
                "per port: port_entries x N": timed(lambda: [anti.port_entries(pf.ifname) for pf in pfs[:20]])
                * n / 20,
            }
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in got.items()), file=sys.stderr)
        for k, v in got.items():
            cols.setdefault(k, []).append(v)
    print(f"anti-spoof step handler, {n} routed ports, median of {rounds} round(s)")
    for k, v in cols.items():
        med = statistics.median(v)
        print(f"  {k:<28} {med * 1e3:>10.1f} ms  {med * 1e3 / n:>7.3f} ms/port")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,2000,5000")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--bridged", action="store_true", help="bridge-family ports")
    ap.add_argument("--batch", type=int, metavar="N", help="time the step handler's batch verbs for N ports")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    if a.batch:
        run_batch(a.batch, a.rounds)
        return 0
    sizes = sorted(int(x) for x in a.sizes.split(","))
    rows = []
    with sandbox("asbench") as ns, Nft(ns) as nft:
        asp = AntiSpoof(nft)
        asp.ensure_tables()
        have = 0
        for n in sizes:
            rows.append(run_size(asp, have, n, a.reps, a.bridged))
            have = n
    kind = "bridged" if a.bridged else "routed (inet+arp)"
    print(f"anti-spoof plug cost, {kind} ports, median of {a.reps}")
    hdr = (
        f"{'ports':>7} {'add_port ms':>12} {'(min)':>7} {'re-plug':>8} {'change':>8}"
        f" {'remove':>8} {'rm+hint':>8} {'rule path':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['ports']:>7} {r['add_ms']:>12.2f} {r['add_min_ms']:>7.2f} {r['replug_ms']:>8.2f}"
            f" {r['change_ms']:>8.2f} {r['remove_ms']:>8.2f} {r['hinted_ms']:>8.2f} {r['path']:>10}"
        )
    print("(ms; re-plug = add_port of an installed port, unchanged; change = with a new pair;")
    print(" remove = remove_port(ifname); rm+hint = remove_port(ifname, hint=pf))")
    small = rows[0]
    for r in rows[1:]:
        print(f"add_port at {r['ports']} / at {small['ports']}: {r['add_ms'] / small['add_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
