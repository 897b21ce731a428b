"""CNI benchmark: per-pod ADD/DEL latency of ``vifwire-cni`` beside the
reference CNI plugins (``ptp``, ``bridge``), each driven exactly as a container
runtime drives a plugin.

Everything runs in throwaway namespaces this script creates (never the
host's): per row a fresh "host" namespace (the namespace the plugin runs in
and wires) and a fresh pod namespace per pod (``ip netns add`` + lo up,
made *before* the timed section). Agents, launchers, a private OVS (ovs rows)
and every namespace are always stopped/removed, also on failure, Ctrl-C or
SIGTERM; only processes this script started are stopped, by PID.

**How a plugin is run (the same for every row).** A small launcher process is
started once per row inside the host namespace (``ip netns exec NS python3
launcher``: its own mount namespace with the NS's /sys, as ``ip netns exec``
gives any command). For each CNI call it fork/execs the plugin binary with a
runtime-like environment (``PATH``, ``CNI_COMMAND``, ``CNI_CONTAINERID``,
``CNI_NETNS=/var/run/netns/POD``, ``CNI_IFNAME=eth0``, ``CNI_PATH=/usr/lib/cni``,
nothing else), writes the network configuration on stdin, reads stdout/stderr
and waits for the exit. The time is taken *inside the launcher*, from just
before the fork to the exit + end of stdout: process start-up (interpreter,
imports) counts, the bench's IPC to the launcher does not. DEL gets the ADD's
result as ``prevResult``, as libcni does. Each plugin is asked ``VERSION``
first (untimed), as podman does.

Rows (all ``cniVersion 1.0.0``, the same host-local IPAM shape: one range, a
distinct /16 per row, a default route, a fresh ``dataDir`` per row, MTU 1500):

1. ``ptp`` (/usr/lib/cni/ptp, ``ipMasq false``) - the routed-mode reference;
2. ``bridge`` (/usr/lib/cni/bridge, ``isGateway true``, ``ipMasq false``) - the
   bridge-mode reference;
3. vifwire-cni ``mode routed`` with a running agent (``"agent": SOCK``);
4. vifwire-cni ``mode routed`` in-process (``"agent": ""``);
5. vifwire-cni ``mode bridge`` with agent; 6. ``mode bridge`` in-process;
7./8. (``--ovs``, default on when Open vSwitch is installed) ``mode ovs``
   with agent / in-process, on a private OVS (``datapath netdev``, bridge
   br-int made beforehand) running in the row's namespace.

vifwire rows use the plugin's defaults (``antiSpoof`` true: MAC + IPAM IP
filters, which the reference plugins do not install) unless ``--anti-spoof
off``. The agent is ``ip netns exec NS vifwire agent --socket S --state DB`` (fresh
state per row; inside NS, as on a host where agent and runtime share the host's namespace), ready when ``GET /v1/health`` says so.

Per row:

* **sequential**: 2 untimed warm-up pods (ADD+DEL), then ``--pods`` pods
  (default 50; ``--quick``: 10): all ADDs one after the other, then all DELs;
  median and p90 of ADD, DEL and ADD+DEL per pod; vifwire's ADD+DEL median
  over the reference plugin's of the same mode (ptp for routed, bridge for
  bridge);
* **parallel**: ``--conc-pods`` pods (default 100; ``--quick``: 20) in batches
  of ``--batch`` (10) concurrent ADDs, then the DELs in batches of 10: total
  wall time of the ADDs and of the DELs (sum of the batch walls).

Correctness, checked cheaply (untimed): every ADD's result has an IP in the
row's subnet, and the pod has ``eth0`` with that address and a default route;
after the DELs: every pod namespace holds only ``lo``, the host namespace has no
new veth and no new route except on the row's infrastructure devices (the
bridge, vifwire's ``vifwire-gw``...), host-local's dataDir holds no
reservation, and (vifwire rows) ``vifwire list --state DB`` is empty (ovs rows:
br-int has no port). Anything else is printed as LEAK and kept in the JSON.

When ``.venv/bin/vifwire-cni`` does not exist its rows say ``missing`` and the
reference rows still run (``--wait-cni S`` polls for it up to S seconds first).

    sudo .venv/bin/python bench/cni_bench.py [--quick] [--pods 50] [--conc-pods 100] [--batch 10]
        [--rows ptp bridge vw-routed-agent ...] [--no-ovs] [--anti-spoof on|off] [--skip-parallel]
        [--wait-cni SECONDS] [--keep-logs DIR] [--json [PATH]]

``--json`` alone prints the raw results as JSON on stdout (instead of the
tables); ``--json PATH`` writes them there and prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchkit  # noqa: E402 - percentiles, cells, namespace emptying shared by the benches
from benchkit import ms, no_signals, p50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
VIFWIRE = os.path.join(VENV_BIN, "vifwire")
VIFWIRE_CNI = os.path.join(ROOT, ".venv", "bin", "vifwire-cni")
CNI_DIR = "/usr/lib/cni"
CNI_VERSION = "1.0.0"
IFNAME = "eth0"
MTU = 1500
PLUGIN_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HAVE_OVS = bool(shutil.which("ovs-vswitchd") or os.path.exists("/usr/sbin/ovs-vswitchd"))

# name -> definition. "mode" decides the reference row for the ratio.
ROWS: dict[str, dict[str, Any]] = {
    "ptp": {"title": "ptp (reference)", "mode": "routed", "plugin": "ptp"},
    "bridge": {"title": "bridge (reference)", "mode": "bridge", "plugin": "bridge"},
    "vw-routed-agent": {"title": "vifwire routed, agent", "mode": "routed", "plugin": "vifwire", "agent": True},
    "vw-routed-inproc": {"title": "vifwire routed, in-process", "mode": "routed", "plugin": "vifwire",
                         "agent": False},
    "vw-bridge-agent": {"title": "vifwire bridge, agent", "mode": "bridge", "plugin": "vifwire", "agent": True},
    "vw-bridge-inproc": {"title": "vifwire bridge, in-process", "mode": "bridge", "plugin": "vifwire",
                         "agent": False},
    "vw-ovs-agent": {"title": "vifwire ovs, agent", "mode": "ovs", "plugin": "vifwire", "agent": True},
    "vw-ovs-inproc": {"title": "vifwire ovs, in-process", "mode": "ovs", "plugin": "vifwire", "agent": False},
}
REFERENCE = {"routed": "ptp", "bridge": "bridge"}
VERSION_CALLS = 10
REF_BRIDGE = "cnibench0"
VW_BRIDGE = "vifwire0"
OVS_BRIDGE = "br-int"
METHOD = ("each plugin fork/exec'd by a persistent launcher already inside the row's host namespace "
          "(entered once via `ip netns exec NS`), runtime env + config on stdin; time = fork -> exit and "
          "stdout read, taken in the launcher")


class Failed(Exception):
    pass


# --------------------------------------------------------------------------- the launcher (runs inside NS)

LAUNCHER = r'''
import json, subprocess, sys, threading, time

def run(job, res, i):
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(job["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=job["env"], close_fds=True)
        try:
            out, err = p.communicate(job["stdin"].encode(), timeout=job.get("timeout", 120))
            rc = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            rc = "timeout"
    except OSError as e:
        out, err, rc = b"", str(e).encode(), "exec failed"
    t1 = time.perf_counter()
    res[i] = {"rc": rc, "out": out.decode(errors="replace"), "err": err.decode(errors="replace"),
              "t": t1 - t0, "t0": t0, "t1": t1}

for line in sys.stdin:
    jobs = json.loads(line)["jobs"]
    res = [None] * len(jobs)
    if len(jobs) == 1:
        run(jobs[0], res, 0)
    else:
        ths = [threading.Thread(target=run, args=(j, res, i)) for i, j in enumerate(jobs)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    wall = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    sys.stdout.write(json.dumps({"results": res, "wall": wall}) + "\n")
    sys.stdout.flush()
'''

LIVE: list[Any] = []  # launchers and agents we started (stopped by PID in reverse order)


class Launcher:
    def __init__(self, ns: str, tmp: str):
        self.ns = ns
        self.script = os.path.join(tmp, "launcher.py")
        with open(self.script, "w") as f:
            f.write(LAUNCHER)
        self.errlog = open(os.path.join(tmp, f"launcher-{ns}.err"), "w+")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-I", "-S", "-u", self.script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog, text=True,
                                     start_new_session=True)  # ^C on the terminal goes to us, not to it
        LIVE.append(self)

    def run(self, jobs: list[dict]) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"jobs": jobs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.errlog.seek(0)
            raise Failed(f"launcher in {self.ns} died: {self.errlog.read()[-1500:]}")
        return json.loads(line)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            LIVE.remove(self)
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: it exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.errlog.close()


# --------------------------------------------------------------------------- the agent


def health(sock: str) -> tuple[int, Any]:
    """``GET /v1/health`` with the product's own bare HTTP exchange."""
    from vifwire.client.http import TransportError, exchange

    try:
        status, headers, body = exchange(sock, "GET", "/v1/health", None, 5)
    except TransportError as exc:
        raise OSError(str(exc)) from None  # not listening yet
    return status, (json.loads(body) if "json" in headers.get("content-type", "") else body.decode())


