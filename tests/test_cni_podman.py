"""vifwire-cni driven by a real CNI runtime: podman 4.3 (CNI backend, runc).

Every test gets a throwaway network namespace ("the host") and one podman
shell in it (tests/podman_fixtures.py: private mounts, storage, conflists,
cgroup parent). Two busybox containers are started with ``podman run -d``,
must reach each other and their gateway, be recorded by vifwire (``vifwire
list/check``), and after ``podman rm`` (and conmon's ``podman container
cleanup``) nothing may be left: no vfw*/qbr*/qvb*/qvo* links, no routes or
nftables elements for their addresses, no records, nothing for ``vifwire
gc``, no host-local leases.

That is done in each mode (routed, bridge, ovs with a private OVS), and in
routed mode also through a running agent (started inside the podman shell, so
that it sees the containers' /run/netns/* paths). More: anti-spoofing (a
spoofed source is dropped at the host end and counted), a failed ADD (fault
injection) leaves nothing, and a container that exits by itself is torn down
by conmon's cleanup process.

The first test runs the reference ``bridge`` plugin: it checks the harness.
The plugin and podman are installed by scripts/setup.sh; their absence fails the tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time

import pytest

from agent_fixtures import call
from podman_fixtures import IMAGE, VIFWIRE, VIFWIRE_CNI, PodmanSandbox, requires_podman

pytestmark = [pytest.mark.root, requires_podman]


HOST_PREFIXES = ("vfw", "qbr", "qvb", "qvo")
ROUTED_GW = "169.254.1.1"


# --------------------------------------------------------------------------- helpers


def _net_info(sh, name: str, net: str) -> dict[str, str]:
    info = sh.inspect(name)
    n = info["NetworkSettings"]["Networks"][net]
    return {"id": info["Id"], "ip": n["IPAddress"], "mac": n["MacAddress"].lower(), "prefix": str(n["IPPrefixLen"]),
            "gateway": n.get("Gateway") or ""}


def _ping(sh, name: str, dst: str, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """One ping from container ``name`` (a second try if the first is lost); (rc, output)."""
    for _ in range(2):
        rc, out, err = sh.exec(name, "ping", "-c", "1", "-W", "2", *extra, dst)
        if rc == 0:
            break
    return rc, out + err


def _assert_ping(sh, name: str, dst: str) -> None:
    rc, out = _ping(sh, name, dst)
    assert rc == 0, f"{name} cannot ping {dst}: {out}"


def _start_two(sh, net: str, extra: tuple[str, ...] = ()) -> tuple[dict[str, str], dict[str, str]]:
    got = []
    for name in ("a", "b"):
        rc, cid, err = sh.run_container(name, net, extra=extra)
        assert rc == 0, f"podman run {name} on {net}: rc {rc}\n{err[-4000:]}"
        got.append({**_net_info(sh, name, net), "name": name})
        assert got[-1]["id"] == cid
    return got[0], got[1]


def _links(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [l["ifname"] for l in json.loads(out)]


def _routes(ns: str) -> list[dict]:
    routes = []
    for fam in ("-4", "-6"):
        out = subprocess.run(["ip", "-n", ns, fam, "-j", "route", "show", "table", "all"], capture_output=True,
                             text=True, check=True).stdout
        routes += json.loads(out or "[]")
    return routes


def _routes_to(ns: str, ips: list[str]) -> list[dict]:
    want = {ipaddress.ip_address(ip) for ip in ips}
    hit = []
    for r in _routes(ns):
        dst = r.get("dst", "")
        if dst in ("default", "") or r.get("type") in ("local", "broadcast", "multicast"):
            continue
        if "/" not in dst and ipaddress.ip_address(dst) in want:
            hit.append(r)
    return hit


def _nft_ruleset(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"], capture_output=True,
                          text=True, check=True).stdout


def _nft_values(ns: str) -> set[str]:
    """Every string value (lower case) in the namespace's nftables ruleset (set elements, rules...)."""
    found: set[str] = set()

    def walk(x):
        if isinstance(x, str):
            found.add(x.lower())
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(json.loads(_nft_ruleset(ns)))
    return found


def _nft_mentions(ns: str, values: list[str]) -> list[str]:
    """Which of ``values`` (IPs, MACs) appear as a value in the namespace's nftables ruleset."""
    return sorted(_nft_values(ns) & {v.lower() for v in values})


