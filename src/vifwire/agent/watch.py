"""Netlink notifications of the host namespace: which devices changed or went.

A ``NETLINK_ROUTE`` socket bound to the link and route multicast groups
(rtnetlink(7)) tells the agent within milliseconds when a device it owns is
deleted, renamed, moved or changed, or when a route through one is removed -
felix watches the same groups. The socket is opened in the agent's
namespace (a netlink socket belongs to the namespace it was created in).
Decoding is the few header fields needed here, with the layouts of
:mod:`vifwire.netlink.constants`.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
from dataclasses import dataclass

from vifwire.netlink.channel import netlink_socket_fd
from vifwire.netlink.constants import (IFINFOMSG, IFLA_IFNAME, IFLA_MASTER, IFLA_MTU, NLATTR, NLMSGHDR,
                                       RTM_DELLINK, RTM_DELROUTE, RTM_NEWLINK, RTMSG)
from vifwire.netlink.netns import NsWorker

log = logging.getLogger("vifwire.agent.watch")

# rtnetlink(7) multicast groups (legacy bitmask form, <linux/rtnetlink.h>)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTA_OIF = 4


@dataclass(frozen=True)
class Change:
    kind: str  # "link" (new/changed), "link-gone", "route-gone"
    ifindex: int
    name: str | None = None  # links: IFLA_IFNAME
    mtu: int | None = None
    master: int | None = None


class LinkWatch:
    """Blocking reader of link/route notifications (one thread owns it)."""

    def __init__(self, netns: str | None):
        worker = NsWorker(netns, name="vifwire-watch-open")
        try:
            fd = worker.call(netlink_socket_fd)
        finally:
            worker.close()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE, fileno=fd)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        self.overflowed = False

    def read(self, timeout: float) -> list[Change]:
        """Changes that arrived within ``timeout`` seconds (``[]`` if none).

        If the kernel dropped notifications (ENOBUFS: the buffer overflowed),
        ``overflowed`` is set: the caller must re-read everything.
        """
        out: list[Change] = []
        ready, _, _ = select.select([self.sock], [], [], timeout)
        while ready:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS
                    self.overflowed = True
                    continue
                raise
            out.extend(parse(data))
        return out

    def close(self) -> None:
        self.sock.close()


def parse(data: bytes) -> list[Change]:
    out: list[Change] = []
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size:
            break
        body = off + NLMSGHDR.size
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            _family, _type, index, _flags2, _change = IFINFOMSG.unpack_from(data, body)
            attrs = _attrs(data, body + IFINFOMSG.size, off + length)
            name = attrs.get(IFLA_IFNAME)
            out.append(Change("link" if mtype == RTM_NEWLINK else "link-gone", index,
                              name.rstrip(b"\0").decode(errors="replace") if name else None,
                              _u32(attrs.get(IFLA_MTU)), _u32(attrs.get(IFLA_MASTER))))
        elif mtype == RTM_DELROUTE:
            attrs = _attrs(data, body + RTMSG.size, off + length)
            oif = _u32(attrs.get(RTA_OIF))
            if oif:
                out.append(Change("route-gone", oif))
        off += (length + 3) & ~3
    return out


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while off + NLATTR.size <= end:
        alen, atype = NLATTR.unpack_from(data, off)
        if alen < NLATTR.size:
            break
        attrs[atype & 0x3FFF] = data[off + NLATTR.size:off + alen]
        off += (alen + 3) & ~3
    return attrs


def _u32(raw: bytes | None) -> int | None:
    return int.from_bytes(raw[:4], sys.byteorder) if raw and len(raw) >= 4 else None
