"""Small pieces every benchmark here needs the same way: percentiles in
seconds, millisecond cells, emptying a namespace cheaply, and a section
that ^C cannot interrupt (so clean-up finishes)."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import statistics
import subprocess
from typing import Any

from vifwire.sandbox import netns


def p50(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def pct(xs: list[float], q: int) -> float | None:
    """The q-th percentile (1-99), inclusive method; the value itself for one sample."""
    if not xs:
        return None
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def ms(x: float | None, digits: int = 2) -> str:
    """Seconds as a millisecond cell ('-' for none)."""
    return "-" if x is None else f"{x * 1e3:.{digits}f}"


def empty_ns(ns: str, names: list[str], group: int) -> None:
    """Delete ``names`` (every link but lo) in one link-group delete, so that
    removing the namespace afterwards is cheap and synchronous."""
    if not netns.exists(ns):
        return
    names = [n for n in names if n != "lo"]
    if names:
        batch = "".join(f"link set {n} group {group}\n" for n in names) + f"link del group {group}\n"
        subprocess.run(["ip", "-n", ns, "-force", "-batch", "-"], input=batch, capture_output=True, text=True,
                       timeout=300)


@contextlib.contextmanager
def no_signals():
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (machines are noisy: every report says how noisy)."""
    with contextlib.suppress(OSError):
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    return "?"


def tree_state(root: str) -> str:
    """``git describe --always --dirty`` of the tree measured."""
    r = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def links(ns: str) -> dict[str, int]:
    """name -> ifindex of every link in ``ns``."""
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True).stdout
    res = {}
    for ln in out.splitlines():
        parts = ln.split(":", 2)
        if len(parts) >= 2:
            res[parts[1].strip().split("@")[0]] = int(parts[0])
    return res


def prepare_routed_host(ns: str, gw4: str) -> None:
    """A routed host: the gateway address on lo, IPv6 forwarding on (routed IPv6 needs it)."""
    subprocess.run(["ip", "-n", ns, "addr", "add", f"{gw4}/32", "dev", "lo"], check=True, capture_output=True)
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)


def verdict(ok: bool | None) -> str:
    """A target's cell: met, NOT met, or - when the run could not tell."""
    return "-" if ok is None else ("met" if ok else "NOT met")


def targets_table(targets: list[dict]) -> list[str]:
    """The "Targets" section of a bench report: one row per {target, value, met}."""
    if not targets:
        return []
    return (["\nTargets\n", "| target | value | met? |", "|---|---|---|"]
            + [f"| {t['target']} | {t['value']} | {verdict(t['met'])} |" for t in targets])


# HTTP over the agent's Unix socket (the stdlib client tests/agent_fixtures.py
# has too: bench/ does not import tests/)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 600.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request on an open connection: (status, JSON body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    ctype = resp.getheader("Content-Type", "")
    return resp.status, (json.loads(payload) if "json" in ctype else payload.decode())


def call(sock: str, method: str, path: str, body: Any = None, timeout: float = 600.0) -> tuple[int, Any]:
    """One request on a new connection."""
    conn = UnixConnection(sock, timeout)
    try:
        return request(conn, method, path, body)
    finally:
        conn.close()
