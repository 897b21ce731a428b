"""The agent's API as Python calls (:class:`AgentClient`), for the CLI's ``--agent`` path.

The CLI's ``--agent`` path is a short-lived process whose whole run is one
request, so this module imports only the standard library
and :mod:`vifwire.errors`: no pydantic, no pyroute2, no service. Validation
of bindings stays in the agent; the one thing checked here is that the
input is JSON at all (it must be parsed to be sent inside a request), with
the same one-line messages the in-process loader gives.

Errors are :class:`~vifwire.errors.VifwireError` subclasses so every front
end turns them into lines and an exit code the usual way:
:class:`AgentUnavailable` (nobody answers on the socket: exit 1, never a
silent fallback to wiring in-process) and :class:`AgentError` (the agent
answered with an error: exit 2 for 400/409, the caller's fault, else 1).
"""

from __future__ import annotations

import errno
import json


from vifwire.client.http import TransportError, exchange, quote
from vifwire.errors import VifwireError
from vifwire.model.text import documents, parse_document

DEFAULT_SOCKET = "/run/vifwire/agent.sock"
#: Seconds a request may take beyond any ``wait`` it asks the agent for. A big
#: plug waits behind others in the agent's writer; a hung agent must still end.
DEFAULT_TIMEOUT = 300.0

__all__ = ["AgentClient", "AgentError", "AgentUnavailable", "DEFAULT_SOCKET", "documents", "parse_ports"]


class AgentUnavailable(VifwireError):
    """No agent answers on the socket (exit code 1)."""

    exit_code = 1


class AgentError(VifwireError):
    """The agent answered with an error status; ``lines`` are its one-line messages."""

    def __init__(self, status: int, lines: list[str]):
        self.status = status
        self.lines = lines or [f"the agent answered {status}"]
        self.exit_code = 2 if status in (400, 409) else 1
        super().__init__("\n".join(self.lines))


def parse_ports(text: str, origin: str = "<input>") -> list[Any]:
    """Binding file text -> its port documents, refusing what is not JSON with
    the loader's own rules and messages (:mod:`vifwire.model.text`, which
    imports nothing heavy), so the CLI says the same thing with and without
    ``--agent``; the ports themselves are validated by the agent."""
    return parse_document(text, origin)


