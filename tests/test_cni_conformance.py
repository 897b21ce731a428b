"""``vifwire-cni`` against the CNI specification (0.4.0, 1.0.0, 1.1.0), driven as a runtime drives it.

Every call is a subprocess: ``ip netns exec HOST vifwire-cni`` with the CNI
environment (``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``,
``CNI_IFNAME``, ``CNI_PATH``) and the network configuration on stdin. HOST is
a throwaway namespace shared by the module (the plugin wires it as "the
host"); each "container" is another throwaway namespace. The root namespace
is never touched (conftest checks it). Configuration: mode routed, IPAM
host-local with its ``dataDir``, vifwire's ``state`` in ``tmp_path``, and
``"agent": ""`` (in-process) except where the agent is the subject.

What is asserted, with the spec's words in mind:

* ADD (each version): ``cniVersion`` echoed; ``interfaces`` has the container
  interface (``sandbox`` = ``CNI_NETNS``, ``mac``) and the host end (no
  sandbox, with its ``mac``); each ``ips`` entry has an ``interface`` index
  into ``interfaces`` pointing at the container interface; 0.4.0 entries carry
  ``version``, 1.0.0+ ones do not. The interface really is in the container
  with that MAC, the address (/32, /128) and a default route via 169.254.1.1
  (fe80::1), and every route of the result is there; the host has the host
  end up, a route to the address, a record, an IPAM lease. A second ADD of
  the same attachment fails without harming the first; two interfaces of one
  container are independent; concurrent ADDs/DELs of containers work.
* CHECK: nothing on stdout and exit 0 when intact; an error (a plugin code,
  >= 100) when a resource of the result or a firewall entry or the IP
  reservation is missing or broken; an attachment never added is code 3.
* DEL: idempotent; works with the container namespace gone or ``CNI_NETNS``
  unset or no ``prevResult``, after a failed ADD and when nothing was ever
  added; leaves nothing (host end, routes, nft entries, record, lease).
* An ADD failing at any step (``VIFWIRE_FAIL_AT_STEP``) leaves nothing.
* VERSION (echo, supported versions); STATUS (1.1.0: 0 when ready, 50 when it
  cannot service ADD: IPAM plugin missing, state unusable); STATUS and GC
  refused under 0.4.0/1.0.0; GC (1.1.0: ``cni.dev/valid-attachments``)
  removes exactly the stale attachments of this network.
* Errors: non-zero exit, one JSON object on stdout with ``cniVersion``,
  ``code``, a one-line ``msg`` (and ``details``), no traceback; the codes of
  the spec's table (1 version, 3 unknown container, 4 environment - the msg
  names the variable -, 6 decoding, 7 configuration, 50 not available).
* A chained ADD keeps ``prevResult``'s interfaces, IPs, routes and DNS and
  appends its own with correct indices; its DEL leaves the others' things.
* The same through the agent (``"agent": SOCKET``): STATUS, ADD, CHECK, DEL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from vifwire.sandbox import netns

pytestmark = pytest.mark.root

BIN = os.path.dirname(sys.executable)
PLUGIN = os.path.join(BIN, "vifwire-cni")
VIFWIRE = os.path.join(BIN, "vifwire")
CNI_PATH = "/usr/lib/cni"
IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"

VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
GW4, GW6 = "169.254.1.1", "fe80::1"
NET = "cnitest"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.I)
HOSTEND_RE = re.compile(r"^vfw[0-9a-f]{11}$")
_subnets = itertools.count(1)


@pytest.fixture(scope="module", autouse=True)
def _plugin_present():
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    # scripts/setup.sh installs both: missing is a failure, never a silent skip
    if not os.access(PLUGIN, os.X_OK):
        pytest.fail(f"{PLUGIN} is not installed (bash scripts/setup.sh)")
    if not os.access(os.path.join(CNI_PATH, "host-local"), os.X_OK):
        pytest.fail("the CNI reference plugin host-local is not in /usr/lib/cni (bash scripts/setup.sh)")


# --------------------------------------------------------------------------- inspection (ip -j, nft)


def _ipj(*args: str) -> list[dict[str, Any]]:
    res = subprocess.run([IP, "-j", *args], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise OSError(f"ip -j {' '.join(args)}: {res.stderr.strip()}")
    return json.loads(res.stdout) if res.stdout.strip() else []


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([IP, *args], capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def links(ns: str) -> dict[str, dict[str, Any]]:
    return {l["ifname"]: l for l in _ipj("-n", ns, "link", "show")}


def addrs(ns: str, dev: str) -> list[tuple[str, str, int]]:
    """``(family, address, prefixlen)`` of ``dev`` in ``ns`` (inet, inet6; no link-local)."""
    out = []
    for entry in _ipj("-n", ns, "addr", "show", "dev", dev):
        for a in entry.get("addr_info", []):
            if a.get("scope") != "link":
                out.append((a["family"], a["local"], a["prefixlen"]))
    return out


def routes(ns: str) -> list[dict[str, Any]]:
    """Every IPv4 and IPv6 route of ``ns``, all tables."""
    return _ipj("-n", ns, "-4", "route", "show", "table", "all") + _ipj("-n", ns, "-6", "route", "show", "table", "all")


def _dst(r: dict[str, Any]) -> str:
    return r.get("dst", "")


def _family(r: dict[str, Any]) -> int:
    return 6 if ":" in _dst(r) + r.get("gateway", "") + r.get("prefsrc", "") else 4


def routes_to(ns: str, ip: str) -> list[dict[str, Any]]:
    host = f"{ip}/{32 if ':' not in ip else 128}"
    return [r for r in routes(ns) if _dst(r) in (ip, host)]


def routes_into(ns: str, subnets: list[str]) -> list[dict[str, Any]]:
    nets = [ipaddress.ip_network(s) for s in subnets]
    out = []
    for r in routes(ns):
        d = _dst(r)
        if not d or d == "default":
            continue
        try:
            n = ipaddress.ip_network(d, strict=False)
        except ValueError:
            continue
        if any(n.version == s.version and n.subnet_of(s) for s in nets):
            out.append(r)
    return out


def nft_ruleset(ns: str) -> str:
    res = subprocess.run([IP, "netns", "exec", ns, NFT, "list", "ruleset"], capture_output=True, text=True, timeout=60)
    return res.stdout


def _ip_pattern(ip: str) -> re.Pattern:
    return re.compile(r"(?<![0-9a-fA-F:.])" + re.escape(ip) + r"(?![0-9a-fA-F:])")


# --------------------------------------------------------------------------- the runtime


@dataclass
class Run:
    """One plugin execution."""

    env: dict[str, str]
    stdin: str
    rc: int
    stdout: str
    stderr: str

    @property
    def out(self) -> Any:
        return json.loads(self.stdout)

    def why(self) -> str:
        shown = {k: v for k, v in self.env.items() if k.startswith(("CNI_", "VIFWIRE_"))}
        return (f"\nenv={shown}\nstdin={self.stdin[:1500]}\nrc={self.rc}\nstdout={self.stdout[-3000:]}"
                f"\nstderr={self.stderr[-3000:]}")


@dataclass
class Att:
    """One attachment: what the runtime knows of it."""

    cid: str
    ifname: str
    ct: str  # the container's namespace name
    conf: dict[str, Any]
    result: dict[str, Any] | None = None

    @property
    def netns(self) -> str:
        return netns.netns_path(self.ct)

    @property
    def version(self) -> str:
        return self.conf["cniVersion"]

    # what the result says (valid once ADD succeeded and assert_add_result passed)
    @property
    def index(self) -> int:
        assert self.result is not None
        return next(i for i, x in enumerate(self.result["interfaces"])
                    if x.get("name") == self.ifname and x.get("sandbox") == self.netns)

    @property
    def mac(self) -> str:
        return self.result["interfaces"][self.index]["mac"]

    @property
    def hostend(self) -> str:
        own = [x["name"] for x in self.result["interfaces"] if not x.get("sandbox") and HOSTEND_RE.match(x["name"])]
        assert len(own) == 1, self.result
        return own[0]

    @property
    def ips(self) -> list[str]:
        return [str(ipaddress.ip_interface(x["address"]).ip) for x in self.result["ips"]
                if x.get("interface") == self.index]


class Cni:
    """A runtime for one test: its own state db, IPAM dataDir and subnets; everything it made goes in teardown."""

    def __init__(self, host: str, tmp: str):
        self.host, self.tmp = host, tmp
        n = next(_subnets)
        self.subnet4, self.subnet6 = f"10.77.{n}.0/24", f"fd77:0:{n:x}::/64"
        self.other4 = f"10.78.{n}.0/24"  # a second network's
        self.state = os.path.join(tmp, "state.db")
        self.ipam_dir = os.path.join(tmp, "ipam")
        self.containers: list[str] = []
        self.atts: list[Att] = []

    # ---- configuration

    def conf(self, version: str = "1.0.0", *, v6: bool = False, name: str = NET, subnet4: str | None = None,
             **extra: Any) -> dict[str, Any]:
        ranges = [[{"subnet": subnet4 or self.subnet4}]]
        if v6:
            ranges.append([{"subnet": self.subnet6}])
        c = {"cniVersion": version, "name": name, "type": "vifwire-cni", "mode": "routed",
             "ipam": {"type": "host-local", "ranges": ranges, "dataDir": self.ipam_dir},
             "state": self.state, "agent": ""}
        c.update(extra)
        return c

    # ---- namespaces

    def container(self) -> str:
        name = netns.unique_name("cnc")
        self.containers.append(name)  # before creating: removed even if creation fails half-way
        netns.create(name)
        return name

    def att(self, ct: str | None = None, *, version: str = "1.0.0", ifname: str = "eth0", cid: str | None = None,
            conf: dict[str, Any] | None = None, **kw: Any) -> Att:
        a = Att(cid or f"c{secrets.token_hex(6)}", ifname, ct or self.container(), conf or self.conf(version, **kw))
        self.atts.append(a)  # teardown DELs it, whatever happens
        return a

    # ---- executing the plugin

    def run(self, command: str | None, stdin: str | dict | None = None, *, cid: str | None = None,
            netns_path: str | None = None, ifname: str | None = None, env: dict[str, str] | None = None,
            unset: tuple[str, ...] = (), path: bool = True) -> Run:
        e = {"PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")}
        if command is not None:
            e["CNI_COMMAND"] = command
        if cid is not None:
            e["CNI_CONTAINERID"] = cid
        if netns_path is not None:
            e["CNI_NETNS"] = netns_path
        if ifname is not None:
            e["CNI_IFNAME"] = ifname
        if path:
            e["CNI_PATH"] = CNI_PATH
        e.update(env or {})
        for k in unset:
            e.pop(k, None)
        data = stdin if isinstance(stdin, str) else json.dumps(stdin if stdin is not None else {})
        p = subprocess.run([IP, "netns", "exec", self.host, PLUGIN], input=data, env=e, capture_output=True,
                           text=True, timeout=120)
        return Run(e, data, p.returncode, p.stdout, p.stderr)

    def _att_run(self, command: str, a: Att, conf: dict[str, Any], **kw: Any) -> Run:
        return self.run(command, conf, cid=a.cid, netns_path=kw.pop("netns_path", a.netns), ifname=a.ifname, **kw)

    def add(self, a: Att, **kw: Any) -> Run:
        r = self._att_run("ADD", a, a.conf, **kw)
        if r.rc == 0:
            a.result = r.out
        return r

    def add_ok(self, a: Att, *, own_default: bool = True, **kw: Any) -> Att:
        r = self.add(a, **kw)
        assert r.rc == 0, "ADD failed" + r.why()
        assert_add_result(self, a, r, own_default=own_default)
        return a

    def with_prev(self, a: Att, prev: dict[str, Any] | None) -> dict[str, Any]:
        c = dict(a.conf)
        if prev is not None:
            c["prevResult"] = prev
        return c

    def check(self, a: Att, **kw: Any) -> Run:
        return self._att_run("CHECK", a, self.with_prev(a, a.result), **kw)

    def delete(self, a: Att, *, prev: bool = True, **kw: Any) -> Run:
        return self._att_run("DEL", a, self.with_prev(a, a.result if prev else None), **kw)

    def del_ok(self, a: Att, **kw: Any) -> None:
        r = self.delete(a, **kw)
        assert r.rc == 0, "DEL failed" + r.why()

    # ---- host state

    def records(self) -> list[dict[str, Any]]:
        res = subprocess.run([IP, "netns", "exec", self.host, VIFWIRE, "list", "--state", self.state, "--json"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout)

    def leases(self, network: str = NET) -> dict[str, tuple[str, str]]:
        """host-local's reservations: ``{ip: (container id, ifname)}``."""
        d = os.path.join(self.ipam_dir, network)
        out: dict[str, tuple[str, str]] = {}
        if not os.path.isdir(d):
            return out
        for f in os.listdir(d):
            if f == "lock" or f.startswith("last_reserved_ip"):
                continue
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                lines = fh.read().splitlines()
            out[f] = (lines[0].strip() if lines else "", lines[1].strip() if len(lines) > 1 else "")
        return out

    def host_ends(self) -> set[str]:
        return {n for n in links(self.host) if n.startswith("vfw")}

    # ---- teardown

    def teardown(self) -> None:
        for a in reversed(self.atts):
            with contextlib.suppress(Exception):
                self.delete(a)
        for ct in self.containers:
            with contextlib.suppress(Exception):
                netns.remove(ct)
        # the host namespace is shared by the module: nothing of this test may stay in it
        with contextlib.suppress(Exception):
            for name in self.host_ends():
                _ip("-n", self.host, "link", "del", name, check=False)
        with contextlib.suppress(Exception):
            for r in routes_into(self.host, [self.subnet4, self.subnet6, self.other4]):
                fam = "-6" if ":" in _dst(r) else "-4"
                _ip("-n", self.host, fam, "route", "del", _dst(r), "table", str(r.get("table", "main")), check=False)


