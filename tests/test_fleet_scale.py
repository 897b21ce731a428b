"""Fleet mode at scale: three agents, one real etcd 3.4 (issue 14, docs/fleet.md).

Each agent treats its own throwaway namespace as its host (``--netns``; the
agents themselves run in the root namespace, where etcd listens on loopback):

* ``hv1`` has a private Open vSwitch (bridge ``br-int``, netdev datapath):
  its ports alternate between routed taps and OVS ports on ``br-int``;
* ``hv2`` and ``hv3`` alternate routed taps and Linux-bridge ports spread
  over four bridges ``brq<h>-0`` .. ``brq<h>-3`` (a quarter of the ports each).

:data:`N` ports per host. Ids, MACs and addresses are unique across the
three hosts. The tests share one fleet (module fixture) and run in order,
each bringing the hosts to a new desired set and checking the end state of
every host against it: exactly the desired taps, bridges and OVS ports, one
record per desired port, each filter element once, ``vifwire check`` clean,
one current ``plugged`` status per desired port and no status for the rest.

Scenarios, in this order: one ``fleet apply`` per host converges (status
with the guest's config); delete half and change some (MTU, addresses): the
unchanged ports keep their ifindex / OVS interface; ``kill -9`` of an agent
in the middle of a batch, desired ports changed while it is down, restarted
(as a supervisor would, once the dead agent's lease expired); etcd stopped
for 10 s tears nothing down, changes after it converge; a compaction past
the revision of a stopped agent, and of a running one cut off from etcd by a
proxy, means a full resync; TLS with client certificates (its own small
fleet: a valid certificate converges, a foreign one or none reads nothing
and plugs nothing, and the agent keeps running); applying a host's ports
again unchanged must be reported current.

N: the issue's 1000 ports per host (3000 in all). On the 2-core test machine
the whole file takes about 70 s (plus 30 s while the last test fails on the
product, see its docstring): the three hosts' first convergence takes about
5 s, waiting for a killed agent's lease to expire about 13-15 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

from agent_fixtures import AgentProc
from etcd_fixtures import EtcdProc, etcd_tls  # noqa: F401 - the TLS fixture
from routed_host import expected_elements_per_port, host_state
from vifwire.fleetkit import keys
from vifwire.fleetkit.etcd import Compacted, Etcd
from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS
from vifwire.store.sqlite import SqliteStore

pytestmark = pytest.mark.root
VIFWIRE = os.path.join(os.path.dirname(sys.executable), "vifwire")

#: Ports per host: the issue's number, which keeps the file around 70 s on 2 cores.
N = 1000
#: Linux bridges per bridge host; port i goes to brq<h>-<(i - 1) * BRIDGES // N>.
BRIDGES = 4
#: Seconds `fleet status --wait` may take for one convergence.
WAIT = 300
OVS_HOST = 1


# ----------------------------------------------------------------- the ports


def pid(h: int, i: int) -> str:
    return f"{h:02x}{i:06x}-f1ee-4000-8000-00000000f1ee"


def devname(h: int, i: int) -> str:
    return "tap" + pid(h, i)[:11]


def kind(h: int, i: int) -> str:
    if i % 2:
        return "tap"
    return "ovs" if h == OVS_HOST else "bridge"


def bridge_of(h: int, i: int) -> str:
    return f"brq{h}-{(i - 1) * BRIDGES // N}"


def doc(h: int, i: int, *, mtu: int = 1400, moved: bool = False) -> dict:
    """Port ``i`` of host ``h``; ``moved``: other addresses than its first ones."""
    net4, net6 = (150 + h, f"fd98:{h}") if moved else (100 + h, f"fd97:{h}")
    d = {"id": pid(h, i), "mac_address": f"fa:16:3e:{h:02x}:{i >> 8:02x}:{i & 255:02x}",
         "network_id": f"4c1e6a0d-0000-4000-8000-0000000000{h:02x}",
         "fixed_ips": [{"subnet_id": "s4", "ip_address": f"10.{net4}.{i // 200}.{i % 200 + 1}"},
                       {"subnet_id": "s6", "ip_address": f"{net6}::{i:x}"}],
         "binding:vif_type": "tap", "binding:vif_details": {}, "binding:vnic_type": "normal",
         "binding:host_id": f"hv{h}", "device_id": f"inst-{h}-{i}", "network": {"mtu": mtu}}
    k = kind(h, i)
    if k == "ovs":
        d["binding:vif_type"] = "ovs"
        d["binding:vif_details"] = {"port_filter": True, "ovs_hybrid_plug": False, "bridge_name": "br-int"}
    elif k == "bridge":
        d["binding:vif_type"] = "bridge"
        d["binding:vif_details"] = {"port_filter": False, "bridge_name": bridge_of(h, i)}
    return d


def edit(h: int, cur: dict, *, mtu: int | None = None, move: bool = False) -> dict:
    """``cur`` (port of host ``h``) with another MTU and/or its addresses swapped for the other set.

    Only taps and OVS ports get a port's own MTU: the ports of a shared Linux
    bridge share their network's MTU, which changes for all of them at once."""
    i = int(cur["id"][2:8], 16)
    assert mtu is None or kind(h, i) != "bridge", "a bridge port's MTU is its network's"
    moved = cur["fixed_ips"][0]["ip_address"].startswith(f"10.{150 + h}.")
    return doc(h, i, mtu=cur["network"]["mtu"] if mtu is None else mtu, moved=moved != move)


