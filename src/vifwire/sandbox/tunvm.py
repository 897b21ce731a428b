"""A userspace "VM" behind a routed tap, for tests, benchmarks and the sandbox.

libvirt opens the tap vifwire created for a ``vif_type tap`` port
(``managed='no'``) and QEMU reads and writes Ethernet frames on that file
descriptor. :class:`TunVM` does the same from Python: it attaches to the
*existing* persistent tap with ``TUNSETIFF`` (``IFF_TAP | IFF_NO_PI``: raw
frames, no packet-information header, no virtio-net header) and gives a test
the guest's side of the wire:

* :meth:`TunVM.send` writes a frame as if the guest's NIC transmitted it;
* every frame the host sends to the guest is queued; :meth:`TunVM.wait`
  returns the first one matching a predicate;
* while it runs, a small responder plays the guest's IP stack for its own
  addresses: it answers ARP requests, IPv6 neighbour solicitations and
  ICMP/ICMPv6 echo requests, so the host and other guests can reach it.

Namespaces: the tun file must be *opened* in the namespace of the device
(``TUNSETIFF`` looks the name up in the namespace the file was opened in), so
it is opened on a short-lived thread that ``setns()``'d into the host
namespace; the caller's threads never change namespace. The file descriptor
then works from any thread.

The module also has the frame builders (``struct`` only) and a parser,
:func:`parse`, usable with any raw-frame transport (an ``AF_PACKET`` socket
in a container guest's namespace works the same way).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0002, 0x1000, 0x0100

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
BROADCAST = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
ARP_REQUEST, ARP_REPLY = 1, 2
PROTO_ICMP, PROTO_UDP, PROTO_ICMPV6 = 1, 17, 58
ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
ICMP6_ECHO, ICMP6_ECHO_REPLY = 128, 129
ND_RS, ND_RA, ND_NS, ND_NA, ND_REDIRECT = 133, 134, 135, 136, 137
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000


# ---------------------------------------------------------------------------
# running code in a namespace


def run_in_netns(netns: str | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on a fresh thread inside ``netns`` (``None``: here).

    The thread (:class:`vifwire.netlink.netns.NsWorker`) checks that it really
    is in the namespace before running ``fn``: acting in the wrong namespace
    (the host's) must never happen.
    """
    if netns is None:
        return fn(*args)
    from vifwire.netlink.netns import NsWorker

    with NsWorker(netns, name=f"vifwire-in-{netns}") as w:
        return w.call(fn, *args)


