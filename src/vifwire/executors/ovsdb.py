"""Native OVSDB client for the plug path (no ``ovs-vsctl`` here).

Design, for speed:

* **One long-lived connection per endpoint** (:meth:`OvsdbClient.shared`):
  an ``ovs.jsonrpc.Session`` (the ``ovs`` library's JSON-RPC transport, with
  its reconnect/back-off logic) plus an OVSDB ``monitor`` of only the tables
  and columns vifwire needs (``Open_vSwitch``: next_cfg, cur_cfg;
  ``Bridge``: name, ports, datapath_type; ``Port``: name, interfaces, tag;
  ``Interface``: name, type, external_ids, options, mtu_request, mtu,
  ofport, error).  High-churn columns (``statistics``, ``status``) are not
  monitored, so ovs-vswitchd's periodic refreshes cost nothing.
* **A plain-dict replica.**  Monitor updates are stored as the raw JSON the
  server sent (``{table: {uuid: {column: json}}}`` plus ``name -> uuid``
  maps); values are converted only when read.  The ``ovs`` IDL
  (``ovs.db.idl``) was measured at ~0.35 ms/port just to turn a 1000-port
  update into ``Datum`` objects; this replica costs a few microseconds per
  row.  Reads (:meth:`port_state`, :meth:`ports_with_external_id`,
  existence checks) are local lookups -- no round trip.
* **Fast JSON.**  The PyPI ``ovs`` wheel usually ships without its C JSON
  parser; its pure-Python fallback costs ~1 ms per port of monitor traffic.
  This client's own connection reads with :class:`FastJsonParser` (stdlib C
  decoder) instead; ``ovs.json.Parser`` itself is left alone, so other users
  of the ``ovs`` library in the process (ovsdbapp, os-vif) are unaffected.
* **One transaction per batch.**  :meth:`add_ports`/:meth:`del_ports` turn a
  whole list into a single OVSDB ``transact`` (``insert`` Interface +
  ``insert`` Port per port, one ``mutate`` of ``Bridge.ports`` per bridge,
  ``next_cfg += 1``): one round trip plus linear JSON work.
* **Exact "applied" signal.**  ovs-vswitchd copies ``next_cfg`` to
  ``cur_cfg`` in the same transaction that writes the ``ofport``/``error`` of
  the interfaces it (re)configured.  :meth:`wait_applied` waits for
  ``cur_cfg >= next_cfg`` and then inspects each port -- no sleeping; it
  wakes on the monitor update.

Existing ports (``may_exist=True``) are *converged*: ``type``,
``mtu_request`` and the port ``tag`` are set to the spec's values (``None``
clears them); ``external_ids``/``options`` keys from the spec are set and
other keys (e.g. ``ovn-installed`` written by another agent) are left alone.
A port that exists on a *different* bridge is an error, as with
``ovs-vsctl --may-exist add-port``.

Errors are :class:`~vifwire.errors.HostError` subclasses carrying the port,
the step and a one-line problem; every call takes (or inherits) a timeout and
raises within it.  A lost connection is re-established transparently (the
replica is re-fetched) on the next call.

Thread safety: calls on one client are serialised by a lock.
"""

from __future__ import annotations

import gc
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ovs.json
import ovs.jsonrpc
import ovs.poller
from ovs.jsonrpc import Message

from vifwire.errors import HostError

DB_NAME = "Open_vSwitch"

#: Interface ``type`` values vifwire plugs.  Anything else is passed through.
KNOWN_IFACE_TYPES = ("", "system", "internal", "dpdkvhostuserclient", "dpdkvhostuser", "tap")

_COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces", "tag"],
    "Interface": [
        "name", "type", "external_ids", "options",
        "mtu_request", "mtu", "ofport", "error",
    ],
}
_NAMED = ("Bridge", "Port", "Interface")
_MONITOR_ID = "vifwire"


# --------------------------------------------------------------------------
# errors


class OvsdbError(HostError):
    """An OVSDB operation failed.  ``line()`` omits the port when unknown."""

    def line(self) -> str:
        if self.port == "<unknown>":
            return f"{self.step}: {self.problem}"
        return super().line()


class OvsdbUnavailable(OvsdbError):
    """ovsdb-server could not be reached (or stopped answering) in time."""


class OvsApplyError(OvsdbError):
    """ovs-vswitchd did not apply ports (timeout, or an ``Interface.error``).

    ``states`` maps every waited-for port to its :meth:`port_state` (``None``
    when the port is not in the DB); ``failed`` lists the ports that lack an
    ofport, in input order.
    """

    def __init__(self, port, step, problem, *, states=None, failed=None):
        super().__init__(port, step, problem)
        self.states: dict[str, dict | None] = states or {}
        self.failed: list[str] = failed or []


# --------------------------------------------------------------------------
# input


