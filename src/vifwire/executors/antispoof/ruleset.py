"""vifwire's nft tables, sets, chains and rules, as libnftables JSON.

The ruleset is fixed: per-port state lives only in set elements (package
docstring, "O(1) plug"), so this module is everything that does not change
when a port is plugged: the set declarations, the guard chains' rules as
JSON expressions (libnftables-json(5), "EXPRESSIONS"/"STATEMENTS"), creating
and deleting the tables, and counting the rules a packet walks. docs/routed.md
"The nftables tables" describes the checks in prose.
"""

from __future__ import annotations

from typing import Any

from vifwire.executors.antispoof.model import (
    ADDR_SETS,
    FAMILIES,
    REASONS,
    REGISTRY_FAMILY,
    REGISTRY_SETS,
    TABLE,
    AntiSpoofError,
)
from vifwire.executors.antispoof.transaction import is_enoent
from vifwire.executors.nft import Nft, NftError

#: base chain priority -300 (raw): before conntrack, so a spoofed packet never
#: creates conntrack state (nftables wiki, "Netfilter hooks", priority table)
PRIO_RAW = -300

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


def _cat(*xs: Any) -> dict:
    return {"concat": list(xs)}


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


def table_obj(family: str, **kw: Any) -> dict:
    return {"family": family, "table": TABLE, **kw}


def _sets_of(fam: str) -> tuple[str, ...]:
    extra = REGISTRY_SETS if fam == REGISTRY_FAMILY else ()
    return (*extra, "vif_ifaces", *ADDR_SETS[fam], *(f"drop_{r}" for r in REASONS[fam]))


# ---------------------------------------------------------------------------
# creating, deleting and measuring the tables
# ---------------------------------------------------------------------------


def ensure_tables(nft: Nft) -> None:
    """Create tables, sets and chains; (re)load the rules. Idempotent.

    Set contents (the ports) are untouched. The rules are replaced
    atomically (flush chain + add rules in one transaction), so running it
    again also repairs tampered rules.
    """
    nft.run(
        {"nftables": [{"add": {"table": {"family": f, "name": TABLE}}} for f in FAMILIES]}
    )
    # the one nft-syntax command (see _ND_SET_TEXT); "add" is idempotent
    nft.run_text(
        "\n".join(_ND_SET_TEXT.format(family=f) for f in FAMILIES if "allow_nd" in ADDR_SETS[f])
    )
    cmds: list[dict] = []
    for fam in FAMILIES:
        for sname in _sets_of(fam):
            if sname.startswith("allow_nd"):
                continue
            spec = _DROP_SET_DEF if sname.startswith("drop_") else _SET_DEFS[sname]
            cmds.append({"add": {"set": table_obj(fam, name=sname, **spec)}})
        chains = _chains(fam)
        for cname, (base, _rules) in chains.items():
            cmds.append({"add": {"chain": table_obj(fam, name=cname, **(base or {}))}})
        for cname in chains:
            cmds.append({"flush": {"chain": table_obj(fam, name=cname)}})
        for cname, (_base, rules) in chains.items():
            for expr in rules:
                cmds.append({"add": {"rule": table_obj(fam, chain=cname, expr=expr)}})
    nft.run({"nftables": cmds})


def remove_tables(nft: Nft) -> None:
    """Delete vifwire's tables (every port). Absent tables are fine."""
    for fam in FAMILIES:
        try:
            nft.run({"nftables": [{"delete": {"table": {"family": fam, "name": TABLE}}}]})
        except NftError as exc:
            if not is_enoent(exc):
                raise


def rule_path_length(nft: Nft) -> int:
    """Rules a packet from a guarded interface may walk (worst case).

    Counted from the installed ruleset: for each vifwire base chain, its
    rules plus, for every jump/goto, the target chain's rules
    (recursively). The maximum over the tables is returned.
    """
    # one terse listing (no set elements: listing a single chain would
    # make nft 1.0.6 fetch every element of every set)
    out = nft.run({"nftables": [{"list": {"ruleset": None}}]}, terse=True)
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
