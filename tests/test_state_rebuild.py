"""`vifwire state rebuild`: a corrupted database is moved aside, the records are
recreated from the host's ownership marks, and every port can then be unplugged
(issue 11, "Recovery from a lost or corrupted store")."""

from __future__ import annotations

import glob
import json
import os
import subprocess

from routed_host import VIFWIRE, host_state, port

from vifwire.sandbox import netns

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "ports.json")


def vw(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([VIFWIRE, *argv], capture_output=True, text=True, timeout=300)


def proxy_entries(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-6", "neigh", "show", "proxy"], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def bridge_ports() -> list[dict]:
    with open(EXAMPLES) as f:
        ports = [p for p in json.load(f) if p["binding:vif_type"] == "bridge"]
    assert len(ports) == 2
    return ports


def test_corrupt_database_is_rebuilt_from_marks_and_every_port_unplugs(tmp_path):
    taps, bridged = tmp_path / "taps.json", tmp_path / "bridged.json"
    taps.write_text(json.dumps([port(i) for i in range(1, 21)]))
    bridged.write_text(json.dumps(bridge_ports()))
    db = str(tmp_path / "state" / "state.db")
    with netns.sandbox("rb") as ns:
        host = ["--netns", ns, "--state", db]
        r = vw("plug", str(taps), "--firewall", *host)
        assert r.returncode == 0, r.stderr
        r = vw("plug", str(bridged), "--hypervisor", "lxd", "--firewall", *host)
        assert r.returncode == 0, r.stderr
        before = host_state(ns)
        assert len(before["taps"]) == 22 and before["routes"] == 40 and proxy_entries(ns) == []
        assert set(before["elements"]) == set(before["taps"])
        # five ports as a version before the fe80:: gateway left them (docs/routed.md):
        # with a proxy NDP entry for fe80::1, which the rebuild must find and unplug remove
        for tap in before["taps"][:5]:
            subprocess.run(["ip", "-n", ns, "-6", "neigh", "add", "proxy", "fe80::1", "dev", tap], check=True)
        assert len(proxy_entries(ns)) == 5

        with open(db, "r+b") as f:  # corrupt it
            f.write(b"\xa5" * 100)
        r = vw("list", "--state", db)
        assert r.returncode == 1 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1 and "state rebuild" in r.stderr, r.stderr

        r = vw("state", "rebuild", *host, "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert len(res["recovered"]) == 22
        assert {p["port_id"] for p in res["recovered"]} == \
            {p["id"] for p in json.loads(taps.read_text()) + bridge_ports()}
        assert res["moved_aside"] and all(p.startswith(db + ".broken-") for p in res["moved_aside"])
        assert glob.glob(db + ".broken-*")
        recovered_macs = {p["mac"] for p in res["recovered"]}
        assert {p["mac_address"] for p in bridge_ports()} <= recovered_macs  # the tin end's MAC

        r = vw("list", "--state", db, "--json")
        assert r.returncode == 0, r.stderr
        recs = json.loads(r.stdout)
        assert len(recs) == 22 and {a["status"] for a in recs} == {"recovered"}
        assert all(a["binding"]["recovered"] is True for a in recs)
        r = vw("check", *host)
        assert r.returncode == 3  # honest: recovered records are drift until replugged
        assert "22 port(s) checked, 22 with drift" in r.stdout

        r = vw("unplug", "--all", *host)
        assert r.returncode == 0, r.stderr
        after = host_state(ns)
        assert after["taps"] == [] and after["routes"] == 0 and after["proxies"] == 0
        assert proxy_entries(ns) == []
        assert sum(after["elements"].values()) == 0
        r = vw("gc", *host, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["garbage"] == [], r.stdout
        r = vw("list", "--state", db, "--json")
        assert json.loads(r.stdout) == []


def test_rebuild_of_a_sound_database_keeps_its_records(tmp_path):
    taps = tmp_path / "taps.json"
    taps.write_text(json.dumps([port(i) for i in range(1, 3)]))
    db = str(tmp_path / "state.db")
    with netns.sandbox("rb") as ns:
        host = ["--netns", ns, "--state", db]
        assert vw("plug", str(taps), "--firewall", *host).returncode == 0
        r = vw("state", "rebuild", *host, "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["recovered"] == [] and len(res["kept"]) == 2 and res["moved_aside"] == []
        assert vw("check", *host).returncode == 0
        assert vw("unplug", "--all", *host).returncode == 0
        assert host_state(ns)["taps"] == []


def test_lost_database_then_unplug_by_port_id(tmp_path):
    taps = tmp_path / "taps.json"
    taps.write_text(json.dumps([port(1), port(2)]))
    db = str(tmp_path / "state.db")
    with netns.sandbox("rb") as ns:
        host = ["--netns", ns, "--state", db]
        assert vw("plug", str(taps), "--firewall", *host).returncode == 0
        for sfx in ("", "-wal", "-shm"):
            if os.path.exists(db + sfx):
                os.unlink(db + sfx)
        r = vw("state", "rebuild", *host)
        assert r.returncode == 0, r.stderr
        assert "recovered 2 port(s)" in r.stdout and "moved aside" not in r.stdout
        assert "not mapped: ovs" in r.stdout  # no OVSDB in the namespace: said, not hidden
        r = vw("unplug", port(1)["id"], *host)
        assert r.returncode == 0, r.stderr
        state = host_state(ns)
        assert state["taps"] == ["tap00000002-c0"] and state["routes"] == 2
        assert set(state["elements"]) == {"tap00000002-c0"}
        assert vw("unplug", port(2)["id"], *host).returncode == 0
        state = host_state(ns)
        assert state["taps"] == [] and state["routes"] == 0 and sum(state["elements"].values()) == 0


def test_unplug_by_port_id_from_marks_when_the_database_is_corrupt(tmp_path):
    docs = [port(i) for i in range(1, 4)]
    db = str(tmp_path / "state.db")
    with netns.sandbox("rm") as ns:
        host = ["--netns", ns, "--state", db]
        r = subprocess.run([VIFWIRE, "plug", "-", *host], input=json.dumps(docs), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        taps = host_state(ns)["taps"]
        assert len(taps) == 3
        with open(db, "r+b") as f:  # corrupt it
            f.write(b"\xa5" * 100)
        gone = docs[0]["id"]
        r = vw("unplug", gone, *host)
        assert r.returncode == 0, r.stderr
        after = host_state(ns)
        assert len(after["taps"]) == 2 and set(after["taps"]) < set(taps)
        assert after["routes"] == 4 and set(after["elements"]) == set(after["taps"])
        assert proxy_entries(ns) == []  # the IPv6 gateway is the taps' anycast fe80::
        with open(db, "rb") as f:
            assert f.read(100) == b"\xa5" * 100  # the broken file is left for `state rebuild`
        r = vw("unplug", "--all", *host)
        assert r.returncode == 0, r.stderr
        assert host_state(ns)["taps"] == [] and proxy_entries(ns) == []
