"""Fleet mode end to end with a real etcd and a real agent (docs/fleet.md).

One agent wires its own namespace from the desired ports of its host name;
the tests drive it only through etcd (``vifwire fleet ...``) and look at the
namespace, the agent's records and the status keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from agent_fixtures import AgentProc
from etcd_fixtures import EtcdProc
from routed_host import port
from vifwire.sandbox import netns

pytestmark = pytest.mark.root
VIFWIRE = os.path.join(os.path.dirname(sys.executable), "vifwire")


def _fleet(etcd: EtcdProc, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([VIFWIRE, "fleet", *args, "--etcd", etcd.url], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


def _taps(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {l["ifname"]: l["ifindex"] for l in json.loads(out) if l["ifname"].startswith("tap")}


def _statuses(etcd: EtcdProc, host: str) -> list[dict]:
    return json.loads(_fleet(etcd, "status", "--host", host, "--json").stdout)


@pytest.fixture
def fleet_host(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    (tmp_path / "etcd").mkdir()
    etcd = EtcdProc(str(tmp_path / "etcd"))
    etcd.start()
    with netns.sandbox("fl") as ns:
        # the agent runs here and wires ns (--netns): etcd is on this namespace's loopback
        a = AgentProc(str(tmp_path), ns, extra=["--etcd", etcd.url, "--host", "hv1"])
        try:
            a.start()
            yield etcd, ns, a, tmp_path
        finally:
            a.stop()
            etcd.stop()


def _apply(etcd: EtcdProc, tmp_path, ports: list[dict], host: str = "hv1") -> None:
    f = tmp_path / "ports.json"
    f.write_text(json.dumps(ports))
    _fleet(etcd, "apply", str(f), "--host", host)


def test_converges_keeps_unchanged_ports_and_unplugs_deleted_ones(fleet_host):
    etcd, ns, agent, tmp = fleet_host
    ports = [port(i) for i in range(1, 21)]
    _apply(etcd, tmp, ports)
    p = _fleet(etcd, "status", "--host", "hv1", "--wait", "60")
    assert "20" in p.stdout, p.stdout
    rows = _statuses(etcd, "hv1")
    assert {r["state"] for r in rows} == {"plugged"} and len(rows) == 20
    assert all(r["guest"] and "<interface" in r["guest"]["xml"] for r in rows)  # the hypervisor driver's config
    before = _taps(ns)
    assert len(before) == 20
    # delete half, change the MTU of two
    _fleet(etcd, "delete", *[port(i)["id"] for i in range(11, 21)], "--host", "hv1")
    changed = [dict(port(i), network={"mtu": 1300}) for i in (1, 2)]
    _apply(etcd, tmp, changed)
    _fleet(etcd, "status", "--host", "hv1", "--wait", "60")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_taps(ns)) != 10:
        time.sleep(0.1)
    after = _taps(ns)
    assert len(after) == 10
    kept = {n: i for n, i in before.items() if n in after and not n.startswith(("tap00000001", "tap00000002"))}
    assert kept and all(after[n] == i for n, i in kept.items()), "unchanged ports kept their ifindex"
    mtus = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", "tap00000001-c0"], capture_output=True,
                                     text=True).stdout)
    assert mtus[0]["mtu"] == 1300
    assert len(_statuses(etcd, "hv1")) == 10


def test_restart_touches_nothing_and_catches_up(fleet_host):
    etcd, ns, agent, tmp = fleet_host
    _apply(etcd, tmp, [port(i) for i in range(1, 11)])
    _fleet(etcd, "status", "--host", "hv1", "--wait", "60")
    before = _taps(ns)
    agent.stop()
    _fleet(etcd, "delete", port(10)["id"], "--host", "hv1")  # while the agent is down
    agent.start()
    _fleet(etcd, "status", "--host", "hv1", "--wait", "60")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_taps(ns)) != 9:
        time.sleep(0.1)
    after = _taps(ns)
    assert len(after) == 9
    assert all(after[n] == before[n] for n in after), "a restart must not re-create correct ports"


def test_a_second_agent_for_the_same_host_refuses_to_start(fleet_host, tmp_path):
    etcd, ns, agent, tmp = fleet_host
    os.makedirs(tmp_path / "b", exist_ok=True)
    second = AgentProc(str(tmp_path / "b"), ns, extra=["--etcd", etcd.url, "--host", "hv1"], name="second")
    with pytest.raises(RuntimeError) as e:
        second.start(timeout=20)
    second.stop()
    assert "an agent for host hv1 is alive" in str(e.value)


def test_etcd_outage_tears_nothing_down(fleet_host):
    etcd, ns, agent, tmp = fleet_host
    _apply(etcd, tmp, [port(i) for i in range(1, 6)])
    _fleet(etcd, "status", "--host", "hv1", "--wait", "60")
    before = _taps(ns)
    etcd.stop()
    time.sleep(3)
    assert _taps(ns) == before
    status, health = agent.call("GET", "/v1/health")
    assert status == 200  # the local API keeps serving
    etcd.start()
    _apply(etcd, tmp, [port(6)])
    _fleet(etcd, "status", "--host", "hv1", "--wait", "60")
    assert len(_taps(ns)) == 6


def test_controller_commands_refuse_bad_input_with_one_line(fleet_host):
    etcd, ns, agent, tmp = fleet_host
    bad = tmp / "bad.json"
    bad.write_text(json.dumps([dict(port(1), mac_address="nope")]))
    p = _fleet(etcd, "apply", str(bad), "--host", "hv1", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "mac_address" in p.stderr, p.stderr
    assert _statuses(etcd, "hv1") == []  # nothing was written
    p = _fleet(etcd, "apply", str(bad), "--host", "a/b", check=False)
    assert p.returncode == 2 and "--host" in p.stderr, p.stderr
    p = subprocess.run([VIFWIRE, "fleet", "status", "--etcd", "http://127.0.0.1:9"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    hosts = json.loads(_fleet(etcd, "hosts", "--json").stdout)
    assert [h["host"] for h in hosts] == ["hv1"]
