"""Ports' element texts turned into nft transactions, and nft's errors read.

A batch is ONE transaction (nftables wiki, "Atomic rule replacement") with
one ``add element``/``delete element`` command per set, whatever the number
of ports: libnftables parses and evaluates each command, so 1000 ports'
elements cost a third of 1000 ports' commands (package docstring,
"Batches"). The commands are written as libnftables-json(5) text from the
element texts of :mod:`.elements`: no dicts, no ``json.dumps`` of the batch.
"""

from __future__ import annotations

from typing import Iterable

from vifwire.executors.antispoof.elements import FAM_ORDER, Parts, PortText
from vifwire.executors.antispoof.model import FAMILIES, REGISTRY_FAMILY, TABLE
from vifwire.executors.nft import NftError

def cmd_text(verb: str, fam: str, sname: str, elems: list[str]) -> str:
    """One ``<verb> element`` command as JSON text (``elems``: element texts)."""
    return (f'{{"{verb}":{{"element":{{"family":"{fam}","table":"{TABLE}","name":"{sname}",'
            f'"elem":[{",".join(elems)}]}}}}}}')


def transaction_text(cmds: list[str]) -> str:
    """The JSON document of ``cmds`` (command texts): ONE transaction."""
    return '{"nftables":[' + ",".join(cmds) + "]}"


def group_by_set(parts: Iterable[PortText | Parts]) -> Parts:
    """Every port's element texts grouped per set.

    Ports' texts (:class:`.elements.PortText`) are grouped per family: every
    ifname-only set of a family (``drop_*``, ``vif_ifaces``) gets the same
    list, its ports' ifnames; address sets are their elements in port
    order. Listed or diffed parts are merged in first (rare: reconcile).
    """
    by_set: Parts = {}
    ports: list[PortText] = []
    for p in parts:
        if isinstance(p, PortText):
            ports.append(p)
            continue
        for k, elems in p.items():
            by_set.setdefault(k, []).extend(elems)
    if not ports:
        return by_set
    grouped: Parts = {}
    for fam in FAMILIES:
        mine = [p for p in ports if fam in p.fams]
        if not mine:
            continue
        emit, ifs, _addr, _tail = FAM_ORDER[fam]
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


def add_cmds(parts: Iterable[PortText | Parts], registry: str = "add") -> list[str]:
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
    for (fam, sname), elems in group_by_set(parts).items():
        if fam == REGISTRY_FAMILY and sname == "ports" and registry != "add":
            first.append(cmd_text(registry, fam, sname, elems))
        else:
            rest.append(cmd_text("add", fam, sname, elems))
    return first + rest


def delete_cmds(parts: Iterable[PortText | Parts]) -> list[str]:
    """``delete element`` commands for every port of ``parts``, one per set."""
    return [cmd_text("delete", fam, sname, elems) for (fam, sname), elems in group_by_set(parts).items()]


def is_enoent(exc: NftError) -> bool:
    t = str(exc)
    return "No such file or directory" in t or "does not exist" in t


def is_eexist(exc: NftError) -> bool:
    return "File exists" in str(exc)

