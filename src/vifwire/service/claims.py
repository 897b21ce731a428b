"""What the recorded ports of one namespace hold (MACs, addresses, devices), in memory.

A long-lived caller (the agent) checks every plug against the other records
(:meth:`vifwire.service.wiring.WiringService.conflicts`). Asking SQLite each
time scans every record's JSON - ~18 ms per request at 1600 ports, the
largest cost of a warm single plug. This index answers from dictionaries
and stays right without re-reading everything: the service marks the ports
it wrote (:meth:`touch`), and SQLite's ``PRAGMA data_version`` says when
another process (a CLI run beside the agent) committed, which rebuilds it.
"""

from __future__ import annotations

import threading
from typing import Iterable

from vifwire.store.base import Attachment, Claim, Store


def claims_of(a: Attachment) -> list[Claim]:
    net = a.binding.get("network_id")
    out = [Claim("mac", a.mac.lower(), a.port_id, net, a.vif_type)]
    out += [Claim("ip", ip, a.port_id, net, a.vif_type)
            for ip in list(a.binding.get("ipv4") or []) + list(a.binding.get("ipv6") or [])]
    out += [Claim("device", d, a.port_id, None, a.vif_type) for d in a.devices]
    return out


class ClaimIndex:
    def __init__(self, store: Store, netns: str | None):
        self.store = store
        self.netns = netns
        self._lock = threading.Lock()
        self._version: int | None = None
        self._by_port: dict[str, list[Claim]] = {}
        self._by_key: dict[tuple[str, str], dict[str, Claim]] = {}
        self._dirty: set[str] = set()
        self._stale = True

    def touch(self, port_ids: Iterable[str] | None) -> None:
        """Records of these ports were written by us (``None``: maybe all of them)."""
        with self._lock:
            if port_ids is None:
                self._stale = True
            else:
                self._dirty.update(port_ids)

    def claims(self, macs: Iterable[str], ips: Iterable[str], devices: Iterable[str],
               exclude: Iterable[str]) -> list[Claim]:
        with self._lock:
            self._refresh()
            mine = set(exclude)
            out: list[Claim] = []
            for kind, values in (("mac", macs), ("ip", ips), ("device", devices)):
                for v in values:
                    out += [c for pid, c in self._by_key.get((kind, v), {}).items() if pid not in mine]
            return out

    def owner_of_device(self, name: str) -> str | None:
        with self._lock:
            self._refresh()
            owners = self._by_key.get(("device", name))
            return next(iter(owners), None) if owners else None

    def _refresh(self) -> None:
        version = self.store.data_version()
        if self._stale or version != self._version:
            self._by_port.clear()
            self._by_key.clear()
            for a in self.store.all(netns=self.netns):
                self._add(a)
            self._dirty.clear()
            self._stale = False
            self._version = version
            return
        for pid in self._dirty:
            for c in self._by_port.pop(pid, ()):
                self._by_key.get((c.kind, c.value), {}).pop(pid, None)
            a = self.store.get(pid)
            if a is not None and a.netns == self.netns:
                self._add(a)
        self._dirty.clear()

    def _add(self, a: Attachment) -> None:
        cs = claims_of(a)
        self._by_port[a.port_id] = cs
        for c in cs:
            self._by_key.setdefault((c.kind, c.value), {})[a.port_id] = c
