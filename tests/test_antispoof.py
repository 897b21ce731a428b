"""Anti-spoofing filter (nftables via libnftables JSON) tested with real packets.

Everything happens inside throwaway network namespaces: a "host" namespace
with veth pairs whose peers live in "guest" namespaces. Guests send
hand-crafted Ethernet/IPv4/ARP/IPv6 frames with AF_PACKET sockets; sockets are
*created* inside the guest namespace (on a thread that setns()'d into it) and
then used from the test thread: a socket stays in the namespace it was
created in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

import pytest

from vifwire.errors import HostError
from vifwire.executors.antispoof import ALL_REASONS, AntiSpoof, PortFilter, eui64_link_local
from vifwire.executors.nft import Nft, NftError
from vifwire.netlink.netns import setns
from vifwire.sandbox import netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BCAST = "ff:ff:ff:ff:ff:ff"
IFA_F_NODAD = 0x02



@pytest.fixture(autouse=True)
def _patient_pyroute2():
    """pyroute2 reaches a named netns through a forked helper with a 2 s
    answer timeout; on a loaded host (other suites creating thousands of
    links) forks and RTNL take longer. Be patient, then restore the defaults."""
    from pyroute2 import config

    saved = (config.default_communicate_timeout, config.default_create_socket_timeout)
    config.default_communicate_timeout = 30
    config.default_create_socket_timeout = 120
    yield
    config.default_communicate_timeout, config.default_create_socket_timeout = saved


# ---------------------------------------------------------------------------
# running code inside a namespace
# ---------------------------------------------------------------------------


def in_ns(ns: str, fn, *args):
    """Run ``fn(*args)`` on a fresh thread that entered namespace ``ns``."""
    box: dict = {}

    def worker():
        try:
            fd = os.open(netns.netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd)
            finally:
                os.close(fd)
            # belt and braces: never act in the wrong namespace
            want = os.stat(netns.netns_path(ns)).st_ino
            have = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
            assert want == have, "thread did not enter the namespace"
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


#: namespaces that are removed even when their creation fails half-way
sandbox = netns.sandbox


def sysctl(ns: str, path: str, value: str) -> None:
    """Write /proc/sys/<path> inside ``ns`` (never in the root namespace)."""

    def write():
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)

    in_ns(ns, write)


def sysctl_get(ns: str, path: str) -> str:
    def read():
        with open(f"/proc/sys/{path}") as f:
            return f.read().strip()

    return in_ns(ns, read)


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------


def mac_b(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: str, src: str, etype: int, payload: bytes) -> bytes:
    return mac_b(dst) + mac_b(src) + struct.pack("!H", etype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), secrets.randbits(16), 0, ttl, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def udp4(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # no checksum


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op) + mac_b(sha) + socket.inet_aton(spa) + \
        mac_b(tha) + socket.inet_aton(tpa)


def ipv6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim) + \
        socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + payload


def icmp6(src: str, dst: str, typ: int, code: int, body: bytes) -> bytes:
    pseudo = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + \
        struct.pack("!I3xB", 4 + len(body), 58)
    msg = struct.pack("!BBH", typ, code, 0) + body
    return struct.pack("!BBH", typ, code, csum(pseudo + msg)) + body


def ra_frame(src_mac: str, src_ll: str, tag: int, prefix: str = "fd98:bad::") -> bytes:
    # cur hop limit 64, M/O 0, router lifetime 1800 s, reachable = tag, retrans 0
    body = struct.pack("!BBHII", 64, 0, 1800, tag, 0)
    body += struct.pack("!BB", 1, 1) + mac_b(src_mac)  # source link-layer address
    body += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + \
        socket.inet_pton(socket.AF_INET6, prefix)  # prefix information, on-link+autonomous
    pkt = ipv6(src_ll, "ff02::1", 58, icmp6(src_ll, "ff02::1", 134, 0, body), hlim=255)
    return eth("33:33:00:00:00:01", src_mac, ETH_P_IPV6, pkt)


def na_frame(src_mac: str, src_ip: str, target: str) -> bytes:
    body = struct.pack("!I", 0x20000000) + socket.inet_pton(socket.AF_INET6, target)  # Override
    body += struct.pack("!BB", 2, 1) + mac_b(src_mac)  # target link-layer address
    pkt = ipv6(src_ip, "ff02::1", 58, icmp6(src_ip, "ff02::1", 136, 0, body), hlim=255)
    return eth("33:33:00:00:00:01", src_mac, ETH_P_IPV6, pkt)


def udp4_frame(dst_mac: str, src_mac: str, src: str, dst: str, dport: int, token: bytes) -> bytes:
    return eth(dst_mac, src_mac, ETH_P_IP, ipv4(src, dst, 17, udp4(40000, dport, token)))


def garp_frame(src_mac: str, claimed_ip: str) -> bytes:
    return eth(BCAST, src_mac, ETH_P_ARP, arp(1, src_mac, claimed_ip, "00:00:00:00:00:00", claimed_ip))


# ---------------------------------------------------------------------------
# sockets created in a namespace
# ---------------------------------------------------------------------------


def raw_sock(ns: str, ifname: str) -> socket.socket:
    def mk():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
        s.setblocking(False)
        return s

    return in_ns(ns, mk)


def udp_sock(ns: str, port: int, family=socket.AF_INET) -> socket.socket:
    def mk():
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        s.setblocking(False)
        return s

    return in_ns(ns, mk)


def icmp_sock(ns: str, v6: bool = False) -> socket.socket:
    def mk():
        if v6:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.setblocking(False)
        return s

    return in_ns(ns, mk)


def drain(s: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        while True:
            s.recv(65535)


def collect(s: socket.socket, seconds: float) -> list[bytes]:
    out: list[bytes] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([s], [], [], left)
        if r:
            with contextlib.suppress(BlockingIOError):
                out.append(s.recv(65535))
    return out


def wait_for(s: socket.socket, pred, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([s], [], [], left)
        if r:
            with contextlib.suppress(BlockingIOError):
                if pred(s.recv(65535)):
                    return True
    return False


def udp_reaches(tx_ns: str, dst: str, port: int, rx: socket.socket) -> bool:
    """Legit UDP through the kernel stack of ``tx_ns``; True if ``rx`` receives it."""
    token = secrets.token_bytes(8)
    drain(rx)

    def send():
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.sendto(token, (dst, port))

    for _ in range(5):  # the first datagram may be lost to neighbour resolution
        in_ns(tx_ns, send)
        if wait_for(rx, lambda d: d == token, 1.0):
            return True
    return False


def ping(tx_ns: str, dst: str, tries: int = 5) -> bool:
    v6 = ":" in dst
    s = icmp_sock(tx_ns, v6)
    try:
        ident = secrets.randbits(16)
        for seq in range(tries):
            body = struct.pack("!HH", ident, seq) + b"vifwire-ping"
            if v6:
                s.sendto(struct.pack("!BBH", 128, 0, 0) + body, (dst, 0))
                ok = wait_for(s, lambda d: d[0] == 129 and d[4:6] == body[:2], 1.0)
            else:
                msg = struct.pack("!BBH", 8, 0, 0) + body
                msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
                s.sendto(msg, (dst, 0))
                # raw IPv4 sockets receive the IP header too
                ok = wait_for(s, lambda d: d[(d[0] & 0xF) * 4] == 0 and
                              d[(d[0] & 0xF) * 4 + 4:(d[0] & 0xF) * 4 + 6] == body[:2], 1.0)
            if ok:
                return True
        return False
    finally:
        s.close()


def wait_counter(asp: AntiSpoof, ifname: str, reason: str, above: int, seconds: float = 5.0) -> int:
    end = time.monotonic() + seconds
    while True:
        v = asp.drops(ifname).get(reason, 0)
        if v > above or time.monotonic() > end:
            return v
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# topologies
# ---------------------------------------------------------------------------


@dataclass
class Guest:
    ns: str
    tap: str
    mac: str
    ip4: str
    ip6: str
    tap_mac: str = ""

    @property
    def ll(self) -> str:
        return str(eui64_link_local(self.mac))

    def pf(self, **kw) -> PortFilter:
        return PortFilter(self.tap, self.mac, [self.ip4], [self.ip6], **kw)


def _prep_ns(ns: str) -> None:
    for key, val in (
        ("net/ipv6/conf/default/accept_dad", "0"),
        ("net/ipv6/conf/all/accept_dad", "0"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
    ):
        sysctl(ns, key, val)


IFA_F_TENTATIVE = 0x40


def _wait_ipv6_ready(ns: str, ifname: str, timeout: float = 60.0) -> None:
    """Wait until no IPv6 address of ``ifname`` is tentative.

    Even with DAD off, addresses stay tentative until the kernel has seen the
    link come up (linkwatch, which waits for the global RTNL lock: slow on a
    busy host); until then the interface ignores neighbour solicitations.
    """
    from pyroute2 import IPRoute

    end = time.monotonic() + timeout
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        while True:
            addrs = ipr.get_addr(family=socket.AF_INET6, index=idx)
            flags = [a.get_attr("IFA_FLAGS") or a["flags"] for a in addrs]
            if flags and not any(f & IFA_F_TENTATIVE for f in flags):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{ns}/{ifname}: IPv6 addresses still tentative")
            time.sleep(0.1)


def _veth(host: str, guest: Guest) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=host) as ipr:
        ipr.link("add", ifname=guest.tap, kind="veth",
                 peer={"ifname": "eth0", "net_ns_fd": guest.ns, "address": guest.mac})
        idx = ipr.link_lookup(ifname=guest.tap)[0]
        ipr.link("set", index=idx, state="up")
        guest.tap_mac = ipr.get_links(idx)[0].get("IFLA_ADDRESS")


@dataclass
class Routed:
    host: str
    a: Guest
    b: Guest
    gw4: str = "10.98.1.1"
    gw6: str = "fe80::1"


@pytest.fixture
def routed():
    """host ns with routed taps to guests A and B (Calico-style /32 routes, proxy ARP)."""
    from pyroute2 import IPRoute

    with contextlib.ExitStack() as st:
        host = st.enter_context(sandbox("ash"))
        a = Guest(st.enter_context(sandbox("asa")), "tapa", "02:98:00:00:00:0a", "10.98.1.10",
                  "fd98::10")
        b = Guest(st.enter_context(sandbox("asb")), "tapb", "02:98:00:00:00:0b", "10.98.1.20",
                  "fd98::20")
        topo = Routed(host, a, b)
        for ns in (host, a.ns, b.ns):
            _prep_ns(ns)
        sysctl(host, "net/ipv4/ip_forward", "1")
        sysctl(host, "net/ipv6/conf/all/forwarding", "1")
        with IPRoute(netns=host) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.addr("add", index=lo, address=topo.gw4, prefixlen=32)
        for g in (a, b):
            _veth(host, g)
            sysctl(host, f"net/ipv4/conf/{g.tap}/proxy_arp", "1")
            sysctl(host, f"net/ipv4/conf/{g.tap}/rp_filter", "0")
            sysctl(host, f"net/ipv4/conf/{g.tap}/arp_accept", "1")  # learn from gratuitous ARP
            sysctl(host, f"net/ipv6/conf/{g.tap}/accept_ra", "2")  # accept RAs while forwarding
            with IPRoute(netns=host) as ipr:
                idx = ipr.link_lookup(ifname=g.tap)[0]
                ipr.addr("add", index=idx, address=topo.gw6, prefixlen=64, flags=IFA_F_NODAD)
                ipr.route("add", dst=f"{g.ip4}/32", oif=idx)
                ipr.route("add", dst=f"{g.ip6}/128", oif=idx)
            with IPRoute(netns=g.ns) as ipr:
                idx = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=idx, state="up")
                ipr.addr("add", index=idx, address=g.ip4, prefixlen=24)
                ipr.addr("add", index=idx, address=g.ip6, prefixlen=128, flags=IFA_F_NODAD)
                ipr.route("add", dst="default", gateway=topo.gw4, oif=idx)
                ipr.route("add", dst="default", family=socket.AF_INET6, gateway=topo.gw6, oif=idx)
        assert sysctl_get(host, "net/ipv4/ip_forward") == "1"
        for g in (a, b):
            _wait_ipv6_ready(host, g.tap)
            _wait_ipv6_ready(g.ns, "eth0")
        nft = st.enter_context(Nft(host))
        topo.nft = nft  # type: ignore[attr-defined]
        topo.asp = AntiSpoof(nft)  # type: ignore[attr-defined]
        yield topo


@dataclass
class Bridged:
    host: str
    c: Guest
    d: Guest


@pytest.fixture
def bridged():
    """host ns with a Linux bridge br0 and two tap ports to guests C and D (one L2 segment)."""
    from pyroute2 import IPRoute

    with contextlib.ExitStack() as st:
        host = st.enter_context(sandbox("bsh"))
        c = Guest(st.enter_context(sandbox("bsc")), "tapc", "02:98:00:00:00:0c", "10.98.2.10",
                  "fd98:2::10")
        d = Guest(st.enter_context(sandbox("bsd")), "tapd", "02:98:00:00:00:0d", "10.98.2.20",
                  "fd98:2::20")
        for ns in (host, c.ns, d.ns):
            _prep_ns(ns)
        with IPRoute(netns=host) as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            br = ipr.link_lookup(ifname="br0")[0]
            ipr.link("set", index=br, state="up")
        for g in (c, d):
            _veth(host, g)
            with IPRoute(netns=host) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=g.tap)[0], master=br)
            with IPRoute(netns=g.ns) as ipr:
                idx = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=idx, state="up")
                ipr.addr("add", index=idx, address=g.ip4, prefixlen=24)
                ipr.addr("add", index=idx, address=g.ip6, prefixlen=64, flags=IFA_F_NODAD)
        for g in (c, d):
            _wait_ipv6_ready(g.ns, "eth0")
        topo = Bridged(host, c, d)
        nft = st.enter_context(Nft(host))
        topo.nft = nft  # type: ignore[attr-defined]
        topo.asp = AntiSpoof(nft)  # type: ignore[attr-defined]
        yield topo


def _neigh(ns: str, ifname: str, ip: str) -> str | None:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for n in ipr.get_neighbours(ifindex=idx):
            if n.get("NDA_DST") == ip and n["state"] not in (0x20, 0x40):  # not FAILED/NOARP
                return n.get("NDA_LLADDR")
    return None


def _has_default6_via(ns: str, ifname: str) -> bool:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for r in ipr.get_routes(family=socket.AF_INET6):
            if r["dst_len"] == 0 and r.get("RTA_OIF") == idx and r.get("RTA_GATEWAY"):
                return True
    return False


# ---------------------------------------------------------------------------
# the binding
# ---------------------------------------------------------------------------


def test_nft_binding_runs_in_its_namespace():
    with sandbox("nfa") as n1, sandbox("nfb") as n2, Nft(n1) as a, Nft(n2) as b:
        a.run({"nftables": [{"add": {"table": {"family": "inet", "name": "probe"}}}]})
        tables = lambda nft: {  # noqa: E731
            (i["table"]["family"], i["table"]["name"])
            for i in nft.list_ruleset()["nftables"] if "table" in i
        }
        assert ("inet", "probe") in tables(a)
        assert ("inet", "probe") not in tables(b)  # other namespace untouched
        with pytest.raises(NftError) as ei:
            a.run({"nftables": [{"add": {"chain": {"family": "inet", "table": "nope", "name": "c"}}}]})
        assert "No such file or directory" in str(ei.value) and ei.value.nft_error
        with pytest.raises(NftError):
            a.run_text("this is not nft")
        # one failing command aborts the whole batch
        with pytest.raises(NftError):
            a.run({"nftables": [
                {"add": {"table": {"family": "inet", "name": "t2"}}},
                {"add": {"chain": {"family": "inet", "table": "nope", "name": "c"}}},
            ]})
        assert ("inet", "t2") not in tables(a)
    with pytest.raises(NftError, match="cannot open network namespace"):
        Nft("vw-does-not-exist-000000")
    a.close()  # idempotent
    with pytest.raises(NftError, match="closed"):
        a.list_ruleset()


# ---------------------------------------------------------------------------
# routed ports
# ---------------------------------------------------------------------------


def test_routed_control_spoofs_pass_without_filter(routed):
    """Without vifwire's filter every attack below succeeds: the harness can see a leak."""
    t, a, b = routed, routed.a, routed.b
    rx = udp_sock(b.ns, 5555)
    tx = raw_sock(a.ns, "eth0")
    assert udp_reaches(a.ns, b.ip4, 5555, rx)
    for frame in (
        udp4_frame(a.tap_mac, a.mac, "10.98.1.99", b.ip4, 5555, b"spoof-ip"),
        udp4_frame(a.tap_mac, "02:98:00:00:00:ff", a.ip4, b.ip4, 5555, b"spoof-mac"),
    ):
        drain(rx)
        tx.send(frame)
        assert wait_for(rx, lambda d: d in (b"spoof-ip", b"spoof-mac")), "unfiltered spoof lost?"
    tx.send(garp_frame(a.mac, b.ip4))
    time.sleep(0.2)
    assert _neigh(t.host, a.tap, b.ip4) == a.mac  # host learnt B's address on A's tap
    tx.send(ra_frame(a.mac, a.ll, 4242))
    time.sleep(0.2)
    assert _has_default6_via(t.host, a.tap)  # host took A as its IPv6 router
    tx.close()
    rx.close()