@dataclass
class OvsPortSpec:
    """One OVS port with a single interface of the same name.

    ``iface_type``: ``""`` (a system device: veth end, tap), ``"internal"``,
    ``"dpdkvhostuserclient"``, ``"dpdkvhostuser"``...
    ``external_ids``: Interface external_ids (``iface-id``, ``iface-status``,
    ``attached-mac``, ``vm-uuid`` and vifwire's own owner marker).
    ``mtu_request``/``tag``: ``None`` means unset.  ``options``: Interface
    options (e.g. ``vhost-server-path``).
    """

    bridge: str
    name: str
    iface_type: str = ""
    external_ids: dict[str, str] = field(default_factory=dict)
    mtu_request: int | None = None
    tag: int | None = None
    options: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        def bad(f, p):
            raise OvsdbError(self.name or "<unnamed>", f"ovs {f}", p)

        if not self.name or not isinstance(self.name, str):
            bad("port name", "empty port name")
        if not self.bridge:
            bad("bridge", "empty bridge name")
        if self.tag is not None and not (isinstance(self.tag, int) and 0 <= self.tag <= 4095):
            bad("tag", f"vlan tag {self.tag!r} not in 0..4095")
        if self.mtu_request is not None and not (
            isinstance(self.mtu_request, int) and 68 <= self.mtu_request <= 65535
        ):
            bad("mtu_request", f"mtu {self.mtu_request!r} not in 68..65535")
        for what, d in (("external_ids", self.external_ids), ("options", self.options)):
            for k, v in d.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    bad(what, f"{what} must map strings to strings ({k!r}: {v!r})")


# --------------------------------------------------------------------------
# helpers


def _map(d: dict[str, str]) -> list:
    return ["map", [[k, v] for k, v in d.items()]]


def _opt(v: Any) -> Any:
    return ["set", []] if v is None else v


def _uuid(u) -> list:
    return ["uuid", str(u)]


def _probe_endpoint(endpoint: str) -> str:
    """A one-line reason why ``endpoint`` is not answering (diagnostics)."""
    try:
        if endpoint.startswith("unix:"):
            path = endpoint[5:]
            if not os.path.exists(path):
                return f"socket {path} does not exist (is ovsdb-server running?)"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                s.connect(path)
            finally:
                s.close()
        elif endpoint.startswith("tcp:"):
            host, _, port = endpoint[4:].rpartition(":")
            socket.create_connection((host.strip("[]"), int(port)), timeout=0.5).close()
        else:
            return "no reply"
    except OSError as e:
        return e.strerror or str(e)
    return "connected but the server does not answer (hung or stopped?)"


_MSG_BOUNDARY = re.compile(r"\}\s*\{")


class FastJsonParser:
    """Drop-in for ``ovs.json.Parser`` backed by the stdlib C JSON decoder.

    The ``ovs`` wheel from PyPI usually lacks its C extension (``ovs._json``)
    and then parses every byte from ovsdb-server with a pure-Python state
    machine: ~1 ms per port of a monitor update -- more than everything else
    on the plug path.  This class keeps the interface ``ovs.jsonrpc`` uses
    (``feed`` returns characters consumed, ``is_done``, ``finish``) and only
    attempts a decode when a chunk ends in ``}`` (JSON-RPC messages are
    objects), so a large message costs one C-speed parse.
    """

    _decoder = json.JSONDecoder()

    def __init__(self, check_trailer: bool = False):
        self._chunks: list[str] = []
        self._len = 0
        self._done = False
        self._value: Any = None

    def feed(self, s: str) -> int:
        if self._done:
            return 0
        self._chunks.append(s)
        self._len += len(s)
        # A message can only end where a chunk ends in "}" (modulo spaces)
        # or where "}" is followed by the "{" of the next message, so only
        # those chunks trigger a decode attempt -- and the end of a message
        # is always inside the chunk that triggered, so ``feed`` never
        # consumes past it.
        tail = s.rstrip()
        if not tail or (tail[-1] != "}" and not _MSG_BOUNDARY.search(s)):
            return len(s)
        buf = "".join(self._chunks)
        self._chunks = [buf]
        start = len(buf) - len(buf.lstrip())
        # Decoding a big update allocates ~10^5 containers; without this the
        # cyclic GC runs repeatedly mid-parse and can triple the cost.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            value, end = self._decoder.raw_decode(buf, start)
        except json.JSONDecodeError as e:
            if e.pos < len(buf.rstrip()) - 1 and not e.msg.startswith("Unterminated string"):
                self._done, self._value = True, f"byte {e.pos}: {e.msg}"
            return len(s)
        finally:
            if gc_was_enabled:
                gc.enable()
        self._done, self._value = True, value
        return len(s) - (len(buf) - end)

    def is_done(self) -> bool:
        return self._done

    def finish(self):
        if not self._done:
            buf = "".join(self._chunks)
            if not buf.strip():
                return "empty input stream"
            try:
                return json.loads(buf)
            except ValueError as e:
                return str(e)
        return self._value


