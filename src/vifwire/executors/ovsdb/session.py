"""The JSON-RPC session: connection, monitor, and the transact loop.

One ``ovs.jsonrpc.Session`` (the ``ovs`` library's JSON-RPC transport, with
its reconnect/back-off logic) plus one OVSDB ``monitor`` (RFC 7047 §4.1.5)
that keeps a :class:`~.replica.Replica` current.  Everything that talks to
the socket is here, so the client API (:mod:`.client`) only builds requests
from the replica and interprets results.  A lost connection is re-established
transparently (the replica is re-fetched) on the next call.

Not thread safe by itself: the owning :class:`~.client.OvsdbClient`
serialises calls with its lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import ovs.jsonrpc
import ovs.poller
from ovs.jsonrpc import Message

from vifwire.executors.ovsdb.errors import OvsdbError, OvsdbUnavailable, error_text, probe_endpoint
from vifwire.executors.ovsdb.fastjson import FAST_JSON, FastJsonParser
from vifwire.executors.ovsdb.replica import COLUMNS, Replica

DB_NAME = "Open_vSwitch"
#: The ``<json-value>`` naming vifwire's monitor in ``update`` notifications.
MONITOR_ID = "vifwire"


class Session:
    """A long-lived connection to one endpoint and the replica it feeds."""

    def __init__(self, endpoint: str, probe_interval: int | None = None):
        self.endpoint = endpoint
        self.replica = Replica()
        self.closed = False
        self._t0 = 0.0
        self._conn_seqno: int | None = None
        self._monitor_req: Any = None
        self._synced_flag = False
        self._replies: dict[Any, Message | None] = {}
        self._session = ovs.jsonrpc.Session.open(endpoint, probe_interval=probe_interval)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._session.close()

    def deadline(self, seconds: float) -> float:
        """The monotonic deadline ``seconds`` from now; remembered so a
        timeout error can say how long it waited."""
        self._t0 = time.monotonic()
        return self._t0 + seconds

    # ---- I/O ---------------------------------------------------------------

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
                [DB_NAME, MONITOR_ID, {t: {"columns": c} for t, c in COLUMNS.items()}],
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
            # RFC 7047 §4.1.6: params are [<json-value> of the monitor, <table-updates>]
            if msg.method == "update" and len(msg.params) == 2 and msg.params[0] == MONITOR_ID:
                self.replica.apply(msg.params[1])
            return
        if msg.type not in (Message.T_REPLY, Message.T_ERROR):
            return
        if msg.id == self._monitor_req:
            self._monitor_req = None
            if msg.type == Message.T_ERROR:
                # Cannot monitor (schema mismatch?): drop and retry later.
                self._session.force_reconnect()
                return
            self.replica.reset()
            self.replica.apply(msg.result)
            self._synced_flag = True
        elif msg.id in self._replies:
            self._replies[msg.id] = msg

    def _synced(self) -> bool:
        return self._synced_flag and self._session.is_connected()

    def pump(self, done: Callable[[], bool], deadline: float) -> bool:
        """Run the session until ``done()`` or ``deadline``; returns ``done()``.

        Blocks in the ``ovs`` poller between rounds, so a waiter wakes on the
        next monitor update instead of sleeping.
        """
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

    def sync(self, deadline: float, step: str, port: str | None = None) -> None:
        """Make the replica current (connecting if needed) or raise
        :class:`OvsdbUnavailable` at ``deadline``."""
        if self.closed:
            raise OvsdbError(port, f"ovsdb {step}", "client is closed")
        if self._synced():
            self._run()  # cheap: take in pending updates
            if self._synced():
                return
        if not self.pump(self._synced, deadline):
            raise OvsdbUnavailable(
                port, f"ovsdb {step}",
                f"no connection to ovsdb-server at {self.endpoint} within "
                f"{max(0.0, deadline - self._t0):.3g}s: {probe_endpoint(self.endpoint)}",
            )

    # ---- transactions ------------------------------------------------------

    def transact(self, build: Callable[[], list[dict]], step: str, port: str | None,
                 deadline: float, bump: bool = True) -> int | None:
        """Build ops from the replica with ``build()`` and commit them.

        ``build()`` returns raw OVSDB operations (RFC 7047 §5.2; empty:
        nothing to do).  Retries -- re-building from the fresh replica --
        after a lost connection, a failed ``wait`` precondition or an index
        conflict with a concurrent writer, until ``deadline``.  Returns the
        ``next_cfg`` this transaction produced (None when nothing was sent).
        """
        conflicts = 2
        while True:
            self.sync(deadline, step, port)
            ops = build()
            if not ops:
                return None
            cfg_at = None
            if bump and self.replica.tables["Open_vSwitch"]:
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
                got = self.pump(lambda: self._replies[req.id] is not None
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
                        f"({probe_endpoint(self.endpoint)})")
                continue  # connection lost mid-transaction: re-sync, rebuild
            if reply.type == Message.T_ERROR:
                raise OvsdbError(port, f"ovsdb {step}", error_text(json.dumps(reply.error)))
            # RFC 7047 §4.1.3: one result per operation; an error object in
            # place of the failed one, and one more after them when the
            # commit itself failed.
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
            raise OvsdbError(port, f"ovsdb {step}", error_text(json.dumps(err)))
