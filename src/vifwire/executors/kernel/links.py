"""Kernel links: the ``tap``, ``veth`` (:mod:`.veth`), ``bridge``, ``master``,
``macvtap``, ``vlan`` and ``require_link`` steps (args: :mod:`vifwire.planner.plan`).

Every change is one netlink request naming the link (``ifi_index=0`` +
``IFLA_IFNAME``), never a dump. Every link created is marked as vifwire's
(:mod:`.owner`: ``IFLA_IFALIAS`` ``vifwire:<port id>``, ``vifwire`` for
shared ones); a name already taken is repaired in place or replaced only if
it carries this port's mark (a crash leftover), and otherwise the step fails
with one line and the link is left exactly as it was. Each ``apply`` returns
an undo of exactly what it changed. Unplug deletes only marked links; a link
named by an older version is found by MAC (docs/architecture.md, "Containers").
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.common import (
    KernelView, ViewVerifier, chain, channel, fail, fix_link, link_drift, log, mtu_of, undo_delete, worker,
)
from vifwire.executors.kernel.bulk import remove_link, remove_own_links
from vifwire.executors.kernel.owner import (
    PENDING_GROUP, claim, mark_of, recorded_mark, refusal, removable, wanted_mark,
)
from vifwire.executors.kernel.sysctl import disable_ipv6, ipv6_off, sysctl_path
from vifwire.executors.kernel.veth import VethHandler
from vifwire.netlink.channel import Channel, Link, NetlinkError, attr, ifinfo, mac_bytes, str_attr, u32
from vifwire.netlink.constants import (
    IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_TUN_EXCL, IFF_UP, IFF_VNET_HDR, IFLA_ADDRESS,
    IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE, IFLA_GROUP, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND,
    IFLA_LINK, IFLA_LINKINFO, IFLA_MACVLAN_MODE, IFLA_MTU, IFLA_TUN_MULTI_QUEUE,
    IFLA_TUN_TYPE, IFLA_VLAN_ID, MACVLAN_MODES, RTM_NEWLINK, TUNSETIFF, TUNSETPERSIST,
)
from vifwire.planner.plan import Step

__all__ = ["BridgeHandler", "MacvtapHandler", "MasterHandler", "RequireLinkHandler", "TapHandler",
           "VethHandler", "VlanHandler"]

NO_8021Q = "kernel has no 802.1Q VLAN support (module 8021q)"


# ---------------------------------------------------------------------------
# tap (linux/if_tun.h; Documentation/networking/tuntap.rst)


def _tun_open(ctx: HostContext, name: str, multiqueue: bool) -> int:
    """A tun file attached to a new, not yet persistent tap; EBUSY if the name
    is taken (IFF_TUN_EXCL). Closing the file before :func:`_tun_persist`
    (or dying) makes the tap vanish."""
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if multiqueue else 0)
    fd = worker(ctx).tun_fd()
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("=16sH22x", name.encode(), flags | IFF_TUN_EXCL))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_wanted_tap(link: Link, multiqueue: bool) -> bool:
    if link.kind != "tun" or link.info_u8(IFLA_TUN_TYPE) != IFF_TAP:
        return False
    mq = link.info_u8(IFLA_TUN_MULTI_QUEUE)
    return mq is None or bool(mq) == bool(multiqueue)


class TapHandler(ViewVerifier):
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, mac, mtu, mq = a["name"], a.get("mac"), mtu_of(a), bool(a.get("multiqueue"))
        mark = wanted_mark(step, ctx.port_id)
        ch = channel(ctx)
        fd = -1
        for attempt in range(3):
            try:
                fd = _tun_open(ctx, name, mq)
                break
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 2:
                    raise fail(ctx, step, f"cannot create tap {name}: {e.strerror}") from e
            try:
                link = ch.get_link(name)
                if link is None:
                    continue  # gone meanwhile
                if not claim(ctx.port_id, step, link, mark, _is_wanted_tap(link, mq)):
                    return fix_link(ch, link, mtu, mac, mark=mark)  # this port's: repaired
                # this port's, of the wrong kind or queue mode: replaced
                ch.forget(name)
                ch.del_link(index=link.index)
                log.debug("tap %s: replaced a leftover of this port", name)
            except (NetlinkError, ValueError) as e:
                raise fail(ctx, step, f"cannot configure {name}: {e}") from e
        try:
            # configured and marked while only our file holds it: if this
            # process dies before TUNSETPERSIST, the tap goes with it. Up only
            # once our file is closed: an attached tap has carrier, and bringing
            # it up then starts IPv6 autoconfiguration (DAD, RS, MLD) on a device
            # no guest uses yet, which also makes its deletion slower.
            ch.set_link(name, mtu=mtu, address=mac, alias=mark)
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except (OSError, ValueError) as e:
            os.close(fd)
            raise fail(ctx, step, f"cannot configure {name}: {e}") from e
        os.close(fd)
        try:
            if name in (a.get("no_ipv6") or ()):
                worker(ctx).call(ipv6_off, [name])  # before it is up (docs/kernel.md, "IPv6 on")
            # Closing our file left a carrier change pending in the kernel's
            # link watch; reading the link settles it now, while the tap is
            # down, when it fires no notifier. Left pending, it is settled
            # after "up" (by the next read of the link, or the link watch's
            # own work), and then IPv6 walks its whole routing table, one
            # route per routed port: about 1.4 ms per plug at 5,000 ports
            # (docs/routed.md, "Performance").
            ch.get_link(name)
            ch.set_link(name, up=True)
        except (OSError, ValueError) as e:
            ch.del_link(name)
            raise fail(ctx, step, f"cannot bring {name} up: {e}") from e
        ch.fresh.add(name)
        log.debug("tap %s created", name)
        return undo_delete(ch, name, mark)

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
# bridge (ip-link(8) "bridge"; linux/if_link.h IFLA_BR_*)


def _bridge_body(name: str, mtu: int | None) -> bytes:
    # Created down; IFLA_IFALIAS would be ignored here (the kernel only applies
    # it to existing links), so it goes with the "up" that follows; until then
    # the bridge is in vifwire's pending group (:mod:`.owner`).
    data = u32(IFLA_BR_FORWARD_DELAY, 0) + u32(IFLA_BR_STP_STATE, 0)
    attrs = (str_attr(IFLA_IFNAME, name) + (u32(IFLA_MTU, mtu) if mtu else b"") + u32(IFLA_GROUP, PENDING_GROUP)
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
    """A shared bridge (``shared``: the network's) is marked ``vifwire``; a
    port's own (``qbr``) ``vifwire:<port id>``. An existing shared bridge
    that is not vifwire's is used as it is (only brought up) and never
    removed; an existing ``qbr`` that is not this port's fails the step."""

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, mtu = a["name"], mtu_of(a)
        mark = wanted_mark(step, ctx.port_id)
        ch = channel(ctx)
        if a.get("shared"):
            # usually there already: look before trying to create
            link = ch.get_link(name)
            if link is not None:
                return self._existing(ctx, step, ch, link, mtu, mark)
        try:
            index = ch.new_link(_bridge_body(name, mtu), echo=True)
        except NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise fail(ctx, step, f"cannot create bridge {name}: {e}") from e
            link = ch.get_link(name)
            if link is None:
                raise fail(ctx, step, f"bridge {name} vanished while being created") from e
            return self._existing(ctx, step, ch, link, mtu, mark)
        try:
            # IPv6 off before the bridge is ever up; then mark it ours and up
            worker(ctx).call(disable_ipv6, sysctl_path("ipv6/conf/{dev}/disable_ipv6", name))
            ch.set_link(index=index, name=name, up=True, alias=mark, group=0)
        except (OSError, ValueError) as e:
            ch.del_link(name)
            raise fail(ctx, step, f"cannot set up bridge {name}: {e}") from e
        if index:
            ch.index_cache[name] = index  # for the master step that follows
        log.debug("bridge %s created", name)
        return undo_delete(ch, name, mark)

    @staticmethod
    def _existing(ctx: HostContext, step: Step, ch: Channel, link: Link, mtu: int | None,
                  mark: str) -> Undo | None:
        name = link.name
        if step.args.get("shared") and mark_of(link) is None:
            if link.kind != "bridge":
                raise fail(ctx, step, f"{name} exists and is a {link.kind or 'plain'} device, not a bridge")
            ch.index_cache[name] = link.index
            try:
                return fix_link(ch, link)  # somebody else's bridge: only make sure it is up
            except NetlinkError as e:
                raise fail(ctx, step, f"cannot configure bridge {name}: {e}") from e
        if claim(ctx.port_id, step, link, mark, link.kind == "bridge"):
            raise fail(ctx, step, f"{name} exists and is a {link.kind or 'plain'} device, not a bridge")
        ch.index_cache[name] = link.index
        try:
            # ours (e.g. left by a crash): make it exactly as planned
            undos = [fix_link(ch, link, mtu, mark=mark)]
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
            link = ch.get_link(name)
            if link is None:
                return
            if not removable(link, recorded_mark(step), ("bridge",)):
                if not a.get("shared"):
                    log.warning("%s not removed: %s", name, refusal(link, recorded_mark(step)))
                return  # not vifwire's (or another port's): never removed
            if a.get("shared") and ch.slaves(link.index):
                return  # still used by other ports
            ch.forget(name)
            ch.del_link(index=link.index)
            log.debug("bridge %s deleted", name)
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot remove bridge {name}: {e}") from e

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        """Ports' own bridges in one group delete (after the ownership check of
        :func:`~.bulk.remove_own_links`); shared ones one by one (ports left?)."""
        own = [s for s in steps if not s.args.get("shared")]
        if own:
            remove_own_links(ctx, own, ("bridge",))
        for s in steps:
            if s.args.get("shared"):
                self.remove(s, ctx)

    def drift(self, step: Step, view: KernelView) -> list[str]:
        a = step.args
        link = view.link(a["name"])
        out = link_drift(link, a["name"], "bridge", mtu_of(a))
        if link is not None and link.kind == "bridge" and mark_of(link) is not None:
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
        mark = wanted_mark(step, ctx.port_id)
        ch = channel(ctx)
        try:
            sidx = ch.index_of(source)
            if sidx is None:
                raise fail(ctx, step, f"source {source} does not exist")
            # with carrier from its source at once, a macvtap created up would
            # start IPv6 before it could be disabled: then it comes up below
            off = name in (a.get("no_ipv6") or ())
            for attempt in range(3):
                try:
                    ch.new_link(self._body(name, sidx, mode, mtu, mac, up=not off))
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
                if link is None:
                    continue
                wanted = link.kind == "macvtap" and link.link == sidx and link.info_u32(IFLA_MACVLAN_MODE) == mode
                if not claim(ctx.port_id, step, link, mark, wanted):
                    return fix_link(ch, link, mtu, mac, mark=mark)
                ch.forget(name)
                ch.del_link(index=link.index)  # this port's, of the wrong shape
            try:
                if off:
                    worker(ctx).call(ipv6_off, [name])
                ch.set_link(name, alias=mark, group=0, up=True if off else None)
            except (OSError, NetlinkError):
                ch.del_link(name)
                raise
        except (OSError, NetlinkError, ValueError) as e:
            raise fail(ctx, step, f"cannot create macvtap {name} on {source}: {e}") from e
        ch.fresh.add(name)
        log.debug("macvtap %s created on %s", name, source)
        return undo_delete(ch, name, mark)

    @staticmethod
    def _body(name: str, sidx: int, mode: int, mtu: int | None, mac: str | None, up: bool = True) -> bytes:
        attrs = str_attr(IFLA_IFNAME, name) + u32(IFLA_LINK, sidx)
        if mtu:
            attrs += u32(IFLA_MTU, mtu)
        if mac:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        attrs += u32(IFLA_GROUP, PENDING_GROUP)  # until marked (:mod:`.owner`)
        attrs += attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "macvtap")
                      + attr(IFLA_INFO_DATA, u32(IFLA_MACVLAN_MODE, mode)))
        return (ifinfo(0, IFF_UP, IFF_UP) if up else ifinfo()) + attrs

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
    """A VLAN sub-interface is shared by the ports of a network: marked
    ``vifwire``. One that exists as wanted but is not vifwire's is used as
    it is (brought up) and never removed; of another shape, the step fails."""

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, parent, vid = a["name"], a["parent"], int(a["vlan_id"])
        mark = wanted_mark(step, ctx.port_id)
        ch = channel(ctx)
        try:
            pidx = ch.index_of(parent, refresh=True)
            if pidx is None:
                raise fail(ctx, step, f"parent {parent} does not exist")
            body = ifinfo(0, IFF_UP, IFF_UP) + str_attr(IFLA_IFNAME, name) + u32(IFLA_LINK, pidx) + u32(
                IFLA_GROUP, PENDING_GROUP) + attr(IFLA_LINKINFO, str_attr(IFLA_INFO_KIND, "vlan")
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
                if link is None:
                    continue
                wanted = link.kind == "vlan" and link.link == pidx and \
                    link.info_data.get(IFLA_VLAN_ID, b"")[:2] == struct.pack("=H", vid)
                if wanted and mark_of(link) is None:
                    return fix_link(ch, link)  # the admin's VLAN: used, not taken over
                if not claim(ctx.port_id, step, link, mark, wanted):
                    return fix_link(ch, link, mark=mark)
                ch.forget(name)
                ch.del_link(index=link.index)
            try:
                ch.set_link(name, alias=mark, group=0)
            except NetlinkError:
                ch.del_link(name)
                raise
        except NetlinkError as e:
            raise fail(ctx, step, f"cannot create VLAN {name} on {parent}: {e}") from e
        ch.fresh.add(name)
        log.debug("vlan %s created on %s (id %d)", name, parent, vid)
        return undo_delete(ch, name, mark)

    def remove(self, step: Step, ctx: HostContext) -> None:
        remove_link(ctx, step, step.args["name"], None, ("vlan",))

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        remove_own_links(ctx, steps, ("vlan",))

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
