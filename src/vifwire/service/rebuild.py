"""``vifwire state rebuild``: recreate the records from the host's ownership marks.

When the state database is lost or corrupt, what vifwire wired is still on
the host, marked (docs/operations.md, "Ownership marks"): every link a port
owns carries ``IFLA_IFALIAS`` = ``vifwire:<port id>``, its OVS rows carry
``external_ids:vifwire-owner``, its routes are protocol 158 via its devices,
and its filter entries are registered under its interface in the
anti-spoofing ``ports`` set. :func:`rebuild` moves a database that cannot be
opened as vifwire's aside (``PATH.broken-<timestamp>``, with its ``-wal`` and
``-shm``), opens a fresh one and records, per port id found, a plan whose
steps are enough to unplug it: status and strategy ``recovered`` (``check``
reports it as drift; the binding is not known), binding
``{"port_id", "recovered": true, "devname", "mac"}``.

Not recoverable, and reported as such: links marked with a hashed port id
(``vifwire:sha256:...``, for ids longer than an alias), protocol-158 routes and
filter entries on devices no mark ties to a port, and OVS rows when OVSDB
cannot be read. A database that opens fine is kept: only ports without a
record are added.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vifwire.service.locks import StateLock
from vifwire.store.base import StoreError

if TYPE_CHECKING:
    from vifwire.netlink.channel import Link
    from vifwire.planner.plan import Plan, Step
    from vifwire.executors.base import HostContext
    from vifwire.store.sqlite import SqliteStore

log = logging.getLogger("vifwire.service.rebuild")

STATUS = "recovered"
STRATEGY = "recovered"
REASON = "recovered by `vifwire state rebuild` from the host's ownership marks (binding unknown)"
_BROKEN_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


@dataclass(frozen=True)
class Unmapped:
    """Something carrying vifwire's marks that could not be tied to a port id."""

    kind: str  # link | route | proxy_ndp | filter | ovs
    name: str
    why: str

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.why}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "why": self.why}


@dataclass(frozen=True)
class RebuildResult:
    state: str
    moved_aside: list[str] = field(default_factory=list)  # where the broken files went
    recovered: list[Plan] = field(default_factory=list)  # one per port recorded
    kept: list[str] = field(default_factory=list)  # ports that had a readable record already
    unmapped: list[Unmapped] = field(default_factory=list)

    @property
    def port_ids(self) -> list[str]:
        return [p.port_id for p in self.recovered]

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "moved_aside": self.moved_aside,
                "recovered": [{"port_id": p.port_id, "devname": p.devname, "mac": p.mac,
                               "steps": [s.describe() for s in p.steps]} for p in self.recovered],
                "kept": self.kept, "unmapped": [u.to_json() for u in self.unmapped]}


# --------------------------------------------------------------------------- the store


def is_broken(exc: StoreError) -> bool:
    """Is this failure to open/read the store a database that is not usable as vifwire's
    (corrupt, not a database, foreign, wrong table) rather than a locked, unwritable or
    unsafe path (which rebuild must not touch)?"""
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        low = str(cause).lower()
        return (isinstance(code, int) and code & 0xFF in _BROKEN_CODES) or "malformed" in low \
            or "not a database" in low
    text = str(exc)
    return cause is None and (" is not vifwire's " in text or "attachments table is not the one" in text)


def open_or_replace(path: str) -> tuple[SqliteStore, list[str]]:
    """The store at ``path``, readable; a broken one is first moved aside. Returns (store, moved)."""
    from vifwire.store.sqlite import SqliteStore

    try:
        store = SqliteStore(path)
        try:
            store.all()
            return store, []
        except BaseException:
            store.close()
            raise
    except StoreError as exc:
        if not is_broken(exc):
            raise
        log.warning("%s", exc)
    moved = move_aside(path)
    return SqliteStore(path), moved


