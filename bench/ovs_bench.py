"""OVS plug/unplug benchmark: vifwire vs os-vif 5.3.0 vs the floor.

For N ports of each kind, against ONE private Open vSwitch (ovsdb-server +
userspace ovs-vswitchd, ``datapath_type=netdev``, in a throwaway namespace):

* ``plain``:  a tap + an OVS port on br-int with the Neutron external_ids and
  ``mtu_request`` (vifwire: ``ovs_create_tap`` -> strategy ``ovs-create-tap``;
  os-vif: ``VIFOpenVSwitch`` with ``create_port`` + ``create_tap``);
* ``hybrid``: qbr Linux bridge + qvb/qvo veth, qvb on qbr, qvo on br-int
  (vifwire: ``ovs_hybrid_plug`` -> ``ovs-hybrid``; os-vif: ``VIFBridge``).

Contenders, each timed for plugging all N ports and then unplugging them:

* **vifwire**: ``Wiring(ctx, store).plug(items)`` / ``.unplug(records)`` --
  exactly what ``vifwire plug``/``unplug`` run (plans made beforehand, as
  Nova builds its VIF objects beforehand; the OVSDB connection is opened
  before the clock starts, as os-vif's is);
* **os-vif** 5.3.0 from PyPI, installed by this script in ``.venv-osvif``
  (gitignored): ``os_vif.plug``/``os_vif.unplug`` one VIF after the other,
  run inside the sandbox namespace (``ip netns exec``) with its native OVSDB
  connection pointed at the private OVS and oslo.privsep in-process
  (``set_client_mode(False)``; we are root already);
* **floor**: the same kernel devices made by one ``ip -batch`` file, and all
  OVS ports added (then removed) by one ``ovs-vsctl`` call, which waits for
  ovs-vswitchd like the others do; on unplug the devices are then removed by
  one ``ip -batch`` that moves them into a link group and deletes the group
  (the cheapest removal the kernel offers: one RCU grace period for all).

Every contender waits for ovs-vswitchd to have applied its change (vifwire:
``cur_cfg`` + an ofport for every port whose device exists; os-vif/ovsdbapp
and ovs-vsctl: ``cur_cfg``).  Medians over ``--rounds`` rounds, per port, in
ms.  ``--ipv6 off`` sets ``disable_ipv6`` in the sandbox namespace only (no
IPv6 autoconf/MLD/RS multicast from every new veth flooded by OVS to all N
ports), ``on`` keeps the kernel default.

    sudo .venv/bin/python bench/ovs_bench.py [--sizes 200 1000] [--kinds plain hybrid]
                                             [--rounds 3] [--rounds-large 1] [--ipv6 on|off]
                                             [--no-osvif] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from osvif import OSVIF_PY, PROLOGUE, ensure_osvif  # noqa: E402 - os-vif's venv and script start
from vifwire.executors import ovs as ovs_exec
from vifwire.executors.base import HostContext
from vifwire.executors.engine import Wiring
from vifwire.model.loader import load_one
from vifwire.planner.facts import HostFacts
from vifwire.planner.generic import plan
from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS
from vifwire.store.sqlite import SqliteStore

MTU = 1450
INSTANCE = "0b7f1c8e-1111-4222-8333-444455556666"
KINDS = ("plain", "hybrid")
FLOOR_GROUP = 0x7677FFFE  # link group of the floor's bulk delete (vifwire's own are random)
DETAILS = {"plain": {"port_filter": True, "ovs_create_tap": True},
           "hybrid": {"port_filter": True, "ovs_hybrid_plug": True}}


def pid(contender: str, i: int) -> str:
    return f"{contender[0]}{i:07x}-0000-4000-8000-{i:012x}"


def mac(contender: str, i: int) -> str:
    return f"fa:16:3e:{ord(contender[0]):02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def names(port_id: str) -> dict[str, str]:
    return {p: (p + port_id)[:14] for p in ("tap", "qbr", "qvb", "qvo")}


def ext_ids(port_id: str, m: str) -> dict[str, str]:
    return {"iface-id": port_id, "iface-status": "active", "attached-mac": m, "vm-uuid": INSTANCE}


# --------------------------------------------------------------------------
# os-vif


OSVIF_SCRIPT = PROLOGUE + r'''
prefix = sys.argv[5]

def vif(i):
    return make_vif(f"{prefix}{i:07x}-0000-4000-8000-{i:012x}",
                    f"fa:16:3e:{ord(prefix):02x}:{(i >> 8) & 255:02x}:{i & 255:02x}")

warm = vif(0xfffffff)
os_vif.plug(warm, inst)  # connect, load the schema: not timed
os_vif.unplug(warm, inst)
vifs = [vif(i) for i in range(n)]
t0 = time.monotonic()
for v in vifs:
    os_vif.plug(v, inst)
t1 = time.monotonic()
for v in vifs:
    os_vif.unplug(v, inst)
t2 = time.monotonic()
print(json.dumps({"plug": t1 - t0, "unplug": t2 - t1}))
'''


def run_osvif(ns: str, ovs: PrivateOVS, kind: str, n: int) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(OSVIF_SCRIPT)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, OSVIF_PY, f.name, ovs.endpoint, kind, str(n), str(MTU), "o"],
                           capture_output=True, text=True, timeout=3600)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        raise RuntimeError(f"os-vif run failed: {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["plug"], out["unplug"]


# --------------------------------------------------------------------------
# vifwire


def run_vifwire(ns: str, ovs: PrivateOVS, kind: str, n: int, tmp: str) -> tuple[float, float]:
    facts = HostFacts(ovs_datapath="netdev")
    items = []
    for i in range(n):
        p = pid("vifwire", i)
        doc = {"id": p, "mac_address": mac("vifwire", i), "network_id": "4c1e6a0d-0000-4000-8000-000000000001",
               "fixed_ips": [], "binding:vif_type": "ovs", "binding:vif_details": DETAILS[kind],
               "binding:host_id": "bench", "device_id": INSTANCE, "network": {"mtu": MTU}}
        b = load_one(doc)
        items.append((b, plan(b, facts, render=False)))
    path = os.path.join(tmp, f"state-{kind}-{n}-{time.monotonic_ns()}.db")
    with HostContext(netns=ns, ovsdb=ovs.endpoint, ovs_timeout=600.0) as ctx, SqliteStore(path) as store:
        ovs_exec.client(ctx)  # the connection is opened before the clock starts (like os-vif's warm-up)
        t0 = time.monotonic()
        results = Wiring(ctx, store).plug(items)
        t1 = time.monotonic()
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"vifwire plug failed for {len(bad)} port(s): {bad[0]}")
        records = store.all()
        t2 = time.monotonic()
        problems = Wiring(ctx, store).unplug(records)
        t3 = time.monotonic()
        if problems:
            raise RuntimeError(f"vifwire unplug problems: {problems[:3]}")
    return t1 - t0, t3 - t2


# --------------------------------------------------------------------------
# the floor: one ip -batch, one ovs-vsctl


def run_floor(ns: str, ovs: PrivateOVS, kind: str, n: int, tmp: str) -> tuple[float, float]:
    add_ip, del_ip, add_ovs, del_ovs = [], [], [], []
    for i in range(n):
        p = pid("floor", i)
        nm = names(p)
        if kind == "plain":
            port = nm["tap"]
            add_ip += [f"tuntap add dev {port} mode tap", f"link set {port} mtu {MTU} up"]
            del_ip += [f"link set dev {port} group {FLOOR_GROUP}"]
        else:
            port = nm["qvo"]
            add_ip += [f"link add {nm['qbr']} type bridge forward_delay 0 stp_state 0",
                       f"link set {nm['qbr']} mtu {MTU} up",
                       f"link add {nm['qvb']} mtu {MTU} type veth peer name {port} mtu {MTU}",
                       f"link set {nm['qvb']} master {nm['qbr']} up", f"link set {port} up"]
            del_ip += [f"link set dev {nm['qvb']} group {FLOOR_GROUP}", f"link set dev {nm['qbr']} group {FLOOR_GROUP}"]
        ext = [f"external_ids:{k}={v}" for k, v in ext_ids(p, mac("floor", i)).items()]
        add_ovs += ["--", "add-port", "br-int", port, "--", "set", "Interface", port, *ext, f"mtu_request={MTU}"]
        del_ovs += ["--", "--if-exists", "del-port", "br-int", port]
    # devices leave in one batch: "ip link del group" unregisters them all
    # with one RCU grace period (one "link del" per device pays one each)
    del_ip.append(f"link del group {FLOOR_GROUP}")
    fa, fd = os.path.join(tmp, "floor-add.batch"), os.path.join(tmp, "floor-del.batch")
    with open(fa, "w") as f:
        f.write("\n".join(add_ip) + "\n")
    with open(fd, "w") as f:
        f.write("\n".join(del_ip) + "\n")
    t0 = time.monotonic()
    subprocess.run(["ip", "-n", ns, "-batch", fa], check=True)
    ovs.vsctl(*add_ovs, timeout=600)
    t1 = time.monotonic()
    ovs.vsctl(*del_ovs, timeout=600)
    subprocess.run(["ip", "-n", ns, "-batch", fd], check=True)
    t2 = time.monotonic()
    return t1 - t0, t2 - t1


# --------------------------------------------------------------------------


def leftovers(ns: str, ovs: PrivateOVS) -> list[str]:
    ports = [p for p in ovs.vsctl("list-ports", "br-int").split()]
    out = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
    links = [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()]
    return ports + [l for l in links if l.startswith(("tap", "qbr", "qvb", "qvo"))]


def cleanup(ns: str, ovs: PrivateOVS) -> None:
    ports = ovs.vsctl("list-ports", "br-int").split()
    if ports:
        ovs.vsctl(*[a for p in ports for a in ("--", "--if-exists", "del-port", "br-int", p)], timeout=600)
    for name in leftovers(ns, ovs):
        subprocess.run(["ip", "-n", ns, "link", "del", name], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rounds-large", type=int, default=None, metavar="R",
                    help="rounds for N >= 1000 (default: --rounds)")
    ap.add_argument("--ipv6", choices=("on", "off"), default="off")
    ap.add_argument("--no-osvif", action="store_true", help="skip os-vif (no venv needed)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results here")
    args = ap.parse_args()
    main_pid = os.getpid()

    def interrupted(*_):  # SIGTERM (e.g. a background run being stopped): clean up as for ^C
        if os.getpid() != main_pid:
            os._exit(143)  # a forked helper (pyroute2's netns socket maker): never run our cleanup
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if os.geteuid() != 0:
        print("needs root (network namespaces, a private OVS)", file=sys.stderr)
        return 2
    contenders = ["floor", "vifwire"] + ([] if args.no_osvif else ["os-vif"])
    if not args.no_osvif:
        ensure_osvif()
    raw: dict[str, list[tuple[float, float]]] = {}
    with netns.sandbox("ovsb") as ns, tempfile.TemporaryDirectory(prefix="vw-ovsb-") as tmp:
        if args.ipv6 == "off":
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        ovs = PrivateOVS()
        try:
            ovs.start(ns)
            ovs.add_bridge("br-int")
            for n in args.sizes:
                for kind in args.kinds:
                    rounds = args.rounds if n < 1000 or args.rounds_large is None else args.rounds_large
                    for r in range(rounds):
                        # rotate the order so no contender always runs first
                        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                        for c in order:
                            if c == "floor":
                                res = run_floor(ns, ovs, kind, n, tmp)
                            elif c == "vifwire":
                                res = run_vifwire(ns, ovs, kind, n, tmp)
                            else:
                                res = run_osvif(ns, ovs, kind, n)
                            left = leftovers(ns, ovs)
                            if left:
                                print(f"  ! {c} left {len(left)} thing(s) behind, e.g. {left[:3]}", file=sys.stderr)
                                cleanup(ns, ovs)
                            raw.setdefault(f"{n}/{kind}/{c}", []).append(res)
                            if args.json:  # as we go: a stopped run keeps what it measured
                                with open(args.json, "w") as f:
                                    json.dump(raw, f, indent=1)
                            print(f"  N={n} {kind:6} {c:8} round {r + 1}: plug {res[0] * 1000 / n:7.2f} "
                                  f"unplug {res[1] * 1000 / n:7.2f} ms/port", file=sys.stderr, flush=True)
        finally:
            ovs.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    report(raw, args.sizes, args.kinds, contenders, args.ipv6)
    return 0


def med(raw, key: str, n: int) -> tuple[float, float] | None:
    runs = raw.get(key)
    if not runs:
        return None
    return (statistics.median(r[0] for r in runs) * 1000 / n, statistics.median(r[1] for r in runs) * 1000 / n)


def report(raw, sizes, kinds, contenders, ipv6: str) -> None:
    print(f"\nOVS plug/unplug, ms per port (median of rounds), userspace datapath, IPv6 {ipv6}\n")
    print(f"| N | kind | contender | plug | unplug | plug+unplug |")
    print(f"|---|---|---|---:|---:|---:|")
    for n in sizes:
        for kind in kinds:
            for c in contenders:
                m = med(raw, f"{n}/{kind}/{c}", n)
                if m:
                    print(f"| {n} | {kind} | {c} | {m[0]:.2f} | {m[1]:.2f} | {m[0] + m[1]:.2f} |")
    print("\n| N | kind | plug: os-vif / vifwire (>= 10) | unplug: vifwire / floor (<= 1) "
          "| plug+unplug: os-vif / vifwire (>= 2.5) | vifwire per port N / N_min (<= 1.5) |")
    print("|---|---|---:|---:|---:|---:|")
    n0 = min(sizes)
    for n in sizes:
        for kind in kinds:
            v, f, o = (med(raw, f"{n}/{kind}/{c}", n) for c in ("vifwire", "floor", "os-vif"))
            v0 = med(raw, f"{n0}/{kind}/vifwire", n0)
            cells = [f"{o[0] / v[0]:.1f}x" if o and v else "-",
                     f"{v[1] / f[1]:.2f}" if v and f else "-",
                     f"{(o[0] + o[1]) / (v[0] + v[1]):.1f}x" if o and v else "-",
                     f"{(v[0] + v[1]) / (v0[0] + v0[1]):.2f}" if v and v0 else "-"]
            print(f"| {n} | {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