#: Read this client's connection with :class:`FastJsonParser`: only when the
#: ``ovs`` library has no C parser (its C parser counts ``feed`` in bytes, ours
#: in characters) and not turned off (``VIFWIRE_OVS_FAST_JSON=0``, for A/B).
FAST_JSON = ovs.json.PARSER == ovs.json.PARSER_PY and os.environ.get("VIFWIRE_OVS_FAST_JSON", "1") != "0"


# --------------------------------------------------------------------------
# raw OVSDB JSON values -> python


def _scalar(v: Any) -> Any:
    """Optional scalar (``["set", []]`` / ``["set", [x]]`` / ``x``) -> x|None."""
    if isinstance(v, list):
        if v[0] == "set":
            return _scalar(v[1][0]) if v[1] else None
        if v[0] in ("uuid", "named-uuid"):
            return v[1]
    return v


def _pymap(v: Any) -> dict:
    return dict(v[1]) if isinstance(v, list) and v and v[0] == "map" else {}


def _uuids(v: Any) -> list[str]:
    """A set of uuid references -> list of uuid strings."""
    if not isinstance(v, list) or not v:
        return []
    if v[0] == "uuid":
        return [v[1]]
    if v[0] == "set":
        return [x[1] for x in v[1]]
    return []


# --------------------------------------------------------------------------


