"""Errors of the OVSDB client, and the one-line texts they carry.

They live apart from the client so the transport (:mod:`.session`), the
row builders (:mod:`.ports`) and the client API raise the same classes, and
callers (``executors/ovs.py``) can catch them without knowing which layer
failed.  All are :class:`~vifwire.errors.HostError`: port, step, one-line
problem (docs/architecture.md, errors).
"""

from __future__ import annotations

import json
import os
import socket

from vifwire.errors import HostError


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

    ``states`` maps every waited-for port to its ``port_state`` (``None``
    when the port is not in the DB); ``failed`` lists the ports that lack an
    ofport, in input order.
    """

    def __init__(self, port, step, problem, *, states=None, failed=None):
        super().__init__(port, step, problem)
        self.states: dict[str, dict | None] = states or {}
        self.failed: list[str] = failed or []


def error_text(err: str) -> str:
    """One line from an OVSDB error JSON string (RFC 7047 §3.1: ``error``
    plus optional ``details``)."""
    try:
        j = json.loads(err)
        if isinstance(j, dict):
            e = j.get("error", "")
            d = j.get("details", "")
            return f"{e}: {d}".strip(": ").replace("\n", " ")
    except ValueError:
        pass
    return err.replace("\n", " ")


def probe_endpoint(endpoint: str) -> str:
    """A one-line reason why ``endpoint`` is not answering (diagnostics).

    The ``ovs`` session only says "not connected"; an operator needs to know
    whether the socket is missing, refused or hung.
    """
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