@pytest.fixture(scope="module")
def host():
    """The namespace the plugin wires as "the host", shared by the module."""
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    with netns.sandbox("cnh") as ns:
        yield ns


@pytest.fixture
def cni(host, tmp_path):
    rt = Cni(host, str(tmp_path))
    try:
        yield rt
    finally:
        rt.teardown()


# --------------------------------------------------------------------------- assertions


def assert_cni_error(r: Run, codes: set[int] | None = None, *, version: str | None = None,
                     mentions: str | None = None) -> dict[str, Any]:
    """A CNI error: non-zero exit; one JSON object on stdout (cniVersion, code, one-line msg, details); no traceback."""
    assert r.rc != 0, "expected a failure" + r.why()
    try:
        err = json.loads(r.stdout)
    except ValueError:
        pytest.fail("the error is not one JSON object on stdout" + r.why())
    assert isinstance(err, dict), r.why()
    assert isinstance(err.get("cniVersion"), str) and err["cniVersion"], "error without cniVersion" + r.why()
    assert isinstance(err.get("code"), int) and not isinstance(err["code"], bool), r.why()
    assert err["code"] != 0, r.why()
    assert isinstance(err.get("msg"), str) and err["msg"].strip(), "error without msg" + r.why()
    assert "\n" not in err["msg"].strip(), "msg is not one line" + r.why()
    assert isinstance(err.get("details", ""), str), r.why()
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, "a traceback" + r.why()
    if codes is not None:
        assert err["code"] in codes, f"code {err['code']}, the spec says {sorted(codes)}" + r.why()
    if version is not None:
        assert err["cniVersion"] == version, "the error does not carry the configuration's cniVersion" + r.why()
    if mentions is not None:
        assert mentions in err["msg"], f"the msg must name {mentions}" + r.why()
    return err


