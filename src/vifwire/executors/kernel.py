"""The netlink executor: kernel devices, routes, neighbour proxies and sysctls.

Ops handled here (see :mod:`vifwire.planner.plan` for their args): ``tap``,
``veth``, ``bridge``, ``master``, ``macvtap``, ``vlan``, ``require_link``,
``routes``, ``sysctls`` and ``proxy_ndp``. Importing the module registers them.

How it talks to the kernel
--------------------------
One long-lived pyroute2 :class:`~pyroute2.IPRoute` per namespace, kept in the
:class:`~vifwire.executors.base.HostContext` under ``"ipr:<netns>"``
(``"ipr:"`` for the current one), on a socket opened inside the target
namespace; the requests that sit on the plug/unplug path are then encoded here
(a few ``struct.pack`` calls) and exchanged directly on that socket, because
pyroute2's generic request machinery costs 0.2-0.4 ms per call, more than the
kernel needs to create a device. Everything is one netlink request per
change, identified by name (``ifi_index=0`` + ``IFLA_IFNAME``), never a dump,
except :func:`find_by_mac` (the unplug fallback) and the "has the shared
bridge any ports left" check, which asks the kernel for a *filtered* dump.

Things that netlink cannot do are done from one helper thread per namespace
that has ``setns()``'d into it (the caller's threads never change namespace):

* opening ``/dev/net/tun`` - a tap is created in the namespace the tun file
  was *opened* in, the ``TUNSETIFF`` ioctl itself then runs on the caller;
* ``/proc/sys/net/...`` reads and writes (``disable_ipv6`` of bridges, the
  ``sysctls`` op) - /proc/sys/net shows the namespace of the reading thread.

Public API
----------
* the handlers, registered for their ops (``HANDLERS[op].apply/remove/verify``);
* :func:`remove_links_bulk` ``(ctx, names)`` - delete many links at once;
* :func:`find_by_mac` ``(ctx, mac, kinds=None) -> name | None`` - unplug's
  fallback for links named by older versions (used by ``tap``/``veth``/
  ``macvtap`` ``remove`` when the name is absent and ``args["mac"]`` is given);
* :func:`ipr` / :func:`channel` / :func:`worker` ``(ctx)`` - the namespace's
  pyroute2 IPRoute, the fast channel on its socket, the helper thread;
* :data:`VIFWIRE_RTPROT`, :data:`VIFWIRE_ALIAS`, :data:`BULK_GROUP_BASE`.

A HostContext (and so a channel) is meant for one thread at a time.

Ownership markers
-----------------
* bridges vifwire creates carry ``IFLA_IFALIAS`` = :data:`VIFWIRE_ALIAS`; a
  shared bridge is only ever deleted if it has that alias and no ports;
* host routes use route protocol :data:`VIFWIRE_RTPROT`; only routes with it
  are deleted or replaced;
* bulk removal moves links into a link group in :data:`BULK_GROUP_BASE`'s
  range and deletes the group with one ``RTM_DELLINK``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import queue
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from vifwire.errors import HostError
from vifwire.executors.base import HostContext, Undo, register
from vifwire.planner.plan import Step

# ---------------------------------------------------------------------------
# vifwire's own numbers

#: Route protocol of vifwire's host routes (``ip route ... proto 158``). Not in
#: /etc/iproute2/rt_protos nor in the kernel's RTPROT_* list.
VIFWIRE_RTPROT = 158
#: ``IFLA_IFALIAS`` given to the bridges vifwire creates.
VIFWIRE_ALIAS = "vifwire"
#: Link groups used by :func:`remove_links_bulk`: base | random 16 bits per call,
#: so that concurrent bulk removals (other processes) never share a group.
BULK_GROUP_BASE = 0x76770000

# ---------------------------------------------------------------------------
# netlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, ...)

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x8, 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_EXT_ACK = 270, 11

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWNSID, RTM_GETNSID = 88, 90

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 10, 18, 20
IFLA_GROUP, IFLA_NET_NS_FD, IFLA_EXT_MASK = 27, 28, 29
IFLA_LINK_NETNSID, IFLA_TARGET_NETNSID = 37, 46
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_MACVLAN_MODE = 1
IFLA_VLAN_ID = 1
IFLA_TUN_TYPE, IFLA_TUN_MULTI_QUEUE = 3, 7
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP = 0x1

MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}

RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RT_TABLE_MAIN, RT_SCOPE_LINK, RTN_UNICAST = 254, 253, 1
RTM_F_FIB_MATCH = 0x2000
NDA_DST = 1
NTF_PROXY, NUD_PERMANENT = 0x08, 0x80
NETNSA_NSID, NETNSA_FD = 1, 3

# linux/if_tun.h
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TUN, IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0001, 0x0002, 0x1000, 0x0100
IFF_VNET_HDR, IFF_TUN_EXCL = 0x4000, 0x8000

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
_PROC_SYS_NET = "/proc/sys/net/"

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_IFI = struct.Struct("=BxHiII")  # ifinfomsg
_RTM = struct.Struct("=BBBBBBBBI")  # rtmsg
_NDM = struct.Struct("=BxxxiHBB")  # ndmsg
_NLA = struct.Struct("=HH")


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
# attribute encoding / decoding


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return _NLA.pack(n, kind) + data + b"\0" * (-n & 3)


def _u32(kind: int, value: int) -> bytes:
    return struct.pack("=HHI", 8, kind, value)


def _s32(kind: int, value: int) -> bytes:
    return struct.pack("=HHi", 8, kind, value)


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _mac(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value.replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ValueError(f"{value!r} is not a MAC address")
    return raw


def _fmt_mac(raw: bytes | None) -> str | None:
    return raw.hex(":") if raw else None


def _attrs(data: bytes | memoryview, off: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    end = len(data)
    while off + 4 <= end:
        n, kind = _NLA.unpack_from(data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = bytes(data[off + 4:off + n])
        off += (n + 3) & ~3
    return out


def _cstr(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def _ifi(index: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    return _IFI.pack(family, 0, index, flags, change)


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
        _fam, _type, index, flags, _chg = _IFI.unpack_from(payload)
        a = _attrs(payload, _IFI.size)
        info = _attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}
        mtu = struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else None
        nsid = struct.unpack("=i", a[IFLA_LINK_NETNSID])[0] if IFLA_LINK_NETNSID in a else None
        return cls(
            index=index, name=_cstr(a.get(IFLA_IFNAME)) or "", flags=flags, mtu=mtu,
            address=_fmt_mac(a.get(IFLA_ADDRESS)),
            master=struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0,
            kind=_cstr(info.get(IFLA_INFO_KIND)), alias=_cstr(a.get(IFLA_IFALIAS)),
            group=struct.unpack("=I", a[IFLA_GROUP])[0] if IFLA_GROUP in a else 0,
            link=struct.unpack("=I", a[IFLA_LINK])[0] if IFLA_LINK in a else 0,
            link_netnsid=nsid,
            info_data=_attrs(info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in info else {},
        )


# ---------------------------------------------------------------------------
# the per-namespace netlink channel


def _netlink_socket_fd() -> int:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE).detach()


def _open_ipr(ctx: HostContext):
    """pyroute2 IPRoute on a socket of the target namespace.

    groups=0: no multicast subscriptions (nothing but our replies arrives).
    For another namespace the socket is opened by the namespace's helper
    thread (a netlink socket belongs to the namespace it was created in) and
    handed to IPRoute as ``fileno``: no helper process is forked, unlike
    ``IPRoute(netns=...)``, which also creates the namespace if it is missing.
    """
    from pyroute2 import IPRoute

    if ctx.netns is None:
        return IPRoute(groups=0, ext_ack=True)
    fd = worker(ctx).call(_netlink_socket_fd)
    try:
        return IPRoute(fileno=fd, groups=0, ext_ack=True)
    except BaseException:
        os.close(fd)
        raise


class Channel:
    """Fast request/response on the namespace's pyroute2 socket.

    Also keeps two small per-namespace caches: ``name -> ifindex`` of links
    that others refer to (bridges, macvtap sources, VLAN parents), and the set
    of links created through this channel that have no master yet (so that
    ``master`` needs no lookup after ``veth``/``tap``).
    """

    def __init__(self, ipr: Any):
        self.ipr = ipr
        raw = ipr.asyncore.socket
        # our own file object on the same socket; pyroute2's asyncio transport
        # is idle while we use it (it only reads while its loop runs)
        self.sock = socket.socket(fileno=os.dup(raw.fileno()))
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
        return seq, _HDR.pack(_HDR.size + len(body), mtype, flags, seq, 0) + body

    def _error(self, flags: int, payload: memoryview) -> NetlinkError | None:
        code = -struct.unpack_from("=i", payload)[0]
        if not code:
            return None
        text = ""
        if flags & NLM_F_ACK_TLVS and len(payload) >= 20:
            orig_len = struct.unpack_from("=I", payload, 4)[0]
            off = 4 + (_HDR.size if flags & NLM_F_CAPPED else orig_len)
            off = (off + 3) & ~3
            text = _cstr(_attrs(payload, off).get(NLMSGERR_ATTR_MSG)) or ""
        return NetlinkError(code, text)

    def _read(self, want: set[int], replies: dict[int, list[bytes]],
              errors: dict[int, NetlinkError | None], dump: bool = False) -> None:
        """Read until every seq in ``want`` got its ack/error (or DONE for dumps)."""
        buf = self.buf
        while want:
            n = self.sock.recv_into(buf)
            view = memoryview(buf)[:n]
            off = 0
            while off + _HDR.size <= n:
                length, mtype, flags, seq, _pid = _HDR.unpack_from(view, off)
                if length < _HDR.size:
                    break
                payload = view[off + _HDR.size:off + length]
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

    def dump(self, mtype: int, body: bytes) -> list[bytes]:
        for _attempt in range(5):
            seq, msg = self._msg(mtype, NLM_F_REQUEST | NLM_F_DUMP, body)
            self.sock.send(msg)
            replies: dict[int, list[bytes]] = {}
            errors: dict[int, NetlinkError | None] = {}
            self._read({seq}, replies, errors, dump=True)
            err = errors.get(seq)
            if err is None:
                return replies.get(seq, [])
            if err.errno != errno.EINTR:
                raise err
        raise NetlinkError(errno.EINTR, "link dump kept being interrupted")

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
        extra = _s32(IFLA_TARGET_NETNSID, nsid) if nsid is not None else b""
        if index:
            return index, extra
        if not name:
            raise ValueError("a link needs a name or an index")
        return 0, _str(IFLA_IFNAME, name) + extra

    def get_link(self, name: str | None = None, index: int | None = None,
                 nsid: int | None = None) -> Link | None:
        idx, attrs = self._ident(name, index, nsid)
        try:
            out = self.request(RTM_GETLINK, 0, _ifi(idx) + attrs
                               + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return Link.parse(out[0]) if out else None

    def set_link(self, name: str | None = None, index: int | None = None, *,
                 up: bool | None = None, mtu: int | None = None,
                 address: str | None = None, master: int | None = None,
                 alias: str | None = None, group: int | None = None) -> None:
        # never with IFLA_TARGET_NETNSID: on a set request the kernel takes it
        # as "move the device there"
        idx, attrs = self._ident(name, index, None)
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        if mtu is not None:
            attrs += _u32(IFLA_MTU, mtu)
        if address is not None:
            attrs += _attr(IFLA_ADDRESS, _mac(address))
        if master is not None:
            attrs += _u32(IFLA_MASTER, master)
        if alias is not None:
            attrs += _str(IFLA_IFALIAS, alias)
        if group is not None:
            attrs += _u32(IFLA_GROUP, group)
        self.request(RTM_NEWLINK, 0, _ifi(idx, flags, change) + attrs)

    def del_link(self, name: str | None = None, index: int | None = None,
                 nsid: int | None = None) -> bool:
        """Delete a link; ``False`` if it was not there."""
        idx, attrs = self._ident(name, index, nsid)
        if name and nsid is None:
            self.forget(name)
        try:
            self.request(RTM_DELLINK, 0, _ifi(idx) + attrs)
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
            return _IFI.unpack_from(payload)[2]
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
        out = self.dump(RTM_GETLINK, _ifi() + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS) + body_attrs)
        return [Link.parse(p) for p in out]

    def slaves(self, master: int) -> list[Link]:
        return self.links(_u32(IFLA_MASTER, master))

    def nsid_of(self, fd: int) -> int:
        """This namespace's id for the namespace behind ``fd`` (assigned if needed)."""
        body = struct.pack("=Bxxx", socket.AF_UNSPEC) + _u32(NETNSA_FD, fd)
        for _ in range(2):
            out = self.request(RTM_GETNSID, 0, body)
            nsid = struct.unpack("=i", _attrs(out[0], 4)[NETNSA_NSID])[0] if out else -1
            if nsid >= 0:
                return nsid
            try:
                self.request(RTM_NEWNSID, 0, body + _s32(NETNSA_NSID, -1))
            except NetlinkError as e:
                if e.errno != errno.EEXIST:
                    raise
        raise NetlinkError(errno.ENOENT, "no namespace id could be assigned")