def test_routed_filter_drops_spoofs_and_counts(routed):
    t, a, b = routed, routed.a, routed.b
    asp: AntiSpoof = t.asp
    asp.add_port(a.pf())
    asp.add_port(b.pf())
    assert asp.ports() == {"tapa", "tapb"}
    rx = udp_sock(b.ns, 5555)
    tx = raw_sock(a.ns, "eth0")

    def legit_ok():
        assert udp_reaches(a.ns, b.ip4, 5555, rx), "legit UDP A->B blocked"
        assert ping(a.ns, b.ip4), "ping A->B blocked"
        assert ping(a.ns, t.gw4), "ping A->gateway blocked"
        assert ping(a.ns, b.ip6), "ping6 A->B blocked"

    legit_ok()
    before = asp.drops("tapa")
    assert set(before) == set(ALL_REASONS)

    # spoofed source IP (another guest's and a foreign one)
    for src in (b.ip4, "10.98.1.99"):
        drain(rx)
        n = asp.drops("tapa")["ip4"]
        tx.send(udp4_frame(a.tap_mac, a.mac, src, b.ip4, 5555, b"spoof-ip"))
        assert wait_counter(asp, "tapa", "ip4", n) == n + 1
        assert not collect(rx, 0.3), "spoofed source IP was delivered"
        legit_ok()

    # spoofed source MAC (with A's own IP)
    n = asp.drops("tapa")["mac"]
    tx.send(udp4_frame(a.tap_mac, "02:98:00:00:00:ff", a.ip4, b.ip4, 5555, b"spoof-mac"))
    assert wait_counter(asp, "tapa", "mac", n) == n + 1
    assert not collect(rx, 0.3), "spoofed source MAC was delivered"
    legit_ok()

    # gratuitous ARP claiming B's address
    n = asp.drops("tapa")["arp"]
    tx.send(garp_frame(a.mac, b.ip4))
    assert wait_counter(asp, "tapa", "arp", n) == n + 1
    assert _neigh(t.host, a.tap, b.ip4) is None
    # ... and an ARP whose sender MAC is not the frame's (A's IP, forged sender MAC)
    n = asp.drops("tapa")["arp"]
    tx.send(eth(BCAST, a.mac, ETH_P_ARP, arp(1, "02:98:00:00:00:ff", a.ip4, "00:00:00:00:00:00", t.gw4)))
    assert wait_counter(asp, "tapa", "arp", n) == n + 1
    legit_ok()

    # IPv6 router advertisement (from A's legitimate link-local)
    n = asp.drops("tapa")["ra"]
    tx.send(ra_frame(a.mac, a.ll, 4242))
    assert wait_counter(asp, "tapa", "ra", n) == n + 1
    time.sleep(0.1)
    assert not _has_default6_via(t.host, a.tap)

    # neighbour advertisement for B's IPv6 address
    n = asp.drops("tapa")["nd"]
    tx.send(na_frame(a.mac, a.ll, b.ip6))
    assert wait_counter(asp, "tapa", "nd", n) == n + 1
    legit_ok()

    # IPv6 with a spoofed source
    n = asp.drops("tapa")["ip6"]
    pkt = ipv6(b.ip6, t.gw6, 17, struct.pack("!HHHH", 1, 2, 8, 0))
    tx.send(eth(a.tap_mac, a.mac, ETH_P_IPV6, pkt))
    assert wait_counter(asp, "tapa", "ip6", n) == n + 1

    # allowed: DHCP discover from 0.0.0.0, reaching a server socket on the host
    srv = udp_sock(t.host, 67)
    dhcp = udp4_frame(BCAST, a.mac, "0.0.0.0", "255.255.255.255", 67, b"dhcp-discover")
    dhcp = dhcp[:34] + struct.pack("!H", 68) + dhcp[36:]  # source port 68
    snapshot = asp.drops("tapa")
    tx.send(dhcp)
    assert wait_for(srv, lambda d: d == b"dhcp-discover"), "DHCP discover was dropped"
    srv.close()
    # allowed: a neighbour advertisement for A's own address, DAD probe from ::
    tx.send(na_frame(a.mac, a.ll, a.ip6))
    tx.send(eth("33:33:ff:00:00:10", a.mac, ETH_P_IPV6, ipv6(
        "::", "ff02::1:ff00:10", 58,
        icmp6("::", "ff02::1:ff00:10", 135, 0, b"\0" * 4 + socket.inet_pton(socket.AF_INET6, a.ip6)),
        hlim=255)))
    time.sleep(0.3)
    after = asp.drops("tapa")
    assert after["nd"] == snapshot["nd"] and after["ip4"] == snapshot["ip4"]
    assert after["ip6"] == snapshot["ip6"]

    # B was never hit
    assert all(v == 0 for k, v in asp.drops("tapb").items() if k != "other"), asp.drops("tapb")
    tx.close()
    rx.close()


