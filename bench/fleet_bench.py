"""Fleet-mode benchmark (issue 14): ``vifwire fleet apply`` to three agents
against bulk ``vifwire plug``, an agent restart on correct ports, and the
idle agent's CPU.

Everything runs in throwaway namespaces this script creates (one per host
and path: a host is a namespace wired by its own ``vifwire agent --netns NS
--etcd URL --host NAME`` running in the root namespace, as
tests/test_fleet_agent.py does), against a private etcd (loopback ports
picked free, data in a temporary directory). Agents, etcd, the CLI processes
and the namespaces are always stopped/removed, by PID and by name, also on
failure, Ctrl-C or SIGTERM. The ports are routed taps (``vif_type tap``, one
IPv4 and one IPv6 address, the default host facts: tap, filter elements,
sysctls, two host routes, a proxy-NDP entry), tests/routed_host.py
``port(i)``, distinct on every host (host h has i = h*N+1 .. (h+1)*N).

**1. Apply vs bulk plug** (3 hosts x ``--ports`` ports, default 1000;
``--quick`` 200):

* ``bulk CLI``: one ``vifwire plug --netns NS --state DB FILE`` per host, the
  three processes started together (fresh namespaces); the wall time until
  the last one exits (process start-up included, as an operator sees it);
* ``fleet``: three agents running and ready in fresh namespaces (0 ports),
  then one ``vifwire fleet apply FILE --host H`` per host, the three started
  together, timed from their start until every port of every host has a
  status ``plugged`` for its desired revision. Statuses are followed with an
  etcd watch on ``/vifwire/v1/status/`` opened before the apply (no polling
  load on the machine); afterwards ``vifwire fleet status --json`` must agree
  (every row ``plugged``) and each namespace must hold exactly its taps.

Target: fleet <= 1.5x the bulk CLI. ``--rounds`` repeats this part (new
namespaces, agents and host names each round; medians are reported).

**2. Restart with correct ports** (fleet mode, the first host of the last
round, ``--restarts`` times, default 3): the agent is stopped (SIGTERM) and
started again on the same state and host name. Timed from ``Popen`` to
``/v1/health`` ready (polled every 2 ms) and to "converged": the agent's log
line ``fleet: N desired port(s) at revision R``, which it writes after its
full resync and its status writes (log polled every 5 ms; the status puts of
the resync are counted with a watch). Changes counted: taps whose ifindex
differs before/after (or that appeared/vanished), vifwire routes before/after,
the agent's events (``repaired``, ``drift``, ``plugged``, ``unplugged``), its
metrics (plug/unplug histogram counts, drift found/repaired, failures) and
its ``fleet: P plugged, U unplugged, K unchanged`` log line. Targets: 0
changes, ready <= 1 s.

**3. Idle CPU**: every agent of the last round (``--ports`` ports each,
nothing changing) over ``--idle`` seconds (default 60; ``--quick`` 15), after
a settle pause: utime+stime from /proc/PID/stat before and after (children
too, reported apart); etcd's own CPU and the etcd revision (writes) over the
same window are shown for context, and the taps' ifindexes must not change.
Target: <= 1% of one core (the worst agent).

    sudo .venv/bin/python bench/fleet_bench.py [--quick] [--ports 1000] [--hosts 3] [--rounds 1]
        [--restarts 3] [--idle 60] [--skip apply restart idle] [--logs DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import benchkit  # noqa: E402 - medians, cells, namespace emptying, ^C-proof sections
from benchkit import call, no_signals, p50  # noqa: E402

from vifwire.fleetkit import keys  # noqa: E402
from vifwire.fleetkit.etcd import Etcd, EtcdError  # noqa: E402
from vifwire.sandbox import netns  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
VIFWIRE = os.path.join(VENV_BIN, "vifwire")
ETCD = "/usr/bin/etcd"
RTPROT = 158
GW4 = "169.254.1.1"
GROUP = 0x7677FFFC  # link group used to empty namespaces quickly
CLK_TCK = os.sysconf("SC_CLK_TCK")
BURST_TICKS = max(1, CLK_TCK // 20)  # a second in which an agent used >= 5% of a core
CONVERGED_RE = re.compile(r"fleet: (\d+) desired port\(s\) at revision (\d+)")
CHANGED_RE = re.compile(r"fleet: (\d+) plugged, (\d+) unplugged, (\d+) unchanged")


class Failed(Exception):
    pass


# --------------------------------------------------------------------------- ports


def port(i: int) -> dict:
    """tests/routed_host.py's port(i): a routed tap with one IPv4 and one IPv6 address."""
    return {"id": f"{i:08x}-c0fe-4000-8000-00000000c0fe", "mac_address": f"fa:16:3e:c0:{i >> 8:02x}:{i & 255:02x}",
            "network_id": "4c1e6a0d-0000-4000-8000-0000000000cc",
            "fixed_ips": [{"subnet_id": "s4", "ip_address": f"10.100.{i // 200}.{i % 200 + 1}"},
                          {"subnet_id": "s6", "ip_address": f"fd97::{i:x}"}],
            "binding:vif_type": "tap", "binding:vif_details": {}, "binding:vnic_type": "normal",
            "binding:host_id": "t", "device_id": f"inst-{i}", "network": {"mtu": 1400}}