class OvsdbClient:
    """A long-lived OVSDB connection to one endpoint (``unix:PATH``, ``tcp:IP:PORT``).

    The constructor connects and waits for the initial replica; if the server
    cannot be reached within ``timeout`` it raises :class:`OvsdbUnavailable`.
    ``timeout`` is also the default for every later call.  ``probe_interval``
    (ms) is passed to the session: None = the ``ovs`` default (none on unix
    sockets, 5 s on tcp), 0 disables keepalives.
    """

    _shared: dict[str, OvsdbClient] = {}
    _shared_lock = threading.Lock()

    def __init__(self, endpoint: str, timeout: float = 10.0, *, probe_interval: int | None = None):
        self.endpoint = endpoint
        self.timeout = timeout
        self._lock = threading.RLock()
        self._closed = False
        self._tables: dict[str, dict[str, dict]] = {t: {} for t in _COLUMNS}
        self._names: dict[str, dict[str, str]] = {t: {} for t in _NAMED}
        self._bridges_ver = 0
        self._p2b: dict[str, str] = {}
        self._p2b_ver = -1
        self._conn_seqno: int | None = None
        self._monitor_req: Any = None
        self._synced_flag = False
        self._replies: dict[Any, Message | None] = {}
        self._session = ovs.jsonrpc.Session.open(endpoint, probe_interval=probe_interval)
        try:
            self._sync(self._deadline(timeout), "connect")
        except BaseException:
            self._session.close()
            raise

    @classmethod
    def shared(cls, endpoint: str, timeout: float = 10.0) -> OvsdbClient:
        """The process-wide client for ``endpoint`` (created on first use)."""
        with cls._shared_lock:
            c = cls._shared.get(endpoint)
            if c is None or c._closed:
                c = cls._shared[endpoint] = cls(endpoint, timeout)
            return c

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()
        with self._shared_lock:
            if self._shared.get(self.endpoint) is self:
                del self._shared[self.endpoint]

    def __enter__(self) -> OvsdbClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """:meth:`close` was called (a closed client is not reopened; make a new one)."""
        return self._closed

    # ---- protocol -------------------------------------------------------

    def _run(self) -> None:
        """One round of session I/O and message handling (non-blocking)."""
        s = self._session
        s.run()
        if not s.is_connected():
            self._synced_flag = False
            return
        seqno = s.get_seqno()
        if seqno != self._conn_seqno:
            # A new connection: everything in flight on the old one is lost,
            # the replica is re-fetched from scratch.
            self._conn_seqno = seqno
            self._synced_flag = False
            req = Message.create_request(
                "monitor",
                [DB_NAME, _MONITOR_ID, {t: {"columns": c} for t, c in _COLUMNS.items()}],
            )
            self._monitor_req = req.id
            s.send(req)
        for _ in range(1000):
            rpc = s.rpc
            if FAST_JSON and rpc is not None and rpc.parser is None:
                # ovs.jsonrpc.Connection.recv() makes an ovs.json.Parser
                # only when it has none, and drops it after each message
                # (one message per recv): hand it ours for the next one.
                rpc.parser = FastJsonParser()
            msg = s.recv()
            if msg is None:
                if not s.is_connected():
                    self._synced_flag = False
                return
            self._handle(msg)

    def _handle(self, msg: Message) -> None:
        if msg.type == Message.T_NOTIFY:
            if msg.method == "update" and len(msg.params) == 2 and msg.params[0] == _MONITOR_ID:
                self._apply(msg.params[1])
            return
        if msg.type not in (Message.T_REPLY, Message.T_ERROR):
            return
        if msg.id == self._monitor_req:
            self._monitor_req = None
            if msg.type == Message.T_ERROR:
                # Cannot monitor (schema mismatch?): drop and retry later.
                self._session.force_reconnect()
                return
            for t in self._tables.values():
                t.clear()
            for n in self._names.values():
                n.clear()
            self._bridges_ver += 1
            self._apply(msg.result)
            self._synced_flag = True
        elif msg.id in self._replies:
            self._replies[msg.id] = msg

    def _apply(self, updates: dict) -> None:
        for tname, rows in updates.items():
            table = self._tables.get(tname)
            if table is None:
                continue
            names = self._names.get(tname)
            if tname == "Bridge":
                self._bridges_ver += 1
            for uuid, ru in rows.items():
                new = ru.get("new")
                old = table.get(uuid)
                if new is None:
                    if old is not None:
                        del table[uuid]
                        if names is not None and names.get(old.get("name")) == uuid:
                            del names[old["name"]]
                    continue
                table[uuid] = new
                if names is not None:
                    if old is not None and old.get("name") != new.get("name") \
                            and names.get(old.get("name")) == uuid:
                        del names[old["name"]]
                    names[new.get("name")] = uuid

    def _synced(self) -> bool:
        return self._synced_flag and self._session.is_connected()

    def _pump(self, done: Callable[[], bool], deadline: float) -> bool:
        """Run the session until ``done()`` or ``deadline``; returns ``done()``."""
        s = self._session
        while True:
            self._run()
            if done():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller = ovs.poller.Poller()
            s.wait(poller)
            s.recv_wait(poller)
            poller.timer_wait(max(1, min(int(left * 1000) + 1, 1000)))
            poller.block()

    def _sync(self, deadline: float, step: str, port: str | None = None) -> None:
        if self._closed:
            raise OvsdbError(port, f"ovsdb {step}", "client is closed")
        if self._synced():
            self._run()  # cheap: take in pending updates
            if self._synced():
                return
        if not self._pump(self._synced, deadline):
            raise OvsdbUnavailable(
                port, f"ovsdb {step}",
                f"no connection to ovsdb-server at {self.endpoint} within "
                f"{max(0.0, deadline - self._t0):.3g}s: {_probe_endpoint(self.endpoint)}",
            )

    def _deadline(self, timeout: float | None) -> float:
        self._t0 = time.monotonic()
        return self._t0 + (self.timeout if timeout is None else timeout)

    def _transact(self, build: Callable[[], list[dict]], step: str, port: str | None,
                  deadline: float, bump: bool = True) -> int | None:
        """Build ops from the replica with ``build()`` and commit them.

        ``build()`` returns raw OVSDB operations (empty: nothing to do).
        Retries -- re-building from the fresh replica -- after a lost
        connection, a failed ``wait`` precondition or an index conflict with a
        concurrent writer, until ``deadline``.  Returns the ``next_cfg`` this
        transaction produced (None when nothing was sent).
        """
        conflicts = 2
        while True:
            self._sync(deadline, step, port)
            ops = build()
            if not ops:
                return None
            cfg_at = None
            if bump and self._tables["Open_vSwitch"]:
                ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                            "mutations": [["next_cfg", "+=", 1]]})
                cfg_at = len(ops)
                ops.append({"op": "select", "table": "Open_vSwitch", "where": [],
                            "columns": ["next_cfg"]})
            req = Message.create_request("transact", [DB_NAME, *ops])
            self._replies[req.id] = None
            try:
                if self._session.send(req):
                    continue  # not connected any more: re-sync and retry
                seqno = self._conn_seqno
                got = self._pump(lambda: self._replies[req.id] is not None
                                 or self._conn_seqno != seqno or not self._session.is_connected(),
                                 deadline)
                reply = self._replies[req.id]
            finally:
                self._replies.pop(req.id, None)
            if reply is None:
                if not got:
                    raise OvsdbUnavailable(
                        port, f"ovsdb {step}",
                        f"no reply from ovsdb-server at {self.endpoint} "
                        f"({_probe_endpoint(self.endpoint)})")
                continue  # connection lost mid-transaction: re-sync, rebuild
            if reply.type == Message.T_ERROR:
                raise OvsdbError(port, f"ovsdb {step}", _error_text(json.dumps(reply.error)))
            results = reply.result
            err = next((r for r in results if isinstance(r, dict) and "error" in r), None)
            if err is None and len(results) > len(ops):
                err = results[len(ops)]
            if err is None:
                if cfg_at is not None:
                    rows = results[cfg_at].get("rows") or [{}]
                    return rows[0].get("next_cfg")
                return None
            if conflicts > 0 and err.get("error") in ("timed out", "constraint violation") \
                    and time.monotonic() < deadline:
                # a "wait" precondition failed or we lost a race with another
                # writer; the replica already has their change -- rebuild.
                conflicts -= 1
                continue
            raise OvsdbError(port, f"ovsdb {step}", _error_text(json.dumps(err)))

    # ---- replica helpers ------------------------------------------------

    def _row(self, table: str, name: str) -> tuple[str, dict] | tuple[None, None]:
        u = self._names[table].get(name)
        if u is None:
            return None, None
        return u, self._tables[table][u]

    def _port_bridges(self) -> dict[str, str]:
        """Port uuid -> bridge name (cached until a Bridge row changes)."""
        if self._p2b_ver != self._bridges_ver:
            p2b = {}
            for br in self._tables["Bridge"].values():
                name = br["name"]
                for pu in _uuids(br["ports"]):
                    p2b[pu] = name
            self._p2b = p2b
            self._p2b_ver = self._bridges_ver
        return self._p2b

    def _iface_of(self, port: dict, name: str) -> tuple[str, dict] | tuple[None, None]:
        ifaces = self._tables["Interface"]
        found = [(u, ifaces[u]) for u in _uuids(port["interfaces"]) if u in ifaces]
        for u, row in found:
            if row["name"] == name:
                return u, row
        return found[0] if found else (None, None)

    def _state(self, name: str) -> dict | None:
        pu, port = self._row("Port", name)
        iu, iface = self._row("Interface", name)
        if port is None and iface is None:
            return None
        if iface is None:
            iu, iface = self._iface_of(port, name)
        st: dict[str, Any] = {
            "name": name,
            "bridge": self._port_bridges().get(pu) if pu else None,
            "tag": _scalar(port["tag"]) if port is not None else None,
            "type": None, "external_ids": {}, "options": {},
            "mtu_request": None, "mtu": None, "ofport": None, "error": None,
        }
        if iface is not None:
            st.update(
                type=iface["type"],
                external_ids=_pymap(iface["external_ids"]),
                options=_pymap(iface["options"]),
                mtu_request=_scalar(iface["mtu_request"]),
                mtu=_scalar(iface["mtu"]),
                ofport=_scalar(iface["ofport"]),
                error=_scalar(iface["error"]),
            )
        return st

    def _ofport(self, name: str) -> int | None:
        u = self._names["Interface"].get(name)
        if u is None:
            return None
        return _scalar(self._tables["Interface"][u]["ofport"])

    # ---- public: reads ---------------------------------------------------

    def port_state(self, name: str, *, timeout: float | None = None) -> dict | None:
        """The port as OVSDB has it, or None if there is no such port.

        Keys: ``name``, ``bridge``, ``type``, ``external_ids``, ``options``,
        ``tag``, ``mtu_request``, ``mtu``, ``ofport`` (None until ovs-vswitchd
        assigns one, -1 on failure), ``error`` (Interface.error or None).
        """
        with self._lock:
            self._sync(self._deadline(timeout), "read", name)
            return self._state(name)

    def port_states(self, names: Iterable[str], *, timeout: float | None = None) -> dict[str, dict | None]:
        """``{name: port_state(name)}`` for many ports from one replica sync."""
        with self._lock:
            names = list(names)
            self._sync(self._deadline(timeout), "read", names[0] if len(names) == 1 else None)
            return {n: self._state(n) for n in names}

    def row(self, table: str, name: str) -> tuple[str, dict] | tuple[None, None]:
        """``(uuid, raw row)`` of the Bridge/Port/Interface called ``name`` in
        the replica (``(None, None)`` if absent).  The row is the JSON the
        server sent (monitored columns only); do not modify it.  Meant for
        ``build`` callbacks of :meth:`transact`."""
        return self._row(table, name)

    def transact(self, build: Callable[[], list[dict]], step: str, port: str | None = None,
                 *, timeout: float | None = None, bump: bool = True) -> int | None:
        """Commit raw OVSDB operations built from the current replica.

        ``build()`` is called (under the client lock, after syncing) and
        returns a list of OVSDB operations; an empty list sends nothing.  It is
        called again from a fresh replica after transient failures (lost
        connection, failed ``wait`` op, index conflict), so it must be
        idempotent and read state only through :meth:`row` /
        :meth:`port_state`-like calls made inside it.  ``bump`` adds
        ``next_cfg += 1`` so :meth:`wait_cfg` can wait for ovs-vswitchd.
        Returns the new ``next_cfg`` (None if nothing was sent).  Errors:
        :class:`OvsdbError` (``step`` and ``port`` name it) /
        :class:`OvsdbUnavailable`.
        """
        with self._lock:
            return self._transact(build, step, port, self._deadline(timeout), bump=bump)

    def del_bridge(self, name: str, *, only_if_unused: bool = True,
                   timeout: float | None = None) -> bool:
        """Remove bridge ``name``; returns True if it was removed.

        With ``only_if_unused`` (default) the bridge is kept when any port
        other than its own internal port is on it -- checked atomically in the
        same transaction (a ``wait`` on ``Bridge.ports``).
        """
        removed = False

        def build() -> list[dict]:
            nonlocal removed
            removed = False
            bu, br = self._row("Bridge", name)
            if bu is None:
                return []
            own = self._names["Port"].get(name)
            ports = br["ports"]
            if only_if_unused and any(u != own for u in _uuids(ports)):
                return []
            removed = True
            where = [["_uuid", "==", _uuid(bu)]]
            return [
                {"op": "wait", "table": "Bridge", "where": where, "timeout": 0,
                 "columns": ["ports"], "until": "==", "rows": [{"ports": ports}]},
                {"op": "mutate", "table": "Open_vSwitch", "where": [],
                 "mutations": [["bridges", "delete", ["set", [_uuid(bu)]]]]},
            ]

        with self._lock:
            self._transact(build, "del-br", None, self._deadline(timeout))
        return removed

    def ports_with_external_id(self, key: str, value: str | None = None,
                               *, timeout: float | None = None) -> dict[str, dict]:
        """``{name: port_state}`` for interfaces whose external_ids has ``key``
        (and, if given, that ``value``) -- e.g. vifwire's owner marker, for
        gc/check."""
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            out = {}
            for iface in self._tables["Interface"].values():
                ext = iface["external_ids"]
                if not (isinstance(ext, list) and ext[1]):
                    continue
                for k, v in ext[1]:
                    if k == key and (value is None or v == value):
                        out[iface["name"]] = self._state(iface["name"])
                        break
            return out

    def port_names(self, bridge: str | None = None, *, timeout: float | None = None) -> list[str]:
        """Names of all ports (of ``bridge`` if given)."""
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            if bridge is None:
                return sorted(self._names["Port"])
            _, br = self._row("Bridge", bridge)
            if br is None:
                return []
            ports = self._tables["Port"]
            return sorted(ports[u]["name"] for u in _uuids(br["ports"]) if u in ports)

    def bridge_exists(self, name: str, *, timeout: float | None = None) -> bool:
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            return name in self._names["Bridge"]

    def bridge_names(self, *, timeout: float | None = None) -> set[str]:
        """Names of every bridge, from one replica sync (``check`` of a run)."""
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            return set(self._names["Bridge"])

    def cfg(self) -> tuple[int, int]:
        """(next_cfg, cur_cfg) as last seen."""
        root = next(iter(self._tables["Open_vSwitch"].values()), None)
        if root is None:
            return (0, 0)
        return (root["next_cfg"], root["cur_cfg"])

    # ---- public: writes ------------------------------------------------

    def ensure_bridge(self, name: str, datapath_type: str = "netdev",
                      *, timeout: float | None = None) -> bool:
        """Create bridge ``name`` (with its internal port) unless it exists.

        Returns True if it was created.  An existing bridge is left as is.
        Creates the ``Open_vSwitch`` root row if the DB has none.
        """
        with self._lock:
            created = False

            def build():
                nonlocal created
                if name in self._names["Bridge"]:
                    created = False
                    return []
                created = True
                ops = [
                    {"op": "insert", "table": "Interface", "uuid-name": "bri",
                     "row": {"name": name, "type": "internal"}},
                    {"op": "insert", "table": "Port", "uuid-name": "brp",
                     "row": {"name": name, "interfaces": ["named-uuid", "bri"]}},
                    {"op": "insert", "table": "Bridge", "uuid-name": "br",
                     "row": {"name": name, "datapath_type": datapath_type,
                             "ports": ["named-uuid", "brp"]}},
                ]
                if not self._tables["Open_vSwitch"]:
                    ops.append({"op": "insert", "table": "Open_vSwitch",
                                "row": {"bridges": ["named-uuid", "br"]}})
                else:
                    ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                                "mutations": [["bridges", "insert", ["set", [["named-uuid", "br"]]]]]})
                return ops

            self._transact(build, "add-br", name, self._deadline(timeout))
            return created

    def add_ports(self, specs: Iterable[OvsPortSpec], may_exist: bool = True,
                  *, timeout: float | None = None) -> int | None:
        """Add (or converge) all ``specs`` in ONE transaction.

        Returns the ``next_cfg`` value the transaction produced (None if
        nothing had to change).  Raises :class:`OvsdbError` naming the port
        for: duplicate names in the batch, a missing bridge, a port existing
        on another bridge, an existing port when ``may_exist`` is False, or a
        transaction error.
        """
        specs = list(specs)
        seen: set[str] = set()
        for s in specs:
            s.check()
            if s.name in seen:
                raise OvsdbError(s.name, "ovs add-port", "duplicate port name in batch")
            seen.add(s.name)
        if not specs:
            return None
        with self._lock:
            return self._transact(
                lambda: self._build_add(specs, may_exist), "add-port",
                specs[0].name if len(specs) == 1 else None, self._deadline(timeout),
            )

    def _build_add(self, specs: list[OvsPortSpec], may_exist: bool) -> list[dict]:
        ops: list[dict] = []
        new_by_bridge: dict[str, list] = {}
        bridges: dict[str, str] = {}
        port_names = self._names["Port"]
        iface_names = self._names["Interface"]
        for k, s in enumerate(specs):
            bu = bridges.get(s.bridge)
            if bu is None:
                bu = bridges[s.bridge] = self._names["Bridge"].get(s.bridge)
                if bu is None:
                    raise OvsdbError(s.name, "ovs add-port", f"bridge {s.bridge} does not exist")
            pu = port_names.get(s.name)
            if pu is None:
                if s.name in iface_names:
                    raise OvsdbError(s.name, "ovs add-port",
                                     "an interface with this name exists on another port")
                irow: dict[str, Any] = {"name": s.name}
                if s.iface_type:
                    irow["type"] = s.iface_type
                if s.external_ids:
                    irow["external_ids"] = _map(s.external_ids)
                if s.options:
                    irow["options"] = _map(s.options)
                if s.mtu_request is not None:
                    irow["mtu_request"] = s.mtu_request
                prow: dict[str, Any] = {"name": s.name, "interfaces": ["named-uuid", f"i{k}"]}
                if s.tag is not None:
                    prow["tag"] = s.tag
                ops.append({"op": "insert", "table": "Interface", "uuid-name": f"i{k}", "row": irow})
                ops.append({"op": "insert", "table": "Port", "uuid-name": f"p{k}", "row": prow})
                new_by_bridge.setdefault(s.bridge, []).append(["named-uuid", f"p{k}"])
                continue
            owner = self._port_bridges().get(pu)
            if not may_exist:
                raise OvsdbError(s.name, "ovs add-port", f"port already exists on bridge {owner}")
            if owner != s.bridge:
                raise OvsdbError(s.name, "ovs add-port",
                                 f"port exists on bridge {owner}, not {s.bridge}")
            ops.extend(self._converge_ops(pu, self._tables["Port"][pu], s))
        for brname, refs in new_by_bridge.items():
            where = [["_uuid", "==", _uuid(bridges[brname])]]
            # Fail (and retry from a fresh replica) if the bridge vanished.
            ops.append({"op": "wait", "table": "Bridge", "where": where, "timeout": 0,
                        "columns": ["name"], "until": "==", "rows": [{"name": brname}]})
            ops.append({"op": "mutate", "table": "Bridge", "where": where,
                        "mutations": [["ports", "insert", ["set", refs]]]})
        return ops

    def _converge_ops(self, pu: str, port: dict, s: OvsPortSpec) -> list[dict]:
        ops: list[dict] = []
        if _scalar(port["tag"]) != s.tag:
            ops.append({"op": "update", "table": "Port", "where": [["_uuid", "==", _uuid(pu)]],
                        "row": {"tag": _opt(s.tag)}})
        iu, iface = self._iface_of(port, s.name)
        if iface is None:
            raise OvsdbError(s.name, "ovs add-port", "existing port has no interface")
        where = [["_uuid", "==", _uuid(iu)]]
        row: dict[str, Any] = {}
        if iface["type"] != s.iface_type:
            row["type"] = s.iface_type
        if _scalar(iface["mtu_request"]) != s.mtu_request:
            row["mtu_request"] = _opt(s.mtu_request)
        if row:
            ops.append({"op": "update", "table": "Interface", "where": where, "row": row})
        muts = []
        for col, want in (("external_ids", s.external_ids), ("options", s.options)):
            have = _pymap(iface[col])
            diff = {k: v for k, v in want.items() if have.get(k) != v}
            if diff:
                stale = [k for k in diff if k in have]
                if stale:
                    muts.append([col, "delete", ["set", sorted(stale)]])
                muts.append([col, "insert", _map(diff)])
        if muts:
            ops.append({"op": "mutate", "table": "Interface", "where": where, "mutations": muts})
        return ops

    def del_ports(self, names: Iterable[str], if_exists: bool = True,
                  *, timeout: float | None = None) -> int | None:
        """Remove the named ports (and their interfaces) in ONE transaction.

        Absent ports are skipped when ``if_exists`` (default), else an
        :class:`OvsdbError` names the first absent one.  Returns the new
        ``next_cfg`` (None if nothing was removed).  Does not wait for
        ovs-vswitchd (see :meth:`wait_cfg`).
        """
        names = list(dict.fromkeys(names))
        if not names:
            return None

        def build():
            p2b = self._port_bridges()
            by_bridge: dict[str, list] = {}
            for n in names:
                pu = self._names["Port"].get(n)
                br = p2b.get(pu) if pu is not None else None
                if br is None:
                    if not if_exists:
                        raise OvsdbError(n, "ovs del-port", "no such port")
                    continue
                by_bridge.setdefault(br, []).append(_uuid(pu))
            return [{"op": "mutate", "table": "Bridge",
                     "where": [["_uuid", "==", _uuid(self._names["Bridge"][br])]],
                     "mutations": [["ports", "delete", ["set", refs]]]}
                    for br, refs in by_bridge.items()]

        with self._lock:
            return self._transact(build, "del-port", names[0] if len(names) == 1 else None,
                                  self._deadline(timeout))

    # ---- public: waiting for ovs-vswitchd --------------------------------

    def wait_cfg(self, timeout: float | None = None, cfg: int | None = None) -> int:
        """Wait until ovs-vswitchd has applied every change committed so far
        (``cur_cfg >= next_cfg``, or ``>= cfg`` if given).  Returns cur_cfg."""
        with self._lock:
            t = self.timeout if timeout is None else timeout
            deadline = self._deadline(timeout)
            self._sync(deadline, "wait")
            target = self.cfg()[0] if cfg is None else cfg
            if not self._pump(lambda: self.cfg()[1] >= target, deadline):
                cur = self.cfg()[1]
                raise OvsApplyError(
                    None, "ovs-vswitchd apply",
                    f"configuration not applied within {t:g}s (cur_cfg {cur} < "
                    f"next_cfg {target}); is ovs-vswitchd running?",
                )
            return self.cfg()[1]

    def wait_applied(self, names: Iterable[str], timeout: float | None = None,
                     *, fail_fast: bool = True) -> dict[str, dict]:
        """Wait until ovs-vswitchd has given each named port an ofport (> 0).

        Returns ``{name: port_state}``.  Raises :class:`OvsApplyError`

        * on timeout, naming the ports without an ofport and why
          (``Interface.error``, not in the DB, or ovs-vswitchd not having
          caught up with ``next_cfg`` -- e.g. it is stopped);
        * with ``fail_fast`` (default), as soon as ovs-vswitchd has applied the
          configuration and some port still has no ofport (its ``error``
          column says why, e.g. the device does not exist).  Pass
          ``fail_fast=False`` to keep waiting for errors to clear (e.g. a tap
          the hypervisor will create later).
        """
        names = list(dict.fromkeys(names))
        with self._lock:
            t = self.timeout if timeout is None else timeout
            deadline = self._deadline(timeout)
            self._sync(deadline, "wait", names[0] if len(names) == 1 else None)
            target = self.cfg()[0]
            pending = list(names)
            failed_settled = False

            def done() -> bool:
                nonlocal pending, failed_settled
                if self.cfg()[1] < target:
                    return False
                still = []
                for n in pending:
                    of = self._ofport(n)
                    if not of or of <= 0:
                        still.append(n)
                pending = still
                failed_settled = bool(still)
                return not still or fail_fast

            ok = self._pump(done, deadline)
            states = {n: self._state(n) for n in names}
            if ok and not pending:
                return states
            cur = self.cfg()[1]
            reasons = []
            for n in pending:
                st = states[n]
                if st is None:
                    why = "not in the database"
                elif st["error"]:
                    why = st["error"]
                elif cur < target:
                    why = "not applied yet"
                else:
                    why = "no ofport and no error reported"
                reasons.append(f"{n} ({why})")
            shown = ", ".join(reasons[:5]) + (f" and {len(reasons) - 5} more" if len(reasons) > 5 else "")
            if ok and failed_settled:
                problem = f"{len(pending)} port(s) failed: {shown}"
            elif cur < target:
                problem = (f"ovs-vswitchd did not apply the configuration within {t:g}s "
                           f"(cur_cfg {cur} < next_cfg {target}; is it running?); "
                           f"{len(pending)} port(s) without ofport: {shown}")
            else:
                problem = f"{len(pending)} port(s) without ofport after {t:g}s: {shown}"
            raise OvsApplyError(pending[0] if len(pending) == 1 else None,
                                "ovs-vswitchd apply", problem, states=states, failed=pending)


def _error_text(err: str) -> str:
    """One line from an OVSDB error JSON string."""
    try:
        j = json.loads(err)
        if isinstance(j, dict):
            e = j.get("error", "")
            d = j.get("details", "")
            return f"{e}: {d}".strip(": ").replace("\n", " ")
    except ValueError:
        pass
    return err.replace("\n", " ")