def test_remove_port_removes_exactly_that_port(routed):
    t, a, b = routed, routed.a, routed.b
    asp: AntiSpoof = t.asp
    asp.add_port(a.pf())
    asp.add_port(b.pf())
    entries_b = asp.port_entries("tapb")
    asp.remove_port("tapa")
    asp.remove_port("tapa")  # absent: no error
    assert asp.port_entries("tapa") == {}
    assert asp.drops("tapa") == {}
    assert asp.ports() == {"tapb"}
    assert asp.port_entries("tapb") == entries_b

    # A is unguarded now: its spoof reaches B
    rx_b = udp_sock(b.ns, 5555)
    tx_a = raw_sock(a.ns, "eth0")
    tx_a.send(udp4_frame(a.tap_mac, a.mac, "10.98.1.99", b.ip4, 5555, b"spoof-a"))
    assert wait_for(rx_b, lambda d: d == b"spoof-a")
    # B is still filtered
    rx_a = udp_sock(a.ns, 5556)
    tx_b = raw_sock(b.ns, "eth0")
    n = asp.drops("tapb")["ip4"]
    tx_b.send(udp4_frame(b.tap_mac, b.mac, "10.98.1.98", a.ip4, 5556, b"spoof-b"))
    assert wait_counter(asp, "tapb", "ip4", n) == n + 1
    assert not collect(rx_a, 0.3)
    assert udp_reaches(b.ns, a.ip4, 5556, rx_a)
    # removal with a hint (the PortFilter it was installed with)
    asp.remove_port("tapb", hint=b.pf())
    assert asp.ports() == set() and asp.port_entries("tapb") == {}
    for s in (rx_b, tx_a, rx_a, tx_b):
        s.close()


