"""Real agents for tests: ``vifwire agent`` subprocesses in namespaces the tests create.

* :class:`AgentProc` starts ``vifwire agent`` (``python -m`` of the installed
  console script) on a socket in a temporary directory, waits until
  ``/v1/health`` says ready, and stops it by PID (SIGTERM, then SIGKILL).
* :func:`call` is a tiny stdlib HTTP-over-Unix-socket client returning
  ``(status, json)``; tests use it rather than the product's client so that
  a bug there cannot hide one in the agent.
* Fixtures: ``agent_ns`` (a namespace + a running agent, no OVS),
  ``agent_ovs`` (a namespace with a private OVS and bridge br-int + agent).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS

VIFWIRE = os.path.join(os.path.dirname(sys.executable), "vifwire")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def call(sock: str, method: str, path: str, body: Any = None, timeout: float = 120.0,
         raw: bytes | None = None) -> tuple[int, Any]:
    """One request; ``(status, decoded JSON or text)``."""
    conn = _UnixConnection(sock, timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(payload) if "json" in ctype else payload.decode())
    finally:
        conn.close()


class AgentProc:
    """One ``vifwire agent`` subprocess."""

    def __init__(self, tmp: str, ns: str | None, *, ovsdb: str | None = None, state: str | None = None,
                 extra: list[str] | None = None, name: str = "agent"):
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.state = state or os.path.join(tmp, "state.db")
        self.log = os.path.join(tmp, f"{name}.log")
        self.argv = [VIFWIRE, "agent", "--socket", self.sock, "--state", self.state]
        if ns:
            self.argv += ["--netns", ns]
        if ovsdb:
            self.argv += ["--ovsdb", ovsdb]
        self.argv += extra or []
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "AgentProc":
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.read_log()[-3000:]}")
            try:
                status, body = call(self.sock, "GET", "/v1/health", timeout=5)
                if status == 200 and body.get("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"agent not ready after {timeout}s: {self.read_log()[-3000:]}")

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return call(self.sock, method, path, body, **kw)

    def read_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")


@pytest.fixture
def agent_ns(tmp_path):
    """``(namespace, AgentProc)``: an agent wiring a throwaway namespace (no OVS)."""
    _need_root()
    with netns.sandbox("ag") as ns:
        a = AgentProc(str(tmp_path), ns)
        try:
            a.start()
            yield ns, a
        finally:
            a.stop()


@pytest.fixture
def agent_ovs(tmp_path):
    """``(namespace, PrivateOVS, AgentProc)``: agent + private OVS (bridge br-int, netdev datapath)."""
    _need_root()
    import shutil

    if not shutil.which("ovs-vswitchd"):
        pytest.skip("needs Open vSwitch binaries")
    with netns.sandbox("ao") as ns:
        ovs = PrivateOVS()
        a = AgentProc(str(tmp_path), ns, ovsdb=None, extra=["--ovs-datapath", "netdev"])
        try:
            ovs.start(ns)
            ovs.add_bridge("br-int")
            a.argv += ["--ovsdb", ovs.endpoint]
            a.start()
            yield ns, ovs, a
        finally:
            a.stop()
            ovs.stop()
