"""The service's share of safety: conflicts with what is recorded are refused
before anything is touched, a plug whose records cannot be written is rolled
back, gc does not call an unreadable backend empty, and one cause shared by
many failed ports is said once."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess

import pytest
from pyroute2 import IPRoute

from routed_host import VIFWIRE, port
from vifwire.errors import HostError, InvalidInput
from vifwire.model.loader import load_documents
from vifwire.planner.facts import HostFacts
from vifwire.sandbox import netns
from vifwire.service import WiringService
from vifwire.store.sqlite import SqliteStore

pytestmark = pytest.mark.root


def taps(ns: str) -> list[str]:
    with IPRoute(netns=ns) as ipr:
        return sorted(n for n in (l.get_attr("IFLA_IFNAME") for l in ipr.get_links()) if n.startswith("tap"))


def cli(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([VIFWIRE, *argv], input=stdin, capture_output=True, text=True, timeout=120)


def test_recorded_mac_ip_or_device_of_another_port_is_refused(tmp_path):
    db = str(tmp_path / "s.db")
    first = port(1)
    with netns.sandbox("sd") as ns:
        assert cli("plug", "-", "--netns", ns, "--state", db, stdin=json.dumps(first)).returncode == 0
        before = taps(ns)
        cases = {
            "mac_address": {**port(2), "mac_address": first["mac_address"]},
            "fixed_ips": {**port(2), "fixed_ips": [{"subnet_id": "s4", "ip_address": "10.100.0.2"}]},
        }
        for field, doc in cases.items():
            res = cli("plug", "-", "--netns", ns, "--state", db, stdin=json.dumps(doc))
            assert res.returncode == 2, res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"vifwire: port {doc['id']}: {field}: ")
            assert first["id"] in lines[0]
            assert taps(ns) == before
        # the same port again is the idempotent case, not a conflict
        assert cli("plug", "-", "--netns", ns, "--state", db, stdin=json.dumps(first)).returncode == 0
        with SqliteStore(db) as store:
            assert [a.port_id for a in store.all()] == [first["id"]]
        assert cli("unplug", "--all", "--netns", ns, "--state", db).returncode == 0


class LockedAtCommit(SqliteStore):
    """Another process takes the database's write lock while the plug is wiring."""

    def set_status(self, port_ids, status):
        holder = sqlite3.connect(self.path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            super().set_status(port_ids, status)
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_records_that_cannot_be_written_roll_the_plug_back(tmp_path):
    bindings = load_documents([port(i) for i in range(1, 21)])
    with netns.sandbox("sl") as ns, LockedAtCommit(str(tmp_path / "s.db"), timeout=0.2) as store, \
            WiringService(netns=ns, store=store) as svc:
        with pytest.raises(HostError, match="cannot record the plug .*locked.* rolled back"):
            svc.plug(bindings, HostFacts())
        assert taps(ns) == []
        assert store.all() == []
        assert svc.gc().items == []  # no route, filter or device left behind


def test_gc_with_ovsdb_unreadable_exits_1(tmp_path):
    sock_path = str(tmp_path / "db.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)  # a socket nobody listens on: ovsdb-server died
    try:
        with netns.sandbox("sg") as ns:
            res = cli("gc", "--netns", ns, "--state", str(tmp_path / "s.db"), "--ovsdb", f"unix:{sock_path}")
            assert res.returncode == 1, res.stdout + res.stderr
            assert "cannot read OVSDB" in res.stderr
            # no OVS on the host at all (no socket) and no OVS record: nothing to read, exit 0
            res = cli("gc", "--netns", ns, "--state", str(tmp_path / "s.db"), "--ovsdb", "unix:/nonexistent/db.sock")
            assert res.returncode == 0, res.stderr
    finally:
        dead.close()
        os.unlink(sock_path)


def test_one_cause_shared_by_many_ports_is_said_once(tmp_path):
    docs = [port(i) for i in range(1, 21)]
    with netns.sandbox("sa") as ns:
        res = subprocess.run([VIFWIRE, "plug", "-", "--netns", ns, "--state", str(tmp_path / "s.db")],
                             input=json.dumps(docs), capture_output=True, text=True, timeout=120,
                             env={**os.environ, "VIFWIRE_FAIL_AT_STEP": "0"})
        assert res.returncode == 1
        lines = res.stderr.strip().splitlines()
        assert lines == [f"vifwire: 20 ports ({docs[0]['id']} and 19 more): tap: injected failure at step 0"]
        assert taps(ns) == []


def test_a_locked_database_fails_the_plug_before_the_host_is_touched(tmp_path):
    db = str(tmp_path / "s.db")
    with netns.sandbox("sk") as ns:
        assert cli("list", "--state", db).returncode == 0  # creates vifwire's database
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            res = cli("plug", "-", "--netns", ns, "--state", db, stdin=json.dumps(port(1)))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert res.returncode == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and db in lines[0] and "locked" in lines[0], lines
        assert taps(ns) == []
