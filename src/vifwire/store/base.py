"""What a store of attachment records is, whatever holds it.

The engine and the service only use this protocol, so a front end can hand
them another implementation (the fleet mode keeps desired state elsewhere)
without touching them. :class:`vifwire.store.sqlite.SqliteStore` is the first.

An attachment is written twice per plug: ``plugging`` before the host is
touched (a crash leaves a record that says which devices may exist), then
``plugged`` after every step succeeded; a failed plug deletes its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol


@dataclass(frozen=True)
class Attachment:
    port_id: str
    instance_id: str | None
    vif_type: str
    devname: str
    mac: str
    netns: str | None
    status: str
    strategy: str
    binding: dict[str, Any]
    plan: dict[str, Any]
    devices: list[str]
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Store(Protocol):
    """Attachment records; each write is one transaction, whatever its size."""

    path: str

    def put_many(self, rows: Iterable[dict[str, Any]], status: str) -> None: ...

    def set_status(self, port_ids: Iterable[str], status: str) -> None: ...

    def delete(self, port_ids: Iterable[str]) -> None: ...

    def get(self, port_id: str) -> Attachment | None: ...

    def all(self, netns: Any = ...) -> list[Attachment]: ...

    def close(self) -> None: ...
