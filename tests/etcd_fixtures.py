"""A real, private etcd 3.4 for tests: one member on loopback ports.

Use from a test module (``from etcd_fixtures import etcd, etcd_tls``).

* ``etcd``     -> a started :class:`EtcdProc` speaking plain HTTP.
* ``etcd_tls`` -> one requiring client certificates; its ``.tls`` holds the
  test CA's file paths (``cacert``, ``cert``, ``key``, plus ``other_cert`` /
  ``other_key`` signed by an unrelated CA).

Both ports (client and peer) are picked free, so runs in parallel and a
system etcd on 2379/2380 do not collide. The member's data lives in a
temporary directory removed afterwards, and only the etcd this module
started is ever signalled, by its PID.

etcd missing is a failure, not a skip: scripts/setup.sh installs it, so a
silently skipped fleet suite would only hide a broken machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import pytest

ETCD = "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Pki:
    cacert: str
    cert: str
    key: str
    server_cert: str
    server_key: str
    other_cert: str
    other_key: str


def _openssl(*args: str, cwd: str) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise RuntimeError(f"openssl {' '.join(args[:2])}: {r.stderr.strip()[-300:]}")


def make_ca(directory: str) -> Pki:
    """A throwaway CA (EC P-256: fast to generate) with a server certificate
    for 127.0.0.1 and two client certificates: one it signed, one signed by
    an unrelated CA (which the server must reject)."""
    os.makedirs(directory, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                 "-subj", f"/CN=vifwire test {ca}", cwd=directory)
    exts = {
        # etcd's gateway dials its own gRPC port with the server certificate:
        # without clientAuth it is rejected ("incompatible key usage")
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
        "other": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in exts.items():
        ca = "otherca" if name == "other" else "ca"
        with open(os.path.join(directory, f"{name}.ext"), "w") as f:
            f.write(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=vifwire-{name}",
                 cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=directory)
    p = lambda n: os.path.join(directory, n)  # noqa: E731
    return Pki(p("ca.crt"), p("client.crt"), p("client.key"), p("server.crt"), p("server.key"),
                  p("other.crt"), p("other.key"))


class EtcdProc:
    """One etcd member: start/stop/restart keep its data dir and ports."""

    def __init__(self, tmp: str, *, tls: Pki | None = None):
        self.tmp = tmp
        self.data_dir = os.path.join(tmp, "data")
        self.log_path = os.path.join(tmp, "etcd.log")
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [ETCD, "--name", "t", "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}",
                # a lone member: elect itself fast, no need for a 1 s timeout
                "--heartbeat-interval", "20", "--election-timeout", "200",
                "--log-level", "warn", "--logger", "zap"]
        if self.tls:
            argv += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                     "--client-cert-auth", "--trusted-ca-file", self.tls.cacert]
        return argv

    def start(self, timeout: float = 15.0) -> EtcdProc:
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                raise RuntimeError(f"etcd exited with {rc} while starting:\n{self.read_log()[-2000:]}")
            if self.healthy():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy after {timeout} s:\n{self.read_log()[-2000:]}")

    def healthy(self) -> bool:
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls.cacert)
            ctx.load_cert_chain(self.tls.cert, self.tls.key)
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1, context=ctx) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop our etcd (by PID): SIGTERM, then SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.paused:
            proc.send_signal(signal.SIGCONT)
            self.paused = False
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def restart(self) -> EtcdProc:
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze etcd (SIGSTOP): connections open but nothing answers, like a hung server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def read_log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def _need_etcd() -> None:
    if not os.access(ETCD, os.X_OK):
        pytest.fail(f"{ETCD} is missing: run scripts/setup.sh (it installs etcd-server)")


def _running(tls: bool):
    _need_etcd()
    tmp = tempfile.mkdtemp(prefix="vifwire-etcd-")
    proc = None
    try:
        ca = make_ca(os.path.join(tmp, "pki")) if tls else None
        proc = EtcdProc(tmp, tls=ca)
        proc.start()
        yield proc
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def etcd():
    yield from _running(tls=False)


@pytest.fixture
def etcd_tls():
    if not shutil.which("openssl"):
        pytest.fail("openssl is missing: it makes the test CA")
    yield from _running(tls=True)
