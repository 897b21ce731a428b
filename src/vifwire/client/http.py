"""Just enough HTTP/1.1 over a Unix socket for the agent's API.

Hand-written rather than ``http.client``: that module pulls in the ``email``
package (~13 ms), a sixth of the time budget of a whole ``vifwire plug
--agent``. The agent always answers with ``Content-Length`` and the client
asks for ``Connection: close``, so a response is: status line, headers, and
a body read to its length (or to EOF if a proxy dropped the length).

The socket is the C module's (``_socket``): the ``socket`` wrapper adds
nothing used here and costs ~2.5 ms of imports (selectors, enum flags).
"""

from __future__ import annotations

import _socket

#: Characters a query value may carry as they are (RFC 3986 unreserved).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_MAX_HEAD = 64 * 1024


class TransportError(Exception):
    """The socket could not be reached or the exchange broke; ``errno`` is set for connect failures."""

    def __init__(self, text: str, errno: int | None = None, connecting: bool = False):
        super().__init__(text)
        self.errno = errno
        self.connecting = connecting


def quote(value: str) -> str:
    """Percent-encode one query value (UTF-8), like ``urllib.parse.quote(value, safe="")``."""
    if all(c in _UNRESERVED for c in value):
        return value
    return "".join(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def exchange(path: str, method: str, target: str, body: bytes | None, timeout: float | None
             ) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: ``(status, headers lower-cased, body)``."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise TransportError(exc.strerror or str(exc), exc.errno, connecting=True) from None
        head = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close", "Accept: application/json"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (body or b"")
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered early (e.g. a too-large body) and closed: its answer is still readable
        return _read_response(sock)
    except TimeoutError:
        raise TransportError(f"no answer within {timeout:g} s") from None
    except TransportError:
        raise
    except OSError as exc:
        raise TransportError(exc.strerror or str(exc), exc.errno) from None
    finally:
        sock.close()


def _read_response(sock: _socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise TransportError("the connection closed before an answer" if not buf else
                                 "the connection closed in the middle of the answer's headers")
        buf += chunk
        if len(buf) > _MAX_HEAD:
            raise TransportError("the answer's headers are too long")
    raw_head, _, rest = buf.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise TransportError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    chunks = [rest]
    have = len(rest)
    if length is not None and length.isdigit():
        want = int(length)
        while have < want:
            chunk = sock.recv(min(want - have, 1 << 20))
            if not chunk:
                raise TransportError(f"the connection closed after {have} of {want} body bytes")
            chunks.append(chunk)
            have += len(chunk)
        body = b"".join(chunks)[:want]
    else:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        body = b"".join(chunks)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _dechunk(body)
    return int(parts[1]), headers, body


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise TransportError("a chunked answer ended early")
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            raise TransportError("a chunked answer has a bad chunk size") from None
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