class Agent:
    """One ``vifwire agent`` subprocess, stopped by its PID."""

    def __init__(self, tmp: str, name: str, ns: str, state: str, logdir: str, ovsdb: str | None):
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.log = os.path.join(logdir, f"agent-{name}.log")
        # inside the namespace, as on a host where the agent and the runtime share
        # the host's namespace (docs/cni.md): its records and the plugin's agree
        self.argv = ["ip", "netns", "exec", ns, VIFWIRE, "agent", "--socket", self.sock, "--state", state]
        if ovsdb:
            self.argv += ["--ovsdb", ovsdb, "--ovs-datapath", "netdev"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "Agent":
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"agent exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                status, body = health(self.sock)
                if status == 200 and isinstance(body, dict) and body.get("ready"):
                    return self
            time.sleep(0.01)
        raise Failed(f"agent not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(ValueError):
            LIVE.remove(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! agent {self.proc.pid} ignored SIGTERM: SIGKILL", file=sys.stderr)
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- namespaces and host inspection

CREATED_NS: list[str] = []
FLOOR: dict[str, float | None] = {}  # the launcher's fork/exec floor, measured in the first row's namespace


def ns_create(name: str) -> str:
    if netns.exists(name):
        raise Failed(f"namespace {name} already exists (not ours)")
    CREATED_NS.append(name)  # before create: create removes a half-made one itself, remove() is idempotent
    netns.create(name)
    return name


def ns_remove(name: str) -> None:
    netns.remove(name)
    with contextlib.suppress(ValueError):
        CREATED_NS.remove(name)


def ipj(*argv: str) -> Any:
    r = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Failed(f"ip -j {' '.join(argv)}: {r.stderr.strip()}")
    return json.loads(r.stdout or "[]")


def host_links(ns: str) -> dict[str, str]:
    """name -> link kind ("" for none) of every link in ``ns``."""
    return {lk["ifname"]: (lk.get("linkinfo") or {}).get("info_kind", "") for lk in ipj("-n", ns, "-d", "link", "show")}


def host_routes(ns: str) -> set[tuple[str, str, str, str]]:
    out = set()
    for fam in ("-4", "-6"):
        for r in ipj("-n", ns, fam, "route", "show", "table", "all"):
            out.add((fam, str(r.get("table", "main")), r.get("dst", ""), r.get("dev", "")))
    return out


def empty_ns(ns: str) -> None:
    """Delete every link but lo (so the namespace's removal is cheap and synchronous)."""
    if netns.exists(ns):
        benchkit.empty_ns(ns, list(host_links(ns)), 0x7677FFFC)


def p90(xs: list[float]) -> float | None:
    return benchkit.pct(xs, 90)


def interrupted() -> bool:
    """Inside a ``finally``: is a ^C / SIGTERM unwinding?"""
    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def summarise(leaks: list[str], phase: str, examples: int = 4) -> list[str]:
    """One line per kind of leak ("host link", "host route", "pod", ...): count and a few examples."""
    groups: dict[str, list[str]] = {}
    for x in leaks:
        kind = " ".join(x.split()[:2]) if x.startswith("host ") else x.split()[0]
        groups.setdefault(kind, []).append(x)
    out = []
    for kind, xs in groups.items():
        more = f" (+{len(xs) - examples} more)" if len(xs) > examples else ""
        out.append(f"[{phase}] {len(xs)} x {kind}: " + "; ".join(xs[:examples]) + more)
    return out


# --------------------------------------------------------------------------- one row


class Row:
    def __init__(self, key: str, idx: int, a: argparse.Namespace, tmp: str, logdir: str, tag: str):
        self.key, self.idx, self.a, self.tag = key, idx, a, tag
        self.d = ROWS[key]
        self.dir = os.path.join(tmp, key)
        os.makedirs(self.dir)
        self.logdir = logdir
        self.subnet = ipaddress.ip_network(f"10.{100 + idx}.0.0/16")
        self.state = os.path.join(self.dir, "state.db")
        self.datadir = os.path.join(self.dir, "ipam")
        self.netname = f"cnibench-{key}"
        self.res: dict[str, Any] = {"title": self.d["title"], "mode": self.d["mode"], "status": "ok",
                                    "subnet": str(self.subnet), "add": [], "del": [], "add_del": [],
                                    "errors": [], "leaks": [], "parallel": None, "version": None}
        self.ns: str | None = None
        self.launcher: Launcher | None = None
        self.agent: Agent | None = None
        self.ovs: PrivateOVS | None = None
        self.serial = 0
        self.phase = "sequential"

    # ---- configuration

    def argv(self) -> list[str]:
        return [VIFWIRE_CNI] if self.d["plugin"] == "vifwire" else [os.path.join(CNI_DIR, self.d["plugin"])]

    def conf(self) -> dict:
        ipam = {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]], "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.datadir}
        c: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": self.netname}
        p = self.d["plugin"]
        if p == "ptp":
            c.update(type="ptp", ipMasq=False, mtu=MTU)
        elif p == "bridge":
            c.update(type="bridge", bridge=REF_BRIDGE, isGateway=True, ipMasq=False, mtu=MTU)
        else:
            c.update(type="vifwire-cni", mode=self.d["mode"], mtu=MTU, state=self.state,
                     agent=self.agent.sock if self.agent else "")
            if self.a.anti_spoof == "off":
                c["antiSpoof"] = False
            if self.d["mode"] == "bridge":
                c.update(bridge=VW_BRIDGE, isGateway=True)
            if self.d["mode"] == "ovs":
                c.update(bridge=OVS_BRIDGE, isGateway=True, ovsDatapath="netdev")
                if self.ovs is not None:
                    c["ovsdb"] = self.ovs.endpoint
        c["ipam"] = ipam
        return c

    def infra_devices(self) -> set[str]:
        return {REF_BRIDGE, VW_BRIDGE, OVS_BRIDGE, "vifwire-gw", "ovs-netdev"}

    def job(self, cmd: str, cid: str, pod: str, conf: dict) -> dict:
        env = {"PATH": PLUGIN_PATH_ENV, "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
               "CNI_NETNS": netns.netns_path(pod), "CNI_IFNAME": IFNAME, "CNI_PATH": CNI_DIR}
        return {"argv": self.argv(), "env": env, "stdin": json.dumps(conf), "timeout": 120}

    # ---- set-up / tear-down

    def setup(self) -> None:
        self.ns = ns_create(f"vw-cnb{self.tag}-{self.idx}")
        self.launcher = Launcher(self.ns, self.dir)
        if self.d["mode"] == "ovs":
            self.ovs = PrivateOVS()
            self.ovs.start(self.ns)
            self.ovs.add_bridge(OVS_BRIDGE)
        if self.d.get("agent"):
            self.agent = Agent(self.dir, self.key, self.ns, self.state, self.logdir,
                               self.ovs.endpoint if self.ovs else None).start()
        # VERSION, as a runtime validates a plugin first; its time is the plugin's start-up floor (no wiring)
        vt = []
        for k in range(VERSION_CALLS + 1):
            r = self.launcher.run([{"argv": self.argv(), "stdin": json.dumps({"cniVersion": CNI_VERSION}),
                                    "env": {"PATH": PLUGIN_PATH_ENV, "CNI_COMMAND": "VERSION"}, "timeout": 60}])
            r = r["results"][0]
            if r["rc"] != 0:
                raise Failed(f"VERSION: exit {r['rc']}: {(r['out'] + r['err']).strip()[-1500:]}")
            if k:
                vt.append(r["t"])
        self.res["version_s"] = vt
        with contextlib.suppress(ValueError):
            self.res["version"] = json.loads(r["out"]).get("supportedVersions")

    def exec_floor(self, n: int = 20) -> dict[str, float | None]:
        """Median fork/exec->exit of trivial programs through the same launcher (the method's own floor)."""
        out: dict[str, float | None] = {}
        for label, argv in (("/bin/true", ["/bin/true"]), ("python -c pass (venv, with site)",
                                                          [sys.executable, "-c", "pass"])):
            xs = []
            for _ in range(n + 2):
                r = self.launcher.run([{"argv": argv, "stdin": "", "env": {"PATH": PLUGIN_PATH_ENV}}])["results"][0]
                xs.append(r["t"] if r["rc"] == 0 else None)
            xs = [x for x in xs[2:] if x is not None]
            out[label] = p50(xs)
        return out

    def teardown(self) -> None:
        with no_signals():
            for step in (lambda: self.agent and self.agent.stop(), lambda: self.launcher and self.launcher.stop(),
                         lambda: self.ovs and self.ovs.stop()):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - keep tearing down
                    print(f"  ! {self.key} teardown: {exc}", file=sys.stderr)
            if self.ns:
                with contextlib.suppress(Exception):
                    empty_ns(self.ns)
                ns_remove(self.ns)

    # ---- pods

    def new_pods(self, n: int, phase: str) -> list[tuple[str, str]]:
        """``n`` fresh pod namespaces (untimed) -> [(container id, pod ns)]."""
        pods = []
        for _ in range(n):
            self.serial += 1
            s = self.serial
            name = ns_create(f"vw-cnp{self.tag}-{self.idx}-{s}")
            cid = hashlib.sha256(f"{self.tag}/{self.key}/{phase}/{s}".encode()).hexdigest()
            pods.append((cid, name))
        return pods

    def drop_pods(self, pods: list[tuple[str, str]]) -> None:
        with no_signals():
            for _, p in pods:
                ns_remove(p)

    def add_result(self, r: dict, pod: str) -> dict:
        """The ADD's parsed result; raises Failed with the exact output on error."""
        if r["rc"] != 0:
            raise Failed(f"ADD {pod}: exit {r['rc']}: stdout {r['out'].strip()[-1200:]!r} "
                         f"stderr {r['err'].strip()[-1200:]!r}")
        try:
            res = json.loads(r["out"])
            ips = [ipaddress.ip_interface(x["address"]) for x in res.get("ips", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise Failed(f"ADD {pod}: bad result ({exc}): {r['out'][-1200:]!r}") from None
        if not any(i.ip in self.subnet for i in ips):
            raise Failed(f"ADD {pod}: no IP in {self.subnet}: {r['out'][-800:]!r}")
        return res

    def del_error(self, r: dict, pod: str) -> str | None:
        if r["rc"] != 0:
            return (f"DEL {pod}: exit {r['rc']}: stdout {r['out'].strip()[-1200:]!r} "
                    f"stderr {r['err'].strip()[-1200:]!r}")
        return None

    def del_conf(self, conf: dict, prev: dict | None) -> dict:
        return dict(conf, prevResult=prev) if prev else conf

    def verify_pods(self, added: dict[str, dict], pods: list[tuple[str, str]]) -> None:
        """Every added pod has eth0 with its IP and a default route (cheap, untimed)."""
        for cid, pod in pods:
            if cid not in added:
                continue
            want = {str(ipaddress.ip_interface(x["address"]).ip) for x in added[cid].get("ips", [])}
            addrs = ipj("-n", pod, "addr", "show", "dev", IFNAME)
            have = {ai["local"] for a in addrs for ai in a.get("addr_info", [])}
            if not want <= have:
                raise Failed(f"pod {pod}: {IFNAME} has {sorted(have)}, the result said {sorted(want)}")
            if not ipj("-n", pod, "-4", "route", "show", "default"):
                raise Failed(f"pod {pod}: no IPv4 default route")

    def cleanup_pods(self, conf: dict, pods: list[tuple[str, str]], added: dict[str, dict], done: set[str]) -> None:
        """Untimed DEL of every pod whose DEL has not run (after a failure)."""
        for cid, pod in pods:
            if cid in done or cid not in added:
                continue
            r = self.launcher.run([self.job("DEL", cid, pod, self.del_conf(conf, added.get(cid)))])["results"][0]
            err = self.del_error(r, pod)
            if err:
                self.res["errors"].append(f"cleanup {err}")
            done.add(cid)

    def leak_check(self, base_links: dict[str, str], base_routes: set, pods: list[tuple[str, str]],
                   phase: str) -> list[str]:
        leaks = []
        links = host_links(self.ns)
        infra = self.infra_devices()
        for name, kind in links.items():
            if name not in base_links and (kind == "veth" or name.startswith(("vfw", "veth", "qbr", "qvb", "qvo"))):
                leaks.append(f"host link {name} ({kind or 'no kind'})")
        for fam, table, dst, dev in sorted(host_routes(self.ns) - base_routes):
            host_route = "/" not in dst or dst.endswith(("/32", "/128"))
            in_subnet = False
            with contextlib.suppress(ValueError):
                in_subnet = ipaddress.ip_network(dst, strict=False).subnet_of(self.subnet) if fam == "-4" else False
            if dev not in infra or (table == "main" and host_route and in_subnet):
                leaks.append(f"host route {fam} table {table} {dst or '?'} dev {dev or '?'}")
        for _, pod in pods:
            left = [n for n in host_links(pod) if n != "lo"]
            if left:
                leaks.append(f"pod {pod}: links {left}")
        ipam = os.path.join(self.datadir, self.netname)
        if os.path.isdir(ipam):
            res = [f for f in os.listdir(ipam) if f != "lock" and not f.startswith("last_reserved_ip")]
            if res:
                leaks.append(f"host-local reservations left: {sorted(res)[:10]}")
        if self.d["plugin"] == "vifwire" and os.path.exists(self.state):
            r = subprocess.run([VIFWIRE, "list", "--state", self.state, "--json"], capture_output=True, text=True,
                               timeout=120)
            try:
                recs = json.loads(r.stdout)
            except ValueError:
                recs = None
            if r.returncode != 0 or recs is None:
                leaks.append(f"vifwire list failed: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}")
            elif recs:
                leaks.append(f"vifwire state still has {len(recs)} record(s)")
        if self.ovs is not None:
            ports = self.ovs.vsctl("list-ports", OVS_BRIDGE).split()
            if ports:
                leaks.append(f"ovs {OVS_BRIDGE} ports left: {ports[:10]}")
        return summarise(leaks, phase)

    # ---- phases

    def sequential(self, n: int, warm: int = 2) -> None:
        conf = self.conf()
        for phase, count, timed in (("warm-up", warm, False), ("sequential", n, True)):
            base_links, base_routes = host_links(self.ns), host_routes(self.ns)
            self.phase = phase
            pods = self.new_pods(count, phase)
            added: dict[str, dict] = {}
            done: set[str] = set()
            adds: dict[str, float] = {}
            try:
                for cid, pod in pods:
                    r = self.launcher.run([self.job("ADD", cid, pod, conf)])["results"][0]
                    added[cid] = {}  # a failed ADD is DELeted too (as a runtime does)
                    added[cid] = self.add_result(r, pod)
                    adds[cid] = r["t"]
                self.verify_pods(added, pods)
                for cid, pod in pods:
                    r = self.launcher.run([self.job("DEL", cid, pod, self.del_conf(conf, added[cid]))])["results"][0]
                    done.add(cid)
                    err = self.del_error(r, pod)
                    if err:
                        raise Failed(err)
                    if timed:
                        self.res["add"].append(adds[cid])
                        self.res["del"].append(r["t"])
                        self.res["add_del"].append(adds[cid] + r["t"])
            finally:
                try:
                    if not interrupted():  # ^C/SIGTERM: the launcher may be mid-call; the teardown empties NS
                        self.cleanup_pods(conf, pods, added, done)
                        self.res["leaks"] += self.leak_check(base_links, base_routes, pods, phase)
                finally:
                    self.drop_pods(pods)

    def parallel(self, n: int, batch: int) -> None:
        conf = self.conf()
        base_links, base_routes = host_links(self.ns), host_routes(self.ns)
        pods = self.new_pods(n, "parallel")
        added: dict[str, dict] = {}
        done: set[str] = set()
        out = {"pods": n, "batch": batch, "add_wall": 0.0, "del_wall": 0.0, "add_each": [], "del_each": []}
        try:
            for k in range(0, n, batch):
                chunk = pods[k:k + batch]
                r = self.launcher.run([self.job("ADD", cid, pod, conf) for cid, pod in chunk])
                out["add_wall"] += r["wall"]
                errs = []
                for (cid, pod), x in zip(chunk, r["results"]):
                    added[cid] = {}
                    try:
                        added[cid] = self.add_result(x, pod)
                        out["add_each"].append(x["t"])
                    except Failed as exc:
                        errs.append(str(exc))
                if errs:
                    raise Failed(f"{len(errs)} of {len(chunk)} concurrent ADDs failed; first: {errs[0]}")
            self.verify_pods(added, pods)
            for k in range(0, n, batch):
                chunk = pods[k:k + batch]
                r = self.launcher.run([self.job("DEL", cid, pod, self.del_conf(conf, added[cid]))
                                       for cid, pod in chunk])
                out["del_wall"] += r["wall"]
                errs = []
                for (cid, pod), x in zip(chunk, r["results"]):
                    done.add(cid)
                    e = self.del_error(x, pod)
                    if e:
                        errs.append(e)
                    else:
                        out["del_each"].append(x["t"])
                if errs:
                    raise Failed(f"{len(errs)} of {len(chunk)} concurrent DELs failed; first: {errs[0]}")
            self.res["parallel"] = out
        finally:
            try:
                if not interrupted():
                    self.cleanup_pods(conf, pods, added, done)
                    self.res["leaks"] += self.leak_check(base_links, base_routes, pods, "parallel")
            finally:
                self.drop_pods(pods)


# --------------------------------------------------------------------------- run


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_row(key: str, idx: int, a, tmp: str, logdir: str, tag: str) -> dict:
    d = ROWS[key]
    if d["plugin"] == "vifwire" and not os.access(VIFWIRE_CNI, os.X_OK):
        log(f"{d['title']}: missing ({VIFWIRE_CNI})")
        return {"title": d["title"], "mode": d["mode"], "status": "missing"}
    row = Row(key, idx, a, tmp, logdir, tag)
    t0 = time.monotonic()
    try:
        row.setup()
        if not FLOOR:
            FLOOR.update(row.exec_floor())
        log(f"{d['title']}: sequential, {a.pods} pods (+2 warm-up)")
        try:
            row.sequential(a.pods)
        except (Failed, OSError, subprocess.SubprocessError, ValueError) as exc:
            row.res["status"] = "FAILED"
            row.res["errors"].append(f"{row.phase}: {exc}")
        if not a.skip_parallel and key in a.parallel_rows:
            log(f"{d['title']}: parallel, {a.conc_pods} pods in batches of {a.batch}")
            try:
                row.parallel(a.conc_pods, a.batch)
            except (Failed, OSError, subprocess.SubprocessError, ValueError) as exc:
                row.res["status"] = "FAILED"
                row.res["errors"].append(f"parallel: {exc}")
    except (Failed, OSError, subprocess.SubprocessError, ValueError) as exc:
        row.res["status"] = "FAILED"
        row.res["errors"].append(f"setup: {exc}")
        if row.agent is not None:
            row.res["errors"].append(f"agent log: {row.agent.tail(1500)}")
    finally:
        row.teardown()
    r = row.res
    r["wall_s"] = time.monotonic() - t0
    if r["leaks"]:
        r["status"] = "LEAK" if r["status"] == "ok" else r["status"] + "+LEAK"
    for e, n in condense(r["errors"]).items():
        log(f"  ERROR {key}{f' ({n} x)' if n > 1 else ''}: {e[:3000]}")
    for lk in r["leaks"]:
        log(f"  LEAK {key}: {lk}")
    log(f"  -> ADD p50 {ms(p50(r['add']))} ms, DEL p50 {ms(p50(r['del']))} ms ({r['wall_s']:.1f} s)")
    return r


def report(rows: dict[str, dict], a) -> str:
    L: list[str] = []
    P = L.append
    P(f"\nCNI ADD/DEL per pod, ms ({a.pods} pods per row, sequential: all ADDs then all DELs; "
      f"cniVersion {CNI_VERSION}, host-local IPAM)")
    P(f"Method: {METHOD}.\n")
    P("| row | ADD p50 | ADD p90 | DEL p50 | DEL p90 | ADD+DEL p50 | ADD+DEL p90 | ADD+DEL / reference | "
      "VERSION p50 | status |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for key, r in rows.items():
        if r["status"] == "missing":
            P(f"| {r['title']} | missing | | | | | | | | missing |")
            continue
        ref = rows.get(REFERENCE.get(r["mode"], ""), {})
        ratio = ""
        if ROWS[key]["plugin"] == "vifwire" and ref.get("add_del") and r.get("add_del"):
            ratio = f"{p50(r['add_del']) / p50(ref['add_del']):.2f}x vs {REFERENCE[r['mode']]}"
        P(f"| {r['title']} | {ms(p50(r['add']))} | {ms(p90(r['add']))} | {ms(p50(r['del']))} | "
          f"{ms(p90(r['del']))} | {ms(p50(r['add_del']))} | {ms(p90(r['add_del']))} | {ratio} | "
          f"{ms(p50(r.get('version_s') or []))} | {r['status']} |")
    if a.parallel_rows and not a.skip_parallel:
        P(f"\nParallel: {a.conc_pods} pods, batches of {a.batch} concurrent CNI calls (wall time = sum of batch "
          "walls, each from the first fork to the last exit)\n")
        P("| row | ADD total s | ADDs/s | ADD each p50 ms | DEL total s | DELs/s | DEL each p50 ms | "
          "ADD+DEL total / reference |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|")
        for key, r in rows.items():
            if key not in a.parallel_rows:
                continue
            x = r.get("parallel")
            if not x:
                P(f"| {r['title']} | {r['status'] if r['status'] == 'missing' else 'FAILED'} | | | | | | |")
                continue
            ref = (rows.get(REFERENCE.get(r["mode"], ""), {}) or {}).get("parallel")
            ratio = ""
            if ROWS[key]["plugin"] == "vifwire" and ref:
                ratio = (f"{(x['add_wall'] + x['del_wall']) / (ref['add_wall'] + ref['del_wall']):.2f}x vs "
                         f"{REFERENCE[r['mode']]}")
            P(f"| {r['title']} | {x['add_wall']:.2f} | {x['pods'] / x['add_wall']:.0f} | {ms(p50(x['add_each']), 1)} | "
              f"{x['del_wall']:.2f} | {x['pods'] / x['del_wall']:.0f} | {ms(p50(x['del_each']), 1)} | {ratio} |")
    P("\n(VERSION p50: the plugin's `CNI_COMMAND=VERSION` call, i.e. its start-up cost without any wiring.)")
    bad = {k: r for k, r in rows.items() if r.get("errors") or r.get("leaks")}
    if bad:
        P("\nErrors and leaks (distinct messages, pod names elided, tracebacks cut to their last line; "
          "--json keeps them whole)\n")
        for k, r in bad.items():
            for e, n in condense(r.get("errors", [])).items():
                P(f"- {k}: ERROR{f' ({n} x)' if n > 1 else ''} {e}")
            for lk in r.get("leaks", []):
                P(f"- {k}: LEAK {lk}")
    else:
        P("\nLeak checks: clean (no veth/route/IPAM reservation/vifwire record left after the DELs; pods empty).")
    if FLOOR:
        P("Method floor (same launcher, median fork/exec -> exit): "
          + ", ".join(f"{k} {ms(v)} ms" for k, v in FLOOR.items()))
    vs = {k: r.get("version") for k, r in rows.items() if r.get("version")}
    if vs:
        P("VERSION answers: " + "; ".join(f"{k} {v}" for k, v in vs.items()))
    return "\n".join(L)


def condense(errors: list[str]) -> dict[str, int]:
    """Distinct errors (pod names elided, a traceback reduced to its last line) -> count."""
    out: dict[str, int] = {}
    for e in errors:
        e = re.sub(r"vw-cnp[0-9a-f]+-\d+-\d+", "POD", e)
        e = re.sub(r"Traceback \(most recent call last\):.*\\n", "(traceback) ", e, flags=re.S)
        out[e] = out.get(e, 0) + 1
    return out


def loadavg() -> str:
    return benchkit.loadavg()


def tree_state() -> str:
    return benchkit.tree_state(ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 pods per row, 20 parallel pods")
    ap.add_argument("--pods", type=int, default=None, help="sequential pods per row (default 50; --quick 10)")
    ap.add_argument("--conc-pods", type=int, default=None, help="pods of the parallel part (default 100; --quick 20)")
    ap.add_argument("--batch", type=int, default=10, help="concurrent CNI calls per batch (default 10)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=None, help="rows to run (default all)")
    ap.add_argument("--parallel-rows", nargs="+", choices=list(ROWS), default=None,
                    help="rows that also run the parallel part (default all but ovs)")
    ap.add_argument("--no-ovs", action="store_true", help="skip the ovs rows")
    ap.add_argument("--skip-parallel", action="store_true")
    ap.add_argument("--anti-spoof", choices=("on", "off"), default="on",
                    help="vifwire's antiSpoof (on = the plugin's default, the key is not set)")
    ap.add_argument("--wait-cni", type=float, default=0.0, metavar="S",
                    help=f"poll up to S seconds for {VIFWIRE_CNI} before starting")
    ap.add_argument("--keep-logs", metavar="DIR", help="keep agent/launcher logs here")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH",
                    help="raw results as JSON: to PATH, or on stdout instead of the tables when no PATH")
    a = ap.parse_args()
    a.pods = a.pods or (10 if a.quick else 50)
    a.conc_pods = a.conc_pods or (20 if a.quick else 100)
    if a.rows is None:
        a.rows = [k for k in ROWS if not (ROWS[k]["mode"] == "ovs" and (a.no_ovs or not HAVE_OVS))]
    if a.parallel_rows is None:
        a.parallel_rows = [k for k in ROWS if ROWS[k]["mode"] != "ovs"]
    a.parallel_rows = [k for k in a.parallel_rows if k in a.rows]
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    main_pid = os.getpid()

    def on_sigterm(*_):
        if os.getpid() != main_pid:
            os._exit(143)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    deadline = time.monotonic() + a.wait_cni
    while not os.access(VIFWIRE_CNI, os.X_OK) and time.monotonic() < deadline:
        time.sleep(2)
    tmp = tempfile.mkdtemp(prefix="vw-cnb-", dir="/tmp")  # short paths: unix sockets < 108 bytes
    logdir = a.keep_logs or tmp
    if a.keep_logs:
        os.makedirs(a.keep_logs, exist_ok=True)
    tag = f"{os.getpid() % 100000:x}"
    load0, tree0 = loadavg(), tree_state()
    t0 = time.monotonic()
    rows: dict[str, dict] = {}
    log(f"cni bench: {a.pods} pods/row, parallel {a.conc_pods} in batches of {a.batch}, rows {' '.join(a.rows)}; "
        f"vifwire-cni {'present' if os.access(VIFWIRE_CNI, os.X_OK) else 'MISSING'}")
    try:
        for idx, key in enumerate(a.rows):
            rows[key] = run_row(key, idx, a, tmp, logdir, tag)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        raise
    finally:
        with no_signals():
            for p in reversed(list(LIVE)):
                with contextlib.suppress(Exception):
                    p.stop()
            for name in reversed(list(CREATED_NS)):
                with contextlib.suppress(Exception):
                    empty_ns(name)
                with contextlib.suppress(Exception):
                    ns_remove(name)
            shutil.rmtree(tmp, ignore_errors=True)
    meta = {"method": METHOD, "pods": a.pods, "conc_pods": a.conc_pods, "batch": a.batch,
            "anti_spoof": a.anti_spoof, "kernel": os.uname().release, "cpus": os.cpu_count(),
            "load_start": load0, "load_end": loadavg(), "tree": tree0, "tree_end": tree_state(),
            "wall_s": time.monotonic() - t0,
            "exec_floor_s": FLOOR, "vifwire_cni": VIFWIRE_CNI if os.access(VIFWIRE_CNI, os.X_OK) else None}
    dump = {"meta": meta, "rows": rows}
    if a.json and a.json != "-":
        with open(a.json, "w") as f:
            json.dump(dump, f, indent=1)
    if a.json == "-":
        print(json.dumps(dump, indent=1))
    else:
        print(report(rows, a))
        print(f"\n({meta['wall_s']:.0f} s; kernel {meta['kernel']}, {meta['cpus']} CPUs; load average at start "
              f"{load0}, at end {meta['load_end']}; vifwire antiSpoof {a.anti_spoof}; tree {tree0}"
              + (f" -> {meta['tree_end']} DURING THE RUN" if meta["tree_end"] != tree0 else "") + ")")
    failed = any(r["status"] not in ("ok", "missing") for r in rows.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
