"""A fast rtnetlink request/dump channel on a pyroute2 socket.

The plug path sends a few messages per port; pyroute2's generic machinery
costs more per call than the kernel spends creating the device, so the
messages are packed here (rtnetlink(7), netlink(7)) and exchanged directly on
the socket of a long-lived :class:`pyroute2.IPRoute`. pyroute2 stays the owner
of the socket (and is what tests and tools use to look independently).

Requests name links by ``IFLA_IFNAME`` with ``ifi_index=0`` wherever the
kernel allows it, so the plug path needs no lookups; dumps are used only
where a whole-namespace view is the point (``check``, ``gc``, unplug's
fallback by MAC), kernel-filtered where the kernel can
(``NETLINK_GET_STRICT_CHK``, netlink(7)).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

from vifwire.netlink.constants import (
    IFF_UP, IFINFOMSG, IFLA_ADDRESS, IFLA_EXT_MASK, IFLA_GROUP, IFLA_IFALIAS, IFLA_IFNAME,
    IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINK, IFLA_LINK_NETNSID, IFLA_LINKINFO, IFLA_MASTER,
    IFLA_MTU, IFLA_TARGET_NETNSID, NDMSG, NDA_DST, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK,
    NETNSA_FD, NETNSA_NSID, NLATTR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NLMSGERR_ATTR_MSG, NLMSGHDR, NTF_PROXY, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PRIORITY, RTA_TABLE,
    RTEXT_FILTER_SKIP_STATS, RTM_DELLINK, RTM_GETLINK, RTM_GETNEIGH, RTM_GETNSID, RTM_GETROUTE,
    RTM_F_FIB_MATCH, RTM_NEWLINK, RTM_NEWNSID, RTMSG, RTN_UNICAST, SOL_NETLINK,
)

if TYPE_CHECKING:
    from vifwire.netlink.netns import NsWorker

log = logging.getLogger("vifwire.netlink")


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` + the extended ack text if any."""

    def __init__(self, code: int, text: str = ""):
        self.text = text
        msg = os.strerror(code)
        if text:
            msg = f"{msg} ({text})"
        super().__init__(code, msg)

    def __str__(self) -> str:
        return self.strerror or ""


# ---------------------------------------------------------------------------
# attribute encoding / decoding (struct nlattr, 4-byte aligned: netlink(7))


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return NLATTR.pack(n, kind) + data + b"\0" * (-n & 3)


def u32(kind: int, value: int) -> bytes:
    return struct.pack("=HHI", 8, kind, value)


def s32(kind: int, value: int) -> bytes:
    return struct.pack("=HHi", 8, kind, value)