def test_allowed_address_pairs(routed):
    t, a, b = routed, routed.a, routed.b
    asp: AntiSpoof = t.asp
    vip_mac = "02:98:00:00:01:01"
    asp.add_port(a.pf(allowed_pairs=[("10.98.7.0/24", None), ("10.98.8.8", vip_mac)]))
    rx = udp_sock(b.ns, 5555)
    tx = raw_sock(a.ns, "eth0")
    # CIDR pair with the port's MAC
    tx.send(udp4_frame(a.tap_mac, a.mac, "10.98.7.33", b.ip4, 5555, b"pair-cidr"))
    assert wait_for(rx, lambda d: d == b"pair-cidr")
    # pair with its own MAC: only with that MAC
    tx.send(udp4_frame(a.tap_mac, vip_mac, "10.98.8.8", b.ip4, 5555, b"pair-mac"))
    assert wait_for(rx, lambda d: d == b"pair-mac")
    n = asp.drops("tapa")["ip4"]
    tx.send(udp4_frame(a.tap_mac, a.mac, "10.98.8.8", b.ip4, 5555, b"pair-wrong-mac"))
    assert wait_counter(asp, "tapa", "ip4", n) == n + 1
    assert not collect(rx, 0.3)
    # the VIP's MAC may not send the port's own address
    tx.send(udp4_frame(a.tap_mac, vip_mac, a.ip4, b.ip4, 5555, b"vip-mac-own-ip"))
    assert wait_counter(asp, "tapa", "ip4", n + 1) == n + 2
    # a gratuitous ARP for the VIP from its MAC is fine (keepalived failover)
    m = asp.drops("tapa")["arp"]
    tx.send(garp_frame(vip_mac, "10.98.8.8"))
    time.sleep(0.3)
    assert asp.drops("tapa")["arp"] == m
    assert _neigh(t.host, a.tap, "10.98.8.8") == vip_mac
    tx.close()
    rx.close()


