"""Agent benchmark: one port at a time through ``vifwire agent``, beside the
CLI, os-vif 5.3.0 and the kernel floor; 16 concurrent clients; a restart.

Everything runs in throwaway namespaces this script creates (never the
host's), with a private Open vSwitch (ovsdb-server + userspace ovs-vswitchd,
``datapath_type=netdev``) for the OVS cases; agents, OVS daemons and
namespaces are always stopped/removed, also on failure, Ctrl-C or SIGTERM.

**Single-port latency** (median and p99 over ``-n`` plugs per row, each a new
port, unplugged right after it; ``--quick``: 20, default 100; two untimed
warm-up plugs per row). Cases:

* ``routed``: a routed tap with anti-spoofing (``vif_type tap``, one IPv4 and
  one IPv6 address, ``anti_spoof on``: tap, 22 filter elements, 7 sysctls,
  two host routes);
* ``ovs-plain``: a tap on br-int with the Neutron external_ids
  (``ovs_create_tap``), waiting for ovs-vswitchd (cur_cfg and an ofport);
* ``ovs-hybrid``: qbr bridge + qvb/qvo veth, qvo on br-int (``ovs_hybrid_plug``);
* ``veth-bridge``: a container's tap/tin veth pair (facts ``{"hypervisor":
  "lxd"}``), tap end on the Linux bridge ``brq-bench`` (``vif_type bridge``,
  ``port_filter false``, so anti-spoofing too).

Paths (rows) per case:

* ``agent, new conn``: an in-process client (this script) that is already
  running: ``POST /v1/ports`` ``{"ports": [doc], "facts": {...}}`` on a NEW
  Unix-socket connection per request, timed from connect to the last byte of
  the answer (the honest "client already running" figure);
* ``agent, keep-alive``: the same over one persistent HTTP/1.1 connection;
* ``thin CLI --agent``: ``vifwire plug --agent SOCK FILE`` as a whole process
  (``n/a`` if this vifwire has no ``--agent`` option yet);
* ``CLI, no agent``: ``vifwire plug FILE --netns NS --state DB --ovsdb ...``
  as a whole process (the agent is stopped meanwhile);
* ``os-vif in-process`` (OVS cases): ``os_vif.plug`` of a ``VIFOpenVSwitch``
  (plain) / ``VIFBridge`` (hybrid) from os-vif 5.3.0 (PyPI, installed into
  ``.venv-osvif``, bench/osvif.py), run in the namespace
  with oslo.privsep in-process and its native OVSDB connection warm, exactly
  as bench/ovs_bench.py does, each plug timed on its own;
* ``floor``: the same kernel objects made in-process with no framework: on
  one thread inside the namespace, the tap by ``TUNSETIFF``/``TUNSETPERSIST``,
  links and routes by bare rtnetlink requests (one message
  and one ack each, socket opened beforehand), sysctls by writes to
  ``/proc/sys``; the 22 filter elements by one libnftables call into a
  stand-in table of the same set layout (bench/service_bench.py's). OVS
  cases: the devices the same way + one bare OVSDB JSON-RPC transaction
  (Interface, Port, Bridge.ports, next_cfg+1) on a session opened
  beforehand, then waiting for ovs-vswitchd to apply it (``cur_cfg``, what
  ``ovs-vsctl`` waits for; vifwire also waits for the ofport); veth-bridge:
  devices only (no filter elements: its floor is lower than the work vifwire
  does).

Unplug times are shown too (agent: ``DELETE /v1/ports/{id}``; CLI: a
``vifwire unplug ID`` process; os-vif: ``os_vif.unplug``; floor: link delete
+ nft element delete (+ the OVSDB delete)).

**Concurrency**: 16 client threads, each plugging 100 distinct routed taps
with anti-spoofing, one request per port (new connection each), all started
together, total wall time -> ports/s; against ONE ``POST /v1/ports`` of the
same 1600 ports. Each run gets a fresh namespace and a fresh agent/state.

**Restart**: 1000 routed taps plugged through the agent, the agent stopped
(SIGTERM) and started again on the same state: time from ``Popen`` to
``/v1/health`` ready (polled every 2 ms), ``repaired``/``drift`` events
(``GET /v1/events?since=0``), ``GET /v1/check``, and every tap's ifindex
before/after (a changed ifindex = a device re-made).

Targets (the issue): OVS plain single plug through the agent >= 5x faster
than os-vif in-process; routed tap with filters through the agent <= 3 ms
p50; 16 concurrent clients' throughput >= 50% of the bulk plug's; restart
with 1000 correct ports: 0 changes, ready <= 1 s.

    sudo .venv/bin/python bench/agent_bench.py [--quick] [-n 100] [--rounds 1]
        [--cases routed ovs-plain ovs-hybrid veth-bridge] [--skip single concurrency restart]
        [--no-osvif] [--agent-debug] [--logs DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import benchkit  # noqa: E402 - percentiles, cells, namespace emptying shared by the benches
from benchkit import UnixConnection, call, ms, no_signals, p50, request  # noqa: E402
import service_bench  # noqa: E402 - the routed floor's stand-in nft tables and elements (stdlib-only import)
from osvif import OSVIF_PY, PROLOGUE, ROOT, ensure_osvif  # noqa: E402 - os-vif's venv and script start

from vifwire.sandbox import netns  # noqa: E402
from vifwire.sandbox.ovs_daemon import PrivateOVS  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
VIFWIRE = os.path.join(VENV_BIN, "vifwire")
MTU = 1450
GW4, GW6 = "169.254.1.1", "fe80::1"
RTPROT = 158
NET = "4c1e6a0d-0000-4000-8000-0000000000ab"
INSTANCE = "0b7f1c8e-1111-4222-8333-444455556666"
LINK_PREFIXES = ("tap", "tin", "qbr", "qvb", "qvo")
FLOOR_BRIDGE = "brq-floor"
GROUP = 0x7677FFFD  # link group used to empty namespaces quickly

CASES: dict[str, dict[str, Any]] = {
    "routed": {"title": "routed tap + anti-spoofing", "vif_type": "tap", "details": {},
               "facts": {"anti_spoof": "on"}, "flags": ["--anti-spoof", "on"], "osvif": None},
    "ovs-plain": {"title": "OVS plain (tap on br-int)", "vif_type": "ovs",
                  "details": {"port_filter": True, "ovs_create_tap": True},
                  "facts": {"ovs_datapath": "netdev"}, "flags": [], "osvif": "plain"},
    "ovs-hybrid": {"title": "OVS hybrid (qbr/qvb/qvo)", "vif_type": "ovs",
                   "details": {"port_filter": True, "ovs_hybrid_plug": True},
                   "facts": {"ovs_datapath": "netdev"}, "flags": [], "osvif": "hybrid"},
    "veth-bridge": {"title": "veth + Linux bridge (lxd)", "vif_type": "bridge",
                    "details": {"port_filter": False, "bridge_name": "brq-bench"},
                    "facts": {"hypervisor": "lxd"}, "flags": ["--hypervisor", "lxd"], "osvif": None},
}
PATHS = ("agent, new conn", "agent, keep-alive", "thin CLI --agent", "CLI, no agent", "os-vif in-process", "floor")

# --------------------------------------------------------------------------- ports


class Serial:
    """Every port of a run gets its own serial: ids, names, MACs and addresses never repeat."""

    def __init__(self, start: int = 1):
        self.n = start
        self.lock = threading.Lock()

    def take(self, k: int = 1) -> int:
        with self.lock:
            s, self.n = self.n, self.n + k
            return s


SERIAL = Serial()


def port_id(s: int) -> str:
    return f"{s:08x}-ab00-4000-8000-0000000000ab"


def devname(s: int) -> str:
    return ("tap" + port_id(s))[:14]


def mac(s: int) -> str:
    return f"fa:16:3e:{(s >> 16) & 255:02x}:{(s >> 8) & 255:02x}:{s & 255:02x}"


def ip4(s: int) -> str:
    return str(ipaddress.IPv4Address("10.128.0.0") + s)


def ip6(s: int) -> str:
    return str(ipaddress.IPv6Address("fd99::") + s)


def doc(case: str, s: int) -> dict:
    c = CASES[case]
    return {"id": port_id(s), "mac_address": mac(s), "network_id": NET, "device_id": INSTANCE,
            "fixed_ips": [{"subnet_id": "s4", "ip_address": ip4(s)}, {"subnet_id": "s6", "ip_address": ip6(s)}],
            "binding:vif_type": c["vif_type"], "binding:vif_details": c["details"], "binding:vnic_type": "normal",
            "binding:profile": {}, "binding:host_id": "bench", "status": "DOWN", "admin_state_up": True,
            "network": {"mtu": MTU}}


class Failed(Exception):
    pass


def expect_plugged(status: int, body: Any, n: int = 1) -> None:
    if status != 200:
        raise Failed(f"plug answered {status}: {str(body)[:600]}")
    ports = body.get("ports", [])
    bad = [p for p in ports if not p.get("ok")]
    if len(ports) != n or bad:
        raise Failed(f"plug: {len(ports)} result(s), {len(bad)} failed: {bad[:1]}")


def expect_unplugged(status: int, body: Any) -> None:
    if status != 200 or body.get("problems"):
        raise Failed(f"unplug answered {status}: {str(body)[:600]}")


# --------------------------------------------------------------------------- processes we start


LIVE_AGENTS: list["Agent"] = []


class Agent:
    """One ``vifwire agent`` subprocess, stopped by its PID."""

    def __init__(self, tmp: str, name: str, ns: str, ovsdb: str, flags: list[str], debug: bool, logdir: str,
                 state: str | None = None):
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.state = state or os.path.join(tmp, f"{name}.db")
        self.log = os.path.join(logdir, f"{name}.log")
        self.argv = [VIFWIRE, "agent", "--socket", self.sock, "--state", self.state, "--netns", ns,
                     "--ovsdb", ovsdb, "--ovs-datapath", "netdev", *flags] + (["-vv"] if debug else [])
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def start(self, timeout: float = 120.0, poll: float = 0.002) -> "Agent":
        logf = open(self.log, "ab")
        try:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT)
        finally:
            logf.close()
        LIVE_AGENTS.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"agent exited with {self.proc.returncode}: {self.tail()}")
            try:
                status, body = call(self.sock, "GET", "/v1/health", timeout=5)
                if status == 200 and body.get("ready"):
                    self.ready_s = time.perf_counter() - t0
                    return self
            except OSError:
                pass
            time.sleep(poll)
        raise Failed(f"agent not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self, n: int = 2500) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> float | None:
        """SIGTERM, wait (SIGKILL if it hangs); seconds it took, None if not running."""
        if self.proc is None or self.proc.poll() is not None:
            with contextlib.suppress(ValueError):
                LIVE_AGENTS.remove(self)
            return None
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! agent {self.proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL", file=sys.stderr)
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(ValueError):
            LIVE_AGENTS.remove(self)
        if self.proc.returncode not in (0, -signal.SIGTERM):
            print(f"  ! agent exited with {self.proc.returncode}: {self.tail(800)}", file=sys.stderr)
        return time.perf_counter() - t0

    def metric(self, name: str) -> float | None:
        status, text = call(self.sock, "GET", "/metrics")
        if status != 200:
            return None
        m = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else None


def run_proc(argv: list[str], timeout: float = 600.0) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise Failed(f"{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv[:3]))} ... "
                     f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-1500:]}")
    return dt, r


# --------------------------------------------------------------------------- namespaces


def prepare_host(ns: str) -> None:
    benchkit.prepare_routed_host(ns, GW4)


def links(ns: str) -> dict[str, int]:
    return benchkit.links(ns)


def empty_ns(ns: str) -> None:
    """Delete every link but lo in one group delete (cheap namespace removal)."""
    if netns.exists(ns):
        benchkit.empty_ns(ns, list(links(ns)), GROUP)


@contextlib.contextmanager
def host_ns(tag: str):
    """A fresh namespace prepared as a routed host; always emptied and removed."""
    with no_signals():
        ns = netns.create(netns.unique_name(tag))
    try:
        prepare_host(ns)
        yield ns
    finally:
        with no_signals():
            try:
                empty_ns(ns)
            finally:
                netns.remove(ns)


def leftovers(ns: str, ovs: PrivateOVS | None) -> list[str]:
    left = [n for n in links(ns) if n.startswith(LINK_PREFIXES)]
    if ovs is not None:
        left += [f"ovs:{p}" for p in ovs.vsctl("list-ports", "br-int").split()]
    return left


def clean(ns: str, ovs: PrivateOVS | None) -> None:
    if ovs is not None:
        ports = ovs.vsctl("list-ports", "br-int").split()
        if ports:
            ovs.vsctl(*[a for p in ports for a in ("--", "--if-exists", "del-port", "br-int", p)], timeout=120)
    for n in links(ns):
        if n.startswith(LINK_PREFIXES):
            subprocess.run(["ip", "-n", ns, "link", "del", n], capture_output=True)


# --------------------------------------------------------------------------- results


class Results:
    def __init__(self):
        self.single: dict[str, dict[str, Any]] = {}  # "case|path" -> {"plug": [...], "unplug": [...], "error"}
        self.concurrency: list[dict[str, Any]] = []
        self.restart: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}

    def row(self, case: str, path: str) -> dict[str, Any]:
        return self.single.setdefault(f"{case}|{path}", {"plug": [], "unplug": [], "error": None, "na": None})

    def dump(self) -> dict:
        return {"single_s": self.single, "concurrency": self.concurrency, "restart": self.restart,
                "notes": self.notes}


def p99(xs: list[float]) -> float | None:
    return benchkit.pct(xs, 99)


# --------------------------------------------------------------------------- os-vif (per-plug timing)

def ovs_names(pid: str) -> dict[str, str]:
    return {p: (p + pid)[:14] for p in ("tap", "qbr", "qvb", "qvo")}


def ext_ids(pid: str, m: str) -> dict[str, str]:
    return {"iface-id": pid, "iface-status": "active", "attached-mac": m, "vm-uuid": INSTANCE}


OSVIF_SCRIPT = PROLOGUE + r'''
start = int(sys.argv[5])

def vif(s):
    return make_vif(f"{s:08x}-ab00-4000-8000-0000000000ab",
                    f"fa:16:3e:{(s >> 16) & 255:02x}:{(s >> 8) & 255:02x}:{s & 255:02x}")

for w in range(2):  # connect, load the schema, page in: not timed
    v = vif(start + w)
    os_vif.plug(v, inst)
    os_vif.unplug(v, inst)
plug, unplug = [], []
for i in range(n):
    v = vif(start + 2 + i)
    t0 = time.perf_counter()
    os_vif.plug(v, inst)
    t1 = time.perf_counter()
    os_vif.unplug(v, inst)
    t2 = time.perf_counter()
    plug.append(t1 - t0)
    unplug.append(t2 - t1)
print(json.dumps({"plug": plug, "unplug": unplug}))
'''


def run_osvif(ns: str, ovs: PrivateOVS, kind: str, n: int, tmp: str) -> tuple[list[float], list[float]]:
    script = os.path.join(tmp, "osvif_single.py")
    with open(script, "w") as f:
        f.write(OSVIF_SCRIPT)
    start = SERIAL.take(n + 2)
    r = subprocess.run(["ip", "netns", "exec", ns, OSVIF_PY, script, ovs.endpoint, kind, str(n), str(MTU),
                        str(start)], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise Failed(f"os-vif run failed: {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["plug"], out["unplug"]


# --------------------------------------------------------------------------- the floor, in-process

TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_UP = 0x0002, 0x1000, 0x4000, 0x1
SYSCTLS = ("ipv4/conf/{d}/forwarding=1", "ipv6/conf/{d}/forwarding=1", "ipv6/conf/{d}/accept_ra=0",
           "ipv4/conf/{d}/proxy_arp=1", "ipv4/neigh/{d}/proxy_delay=0", "ipv6/neigh/{d}/proxy_delay=0")

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/neighbour.h)
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_NEWROUTE, RTM_NEWNEIGH = 16, 17, 24, 28
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
RTA_DST, RTA_OIF = 1, 4
NDA_DST, NTF_PROXY, NUD_PERMANENT = 1, 0x08, 0x80
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _name(s: str) -> bytes:
    return s.encode() + b"\0"


class Rtnl:
    """A bare rtnetlink socket: one request, one ack; no library between us and the kernel.
    Created on (and only used from) the namespace thread, so it talks to that namespace."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def req(self, mtype: int, body: bytes, flags: int = 0) -> None:
        self.seq += 1
        msg = struct.pack("=IHHII", 16 + len(body), mtype, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0) + body
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            ln, t, _f, seq, _p = struct.unpack_from("=IHHII", data)
            if t == NLMSG_ERROR and seq == self.seq:
                err = struct.unpack_from("=i", data, 16)[0]
                if err:
                    raise OSError(-err, f"rtnetlink {mtype}: {os.strerror(-err)}")
                return

    def link_set(self, index: int, *, up: bool = True, address: str | None = None, mtu: int | None = None,
                 master: int | None = None) -> None:
        attrs = b""
        if address:
            attrs += _attr(IFLA_ADDRESS, bytes(int(x, 16) for x in address.split(":")))
        if mtu:
            attrs += _attr(IFLA_MTU, struct.pack("=I", mtu))
        if master is not None:
            attrs += _attr(IFLA_MASTER, struct.pack("=I", master))
        self.req(RTM_NEWLINK, _IFINFO.pack(0, 0, index, IFF_UP if up else 0, IFF_UP) + attrs)

    def link_del(self, index: int) -> None:
        self.req(RTM_DELLINK, _IFINFO.pack(0, 0, index, 0, 0))

    def bridge_add(self, name: str, mtu: int) -> None:
        data = _attr(IFLA_BR_FORWARD_DELAY, struct.pack("=I", 0)) + _attr(IFLA_BR_STP_STATE, struct.pack("=I", 0))
        info = _attr(IFLA_INFO_KIND, b"bridge") + _attr(IFLA_INFO_DATA, data)
        self.req(RTM_NEWLINK, _IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, _name(name))
                 + _attr(IFLA_MTU, struct.pack("=I", mtu)) + _attr(IFLA_LINKINFO, info), NLM_F_CREATE | NLM_F_EXCL)

    def veth_add(self, name: str, peer: str, mtu: int, peer_address: str | None = None) -> None:
        pattrs = _attr(IFLA_IFNAME, _name(peer)) + _attr(IFLA_MTU, struct.pack("=I", mtu))
        if peer_address:
            pattrs += _attr(IFLA_ADDRESS, bytes(int(x, 16) for x in peer_address.split(":")))
        data = _attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + pattrs)
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, data)
        self.req(RTM_NEWLINK, _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name))
                 + _attr(IFLA_MTU, struct.pack("=I", mtu)) + _attr(IFLA_LINKINFO, info), NLM_F_CREATE | NLM_F_EXCL)

    def route_add(self, dst: str, oif: int) -> None:
        a = ipaddress.ip_address(dst)
        fam, plen, scope = (socket.AF_INET, 32, 253) if a.version == 4 else (socket.AF_INET6, 128, 0)
        body = _RTMSG.pack(fam, plen, 0, 0, 254, RTPROT, scope, 1, 0) + _attr(RTA_DST, a.packed) \
            + _attr(RTA_OIF, struct.pack("=I", oif))
        self.req(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)

    def proxy_add(self, dst: str, ifindex: int) -> None:
        a = ipaddress.ip_address(dst)
        body = _NDMSG.pack(socket.AF_INET6, ifindex, NUD_PERMANENT, NTF_PROXY, 0) + _attr(NDA_DST, a.packed)
        self.req(RTM_NEWNEIGH, body, NLM_F_CREATE | NLM_F_EXCL)