# ---------------------------------------------------------------------------
# the per-namespace helper thread (tun files, /proc/sys/net)

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def netns_file(name: str) -> str:
    """``/var/run/netns/<name>``, or ``name`` itself when it is a path."""
    return name if "/" in name else os.path.join(NETNS_RUN_DIR, name)


class NsWorker:
    """Runs small functions inside a network namespace, on one thread.

    With ``netns=None`` the functions run inline on the caller (current
    namespace). The thread enters the namespace once, at start.
    """

    TUN_POOL = 16

    def __init__(self, netns: str | None):
        self.netns = netns
        self.tun_pool: list[int] = []
        self.q: queue.SimpleQueue | None = None
        if netns is None:
            return
        self.q = queue.SimpleQueue()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                fd = os.open(netns_file(netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
            except BaseException as e:  # noqa: BLE001 - handed to the creator
                failure.append(e)
                started.set()
                return
            started.set()
            while True:
                item = self.q.get()  # type: ignore[union-attr]
                if item is None:
                    return
                fn, args, box, done = item
                try:
                    box.append((True, fn(*args)))
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                    box.append((False, e))
                done.set()

        self.thread = threading.Thread(target=run, name=f"vifwire-netns-{netns}", daemon=True)
        self.thread.start()
        started.wait()
        if failure:
            self.q = None
            raise failure[0]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.q is None:
            return fn(*args)
        box: list = []
        done = threading.Event()
        self.q.put((fn, args, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def tun_fd(self) -> int:
        """An unattached ``/dev/net/tun`` file opened inside the namespace."""
        if not self.tun_pool:
            self.tun_pool.extend(self.call(_open_tun_files, self.TUN_POOL if self.q else 1))
        return self.tun_pool.pop()

    def close(self) -> None:
        for fd in self.tun_pool:
            os.close(fd)
        self.tun_pool.clear()
        if self.q is not None:
            self.q.put(None)
            self.thread.join(5)
            self.q = None


def _open_tun_files(n: int) -> list[int]:
    return [os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC) for _ in range(n)]


def _sysctl_path(key: str, dev: str | None) -> str:
    rel = key.replace("{dev}", dev or "")
    path = os.path.normpath(_PROC_SYS_NET + rel.lstrip("/"))
    if not path.startswith(_PROC_SYS_NET) or "{" in rel:
        raise ValueError(f"sysctl {key!r} is not under {_PROC_SYS_NET}")
    return path


def _sysctl_read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _sysctl_write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _disable_ipv6(path: str) -> None:
    try:
        _sysctl_write(path, "1")
    except FileNotFoundError:
        if os.path.isdir(_PROC_SYS_NET + "ipv6"):
            raise
        # a kernel without IPv6 (ipv6.disable=1): nothing to disable


def _sysctl_swap(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Set each path to its value; returns (path, old) for the ones that changed."""
    changed: list[tuple[str, str]] = []
    try:
        for path, value in items:
            old = _sysctl_read(path)
            if old != value:
                _sysctl_write(path, value)
                changed.append((path, old))
    except BaseException:
        for path, old in reversed(changed):
            try:
                _sysctl_write(path, old)
            except OSError:
                pass
        raise
    return changed


def _sysctl_restore(items: list[tuple[str, str]]) -> None:
    for path, old in reversed(items):
        try:
            _sysctl_write(path, old)
        except FileNotFoundError:
            pass  # the device is gone, and its settings with it


def _sysctl_read_many(paths: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(_sysctl_read(p))
        except FileNotFoundError:
            out.append(None)
    return out


# ---------------------------------------------------------------------------
# context helpers


def _key(ctx: HostContext) -> str:
    return ctx.netns or ""


def _check_netns(ctx: HostContext) -> None:
    if ctx.netns and not os.path.exists(netns_file(ctx.netns)):
        raise HostError(ctx.port_id, f"netns {ctx.netns}", "the namespace does not exist")


def ipr(ctx: HostContext) -> Any:
    """The namespace's long-lived pyroute2 IPRoute (``ctx`` key ``ipr:<netns>``)."""
    key = "ipr:" + _key(ctx)
    if key not in ctx._cache:
        _check_netns(ctx)
    return ctx.get(key, lambda: _open_ipr(ctx))


def channel(ctx: HostContext) -> Channel:
    """The fast netlink channel on :func:`ipr`'s socket."""
    return ctx.get("kernel-nl:" + _key(ctx), lambda: Channel(ipr(ctx)))


def worker(ctx: HostContext) -> NsWorker:
    """The namespace's helper thread (tun files, /proc/sys/net)."""
    key = "kernel-ns:" + _key(ctx)
    if key not in ctx._cache:
        _check_netns(ctx)
    return ctx.get(key, lambda: NsWorker(ctx.netns))


def _fail(ctx: HostContext, step: Step, problem: str) -> HostError:
    return HostError(ctx.port_id, step.describe(), problem)


def _mtu_of(args: dict) -> int | None:
    mtu = args.get("mtu")
    return int(mtu) if mtu else None


def _same_mac(a: str | None, b: str | None) -> bool:
    return (a or "").lower().replace("-", ":") == (b or "").lower().replace("-", ":")


def _fix_link(ch: Channel, link: Link, mtu: int | None = None, mac: str | None = None,
              up: bool = True) -> Undo | None:
    """Bring an existing link to mtu/mac/up; undo restores what was changed."""
    kw: dict[str, Any] = {}
    back: dict[str, Any] = {}
    if mtu is not None and link.mtu != mtu:
        kw["mtu"], back["mtu"] = mtu, link.mtu
    if mac and not _same_mac(link.address, mac):
        kw["address"], back["address"] = mac, link.address
    if up and not link.up:
        kw["up"], back["up"] = True, False
    if not kw:
        return None
    ch.set_link(index=link.index, **kw)
    index = link.index

    def undo() -> None:
        try:
            ch.set_link(index=index, **back)
        except NetlinkError as e:
            if e.errno != errno.ENODEV:
                raise
    return undo


def _undo_delete(ch: Channel, name: str) -> Undo:
    def undo() -> None:
        ch.del_link(name)
    return undo


def _link_drift(link: Link | None, name: str, kind: str | None = None, mtu: int | None = None,
                mac: str | None = None, up: bool = True) -> list[str]:
    if link is None:
        return [f"{name}: missing"]
    out = []
    if kind and link.kind != kind:
        out.append(f"{name}: kind is {link.kind or 'none'}, recorded {kind}")
    if up and not link.up:
        out.append(f"{name}: is down, recorded up")
    if mtu is not None and link.mtu != mtu:
        out.append(f"{name}: mtu is {link.mtu}, recorded {mtu}")
    if mac and not _same_mac(link.address, mac):
        out.append(f"{name}: mac is {link.address}, recorded {mac.lower()}")
    return out


def find_by_mac(ctx: HostContext, mac: str, kinds: Iterable[str] | None = None) -> str | None:
    """Name of the link with MAC ``mac`` (optionally of one of ``kinds``), or None.

    Unplug's fallback for interfaces named by older versions. Raises
    :class:`HostError` if several links match (deleting a guess is worse than
    leaving it).
    """
    wanted = set(kinds) if kinds else None
    found = [l for l in channel(ctx).links()
             if l.address and _same_mac(l.address, mac) and (wanted is None or l.kind in wanted)]
    if not found:
        return None
    if len(found) > 1:
        raise HostError(ctx.port_id, f"find_by_mac {mac}",
                        "several interfaces have this MAC: " + ", ".join(l.name for l in found))
    return found[0].name


def _remove_link(ctx: HostContext, step: Step, name: str, mac: str | None, kinds: tuple[str, ...],
                 also: tuple[str, ...] = ()) -> None:
    ch = channel(ctx)
    try:
        if ch.del_link(name):
            return
        for other in also:
            if ch.del_link(other):
                return
        if mac:
            found = find_by_mac(ctx, mac, kinds)
            if found:
                ch.del_link(found)
    except NetlinkError as e:
        raise _fail(ctx, step, f"cannot delete {name}: {e}") from e


# ---------------------------------------------------------------------------
# tap


def _tun_flags(multiqueue: bool) -> int:
    return IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if multiqueue else 0)


def _tun_create(ctx: HostContext, name: str, multiqueue: bool) -> None:
    """Create a persistent tap; EBUSY if the name is taken (IFF_TUN_EXCL)."""
    fd = worker(ctx).tun_fd()
    try:
        ifr = struct.pack("=16sH22x", name.encode(), _tun_flags(multiqueue) | IFF_TUN_EXCL)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _is_wanted_tap(link: Link, multiqueue: bool) -> bool:
    if link.kind != "tun" or link.info_u8(IFLA_TUN_TYPE) != IFF_TAP:
        return False
    mq = link.info_u8(IFLA_TUN_MULTI_QUEUE)
    return mq is None or bool(mq) == bool(multiqueue)


class TapHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, mac, mtu, mq = a["name"], a.get("mac"), _mtu_of(a), bool(a.get("multiqueue"))
        ch = channel(ctx)
        try:
            _tun_create(ctx, name, mq)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise _fail(ctx, step, f"cannot create tap {name}: {e.strerror}") from e
            link = ch.get_link(name)
            if link is not None and _is_wanted_tap(link, mq):
                try:
                    return _fix_link(ch, link, mtu, mac)
                except (NetlinkError, ValueError) as e2:
                    raise _fail(ctx, step, f"cannot configure {name}: {e2}") from e2
            # a leftover of the wrong kind (or wrong queue mode): replace it
            try:
                ch.del_link(name)
                _tun_create(ctx, name, mq)
            except OSError as e2:
                raise _fail(ctx, step, f"cannot replace leftover {name}: {e2.strerror}") from e2
        try:
            ch.set_link(name, up=True, mtu=mtu, address=mac)
        except (NetlinkError, ValueError) as e:
            ch.del_link(name)
            raise _fail(ctx, step, f"cannot configure {name}: {e}") from e
        ch.fresh.add(name)
        return _undo_delete(ch, name)

    def remove(self, step: Step, ctx: HostContext) -> None:
        _remove_link(ctx, step, step.args["name"], step.args.get("mac"), ("tun",))

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        link = channel(ctx).get_link(a["name"])
        out = _link_drift(link, a["name"], "tun", _mtu_of(a), a.get("mac"))
        if link is not None and link.kind == "tun" and not _is_wanted_tap(link, bool(a.get("multiqueue"))):
            out.append(f"{a['name']}: not a {'multi-queue ' if a.get('multiqueue') else ''}tap")
        return out


# ---------------------------------------------------------------------------
# veth


class _PeerNs:
    """An open handle on the peer's namespace (fd + this namespace's id for it)."""

    def __init__(self, ch: Channel, peer_netns: str | None):
        self.fd: int | None = None
        self.ch = ch
        self._nsid: int | None = None
        if peer_netns:
            self.fd = os.open(netns_file(peer_netns), os.O_RDONLY | os.O_CLOEXEC)

    @property
    def nsid(self) -> int | None:
        if self.fd is None:
            return None
        if self._nsid is None:
            self._nsid = self.ch.nsid_of(self.fd)
        return self._nsid

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "_PeerNs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _veth_body(first: str, second: str, mtu: int | None, first_ns_fd: int | None = None,
               first_mac: str | None = None, second_mac: str | None = None) -> bytes:
    """A veth pair: ``first`` is created up (in ``first_ns_fd``'s namespace when
    given), ``second`` - the ``VETH_INFO_PEER`` - down in the socket's namespace.

    Only the device the request is about can be brought up in the same
    request: the peer is configured before the two are linked, and
    ``veth_open`` of an unlinked device fails with ENOTCONN.
    """
    pattrs = _str(IFLA_IFNAME, second) + (_u32(IFLA_MTU, mtu) if mtu else b"")
    if second_mac:
        pattrs += _attr(IFLA_ADDRESS, _mac(second_mac))
    peer_nla = _attr(VETH_INFO_PEER, _ifi() + pattrs)
    linkinfo = _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth") + _attr(IFLA_INFO_DATA, peer_nla))
    attrs = _str(IFLA_IFNAME, first) + (_u32(IFLA_MTU, mtu) if mtu else b"")
    if first_mac:
        attrs += _attr(IFLA_ADDRESS, _mac(first_mac))
    if first_ns_fd is not None:
        attrs += _u32(IFLA_NET_NS_FD, first_ns_fd)
    return _ifi(0, IFF_UP, IFF_UP) + attrs + linkinfo


class VethHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, peer, mtu = a["name"], a["peer"], _mtu_of(a)
        ch = channel(ctx)
        try:
            with _PeerNs(ch, a.get("peer_netns")) as pns:
                return self._apply(ctx, step, ch, pns, name, peer, mtu)
        except FileNotFoundError as e:
            raise _fail(ctx, step, f"peer namespace {a.get('peer_netns')} does not exist") from e
        except NetlinkError as e:
            raise _fail(ctx, step, f"cannot create veth {name}/{peer}: {e}") from e

    def _apply(self, ctx: HostContext, step: Step, ch: Channel, pns: _PeerNs,
               name: str, peer: str, mtu: int | None) -> Undo | None:
        guest_mac = step.args.get("peer_mac")  # the tin end is the guest's NIC
        if pns.fd is None:
            body, later = _veth_body(name, peer, mtu, second_mac=guest_mac), peer
        else:
            # The guest end is the device of the request, created directly in
            # the guest namespace and up; the host end is its peer, made here.
            # (Bringing a device up needs a socket in its namespace: on this
            # kernel IFLA_TARGET_NETNSID on a set request *moves* the device.)
            body, later = _veth_body(peer, name, mtu, pns.fd, first_mac=guest_mac), name
        for attempt in range(3):
            try:
                ch.new_link(body)
                break
            except NetlinkError as e:
                if e.errno != errno.EEXIST or attempt == 2:
                    raise
            # something is in the way: the pair as wanted, or a leftover end
            host = ch.get_link(name)
            if host is not None:
                if self._is_wanted(ch, pns, host, peer):
                    return self._fix_existing(ch, host, mtu, guest_mac)
                ch.del_link(name)
            else:
                ch.del_link(peer, nsid=pns.nsid)  # a leftover tin, perhaps in the guest
        try:
            ch.set_link(later, up=True)
        except NetlinkError:
            ch.del_link(name)
            raise
        ch.fresh.add(name)
        if pns.fd is None:
            ch.fresh.add(peer)
        return _undo_delete(ch, name)

    @staticmethod
    def _is_wanted(ch: Channel, pns: _PeerNs, host: Link, peer: str) -> bool:
        if host.kind != "veth" or not host.link:
            return False
        if pns.fd is not None:
            # the guest may have renamed its end: the right namespace is enough
            return host.link_netnsid is not None and host.link_netnsid == pns.nsid
        if host.link_netnsid is not None:
            return True  # the container took its end (nova-lxd / LXD move it)
        other = ch.get_link(index=host.link)
        return other is not None and other.name == peer

    @staticmethod
    def _fix_existing(ch: Channel, host: Link, mtu: int | None, peer_mac: str | None) -> Undo | None:
        undos = [_fix_link(ch, host, mtu)]
        if host.link_netnsid is None:
            # the peer is here too (the guest end in another namespace is the
            # guest's business once created; it was created up, with its MAC)
            other = ch.get_link(index=host.link)
            if other is not None:
                undos.append(_fix_link(ch, other, mtu, peer_mac))
        undos = [u for u in undos if u]
        if not undos:
            return None

        def undo() -> None:
            for fn in reversed(undos):
                fn()
        return undo

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        also = () if a.get("peer_netns") else (a["peer"],)
        _remove_link(ctx, step, a["name"], a.get("mac"), ("veth",), also)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        ch = channel(ctx)
        link = ch.get_link(a["name"])
        # no MAC check: ``mac`` only helps unplug find a renamed pair
        out = _link_drift(link, a["name"], "veth", _mtu_of(a))
        if link is None or link.kind != "veth":
            return out
        if not a.get("peer_netns") and link.link_netnsid is None:
            other = ch.get_link(index=link.link)
            if other is not None and other.name != a["peer"]:
                out.append(f"{a['name']}: peer is {other.name}, recorded {a['peer']}")
            elif other is not None:
                out += _link_drift(other, a["peer"], None, _mtu_of(a), a.get("peer_mac"))
        return out


# ---------------------------------------------------------------------------
# bridge


def _bridge_body(name: str, mtu: int | None) -> bytes:
    # Created down; IFLA_IFALIAS would be ignored here (the kernel only applies
    # it to existing links), so it goes with the "up" that follows.
    data = _u32(IFLA_BR_FORWARD_DELAY, 0) + _u32(IFLA_BR_STP_STATE, 0)
    attrs = (_str(IFLA_IFNAME, name) + (_u32(IFLA_MTU, mtu) if mtu else b"")
             + _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge") + _attr(IFLA_INFO_DATA, data)))
    return _ifi() + attrs


def _set_bridge_opts(ch: Channel, index: int, forward_delay: int, stp: int) -> None:
    # With STP on the kernel only accepts forward delays of 2-30 s, and it
    # applies IFLA_BR_FORWARD_DELAY before IFLA_BR_STP_STATE: STP goes off
    # first, or on last.
    def send(kind: int, value: int) -> None:
        ch.request(RTM_NEWLINK, 0, _ifi(index) + _attr(
            IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge") + _attr(IFLA_INFO_DATA, _u32(kind, value))))
    order = [(IFLA_BR_FORWARD_DELAY, forward_delay), (IFLA_BR_STP_STATE, stp)]
    for kind, value in (order if stp else order[::-1]):
        send(kind, value)


class BridgeHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, mtu = a["name"], _mtu_of(a)
        ch = channel(ctx)
        if a.get("shared"):
            # usually there already: look before trying to create
            link = ch.get_link(name)
            if link is not None:
                return self._existing(ctx, step, ch, link, mtu)
        try:
            index = ch.new_link(_bridge_body(name, mtu), echo=True)
        except NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise _fail(ctx, step, f"cannot create bridge {name}: {e}") from e
            link = ch.get_link(name)
            if link is None:
                raise _fail(ctx, step, f"bridge {name} vanished while being created") from e
            return self._existing(ctx, step, ch, link, mtu)
        try:
            # IPv6 off before the bridge is ever up; then mark it ours and up
            worker(ctx).call(_disable_ipv6, _sysctl_path("ipv6/conf/{dev}/disable_ipv6", name))
            ch.set_link(index=index, name=name, up=True, alias=VIFWIRE_ALIAS)
        except (OSError, ValueError) as e:
            ch.del_link(name)
            raise _fail(ctx, step, f"cannot set up bridge {name}: {e}") from e
        if index:
            ch.index_cache[name] = index  # for the master step that follows
        return _undo_delete(ch, name)

    @staticmethod
    def _existing(ctx: HostContext, step: Step, ch: Channel, link: Link, mtu: int | None) -> Undo | None:
        name = link.name
        if link.kind != "bridge":
            raise _fail(ctx, step, f"{name} exists and is a {link.kind or 'plain'} device, not a bridge")
        ch.index_cache[name] = link.index
        try:
            if link.alias == VIFWIRE_ALIAS:
                # ours (e.g. left by a crash): make it exactly as planned
                undos = [_fix_link(ch, link, mtu)]
                stp, fwd = link.info_u32(IFLA_BR_STP_STATE) or 0, link.info_u32(IFLA_BR_FORWARD_DELAY) or 0
                if stp or fwd:
                    _set_bridge_opts(ch, link.index, 0, 0)
                    undos.append(lambda: _set_bridge_opts(ch, link.index, fwd, stp))
                undos = [u for u in undos if u]
                if not undos:
                    return None

                def undo() -> None:
                    for fn in reversed(undos):
                        fn()
                return undo
            # somebody else's bridge: only make sure it is up
            return _fix_link(ch, link)
        except NetlinkError as e:
            raise _fail(ctx, step, f"cannot configure bridge {name}: {e}") from e

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        name = a["name"]
        ch = channel(ctx)
        try:
            if not a.get("shared"):
                ch.del_link(name)  # the port's own bridge (qbr)
                return
            link = ch.get_link(name)
            if link is None or link.kind != "bridge" or link.alias != VIFWIRE_ALIAS:
                return  # gone, or not vifwire's: never removed
            if ch.slaves(link.index):
                return  # still used by other ports
            ch.del_link(index=link.index)
            ch.forget(name)
        except NetlinkError as e:
            raise _fail(ctx, step, f"cannot remove bridge {name}: {e}") from e

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        link = channel(ctx).get_link(a["name"])
        out = _link_drift(link, a["name"], "bridge", _mtu_of(a))
        if link is not None and link.kind == "bridge" and link.alias == VIFWIRE_ALIAS:
            if link.info_u32(IFLA_BR_STP_STATE):
                out.append(f"{a['name']}: STP is on, recorded off")
            fd = link.info_u32(IFLA_BR_FORWARD_DELAY)
            if fd:
                out.append(f"{a['name']}: forward_delay is {fd}, recorded 0")
        return out


# ---------------------------------------------------------------------------
# master


class MasterHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, master = a["name"], a["master"]
        ch = channel(ctx)
        try:
            midx = ch.index_of(master)
            if midx is None:
                raise _fail(ctx, step, f"master {master} does not exist")
            if name in ch.fresh:
                old = 0  # created by us in this run and never enslaved
            else:
                link = ch.get_link(name)
                if link is None:
                    raise _fail(ctx, step, f"{name} does not exist")
                if link.master == midx:
                    return None
                old = link.master
            try:
                ch.set_link(name, master=midx)
            except NetlinkError as e:
                if e.errno not in (errno.ENODEV, errno.EINVAL):
                    raise
                midx = ch.index_of(master, refresh=True)  # stale cached index?
                if midx is None:
                    raise _fail(ctx, step, f"master {master} does not exist") from e
                ch.set_link(name, master=midx)
        except NetlinkError as e:
            raise _fail(ctx, step, f"cannot enslave {name} to {master}: {e}") from e
        ch.fresh.discard(name)

        def undo() -> None:
            try:
                ch.set_link(name, master=old)
            except NetlinkError as e:
                if e.errno != errno.ENODEV:
                    raise
        return undo

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        ch = channel(ctx)
        try:
            link = ch.get_link(a["name"])
            if link is None or not link.master:
                return
            midx = ch.index_of(a["master"])
            if midx != link.master:
                midx = ch.index_of(a["master"], refresh=True)
            if midx is not None and link.master == midx:
                ch.set_link(index=link.index, master=0)
        except NetlinkError as e:
            raise _fail(ctx, step, f"cannot release {a['name']}: {e}") from e

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        ch = channel(ctx)
        link = ch.get_link(a["name"])
        if link is None:
            return [f"{a['name']}: missing"]
        midx = ch.index_of(a["master"], refresh=True)
        if midx is None:
            return [f"{a['name']}: master {a['master']} is missing"]
        if link.master != midx:
            other = ch.get_link(index=link.master) if link.master else None
            cur = other.name if other else "none"
            return [f"{a['name']}: master is {cur}, recorded {a['master']}"]
        return []


# ---------------------------------------------------------------------------
# macvtap


class MacvtapHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, source, mtu, mac = a["name"], a["source"], _mtu_of(a), a.get("mac")
        mode_name = (a.get("mode") or "vepa").lower()
        if mode_name not in MACVLAN_MODES:
            raise _fail(ctx, step, f"unknown macvtap mode {mode_name!r} (known: {', '.join(MACVLAN_MODES)})")
        mode = MACVLAN_MODES[mode_name]
        ch = channel(ctx)
        try:
            sidx = ch.index_of(source)
            if sidx is None:
                raise _fail(ctx, step, f"source {source} does not exist")
            for attempt in range(3):
                try:
                    ch.new_link(self._body(name, sidx, mode, mtu, mac))
                    break
                except NetlinkError as e:
                    if e.errno == errno.ENODEV and attempt == 0:
                        sidx = ch.index_of(source, refresh=True)  # stale cache
                        if sidx is None:
                            raise _fail(ctx, step, f"source {source} does not exist") from e
                        continue
                    if e.errno != errno.EEXIST or attempt == 2:
                        raise
                link = ch.get_link(name)
                if link is not None and link.kind == "macvtap" and link.link == sidx \
                        and link.info_u32(IFLA_MACVLAN_MODE) == mode:
                    return _fix_link(ch, link, mtu, mac)
                ch.del_link(name)
        except (NetlinkError, ValueError) as e:
            raise _fail(ctx, step, f"cannot create macvtap {name} on {source}: {e}") from e
        ch.fresh.add(name)
        return _undo_delete(ch, name)

    @staticmethod
    def _body(name: str, sidx: int, mode: int, mtu: int | None, mac: str | None) -> bytes:
        attrs = _str(IFLA_IFNAME, name) + _u32(IFLA_LINK, sidx)
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        if mac:
            attrs += _attr(IFLA_ADDRESS, _mac(mac))
        attrs += _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "macvtap")
                       + _attr(IFLA_INFO_DATA, _u32(IFLA_MACVLAN_MODE, mode)))
        return _ifi(0, IFF_UP, IFF_UP) + attrs

    def remove(self, step: Step, ctx: HostContext) -> None:
        _remove_link(ctx, step, step.args["name"], step.args.get("mac"), ("macvtap",))

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        ch = channel(ctx)
        link = ch.get_link(a["name"])
        out = _link_drift(link, a["name"], "macvtap", _mtu_of(a), a.get("mac"))
        if link is not None and link.kind == "macvtap":
            sidx = ch.index_of(a["source"], refresh=True)
            if link.link != sidx:
                out.append(f"{a['name']}: not on {a['source']}")
            mode = MACVLAN_MODES.get((a.get("mode") or "vepa").lower())
            if link.info_u32(IFLA_MACVLAN_MODE) != mode:
                names = {v: k for k, v in MACVLAN_MODES.items()}
                out.append(f"{a['name']}: mode is {names.get(link.info_u32(IFLA_MACVLAN_MODE) or 0)}, "
                           f"recorded {a.get('mode')}")
        return out


# ---------------------------------------------------------------------------
# vlan


NO_8021Q = "kernel has no 802.1Q VLAN support (module 8021q)"


class VlanHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, parent, vid = a["name"], a["parent"], int(a["vlan_id"])
        ch = channel(ctx)
        try:
            pidx = ch.index_of(parent, refresh=True)
            if pidx is None:
                raise _fail(ctx, step, f"parent {parent} does not exist")
            body = _ifi(0, IFF_UP, IFF_UP) + _str(IFLA_IFNAME, name) + _u32(IFLA_LINK, pidx) + _attr(
                IFLA_LINKINFO, _str(IFLA_INFO_KIND, "vlan")
                + _attr(IFLA_INFO_DATA, _attr(IFLA_VLAN_ID, struct.pack("=H", vid))))
            for attempt in range(2):
                try:
                    ch.new_link(body)
                    break
                except NetlinkError as e:
                    if e.errno == errno.EOPNOTSUPP:
                        raise _fail(ctx, step, NO_8021Q) from e
                    if e.errno != errno.EEXIST or attempt == 1:
                        raise
                link = ch.get_link(name)
                if link is not None and link.kind == "vlan" and link.link == pidx and \
                        link.info_data.get(IFLA_VLAN_ID, b"")[:2] == struct.pack("=H", vid):
                    return _fix_link(ch, link)
                ch.del_link(name)
        except NetlinkError as e:
            raise _fail(ctx, step, f"cannot create VLAN {name} on {parent}: {e}") from e
        ch.fresh.add(name)
        return _undo_delete(ch, name)

    def remove(self, step: Step, ctx: HostContext) -> None:
        _remove_link(ctx, step, step.args["name"], None, ("vlan",))

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        return _link_drift(channel(ctx).get_link(a["name"]), a["name"], "vlan")


# ---------------------------------------------------------------------------
# require_link


class RequireLinkHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        if channel(ctx).get_link(a["name"]) is None:
            why = f" ({a['why']})" if a.get("why") else ""
            raise _fail(ctx, step, f"{a['name']}{why} does not exist")
        return None

    def remove(self, step: Step, ctx: HostContext) -> None:
        return None

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        return [] if channel(ctx).get_link(a["name"]) is not None else [f"{a['name']}: missing"]


# ---------------------------------------------------------------------------
# routes


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("/", 1)[0])


def _route_body(addr, oif: int | None, proto: int = VIFWIRE_RTPROT, scope: int = RT_SCOPE_LINK,
                flags: int = 0) -> bytes:
    fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    plen = addr.max_prefixlen
    body = _RTM.pack(fam, plen, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST, flags)
    body += _attr(RTA_DST, addr.packed) + _u32(RTA_TABLE, RT_TABLE_MAIN)
    if oif:
        body += _u32(RTA_OIF, oif)
    return body


@dataclass
class _Route:
    dst_len: int
    proto: int
    oif: int


def _route_lookup(ch: Channel, addr) -> _Route | None:
    """The FIB entry that matches ``addr`` exactly (RTM_F_FIB_MATCH)."""
    fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    body = _RTM.pack(fam, addr.max_prefixlen, 0, 0, 0, 0, 0, 0, RTM_F_FIB_MATCH) + _attr(RTA_DST, addr.packed)
    try:
        out = ch.request(RTM_GETROUTE, 0, body)
    except NetlinkError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ESRCH, errno.ENOENT):
            return None
        raise
    if not out:
        return None
    _f, dst_len, _s, _t, _tb, proto, _sc, rtype, _fl = _RTM.unpack_from(out[0])
    a = _attrs(out[0], _RTM.size)
    oif = struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else 0
    if rtype != RTN_UNICAST:
        return None
    return _Route(dst_len, proto, oif)


class RoutesHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        dev = a["dev"]
        ch = channel(ctx)
        added: list = []

        def undo() -> None:
            for addr in reversed(added):
                try:
                    ch.request(RTM_DELROUTE, 0, _route_body(addr, None))
                except NetlinkError as e:
                    if e.errno not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                        raise
        try:
            oif = ch.index_of(dev, refresh=True)
            if oif is None:
                raise _fail(ctx, step, f"device {dev} does not exist")
            for text in a.get("addresses", []):
                addr = _ip(text)
                try:
                    ch.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, _route_body(addr, oif))
                    added.append(addr)
                    continue
                except NetlinkError as e:
                    if e.errno != errno.EEXIST:
                        raise
                cur = _route_lookup(ch, addr)
                if cur and cur.dst_len == addr.max_prefixlen and cur.oif == oif:
                    continue  # already there
                if cur and cur.dst_len == addr.max_prefixlen and cur.proto != VIFWIRE_RTPROT:
                    raise _fail(ctx, step, f"a route to {addr} via another device exists (protocol {cur.proto})")
                # our own stale route via another device (left by a crash): take it over
                ch.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, _route_body(addr, oif))
                added.append(addr)
        except HostError:
            undo()
            raise
        except (NetlinkError, ValueError) as e:
            undo()
            raise _fail(ctx, step, f"cannot add route via {dev}: {e}") from e
        return undo if added else None

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        ch = channel(ctx)
        oif = ch.index_of(a["dev"], refresh=True)
        if oif is None:
            return  # the routes went away with the device
        for text in a.get("addresses", []):
            addr = _ip(text)
            try:
                ch.request(RTM_DELROUTE, 0, _route_body(addr, oif))
            except NetlinkError as e:
                if e.errno not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                    raise _fail(ctx, step, f"cannot delete route to {addr}: {e}") from e

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        ch = channel(ctx)
        oif = ch.index_of(a["dev"], refresh=True)
        out = []
        for text in a.get("addresses", []):
            addr = _ip(text)
            cur = _route_lookup(ch, addr)
            if cur is None or cur.dst_len != addr.max_prefixlen or cur.proto != VIFWIRE_RTPROT:
                out.append(f"{a['dev']}: host route to {addr} is missing")
            elif cur.oif != oif:
                out.append(f"{a['dev']}: host route to {addr} goes via another device")
        return out


