"""Service-level benchmark: the ``vifwire`` command as a shell runs it, beside the kernel floor.

Every measurement is a whole process started from here (``.venv/bin/vifwire``
as a subprocess, wall clock from spawn to exit, interpreter start-up and
imports included), and so is every floor (``ip``, ``nft``, ``sysctl``
processes). The ports are Neutron-style routed taps (``vif_type tap``, devname
``tap`` + the first 11 characters of the port id, a MAC, one IPv4 and one IPv6
fixed IP, libvirt guest), plugged with anti-spoofing (``--anti-spoof on``).

Rows (targets from the brief):

1. ``vifwire plug FILE --netns NS --state DB`` of ONE port, <= 200 ms median.
   *cold*: the first port in a fresh namespace (vifwire also creates its nft
   tables); *warm*: a further port once the tables exist (the usual case on a
   compute host). Floor: the same things done by hand, one process each:
   ``ip tuntap add``, ``ip link set address/mtu/up``, ``ip route add`` (v4),
   ``ip -6 route add``, one ``sysctl -w`` of the 6 per-device keys and one ``nft -f`` (cold: tables + the port's
   elements; warm: the elements). ``nft``/``sysctl`` run under ``nsenter --net``.
2. ``vifwire render libvirt FILE`` of one port, <= 150 ms. Floor: the bare
   interpreter (``.venv/bin/python -c pass``): what any Python CLI pays.
3. ``vifwire list --state DB`` (and ``--json``) with N_max records (made by
   plugging N_max routed taps once), <= 150 ms. Floor: a Python one-liner
   that reads every row of the same SQLite file (and prints them as JSON).
4. Marginal cost per VIF, N_min -> N_max (default 200 -> 1000), of ``vifwire
   plug`` of N ports (one file, one process) and ``vifwire unplug --all``:
   (t(N_max) - t(N_min)) / (N_max - N_min); target <= 1.5x the floor's. Floor
   plug: one ``ip -n NS -batch`` file (tuntap add, link set, two routes per
   port) plus one ``nft -f`` file (one transaction) adding the
   same 22 set elements per port that vifwire's anti-spoofing installs
   (inet: ports, ports_fp, vif_ifaces, allow_mac, allow_v4, 2 allow_v6, 2
   allow_nd, 7 drop_*; arp: vif_ifaces, allow_mac, allow_v4, 2 drop_*) into
   a stand-in table of the same set layout. Floor unplug: one ``ip -batch``
   that moves every device into a link group and deletes the group (``link
   del group``: one RCU wait for all, as vifwire's bulk removal does; a
   ``link del`` per device pays one each) plus one ``nft -f`` deleting the
   elements. The floor excludes the 6 per-device sysctls vifwire writes; a
   ``sysctl -p`` of them is measured on its own and reported in the notes.
5. ``vifwire unplug --all`` and ``vifwire check`` of N_max ports, <= 0.5 s
   each. Floors: the unplug floor above; for check, reading the same state
   back by hand (``ip`` link/route/route -6/proxy-neigh listings, one ``nft
   list`` per table, one ``sysctl`` read of the per-device keys).

Each measurement group gets fresh namespaces (``vifwire.sandbox.netns``):
vifwire and its floor run back to back in twin namespaces, so per-round
ratios compare like with like. In every namespace: ``lo`` up with
169.254.1.1/32 (the routed gateway; also keeps IPv4 route inserts O(1), see
docs/routed.md) and ``net.ipv6.conf.all.forwarding=1`` (routed IPv6 needs
it). IPv6 stays enabled (half the routes are IPv6); the taps have
no reader, hence no carrier, so no IPv6 autoconf (DAD, RS, MLD) runs on them.
Every namespace is emptied before it is deleted (so the kernel does not tear
1000 devices down asynchronously under the next measurement) and always
removed, with the temp dirs, on success, failure, Ctrl-C or SIGTERM.

If a vifwire command fails (the CLI may be mid-refactor), its stderr is
printed and recorded, and the run goes on with the other rows.

    .venv/bin/python bench/service_bench.py [--rounds 3] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


def _load_netns():
    """``vifwire.sandbox.netns``; loaded from its file if the package does not
    import (src/ is being restructured; that module only needs the stdlib)."""
    try:
        from vifwire.sandbox import netns as mod

        return mod
    except Exception as exc:  # noqa: BLE001
        path = REPO / "src" / "vifwire" / "sandbox" / "netns.py"
        print(f"note: vifwire.sandbox.netns did not import ({exc!r}); loading {path}", file=sys.stderr)
        spec = importlib.util.spec_from_file_location("_vw_netns", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


netns = _load_netns()

MTU = 1450
RTPROT = 158  # vifwire's route protocol
GW4 = "169.254.1.1"
GROUP = 4242
TIMEOUT = 600  # seconds, any single process

SYSCTL_KEYS = ("net.ipv4.conf.{d}.forwarding=1", "net.ipv6.conf.{d}.forwarding=1",
               "net.ipv6.conf.{d}.accept_ra=0", "net.ipv4.conf.{d}.proxy_arp=1",
               "net.ipv4.neigh.{d}.proxy_delay=0", "net.ipv6.neigh.{d}.proxy_delay=0")


# --------------------------------------------------------------------------- ports

class Port:
    def __init__(self, i: int):
        self.i = i
        self.id = f"{i:08x}-5e7c-4000-8000-000000000096"
        self.dev = ("tap" + self.id)[:14]
        self.mac = f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        self.ip4 = str(ipaddress.IPv4Address("10.96.0.0") + i + 1)
        self.ip6 = str(ipaddress.IPv6Address("fd96::") + i + 1)

    def neutron(self) -> dict:
        return {
            "id": self.id, "mac_address": self.mac, "network_id": "4c1e6a0d-0000-4000-8000-000000000096",
            "device_id": f"inst-{self.i}", "fixed_ips": [{"subnet_id": "s4", "ip_address": self.ip4},
                                                         {"subnet_id": "s6", "ip_address": self.ip6}],
            "binding:vif_type": "tap", "binding:vif_details": {}, "binding:vnic_type": "normal",
            "binding:profile": {}, "binding:host_id": "bench", "status": "DOWN", "admin_state_up": True,
            "network": {"mtu": MTU},
        }

    def link_local(self) -> str:
        b = bytes(int(x, 16) for x in self.mac.split(":"))
        iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
        return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid))

    # what one port's plug is, for the floors
    def ip_lines(self) -> list[str]:
        return [f"tuntap add {self.dev} mode tap vnet_hdr",
                f"link set {self.dev} address {self.mac} mtu {MTU} up",
                f"route add {self.ip4}/32 dev {self.dev} proto {RTPROT} scope link",
                f"route add {self.ip6}/128 dev {self.dev} proto {RTPROT}"]

    def sysctls(self) -> list[str]:
        return [k.format(d=self.dev) for k in SYSCTL_KEYS]

    def elements(self) -> dict[tuple[str, str], list[str]]:
        """(family, set) -> nft-syntax elements: the 22 vifwire installs for this port."""
        d, m = f'"{self.dev}"', self.mac
        ll = self.link_local()
        fp = str(ipaddress.IPv6Address(hashlib.sha256(self.id.encode()).digest()[:16]))
        out: dict[tuple[str, str], list[str]] = {
            ("inet", "ports"): [d], ("inet", "ports_fp"): [f"{d} . {fp}"],
            ("inet", "allow_mac"): [f"{d} . {m}"], ("inet", "allow_v4"): [f"{d} . {m} . {self.ip4}"],
            ("inet", "allow_v6"): [f"{d} . {m} . {self.ip6}", f"{d} . {m} . {ll}"],
            ("inet", "allow_nd"): [f"{d} . {m} . 0x{int(ipaddress.IPv6Address(a)):032x}" for a in (self.ip6, ll)],
            ("arp", "allow_mac"): [f"{d} . {m}"], ("arp", "allow_v4"): [f"{d} . {m} . {self.ip4}"],
        }
        for r in ("mac", "ip4", "ip6", "ra", "nd", "dhcp", "other"):
            out[("inet", f"drop_{r}")] = [d]
        for r in ("mac", "arp"):
            out[("arp", f"drop_{r}")] = [d]
        out[("inet", "vif_ifaces")] = [d]
        out[("arp", "vif_ifaces")] = [d]
        return out


NFT_TABLES = """\
table inet floor {
  set ports { type ifname; }
  set ports_fp { type ifname . ipv6_addr; }
  set vif_ifaces { type ifname; }
  set allow_mac { type ifname . ether_addr; }
  set allow_v4 { type ifname . ether_addr . ipv4_addr; }
  set allow_v4_net { type ifname . ether_addr . ipv4_addr; flags interval; }
  set allow_v6 { type ifname . ether_addr . ipv6_addr; }
  set allow_v6_net { type ifname . ether_addr . ipv6_addr; flags interval; }
  set allow_nd { typeof iifname . ether saddr . @th,64,128; }
  set allow_nd_net { typeof iifname . ether saddr . @th,64,128; flags interval; }
%(inet_drops)s
  chain prerouting { type filter hook prerouting priority -300; policy accept; iifname @vif_ifaces jump guard; }
  chain guard {
    iifname . ether saddr != @allow_mac iifname @drop_mac drop
    meta nfproto ipv4 iifname . ether saddr . ip saddr @allow_v4 accept
    meta nfproto ipv4 iifname . ether saddr . ip saddr @allow_v4_net accept
    meta nfproto ipv4 iifname @drop_ip4 drop
    meta nfproto ipv6 iifname . ether saddr . ip6 saddr @allow_v6 accept
    meta nfproto ipv6 iifname . ether saddr . ip6 saddr @allow_v6_net accept
    meta nfproto ipv6 iifname @drop_ip6 drop
    iifname @drop_other drop
    drop
  }
}
table arp floor {
  set vif_ifaces { type ifname; }
  set allow_mac { type ifname . ether_addr; }
  set allow_v4 { type ifname . ether_addr . ipv4_addr; }
  set allow_v4_net { type ifname . ether_addr . ipv4_addr; flags interval; }
  set drop_mac { type ifname; counter; }
  set drop_arp { type ifname; counter; }
  chain input { type filter hook input priority 0; policy accept; iifname @vif_ifaces jump guard; }
  chain guard {
    iifname . ether saddr != @allow_mac iifname @drop_mac drop
    iifname . arp saddr ether . arp saddr ip @allow_v4 accept
    iifname . arp saddr ether . arp saddr ip @allow_v4_net accept
    iifname @drop_arp drop
    drop
  }
}
""" % {"inet_drops": "\n".join(f"  set drop_{r} {{ type ifname; counter; }}"
                               for r in ("mac", "ip4", "ip6", "ra", "nd", "dhcp", "other"))}


def nft_text(ports: list[Port], verb: str = "add", tables: bool = False) -> str:
    """One nft transaction: (the tables and) every element of ``ports``, one statement per set."""
    by_set: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in ports:
        for k, v in p.elements().items():
            by_set[k] += v
    body = "".join(f"{verb} element {fam} floor {s} {{ {', '.join(els)} }}\n" for (fam, s), els in by_set.items())
    return (NFT_TABLES if tables else "") + body


# --------------------------------------------------------------------------- processes

class Failed(Exception):
    pass


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIFWIRE_")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


ENV = _env()


class TimedOut(Failed):
    def __init__(self, what: str, limit: float):
        super().__init__(f"{what} did not finish within {limit:.0f} s (killed)")
        self.limit = limit


def run(argv: list[str], ok=(0,), stdin: str | None = None,
        timeout: float = TIMEOUT) -> tuple[float, subprocess.CompletedProcess]:
    """Run one process; (wall seconds from spawn to exit, result). Raises Failed on a bad
    exit code, TimedOut (after killing it) if it runs longer than ``timeout``."""
    t = time.perf_counter()
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimedOut(" ".join([os.path.basename(argv[0]), *(x for x in argv[1:3] if not x.startswith("/"))]),
                       timeout) from None
    dt = time.perf_counter() - t
    if res.returncode not in ok:
        err = (res.stderr or res.stdout or "").strip()
        what = " ".join([os.path.basename(argv[0]), *(x for x in argv[1:3] if not x.startswith("/"))])
        raise Failed(f"{what} ... exit {res.returncode}: {err[-1500:]}")
    return dt, res


def in_ns(ns: str, *argv: str) -> list[str]:
    """argv run inside ``ns`` (network namespace only; lighter than ``ip netns exec``)."""
    return ["nsenter", f"--net={netns.netns_path(ns)}", *argv]


def ip(ns: str, *args: str) -> list[str]:
    return ["ip", "-n", ns, *args]


# --------------------------------------------------------------------------- cleanup

class Interrupted(BaseException):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


@contextlib.contextmanager
def no_signals():
    """Let cleanup finish: SIGINT/SIGTERM/SIGHUP are held off inside."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