class RawOvsdb:
    """A bare OVSDB JSON-RPC session (RFC 7047): one transaction per change, then
    wait for ovs-vswitchd to apply it (``cur_cfg`` catches up with ``next_cfg``,
    what ``ovs-vsctl`` waits for), from a monitor opened beforehand."""

    def __init__(self, endpoint: str):
        assert endpoint.startswith("unix:")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(endpoint[5:])
        self.sock.settimeout(60)
        self.buf = ""
        self.dec = json.JSONDecoder()
        self.id = 0
        self.cur_cfg = 0
        self.bridges: dict[str, str] = {}
        res = self._call("monitor", ["Open_vSwitch", None, {"Open_vSwitch": {"columns": ["cur_cfg"]},
                                                             "Bridge": {"columns": ["name"]}}])
        self._update(res)

    def close(self) -> None:
        self.sock.close()

    def _update(self, upd: dict) -> None:
        for uuid, row in (upd.get("Open_vSwitch") or {}).items():
            new = row.get("new") or {}
            if "cur_cfg" in new:
                self.cur_cfg = new["cur_cfg"]
        for uuid, row in (upd.get("Bridge") or {}).items():
            if row.get("new"):
                self.bridges[row["new"]["name"]] = uuid

    def _next(self) -> dict:
        while True:
            stripped = self.buf.lstrip()
            if stripped:
                try:
                    msg, end = self.dec.raw_decode(stripped)
                    self.buf = stripped[end:]
                    return msg
                except json.JSONDecodeError:
                    pass
            data = self.sock.recv(65536)
            if not data:
                raise OSError("ovsdb-server closed the connection")
            self.buf += data.decode()

    def _call(self, method: str, params: list) -> Any:
        self.id += 1
        my = self.id
        self.sock.sendall(json.dumps({"method": method, "params": params, "id": my}).encode())
        while True:
            msg = self._next()
            if msg.get("id") == my and "result" in msg:
                if msg.get("error"):
                    raise OSError(f"ovsdb {method}: {msg['error']}")
                return msg["result"]
            self._handle(msg)

    def _handle(self, msg: dict) -> None:
        if msg.get("method") == "update":
            self._update(msg["params"][1])
        elif msg.get("method") == "echo":
            self.sock.sendall(json.dumps({"result": msg["params"], "error": None, "id": msg["id"]}).encode())

    def _transact(self, ops: list) -> list:
        ops = ops + [{"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]},
                     {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}]
        res = self._call("transact", ["Open_vSwitch", *ops])
        errs = [r for r in res if isinstance(r, dict) and "error" in r]
        if errs:
            raise OSError(f"ovsdb transact: {errs[0]}")
        want = res[-1]["rows"][0]["next_cfg"]
        while self.cur_cfg < want:  # ovs-vswitchd has not applied it yet
            self._handle(self._next())
        return res

    def add_port(self, bridge: str, name: str, external_ids: dict[str, str], mtu: int) -> str:
        res = self._transact([
            {"op": "insert", "table": "Interface", "uuid-name": "i",
             "row": {"name": name, "mtu_request": mtu, "external_ids": ["map", sorted(external_ids.items())]}},
            {"op": "insert", "table": "Port", "uuid-name": "p",
             "row": {"name": name, "interfaces": ["named-uuid", "i"]}},
            {"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", self.bridges[bridge]]]],
             "mutations": [["ports", "insert", ["set", [["named-uuid", "p"]]]]]}])
        return res[1]["uuid"][1]

    def del_port(self, bridge: str, port_uuid: str) -> None:
        self._transact([{"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", self.bridges[bridge]]]],
                         "mutations": [["ports", "delete", ["set", [["uuid", port_uuid]]]]]}])