def devname(doc: dict) -> str:
    return ("tap" + doc["id"])[:14]


# --------------------------------------------------------------------------- processes we start

LIVE: list[subprocess.Popen] = []  # every child still running (stopped by PID in the clean-up)


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen:
    p = subprocess.Popen(argv, **kw)
    LIVE.append(p)
    return p


def reap(p: subprocess.Popen) -> None:
    with contextlib.suppress(ValueError):
        LIVE.remove(p)


def stop_pid(p: subprocess.Popen, timeout: float = 30.0) -> float | None:
    """SIGTERM our child (by its PID), SIGKILL if it lingers; seconds it took, None if it had exited."""
    if p.poll() is not None:
        reap(p)
        return None
    t0 = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"  ! process {p.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL", file=sys.stderr)
        p.kill()
        p.wait()
    reap(p)
    return time.perf_counter() - t0


def run_parallel(argvs: list[list[str]], t0: float, timeout: float) -> list[tuple[float, int, str, str]]:
    """Start every argv at once; (seconds from t0 to its exit, exit code, stdout, stderr) of each."""
    procs = [spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    outs: list[Any] = [None] * len(procs)

    def waiter(k: int, p: subprocess.Popen) -> None:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pid(p, 10)
            out, err = p.communicate()
            err = f"timed out after {timeout:.0f} s; {err}"
        outs[k] = (time.perf_counter() - t0, p.returncode, out, err)

    threads = [threading.Thread(target=waiter, args=(k, p), daemon=True) for k, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        reap(p)
    if any(o is None for o in outs):
        raise Failed(f"{argvs[0][1]}: a process was not waited for")
    return outs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """One private etcd member on loopback (tests/etcd_fixtures.py's EtcdProc, minus TLS):
    free ports, data in our temporary directory, default raft timings."""

    def __init__(self, tmp: str, logdir: str):
        self.data_dir = os.path.join(tmp, "etcd-data")
        self.log = os.path.join(logdir, "etcd.log")
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> "EtcdServer":
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [ETCD, "--name", "bench", "--data-dir", self.data_dir, "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url, "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer, "--initial-cluster", f"bench={peer}",
                "--log-level", "warn", "--logger", "zap"]
        with open(self.log, "ab") as logf:
            self.proc = spawn(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"etcd exited with {self.proc.returncode}: {tail(self.log)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise Failed(f"etcd not healthy after {timeout:.0f} s: {tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc, 10)
            self.proc = None


def tail(path: str, n: int = 2500) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Agent:
    """One fleet-mode ``vifwire agent`` (root namespace, wiring ``ns``), stopped by its PID.
    Every start logs to a file of its own, so a start's lines are easy to tell apart."""

    def __init__(self, tmp: str, logdir: str, name: str, ns: str, etcd_url: str, host: str):
        self.name, self.tmp, self.logdir = name, tmp, logdir
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.state = os.path.join(tmp, f"{name}.db")
        self.argv = [VIFWIRE, "agent", "--socket", self.sock, "--state", self.state, "--netns", ns,
                     # never a system OVS: routed taps need none
                     "--ovsdb", f"unix:{tmp}/no-ovs.sock", "--etcd", etcd_url, "--host", host]
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log = ""
        self.t0 = 0.0
        self.ready_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0, poll: float = 0.002) -> "Agent":
        self.starts += 1
        self.log = os.path.join(self.logdir, f"{self.name}-{self.starts}.log")
        with open(self.log, "ab") as logf:
            self.t0 = time.perf_counter()
            self.proc = spawn(self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"agent {self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                status, body = call(self.sock, "GET", "/v1/health", timeout=5)
                if status == 200 and body.get("ready"):
                    self.ready_s = time.perf_counter() - self.t0
                    return self
            except OSError:
                pass
            time.sleep(poll)
        raise Failed(f"agent {self.name} not ready after {timeout:.0f} s: {self.tail()}")

    def wait_log(self, pattern: re.Pattern, timeout: float, poll: float = 0.005) -> tuple[re.Match, float]:
        """The first match of ``pattern`` in this start's log, and when it was seen (s after Popen)."""
        deadline = time.monotonic() + timeout
        buf, pos = "", 0
        while True:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            seen = time.perf_counter() - self.t0
            buf += chunk
            if m := pattern.search(buf):
                return m, seen
            if self.proc is not None and self.proc.poll() is not None:
                raise Failed(f"agent {self.name} exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise Failed(f"agent {self.name}: no {pattern.pattern!r} in its log after {timeout:.0f} s: "
                             f"{self.tail()}")
            time.sleep(poll)

    def tail(self, n: int = 2500) -> str:
        return tail(self.log, n)

    def text(self) -> str:
        return tail(self.log, 10 ** 9)

    def stop(self) -> float | None:
        if self.proc is None:
            return None
        took = stop_pid(self.proc, 60)
        if self.proc.returncode not in (0, -signal.SIGTERM):
            print(f"  ! agent {self.name} exited with {self.proc.returncode}: {self.tail(800)}", file=sys.stderr)
        self.proc = None
        return took

    def metrics(self) -> dict[str, float]:
        """Every sample of GET /metrics, labels summed: name -> value."""
        status, text = call(self.sock, "GET", "/metrics", timeout=60)
        out: dict[str, float] = {}
        if status != 200:
            return out
        for ln in text.splitlines():
            if m := re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? ([0-9.e+-]+|NaN)$", ln):
                with contextlib.suppress(ValueError):
                    out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out

    def events(self) -> Counter:
        status, body = call(self.sock, "GET", "/v1/events?since=0", timeout=60)
        return Counter(e["type"] for e in body.get("events", [])) if status == 200 else Counter()


# --------------------------------------------------------------------------- namespaces


def prepare_host(ns: str) -> None:
    benchkit.prepare_routed_host(ns, GW4)


def links(ns: str) -> dict[str, int]:
    return benchkit.links(ns)


def taps(ns: str) -> dict[str, int]:
    return {k: v for k, v in links(ns).items() if k.startswith("tap")}


def vifwire_routes(ns: str) -> int:
    n = 0
    for fam in ("-4", "-6"):
        out = subprocess.run(["ip", "-n", ns, fam, "route", "show", "proto", str(RTPROT)], capture_output=True,
                             text=True).stdout
        n += len(out.splitlines())
    return n


NAMESPACES: list[str] = []  # every namespace we made, removed in the clean-up


def new_ns(tag: str) -> str:
    with no_signals():
        ns = netns.create(netns.unique_name(tag))
        NAMESPACES.append(ns)
    prepare_host(ns)
    return ns


def drop_ns(ns: str) -> None:
    with no_signals():
        try:
            if netns.exists(ns):
                benchkit.empty_ns(ns, list(links(ns)), GROUP)
        finally:
            netns.remove(ns)
            with contextlib.suppress(ValueError):
                NAMESPACES.remove(ns)


# --------------------------------------------------------------------------- etcd status watch


class StatusWatch:
    """Status puts under a prefix, from a revision on, in a thread of our own:
    (arrival time, host, port id, status) for each; ``done`` is set once
    every wanted (host, port) has a status for a revision >= the wanted one."""

    def __init__(self, url: str, prefix: str, start_revision: int):
        self.prefix = prefix
        self.events: list[tuple[float, str, str, dict | None]] = []
        self.latest: dict[tuple[str, str], dict] = {}
        self.want: dict[tuple[str, str], int] | None = None
        self.done = threading.Event()
        self.done_at: float | None = None
        self.changed = threading.Condition()
        self.error: str | None = None
        self.etcd = Etcd(url, timeout=10)
        self.watch = self.etcd.watch_prefix(prefix, start_revision)
        self.thread = threading.Thread(target=self._run, name="status-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        base = keys.PREFIX + "/status/"
        try:
            for batch in self.watch:
                now = time.perf_counter()
                with self.changed:
                    for ev in batch:
                        host, _, pid = ev.key[len(base):].partition("/")
                        st = json.loads(ev.value) if ev.kind == "put" and ev.value else None
                        self.events.append((now, host, pid, st))
                        if st is None:
                            self.latest.pop((host, pid), None)
                        else:
                            self.latest[(host, pid)] = st
                    self._check(now)
                    self.changed.notify_all()
        except EtcdError as exc:
            self.error = str(exc)
            with self.changed:
                self.changed.notify_all()

    def _check(self, now: float) -> None:
        if self.want is None or self.done.is_set():
            return
        if all((st := self.latest.get(k)) and st.get("desired_revision", 0) >= rev for k, rev in self.want.items()):
            self.done_at = now
            self.done.set()

    def expect(self, want: dict[tuple[str, str], int]) -> None:
        with self.changed:
            self.want = want
            self._check(self.events[-1][0] if self.events else time.perf_counter())

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self.done.is_set() and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 1.0))
        return self.done.is_set()

    def close(self) -> None:
        self.watch.cancel()
        self.thread.join(5)
        self.etcd.close()


# --------------------------------------------------------------------------- CPU


def foreign_load() -> dict[str, int]:
    """vifwire/etcd/pytest processes on this machine that are not ours (another run sharing the CPUs)."""
    ours = {os.getpid(), *(p.pid for p in LIVE)}
    seen: Counter = Counter()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in ours:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv[:4]).decode(errors="replace")
        if "vifwire agent" in text:
            seen["vifwire agent"] += 1
        elif os.path.basename(argv[0].decode(errors="replace")) == "etcd":
            seen["etcd"] += 1
        elif "pytest" in text:
            seen["pytest"] += 1
        elif "vifwire" in text:
            seen["vifwire (other)"] += 1
    return dict(seen)



def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) of ``pid``, in clock ticks (/proc/PID/stat fields 14-17)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14 -> index 11
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


