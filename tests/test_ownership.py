"""Ownership you can prove (issue 11, item 1): vifwire touches only kernel
links that carry its mark.

Every link vifwire creates is marked ``IFLA_IFALIAS`` = ``vifwire:<port id>``
(shared bridges ``vifwire``). ``plug`` refuses, with one line and without
touching it, a link in its way that is not vifwire's or is another port's;
it repairs one marked for the same port (a crash leftover). ``unplug`` and
``gc`` delete only marked links. Everything happens in namespaces the tests
create; other devices are checked through pyroute2, independently of vifwire.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from pyroute2 import IPRoute

from routed_host import VIFWIRE
from vifwire.executors.kernel import mark_for
from vifwire.model.loader import load_documents
from vifwire.planner.facts import HostFacts
from vifwire.planner.generic import plan
from vifwire.sandbox import netns
from vifwire.service import WiringService

pytestmark = pytest.mark.root


def cli(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([VIFWIRE, *argv], input=stdin, capture_output=True, text=True, timeout=120)


def vif(i: int, devname: str | None = None, vif_type: str = "tap", details: dict | None = None,
        bridge: str | None = None) -> dict:
    """A Nova ``network_info`` VIF (it may name its device)."""
    doc = {"id": f"{i:08x}-0000-4000-8000-00000000e7e0", "address": f"fa:16:3e:0e:00:{i:02x}",
           "type": vif_type, "details": details or {},
           "network": {"id": "4c1e6a0d-0000-4000-8000-0000000000ee", "bridge": bridge,
                       "subnets": [{"cidr": "10.101.0.0/24",
                                    "ips": [{"address": f"10.101.0.{i + 10}", "type": "fixed", "version": 4}]}],
                       "meta": {"mtu": 1400}}}
    if devname:
        doc["devname"] = devname
    return doc


def look(ns: str, name: str) -> dict | None:
    """Everything about ``name`` a takeover would change."""
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        m = ipr.link("get", index=idx[0])[0]
        li = m.get_attr("IFLA_LINKINFO")
        return {"index": m["index"], "kind": li.get_attr("IFLA_INFO_KIND") if li else None,
                "alias": m.get_attr("IFLA_IFALIAS"), "mtu": m.get_attr("IFLA_MTU"),
                "mac": m.get_attr("IFLA_ADDRESS"), "up": bool(m["flags"] & 1), "master": m.get_attr("IFLA_MASTER"),
                "addrs": sorted(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx[0]))}


@pytest.fixture
def foreign():
    """A namespace holding someone else's veth ``eth0`` (192.0.2.1/24) and tap ``tapfoo``."""
    with netns.sandbox("ow") as ns:
        with IPRoute(netns=ns) as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer="eth0p")
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=idx, address="192.0.2.1", prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.link("add", ifname="tapfoo", kind="tuntap", mode="tap")
        yield ns, {n: look(ns, n) for n in ("eth0", "eth0p", "tapfoo")}


def test_foreign_devices_are_untouched_and_the_plug_fails(foreign, tmp_path):
    ns, before = foreign
    db = str(tmp_path / "s.db")
    cases = [(vif(1, "eth0"), "libvirt", "eth0", "veth"), (vif(2, "eth0"), "lxd", "eth0", "veth"),
             (vif(3, "tapfoo"), "libvirt", "tapfoo", "tun"), (vif(4, "tapfoo"), "lxd", "tapfoo", "tun")]
    for doc, hypervisor, dev, kind in cases:
        res = cli("plug", "-", "--netns", ns, "--state", db, "--hypervisor", hypervisor, stdin=json.dumps(doc))
        assert res.returncode == 1, (res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"vifwire: port {doc['id']}: ")
        assert lines[0].endswith(f"device {dev} exists and is not vifwire's ({kind})"), lines[0]
        assert {n: look(ns, n) for n in before} == before
    assert look(ns, "tineth0") is None and look(ns, "tintapfoo") is None  # nothing half-made is left
    # nothing recorded, and neither unplug (all, or by file: planned afresh) nor gc touches them
    docs = json.dumps([vif(1, "eth0"), vif(3, "tapfoo")])
    for argv, stdin in ((["unplug", "--all"], None), (["unplug", "--file", "-"], docs), (["gc", "--force"], None)):
        res = cli(*argv, "--netns", ns, "--state", db, stdin=stdin)
        assert res.returncode == 0, (argv, res.stdout, res.stderr)
        assert {n: look(ns, n) for n in before} == before, argv
    with WiringService(netns=ns, state=db) as svc:
        assert svc.list() == []
        assert [g.name for g in svc.gc(force=True).items] == []
    assert {n: look(ns, n) for n in before} == before