# ---------------------------------------------------------------------------
# sysctls


class SysctlsHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        w = worker(ctx)
        try:
            items = [(_sysctl_path(k, a.get("dev")), str(v)) for k, v in (a.get("values") or {}).items()]
            changed = w.call(_sysctl_swap, items)
        except (OSError, ValueError) as e:
            raise _fail(ctx, step, f"cannot set sysctl: {e}") from e
        if not changed:
            return None
        return lambda: w.call(_sysctl_restore, changed)

    def remove(self, step: Step, ctx: HostContext) -> None:
        return None  # per-device settings go away with the device

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        keys = list((a.get("values") or {}).items())
        paths = [_sysctl_path(k, a.get("dev")) for k, _ in keys]
        cur = worker(ctx).call(_sysctl_read_many, paths)
        out = []
        for (k, v), now in zip(keys, cur):
            if now is None:
                out.append(f"{a.get('dev')}: sysctl {k} is missing")
            elif now != str(v):
                out.append(f"{a.get('dev')}: {k.replace('{dev}', a.get('dev') or '')} is {now}, recorded {v}")
        return out


# ---------------------------------------------------------------------------
# proxy_ndp


def _v6(addresses: Iterable[str]) -> list[ipaddress.IPv6Address]:
    out = []
    for text in addresses:
        addr = _ip(text)
        if addr.version == 6:
            out.append(addr)
    return out


