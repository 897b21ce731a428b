"""The ``veth`` step (args: :mod:`vifwire.planner.plan`; ip-link(8) "veth").

The ends on the host are created in :data:`~.owner.PENDING_GROUP` and marked
``vifwire:<port id>`` by the pipelined requests that follow (one round trip);
the guest end, made directly in the guest's namespace, is the guest's and is
not marked. A name already taken is repaired or replaced only if it carries
this port's mark (:func:`~.owner.claim`); anything else fails the step and
is left as it is. Listed in :mod:`vifwire.executors.registry` through
:mod:`.links`.
"""

from __future__ import annotations

import errno
import os

from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.bulk import remove_link, remove_own_links
from vifwire.executors.kernel.common import (
    KernelView, ViewVerifier, chain, channel, fail, fix_link, link_drift, log, mtu_of, undo_delete, worker,
)
from vifwire.executors.kernel.owner import PENDING_GROUP, claim, wanted_mark
from vifwire.executors.kernel.sysctl import ipv6_off
from vifwire.netlink.channel import Channel, Link, NetlinkError, attr, ifinfo, mac_bytes, str_attr, u32
from vifwire.netlink.constants import (
    IFF_UP, IFLA_ADDRESS, IFLA_GROUP, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO,
    IFLA_MTU, IFLA_NET_NS_FD, RTM_NEWLINK, VETH_INFO_PEER,
)
from vifwire.netlink.netns import netns_file
from vifwire.planner.plan import Step


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
    ``veth_open`` of an unlinked device fails with ENOTCONN. The ends made
    in this namespace go in :data:`~.owner.PENDING_GROUP` until marked.
    """
    pending = u32(IFLA_GROUP, PENDING_GROUP)
    pattrs = str_attr(IFLA_IFNAME, second) + (u32(IFLA_MTU, mtu) if mtu else b"") + pending
    if second_mac:
        pattrs += attr(IFLA_ADDRESS, mac_bytes(second_mac))
    peer_nla = attr(VETH_INFO_PEER, ifinfo() + pattrs)
    linkinfo = attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, peer_nla))
    attrs = str_attr(IFLA_IFNAME, first) + (u32(IFLA_MTU, mtu) if mtu else b"")
    if first_mac:
        attrs += attr(IFLA_ADDRESS, mac_bytes(first_mac))
    if first_ns_fd is not None:
        attrs += u32(IFLA_NET_NS_FD, first_ns_fd)
    else:
        attrs += pending
    return ifinfo(0, IFF_UP, IFF_UP) + attrs + linkinfo


class VethHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        ch = channel(ctx)
        try:
            with _PeerNs(ch, a.get("peer_netns")) as pns:
                return self._apply(step, ctx, ch, pns)
        except FileNotFoundError as e:
            raise fail(ctx, step, f"peer namespace {a.get('peer_netns')} does not exist") from e
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot create veth {a['name']}/{a['peer']}: {e}") from e

    def _apply(self, step: Step, ctx: HostContext, ch: Channel, pns: _PeerNs) -> Undo | None:
        a = step.args
        name, peer, mtu = a["name"], a["peer"], mtu_of(a)
        mark = wanted_mark(step, ctx.port_id)
        guest_mac = a.get("peer_mac")  # the tin end is the guest's NIC
        host_mac = a.get("host_mac")
        if pns.fd is None:
            body, later, host_ends = (_veth_body(name, peer, mtu, first_mac=host_mac, second_mac=guest_mac), peer,
                                      [peer, name])
        else:
            # The guest end is the device of the request, created directly in
            # the guest namespace and up; the host end is its peer, made here.
            # (Bringing a device up needs a socket in its namespace: on this
            # kernel IFLA_TARGET_NETNSID on a set request *moves* the device.)
            body, later, host_ends = (_veth_body(peer, name, mtu, pns.fd, first_mac=guest_mac, second_mac=host_mac),
                                      name, [name])
        for attempt in range(3):
            try:
                ch.new_link(body)
                break
            except NetlinkError as e:
                if e.errno != errno.EEXIST or attempt == 2:
                    raise
            # something is in the way: this port's pair (crash leftover), or not ours
            host = ch.get_link(name)
            if host is not None:
                if not claim(ctx.port_id, step, host, mark, self._is_wanted(ch, pns, host, peer)):
                    return self._fix_existing(ch, host, mtu, guest_mac, mark)
                ch.forget(name)
                ch.del_link(index=host.index)
            elif pns.fd is None:
                other = ch.get_link(peer)
                if other is not None:
                    claim(ctx.port_id, step, other, mark, False)
                    ch.forget(peer)
                    ch.del_link(index=other.index)
            else:
                other = ch.get_link(peer, nsid=pns.nsid)
                if other is not None:  # never marked (the guest's), so never taken
                    raise fail(ctx, step, f"device {peer} exists in namespace {a['peer_netns']} "
                                          f"and is not vifwire's ({other.kind or 'plain'})")
            log.debug("veth %s/%s: removed a leftover of this port", name, peer)
        # IPv6 off where the plan says so, before the pair has carrier (only
        # ends in this namespace: the guest's own end is the guest's business)
        off = [n for n in a.get("no_ipv6") or () if n in host_ends]
        if off:
            try:
                worker(ctx).call(ipv6_off, off)
            except OSError as e:
                ch.del_link(name)
                raise fail(ctx, step, f"cannot disable IPv6 on {', '.join(off)}: {e.strerror}") from e
        # up (the end that is not yet) and marked: one round trip
        errs = ch.pipeline([(RTM_NEWLINK, 0, Channel.set_body(n, up=True if n == later else None,
                                                              alias=mark, group=0)) for n in host_ends])
        err = next((e for e in errs if e is not None), None)
        if err is not None:
            ch.del_link(name)
            raise err
        ch.fresh.add(name)
        if pns.fd is None:
            ch.fresh.add(peer)
        log.debug("veth %s/%s created", name, peer)
        return undo_delete(ch, name, mark)

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
    def _fix_existing(ch: Channel, host: Link, mtu: int | None, peer_mac: str | None,
                      mark: str) -> Undo | None:
        undos = [fix_link(ch, host, mtu, mark=mark)]
        if host.link_netnsid is None:
            # the peer is here too (the guest end in another namespace is the
            # guest's business once created; it was created up, with its MAC)
            other = ch.get_link(index=host.link)
            if other is not None:
                undos.append(fix_link(ch, other, mtu, peer_mac, mark=mark))
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
        # ``peer_to_guest``: the guest's hypervisor (LXD) moves the peer into
        # the guest and back, and leaves it down when it returns; the plan
        # says so, and either place is right (docs/lxd.md)
        to_guest = bool(a.get("peer_to_guest"))
        if not a.get("peer_netns") and link.link_netnsid is None:
            other = view.link_at(link.link)
            if other is not None and other.name != a["peer"]:
                out.append(f"{a['name']}: peer is {other.name}, recorded {a['peer']}")
            elif other is not None:
                out += link_drift(other, a["peer"], None, mtu_of(a), a.get("peer_mac"), up=not to_guest)
        # a peer in another namespace is accepted with or without the flag:
        # records made before it existed (nova-lxd moved the tin too) stay clean
        return out
