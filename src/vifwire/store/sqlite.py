"""The embedded attachment store: one SQLite file, WAL mode.

Each plug is recorded in two short transactions: ``plugging`` before the host
is touched (so a crash leaves a record that says which devices may exist) and
``plugged`` after every step succeeded. A failed plug deletes its record in
the same breath as it rolls the host back. Unplug works from the record alone:
the stored plan lists every device and port the attachment owns.

**The file is vifwire's or it is refused.** Opening never follows a symlink
at the state path, creates missing directories 0700 and the file 0600
whatever the umask (SQLite gives the ``-wal``/``-shm`` files the database's
mode), and refuses a file owned by another uid than the effective one. A
database vifwire creates is stamped ``PRAGMA application_id =``
:data:`APPLICATION_ID` (``0x76696677``, ASCII ``"vifw"``) and ``PRAGMA
user_version =`` :data:`SCHEMA_VERSION`. An existing database is accepted when
its application_id is vifwire's (and its ``user_version`` not newer), or when
it is 0 and the schema is either empty or exactly what earlier vifwire
versions made (the ``attachments`` table with these columns and its indexes,
nothing else): those are stamped in one ``BEGIN IMMEDIATE`` transaction. Any
other database is *foreign*: refused with one line before anything is
written, so it is neither switched to WAL nor given vifwire's table. Only
an accepted file is tightened to 0600.

**Every sqlite3 error is a** :class:`~vifwire.store.base.StoreError` whose one
line names the path and what to do: locked (with the time waited and
``fuser``), corrupt (move it aside and run ``vifwire state rebuild``),
read-only or permission denied, disk full, I/O error.

**Failing before the host is touched.** The busy timeout is ``timeout``
(default :data:`DEFAULT_TIMEOUT`, 5 s), so a database held by another process
fails promptly. The service calls :meth:`SqliteStore.check_writable` (``BEGIN
IMMEDIATE`` then ``ROLLBACK``, optionally with a shorter timeout) after taking
the cross-process state lock and before it plugs anything: a locked or
read-only database then fails with nothing wired. The write transaction is
deliberately *not* held across the wiring: the ``plugging`` record must be
committed before the host changes (that is what makes ``kill -9`` recoverable),
and other vifwire processes are already excluded by the state lock, so what
remains is a foreign holder grabbing the database mid-run, which the engine
answers by rolling back the wiring it cannot record.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
import time
from typing import Any, Iterable, Iterator

from vifwire.store.base import Attachment, Claim, StoreError, make_private_dir, os_error, private_file, tighten_path

DEFAULT_PATH = "/var/lib/vifwire/state.db"
#: ``PRAGMA application_id`` of every database vifwire made: ASCII "vifw".
APPLICATION_ID = 0x76696677
#: ``PRAGMA user_version`` of the current schema; a newer one is refused.
SCHEMA_VERSION = 1
#: Seconds a write waits for another process's lock before it fails.
DEFAULT_TIMEOUT = 5.0
WHAT = "state database"

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
_TABLE_INFO = "PRAGMA table_info(attachments)"
_CHUNK = 10000  # values per query in claims()


def _expected_columns() -> list[tuple]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return db.execute(_TABLE_INFO).fetchall()
    finally:
        db.close()


_COLUMNS = _expected_columns()
_LOCK_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_DENIED_CODES = (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH)


def sqlite_error(path: str, exc: sqlite3.Error, waited: float) -> StoreError:
    """The one line for a sqlite3 error met on the database at ``path`` after ``waited`` seconds."""
    reason = " ".join(str(exc).split()) or exc.__class__.__name__
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    low = reason.lower()
    where = os.path.dirname(path)
    if primary in _LOCK_CODES or "locked" in low:
        waited = int(waited * 10) / 10  # the busy handler overshoots a little: 5.03 s is "5.0 s"
        return StoreError(f"{WHAT} {path} is locked by another process (waited {waited:.1f} s); "
                          f"retry, or find the holder with `fuser {path}`")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in low or "not a database" in low:
        return StoreError(f"{WHAT} {path} is corrupt ({reason}); move it aside and run `vifwire state rebuild`")
    if primary == sqlite3.SQLITE_FULL or "disk is full" in low:
        return StoreError(f"{WHAT} {path}: disk full ({reason}); free space on the filesystem holding {where}, "
                          "then retry")
    if primary in _DENIED_CODES or "readonly" in low or "read-only" in low:
        return StoreError(f"{WHAT} {path} cannot be written ({reason}); run vifwire as the owner of {path} "
                          f"(root) and check the permissions of {path} and {where}")
    if primary == sqlite3.SQLITE_CANTOPEN or "unable to open" in low:
        return StoreError(f"{WHAT} {path} cannot be opened ({reason}); check that {where} exists and is writable")
    if primary == sqlite3.SQLITE_IOERR or "i/o error" in low:
        return StoreError(f"{WHAT} {path}: I/O error ({reason}); check the disk and the filesystem holding {where}, "
                          "then retry")
    return StoreError(f"{WHAT} {path}: {reason}; retry, and if it persists move it aside and run "
                      "`vifwire state rebuild`")


class SqliteStore:
    """Attachment records in one SQLite file (implements :class:`vifwire.store.base.Store`).

    Safe for concurrent processes: WAL lets readers run beside a writer, every
    write is one ``BEGIN IMMEDIATE`` transaction (a batch of ports is one
    transaction, not one per port), and a busy writer is waited for up to
    ``timeout`` seconds. Within one process a connection is used by one thread
    at a time (a lock guards it), so a long-lived service may share it.
    Opening refuses what is not vifwire's (see the module docstring).
    """

    def __init__(self, path: str = DEFAULT_PATH, timeout: float = DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.abspath = os.path.abspath(path)
        self._lock = threading.RLock()
        make_private_dir(os.path.dirname(self.abspath))
        st = private_file(self.abspath, WHAT)  # checked by lstat: no descriptor of ours (see there)
        with self._errors():
            self._db = sqlite3.connect(self.abspath, timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
        try:
            self._same_file(st)
            self._adopt(st)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock, self._errors():
            self._db.close()

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_writable(self, timeout: float | None = None) -> None:
        """Take the database's write lock and let it go (``BEGIN IMMEDIATE``; ``ROLLBACK``).

        Call it before touching the host: a database locked by another process
        (waited for ``timeout`` seconds, default the store's), read-only or
        unreadable then fails with a :class:`StoreError` while nothing is wired.
        """
        with self._lock:
            if timeout is not None:
                self._db.execute(f"PRAGMA busy_timeout={max(0, int(timeout * 1000))}")
            try:
                with self._errors():
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("ROLLBACK")
            finally:
                if timeout is not None:
                    self._db.execute(f"PRAGMA busy_timeout={max(0, int(self.timeout * 1000))}")

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
        with self._lock, self._errors():
            row = self._db.execute("SELECT * FROM attachments WHERE port_id=?", (port_id,)).fetchone()
        return self._row(row) if row else None

    def all(self, netns: str | None | type = ...) -> list[Attachment]:
        with self._lock, self._errors():
            rows = self._db.execute("SELECT * FROM attachments ORDER BY created_at, port_id").fetchall()
        out = [self._row(r) for r in rows]
        if netns is not ...:
            out = [a for a in out if a.netns == netns]
        return out

    def claims(self, netns: str | None, macs: Iterable[str], ips: Iterable[str], devices: Iterable[str],
               exclude: Iterable[str]) -> list[Claim]:
        """One query, the JSON columns searched by SQLite itself (json_each):
        a plug into a namespace of thousands of ports costs well under a
        millisecond here, where decoding every record in Python cost ~14 ms."""
        mine = set(exclude)
        queries = (
            ("SELECT 'mac', a.mac, a.port_id, json_extract(a.binding, '$.network_id'), a.vif_type "
             "FROM attachments a WHERE a.netns IS ? AND a.mac IN ({})", list(macs)),
            ("SELECT 'device', j.value, a.port_id, NULL, a.vif_type FROM attachments a, json_each(a.devices) j "
             "WHERE a.netns IS ? AND j.value IN ({})", list(devices)),
            *(("SELECT 'ip', j.value, a.port_id, json_extract(a.binding, '$.network_id'), a.vif_type "
               f"FROM attachments a, json_each(a.binding, '$.{key}') j WHERE a.netns IS ? AND j.value IN ({{}})",
               list(ips)) for key in ("ipv4", "ipv6")),
        )
        rows: list[tuple] = []
        with self._lock, self._errors():
            for sql, values in queries:
                for i in range(0, len(values), _CHUNK):  # SQLite takes at most 32766 parameters
                    part = values[i:i + _CHUNK]
                    rows += self._db.execute(sql.format(",".join("?" * len(part))), [netns, *part]).fetchall()
        return [Claim(*r) for r in rows if r[2] not in mine]

    def data_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits (not for our own commits)."""
        with self._lock, self._errors():
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def snapshot(self) -> list[tuple]:
        """Everything except timestamps, for tests that compare before/after."""
        with self._lock, self._errors():
            return self._db.execute(
                "SELECT port_id, status, plan, devices FROM attachments ORDER BY port_id").fetchall()

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn a sqlite3 error (or an OS error on our files) into the one-line :class:`StoreError`."""
        t0 = time.monotonic()
        try:
            yield
        except sqlite3.Error as exc:
            raise sqlite_error(self.abspath, exc, time.monotonic() - t0) from exc
        except OSError as exc:
            raise os_error(WHAT, self.abspath, exc) from exc

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db.cursor()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    # -- opening: is this file vifwire's? -------------------------------------------------

    def _same_file(self, checked: os.stat_result) -> None:
        """The file SQLite opened by name is the one checked before (not swapped meanwhile)."""
        st, mine = os.lstat(self.abspath), checked
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            raise StoreError(f"{WHAT} {self.abspath} was replaced while vifwire opened it; "
                             "find out what changed it, then retry")

    def _classify(self) -> bool:
        """True if the database is vifwire's and ready, False if it must be stamped or given its
        table (new, or made by an earlier vifwire); a foreign database raises :class:`StoreError`."""
        db, path = self._db, self.abspath
        app_id = db.execute("PRAGMA application_id").fetchone()[0] & 0xFFFFFFFF
        version = db.execute("PRAGMA user_version").fetchone()[0]
        objects = db.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall()
        tables = sorted(n for t, n, _ in objects if t == "table" and not n.startswith("sqlite_"))
        others = sorted(n for t, n, tbl in objects if not n.startswith("sqlite_")
                        and (t in ("view", "trigger") or (t == "index" and tbl != "attachments")))
        columns = db.execute(_TABLE_INFO).fetchall() if "attachments" in tables else None
        if app_id == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise StoreError(f"{WHAT} {path} was written by a newer vifwire (schema {version}, this one "
                                 f"knows {SCHEMA_VERSION}); upgrade vifwire or point --state elsewhere")
            if columns is not None and columns != _COLUMNS:
                raise StoreError(f"{WHAT} {path} is vifwire's but its attachments table is not the one this "
                                 "vifwire knows; move it aside and run `vifwire state rebuild`")
            return columns is not None and version == SCHEMA_VERSION
        earlier = (tables == ["attachments"] and not others and columns == _COLUMNS)
        if app_id == 0 and version == 0 and (not tables and not others or earlier):
            return False
        found = ", ".join(tables + others) or "no tables"
        raise StoreError(f"{WHAT} {path} is not vifwire's (application_id {app_id:#010x}, {found}); "
                         "vifwire changes nothing in it: point --state at vifwire's own file, "
                         "or move this one aside if it is stale")

    def _adopt(self, st: os.stat_result) -> None:
        """Refuse a foreign database untouched; stamp a new or earlier one; then WAL and 0600."""
        with self._errors():
            ready = self._classify()
        if not ready:
            with self._tx():
                if not self._classify():  # again under the write lock: another process may have won
                    self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
        tighten_path(self.abspath, st, WHAT)
        with self._errors():
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            self._db.execute("PRAGMA synchronous=NORMAL")
        for suffix in ("-wal", "-shm"):
            side = self.abspath + suffix
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(side)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != 0o600:
                    try:
                        os.chmod(side, 0o600)
                    except OSError as exc:
                        raise os_error(WHAT, side, exc) from exc

    @staticmethod
    def _row(row: tuple) -> Attachment:
        (port_id, instance_id, vif_type, devname, mac, netns, status, strategy, binding, plan, devices,
         created_at, updated_at) = row
        return Attachment(port_id, instance_id, vif_type, devname, mac, netns, status, strategy,
                          binding, plan, devices, created_at, updated_at)  # JSON decoded on first use
