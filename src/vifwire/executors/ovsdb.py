"""Native OVSDB client for the plug path (no ``ovs-vsctl`` here).

Design, for speed:

* **One long-lived connection per endpoint** (:meth:`OvsdbClient.shared`),
  built on the ``ovs`` Python IDL.  The IDL keeps an in-memory replica of
  just the tables/columns vifwire needs (``Open_vSwitch``: bridges,
  next_cfg, cur_cfg; ``Bridge``: name, ports, datapath_type; ``Port``: name,
  interfaces, tag; ``Interface``: name, type, external_ids, options,
  mtu_request, mtu, ofport, error).  High-churn columns such as
  ``statistics``/``status`` are not monitored, so ovs-vswitchd's periodic
  refreshes cost nothing.  Reads (:meth:`port_state`,
  :meth:`ports_with_external_id`, existence checks) are local dictionary
  lookups -- no round trip.
* **One transaction per batch.**  :meth:`add_ports`/:meth:`del_ports` turn a
  whole list into a single OVSDB ``transact`` built directly as JSON
  operations (``insert`` Interface + ``insert`` Port per port and one
  ``mutate`` of ``Bridge.ports`` per bridge), so cost is one round trip plus
  linear JSON work.  The same transaction increments
  ``Open_vSwitch.next_cfg``.
* **Exact "applied" signal.**  ovs-vswitchd copies ``next_cfg`` to
  ``cur_cfg`` in the same transaction that writes the ``ofport``/``error`` of
  the interfaces it (re)configured.  :meth:`wait_applied` waits for
  ``cur_cfg >= next_cfg`` and then inspects each port -- no polling or
  sleeping; it wakes on the monitor update.

Existing ports (``may_exist=True``) are *converged*: ``type``,
``mtu_request`` and the port ``tag`` are set to the spec's values (``None``
clears them); ``external_ids``/``options`` keys from the spec are set and
other keys (e.g. ``ovn-installed`` written by another agent) are left alone.
A port that exists on a *different* bridge is an error, as with
``ovs-vsctl --may-exist add-port``.

Errors are :class:`~vifwire.errors.HostError` subclasses carrying the port,
the step and a one-line problem; every call takes (or inherits) a timeout and
raises within it.

Thread safety: calls on one client are serialised by a lock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ovs.db.idl as ovs_idl
import ovs.poller

from vifwire.errors import HostError

SCHEMA_FILE = "/usr/share/openvswitch/vswitch.ovsschema"
DB_NAME = "Open_vSwitch"

#: Interface ``type`` values vifwire plugs.  Anything else is passed through.
KNOWN_IFACE_TYPES = ("", "system", "internal", "dpdkvhostuserclient", "dpdkvhostuser", "tap")

_COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces", "tag"],
    "Interface": [
        "name", "type", "external_ids", "options",
        "mtu_request", "mtu", "ofport", "error",
    ],
}
_NAMED = ("Bridge", "Port", "Interface")


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
    return ["map", [[k, v] for k, v in sorted(d.items())]]


def _opt(v: Any) -> Any:
    return ["set", []] if v is None else v


def _uuid(u) -> list:
    return ["uuid", str(u)]


def _first(v: Any) -> Any:
    """Optional column (python list of 0/1 values) -> value or None."""
    if isinstance(v, list):
        return v[0] if v else None
    return v


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


def _fetch_schema(endpoint: str, timeout: float) -> dict:
    """``get_schema`` over a short-lived plain socket (bounded by timeout)."""
    if endpoint.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr: Any = endpoint[5:]
    elif endpoint.startswith("tcp:"):
        host, _, port = endpoint[4:].rpartition(":")
        host = host.strip("[]")
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        addr = (host, int(port))
    else:
        with open(SCHEMA_FILE) as f:  # e.g. ssl: use the local schema
            return json.load(f)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        s.sendall(json.dumps({"method": "get_schema", "params": [DB_NAME], "id": 0}).encode())
        buf = b""
        dec = json.JSONDecoder()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise OSError("connection closed by ovsdb-server")
            buf += chunk
            try:
                msg, _ = dec.raw_decode(buf.decode())
            except ValueError:
                continue
            if msg.get("id") != 0:  # e.g. an echo request; ignore
                buf = b""
                continue
            if msg.get("error"):
                raise OSError(f"get_schema: {msg['error']}")
            return msg["result"]
    finally:
        s.close()


_schema_cache: dict[str, dict] = {}


class _Idl(ovs_idl.Idl):
    """Idl that keeps ``name -> uuid`` maps for Bridge/Port/Interface.

    Maintained from row notifications.  After a reconnect the IDL clears its
    tables without notifications, so lookups validate the hit against the
    replica (stale entries are dropped) -- every existing row is re-announced
    by the initial dump, so the maps are complete again once synced.
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.by_name: dict[str, dict[str, Any]] = {t: {} for t in _NAMED}
        self.bridges_seqno = 0  # bumped whenever a Bridge row changes

    def notify(self, event, row, updates=None):
        t = row._table.name
        idx = self.by_name.get(t)
        if idx is None:
            return
        if t == "Bridge":
            self.bridges_seqno += 1
        if event == ovs_idl.ROW_DELETE:
            name = row.name
            if idx.get(name) == row.uuid:
                del idx[name]
            return
        if event == ovs_idl.ROW_UPDATE and updates is not None:
            old = updates.__dict__.get("_data") or {}
            if "name" not in old:
                return
            oldname = updates.name
            if idx.get(oldname) == row.uuid:
                del idx[oldname]
        idx[row.name] = row.uuid

    def lookup(self, table: str, name: str):
        u = self.by_name[table].get(name)
        if u is None:
            return None
        row = self.tables[table].rows.get(u)
        if row is None or row.name != name:
            self.by_name[table].pop(name, None)
            return None
        return row


