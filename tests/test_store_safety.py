"""State path safety and store errors (issue 11): the state directory and files
are private whatever the umask, what is not vifwire's is refused and left
exactly as it was, and every database failure is one line naming the path and
what to do."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from vifwire.errors import VifwireError
from vifwire.service.locks import StateLock
from vifwire.store.base import StoreError, os_error
from vifwire.store.sqlite import APPLICATION_ID, SqliteStore, sqlite_error

#: The schema every vifwire before application_id wrote (same columns, no stamp).
OLD_SCHEMA = """
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

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


def _row(port_id: str = "p1") -> dict:
    return {"port_id": port_id, "vif_type": "ovs", "devname": "tap" + port_id, "mac": "fa:16:3e:00:00:01",
            "strategy": "ovs-hybrid", "binding": {"id": port_id}, "plan": {"steps": []}, "devices": []}


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _fingerprint(path) -> tuple:
    """Bytes of the file and of its -wal/-shm/-journal companions (None when absent)."""
    out = []
    for p in (str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        out.append(open(p, "rb").read() if os.path.exists(p) else None)
    return tuple(out)


@pytest.fixture
def umask000():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_private_modes_whatever_the_umask(tmp_path, umask000):
    db = tmp_path / "var" / "vifwire" / "state.db"
    with SqliteStore(str(db)) as store:
        store.put_many([_row()], status="plugging")
        with StateLock(str(db)).hold():
            assert _mode(f"{db}.lock") == 0o600
        assert _mode(tmp_path / "var") == 0o700
        assert _mode(db.parent) == 0o700
        assert _mode(db) == 0o600
        assert _mode(f"{db}-wal") == 0o600
        assert _mode(f"{db}-shm") == 0o600


def test_an_older_files_mode_is_tightened(tmp_path):
    db = tmp_path / "state.db"
    SqliteStore(str(db)).close()
    os.chmod(db, 0o644)
    lock = tmp_path / "state.db.lock"
    lock.touch(mode=0o644)
    os.chmod(lock, 0o644)
    SqliteStore(str(db)).close()
    assert _mode(db) == 0o600
    with StateLock(str(db)).hold():
        assert _mode(lock) == 0o600


def test_symlink_at_the_state_path_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere.db"
    with sqlite3.connect(target) as c:
        c.execute("CREATE TABLE t (x)")
    c.close()
    before = _fingerprint(target)
    link = tmp_path / "state.db"
    link.symlink_to(target)
    with pytest.raises(StoreError, match=rf"state database {link} is a symlink .*remove the link"):
        SqliteStore(str(link))
    assert _fingerprint(target) == before
    assert os.path.islink(link)
    # a dangling link is refused too, and nothing is created behind it
    dangling = tmp_path / "d.db"
    dangling.symlink_to(tmp_path / "nowhere.db")
    with pytest.raises(StoreError, match="is a symlink"):
        SqliteStore(str(dangling))
    assert not os.path.exists(tmp_path / "nowhere.db")


def test_symlink_at_the_lock_path_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"keep me")
    os.chmod(target, 0o644)
    db = tmp_path / "state.db"
    (tmp_path / "state.db.lock").symlink_to(target)
    lock = StateLock(str(db))
    with pytest.raises(StoreError, match=rf"state lock {db}.lock is a symlink"):
        with lock.hold():
            pass
    lock.close()
    assert target.read_bytes() == b"keep me" and _mode(target) == 0o644


def test_a_directory_at_the_state_path_is_refused(tmp_path):
    (tmp_path / "state.db").mkdir()
    with pytest.raises(StoreError, match="is not a regular file"):
        SqliteStore(str(tmp_path / "state.db"))


def _foreign(path, sql: str) -> None:
    c = sqlite3.connect(path)
    c.executescript(sql)
    c.commit()
    c.close()