class AgentClient:
    """One agent, one request per call (a fresh connection each: a CLI run
    makes one call, so keep-alive would buy nothing)."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT,
                 hint: str = "start it with `vifwire agent`"):
        self.socket_path = socket_path
        self.timeout = timeout
        self.hint = hint  # what the caller's user can do when no agent answers

    # ------------------------------------------------------------------ API

    def plug(self, ports: str | list[Any] | dict[str, Any], facts: dict[str, Any] | None = None,
             guest: dict[str, Any] | None = None, wait: float | None = None, instance: str | None = None,
             origin: str = "<input>") -> list[dict[str, Any]]:
        """Plug bindings (file text, or documents); the ports' results, failed ones included.

        ``facts``/``guest`` hold only what differs from the agent's own
        command line. Raises :class:`AgentError` when the request as a whole
        is refused (invalid binding 400, clash with a recorded port 409, ...).
        """
        docs = parse_ports(ports, origin) if isinstance(ports, str) else documents(ports, origin)
        body: dict[str, Any] = {"ports": docs}
        if facts:
            body["facts"] = facts
        if guest:
            body["guest"] = guest
        if wait is not None:
            body["wait"] = wait
        if instance is not None:
            body["instance"] = instance
        answer = self._call("POST", "/v1/ports", body, extra_time=wait or 0.0, ok=(200, 207))
        return answer["ports"]

    def unplug(self, ids: list[str] | tuple[str, ...] = (), ports: str | list[Any] | None = None,
               all: bool = False, origin: str = "<input>") -> dict[str, Any]:  # noqa: A002 - the API's word
        """Unplug by id, by binding, or every recorded port: ``{unplugged,
        not_recorded, problems}`` (problems also come back as a result, not raised)."""
        docs = parse_ports(ports, origin) if isinstance(ports, str) else documents(ports or [], origin)
        body: dict[str, Any] = {"ids": list(ids)}
        if docs:
            body["ports"] = docs
        if all:
            body["all"] = True
        return self._call("POST", "/v1/ports/delete", body, ok=(200,), result_on_500="unplugged")

    def check(self, ids: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """``{checked, drift: {port id: [lines]}}`` for every recorded port, or those named."""
        query = "&".join(f"port={quote(i)}" for i in ids or ())
        return self._call("GET", "/v1/check" + (f"?{query}" if query else ""), ok=(200,))

    def list(self) -> list[dict[str, Any]]:
        """Every port the agent has recorded (attachment records as JSON)."""
        return self._call("GET", "/v1/ports", ok=(200,))["ports"]

    def get(self, port_id: str) -> dict[str, Any] | None:
        """One recorded port, or None if the agent has no record of it."""
        try:
            return self._call("GET", f"/v1/ports/{quote(port_id)}", ok=(200,))
        except AgentError as exc:
            if exc.status == 404:
                return None
            raise

    def gc(self, force: bool = False) -> dict[str, Any]:
        """``{garbage, removed, problems}``: leftovers vifwire marked but no record owns."""
        return self._call("POST", "/v1/gc", {"force": force}, ok=(200,), result_on_500="garbage")

    def events(self, since: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """``{events, last, lost}`` after sequence ``since``, long-polling up to ``wait`` seconds."""
        return self._call("GET", f"/v1/events?since={int(since)}&wait={float(wait):g}", extra_time=wait,
                          ok=(200,))

    def cni(self, env: dict[str, str], config: str) -> dict[str, Any]:
        """``{exit, output}``: one CNI invocation (its CNI_* variables and its
        stdin) carried out by the agent; ``output`` is what the plugin prints."""
        return self._call("POST", "/v1/cni", {"env": env, "config": config}, ok=(200,))

    def health(self) -> dict[str, Any]:
        """``{ready, version, netns, state, repair, last_event}``; a not-ready agent answers too (503)."""
        return self._call("GET", "/v1/health", ok=(200, 503))

    # ------------------------------------------------------------ transport

    def _call(self, method: str, target: str, body: Any = None, *, ok: tuple[int, ...], extra_time: float = 0.0,
              result_on_500: str | None = None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            status, headers, raw = exchange(self.socket_path, method, target, data, self.timeout + extra_time)
        except TransportError as exc:
            raise AgentUnavailable(self._unavailable(exc)) from None
        try:
            answer = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except ValueError:
            raise AgentError(status, [f"agent: {method} {target.split('?')[0]} answered {status} with a body "
                                      "that is not JSON"]) from None
        if status in ok:
            return answer
        if status == 500 and result_on_500 and isinstance(answer, dict) and result_on_500 in answer:
            return answer  # the use case ran and reports what it could not do
        lines = answer.get("errors") if isinstance(answer, dict) else None
        if not (isinstance(lines, list) and lines and all(isinstance(x, str) for x in lines)):
            one = answer.get("error") if isinstance(answer, dict) else None
            lines = [one if isinstance(one, str) and one else f"agent: {method} {target.split('?')[0]} "
                                                               f"answered {status}"]
        raise AgentError(status, lines)

    def _unavailable(self, exc: TransportError) -> str:
        path = self.socket_path
        hint = self.hint
        if exc.connecting:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                why = "no such socket" if exc.errno == errno.ENOENT else "connection refused"
                return f"agent: no agent listening on {path} ({why}); {hint}"
            if exc.errno == errno.EACCES:
                return (f"agent: {path}: permission denied (run as root or as a member of the agent's "
                        "--socket-group)")
            return f"agent: cannot connect to {path}: {exc}"
        return f"agent: {path}: {exc} (is the agent stuck or did it stop?)"
