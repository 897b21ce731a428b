"""What a port may send, validated and normalised: the filter's input model.

:class:`PortFilter` is what callers hand in; the constants name vifwire's
tables, their families, sets and drop reasons (the package docstring and
docs/routed.md "The nftables tables" explain them). The address helpers turn
user text into exact integers fast, because every port of a plug passes
through them (:mod:`.elements`), while accepting and canonicalising exactly
what ``ipaddress`` does.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

TABLE = "vifwire"
FAMILIES = ("inet", "arp", "bridge")

ROUTED_FAMILIES = ("inet", "arp")
BRIDGED_FAMILIES = ("bridge",)
REGISTRY_FAMILY = "inet"  # where the registry sets live
REGISTRY_SETS = ("ports", "ports_fp")

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

IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class AntiSpoofError(RuntimeError):
    """vifwire's tables are not in a shape the filter can work with (a chain jump loop)."""


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
# A plug of many ports computes every port's elements (elements.want_text) in one go,
# so this is the per-port hot path: addresses are handled as (version, int,
# prefix length) triples. Plain addresses, by far the common case, are parsed
# with a strict regex (IPv4) or ``inet_pton`` (IPv6, hex-and-colon text only)
# and printed with ``inet_ntop``; ``ipaddress`` is used only where these fast
# paths do not provably give its answer (CIDRs, addresses with a prefix,
# scoped or IPv4-embedding text, ranges that need collapsing), so what is
# accepted and how it is canonicalised is exactly ``ipaddress``'s.

Net = tuple[int, int, int]  # (version, network address as int, prefix length)

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
    return eui64_of_norm(norm_mac(mac))


def eui64_of_norm(mac: str) -> int:
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


def parse_host(addr: str) -> tuple[int, int]:
    """``ipaddress.ip_interface(addr).ip`` as (version, int): "10.0.0.5" or
    "10.0.0.5/24" (an interface address) both give the host address."""
    s = addr.strip()
    fast = _parse_addr(s)
    if fast is not None:
        return fast
    ip = ipaddress.ip_interface(s).ip
    return ip.version, int(ip)


def parse_net(addr: str) -> Net:
    """``ipaddress.ip_network(addr, strict=False)`` as a triple (pairs may be CIDRs)."""
    s = addr.strip()
    fast = _parse_addr(s)
    if fast is not None:
        return fast[0], fast[1], _MAX_PLEN[fast[0]]
    n = ipaddress.ip_network(s, strict=False)
    return n.version, int(n.network_address), n.prefixlen


def addr_text(version: int, v: int) -> str:
    """The address as ``str(ipaddress.ip_address(v))`` prints it."""
    if version == 4:
        return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
    if (v >> 32) in (0, 0xFFFF):
        # ::a.b.c.d and ::ffff:a.b.c.d: glibc prints these dotted, ipaddress does not
        return str(ipaddress.IPv6Address(v))
    return socket.inet_ntop(socket.AF_INET6, v.to_bytes(16, "big"))


def collapse(version: int, nets: list[Net]) -> list[Net]:
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


def hex128(v: int) -> str:
    return f"0x{v:032x}"

