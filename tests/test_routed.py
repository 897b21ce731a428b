"""Routed TAP networking with anti-spoofing, proven with real packets (issue 5).

Everything goes through the engine (``Wiring.plug`` of Neutron ports with
``fixed_ips``, ``vif_type tap``) into a throwaway "host" namespace, with two
guests on it:

* ``vm``: a libvirt guest (``routed-tap``): a userspace VM
  (:class:`vifwire.sandbox.tunvm.TunVM`) attached to the persistent tap
  vifwire created, writing raw Ethernet frames;
* ``ct``: an LXD guest (``veth-routed``): a namespace with a real kernel stack
  behind the ``tin`` end.

There is no bridge: the host routes between them with vifwire's /32 and /128
routes. The guests use Calico's gateway arrangement, 169.254.1.1 (host
address on ``lo``, answered by ARP on the tap) and ``fe80::`` (the
subnet-router anycast address, answered by each tap because vifwire turns
IPv6 forwarding on there; no per-device entry). ``fd96::1`` on the host's
``lo`` stands for "the host" over IPv6.

Host prerequisites set here, in the host namespace only, as an operator would
on a real compute host: ``net.ipv6.conf.all.forwarding=1`` (IPv6 forwards
only when it is on globally) and ``net.ipv4.ip_forward=0`` to show that the
per-device IPv4 forwarding vifwire sets is enough.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field

import pytest
from pyroute2 import IPRoute

from vifwire.executors import kernel as K
from vifwire.executors.antispoof import AntiSpoof
from vifwire.executors.base import HostContext
from vifwire.executors.engine import Wiring
from vifwire.executors.nft import Nft
from vifwire.model import names
from vifwire.model.loader import load_one
from vifwire.planner.facts import HostFacts
from vifwire.planner.generic import plan
from vifwire.sandbox import guests, netns
from vifwire.sandbox import tunvm as T
from vifwire.store.sqlite import SqliteStore

pytestmark = pytest.mark.root

HOST_V4 = guests.ROUTED_GW4  # 169.254.1.1 on the host's lo
HOST_V6 = "fd96::1"  # the host over IPv6, on lo
ROUTED_GW6 = guests.ROUTED_GW6  # fe80::
RTPROT = K.VIFWIRE_RTPROT
IFA_F_TENTATIVE = 0x40


@dataclass
class Guest:
    port_id: str
    mac: str
    ip4: str
    ip6: str
    devname: str = ""


VM = Guest("d0000011-0000-4000-8000-000000000011", "fa:16:3e:96:00:11", "10.96.0.11", "fd96::11")
CT = Guest("d0000010-0000-4000-8000-000000000010", "fa:16:3e:96:00:10", "10.96.0.10", "fd96::10")


def port_doc(g: Guest, details: dict | None = None) -> dict:
    return {"id": g.port_id, "mac_address": g.mac, "network_id": "4c1e6a0d-0000-4000-8000-000000000096",
            "fixed_ips": [{"subnet_id": "s4", "ip_address": g.ip4}, {"subnet_id": "s6", "ip_address": g.ip6}],
            "binding:vif_type": "tap", "binding:vif_details": details if details is not None else {},
            "binding:vnic_type": "normal", "binding:host_id": "t", "device_id": "inst-96",
            "network": {"mtu": 1400}}


@pytest.fixture(autouse=True)
def _patient_pyroute2():
    """pyroute2 reaches a named netns through a forked helper with a 2 s
    timeout; on a loaded host (other suites creating thousands of links) that
    is too short. Be patient, then restore the defaults."""
    from pyroute2 import config

    saved = (config.default_communicate_timeout, config.default_create_socket_timeout)
    config.default_communicate_timeout = 30
    config.default_create_socket_timeout = 120
    yield
    config.default_communicate_timeout, config.default_create_socket_timeout = saved


# ---------------------------------------------------------------------------
# the environment


@dataclass
class Env:
    host: str
    gns: str  # the container guest's namespace
    ctx: HostContext
    store: SqliteStore
    items: list
    vm: T.TunVM
    asp: AntiSpoof
    tap_mac: dict[str, str] = field(default_factory=dict)  # host-side MAC of each tap

    @property
    def wiring(self) -> Wiring:
        return Wiring(self.ctx, self.store)

    def item(self, g: Guest):
        return next(i for i in self.items if i[0].port_id == g.port_id)


def _items(gns: str) -> list:
    out = []
    for g, facts in ((VM, HostFacts(hypervisor="libvirt")), (CT, HostFacts(hypervisor="lxd", guest_netns=gns))):
        b = load_one(port_doc(g))
        g.devname = b.devname
        out.append((b, plan(b, facts, render=False)))
    return out


def wait_ipv6_ready(ns: str, ifname: str, timeout: float = 30.0) -> None:
    """Until ``ifname`` has a link-local address that is no longer tentative.

    The host's side of a tap needs one: it is the source of its neighbour
    solicitations and of its answers for fe80::, which the kernel joins as
    anycast only once that address is ready. A tap gets it when
    it gets carrier (a reader attached), after DAD (1-2 s).
    """
    end = time.monotonic() + timeout
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        while True:
            addrs = [a for a in ipr.get_addr(family=socket.AF_INET6, index=idx)
                     if str(a.get_attr("IFA_ADDRESS")).startswith("fe80:")]
            flags = [a.get_attr("IFA_FLAGS") or a["flags"] for a in addrs]
            if flags and not any(f & IFA_F_TENTATIVE for f in flags):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{ns}/{ifname}: no usable IPv6 link-local address")
            time.sleep(0.1)


#: namespaces that are removed even when their creation fails half-way
sandbox = netns.sandbox


def give_guest_mac(ns: str, ifname: str, mac: str) -> None:
    """The container's NIC gets the port's MAC, as LXD does with the device's
    ``hwaddr``. (The plan's ``veth`` step carries it as ``peer_mac``; the kernel
    executor does not apply it yet - a no-op once it does.)"""
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        if ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS") != mac:
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, address=mac)


@pytest.fixture
def env(tmp_path):
    with contextlib.ExitStack() as st:
        host = st.enter_context(sandbox("rt"))
        gns = st.enter_context(sandbox("rg"))
        T.sysctl_write(host, "net/ipv4/ip_forward", "0")
        T.sysctl_write(host, "net/ipv6/conf/all/forwarding", "1")
        for key in ("all", "default"):
            T.sysctl_write(gns, f"net/ipv6/conf/{key}/accept_dad", "0")
        with IPRoute(netns=host) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.addr("add", index=lo, address=HOST_V4, prefixlen=32)
            ipr.addr("add", index=lo, address=HOST_V6, prefixlen=128)
        ctx = st.enter_context(HostContext(netns=host))
        store = st.enter_context(SqliteStore(str(tmp_path / "state.db")))
        items = _items(gns)
        w = Wiring(ctx, store)
        results = w.plug(items)
        assert all(r.ok for r in results), [r.error for r in results]
        # tear down whatever the test left plugged, before the namespaces go
        st.callback(lambda: Wiring(ctx, store).unplug(store.all()))
        give_guest_mac(gns, names.tin_for(CT.devname), CT.mac)
        guests.configure(gns, names.tin_for(CT.devname), [CT.ip4], [CT.ip6], routed=True)
        vm = st.enter_context(T.TunVM(host, VM.devname, VM.mac, [VM.ip4], [VM.ip6]))
        asp = AntiSpoof(st.enter_context(Nft(host)))
        e = Env(host, gns, ctx, store, items, vm, asp)
        with IPRoute(netns=host) as ipr:
            for g in (VM, CT):
                idx = ipr.link_lookup(ifname=g.devname)[0]
                e.tap_mac[g.devname] = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
        for g in (VM, CT):
            wait_ipv6_ready(host, g.devname)
        yield e


# ---------------------------------------------------------------------------
# helpers


def ct_ping(env: Env, dst: str, tries: int = 3) -> bool:
    return any(guests.ping(env.gns, dst) for _ in range(tries))


def gateways(env: Env) -> tuple[str, str]:
    """The VM resolves its two gateways; returns their MACs (v4, v6)."""
    gw4 = env.vm.resolve4(HOST_V4)
    na = env.vm.resolve6(ROUTED_GW6)
    assert gw4, "no ARP answer for the IPv4 gateway"
    assert na is not None, "no NDP answer for the anycast gateway fe80::"
    return gw4, na.nd_lladdr or na.src


def sniffer(ns: str, ifname: str) -> socket.socket:
    """An AF_PACKET socket on ``ifname``, created inside ``ns``."""

    def mk() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((ifname, 0))
        s.setblocking(False)
        return s

    return T.run_in_netns(ns, mk)


def seen(s: socket.socket, pred, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([s], [], [], left)
        if r:
            with contextlib.suppress(BlockingIOError):
                if pred(T.parse(s.recv(65535))):
                    return True
    return False


def wait_drop(env: Env, ifname: str, reason: str, above: int, seconds: float = 3.0) -> int:
    end = time.monotonic() + seconds
    while True:
        v = env.asp.drops(ifname).get(reason, 0)
        if v > above or time.monotonic() > end:
            return v
        time.sleep(0.05)


def vifwire_routes(ns: str) -> list[tuple[str, int, str | None]]:
    """(destination, prefix length, device) of every route with vifwire's protocol."""
    with IPRoute(netns=ns) as ipr:
        idx = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
        return sorted((r.get_attr("RTA_DST"), r["dst_len"], idx.get(r.get_attr("RTA_OIF")))
                      for fam in (socket.AF_INET, socket.AF_INET6)
                      for r in ipr.get_routes(family=fam, table=254) if r["proto"] == RTPROT)


