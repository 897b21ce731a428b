"""LXD attach and detach for real (docs/lxd.md): ``vifwire plug --hypervisor
lxd --lxd-instance C`` against a real LXD 5.0 in a test namespace
(tests/lxd_fixtures.py), with busybox containers.

Every mode (Linux bridge, OVS plain and hybrid on a private userspace OVS,
routed) hot-plugs the NIC into a running container that had none, which
then pings a peer; ``check`` is clean while the tin end lives in the
container; ``unplug`` detaches the NIC first and leaves the namespace's
links as they were before the plug. Also: a device an older version named
differently is found by MAC; a stopped container; bad input (unknown
instance, no LXD socket, an LXD refusal) is one line and the host is rolled
back; a fault at every step leaves host and instance as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from pyroute2 import IPRoute

from lxd_fixtures import LxdDaemon, lxd_daemon, lxd_image  # noqa: F401 - fixtures
from vifwire.sandbox import guests, netns
from vifwire.sandbox.ovs_daemon import PrivateOVS

pytestmark = pytest.mark.root

VIFWIRE = os.path.join(os.path.dirname(sys.executable), "vifwire")
NET = "4c1e6a0d-0000-4000-8000-0000000000c1"


def port(n: int, vif_type: str, details: dict, ip: str) -> dict:
    return {"id": f"c{n:07d}-0000-4000-8000-000000000000", "mac_address": f"fa:16:3e:c1:00:{n:02x}",
            "network_id": NET, "fixed_ips": [{"subnet_id": "s", "ip_address": ip}], "binding:vif_type": vif_type,
            "binding:vif_details": details, "binding:host_id": "t", "device_id": f"inst-{n}",
            "network": {"mtu": 1400}}


def tap(doc: dict) -> str:
    return ("tap" + doc["id"])[:14]


def tin(doc: dict) -> str:
    return "tin" + tap(doc)[3:]


class Host:
    """The test's view of the LXD namespace: runs vifwire there with a private state file."""

    def __init__(self, lxd: LxdDaemon, tmp_path, ovsdb: str | None = None):
        self.lxd, self.tmp = lxd, tmp_path
        self.state = str(tmp_path / "state.db")
        self.ovsdb = ovsdb or f"unix:{tmp_path}/no-ovs.sock"

    def file(self, doc: dict) -> str:
        path = self.tmp / f"{doc['id']}.json"
        path.write_text(json.dumps(doc))
        return str(path)

    def vw(self, cmd: str, *args: str, netns_: str | None = None, lxd: bool = True,
           env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [VIFWIRE, cmd, *args]
        if cmd in ("plug", "unplug", "check", "list", "gc"):
            argv += ["--netns", netns_ or self.lxd.ns, "--state", self.state, "--ovsdb", self.ovsdb]
        if lxd and cmd in ("plug", "unplug"):
            argv += ["--lxd-socket", self.lxd.socket]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "VIFWIRE_LXD_SOCKET": "", **(env or {})})

    def ok(self, cmd: str, *args: str, **kw) -> str:
        res = self.vw(cmd, *args, **kw)
        assert res.returncode == 0, f"vifwire {cmd} {args} -> rc {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def plug_into(self, container: str, doc: dict, *extra: str) -> None:
        self.ok("plug", self.file(doc), "--hypervisor", "lxd", "--lxd-instance", container, *extra)

    def cleanup(self) -> None:
        """Whatever a failed test left plugged (the namespace is shared by the module)."""
        self.vw("unplug", "--all")