# ---------------------------------------------------------------------------
# bridged ports
# ---------------------------------------------------------------------------


def test_bridged_filter_drops_spoofs(bridged):
    t, c, d = bridged, bridged.c, bridged.d
    asp: AntiSpoof = t.asp
    asp.add_port(c.pf(bridged=True))
    asp.add_port(d.pf(bridged=True))
    assert set(asp.port_entries("tapc")) == {"registered", "fingerprint", "bridge"}
    rx = udp_sock(d.ns, 5555)
    sniff = raw_sock(d.ns, "eth0")
    tx = raw_sock(c.ns, "eth0")

    def legit_ok():
        assert udp_reaches(c.ns, d.ip4, 5555, rx), "legit UDP C->D blocked"
        assert ping(c.ns, d.ip4) and ping(c.ns, d.ip6), "ping C->D blocked"

    def sniffed(pred) -> bool:
        return any(pred(f) for f in collect(sniff, 0.3))

    legit_ok()
    cases = [
        ("ip4", udp4_frame(d.mac, c.mac, "10.98.2.99", d.ip4, 5555, b"br-spoof-ip"),
         lambda f: b"br-spoof-ip" in f),
        ("mac", udp4_frame(d.mac, "02:98:00:00:00:ff", c.ip4, d.ip4, 5555, b"br-spoof-mac"),
         lambda f: b"br-spoof-mac" in f),
        ("arp", garp_frame(c.mac, d.ip4),
         lambda f: f[12:14] == b"\x08\x06" and f[28:32] == socket.inet_aton(d.ip4)),
        ("ra", ra_frame(c.mac, c.ll, 4243),
         lambda f: f[12:14] == b"\x86\xdd" and f[54] == 134),
        ("nd", na_frame(c.mac, c.ll, d.ip6),
         lambda f: f[12:14] == b"\x86\xdd" and f[54] == 136 and
         f[62:78] == socket.inet_pton(socket.AF_INET6, d.ip6)),
    ]
    for reason, frame, seen in cases:
        drain(sniff)
        n = asp.drops("tapc")[reason]
        tx.send(frame)
        assert wait_counter(asp, "tapc", reason, n) == n + 1, reason
        assert not sniffed(seen), f"{reason}: spoofed frame crossed the bridge"
        legit_ok()
    # a frame with another ethertype (here: a VLAN tag) is dropped as "other"
    n = asp.drops("tapc")["other"]
    tx.send(eth(d.mac, c.mac, 0x8100, struct.pack("!HH", 5, ETH_P_IP) + b"\0" * 40))
    assert wait_counter(asp, "tapc", "other", n) == n + 1

    # unfiltered again after remove_port: the same spoof now crosses the bridge
    asp.remove_port("tapc")
    drain(sniff)
    tx.send(cases[0][1])
    assert sniffed(cases[0][2])
    for s in (rx, sniff, tx):
        s.close()