class ForeignSampler:
    """Every second, which foreign processes run (most of each kind seen, per part of the bench):
    a benchmark sharing two CPUs with another run says so."""

    def __init__(self, seen: dict[str, dict[str, int]]):
        self.seen, self.part = seen, "setup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foreign", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                now = foreign_load()
                mine = self.seen.setdefault(self.part, {})
                for k, v in now.items():
                    mine[k] = max(mine.get(k, 0), v)
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- the benchmark


class Host:
    def __init__(self, bench: "Bench", name: str, index: int, tag: str):
        self.name = name
        self.docs = [port(index * bench.n + k + 1) for k in range(bench.n)]
        self.ns = new_ns(tag)
        self.file = os.path.join(bench.tmp, f"{name}.json")
        with open(self.file, "w") as f:
            json.dump(self.docs, f)
        self.agent: Agent | None = None


class Bench:
    def __init__(self, a, tmp: str, logdir: str):
        self.a, self.tmp, self.logdir = a, tmp, logdir
        self.n = a.ports
        self.res: dict[str, Any] = {"apply": [], "restart": [], "idle": None, "notes": {}}
        self.etcd: EtcdServer | None = None
        self.fleet: list[Host] = []  # the last round's hosts, kept for the restart and idle parts
        self.agents: list[Agent] = []

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- 1. apply vs bulk plug

    def bulk_cli(self, rnd: int) -> dict[str, Any]:
        hosts = [Host(self, f"cli{rnd}-{h}", h, f"flc{h}") for h in range(self.a.hosts)]
        try:
            argvs = [[VIFWIRE, "plug", "--netns", h.ns, "--state", os.path.join(self.tmp, f"{h.name}.db"),
                      "--ovsdb", f"unix:{self.tmp}/no-ovs.sock", h.file] for h in hosts]
            problems: list[str] = []
            t0 = time.perf_counter()
            outs = run_parallel(argvs, t0, 3600)
            wall = time.perf_counter() - t0
            per_host = [o[0] for o in outs]
            for h, (_t, rc, out, err) in zip(hosts, outs):
                if rc != 0:
                    problems.append(f"{h.name}: vifwire plug exit {rc}: {(err or out).strip()[-1500:]}")
                got = taps(h.ns)
                if sorted(got) != sorted(devname(d) for d in h.docs):
                    problems.append(f"{h.name}: {len(got)} taps in {h.ns}, {len(h.docs)} wanted")
            if problems:
                raise Failed("bulk CLI: " + "; ".join(problems))
            return {"wall_s": wall, "per_host_s": per_host}
        finally:
            for h in hosts:
                drop_ns(h.ns)

    def fleet_apply(self, rnd: int, last: bool) -> dict[str, Any]:
        hosts = [Host(self, f"r{rnd}hv{h}", h, f"fla{h}") for h in range(self.a.hosts)]
        agents = []
        try:
            for h in hosts:
                h.agent = Agent(self.tmp, self.logdir, h.name, h.ns, self.etcd.url, h.name)
                agents.append(h.agent)
                self.agents.append(h.agent)
                h.agent.start()
                h.agent.wait_log(CONVERGED_RE, 60)  # its (empty) first resync is done: it is watching
            etcd = Etcd(self.etcd.url, timeout=10)
            start_rev = etcd.revision() + 1
            watch = StatusWatch(self.etcd.url, keys.PREFIX + "/status/", start_rev)
            try:
                argvs = [[VIFWIRE, "fleet", "apply", h.file, "--host", h.name, "--etcd", self.etcd.url] for h in hosts]
                t0 = time.perf_counter()
                outs = run_parallel(argvs, t0, 600)
                apply_s = [o[0] for o in outs]
                problems = [f"{h.name}: fleet apply exit {rc}: {(err or out).strip()[-1500:]}"
                            for h, (_t, rc, out, err) in zip(hosts, outs) if rc != 0]
                if problems:
                    raise Failed("; ".join(problems))
                want = {}
                for h in hosts:
                    items, _ = etcd.get_prefix(keys.desired_prefix(h.name))
                    want.update({(h.name, kv.key.rsplit("/", 1)[1]): kv.mod_revision for kv in items})
                    if len(items) != self.n:
                        raise Failed(f"{h.name}: {len(items)} desired keys after apply, {self.n} wanted")
                watch.expect(want)
                ok = watch.wait(self.a.timeout)
                wall = watch.done_at - t0 if watch.done_at is not None else None
                states = Counter(st["state"] for st in watch.latest.values())
                per_host, first = [], []
                for h in hosts:
                    ts = [t for t, host, _pid, st in watch.events if host == h.name and st]
                    per_host.append(max(ts) - t0 if ts else None)
                    first.append(min(ts) - t0 if ts else None)
                failed = {k: st.get("error") for k, st in watch.latest.items() if st.get("state") != "plugged"}
                if not ok:
                    raise Failed(f"not every port has a status after {self.a.timeout:.0f} s "
                                 f"({len(watch.latest)}/{len(want)}; watch error {watch.error}); agent logs: "
                                 + " | ".join(f"{h.name}: {h.agent.tail(1200)}" for h in hosts))
            finally:
                watch.close()
                etcd.close()
            if failed:
                k, err = next(iter(failed.items()))
                raise Failed(f"{len(failed)} port(s) failed, e.g. {k}: {err}; agent log: "
                             f"{hosts[0].agent.tail(1500)}")
            # the product's own view, and the namespaces
            [(_t, rc, sout, serr)] = run_parallel([[VIFWIRE, "fleet", "status", "--json", "--etcd", self.etcd.url]],
                                                  time.perf_counter(), 300)
            rows = [x for x in json.loads(sout) if x["host"] in {h.name for h in hosts}] if rc == 0 else []
            row_states = Counter(x["state"] for x in rows)
            if row_states != Counter({"plugged": len(want)}):
                raise Failed(f"fleet status --json: {dict(row_states)} (exit {rc}: {serr[-500:]})")
            for h in hosts:
                got = taps(h.ns)
                if sorted(got) != sorted(devname(d) for d in h.docs):
                    raise Failed(f"{h.name}: {len(got)} taps in {h.ns}, {len(h.docs)} wanted")
            logged = {h.name: [m.groups() for m in CHANGED_RE.finditer(h.agent.text())] for h in hosts}
            rounds = {h.name: h.agent.metrics().get("vifwire_writer_rounds_total") for h in hosts}
            out = {"wall_s": wall, "per_host_s": per_host, "first_status_s": first, "apply_process_s": apply_s,
                   "states": dict(states), "status_events": len(watch.events), "agent_fleet_log": logged,
                   "writer_rounds": rounds}
            if last:
                self.fleet = hosts
                hosts = []
            return out
        finally:
            for h in hosts:  # an earlier round's (or a failed round's) hosts
                if h.agent is not None:
                    h.agent.stop()
                    with contextlib.suppress(ValueError):
                        self.agents.remove(h.agent)
                drop_ns(h.ns)

    def apply(self) -> None:
        for rnd in range(self.a.rounds):
            last = rnd == self.a.rounds - 1
            # alternate the order, so neither path always runs on a cooler (or warmer) machine
            order = ("cli", "fleet") if rnd % 2 == 0 else ("fleet", "cli")
            out: dict[str, Any] = {"round": rnd + 1, "order": order}
            for what in order:
                if what == "cli":
                    out["cli"] = self.bulk_cli(rnd)
                    self.log(f"  round {rnd + 1}: bulk CLI {self.a.hosts} x {self.n}: "
                             f"{out['cli']['wall_s']:.2f} s (per host {fmt_list(out['cli']['per_host_s'])})")
                else:
                    out["fleet"] = self.fleet_apply(rnd, last)
                    f = out["fleet"]
                    self.log(f"  round {rnd + 1}: fleet apply -> all plugged: {f['wall_s']:.2f} s "
                             f"(per host {fmt_list(f['per_host_s'])}, apply processes "
                             f"{fmt_list(f['apply_process_s'])})")
                time.sleep(1)
            out["ratio"] = out["fleet"]["wall_s"] / out["cli"]["wall_s"]
            self.res["apply"].append(out)

    # ---------------------------------------------------------------- 2. restart

    def ensure_fleet(self) -> None:
        """Restart and idle need a converged fleet: the apply part's, or one made here (untimed)."""
        if self.fleet:
            return
        self.log("  (apply part skipped: applying untimed)")
        self.fleet_apply(0, True)

    def restart(self) -> None:
        self.ensure_fleet()
        h = self.fleet[0]
        ag = h.agent
        time.sleep(2)  # let the agent's own netlink echo settle
        for r in range(self.a.restarts):
            before, routes_before = taps(h.ns), vifwire_routes(h.ns)
            etcd = Etcd(self.etcd.url, timeout=10)
            watch = StatusWatch(self.etcd.url, keys.status_prefix(h.name), etcd.revision() + 1)
            etcd.close()
            try:
                stop_s = ag.stop()
                ag.start()
                m, converged = ag.wait_log(CONVERGED_RE, self.a.timeout)
                time.sleep(0.3)  # status watch: let the last puts arrive
            finally:
                watch.close()
            puts = [(t - ag.t0) for t, _h, _p, st in watch.events if st]
            states = Counter(st["state"] for _t, _h, _p, st in watch.events if st)
            after, routes_after = taps(h.ns), vifwire_routes(h.ns)
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            ev = ag.events()
            mt = ag.metrics()
            text = ag.text()
            fleet_changes = [tuple(map(int, x.groups())) for x in CHANGED_RE.finditer(text)]
            warnings = [ln for ln in text.splitlines() if " WARNING " in ln or " ERROR " in ln]
            reconcile = re.findall(r"start-up reconcile took ([0-9.]+) ms", text)
            metric_changes = {k: mt.get(k, 0.0) for k in (
                "vifwire_plug_seconds_count", "vifwire_unplug_seconds_count", "vifwire_drift_found_total",
                "vifwire_drift_repaired_total", "vifwire_failures_total")}
            out = {"ports": len(h.docs), "taps_before": len(before), "taps_after": len(after),
                   "ifindex_changed": len(changed), "changed_examples": changed[:5],
                   "routes_before": routes_before, "routes_after": routes_after,
                   "events": dict(ev), "metrics": metric_changes, "metrics_all": mt,
                   "fleet_log_changes": fleet_changes, "desired_logged": int(m.group(1)),
                   "log_warnings": warnings[:10], "stop_s": stop_s, "ready_s": ag.ready_s,
                   "converged_s": converged, "status_puts": len(puts), "status_states": dict(states),
                   "last_status_put_s": max(puts) if puts else None,
                   "reconcile_ms_logged": float(reconcile[-1]) if reconcile else None}
            out["changes"] = (len(changed) + (len(before) != len(after)) + abs(routes_before - routes_after)
                              + sum(ev.get(k, 0) for k in ("repaired", "drift", "plugged", "unplugged"))
                              + int(sum(metric_changes.values()))
                              + sum(p + u for p, u, _k in fleet_changes))
            self.res["restart"].append(out)
            self.log(f"  restart {r + 1}: ready {ag.ready_s * 1e3:.0f} ms (reconcile {out['reconcile_ms_logged']} ms), "
                     f"converged {converged * 1e3:.0f} ms, {len(puts)} status puts (last at "
                     f"{fmt_ms(out['last_status_put_s'])} ms), ifindex changed {len(changed)}, events {dict(ev)}, "
                     f"fleet log changes {fleet_changes}, changes {out['changes']}")
            time.sleep(1)

    # ---------------------------------------------------------------- 3. idle CPU

    def idle(self) -> None:
        self.ensure_fleet()
        for h in self.fleet:  # every agent converged (a restarted one has logged its resync)
            h.agent.wait_log(CONVERGED_RE, self.a.timeout)
        time.sleep(self.a.settle)
        etcd = Etcd(self.etcd.url, timeout=10)
        before_taps = {h.name: taps(h.ns) for h in self.fleet}
        rev0 = etcd.revision()
        t0 = time.perf_counter()
        c0 = {h.name: cpu_ticks(h.agent.pid) for h in self.fleet}
        e0 = cpu_ticks(self.etcd.proc.pid)
        # a reading every second too: where the CPU goes (a steady cost, or bursts such as the periodic resync)
        series: dict[str, list[int]] = {h.name: [] for h in self.fleet}
        last = {k: v[0] for k, v in c0.items()}
        k = 0
        while True:
            k += 1
            until = t0 + min(k, self.a.idle)
            time.sleep(max(0.0, until - time.perf_counter()))
            for h in self.fleet:
                now = cpu_ticks(h.agent.pid)[0]
                series[h.name].append(now - last[h.name])
                last[h.name] = now
            if k >= self.a.idle:
                break
        c1 = {h.name: cpu_ticks(h.agent.pid) for h in self.fleet}
        e1 = cpu_ticks(self.etcd.proc.pid)
        wall = time.perf_counter() - t0
        rev1 = etcd.revision()
        etcd.close()
        agents = {}
        for h in self.fleet:
            (u0, ch0), (u1, ch1) = c0[h.name], c1[h.name]
            agents[h.name] = {"pid": h.agent.pid, "ports": len(h.docs), "cpu_s": (u1 - u0) / CLK_TCK,
                              "children_cpu_s": (ch1 - ch0) / CLK_TCK, "pct": 100 * (u1 - u0) / CLK_TCK / wall,
                              "taps_unchanged": taps(h.ns) == before_taps[h.name],
                              "ticks_per_s": series[h.name]}
            bursts = [t for t in series[h.name] if t >= BURST_TICKS]
            agents[h.name].update(burst_seconds=len(bursts), burst_cpu_s=sum(bursts) / CLK_TCK,
                                  outside_bursts_pct=100 * (sum(series[h.name]) - sum(bursts)) / CLK_TCK
                                  / max(1, len(series[h.name]) - len(bursts)))
        self.res["idle"] = {"window_s": wall, "agents": agents, "etcd_cpu_s": (e1[0] - e0[0]) / CLK_TCK,
                            "etcd_pct": 100 * (e1[0] - e0[0]) / CLK_TCK / wall, "etcd_revisions": rev1 - rev0,
                            "resync_interval_s": 30.0}
        self.log(f"  idle {wall:.0f} s: agents " + ", ".join(f"{k} {v['pct']:.3f}%" for k, v in agents.items())
                 + f"; etcd {self.res['idle']['etcd_pct']:.3f}%, {rev1 - rev0} etcd revision(s)")

    def close(self) -> None:
        with no_signals():
            for ag in list(self.agents):
                with contextlib.suppress(Exception):
                    ag.stop()
            for p in list(LIVE):  # CLI processes, etcd: only our children, by PID
                stop_pid(p, 10)
            if self.etcd is not None:
                self.etcd.stop()
            for ns in list(NAMESPACES):
                with contextlib.suppress(Exception):
                    drop_ns(ns)