def proxies(ns: str) -> list[tuple[str, str | None]]:
    """(address, device) of every IPv6 neighbour proxy entry.

    From ``ip -j neigh show proxy``: pyroute2 0.9's ``get_neighbours(flags=8)``
    does not put NTF_PROXY in the dump request, so it never lists them.
    """
    out = subprocess.run(["ip", "-n", ns, "-j", "-6", "neigh", "show", "proxy"], capture_output=True,
                         text=True, check=True).stdout
    return sorted((str(ipaddress.ip_address(n["dst"])), n.get("dev")) for n in json.loads(out or "[]"))


def neigh(ns: str, ifname: str, ip: str) -> str | None:
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for n in ipr.get_neighbours(ifindex=idx):
            if n.get_attr("NDA_DST") == ip and n["state"] not in (0x20, 0x40):  # not FAILED/NOARP
                return n.get_attr("NDA_LLADDR")
    return None


def nft_text(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


def ip(ns: str, *args: str) -> None:
    """``ip -n NS ...`` (always inside a namespace of the test)."""
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def routes_of(g: Guest) -> set[tuple[str, int, str]]:
    return {(g.ip4, 32, g.devname), (g.ip6, 128, g.devname)}


# ---------------------------------------------------------------------------
# the plan


def test_plan_emits_routing_and_filter_steps():
    items = _items("vw-guest-ns")
    for b, p in items:
        ops = [s.op for s in p.steps]
        assert ops[-3:] == ["antispoof", "sysctls", "routes"], ops
        assert "proxy_ndp" not in ops  # the IPv6 gateway is the kernel's anycast fe80::
        sysctls = next(s for s in p.steps if s.op == "sysctls").args["values"]
        assert sysctls == {"ipv4/conf/{dev}/proxy_arp": "1", "ipv4/conf/{dev}/forwarding": "1",
                           "ipv6/conf/{dev}/accept_ra": "0", "ipv6/conf/{dev}/forwarding": "1",
                           "ipv4/neigh/{dev}/proxy_delay": "0", "ipv6/neigh/{dev}/proxy_delay": "0"}
        assert next(s for s in p.steps if s.op == "routes").args["addresses"] == [*b.ipv4, *b.ipv6]
        # the host end keeps IPv6 (routes, fe80::); the container's tin is in its namespace
        link = next(s for s in p.steps if s.op in ("tap", "veth"))
        assert "no_ipv6" not in link.args, link.args
    assert [p.strategy for _, p in items] == ["routed-tap", "veth-routed"]
    # IPv4-only: no IPv6 settings, and IPv6 off on the tap before it comes up
    doc = port_doc(VM)
    doc["fixed_ips"] = doc["fixed_ips"][:1]
    p = plan(load_one(doc), HostFacts(), render=False)
    assert not any(k.startswith("ipv6/neigh") for k in next(s for s in p.steps if s.op == "sysctls").args["values"])
    assert next(s for s in p.steps if s.op == "tap").args["no_ipv6"] == [VM.devname]
    # the network filters: no anti-spoofing, routing all the same
    p = plan(load_one(port_doc(VM, {"port_filter": True})), HostFacts(), render=False)
    assert [s.op for s in p.steps][-2:] == ["sysctls", "routes"]
    assert "antispoof" not in [s.op for s in p.steps]


# ---------------------------------------------------------------------------
# reachability


def test_guests_reach_each_other_and_the_gateway(env):
    vm = env.vm
    # the host answers for both gateways with the tap's own MAC
    gw4, gw6 = gateways(env)
    assert gw4 == gw6 == env.tap_mac[VM.devname]
    # no bridge anywhere: the guests are routed
    with IPRoute(netns=env.host) as ipr:
        assert not [l for l in ipr.get_links() if (l.get_attr("IFLA_LINKINFO") and
                                                   l.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge")]
    assert routes_of(VM) | routes_of(CT) <= set(vifwire_routes(env.host))
    assert proxies(env.host) == []  # no per-device entry for the IPv6 gateway
    # the VM (raw frames) -> the host's gateway address and the container, v4 and v6
    assert vm.ping(HOST_V4, gw4), "VM cannot reach the host gateway 169.254.1.1"
    assert vm.ping(CT.ip4, gw4), "VM cannot reach the container guest over IPv4"
    assert vm.ping(HOST_V6, gw6), "VM cannot reach the host over IPv6 via fe80::"
    assert vm.ping(CT.ip6, gw6), "VM cannot reach the container guest over IPv6"
    # the container (kernel stack) -> the host and the VM
    assert ct_ping(env, HOST_V4)
    assert ct_ping(env, VM.ip4), "container cannot reach the VM over IPv4"
    assert ct_ping(env, HOST_V6)
    assert ct_ping(env, VM.ip6), "container cannot reach the VM over IPv6"
    # the container resolved fe80:: to its tap (the tap answered for the anycast address)
    assert neigh(env.gns, names.tin_for(CT.devname), ROUTED_GW6) == env.tap_mac[CT.devname]
    assert vm.answered > 0  # the VM's responder served the host's ARP/NS and the pings
    # the host forwarded with ip_forward=0: per-device forwarding is what vifwire sets
    assert T.sysctl_read(env.host, "net/ipv4/ip_forward") == "0"
    assert env.wiring.check(env.store.all()) == {VM.port_id: [], CT.port_id: []}


# ---------------------------------------------------------------------------
# anti-spoofing


def test_spoofs_are_dropped_and_counted(env):
    vm, asp, tap = env.vm, env.asp, VM.devname
    gw4, gw6 = gateways(env)
    tin = names.tin_for(CT.devname)
    rx = sniffer(env.gns, tin)  # what reaches the container guest

    def legit() -> None:
        assert vm.ping(CT.ip4, gw4), "legit IPv4 VM -> container blocked"
        assert vm.ping(CT.ip6, gw6), "legit IPv6 VM -> container blocked"
        assert vm.ping(HOST_V4, gw4), "legit VM -> gateway blocked"

    legit()
    base = asp.drops(tap)
    assert base and not any(base.values()), base  # counters exist, nothing dropped so far

    # 1. spoofed source IP
    n = asp.drops(tap)["ip4"]
    assert not vm.ping(CT.ip4, gw4, src="10.96.0.99", tries=1)
    assert wait_drop(env, tap, "ip4", n) == n + 1
    assert not seen(rx, lambda p: p.ip_src == "10.96.0.99", 0.3), "spoofed source IP reached the container"
    legit()

    # 2. spoofed source MAC (own IP)
    n = asp.drops(tap)["mac"]
    assert not vm.ping(CT.ip4, gw4, src_mac="fa:16:3e:96:00:99", tries=1)
    assert wait_drop(env, tap, "mac", n) == n + 1
    legit()

    # 3. gratuitous ARP claiming the container's address; with arp_accept=1 on
    # the tap the host would have learnt it, had the frame got through
    T.sysctl_write(env.host, f"net/ipv4/conf/{tap}/arp_accept", "1")
    n = asp.drops(tap)["arp"]
    vm.send(T.gratuitous_arp(VM.mac, CT.ip4))
    assert wait_drop(env, tap, "arp", n) == n + 1
    assert neigh(env.host, tap, CT.ip4) is None, "host learnt the container's address on the VM's tap"
    legit()

    # 4. an IPv6 router advertisement; accept_ra=2 on the tap for the test, so
    # that only the filter stands between the RA and the host's routing table
    T.sysctl_write(env.host, f"net/ipv6/conf/{tap}/accept_ra", "2")
    try:
        n = asp.drops(tap)["ra"]
        vm.send(T.ra_frame(VM.mac, vm.ll))
        assert wait_drop(env, tap, "ra", n) == n + 1
        time.sleep(0.2)
        with IPRoute(netns=env.host) as ipr:
            learnt = [r for r in ipr.get_routes(family=socket.AF_INET6, table=254)
                      if str(r.get_attr("RTA_DST") or "").startswith("fd96:bad") or
                      (r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY"))]
        assert not learnt, f"host accepted the guest's RA: {learnt}"
    finally:
        T.sysctl_write(env.host, f"net/ipv6/conf/{tap}/accept_ra", "0")
    legit()

    # allowed and not counted: DHCP discover from 0.0.0.0:68 reaches a server on the host
    def server() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("0.0.0.0", 67))
        s.setblocking(False)
        return s

    srv = T.run_in_netns(env.host, server)
    try:
        snap = asp.drops(tap)
        vm.send(T.dhcp_discover(VM.mac))
        r, _, _ = select.select([srv], [], [], 2.0)
        assert r, "DHCP discover was dropped"
        assert asp.drops(tap) == snap
    finally:
        srv.close()

    # exactly the four spoofs were counted, nothing else
    drops = asp.drops(tap)
    assert {k: v for k, v in drops.items() if v} == {"ip4": 1, "mac": 1, "arp": 1, "ra": 1}, drops
    # the container guest is filtered too: a source it does not own, from its kernel's side
    tx = sniffer(env.gns, tin)
    try:
        m = vm.mark()
        n = asp.drops(CT.devname)["ip4"]
        tx.send(T.echo4_frame(env.tap_mac[CT.devname], CT.mac, "10.96.0.77", VM.ip4, 7, 1))
        assert wait_drop(env, CT.devname, "ip4", n) == n + 1
        assert vm.wait(lambda p: p.ip_src == "10.96.0.77", 0.3, since=m) is None
    finally:
        tx.close()
        rx.close()
    assert ct_ping(env, VM.ip4)
    assert env.wiring.check(env.store.all()) == {VM.port_id: [], CT.port_id: []}


# ---------------------------------------------------------------------------
# unplug


def _sysctl_dirs(ns: str, dev: str) -> list[str]:
    keys = [f"net/ipv4/conf/{dev}/forwarding", f"net/ipv4/neigh/{dev}/proxy_delay",
            f"net/ipv6/conf/{dev}/forwarding", f"net/ipv6/neigh/{dev}/proxy_delay"]
    return [k for k in keys if T.sysctl_read(ns, k) is not None]


def test_unplug_leaves_nothing_of_that_port(env):
    gw4, _ = gateways(env)
    assert env.vm.ping(CT.ip4, gw4)
    before_ct = (env.asp.port_entries(CT.devname), [p for p in proxies(env.host) if p[1] == CT.devname])
    env.vm.close()  # the VM is shut down first, as libvirt would
    w = env.wiring
    assert w.unplug([env.store.get(VM.port_id)]) == []
    host, tap = env.host, VM.devname
    routes = vifwire_routes(host)
    assert not [r for r in routes if r[0] in (VM.ip4, VM.ip6) or r[2] == tap], routes
    assert not [p for p in proxies(host) if p[1] in (tap, None)], proxies(host)
    assert _sysctl_dirs(host, tap) == []
    with IPRoute(netns=host) as ipr:
        assert not ipr.link_lookup(ifname=tap)
    assert env.asp.port_entries(tap) == {} and env.asp.drops(tap) == {}
    assert tap not in env.asp.ports()
    assert tap not in nft_text(host)
    # the other port is untouched
    assert routes_of(CT) <= set(routes)
    assert (env.asp.port_entries(CT.devname), [p for p in proxies(host) if p[1] == CT.devname]) == before_ct
    assert len(_sysctl_dirs(host, CT.devname)) == 4
    assert env.wiring.check(env.store.all()) == {CT.port_id: []}
    assert ct_ping(env, HOST_V4) and ct_ping(env, HOST_V6)
    # and then the container's port: nothing of vifwire's is left on the host
    assert w.unplug(env.store.all()) == []
    assert vifwire_routes(host) == [] and proxies(host) == []
    assert env.asp.ports() == set()
    for dev in (CT.devname, names.tin_for(CT.devname)):
        assert _sysctl_dirs(host, dev) == []
    with IPRoute(netns=env.gns) as ipr:
        assert not ipr.link_lookup(ifname=names.tin_for(CT.devname))
    data = json.loads(nft_text(host))["nftables"]
    assert not [o for o in data if "set" in o and o["set"].get("elem")], "filter elements left behind"


# ---------------------------------------------------------------------------
# check and gc


def test_check_sees_each_kind_of_drift_and_plug_repairs_it(env):
    w, host = env.wiring, env.host
    ip(host, "route", "del", f"{CT.ip4}/32", "dev", CT.devname, "proto", str(RTPROT))
    T.sysctl_write(host, f"net/ipv6/conf/{CT.devname}/forwarding", "0")
    T.sysctl_write(host, f"net/ipv4/conf/{VM.devname}/proxy_arp", "0")
    T.sysctl_write(host, f"net/ipv6/conf/{VM.devname}/accept_ra", "1")
    env.asp.nft.run({"nftables": [
        {"delete": {"element": {"family": "inet", "table": "vifwire", "name": "vif_ifaces", "elem": [VM.devname]}}},
        {"delete": {"element": {"family": "arp", "table": "vifwire", "name": "allow_mac",
                                "elem": [{"concat": [CT.devname, CT.mac]}]}}},
    ]})
    drift = w.check(env.store.all())
    vm_text, ct_text = "\n".join(drift[VM.port_id]), "\n".join(drift[CT.port_id])
    assert f"host route to {CT.ip4} is missing" in ct_text, ct_text
    assert "forwarding is 0, recorded 1" in ct_text, ct_text
    assert f"MAC {CT.mac} not allowed" in ct_text, ct_text
    assert "proxy_arp is 0, recorded 1" in vm_text, vm_text
    assert "accept_ra is 1, recorded 0" in vm_text, vm_text
    assert "not guarded" in vm_text, vm_text
    assert len(drift[VM.port_id]) == 3 and len(drift[CT.port_id]) == 3, drift
    # the broken route shows in traffic, too
    assert not guests.ping(env.gns, HOST_V4)
    # plugging again repairs everything
    results = w.plug(env.items)
    assert all(r.ok for r in results), [r.error for r in results]
    assert w.check(env.store.all()) == {VM.port_id: [], CT.port_id: []}
    assert ct_ping(env, HOST_V4) and ct_ping(env, VM.ip4)


def test_gc_finds_filters_no_attachment_owns(env):
    w = env.wiring
    env.store.delete([VM.port_id])  # a crash between the wiring and the record: the VM's port is unowned
    found = w.garbage(env.store.all())
    filters = {g["name"] for g in found if g["kind"] == "filter"}
    assert filters == {VM.devname}, found
    assert not [g for g in found if CT.devname in json.dumps(g)], found
    w.collect([g for g in found if g["kind"] == "filter"])
    assert env.asp.port_entries(VM.devname) == {}
    assert env.asp.port_entries(CT.devname)["registered"]
    assert not [g for g in w.garbage(env.store.all()) if g["kind"] == "filter"]
    assert w.check(env.store.all()) == {CT.port_id: []}


def _kernel_gc_reports_routes(found: list[dict]) -> bool:
    return any(g.get("kind") == "route" for g in found)


def test_gc_finds_routes_no_attachment_owns(env):
    """A vifwire-protocol route no attachment owns: a forgotten port's, and a
    stray one (left by a crash) via a device an attachment does own."""
    w, host = env.wiring, env.host
    stray = "10.96.0.50"
    ip(host, "route", "add", f"{stray}/32", "dev", CT.devname, "proto", str(RTPROT), "scope", "link")
    env.vm.close()
    env.store.delete([VM.port_id])
    found = w.garbage(env.store.all())
    assert _kernel_gc_reports_routes(found), found
    text = json.dumps(found)
    for addr in (VM.ip4, VM.ip6, stray):
        assert addr in text, (addr, found)
    assert CT.ip4 not in text and CT.ip6 not in text, found
    w.collect(found)
    routes = vifwire_routes(host)
    assert not [r for r in routes if r[0] in (VM.ip4, VM.ip6, stray)], routes
    assert routes_of(CT) <= set(routes)
    assert w.garbage(env.store.all()) == []
    assert w.check(env.store.all()) == {CT.port_id: []}