# ---------------------------------------------------------------------------
# API behaviour
# ---------------------------------------------------------------------------


def test_add_port_idempotent_update_and_family_switch():
    with sandbox("asi") as ns, Nft(ns) as nft:
        asp = AntiSpoof(nft)
        asp.ensure_tables()
        asp.ensure_tables()  # idempotent
        pf = PortFilter("tap1", "02:98:00:00:01:01", ["10.98.1.10"], ["fd98::10"],
                        [("10.98.9.0/24", None), ("10.98.9.7", None)])
        asp.add_port(pf)
        first = asp.port_entries("tap1")
        asp.add_port(pf)
        assert asp.port_entries("tap1") == first
        assert len(first["fingerprint"]) == 1
        assert first["inet"]["ipv4"] == ["02:98:00:00:01:01 10.98.1.10",
                                         "02:98:00:00:01:01 10.98.9.0/24"]  # .7 is inside the /24
        assert "02:98:00:00:01:01 fe80::98:ff:fe00:101" in first["inet"]["ipv6"]
        assert first["arp"]["ipv4"] == first["inet"]["ipv4"]

        # changed addresses: stale entries go, in one call
        pf.ipv4 = ["10.98.1.11"]
        pf.allowed_pairs = []
        asp.add_port(pf)
        now = asp.port_entries("tap1")
        assert now["inet"]["ipv4"] == ["02:98:00:00:01:01 10.98.1.11"]
        assert now["arp"]["ipv4"] == ["02:98:00:00:01:01 10.98.1.11"]

        # routed -> bridged: the inet/arp entries go away
        pf.bridged = True
        asp.add_port(pf)
        now = asp.port_entries("tap1")
        assert set(now) == {"registered", "fingerprint", "bridge"}
        assert now["bridge"]["ipv4"] == ["02:98:00:00:01:01 10.98.1.11"]

        # a tampered port is repaired by add_port
        nft.run({"nftables": [{"delete": {"element": {
            "family": "bridge", "table": "vifwire", "name": "vif_ifaces", "elem": ["tap1"]}}}]})
        assert not asp.port_entries("tap1")["bridge"]["guarded"]
        asp.add_port(pf)
        assert asp.port_entries("tap1")["bridge"]["guarded"]

        # leftovers of an unregistered port that clash with the new content
        # (a /23 overlapping an installed /24 in the interval set)
        pf.allowed_pairs = [("10.98.10.0/24", None)]
        asp.add_port(pf)
        nft.run({"nftables": [{"delete": {"element": {
            "family": "inet", "table": "vifwire", "name": "ports", "elem": ["tap1"]}}}]})
        assert not asp.port_entries("tap1")["registered"]
        pf.allowed_pairs = [("10.98.10.0/23", None)]
        asp.add_port(pf)
        now = asp.port_entries("tap1")
        assert now["registered"]
        assert now["bridge"]["ipv4"] == ["02:98:00:00:01:01 10.98.1.11",
                                          "02:98:00:00:01:01 10.98.10.0/23"]

        # a tampered rule set is repaired by ensure_tables
        length = asp.rule_path_length()
        nft.run({"nftables": [{"flush": {"chain": {"family": "bridge", "table": "vifwire",
                                                    "name": "guard4"}}}]})
        assert asp.rule_path_length() < length
        asp.ensure_tables()
        assert asp.rule_path_length() == length

        with pytest.raises(ValueError):
            asp.add_port(PortFilter("tap1", "01:00:5e:00:00:01", [], []))  # multicast MAC
        with pytest.raises(ValueError):
            asp.add_port(PortFilter("x" * 16, "02:98:00:00:01:01", [], []))
        with pytest.raises(ValueError):
            asp.add_port(PortFilter("tap2", "02:98:00:00:01:02", ["fd98::1"], []))
        asp.remove_tables()
        assert asp.ports() == set()


