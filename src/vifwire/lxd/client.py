"""LXD's REST API over its Unix socket, with ``http.client`` (docs/lxd.md).

LXD answers in one of three shapes (LXD REST API docs, "Return values"):
*sync* (HTTP 200, the result in ``metadata``), *async* (HTTP 202, a
background operation named in ``operation`` and the ``Location`` header) and
*error* (``error_code``, ``error``). An async answer is waited for here with
``GET /1.0/operations/<id>/wait?timeout=N`` (LXD REST API docs, "Async
operations"); the operation's own ``status_code`` (200 success, 400 failure,
401 cancelled) and ``err`` say how it ended.

Updates are optimistic (LXD REST API docs, "ETag"): a GET of an instance
returns its ETag, and a PUT sent with ``If-Match: <etag>`` fails with 412 if
the instance changed in between. :meth:`LxdClient.change_devices` reads,
lets the caller compute the new devices, writes with ``If-Match`` and, on
412, reads again and recomputes, so a concurrent change (another device
added, a profile applied) is never overwritten.

Nothing here decides which device to add or remove; errors are typed so that
the executor can say which of its inputs was wrong (the socket, the
instance) in one line.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("vifwire.lxd")

#: What ``PUT /1.0/instances/<name>`` takes (LXD REST API docs, ``InstancePut``):
#: the fields ``lxc config device add/remove`` read and send back.
WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")

#: Operation states that are final (LXD REST API docs, "Status codes").
OP_SUCCESS, OP_FAILURE, OP_CANCELLED = 200, 400, 401


class LxdError(Exception):
    """LXD refused a call, or something answered that is not LXD.

    ``problem`` is one line (LXD's own ``error`` text when it gave one);
    ``status`` the LXD/HTTP error code when there is one.
    """

    def __init__(self, problem: str, status: int | None = None):
        self.problem = " ".join(problem.split()) or self.__class__.__name__
        self.status = status
        super().__init__(self.problem)


class LxdUnreachable(LxdError):
    """Nothing answers on the socket (no such file, refused, no permission)."""


class NoSuchInstance(LxdError):
    """LXD has no instance of that name (404)."""


class LxdTimeout(LxdError):
    """LXD did not answer, or an operation did not end, in time."""


class LxdConflict(LxdError):
    """The instance kept changing: every ``If-Match`` write was refused with 412."""


class UnixConnection(http.client.HTTPConnection):
    """``HTTPConnection`` whose transport is a Unix stream socket."""

    def __init__(self, path: str, timeout: float):
        super().__init__("lxd", timeout=timeout)  # the Host header; LXD ignores it on its socket
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Instance:
    """An instance as read, with what is needed to write it back."""

    name: str
    status: str  # "Running", "Stopped", ...
    devices: dict[str, dict[str, Any]]  # the instance's own devices (not those of its profiles)
    etag: str | None
    writable: dict[str, Any]  # the WRITABLE fields as read


def instance_path(name: str) -> str:
    return "/1.0/instances/" + urllib.parse.quote(name, safe="")


class LxdClient:
    """Calls to one LXD daemon; one keep-alive connection, opened on first use.

    ``timeout``: seconds for a whole call, waiting for its operation
    included. Not thread-safe: use one client per thread (they are cheap).
    """

    def __init__(self, socket_path: str, timeout: float = 30.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._conn: UnixConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "LxdClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ protocol

    def request(self, method: str, path: str, body: Any = None, etag: str | None = None
                ) -> tuple[Any, str | None]:
        """One call: ``(metadata, etag)``. An async answer's operation is
        waited for and its metadata returned (no ETag)."""
        status, headers, doc = self._send(method, path, body, etag)
        if doc.get("type") == "error" or status >= 400:
            raise _error(doc, status, method, path)
        if doc.get("type") == "async":
            operation = doc.get("operation") or headers.get("location")
            if not operation:
                raise LxdError(f"{method} {path}: an async answer without an operation")
            return self.wait(operation), None
        return doc.get("metadata"), headers.get("etag")

    def wait(self, operation: str) -> dict[str, Any]:
        """Wait for an operation to end (at most ``timeout``); its metadata.

        Raises :class:`LxdError` with the operation's ``err`` if it failed or
        was cancelled, :class:`LxdTimeout` if it is still running.
        """
        path = operation if operation.startswith("/") else f"/1.0/operations/{operation}"
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LxdTimeout(f"operation {path} still running after {self.timeout:g} s")
            status, _, doc = self._send("GET", f"{path}/wait?timeout={max(1, int(left))}", None, None)
            if doc.get("type") == "error" or status >= 400:
                err = _error(doc, status, "GET", path)
                if status == 504 or "deadline" in err.problem:
                    continue  # the wait's own timeout: go round until ours
                raise err
            op = doc.get("metadata") or {}
            code = op.get("status_code")
            if code == OP_SUCCESS:
                return op
            if code in (OP_FAILURE, OP_CANCELLED):
                raise LxdError(op.get("err") or op.get("status") or "the operation failed", code)

    def _connection(self) -> tuple[UnixConnection, bool]:
        """The connection, and whether it is a new one."""
        if self._conn is not None and self._conn.sock is not None:
            return self._conn, False
        self.close()
        conn = UnixConnection(self.socket_path, self.timeout + 5.0)
        try:
            conn.connect()
        except socket.timeout:
            raise LxdTimeout(f"LXD at {self.socket_path} did not accept a connection in time") from None
        except OSError as exc:
            raise LxdUnreachable(f"cannot connect to {self.socket_path}: {exc.strerror or exc}") from None
        self._conn = conn
        return conn, True

    def _send(self, method: str, path: str, body: Any, etag: str | None) -> tuple[int, dict[str, str], dict]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if etag:
            headers["If-Match"] = etag
        while True:
            conn, fresh = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except socket.timeout:
                self.close()
                raise LxdTimeout(f"{method} {path}: LXD did not answer within {self.timeout + 5.0:g} s") from None
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if fresh:
                    raise LxdError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from None
                # a kept-alive connection LXD closed meanwhile: once more on a new one
                # (a write guarded by If-Match cannot be applied twice)
        log.debug("%s %s -> %d (%d bytes)", method, path, resp.status, len(raw))
        try:
            doc = json.loads(raw) if raw.strip() else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise LxdError(f"{method} {path}: HTTP {resp.status}, and the answer is not LXD's JSON")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, doc

    # ----------------------------------------------------------- instances

    def instance(self, name: str) -> Instance:
        """``GET /1.0/instances/<name>``; :class:`NoSuchInstance` if there is none."""
        try:
            meta, etag = self.request("GET", instance_path(name))
        except LxdError as exc:
            if exc.status == 404:
                raise NoSuchInstance(f"no instance {name!r}", 404) from None
            raise
        if not isinstance(meta, dict):
            raise LxdError(f"GET {instance_path(name)}: no instance in the answer")
        return Instance(name=meta.get("name") or name, status=str(meta.get("status") or ""),
                        devices={k: dict(v) for k, v in (meta.get("devices") or {}).items() if isinstance(v, dict)},
                        etag=etag, writable={k: meta[k] for k in WRITABLE if k in meta})

    def change_devices(self, name: str, change: Callable[[dict[str, dict[str, Any]]], dict | None],
                       attempts: int = 5) -> Instance | None:
        """Replace an instance's own devices with ``change(devices)``.

        ``change`` gets a copy of the devices as just read and returns the
        new set, or ``None`` for "nothing to do". The write is a ``PUT``
        with ``If-Match``; on 412 the instance is read again and ``change``
        asked again (at most ``attempts`` times, then :class:`LxdConflict`).
        A running instance gets the difference hot-plugged by LXD, within
        the PUT's operation. Returns the instance as it was before the write,
        or ``None`` if nothing was written.
        """
        for _ in range(attempts):
            inst = self.instance(name)
            new = change({k: dict(v) for k, v in inst.devices.items()})
            if new is None or new == inst.devices:
                return None
            try:
                self.request("PUT", instance_path(name), {**inst.writable, "devices": new}, etag=inst.etag)
            except LxdError as exc:
                if exc.status != 412:
                    raise
                log.debug("instance %s changed while being updated (412): reading it again", name)
                continue
            log.debug("instance %s: devices %s -> %s", name, sorted(inst.devices), sorted(new))
            return inst
        raise LxdConflict(f"instance {name!r} kept changing: {attempts} writes refused (412, ETag mismatch)", 412)


def _error(doc: dict, status: int, method: str, path: str) -> LxdError:
    code = doc.get("error_code")
    text = doc.get("error") or f"{method} {path}: HTTP {status}"
    return LxdError(text, code if isinstance(code, int) and code else status)