# --------------------------------------------------------------------------- report


def fmt_list(xs: list[float | None]) -> str:
    return "/".join("-" if x is None else f"{x:.2f}" for x in xs)


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def report(res: dict[str, Any], a) -> tuple[str, list[dict]]:
    lines: list[str] = []
    P = lines.append
    targets: list[dict] = []
    if res["apply"]:
        P(f"\n1. {a.hosts} hosts x {a.ports} routed taps: `vifwire fleet apply` (agents running) -> every status "
          f"plugged, vs one bulk `vifwire plug` per host (hosts in parallel in both)\n")
        P("| round | path | wall s | per host s | ports/s | notes |")
        P("|---|---|---:|---|---:|---|")
        total = a.hosts * a.ports
        for x in res["apply"]:
            c, f = x["cli"], x["fleet"]
            P(f"| {x['round']} | bulk CLI `vifwire plug` | {c['wall_s']:.2f} | {fmt_list(c['per_host_s'])} | "
              f"{total / c['wall_s']:.0f} | process start-up included |")
            rounds = "/".join(f"{v:.0f}" if v is not None else "-" for v in f["writer_rounds"].values())
            P(f"| {x['round']} | fleet apply -> plugged | {f['wall_s']:.2f} | {fmt_list(f['per_host_s'])} | "
              f"{total / f['wall_s']:.0f} | apply processes done at {fmt_list(f['apply_process_s'])} s; "
              f"first status at {fmt_list(f['first_status_s'])} s; "
              f"writer rounds {rounds}; {f['status_events']} status puts |")
        ratios = [x["ratio"] for x in res["apply"]]
        r = statistics.median(ratios)
        P(f"\nfleet / bulk CLI: {', '.join(f'{x:.2f}x' for x in ratios)} (median {r:.2f}x)")
        targets.append({"target": f"fleet apply of {a.hosts} x {a.ports} ports -> all plugged: <= 1.5x one bulk "
                                  f"`vifwire plug` per host",
                        "value": f"{r:.2f}x ({p50([x['fleet']['wall_s'] for x in res['apply']]):.2f} s vs "
                                 f"{p50([x['cli']['wall_s'] for x in res['apply']]):.2f} s)", "met": r <= 1.5})
    if res["restart"]:
        x0 = res["restart"][0]
        P(f"\n2. Agent restart with {x0['ports']} correct ports (fleet mode): SIGTERM, start on the same state\n")
        P("| # | ready ms | converged ms | last status put ms | status puts | reconcile ms (log) | stop s | "
          "ifindex changed | taps before/after | routes before/after | events | fleet log P/U | changes |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|")
        for i, x in enumerate(res["restart"]):
            ev = ", ".join(f"{k} {v}" for k, v in sorted(x["events"].items())) or "none"
            fl = " ".join(f"{p}/{u}" for p, u, _k in x["fleet_log_changes"]) or "none"
            P(f"| {i + 1} | {fmt_ms(x['ready_s'])} | {fmt_ms(x['converged_s'])} | {fmt_ms(x['last_status_put_s'])} | "
              f"{x['status_puts']} | {x['reconcile_ms_logged']} | {x['stop_s'] or 0:.2f} | {x['ifindex_changed']} | "
              f"{x['taps_before']}/{x['taps_after']} | {x['routes_before']}/{x['routes_after']} | {ev} | {fl} | "
              f"{x['changes']} |")
        mets = Counter()
        for x in res["restart"]:
            mets.update({k: v for k, v in x["metrics"].items()})
        P(f"\nAgent metrics after each restart, summed: " + ", ".join(f"{k} {v:.0f}" for k, v in mets.items()))
        warn = [w for x in res["restart"] for w in x["log_warnings"]]
        if warn:
            P("Agent log warnings/errors after restart: " + " | ".join(warn[:5]))
        changes = sum(x["changes"] for x in res["restart"])
        readys = [x["ready_s"] for x in res["restart"]]
        conv = [x["converged_s"] for x in res["restart"]]
        targets.append({"target": f"restart with {x0['ports']} correct ports: 0 changes",
                        "value": f"{changes} change(s) over {len(res['restart'])} restart(s)", "met": changes == 0})
        targets.append({"target": f"restart with {x0['ports']} correct ports: ready <= 1 s",
                        "value": f"median {fmt_ms(p50(readys))} ms, worst {fmt_ms(max(readys))} ms",
                        "met": max(readys) <= 1.0})
        targets.append({"target": f"restart with {x0['ports']} correct ports: converged (fleet resync + status "
                                  "writes logged)",
                        "value": f"median {fmt_ms(p50(conv))} ms, worst {fmt_ms(max(conv))} ms", "met": None})
    if res["idle"]:
        d = res["idle"]
        P(f"\n3. Idle agents (fleet mode, nothing changing) over {d['window_s']:.1f} s\n")
        P("| agent | ports | CPU s | % of a core | children CPU s | seconds >= 5% (CPU s in them) | "
          "% outside those | taps unchanged |")
        P("|---|---:|---:|---:|---:|---|---:|---|")
        for k, v in d["agents"].items():
            P(f"| {k} (pid {v['pid']}) | {v['ports']} | {v['cpu_s']:.2f} | {v['pct']:.3f} | "
              f"{v['children_cpu_s']:.2f} | {v['burst_seconds']} ({v['burst_cpu_s']:.2f}) | "
              f"{v['outside_bursts_pct']:.3f} | {'yes' if v['taps_unchanged'] else 'NO'} |")
        P(f"| etcd (context) | | {d['etcd_cpu_s']:.2f} | {d['etcd_pct']:.3f} | | | | {d['etcd_revisions']} etcd "
          f"revision(s) in the window |")
        P(f"\n(agents run with the default --resync-interval {d['resync_interval_s']:.0f} s: a check of every "
          f"recorded port that often; per-second CPU ticks of each agent are in --json)")
        worst = max(v["pct"] for v in d["agents"].values())
        med = statistics.median(v["pct"] for v in d["agents"].values())
        targets.append({"target": f"idle agent CPU with {a.ports} ports over {d['window_s']:.0f} s: <= 1% of a core",
                        "value": f"worst {worst:.3f}%, median {med:.3f}% ({len(d['agents'])} agents)",
                        "met": worst <= 1.0})
    lines += benchkit.targets_table(targets)
    return "\n".join(lines), targets


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 ports per host, 15 s idle window")
    ap.add_argument("--ports", type=int, default=None, help="ports per host (default 1000; --quick 200)")
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the apply-vs-CLI part (medians reported)")
    ap.add_argument("--restarts", type=int, default=3, help="agent restarts on the same ports")
    ap.add_argument("--idle", type=float, default=None, help="idle window, seconds (default 60; --quick 15)")
    ap.add_argument("--settle", type=float, default=5.0, help="pause before the idle window, seconds")
    ap.add_argument("--timeout", type=float, default=600.0, help="longest wait for a convergence, seconds")
    ap.add_argument("--skip", nargs="+", choices=("apply", "restart", "idle"), default=[])
    ap.add_argument("--logs", metavar="DIR", help="keep the agents' and etcd's logs here (default: removed)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results here")
    a = ap.parse_args()
    a.ports = a.ports or (200 if a.quick else 1000)
    a.idle = a.idle if a.idle is not None else (15.0 if a.quick else 60.0)
    if a.hosts * a.ports > 50000:
        ap.error("at most 50000 ports in all (port(i)'s addresses)")
    main_pid = os.getpid()

    def interrupted(*_):  # SIGTERM: clean up as for ^C
        if os.getpid() != main_pid:
            os._exit(143)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if not os.access(ETCD, os.X_OK):
        print(f"{ETCD} is missing: run scripts/setup.sh (it installs etcd-server)", file=sys.stderr)
        return 2
    if a.logs:
        os.makedirs(a.logs, exist_ok=True)
    load0 = benchkit.loadavg()
    tmp = tempfile.mkdtemp(prefix="vw-flb-")
    bench = Bench(a, tmp, a.logs or tmp)
    sampler = ForeignSampler(bench.res["notes"].setdefault("foreign_processes", {}))
    t_start = time.monotonic()
    failed = False
    try:
        bench.log(f"fleet bench: {a.hosts} hosts x {a.ports} ports, {a.rounds} round(s), {a.restarts} restart(s), "
                  f"idle {a.idle:.0f} s, {os.cpu_count()} CPUs")
        sampler.start()
        bench.etcd = EtcdServer(tmp, a.logs or tmp).start()
        for part in ("apply", "restart", "idle"):
            if part in a.skip:
                continue
            sampler.part = part
            try:
                getattr(bench, part)()
            except Exception as exc:  # noqa: BLE001 - reported; the other parts still run if they can
                failed = True
                bench.log(f"  FAILED {part}: {exc}")
                bench.res["notes"].setdefault("failed", {})[part] = str(exc)[:5000]
                if part == "apply" or not bench.fleet:
                    break
    except KeyboardInterrupt:
        bench.log("interrupted: cleaning up")
        raise
    finally:
        sampler.stop()
        bench.close()
        shutil.rmtree(tmp, ignore_errors=True)  # sockets, state, port files, etcd's data (logs: --logs DIR)
    text, targets = report(bench.res, a)
    bench.res["notes"].update(targets=targets, wall_s=time.monotonic() - t_start, args=vars(a),
                              loadavg_start=load0, loadavg_end=benchkit.loadavg(),
                              tree=benchkit.tree_state(ROOT), cpus=os.cpu_count(), kernel=os.uname().release)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(bench.res, f, indent=1, default=str)
    print(text)
    for part, msg in bench.res["notes"].get("failed", {}).items():
        print(f"\nFAILED {part}: {msg[:3000]}")
    foreign = {k: v for k, v in bench.res["notes"].get("foreign_processes", {}).items() if v}
    if foreign:
        print(f"\nOther processes (not this bench's) seen on the machine, by part (most at once): {foreign}")
    print(f"\n({time.monotonic() - t_start:.0f} s; kernel {os.uname().release}, {os.cpu_count()} CPUs shared by "
          f"etcd, the agents and the CLI processes; load average at start {load0}, at end {benchkit.loadavg()}; "
          f"tree {benchkit.tree_state(ROOT)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
