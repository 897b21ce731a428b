"""The embedded attachment store: one SQLite file, WAL mode.

Each plug is recorded in two short transactions: ``plugging`` before the host
is touched (so a crash leaves a record that says which devices may exist) and
``plugged`` after every step succeeded. A failed plug deletes its record in
the same breath as it rolls the host back. Unplug works from the record alone:
the stored plan lists every device and port the attachment owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from typing import Any, Iterable, Iterator

from vifwire.store.base import Attachment

DEFAULT_PATH = "/var/lib/vifwire/state.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attachments (
    port_id     TEXT PRIMARY KEY,
    instance_id TEXT,
    vif_type    TEXT NOT NULL,
    devname     TEXT NOT NULL,
    mac         TEXT NOT NULL,
    netns       TEXT,
    status      TEXT NOT NULL,
    strategy    TEXT NOT NULL,
    binding     TEXT NOT NULL,
    plan        TEXT NOT NULL,
    devices     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_mac ON attachments(mac);
"""


class SqliteStore:
    """Attachment records in one SQLite file (implements :class:`vifwire.store.base.Store`).

    Safe for concurrent processes: WAL lets readers run beside a writer, every
    write is one ``BEGIN IMMEDIATE`` transaction (a batch of ports is one
    transaction, not one per port), and a busy writer is waited for up to
    ``timeout`` seconds. Within one process a connection is used by one thread
    at a time (a lock guards it), so a long-lived service may share it.
    """

    def __init__(self, path: str = DEFAULT_PATH, timeout: float = 30.0):
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes: each is one transaction -------------------------------------------------

    def put_many(self, rows: Iterable[dict[str, Any]], status: str) -> None:
        now = time.time()
        with self._tx() as cur:
            for r in rows:
                cur.execute(
                    """INSERT INTO attachments (port_id, instance_id, vif_type, devname, mac, netns, status,
                           strategy, binding, plan, devices, created_at, updated_at)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(port_id) DO UPDATE SET instance_id=excluded.instance_id,
                           vif_type=excluded.vif_type, devname=excluded.devname, mac=excluded.mac,
                           netns=excluded.netns, status=excluded.status, strategy=excluded.strategy,
                           binding=excluded.binding, plan=excluded.plan, devices=excluded.devices,
                           updated_at=excluded.updated_at""",
                    (r["port_id"], r.get("instance_id"), r["vif_type"], r["devname"], r["mac"], r.get("netns"),
                     status, r["strategy"], json.dumps(r["binding"]), json.dumps(r["plan"]),
                     json.dumps(r["devices"]), now, now),
                )

    def set_status(self, port_ids: Iterable[str], status: str) -> None:
        now = time.time()
        with self._tx() as cur:
            cur.executemany("UPDATE attachments SET status=?, updated_at=? WHERE port_id=?",
                            [(status, now, p) for p in port_ids])

    def delete(self, port_ids: Iterable[str]) -> None:
        with self._tx() as cur:
            cur.executemany("DELETE FROM attachments WHERE port_id=?", [(p,) for p in port_ids])

    # -- reads ---------------------------------------------------------------------------

    def get(self, port_id: str) -> Attachment | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM attachments WHERE port_id=?", (port_id,)).fetchone()
        return self._row(row) if row else None

    def all(self, netns: str | None | type = ...) -> list[Attachment]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM attachments ORDER BY created_at, port_id").fetchall()
        out = [self._row(r) for r in rows]
        if netns is not ...:
            out = [a for a in out if a.netns == netns]
        return out

    def snapshot(self) -> list[tuple]:
        """Everything except timestamps, for tests that compare before/after."""
        with self._lock:
            return self._db.execute(
                "SELECT port_id, status, plan, devices FROM attachments ORDER BY port_id").fetchall()

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db.cursor()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(row: tuple) -> Attachment:
        (port_id, instance_id, vif_type, devname, mac, netns, status, strategy, binding, plan, devices,
         created_at, updated_at) = row
        return Attachment(port_id, instance_id, vif_type, devname, mac, netns, status, strategy,
                          binding, plan, devices, created_at, updated_at)  # JSON decoded on first use