def _ndp_body(addr: ipaddress.IPv6Address, ifindex: int, state: int = NUD_PERMANENT) -> bytes:
    return _NDM.pack(socket.AF_INET6, ifindex, state, NTF_PROXY, 0) + _attr(NDA_DST, addr.packed)


def _ndp_present(ch: Channel, addr: ipaddress.IPv6Address, ifindex: int) -> bool:
    try:
        got = ch.request(RTM_GETNEIGH, 0, _ndp_body(addr, ifindex, state=0))
    except NetlinkError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV):
            return False
        raise
    return bool(got) and _NDM.unpack_from(got[0])[1] == ifindex


class ProxyNdpHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        ch = channel(ctx)
        added: list = []

        def undo() -> None:
            for addr, idx in reversed(added):
                try:
                    ch.request(RTM_DELNEIGH, 0, _ndp_body(addr, idx))
                except NetlinkError as e:
                    if e.errno not in (errno.ENOENT, errno.ENODEV):
                        raise
        try:
            idx = ch.index_of(a["dev"], refresh=True)
            if idx is None:
                raise _fail(ctx, step, f"device {a['dev']} does not exist")
            for addr in _v6(a.get("addresses", [])):
                # the kernel does not report EEXIST for proxy entries: ask first
                if _ndp_present(ch, addr, idx):
                    continue
                ch.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, _ndp_body(addr, idx))
                added.append((addr, idx))
        except HostError:
            undo()
            raise
        except (NetlinkError, ValueError) as e:
            undo()
            raise _fail(ctx, step, f"cannot add proxy NDP entry on {a['dev']}: {e}") from e
        return undo if added else None

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        ch = channel(ctx)
        idx = ch.index_of(a["dev"], refresh=True)
        if idx is None:
            return  # proxy entries die with their device
        for addr in _v6(a.get("addresses", [])):
            try:
                ch.request(RTM_DELNEIGH, 0, _ndp_body(addr, idx))
            except NetlinkError as e:
                if e.errno not in (errno.ENOENT, errno.ENODEV):
                    raise _fail(ctx, step, f"cannot delete proxy NDP entry {addr}: {e}") from e

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        a = step.args
        ch = channel(ctx)
        idx = ch.index_of(a["dev"], refresh=True)
        out = []
        for addr in _v6(a.get("addresses", [])):
            if idx is None or not _ndp_present(ch, addr, idx):
                out.append(f"{a['dev']}: proxy NDP entry for {addr} is missing")
        return out


