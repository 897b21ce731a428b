"""Ownership marks on kernel links: what vifwire may repair, replace or delete.

Every link vifwire creates for a port (tap, the host ends of a veth pair,
macvtap, the port's own ``qbr``) carries ``IFLA_IFALIAS`` =
``vifwire:<port id>`` (:func:`mark_for`); links shared by the ports of a
network (their Linux bridge, a VLAN sub-interface) carry ``vifwire``
(:data:`VIFWIRE_ALIAS`), as vifwire's bridges always have. The port id comes
from the step's ``owner`` argument (the planner puts it there, so unplug works
from the recorded plan alone), else from ``ctx.port_id``.

The kernel ignores ``IFLA_IFALIAS`` in a creation request (``rtnl_create_link``
applies it to existing links only), but it honours ``IFLA_GROUP`` there, for a
veth's peer too. So a link is created in the link group :data:`PENDING_GROUP`
and the request that follows (the one bringing it up) sets the alias and
group 0. A link found in :data:`PENDING_GROUP` was made by vifwire and the
process died before marking it: vifwire's, port unknown (its name is the
port's). A tap is configured, alias included, before ``TUNSETPERSIST``, so it
never outlives a crash unmarked.

Rules (docs/operations.md, "What vifwire owns"):

* plug reuses/repairs a link marked for the same port (or pending), replaces
  one of the wrong shape only then, and refuses anything else with one line
  (:func:`claim`);
* unplug and gc delete only links :func:`removable` says are vifwire's;
  a step recorded before marks existed (no ``owner``) still deletes an
  *unmarked* link of its kind by name - the record is the proof for links
  made before marks existed - but never one marked for a port.
"""

from __future__ import annotations

import hashlib

from vifwire.errors import HostError
from vifwire.netlink.channel import Link
from vifwire.planner.plan import Step

#: ``IFLA_IFALIAS`` prefix of a port's own links: ``vifwire:<port id>``.
MARK_PREFIX = "vifwire:"
#: ``IFLA_IFALIAS`` of links shared by a network's ports (bridges, VLANs).
VIFWIRE_ALIAS = "vifwire"
#: The link group a link is created in until it is marked (``BULK_GROUP_BASE``
#: itself: bulk removal only ever uses ``base | 1..0xffff``).
PENDING_GROUP = 0x76770000
#: Longest alias the kernel takes (``IFALIASZ - 1``).
IFALIAS_MAX = 255


def mark_for(owner: str | None) -> str:
    """The alias of a link owned by port ``owner`` (the shared mark if None).

    A port id too long for an alias (> 247 bytes) is marked by its SHA-256.
    """
    if not owner:
        return VIFWIRE_ALIAS
    mark = MARK_PREFIX + owner
    if len(mark.encode()) <= IFALIAS_MAX:
        return mark
    return MARK_PREFIX + "sha256:" + hashlib.sha256(owner.encode()).hexdigest()


def is_shared(step: Step) -> bool:
    """Links a network's ports share: a shared bridge, a VLAN sub-interface."""
    return step.op == "vlan" or (step.op == "bridge" and bool(step.args.get("shared")))


def wanted_mark(step: Step, port_id: str | None) -> str:
    """The mark a plug gives the step's link(s)."""
    if is_shared(step):
        return VIFWIRE_ALIAS
    return mark_for(step.args.get("owner") or port_id)


def recorded_mark(step: Step) -> str | None:
    """The mark unplug looks for; None for a step recorded before marks existed."""
    if is_shared(step):
        return VIFWIRE_ALIAS
    owner = step.args.get("owner")
    return mark_for(owner) if owner else None


def mark_of(link: Link) -> str | None:
    """The link's vifwire mark: ``vifwire:<port>``, ``vifwire`` (shared, or a
    bridge of an earlier vifwire), ``""`` (created, not marked yet), or None:
    not vifwire's."""
    alias = link.alias or ""
    if alias == VIFWIRE_ALIAS or alias.startswith(MARK_PREFIX):
        return alias
    if link.group == PENDING_GROUP:
        return ""
    return None


def _whose(mark: str) -> str:
    if mark.startswith(MARK_PREFIX):
        return f"port {mark[len(MARK_PREFIX):]}"
    return "the ports of a network (shared)"


def refusal(link: Link, mark: str | None) -> str:
    """One line: why ``link`` is not the step's to touch."""
    have = mark_of(link)
    if have is None:
        return f"device {link.name} exists and is not vifwire's ({link.kind or 'plain'})"
    if mark is None:
        return f"device {link.name} belongs to {_whose(have)}, not to this record"
    return f"device {link.name} belongs to {_whose(have)}, not to {_whose(mark)}"


def claim(port_id: str | None, step: Step, link: Link, mark: str, wanted: bool) -> bool:
    """A link is in the way of creating the step's: may it be used?

    False: repair it in place (it is this port's, or pending, or an earlier
    vifwire's shared-marked link of the right shape). True: it is this port's
    (or pending) but of the wrong shape; delete and create it again.
    Raises :class:`HostError` (one line) for a link that is not vifwire's or
    is another port's: it is never touched.
    """
    have = mark_of(link)
    if have is not None and (have in (mark, "") or (have == VIFWIRE_ALIAS and wanted)):
        return not wanted
    raise HostError(port_id, step.describe(), refusal(link, mark))


def removable(link: Link, mark: str | None, kinds: tuple[str, ...]) -> bool:
    """May unplug delete ``link`` for a step recorded with ``mark``
    (:func:`recorded_mark`; None: recorded before marks existed)?"""
    have = mark_of(link)
    if have is None:
        return mark is None and link.kind in kinds
    if have == "" or have == mark:
        return True
    return have == VIFWIRE_ALIAS and link.kind in kinds  # an earlier vifwire's bridge