LIVE_NS: set[str] = set()


def empty_ns(ns: str) -> None:
    """Delete every link but lo (one group delete), so that removing the namespace is cheap."""
    if not netns.exists(ns):
        return
    out = subprocess.run(ip(ns, "-o", "link", "show"), capture_output=True, text=True, timeout=120).stdout
    names = [ln.split(":", 2)[1].strip().split("@")[0] for ln in out.splitlines() if ln.count(":") >= 2]
    names = [n for n in names if n and n != "lo"]
    if names:
        batch = "".join(f"link set {n} group {GROUP}\n" for n in names) + f"link del group {GROUP}\n"
        subprocess.run(ip(ns, "-force", "-batch", "-"), input=batch, capture_output=True, text=True, timeout=300)


def drop_ns(ns: str) -> None:
    with no_signals():
        try:
            empty_ns(ns)
        finally:
            netns.remove(ns)
            LIVE_NS.discard(ns)


@contextlib.contextmanager
def host(tag: str):
    """A fresh sandbox namespace prepared as a routed host; always emptied and removed."""
    ns = None
    for attempt in range(5):  # creation needs RTNL, which a busy machine may hold a while
        try:
            with no_signals():
                ns = netns.create(netns.unique_name(tag))
                LIVE_NS.add(ns)
            break
        except (OSError, subprocess.TimeoutExpired):
            if attempt == 4:
                raise
            time.sleep(2)
    try:
        run(ip(ns, "addr", "add", f"{GW4}/32", "dev", "lo"))
        run(in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"))
        yield ns
    finally:
        drop_ns(ns)


# --------------------------------------------------------------------------- results

class Results:
    def __init__(self):
        self.samples: dict[str, list[list[float]]] = defaultdict(list)  # key -> per round -> seconds
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.notes: dict[str, object] = {}
        self.timeouts: dict[str, float] = {}  # key -> the limit a run of it exceeded
        self.round = 0

    def add(self, key: str, secs: float) -> None:
        rows = self.samples[key]
        while len(rows) <= self.round:
            rows.append([])
        rows[self.round].append(secs)

    def fail(self, key: str, exc: BaseException) -> None:
        if isinstance(exc, TimedOut):
            self.timeouts[key] = max(self.timeouts.get(key, 0.0), exc.limit)
        msg = str(exc).strip()
        self.errors[key].append(msg)
        first = msg.splitlines()[0] if msg else repr(exc)
        print(f"  FAILED {key}: {first}", file=sys.stderr, flush=True)
        if len(self.errors[key]) == 1:
            for line in msg.splitlines()[1:12]:
                print(f"      {line}", file=sys.stderr)

    def all(self, key: str) -> list[float]:
        return [x for r in self.samples.get(key, []) for x in r]

    def per_round(self, key: str) -> list[float | None]:
        return [statistics.median(r) if r else None for r in self.samples.get(key, [])]

    def med(self, key: str) -> float | None:
        xs = self.all(key)
        return statistics.median(xs) if xs else None

    def min(self, key: str) -> float | None:
        xs = self.all(key)
        return min(xs) if xs else None

    def dump(self) -> dict:
        return {"samples_s": dict(self.samples), "errors": dict(self.errors), "timeouts_s": self.timeouts,
                "notes": self.notes}


def attempt(res: Results, key: str, fn, *a, **kw):
    """Run a measurement; on failure record it and carry on. Returns fn's result
    (True if that is None), or None if it failed."""
    try:
        out = fn(*a, **kw)
        return True if out is None else out
    except (Failed, subprocess.TimeoutExpired, OSError) as exc:
        res.fail(key, exc)
        return None


# --------------------------------------------------------------------------- measurements

class Bench:
    def __init__(self, args, tmp: str):
        self.a = args
        self.tmp = tmp
        self.vw = str(args.vifwire)
        self.py = str(VENV_BIN / "python")
        self.res = Results()
        self._n = 0

    def path(self, name: str) -> str:
        self._n += 1
        return os.path.join(self.tmp, f"{self._n:04d}-{name}")

    def write(self, name: str, text: str) -> str:
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def ports_file(self, ports: list[Port]) -> str:
        doc = ports[0].neutron() if len(ports) == 1 else [p.neutron() for p in ports]
        return self.write("ports.json", json.dumps(doc))

    def vifwire(self, *args: str, ok=(0,), timeout: float = TIMEOUT) -> tuple[float, subprocess.CompletedProcess]:
        return run([self.vw, *args], ok=ok, timeout=timeout)

    def plug_args(self, f: str, ns: str, db: str) -> list[str]:
        return ["plug", f, "--netns", ns, "--state", db, "--anti-spoof", "on"]

    # -- warm-up: byte-compile and page in what the timed runs use (untimed, failures ignored)
    def warmup(self) -> None:
        ports = [Port(900_000 + k) for k in range(2)]
        f = self.ports_file(ports)
        with host("sw") as ns:
            db = self.path("warm.db")
            for argv in (["render", "libvirt", f], self.plug_args(f, ns, db), ["list", "--state", db],
                         ["list", "--json", "--state", db], ["check", "--netns", ns, "--state", db],
                         ["unplug", "--all", "--netns", ns, "--state", db]):
                try:
                    self.vifwire(*argv, ok=(0, 1, 2, 3))
                except (subprocess.TimeoutExpired, OSError):
                    pass
            for cmd in (ip(ns, "link", "show"), in_ns(ns, "nft", "list", "ruleset"), [self.py, "-c", "pass"]):
                subprocess.run(cmd, capture_output=True, timeout=60)

    # -- rows 1 and 2 (and the interpreter reference)
    def startup_and_render(self) -> None:
        f = self.ports_file([Port(1)])
        for _ in range(self.a.reps):
            attempt(self.res, "python", lambda: self.res.add("python", run([self.py, "-c", "pass"])[0]))
            def render():
                dt, r = self.vifwire("render", "libvirt", f)
                if "<interface" not in r.stdout:
                    raise Failed(f"render printed no <interface>: {r.stdout[:200]!r}")
                self.res.add("render", dt)
            attempt(self.res, "render", render)

    def single_plug(self) -> None:
        base = 10_000 + 100 * self.res.round
        ports = [Port(base + k) for k in range(self.a.reps + 1)]
        files = [self.ports_file([p]) for p in ports]
        # vifwire
        with host("sv") as ns:
            db = self.path("single.db")
            for k, (p, f) in enumerate(zip(ports, files)):
                key = "plug1_cold" if k == 0 else "plug1_warm"

                def one():
                    dt, _ = self.vifwire(*self.plug_args(f, ns, db))
                    self.res.add(key, dt)
                attempt(self.res, key, one)
            attempt(self.res, "plug1_verify", self.verify, ns, len(ports), ports)
        time.sleep(0.2)
        # the floor, by hand
        with host("sf") as ns:
            for k, p in enumerate(ports):
                key = "plug1_cold_floor" if k == 0 else "plug1_warm_floor"
                nft_file = self.write("one.nft", nft_text([p], tables=(k == 0)))
                cmds = [ip(ns, "tuntap", "add", p.dev, "mode", "tap", "vnet_hdr"),
                        ip(ns, "link", "set", p.dev, "address", p.mac, "mtu", str(MTU), "up"),
                        in_ns(ns, "nft", "-f", nft_file),
                        in_ns(ns, "sysctl", "-q", "-w", *p.sysctls()),
                        ip(ns, "route", "add", f"{p.ip4}/32", "dev", p.dev, "proto", str(RTPROT), "scope", "link"),
                        ip(ns, "-6", "route", "add", f"{p.ip6}/128", "dev", p.dev, "proto", str(RTPROT))]

                def by_hand():
                    self.res.add(key, sum(run(c)[0] for c in cmds))
                attempt(self.res, key, by_hand)
        time.sleep(0.2)

    def verify(self, ns: str, n: int, ports: list[Port] | None = None) -> None:
        """Untimed sanity check: n taps exist and n interfaces are guarded by vifwire's inet table."""
        _, r = run(ip(ns, "-o", "link", "show", "type", "tun"))
        links = len(r.stdout.splitlines())
        _, r = run(in_ns(ns, "nft", "-j", "list", "set", "inet", "vifwire", "vif_ifaces"))
        elems = [x["set"].get("elem", []) for x in json.loads(r.stdout)["nftables"] if "set" in x]
        guarded = len(elems[0]) if elems else 0
        _, r = run(ip(ns, "route", "show", "proto", str(RTPROT)))
        routes4 = len(r.stdout.splitlines())
        self.res.notes.setdefault("verified", []).append(
            {"round": self.res.round, "ns_taps": links, "guarded": guarded, "routes4": routes4, "want": n})
        if (links, guarded, routes4) != (n, n, n):
            raise Failed(f"expected {n} taps/guarded/routes, found {links}/{guarded}/{routes4}")

    # -- rows 3, 4, 5
    def bulk(self, n: int, big: bool) -> None:
        ports = [Port(k) for k in range(n)]
        f = self.ports_file(ports)
        # vifwire: plug N in one process, (list, check), unplug --all
        with host("bv") as ns:
            db = self.path(f"bulk{n}.db")
            plugged = False

            def plug():
                nonlocal plugged
                dt, _ = self.vifwire(*self.plug_args(f, ns, db))
                plugged = True
                self.res.add(f"plugN:{n}", dt)
            attempt(self.res, f"plugN:{n}", plug)
            if plugged:
                attempt(self.res, f"plugN_verify:{n}", self.verify, ns, n)
            if big and plugged:
                time.sleep(0.3)  # let deferred kernel work from the plug settle
                for _ in range(self.a.list_reps):
                    def lst(key, *extra):
                        dt, r = self.vifwire("list", *extra, "--state", db, timeout=self.a.timeout)
                        if extra:
                            got = len(json.loads(r.stdout))
                        else:  # the table's title says how many
                            m = re.search(r"(\d+) attachment", r.stdout)
                            got = int(m.group(1)) if m else n
                        if got != n:
                            raise Failed(f"list showed {got} records, expected {n}")
                        self.res.add(key, dt)
                    attempt(self.res, "list", lst, "list")
                    attempt(self.res, "list_json", lst, "list_json", "--json")
                    attempt(self.res, "list_floor", lambda: self.res.add("list_floor", self.list_floor(db, False)))
                    attempt(self.res, "list_json_floor",
                            lambda: self.res.add("list_json_floor", self.list_floor(db, True)))

                def check():
                    dt, r = self.vifwire("check", "--netns", ns, "--state", db, ok=(0, 3), timeout=self.a.timeout)
                    if r.returncode == 3:
                        raise Failed(f"check found drift: {r.stdout.strip().splitlines()[-1:]}")
                    self.res.add("check", dt)
                attempt(self.res, "check", check)
            if plugged:
                time.sleep(0.3)

                def unplug():
                    dt, _ = self.vifwire("unplug", "--all", "--netns", ns, "--state", db)
                    self.res.add(f"unplugN:{n}", dt)
                attempt(self.res, f"unplugN:{n}", unplug)
                left = attempt(self.res, "unplug_leftovers", lambda: run(ip(ns, "-o", "link", "show", "type", "tun"))[1])
                if left is not None and left.stdout.strip():
                    self.res.fail(f"unplugN:{n}", Failed(f"unplug --all left {len(left.stdout.splitlines())} taps"))
        time.sleep(0.3)
        # the floor: ip -batch + nft -f; then group delete + nft -f delete
        batch = self.write(f"plug{n}.batch", "".join(ln + "\n" for p in ports for ln in p.ip_lines()))
        nft_add = self.write(f"plug{n}.nft", nft_text(ports, "add", tables=True))
        sysctl = self.write(f"plug{n}.sysctl", "".join(ln + "\n" for p in ports for ln in p.sysctls()))
        unbatch = self.write(f"unplug{n}.batch", "".join(f"link set {p.dev} group {GROUP}\n" for p in ports)
                             + f"link del group {GROUP}\n")
        nft_del = self.write(f"unplug{n}.nft", nft_text(ports, "delete"))
        with host("bf") as ns:
            ok = attempt(self.res, f"plugN_floor:{n}", lambda: self.res.add(
                f"plugN_floor:{n}", run(ip(ns, "-batch", batch))[0] + run(in_ns(ns, "nft", "-f", nft_add))[0]))
            attempt(self.res, f"sysctlN_floor:{n}", lambda: self.res.add(
                f"sysctlN_floor:{n}", run(in_ns(ns, "sysctl", "-q", "-p", sysctl))[0]))
            if big and ok is not None:
                time.sleep(0.3)
                dev_keys = [f"{k.split('=')[0].format(d=p.dev)}" for p in ports for k in SYSCTL_KEYS]
                reads = [ip(ns, "-d", "link", "show"), ip(ns, "route", "show", "proto", str(RTPROT)),
                         ip(ns, "-6", "route", "show", "proto", str(RTPROT)), ip(ns, "-6", "neigh", "show", "proxy"),
                         in_ns(ns, "nft", "-j", "list", "table", "inet", "floor"),
                         in_ns(ns, "nft", "-j", "list", "table", "arp", "floor"),
                         in_ns(ns, "sysctl", *dev_keys)]
                attempt(self.res, "check_floor", lambda: self.res.add("check_floor", sum(run(c)[0] for c in reads)))
            if ok is not None:
                time.sleep(0.3)
                attempt(self.res, f"unplugN_floor:{n}", lambda: self.res.add(
                    f"unplugN_floor:{n}", run(ip(ns, "-batch", unbatch))[0] + run(in_ns(ns, "nft", "-f", nft_del))[0]))
        time.sleep(0.3)

    def list_floor(self, db: str, as_json: bool) -> float:
        """A minimal Python tool reading every record of the same store (and printing them)."""
        code = ("import sqlite3,sys\n"
                "c=sqlite3.connect(sys.argv[1])\n"
                "t=c.execute(\"select name from sqlite_master where type='table' order by name\").fetchone()[0]\n"
                "cur=c.execute('select * from '+t)\n"
                "cols=[d[0] for d in cur.description]\n"
                "rows=cur.fetchall()\n")
        if as_json:
            code = "import json\n" + code + "print(json.dumps([dict(zip(cols,r)) for r in rows],indent=2))\n"
        else:
            code += "print('\\n'.join(' | '.join(str(x)[:40] for x in r[:8]) for r in rows))\n"
        return run([self.py, "-c", code, db])[0]


# --------------------------------------------------------------------------- report

def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{x * 1e3:.0f} ms" if x >= 0.1 else f"{x * 1e3:.1f} ms"
    if unit == "s":
        return f"{x:.3f} s"
    if unit == "ms/VIF":
        return f"{x * 1e3:.2f} ms/VIF"
    return f"{x:.3g}"


def report(res: Results, a) -> tuple[str, list[dict]]:
    small, big = a.sizes
    rows: list[dict] = []

    def ratio_round(key: str, fkey: str) -> float | None:
        rs = [v / f for v, f in zip(res.per_round(key), res.per_round(fkey)) if v and f]
        return statistics.median(rs) if rs else None

    def absolute(name: str, key: str, fkey: str | None, unit: str, limit: float) -> None:
        m, f = res.med(key), (res.med(fkey) if fkey else None)
        rows.append({"name": name, "key": key, "unit": unit, "median": m, "min": res.min(key),
                     "floor": f, "floor_min": res.min(fkey) if fkey else None,
                     "ratio": (m / f) if (m and f) else None,
                     "ratio_round": ratio_round(key, fkey) if fkey else None,
                     "target": f"<= {fmt(limit, unit)}",
                     "met": (m <= limit) if m is not None else (False if key in res.timeouts else None),
                     "failed": bool(res.errors.get(key)), "timeout": res.timeouts.get(key)})

    def marginal(name: str, k: str) -> None:
        def marg(key: str, pick) -> float | None:
            a_, b_ = pick(f"{key}:{small}"), pick(f"{key}:{big}")
            return (b_ - a_) / (big - small) if a_ is not None and b_ is not None else None

        def per_round(key: str) -> list[float | None]:
            return [(b_ - a_) / (big - small) if a_ is not None and b_ is not None else None
                    for a_, b_ in zip(res.per_round(f"{key}:{small}"), res.per_round(f"{key}:{big}"))]

        m, f = marg(k, res.med), marg(f"{k}_floor", res.med)
        vr, fr = per_round(k), per_round(f"{k}_floor")
        rr = [v / x for v, x in zip(vr, fr) if v and x]
        good = [v for v in vr if v is not None]
        ratio = (m / f) if (m is not None and f) else None
        rows.append({"name": name, "key": k, "unit": "ms/VIF", "median": m, "min": min(good) if good else None,
                     "floor": f, "floor_min": min((x for x in fr if x is not None), default=None),
                     "ratio": ratio, "ratio_round": statistics.median(rr) if rr else None,
                     "target": "<= 1.5x floor",
                     # t(N_max) <= t(N_min): the difference is below the noise, no verdict
                     "met": (ratio <= 1.5) if (ratio is not None and m > 0) else None,
                     "failed": bool(res.errors.get(f"{k}:{small}") or res.errors.get(f"{k}:{big}"))})

    absolute("plug 1 routed tap, warm host", "plug1_warm", "plug1_warm_floor", "ms", 0.200)
    absolute("plug 1 routed tap, fresh host", "plug1_cold", "plug1_cold_floor", "ms", 0.200)
    absolute("render libvirt, 1 port", "render", "python", "ms", 0.150)
    absolute(f"list, {big} records", "list", "list_floor", "ms", 0.150)
    absolute(f"list --json, {big} records", "list_json", "list_json_floor", "ms", 0.150)
    marginal(f"plug, marginal {small}->{big}", "plugN")
    marginal(f"unplug --all, marginal {small}->{big}", "unplugN")
    absolute(f"unplug --all, {big} ports", f"unplugN:{big}", f"unplugN_floor:{big}", "s", 0.5)
    absolute(f"check, {big} ports", "check", "check_floor", "s", 0.5)

    w = max(len(r["name"]) for r in rows)
    out = [f"{'target':<{w}} | {'median (min)':>24} | {'floor median (min)':>24} | {'ratio (r/round)':>15} "
           f"| {'target':>15} | met?", "-" * (w + 100)]
    for r in rows:
        u = r["unit"]
        if r["median"] is not None:
            med = f"{fmt(r['median'], u)} ({fmt(r['min'], u)})"
        elif r.get("timeout"):
            med = f"> {r['timeout']:.0f} s (killed)"
        else:
            med = "FAILED" if r["failed"] else "-"
        fl = f"{fmt(r['floor'], u)} ({fmt(r['floor_min'], u)})" if r["floor"] is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        if r["ratio_round"] is not None:
            ratio += f" ({r['ratio_round']:.2f})"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        if r["failed"] and r["median"] is not None:
            met += " (some runs failed)"
        out.append(f"{r['name']:<{w}} | {med:>24} | {fl:>24} | {ratio:>15} | {r['target']:>15} | {met}")
    return "\n".join(out), rows


def notes(res: Results, a, elapsed: float) -> str:
    small, big = a.sizes
    lines = []
    py = res.med("python")
    if py:
        lines.append(f"python start-up (.venv/bin/python -c pass): {fmt(py, 'ms')} median; it is the render floor")
    for k, label in (("plugN", "vifwire plug"), ("plugN_floor", "floor plug"), ("unplugN", "vifwire unplug --all"),
                     ("unplugN_floor", "floor unplug (group del)"), ("sysctlN_floor", "sysctl -p (not in floor)")):
        s, b = res.med(f"{k}:{small}"), res.med(f"{k}:{big}")
        if s is not None or b is not None:
            lines.append(f"{label:>26}: N={small} {fmt(s, 's')}, N={big} {fmt(b, 's')}")
    rounds = len(res.samples.get(f"plugN_floor:{big}", [])) or a.rounds
    lines.append(f"medians over {rounds} round(s) ({a.reps} samples/round for rows 1-2, {a.list_reps} for list); "
                 "ratio = median / floor median; r/round = median of per-round ratios; whole processes, wall clock")
    lines.append(f"host: Linux {platform.release()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
                 f"run took {elapsed:.0f} s")
    failed = [k for k, v in res.errors.items() if v]
    if failed:
        lines.append("failures: " + "; ".join(f"{k}: {res.errors[k][0].splitlines()[0][:160]}" for k in failed))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke test: N=50->200, 1 round, fewer samples")
    ap.add_argument("--sizes", type=int, nargs=2, metavar=("N_MIN", "N_MAX"), default=None,
                    help="bulk sizes (default 200 1000; --quick: 50 200)")
    ap.add_argument("--reps", type=int, default=None, help="samples per round for rows 1-2 (default 5; quick 3)")
    ap.add_argument("--list-reps", type=int, default=None, help="samples per round for list (default 3; quick 2)")
    ap.add_argument("--json", dest="json_out", metavar="OUT", help="write the raw results here")
    ap.add_argument("--vifwire", type=Path, default=VENV_BIN / "vifwire")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds after which a list or check run is killed and reported as > that [60]")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds = 1
    a.sizes = sorted(a.sizes or ([50, 200] if a.quick else [200, 1000]))
    a.reps = a.reps or (3 if a.quick else 5)
    a.list_reps = a.list_reps or (2 if a.quick else 3)
    if a.sizes[0] == a.sizes[1] or a.sizes[0] < 1:
        ap.error("--sizes needs two different positive sizes")
    if os.geteuid() != 0:
        print("needs root (creates network namespaces)", file=sys.stderr)
        return 1
    for tool in ("ip", "nft", "nsenter", "sysctl"):
        if not shutil.which(tool):
            print(f"needs {tool}", file=sys.stderr)
            return 1

    # what a user runs is an installed package, byte-compiled at install time;
    # the editable checkout is compiled here so that is what gets measured
    subprocess.run([str(a.vifwire.parent / "python"), "-m", "compileall", "-q", str(REPO / "src")],
                   stdout=subprocess.DEVNULL, check=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="vifwire-sbench-")
    b = Bench(a, tmp)
    interrupted = False

    def cur(key: str) -> float | None:  # this round's median, for the progress lines
        rows = b.res.samples.get(key, [])
        return statistics.median(rows[b.res.round]) if len(rows) > b.res.round and rows[b.res.round] else None

    try:
        if not a.no_warmup:
            print("warm-up (untimed)", file=sys.stderr, flush=True)
            b.warmup()
        for r in range(a.rounds):
            b.res.round = r
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            b.startup_and_render()
            b.single_plug()
            print(f"  plug 1: warm {fmt(cur('plug1_warm'), 'ms')} (floor {fmt(cur('plug1_warm_floor'), 'ms')}),"
                  f" render {fmt(cur('render'), 'ms')}", file=sys.stderr, flush=True)
            for n in a.sizes:
                b.bulk(n, big=(n == a.sizes[1]))
                print(f"  N={n}: plug {fmt(cur(f'plugN:{n}'), 's')} (floor {fmt(cur(f'plugN_floor:{n}'), 's')}),"
                      f" unplug --all {fmt(cur(f'unplugN:{n}'), 's')} "
                      f"(floor {fmt(cur(f'unplugN_floor:{n}'), 's')})", file=sys.stderr, flush=True)
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = True
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}); cleaning up, partial results follow", file=sys.stderr)
    finally:
        with no_signals():
            for ns in list(LIVE_NS):  # only if a with-block could not remove its own
                drop_ns(ns)
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    table, rows = report(b.res, a)
    print(table)
    print(notes(b.res, a, elapsed))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                       "elapsed_s": elapsed, "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
                       "rows": rows, **b.res.dump()}, f, indent=1)
        print(f"raw results: {a.json_out}", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
