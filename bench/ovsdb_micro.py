"""Micro-benchmark of the OVSDB layer alone (vifwire.executors.ovsdb).

Starts a private OVS (ovsdb-server + userspace ovs-vswitchd in a throwaway
namespace) and, for each N and port kind, measures in ONE transaction each:

* ``add``        OvsdbClient.add_ports (commit acknowledged by ovsdb-server)
* ``applied``    + wait_applied until every port has an ofport (ovs-vswitchd)
* ``del``        OvsdbClient.del_ports
* ``del-applied``+ wait_cfg (ovs-vswitchd removed them)

Prints the median over ``--runs`` runs as total ms and ms/port.  Kinds:
``internal`` (ovs-vswitchd creates a tap per port) and ``veth`` (veth pairs
created beforehand with pyroute2, not timed; the host end is plugged).

    sudo .venv/bin/python bench/ovsdb_micro.py [--n 200 1000] [--runs 3] [--db-only]

``--db-only`` SIGSTOPs ovs-vswitchd around add/del, timing just this client
and ovsdb-server (the floor of this layer, free of kernel device work).

``--client ovsdbapp`` runs the same plug/unplug through ovsdbapp 3.0 (the
library os-vif and Neutron use: the ``ovs`` IDL, here monitoring only the four
tables vifwire needs, which is its best case), as os-vif writes it: one
transaction of ``add_port`` + ``db_set`` per port, one of ``del_port`` per
port. Its transactions wait for ovs-vswitchd themselves (``cur_cfg``, the
ofports of new interfaces), so only ``applied`` and ``del-applied`` are
comparable (and ``--db-only`` does not apply). ``connect`` is a fresh
connection's initial sync with the N ports present (the replica vs the IDL).
See docs/ovs.md, "Why not ovsdbapp / the ovs IDL". ovsdbapp is not a vifwire
dependency: ``.venv/bin/pip install ovsdbapp==3.0.0`` for this comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from pyroute2 import IPRoute

from vifwire.executors.ovsdb import OvsdbClient, OvsPortSpec
from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS


def _ext(i: int) -> dict[str, str]:
    return {
        "iface-id": f"4b1e2c2a-0000-4000-8000-{i:012d}",
        "iface-status": "active",
        "attached-mac": f"fa:16:3e:00:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}",
        "vm-uuid": "0b7f1c8e-1111-4222-8333-444455556666",
        "vifwire-owner": "bench",
    }


def _make_veths(ns: str, n: int) -> list[str]:
    names = []
    with IPRoute(netns=ns) as ipr:
        for i in range(n):
            h, p = f"bvh{i}", f"bvp{i}"
            ipr.link("add", ifname=h, kind="veth", peer=p)
            for name in (h, p):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            names.append(h)
    return names


def _del_veths(ns: str, names: list[str]) -> None:
    with IPRoute(netns=ns) as ipr:
        for h in names:
            idx = ipr.link_lookup(ifname=h)
            if idx:
                ipr.link("del", index=idx[0])


def run_db_only(c: OvsdbClient, ovs: PrivateOVS, names: list[str], kind: str) -> dict[str, float]:
    """add + del with ovs-vswitchd SIGSTOPped: this client + ovsdb-server only.

    (On resume ovs-vswitchd sees the net result -- nothing -- so the runs do
    not pay for tap creation/removal.)"""
    itype = "internal" if kind == "internal" else ""
    specs = [OvsPortSpec("br-int", n, itype, _ext(i), mtu_request=1450, tag=1)
             for i, n in enumerate(names)]
    ovs.pause_vswitchd()
    try:
        t0 = time.perf_counter()
        c.add_ports(specs)
        t1 = time.perf_counter()
        c.del_ports(names)
        t2 = time.perf_counter()
    finally:
        ovs.resume_vswitchd()
    c.wait_cfg(timeout=1800)
    return {"add": t1 - t0, "del": t2 - t1}


def run_once(c: OvsdbClient, names: list[str], kind: str) -> dict[str, float]:
    itype = "internal" if kind == "internal" else ""
    specs = [OvsPortSpec("br-int", n, itype, _ext(i), mtu_request=1450, tag=1)
             for i, n in enumerate(names)]
    t0 = time.perf_counter()
    c.add_ports(specs)
    t1 = time.perf_counter()
    c.wait_applied(names, timeout=1800)
    t2 = time.perf_counter()
    c.del_ports(names)
    t3 = time.perf_counter()
    c.wait_cfg(timeout=1800)
    t4 = time.perf_counter()
    return {"add": t1 - t0, "applied": t2 - t0, "del": t3 - t2, "del-applied": t4 - t2}


def connect_time(endpoint: str, client: str) -> float:
    t0 = time.perf_counter()
    if client == "ovsdbapp":
        api = _ovsdbapp(endpoint)
        t = time.perf_counter() - t0
        api.ovsdb_connection.stop()
        return t
    OvsdbClient(endpoint, timeout=30).close()
    return time.perf_counter() - t0


def _ovsdbapp(endpoint: str):
    from ovsdbapp.backend.ovs_idl import connection
    from ovsdbapp.schema.open_vswitch import impl_idl

    idl = connection.OvsdbIdl.from_server(endpoint, "Open_vSwitch",
                                          helper_tables=("Open_vSwitch", "Bridge", "Port", "Interface"))
    conn = connection.Connection(idl=idl, timeout=1800)
    conn.start()  # returns once the IDL has its initial replica
    return impl_idl.OvsdbIdl(conn)


def run_once_ovsdbapp(api, names: list[str], kind: str) -> dict[str, float]:
    """os-vif's plug and unplug (os_vif/internal/ovsdb/ovsdb_lib.py), N ports per transaction."""
    itype = "internal" if kind == "internal" else ""
    t0 = time.perf_counter()
    with api.transaction(check_error=True) as txn:
        for i, n in enumerate(names):
            txn.add(api.add_port("br-int", n))
            cols = [("external_ids", _ext(i)), ("mtu_request", 1450)]
            if itype:
                cols.append(("type", itype))
            txn.add(api.db_set("Interface", n, *cols))
            txn.add(api.db_set("Port", n, ("tag", 1)))
    t1 = time.perf_counter()
    with api.transaction(check_error=True) as txn:
        for n in names:
            txn.add(api.del_port(n, bridge="br-int", if_exists=True))
    t2 = time.perf_counter()
    return {"applied": t1 - t0, "del-applied": t2 - t1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kind", nargs="+", default=["internal", "veth"], choices=["internal", "veth"])
    ap.add_argument("--db-only", action="store_true",
                    help="pause ovs-vswitchd: time only this client + ovsdb-server")
    ap.add_argument("--client", choices=["vifwire", "ovsdbapp"], default="vifwire")
    args = ap.parse_args(argv)
    if args.client == "ovsdbapp" and args.db_only:
        ap.error("ovsdbapp's transactions wait for ovs-vswitchd: no --db-only")
    keys = ("add", "del") if args.db_only else ("add", "applied", "del", "del-applied")
    if args.client == "ovsdbapp":
        keys = ("applied", "del-applied")

    with netns.sandbox("bench") as ns, PrivateOVS().start(ns) as ovs:
        ovs.add_bridge("br-int")
        t0 = time.perf_counter()
        c = OvsdbClient(ovs.endpoint, timeout=30)
        print(f"connect + initial sync: {(time.perf_counter() - t0) * 1e3:.1f} ms")
        print(f"{'kind':9} {'N':>5} | " + " | ".join(f"{k:>22}" for k in keys))
        print(f"{'':9} {'':>5} | " + " | ".join(f"{'total ms':>10} {'ms/port':>11}" for _ in keys))
        for kind in args.kind:
            for n in args.n:
                if kind == "veth":
                    names = _make_veths(ns, n)
                else:
                    names = [f"bti{i}" for i in range(n)]
                # ovsdbapp: a fresh connection per size (one kept across sizes
                # while another connected and stopped was seen to hang its
                # next transaction)
                api = _ovsdbapp(ovs.endpoint) if args.client == "ovsdbapp" else None
                try:
                    if api is not None:
                        runs = [run_once_ovsdbapp(api, names, kind) for _ in range(args.runs)]
                        api.ovsdb_connection.stop()
                    elif args.db_only:
                        runs = [run_db_only(c, ovs, names, kind) for _ in range(args.runs)]
                    else:
                        runs = [run_once(c, names, kind) for _ in range(args.runs)]
                    if kind == "internal" and not args.db_only:  # a fresh connection with N ports there
                        c.add_ports([OvsPortSpec("br-int", nm, "internal", _ext(i)) for i, nm in enumerate(names)])
                        c.wait_applied(names, timeout=1800)
                        conn = connect_time(ovs.endpoint, args.client)
                        c.del_ports(names)
                        c.wait_cfg(timeout=1800)
                        print(f"  {args.client} connect + initial sync with {n} ports: {conn * 1e3:.1f} ms",
                              flush=True)
                finally:
                    if kind == "veth":
                        _del_veths(ns, names)
                cells = []
                for k in keys:
                    med = statistics.median(r[k] for r in runs)
                    cells.append(f"{med * 1e3:>10.1f} {med * 1e3 / n:>11.3f}")
                print(f"{kind:9} {n:>5} | " + " | ".join(cells), flush=True)
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