def assert_add_result(cni: Cni, a: Att, r: Run, *, own_default: bool = True) -> None:
    """The shape of an ADD result (for ``a``'s cniVersion), and the interface really in the container."""
    assert "Traceback" not in r.stderr, r.why()
    res = r.out
    assert res.get("cniVersion") == a.version, "ADD must echo the configuration's cniVersion" + r.why()
    ifs = res.get("interfaces")
    assert isinstance(ifs, list) and ifs, "no interfaces" + r.why()
    for x in ifs:
        assert isinstance(x.get("name"), str) and x["name"], r.why()
    mine = [i for i, x in enumerate(ifs) if x.get("name") == a.ifname and x.get("sandbox") == a.netns]
    assert len(mine) == 1, f"one interface {a.ifname} with sandbox {a.netns} expected" + r.why()
    ci = mine[0]
    assert MAC_RE.match(ifs[ci].get("mac", "")), "the container interface has no mac" + r.why()
    hosts = [x for x in ifs if not x.get("sandbox") and HOSTEND_RE.match(x["name"])]
    assert len(hosts) == 1, "the host end (vfw + 11 hex, no sandbox) must be listed" + r.why()
    ips = res.get("ips")
    assert isinstance(ips, list) and ips, "no ips" + r.why()
    for x in ips:
        assert isinstance(x.get("interface"), int) and 0 <= x["interface"] < len(ifs), \
            "each ips entry needs an interface index into interfaces" + r.why()
        ip = ipaddress.ip_interface(x["address"])
        if a.version == "0.4.0":
            assert x.get("version") == str(ip.version), "0.4.0 ips entries carry version" + r.why()
        else:
            assert "version" not in x, "ips entries of 1.0.0+ have no version field" + r.why()
    own = [x for x in ips if x["interface"] == ci]
    assert own, "no ips entry points at the container interface" + r.why()
    assert_wired(cni, a, own_default=own_default)


