"""Anti-spoofing filter for guest interfaces, on nftables (libnftables JSON API).

Design
======

vifwire owns three tables, all named ``vifwire``:

* ``inet vifwire``   - IPv4/IPv6 from *routed* ports (a host-side tap/veth the
  host routes to). Base chain ``prerouting`` (hook prerouting, priority -300 =
  raw, before conntrack, so spoofed packets never create conntrack state) sees
  everything entering the host from a tap, delivered locally or forwarded.
  It also holds the port registry ``ports`` (every port, any family).
* ``arp vifwire``    - ARP from routed ports. inet hooks never see ARP (they
  are IPv4/IPv6 only), so ARP needs the ``arp`` family (hook input).
* ``bridge vifwire`` - everything from *bridged* ports (taps enslaved to a
  Linux bridge): base chain ``prerouting`` of the bridge family, priority
  -300; there ``iifname`` is the bridge *port*.

Per-interface dispatch is by **set lookups keyed by interface name**, never by
per-port rules or chains. Each base chain has one rule,
``iifname @vif_ifaces jump guard``; the guard chains test concatenations such
as ``iifname . ether saddr . ip saddr @allow_v4``. A packet walks the same
rules with 1 or 5000 ports (:meth:`AntiSpoof.rule_path_length` counts them
from the installed ruleset), and plugging a port only adds set *elements*:
no chain, no rule, no named object (see "O(1) plug" below).

Sets (sets are table scoped: each table holds its own copy of what it uses):

================ ============================================ =================
``ports``        ``ifname`` (inet table only)                 registry of ports
``ports_fp``     ``ifname . ipv6_addr`` (inet table only)     port + fingerprint
``vif_ifaces``   ``ifname``                                   guarded ports
``allow_mac``    ``ifname . ether_addr``                      port MAC, pair MACs
``allow_v4``     ``ifname . ether_addr . ipv4_addr``          host addresses
``allow_v4_net`` same, ``flags interval``                     CIDR pairs
``allow_v6``     ``ifname . ether_addr . ipv6_addr``          + EUI-64 link-locals
``allow_v6_net`` same, ``flags interval``                     CIDR pairs
``allow_nd``     ``typeof iifname . ether saddr . @th,64,128`` ``allow_v6`` keyed
                 by the ND *target* field (ICMPv6 offset 8)
``allow_nd_net`` same, ``flags interval``                     ``allow_v6_net``
``drop_<r>``     ``ifname`` with a per-element ``counter``    drop counters
================ ============================================ =================

Host addresses live in hash sets (O(1) insert and lookup, whatever the number
of ports); only CIDR pairs go to the interval sets, which the kernel
implements with pipapo, whose insert (and lookup) cost grows with the set's
size: with one interval set holding every address a plug at 5000 ports cost
about 3x a plug at 10.

``allow_nd``: nft 1.0.6 has no ``icmpv6 taddr`` and its JSON parser can
declare neither ``typeof`` sets nor raw-payload types, so this one set is
declared with an nft-syntax command through the same libnftables context
(``_ND_SET_TEXT``); everything else is JSON.

Drop counting: a drop rule ends in ``iifname @drop_<reason> drop``. The sets
carry a ``counter`` statement, so every element has its own counter and the
kernel bumps it on each successful *lookup*: one counter per (port, reason)
with no per-port rule. Reasons: ``mac`` (source MAC not the port's), ``ip4``
/ ``ip6`` (source address not the port's), ``arp`` (ARP sender MAC/IP not the
port's), ``ra`` (router advertisement or redirect), ``nd`` (neighbour
advertisement, or DAD solicitation, for a target that is not the port's),
``dhcp`` (DHCP server replies from a guest), ``other`` (any other ethertype).
If a port's ``drop_<reason>`` element were missing, the lookup fails and the
chain's last rule (anonymous counter + drop) still drops: a guard chain never
falls through to accept.

Accepted from a guarded port: its MAC(s) as Ethernet source; IPv4 from its
addresses/pairs; DHCPv4 0.0.0.0:68 -> 255.255.255.255:67; IPv6 from its
addresses/pairs/EUI-64 link-local; ``::`` for DAD neighbour solicitations
(target must be the port's) and MLDv2 reports; ARP whose sender MAC and sender
IP belong to the port, plus RFC 5227 probes (sender IP 0.0.0.0, sender MAC the
port's). Everything else is dropped and counted.

O(1) plug
---------
libnftables refreshes a cache before every command. For ``add element`` nft
1.0.6 dumps all tables, chains, set definitions *and named objects*, plus the
elements of non-concatenated interval sets. Hence: no named counters (a
first draft with one named counter per port and reason made every plug
O(ports): 40k counter objects were dumped per plug, 1.7 s at 5000 ports) and
no plain interval sets (every interval set here is a concatenation, which nft
does not pre-load). See :meth:`AntiSpoof.add_port` for the plug protocol: a
new port is ONE transaction with no read before it; an unchanged re-plug and
a remove with ``hint=`` are O(1) too (``ports_fp`` probe); only a *changed*
re-plug and a remove without hint list vifwire's sets (O(ports)).

Batches
-------
A run of many ports is ONE transaction too (:meth:`AntiSpoof.install_ports`,
:meth:`AntiSpoof.remove_ports`): every port's elements of a set go in one
``add element`` (``delete element``) command, so the transaction has ~20
commands whatever the number of ports (libnftables parses and evaluates
each command; 1000 ports' elements cost a third of 1000 ports' commands).
The transaction is all-or-nothing (nftables wiki, "Atomic rule
replacement"); which port made it fail is not reported, so a failed batch is
narrowed down as :meth:`AntiSpoof.install_ports` describes. Plug and unplug
build the transaction as JSON text straight from each port's element texts
(:func:`_want_text`: no element dicts, no ``json.dumps`` of the batch);
that and the ``ports_fp`` digest computed alongside are the Python side of
a 1000-port plug (~45 ms here), libnftables and the kernel the rest (~100
ms; ``bench/antispoof_bench.py --batch``). nft syntax instead of JSON does
not parse faster, nor do smaller commands. ``check`` reads
the few sets it needs once for all ports (:class:`GuardView`).

Single writer: the read-then-write paths assume one vifwire process
manipulates these tables at a time (the executor's lock).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from vifwire.executors.nft import Nft, NftError

TABLE = "vifwire"
FAMILIES = ("inet", "arp", "bridge")
PRIO_RAW = -300

ROUTED_FAMILIES = ("inet", "arp")
BRIDGED_FAMILIES = ("bridge",)
REGISTRY_FAMILY = "inet"  # where the registry sets live
_REGISTRY_SETS = ("ports", "ports_fp")

# drop reasons per table family
REASONS: dict[str, tuple[str, ...]] = {
    "inet": ("mac", "ip4", "ip6", "ra", "nd", "dhcp", "other"),
    "arp": ("mac", "arp"),
    "bridge": ("mac", "ip4", "ip6", "ra", "nd", "dhcp", "arp", "other"),
}
ALL_REASONS = ("mac", "ip4", "ip6", "arp", "ra", "nd", "dhcp", "other")

# which address sets each family holds
ADDR_SETS: dict[str, tuple[str, ...]] = {
    "inet": ("allow_mac", "allow_v4", "allow_v4_net", "allow_v6", "allow_v6_net", "allow_nd",
             "allow_nd_net"),
    "arp": ("allow_mac", "allow_v4", "allow_v4_net"),
    "bridge": ("allow_mac", "allow_v4", "allow_v4_net", "allow_v6", "allow_v6_net", "allow_nd",
               "allow_nd_net"),
}

_SET_DEFS: dict[str, dict[str, Any]] = {
    "ports": {"type": "ifname"},
    "ports_fp": {"type": ["ifname", "ipv6_addr"]},
    "vif_ifaces": {"type": "ifname"},
    "allow_mac": {"type": ["ifname", "ether_addr"]},
    "allow_v4": {"type": ["ifname", "ether_addr", "ipv4_addr"]},
    "allow_v4_net": {"type": ["ifname", "ether_addr", "ipv4_addr"], "flags": ["interval"]},
    "allow_v6": {"type": ["ifname", "ether_addr", "ipv6_addr"]},
    "allow_v6_net": {"type": ["ifname", "ether_addr", "ipv6_addr"], "flags": ["interval"]},
}
_DROP_SET_DEF = {"type": "ifname", "stmt": [{"counter": None}]}

_ND_SET_TEXT = (
    "add set {family} " + TABLE + " allow_nd {{ typeof iifname . ether saddr . @th,64,128; }}\n"
    "add set {family} " + TABLE + " allow_nd_net "
    "{{ typeof iifname . ether saddr . @th,64,128; flags interval; }}"
)

_IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class AntiSpoofError(RuntimeError):
    pass


@dataclass
class PortFilter:
    """What a port may send. ``ipv4``/``ipv6`` are host addresses; pairs may be CIDRs."""

    ifname: str
    mac: str
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    allowed_pairs: list[tuple[str, str | None]] = field(default_factory=list)
    bridged: bool = False  # bridge family *instead of* inet+arp (see families())

    def families(self) -> tuple[str, ...]:
        # A bridged port's frames reach the inet hooks (if at all) with the
        # bridge as iifname, so inet/arp elements keyed by the tap would never
        # match: bridged ports are filtered in the bridge family only.
        return BRIDGED_FAMILIES if self.bridged else ROUTED_FAMILIES


# ---------------------------------------------------------------------------
# address helpers
# ---------------------------------------------------------------------------
#
# A plug of many ports computes every port's elements (``_want``) in one go,
# so this is the per-port hot path: addresses are handled as (version, int,
# prefix length) triples. Plain addresses, by far the common case, are parsed
# with a strict regex (IPv4) or ``inet_pton`` (IPv6, hex-and-colon text only)
# and printed with ``inet_ntop``; ``ipaddress`` is used only where these fast
# paths do not provably give its answer (CIDRs, addresses with a prefix,
# scoped or IPv4-embedding text, ranges that need collapsing), so what is
# accepted and how it is canonicalised is exactly ``ipaddress``'s.

_Net = tuple[int, int, int]  # (version, network address as int, prefix length)

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: dotted quad without leading zeros: exactly the text ipaddress accepts and prints
_V4_TEXT = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_V6_CHARS = frozenset("0123456789abcdefABCDEF:")
_MAX_PLEN = {4: 32, 6: 128}


def norm_mac(mac: str) -> str:
    m = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.match(m):
        raise ValueError(f"invalid MAC address {mac!r}")
    if int(m[:2], 16) & 1:
        raise ValueError(f"multicast MAC address {mac!r} cannot be a port MAC")
    return m


def _eui64_int(mac: str) -> int:
    """fe80::/64 + modified EUI-64 interface id of ``mac`` (RFC 4291 appendix A), as an int."""
    return _eui64_of_norm(norm_mac(mac))


def _eui64_of_norm(mac: str) -> int:
    """:func:`_eui64_int` of a MAC :func:`norm_mac` returned: OUI, ff:fe, NIC part, U/L bit flipped."""
    v = int(mac.replace(":", ""), 16)
    iid = ((v >> 24) << 40) | (0xFFFE << 24) | (v & 0xFFFFFF)
    return (0xFE80 << 112) | (iid ^ (0x02 << 56))


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """fe80::/64 + modified EUI-64 interface id derived from ``mac``."""
    return ipaddress.IPv6Address(_eui64_int(mac))


def _parse_addr(text: str) -> tuple[int, int] | None:
    """(version, int) of a plain address via the fast paths, None when unsure."""
    if _V4_TEXT.fullmatch(text):
        a, b, c, d = text.split(".")
        return 4, (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    if ":" in text and len(text) <= 39 and _V6_CHARS.issuperset(text):
        try:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except OSError:
            return None  # ipaddress says why
    return None


def _host(addr: str) -> tuple[int, int]:
    """``ipaddress.ip_interface(addr).ip`` as (version, int): "10.0.0.5" or
    "10.0.0.5/24" (an interface address) both give the host address."""
    s = addr.strip()
    fast = _parse_addr(s)
    if fast is not None:
        return fast
    ip = ipaddress.ip_interface(s).ip
    return ip.version, int(ip)


def _net(addr: str) -> _Net:
    """``ipaddress.ip_network(addr, strict=False)`` as a triple (pairs may be CIDRs)."""
    s = addr.strip()
    fast = _parse_addr(s)
    if fast is not None:
        return fast[0], fast[1], _MAX_PLEN[fast[0]]
    n = ipaddress.ip_network(s, strict=False)
    return n.version, int(n.network_address), n.prefixlen


def _text(version: int, v: int) -> str:
    """The address as ``str(ipaddress.ip_address(v))`` prints it."""
    if version == 4:
        return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
    if (v >> 32) in (0, 0xFFFF):
        # ::a.b.c.d and ::ffff:a.b.c.d: glibc prints these dotted, ipaddress does not
        return str(ipaddress.IPv6Address(v))
    return socket.inet_ntop(socket.AF_INET6, v.to_bytes(16, "big"))


def _collapse(version: int, nets: list[_Net]) -> list[_Net]:
    """``ipaddress.collapse_addresses`` of the ``version`` networks in ``nets``.

    Host addresses that are not siblings (2k, 2k+1) collapse to themselves,
    sorted: that needs no ipaddress objects. Anything else (a CIDR, two
    adjacent hosts, which collapse into a /31 or /127) goes to ipaddress.
    """
    full = _MAX_PLEN[version]
    mine = [n for n in nets if n[0] == version]
    if all(n[2] == full for n in mine):
        vals = sorted({n[1] for n in mine})
        if not any(b == a + 1 and not a & 1 for a, b in zip(vals, vals[1:])):
            return [(version, v, full) for v in vals]
    objs = (ipaddress.ip_network((n[1], n[2])) if version == 4 else ipaddress.IPv6Network((n[1], n[2]))
            for n in mine)
    return [(version, int(n.network_address), n.prefixlen) for n in ipaddress.collapse_addresses(objs)]


def _hex128(v: int) -> str:
    return f"0x{v:032x}"


def _cat(*xs: Any) -> dict:
    return {"concat": list(xs)}


_MAYBE_CANON = frozenset("0123456789abcdefxABCDEFX.:/")


def _ifname_key(ifname: str) -> str:
    """``_key(ifname)`` (JSON text of its canonical form), cheaply.

    :func:`_canon` reads any string that parses as an address as one; an
    interface name made only of hex digits, dots, colons and slashes might,
    so those take the exact path (they are rare: ``tap...`` never does).
    """
    if _MAYBE_CANON.issuperset(ifname):
        return json.dumps(_canon(ifname))
    return json.dumps(ifname)


_ADDR_KEYS = ("allow_mac", "allow_v4", "allow_v4_net", "allow_v6", "allow_v6_net", "allow_nd", "allow_nd_net")


def _fam_order(fam: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], list[str]]:
    """(sets in emit order, its ifname-only sets, address sets in digest order, digest tail pieces).

    Emit order: drop sets, address sets, ``vif_ifaces`` last (the dispatch
    element). Digest order is sorted by name: every ``allow_*`` sorts before
    every ``drop_*``, which sort before ``vif_ifaces``, so the digest body of
    a family is its address sets, then a tail of one-key lists that only
    depends on the escaped ifname key (``eik.join(pieces)``).
    """
    addr = tuple(s for s in _ADDR_KEYS if s in ADDR_SETS[fam])
    drops = tuple(f"drop_{r}" for r in REASONS[fam])
    tail_names = [*sorted(drops), "vif_ifaces"]
    pieces = [f'"{tail_names[0]}": ["'] + [f'"], "{n}": ["' for n in tail_names[1:]] + ['"]']
    return (*drops, *addr, "vif_ifaces"), (*drops, "vif_ifaces"), tuple(sorted(addr)), pieces


_FAM_ORDER = {fam: _fam_order(fam) for fam in FAMILIES}


def _esc(s: str) -> str:
    """``s`` inside a JSON string (s is printable ASCII: only backslash and quote need escaping)."""
    return s.replace("\\", "\\\\").replace('"', '\\"')


class _PortText:
    """A port's elements as JSON text (:func:`_want_text`).

    ``ij`` is the ifname's JSON text, the whole element of the registry,
    ``drop_*`` and ``vif_ifaces`` sets; ``addr`` holds the address sets'
    element texts (a list per set of ``_ADDR_KEYS``, shared by the port's
    families); ``fp`` is its ``ports_fp`` element. Kept this compact because
    a batch groups N ports per set (:func:`_by_set`): the ifname-only sets
    of a family all share one list of the ports' ``ij``.
    """

    __slots__ = ("ij", "fams", "addr", "fp")

    def __init__(self, ij: str, fams: tuple[str, ...], addr: dict[str, list[str]], fp: str):
        self.ij, self.fams, self.addr, self.fp = ij, fams, addr, fp

    def items(self) -> Iterator[tuple[tuple[str, str], list[str]]]:
        """(family, set) -> element texts, non-empty sets only, in emit order."""
        for fam in self.fams:
            for sname in _FAM_ORDER[fam][0]:
                e = self.addr.get(sname)
                if e is None:
                    yield (fam, sname), [self.ij]
                elif e:
                    yield (fam, sname), e
        yield (REGISTRY_FAMILY, "ports_fp"), [self.fp]
        yield (REGISTRY_FAMILY, "ports"), [self.ij]


#: what a transaction's element commands are built from: ports' texts, or
#: (family, set) -> element texts (a listing or a diff, :func:`_json_parts`)
_Parts = dict[tuple[str, str], list[str]]


def _want_text(pf: PortFilter) -> _PortText:
    """Everything ``pf`` needs installed, as JSON text.

    This is the batch hot path (a run of N ports computes N of these, and
    the transaction is their texts joined, see :func:`_add_cmds`), so no
    element is built as a dict nor serialised by ``json``: each element is
    written out as its JSON text, and its canonical key (:func:`_key`) next
    to it, for the ``ports_fp`` fingerprint (:func:`_digest_of`). Raises
    ValueError for an invalid interface name, MAC or address.
    """
    ifname = pf.ifname
    if not isinstance(ifname, str) or not _IFNAME_RE.match(ifname):
        raise ValueError(f"invalid interface name {ifname!r}")
    mac = norm_mac(pf.mac)
    own: list[_Net] = []
    by_mac: dict[str, list[_Net]] = {mac: own}
    for a in pf.ipv4:
        ver, v = _host(a)
        if ver != 4:
            raise ValueError(f"{ifname}: {a!r} in ipv4 is not an IPv4 address")
        own.append((4, v, 32))
    for a in pf.ipv6:
        ver, v = _host(a)
        if ver != 6:
            raise ValueError(f"{ifname}: {a!r} in ipv6 is not an IPv6 address")
        own.append((6, v, 128))
    for pair in pf.allowed_pairs:
        if isinstance(pair, str):
            pair = (pair, None)
        ip_or_cidr, pmac = pair[0], (pair[1] if len(pair) > 1 else None)
        m = norm_mac(pmac) if pmac else mac
        by_mac.setdefault(m, []).append(_net(ip_or_cidr))
    ik = _ifname_key(ifname)  # the ifname in keys (canonical form, JSON text)
    ij = json.dumps(ifname)  # the ifname in elements (JSON text)
    # set -> (keys, element texts); a key is _key(element): json.dumps of the
    # canonical concat, written out (every part but the ifname is plain ASCII)
    keys: dict[str, list[str]] = {s: [] for s in _ADDR_KEYS}
    elems: dict[str, list[str]] = {s: [] for s in _ADDR_KEYS}
    if not pf.allowed_pairs and len(pf.ipv4) == 1 and len(pf.ipv6) == 1:
        # the common port, one IPv4 and one IPv6 address, no pairs: what the
        # loop below computes, without collapsing (nothing collapses unless
        # the IPv6 address is its link-local or that one's sibling)
        (_v4, a4, _p4), (_v6, a6, _p6) = own
        ll = _eui64_of_norm(mac)
        if a6 >> 1 != ll >> 1:
            t4, t6, tl = _text(4, a4), _text(6, a6), _text(6, ll)
            h6, hl = _hex128(a6), _hex128(ll)
            pk = f'[{ik}, "{mac}", "'
            pe = f'{{"concat":[{ij},"{mac}",'
            first, second = ((t6, h6), (tl, hl)) if a6 < ll else ((tl, hl), (t6, h6))
            keys["allow_mac"] = [f'[{ik}, "{mac}"]']
            elems["allow_mac"] = [f'{{"concat":[{ij},"{mac}"]}}']
            keys["allow_v4"] = [f'{pk}{t4}/32"]']
            elems["allow_v4"] = [f'{pe}"{t4}"]}}']
            keys["allow_v6"] = [f'{pk}{first[0]}/128"]', f'{pk}{second[0]}/128"]']
            elems["allow_v6"] = [f'{pe}"{first[0]}"]}}', f'{pe}"{second[0]}"]}}']
            keys["allow_nd"] = [f'{pk}{first[1]}"]', f'{pk}{second[1]}"]']
            elems["allow_nd"] = [f'{pe}"{first[1]}"]}}', f'{pe}"{second[1]}"]}}']
            by_mac = {}
    for m in sorted(by_mac):
        pk = f'[{ik}, "{m}", "'
        pe = f'{{"concat":[{ij},"{m}",'
        keys["allow_mac"].append(f'[{ik}, "{m}"]')
        elems["allow_mac"].append(f'{{"concat":[{ij},"{m}"]}}')
        # every MAC that may send gets its EUI-64 link-local (as Neutron does)
        nets = by_mac[m] + [(6, _eui64_of_norm(m), 128)]
        # pipapo (concatenated interval) sets reject overlapping elements:
        # collapse per MAC so host addresses inside a pair CIDR disappear.
        # Host addresses go to hash sets (O(1) insert and lookup); only CIDR
        # pairs go to the interval sets, whose cost grows with their size.
        for n in _collapse(4, nets):
            text, plen = _text(4, n[1]), n[2]
            if plen == 32:
                keys["allow_v4"].append(f'{pk}{text}/32"]')
                elems["allow_v4"].append(f'{pe}"{text}"]}}')
            else:
                keys["allow_v4_net"].append(f'{pk}{text}/{plen}"]')
                elems["allow_v4_net"].append(f'{pe}{{"prefix":{{"addr":"{text}","len":{plen}}}}}]}}')
        for n in _collapse(6, nets):
            text, plen = _text(6, n[1]), n[2]
            lo = _hex128(n[1])  # the ND target (allow_nd*), a raw 128-bit value
            if plen == 128:
                keys["allow_v6"].append(f'{pk}{text}/128"]')
                elems["allow_v6"].append(f'{pe}"{text}"]}}')
                keys["allow_nd"].append(f'{pk}{lo}"]')
                elems["allow_nd"].append(f'{pe}"{lo}"]}}')
            else:
                hi = _hex128(n[1] | ((1 << (128 - plen)) - 1))
                keys["allow_v6_net"].append(f'{pk}{text}/{plen}"]')
                elems["allow_v6_net"].append(f'{pe}{{"prefix":{{"addr":"{text}","len":{plen}}}}}]}}')
                keys["allow_nd_net"].append(f'{pk}{lo}-{hi}"]')
                elems["allow_nd_net"].append(f'{pe}{{"range":["{lo}","{hi}"]}}]}}')
    seg: dict[str, str] = {}  # set -> its digest body entry (computed once for both families)
    eik = _esc(ik)
    fams = pf.families()
    bodies = []
    for fam in fams:
        _emit, _ifs, addr_sorted, tail = _FAM_ORDER[fam]
        body = []
        for sname in addr_sorted:
            s = seg.get(sname)
            if s is None:
                k = keys[sname]
                if not k:
                    continue
                # keys joined by NUL (which JSON text never holds raw), escaped
                # in one go, NUL then turned into the list separator
                s = seg[sname] = f'"{sname}": ["' + _esc("\0".join(sorted(k))).replace("\0", '", "') + '"]'
            body.append(s)
        body.append(eik.join(tail))
        bodies.append(f'"{fam}": {{' + ", ".join(body) + "}")
    bodies.sort()  # by family name: the body is json.dumps(..., sort_keys=True)
    digest = _digest_of("{" + ", ".join(bodies) + "}")
    return _PortText(ij, fams, elems, f'{{"concat":[{ij},"{digest}"]}}')


def _want(pf: PortFilter) -> dict[str, dict[str, list]]:
    """:func:`_want_text` as JSON elements: family -> set name -> elements.

    Parsed from the text, so it is what a transaction sends by construction
    (the reconcile path compares it with nft's listing).
    """
    return _parts_json(_want_text(pf))


def _parts_json(parts: _PortText | _Parts) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for (fam, sname), texts in parts.items():
        out.setdefault(fam, {})[sname] = [json.loads(t) for t in texts]
    return out


def _json_parts(have: dict[str, dict[str, list]]) -> _Parts:
    """Inverse of :func:`_parts_json` for elements in nft's JSON form (listed or diffed)."""
    return {(fam, sname): [json.dumps(_elem_val(e), separators=(",", ":")) for e in elems]
            for fam, sets in have.items() for sname, elems in sets.items() if elems}


# ---------------------------------------------------------------------------
# rules (JSON expressions)
# ---------------------------------------------------------------------------

IIF = {"meta": {"key": "iifname"}}
ETH_SRC = {"payload": {"protocol": "ether", "field": "saddr"}}
IP_SRC = {"payload": {"protocol": "ip", "field": "saddr"}}
IP6_SRC = {"payload": {"protocol": "ip6", "field": "saddr"}}
ND_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}
ARP_SHA = {"payload": {"protocol": "arp", "field": "saddr ether"}}
ARP_SPA = {"payload": {"protocol": "arp", "field": "saddr ip"}}
ACCEPT = {"accept": None}
# Last rule of every guard chain: only reached if a port's drop_<reason>
# element is missing (inconsistent state); still drop, never accept.
FALLBACK = [{"counter": None}, {"drop": None}]


