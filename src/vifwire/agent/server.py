"""HTTP/1.1 for the agent: the API on a Unix socket, metrics optionally on TCP.

The API is served only on a Unix socket (mode 0660, owned by root and the
``--socket-group``): who may call it is decided by file permissions and, per
connection, by the peer's credentials (``SO_PEERCRED``, socket(7)) - uid 0 or
a member of the group may change the host, anyone who can open the socket
may read. Cilium's agent serves its API the same way
(``/var/run/cilium/cilium.sock``). The optional TCP listener answers only
``GET /metrics``.

One thread per connection (keep-alive supported): a request thread parses
and plans; changes go to the writer (:mod:`.writer`).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import queue
import socket
import socketserver
import stat
import struct
import threading
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from vifwire.agent.api import Request, Response, fail
from vifwire.agent.requests import MAX_BODY
from vifwire.errors import UsageError

if TYPE_CHECKING:
    from vifwire.agent.api import Api

log = logging.getLogger("vifwire.agent.server")

_PEERCRED = struct.Struct("3i")  # struct ucred {pid, uid, gid} (socket(7), SO_PEERCRED)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


class Permissions:
    """Who may change the host: uid 0, or a member of ``group`` (primary or supplementary)."""

    def __init__(self, group: str | None):
        self.gid: int | None = None
        self.group = group
        if group is not None:
            try:
                self.gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
            except KeyError:
                raise UsageError(f"socket-group: no group named {group!r}") from None

    def may_change(self, pid: int, uid: int, gid: int) -> bool:
        if uid == 0:
            return True
        if self.gid is None:
            return False
        if gid == self.gid:
            return True
        try:  # the peer process's own groups (what it runs with, not only /etc/group)
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        return str(self.gid) in line.split()[1:]
        except OSError:
            pass
        try:
            return self.gid in os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vifwire-agent"
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self.creds = self.server.credentials(self.request)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s " + format, self.creds, *args)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._answer(fail(411, ["request: Transfer-Encoding: chunked bodies are not taken; send Content-Length"]))
            return
        try:
            n = int(length) if length else 0
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self._answer(fail(413 if n > MAX_BODY else 400, [f"request: Content-Length: must be 0 to {MAX_BODY}"]))
            self.close_connection = True
            return
        body = self.rfile.read(n) if n else b""
        pid, uid, gid = self.creds
        req = Request(self.command, parts.path, parse_qs(parts.query), body, uid=uid, pid=pid,
                      may_change=uid is not None and self.server.permissions.may_change(pid, uid, gid))
        with self.server.busy():  # the agent's shutdown waits for this answer
            self._answer(self.server.dispatch(req))

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def _answer(self, resp: Response) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class Workers:
    """Daemon threads reused from one connection to the next.

    socketserver's ThreadingMixIn starts a thread per connection; under a
    burst of one-request connections (a CNI runtime, the thin CLI) that start
    was a measurable part of each request. Workers wait for the next
    connection instead; a new one is started only when none is free, so a
    long poll or an idle keep-alive connection never blocks another caller.
    Daemon threads: an idle keep-alive connection must not keep the process
    alive after shutdown (in-flight answers are waited for separately).
    """

    def __init__(self, name: str):
        self._name = name
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._started += 1
            else:
                self._idle -= 1  # that waiting worker takes this one
        self._q.put((fn, args))
        if spawn:
            threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()

    def _work(self) -> None:
        while True:
            fn, args = self._q.get()
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - a worker outlives one failed connection
                log.exception("connection worker failed")
            with self._lock:
                self._idle += 1


class _Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    block_on_close = False
    _workers: Workers | None = None

    def process_request(self, request: socket.socket, client_address: object) -> None:
        """ThreadingMixIn's, on a reused worker instead of a new thread."""
        if self._workers is None:
            self._workers = Workers("vifwire-conn")
        self._workers.submit(self.process_request_thread, request, client_address)
    permissions: Permissions
    dispatch: Callable[[Request], Response]
    credentials: Callable[[socket.socket], tuple]
    _busy = 0  # requests being answered
    _idle: threading.Condition  # set in __init__

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until no request is being answered (request threads are daemons: at
        shutdown an in-flight request must get its answer before the process exits)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)


class UnixApiServer(socketserver.ThreadingUnixStreamServer, _Server):
    """The API on a Unix socket."""

    #: listen() backlog: socketserver's default of 5 makes a burst of clients
    #: fail with EAGAIN (AF_UNIX does not queue beyond the backlog)
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, dispatch: Callable[[Request], Response], permissions: Permissions,
                 group_gid: int | None = None):
        self.dispatch = dispatch
        self.permissions = permissions
        self.credentials = peer_credentials
        self._idle = threading.Condition()
        claim_socket_path(path)
        old = os.umask(0o117)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        if group_gid is not None:
            os.chown(path, 0, group_gid)
        self.path = path

    def server_close(self) -> None:
        super().server_close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass


class MetricsServer(socketserver.ThreadingTCPServer, _Server):
    """``GET /metrics`` on TCP, nothing else (read-only; the API never listens here)."""

    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], dispatch: Callable[[Request], Response]):
        def only_metrics(req: Request) -> Response:
            if req.path != "/metrics" or req.method != "GET":
                return fail(404, [f"{req.path}: only GET /metrics is served here"])
            return dispatch(req)

        self.dispatch = only_metrics
        self._idle = threading.Condition()
        self.permissions = Permissions(None)
        self.credentials = lambda _sock: (None, None, None)
        super().__init__(addr, _Handler)


def claim_socket_path(path: str) -> None:
    """Make ``path`` free for a new listening socket: a stale socket left by a
    killed agent is removed; a live agent there, or a non-socket file, is an error."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"socket: {path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)  # nobody listens: left by a killed agent
            return
        raise UsageError(f"socket: {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise UsageError(f"socket: another agent is listening on {path}")


def serve_in_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True)
    t.start()
    return t