def assert_wired(cni: Cni, a: Att, *, own_default: bool = True) -> None:
    """What the result says is really there: container side, host side, record, lease.

    ``own_default``: the default route goes through this interface (False for a
    container's second attachment: the first one already has the default route)."""
    ci = a.index
    ct_links = links(a.ct)
    assert a.ifname in ct_links, f"{a.ifname} is not in {a.ct}: {sorted(ct_links)}"
    link = ct_links[a.ifname]
    assert link["address"].lower() == a.mac.lower(), (link, a.result)
    assert "UP" in link["flags"], link
    have = addrs(a.ct, a.ifname)
    want_default = set()
    for x in a.result["ips"]:
        if x["interface"] != ci:
            continue
        ip = ipaddress.ip_interface(x["address"]).ip
        fam = "inet" if ip.version == 4 else "inet6"
        full = 32 if ip.version == 4 else 128
        assert (fam, str(ip), full) in have, f"{ip}/{full} is not on {a.ct}/{a.ifname}: {have}"
        want_default.add(ip.version)
    ct_routes = routes(a.ct)
    for v in want_default:
        gw = GW4 if v == 4 else GW6
        fam_routes = [r for r in ct_routes if _dst(r) == "default" and (":" in r.get("gateway", "")) == (v == 6)]
        assert any(r.get("gateway") == gw and (r.get("dev") == a.ifname or not own_default) for r in fam_routes), \
            f"no default route via {gw}{' dev ' + a.ifname if own_default else ''} in {a.ct}: {ct_routes}"
    assert_result_routes_exist(a, ct_routes)
    # the host side
    hl = links(cni.host)
    assert a.hostend in hl, f"host end {a.hostend} missing: {sorted(hl)}"
    assert "UP" in hl[a.hostend]["flags"], hl[a.hostend]
    for ip in a.ips:
        rs = routes_to(cni.host, ip)
        assert any(r.get("dev") == a.hostend for r in rs), f"no host route to {ip} dev {a.hostend}: {rs}"
    recs = [r for r in cni.records() if r.get("instance_id") == a.cid]
    assert recs, f"no record for {a.cid}"
    leases = cni.leases(a.conf["name"])
    for ip in a.ips:
        assert leases.get(ip, ("", ""))[0] == a.cid, f"no IPAM lease of {ip} for {a.cid}: {leases}"


def assert_result_routes_exist(a: Att, ct_routes: list[dict[str, Any]]) -> None:
    """Every route of the result (but those of a previous plugin) is in the container ("routes created by this
    attachment")."""
    prev = (a.conf.get("prevResult") or {}).get("routes") or []
    for route in a.result.get("routes") or []:
        if route in prev:
            continue
        dst = ipaddress.ip_network(route["dst"])
        want = "default" if dst.prefixlen == 0 else (str(dst.network_address) if dst.prefixlen == dst.max_prefixlen
                                                     else str(dst))
        gws = [r.get("gateway") for r in ct_routes if _dst(r) == want and _family(r) == dst.version
               and r.get("table", "main") == "main"]
        assert gws, f"the result lists route {route}; the container has none to {want}: {ct_routes}"
        if route.get("gw"):
            assert route["gw"] in gws, f"the result lists route {route}; the container's go via {gws}"


def assert_gone(cni: Cni, a: Att, *, ips: list[str] | None = None, hostend: str | None = None,
                network: str = NET) -> None:
    """Nothing of attachment ``a`` is left: host end, routes, filter entries, record, lease, container interface."""
    problems = []
    hl = links(cni.host)
    ruleset = nft_ruleset(cni.host)
    if hostend:
        if hostend in hl:
            problems.append(f"host end {hostend} still there")
        if re.search(r"\b" + re.escape(hostend) + r"\b", ruleset):
            problems.append(f"nft still names {hostend}")
        recs = [r for r in cni.records() if hostend in (r.get("devname"), *(r.get("devices") or []))]
    else:  # a failed ADD: no result to go by; this test's host has nothing else of ours
        extra = sorted(n for n in hl if n.startswith("vfw"))
        if extra:
            problems.append(f"host links left: {extra}")
        if re.search(r"\bvfw[0-9a-f]{11}\b", ruleset):
            problems.append("nft still names a vfw* device")
        recs = [r for r in cni.records() if r.get("instance_id") == a.cid]
    if recs:
        problems.append(f"records left: {[(r.get('port_id'), r.get('instance_id'), r.get('status')) for r in recs]}")
    if ips is None:
        left = routes_into(cni.host, [cni.subnet4, cni.subnet6])
        if left:
            problems.append(f"host routes left: {left}")
        if re.search(re.escape(cni.subnet4.rsplit(".", 1)[0]) + r"\.\d", ruleset):
            problems.append(f"nft still has addresses of {cni.subnet4}")
    else:
        for ip in ips:
            left = routes_to(cni.host, ip)
            if left:
                problems.append(f"host routes to {ip} left: {left}")
            if _ip_pattern(ip).search(ruleset):
                problems.append(f"nft still has {ip}")
    leases = {ip: who for ip, who in cni.leases(network).items() if who[0] == a.cid and who[1] in ("", a.ifname)}
    if leases:
        problems.append(f"IPAM leases left: {leases}")
    if netns.exists(a.ct) and a.ifname in links(a.ct):
        problems.append(f"{a.ifname} still in the container {a.ct}")
    assert not problems, problems


# --------------------------------------------------------------------------- VERSION


_supported: list[str] = []


def supported_versions(cni: Cni) -> list[str]:
    if not _supported:
        r = cni.run("VERSION", {"cniVersion": "1.0.0"}, path=False)
        assert r.rc == 0, r.why()
        _supported.extend(r.out["supportedVersions"])
    return _supported


@pytest.mark.parametrize("version", VERSIONS)
def test_version_echoes_and_lists_supported(cni, version):
    r = cni.run("VERSION", {"cniVersion": version}, path=False)  # only CNI_COMMAND is required
    assert r.rc == 0, r.why()
    out = r.out
    assert out["cniVersion"] == version, r.why()
    assert isinstance(out["supportedVersions"], list), r.why()
    assert set(VERSIONS) <= set(out["supportedVersions"]), r.why()


@pytest.mark.parametrize("bad", ["9.9.9", "0.3.1", "0.1.0"])
def test_unsupported_cni_version_is_code_1(cni, bad):
    if bad in supported_versions(cni):
        pytest.skip(f"{bad} is supported")
    a = cni.att(version=bad)
    r = cni.add(a)
    assert_cni_error(r, {1})
    assert_gone(cni, a)