# ---------------------------------------------------------------------------
# bulk removal


def _delete_as_group(ch: Channel, names: list[str]) -> None:
    """Move ``names`` into a fresh link group and delete the group (one request)."""
    group = BULK_GROUP_BASE | (secrets.randbits(16) or 1)
    errs = ch.pipeline([(RTM_NEWLINK, 0, _ifi() + _str(IFLA_IFNAME, n) + _u32(IFLA_GROUP, group))
                        for n in names])
    if not any(e is None for e in errs):
        return  # none of them exists
    try:
        ch.request(RTM_DELLINK, 0, _ifi() + _u32(IFLA_GROUP, group))
    except NetlinkError as e:
        if e.errno not in (errno.ENODEV, errno.EOPNOTSUPP):
            raise  # EOPNOTSUPP: a link without rtnl dellink; the caller's sweep gets it


#: Bridges deleted per group request. Every bridge deletion waits for a full
#: RCU grace period (``br_multicast_dev_del()`` ends in ``rcu_barrier()``),
#: under RTNL, so a group of 1000 bridges would stall every netlink user on the
#: host for ~17 s; groups of 16 (~0.3 s each) let others in between.
BULK_BRIDGE_CHUNK = 16


def remove_links_bulk(ctx: HostContext, names: list[str]) -> None:
    """Delete many links, paying the RCU grace period once.

    The links are moved into a link group (one ``RTM_NEWLINK`` each,
    pipelined, 128 per datagram) and the group is deleted with a single
    ``RTM_DELLINK`` (``ip link del group N``), which unregisters them all in one
    batch. Bridges among ``names`` (found with one kernel-filtered dump) go
    :data:`BULK_BRIDGE_CHUNK` at a time, after the rest. Absent names are
    fine; whatever survives is deleted one by one. Deleting one end of a veth
    deletes the pair.
    """
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        return
    ch = channel(ctx)
    for n in names:
        ch.forget(n)
    try:
        bridges: list[str] = []
        if len(names) > BULK_BRIDGE_CHUNK:
            wanted = set(names)
            kind = _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge"))
            bridges = [l.name for l in ch.links(kind) if l.name in wanted]
        plain = [n for n in names if n not in set(bridges)]
        if plain:
            _delete_as_group(ch, plain)
        for i in range(0, len(bridges), BULK_BRIDGE_CHUNK):
            _delete_as_group(ch, bridges[i:i + BULK_BRIDGE_CHUNK])
        # whatever is still there (a race, or the group delete balked):
        # a no-op RTM_NEWLINK by name answers ENODEV for the ones that are gone
        left = [n for n, e in zip(names, ch.pipeline(
            [(RTM_NEWLINK, 0, _ifi() + _str(IFLA_IFNAME, n)) for n in names])) if e is None]
        for n in left:
            ch.del_link(n)
    except NetlinkError as e:
        raise HostError(ctx.port_id, "bulk remove", f"cannot delete links: {e}") from e