def _vifwire(sh, *args: str, ovs=None) -> tuple[int, str, str]:
    """The vifwire CLI inside the podman shell (same namespaces as the plugin)."""
    extra = []
    if ovs is not None and args[0] in ("check", "gc"):
        extra = ["--ovsdb", ovs.endpoint]
    return sh.run([VIFWIRE, *args, *extra], timeout=120)


def _records(sh, db: str) -> list[dict]:
    rc, out, err = _vifwire(sh, "list", "--state", db, "--json")
    assert rc == 0, f"vifwire list: rc {rc}: {err}"
    return json.loads(out)


def _leases(ipam_dir: str, net: str) -> list[str]:
    d = os.path.join(ipam_dir, net)
    if not os.path.isdir(d):
        return []
    return sorted(f for f in os.listdir(d) if f not in ("lock",) and not f.startswith("last_reserved_ip"))


def _vifwire_net(sb: PodmanSandbox, net: str, mode: str, subnet: str, db: str, agent: str = "",
                 **extra) -> dict:
    plugin = {"type": "vifwire-cni", "mode": mode, "state": db, "agent": agent,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                       "dataDir": sb.shell.p("ipam")}, **extra}
    if mode == "ovs":
        plugin.update({"ovsdb": sb.ovs.endpoint, "ovsDatapath": "netdev"})
    sb.shell.add_network(net, [plugin])
    return plugin


def _assert_wired(sb: PodmanSandbox, db: str, a: dict, b: dict, gw: str, mode: str) -> list[dict]:
    sh = sb.shell
    _assert_ping(sh, "a", b["ip"])
    _assert_ping(sh, "b", a["ip"])
    _assert_ping(sh, "a", gw)
    _assert_ping(sh, "b", gw)
    for c in (a, b):  # the container side, as the CNI result said and as it is
        if mode == "routed":
            assert c["prefix"] == "32", c
        seen = sh.exec(c["name"], "sh", "-c", "ip -o -4 addr show dev eth0; ip -4 route")[1]
        assert f"{c['ip']}/{c['prefix']}" in seen and f"default via {gw}" in seen, seen
    recs = _records(sh, db)
    assert sorted(r["instance_id"] for r in recs) == sorted([a["id"], b["id"]]), json.dumps(recs, indent=1)[:4000]
    assert {r["status"] for r in recs} == {"plugged"}
    rc, out, err = _vifwire(sh, "check", "--state", db, ovs=sb.ovs)
    assert rc == 0, f"vifwire check: rc {rc}\n{out[-3000:]}\n{err[-3000:]}"
    links = _links(sb.ns)
    for r in recs:
        assert re.fullmatch(r"vfw[0-9a-f]{11}", r["devname"]), r["devname"]
        assert r["devname"] in links, (r["devname"], links)
    for c in (a, b):  # the container end: a locally administered unicast MAC
        assert int(c["mac"][:2], 16) & 3 == 2, c["mac"]
    return recs


def _remove_and_assert_clean(sb: PodmanSandbox, db: str, net: str, a: dict, b: dict) -> None:
    sh = sb.shell
    rc, out, err = sh.remove("a", "b", wait_ids=[a["id"], b["id"]])
    assert rc == 0, f"podman rm: rc {rc}: {err[-3000:]}"
    assert "level=error" not in err, err[-3000:]
    left = [l for l in _links(sb.ns) if l.startswith(HOST_PREFIXES)]
    assert left == [], f"links left in {sb.ns}: {left}"
    assert _routes_to(sb.ns, [a["ip"], b["ip"]]) == []
    assert _records(sh, db) == []
    rc, out, err = _vifwire(sh, "gc", "--state", db, "--json", ovs=sb.ovs)
    assert rc == 0, f"vifwire gc: rc {rc}: {out}{err}"
    res = json.loads(out)
    assert res["garbage"] == [] and res["problems"] == [], res
    assert _nft_mentions(sb.ns, [a["ip"], b["ip"], a["mac"], b["mac"]]) == []
    assert _leases(sh.p("ipam"), net) == [], "host-local leases left"
    if sb.ovs is not None:
        ports = sb.ovs.vsctl("list-ports", "br-int").split()
        assert ports == [], f"OVS ports left: {ports}"