def str_attr(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def mac_bytes(value: str) -> bytes:
    """``aa:bb:..`` (or ``aa-bb-..``) as 6 bytes; ValueError otherwise."""
    try:
        raw = bytes.fromhex(value.replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ValueError(f"{value!r} is not a MAC address")
    return raw


def fmt_mac(raw: bytes | None) -> str | None:
    return raw.hex(":") if raw else None


def same_mac(a: str | None, b: str | None) -> bool:
    return (a or "").lower().replace("-", ":") == (b or "").lower().replace("-", ":")


def parse_attrs(data: bytes | memoryview, off: int = 0) -> dict[int, bytes]:
    """``{type: payload}`` of the attributes from ``off`` (NLA_F_* bits dropped)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while off + 4 <= end:
        n, kind = NLATTR.unpack_from(data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = bytes(data[off + 4:off + n])
        off += (n + 3) & ~3
    return out


def cstr(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def attr_u32(attrs: dict[int, bytes], kind: int, default: int = 0) -> int:
    raw = attrs.get(kind)
    return struct.unpack_from("=I", raw)[0] if raw and len(raw) >= 4 else default


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    """A ``struct ifinfomsg``."""
    return IFINFOMSG.pack(family, 0, index, flags, change)


# ---------------------------------------------------------------------------
# what dumps and gets return


@dataclass
class Link:
    """What vifwire needs to know about one link (one ``RTM_NEWLINK``)."""

    index: int
    name: str
    flags: int
    mtu: int | None
    address: str | None
    master: int
    kind: str | None
    alias: str | None
    group: int
    link: int  # parent / veth peer ifindex (0 if none)
    link_netnsid: int | None  # set when IFLA_LINK is in another namespace
    info_data: dict[int, bytes] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    def info_u32(self, kind: int) -> int | None:
        raw = self.info_data.get(kind)
        return struct.unpack_from("=I", raw)[0] if raw and len(raw) >= 4 else None

    def info_u8(self, kind: int) -> int | None:
        raw = self.info_data.get(kind)
        return raw[0] if raw else None

    @classmethod
    def parse(cls, payload: bytes) -> "Link":
        _fam, _type, index, flags, _chg = IFINFOMSG.unpack_from(payload)
        a = parse_attrs(payload, IFINFOMSG.size)
        info = parse_attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}
        nsid = struct.unpack("=i", a[IFLA_LINK_NETNSID])[0] if IFLA_LINK_NETNSID in a else None
        return cls(
            index=index, name=cstr(a.get(IFLA_IFNAME)) or "", flags=flags,
            mtu=attr_u32(a, IFLA_MTU) if IFLA_MTU in a else None,
            address=fmt_mac(a.get(IFLA_ADDRESS)), master=attr_u32(a, IFLA_MASTER),
            kind=cstr(info.get(IFLA_INFO_KIND)), alias=cstr(a.get(IFLA_IFALIAS)),
            group=attr_u32(a, IFLA_GROUP), link=attr_u32(a, IFLA_LINK), link_netnsid=nsid,
            info_data=parse_attrs(info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in info else {},
        )


@dataclass(frozen=True)
class Route:
    """One FIB entry (one ``RTM_NEWROUTE``); ``dst`` packed, empty for a default route."""

    family: int
    dst: bytes
    dst_len: int
    table: int
    protocol: int
    type: int
    oif: int
    priority: int
    gateway: bytes = b""

    @classmethod
    def parse(cls, payload: bytes) -> "Route":
        fam, dst_len, _src, _tos, table, proto, _scope, rtype, _fl = RTMSG.unpack_from(payload)
        a = parse_attrs(payload, RTMSG.size)
        return cls(family=fam, dst=a.get(RTA_DST, b""), dst_len=dst_len,
                   table=attr_u32(a, RTA_TABLE, table), protocol=proto, type=rtype,
                   oif=attr_u32(a, RTA_OIF), priority=attr_u32(a, RTA_PRIORITY), gateway=a.get(RTA_GATEWAY, b""))


# ---------------------------------------------------------------------------
# the socket


def netlink_socket_fd() -> int:
    """A new ``NETLINK_ROUTE`` socket's fd, in the calling thread's namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE).detach()


def open_ipr(worker: "NsWorker") -> Any:
    """pyroute2 IPRoute on a socket of ``worker``'s namespace.

    groups=0: no multicast subscriptions (nothing but our replies arrives).
    For another namespace the socket is opened by the namespace's thread (a
    netlink socket belongs to the namespace it was created in) and handed to
    IPRoute as ``fileno``: no helper process is forked, unlike
    ``IPRoute(netns=...)``, which also creates the namespace if it is missing.
    """
    from pyroute2 import IPRoute

    if worker.inline:
        return IPRoute(groups=0, ext_ack=True)
    fd = worker.call(netlink_socket_fd)
    try:
        ipr = IPRoute(fileno=fd, groups=0, ext_ack=True)
    except BaseException:
        os.close(fd)
        raise
    log.debug("netlink socket opened in namespace %s", worker.netns)
    return ipr


def open_socket(worker: "NsWorker") -> socket.socket:
    """A ``NETLINK_ROUTE`` socket of ``worker``'s namespace, for :class:`Channel`.

    Opened on the namespace's thread (a netlink socket belongs to the
    namespace it was created in) and used from any thread after that. No
    pyroute2 here: importing it costs ~0.2 s, more than a whole one-port plug
    may take from a shell; :func:`open_ipr` is there for what needs its parser.
    Buffers as pyroute2 sizes them (1 MiB), so a dump of thousands of links
    or a pipeline of requests never overflows.
    """
    fd = netlink_socket_fd() if worker.inline else worker.call(netlink_socket_fd)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE, fileno=fd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    log.debug("netlink socket opened in namespace %s", worker.netns)
    return sock


class Channel:
    """Fast request/response on a netlink socket of the namespace.

    Also keeps two small per-namespace caches: ``name -> ifindex`` of links
    that others refer to (bridges, macvtap sources, VLAN parents), and the set
    of links created through this channel that have no master yet (so that
    ``master`` needs no lookup after ``veth``/``tap``). One thread at a time:
    the owner serialises (the kernel adapter holds the namespace's lock).
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(30)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:  # pragma: no cover - very old kernels
            pass
        self.buf = bytearray(1 << 18)
        self.seq = count(0x40000000)
        self.index_cache: dict[str, int] = {}
        self.fresh: set[str] = set()

    def close(self) -> None:
        self.sock.close()

    # -- raw exchange ------------------------------------------------------

    def _msg(self, mtype: int, flags: int, body: bytes) -> tuple[int, bytes]:
        seq = next(self.seq)
        return seq, NLMSGHDR.pack(NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body

    @staticmethod
    def _error(flags: int, payload: memoryview) -> NetlinkError | None:
        code = -struct.unpack_from("=i", payload)[0]
        if not code:
            return None
        text = ""
        if flags & NLM_F_ACK_TLVS and len(payload) >= 20:
            # struct nlmsgerr: error, then the request's header (whole request
            # unless NLM_F_CAPPED), then the extended ack TLVs (netlink(7))
            orig_len = struct.unpack_from("=I", payload, 4)[0]
            off = 4 + (NLMSGHDR.size if flags & NLM_F_CAPPED else orig_len)
            off = (off + 3) & ~3
            text = cstr(parse_attrs(payload, off).get(NLMSGERR_ATTR_MSG)) or ""
        return NetlinkError(code, text)

    def _read(self, want: set[int], replies: dict[int, list[bytes]],
              errors: dict[int, NetlinkError | None], dump: bool = False) -> None:
        """Read until every seq in ``want`` got its ack/error (or DONE for dumps)."""
        buf = self.buf
        while want:
            n = self.sock.recv_into(buf)
            view = memoryview(buf)[:n]
            off = 0
            while off + NLMSGHDR.size <= n:
                length, mtype, flags, seq, _pid = NLMSGHDR.unpack_from(view, off)
                if length < NLMSGHDR.size:
                    break
                payload = view[off + NLMSGHDR.size:off + length]
                off += (length + 3) & ~3
                if seq not in want:
                    continue  # a stray (multicast, or left by someone else)
                if mtype == NLMSG_ERROR:
                    errors[seq] = self._error(flags, payload)
                    want.discard(seq)
                elif mtype == NLMSG_DONE:
                    code = struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code < 0 or seq not in errors:  # keep an "interrupted" mark
                        errors[seq] = NetlinkError(-code) if code < 0 else None
                    want.discard(seq)
                else:
                    if dump and flags & NLM_F_DUMP_INTR:
                        errors[seq] = NetlinkError(errno.EINTR, "dump interrupted")
                    replies.setdefault(seq, []).append(bytes(payload))

    def request(self, mtype: int, flags: int, body: bytes) -> list[bytes]:
        """One request; returns the reply payloads; raises :class:`NetlinkError`."""
        seq, msg = self._msg(mtype, NLM_F_REQUEST | NLM_F_ACK | flags, body)
        self.sock.send(msg)
        replies: dict[int, list[bytes]] = {}
        errors: dict[int, NetlinkError | None] = {}
        self._read({seq}, replies, errors)
        if errors.get(seq) is not None:
            raise errors[seq]  # type: ignore[misc]
        return replies.get(seq, [])

    def dump(self, mtype: int, body: bytes, strict: bool = False) -> list[bytes]:
        """A dump's payloads; retried while the kernel marks it interrupted.

        ``strict`` turns on ``NETLINK_GET_STRICT_CHK`` for this dump only, so
        the kernel applies the filters in the request's header and attributes
        (route dumps: protocol, table, type, RTA_OIF) instead of ignoring them.
        Callers filter the result anyway: kernels before 4.20 do not filter.
        """
        for _attempt in range(5):
            seq, msg = self._msg(mtype, NLM_F_REQUEST | NLM_F_DUMP, body)
            strict_on = strict and self._strict(True)
            try:
                # the kernel reads the flag when the dump starts, i.e. in send
                self.sock.send(msg)
            finally:
                if strict_on:
                    self._strict(False)
            replies: dict[int, list[bytes]] = {}
            errors: dict[int, NetlinkError | None] = {}
            self._read({seq}, replies, errors, dump=True)
            err = errors.get(seq)
            if err is None:
                return replies.get(seq, [])
            if err.errno != errno.EINTR:
                raise err
        raise NetlinkError(errno.EINTR, "dump kept being interrupted")

    def _strict(self, on: bool) -> bool:
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, int(on))
        except OSError:  # pragma: no cover - kernels before 4.20
            return False
        return True

    def pipeline(self, reqs: list[tuple[int, int, bytes]], chunk: int = 128) -> list[NetlinkError | None]:
        """Many requests, ``chunk`` per sendmsg; returns one error (or None) each.

        The kernel handles the messages of one datagram in order, in the
        sender's context, so this only saves the per-request round trips.
        """
        out: list[NetlinkError | None] = []
        for i in range(0, len(reqs), chunk):
            seqs, parts = [], []
            for mtype, flags, body in reqs[i:i + chunk]:
                seq, msg = self._msg(mtype, NLM_F_REQUEST | NLM_F_ACK | flags, body)
                seqs.append(seq)
                parts.append(msg)
            self.sock.send(b"".join(parts))
            replies: dict[int, list[bytes]] = {}
            errors: dict[int, NetlinkError | None] = {}
            self._read(set(seqs), replies, errors)
            out.extend(errors.get(s) for s in seqs)
        return out

    # -- links ---------------------------------------------------------------

    @staticmethod
    def _ident(name: str | None, index: int | None, nsid: int | None) -> tuple[int, bytes]:
        extra = s32(IFLA_TARGET_NETNSID, nsid) if nsid is not None else b""
        if index:
            return index, extra
        if not name:
            raise ValueError("a link needs a name or an index")
        return 0, str_attr(IFLA_IFNAME, name) + extra

    def get_link(self, name: str | None = None, index: int | None = None,
                 nsid: int | None = None) -> Link | None:
        idx, attrs = self._ident(name, index, nsid)
        try:
            out = self.request(RTM_GETLINK, 0, ifinfo(idx) + attrs
                               + u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return Link.parse(out[0]) if out else None

    def set_link(self, name: str | None = None, index: int | None = None, *,
                 up: bool | None = None, mtu: int | None = None,
                 address: str | None = None, master: int | None = None,
                 alias: str | None = None, group: int | None = None) -> None:
        self.request(RTM_NEWLINK, 0, self.set_body(name, index, up=up, mtu=mtu, address=address,
                                                   master=master, alias=alias, group=group))

    @classmethod
    def set_body(cls, name: str | None = None, index: int | None = None, *,
                 up: bool | None = None, mtu: int | None = None,
                 address: str | None = None, master: int | None = None,
                 alias: str | None = None, group: int | None = None) -> bytes:
        """The body of a :meth:`set_link` request (for :meth:`pipeline`).

        ``alias=""`` removes the alias."""
        # never with IFLA_TARGET_NETNSID: on a set request the kernel takes it
        # as "move the device there"
        idx, attrs = cls._ident(name, index, None)
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        if mtu is not None:
            attrs += u32(IFLA_MTU, mtu)
        if address is not None:
            attrs += attr(IFLA_ADDRESS, mac_bytes(address))
        if master is not None:
            attrs += u32(IFLA_MASTER, master)
        if alias is not None:
            attrs += str_attr(IFLA_IFALIAS, alias)
        if group is not None:
            attrs += u32(IFLA_GROUP, group)
        return ifinfo(idx, flags, change) + attrs

    def del_link(self, name: str | None = None, index: int | None = None,
                 nsid: int | None = None) -> bool:
        """Delete a link; ``False`` if it was not there."""
        idx, attrs = self._ident(name, index, nsid)
        if name and nsid is None:
            self.forget(name)
        try:
            self.request(RTM_DELLINK, 0, ifinfo(idx) + attrs)
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def new_link(self, body: bytes, echo: bool = False) -> int | None:
        """``RTM_NEWLINK`` with CREATE|EXCL (raises EEXIST if the name is taken).

        With ``echo`` the kernel sends the new link back (NLM_F_ECHO, honoured
        since Linux 6.3); its ifindex is returned (None if not echoed).
        """
        out = self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | (NLM_F_ECHO if echo else 0), body)
        for payload in out:
            return IFINFOMSG.unpack_from(payload)[2]
        return None

    def index_of(self, name: str, refresh: bool = False) -> int | None:
        if not refresh and name in self.index_cache:
            return self.index_cache[name]
        link = self.get_link(name)
        if link is None:
            self.index_cache.pop(name, None)
            return None
        self.index_cache[name] = link.index
        return link.index

    def forget(self, name: str) -> None:
        self.index_cache.pop(name, None)
        self.fresh.discard(name)

    def links(self, body_attrs: bytes = b"") -> list[Link]:
        """A (kernel-filtered when ``body_attrs`` says so) dump of links."""
        out = self.dump(RTM_GETLINK, ifinfo() + u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS) + body_attrs)
        return [Link.parse(p) for p in out]

    def slaves(self, master: int) -> list[Link]:
        return self.links(u32(IFLA_MASTER, master))

    def nsid_of(self, fd: int) -> int:
        """This namespace's id for the namespace behind ``fd`` (assigned if needed)."""
        body = struct.pack("=Bxxx", socket.AF_UNSPEC) + u32(NETNSA_FD, fd)
        for _ in range(2):
            out = self.request(RTM_GETNSID, 0, body)
            nsid = struct.unpack("=i", parse_attrs(out[0], 4)[NETNSA_NSID])[0] if out else -1
            if nsid >= 0:
                return nsid
            try:
                self.request(RTM_NEWNSID, 0, body + s32(NETNSA_NSID, -1))
            except NetlinkError as e:
                if e.errno != errno.EEXIST:
                    raise
        raise NetlinkError(errno.ENOENT, "no namespace id could be assigned")

    # -- routes and neighbour proxies ------------------------------------------

    def route_get(self, family: int, dst: bytes) -> Route | None:
        """The FIB entry the kernel matches for ``dst`` (``RTM_F_FIB_MATCH``:
        the entry itself, not a resolved next hop), or None if unreachable."""
        body = RTMSG.pack(family, len(dst) * 8, 0, 0, 0, 0, 0, 0, RTM_F_FIB_MATCH) + attr(RTA_DST, dst)
        try:
            out = self.request(RTM_GETROUTE, 0, body)
        except NetlinkError as e:
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ESRCH, errno.ENOENT):
                return None
            raise
        return Route.parse(out[0]) if out else None

    def routes(self, family: int, table: int, protocol: int) -> list[Route]:
        """The unicast routes of one table and protocol (one strict dump).

        A table that does not exist yet (a new namespace whose ``lo`` was never
        up has no main table) is answered with ENOENT: no routes.
        """
        body = RTMSG.pack(family, 0, 0, 0, table, protocol, 0, RTN_UNICAST, 0)
        out = []
        try:
            payloads = self.dump(RTM_GETROUTE, body, strict=True)
        except NetlinkError as e:
            if e.errno == errno.ENOENT:
                return []
            raise
        for payload in payloads:
            r = Route.parse(payload)
            if r.table == table and r.protocol == protocol and r.type == RTN_UNICAST:
                out.append(r)
        return out

    @staticmethod
    def proxy_body(family: int, ifindex: int, dst: bytes, state: int = 0) -> bytes:
        """A neighbour proxy entry (``ip neigh ... proxy``, ip-neighbour(8))."""
        return NDMSG.pack(family, ifindex, state, NTF_PROXY, 0) + attr(NDA_DST, dst)

    def proxy_neighbour(self, family: int, ifindex: int, dst: bytes) -> bool:
        """Is there a proxy entry for ``dst`` on ``ifindex``?"""
        try:
            got = self.request(RTM_GETNEIGH, 0, self.proxy_body(family, ifindex, dst))
        except NetlinkError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV):
                return False
            raise
        return bool(got) and NDMSG.unpack_from(got[0])[1] == ifindex

    def proxy_neighbours(self, family: int) -> set[tuple[int, bytes]]:
        """``(ifindex, packed address)`` of every neighbour proxy entry of ``family``.

        A neighbour dump whose ``ndm_flags`` is exactly ``NTF_PROXY`` walks the
        proxy table only (``neigh_dump_info``, net/core/neighbour.c).
        """
        out = set()
        for payload in self.dump(RTM_GETNEIGH, NDMSG.pack(family, 0, 0, NTF_PROXY, 0)):
            _fam, ifindex, _state, flags, _type = NDMSG.unpack_from(payload)
            dst = parse_attrs(payload, NDMSG.size).get(NDA_DST)
            if flags & NTF_PROXY and dst is not None:
                out.add((ifindex, dst))
        return out