# ---------------------------------------------------------------------------

HANDLER_CLASSES = {
    "tap": TapHandler, "veth": VethHandler, "bridge": BridgeHandler, "master": MasterHandler,
    "macvtap": MacvtapHandler, "vlan": VlanHandler, "require_link": RequireLinkHandler,
    "routes": RoutesHandler, "sysctls": SysctlsHandler, "proxy_ndp": ProxyNdpHandler,
}

for _op, _cls in HANDLER_CLASSES.items():
    register(_op, _cls())


# ---------------------------------------------------------------------------
# gc: what carries vifwire's marks but no attachment owns

#: Name prefixes of the devices vifwire makes for a port (Nova/os-vif/nova-lxd names).
GC_PREFIXES = ("tap", "tin", "qbr", "qvb", "qvo")


def garbage(ctx: HostContext, owned: dict[str, set]) -> list[dict[str, str]]:
    """Links named like vifwire's that no record owns, and vifwire-protocol routes.

    Links are recognised by name prefix (as the issue asks), so on a host
    shared with another plugging agent review the list before ``--force``.
    A veth whose peer is owned (the ``tin`` of an owned ``tap``) is not
    garbage; a bridge is garbage only if vifwire created it (alias) or it
    is a per-port ``qbr``.
    """
    ch = channel(ctx)
    links = ch.links()
    by_index = {l.index: l for l in links}
    owned_links = owned.get("links", set())
    out: list[dict[str, str]] = []
    for l in links:
        if not l.name.startswith(GC_PREFIXES) or l.name in owned_links:
            continue
        peer = by_index.get(l.link) if l.kind == "veth" and l.link_netnsid is None else None
        if peer is not None and peer.name in owned_links:
            continue
        if l.kind == "bridge" and not (l.name.startswith("qbr") or l.alias == VIFWIRE_ALIAS):
            continue
        out.append({"kind": "link", "name": l.name})
    names = {l.index: l.name for l in links}
    owned_routes = owned.get("routes")
    for fam in (socket.AF_INET, socket.AF_INET6):
        for payload in ch.dump(RTM_GETROUTE, _RTM.pack(fam, 0, 0, 0, 0, 0, 0, 0, 0)):
            _f, dst_len, _s, _t, table, proto, _sc, _rt, _fl = _RTM.unpack_from(payload)
            if proto != VIFWIRE_RTPROT:
                continue
            a = _attrs(payload, _RTM.size)
            if (struct.unpack("=I", a[RTA_TABLE])[0] if RTA_TABLE in a else table) != RT_TABLE_MAIN:
                continue
            if RTA_DST not in a:
                continue
            dst = str(ipaddress.ip_address(bytes(a[RTA_DST])))
            dev = names.get(struct.unpack("=I", a[RTA_OIF])[0]) if RTA_OIF in a else None
            if owned_routes is not None and (dev, dst) in owned_routes:
                continue
            if owned_routes is None and dev in owned_links:
                continue
            out.append({"kind": "route", "name": f"{dst}/{dst_len}", "dev": dev or ""})
    return out


def remove_garbage(ctx: HostContext, items: list[dict[str, str]]) -> None:
    ch = channel(ctx)
    for it in items:
        if it.get("kind") != "route":
            continue
        addr = ipaddress.ip_interface(it["name"]).ip
        oif = ch.index_of(it["dev"], refresh=True) if it.get("dev") else None
        try:
            ch.request(RTM_DELROUTE, 0, _route_body(addr, oif))
        except NetlinkError as e:
            if e.errno not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise HostError(ctx.port_id, "gc", f"cannot delete route {it['name']}: {e}") from e
    links = [it["name"] for it in items if it.get("kind") == "link"]
    if links:
        remove_links_bulk(ctx, links)
