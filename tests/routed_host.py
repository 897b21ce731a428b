"""Helpers for tests that wire many routed taps and then look at the whole
namespace: the ports, what is in the namespace, and the two end states
(everything wired exactly once and checked clean; nothing left at all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from pyroute2 import IPRoute

from vifwire.model.loader import load_documents
from vifwire.planner.facts import HostFacts
from vifwire.sandbox import netns
from vifwire.service import WiringService
from vifwire.store.sqlite import SqliteStore

VIFWIRE = os.path.join(os.path.dirname(sys.executable), "vifwire")
WORKERS, PER_WORKER = 4, 250
RTPROT_VIFWIRE = 158


def port(i: int) -> dict:
    return {"id": f"{i:08x}-c0fe-4000-8000-00000000c0fe", "mac_address": f"fa:16:3e:c0:{i >> 8:02x}:{i & 255:02x}",
            "network_id": "4c1e6a0d-0000-4000-8000-0000000000cc",
            "fixed_ips": [{"subnet_id": "s4", "ip_address": f"10.100.{i // 200}.{i % 200 + 1}"},
                          {"subnet_id": "s6", "ip_address": f"fd97::{i:x}"}],
            "binding:vif_type": "tap", "binding:vif_details": {}, "binding:vnic_type": "normal",
            "binding:host_id": "t", "device_id": f"inst-{i}", "network": {"mtu": 1400}}


def macvtap_port(i: int) -> dict:
    """Valid, but fails on a host without its macvtap source device."""
    doc = port(i)
    doc["binding:vif_type"] = "macvtap"
    doc["binding:vnic_type"] = "macvtap"
    doc["binding:vif_details"] = {"macvtap_source": "eth9.5", "macvtap_mode": "bridge",
                                  "physical_interface": "eth9", "vlan": "5"}
    return doc


def chunks() -> list[list[dict]]:
    return [[port(w * PER_WORKER + k + 1) for k in range(PER_WORKER)] for w in range(WORKERS)]


def host_state(ns: str) -> dict:
    """What is in the namespace: taps, vifwire routes, proxy neighbours, filter elements per interface."""
    with IPRoute(netns=ns) as ipr:
        links = [l.get_attr("IFLA_IFNAME") for l in ipr.get_links()]
        routes = [r for fam in (2, 10) for r in ipr.get_routes(family=fam, table=254)
                  if r["proto"] == RTPROT_VIFWIRE]
    # the proxy table is listed by iproute2 (pyroute2's neighbour dump does not ask for it)
    proxies = subprocess.run(["ip", "-n", ns, "-6", "neigh", "show", "proxy"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"], capture_output=True,
                         text=True, check=True).stdout
    elements: Counter = Counter()
    for item in json.loads(out)["nftables"]:
        s = item.get("set") or item.get("map")
        if not s:
            continue
        for e in s.get("elem") or []:
            for tap in _ifnames(e):
                elements[tap] += 1
    return {"taps": sorted(x for x in links if x.startswith("tap")), "routes": len(routes),
            "proxies": len(proxies), "elements": elements}


def _ifnames(e) -> list[str]:
    """The tap names inside one set element (concatenations and maps nest them)."""
    if isinstance(e, str):
        return [e] if e.startswith("tap") else []
    if isinstance(e, list):
        return [x for v in e for x in _ifnames(v)]
    if isinstance(e, dict):
        return [x for v in e.values() for x in _ifnames(v)]
    return []


def expected_elements_per_port(tmp_path, doc: dict | None = None) -> int:
    """How many filter elements one such port (``doc``, default a routed tap) has, plugged alone."""
    with netns.sandbox("cc1") as ns, WiringService(netns=ns, state=os.path.join(str(tmp_path), "one.db")) as svc:
        [b] = load_documents([doc or port(1)])
        [r] = svc.plug([b], HostFacts())
        assert r.ok, r.error
        n = host_state(ns)["elements"][b.devname]
        svc.unplug(all_ports=True)
    assert n > 0
    return n


def assert_all_wired(ns: str, db: str, per_port: int) -> None:
    state = host_state(ns)
    docs = [p for c in chunks() for p in c]
    bindings = load_documents(docs)
    want = sorted(b.devname for b in bindings)
    assert state["taps"] == want
    assert state["routes"] == 2 * len(want)  # one /32 and one /128 each
    assert state["proxies"] == 0  # the IPv6 gateway is the taps' anycast fe80::, no entry per tap
    assert set(state["elements"]) == set(want)
    assert set(state["elements"].values()) == {per_port}, "every element exactly once"
    with SqliteStore(db) as store:
        recs = store.all()
    assert len(recs) == len(want) and {a.status for a in recs} == {"plugged"}
    res = subprocess.run([VIFWIRE, "check", "--netns", ns, "--state", db], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"{len(want)} port(s) checked, 0 with drift" in res.stdout


def assert_nothing_left(ns: str, db: str) -> None:
    state = host_state(ns)
    assert state["taps"] == [] and state["routes"] == 0 and state["proxies"] == 0
    assert sum(state["elements"].values()) == 0
    with SqliteStore(db) as store:
        assert store.all() == []