def sysctl_read(netns: str | None, key: str) -> str | None:
    """``/proc/sys/<key>`` as seen inside ``netns``; ``None`` if it does not exist."""

    def read() -> str | None:
        try:
            with open("/proc/sys/" + key.lstrip("/")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    return run_in_netns(netns, read)


def sysctl_write(netns: str, key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` inside ``netns`` (a namespace is required)."""
    if not netns:
        raise ValueError("refusing to write a sysctl outside a named namespace")

    def write() -> None:
        with open("/proc/sys/" + key.lstrip("/"), "w") as f:
            f.write(value)

    run_in_netns(netns, write)


# ---------------------------------------------------------------------------
# frame builders


def mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return raw


def fmt_mac(raw: bytes) -> str:
    return raw.hex(":")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return (struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op) + mac_bytes(sha) + socket.inet_aton(spa)
            + mac_bytes(tha) + socket.inet_aton(tpa))


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    return eth(BROADCAST, src_mac, ETH_P_ARP, arp(ARP_REQUEST, src_mac, src_ip, ZERO_MAC, target_ip))


def arp_reply(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    return eth(dst_mac, src_mac, ETH_P_ARP, arp(ARP_REPLY, src_mac, src_ip, dst_mac, dst_ip))


def gratuitous_arp(src_mac: str, claimed_ip: str) -> bytes:
    """A gratuitous ARP (request form): "``claimed_ip`` is at ``src_mac``"."""
    return eth(BROADCAST, src_mac, ETH_P_ARP, arp(ARP_REQUEST, src_mac, claimed_ip, ZERO_MAC, claimed_ip))


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, ident: int | None = None) -> bytes:
    ident = secrets.randbits(16) if ident is None else ident
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def icmp4_echo(ident: int, seq: int, data: bytes = b"vifwire", reply: bool = False) -> bytes:
    msg = struct.pack("!BBHHH", ICMP_ECHO_REPLY if reply else ICMP_ECHO, 0, 0, ident, seq) + data
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, PROTO_UDP, length)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    c = checksum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def echo4_frame(dst_mac: str, src_mac: str, src: str, dst: str, ident: int, seq: int,
                data: bytes = b"vifwire") -> bytes:
    return eth(dst_mac, src_mac, ETH_P_IP, ipv4(src, dst, PROTO_ICMP, icmp4_echo(ident, seq, data)))


def udp4_frame(dst_mac: str, src_mac: str, src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return eth(dst_mac, src_mac, ETH_P_IP, ipv4(src, dst, PROTO_UDP, udp4(src, dst, sport, dport, payload)))


def dhcp_discover(mac: str, xid: int | None = None) -> bytes:
    """A DHCPDISCOVER frame: 0.0.0.0:68 -> 255.255.255.255:67, broadcast."""
    xid = secrets.randbits(32) if xid is None else xid
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                        b"\0" * 4, b"\0" * 4, mac_bytes(mac) + b"\0" * 10, b"", b"")
    options = b"\x63\x82\x53\x63" + bytes([53, 1, 1]) + bytes([55, 3, 1, 3, 6]) + b"\xff"
    return udp4_frame(BROADCAST, mac, "0.0.0.0", "255.255.255.255", 68, 67, bootp + options)


def ipv6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim) + socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, dst) + payload)


def icmp6(src: str, dst: str, typ: int, code: int, body: bytes) -> bytes:
    pseudo = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
              + struct.pack("!I3xB", 4 + len(body), PROTO_ICMPV6))
    msg = struct.pack("!BBH", typ, code, 0) + body
    return struct.pack("!BBH", typ, code, checksum(pseudo + msg)) + body


def multicast_mac6(addr: str) -> str:
    """33:33 + the low 32 bits of an IPv6 multicast address."""
    return fmt_mac(b"\x33\x33" + ipaddress.IPv6Address(addr).packed[-4:])


def solicited_node(addr: str) -> str:
    low = ipaddress.IPv6Address(addr).packed[-3:]
    return str(ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + low))


def link_local(mac: str) -> str:
    """fe80::/64 + the modified EUI-64 interface id of ``mac``."""
    b = mac_bytes(mac)
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]))


def echo6_frame(dst_mac: str, src_mac: str, src: str, dst: str, ident: int, seq: int,
                data: bytes = b"vifwire", reply: bool = False) -> bytes:
    body = struct.pack("!HH", ident, seq) + data
    typ = ICMP6_ECHO_REPLY if reply else ICMP6_ECHO
    return eth(dst_mac, src_mac, ETH_P_IPV6, ipv6(src, dst, PROTO_ICMPV6, icmp6(src, dst, typ, 0, body)))


def ns_frame(src_mac: str, src: str, target: str, dst: str | None = None, dst_mac: str | None = None) -> bytes:
    """A neighbour solicitation for ``target`` (multicast to its solicited-node
    group unless ``dst`` is given); from ``::`` (DAD) it carries no SLLA option."""
    dst = dst or solicited_node(target)
    dst_mac = dst_mac or multicast_mac6(dst)
    body = b"\0" * 4 + socket.inet_pton(socket.AF_INET6, target)
    if src != "::":
        body += struct.pack("!BB", 1, 1) + mac_bytes(src_mac)
    return eth(dst_mac, src_mac, ETH_P_IPV6, ipv6(src, dst, PROTO_ICMPV6, icmp6(src, dst, ND_NS, 0, body), 255))


def na_frame(src_mac: str, src: str, target: str, dst: str = "ff02::1", dst_mac: str | None = None,
             flags: int = NA_OVERRIDE) -> bytes:
    body = struct.pack("!I", flags) + socket.inet_pton(socket.AF_INET6, target)
    body += struct.pack("!BB", 2, 1) + mac_bytes(src_mac)  # target link-layer address
    dst_mac = dst_mac or (multicast_mac6(dst) if ipaddress.IPv6Address(dst).is_multicast else BROADCAST)
    return eth(dst_mac, src_mac, ETH_P_IPV6, ipv6(src, dst, PROTO_ICMPV6, icmp6(src, dst, ND_NA, 0, body), 255))


def ra_frame(src_mac: str, src: str, prefix: str = "fd96:bad::", lifetime: int = 1800) -> bytes:
    """A router advertisement to all nodes, with SLLA and an on-link+autonomous /64 prefix."""
    body = struct.pack("!BBHII", 64, 0, lifetime, 0, 0)
    body += struct.pack("!BB", 1, 1) + mac_bytes(src_mac)
    body += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, prefix)
    pkt = ipv6(src, "ff02::1", PROTO_ICMPV6, icmp6(src, "ff02::1", ND_RA, 0, body), 255)
    return eth("33:33:00:00:00:01", src_mac, ETH_P_IPV6, pkt)


# ---------------------------------------------------------------------------
# parsing


@dataclass
class Packet:
    """The fields of one Ethernet frame that tests look at (absent = None)."""

    raw: bytes
    dst: str
    src: str
    ethertype: int
    # ARP
    arp_op: int | None = None
    arp_sha: str | None = None
    arp_spa: str | None = None
    arp_tha: str | None = None
    arp_tpa: str | None = None
    # IPv4 / IPv6
    ip_src: str | None = None
    ip_dst: str | None = None
    proto: int | None = None  # IPv4 protocol / IPv6 next header
    hlim: int | None = None
    l4: bytes = b""
    # ICMP / ICMPv6
    icmp_type: int | None = None
    icmp_code: int | None = None
    echo_id: int | None = None
    echo_seq: int | None = None
    echo_data: bytes = b""
    nd_target: str | None = None
    nd_flags: int | None = None
    nd_lladdr: str | None = None  # source/target link-layer address option
    # UDP
    sport: int | None = None
    dport: int | None = None

    @property
    def is_v4(self) -> bool:
        return self.ethertype == ETH_P_IP and self.ip_src is not None

    @property
    def is_v6(self) -> bool:
        return self.ethertype == ETH_P_IPV6 and self.ip_src is not None

    def is_echo_reply(self, ident: int, seq: int | None = None) -> bool:
        want = ICMP6_ECHO_REPLY if self.is_v6 else ICMP_ECHO_REPLY
        return (self.icmp_type == want and self.echo_id == ident and (seq is None or self.echo_seq == seq)
                and self.proto in (PROTO_ICMP, PROTO_ICMPV6))


def parse(frame: bytes) -> Packet:
    """Parse what :class:`TunVM` needs; unknown or short frames keep only L2 fields."""
    if len(frame) < 14:
        return Packet(frame, "", "", 0)
    p = Packet(frame, fmt_mac(frame[0:6]), fmt_mac(frame[6:12]), struct.unpack_from("!H", frame, 12)[0])
    body = frame[14:]
    with contextlib.suppress(struct.error, ValueError, IndexError):
        if p.ethertype == ETH_P_ARP and len(body) >= 28:
            _ht, pt, hl, pl, op = struct.unpack_from("!HHBBH", body)
            if pt == ETH_P_IP and hl == 6 and pl == 4:
                p.arp_op = op
                p.arp_sha, p.arp_tha = fmt_mac(body[8:14]), fmt_mac(body[18:24])
                p.arp_spa, p.arp_tpa = socket.inet_ntoa(body[14:18]), socket.inet_ntoa(body[24:28])
        elif p.ethertype == ETH_P_IP and len(body) >= 20 and body[0] >> 4 == 4:
            ihl = (body[0] & 0xF) * 4
            total = struct.unpack_from("!H", body, 2)[0]
            p.hlim, p.proto = body[8], body[9]
            p.ip_src, p.ip_dst = socket.inet_ntoa(body[12:16]), socket.inet_ntoa(body[16:20])
            p.l4 = body[ihl:total]
            _l4(p)
        elif p.ethertype == ETH_P_IPV6 and len(body) >= 40 and body[0] >> 4 == 6:
            plen, p.proto, p.hlim = struct.unpack_from("!HBB", body, 4)
            p.ip_src = str(ipaddress.IPv6Address(body[8:24]))
            p.ip_dst = str(ipaddress.IPv6Address(body[24:40]))
            p.l4 = body[40:40 + plen]
            _l4(p)
    return p


def _l4(p: Packet) -> None:
    seg = p.l4
    if p.proto in (PROTO_ICMP, PROTO_ICMPV6) and len(seg) >= 4:
        p.icmp_type, p.icmp_code = seg[0], seg[1]
        if p.icmp_type in (ICMP_ECHO, ICMP_ECHO_REPLY, ICMP6_ECHO, ICMP6_ECHO_REPLY) and len(seg) >= 8:
            if (p.proto == PROTO_ICMP) == (p.icmp_type in (ICMP_ECHO, ICMP_ECHO_REPLY)):
                p.echo_id, p.echo_seq = struct.unpack_from("!HH", seg, 4)
                p.echo_data = seg[8:]
        if p.proto == PROTO_ICMPV6 and p.icmp_type in (ND_NS, ND_NA) and len(seg) >= 24:
            p.nd_flags = struct.unpack_from("!I", seg, 4)[0]
            p.nd_target = str(ipaddress.IPv6Address(seg[8:24]))
            off = 24
            while off + 8 <= len(seg) and seg[off + 1]:
                if seg[off] in (1, 2):
                    p.nd_lladdr = fmt_mac(seg[off + 2:off + 8])
                off += seg[off + 1] * 8
    elif p.proto == PROTO_UDP and len(seg) >= 8:
        p.sport, p.dport = struct.unpack_from("!HH", seg)


# ---------------------------------------------------------------------------
# the VM


def _open_tun() -> int:
    return os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)


@dataclass
class TunVM:
    """A guest on the persistent tap ``ifname`` of namespace ``netns``.

    ``mac``/``ipv4``/``ipv6`` are the guest NIC's identity (the port's); the
    responder answers for them (and for the EUI-64 link-local of ``mac``).
    Use as a context manager; :meth:`close` detaches (the tap stays: it is
    persistent and belongs to vifwire).
    """

    netns: str | None
    ifname: str
    mac: str
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    multiqueue: bool = False
    respond: bool = True
    keep: int = 4096  # frames kept for wait()

    def __post_init__(self) -> None:
        self.mac = self.mac.lower()
        self.ll = link_local(self.mac)
        self._mine6 = {str(ipaddress.IPv6Address(a.split("/")[0])) for a in self.ipv6} | {self.ll}
        self._mine4 = {a.split("/")[0] for a in self.ipv4}
        self.fd = -1
        self._frames: deque[Packet] = deque(maxlen=self.keep)
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self.sent = 0
        self.received = 0
        self.answered = 0

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> "TunVM":
        fd = run_in_netns(self.netns, _open_tun)
        try:
            flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if self.multiqueue else 0)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("=16sH22x", self.ifname.encode(), flags))
            os.set_blocking(fd, False)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.ENODEV:
                raise OSError(exc.errno, f"no tap {self.ifname!r} in namespace {self.netns}") from exc
            raise OSError(exc.errno, f"cannot attach to tap {self.ifname!r}: {exc.strerror}") from exc
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._reader, name=f"tunvm-{self.ifname}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            os.write(self._wake_w, b"x")
            self._thread.join(5)
            self._thread = None
        for fd in (self.fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self._wake_r = self._wake_w = -1

    def __enter__(self) -> "TunVM":
        return self.open() if self.fd < 0 else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- frames ------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Transmit ``frame`` from the guest's NIC (the host receives it on the tap)."""
        for _ in range(100):
            try:
                os.write(self.fd, frame)
                self.sent += 1
                return
            except BlockingIOError:
                time.sleep(0.001)
        raise TimeoutError(f"{self.ifname}: tap queue full")

    def _reader(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.fd, self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                return
            if self.fd not in r:
                continue
            while True:
                try:
                    frame = os.read(self.fd, 65536)
                except BlockingIOError:
                    break
                except OSError:  # the tap was deleted under us
                    self._stop.set()
                    break
                if not frame:
                    break
                self.received += 1
                p = parse(frame)
                if self.respond:
                    with contextlib.suppress(OSError, TimeoutError):
                        self._answer(p)
                with self._cv:
                    self._frames.append(p)
                    self._cv.notify_all()

    def _answer(self, p: Packet) -> None:
        if p.arp_op == ARP_REQUEST and p.arp_tpa in self._mine4 and p.arp_spa != p.arp_tpa:
            self.send(arp_reply(self.mac, p.arp_tpa, p.arp_sha, p.arp_spa))  # type: ignore[arg-type]
            self.answered += 1
        elif p.is_v4 and p.icmp_type == ICMP_ECHO and p.ip_dst in self._mine4 and p.echo_id is not None:
            self.send(eth(p.src, self.mac, ETH_P_IP,
                          ipv4(p.ip_dst, p.ip_src, PROTO_ICMP,  # type: ignore[arg-type]
                               icmp4_echo(p.echo_id, p.echo_seq or 0, p.echo_data, reply=True))))
            self.answered += 1
        elif p.is_v6 and p.icmp_type == ND_NS and p.nd_target in self._mine6 and p.ip_src != "::":
            dst_mac = p.nd_lladdr or p.src
            self.send(na_frame(self.mac, p.nd_target, p.nd_target, dst=p.ip_src,  # type: ignore[arg-type]
                               dst_mac=dst_mac, flags=NA_SOLICITED | NA_OVERRIDE))
            self.answered += 1
        elif p.is_v6 and p.icmp_type == ICMP6_ECHO and p.ip_dst in self._mine6 and p.echo_id is not None:
            self.send(echo6_frame(p.src, self.mac, p.ip_dst, p.ip_src, p.echo_id,  # type: ignore[arg-type]
                                  p.echo_seq or 0, p.echo_data, reply=True))
            self.answered += 1

    def mark(self) -> int:
        """A position in the received stream; ``wait(..., since=mark)`` looks only after it."""
        with self._cv:
            return self.received

    def wait(self, pred: Callable[[Packet], bool], timeout: float = 2.0, since: int | None = None) -> Packet | None:
        """The first received frame (after ``since``) for which ``pred`` is true, or ``None``."""
        end = time.monotonic() + timeout
        start = 0 if since is None else since
        with self._cv:
            while True:
                first = self.received - len(self._frames)
                for i, p in enumerate(self._frames):
                    if first + i >= start and pred(p):
                        return p
                left = end - time.monotonic()
                if left <= 0 or self._thread is None:
                    return None
                start = max(start, self.received)
                self._cv.wait(left)

    def frames(self, since: int = 0) -> list[Packet]:
        with self._cv:
            first = self.received - len(self._frames)
            return [p for i, p in enumerate(self._frames) if first + i >= since]

    # -- a little of an IP stack -------------------------------------------

    def resolve4(self, ip: str, src: str | None = None, timeout: float = 3.0, tries: int = 3) -> str | None:
        """ARP for ``ip`` from ``src`` (the first own address); the answering MAC or None."""
        src = src or self.ipv4[0].split("/")[0]
        for _ in range(tries):
            m = self.mark()
            self.send(arp_request(self.mac, src, ip))
            got = self.wait(lambda p: p.arp_op == ARP_REPLY and p.arp_spa == ip, timeout / tries, since=m)
            if got is not None:
                return got.arp_sha
        return None

    def resolve6(self, ip: str, timeout: float = 3.0, tries: int = 3) -> Packet | None:
        """Neighbour-solicit ``ip`` from the link-local; the NA (``nd_lladdr``, ``nd_flags``) or None."""
        for _ in range(tries):
            m = self.mark()
            self.send(ns_frame(self.mac, self.ll, ip))
            got = self.wait(lambda p: p.icmp_type == ND_NA and p.nd_target == ip, timeout / tries, since=m)
            if got is not None:
                return got
        return None

    def ping(self, dst: str, gw_mac: str, src: str | None = None, src_mac: str | None = None,
             timeout: float = 1.0, tries: int = 3) -> bool:
        """ICMP(v6) echo to ``dst`` through the gateway MAC ``gw_mac``; True when answered.

        ``src``/``src_mac`` default to the guest's own; pass others to spoof.
        """
        v6 = ":" in dst
        src = src or (self.ipv6 if v6 else self.ipv4)[0].split("/")[0]
        src_mac = src_mac or self.mac
        ident = secrets.randbits(16)
        for seq in range(tries):
            m = self.mark()
            if v6:
                self.send(echo6_frame(gw_mac, src_mac, src, dst, ident, seq))
            else:
                self.send(echo4_frame(gw_mac, src_mac, src, dst, ident, seq))
            if self.wait(lambda p: p.is_echo_reply(ident, seq) and p.ip_src == dst, timeout, since=m):
                return True
        return False
