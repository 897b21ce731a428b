"""What a store of attachment records is, whatever holds it.

The engine and the service only use this protocol, so a front end can hand
them another implementation (the fleet mode keeps desired state elsewhere)
without touching them. :class:`vifwire.store.sqlite.SqliteStore` is the first.

An attachment is written twice per plug: ``plugging`` before the host is
touched (a crash leaves a record that says which devices may exist), then
``plugged`` after every step succeeded; a failed plug deletes its record.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Protocol


class Attachment:
    """One recorded port: its binding and plan, the devices it owns, its status.

    ``binding``, ``plan`` and ``devices`` may be handed over as JSON text and
    are decoded on first use: ``list`` needs none of them and ``check`` only
    the plan, and decoding every record's binding costs more than reading it.
    """

    __slots__ = ("port_id", "instance_id", "vif_type", "devname", "mac", "netns", "status", "strategy",
                 "_binding", "_plan", "_devices", "created_at", "updated_at")

    def __init__(self, port_id: str, instance_id: str | None, vif_type: str, devname: str, mac: str,
                 netns: str | None, status: str, strategy: str, binding: dict[str, Any] | str,
                 plan: dict[str, Any] | str, devices: list[str] | str, created_at: float, updated_at: float):
        self.port_id, self.instance_id, self.vif_type, self.devname = port_id, instance_id, vif_type, devname
        self.mac, self.netns, self.status, self.strategy = mac, netns, status, strategy
        self._binding, self._plan, self._devices = binding, plan, devices
        self.created_at, self.updated_at = created_at, updated_at

    @property
    def binding(self) -> dict[str, Any]:
        if isinstance(self._binding, str):
            self._binding = json.loads(self._binding)
        return self._binding

    @property
    def plan(self) -> dict[str, Any]:
        if isinstance(self._plan, str):
            self._plan = json.loads(self._plan)
        return self._plan

    @property
    def devices(self) -> list[str]:
        if isinstance(self._devices, str):
            self._devices = json.loads(self._devices)
        return self._devices

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attachment) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Attachment({self.port_id!r}, status={self.status!r}, strategy={self.strategy!r})"

    def to_json(self) -> dict[str, Any]:
        return {"port_id": self.port_id, "instance_id": self.instance_id, "vif_type": self.vif_type,
                "devname": self.devname, "mac": self.mac, "netns": self.netns, "status": self.status,
                "strategy": self.strategy, "binding": self.binding, "plan": self.plan, "devices": self.devices,
                "created_at": self.created_at, "updated_at": self.updated_at}


class Store(Protocol):
    """Attachment records; each write is one transaction, whatever its size."""

    path: str

    def put_many(self, rows: Iterable[dict[str, Any]], status: str) -> None: ...

    def set_status(self, port_ids: Iterable[str], status: str) -> None: ...

    def delete(self, port_ids: Iterable[str]) -> None: ...

    def get(self, port_id: str) -> Attachment | None: ...

    def all(self, netns: Any = ...) -> list[Attachment]: ...

    def close(self) -> None: ...
