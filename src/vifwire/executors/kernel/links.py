"""Kernel links: the ``tap``, ``veth``, ``bridge``, ``master``, ``macvtap``,
``vlan`` and ``require_link`` steps (args: :mod:`vifwire.planner.plan`).

Every change is one netlink request naming the link (``ifi_index=0`` +
``IFLA_IFNAME``), never a dump; a name already taken is looked at and either
adopted (it is what the plan wants, e.g. left by a crash) or replaced. Each
``apply`` returns an undo of exactly what it changed. Unplug of a link named
by an older version falls back to :func:`~vifwire.executors.kernel.bulk.find_by_mac`
(docs/architecture.md, "Containers").
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.common import (
    VIFWIRE_ALIAS, KernelView, ViewVerifier, chain, channel, fail, fix_link, link_drift, log,
    mtu_of, undo_delete, worker,
)
from vifwire.executors.kernel.bulk import remove_link, remove_own_links
from vifwire.executors.kernel.sysctl import disable_ipv6, sysctl_path
from vifwire.netlink.channel import (
    Channel, Link, NetlinkError, attr, ifinfo, mac_bytes, str_attr, u32,
)
from vifwire.netlink.constants import (
    IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_TUN_EXCL, IFF_UP, IFF_VNET_HDR, IFLA_ADDRESS,
    IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND,
    IFLA_LINK, IFLA_LINKINFO, IFLA_MACVLAN_MODE, IFLA_MTU, IFLA_NET_NS_FD, IFLA_TUN_MULTI_QUEUE,
    IFLA_TUN_TYPE, IFLA_VLAN_ID, MACVLAN_MODES, RTM_NEWLINK, TUNSETIFF, TUNSETPERSIST, VETH_INFO_PEER,
)
from vifwire.netlink.netns import netns_file
from vifwire.planner.plan import Step

NO_8021Q = "kernel has no 802.1Q VLAN support (module 8021q)"


# ---------------------------------------------------------------------------
# tap (linux/if_tun.h; Documentation/networking/tuntap.rst)


def _tun_create(ctx: HostContext, name: str, multiqueue: bool) -> None:
    """Create a persistent tap; EBUSY if the name is taken (IFF_TUN_EXCL)."""
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if multiqueue else 0)
    fd = worker(ctx).tun_fd()
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("=16sH22x", name.encode(), flags | IFF_TUN_EXCL))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _is_wanted_tap(link: Link, multiqueue: bool) -> bool:
    if link.kind != "tun" or link.info_u8(IFLA_TUN_TYPE) != IFF_TAP:
        return False
    mq = link.info_u8(IFLA_TUN_MULTI_QUEUE)
    return mq is None or bool(mq) == bool(multiqueue)


class TapHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, mac, mtu, mq = a["name"], a.get("mac"), mtu_of(a), bool(a.get("multiqueue"))
        ch = channel(ctx)
        try:
            _tun_create(ctx, name, mq)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise fail(ctx, step, f"cannot create tap {name}: {e.strerror}") from e
            link = ch.get_link(name)
            if link is not None and _is_wanted_tap(link, mq):
                try:
                    return fix_link(ch, link, mtu, mac)
                except (NetlinkError, ValueError) as e2:
                    raise fail(ctx, step, f"cannot configure {name}: {e2}") from e2
            # a leftover of the wrong kind (or wrong queue mode): replace it
            try:
                ch.del_link(name)
                _tun_create(ctx, name, mq)
            except OSError as e2:
                raise fail(ctx, step, f"cannot replace leftover {name}: {e2.strerror}") from e2
            log.debug("tap %s: replaced a leftover", name)
        try:
            ch.set_link(name, up=True, mtu=mtu, address=mac)
        except (NetlinkError, ValueError) as e:
            ch.del_link(name)
            raise fail(ctx, step, f"cannot configure {name}: {e}") from e
        ch.fresh.add(name)
        log.debug("tap %s created", name)
        return undo_delete(ch, name)

    def remove(self, step: Step, ctx: HostContext) -> None:
        remove_link(ctx, step, step.args["name"], step.args.get("mac"), ("tun",))

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        remove_own_links(ctx, steps, ("tun",))

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        link = view.link(a["name"])
        out = link_drift(link, a["name"], "tun", mtu_of(a), a.get("mac"))
        if link is not None and link.kind == "tun" and not _is_wanted_tap(link, bool(a.get("multiqueue"))):
            out.append(f"{a['name']}: not a {'multi-queue ' if a.get('multiqueue') else ''}tap")
        return out


# ---------------------------------------------------------------------------
# veth (Documentation/networking/veth.rst via ip-link(8) "veth")


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

    def __enter__(self) -> "_PeerNs":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _veth_body(first: str, second: str, mtu: int | None, first_ns_fd: int | None = None,
               first_mac: str | None = None, second_mac: str | None = None) -> bytes:
    """A veth pair: ``first`` is created up (in ``first_ns_fd``'s namespace when
    given), ``second`` - the ``VETH_INFO_PEER`` - down in the socket's namespace.

    Only the device the request is about can be brought up in the same
    request: the peer is configured before the two are linked, and
    ``veth_open`` of an unlinked device fails with ENOTCONN.
    """
    pattrs = str_attr(IFLA_IFNAME, second) + (u32(IFLA_MTU, mtu) if mtu else b"")
    if second_mac:
        pattrs += attr(IFLA_ADDRESS, mac_bytes(second_mac))
    peer_nla = attr(VETH_INFO_PEER, ifinfo() + pattrs)
    linkinfo = attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, peer_nla))
    attrs = str_attr(IFLA_IFNAME, first) + (u32(IFLA_MTU, mtu) if mtu else b"")
    if first_mac:
        attrs += attr(IFLA_ADDRESS, mac_bytes(first_mac))
    if first_ns_fd is not None:
        attrs += u32(IFLA_NET_NS_FD, first_ns_fd)
    return ifinfo(0, IFF_UP, IFF_UP) + attrs + linkinfo


class VethHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, peer, mtu = a["name"], a["peer"], mtu_of(a)
        ch = channel(ctx)
        try:
            with _PeerNs(ch, a.get("peer_netns")) as pns:
                return self._apply(step, ch, pns, name, peer, mtu)
        except FileNotFoundError as e:
            raise fail(ctx, step, f"peer namespace {a.get('peer_netns')} does not exist") from e
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot create veth {name}/{peer}: {e}") from e

    def _apply(self, step: Step, ch: Channel, pns: _PeerNs,
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
            log.debug("veth %s/%s: removed a leftover", name, peer)
        try:
            ch.set_link(later, up=True)
        except NetlinkError:
            ch.del_link(name)
            raise
        ch.fresh.add(name)
        if pns.fd is None:
            ch.fresh.add(peer)
        log.debug("veth %s/%s created", name, peer)
        return undo_delete(ch, name)

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
        undos = [fix_link(ch, host, mtu)]
        if host.link_netnsid is None:
            # the peer is here too (the guest end in another namespace is the
            # guest's business once created; it was created up, with its MAC)
            other = ch.get_link(index=host.link)
            if other is not None:
                undos.append(fix_link(ch, other, mtu, peer_mac))
        return chain(undos)

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        also = () if a.get("peer_netns") else (a["peer"],)
        remove_link(ctx, step, a["name"], a.get("mac"), ("veth",), also)

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        remove_own_links(ctx, steps, ("veth",))

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        link = view.link(a["name"])
        # no MAC check: ``mac`` only helps unplug find a renamed pair
        out = link_drift(link, a["name"], "veth", mtu_of(a))
        if link is None or link.kind != "veth":
            return out
        if not a.get("peer_netns") and link.link_netnsid is None:
            other = view.link_at(link.link)
            if other is not None and other.name != a["peer"]:
                out.append(f"{a['name']}: peer is {other.name}, recorded {a['peer']}")
            elif other is not None:
                out += link_drift(other, a["peer"], None, mtu_of(a), a.get("peer_mac"))
        return out


# ---------------------------------------------------------------------------
# bridge (ip-link(8) "bridge"; linux/if_link.h IFLA_BR_*)


def _bridge_body(name: str, mtu: int | None) -> bytes:
    # Created down; IFLA_IFALIAS would be ignored here (the kernel only applies
    # it to existing links), so it goes with the "up" that follows.
    data = u32(IFLA_BR_FORWARD_DELAY, 0) + u32(IFLA_BR_STP_STATE, 0)
    attrs = (str_attr(IFLA_IFNAME, name) + (u32(IFLA_MTU, mtu) if mtu else b"")
             + attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "bridge") + attr(IFLA_INFO_DATA, data)))
    return ifinfo() + attrs


def _set_bridge_opts(ch: Channel, index: int, forward_delay: int, stp: int) -> None:
    # With STP on the kernel only accepts forward delays of 2-30 s, and it
    # applies IFLA_BR_FORWARD_DELAY before IFLA_BR_STP_STATE: STP goes off
    # first, or on last.
    def send(kind: int, value: int) -> None:
        ch.request(RTM_NEWLINK, 0, ifinfo(index) + attr(
            IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "bridge") + attr(IFLA_INFO_DATA, u32(kind, value))))
    order = [(IFLA_BR_FORWARD_DELAY, forward_delay), (IFLA_BR_STP_STATE, stp)]
    for kind, value in (order if stp else order[::-1]):
        send(kind, value)


class BridgeHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, mtu = a["name"], mtu_of(a)
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
                raise fail(ctx, step, f"cannot create bridge {name}: {e}") from e
            link = ch.get_link(name)
            if link is None:
                raise fail(ctx, step, f"bridge {name} vanished while being created") from e
            return self._existing(ctx, step, ch, link, mtu)
        try:
            # IPv6 off before the bridge is ever up; then mark it ours and up
            worker(ctx).call(disable_ipv6, sysctl_path("ipv6/conf/{dev}/disable_ipv6", name))
            ch.set_link(index=index, name=name, up=True, alias=VIFWIRE_ALIAS)
        except (OSError, ValueError) as e:
            ch.del_link(name)
            raise fail(ctx, step, f"cannot set up bridge {name}: {e}") from e
        if index:
            ch.index_cache[name] = index  # for the master step that follows
        log.debug("bridge %s created", name)
        return undo_delete(ch, name)

    @staticmethod
    def _existing(ctx: HostContext, step: Step, ch: Channel, link: Link, mtu: int | None) -> Undo | None:
        name = link.name
        if link.kind != "bridge":
            raise fail(ctx, step, f"{name} exists and is a {link.kind or 'plain'} device, not a bridge")
        ch.index_cache[name] = link.index
        try:
            if link.alias != VIFWIRE_ALIAS:
                return fix_link(ch, link)  # somebody else's bridge: only make sure it is up
            # ours (e.g. left by a crash): make it exactly as planned
            undos = [fix_link(ch, link, mtu)]
            stp, fwd = link.info_u32(IFLA_BR_STP_STATE) or 0, link.info_u32(IFLA_BR_FORWARD_DELAY) or 0
            if stp or fwd:
                _set_bridge_opts(ch, link.index, 0, 0)
                log.debug("bridge %s: STP and forward delay reset", name)
                undos.append(lambda: _set_bridge_opts(ch, link.index, fwd, stp))
            return chain(undos)
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot configure bridge {name}: {e}") from e

    def remove(self, step: Step, ctx: HostContext) -> None:
        a = step.args
        name = a["name"]
        ch = channel(ctx)
        try:
            if not a.get("shared"):
                if ch.del_link(name):  # the port's own bridge (qbr)
                    log.debug("bridge %s deleted", name)
                return
            link = ch.get_link(name)
            if link is None or link.kind != "bridge" or link.alias != VIFWIRE_ALIAS:
                return  # gone, or not vifwire's: never removed
            if ch.slaves(link.index):
                return  # still used by other ports
            ch.del_link(index=link.index)
            ch.forget(name)
            log.debug("shared bridge %s deleted (no ports left)", name)
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot remove bridge {name}: {e}") from e

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        link = view.link(a["name"])
        out = link_drift(link, a["name"], "bridge", mtu_of(a))
        if link is not None and link.kind == "bridge" and link.alias == VIFWIRE_ALIAS:
            if link.info_u32(IFLA_BR_STP_STATE):
                out.append(f"{a['name']}: STP is on, recorded off")
            fd = link.info_u32(IFLA_BR_FORWARD_DELAY)
            if fd:
                out.append(f"{a['name']}: forward_delay is {fd}, recorded 0")
        return out


# ---------------------------------------------------------------------------
# master


class MasterHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, master = a["name"], a["master"]
        ch = channel(ctx)
        try:
            midx = ch.index_of(master)
            if midx is None:
                raise fail(ctx, step, f"master {master} does not exist")
            if name in ch.fresh:
                old = 0  # created by us in this run and never enslaved
            else:
                link = ch.get_link(name)
                if link is None:
                    raise fail(ctx, step, f"{name} does not exist")
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
                    raise fail(ctx, step, f"master {master} does not exist") from e
                ch.set_link(name, master=midx)
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot enslave {name} to {master}: {e}") from e
        ch.fresh.discard(name)
        log.debug("%s enslaved to %s", name, master)

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
                log.debug("%s released from %s", a["name"], a["master"])
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot release {a['name']}: {e}") from e

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        link = view.link(a["name"])
        if link is None:
            return [f"{a['name']}: missing"]
        midx = view.index_of(a["master"])
        if midx is None:
            return [f"{a['name']}: master {a['master']} is missing"]
        if link.master != midx:
            other = view.link_at(link.master)
            cur = other.name if other else "none"
            return [f"{a['name']}: master is {cur}, recorded {a['master']}"]
        return []


# ---------------------------------------------------------------------------
# macvtap (ip-link(8) "macvlan and macvtap")


class MacvtapHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, source, mtu, mac = a["name"], a["source"], mtu_of(a), a.get("mac")
        mode_name = (a.get("mode") or "vepa").lower()
        if mode_name not in MACVLAN_MODES:
            raise fail(ctx, step, f"unknown macvtap mode {mode_name!r} (known: {', '.join(MACVLAN_MODES)})")
        mode = MACVLAN_MODES[mode_name]
        ch = channel(ctx)
        try:
            sidx = ch.index_of(source)
            if sidx is None:
                raise fail(ctx, step, f"source {source} does not exist")
            for attempt in range(3):
                try:
                    ch.new_link(self._body(name, sidx, mode, mtu, mac))
                    break
                except NetlinkError as e:
                    if e.errno == errno.ENODEV and attempt == 0:
                        sidx = ch.index_of(source, refresh=True)  # stale cache
                        if sidx is None:
                            raise fail(ctx, step, f"source {source} does not exist") from e
                        continue
                    if e.errno != errno.EEXIST or attempt == 2:
                        raise
                link = ch.get_link(name)
                if link is not None and link.kind == "macvtap" and link.link == sidx \
                        and link.info_u32(IFLA_MACVLAN_MODE) == mode:
                    return fix_link(ch, link, mtu, mac)
                ch.del_link(name)
        except (NetlinkError, ValueError) as e:
            raise fail(ctx, step, f"cannot create macvtap {name} on {source}: {e}") from e
        ch.fresh.add(name)
        log.debug("macvtap %s created on %s", name, source)
        return undo_delete(ch, name)

    @staticmethod
    def _body(name: str, sidx: int, mode: int, mtu: int | None, mac: str | None) -> bytes:
        attrs = str_attr(IFLA_IFNAME, name) + u32(IFLA_LINK, sidx)
        if mtu:
            attrs += u32(IFLA_MTU, mtu)
        if mac:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        attrs += attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "macvtap")
                      + attr(IFLA_INFO_DATA, u32(IFLA_MACVLAN_MODE, mode)))
        return ifinfo(0, IFF_UP, IFF_UP) + attrs

    def remove(self, step: Step, ctx: HostContext) -> None:
        remove_link(ctx, step, step.args["name"], step.args.get("mac"), ("macvtap",))

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        remove_own_links(ctx, steps, ("macvtap",))

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        link = view.link(a["name"])
        out = link_drift(link, a["name"], "macvtap", mtu_of(a), a.get("mac"))
        if link is not None and link.kind == "macvtap":
            if link.link != view.index_of(a["source"]):
                out.append(f"{a['name']}: not on {a['source']}")
            mode = MACVLAN_MODES.get((a.get("mode") or "vepa").lower())
            if link.info_u32(IFLA_MACVLAN_MODE) != mode:
                names = {v: k for k, v in MACVLAN_MODES.items()}
                out.append(f"{a['name']}: mode is {names.get(link.info_u32(IFLA_MACVLAN_MODE) or 0)}, "
                           f"recorded {a.get('mode')}")
        return out


# ---------------------------------------------------------------------------
# vlan (ip-link(8) "vlan")


class VlanHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, parent, vid = a["name"], a["parent"], int(a["vlan_id"])
        ch = channel(ctx)
        try:
            pidx = ch.index_of(parent, refresh=True)
            if pidx is None:
                raise fail(ctx, step, f"parent {parent} does not exist")
            body = ifinfo(0, IFF_UP, IFF_UP) + str_attr(IFLA_IFNAME, name) + u32(IFLA_LINK, pidx) + attr(
                IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "vlan")
                + attr(IFLA_INFO_DATA, attr(IFLA_VLAN_ID, struct.pack("=H", vid))))
            for attempt in range(2):
                try:
                    ch.new_link(body)
                    break
                except NetlinkError as e:
                    if e.errno == errno.EOPNOTSUPP:
                        raise fail(ctx, step, NO_8021Q) from e
                    if e.errno != errno.EEXIST or attempt == 1:
                        raise
                link = ch.get_link(name)
                if link is not None and link.kind == "vlan" and link.link == pidx and \
                        link.info_data.get(IFLA_VLAN_ID, b"")[:2] == struct.pack("=H", vid):
                    return fix_link(ch, link)
                ch.del_link(name)
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot create VLAN {name} on {parent}: {e}") from e
        ch.fresh.add(name)
        log.debug("vlan %s created on %s (id %d)", name, parent, vid)
        return undo_delete(ch, name)

    def remove(self, step: Step, ctx: HostContext) -> None:
        remove_link(ctx, step, step.args["name"], None, ("vlan",))

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        return link_drift(view.link(a["name"]), a["name"], "vlan")


# ---------------------------------------------------------------------------
# require_link


class RequireLinkHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        if channel(ctx).get_link(a["name"]) is None:
            why = f" ({a['why']})" if a.get("why") else ""
            raise fail(ctx, step, f"{a['name']}{why} does not exist")
        return None

    def remove(self, step: Step, ctx: HostContext) -> None:
        return None

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        return [] if view.link(a["name"]) is not None else [f"{a['name']}: missing"]
