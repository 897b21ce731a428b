"""A port's set elements, computed: what :class:`.PortFilter` means in nft.

Everything a port needs installed is written straight out as libnftables
JSON element text (:func:`want_text`), because this is the per-port hot path
of a batch plug; :func:`want_elements` parses it back for the reconcile path,
which compares with nft's listing through canonical keys (:func:`elem_key`,
:func:`diff_elems`). The ``ports_fp`` fingerprint (:func:`digest_of`) is a
digest of those canonical keys, so an unchanged re-plug is detected without
reading the sets (package docstring, "O(1) plug"). Element JSON forms follow
libnftables-json(5), "ELEMENTS"/"CONCAT"/"PREFIX"/"RANGE".
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
from typing import Any, Iterator

from vifwire.executors.antispoof.model import (
    ADDR_SETS,
    FAMILIES,
    IFNAME_RE,
    REASONS,
    REGISTRY_FAMILY,
    Net,
    PortFilter,
    addr_text,
    collapse,
    eui64_of_norm,
    hex128,
    norm_mac,
    parse_host,
    parse_net,
)

_MAYBE_CANON = frozenset("0123456789abcdefxABCDEFX.:/")


def _ifname_key(ifname: str) -> str:
    """``elem_key(ifname)`` (JSON text of its canonical form), cheaply.

    :func:`canon` reads any string that parses as an address as one; an
    interface name made only of hex digits, dots, colons and slashes might,
    so those take the exact path (they are rare: ``tap...`` never does).
    """
    if _MAYBE_CANON.issuperset(ifname):
        return json.dumps(canon(ifname))
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


FAM_ORDER = {fam: _fam_order(fam) for fam in FAMILIES}


def _esc(s: str) -> str:
    """``s`` inside a JSON string (s is printable ASCII: only backslash and quote need escaping)."""
    return s.replace("\\", "\\\\").replace('"', '\\"')


class PortText:
    """A port's elements as JSON text (:func:`want_text`).

    ``ij`` is the ifname's JSON text, the whole element of the registry,
    ``drop_*`` and ``vif_ifaces`` sets; ``addr`` holds the address sets'
    element texts (a list per set of ``_ADDR_KEYS``, shared by the port's
    families); ``fp`` is its ``ports_fp`` element. Kept this compact because
    a batch groups N ports per set (:func:`.transaction.group_by_set`): the ifname-only sets
    of a family all share one list of the ports' ``ij``.
    """

    __slots__ = ("ij", "fams", "addr", "fp")

    def __init__(self, ij: str, fams: tuple[str, ...], addr: dict[str, list[str]], fp: str):
        self.ij, self.fams, self.addr, self.fp = ij, fams, addr, fp

    def items(self) -> Iterator[tuple[tuple[str, str], list[str]]]:
        """(family, set) -> element texts, non-empty sets only, in emit order."""
        for fam in self.fams:
            for sname in FAM_ORDER[fam][0]:
                e = self.addr.get(sname)
                if e is None:
                    yield (fam, sname), [self.ij]
                elif e:
                    yield (fam, sname), e
        yield (REGISTRY_FAMILY, "ports_fp"), [self.fp]
        yield (REGISTRY_FAMILY, "ports"), [self.ij]


#: what a transaction's element commands are built from: ports' texts, or
#: (family, set) -> element texts (a listing or a diff, :func:`json_parts`)
Parts = dict[tuple[str, str], list[str]]


def want_text(pf: PortFilter) -> PortText:
    """Everything ``pf`` needs installed, as JSON text.

    This is the batch hot path (a run of N ports computes N of these, and
    the transaction is their texts joined, see :func:`.transaction.add_cmds`), so no
    element is built as a dict nor serialised by ``json``: each element is
    written out as its JSON text, and its canonical key (:func:`elem_key`) next
    to it, for the ``ports_fp`` fingerprint (:func:`digest_of`). Raises
    ValueError for an invalid interface name, MAC or address.
    """
    ifname = pf.ifname
    if not isinstance(ifname, str) or not IFNAME_RE.match(ifname):
        raise ValueError(f"invalid interface name {ifname!r}")
    mac = norm_mac(pf.mac)
    own: list[Net] = []
    by_mac: dict[str, list[Net]] = {mac: own}
    for a in pf.ipv4:
        ver, v = parse_host(a)
        if ver != 4:
            raise ValueError(f"{ifname}: {a!r} in ipv4 is not an IPv4 address")
        own.append((4, v, 32))
    for a in pf.ipv6:
        ver, v = parse_host(a)
        if ver != 6:
            raise ValueError(f"{ifname}: {a!r} in ipv6 is not an IPv6 address")
        own.append((6, v, 128))
    for pair in pf.allowed_pairs:
        if isinstance(pair, str):
            pair = (pair, None)
        ip_or_cidr, pmac = pair[0], (pair[1] if len(pair) > 1 else None)
        m = norm_mac(pmac) if pmac else mac
        by_mac.setdefault(m, []).append(parse_net(ip_or_cidr))
    ik = _ifname_key(ifname)  # the ifname in keys (canonical form, JSON text)
    ij = json.dumps(ifname)  # the ifname in elements (JSON text)
    # set -> (keys, element texts); a key is elem_key(element): json.dumps of the
    # canonical concat, written out (every part but the ifname is plain ASCII)
    keys: dict[str, list[str]] = {s: [] for s in _ADDR_KEYS}
    elems: dict[str, list[str]] = {s: [] for s in _ADDR_KEYS}
    if not pf.allowed_pairs and len(pf.ipv4) == 1 and len(pf.ipv6) == 1:
        # the common port, one IPv4 and one IPv6 address, no pairs: what the
        # loop below computes, without collapsing (nothing collapses unless
        # the IPv6 address is its link-local or that one's sibling)
        (_v4, a4, _p4), (_v6, a6, _p6) = own
        ll = eui64_of_norm(mac)
        if a6 >> 1 != ll >> 1:
            t4, t6, tl = addr_text(4, a4), addr_text(6, a6), addr_text(6, ll)
            h6, hl = hex128(a6), hex128(ll)
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
        nets = by_mac[m] + [(6, eui64_of_norm(m), 128)]
        # pipapo (concatenated interval) sets reject overlapping elements:
        # collapse per MAC so host addresses inside a pair CIDR disappear.
        # Host addresses go to hash sets (O(1) insert and lookup); only CIDR
        # pairs go to the interval sets, whose cost grows with their size.
        for n in collapse(4, nets):
            text, plen = addr_text(4, n[1]), n[2]
            if plen == 32:
                keys["allow_v4"].append(f'{pk}{text}/32"]')
                elems["allow_v4"].append(f'{pe}"{text}"]}}')
            else:
                keys["allow_v4_net"].append(f'{pk}{text}/{plen}"]')
                elems["allow_v4_net"].append(f'{pe}{{"prefix":{{"addr":"{text}","len":{plen}}}}}]}}')
        for n in collapse(6, nets):
            text, plen = addr_text(6, n[1]), n[2]
            lo = hex128(n[1])  # the ND target (allow_nd*), a raw 128-bit value
            if plen == 128:
                keys["allow_v6"].append(f'{pk}{text}/128"]')
                elems["allow_v6"].append(f'{pe}"{text}"]}}')
                keys["allow_nd"].append(f'{pk}{lo}"]')
                elems["allow_nd"].append(f'{pe}"{lo}"]}}')
            else:
                hi = hex128(n[1] | ((1 << (128 - plen)) - 1))
                keys["allow_v6_net"].append(f'{pk}{text}/{plen}"]')
                elems["allow_v6_net"].append(f'{pe}{{"prefix":{{"addr":"{text}","len":{plen}}}}}]}}')
                keys["allow_nd_net"].append(f'{pk}{lo}-{hi}"]')
                elems["allow_nd_net"].append(f'{pe}{{"range":["{lo}","{hi}"]}}]}}')
    seg: dict[str, str] = {}  # set -> its digest body entry (computed once for both families)
    eik = _esc(ik)
    fams = pf.families()
    bodies = []
    for fam in fams:
        _emit, _ifs, addr_sorted, tail = FAM_ORDER[fam]
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
    digest = digest_of("{" + ", ".join(bodies) + "}")
    return PortText(ij, fams, elems, f'{{"concat":[{ij},"{digest}"]}}')


def want_elements(pf: PortFilter) -> dict[str, dict[str, list]]:
    """:func:`want_text` as JSON elements: family -> set name -> elements.

    Parsed from the text, so it is what a transaction sends by construction
    (the reconcile path compares it with nft's listing).
    """
    return parts_json(want_text(pf))


def parts_json(parts: PortText | Parts) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for (fam, sname), texts in parts.items():
        out.setdefault(fam, {})[sname] = [json.loads(t) for t in texts]
    return out


def json_parts(have: dict[str, dict[str, list]]) -> Parts:
    """Inverse of :func:`parts_json` for elements in nft's JSON form (listed or diffed)."""
    return {(fam, sname): [json.dumps(elem_val(e), separators=(",", ":")) for e in elems]
            for fam, sets in have.items() for sname, elems in sets.items() if elems}


def digest_of(body_json: str) -> str:
    """Digest of everything a port wants installed, as a 128-bit key part.

    ``body_json`` is ``json.dumps(body, sort_keys=True)`` of family -> set ->
    sorted canonical keys (:func:`elem_key`) of the port's elements, registry
    sets excluded (written out by :func:`want_text`). Stored as ``ports_fp``
    element ``<ifname> . <digest>``; typed ipv6_addr only because nft
    1.0.6's JSON cannot declare a raw 128-bit type (the kernel keeps the 16
    bytes, so the text form does not matter).
    """
    digest = hashlib.sha256(body_json.encode()).digest()[:16]
    return addr_text(6, int.from_bytes(digest, "big"))


def elem_val(e: Any) -> Any:
    # elements with a counter are listed as {"elem": {"val": ..., "counter": ...}}
    if isinstance(e, dict) and "elem" in e:
        return e["elem"]["val"]
    return e


def elem_ifname(val: Any) -> Any:
    if isinstance(val, dict) and "concat" in val:
        return val["concat"][0]
    return val


def canon(x: Any) -> Any:
    if isinstance(x, dict) and "prefix" in x:
        p = x["prefix"]
        return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
    if isinstance(x, dict) and "range" in x:
        lo, hi = x["range"]
        return f"{canon(lo)}-{canon(hi)}"
    if isinstance(x, dict) and "concat" in x:
        return [canon(y) for y in x["concat"]]
    if isinstance(x, str):
        return _canon_str(x)
    return x


@functools.lru_cache(maxsize=1 << 16)
def _canon_str(x: str) -> str:
    """One string's canonical form, remembered: a check of every port compares
    thousands of elements (ipaddress parses ~20 us each), the same ones at
    every resync of a long-lived agent. A string with a character no address
    has (an interface name) is not parsed at all."""
    s = x.lower()
    if s.startswith("0x"):
        return hex128(int(s, 16))
    if not _MAYBE_CANON.issuperset(s):
        return x
    try:
        return str(ipaddress.ip_network(s, strict=False))
    except ValueError:
        return x


def elem_key(e: Any) -> str:
    """Canonical comparison key of a JSON element (our form vs nft's listing)."""
    return json.dumps(canon(elem_val(e)))


def diff_elems(a: dict[str, dict[str, list]], b: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    """Elements of ``a`` that are not in ``b`` (family -> set -> elements)."""
    out: dict[str, dict[str, list]] = {}
    for fam, sets in a.items():
        for sname, elems in sets.items():
            bk = {elem_key(e) for e in b.get(fam, {}).get(sname, [])}
            rest = [e for e in elems if elem_key(e) not in bk]
            if rest:
                out.setdefault(fam, {})[sname] = rest
    return out