def test_handler_batches_one_transaction_each_and_names_failing_ports(monkeypatch):
    """The antispoof step handler: a run's ports go in ONE nft transaction
    (apply_many), a port nft or validation refuses fails alone and is named,
    check reads the sets once for all ports (verify_many, same drift lines as
    before), unplug is one transaction (remove_bulk)."""
    from vifwire.executors.base import HostContext
    from vifwire.executors.firewall import AntiSpoofHandler
    from vifwire.planner.plan import Step

    def step(i: int, **kw) -> Step:
        args = {"ifname": f"tb{i:04d}", "mac": f"02:98:02:00:{i >> 8:02x}:{i & 0xFF:02x}",
                "ipv4": [f"10.98.{i >> 8}.{i & 0xFF}"], "ipv6": [f"fd98::2:{i:x}"],
                "pairs": [{"ip": f"10.99.{i}.0/24", "mac": None}] if i % 5 == 0 else [], "bridged": i % 3 == 0}
        return Step(op="antispoof", args={**args, **kw})

    runs: list[str] = []
    orig = Nft.run_text

    def counting(self, text, **kw):
        runs.append(text)
        return orig(self, text, **kw)

    h = AntiSpoofHandler()
    assert h.batched is True
    with sandbox("asb") as ns, HostContext(netns=ns) as ctx:
        steps = [step(i) for i in range(60)]
        h.apply_many(steps[:1], ctx)  # creates the tables
        monkeypatch.setattr(Nft, "run_text", counting)
        out = h.apply_many(steps[1:], ctx)
        assert all(callable(u) for u in out) and len(runs) == 1, (out[:2], len(runs))

        # a re-plug changes nothing and owns no undo; a bad port fails alone
        bad_mac = step(100, mac="01:00:5e:00:00:01")
        too_long = step(101, ifname="\u00e9" * 15)  # 15 characters, 30 bytes: nft refuses it
        fresh = [step(i) for i in range(60, 70)]
        out = h.apply_many(steps[:5] + [bad_mac] + fresh + [too_long], ctx)
        assert out[:5] == [None] * 5
        assert isinstance(out[5], HostError) and "tb0100" in str(out[5]) and "multicast" in str(out[5])
        assert all(callable(u) for u in out[6:16])
        assert isinstance(out[16], HostError) and "\u00e9" in str(out[16])

        runs.clear()
        assert h.verify_many(steps + fresh, ctx) == [[]] * 70
        # each set listed at most once: the registry, vif_ifaces and allow_mac of
        # each family, and the address sets (allow_v4/_net, allow_v6/_net, allow_nd/_net)
        assert all(t.startswith('{"nftables":[{"list":{"set"') for t in runs), runs
        assert len(runs) == len(set(runs)) <= 1 + 2 * 3 + 6 + 2 + 6, runs

        # drift, each kind reported exactly as the per-port check did
        nft = ctx.nft
        nft.run_text('delete element inet vifwire vif_ifaces { "tb0001" }')
        nft.run_text('delete element arp vifwire allow_mac { "tb0002" . 02:98:02:00:00:02 }')
        nft.run_text('delete element inet vifwire ports { "tb0004" }')
        nft.run_text('delete element bridge vifwire vif_ifaces { "tb0003" }')
        nft.run_text('delete element bridge vifwire allow_mac { "tb0003" . 02:98:02:00:00:03 }')
        got = h.verify_many(steps[:6] + [step(999), step(7, mac="nope")], ctx)
        assert got == [
            [],
            ["anti-spoofing for tb0001 (inet): interface is not guarded"],
            ["anti-spoofing for tb0002 (arp): MAC 02:98:02:00:00:02 not allowed"],
            ["anti-spoofing for tb0003 (bridge): MAC 02:98:02:00:00:03 not allowed",
             "anti-spoofing for tb0003 (bridge): interface is not guarded"],
            ["anti-spoofing entries for tb0004 are missing"],
            [],
            ["anti-spoofing entries for tb0999 are missing"],
            [f"{step(7).describe()}: cannot verify: invalid MAC address 'nope'"],
        ], got
        # a re-plug repairs it; an undo removes exactly its port
        h.apply_many(steps[:6], ctx)
        assert h.verify_many(steps[:6], ctx) == [[]] * 6
        out[6]()
        assert h.verify_many(fresh[:2], ctx) == [["anti-spoofing entries for tb0060 are missing"], []]

        runs.clear()
        h.remove_bulk(steps + fresh[1:], ctx)
        assert len(runs) == 1
        assert AntiSpoof(nft).ports() == set()


def test_rule_path_length_constant_with_2000_ports():
    def port(i: int) -> PortFilter:
        return PortFilter(f"t{i:05d}", f"02:98:01:00:{i >> 8:02x}:{i & 0xFF:02x}",
                          [f"10.98.{i >> 8}.{i & 0xFF}"], [f"fd98::1:{i:x}"],
                          bridged=bool(i % 2))

    with sandbox("asr") as ns, Nft(ns) as nft:
        asp = AntiSpoof(nft)
        asp.add_port(port(0))
        one = asp.rule_path_length()
        assert 0 < one < 40
        asp.add_ports(port(i) for i in range(1, 2001))  # one transaction
        assert len(asp.ports()) == 2001
        assert asp.rule_path_length() == one
        # the vifwire ruleset has no per-port rules or chains at all
        rs = nft.list_ruleset()["nftables"]
        assert not any("counter" in i and "name" in i.get("counter", {}) for i in rs)
        n_rules = sum(1 for i in rs if "rule" in i and i["rule"]["table"] == "vifwire")
        n_chains = sum(1 for i in rs if "chain" in i and i["chain"]["table"] == "vifwire")
        asp.remove_port("t00000")
        rs = nft.list_ruleset()["nftables"]
        assert n_rules == sum(1 for i in rs if "rule" in i and i["rule"]["table"] == "vifwire")
        assert n_chains == sum(1 for i in rs if "chain" in i and i["chain"]["table"] == "vifwire")
        assert asp.port_entries("t00007")["bridge"]["ipv4"] == ["02:98:01:00:00:07 10.98.0.7"]
        assert len(asp.ports()) == 2000
        assert asp.rule_path_length() == one