def _scenario(sb: PodmanSandbox, mode: str, subnet: str, gw: str, **extra) -> None:
    db = sb.shell.p("state.db")
    net = f"vw{mode}"
    _vifwire_net(sb, net, mode, subnet, db, **extra)
    a, b = _start_two(sb.shell, net)
    _assert_wired(sb, db, a, b, gw, mode)
    _remove_and_assert_clean(sb, db, net, a, b)


# --------------------------------------------------------------------------- the harness itself


def test_harness_reference_bridge_plugin(podman_shell):
    """podman + the reference bridge/host-local plugins: two containers ping each other, rm leaves nothing."""
    sb = podman_shell
    sh = sb.shell
    sh.add_network("refbr", [{"type": "bridge", "bridge": "cni-ref0", "isGateway": True,
                              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.79.1.0/24"}]],
                                       "dataDir": sh.p("ipam")}}])
    a, b = _start_two(sh, "refbr")
    assert len(_leases(sh.p("ipam"), "refbr")) == 2
    _assert_ping(sh, "a", b["ip"])
    _assert_ping(sh, "b", a["ip"])
    _assert_ping(sh, "a", "10.79.1.1")
    assert sh.container_procs([a["id"], b["id"]]), "conmon of the running containers is found under the shell"
    rc, out, err = sh.remove("a", "b", wait_ids=[a["id"], b["id"]])
    assert rc == 0, err
    assert [l for l in _links(sb.ns) if l.startswith("veth")] == []
    assert _leases(sh.p("ipam"), "refbr") == []
    assert sh.check([*sh.podman_argv, "ps", "-aq"]).strip() == ""


# --------------------------------------------------------------------------- vifwire-cni


def test_routed_two_containers(podman_shell):
    _scenario(podman_shell, "routed", "10.77.1.0/24", ROUTED_GW)


def test_bridge_two_containers(podman_shell):
    _scenario(podman_shell, "bridge", "10.77.2.0/24", "10.77.2.1", bridge="vwbr0")


def test_ovs_two_containers(podman_ovs):
    _scenario(podman_ovs, "ovs", "10.77.3.0/24", "10.77.3.1", bridge="br-int")