def move_aside(path: str) -> list[str]:
    """Rename ``path`` (and its ``-wal``/``-shm``) to ``path.broken-<UTC timestamp>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{path}.broken-{stamp}"
    n = 1
    while any(os.path.lexists(base + sfx) for sfx in ("", "-wal", "-shm")):
        n += 1
        base = f"{path}.broken-{stamp}.{n}"
    moved = []
    for sfx in ("", "-wal", "-shm"):
        if os.path.lexists(path + sfx):
            try:
                os.rename(path + sfx, base + sfx)
            except OSError as exc:
                raise StoreError(f"state database {path + sfx} cannot be moved aside ({exc.strerror}); "
                                 "move it yourself and run `vifwire state rebuild` again") from exc
            moved.append(base + sfx)
    return moved


# --------------------------------------------------------------------------- the survey


class _Port:
    """What the host says about one port id."""

    def __init__(self, port_id: str):
        self.port_id = port_id
        self.links: list[Link] = []
        self.steps: list[Step] = []
        self.devices: list[str] = []  # names of its own links in this namespace
        self.devname = ""
        self.mac = ""
        self.vif_type = "unknown"


def survey(ctx: HostContext) -> tuple[dict[str, _Port], list[Unmapped]]:
    """Read the marks of the handle's namespace (links, routes, proxy NDP, filters, OVS)."""
    from vifwire.executors.kernel.common import channel
    from vifwire.executors.kernel.owner import MARK_PREFIX, VIFWIRE_ALIAS, mark_of

    ch = channel(ctx)
    links = ch.links()
    by_index = {l.index: l for l in links}
    ports: dict[str, _Port] = {}
    unmapped: list[Unmapped] = []
    for l in links:
        mark = mark_of(l)
        if not mark or mark == VIFWIRE_ALIAS:
            if mark == "":
                unmapped.append(Unmapped("link", l.name, "created by vifwire but never marked (pending): "
                                                         "no port id; `vifwire gc --force` removes it"))
            continue
        owner = mark[len(MARK_PREFIX):]
        if owner.startswith("sha256:"):
            unmapped.append(Unmapped("link", l.name, "marked with a hashed port id (the id was too long "
                                                     "for an alias), which cannot be mapped back; "
                                                     "`vifwire gc --force` removes it"))
            continue
        ports.setdefault(owner, _Port(owner)).links.append(l)
    owner_of: dict[str, _Port] = {}
    for p in ports.values():
        _link_steps(p, by_index, {l.name for l in p.links}, unmapped)
        for d in p.devices:
            owner_of[d] = p
    _shared_masters(ports, by_index)
    _l3_steps(ch, by_index, owner_of, unmapped)
    _filter_steps(ctx, owner_of, unmapped)
    _ovs_steps(ctx, ports, unmapped)
    return ports, unmapped


def _link_steps(p: _Port, by_index: dict[int, Link], mine: set[str], unmapped: list[Unmapped]) -> None:
    from vifwire.planner.plan import Step, StepKind

    done: set[str] = set()
    # a pair's host end: tap* before tin*/qvo* (plug names the host end first)
    order = sorted(p.links, key=lambda l: (not l.name.startswith(("tap", "qvb")), l.name))
    for l in order:
        if l.name in done:
            continue
        done.add(l.name)
        own = {"owner": p.port_id}
        if l.kind == "tun":
            p.steps.append(Step(StepKind.TAP, {"name": l.name, **own}))
            p.devices.append(l.name)
            p.vif_type = "tap"
        elif l.kind == "veth":
            peer = by_index.get(l.link) if l.link_netnsid is None else None
            args: dict[str, Any] = {"name": l.name, **own}
            if peer is not None and peer.name in mine:
                done.add(peer.name)
                args.update(peer=peer.name, peer_netns=None)
                if l.name.startswith("tap") and peer.address:
                    args["peer_mac"] = peer.address
                    p.mac = p.mac or peer.address
                p.devices += [l.name, peer.name]
            else:  # the guest end is elsewhere (moved into a container): deleting this end removes both
                args.update(peer="", peer_netns="(unknown)")
                p.devices.append(l.name)
            p.steps.append(Step(StepKind.VETH, args))
            p.vif_type = "bridge" if p.vif_type == "unknown" else p.vif_type
        elif l.kind == "macvtap":
            src = by_index.get(l.link)
            p.steps.append(Step(StepKind.MACVTAP, {"name": l.name, "source": src.name if src else "",
                                                   "mode": "bridge", **own}))
            p.devices.append(l.name)
            p.vif_type = "macvtap"
        elif l.kind == "bridge":
            p.steps.insert(0, Step(StepKind.BRIDGE, {"name": l.name, "shared": False, **own}))
            p.devices.append(l.name)
        else:
            unmapped.append(Unmapped("link", l.name, f"marked for port {p.port_id} but of kind "
                                                     f"{l.kind or 'plain'}, which no step makes; left alone"))
            continue
        if not p.devname or (l.name.startswith("tap") and not p.devname.startswith("tap")):
            p.devname = l.name