# --------------------------------------------------------------------------


class OvsdbClient:
    """A long-lived OVSDB connection to one endpoint (``unix:PATH``, ``tcp:IP:PORT``).

    The constructor connects and waits for the initial replica; if the server
    cannot be reached within ``timeout`` it raises :class:`OvsdbUnavailable`.
    ``timeout`` is also the default for every later call.  After a server
    restart the connection is re-established transparently on the next call.
    """

    _shared: dict[str, OvsdbClient] = {}
    _shared_lock = threading.Lock()

    def __init__(self, endpoint: str, timeout: float = 10.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self._lock = threading.RLock()
        self._closed = False
        self._p2b: dict[Any, str] = {}
        self._p2b_seqno = -1
        deadline = time.monotonic() + timeout
        schema = _schema_cache.get(endpoint)
        if schema is None:
            try:
                schema = _fetch_schema(endpoint, max(0.1, timeout))
            except (OSError, ValueError) as e:
                why = _probe_endpoint(endpoint) if not isinstance(e, TimeoutError) else "no reply"
                raise OvsdbUnavailable(
                    None, f"ovsdb {endpoint}", f"cannot connect within {timeout:g}s: {why}"
                ) from e
            _schema_cache[endpoint] = schema
        helper = ovs_idl.SchemaHelper(schema_json=schema)
        for table, cols in _COLUMNS.items():
            helper.register_columns(table, cols)
        self._idl = _Idl(endpoint, helper, leader_only=False)
        try:
            self._sync(deadline, "connect")
        except BaseException:
            self._idl.close()
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
                self._idl.close()
        with self._shared_lock:
            if self._shared.get(self.endpoint) is self:
                del self._shared[self.endpoint]

    def __enter__(self) -> OvsdbClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- event loop ---------------------------------------------------

    def _synced(self) -> bool:
        idl = self._idl
        return idl.state == idl.IDL_S_MONITORING and idl._session.is_connected()

    def _pump(self, done, deadline: float) -> bool:
        """Run the IDL until ``done()`` or ``deadline``; returns ``done()``."""
        idl = self._idl
        while True:
            idl.run()
            if done():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait(max(1, min(int(left * 1000) + 1, 1000)))
            poller.block()

    def _sync(self, deadline: float, step: str, port: str | None = None) -> None:
        if self._closed:
            raise OvsdbError(port, f"ovsdb {step}", "client is closed")
        if not self._pump(self._synced, deadline):
            raise OvsdbUnavailable(
                port,
                f"ovsdb {step}",
                f"no connection to ovsdb-server at {self.endpoint}: "
                f"{_probe_endpoint(self.endpoint)}",
            )

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _transact(self, build, step: str, port: str | None, deadline: float, bump: bool = True):
        """Build ops from the replica with ``build()`` and commit them.

        ``build()`` returns a list of raw OVSDB operations (empty: nothing to
        do).  Retries (re-building from the fresh replica) after transient
        failures -- reconnects, failed ``wait`` preconditions, an index
        conflict with a concurrent writer -- until ``deadline``.  Returns the
        new ``next_cfg`` (or None when nothing was sent).
        """
        idl = self._idl
        hard_retries = 2
        while True:
            self._sync(deadline, step, port)
            ops = build()
            if not ops:
                return None
            txn = ovs_idl.Transaction(idl)
            root = next(iter(idl.tables["Open_vSwitch"].rows.values()), None)
            if bump and root is not None:
                root.increment("next_cfg")
            for op in ops:
                txn.add_op(op)
            status = txn.commit()
            if status == txn.INCOMPLETE:
                self._pump(lambda: txn.commit() != txn.INCOMPLETE, deadline)
                status = txn.commit()
            if status == txn.SUCCESS:
                return txn.get_increment_new_value() if (bump and root is not None) else None
            if status == txn.UNCHANGED:
                return None
            if status == txn.INCOMPLETE:
                raise OvsdbUnavailable(
                    port, f"ovsdb {step}",
                    f"no reply from ovsdb-server at {self.endpoint} "
                    f"({_probe_endpoint(self.endpoint)})",
                )
            if status == txn.ERROR:
                err = txn.get_error()
                if "constraint violation" in err and hard_retries > 0:
                    hard_retries -= 1  # lost a race with another writer
                    continue
                raise OvsdbError(port, f"ovsdb {step}", _error_text(err))
            # TRY_AGAIN / NOT_LOCKED: re-sync and rebuild
            if time.monotonic() >= deadline:
                raise OvsdbUnavailable(
                    port, f"ovsdb {step}",
                    f"transaction kept failing transiently ({txn.get_error()}) "
                    f"until the timeout; ovsdb-server at {self.endpoint}: "
                    f"{_probe_endpoint(self.endpoint)}",
                )
            self._pump(lambda: False, min(deadline, time.monotonic() + 0.01))

    # ---- replica helpers ------------------------------------------------

    def _port_bridges(self) -> dict[Any, str]:
        """Port uuid -> bridge name (cached until a Bridge row changes)."""
        idl = self._idl
        if self._p2b_seqno != idl.bridges_seqno or not self._p2b:
            p2b = {}
            for br in idl.tables["Bridge"].rows.values():
                name = br.name
                for p in br.ports:
                    if p is not None:
                        p2b[p.uuid] = name
            self._p2b = p2b
            self._p2b_seqno = idl.bridges_seqno
        return self._p2b

    def _iface_of(self, port_row, name: str):
        ifaces = [i for i in port_row.interfaces if i is not None]
        for i in ifaces:
            if i.name == name:
                return i
        return ifaces[0] if ifaces else None

    def _state(self, name: str) -> dict | None:
        idl = self._idl
        port = idl.lookup("Port", name)
        iface = idl.lookup("Interface", name)
        if port is None and iface is None:
            return None
        if iface is None and port is not None:
            iface = self._iface_of(port, name)
        st: dict[str, Any] = {
            "name": name,
            "bridge": self._port_bridges().get(port.uuid) if port is not None else None,
            "tag": _first(port.tag) if port is not None else None,
            "type": None, "external_ids": {}, "options": {},
            "mtu_request": None, "mtu": None, "ofport": None, "error": None,
        }
        if iface is not None:
            st.update(
                type=iface.type,
                external_ids=dict(iface.external_ids),
                options=dict(iface.options),
                mtu_request=_first(iface.mtu_request),
                mtu=_first(iface.mtu),
                ofport=_first(iface.ofport),
                error=_first(iface.error),
            )
        return st

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

    def ports_with_external_id(self, key: str, value: str | None = None,
                               *, timeout: float | None = None) -> dict[str, dict]:
        """``{name: port_state}`` for interfaces whose external_ids has ``key``
        (and, if given, that ``value``) -- e.g. vifwire's owner marker, for
        gc/check."""
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            out = {}
            for iface in list(self._idl.tables["Interface"].rows.values()):
                ext = iface.external_ids
                if key in ext and (value is None or ext[key] == value):
                    name = iface.name
                    out[name] = self._state(name)
            return out

    def port_names(self, bridge: str | None = None, *, timeout: float | None = None) -> list[str]:
        """Names of all ports (of ``bridge`` if given)."""
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            if bridge is None:
                return sorted(self._idl.by_name["Port"])
            br = self._idl.lookup("Bridge", bridge)
            return sorted(p.name for p in br.ports if p is not None) if br else []

    def bridge_exists(self, name: str, *, timeout: float | None = None) -> bool:
        with self._lock:
            self._sync(self._deadline(timeout), "read")
            return self._idl.lookup("Bridge", name) is not None

    def cfg(self) -> tuple[int, int]:
        """(next_cfg, cur_cfg) as last seen."""
        root = next(iter(self._idl.tables["Open_vSwitch"].rows.values()), None)
        if root is None:
            return (0, 0)
        return (root.next_cfg, root.cur_cfg)

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
                idl = self._idl
                if idl.lookup("Bridge", name) is not None:
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
                root = next(iter(idl.tables["Open_vSwitch"].rows.values()), None)
                if root is None:
                    ops.append({"op": "insert", "table": "Open_vSwitch",
                                "row": {"bridges": ["named-uuid", "br"]}})
                else:
                    ops.append({"op": "mutate", "table": "Open_vSwitch",
                                "where": [["_uuid", "==", _uuid(root.uuid)]],
                                "mutations": [["bridges", "insert", ["named-uuid", "br"]]]})
                return ops

            self._transact(build, "add-br", name, self._deadline(timeout))
            return created

    def add_ports(self, specs: Iterable[OvsPortSpec], may_exist: bool = True,
                  *, timeout: float | None = None) -> int | None:
        """Add (or converge) all ``specs`` in ONE transaction.

        Returns the ``next_cfg`` value the transaction produced (None if
        nothing had to change) -- :meth:`wait_applied` waits for it.
        Raises :class:`OvsdbError` naming the port for: duplicate names in the
        batch, a missing bridge, a port existing on another bridge, an existing
        port when ``may_exist`` is False, or a transaction error.
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
        idl = self._idl
        ops: list[dict] = []
        new_by_bridge: dict[str, list] = {}
        bridges: dict[str, Any] = {}
        for k, s in enumerate(specs):
            br = bridges.get(s.bridge)
            if br is None:
                br = bridges[s.bridge] = idl.lookup("Bridge", s.bridge)
                if br is None:
                    raise OvsdbError(s.name, "ovs add-port", f"bridge {s.bridge} does not exist")
            port = idl.lookup("Port", s.name)
            if port is None:
                if idl.lookup("Interface", s.name) is not None:
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
            owner = self._port_bridges().get(port.uuid)
            if not may_exist:
                raise OvsdbError(s.name, "ovs add-port", f"port already exists on bridge {owner}")
            if owner != s.bridge:
                raise OvsdbError(s.name, "ovs add-port",
                                 f"port exists on bridge {owner}, not {s.bridge}")
            ops.extend(self._converge_ops(port, s))
        for brname, refs in new_by_bridge.items():
            br = bridges[brname]
            where = [["_uuid", "==", _uuid(br.uuid)]]
            # Fail (and retry from a fresh replica) if the bridge vanished.
            ops.append({"op": "wait", "table": "Bridge", "where": where, "timeout": 0,
                        "columns": ["name"], "until": "==", "rows": [{"name": brname}]})
            ops.append({"op": "mutate", "table": "Bridge", "where": where,
                        "mutations": [["ports", "insert", ["set", refs]]]})
        return ops

    def _converge_ops(self, port, s: OvsPortSpec) -> list[dict]:
        ops: list[dict] = []
        if _first(port.tag) != s.tag:
            ops.append({"op": "update", "table": "Port",
                        "where": [["_uuid", "==", _uuid(port.uuid)]],
                        "row": {"tag": _opt(s.tag)}})
        iface = self._iface_of(port, s.name)
        if iface is None:
            raise OvsdbError(s.name, "ovs add-port", "existing port has no interface")
        where = [["_uuid", "==", _uuid(iface.uuid)]]
        row: dict[str, Any] = {}
        if iface.type != s.iface_type:
            row["type"] = s.iface_type
        if _first(iface.mtu_request) != s.mtu_request:
            row["mtu_request"] = _opt(s.mtu_request)
        if row:
            ops.append({"op": "update", "table": "Interface", "where": where, "row": row})
        muts = []
        for col, want in (("external_ids", s.external_ids), ("options", s.options)):
            have = getattr(iface, col)
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
        ``next_cfg`` (None if nothing was removed).
        """
        names = list(dict.fromkeys(names))
        if not names:
            return None

        def build():
            idl = self._idl
            p2b = self._port_bridges()
            by_bridge: dict[str, list] = {}
            for n in names:
                port = idl.lookup("Port", n)
                br = p2b.get(port.uuid) if port is not None else None
                if port is None or br is None:
                    if not if_exists:
                        raise OvsdbError(n, "ovs del-port", "no such port")
                    continue
                by_bridge.setdefault(br, []).append(_uuid(port.uuid))
            ops = []
            for brname, refs in by_bridge.items():
                br = idl.lookup("Bridge", brname)
                ops.append({"op": "mutate", "table": "Bridge",
                            "where": [["_uuid", "==", _uuid(br.uuid)]],
                            "mutations": [["ports", "delete", ["set", refs]]]})
            return ops

        with self._lock:
            return self._transact(build, "del-port", names[0] if len(names) == 1 else None,
                                  self._deadline(timeout))

    # ---- public: waiting for ovs-vswitchd --------------------------------

    def wait_cfg(self, timeout: float | None = None, cfg: int | None = None) -> int:
        """Wait until ovs-vswitchd has applied every change committed so far
        (``cur_cfg >= next_cfg``, or ``>= cfg`` if given).  Returns cur_cfg."""
        with self._lock:
            deadline = self._deadline(timeout)
            self._sync(deadline, "wait")
            target = self.cfg()[0] if cfg is None else cfg
            t = self.timeout if timeout is None else timeout
            if not self._pump(lambda: self.cfg()[1] >= target, deadline):
                nxt, cur = self.cfg()
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
            idl = self._idl
            pending = list(names)
            failed_settled = False

            def done() -> bool:
                nonlocal pending, failed_settled
                if self.cfg()[1] < target:
                    return False
                still = []
                for n in pending:
                    it = idl.lookup("Interface", n)
                    of = _first(it.ofport) if it is not None else None
                    if not of or of <= 0:
                        still.append(n)
                pending = still
                failed_settled = bool(still)
                return not still or fail_fast

            ok = self._pump(done, deadline)
            states = {n: self._state(n) for n in names}
            if ok and not pending:
                return states
            nxt, cur = self.cfg()
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