def _m(left: Any, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _p(proto: str, fld: str) -> dict:
    return {"payload": {"protocol": proto, "field": fld}}


def _count_drop(reason: str) -> list[dict]:
    # the lookup bumps the element counter of (iifname, reason)
    return [_m(IIF, f"@drop_{reason}"), {"drop": None}]


def _mac_rule() -> list[dict]:
    return [_m(_cat(IIF, ETH_SRC), "@allow_mac", "!="), *_count_drop("mac")]


def _guard4_rules() -> list[list[dict]]:
    return [
        # a guest must not act as a DHCP server
        [_m(_p("udp", "sport"), 67), _m(_p("udp", "dport"), 68), *_count_drop("dhcp")],
        [
            _m(IP_SRC, "0.0.0.0"),
            _m(_p("ip", "daddr"), "255.255.255.255"),
            _m(_p("udp", "sport"), 68),
            _m(_p("udp", "dport"), 67),
            ACCEPT,
        ],
        [_m(_cat(IIF, ETH_SRC, IP_SRC), "@allow_v4"), ACCEPT],
        [_m(_cat(IIF, ETH_SRC, IP_SRC), "@allow_v4_net"), ACCEPT],
        _count_drop("ip4"),
        FALLBACK,
    ]


def _guard6_rules() -> list[list[dict]]:
    icmp6 = _p("icmpv6", "type")
    nd_key = _cat(IIF, ETH_SRC, ND_TARGET)
    return [
        [_m(icmp6, {"set": ["nd-router-advert", "nd-redirect"]}), *_count_drop("ra")],
        [_m(_p("udp", "sport"), 547), _m(_p("udp", "dport"), 546), *_count_drop("dhcp")],
        # NA: the target must be one of the port's addresses
        [
            _m(icmp6, "nd-neighbor-advert"),
            _m(nd_key, "@allow_nd", "!="),
            _m(nd_key, "@allow_nd_net", "!="),
            *_count_drop("nd"),
        ],
        # DAD: NS from :: only for the port's own (tentative) addresses
        [
            _m(IP6_SRC, "::"),
            _m(icmp6, "nd-neighbor-solicit"),
            _m(nd_key, "@allow_nd", "!="),
            _m(nd_key, "@allow_nd_net", "!="),
            *_count_drop("nd"),
        ],
        [
            _m(IP6_SRC, "::"),
            _m(icmp6, {"set": ["nd-neighbor-solicit", "mld2-listener-report"]}),
            ACCEPT,
        ],
        [_m(_cat(IIF, ETH_SRC, IP6_SRC), "@allow_v6"), ACCEPT],
        [_m(_cat(IIF, ETH_SRC, IP6_SRC), "@allow_v6_net"), ACCEPT],
        _count_drop("ip6"),
        FALLBACK,
    ]


def _arp_rules() -> list[list[dict]]:
    eth_ip = [
        _m(_p("arp", "htype"), 1),
        _m(_p("arp", "ptype"), "ip"),
        _m(_p("arp", "hlen"), 6),
        _m(_p("arp", "plen"), 4),
    ]
    return [
        [*eth_ip, _m(_cat(IIF, ARP_SHA, ARP_SPA), "@allow_v4"), ACCEPT],
        [*eth_ip, _m(_cat(IIF, ARP_SHA, ARP_SPA), "@allow_v4_net"), ACCEPT],
        # ARP probe (RFC 5227): sender IP 0.0.0.0, sender MAC must be the port's
        [_m(ARP_SPA, "0.0.0.0"), _m(_cat(IIF, ARP_SHA), "@allow_mac"), ACCEPT],
        _count_drop("arp"),
        FALLBACK,
    ]


def _chains(family: str) -> dict[str, tuple[dict | None, list[list[dict]]]]:
    """chain name -> (base chain spec or None, rules)."""
    jump_guard = [[_m(IIF, "@vif_ifaces"), {"jump": {"target": "guard"}}]]
    if family == "inet":
        base = {"type": "filter", "hook": "prerouting", "prio": PRIO_RAW, "policy": "accept"}
        nfproto = {"meta": {"key": "nfproto"}}
        return {
            "prerouting": (base, jump_guard),
            "guard": (
                None,
                [
                    _mac_rule(),
                    [_m(nfproto, "ipv4"), {"goto": {"target": "guard4"}}],
                    [_m(nfproto, "ipv6"), {"goto": {"target": "guard6"}}],
                    _count_drop("other"),
                    FALLBACK,
                ],
            ),
            "guard4": (None, _guard4_rules()),
            "guard6": (None, _guard6_rules()),
        }
    if family == "arp":
        base = {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"}
        return {
            "input": (base, jump_guard),
            "guard": (None, [_mac_rule(), *_arp_rules()]),
        }
    if family == "bridge":
        base = {"type": "filter", "hook": "prerouting", "prio": PRIO_RAW, "policy": "accept"}
        etype = _p("ether", "type")
        return {
            "prerouting": (base, jump_guard),
            "guard": (
                None,
                [
                    _mac_rule(),
                    [_m(etype, "ip"), {"goto": {"target": "guard4"}}],
                    [_m(etype, "ip6"), {"goto": {"target": "guard6"}}],
                    [_m(etype, "arp"), {"goto": {"target": "guardarp"}}],
                    # VLAN-tagged frames and any other ethertype
                    _count_drop("other"),
                    FALLBACK,
                ],
            ),
            "guard4": (None, _guard4_rules()),
            "guard6": (None, _guard6_rules()),
            "guardarp": (None, _arp_rules()),
        }
    raise ValueError(family)


def _obj(family: str, **kw: Any) -> dict:
    return {"family": family, "table": TABLE, **kw}


def _sets_of(fam: str) -> tuple[str, ...]:
    extra = _REGISTRY_SETS if fam == REGISTRY_FAMILY else ()
    return (*extra, "vif_ifaces", *ADDR_SETS[fam], *(f"drop_{r}" for r in REASONS[fam]))


# ---------------------------------------------------------------------------
# the API
# ---------------------------------------------------------------------------


class AntiSpoof:
    """Install/remove per-port anti-spoofing state in vifwire's nft tables."""

    def __init__(self, nft: Nft):
        self.nft = nft
        self._ensured = False

    # -- tables ------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Create tables, sets and chains; (re)load the rules. Idempotent.

        Set contents (the ports) are untouched. The rules are replaced
        atomically (flush chain + add rules in one transaction), so running it
        again also repairs tampered rules.
        """
        self.nft.run(
            {"nftables": [{"add": {"table": {"family": f, "name": TABLE}}} for f in FAMILIES]}
        )
        # the one nft-syntax command (see _ND_SET_TEXT); "add" is idempotent
        self.nft.run_text(
            "\n".join(_ND_SET_TEXT.format(family=f) for f in FAMILIES if "allow_nd" in ADDR_SETS[f])
        )
        cmds: list[dict] = []
        for fam in FAMILIES:
            for sname in _sets_of(fam):
                if sname.startswith("allow_nd"):
                    continue
                spec = _DROP_SET_DEF if sname.startswith("drop_") else _SET_DEFS[sname]
                cmds.append({"add": {"set": _obj(fam, name=sname, **spec)}})
            chains = _chains(fam)
            for cname, (base, _rules) in chains.items():
                cmds.append({"add": {"chain": _obj(fam, name=cname, **(base or {}))}})
            for cname in chains:
                cmds.append({"flush": {"chain": _obj(fam, name=cname)}})
            for cname, (_base, rules) in chains.items():
                for expr in rules:
                    cmds.append({"add": {"rule": _obj(fam, chain=cname, expr=expr)}})
        self.nft.run({"nftables": cmds})
        self._ensured = True

    def ensure(self) -> None:
        """:meth:`ensure_tables` once per :class:`AntiSpoof` (the install paths call it)."""
        if not self._ensured:
            self.ensure_tables()

    def remove_tables(self) -> None:
        """Delete vifwire's tables (every port). Absent tables are fine."""
        for fam in FAMILIES:
            try:
                self.nft.run({"nftables": [{"delete": {"table": {"family": fam, "name": TABLE}}}]})
            except NftError as exc:
                if not _is_enoent(exc):
                    raise
        self._ensured = False

    # -- port operations ---------------------------------------------------
    def add_port(self, pf: PortFilter) -> None:
        """Install ``pf`` in ONE nft transaction. Idempotent.

        1. New port: one batch, no read before it; O(1) (module doc). It
           starts with ``create element ... ports { <ifname> }``, which fails
           with EEXIST (nothing applied) if the port is installed.
        2. Installed, same content: one batch that deletes and re-adds the
           ``ports_fp`` element ``<ifname> . <fingerprint>`` (fails with
           ENOENT, nothing applied, if the fingerprint differs) and re-adds
           every wanted element (no-op for present ones, repairs missing
           ones). Also O(1).
        3. Installed, different content: the port's entries are read back
           (O(ports) listing) and one batch deletes what is no longer wanted
           (an address removed, the other family after a routed<->bridged
           change) and adds what is missing. Drop counters of a family the
           port stays in are kept.
        """
        self.add_ports([pf])

    def add_ports(self, pfs: Iterable[PortFilter]) -> None:
        """:meth:`add_port` for many ports, still ONE transaction (bulk load, resync)."""
        parts: dict[str, _PortText] = {}
        for pf in pfs:
            parts[pf.ifname] = _want_text(pf)  # validates; the last one of an ifname wins
        if parts:
            self.ensure()
            self._converge(parts, maybe_new=True)

    def install_port(self, pf: PortFilter) -> bool:
        """Install ``pf`` as :meth:`add_port` does; True if the port was new.

        A plug owns an undo only for a port it created (False: it was there,
        now reconciled with ``pf``). Raises ValueError (invalid ``pf``) or
        :class:`~vifwire.executors.nft.NftError`.
        """
        parts = _want_text(pf)
        self.ensure()
        return self._install_one(pf.ifname, parts)

    def install_ports(self, pfs: list[PortFilter]) -> list[bool | Exception]:
        """Install many ports in ONE nft transaction; per port, what :meth:`install_port` says.

        One outcome per ``pfs`` entry, same order: True (new: the caller owns
        an undo), False (was installed: reconciled, nothing to undo) or the
        exception that failed that port (ValueError for an invalid filter,
        :class:`~vifwire.executors.nft.NftError`).

        The common case, all ports new, is one ``create``-guarded transaction
        with no read before it (module doc, "O(1) plug"). If it fails with
        EEXIST, the ``ports`` registry is read once to split new from
        installed ports: the new ones go in one transaction, the installed
        ones are reconciled together (:meth:`add_ports`' steps 2-3). Any other
        failure of a batch (nft refusing one port's elements) falls back to one
        transaction per port, so the failing port is the one that fails and
        the others still go in. A port named twice is installed once in the
        batch, then again on its own (the later filter wins, as with
        :meth:`add_port` called in order).
        """
        out: list[bool | Exception | None] = [None] * len(pfs)
        parts: dict[int, _PortText] = {}
        first: dict[str, int] = {}
        again: list[int] = []
        for i, pf in enumerate(pfs):
            try:
                parts[i] = _want_text(pf)
            except ValueError as exc:
                out[i] = exc
                continue
            if pf.ifname in first:
                again.append(i)
            else:
                first[pf.ifname] = i
        if parts:
            try:
                self.ensure()
            except NftError as exc:
                return [exc if o is None else o for o in out]
        self._install_batch(pfs, list(first.values()), parts, out)
        for i in again:
            self._install_guarded(pfs[i].ifname, parts[i], out, i)
        return out  # type: ignore[return-value]  # every slot is filled

    def _install_batch(self, pfs: list[PortFilter], idx: list[int], parts: dict[int, _PortText],
                       out: list) -> None:
        if len(idx) <= 1:
            self._install_each(pfs, idx, parts, out)
            return
        try:
            self.nft.run_text(_doc(_add_cmds([parts[i] for i in idx], registry="create")))
        except NftError as exc:
            if not _is_eexist(exc):
                self._install_each(pfs, idx, parts, out)
                return
        else:
            for i in idx:
                out[i] = True
            return
        # some are installed already (a re-plug): split by the registry, one read
        try:
            have = {_elem_val(e) for e in self._list_set(REGISTRY_FAMILY, "ports")}
        except NftError:
            self._install_each(pfs, idx, parts, out)
            return
        new = [i for i in idx if pfs[i].ifname not in have]
        old = [i for i in idx if pfs[i].ifname in have]
        if new:
            try:
                self.nft.run_text(_doc(_add_cmds([parts[i] for i in new], registry="create")))
                for i in new:
                    out[i] = True
            except NftError:
                self._install_each(pfs, new, parts, out)
        if old:
            try:
                self._converge({pfs[i].ifname: parts[i] for i in old}, maybe_new=False)
                for i in old:
                    out[i] = False
            except NftError:
                self._install_each(pfs, old, parts, out)

    def _install_each(self, pfs: list[PortFilter], idx: list[int], parts: dict[int, _PortText],
                      out: list) -> None:
        for i in idx:
            self._install_guarded(pfs[i].ifname, parts[i], out, i)

    def _install_guarded(self, ifname: str, parts: _PortText, out: list, i: int) -> None:
        try:
            out[i] = self._install_one(ifname, parts)
        except (NftError, AntiSpoofError) as exc:
            out[i] = exc

    def _install_one(self, ifname: str, parts: _PortText) -> bool:
        try:
            self.nft.run_text(_doc(_add_cmds([parts], registry="create")))
            return True
        except NftError as exc:
            if not _is_eexist(exc):
                raise
        self._converge({ifname: parts}, maybe_new=False)  # was there: reconcile, nothing to undo
        return False

    def _converge(self, parts: dict[str, _PortText], maybe_new: bool) -> None:
        """Steps 1-3 of :meth:`add_port` for many ports, each one transaction."""
        # 1. all new
        if maybe_new:
            try:
                self.nft.run_text(_doc(_add_cmds(parts.values(), registry="create")))
                return
            except NftError as exc:
                if not _is_eexist(exc):
                    raise
        # 2. new or unchanged: probe the fingerprints inside the batch
        fps = [p.fp for p in parts.values()]
        cmds = [_cmd_text("delete", REGISTRY_FAMILY, "ports_fp", fps),
                _cmd_text("add", REGISTRY_FAMILY, "ports_fp", fps),
                *_add_cmds(parts.values(), registry="add")]
        try:
            self.nft.run_text(_doc(cmds))
            return
        except NftError as exc:
            if not (_is_enoent(exc) or _is_eexist(exc)):
                raise
        # 3. reconcile the ports whose fingerprint differs with what is installed
        have_fps = {_key(e) for e in self._list_set(REGISTRY_FAMILY, "ports_fp")}
        changed = {n for n, p in parts.items()
                   if _key(json.loads(p.fp)) not in have_fps}
        have_all = self._entries_many(changed)
        deletes: list[_Parts] = []
        adds: list[_PortText | _Parts] = []
        for ifname, p in parts.items():
            if ifname not in changed:
                adds.append(p)  # re-add = repair
                continue
            want = _parts_json(p)
            have = have_all.get(ifname, {})
            deletes.append(_json_parts(_diff(have, want)))
            adds.append(_json_parts(_diff(want, have)))
        cmds = _delete_cmds(deletes) + _add_cmds(adds, registry="add")
        if cmds:
            self.nft.run_text(_doc(cmds))

    def remove_port(self, ifname: str, hint: PortFilter | None = None) -> None:
        """Remove exactly ``ifname``'s elements (one transaction); absent = no error.

        Without ``hint`` the port's entries are found by listing vifwire's sets
        (O(ports)). With ``hint`` (the PortFilter it was installed with, which
        an executor usually has in its store) the elements are computed: one
        O(1) delete batch, which includes the port's ``ports_fp`` element and
        so fails (nothing applied) if the hint is not what is installed; then
        the listing is used.
        """
        self.remove_ports([ifname], {ifname: hint} if hint else None)

    def remove_ports(self, ifnames: Iterable[str], hints: dict[str, PortFilter] | None = None) -> None:
        """:meth:`remove_port` for many ports in ONE transaction (unplug, gc).

        Elements are grouped per set across ports, so the transaction has one
        ``delete element`` command per set, whatever the number of ports.
        """
        names = set(ifnames)
        if not names:
            return
        hints = {n: pf for n, pf in (hints or {}).items() if n in names and pf.ifname == n}
        if hints:
            dels: list[_PortText | _Parts] = [_want_text(pf) for pf in hints.values()]
            rest = names - set(hints)
            if rest:
                dels += (_json_parts(h) for h in self._entries_many(rest).values())
            try:
                self.nft.run_text(_doc(_delete_cmds(dels)))
                return
            except NftError:
                # A hint did not match what is installed (ENOENT; with misses
                # in several sets the kernel's error replies, each echoing its
                # request, can overflow libnftables' socket and surface as
                # ENOBUFS instead): nothing was applied, do it the long way,
                # which deletes exactly what is listed.
                pass
        cmds = _delete_cmds(_json_parts(h) for h in self._entries_many(names).values())
        if cmds:
            self.nft.run_text(_doc(cmds))

    # -- queries -----------------------------------------------------------
    def _list_table(self, fam: str) -> dict[str, dict]:
        """set name -> nft's JSON set object, for vifwire's table of ``fam``."""
        try:
            out = self.nft.run({"nftables": [{"list": {"table": {"family": fam, "name": TABLE}}}]})
        except NftError as exc:
            if _is_enoent(exc):
                return {}
            raise
        return {
            item["set"]["name"]: item["set"]
            for item in out.get("nftables", [])
            if "set" in item and item["set"].get("table") == TABLE
        }

    def _list_set(self, fam: str, sname: str) -> list:
        try:
            out = self.nft.run({"nftables": [{"list": {"set": _obj(fam, name=sname)}}]})
        except NftError as exc:
            if _is_enoent(exc):
                return []
            raise
        for item in out.get("nftables", []):
            if "set" in item:
                return item["set"].get("elem", [])
        return []

    def _entries_many(
        self, ifnames: set[str], with_counters: bool = False
    ) -> dict[str, dict[str, dict[str, list]]]:
        """ifname -> family -> set -> installed elements (nft's JSON form).

        One listing per table, whatever the number of ports asked for. With
        ``with_counters`` the ``drop_*`` entries are ``{"packets", "bytes"}``.
        """
        res: dict[str, dict[str, dict[str, list]]] = {}
        for fam in FAMILIES:
            for sname, s in self._list_table(fam).items():
                for e in s.get("elem", []):
                    val = _elem_val(e)
                    owner = _elem_ifname(val)
                    if owner not in ifnames:
                        continue
                    if with_counters and sname.startswith("drop_"):
                        c = e["elem"].get("counter", {}) if isinstance(e, dict) and "elem" in e else {}
                        val = {"packets": c.get("packets", 0), "bytes": c.get("bytes", 0)}
                    res.setdefault(owner, {}).setdefault(fam, {}).setdefault(sname, []).append(val)
        return res

    def _entries(self, ifname: str, with_counters: bool = False) -> dict[str, dict[str, list]]:
        return self._entries_many({ifname}, with_counters).get(ifname, {})

    def ports(self) -> set[str]:
        """Every installed port (registry plus any guarded iifname), for gc."""
        out = {_elem_val(e) for e in self._list_set(REGISTRY_FAMILY, "ports")}
        for fam in FAMILIES:
            out.update(_elem_val(e) for e in self._list_set(fam, "vif_ifaces"))
        return out

    def guard_view(self, families: Iterable[str] = FAMILIES) -> GuardView:
        """A :class:`GuardView` of ``families``' tables, read now (check time)."""
        return GuardView(self, tuple(families))

    def port_entries(self, ifname: str) -> dict:
        """What is installed for ``ifname``: ``{}`` if nothing.

        ``{"registered": bool, "fingerprint": [...], "inet": {"guarded": bool, "mac": [...],
        "ipv4": ["<mac> <addr-or-cidr>", ...], "ipv6": [...], "nd_targets":
        [...], "drops": {reason: packets}}, "arp": {...}}``.
        """
        ent = self._entries(ifname, with_counters=True)
        if not ent:
            return {}
        reg = ent.get(REGISTRY_FAMILY, {})
        out: dict[str, Any] = {
            "registered": bool(reg.get("ports")),
            "fingerprint": [e["concat"][1] for e in reg.get("ports_fp", [])],
        }
        for fam, sets in ent.items():
            if not set(sets) - set(_REGISTRY_SETS):
                continue
            s: dict[str, Any] = {"guarded": bool(sets.get("vif_ifaces"))}
            s["mac"] = sorted(e["concat"][1] for e in sets.get("allow_mac", []))

            def fmt(names: tuple[str, ...], f=_fmt_addr) -> list[str]:
                return sorted(
                    f"{e['concat'][1]} {f(e['concat'][2])}" for n in names for e in sets.get(n, [])
                )

            s["ipv4"] = fmt(("allow_v4", "allow_v4_net"))
            if "allow_v6" in ADDR_SETS[fam]:
                s["ipv6"] = fmt(("allow_v6", "allow_v6_net"))
                s["nd_targets"] = fmt(("allow_nd", "allow_nd_net"), _fmt_nd)
            s["drops"] = {
                sname[5:]: v[0]["packets"] for sname, v in sets.items() if sname.startswith("drop_")
            }
            out[fam] = s
        return out

    def drops(self, ifname: str) -> dict[str, int]:
        """Dropped packets of ``ifname`` by reason (summed over its tables).

        ``{}`` when the port has no counters installed. Reads only the
        ``drop_*`` sets (O(ports) listing; not on the plug path).
        """
        res: dict[str, int] = {}
        for fam in FAMILIES:
            for reason in REASONS[fam]:
                for e in self._list_set(fam, f"drop_{reason}"):
                    if isinstance(e, dict) and "elem" in e and e["elem"]["val"] == ifname:
                        c = e["elem"].get("counter", {})
                        res[reason] = res.get(reason, 0) + int(c.get("packets", 0))
        if not res:
            return {}
        for r in ALL_REASONS:
            res.setdefault(r, 0)
        return res

    def rule_path_length(self) -> int:
        """Rules a packet from a guarded interface may walk (worst case).

        Counted from the installed ruleset: for each vifwire base chain, its
        rules plus, for every jump/goto, the target chain's rules
        (recursively). The maximum over the tables is returned.
        """
        # one terse listing (no set elements: listing a single chain would
        # make nft 1.0.6 fetch every element of every set)
        out = self.nft.run({"nftables": [{"list": {"ruleset": None}}]}, terse=True)
        best = 0
        for fam in FAMILIES:
            chains: dict[str, dict] = {}
            rules: dict[str, list[list[dict]]] = {}
            for item in out.get("nftables", []):
                if "chain" in item:
                    c = item["chain"]
                    if c.get("family") == fam and c.get("table") == TABLE:
                        chains[c["name"]] = c
                elif "rule" in item:
                    r = item["rule"]
                    if r.get("family") == fam and r.get("table") == TABLE:
                        rules.setdefault(r["chain"], []).append(r["expr"])

            def walk(name: str, depth: int = 0) -> int:
                if depth > 16:
                    raise AntiSpoofError("chain jump loop")
                n = 0
                for expr in rules.get(name, []):
                    n += 1
                    for st in expr:
                        for verb in ("jump", "goto"):
                            if verb in st:
                                n += walk(st[verb]["target"], depth + 1)
                return n

            for name, c in chains.items():
                if "hook" in c:
                    best = max(best, walk(name))
        return best


class GuardView:
    """What vifwire's sets say about every port, read once: ``check`` of a run.

    ``check`` asks per port: is it registered, which of its families hold
    elements, is it guarded (``vif_ifaces``), is its MAC allowed
    (``allow_mac``). Only those sets are listed, once each per view: the
    ``ports`` registry plus ``vif_ifaces`` and ``allow_mac`` of each family
    asked for (~40 ms for 1000 routed ports here, where listing the three
    whole tables costs ~180 ms, most of it libnftables printing and Python
    decoding address sets and counters; a check through
    :meth:`AntiSpoof.port_entries` paid ~275 ms for every port: bench/antispoof_bench.py
    ``--batch``). A port whose family has neither a
    ``vif_ifaces`` nor an ``allow_mac`` element (drift) is looked up in that
    family's whole table, listed at most once per view.
    """

    def __init__(self, anti: AntiSpoof, families: tuple[str, ...]):
        self._anti = anti
        self.registered: set[str] = {_elem_val(e) for e in anti._list_set(REGISTRY_FAMILY, "ports")}
        self._guarded: dict[str, set[str]] = {}
        self._macs: dict[str, dict[str, set[str]]] = {}
        for fam in families:
            self._guarded[fam] = {_elem_val(e) for e in anti._list_set(fam, "vif_ifaces")}
            macs: dict[str, set[str]] = {}
            for e in anti._list_set(fam, "allow_mac"):
                ifname, mac = _elem_val(e)["concat"][:2]
                macs.setdefault(ifname, set()).add(mac)
            self._macs[fam] = macs
        self._owners: dict[str, set[str]] = {}  # family -> ifnames with any non-registry element

    def is_registered(self, ifname: str) -> bool:
        """The port's ``ports`` element is there (what :meth:`AntiSpoof.port_entries` calls registered)."""
        return ifname in self.registered

    def has_family(self, ifname: str, fam: str) -> bool:
        """The port has elements in ``fam``'s table besides the registry."""
        if ifname in self._guarded[fam] or ifname in self._macs[fam]:
            return True
        owners = self._owners.get(fam)
        if owners is None:
            owners = self._owners[fam] = {
                _elem_ifname(_elem_val(e))
                for sname, st in self._anti._list_table(fam).items() if sname not in _REGISTRY_SETS
                for e in st.get("elem", [])
            }
        return ifname in owners

    def is_guarded(self, ifname: str, fam: str) -> bool:
        """The port's ``vif_ifaces`` element in ``fam`` is there (its traffic is checked)."""
        return ifname in self._guarded[fam]

    def macs(self, ifname: str, fam: str) -> set[str]:
        """The source MACs ``fam``'s table allows from the port."""
        return self._macs[fam].get(ifname, set())


# ---------------------------------------------------------------------------
# element plumbing
# ---------------------------------------------------------------------------


def _cmd_text(verb: str, fam: str, sname: str, elems: list[str]) -> str:
    """One ``<verb> element`` command as JSON text (``elems``: element texts)."""
    return (f'{{"{verb}":{{"element":{{"family":"{fam}","table":"{TABLE}","name":"{sname}",'
            f'"elem":[{",".join(elems)}]}}}}}}')


def _doc(cmds: list[str]) -> str:
    """The JSON document of ``cmds`` (command texts): ONE transaction."""
    return '{"nftables":[' + ",".join(cmds) + "]}"


def _by_set(parts: Iterable[_PortText | _Parts]) -> _Parts:
    """Every port's element texts grouped per set.

    Ports' texts (:class:`_PortText`) are grouped per family: every
    ifname-only set of a family (``drop_*``, ``vif_ifaces``) gets the same
    list, its ports' ifnames; address sets are their elements in port
    order. Listed or diffed parts are merged in first (rare: reconcile).
    """
    by_set: _Parts = {}
    ports: list[_PortText] = []
    for p in parts:
        if isinstance(p, _PortText):
            ports.append(p)
            continue
        for k, elems in p.items():
            by_set.setdefault(k, []).extend(elems)
    if not ports:
        return by_set
    grouped: _Parts = {}
    for fam in FAMILIES:
        mine = [p for p in ports if fam in p.fams]
        if not mine:
            continue
        emit, ifs, _addr, _tail = _FAM_ORDER[fam]
        names = [p.ij for p in mine]
        for sname in emit:
            if sname in ifs:
                grouped[(fam, sname)] = names
            else:
                elems = [e for p in mine for e in p.addr[sname]]
                if elems:
                    grouped[(fam, sname)] = elems
    grouped[(REGISTRY_FAMILY, "ports_fp")] = [p.fp for p in ports]
    grouped[(REGISTRY_FAMILY, "ports")] = [p.ij for p in ports]
    for k, elems in grouped.items():
        acc = by_set.get(k)
        if acc is None:
            by_set[k] = elems  # may be shared with other keys: never extended below
        else:
            acc.extend(elems)
    return by_set


def _add_cmds(parts: Iterable[_PortText | _Parts], registry: str = "add") -> list[str]:
    """``add element`` commands for every port of ``parts``, ONE per set.

    ``registry`` is the verb for the ``ports`` elements: ``create`` makes the
    transaction fail with EEXIST (nothing applied) if any port is installed;
    those commands come first so a re-plug fails before anything else runs.
    Grouping per set keeps the transaction at ~20 commands whatever the
    number of ports: libnftables parses and evaluates each command, and 1000
    ports' elements cost a third as much as 1000 ports' commands. The
    commands are written as JSON text from the element texts: no dicts, no
    ``json.dumps`` of the whole batch.
    """
    first: list[str] = []
    rest: list[str] = []
    for (fam, sname), elems in _by_set(parts).items():
        if fam == REGISTRY_FAMILY and sname == "ports" and registry != "add":
            first.append(_cmd_text(registry, fam, sname, elems))
        else:
            rest.append(_cmd_text("add", fam, sname, elems))
    return first + rest


def _delete_cmds(parts: Iterable[_PortText | _Parts]) -> list[str]:
    """``delete element`` commands for every port of ``parts``, one per set."""
    return [_cmd_text("delete", fam, sname, elems) for (fam, sname), elems in _by_set(parts).items()]


def _digest_of(body_json: str) -> str:
    """Digest of everything a port wants installed, as a 128-bit key part.

    ``body_json`` is ``json.dumps(body, sort_keys=True)`` of family -> set ->
    sorted canonical keys (:func:`_key`) of the port's elements, registry
    sets excluded (written out by :func:`_want_text`). Stored as ``ports_fp``
    element ``<ifname> . <digest>``; typed ipv6_addr only because nft
    1.0.6's JSON cannot declare a raw 128-bit type (the kernel keeps the 16
    bytes, so the text form does not matter).
    """
    digest = hashlib.sha256(body_json.encode()).digest()[:16]
    return _text(6, int.from_bytes(digest, "big"))


def _is_enoent(exc: NftError) -> bool:
    t = str(exc)
    return "No such file or directory" in t or "does not exist" in t


def _is_eexist(exc: NftError) -> bool:
    return "File exists" in str(exc)


def _elem_val(e: Any) -> Any:
    # elements with a counter are listed as {"elem": {"val": ..., "counter": ...}}
    if isinstance(e, dict) and "elem" in e:
        return e["elem"]["val"]
    return e


def _elem_ifname(val: Any) -> Any:
    if isinstance(val, dict) and "concat" in val:
        return val["concat"][0]
    return val


def _canon(x: Any) -> Any:
    if isinstance(x, dict) and "prefix" in x:
        p = x["prefix"]
        return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
    if isinstance(x, dict) and "range" in x:
        lo, hi = x["range"]
        return f"{_canon(lo)}-{_canon(hi)}"
    if isinstance(x, dict) and "concat" in x:
        return [_canon(y) for y in x["concat"]]
    if isinstance(x, str):
        s = x.lower()
        if s.startswith("0x"):
            return _hex128(int(s, 16))
        try:
            return str(ipaddress.ip_network(s, strict=False))
        except ValueError:
            return x
    return x


def _key(e: Any) -> str:
    """Canonical comparison key of a JSON element (our form vs nft's listing)."""
    return json.dumps(_canon(_elem_val(e)))


def _diff(a: dict[str, dict[str, list]], b: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    """Elements of ``a`` that are not in ``b`` (family -> set -> elements)."""
    out: dict[str, dict[str, list]] = {}
    for fam, sets in a.items():
        for sname, elems in sets.items():
            bk = {_key(e) for e in b.get(fam, {}).get(sname, [])}
            rest = [e for e in elems if _key(e) not in bk]
            if rest:
                out.setdefault(fam, {})[sname] = rest
    return out


def _fmt_addr(x: Any) -> str:
    if isinstance(x, dict) and "prefix" in x:
        return f"{x['prefix']['addr']}/{x['prefix']['len']}"
    if isinstance(x, dict) and "range" in x:
        return f"{x['range'][0]}-{x['range'][1]}"
    return str(x)


def _fmt_nd(x: Any) -> str:
    def one(v: str) -> str:
        return str(ipaddress.IPv6Address(int(v, 16)))

    if isinstance(x, dict) and "range" in x:
        lo, hi = (int(v, 16) for v in x["range"])
        span = hi - lo + 1
        if span & (span - 1) == 0 and lo % span == 0:
            return str(ipaddress.IPv6Network((lo, 128 - span.bit_length() + 1)))
        return f"{one(x['range'][0])}-{one(x['range'][1])}"
    return one(x)