def _shared_masters(ports: dict[str, _Port], by_index: dict[int, Link]) -> None:
    """A port's link enslaved to a vifwire bridge: the master step, and the shared
    bridge step (removed with the network's last port, as after a plug)."""
    from vifwire.executors.kernel.owner import VIFWIRE_ALIAS, mark_of
    from vifwire.planner.plan import Step, StepKind

    for p in ports.values():
        for l in p.links:
            master = by_index.get(l.master) if l.master else None
            if master is None or mark_of(master) is None:
                continue
            if mark_of(master) == VIFWIRE_ALIAS and master.kind == "bridge":
                p.steps.insert(0, Step(StepKind.BRIDGE, {"name": master.name, "shared": True}))
            p.steps.append(Step(StepKind.MASTER, {"name": l.name, "master": master.name}))


def _l3_steps(ch: Any, by_index: dict[int, Link], owner_of: dict[str, _Port], unmapped: list[Unmapped]) -> None:
    from vifwire.executors.kernel.l3 import vifwire_routes
    from vifwire.planner.plan import Step, StepKind

    routes: dict[str, list[str]] = {}
    for dst, dst_len, link in vifwire_routes(ch, by_index):
        if link is None or link.name not in owner_of:
            unmapped.append(Unmapped("route", f"{dst}/{dst_len}",
                                     f"via {link.name if link else 'no device'}, no port's device"))
            continue
        routes.setdefault(link.name, []).append(dst)
    for dev, addrs in routes.items():
        owner_of[dev].steps.append(Step(StepKind.ROUTES, {"dev": dev, "addresses": addrs}))
        if owner_of[dev].vif_type == "unknown":
            owner_of[dev].vif_type = "tap"
    proxies: dict[str, list[str]] = {}
    for idx, dst in sorted(ch.proxy_neighbours(socket.AF_INET6)):
        link = by_index.get(idx)
        if link is not None and link.name in owner_of:
            proxies.setdefault(link.name, []).append(str(ipaddress.IPv6Address(dst)))
    for dev, addrs in proxies.items():
        owner_of[dev].steps.append(Step(StepKind.PROXY_NDP, {"dev": dev, "addresses": addrs}))


def _filter_steps(ctx: Any, owner_of: dict[str, _Port], unmapped: list[Unmapped]) -> None:
    from vifwire.executors.firewall import anti_spoof
    from vifwire.executors.nft import NftError
    from vifwire.planner.plan import Step, StepKind

    try:
        with ctx.lock:
            registered = anti_spoof(ctx).ports()
    except NftError as exc:
        unmapped.append(Unmapped("filter", "*", f"cannot read vifwire's nftables sets: {exc}"))
        return
    for name in sorted(registered):
        p = owner_of.get(name)
        if p is None:
            unmapped.append(Unmapped("filter", name, "no port's device of that name carries a mark; "
                                                     "`vifwire gc --force` removes the entries"))
            continue
        # no MAC: removed without a hint (the entries are listed), never verified as clean
        p.steps.append(Step(StepKind.ANTISPOOF, {"ifname": name}))