def test_a_device_marked_for_another_port_is_refused(tmp_path):
    """Port A's tap, met by port B naming the same device (say, with another state file)."""
    a, b = vif(5, "tapshared5"), vif(6, "tapshared5")
    with netns.sandbox("ow") as ns:
        with WiringService(netns=ns, state=str(tmp_path / "a.db")) as svc:
            [ra] = svc.plug(load_documents([a]), HostFacts())
            assert ra.ok, ra.error
        mine = look(ns, "tapshared5")
        assert mine["alias"] == f"vifwire:{a['id']}"
        with WiringService(netns=ns, state=str(tmp_path / "b.db")) as svc:
            [rb] = svc.plug(load_documents([b]), HostFacts())
            assert not rb.ok
            assert rb.error.endswith(f"device tapshared5 belongs to port {a['id']}, not to port {b['id']}"), rb.error
            assert "\n" not in rb.error
        assert look(ns, "tapshared5") == mine
        with WiringService(netns=ns, state=str(tmp_path / "a.db")) as svc:
            assert svc.check().clean  # B's failed plug left A's wiring as it was
        with WiringService(netns=ns, state=str(tmp_path / "b.db")) as svc:
            # unplugging B (from its binding: B has no record) leaves A's tap alone
            # (the link; B's anti-spoofing removal by interface name is not the kernel executor's)
            assert svc.unplug(bindings=load_documents([b])).problems == []
        assert look(ns, "tapshared5") == mine
        with WiringService(netns=ns, state=str(tmp_path / "a.db")) as svc:
            svc.unplug(all_ports=True)
        assert look(ns, "tapshared5") is None


def test_a_crash_leftover_marked_for_the_same_port_is_repaired(tmp_path):
    doc = vif(7)
    with netns.sandbox("ow") as ns:
        with WiringService(netns=ns, state=str(tmp_path / "s.db")) as svc:
            [b] = load_documents([doc])
            [r] = svc.plug([b], HostFacts(hypervisor="lxd"))
            assert r.ok, r.error
            # the process "died" after wiring, before recording: no record, links left, and drifted
            svc.store.delete([b.port_id])
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=b.devname)[0]
                ipr.link("set", index=idx, mtu=9000)
                ipr.link("set", index=idx, state="down")
            before = look(ns, b.devname)
            [again] = svc.plug([b], HostFacts(hypervisor="lxd"))
            assert again.ok, again.error
            now = look(ns, b.devname)
            assert now["index"] == before["index"] and (now["mtu"], now["up"]) == (1400, True)
            assert now["alias"] == mark_for(b.port_id)
            assert svc.check().clean
            svc.unplug(all_ports=True)
            assert look(ns, b.devname) is None


# every kernel strategy of tests/test_wiring_kernel.py, and the hybrid OVS ones
KERNEL_CASES = [
    ("routed-tap", vif(8), "libvirt"),
    ("bridge", vif(9, vif_type="bridge", bridge="brvw-own"), "libvirt"),
    ("veth-routed", vif(10), "lxd"),
    ("veth-bridge", vif(11, vif_type="bridge", bridge="brvw-own"), "lxd"),
    ("macvtap", vif(12, vif_type="macvtap", details={"macvtap_source": "vwup0", "macvtap_mode": "bridge",
                                                     "physical_interface": "vwup0"}), "lxd"),
]


def _assert_marked(ns: str, p) -> None:
    for dev in p.devices():
        assert look(ns, dev)["alias"] == mark_for(p.port_id), (p.strategy, dev)
    for s in p.steps:
        if s.op == "bridge" and s.args.get("shared"):
            assert look(ns, s.args["name"])["alias"] == "vifwire"


@pytest.mark.parametrize("name, doc, hypervisor", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_every_created_device_is_marked(tmp_path, name, doc, hypervisor):
    with netns.sandbox("ow") as ns, netns.sandbox("og") as guest_ns:
        with IPRoute(netns=ns) as ipr:  # a stand-in uplink for macvtap
            ipr.link("add", ifname="vwup0", kind="veth", peer="vwup0p")
            ipr.link("set", index=ipr.link_lookup(ifname="vwup0")[0], state="up")
        for guest in (None, guest_ns) if hypervisor == "lxd" else (None,):
            facts = HostFacts(hypervisor=hypervisor, guest_netns=guest)
            with WiringService(netns=ns, state=str(tmp_path / f"{guest}.db")) as svc:
                [b] = load_documents([doc])
                p = plan(b, facts, render=False)
                assert p.strategy == name
                [r] = svc.plug_plans([(b, p)])
                assert r.ok, r.error
                _assert_marked(ns, p)
                svc.unplug(all_ports=True)
                assert all(look(ns, d) is None for d in p.devices())


@pytest.mark.parametrize("hypervisor", ["libvirt", "lxd"])
def test_hybrid_ovs_devices_are_marked(private_ovs, tmp_path, hypervisor):
    ns, ovs = private_ovs
    doc = vif(13, vif_type="ovs", details={"ovs_hybrid_plug": True, "port_filter": False}, bridge="br-int")
    with WiringService(netns=ns, state=str(tmp_path / "s.db"), ovsdb=ovs.endpoint) as svc:
        [b] = load_documents([doc])
        p = plan(b, HostFacts(hypervisor=hypervisor, ovs_datapath="netdev", anti_spoof="off"), render=False)
        assert p.strategy.endswith("ovs-hybrid"), p.strategy
        [r] = svc.plug_plans([(b, p)])
        assert r.ok, r.error
        assert {d[:3] for d in p.devices()} >= {"qbr", "qvb", "qvo"}
        _assert_marked(ns, p)
        assert svc.gc().items == []
        svc.unplug(all_ports=True)
        assert all(look(ns, d) is None for d in p.devices())