@pytest.mark.parametrize("sql, shown", [
    ("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'a');",
     "application_id 0x00000000, users"),
    (OLD_SCHEMA + "CREATE TABLE extra (x);", "attachments, extra"),
    ("CREATE TABLE attachments (port_id TEXT PRIMARY KEY, owner TEXT);", "attachments"),
    (OLD_SCHEMA + "PRAGMA application_id=1234;", "application_id 0x000004d2"),
    ("PRAGMA application_id=1179403647;", "no tables"),
    (OLD_SCHEMA + "CREATE VIEW v AS SELECT port_id FROM attachments;", "attachments, v"),
])
def test_a_foreign_database_is_refused_and_not_changed(tmp_path, sql, shown):
    db = tmp_path / "state.db"
    _foreign(db, sql)
    os.chmod(db, 0o644)
    before = _fingerprint(db)
    with pytest.raises(StoreError) as err:
        SqliteStore(str(db))
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"state database {db} is not vifwire's")
    assert shown in line and "point --state" in line
    assert _fingerprint(db) == before
    assert _mode(db) == 0o644
    c = sqlite3.connect(db)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    c.close()
    assert _fingerprint(db) == before


def test_a_file_that_is_not_sqlite_is_refused_as_corrupt_and_not_changed(tmp_path):
    db = tmp_path / "state.db"
    db.write_bytes(b"not a database at all\n" * 100)
    before = _fingerprint(db)
    with pytest.raises(StoreError, match=r"is corrupt \(file is not a database\); move it aside and run "
                                         r"`vifwire state rebuild`"):
        SqliteStore(str(db))
    assert _fingerprint(db) == before


@needs_root
def test_a_database_owned_by_another_uid_is_refused(tmp_path):
    db = tmp_path / "state.db"
    with SqliteStore(str(db)) as store:
        store.put_many([_row()], status="plugged")
    os.chown(db, 65534, 65534)
    before = _fingerprint(db)
    with pytest.raises(StoreError, match=rf"state database {db} is owned by uid 65534, not by uid 0"):
        SqliteStore(str(db))
    assert _fingerprint(db) == before
    assert os.stat(db).st_uid == 65534
    lock = tmp_path / "state.db.lock"
    lock.touch()
    os.chown(lock, 65534, 65534)
    with pytest.raises(StoreError, match="state lock .* is owned by uid 65534"):
        with StateLock(str(db)).hold():
            pass


def test_an_earlier_vifwire_database_is_accepted_and_stamped(tmp_path):
    db = tmp_path / "state.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.executescript(OLD_SCHEMA)
    c.execute("INSERT INTO attachments VALUES ('old', NULL, 'ovs', 'tapold', 'fa:16:3e:00:00:09', NULL, "
              "'plugged', 'ovs-hybrid', '{}', '{\"steps\": []}', '[]', 1.0, 1.0)")
    c.commit()
    c.close()
    os.chmod(db, 0o644)
    with SqliteStore(str(db)) as store:
        assert [a.port_id for a in store.all()] == ["old"]
        store.put_many([_row("new")], status="plugged")
    c = sqlite3.connect(db)
    assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert c.execute("PRAGMA user_version").fetchone()[0] == 1
    c.close()
    assert _mode(db) == 0o600
    with SqliteStore(str(db)) as store:  # and reopening the stamped file is the ordinary case
        assert sorted(a.port_id for a in store.all()) == ["new", "old"]


def test_a_new_database_is_stamped_and_an_empty_foreign_file_adopted(tmp_path):
    db = tmp_path / "state.db"
    SqliteStore(str(db)).close()
    c = sqlite3.connect(db)
    assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0x76696677
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    SqliteStore(str(empty)).close()  # a zero-byte file is an empty database


def test_a_database_from_a_newer_vifwire_is_refused(tmp_path):
    db = tmp_path / "state.db"
    SqliteStore(str(db)).close()
    c = sqlite3.connect(db)
    c.execute("PRAGMA user_version=7")
    c.close()
    with pytest.raises(StoreError, match=r"written by a newer vifwire \(schema 7"):
        SqliteStore(str(db))


HOLDER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_database_locked_by_another_process_fails_promptly_naming_the_path(tmp_path):
    db = tmp_path / "state.db"
    store = SqliteStore(str(db), timeout=0.5)
    store.put_many([_row()], status="plugging")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(StoreError) as err:
            store.check_writable()
        assert time.monotonic() - t0 < 3
        assert re.fullmatch(rf"state database {re.escape(str(db))} is locked by another process "
                            rf"\(waited 0\.[5-9] s\); retry, or find the holder with `fuser {re.escape(str(db))}`",
                            str(err.value)), str(err.value)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"locked by another process \(waited 0\.[1-9] s\)"):
            store.check_writable(timeout=0.1)
        assert time.monotonic() - t0 < 2
        with pytest.raises(StoreError, match=rf"state database {db} is locked"):
            store.set_status(["p1"], "plugged")
        assert [a.status for a in store.all()] == ["plugging"]  # readers still read beside the writer
        with pytest.raises(StoreError, match="is locked"):  # a second service opening the file
            SqliteStore(str(db), timeout=0.2).put_many([_row("p2")], status="plugging")
    finally:
        holder.stdin.close()
        holder.wait(10)
    store.check_writable()  # released: writable again, timeout restored
    store.set_status(["p1"], "plugged")
    assert [a.status for a in store.all()] == ["plugged"]
    store.close()