def test_routed_with_agent(podman_shell):
    """The plugin hands the work to a running agent (started in the podman shell: it must see /run/netns/*)."""
    sb = podman_shell
    sh = sb.shell
    db, sock = sh.p("state.db"), sh.p("agent.sock")
    pid = sh.spawn([VIFWIRE, "agent", "--socket", sock, "--state", db], sh.p("logs", "agent.log"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = call(sock, "GET", "/v1/health", timeout=5)
                if status == 200 and body.get("ready"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"agent not ready: {open(sh.p('logs', 'agent.log')).read()[-3000:]}"
            time.sleep(0.05)
        net = "vwagent"
        _vifwire_net(sb, net, "routed", "10.77.4.0/24", db, agent=sock)
        a, b = _start_two(sh, net)
        _assert_wired(sb, db, a, b, ROUTED_GW, "routed")
        status, ports = call(sock, "GET", "/v1/ports")
        assert status == 200
        ports = ports if isinstance(ports, list) else ports.get("ports", ports)
        assert sorted(p["instance_id"] for p in ports) == sorted([a["id"], b["id"]]), ports
        _remove_and_assert_clean(sb, db, net, a, b)
        status, ev = call(sock, "GET", "/v1/events?since=0")
        types = [e["type"] for e in ev["events"]]
        assert types.count("plugged") >= 2 and types.count("unplugged") >= 2, ev
        assert "failed" not in types, ev
    finally:
        sh.stop(pid)


def test_routed_antispoof_drops_counted(podman_shell):
    """A spoofed source address is dropped at the host end (and counted); the real one passes."""
    from vifwire.service.wiring import WiringService

    sb = podman_shell
    sh = sb.shell
    db = sh.p("state.db")
    net = "vwspoof"
    _vifwire_net(sb, net, "routed", "10.77.5.0/24", db)
    a, b = _start_two(sh, net, extra=("--cap-add", "NET_ADMIN,NET_RAW"))
    _assert_ping(sh, "a", b["ip"])
    [host_end] = [r["devname"] for r in _records(sh, db) if r["instance_id"] == a["id"]]

    def drops() -> int:
        with WiringService(netns=sb.ns, state=db) as svc:
            return sum(svc.drop_counters().get(host_end, {}).values())

    def echoes_at_b() -> int:
        """ICMP echo requests b's network namespace received (Icmp InEchos of /proc/net/snmp)."""
        lines = [l.split() for l in sh.check([*sh.podman_argv, "exec", "b", "cat", "/proc/net/snmp"]).splitlines()
                 if l.startswith("Icmp:")]
        return int(lines[1][lines[0].index("InEchos")])

    before, echoes = drops(), echoes_at_b()
    spoofed = "10.77.5.250"
    sh.check([*sh.podman_argv, "exec", "a", "ip", "addr", "add", f"{spoofed}/32", "dev", "eth0"])
    rc, out, err = sh.exec("a", "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoofed, b["ip"])
    assert rc != 0, f"a spoofed ping got an answer: {out}{err}"
    after = drops()
    assert after >= before + 3, f"drops at {host_end}: {before} -> {after}"
    assert echoes_at_b() == echoes, "spoofed echo requests reached b"
    _assert_ping(sh, "a", b["ip"])  # the real address still works
    assert echoes_at_b() > echoes
    sh.check([*sh.podman_argv, "exec", "a", "ip", "addr", "del", f"{spoofed}/32", "dev", "eth0"])
    _remove_and_assert_clean(sb, db, net, a, b)


def test_failed_add_leaves_nothing(podman_shell):
    """VIFWIRE_FAIL_AT_STEP=k (in podman's environment, which the plugin inherits): ``podman run`` fails,
    nothing of the attachment is left (links, routes, nft elements, record, lease); a plain run then works."""
    sb = podman_shell
    sh = sb.shell
    db = sh.p("state.db")
    net = "vwfail"
    _vifwire_net(sb, net, "routed", "10.77.6.0/24", db)
    for k in (1, 3, 5):
        rc, out, err = sh.run(f"VIFWIRE_FAIL_AT_STEP={k} {' '.join(sh.podman_argv)} run -d --name f{k} "
                              f"--network {net} --cgroup-parent {sh.cgroup_parent} {IMAGE} sleep 1000")
        assert rc != 0, f"ADD with a failure injected at step {k} succeeded: {out}"
        assert f"injected failure at step {k}" in err, err[-3000:]
        assert [l for l in _links(sb.ns) if l.startswith(HOST_PREFIXES)] == []
        assert _records(sh, db) == []
        assert _leases(sh.p("ipam"), net) == []
        assert [v for v in _nft_values(sb.ns) if v.startswith("10.77.6.")] == []
        assert [r for r in _routes(sb.ns) if r.get("dst", "").startswith("10.77.6.")] == []
    rc, out, err = sh.podman("rm", "-f", "-t", "0", "f1", "f3", "f5")
    assert rc == 0, err
    a, b = _start_two(sh, net)
    _assert_wired(sb, db, a, b, ROUTED_GW, "routed")
    _remove_and_assert_clean(sb, db, net, a, b)


def test_exit_teardown_by_conmon_cleanup_process(podman_shell):
    """A container that exits by itself is torn down by conmon's ``podman container cleanup`` (the CNI DEL
    then runs with that process's scant environment): the wiring, record and lease go, the container stays."""
    sb = podman_shell
    sh = sb.shell
    db = sh.p("state.db")
    net = "vwexit"
    _vifwire_net(sb, net, "routed", "10.77.7.0/24", db)
    rc, cid, err = sh.run_container("e", net, "sleep", "2")
    assert rc == 0, err[-3000:]
    recs = _records(sh, db)
    assert [r["instance_id"] for r in recs] == [cid]
    ip = _net_info(sh, "e", net)["ip"]
    assert recs[0]["devname"] in _links(sb.ns)
    sh.wait_gone([cid], timeout=60)  # the container exited; conmon and its cleanup process are done
    state = sh.inspect("e")["State"]
    assert state["Status"] == "exited", state
    assert [l for l in _links(sb.ns) if l.startswith(HOST_PREFIXES)] == []
    assert _records(sh, db) == []
    assert _leases(sh.p("ipam"), net) == []
    assert _routes_to(sb.ns, [ip]) == []
    assert _nft_mentions(sb.ns, [ip, recs[0]["mac"]]) == []
    rc, out, err = sh.remove("e", wait_ids=[cid])
    assert rc == 0 and "level=error" not in err, err[-3000:]
