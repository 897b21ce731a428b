"""A small etcd v3 client for fleet mode, on etcd3gw's HTTP transport.

etcd3gw (the OpenStack client for etcd's gRPC gateway) provides the session,
TLS setup and the ``/v3`` URL; the requests themselves are built here,
because its convenience methods lose what fleet mode depends on:

* revisions: ``get``/``delete``/``put`` drop the response header, so a
  "list, then watch from the next revision" resync could not be written;
* compaction: its watcher only forwards events; the ``compact_revision``
  response that etcd sends for a compacted start revision is dropped and the
  iterator then blocks forever. A dropped connection dies silently in its
  worker thread too, and its watch request has no timeout;
* batches: it hands out events one by one, so a transaction's events can no
  longer be told apart from the next one's;
* keys: it encodes ``str`` keys as latin-1 (a non-latin-1 name fails to
  encode); here keys are UTF-8.

Every failure becomes an :class:`EtcdError` with a one-line message naming
the endpoint. No request is ever resent by this module: after a network
failure the next call picks an endpoint again, and the caller decides
whether to retry (a resent ``create_if_absent`` would report its own key as
somebody else's).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import etcd3gw
from etcd3gw import exceptions as gw_exceptions

from vifwire.errors import VifwireError

log = logging.getLogger("vifwire.fleetkit")

#: etcd's default ``--max-txn-ops``. Larger writes are split into several
#: transactions rather than asking every deployment to raise the limit.
MAX_TXN_OPS = 128
#: Raw key+value bytes per transaction, well below etcd's default
#: ``--max-request-bytes`` (1.5 MiB) once the request's framing is added.
MAX_TXN_BYTES = 1 << 20
#: Keys per range request: bounds one response's size on a large fleet.
PAGE_SIZE = 2000
#: TCP keepalive on watch connections: an idle watch otherwise never notices
#: a peer that vanished from the network (idle seconds, interval, probes).
KEEPALIVE = (10, 5, 3)
#: gRPC status codes etcd reports in error bodies.
GRPC_NOT_FOUND = 5


class EtcdError(VifwireError):
    """etcd could not be reached or refused a request (exit code 1).

    ``code`` is etcd's gRPC status code when it answered, else None.
    """

    exit_code = 1

    def __init__(self, message: str, *, code: int | None = None, network: bool = False):
        super().__init__(message)
        self.code, self.network = code, network


class EtcdConfigError(EtcdError):
    """The endpoint list or TLS files are unusable: fix the call (exit code 2)."""

    exit_code = 2


class Compacted(EtcdError):
    """A watch's start revision is older than etcd's history: the caller must
    list again (``get_prefix``) and watch from the listed revision + 1."""

    def __init__(self, url: str, start_revision: int, compact_revision: int):
        super().__init__(f"etcd {url}: watch from revision {start_revision} is compacted "
                         f"(history starts at {compact_revision}): list again")
        self.start_revision, self.compact_revision = start_revision, compact_revision


class LeaseExpired(EtcdError):
    """The lease is gone (expired or revoked): its keys are deleted, so the
    holder must grant a new lease and write them again."""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Event:
    kind: Literal["put", "delete"]
    key: str
    value: bytes | None
    mod_revision: int


# surrogateescape: a key that is not UTF-8 still round-trips (to delete it)
def _b(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_unb64 = base64.b64decode


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``"."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd: no upper bound
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _revision(resp: dict[str, Any]) -> int:
    return int(resp.get("header", {}).get("revision", 0))


def _as_bytes(value: bytes | bytearray | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"etcd values are bytes, not {type(value).__name__}")


#: What requests/urllib3/ssl errors mean, matched on etcd3gw's folded message;
#: the first match wins ("{}" takes the pattern's group).
_REASONS = [
    (re.compile(r"timed out", re.I), "timed out{after}"),
    (re.compile(r"SSLEOFError|EOF occurred in violation"),
     "TLS: handshake cut short by the server (client certificate missing or rejected?)"),
    (re.compile(r"\[SSL(?:: \w+)?\] ([^'\")\]]+?)(?: \(_ssl\.c:\d+\))?['\")]"), "TLS: {}"),
    (re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)"), "{}"),
    (re.compile(r"Connection (?:reset|aborted|broken)|RemoteDisconnected"), "connection closed by the server"),
]


def _reason(exc: BaseException, timeout: float | None) -> tuple[str, int | None, bool]:
    """(one-line reason, gRPC code, was it a network failure) for a failure.

    etcd3gw folds the whole requests/urllib3 chain into one message; the
    useful part is etcd's own JSON error or the innermost OS/TLS error.
    """
    detail = getattr(exc, "detail_text", None) or ""
    try:
        body = json.loads(detail) if detail.startswith("{") else None
    except ValueError:
        body = None
    gone = isinstance(exc, (OSError, gw_exceptions.ConnectionFailedError, gw_exceptions.ConnectionTimeoutError))
    if isinstance(body, dict) and (body.get("message") or body.get("error")):
        code = body.get("code")
        msg = str(body.get("message") or body.get("error")).removeprefix("etcdserver: ")
        return msg, code if isinstance(code, int) else None, gone
    text = " ".join(str(x) for x in (detail, exc) if x)
    if isinstance(exc, gw_exceptions.ConnectionTimeoutError):
        text = "timed out"
    for pattern, reason in _REASONS:
        if m := pattern.search(text):
            found = m.group(1).strip() if m.groups() else ""
            after = f" after {timeout:g} s" if timeout else ""
            return reason.format(found.lower() if reason == "{}" else found, after=after), None, True
    if isinstance(exc, gw_exceptions.Etcd3Exception) and exc.args:
        return f"HTTP {exc.args[0]}: {detail.strip()[:200]}", None, gone
    return ((text.strip().splitlines() or [type(exc).__name__])[0])[:200], None, gone


@dataclass(frozen=True)
class _Endpoint:
    url: str
    protocol: str
    host: str
    port: int


def _parse_urls(urls: list[str] | tuple[str, ...] | str) -> list[_Endpoint]:
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = []
    for raw in (u.strip() for u in items):
        if not raw:
            continue
        try:
            parts = urllib.parse.urlsplit(raw)
            port = parts.port or 2379
        except ValueError:
            raise EtcdConfigError(f"etcd endpoint {raw!r}: not a URL") from None
        if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
                or parts.query or parts.fragment or parts.username):
            raise EtcdConfigError(f"etcd endpoint {raw!r}: must look like http://HOST:PORT or https://HOST:PORT")
        out.append(_Endpoint(raw.rstrip("/"), parts.scheme, parts.hostname, port))
    if not out:
        raise EtcdConfigError("no etcd endpoint given")
    return out


class Lease:
    """An etcd lease: keys attached to it vanish when it is revoked or when
    nobody refreshes it within its TTL (how an agent's registration ends when
    the agent dies)."""

    def __init__(self, etcd: Etcd, lease_id: int, ttl: int):
        self.etcd, self.id, self.ttl = etcd, lease_id, ttl

    def refresh(self) -> int:
        """Keep the lease alive once; returns the TTL granted again.

        Raises LeaseExpired if it is already gone: keep-alives cannot revive it.
        """
        resp = self.etcd.request("lease/keepalive", {"ID": str(self.id)})
        ttl = int(resp.get("result", resp).get("TTL", 0))
        if ttl <= 0:
            raise LeaseExpired(f"etcd {self.etcd.url}: lease {self.id:x} has expired")
        return ttl

    def revoke(self) -> None:
        """Revoke the lease and delete its keys; a lease already gone is fine."""
        try:
            self.etcd.request("kv/lease/revoke", {"ID": str(self.id)})
        except EtcdError as e:
            if e.code != GRPC_NOT_FOUND:
                raise


class Watch:
    """Events under a prefix from a start revision, one list per etcd response.

    A response holds whole revisions (a transaction's events are never split
    across two lists). Iteration blocks; it ends after :meth:`cancel` (which
    may be called from another thread), and raises :class:`Compacted` if the
    start revision is no longer in etcd's history or :class:`EtcdError` when
    the connection fails. Either way the caller starts a new watch from
    :attr:`last_revision` + 1 (after listing again, for Compacted).

    A server that is alive but hung (SIGSTOP) is not noticed by an idle
    watch: a holder that must know uses ``Etcd.status()`` on a timer.
    """

    def __init__(self, url: str, session: Any, resp: Any, prefix: str, start_revision: int):
        self.url, self.session, self.resp, self.prefix = url, session, resp, prefix
        self.start_revision = start_revision
        #: Highest mod_revision delivered so far (start_revision - 1 before any).
        self.last_revision = start_revision - 1
        self.cancelled = threading.Event()
        self.chunks, self.pending = resp.iter_content(chunk_size=None), b""

    def read_line(self) -> dict[str, Any] | None:
        """The next response of the stream (the gateway ends each JSON
        document with a newline); None once cancelled."""
        while True:
            while b"\n" not in self.pending:
                try:
                    chunk = next(self.chunks)
                except Exception as e:  # the end of the stream, or requests/urllib3/ssl failing
                    if self.cancelled.is_set():
                        return None
                    reason = "connection closed by the server" if isinstance(e, StopIteration) else _reason(e, None)[0]
                    raise EtcdError(f"etcd {self.url}: watch failed: {reason}", network=True) from e
                self.pending += chunk
            line, _, self.pending = self.pending.partition(b"\n")
            if line.strip():
                return self.parse(line)

    def parse(self, line: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(err := doc.get("error"), (dict, str)):
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise EtcdError(f"etcd {self.url}: watch failed: {msg}")
        result = doc.get("result") if isinstance(doc, dict) else None
        if not isinstance(result, dict):
            raise EtcdError(f"etcd {self.url}: watch: unexpected response {line[:120]!r}")
        return result

    def check(self, result: dict[str, Any]) -> None:
        """Raise for a response that ends the watch."""
        if compact := int(result.get("compact_revision", 0)):
            raise Compacted(self.url, self.start_revision, compact)
        if result.get("canceled"):
            why = result.get("cancel_reason") or "no reason given"
            raise EtcdError(f"etcd {self.url}: watch cancelled by etcd: {why}")

    def __iter__(self) -> Iterator[list[Event]]:
        try:
            while (result := self.read_line()) is not None:
                self.check(result)
                batch = [self.event(e) for e in result.get("events", ())]
                if batch and not self.cancelled.is_set():
                    self.last_revision = max(self.last_revision, batch[-1].mod_revision)
                    yield batch
        finally:
            self.close()

    def event(self, raw: dict[str, Any]) -> Event:
        kv, delete = raw.get("kv", {}), raw.get("type") == "DELETE"  # PUT is proto3's default: omitted
        return Event("delete" if delete else "put", _s(_unb64(kv.get("key", ""))),
                     None if delete else _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)))

    def cancel(self) -> None:
        """Stop the watch; a thread blocked iterating it returns."""
        self.cancelled.set()
        try:
            if (sock := _socket_of(self.resp)) is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.resp.close()
            self.session.close()
        except Exception:  # closing a half-shut TLS connection may complain
            pass

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _socket_of(resp: Any) -> socket.socket | None:
    conn = getattr(getattr(resp, "raw", None), "connection", None)
    return getattr(conn, "sock", None)


class Etcd:
    """A connection to one etcd cluster, given as one or more client URLs.

    The first endpoint that answers is used until a network failure; the
    next call then tries them in order again. Nothing touches the network
    before the first call, so an agent can be built while etcd is down.
    """

    def __init__(self, urls: list[str] | tuple[str, ...] | str, *, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None, timeout: float = 5.0):
        self.endpoints = _parse_urls(urls)
        if (cert is None) != (key is None):
            raise EtcdConfigError("etcd TLS: a client certificate needs its key (give both or neither)")
        for what, path in (("CA certificate", cacert), ("client certificate", cert), ("client key", key)):
            if path is not None and not os.access(path, os.R_OK):
                raise EtcdConfigError(f"etcd TLS {what} {path}: cannot be read")
        if (cacert or cert) and not any(e.protocol == "https" for e in self.endpoints):
            raise EtcdConfigError("etcd TLS files given but no endpoint is https://")
        if not timeout > 0:
            raise EtcdConfigError(f"etcd timeout must be positive, not {timeout}")
        self.cacert, self.cert, self.key, self.timeout = cacert, cert, key, float(timeout)
        self.clients: dict[str, Any] = {}
        self.current: _Endpoint | None = self.endpoints[0] if len(self.endpoints) == 1 else None

    def new_client(self, ep: _Endpoint) -> Any:
        """An etcd3gw client (its own HTTP session) for one endpoint."""
        tls = ep.protocol == "https"
        c = etcd3gw.client(host=ep.host, port=ep.port, protocol=ep.protocol, timeout=self.timeout,
                           ca_cert=self.cacert if tls else None, cert_cert=self.cert if tls else None,
                           cert_key=self.key if tls else None, api_path="/v3/")
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override the session's
        # CA (requests#3829) and would send etcd traffic to an HTTP(S)_PROXY
        c.session.trust_env = False
        return c

    @property
    def url(self) -> str:
        """The endpoint in use (the first one before any call)."""
        return (self.current or self.endpoints[0]).url

    def post_to(self, ep: _Endpoint, path: str, body: dict[str, Any]) -> dict[str, Any]:
        c = self.clients.get(ep.url) or self.clients.setdefault(ep.url, self.new_client(ep))
        try:
            resp = c.post(c.get_url(path), json=body)
        except (gw_exceptions.Etcd3Exception, OSError, ValueError) as e:
            reason, code, network = _reason(e, self.timeout)
            raise EtcdError(f"etcd {ep.url}: {reason}", code=code, network=network) from e
        if not isinstance(resp, dict):
            raise EtcdError(f"etcd {ep.url}: unexpected response to {path}")
        return resp

    def pick(self) -> _Endpoint:
        """The endpoint to use: the current one, else the first that answers."""
        if self.current is not None:
            return self.current
        failures = []
        for ep in self.endpoints:
            try:
                self.post_to(ep, "maintenance/status", {})
            except EtcdError as e:
                failures.append(str(e).removeprefix("etcd "))
                continue
            log.info("etcd: using %s", ep.url)
            self.current = ep
            return ep
        raise EtcdError("etcd unreachable: " + "; ".join(failures), network=True)

    def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one gateway request (``path`` below ``/v3/``); errors are EtcdError."""
        ep = self.pick()
        try:
            return self.post_to(ep, path, body)
        except EtcdError as e:
            if e.network and len(self.endpoints) > 1:
                self.current = None  # pick again next time; never resend this request
            raise

    def close(self) -> None:
        for c in self.clients.values():
            c.session.close()
        self.clients.clear()

    def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (sorted by key) and the revision of the read.

        Read in pages, all at the first page's revision, so the result is
        one consistent snapshot however large: watching from revision + 1
        then misses nothing and repeats nothing.
        """
        start, end = _b(prefix), prefix_end(_b(prefix))
        items: list[KV] = []
        revision = 0
        while True:
            body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end), "limit": PAGE_SIZE}
            if revision:
                body["revision"] = revision
            resp = self.request("kv/range", body)
            revision = revision or _revision(resp)
            kvs = resp.get("kvs", [])
            for kv in kvs:
                items.append(KV(_s(_unb64(kv["key"])), _unb64(kv.get("value", "")),
                                int(kv.get("mod_revision", 0)), int(kv.get("create_revision", 0))))
            if not resp.get("more") or not kvs:
                return items, revision
            start = _unb64(kvs[-1]["key"]) + b"\0"

    def txn_chunks(self, ops: list[tuple[dict[str, Any], int]]) -> int:
        """Run ``ops`` (request, raw size) in as few transactions as etcd's
        limits allow; returns the revision after the last one."""
        revision, size, batch = 0, 0, []
        for op, n in ops + [({}, 0)]:
            if batch and (not op or len(batch) >= MAX_TXN_OPS or size + n > MAX_TXN_BYTES):
                revision = _revision(self.request("kv/txn", {"success": batch}))
                log.debug("etcd: txn of %d operations -> revision %d", len(batch), revision)
                batch, size = [], 0
            if op:
                batch.append(op)
                size += n
        return revision or self.revision()

    def put_many(self, items: dict[str, bytes], deletes: Iterable[str] = ()) -> int:
        """Write ``items`` and delete ``deletes``; returns the revision after.

        Up to 128 operations (etcd's default ``--max-txn-ops``) are one
        atomic transaction; more are split into consecutive transactions,
        each atomic, so a failure part-way leaves a prefix of them applied
        and watchers see one revision per chunk. Callers needing one atomic
        change keep to 128 operations.
        """
        dels = list(dict.fromkeys(deletes))
        both = set(items) & set(dels)
        if both:
            raise ValueError(f"key {sorted(both)[0]!r} is both written and deleted in one put_many")
        ops = []
        for k, v in items.items():
            kb, vb = _b(k), _as_bytes(v)
            ops.append(({"request_put": {"key": _b64(kb), "value": _b64(vb)}}, len(kb) + len(vb) + 16))
        for k in dels:
            kb = _b(k)
            ops.append(({"request_delete_range": {"key": _b64(kb)}}, len(kb) + 16))
        return self.txn_chunks(ops)

    def delete(self, keys: Iterable[str]) -> int:
        """Delete ``keys`` (missing ones are fine); returns the revision after."""
        return self.put_many({}, keys)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` in one request; returns the revision after."""
        if not prefix:
            raise ValueError("refusing to delete the empty prefix (every key in etcd)")
        kb = _b(prefix)
        return _revision(self.request("kv/deleterange", {"key": _b64(kb), "range_end": _b64(prefix_end(kb))}))

    def create_if_absent(self, key: str, value: bytes, lease: Lease | None = None) -> bool:
        """Create ``key`` only if no such key exists; False if it does.

        The compare-and-put is one transaction, so two agents claiming the
        same name cannot both win.
        """
        kb = _b64(_b(key))
        put: dict[str, Any] = {"key": kb, "value": _b64(_as_bytes(value))}
        if lease is not None:
            put["lease"] = str(lease.id)
        resp = self.request("kv/txn", {
            "compare": [{"key": kb, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": put}],
        })
        return bool(resp.get("succeeded", False))

    def revision(self) -> int:
        """The store's current revision (a count-only read of one key)."""
        return _revision(self.request("kv/range", {"key": _b64(b"\0"), "count_only": True}))

    def compact(self, revision: int) -> None:
        """Discard history before ``revision``; returns once it is applied."""
        self.request("kv/compaction", {"revision": str(int(revision)), "physical": True})

    def grant_lease(self, ttl: int) -> Lease:
        resp = self.request("lease/grant", {"TTL": int(ttl), "ID": "0"})
        if resp.get("error"):  # LeaseGrantResponse has an error field of its own
            raise EtcdError(f"etcd {self.url}: lease grant failed: {resp['error']}")
        return Lease(self, int(resp["ID"]), int(resp.get("TTL", ttl)))

    def watch_prefix(self, prefix: str, start_revision: int) -> Watch:
        """Watch every key under ``prefix`` from ``start_revision`` on.

        Returns once etcd has confirmed the watch (so failures to connect
        surface here, within the timeout). The stream has its own HTTP
        session and no read timeout: an idle watch may wait indefinitely.
        """
        if start_revision < 1:
            raise ValueError(f"watch start revision must be >= 1, not {start_revision}")
        ep = self.pick()
        c = self.new_client(ep)
        kb = _b(prefix)
        body = {"create_request": {"key": _b64(kb), "range_end": _b64(prefix_end(kb)),
                                   "start_revision": str(int(start_revision))}}
        try:
            resp = c.session.post(c.get_url("watch"), json=body, stream=True, timeout=self.timeout)
        except (OSError, ValueError) as e:
            c.session.close()
            if len(self.endpoints) > 1:
                self.current = None
            reason, code, _ = _reason(e, self.timeout)
            raise EtcdError(f"etcd {ep.url}: watch failed: {reason}", code=code, network=True) from e
        if resp.status_code != 200:
            text = resp.text.strip()
            resp.close()
            c.session.close()
            reason, code, _ = _reason(gw_exceptions.Etcd3Exception(text, resp.reason), self.timeout)
            raise EtcdError(f"etcd {ep.url}: watch failed: {reason}", code=code)
        watch = Watch(ep.url, c.session, resp, prefix, int(start_revision))
        try:
            first = watch.read_line()  # still under the request's read timeout
            if first is not None:
                watch.check(first)
            if first is None or not first.get("created"):
                raise EtcdError(f"etcd {ep.url}: watch was not created")
        except BaseException as e:
            watch.close()
            if getattr(e, "network", False) and len(self.endpoints) > 1:
                self.current = None
            raise
        if (sock := _socket_of(resp)) is not None:
            sock.settimeout(None)
            _keepalive(sock)
        log.debug("etcd: watching %s from revision %d", prefix, start_revision)
        return watch

    def status(self) -> dict[str, Any]:
        """The endpoint's status, also a cheap "is etcd there" probe.

        Keys: url, version, revision, member_id, leader_id, is_leader,
        db_size, raft_term.
        """
        resp = self.request("maintenance/status", {})
        header = resp.get("header", {})
        member, leader = str(header.get("member_id", "")), str(resp.get("leader", ""))
        return {"url": self.url, "version": resp.get("version", ""), "revision": _revision(resp),
                "member_id": member, "leader_id": leader, "is_leader": bool(member) and member == leader,
                "db_size": int(resp.get("dbSize", 0)), "raft_term": int(resp.get("raftTerm", 0))}


def _keepalive(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    except OSError as e:  # not fatal: the watch still works, it just notices a vanished peer later
        log.debug("etcd: cannot enable TCP keepalive on the watch: %s", e)
