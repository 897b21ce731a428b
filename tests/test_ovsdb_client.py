"""OvsdbClient against a real private ovsdb-server + userspace ovs-vswitchd."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time

import pytest
from ovs_fixtures import ovs_client, private_ovs, requires_ovs  # noqa: F401
from pyroute2 import IPRoute

from vifwire.errors import HostError
from vifwire.executors.ovsdb import (
    OvsApplyError,
    OvsdbClient,
    OvsdbError,
    OvsdbUnavailable,
    OvsPortSpec,
)
from vifwire.sandbox import netns

pytestmark = requires_ovs

OWNER = "vifwire-owner"
# Generous bound for ovs-vswitchd to apply changes when that is not what a
# test measures: creating/removing tap devices needs the kernel's RTNL lock,
# which other namespaces being torn down on the same machine can hold for
# seconds.
T = 60.0


def _ext(i: int) -> dict[str, str]:
    return {
        "iface-id": f"4b1e2c2a-0000-4000-8000-{i:012d}",
        "iface-status": "active",
        "attached-mac": f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}",
        "vm-uuid": "0b7f1c8e-1111-4222-8333-444455556666",
        OWNER: "test",
    }


def _veth(ns: str, host: str, peer: str, peer_ns: str | None = None) -> None:
    """Create veth host<->peer in ``ns`` (peer moved to ``peer_ns``), host end up."""
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=host, kind="veth", peer=peer)
        (hidx,) = ipr.link_lookup(ifname=host)
        (pidx,) = ipr.link_lookup(ifname=peer)
        ipr.link("set", index=hidx, state="up")
        if peer_ns:
            ipr.link("set", index=pidx, net_ns_fd=peer_ns)
        else:
            ipr.link("set", index=pidx, state="up")


# ICMP echo in Python, for machines without iputils-ping (run inside the netns).
_PYPING = r"""
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
dst, timeout = sys.argv[1], float(sys.argv[2])
ident = os.getpid() & 0xFFFF
hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"vifwire-ping...."
pkt = hdr[:2] + struct.pack("!H", csum(hdr)) + hdr[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(timeout)
s.sendto(pkt, (dst, 0))
end = time.monotonic() + timeout
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    ihl = (data[0] & 0x0F) * 4
    typ, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if typ == 0 and rid == ident and addr[0] == dst:
        print("reply from", dst); sys.exit(0)
print("no reply from", dst); sys.exit(1)
"""


def _ping(guest_ns: str, addr: str) -> subprocess.CompletedProcess:
    """``ip netns exec G ping -c1 -W2 ADDR`` (or a Python ICMP echo if no ping)."""
    if shutil.which("ping"):
        cmd = ["ping", "-c1", "-W2", addr]
    else:
        cmd = [sys.executable, "-c", _PYPING, addr, "2"]
    return subprocess.run(["ip", "netns", "exec", guest_ns, *cmd],
                          capture_output=True, text=True, timeout=15)


def _link(ns: str, name: str):
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=name)
        return ipr.get_links(idx[0])[0] if idx else None


# --------------------------------------------------------------------------


def test_bridge_helpers(ovs_client):
    ns, ovs, c = ovs_client
    assert c.bridge_exists("br-int")
    assert not c.bridge_exists("br-ex")
    assert c.ensure_bridge("br-ex") is True
    assert c.ensure_bridge("br-ex") is False
    c.wait_cfg(T)
    assert ovs.vsctl("get", "Bridge", "br-ex", "datapath_type").strip() == "netdev"
    assert _link(ns, "br-ex") is not None


def test_internal_ports_add_readback_apply_delete(ovs_client):
    ns, ovs, c = ovs_client
    specs = [
        OvsPortSpec("br-int", f"tapi{i}", "internal", _ext(i), mtu_request=1400, tag=10 + i)
        for i in range(4)
    ]
    cfg = c.add_ports(specs)
    assert isinstance(cfg, int)
    st = c.port_state("tapi1")
    assert st["bridge"] == "br-int" and st["type"] == "internal"
    assert st["external_ids"] == _ext(1)
    assert st["tag"] == 11 and st["mtu_request"] == 1400
    # independent read-back through ovs-vsctl
    assert ovs.vsctl("get", "Interface", "tapi2", "external_ids:iface-id").strip().strip('"') == _ext(2)["iface-id"]
    assert ovs.vsctl("get", "Port", "tapi3", "tag").strip() == "13"

    states = c.wait_applied([s.name for s in specs], timeout=T)
    assert all(s["ofport"] > 0 for s in states.values())
    assert len({s["ofport"] for s in states.values()}) == 4
    # the userspace datapath created tap devices in the namespace with the MTU
    link = _link(ns, "tapi0")
    assert link is not None and link.get("mtu") == 1400
    assert states["tapi0"]["mtu"] == 1400

    owned = c.ports_with_external_id(OWNER)
    assert set(owned) == {s.name for s in specs}
    assert c.ports_with_external_id(OWNER, "other") == {}

    c.del_ports(["tapi0", "tapi1"])
    assert c.port_state("tapi0") is None
    assert set(c.port_names("br-int")) == {"br-int", "tapi2", "tapi3"}
    c.wait_cfg(T)
    assert _link(ns, "tapi0") is None
    c.del_ports(["tapi2", "tapi3"])
    assert c.port_names() == ["br-int"]


def test_veth_ports(ovs_client):
    ns, ovs, c = ovs_client
    for i in range(3):
        _veth(ns, f"qvo{i}", f"qvb{i}")
    specs = [OvsPortSpec("br-int", f"qvo{i}", "", _ext(i), mtu_request=1450) for i in range(3)]
    c.add_ports(specs)
    states = c.wait_applied([s.name for s in specs], timeout=T)
    for s in states.values():
        assert s["ofport"] > 0 and s["error"] is None and s["type"] == ""
    assert _link(ns, "qvo1").get("mtu") == 1450
    assert "qvo2" in ovs.appctl("dpif/show")
    c.del_ports([s.name for s in specs])
    c.wait_cfg(T)
    assert "qvo2" not in ovs.appctl("dpif/show")
    assert _link(ns, "qvo1") is not None  # deleting the port leaves the device


def test_idempotence_and_converge(ovs_client):
    ns, ovs, c = ovs_client
    spec = OvsPortSpec("br-int", "tapx", "internal", _ext(1), mtu_request=1400, tag=5)
    assert c.add_ports([spec]) is not None
    assert c.add_ports([spec]) is None  # nothing to change: no transaction
    c.wait_applied(["tapx"], T)
    # a key written by someone else survives converge
    ovs.vsctl("set", "Interface", "tapx", "external_ids:ovn-installed=true")
    spec2 = OvsPortSpec("br-int", "tapx", "internal", {**_ext(1), "iface-status": "down"},
                        mtu_request=None, tag=None)
    assert c.add_ports([spec2]) is not None
    st = c.port_state("tapx")
    assert st["external_ids"]["iface-status"] == "down"
    assert st["external_ids"]["ovn-installed"] == "true"
    assert st["tag"] is None and st["mtu_request"] is None
    assert st["ofport"] > 0

    with pytest.raises(OvsdbError, match="already exists"):
        c.add_ports([spec], may_exist=False)
    c.ensure_bridge("br-other")
    with pytest.raises(OvsdbError, match="exists on bridge br-int"):
        c.add_ports([OvsPortSpec("br-other", "tapx", "internal")])
    with pytest.raises(OvsdbError, match="bridge br-nope does not exist") as ei:
        c.add_ports([OvsPortSpec("br-nope", "tapy", "internal")])
    assert isinstance(ei.value, HostError) and ei.value.port == "tapy"
    with pytest.raises(OvsdbError, match="duplicate"):
        c.add_ports([OvsPortSpec("br-int", "d", "internal")] * 2)
    with pytest.raises(OvsdbError, match="vlan tag"):
        c.add_ports([OvsPortSpec("br-int", "d", "internal", tag=5000)])

    assert c.del_ports(["tapx"]) is not None
    assert c.del_ports(["tapx", "never-existed"]) is None  # absent: no-op
    with pytest.raises(OvsdbError, match="never-existed: ovs del-port: no such port"):
        c.del_ports(["never-existed"], if_exists=False)


def test_missing_device_fails_fast_with_interface_error(ovs_client):
    ns, ovs, c = ovs_client
    c.add_ports([OvsPortSpec("br-int", "nodev0", "", _ext(0)),
                 OvsPortSpec("br-int", "tapok", "internal", _ext(1))])
    t0 = time.monotonic()
    with pytest.raises(OvsApplyError) as ei:
        c.wait_applied(["nodev0", "tapok"], timeout=T)
    assert time.monotonic() - t0 < T / 2  # did not wait for the timeout
    e = ei.value
    assert e.failed == ["nodev0"]
    assert "nodev0" in e.line() and "No such device" in e.line()
    assert e.states["tapok"]["ofport"] > 0
    assert "\n" not in e.line()
    # fail_fast=False keeps waiting: the device appears, the port comes up
    _veth(ns, "nodev0", "nodev0p")
    states = c.wait_applied(["nodev0"], timeout=T, fail_fast=False)
    assert states["nodev0"]["ofport"] > 0


def test_ovsdb_server_killed_gives_clear_error_within_timeout(ovs_client):
    ns, ovs, c = ovs_client
    c.add_ports([OvsPortSpec("br-int", "tapk", "internal", _ext(1))])
    ovs.kill_ovsdb()

    t0 = time.monotonic()
    with pytest.raises(OvsdbUnavailable) as ei:
        c.add_ports([OvsPortSpec("br-int", "tapk2", "internal")], timeout=1.0)
    assert time.monotonic() - t0 < 2.5
    line = ei.value.line()
    assert ovs.endpoint in line and "\n" not in line
    assert "tapk2" in line

    t0 = time.monotonic()
    with pytest.raises(OvsdbUnavailable, match="cannot connect|no connection"):
        OvsdbClient(ovs.endpoint, timeout=1.0).close()
    assert time.monotonic() - t0 < 2.5
    with pytest.raises(OvsdbUnavailable, match="does not exist"):
        OvsdbClient("unix:/nonexistent/vw/db.sock", timeout=1.0)

    # the long-lived client recovers once the server is back (same DB);
    # ovs-vswitchd reconnects with its own back-off (up to 8 s) first.
    ovs.restart_ovsdb()
    c.add_ports([OvsPortSpec("br-int", "tapk2", "internal")], timeout=T)
    states = c.wait_applied(["tapk", "tapk2"], timeout=T)
    assert all(s["ofport"] > 0 for s in states.values())


def test_vswitchd_stopped_wait_applied_times_out(ovs_client):
    ns, ovs, c = ovs_client
    ovs.pause_vswitchd()
    try:
        c.add_ports([OvsPortSpec("br-int", "taps", "internal", _ext(1))])  # ovsdb still fine
        t0 = time.monotonic()
        with pytest.raises(OvsApplyError) as ei:
            c.wait_applied(["taps"], timeout=1.0)
        assert 0.9 <= time.monotonic() - t0 < 5.0
        line = ei.value.line()
        assert "taps" in line and "cur_cfg" in line and "not applied" in line
        with pytest.raises(OvsApplyError, match="is ovs-vswitchd running"):
            c.wait_cfg(timeout=0.3)
    finally:
        ovs.resume_vswitchd()
    states = c.wait_applied(["taps"], timeout=T)
    assert states["taps"]["ofport"] > 0
    c.del_ports(["taps"])


def test_shared_client_is_reused(private_ovs):
    ns, ovs = private_ovs
    a = OvsdbClient.shared(ovs.endpoint)
    try:
        assert OvsdbClient.shared(ovs.endpoint) is a
    finally:
        a.close()
    b = OvsdbClient.shared(ovs.endpoint)
    assert b is not a
    b.close()


def test_batch_of_ports_one_transaction(ovs_client):
    ns, ovs, c = ovs_client
    n = 200
    specs = [OvsPortSpec("br-int", f"b{i}", "internal", _ext(i), tag=1) for i in range(n)]
    cfg0 = c.cfg()[0]
    t0 = time.monotonic()
    c.add_ports(specs)
    t_add = time.monotonic() - t0
    assert c.cfg()[0] == cfg0 + 1  # exactly one transaction
    states = c.wait_applied([s.name for s in specs], timeout=T)
    assert len({s["ofport"] for s in states.values()}) == n
    t0 = time.monotonic()
    c.del_ports([s.name for s in specs])
    t_del = time.monotonic() - t0
    assert c.cfg()[0] == cfg0 + 2
    assert c.port_names() == ["br-int"]
    assert t_add < 2 and t_del < 2, (t_add, t_del)


def test_two_guests_ping_through_private_ovs(ovs_client):
    """Two guest namespaces on veths plugged into br-int can ping each other."""
    ns, ovs, c = ovs_client
    with netns.sandbox("g1") as g1, netns.sandbox("g2") as g2:
        for i, g in ((1, g1), (2, g2)):
            _veth(ns, f"vh{i}", f"vg{i}", peer_ns=g)
            with IPRoute(netns=g) as ipr:
                (idx,) = ipr.link_lookup(ifname=f"vg{i}")
                ipr.addr("add", index=idx, address=f"10.99.0.{i}", prefixlen=24)
                ipr.link("set", index=idx, state="up")
        c.add_ports([OvsPortSpec("br-int", f"vh{i}", "", _ext(i)) for i in (1, 2)])
        c.wait_applied(["vh1", "vh2"], timeout=T)
        r = None
        for _ in range(3):  # first packet may race the flow setup; allow a retry
            r = _ping(g1, "10.99.0.2")
            if r.returncode == 0:
                break
        assert r.returncode == 0, r.stdout + r.stderr
        r = _ping(g2, "10.99.0.1")
        assert r.returncode == 0, r.stdout + r.stderr
        with contextlib.suppress(Exception):
            c.del_ports(["vh1", "vh2"])


def test_fast_json_parser_matches_stdlib_on_any_chunking():
    """The stdlib-backed parser vifwire's connection reads with splits a
    stream of back-to-back JSON-RPC messages exactly, however it is chunked."""
    import json
    import random

    from vifwire.executors.ovsdb import FastJsonParser

    rnd = random.Random(7)
    msgs = [
        {"id": i, "method": "update", "params": [None, {"Interface": {
            f"u{j}": {"new": {"name": "n}{" + str(j), "x": [1, {"a": "}"}], "e": '\\"}'}}
            for j in range(rnd.randint(0, 40))}}]}
        for i in range(200)
    ]
    stream = "".join(json.dumps(m, separators=(",", ":")) if i % 3 else json.dumps(m) + "\n "
                     for i, m in enumerate(msgs))
    for _ in range(10):
        out, parser, pos, inp = [], None, 0, ""
        while True:
            if not inp:
                if pos >= len(stream):
                    break
                n = rnd.randint(1, 6000)
                inp, pos = stream[pos:pos + n], pos + n
            parser = parser or FastJsonParser()
            inp = inp[parser.feed(inp):]
            if parser.is_done():
                out.append(parser.finish())
                parser = None
        assert out == msgs
    assert FastJsonParser().finish() == "empty input stream"  # an error string, like ovs.json.Parser


def test_fast_json_is_scoped_to_vifwire_connection(ovs_client, monkeypatch):
    """The ``ovs`` library's own parser is not replaced process-wide (other
    users of the library, e.g. ovsdbapp, keep theirs); vifwire's connection
    reads with the fast one."""
    import ovs.json

    from vifwire.executors import ovsdb as ovsdb_mod

    assert ovs.json.Parser is not ovsdb_mod.FastJsonParser
    assert ovs.json.from_string("[1, 2]") == [1, 2]
    assert isinstance(ovs.json.from_string('{"a":'), str)  # error string, like ovs
    if not ovsdb_mod.FAST_JSON:
        pytest.skip("the ovs library has its C parser (or VIFWIRE_OVS_FAST_JSON=0)")
    fed = []
    orig = ovsdb_mod.FastJsonParser.feed

    def spy(self, s):
        fed.append(len(s))
        return orig(self, s)

    monkeypatch.setattr(ovsdb_mod.FastJsonParser, "feed", spy)
    ns, ovs_, c = ovs_client
    c.ensure_bridge("br-json")
    assert c.bridge_exists("br-json") and fed, "the client's replies were not read with FastJsonParser"
    assert c.del_bridge("br-json") is True


def test_bulk_states_raw_transact_and_del_bridge(ovs_client):
    ns, ovs, c = ovs_client
    c.ensure_bridge("br-tmp")
    c.add_ports([OvsPortSpec("br-tmp", "tb1", "internal", _ext(1))])
    states = c.port_states(["tb1", "nope"])
    assert states["tb1"]["bridge"] == "br-tmp" and states["nope"] is None
    assert c.del_bridge("br-tmp") is False  # tb1 is still on it
    assert c.bridge_exists("br-tmp")

    def build():
        iu, _ = c.row("Interface", "tb1")
        if iu is None:
            return []
        return [{"op": "mutate", "table": "Interface", "where": [["_uuid", "==", ["uuid", iu]]],
                 "mutations": [["external_ids", "insert", ["map", [["raw", "yes"]]]]]}]

    assert isinstance(c.transact(build, "raw", "tb1"), int)
    assert c.port_state("tb1")["external_ids"]["raw"] == "yes"
    c.del_ports(["tb1"])
    assert c.del_bridge("br-tmp") is True
    assert not c.bridge_exists("br-tmp") and c.del_bridge("br-tmp") is False
    c.wait_cfg(T)
    assert _link(ns, "br-tmp") is None
    with pytest.raises(OvsdbError, match="raw"):
        c.transact(lambda: [{"op": "insert", "table": "NoSuchTable", "row": {}}], "raw", "x")