def _ovs_steps(ctx: HostContext, ports: dict[str, _Port], unmapped: list[Unmapped]) -> None:
    from vifwire.executors.ovs import client
    from vifwire.executors.ovsdb import OvsdbError
    from vifwire.planner.generic import OVS_OWNER_KEY
    from vifwire.planner.plan import Step, StepKind

    where = ctx.ovsdb or ""
    if not where:
        unmapped.append(Unmapped("ovs", "*", "no --ovsdb given: OVS ports not looked for"))
        return
    if where.startswith("unix:") and not os.path.exists(where[5:]):
        unmapped.append(Unmapped("ovs", where, "no OVSDB socket there: OVS ports not looked for "
                                               "(run again with --ovsdb if this host has OVS)"))
        return
    try:
        rows = client(ctx).ports_with_external_id(OVS_OWNER_KEY, timeout=ctx.ovs_timeout)
    except (OvsdbError, OSError) as exc:
        unmapped.append(Unmapped("ovs", where, f"OVSDB cannot be read ({exc}): OVS ports not recovered; "
                                               "run `vifwire state rebuild` again when it is up"))
        return
    for name, st in sorted(rows.items()):
        st = st or {}
        ext = dict(st.get("external_ids") or {})
        owner = ext.get(OVS_OWNER_KEY, "")
        p = ports.setdefault(owner, _Port(owner))
        p.steps.append(Step(StepKind.OVS_PORT, {"bridge": st.get("bridge") or "", "name": name,
                                                "iface_type": st.get("type") or "", "external_ids": ext}))
        p.vif_type = "ovs" if p.vif_type in ("unknown", "bridge") else p.vif_type
        p.devname = p.devname or name
        if not p.mac and ext.get("attached-mac"):
            p.mac = ext["attached-mac"]


# --------------------------------------------------------------------------- the use case


def plan_of(p: _Port) -> Plan:
    from vifwire.planner.plan import Plan

    return Plan(port_id=p.port_id, devname=p.devname, mac=p.mac, vif_type=p.vif_type, vnic_type="normal",
                hypervisor="unknown", strategy=STRATEGY, reason=REASON, steps=p.steps)


def row_of(plan: Plan, netns: str | None) -> dict[str, Any]:
    return {"port_id": plan.port_id, "instance_id": None, "vif_type": plan.vif_type, "devname": plan.devname,
            "mac": plan.mac, "netns": netns, "strategy": plan.strategy,
            "binding": {"port_id": plan.port_id, "recovered": True, "devname": plan.devname, "mac": plan.mac},
            "plan": plan.to_json(), "devices": plan.devices()}


def rebuild(ctx: HostContext, state_path: str) -> RebuildResult:
    """Recreate the records of ``ctx``'s namespace from the host's marks.

    Holds the namespace lock and the state lock (in that order, as every
    change does). No store of the caller's may be open on ``state_path``:
    the file under it may be moved aside. Raises :class:`StoreError` for a store that is
    unusable for another reason than being broken (locked, a symlink, not
    ours, unwritable): those are never moved.
    """
    lock = StateLock(state_path)
    try:
        with ctx.lock, lock.hold(exclusive=True):
            store, moved = open_or_replace(state_path)
            try:
                ports, unmapped = survey(ctx)
                have = {a.port_id for a in store.all()}
                plans = [plan_of(p) for pid, p in sorted(ports.items()) if pid not in have and p.steps]
                if plans:
                    store.put_many((row_of(p, ctx.netns) for p in plans), status=STATUS)
            finally:
                store.close()
    finally:
        lock.close()
    kept = sorted(pid for pid in ports if pid in have)
    log.info("state rebuild: %d port(s) recovered, %d kept, %d item(s) not mapped", len(plans), len(kept),
             len(unmapped))
    return RebuildResult(os.path.abspath(state_path), moved, plans, kept, unmapped)


__all__ = ["rebuild", "RebuildResult", "Unmapped"]