def test_eui64_link_local():
    assert str(eui64_link_local("52:54:00:12:34:56")) == "fe80::5054:ff:fe12:3456"
    assert str(eui64_link_local("02:98:00:00:00:0a")) == "fe80::98:ff:fe00:a"
    assert ipaddress.IPv6Address("fe80::98:ff:fe00:a") == eui64_link_local("02-98-00-00-00-0A")


# ---------------------------------------------------------------------------
# element texts (no namespace): what a batch sends
# ---------------------------------------------------------------------------

#: ports_fp digests as the dict-and-json.dumps implementation computed them:
#: ports installed by an earlier vifwire must still match (re-plug, remove
#: with hint), so the text path must give exactly these
PINNED_FP = [
    (("tap000123", "fa:16:3e:c0:00:7b", ["10.100.0.124"], ["fd97::7b"], [], False),
     "ed67:c309:aea:744c:c825:faf5:ddfd:6c90"),
    (("tap1", "02:98:00:00:00:0a", ["10.0.0.1"], ["fe80::98:ff:fe00:b"], [], False),  # link-local sibling
     "151:ccd2:b574:d287:546a:a88f:92d0:d064"),
    (("br0p1", "02:98:00:00:00:01", ["10.0.0.4", "10.0.0.5"], ["fd00::1"],
      [("10.9.0.0/24", None), ("fd09::/64", "02:98:00:00:00:02")], True),
     "db10:515e:8832:6dc5:e216:5f74:d52a:b781"),
    (('t"q\\', "02-98-00-00-00-03", [], [], [("10.1.1.1", None)], False),
     "5ac4:efca:9f8a:2a06:4ade:9bb8:4012:c7a7"),
]


@pytest.mark.parametrize("args,fp", PINNED_FP)
def test_fingerprint_is_stable(args, fp):
    from vifwire.executors.antispoof.elements import want_elements

    assert want_elements(PortFilter(*args))["inet"]["ports_fp"] == [{"concat": [args[0], fp]}]


def test_batch_text_is_the_ports_elements():
    """The batch command text (one command per set, ifname-only sets of a
    family sharing one list) holds exactly every port's elements, the
    ``ports`` registry first (create), for a mix of routed and bridged ports."""
    import json

    from vifwire.executors.antispoof.elements import json_parts, want_elements, want_text
    from vifwire.executors.antispoof.transaction import add_cmds, delete_cmds, transaction_text

    pfs = [PortFilter(*args) for args, _fp in PINNED_FP] + [
        PortFilter(f"tb{i}", f"02:98:03:00:00:{i:02x}", [f"10.3.0.{i}"], [f"fd03::{i:x}"],
                   [(f"10.4.{i}.0/24", None)] if i % 3 == 0 else [], bridged=i % 2 == 1) for i in range(1, 12)]

    def grouped(doc: str) -> dict:
        out: dict = {}
        for cmd in json.loads(doc)["nftables"]:
            (verb, body), = cmd.items()
            e = body["element"]
            assert e["table"] == "vifwire"
            out.setdefault((verb, e["family"], e["name"]), []).extend(e["elem"])
        return out

    want: dict = {}
    for pf in pfs:
        for fam, sets in want_elements(pf).items():
            for sname, elems in sets.items():
                want.setdefault((fam, sname), []).extend(elems)
    doc = transaction_text(add_cmds([want_text(pf) for pf in pfs], registry="create"))
    assert json.loads(doc)["nftables"][0]["create"]["element"]["name"] == "ports"
    key = lambda e: json.dumps(e, sort_keys=True)  # noqa: E731
    got = grouped(doc)
    assert {(f, s): sorted(map(key, v)) for (_verb, f, s), v in got.items()} == \
        {k: sorted(map(key, v)) for k, v in want.items()}
    assert {verb for verb, _f, s in got if s != "ports"} == {"add"}
    # deletes: the same from texts or from listed-form elements, mixed
    mixed = [want_text(pf) if i % 2 else json_parts(want_elements(pf)) for i, pf in enumerate(pfs)]
    dels = grouped(transaction_text(delete_cmds(mixed)))
    assert {(f, s): sorted(map(key, v)) for (verb, f, s), v in dels.items() if verb == "delete"} == \
        {k: sorted(map(key, v)) for k, v in want.items()}


def test_common_port_shortcut_matches_general_path():
    """One IPv4 + one IPv6, no pairs, takes a shortcut past the collapse; the
    same port spelled so it cannot (a duplicated address) gives the same."""
    from vifwire.executors.antispoof.elements import want_elements

    for i, v6 in enumerate(["fd97::7b", "fe80::98:ff:fe00:a", "fe80::98:ff:fe00:b", "fe80::98:ff:fe00:c",
                            "::ffff:10.0.0.1", "FD97::0:1", "fd97::7b/64"]):
        for mac in ("02:98:00:00:00:0a", "FA-16-3E-00-00-01"):
            for bridged in (False, True):
                pf = PortFilter(f"tc{i}", mac, ["10.0.0.3"], [v6], bridged=bridged)
                twice = PortFilter(f"tc{i}", mac, ["10.0.0.3", "10.0.0.3"], [v6], bridged=bridged)
                assert want_elements(pf) == want_elements(twice), (v6, mac)
