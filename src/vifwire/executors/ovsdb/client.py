"""The OVSDB client API the OVS executor calls (docs/ovs.md).

:class:`OvsdbClient` is the one object ``executors/ovs.py`` holds per
endpoint.  It owns the lock, the default timeout and the meaning of each
call; the wire work is the :class:`~.session.Session`'s, the rows are the
:class:`~.replica.Replica`'s and batch operations come from :mod:`.ports`.

* Reads (:meth:`~OvsdbClient.port_state`,
  :meth:`~OvsdbClient.ports_with_external_id`, existence checks) are local
  lookups in the replica after a cheap sync -- no round trip.
* :meth:`~OvsdbClient.add_ports`/:meth:`~OvsdbClient.del_ports` send a
  whole batch as one ``transact`` with ``next_cfg += 1``.
* **Exact "applied" signal.**  ovs-vswitchd copies ``next_cfg`` to
  ``cur_cfg`` in the same transaction that writes the ``ofport``/``error`` of
  the interfaces it (re)configured.  :meth:`~OvsdbClient.wait_applied` waits
  for ``cur_cfg >= next_cfg`` and then inspects each port -- no sleeping; it
  wakes on the monitor update.

Errors are :class:`~vifwire.errors.HostError` subclasses carrying the port,
the step and a one-line problem; every call takes (or inherits) a timeout and
raises within it.  Thread safety: calls on one client are serialised by a
lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from vifwire.executors.ovsdb.errors import OvsApplyError, OvsdbError
from vifwire.executors.ovsdb.ports import OvsPortSpec, build_add, build_del, uuid_ref
from vifwire.executors.ovsdb.replica import uuids
from vifwire.executors.ovsdb.session import Session


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
        self._session = Session(endpoint, probe_interval)
        self._replica = self._session.replica
        try:
            self._session.sync(self._deadline(timeout), "connect")
        except BaseException:
            self._session.close()
            raise

    @classmethod
    def shared(cls, endpoint: str, timeout: float = 10.0) -> OvsdbClient:
        """The process-wide client for ``endpoint`` (created on first use)."""
        with cls._shared_lock:
            c = cls._shared.get(endpoint)
            if c is None or c.closed:
                c = cls._shared[endpoint] = cls(endpoint, timeout)
            return c

    def close(self) -> None:
        with self._lock:
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
        return self._session.closed

    def _deadline(self, timeout: float | None) -> float:
        return self._session.deadline(self.timeout if timeout is None else timeout)

    # ---- public: reads ---------------------------------------------------

    def port_state(self, name: str, *, timeout: float | None = None) -> dict | None:
        """The port as OVSDB has it, or None if there is no such port.

        Keys: ``name``, ``bridge``, ``type``, ``external_ids``, ``options``,
        ``tag``, ``mtu_request``, ``mtu``, ``ofport`` (None until ovs-vswitchd
        assigns one, -1 on failure), ``error`` (Interface.error or None).
        """
        with self._lock:
            self._session.sync(self._deadline(timeout), "read", name)
            return self._replica.state(name)

    def port_states(self, names: Iterable[str], *, timeout: float | None = None) -> dict[str, dict | None]:
        """``{name: port_state(name)}`` for many ports from one replica sync."""
        with self._lock:
            names = list(names)
            self._session.sync(self._deadline(timeout), "read", names[0] if len(names) == 1 else None)
            return {n: self._replica.state(n) for n in names}

    def row(self, table: str, name: str) -> tuple[str, dict] | tuple[None, None]:
        """``(uuid, raw row)`` of the Bridge/Port/Interface called ``name`` in
        the replica (``(None, None)`` if absent).  The row is the JSON the
        server sent (monitored columns only); do not modify it.  Meant for
        ``build`` callbacks of :meth:`transact`."""
        return self._replica.row(table, name)

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
            return self._session.transact(build, step, port, self._deadline(timeout), bump=bump)

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
            bu, br = self._replica.row("Bridge", name)
            if bu is None:
                return []
            own = self._replica.names["Port"].get(name)
            ports = br["ports"]
            if only_if_unused and any(u != own for u in uuids(ports)):
                return []
            removed = True
            where = [["_uuid", "==", uuid_ref(bu)]]
            return [
                {"op": "wait", "table": "Bridge", "where": where, "timeout": 0,
                 "columns": ["ports"], "until": "==", "rows": [{"ports": ports}]},
                {"op": "mutate", "table": "Open_vSwitch", "where": [],
                 "mutations": [["bridges", "delete", ["set", [uuid_ref(bu)]]]]},
            ]

        with self._lock:
            self._session.transact(build, "del-br", None, self._deadline(timeout))
        return removed

    def ports_with_external_id(self, key: str, value: str | None = None,
                               *, timeout: float | None = None) -> dict[str, dict]:
        """``{name: port_state}`` for interfaces whose external_ids has ``key``
        (and, if given, that ``value``) -- e.g. vifwire's owner marker, for
        gc/check."""
        with self._lock:
            self._session.sync(self._deadline(timeout), "read")
            out = {}
            for iface in self._replica.tables["Interface"].values():
                ext = iface["external_ids"]
                if not (isinstance(ext, list) and ext[1]):
                    continue
                for k, v in ext[1]:
                    if k == key and (value is None or v == value):
                        out[iface["name"]] = self._replica.state(iface["name"])
                        break
            return out

    def port_names(self, bridge: str | None = None, *, timeout: float | None = None) -> list[str]:
        """Names of all ports (of ``bridge`` if given)."""
        with self._lock:
            self._session.sync(self._deadline(timeout), "read")
            if bridge is None:
                return sorted(self._replica.names["Port"])
            _, br = self._replica.row("Bridge", bridge)
            if br is None:
                return []
            ports = self._replica.tables["Port"]
            return sorted(ports[u]["name"] for u in uuids(br["ports"]) if u in ports)

    def bridge_exists(self, name: str, *, timeout: float | None = None) -> bool:
        with self._lock:
            self._session.sync(self._deadline(timeout), "read")
            return name in self._replica.names["Bridge"]

    def bridge_names(self, *, timeout: float | None = None) -> set[str]:
        """Names of every bridge, from one replica sync (``check`` of a run)."""
        with self._lock:
            self._session.sync(self._deadline(timeout), "read")
            return set(self._replica.names["Bridge"])

    def cfg(self) -> tuple[int, int]:
        """(next_cfg, cur_cfg) as last seen."""
        return self._replica.cfg()

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
                if name in self._replica.names["Bridge"]:
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
                if not self._replica.tables["Open_vSwitch"]:
                    ops.append({"op": "insert", "table": "Open_vSwitch",
                                "row": {"bridges": ["named-uuid", "br"]}})
                else:
                    ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                                "mutations": [["bridges", "insert", ["set", [["named-uuid", "br"]]]]]})
                return ops

            self._session.transact(build, "add-br", name, self._deadline(timeout))
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
            return self._session.transact(
                lambda: build_add(self._replica, specs, may_exist), "add-port",
                specs[0].name if len(specs) == 1 else None, self._deadline(timeout),
            )

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

        with self._lock:
            return self._session.transact(lambda: build_del(self._replica, names, if_exists), "del-port", names[0] if len(names) == 1 else None,
                                  self._deadline(timeout))

    # ---- public: waiting for ovs-vswitchd --------------------------------

    def wait_cfg(self, timeout: float | None = None, cfg: int | None = None) -> int:
        """Wait until ovs-vswitchd has applied every change committed so far
        (``cur_cfg >= next_cfg``, or ``>= cfg`` if given).  Returns cur_cfg."""
        with self._lock:
            t = self.timeout if timeout is None else timeout
            deadline = self._deadline(timeout)
            self._session.sync(deadline, "wait")
            target = self.cfg()[0] if cfg is None else cfg
            if not self._session.pump(lambda: self.cfg()[1] >= target, deadline):
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
            self._session.sync(deadline, "wait", names[0] if len(names) == 1 else None)
            target = self.cfg()[0]
            pending = list(names)
            failed_settled = False

            def done() -> bool:
                nonlocal pending, failed_settled
                if self.cfg()[1] < target:
                    return False
                still = []
                for n in pending:
                    of = self._replica.ofport(n)
                    if not of or of <= 0:
                        still.append(n)
                pending = still
                failed_settled = bool(still)
                return not still or fail_fast

            ok = self._session.pump(done, deadline)
            states = {n: self._replica.state(n) for n in names}
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