class FloorPort(service_bench.Port):
    """service_bench's routed port (elements, sysctls) on this run's serials."""

    def __init__(self, s: int):
        self.i = s
        self.id = port_id(s)
        self.dev = devname(s)
        self.mac = mac(s)
        self.ip4 = ip4(s)
        self.ip6 = ip6(s)


def _tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("=16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)
    return socket.if_nametoindex(name)


def _sysctls(dev: str) -> None:  # /proc/sys/net shows the reading thread's namespace
    for kv in SYSCTLS:
        k, v = kv.format(d=dev).split("=")
        with open(f"/proc/sys/net/{k}", "w") as f:
            f.write(v)


class Floor:
    """The least work that makes the same kernel objects, in-process: one thread
    inside the namespace running tun ioctls, bare rtnetlink requests and
    /proc/sys writes; one libnftables context (vifwire.executors.nft's ctypes
    binding: a thin wrapper over libnftables) for the filter elements; the OVS
    port by one bare OVSDB transaction, then waiting for ovs-vswitchd (cur_cfg)."""

    def __init__(self, ns: str, ovs: PrivateOVS | None):
        from vifwire.executors.nft import Nft
        from vifwire.netlink.netns import NsWorker

        self.ns, self.ovs = ns, ovs
        self.worker = NsWorker(ns, thread=True, name="bench-floor")
        self.rtnl: Rtnl = self.worker.call(Rtnl)
        self.nft = Nft(ns)
        self.nft.run_text(service_bench.NFT_TABLES)  # the stand-in tables, once (a host's infrastructure)
        self.bridge_idx: int | None = None
        self.ovsdb = RawOvsdb(ovs.endpoint) if ovs is not None else None
        self.ovs_ports: dict[str, str] = {}

    def close(self) -> None:
        if self.ovsdb is not None:
            self.ovsdb.close()
        with contextlib.suppress(Exception):
            self.nft.run_text("delete table inet floor\ndelete table arp floor\n")
        with contextlib.suppress(Exception):
            self.worker.call(self.rtnl.sock.close)
        for x in (self.nft, self.worker):
            with contextlib.suppress(Exception):
                x.close()

    def on(self, fn, *args):
        return self.worker.call(fn, *args)

    # routed tap with filters
    def plug_routed(self, s: int) -> None:
        p = FloorPort(s)

        def kernel() -> None:
            idx = _tap(p.dev)
            self.rtnl.link_set(idx, address=p.mac, mtu=MTU)
            _sysctls(p.dev)
            self.rtnl.route_add(p.ip4, idx)
            self.rtnl.route_add(p.ip6, idx)
        self.on(kernel)
        self.nft.run_text(service_bench.nft_text([p], "add"))

    def unplug_routed(self, s: int) -> None:
        p = FloorPort(s)
        self.on(lambda: self.rtnl.link_del(socket.if_nametoindex(p.dev)))
        self.nft.run_text(service_bench.nft_text([p], "delete"))

    # OVS: the port by one raw OVSDB transaction on a session opened beforehand, waiting for cur_cfg
    def _ovs_add(self, port: str, s: int) -> None:
        self.ovs_ports[port] = self.ovsdb.add_port("br-int", port, ext_ids(port_id(s), mac(s)), MTU)

    def _ovs_del(self, port: str) -> None:
        self.ovsdb.del_port("br-int", self.ovs_ports.pop(port))

    def plug_ovs_plain(self, s: int) -> None:
        dev = devname(s)
        self.on(lambda: self.rtnl.link_set(_tap(dev), mtu=MTU))
        self._ovs_add(dev, s)

    def unplug_ovs_plain(self, s: int) -> None:
        dev = devname(s)
        self._ovs_del(dev)
        self.on(lambda: self.rtnl.link_del(socket.if_nametoindex(dev)))

    def plug_ovs_hybrid(self, s: int) -> None:
        nm = ovs_names(port_id(s))

        def kernel() -> None:
            self.rtnl.bridge_add(nm["qbr"], MTU)
            self.rtnl.veth_add(nm["qvb"], nm["qvo"], MTU)
            self.rtnl.link_set(socket.if_nametoindex(nm["qvb"]), master=socket.if_nametoindex(nm["qbr"]))
            self.rtnl.link_set(socket.if_nametoindex(nm["qvo"]))
        self.on(kernel)
        self._ovs_add(nm["qvo"], s)

    def unplug_ovs_hybrid(self, s: int) -> None:
        nm = ovs_names(port_id(s))
        self._ovs_del(nm["qvo"])
        self.on(lambda: (self.rtnl.link_del(socket.if_nametoindex(nm["qvb"])),
                         self.rtnl.link_del(socket.if_nametoindex(nm["qbr"]))))

    # veth + Linux bridge (devices only)
    def plug_veth_bridge(self, s: int) -> None:
        if self.bridge_idx is None:  # the bridge is made once, untimed in effect (first warm-up plug)
            def mk() -> int:
                with contextlib.suppress(OSError):
                    return socket.if_nametoindex(FLOOR_BRIDGE)
                self.rtnl.bridge_add(FLOOR_BRIDGE, MTU)
                return socket.if_nametoindex(FLOOR_BRIDGE)
            self.bridge_idx = self.on(mk)
        tap = devname(s)

        def kernel() -> None:
            self.rtnl.veth_add(tap, "tin" + tap[3:], MTU, mac(s))
            self.rtnl.link_set(socket.if_nametoindex(tap), master=self.bridge_idx)
        self.on(kernel)

    def unplug_veth_bridge(self, s: int) -> None:
        self.on(lambda: self.rtnl.link_del(socket.if_nametoindex(devname(s))))


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args, tmp: str, logdir: str):
        self.a = args
        self.tmp = tmp
        self.logdir = logdir
        self.res = Results()
        self.thin_cli = self._has_thin_cli()
        self.res.notes["thin_cli"] = self.thin_cli
        self._files = 0

    @staticmethod
    def _has_thin_cli() -> bool:
        r = subprocess.run([VIFWIRE, "plug", "--help"], capture_output=True, text=True)
        return "--agent" in r.stdout

    def write_doc(self, d: Any) -> str:
        self._files += 1
        p = os.path.join(self.tmp, f"port-{self._files:05d}.json")
        with open(p, "w") as f:
            json.dump(d, f)
        return p

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- single port

    def single(self) -> None:
        cases = self.a.cases
        with host_ns("agb") as ns:
            ovs = PrivateOVS()
            try:
                ovs.start(ns)
                ovs.add_bridge("br-int")
                for r in range(self.a.rounds):
                    for case in cases:
                        self.single_case(ns, ovs, case, r)
            finally:
                ovs.stop()

    def single_case(self, ns: str, ovs: PrivateOVS, case: str, rnd: int) -> None:
        c = CASES[case]
        n = self.a.n
        groups = ["agent", "cli"] + (["os-vif"] if c["osvif"] and not self.a.no_osvif else []) + ["floor"]
        k = rnd % len(groups)
        for g in groups[k:] + groups[:k]:  # rotate per round: no group always first
            try:
                if g == "agent":
                    self.single_agent(ns, ovs, case, n)
                elif g == "cli":
                    self.single_cli(ns, ovs, case, n)
                elif g == "os-vif":
                    row = self.res.row(case, "os-vif in-process")
                    pl, un = run_osvif(ns, ovs, c["osvif"], n, self.tmp)
                    row["plug"] += pl
                    row["unplug"] += un
                    self.progress(case, "os-vif in-process")
                else:
                    self.single_floor(ns, ovs, case, n)
            except (Failed, OSError, subprocess.SubprocessError) as exc:
                self.log(f"  FAILED {case} {g}: {exc}")
                for path in PATHS:
                    row = self.res.row(case, path)
                    if not row["plug"] and not row["na"] and row["error"] is None and self._in_group(path, g):
                        row["error"] = str(exc)[:2000]
            left = leftovers(ns, ovs)
            if left:
                self.log(f"  ! {case} {g} left {len(left)} thing(s) behind, e.g. {left[:4]}")
                self.res.notes.setdefault("leftovers", []).append({"case": case, "group": g, "left": left[:20]})
                clean(ns, ovs)

    @staticmethod
    def _in_group(path: str, g: str) -> bool:
        return {"agent": path.startswith("agent") or path.startswith("thin"), "cli": path == "CLI, no agent",
                "os-vif": path.startswith("os-vif"), "floor": path == "floor"}[g]

    def progress(self, case: str, path: str) -> None:
        row = self.res.row(case, path)
        m50, m99 = p50(row["plug"]), p99(row["plug"])
        u50 = p50(row["unplug"])
        self.log(f"  {case:11} {path:18} plug p50 {m50 * 1e3:8.2f} p99 {m99 * 1e3:8.2f} ms"
                 + (f"  unplug p50 {u50 * 1e3:8.2f} ms" if u50 is not None else ""))

    def envelope(self, case: str, docs: list[dict]) -> dict:
        return {"ports": docs, "facts": CASES[case]["facts"]}

    def single_agent(self, ns: str, ovs: PrivateOVS, case: str, n: int) -> None:
        c = CASES[case]
        ag = Agent(self.tmp, f"single-{case}-{SERIAL.take()}", ns, ovs.endpoint, c["flags"], self.a.agent_debug,
                   self.logdir)
        try:
            ag.start()
            for _ in range(2):  # warm-up (the first plug may create nft tables, a bridge): untimed
                s = SERIAL.take()
                expect_plugged(*call(ag.sock, "POST", "/v1/ports", self.envelope(case, [doc(case, s)])))
                expect_unplugged(*call(ag.sock, "DELETE", f"/v1/ports/{port_id(s)}"))
            self.http_overhead(ag, case)
            # new connection per request
            row = self.res.row(case, "agent, new conn")
            for _ in range(n):
                s = SERIAL.take()
                body = self.envelope(case, [doc(case, s)])
                t0 = time.perf_counter()
                st, out = call(ag.sock, "POST", "/v1/ports", body)
                t1 = time.perf_counter()
                expect_plugged(st, out)
                t2 = time.perf_counter()
                st, out = call(ag.sock, "DELETE", f"/v1/ports/{port_id(s)}")
                t3 = time.perf_counter()
                expect_unplugged(st, out)
                row["plug"].append(t1 - t0)
                row["unplug"].append(t3 - t2)
            self.progress(case, "agent, new conn")
            # keep-alive
            row = self.res.row(case, "agent, keep-alive")
            conn = UnixConnection(ag.sock)
            try:
                for _ in range(n):
                    s = SERIAL.take()
                    body = self.envelope(case, [doc(case, s)])
                    t0 = time.perf_counter()
                    st, out = request(conn, "POST", "/v1/ports", body)
                    t1 = time.perf_counter()
                    expect_plugged(st, out)
                    t2 = time.perf_counter()
                    st, out = request(conn, "DELETE", f"/v1/ports/{port_id(s)}")
                    t3 = time.perf_counter()
                    expect_unplugged(st, out)
                    row["plug"].append(t1 - t0)
                    row["unplug"].append(t3 - t2)
            finally:
                conn.close()
            self.progress(case, "agent, keep-alive")
            # the thin CLI, whole process
            row = self.res.row(case, "thin CLI --agent")
            if not self.thin_cli:
                row["na"] = "vifwire plug has no --agent option (yet)"
            else:
                try:
                    for _ in range(n):
                        s = SERIAL.take()
                        f = self.write_doc(doc(case, s))
                        dt, _r = run_proc([VIFWIRE, "plug", "--agent", ag.sock, f, *c["flags"]])
                        st, out = call(ag.sock, "GET", f"/v1/ports/{port_id(s)}")
                        if st != 200:
                            raise Failed(f"thin CLI plug exited 0 but the agent has no record of it: {out}")
                        expect_unplugged(*call(ag.sock, "DELETE", f"/v1/ports/{port_id(s)}"))
                        row["plug"].append(dt)
                    self.progress(case, "thin CLI --agent")
                except Failed as exc:
                    row["error"] = str(exc)[:2000]
                    self.log(f"  FAILED {case} thin CLI: {exc}")
            self.agent_notes(ag, case)
        finally:
            ag.stop()

    def http_overhead(self, ag: Agent, case: str, n: int = 50) -> None:
        """The API's own round trip, no host work: GET /v1/health, new connection and keep-alive."""
        new, ka = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            call(ag.sock, "GET", "/v1/health")
            new.append(time.perf_counter() - t0)
        conn = UnixConnection(ag.sock)
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                request(conn, "GET", "/v1/health")
                ka.append(time.perf_counter() - t0)
        finally:
            conn.close()
        self.res.notes.setdefault("health_rtt_s", {}).setdefault(case, {"new_conn": [], "keep_alive": []})
        self.res.notes["health_rtt_s"][case]["new_conn"] += new
        self.res.notes["health_rtt_s"][case]["keep_alive"] += ka

    def agent_notes(self, ag: Agent, case: str) -> None:
        with contextlib.suppress(Exception):
            st, ev = call(ag.sock, "GET", "/v1/events?since=0")
            kinds = Counter(e["type"] for e in ev.get("events", []))
            self.res.notes.setdefault("single_agent_events", {})[case] = dict(kinds)
            if kinds.get("repaired") or kinds.get("drift") or kinds.get("failed"):
                self.log(f"  ! {case}: agent events during single plugs: {dict(kinds)}")

    def cli_base(self, ns: str, ovs: PrivateOVS, db: str) -> list[str]:
        return ["--netns", ns, "--state", db, "--ovsdb", ovs.endpoint]

    def single_cli(self, ns: str, ovs: PrivateOVS, case: str, n: int) -> None:
        c = CASES[case]
        db = os.path.join(self.tmp, f"cli-{case}-{SERIAL.take()}.db")
        base = self.cli_base(ns, ovs, db)
        row = self.res.row(case, "CLI, no agent")
        for k in range(n + 2):
            s = SERIAL.take()
            f = self.write_doc(doc(case, s))
            dt, _ = run_proc([VIFWIRE, "plug", f, *base, "--ovs-datapath", "netdev", *c["flags"]])
            du, _ = run_proc([VIFWIRE, "unplug", port_id(s), *base])
            if k >= 2:  # two warm-up runs
                row["plug"].append(dt)
                row["unplug"].append(du)
        self.progress(case, "CLI, no agent")

    def single_floor(self, ns: str, ovs: PrivateOVS, case: str, n: int) -> None:
        fl = Floor(ns, ovs)
        try:
            plug = getattr(fl, "plug_" + case.replace("-", "_"))
            unplug = getattr(fl, "unplug_" + case.replace("-", "_"))
            row = self.res.row(case, "floor")
            for k in range(n + 2):
                s = SERIAL.take()
                t0 = time.perf_counter()
                plug(s)
                t1 = time.perf_counter()
                unplug(s)
                t2 = time.perf_counter()
                if k >= 2:
                    row["plug"].append(t1 - t0)
                    row["unplug"].append(t2 - t1)
            self.progress(case, "floor")
        finally:
            fl.close()
            with contextlib.suppress(Exception):
                subprocess.run(["ip", "-n", ns, "link", "del", FLOOR_BRIDGE], capture_output=True)

    # ---------------------------------------------------------------- concurrency

    def concurrency(self) -> None:
        clients, per = self.a.clients, self.a.per_client
        total = clients * per
        for r in range(self.a.rounds):
            serials = [SERIAL.take(per) for _ in range(clients)]
            docs = [[doc("routed", s0 + k) for k in range(per)] for s0 in serials]
            out: dict[str, Any] = {"clients": clients, "per_client": per, "ports": total}
            order = ("concurrent", "bulk") if r % 2 == 0 else ("bulk", "concurrent")
            for what in order:
                with host_ns("agc") as ns:
                    ag = Agent(self.tmp, f"{what}-{SERIAL.take()}", ns, f"unix:{self.tmp}/no-ovs.sock",
                               CASES["routed"]["flags"], self.a.agent_debug, self.logdir)
                    try:
                        ag.start()
                        # one untimed warm-up port (the nft tables are made once per host)
                        s = SERIAL.take()
                        expect_plugged(*call(ag.sock, "POST", "/v1/ports", self.envelope("routed", [doc("routed", s)])))
                        expect_unplugged(*call(ag.sock, "DELETE", f"/v1/ports/{port_id(s)}"))
                        rounds0 = ag.metric("vifwire_writer_rounds_total") or 0.0
                        if what == "bulk":
                            body = self.envelope("routed", [d for ds in docs for d in ds])
                            t0 = time.perf_counter()
                            st, res = call(ag.sock, "POST", "/v1/ports", body)
                            dt = time.perf_counter() - t0
                            expect_plugged(st, res, total)
                            out["bulk_s"] = dt
                        else:
                            dt, lat = self.run_clients(ag.sock, docs)
                            out["concurrent_s"] = dt
                            out["latency_p50_s"], out["latency_p99_s"] = p50(lat), p99(lat)
                            out["writer_rounds"] = (ag.metric("vifwire_writer_rounds_total") or 0.0) - rounds0
                        n_taps = sum(1 for x in links(ns) if x.startswith("tap"))
                        if n_taps != total:
                            raise Failed(f"{what}: {n_taps} taps in the namespace, expected {total}")
                        t0 = time.perf_counter()
                        expect_unplugged(*call(ag.sock, "POST", "/v1/ports/delete", {"all": True}))
                        out[f"{what}_unplug_all_s"] = time.perf_counter() - t0
                    finally:
                        ag.stop()
                self.log(f"  concurrency round {r + 1}: {what} {out.get(what + '_s', 0):.2f} s for {total} ports")
            if "bulk_s" in out and "concurrent_s" in out:
                out["ratio"] = out["bulk_s"] / out["concurrent_s"]
            self.res.concurrency.append(out)

    def run_clients(self, sock: str, docs: list[list[dict]]) -> tuple[float, list[float]]:
        barrier = threading.Barrier(len(docs) + 1)
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(ds: list[dict]) -> None:
            mine = []
            try:
                barrier.wait()
                for d in ds:
                    t0 = time.perf_counter()
                    st, out = call(sock, "POST", "/v1/ports", self.envelope("routed", [d]))
                    mine.append(time.perf_counter() - t0)
                    expect_plugged(st, out)
            except Exception as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(f"{exc.__class__.__name__}: {exc}")
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client, args=(ds,), daemon=True) for ds in docs]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        if errors:
            raise Failed(f"{len(errors)} client(s) failed, e.g. {errors[0][:1500]}")
        return dt, lat

    # ---------------------------------------------------------------- restart

    def restart(self) -> None:
        n = self.a.restart_ports
        with host_ns("agr") as ns:
            state = os.path.join(self.tmp, "restart.db")
            mk = lambda: Agent(self.tmp, "restart", ns, f"unix:{self.tmp}/no-ovs.sock",  # noqa: E731
                               CASES["routed"]["flags"], self.a.agent_debug, self.logdir, state=state)
            ag = mk()
            try:
                ag.start()
                s0 = SERIAL.take(n)
                t0 = time.perf_counter()
                expect_plugged(*call(ag.sock, "POST", "/v1/ports",
                                     self.envelope("routed", [doc("routed", s0 + k) for k in range(n)])), n)
                self.res.notes["restart_bulk_plug_s"] = time.perf_counter() - t0
                time.sleep(1.5)  # let the agent's own netlink echo settle
                for r in range(max(1, self.a.rounds_restart)):
                    before = {k: v for k, v in links(ns).items() if k.startswith("tap")}
                    routes_before = self.vifwire_routes(ns)
                    stop_s = ag.stop()
                    ag = mk()
                    ag.start()
                    ready = ag.ready_s
                    st, ev = call(ag.sock, "GET", "/v1/events?since=0")
                    kinds = Counter(e["type"] for e in ev.get("events", []))
                    st, chk = call(ag.sock, "GET", "/v1/check")
                    after = {k: v for k, v in links(ns).items() if k.startswith("tap")}
                    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
                    m = re.findall(r"start-up reconcile took ([0-9.]+) ms", ag.tail(20000))
                    out = {"ports": n, "taps_before": len(before), "taps_after": len(after),
                           "ifindex_changed": len(changed), "changed_examples": changed[:5],
                           "routes_before": routes_before, "routes_after": self.vifwire_routes(ns),
                           "events": dict(kinds), "repaired": kinds.get("repaired", 0),
                           "drift": kinds.get("drift", 0), "check_status": st,
                           "check_drift": len(chk.get("drift", {})) if isinstance(chk, dict) else None,
                           "checked": chk.get("checked") if isinstance(chk, dict) else None,
                           "ready_s": ready, "stop_s": stop_s,
                           "reconcile_ms_logged": float(m[-1]) if m else None}
                    self.res.restart.append(out)
                    self.log(f"  restart {r + 1}: ready in {ready * 1e3:.0f} ms (reconcile "
                             f"{out['reconcile_ms_logged']} ms), stop {stop_s or 0:.2f} s, events {dict(kinds)}, "
                             f"ifindex changed {len(changed)}, check drift {out['check_drift']}")
                    time.sleep(0.5)
                expect_unplugged(*call(ag.sock, "POST", "/v1/ports/delete", {"all": True}))
            finally:
                ag.stop()

    @staticmethod
    def vifwire_routes(ns: str) -> int:
        n = 0
        for fam in ("-4", "-6"):
            out = subprocess.run(["ip", "-n", ns, fam, "route", "show", "proto", str(RTPROT)], capture_output=True,
                                 text=True).stdout
            n += len(out.splitlines())
        return n