def addresses(d: dict) -> list[str]:
    return [ip["ip_address"] for ip in d["fixed_ips"]]


# ----------------------------------------------------------------- the fleet


@dataclass
class Host:
    h: int
    name: str
    ns: str
    agent: AgentProc
    tmp: str
    ovs: PrivateOVS | None = None
    #: index -> the port document this host should have now
    desired: dict[int, dict] = field(default_factory=dict)

    @property
    def db(self) -> str:
        return self.agent.state


@dataclass
class Fleet:
    etcd: EtcdProc
    hosts: dict[int, Host]
    tmp: str
    per_port: int  # filter elements of one routed tap
    per_bridge_port: int  # filter elements of one Linux-bridge port

    def fleet(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return run_fleet(self.etcd.url, *args, check=check, timeout=timeout)

    def apply(self, host: Host, docs: dict[int, dict]) -> None:
        """One `vifwire fleet apply` of ``docs`` (index -> document) for ``host``."""
        if not docs:
            return
        f = os.path.join(self.tmp, f"apply-{host.name}.json")
        with open(f, "w") as fh:
            json.dump([docs[i] for i in sorted(docs)], fh)
        p = self.fleet("apply", f, "--host", host.name)
        assert f"{len(docs)} port(s) desired on {host.name}" in p.stdout, p.stdout
        host.desired.update(docs)

    def delete(self, host: Host, indexes: list[int]) -> None:
        if not indexes:
            return
        self.fleet("delete", *[pid(host.h, i) for i in indexes], "--host", host.name)
        for i in indexes:
            host.desired.pop(i, None)

    def wait(self, timeout: float = WAIT) -> float:
        """`fleet status --wait` for every host; returns the seconds it took."""
        t0 = time.monotonic()
        p = self.fleet("status", "--wait", str(timeout), check=False, timeout=timeout + 60)
        took = time.monotonic() - t0
        if p.returncode != 0:
            pytest.fail(f"fleet status --wait {timeout}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}"
                        + self.logs())
        return took

    def logs(self, tail: int = 4000) -> str:
        return "".join(f"\n--- {h.name} agent log (tail) ---\n{h.agent.read_log()[-tail:]}"
                       for h in self.hosts.values())


def run_fleet(url: str, *args: str, check: bool = True, timeout: float = 600,
              tls: list[str] | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([VIFWIRE, "fleet", *args, "--etcd", url, *(tls or [])], capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, f"vifwire fleet {' '.join(args[:3])}: exit {p.returncode}\n{p.stderr}{p.stdout}"
    return p


class CutProxy:
    """A TCP forwarder in front of etcd for one agent: :meth:`cut` closes every
    connection and refuses new ones (etcd unreachable for that agent only,
    while the test keeps writing and compacting), :meth:`restore` listens again."""

    def __init__(self, target_port: int):
        from etcd_fixtures import free_port

        self.target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def restore(self) -> None:
        assert self.listener is None
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                if self.listener is not listener:  # cut meanwhile
                    c.close()
                    u.close()
                    return
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            conns, self.conns = self.conns, []
        if listener is not None:
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def first_watch_error(e: Etcd, prefix: str, start: int, timeout: float = 10.0) -> BaseException | None:
    """What a watch from ``start`` raises once read (None: it delivered events or timed out)."""
    out: list[BaseException | None] = [None]
    w = None
    try:
        w = e.watch_prefix(prefix, start)
    except Exception as exc:  # noqa: BLE001 - the answer
        return exc

    def read() -> None:
        try:
            next(iter(w))
        except Exception as exc:  # noqa: BLE001 - the answer
            out[0] = exc

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    w.cancel()
    return out[0]


def restart_after_crash(agent: AgentProc, limit: float = 40.0) -> float:
    """Start ``agent`` again after a kill -9, as a supervisor would: the dead
    agent's liveness lease holds the host's key until it expires (TTL 15 s),
    and until then a new agent refuses to start. Returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        try:
            agent.start()
            return time.monotonic() - t0
        except RuntimeError as exc:
            agent.stop()
            if "is alive" not in str(exc) or time.monotonic() - t0 > limit:
                raise
            time.sleep(1)


def metric(agent: AgentProc, name: str) -> float | None:
    status, text = agent.call("GET", "/metrics", timeout=30)
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def links(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {l["ifname"]: l["ifindex"] for l in json.loads(out)}


def link_info(ns: str, name: str) -> dict:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "link", "show", name], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]


def bridges(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "type", "bridge"], capture_output=True, text=True,
                         check=True).stdout
    return {l["ifname"] for l in json.loads(out)}


def ovs_interfaces(ovs: PrivateOVS) -> dict[str, tuple[str, str]]:
    """Interface name -> (_uuid, iface-id) of every tap on the private OVS (a duplicate name fails)."""
    out = json.loads(ovs.vsctl("--format=json", "--columns=_uuid,name,external_ids", "list", "Interface",
                               timeout=30))
    head = out["headings"]
    rows = [dict(zip(head, r)) for r in out["data"]]
    found: dict[str, tuple[str, str]] = {}
    for r in rows:
        name = r["name"]
        if not name.startswith("tap"):
            continue
        assert name not in found, f"OVS interface {name} twice"
        ext = dict(r["external_ids"][1])
        found[name] = (r["_uuid"][1], ext.get("iface-id", ""))
    return found


def ovs_ports_on(ovs: PrivateOVS, bridge: str) -> list[str]:
    return ovs.vsctl("list-ports", bridge, timeout=30).split()


def records(host: Host) -> dict[str, str]:
    with SqliteStore(host.db) as store:
        return {a.port_id: a.status for a in store.all()}


def status_keys(etcd_url: str, host: str, **tls: str | None) -> dict[str, dict]:
    e = Etcd(etcd_url, **tls)
    try:
        items, _ = e.get_prefix(keys.status_prefix(host))
    finally:
        e.close()
    return {kv.key.rsplit("/", 1)[1]: json.loads(kv.value) for kv in items}


def snapshot(fl: Fleet, host: Host) -> dict:
    """What an unchanged port must keep: ifindex of taps and bridges, OVS interface uuids, records."""
    return {"links": {n: i for n, i in links(host.ns).items() if n.startswith(("tap", "brq"))},
            "ovs": ovs_interfaces(host.ovs) if host.ovs else {},
            "records": records(host)}


def assert_converged(fl: Fleet, host: Host, deadline: float = 120) -> None:
    """The host has exactly its desired ports, each wired once, checked clean and reported."""
    want = host.desired
    taps = sorted(devname(host.h, i) for i, d in want.items() if kind(host.h, i) == "tap")
    ovs_names = sorted(devname(host.h, i) for i, d in want.items() if kind(host.h, i) == "ovs")
    brs = {d["binding:vif_details"]["bridge_name"] for i, d in want.items() if kind(host.h, i) == "bridge"}
    ids = {d["id"] for d in want.values()}
    # `status --wait` covers the desired ports; removals of deleted ones may still be finishing
    end = time.monotonic() + deadline
    while True:
        state = host_state(host.ns)
        recs = records(host)
        if state["taps"] == taps and set(recs) == ids and bridges(host.ns) == brs:
            break
        if time.monotonic() > end:
            extra_t, missing_t = set(state["taps"]) - set(taps), set(taps) - set(state["taps"])
            extra_r, missing_r = set(recs) - ids, ids - set(recs)
            pytest.fail(f"{host.name} did not converge: taps +{len(extra_t)} -{len(missing_t)} "
                        f"(e.g. {sorted(extra_t)[:3]} {sorted(missing_t)[:3]}), records +{len(extra_r)} "
                        f"-{len(missing_r)} (e.g. {sorted(extra_r)[:3]} {sorted(missing_r)[:3]}), "
                        f"bridges {sorted(bridges(host.ns))} != {sorted(brs)}" + fl.logs())
        time.sleep(0.5)
    assert set(recs.values()) == {"plugged"}, {s for s in recs.values()}
    # each routed tap wired once: its two routes, its filter elements (and no proxy entry)
    assert state["routes"] == 2 * len(taps), (state["routes"], len(taps))
    assert state["proxies"] == 0, (state["proxies"], len(taps))
    # bridge ports get anti-spoofing elements too, for the tap libvirt will add to the bridge
    bridged = sorted(devname(host.h, i) for i in want if kind(host.h, i) == "bridge")
    assert sorted(state["elements"]) == sorted(taps + bridged)
    twice = {n: c for n, c in state["elements"].items()
             if c != (fl.per_port if n in taps else fl.per_bridge_port)}
    assert not twice, f"{len(twice)} port(s) with filter elements twice or missing, e.g. {sorted(twice.items())[:3]}"
    if host.ovs is not None:
        ifaces = ovs_interfaces(host.ovs)
        assert sorted(ifaces) == ovs_names
        assert sorted(n for n in ovs_ports_on(host.ovs, "br-int") if n.startswith("tap")) == ovs_names
        iface_ids = [v[1] for v in ifaces.values()]
        assert len(set(iface_ids)) == len(iface_ids) and set(iface_ids) <= ids
    argv = [VIFWIRE, "check", "--netns", host.ns, "--state", host.db]
    if host.ovs is not None:
        argv += ["--ovsdb", host.ovs.endpoint]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert f"{len(ids)} port(s) checked, 0 with drift" in res.stdout, res.stdout[-2000:]
    # etcd: a current `plugged` status for each desired port, none for the others
    sts = status_keys(fl.etcd.url, host.name)
    assert set(sts) == ids, f"status keys +{len(set(sts) - ids)} -{len(ids - set(sts))}"
    e = Etcd(fl.etcd.url)
    try:
        desired, _ = e.get_prefix(keys.desired_prefix(host.name))
    finally:
        e.close()
    revs = {kv.key.rsplit("/", 1)[1]: kv.mod_revision for kv in desired}
    assert set(revs) == ids
    stale = [p for p in ids if sts[p]["desired_revision"] != revs[p] or sts[p]["state"] != "plugged"]
    assert not stale, f"{len(stale)} status(es) not current and plugged, e.g. {sts[stale[0]]}"
    by_id = {d["id"]: d for d in want.values()}
    noguest = [p for p in ids if by_id[p]["mac_address"] not in ((sts[p].get("guest") or {}).get("xml") or "")]
    assert not noguest, f"{len(noguest)} status(es) without the guest's config, e.g. {sts[noguest[0]]}"


def assert_kept(before: dict, after: dict, unchanged: set[str]) -> None:
    """Every device in ``unchanged`` (names) has the ifindex / OVS uuid it had."""
    moved = [n for n in unchanged if n in before["links"] and after["links"].get(n) != before["links"][n]]
    assert not moved, f"{len(moved)} unchanged device(s) were re-created, e.g. {sorted(moved)[:5]}"
    moved = [n for n in unchanged if n in before["ovs"] and after["ovs"].get(n) != before["ovs"][n]]
    assert not moved, f"{len(moved)} unchanged OVS interface(s) were re-created, e.g. {sorted(moved)[:5]}"


def elements_of_one_bridge_port(tmp: str) -> int:
    """How many filter elements one Linux-bridge port has, plugged alone."""
    return expected_elements_per_port(tmp, doc(2, 2))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    if not shutil.which("ovs-vswitchd"):
        pytest.fail("Open vSwitch is missing: run scripts/setup.sh")
    tmp = str(tmp_path_factory.mktemp("fleet"))
    with contextlib.ExitStack() as stack:  # unwound in reverse: agents, OVS, namespaces, etcd
        os.makedirs(os.path.join(tmp, "etcd"))
        etcd = EtcdProc(os.path.join(tmp, "etcd"))
        stack.callback(etcd.stop)
        etcd.start()
        per_port = expected_elements_per_port(tmp_path_factory.mktemp("one"))
        per_bridge_port = elements_of_one_bridge_port(str(tmp_path_factory.mktemp("onebr")))
        hosts: dict[int, Host] = {}
        for h in (1, 2, 3):
            name = f"hv{h}"
            ns = stack.enter_context(netns.sandbox(f"fs{h}"))
            htmp = os.path.join(tmp, name)
            os.makedirs(htmp)
            extra = ["--etcd", etcd.url, "--host", name]
            ovs = None
            if h == OVS_HOST:
                ovs = PrivateOVS()
                stack.callback(ovs.stop)
                ovs.start(ns)
                ovs.add_bridge("br-int")
                extra += ["--ovsdb", ovs.endpoint, "--ovs-datapath", "netdev"]
            agent = AgentProc(htmp, ns, extra=extra)
            stack.callback(agent.stop)
            hosts[h] = Host(h, name, ns, agent, htmp, ovs)
        for host in hosts.values():
            host.agent.start()
        yield Fleet(etcd, hosts, tmp, per_port, per_bridge_port)


# ----------------------------------------------------------------- the tests


def test_three_hosts_converge_from_one_apply_each(fleet):
    t0 = time.monotonic()
    for host in fleet.hosts.values():
        fleet.apply(host, {i: doc(host.h, i) for i in range(1, N + 1)})
    took = fleet.wait()
    print(f"\n{3 * N} ports on 3 hosts: applied and converged in {time.monotonic() - t0:.1f} s "
          f"(status --wait {took:.1f} s)")
    table = [line.split() for line in fleet.fleet("status").stdout.splitlines()]
    for host in fleet.hosts.values():  # host, plugged, failed, pending
        assert [host.name, str(N), "0", "0"] in table, table
    rows = json.loads(fleet.fleet("status", "--json").stdout)
    assert len(rows) == 3 * N
    assert {r["state"] for r in rows} == {"plugged"}
    by_id = {r["port_id"]: r for r in rows}
    for host in fleet.hosts.values():
        for i, d in host.desired.items():
            r = by_id[d["id"]]
            xml = (r["guest"] or {}).get("xml") or ""
            assert f'<mac address="{d["mac_address"]}"/>' in xml, (host.name, i, r)
            assert f'dev="{devname(host.h, i)}"' in xml, (host.name, i, xml)
            if kind(host.h, i) == "bridge":
                assert f'<source bridge="{bridge_of(host.h, i)}"/>' in xml, xml
            elif kind(host.h, i) == "ovs":
                assert '<virtualport type="openvswitch">' in xml and d["id"] in xml, xml
            else:
                assert '<interface type="ethernet">' in xml, xml
    alive = json.loads(fleet.fleet("hosts", "--json").stdout)
    assert sorted(a["host"] for a in alive) == ["hv1", "hv2", "hv3"]
    for host in fleet.hosts.values():
        assert metric(host.agent, "vifwire_etcd_connected") == 1
        assert_converged(fleet, host)


def changes(h: int, desired: dict[int, dict]) -> dict[int, dict]:
    """Some ports changed: of the first 40 taps and OVS ports, half get another MTU, half other
    addresses; on a bridge host the whole network of the first bridge gets another MTU (an MTU is
    a network's, and the ports of a shared bridge have one) and some of its ports other addresses."""
    out = {}
    for i in desired:
        if kind(h, i) == "bridge":
            if bridge_of(h, i) == bridge_of(h, 1):
                out[i] = doc(h, i, mtu=1300, moved=i <= 40 and i % 4 == 0)
        elif i <= 40:
            out[i] = doc(h, i, mtu=1300) if i % 4 in (1, 2) else doc(h, i, moved=True)
    return out


def test_delete_half_and_change_some_keeps_the_unchanged_ports(fleet):
    before = {h: snapshot(fleet, host) for h, host in fleet.hosts.items()}
    changed: dict[int, dict[int, dict]] = {}
    for host in fleet.hosts.values():
        fleet.delete(host, [i for i in list(host.desired) if i > N // 2])
        changed[host.h] = changes(host.h, host.desired)
        fleet.apply(host, changed[host.h])
    fleet.wait()
    for host in fleet.hosts.values():
        assert_converged(fleet, host)
        after = snapshot(fleet, host)
        unchanged = {devname(host.h, i) for i in host.desired if i not in changed[host.h]}
        unchanged |= {bridge_of(host.h, i) for i in host.desired
                      if kind(host.h, i) == "bridge" and bridge_of(host.h, i) != bridge_of(host.h, 1)}
        assert len(unchanged) > N // 4
        assert_kept(before[host.h], after, unchanged)
        sts = status_keys(fleet.etcd.url, host.name)
        routes = subprocess.run(["ip", "-n", host.ns, "route", "show", "proto", "158"], capture_output=True,
                                text=True, check=True).stdout
        routes6 = subprocess.run(["ip", "-n", host.ns, "-6", "route", "show", "proto", "158"],
                                 capture_output=True, text=True, check=True).stdout
        for i, d in changed[host.h].items():
            xml = sts[d["id"]]["guest"]["xml"]
            assert f'<mtu size="{d["network"]["mtu"]}"/>' in xml, xml
            assert d["mac_address"] in xml
            if kind(host.h, i) == "tap":
                if d["network"]["mtu"] == 1300:
                    assert link_info(host.ns, devname(host.h, i))["mtu"] == 1300
                else:
                    v4, v6 = addresses(d)
                    assert f"{v4} dev {devname(host.h, i)}" in routes, (v4, routes[:500])
                    assert f"{v6} dev {devname(host.h, i)}" in routes6, v6
                    old4, old6 = addresses(doc(host.h, i))
                    assert f"{old4} dev" not in routes and f"{old6} dev" not in routes6
        if host.h != OVS_HOST:
            assert link_info(host.ns, bridge_of(host.h, 1))["mtu"] == 1300
            assert {link_info(host.ns, b)["mtu"] for b in bridges(host.ns) - {bridge_of(host.h, 1)}} == {1400}


def test_kill9_during_a_batch_then_desired_ports_change_while_down(fleet):
    host = fleet.hosts[2]
    other = {h: snapshot(fleet, x) for h, x in fleet.hosts.items() if x is not host}
    have = len(host_state(host.ns)["taps"])
    batch = {i: doc(host.h, i) for i in range(N + 1, 2 * N + 1)}
    fleet.apply(host, batch)
    new_taps = sum(1 for i in batch if kind(host.h, i) == "tap")
    # kill it once part of the batch is wired, not all of it
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = len([n for n in links(host.ns) if n.startswith("tap")])
        if now >= have + 20:
            break
        time.sleep(0.02)
    host.agent.kill9()
    wired = len([n for n in links(host.ns) if n.startswith("tap")]) - have
    recs = records(host)
    print(f"\nkilled {host.name} with {wired}/{new_taps} new taps wired, "
          f"{sum(1 for s in recs.values() if s != 'plugged')} record(s) not plugged")
    assert 0 < wired < new_taps, f"the kill was meant to land mid-batch ({wired}/{new_taps} new taps wired)"
    host.agent.stop()  # reaps it and closes its log
    # while it is down: drop some of the batch (wired ones and not yet wired ones), change some, add more
    fleet.delete(host, [i for i in range(N + 1, N + 101)] + [i for i in range(2 * N - 99, 2 * N + 1)])
    ch = {i: edit(host.h, host.desired[i], mtu=1280) if kind(host.h, i) == "tap"
          else edit(host.h, host.desired[i], move=True) for i in range(N + 101, N + 121)}
    ch.update({i: edit(host.h, host.desired[i], move=True) for i in range(1, 11)})
    ch.update({i: doc(host.h, i) for i in range(2 * N + 1, 2 * N + 51)})
    fleet.apply(host, ch)
    took = restart_after_crash(host.agent)
    print(f"restarted after {took:.1f} s (the dead agent's lease had to expire)")
    fleet.wait()
    assert_converged(fleet, host)
    for i in range(N + 101, N + 121, 2):
        assert link_info(host.ns, devname(host.h, i))["mtu"] == 1280
    log = host.agent.read_log()
    assert "Traceback" not in log, log[-5000:]
    for h, snap in other.items():  # the other hosts saw nothing of it
        assert_kept(snap, snapshot(fleet, fleet.hosts[h]), set(snap["links"]) | set(snap["ovs"]))


def test_etcd_stopped_for_ten_seconds_tears_nothing_down(fleet):
    before = {h: snapshot(fleet, x) for h, x in fleet.hosts.items()}
    fleet.etcd.stop()
    try:
        time.sleep(10)
        for h, host in fleet.hosts.items():
            assert host.agent.proc.poll() is None, host.agent.read_log()[-3000:]
            status, health = host.agent.call("GET", "/v1/health")
            assert status == 200, health  # the local API keeps serving
            assert metric(host.agent, "vifwire_etcd_connected") == 0, host.agent.read_log()[-3000:]
            after = snapshot(fleet, host)
            assert after == before[h], f"{host.name} changed while etcd was down" + fleet.logs()
    finally:
        fleet.etcd.start()
    for host in fleet.hosts.values():  # change desired ports once etcd is back
        fleet.delete(host, sorted(host.desired)[-5:])
        own = [i for i in sorted(host.desired) if kind(host.h, i) != "bridge"][:6]
        ch = {i: edit(host.h, host.desired[i], mtu=1350) for i in own}
        ch.update({i: edit(host.h, host.desired[i], move=True) for i in sorted(host.desired)[6:12]
                   if kind(host.h, i) == "bridge"})
        top = max(host.desired) + 1
        ch.update({i: doc(host.h, i) for i in range(top, top + 10)})
        fleet.apply(host, ch)
    fleet.wait()
    for h, host in fleet.hosts.items():
        assert_converged(fleet, host)
        assert metric(host.agent, "vifwire_etcd_connected") == 1
        assert "etcd lost" in host.agent.read_log()


def test_compaction_past_a_stopped_agent_means_a_full_resync(fleet):
    host = fleet.hosts[3]
    e = Etcd(fleet.etcd.url)
    assert host.agent.stop() == 0, host.agent.read_log()[-3000:]
    seen = e.revision()
    before = snapshot(fleet, host)
    # many changes while it is away: MTU flips, deletes, new ports, back and forth
    base = sorted(host.desired)
    taps = [i for i in base if kind(host.h, i) == "tap"][:50]
    for round_ in range(5):
        fleet.apply(host, {i: edit(host.h, host.desired[i], mtu=1300 + round_) for i in taps})
        fleet.apply(host, {i: edit(host.h, host.desired[i], move=True) for i in base[200:240]})
    fleet.delete(host, base[50:150])
    top = max(base) + 1
    fleet.apply(host, {i: doc(host.h, i) for i in range(top, top + 100)})
    fleet.delete(host, list(range(top + 50, top + 100)))
    rev = e.revision()
    e.compact(rev)
    # the stopped agent's revision is gone from etcd's history: a watch from there is refused
    assert isinstance(first_watch_error(e, keys.desired_prefix(host.name), seen + 1), Compacted)
    e.close()
    host.agent.start()
    fleet.wait()
    assert_converged(fleet, host)
    unchanged = {devname(host.h, i) for i in base[150:] if kind(host.h, i) == "tap" and i not in base[200:240]}
    assert_kept(before, snapshot(fleet, host), unchanged)
    for i in taps:
        if i in host.desired:
            assert link_info(host.ns, devname(host.h, i))["mtu"] == 1304


def test_compaction_while_a_running_agent_is_cut_off_from_etcd(fleet):
    """The same with the agent running: only its connections to etcd are cut
    (a proxy), so it keeps its revision in memory while etcd compacts past it."""
    host = fleet.hosts[OVS_HOST]
    proxy = CutProxy(fleet.etcd.client_port)
    proxy.restore()
    try:
        argv = host.agent.argv
        assert host.agent.stop() == 0, host.agent.read_log()[-3000:]  # its lease is revoked: back at once
        argv[argv.index("--etcd") + 1] = proxy.url
        host.agent.start()
        fleet.wait()
        assert metric(host.agent, "vifwire_etcd_connected") == 1
        before = snapshot(fleet, host)
        e = Etcd(fleet.etcd.url)
        seen = e.revision()
        proxy.cut()
        deadline = time.monotonic() + 30
        while metric(host.agent, "vifwire_etcd_connected") != 0:
            assert time.monotonic() < deadline, "the agent did not notice it lost etcd" + host.agent.read_log()[-3000:]
            time.sleep(0.2)
        base = sorted(host.desired)
        own = [i for i in base if kind(host.h, i) == "tap"][:30] + [i for i in base if kind(host.h, i) == "ovs"][:30]
        for round_ in range(4):
            fleet.apply(host, {i: edit(host.h, host.desired[i], mtu=1300 + round_) for i in own})
        fleet.delete(host, base[-60:])
        top = max(base) + 1
        fleet.apply(host, {i: doc(host.h, i) for i in range(top, top + 60)})
        e.compact(e.revision())
        assert isinstance(first_watch_error(e, keys.desired_prefix(host.name), seen + 1), Compacted)
        e.close()
        assert snapshot(fleet, host) == before, "changed while it could not read etcd"
        proxy.restore()
        fleet.wait()
        assert_converged(fleet, host)
        assert metric(host.agent, "vifwire_etcd_connected") == 1
        unchanged = {devname(host.h, i) for i in base[:-60] if i not in own}
        assert_kept(before, snapshot(fleet, host), unchanged)
        for i in own:
            if kind(host.h, i) == "tap":
                assert link_info(host.ns, devname(host.h, i))["mtu"] == 1303
        log = host.agent.read_log()
        assert "etcd lost" in log and "Traceback" not in log, log[-3000:]
    finally:  # back to etcd itself for what follows
        host.agent.stop()
        argv[argv.index("--etcd") + 1] = fleet.etcd.url
        proxy.cut()
        with contextlib.suppress(RuntimeError):  # must not hide the test's own failure
            host.agent.start()


# ----------------------------------------------------------------- TLS


def test_tls_client_certificates(etcd_tls, tmp_path):
    """A valid client certificate converges; a foreign one or none reads nothing and plugs nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    pki = etcd_tls.tls
    good_tls = ["--etcd-cacert", pki.cacert, "--etcd-cert", pki.cert, "--etcd-key", pki.key]
    cases = {"good": good_tls,
             "foreign": ["--etcd-cacert", pki.cacert, "--etcd-cert", pki.other_cert, "--etcd-key", pki.other_key],
             "nocert": ["--etcd-cacert", pki.cacert]}
    ports = {name: [doc(h, i) for i in range(1, 41, 2)]  # 20 routed taps each
             for h, name in ((4, "good"), (5, "foreign"), (6, "nocert"))}
    for name, docs in ports.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(docs))
        run_fleet(etcd_tls.url, "apply", str(f), "--host", name, tls=good_tls)
    # the CLI itself is refused without a valid certificate
    bad = run_fleet(etcd_tls.url, "status", check=False, tls=cases["foreign"])
    assert bad.returncode != 0 and "TLS" in bad.stderr, bad.stderr
    with contextlib.ExitStack() as stack:
        agents = {}
        for name, tls in cases.items():
            ns = stack.enter_context(netns.sandbox(f"ft{name[:2]}"))
            d = tmp_path / name
            d.mkdir()
            a = AgentProc(str(d), ns, extra=["--etcd", etcd_tls.url, "--host", name, *tls])
            stack.callback(a.stop)
            a.start()
            agents[name] = (ns, a)
        p = run_fleet(etcd_tls.url, "status", "--host", "good", "--wait", "60", tls=good_tls, check=False)
        assert p.returncode == 0, p.stdout + p.stderr + agents["good"][1].read_log()[-3000:]
        ns, good = agents["good"]
        assert len([n for n in links(ns) if n.startswith("tap")]) == 20
        assert metric(good, "vifwire_etcd_connected") == 1
        time.sleep(3)  # a few retries of the others
        for name in ("foreign", "nocert"):
            ns, a = agents[name]
            assert a.proc.poll() is None, a.read_log()[-3000:]  # it keeps running
            status, health = a.call("GET", "/v1/health")
            assert status == 200, health
            assert metric(a, "vifwire_etcd_connected") == 0, a.read_log()[-3000:]
            assert set(links(ns)) == {"lo"}, f"{name}: wired without a valid certificate: {links(ns)}"
            with SqliteStore(a.state) as store:
                assert store.all() == []
            log = a.read_log()
            assert "etcd" in log and "TLS" in log, log[-3000:]
        rows = json.loads(run_fleet(etcd_tls.url, "status", "--json", tls=good_tls).stdout)
        states = {(r["host"], r["state"]) for r in rows}
        assert states == {("good", "plugged"), ("foreign", "pending"), ("nocert", "pending")}, states
        hosts = json.loads(run_fleet(etcd_tls.url, "hosts", "--json", tls=good_tls).stdout)
        assert [a["host"] for a in hosts] == ["good"]


# ----------------------------------------------------------------- idempotence


def test_applying_the_same_ports_again_is_reported_current(fleet):
    """`fleet apply` of what a host already has: new revisions, nothing to rewire,
    and `fleet status --wait` must still see every port plugged for its latest revision.

    Fails on fleet-wip as written: for a watched put whose document is unchanged
    the agent writes no status (FleetSync._converge writes the unchanged ports'
    statuses only on a full resync), so they stay pending until it restarts."""
    host = fleet.hosts[3]
    before = snapshot(fleet, host)
    fleet.apply(host, dict(host.desired))
    p = fleet.fleet("status", "--host", host.name, "--wait", "30", check=False, timeout=120)
    assert p.returncode == 0, (p.stdout[-1500:] + p.stderr[-1500:] + "\n--- agent log (tail) ---\n"
                               + host.agent.read_log()[-1500:])
    assert_converged(fleet, host)
    assert_kept(before, snapshot(fleet, host), set(before["links"]) | set(before["ovs"]))