@pytest.mark.parametrize("command", ["STATUS", "GC"])
@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_status_and_gc_need_1_1_0(cni, command, version):
    """STATUS and GC came with 1.1.0: refused for an older configuration (libcni's skel: code 1)."""
    conf = cni.conf(version)
    if command == "GC":
        conf["cni.dev/valid-attachments"] = []
    r = cni.run(command, conf)
    assert_cni_error(r, {1, 4})


# --------------------------------------------------------------------------- ADD / CHECK / DEL


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del(cni, version):
    a = cni.add_ok(cni.att(version=version))
    assert ipaddress.ip_address(a.ips[0]) in ipaddress.ip_network(cni.subnet4), a.result
    # the gateway answers (the routed mode's 169.254.1.1 on the host)
    ping = subprocess.run([IP, "netns", "exec", a.ct, "ping", "-c", "1", "-W", "5", GW4], capture_output=True,
                          text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    r = cni.check(a)
    assert r.rc == 0, "CHECK of an intact attachment failed" + r.why()
    assert r.stdout.strip() == "", "CHECK must output nothing on success" + r.why()
    hostend, ips = a.hostend, a.ips
    cni.del_ok(a)
    assert_gone(cni, a, ips=ips, hostend=hostend)
    cni.del_ok(a)  # DEL is idempotent
    cni.del_ok(a, prev=False)
    assert_gone(cni, a, ips=ips, hostend=hostend)


def test_add_result_has_the_host_end_mac(cni):
    """interfaces[].mac: "the hardware address of the interface (if applicable)" (1.0.0+), "required if L2 addresses
    are meaningful" (0.4.0): the host end is a veth, its MAC is meaningful (the reference ptp/bridge list it)."""
    a = cni.add_ok(cni.att(version="1.0.0"))
    host_if = next(x for x in a.result["interfaces"] if x["name"] == a.hostend)
    real = links(cni.host)[a.hostend]["address"]
    assert host_if.get("mac", "").lower() == real.lower(), f"host end {host_if}: its mac {real} is not listed"


@pytest.mark.parametrize("version", ["0.4.0", "1.1.0"])
def test_add_dual_stack(cni, version):
    a = cni.add_ok(cni.att(version=version, v6=True))
    fams = {ipaddress.ip_address(ip).version for ip in a.ips}
    assert fams == {4, 6}, a.result
    assert cni.check(a).rc == 0
    hostend, ips = a.hostend, a.ips
    cni.del_ok(a)
    assert_gone(cni, a, ips=ips, hostend=hostend)


def test_two_interfaces_in_one_container(cni):
    """(CNI_CONTAINERID, CNI_IFNAME) is the key: one container, two attachments, distinct and independent."""
    a = cni.add_ok(cni.att(version="1.1.0", ifname="eth0"))
    b = cni.add_ok(cni.att(a.ct, version="1.1.0", ifname="net1", cid=a.cid), own_default=False)
    assert a.hostend != b.hostend and set(a.ips).isdisjoint(b.ips)
    hostend, ips = b.hostend, b.ips
    cni.del_ok(b)
    assert_gone(cni, b, ips=ips, hostend=hostend)
    assert cni.check(a).rc == 0
    assert_wired(cni, a)


def test_check_after_the_first_of_two_interfaces_is_deleted(cni):
    """The second attachment's result lists the default route; once the first attachment (whose interface carries
    it) is deleted, either the route is still there or CHECK of the second one says it is missing."""
    a = cni.add_ok(cni.att(version="1.1.0", ifname="eth0"))
    b = cni.add_ok(cni.att(a.ct, version="1.1.0", ifname="net1", cid=a.cid), own_default=False)
    cni.del_ok(a)
    r = cni.check(b)
    if r.rc == 0:
        assert_result_routes_exist(b, routes(b.ct))
    else:
        assert_cni_error(r, version="1.1.0")


def test_second_add_of_the_same_attachment_fails_and_keeps_the_first(cni):
    """ADD twice for one (CNI_CONTAINERID, CNI_IFNAME) without DEL: the interface exists, so the ADD MUST fail, and
    its failure must not undo the attachment that is there."""
    a = cni.add_ok(cni.att(version="1.0.0"))
    first = dict(a.result)
    r = cni.add(a)
    assert_cni_error(r, version="1.0.0")
    a.result = first
    r = cni.check(a)
    assert r.rc == 0, "the first attachment was damaged by the refused second ADD" + r.why()
    assert_wired(cni, a)


def test_cni_args_from_a_kubernetes_runtime(cni):
    """CNI_ARGS as kubelet/CRI runtimes pass them (with IgnoreUnknown=1) do not get in the way."""
    a = cni.att(version="1.0.0")
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={a.cid}"
    cni.add_ok(a, env={"CNI_ARGS": args})
    r = cni.check(a, env={"CNI_ARGS": args})
    assert r.rc == 0, r.why()
    hostend, ips = a.hostend, a.ips
    r = cni.delete(a, env={"CNI_ARGS": args})
    assert r.rc == 0, r.why()
    assert_gone(cni, a, ips=ips, hostend=hostend)


def test_mtu(cni):
    a = cni.add_ok(cni.att(version="1.1.0", mtu=1400))
    assert links(a.ct)[a.ifname]["mtu"] == 1400
    assert links(cni.host)[a.hostend]["mtu"] == 1400
    for x in a.result["interfaces"]:
        if "mtu" in x:
            assert x["mtu"] == 1400, a.result


def test_concurrent_containers(cni):
    """Spec: plugins must handle being executed concurrently across different containers (IPAM, records)."""
    from concurrent.futures import ThreadPoolExecutor

    atts = [cni.att(version="1.1.0") for _ in range(6)]
    with ThreadPoolExecutor(len(atts)) as pool:
        runs = list(pool.map(cni.add, atts))
    for a, r in zip(atts, runs):
        assert r.rc == 0, r.why()
        assert_add_result(cni, a, r)
    ips = [ip for a in atts for ip in a.ips]
    assert len(set(ips)) == len(ips), ips
    assert len({a.hostend for a in atts}) == len(atts)
    gone = [(a, a.hostend, a.ips) for a in atts]
    with ThreadPoolExecutor(len(atts)) as pool:
        runs = list(pool.map(cni.delete, atts))
    for r in runs:
        assert r.rc == 0, r.why()
    for a, hostend, ips in gone:
        assert_gone(cni, a, ips=ips, hostend=hostend)
    assert cni.records() == []


@pytest.mark.parametrize("how", ["runtimeConfig", "CNI_ARGS"])
def test_mac_asked_by_the_runtime(cni, how):
    """CONVENTIONS.md: the ``mac`` capability (``runtimeConfig.mac``) and ``CNI_ARGS`` ``MAC=`` set the container MAC."""
    mac = "02:42:ac:11:00:" + ("0a" if how == "CNI_ARGS" else "0b")
    a = cni.att(version="1.0.0")
    env = {}
    if how == "runtimeConfig":
        a.conf["runtimeConfig"] = {"mac": mac}
    else:
        env["CNI_ARGS"] = f"IgnoreUnknown=1;MAC={mac}"
    cni.add_ok(a, env=env)
    assert a.mac.lower() == mac, a.result
    assert links(a.ct)[a.ifname]["address"].lower() == mac
    r = cni.check(a, env=env)
    assert r.rc == 0, r.why()


def test_check_without_prev_result_is_an_error(cni):
    """Spec: CHECK's configuration must include prevResult (the plugin must consult it): without it, an error
    (docs/cni.md: code 7)."""
    a = cni.add_ok(cni.att(version="1.0.0"))
    r = cni._att_run("CHECK", a, a.conf)
    assert_cni_error(r, {7}, version="1.0.0")


def test_del_without_the_record(cni):
    """DEL must release everything even when vifwire's record is lost (docs/cni.md: by the deterministic names)."""
    a = cni.add_ok(cni.att(version="1.0.0"))
    hostend, ips = a.hostend, a.ips
    for f in os.listdir(cni.tmp):
        if f.startswith("state.db"):
            os.unlink(os.path.join(cni.tmp, f))
    assert cni.records() == []
    cni.del_ok(a)
    assert_gone(cni, a, ips=ips, hostend=hostend)


def test_add_when_the_interface_exists_fails(cni):
    """Spec: if an interface of the requested name already exists in the container, ADD MUST fail."""
    a = cni.att(version="1.0.0")
    _ip("-n", a.ct, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
    r = cni.add(a)
    assert_cni_error(r, version="1.0.0")
    l = _ipj("-n", a.ct, "-d", "link", "show", "eth0")
    assert l and l[0].get("linkinfo", {}).get("info_kind") == "veth", "the container's own eth0 was changed"
    assert not cni.host_ends() and not cni.records() and not cni.leases()
    assert not routes_into(cni.host, [cni.subnet4])
    assert cni.delete(a).rc == 0  # the runtime DELs after a failed ADD


# --------------------------------------------------------------------------- environment, input, configuration


ENV_CASES = [
    # (id, command, unset, override, codes, names)
    ("no-command", None, (), {}, {4}, "CNI_COMMAND"),
    ("unknown-command", "FROB", (), {}, {4}, "CNI_COMMAND"),
    ("lowercase-command", "add", (), {}, {4}, "CNI_COMMAND"),
    ("add-no-containerid", "ADD", ("CNI_CONTAINERID",), {}, {4}, "CNI_CONTAINERID"),
    ("add-bad-containerid", "ADD", (), {"CNI_CONTAINERID": "-bad/id"}, {4}, "CNI_CONTAINERID"),
    ("add-no-netns", "ADD", ("CNI_NETNS",), {}, {4}, "CNI_NETNS"),
    ("add-netns-not-there", "ADD", (), {"CNI_NETNS": "/var/run/netns/vw-no-such-ns"}, {3, 4}, None),
    ("add-no-ifname", "ADD", ("CNI_IFNAME",), {}, {4}, "CNI_IFNAME"),
    ("add-ifname-too-long", "ADD", (), {"CNI_IFNAME": "a" * 16}, {4}, "CNI_IFNAME"),
    ("add-ifname-dot", "ADD", (), {"CNI_IFNAME": "."}, {4}, "CNI_IFNAME"),
    ("add-ifname-slash", "ADD", (), {"CNI_IFNAME": "et/h0"}, {4}, "CNI_IFNAME"),
    ("add-ifname-colon", "ADD", (), {"CNI_IFNAME": "eth0:1"}, {4}, "CNI_IFNAME"),
    ("add-ifname-space", "ADD", (), {"CNI_IFNAME": "eth 0"}, {4}, "CNI_IFNAME"),
    ("del-no-containerid", "DEL", ("CNI_CONTAINERID",), {}, {4}, "CNI_CONTAINERID"),
    ("del-no-ifname", "DEL", ("CNI_IFNAME",), {}, {4}, "CNI_IFNAME"),
    ("check-no-netns", "CHECK", ("CNI_NETNS",), {}, {4}, "CNI_NETNS"),
]


@pytest.mark.parametrize("case", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_bad_environment(cni, case):
    _, command, unset, override, codes, names = case
    a = cni.att(version="1.0.0")
    conf = dict(a.conf)
    if command == "CHECK":
        conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": a.netns}],
                              "ips": [{"address": "10.77.0.9/32", "interface": 0}]}
    r = cni.run(command, conf, cid=a.cid, netns_path=a.netns, ifname=a.ifname, env=override, unset=unset)
    assert_cni_error(r, codes, mentions=names)
    assert_gone(cni, a)


@pytest.mark.parametrize("stdin", ["{not json", "", '{"cniVersion": "1.0.0", "name": "x",'],
                         ids=["garbage", "empty", "truncated"])
def test_undecodable_config_is_code_6(cni, stdin):
    a = cni.att()
    r = cni.run("ADD", stdin, cid=a.cid, netns_path=a.netns, ifname=a.ifname)
    assert_cni_error(r, {6})
    assert_gone(cni, a)


def _bad_conf(cni: Cni, what: str) -> dict[str, Any]:
    c = cni.conf("1.0.0")
    if what == "unknown-mode":
        c["mode"] = "wormhole"
    elif what == "mtu-string":
        c["mtu"] = "big"
    elif what == "mtu-negative":
        c["mtu"] = -1
    elif what == "no-ipam":
        del c["ipam"]
    elif what == "no-name":
        del c["name"]
    elif what == "bad-name":
        c["name"] = "bad name/x"
    elif what == "ipam-not-object":
        c["ipam"] = "host-local"
    return c


@pytest.mark.parametrize("what", ["unknown-mode", "mtu-string", "mtu-negative", "no-ipam", "no-name", "bad-name",
                                  "ipam-not-object"])
def test_invalid_config_is_code_7(cni, what):
    a = cni.att(conf=_bad_conf(cni, what))
    r = cni.add(a)
    assert_cni_error(r, {7}, version="1.0.0")
    assert_gone(cni, a)


# --------------------------------------------------------------------------- DEL is best effort


@pytest.mark.parametrize("how", ["netns-path-gone", "netns-unset", "no-prevresult"])
def test_del_with_the_container_gone(cni, how):
    a = cni.add_ok(cni.att(version="1.0.0"))
    hostend, ips = a.hostend, a.ips
    netns.remove(a.ct)
    kw: dict[str, Any] = {}
    if how == "netns-unset":
        kw["unset"] = ("CNI_NETNS",)
    r = cni.delete(a, prev=how != "no-prevresult", **kw)
    assert r.rc == 0, "DEL must succeed with the container's namespace gone" + r.why()
    assert_gone(cni, a, ips=ips, hostend=hostend)
    assert cni.delete(a).rc == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_del_of_nothing_succeeds(cni, version):
    a = cni.att(version=version)
    r = cni.delete(a, prev=False)
    assert r.rc == 0, r.why()
    r = cni.delete(a, prev=False, netns_path="/var/run/netns/vw-no-such-ns")
    assert r.rc == 0, r.why()
    assert_gone(cni, a)


def test_failed_add_leaves_nothing_at_any_step(cni):
    """VIFWIRE_FAIL_AT_STEP=k for each step of the plan, and after the last one (the engine's "commit" point: k =
    number of steps): the ADD fails, nothing is left, the DEL that follows works; then a plain ADD works."""
    a = cni.att(version="1.0.0")
    msgs = []
    for k in range(40):
        r = cni.add(a, env={"VIFWIRE_FAIL_AT_STEP": str(k)})
        if r.rc == 0:
            break
        err = assert_cni_error(r, version="1.0.0")
        msgs.append(err["msg"])
        assert not cni.records(), f"step {k}: records left"
        assert_gone(cni, a)
        d = cni.delete(a, prev=False)
        assert d.rc == 0, f"step {k}: DEL after a failed ADD" + d.why()
        assert_gone(cni, a)
        if re.search(r"\bcommit\b", err["msg"]):
            break
    else:
        pytest.fail(f"ADD still fails with VIFWIRE_FAIL_AT_STEP=39: {msgs[-3:]}")
    assert msgs, "VIFWIRE_FAIL_AT_STEP=0 did not make the ADD fail (fault injection missing?)"
    assert len(msgs) >= 3, f"only {len(msgs)} point(s) could fail: {msgs}"
    if r.rc != 0:  # stopped at the commit point: now without fault injection
        r = cni.add(a)
        assert r.rc == 0, r.why()
    assert_add_result(cni, a, r)
    hostend, ips = a.hostend, a.ips
    cni.del_ok(a)
    assert_gone(cni, a, ips=ips, hostend=hostend)


# --------------------------------------------------------------------------- CHECK


def _tamper(cni: Cni, a: Att, how: str) -> None:
    ip = a.ips[0]
    if how == "container-address":
        [plen] = [p for _, addr, p in addrs(a.ct, a.ifname) if addr == ip]
        _ip("-n", a.ct, "addr", "del", f"{ip}/{plen}", "dev", a.ifname)
    elif how == "host-route":
        _ip("-n", cni.host, "route", "del", f"{ip}/32", "dev", a.hostend)
    elif how == "host-end-down":
        _ip("-n", cni.host, "link", "set", a.hostend, "down")
    elif how == "host-end-deleted":
        _ip("-n", cni.host, "link", "del", a.hostend)
    elif how == "filter-entry":  # spec: firewall rules are checked too
        elem = f'{{ "{a.hostend}" . {a.mac.lower()} . {ip} }}'
        res = subprocess.run([IP, "netns", "exec", cni.host, NFT, "delete", "element", "inet", "vifwire", "allow_v4",
                              elem], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"nft delete element {elem}: {res.stderr}\n{nft_ruleset(cni.host)}"
    elif how == "ipam-reservation":  # spec: so are IP reservations (and the IPAM plugin is CHECKed)
        os.unlink(os.path.join(cni.ipam_dir, a.conf["name"], ip))
    else:  # pragma: no cover
        raise ValueError(how)


@pytest.mark.parametrize("how,version", [("container-address", "1.0.0"), ("host-route", "1.1.0"),
                                         ("host-end-down", "1.0.0"), ("host-end-deleted", "1.1.0"),
                                         ("filter-entry", "1.0.0"), ("ipam-reservation", "1.1.0")])
def test_check_finds_drift(cni, how, version):
    a = cni.add_ok(cni.att(version=version))
    r = cni.check(a)
    assert r.rc == 0, r.why()
    hostend, ips = a.hostend, a.ips
    _tamper(cni, a, how)
    r = cni.check(a)
    err = assert_cni_error(r, version=version)
    assert err["code"] >= 100, f"drift of a known attachment: a plugin code (>= 100), not {err['code']}" + r.why()
    cni.del_ok(a)  # a broken attachment is still removed completely
    assert_gone(cni, a, ips=ips, hostend=hostend)


def test_check_of_an_unknown_attachment_is_code_3(cni):
    """CHECK of an attachment vifwire has no record of (never added): code 3, "container unknown or does not exist"
    (nothing to clean up). A runtime should not do this; the answer must still be the right error."""
    a = cni.att(version="1.1.0")
    a.result = {"cniVersion": "1.1.0",
                "interfaces": [{"name": "vfw0123456789a"}, {"name": "eth0", "mac": "02:00:00:00:00:01",
                                                             "sandbox": a.netns}],
                "ips": [{"address": "10.77.250.9/32", "interface": 1}]}
    r = cni.check(a)
    assert_cni_error(r, {3}, version="1.1.0")


# --------------------------------------------------------------------------- STATUS


def test_status_ready(cni):
    r = cni.run("STATUS", cni.conf("1.1.0"))
    assert r.rc == 0, "STATUS: the plugin is ready" + r.why()
    assert "Traceback" not in r.stderr


def test_status_without_its_ipam_plugin_is_code_50(cni):
    """Spec: a plugin that relies on a delegated plugin (IPAM) to service ADD must STATUS it too; if it cannot
    service ADD it must fail STATUS (50: not available). No host-local in CNI_PATH: no ADD possible."""
    empty = os.path.join(cni.tmp, "no-plugins")
    os.mkdir(empty)
    r = cni.run("STATUS", cni.conf("1.1.0"), env={"CNI_PATH": empty})
    assert_cni_error(r, {50}, version="1.1.0")
    a = cni.att(version="1.1.0")
    r = cni.add(a, env={"CNI_PATH": empty})  # indeed: ADD fails
    assert_cni_error(r, version="1.1.0")
    assert_gone(cni, a)


def test_status_with_an_unusable_state_is_code_50(cni):
    blocker = os.path.join(cni.tmp, "a-file")
    with open(blocker, "w", encoding="utf-8") as f:
        f.write("not a directory\n")
    r = cni.run("STATUS", cni.conf("1.1.0", state=os.path.join(blocker, "state.db")))
    assert_cni_error(r, {50}, version="1.1.0")


def test_through_the_agent(cni):
    """STATUS, ADD, CHECK, DEL with ``"agent": SOCKET``: the same answers as in-process."""
    from agent_fixtures import AgentProc

    agent = AgentProc(cni.tmp, cni.host, state=cni.state)
    try:
        agent.start()
        conf = cni.conf("1.1.0", agent=agent.sock)
        r = cni.run("STATUS", conf)
        assert r.rc == 0, r.why()
        a = cni.add_ok(cni.att(conf=conf))
        assert cni.check(a).rc == 0
        hostend, ips = a.hostend, a.ips
        cni.del_ok(a)
        assert_gone(cni, a, ips=ips, hostend=hostend)
    finally:
        for att in cni.atts:  # DEL while the agent still answers
            with contextlib.suppress(Exception):
                cni.delete(att)
        agent.stop()


# --------------------------------------------------------------------------- GC


def test_gc_removes_exactly_the_stale_attachments(cni):
    keep = cni.add_ok(cni.att(version="1.1.0"))
    stale = [
        cni.add_ok(cni.att(keep.ct, version="1.1.0", ifname="net1", cid=keep.cid), own_default=False),  # same
        # container, other ifname
        cni.add_ok(cni.att(version="1.1.0")),  # its namespace is gone (the runtime deleted it)
        cni.add_ok(cni.att(version="1.1.0")),  # its namespace is still there
    ]
    other_conf = cni.conf("1.1.0", name="othernet", subnet4=cni.other4)
    other = cni.add_ok(cni.att(conf=other_conf))  # another network: not this GC's business
    gone = [(s, s.hostend, s.ips) for s in stale]
    netns.remove(stale[1].ct)
    conf = cni.conf("1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": keep.cid, "ifname": keep.ifname}]
    r = cni.run("GC", conf)
    assert r.rc == 0, "GC failed" + r.why()
    for s, hostend, ips in gone:
        assert_gone(cni, s, ips=ips, hostend=hostend)
    for s in (keep, other):
        r = cni.check(s)
        assert r.rc == 0, "a valid attachment did not survive GC" + r.why()
        assert_wired(cni, s)
    assert {rec["instance_id"] for rec in cni.records()} == {keep.cid, other.cid}
    assert set(cni.leases()) == set(keep.ips)
    assert set(cni.leases("othernet")) == set(other.ips)


# --------------------------------------------------------------------------- chaining


def _prev_result(version: str, ct_path: str) -> dict[str, Any]:
    ip = {"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 0}
    if version == "0.4.0":
        ip["version"] = "4"
    return {"cniVersion": version,
            "interfaces": [{"name": "chain0", "mac": "02:00:00:00:99:01", "sandbox": ct_path}],
            "ips": [ip], "routes": [{"dst": "10.99.0.0/16", "gw": "10.99.0.1"}],
            "dns": {"nameservers": ["10.99.0.1"], "search": ["example.test"]}}


@pytest.mark.parametrize("version", VERSIONS)
def test_prev_result_is_kept(cni, version):
    """A plugin given prevResult outputs it, with its own additions appended, interface indices fixed."""
    ct = cni.container()
    # what the previous plugin made (no dummy module here: a veth pair inside the container)
    _ip("-n", ct, "link", "add", "chain0", "address", "02:00:00:00:99:01", "type", "veth", "peer", "name", "chain0p")
    prev = _prev_result(version, netns.netns_path(ct))
    a = cni.att(ct, version=version)
    a.conf["prevResult"] = prev
    r = cni.add(a)
    assert r.rc == 0, r.why()
    assert_add_result(cni, a, r)
    res = a.result
    assert res["interfaces"][0] == prev["interfaces"][0], "the previous interface must stay first, unchanged"
    assert prev["ips"][0] in res["ips"], "the previous IP must be kept (interface 0)"
    assert a.index >= 1 and all(x["interface"] == a.index for x in res["ips"] if x != prev["ips"][0])
    for route in prev["routes"]:
        assert route in res.get("routes", []), "the previous routes must be kept"
    assert set(prev["dns"]["nameservers"]) <= set(res.get("dns", {}).get("nameservers", [])), "DNS must be kept"
    r = cni.check(a)
    assert r.rc == 0, "CHECK of a chained result" + r.why()
    hostend, ips = a.hostend, a.ips
    cni.del_ok(a)
    assert_gone(cni, a, ips=ips, hostend=hostend)
    assert "chain0" in links(ct), "DEL removed an interface another plugin made"