def snapshot(ns: str) -> dict:
    """Links (name, mtu, MAC, master, up), addresses and routes of ``ns``."""
    with IPRoute(netns=ns) as ipr:
        links = sorted((l.get_attr("IFLA_IFNAME"), l.get_attr("IFLA_MTU"), l.get_attr("IFLA_ADDRESS"),
                        l.get_attr("IFLA_MASTER"), l["flags"] & 1) for l in ipr.get_links())
        addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr())
        routes = sorted(str((r["family"], r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_OIF")))
                        for fam in (2, 10) for r in ipr.get_routes(family=fam, table=254))
    return {"links": links, "addrs": addrs, "routes": routes}


def container_links(lxd: LxdDaemon, name: str) -> str:
    return lxd.exec(name, "ip", "-o", "link").stdout


def ping_from(lxd: LxdDaemon, name: str, address: str, tries: int = 10) -> bool:
    for _ in range(tries):
        if lxd.exec(name, "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def host(lxd_daemon, tmp_path):
    h = Host(lxd_daemon, tmp_path)
    yield h
    h.cleanup()


@pytest.fixture(scope="module")
def lxd_ovs(lxd_daemon):
    """A private OVS (br-int, userspace datapath) in the LXD namespace."""
    ovs = PrivateOVS()
    try:
        ovs.start(lxd_daemon.ns)
        ovs.add_bridge("br-int")
        yield ovs
    finally:
        ovs.stop()


@pytest.fixture
def container(lxd_daemon):
    name = lxd_daemon.launch()
    yield name
    lxd_daemon.delete(name)


# --------------------------------------------------------------------------- hot-plug, ping, unplug, per mode

MODES = {
    # mode: (vif_type, vif_details, extra plug options, routed)
    "bridge": ("bridge", {"bridge_name": "brvw-lxd"}, (), False),
    "ovs": ("ovs", {"port_filter": False, "bridge_name": "br-int"}, ("--ovs-datapath", "netdev"), False),
    "ovs-hybrid": ("ovs", {"port_filter": False, "bridge_name": "br-int"},
                   ("--ovs-datapath", "netdev", "--firewall"), False),
    "routed": ("tap", {}, (), True),
}


@contextlib.contextmanager
def _routed_gateway(ns: str, routed: bool):
    """A host with no default route answers 169.254.1.1 only as its own address:
    on its lo, as the sandbox does (docs/routed.md, "Gateways")."""
    if not routed:
        yield
        return
    with IPRoute(netns=ns) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.addr("add", index=lo, address=guests.ROUTED_GW4, prefixlen=32)
    try:
        yield
    finally:
        with IPRoute(netns=ns) as ipr:
            ipr.addr("del", index=lo, address=guests.ROUTED_GW4, prefixlen=32)


@pytest.mark.parametrize("mode", list(MODES))
def test_hot_plug_ping_check_unplug(request, lxd_daemon, tmp_path, container, mode):
    vif_type, details, extra, routed = MODES[mode]
    ovsdb = request.getfixturevalue("lxd_ovs").endpoint if vif_type == "ovs" else None
    h = Host(lxd_daemon, tmp_path, ovsdb)
    lxd = lxd_daemon
    n = list(MODES).index(mode) * 2 + 1
    net = f"10.8{n // 2}.0"
    mine, peer = port(n, vif_type, details, f"{net}.5"), port(n + 1, vif_type, details, f"{net}.6")
    with netns.sandbox("lp") as peer_ns, _routed_gateway(lxd.ns, routed):
        before = snapshot(lxd.ns)
        assert lxd.devices(container) == {}
        try:
            h.plug_into(container, mine, *extra)
            h.ok("plug", h.file(peer), "--hypervisor", "lxd", "--guest-netns", peer_ns, *extra)
            assert lxd.devices(container) == {tap(mine): {"type": "nic", "nictype": "physical",
                                                          "parent": tin(mine), "hwaddr": mine["mac_address"]}}
            inside = container_links(lxd, container)
            assert mine["mac_address"] in inside, inside  # hot-plugged into the running container
            with IPRoute(netns=lxd.ns) as ipr:
                assert not ipr.link_lookup(ifname=tin(mine)), "LXD moved the tin end into the container"
            if routed:
                for cmd in (["ip", "link", "set", "eth0", "up"], ["ip", "addr", "add", f"{net}.5/32", "dev", "eth0"],
                            ["ip", "route", "add", "169.254.1.1", "dev", "eth0"],
                            ["ip", "route", "add", "default", "via", "169.254.1.1"]):
                    lxd.exec(container, *cmd)
            else:
                lxd.exec(container, "ip", "link", "set", "eth0", "up")
                lxd.exec(container, "ip", "addr", "add", f"{net}.5/24", "dev", "eth0")
            guests.configure(peer_ns, tin(peer), [f"{net}.6"], [], routed=routed)
            assert ping_from(lxd, container, f"{net}.6"), f"{mode}: the container cannot reach its peer"
            assert guests.ping(peer_ns, f"{net}.5", timeout=2)
            # the tin end lives in the container: not drift
            out = h.ok("check")
            assert "2 port(s) checked, 0 with drift" in out, out
            h.ok("unplug", mine["id"], peer["id"])
        finally:
            h.cleanup()
        assert lxd.devices(container) == {}
        assert "eth0" not in container_links(lxd, container)
        assert snapshot(lxd.ns) == before


# --------------------------------------------------------------------------- detach by MAC, stopped containers


def plug_under_another_name(host: Host, container: str, doc: dict, device: str) -> dict:
    """Plug ``doc`` into ``container``, then give its NIC the device name ``device`` through the
    API, as an older version named it: only the MAC still ties the device to the port. The NIC."""
    lxd = host.lxd
    host.plug_into(container, doc)
    nic = lxd.devices(container)[tap(doc)]
    lxd.lxc("config", "device", "remove", container, tap(doc))
    lxd.query("PATCH", f"/1.0/instances/{container}", {"devices": {device: nic}})
    return nic


def test_an_old_style_device_is_found_by_mac_and_detached(host, container):
    lxd = host.lxd
    doc = port(21, "bridge", {"bridge_name": "brvw-old"}, "10.85.0.5")
    before = snapshot(lxd.ns)
    nic = plug_under_another_name(host, container, doc, "eth0")
    assert lxd.devices(container) == {"eth0": nic}
    assert doc["mac_address"] in container_links(lxd, container)
    assert "0 with drift" in host.ok("check")
    host.ok("unplug", doc["id"])
    assert lxd.devices(container) == {}
    assert snapshot(lxd.ns) == before


def test_unplug_from_a_binding_without_a_record(host, container):
    """A port wired before vifwire kept records of it (the record is gone): ``unplug
    --file`` with the instance plans the steps again, detaches by MAC, deletes the pair."""
    lxd = host.lxd
    doc = port(24, "bridge", {"bridge_name": "brvw-nor"}, "10.85.1.5")
    before = snapshot(lxd.ns)
    plug_under_another_name(host, container, doc, "eth1")
    host.state = str(host.tmp / "fresh.db")  # no record of the port
    out = host.ok("unplug", "--file", host.file(doc), "--hypervisor", "lxd", "--lxd-instance", container)
    assert f"unplugged {doc['id']}" in out, out
    assert lxd.devices(container) == {}
    assert snapshot(lxd.ns) == before


def test_a_stopped_container_gets_the_nic_when_it_starts(host, lxd_daemon):
    lxd = lxd_daemon
    name = lxd.launch(start=False)
    doc = port(22, "bridge", {"bridge_name": "brvw-stop"}, "10.86.0.5")
    try:
        before = snapshot(lxd.ns)
        host.plug_into(name, doc)
        assert tap(doc) in lxd.devices(name)
        assert "0 with drift" in host.ok("check")  # the tin waits on the host
        lxd.lxc("start", name)
        assert doc["mac_address"] in container_links(lxd, name)
        assert "0 with drift" in host.ok("check")  # in the container
        lxd.lxc("stop", "--force", name)
        assert "0 with drift" in host.ok("check")  # back on the host, down: LXD's business
        host.ok("unplug", doc["id"])
        assert lxd.devices(name) == {}
        assert snapshot(lxd.ns) == before
    finally:
        lxd.delete(name)


def test_check_reports_a_detached_nic_and_plug_repairs_it(host, container):
    lxd = host.lxd
    doc = port(23, "bridge", {"bridge_name": "brvw-rep"}, "10.87.0.5")
    host.plug_into(container, doc)
    lxd.lxc("config", "device", "remove", container, tap(doc))
    res = host.vw("check")
    assert res.returncode == 3 and f"{tap(doc)}: not a device of LXD instance {container}" in res.stdout, res.stdout
    host.plug_into(container, doc)  # plug again puts back what is missing
    assert "0 with drift" in host.ok("check")
    assert doc["mac_address"] in container_links(lxd, container)
    host.ok("unplug", doc["id"])
    assert lxd.devices(container) == {}


# --------------------------------------------------------------------------- bad input: one line, host as before


def _one_line(res: subprocess.CompletedProcess, *words: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def test_bad_input_is_one_line_and_the_host_is_rolled_back(host, container, tmp_path):
    lxd = host.lxd
    doc = port(31, "bridge", {"bridge_name": "brvw-bad"}, "10.88.0.5")
    f = host.file(doc)
    before = snapshot(lxd.ns)
    line = _one_line(host.vw("plug", f, "--hypervisor", "lxd", "--lxd-instance", "nope"),
                     f"port {doc['id']}: lxd_instance: ", "no instance 'nope'")
    assert lxd.socket in line
    _one_line(host.vw("plug", f, "--hypervisor", "lxd", "--lxd-instance", container, lxd=False,
                      env={"VIFWIRE_LXD_SOCKET": str(tmp_path / "no-lxd.sock")}),
              f"port {doc['id']}: lxd_socket: ", "no-lxd.sock", "No such file or directory")
    assert snapshot(lxd.ns) == before
    assert json.loads(host.ok("list", "--json")) == []
    # LXD refuses: vifwire wires another namespace than the one LXD sees, so the
    # parent device is not there for LXD; the other namespace is rolled back
    with netns.sandbox("lo") as other:
        other_before = snapshot(other)
        _one_line(host.vw("plug", f, "--hypervisor", "lxd", "--lxd-instance", container, netns_=other),
                  f"port {doc['id']}: lxd_nic: ", f"device {tap(doc)}", "doesn't exist")
        assert snapshot(other) == other_before
    assert lxd.devices(container) == {}
    assert json.loads(host.ok("list", "--json")) == []


def test_a_fault_at_every_step_leaves_host_and_instance_as_they_were(host, container):
    lxd = host.lxd
    doc = port(32, "bridge", {"bridge_name": "brvw-flt"}, "10.89.0.5")
    f = host.file(doc)
    steps = json.loads(host.ok("plan", f, "--json", "--hypervisor", "lxd", "--lxd-instance", container))[0]["steps"]
    assert steps[-1]["op"] == "lxd_nic"
    before = snapshot(lxd.ns)
    for k in range(len(steps) + 1):
        res = host.vw("plug", f, "--hypervisor", "lxd", "--lxd-instance", container,
                      env={"VIFWIRE_FAIL_AT_STEP": str(k)})
        assert res.returncode == 1 and "injected failure" in res.stderr, res.stderr
        assert lxd.devices(container) == {}, f"step {k} left the NIC in the instance"
        assert snapshot(lxd.ns) == before, f"step {k} ({steps[k]['op'] if k < len(steps) else 'commit'}) leaked"
        assert json.loads(host.ok("list", "--json")) == []


# --------------------------------------------------------------------------- through the agent


def test_the_agent_takes_the_lxd_facts_per_request(lxd_daemon, container):
    """``plug --agent`` sends --lxd-instance/--lxd-socket as the request's host
    facts; the agent attaches, checks clean while the tin is in the container
    (its netlink watch sees the tin leave and finds no drift) and detaches."""
    from agent_fixtures import AgentProc

    lxd = lxd_daemon
    doc = port(41, "bridge", {"bridge_name": "brvw-agt"}, "10.90.0.5")
    tmp = tempfile.mkdtemp(prefix="vw-lxa-", dir="/tmp")  # a short path for the agent's socket
    agent = AgentProc(tmp, lxd.ns, ovsdb=f"unix:{tmp}/no-ovs.sock")
    try:
        path = os.path.join(tmp, "port.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        before = snapshot(lxd.ns)
        agent.start()

        def vw(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([VIFWIRE, *args, "--agent", agent.sock], capture_output=True, text=True,
                                  timeout=60)

        res = vw("plug", path, "--hypervisor", "lxd", "--lxd-instance", container, "--lxd-socket", lxd.socket)
        assert res.returncode == 0, res.stderr
        assert tap(doc) in lxd.devices(container)
        assert doc["mac_address"] in container_links(lxd, container)
        time.sleep(1.5)  # past the agent's own-echo window: the tin's move is now someone else's change
        res = vw("check")
        assert res.returncode == 0 and "0 with drift" in res.stdout, res.stdout + res.stderr
        res = vw("unplug", doc["id"])
        assert res.returncode == 0, res.stderr
        assert lxd.devices(container) == {}
        status, events = agent.call("GET", "/v1/events?since=0")
        assert status == 200 and not [e for e in events["events"] if e["type"] in ("failed", "repaired", "drift")
                                      and e["port_id"] == doc["id"]], events
        assert snapshot(lxd.ns) == before
    finally:
        subprocess.run([VIFWIRE, "unplug", "--all", "--agent", agent.sock], capture_output=True, timeout=60)
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
