"""The filter's API: install, remove and read ports in vifwire's nft tables.

:class:`AntiSpoof` owns the plug protocol (one transaction per port or per
batch, guarded so a failed transaction applies nothing: package docstring,
"O(1) plug" and "Batches") and the reads behind ``check``, gc and
diagnostics; :class:`GuardView` is ``check``'s one read of the few sets it
needs. What the elements are comes from :mod:`.elements`, how they are sent
from :mod:`.transaction`, the fixed ruleset from :mod:`.ruleset`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any, Iterable

from vifwire.executors.antispoof.elements import (
    Parts,
    PortText,
    diff_elems,
    elem_ifname,
    elem_key,
    elem_val,
    json_parts,
    parts_json,
    want_elements,
    want_text,
)
from vifwire.executors.antispoof.model import (
    ADDR_SETS,
    ALL_REASONS,
    FAMILIES,
    REASONS,
    REGISTRY_FAMILY,
    REGISTRY_SETS,
    TABLE,
    AntiSpoofError,
    PortFilter,
)
from vifwire.executors.antispoof.ruleset import ensure_tables, remove_tables, rule_path_length, table_obj
from vifwire.executors.antispoof.transaction import (
    add_cmds,
    cmd_text,
    delete_cmds,
    is_eexist,
    is_enoent,
    transaction_text,
)
from vifwire.executors.nft import Nft, NftError

class AntiSpoof:
    """Install/remove per-port anti-spoofing state in vifwire's nft tables."""

    def __init__(self, nft: Nft):
        self.nft = nft
        self._ensured = False
        #: interfaces this object installed or found installed: a hint of
        #: which first attempt will succeed, never trusted for correctness
        #: (a failed nft command costs ~8 ms: libnftables fetches the ruleset
        #: to locate the error)
        self._seen: set[str] = set()

    # -- tables ------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Create tables, sets and chains; (re)load the rules. Idempotent.

        Set contents (the ports) are untouched; running it again also repairs
        tampered rules (:func:`.ruleset.ensure_tables`).
        """
        ensure_tables(self.nft)
        self._ensured = True

    def ensure(self) -> None:
        """:meth:`ensure_tables` once per :class:`AntiSpoof` (the install paths call it)."""
        if not self._ensured:
            self.ensure_tables()

    def remove_tables(self) -> None:
        """Delete vifwire's tables (every port). Absent tables are fine."""
        remove_tables(self.nft)
        self._ensured = False
        self._seen.clear()

    # -- port operations ---------------------------------------------------
    def add_port(self, pf: PortFilter) -> None:
        """Install ``pf`` in ONE nft transaction. Idempotent.

        1. New port: one batch, no read before it; O(1) (package docstring). It
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
        parts: dict[str, PortText] = {}
        for pf in pfs:
            parts[pf.ifname] = want_text(pf)  # validates; the last one of an ifname wins
        if parts:
            self.ensure()
            self._converge(parts, maybe_new=True)

    def install_port(self, pf: PortFilter) -> bool:
        """Install ``pf`` as :meth:`add_port` does; True if the port was new.

        A plug owns an undo only for a port it created (False: it was there,
        now reconciled with ``pf``). Raises ValueError (invalid ``pf``) or
        :class:`~vifwire.executors.nft.NftError`.
        """
        parts = want_text(pf)
        self.ensure()
        return self._install_one(pf.ifname, parts)

    def install_ports(self, pfs: list[PortFilter]) -> list[bool | Exception]:
        """Install many ports in ONE nft transaction; per port, what :meth:`install_port` says.

        One outcome per ``pfs`` entry, same order: True (new: the caller owns
        an undo), False (was installed: reconciled, nothing to undo) or the
        exception that failed that port (ValueError for an invalid filter,
        :class:`~vifwire.executors.nft.NftError`).

        The common case, all ports new, is one ``create``-guarded transaction
        with no read before it (package docstring, "O(1) plug"). If it fails with
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
        parts: dict[int, PortText] = {}
        first: dict[str, int] = {}
        again: list[int] = []
        for i, pf in enumerate(pfs):
            try:
                parts[i] = want_text(pf)
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
        todo = list(first.values())
        seen = [i for i in todo if pfs[i].ifname in self._seen]
        if seen and self._unchanged([parts[i] for i in seen]):  # a re-plug: no create to fail first
            for i in seen:
                out[i] = False
            todo = [i for i in todo if out[i] is None]
        self._install_batch(pfs, todo, parts, out)
        for i in again:
            self._install_guarded(pfs[i].ifname, parts[i], out, i)
        self._seen.update(pf.ifname for pf, o in zip(pfs, out) if not isinstance(o, Exception))
        return out  # type: ignore[return-value]  # every slot is filled

    def _install_batch(self, pfs: list[PortFilter], idx: list[int], parts: dict[int, PortText],
                       out: list) -> None:
        if len(idx) <= 1:
            self._install_each(pfs, idx, parts, out)
            return
        try:
            self.nft.run_text(transaction_text(add_cmds([parts[i] for i in idx], registry="create")))
        except NftError as exc:
            if not is_eexist(exc):
                self._install_each(pfs, idx, parts, out)
                return
        else:
            for i in idx:
                out[i] = True
            return
        # some are installed already (a re-plug): split by the registry, one read
        try:
            have = {elem_val(e) for e in self.list_set(REGISTRY_FAMILY, "ports")}
        except NftError:
            self._install_each(pfs, idx, parts, out)
            return
        new = [i for i in idx if pfs[i].ifname not in have]
        old = [i for i in idx if pfs[i].ifname in have]
        if new:
            try:
                self.nft.run_text(transaction_text(add_cmds([parts[i] for i in new], registry="create")))
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

    def _install_each(self, pfs: list[PortFilter], idx: list[int], parts: dict[int, PortText],
                      out: list) -> None:
        for i in idx:
            self._install_guarded(pfs[i].ifname, parts[i], out, i)

    def _install_guarded(self, ifname: str, parts: PortText, out: list, i: int) -> None:
        try:
            out[i] = self._install_one(ifname, parts)
        except (NftError, AntiSpoofError) as exc:
            out[i] = exc

    def _install_one(self, ifname: str, parts: PortText) -> bool:
        try:
            self.nft.run_text(transaction_text(add_cmds([parts], registry="create")))
            return True
        except NftError as exc:
            if not is_eexist(exc):
                raise
        self._converge({ifname: parts}, maybe_new=False)  # was there: reconcile, nothing to undo
        return False

    def _unchanged(self, parts: list[PortText]) -> bool:
        """Step 2 of :meth:`_converge` alone: True if every port is installed with
        this very content (its fingerprint is there; missing elements are put
        back), False with nothing applied otherwise."""
        fps = [p.fp for p in parts]
        cmds = [cmd_text("delete", REGISTRY_FAMILY, "ports_fp", fps),
                cmd_text("add", REGISTRY_FAMILY, "ports_fp", fps),
                *add_cmds(parts, registry="add")]
        try:
            self.nft.run_text(transaction_text(cmds))
            return True
        except NftError:
            return False

    def _converge(self, parts: dict[str, PortText], maybe_new: bool) -> None:
        """Steps 1-3 of :meth:`add_port` for many ports, each one transaction."""
        # 1. all new
        if maybe_new:
            try:
                self.nft.run_text(transaction_text(add_cmds(parts.values(), registry="create")))
                return
            except NftError as exc:
                if not is_eexist(exc):
                    raise
        # 2. new or unchanged: probe the fingerprints inside the batch
        fps = [p.fp for p in parts.values()]
        cmds = [cmd_text("delete", REGISTRY_FAMILY, "ports_fp", fps),
                cmd_text("add", REGISTRY_FAMILY, "ports_fp", fps),
                *add_cmds(parts.values(), registry="add")]
        try:
            self.nft.run_text(transaction_text(cmds))
            return
        except NftError as exc:
            if not (is_enoent(exc) or is_eexist(exc)):
                raise
        # 3. reconcile the ports whose fingerprint differs with what is installed
        have_fps = {elem_key(e) for e in self.list_set(REGISTRY_FAMILY, "ports_fp")}
        changed = {n for n, p in parts.items()
                   if elem_key(json.loads(p.fp)) not in have_fps}
        have_all = self._entries_many(changed)
        deletes: list[Parts] = []
        adds: list[PortText | Parts] = []
        for ifname, p in parts.items():
            if ifname not in changed:
                adds.append(p)  # re-add = repair
                continue
            want = parts_json(p)
            have = have_all.get(ifname, {})
            deletes.append(json_parts(diff_elems(have, want)))
            adds.append(json_parts(diff_elems(want, have)))
        cmds = delete_cmds(deletes) + add_cmds(adds, registry="add")
        if cmds:
            self.nft.run_text(transaction_text(cmds))

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
        self._seen -= names
        hints = {n: pf for n, pf in (hints or {}).items() if n in names and pf.ifname == n}
        if hints:
            dels: list[PortText | Parts] = [want_text(pf) for pf in hints.values()]
            rest = names - set(hints)
            if rest:
                dels += (json_parts(h) for h in self._entries_many(rest).values())
            try:
                self.nft.run_text(transaction_text(delete_cmds(dels)))
                return
            except NftError:
                # A hint did not match what is installed (ENOENT; with misses
                # in several sets the kernel's error replies, each echoing its
                # request, can overflow libnftables' socket and surface as
                # ENOBUFS instead): nothing was applied, do it the long way,
                # which deletes exactly what is listed.
                pass
        cmds = delete_cmds(json_parts(h) for h in self._entries_many(names).values())
        if cmds:
            self.nft.run_text(transaction_text(cmds))

    # -- queries -----------------------------------------------------------
    def list_table(self, fam: str) -> dict[str, dict]:
        """set name -> nft's JSON set object, for vifwire's table of ``fam``."""
        try:
            out = self.nft.run({"nftables": [{"list": {"table": {"family": fam, "name": TABLE}}}]})
        except NftError as exc:
            if is_enoent(exc):
                return {}
            raise
        return {
            item["set"]["name"]: item["set"]
            for item in out.get("nftables", [])
            if "set" in item and item["set"].get("table") == TABLE
        }

    def list_set(self, fam: str, sname: str) -> list:
        try:
            out = self.nft.run({"nftables": [{"list": {"set": table_obj(fam, name=sname)}}]})
        except NftError as exc:
            if is_enoent(exc):
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
            for sname, s in self.list_table(fam).items():
                for e in s.get("elem", []):
                    val = elem_val(e)
                    owner = elem_ifname(val)
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
        out = {elem_val(e) for e in self.list_set(REGISTRY_FAMILY, "ports")}
        for fam in FAMILIES:
            out.update(elem_val(e) for e in self.list_set(fam, "vif_ifaces"))
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
            if not set(sets) - set(REGISTRY_SETS):
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
                for e in self.list_set(fam, f"drop_{reason}"):
                    if isinstance(e, dict) and "elem" in e and e["elem"]["val"] == ifname:
                        c = e["elem"].get("counter", {})
                        res[reason] = res.get(reason, 0) + int(c.get("packets", 0))
        if not res:
            return {}
        for r in ALL_REASONS:
            res.setdefault(r, 0)
        return res

    def drops_all(self) -> dict[str, dict[str, int]]:
        """Dropped packets of every guarded interface by reason: ``{ifname: {reason: packets}}``.

        One listing of each ``drop_*`` set (what a metrics scrape reads);
        a table that is not installed yet reads as no drops.
        """
        out: dict[str, dict[str, int]] = {}
        for fam in FAMILIES:
            for reason in REASONS[fam]:
                try:
                    elems = self.list_set(fam, f"drop_{reason}")
                except NftError:
                    continue
                for e in elems:
                    if isinstance(e, dict) and "elem" in e:
                        per = out.setdefault(e["elem"]["val"], {})
                        per[reason] = per.get(reason, 0) + int(e["elem"].get("counter", {}).get("packets", 0))
        return out

    def rule_path_length(self) -> int:
        """Rules a packet from a guarded interface may walk (worst case), counted
        from the installed ruleset (:func:`.ruleset.rule_path_length`)."""
        return rule_path_length(self.nft)


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
        self.registered: set[str] = {elem_val(e) for e in anti.list_set(REGISTRY_FAMILY, "ports")}
        self._guarded: dict[str, set[str]] = {}
        self._macs: dict[str, dict[str, set[str]]] = {}
        for fam in families:
            self._guarded[fam] = {elem_val(e) for e in anti.list_set(fam, "vif_ifaces")}
            macs: dict[str, set[str]] = {}
            for e in anti.list_set(fam, "allow_mac"):
                ifname, mac = elem_val(e)["concat"][:2]
                macs.setdefault(ifname, set()).add(mac)
            self._macs[fam] = macs
        self._owners: dict[str, set[str]] = {}  # family -> ifnames with any non-registry element
        self._addrs: dict[tuple[str, str], set[str]] = {}  # (family, set) -> element keys

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
                elem_ifname(elem_val(e))
                for sname, st in self._anti.list_table(fam).items() if sname not in REGISTRY_SETS
                for e in st.get("elem", [])
            }
        return ifname in owners

    def is_guarded(self, ifname: str, fam: str) -> bool:
        """The port's ``vif_ifaces`` element in ``fam`` is there (its traffic is checked)."""
        return ifname in self._guarded[fam]

    def macs(self, ifname: str, fam: str) -> set[str]:
        """The source MACs ``fam``'s table allows from the port."""
        return self._macs[fam].get(ifname, set())

    def missing_addresses(self, pf: PortFilter) -> list[str]:
        """Address elements the port wants but its tables lack: ``["allow_v4 (inet)", ...]``.

        A guest whose address element went missing is cut off while MAC,
        registry and guard still look right, so check compares them all. The
        address sets are listed once per view and family, on first use.
        """
        missing = []
        for (fam, sname), keys in wanted_address_keys(pf).items():
            have = self._addr_keys(fam, sname)
            if not keys <= have:
                missing.append(f"{sname} ({fam})")
        return missing

    def _addr_keys(self, fam: str, sname: str) -> set[str]:
        key = (fam, sname)
        if key not in self._addrs:
            self._addrs[key] = {elem_key(e) for e in self._anti.list_set(fam, sname)}
        return self._addrs[key]


def wanted_address_keys(pf: PortFilter) -> dict[tuple[str, str], frozenset[str]]:
    """The comparison keys (:func:`elem_key`) of the address elements ``pf`` wants, per (family, set).

    Remembered per filter: a long-lived agent checks the same ports at every resync.
    """
    return _wanted_keys(pf.ifname, pf.mac, tuple(pf.ipv4), tuple(pf.ipv6),
                        tuple(tuple(p) for p in pf.allowed_pairs), pf.bridged)


@functools.lru_cache(maxsize=1 << 16)
def _wanted_keys(ifname: str, mac: str, ipv4: tuple, ipv6: tuple, pairs: tuple,
                 bridged: bool) -> dict[tuple[str, str], frozenset[str]]:
    pf = PortFilter(ifname=ifname, mac=mac, ipv4=list(ipv4), ipv6=list(ipv6),
                    allowed_pairs=[tuple(p) for p in pairs], bridged=bridged)
    return {(fam, sname): frozenset(elem_key(e) for e in elems)
            for fam, sets in want_elements(pf).items() for sname, elems in sets.items()
            if sname in ADDR_SETS[fam] and sname != "allow_mac"}


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