# --------------------------------------------------------------------------- report


def report(res: Results, a, thin_cli: bool) -> tuple[str, list[dict]]:
    lines: list[str] = []
    targets: list[dict] = []
    P = lines.append
    if res.single:
        P(f"\nSingle-port plug, ms (N = {a.n * a.rounds} plugs per row, each a new port, unplugged after; "
          "client already running)\n")
        P("| case | path | p50 | p99 | min | unplug p50 | os-vif p50 / this | target |")
        P("|---|---|---:|---:|---:|---:|---:|---|")
        for case in a.cases:
            osv = p50(res.row(case, "os-vif in-process")["plug"])
            for path in PATHS:
                key = f"{case}|{path}"
                if key not in res.single:
                    continue
                row = res.single[key]
                xs = row["plug"]
                if not xs:
                    cell = "n/a" if row["na"] else ("FAILED" if row["error"] else "-")
                    P(f"| {CASES[case]['title']} | {path} | {cell} | | | | | |")
                    continue
                m = p50(xs)
                ratio = f"{osv / m:.1f}x" if osv and case.startswith("ovs") else ""
                tgt = ""
                if case == "ovs-plain" and path.startswith("agent"):
                    tgt = f">= 5x os-vif: {'met' if osv and osv / m >= 5 else 'NOT met'}" if osv else ">= 5x os-vif: -"
                if case == "routed" and path.startswith("agent"):
                    tgt = f"<= 3 ms p50: {'met' if m <= 0.003 else 'NOT met'}"
                P(f"| {CASES[case]['title']} | {path} | {ms(m)} | {ms(p99(xs))} | {ms(min(xs))} | "
                  f"{ms(p50(row['unplug']))} | {ratio} | {tgt} |")
        if not thin_cli:
            P("\n(thin CLI --agent: n/a, `vifwire plug` has no --agent option in this tree yet)")
        rtt = res.notes.get("health_rtt_s") or {}
        if rtt:
            nc = [x for v in rtt.values() for x in v["new_conn"]]
            ka = [x for v in rtt.values() for x in v["keep_alive"]]
            P(f"\nThe API's own round trip (GET /v1/health, no host work): new connection p50 {ms(p50(nc))} "
              f"p99 {ms(p99(nc))} ms; keep-alive p50 {ms(p50(ka))} p99 {ms(p99(ka))} ms")
        evs = res.notes.get("single_agent_events") or {}
        odd = {c: {k: v for k, v in e.items() if k not in ("plugged", "unplugged")} for c, e in evs.items()}
        odd = {c: e for c, e in odd.items() if e}
        if odd:
            P(f"Agent events other than plugged/unplugged during the single plugs: {odd}")
        # targets
        for path in ("agent, new conn", "agent, keep-alive"):
            if "ovs-plain" in a.cases:
                m = p50(res.row("ovs-plain", path)["plug"])
                o = p50(res.row("ovs-plain", "os-vif in-process")["plug"])
                targets.append({"target": f"OVS plain single plug, {path}: >= 5x faster than os-vif in-process",
                                "value": f"{o / m:.1f}x ({ms(o)} vs {ms(m)} ms p50)" if m and o else "-",
                                "met": (o / m >= 5) if m and o else None})
            if "routed" in a.cases:
                m = p50(res.row("routed", path)["plug"])
                targets.append({"target": f"routed tap + filters single plug, {path}: <= 3 ms p50",
                                "value": f"{ms(m)} ms p50 (p99 {ms(p99(res.row('routed', path)['plug']))})",
                                "met": (m <= 0.003) if m else None})
    if res.concurrency:
        P("\nConcurrency: routed taps with anti-spoofing, one request per port (new connection each) "
          "vs one bulk POST\n")
        P("| run | clients x ports | concurrent wall s | ports/s | req p50 ms | req p99 ms | writer rounds "
          "| bulk POST s | ports/s | concurrent / bulk |")
        P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, c in enumerate(res.concurrency):
            cs, bs = c.get("concurrent_s"), c.get("bulk_s")
            P(f"| {i + 1} | {c['clients']} x {c['per_client']} | {cs:.2f} | {c['ports'] / cs:.0f} | "
              f"{ms(c.get('latency_p50_s'), 1)} | {ms(c.get('latency_p99_s'), 1)} | {c.get('writer_rounds', 0):.0f} | "
              f"{bs:.2f} | {c['ports'] / bs:.0f} | {bs / cs:.0%} |" if cs and bs else
              f"| {i + 1} | {c['clients']} x {c['per_client']} | {cs or '-'} | | | | | {bs or '-'} | | |")
        ratios = [c["ratio"] for c in res.concurrency if "ratio" in c]
        r = statistics.median(ratios) if ratios else None
        targets.append({"target": f"{res.concurrency[0]['clients']} concurrent clients' throughput >= 50% of one "
                                  f"bulk plug of the same {res.concurrency[0]['ports']} ports",
                        "value": f"{r:.0%}" if r is not None else "-", "met": (r >= 0.5) if r is not None else None})
    if res.restart:
        P("\nRestart with correct ports: SIGTERM, start again on the same state\n")
        P("| # | ports | ready (Popen -> health) ms | reconcile ms (log) | stop s | repaired | drift | "
          "ifindex changed | routes before/after | check drift |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for i, x in enumerate(res.restart):
            P(f"| {i + 1} | {x['ports']} | {ms(x['ready_s'], 0)} | {x['reconcile_ms_logged']} | "
              f"{x['stop_s'] or 0:.2f} | {x['repaired']} | {x['drift']} | {x['ifindex_changed']} | "
              f"{x['routes_before']}/{x['routes_after']} | {x['check_drift']} |")
        worst_ready = max(x["ready_s"] for x in res.restart)
        changes = sum(x["repaired"] + x["drift"] + x["ifindex_changed"] + abs(x["routes_before"] - x["routes_after"])
                      + (x["taps_before"] != x["taps_after"]) for x in res.restart)
        n = res.restart[0]["ports"]
        targets.append({"target": f"restart with {n} correct ports: 0 changes",
                        "value": f"{changes} change(s) over {len(res.restart)} restart(s)", "met": changes == 0})
        targets.append({"target": f"restart with {n} correct ports: ready <= 1 s",
                        "value": f"worst {worst_ready * 1e3:.0f} ms, median "
                                 f"{statistics.median(x['ready_s'] for x in res.restart) * 1e3:.0f} ms",
                        "met": worst_ready <= 1.0})
    lines += benchkit.targets_table(targets)
    return "\n".join(lines), targets


# --------------------------------------------------------------------------- main


def loadavg() -> str:
    return benchkit.loadavg()


def tree_state() -> str:
    return f"tree {benchkit.tree_state(ROOT)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=20 single plugs per row")
    ap.add_argument("-n", type=int, default=None, help="single-port plugs per row and round (default 100)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat single-port and concurrency runs (order rotated)")
    ap.add_argument("--rounds-restart", type=int, default=3, help="restarts on the same 1000 ports")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--skip", nargs="+", choices=("single", "concurrency", "restart"), default=[])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=100)
    ap.add_argument("--restart-ports", type=int, default=1000)
    ap.add_argument("--no-osvif", action="store_true", help="skip os-vif (no .venv-osvif needed)")
    ap.add_argument("--agent-debug", action="store_true", help="run the agents with -vv (phase timings in the logs)")
    ap.add_argument("--logs", metavar="DIR", help="keep the agents' logs here (default: a temp dir, removed)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results here")
    a = ap.parse_args()
    a.n = a.n or (20 if a.quick else 100)
    main_pid = os.getpid()

    def interrupted(*_):  # SIGTERM: clean up as for ^C
        if os.getpid() != main_pid:
            os._exit(143)  # a forked helper (pyroute2's netns socket maker): never run our cleanup
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if os.geteuid() != 0:
        print("needs root (network namespaces, a private OVS)", file=sys.stderr)
        return 2
    if not a.no_osvif and "single" not in a.skip and any(CASES[c]["osvif"] for c in a.cases):
        ensure_osvif()
    if a.logs:
        os.makedirs(a.logs, exist_ok=True)
    load0 = loadavg()
    tmp = tempfile.mkdtemp(prefix="vw-agb-")
    bench = Bench(a, tmp, a.logs or tmp)
    t_start = time.monotonic()
    try:
        bench.log(f"agent bench: N={a.n} x {a.rounds} round(s), cases {' '.join(a.cases)}, thin CLI "
                  f"{'present' if bench.thin_cli else 'absent (n/a)'}, {os.cpu_count()} CPUs")
        for part in ("single", "concurrency", "restart"):
            if part in a.skip:
                continue
            try:
                getattr(bench, part)()
            except (Failed, OSError, subprocess.SubprocessError) as exc:
                bench.log(f"  FAILED {part}: {exc}")
                bench.res.notes.setdefault("failed", {})[part] = str(exc)[:3000]
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(bench.res.dump(), f, indent=1)
    except KeyboardInterrupt:
        bench.log("interrupted: cleaning up")
        raise
    finally:
        with no_signals():
            for ag in list(LIVE_AGENTS):
                ag.stop(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)
    text, targets = report(bench.res, a, bench.thin_cli)
    bench.res.notes["targets"] = targets
    bench.res.notes["wall_s"] = time.monotonic() - t_start
    if a.json:
        with open(a.json, "w") as f:
            json.dump(bench.res.dump(), f, indent=1)
    print(text)
    print(f"\n({time.monotonic() - t_start:.0f} s; kernel {os.uname().release}, {os.cpu_count()} CPUs, shared by "
          f"the bench client and the agent; load average at start {load0}, at end {loadavg()}; {tree_state()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