def test_a_corrupted_header_is_reported_as_corrupt(tmp_path):
    db = tmp_path / "state.db"
    with SqliteStore(str(db)) as store:
        store.put_many([_row()], status="plugged")
    with open(db, "r+b") as f:
        f.write(b"\xde\xad\xbe\xef" * 25)
    with pytest.raises(StoreError) as err:
        SqliteStore(str(db))
    assert str(err.value) == (f"state database {db} is corrupt (file is not a database); "
                              "move it aside and run `vifwire state rebuild`")
    assert isinstance(err.value, VifwireError) and err.value.exit_code == 1


def test_a_corrupted_table_page_is_reported_as_corrupt_on_read(tmp_path):
    db = tmp_path / "state.db"
    with SqliteStore(str(db)) as store:
        store.put_many([_row(f"p{i}") for i in range(50)], status="plugged")
        page_size = store._db.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek(page_size)  # page 2: the attachments table's root
        f.write(b"\xff" * page_size)
    with SqliteStore(str(db)) as store:
        with pytest.raises(StoreError, match=rf"state database {db} is corrupt \(database disk image is "
                                             r"malformed\); move it aside and run `vifwire state rebuild`"):
            store.all()


def test_disk_full_is_one_line_naming_the_path(tmp_path):
    db = tmp_path / "state.db"
    with SqliteStore(str(db)) as store:
        store._db.execute("PRAGMA max_page_count=8")  # the same SQLITE_FULL a full disk gives
        with pytest.raises(StoreError, match=rf"state database {db}: disk full \(database or disk is full\); "
                                             rf"free space on the filesystem holding {tmp_path}"):
            store.put_many([{**_row(f"p{i}"), "binding": {"pad": "x" * 2000}} for i in range(100)],
                           status="plugging")
        assert store.all() == []  # the failed batch left nothing


def test_every_kind_of_sqlite_error_is_one_line_with_the_path():
    def err(cls, msg, code):
        e = cls(msg)
        e.sqlite_errorcode = code
        return sqlite_error("/x/state.db", e, 5.0)

    assert str(err(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY)) == (
        "state database /x/state.db is locked by another process (waited 5.0 s); "
        "retry, or find the holder with `fuser /x/state.db`")
    assert str(err(sqlite3.DatabaseError, "database disk image is malformed", sqlite3.SQLITE_CORRUPT)) == (
        "state database /x/state.db is corrupt (database disk image is malformed); "
        "move it aside and run `vifwire state rebuild`")
    assert "cannot be written (attempt to write a readonly database); run vifwire as the owner" in str(
        err(sqlite3.OperationalError, "attempt to write a readonly database", sqlite3.SQLITE_READONLY))
    assert "cannot be opened (unable to open database file); check that /x exists" in str(
        err(sqlite3.OperationalError, "unable to open database file", sqlite3.SQLITE_CANTOPEN))
    assert "I/O error (disk I/O error)" in str(err(sqlite3.OperationalError, "disk I/O error", 10 | (3 << 8)))
    for e in (sqlite3.OperationalError("database is locked"), sqlite3.InterfaceError("weird")):
        line = str(sqlite_error("/x/state.db", e, 1.0))
        assert line.startswith("state database /x/state.db") and "\n" not in line
    denied = os_error("state database", "/x/state.db", OSError(errno.EACCES, "Permission denied"))
    assert str(denied) == ("state database /x/state.db: Permission denied; run vifwire as root (the owner "
                           "of /x) or fix the permissions of /x/state.db and /x")
    assert "free space" in str(os_error("state database", "/x/state.db", OSError(errno.ENOSPC, "No space")))
