"""Real libvirt/QEMU guests on vifwire's wiring (docs/libvirt-rendering.md, "Real guests").

For each case the real CLI wires a port (``vifwire plug``, run inside a
throwaway namespace that stands in for the compute host), ``vifwire render
libvirt --virt-type qemu`` prints its ``<interface>``, and a private libvirtd
in the same namespace starts a TCG guest whose domain carries exactly that
text. The guest (tests/guest_image.py) reports on its serial console the
MAC and MTU of its NIC and whether a peer answered its ping. A peer
namespace plays the rest of the network. After the guest has gone and the
port is unplugged, the namespace's links, addresses, routes and nftables
set elements and the whole OVS database must be what they were before the
plug.

Cases: a routed tap (the peer is a router hop away: proxy ARP answers the
guest's gateway and vifwire's /32 route brings the reply back), OVS with
the tap made by vifwire (``managed='no'``), OVS with libvirt's
``<virtualport type='openvswitch'>`` (libvirt adds the port; its external_ids
must agree with vifwire's), OVS hybrid (qbr/qvb/qvo), a Linux bridge and a
macvtap. Open vSwitch is a private ovsdb-server + ovs-vswitchd on the
userspace datapath (vifwire.sandbox.ovs_daemon); libvirtd is private too
(tests/libvirt_fixtures.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import guest_image
import libvirt_fixtures
import pytest

from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS

pytestmark = pytest.mark.root

VIFWIRE = os.path.join(os.path.dirname(sys.executable), "vifwire")
MTU = 1400
#: the guest boots in 2-5 s under TCG; a guest that does not get to VFW-DONE in this time failed
GUEST_TIMEOUT = 20.0

# the peer namespace's side of each link, and the test namespace's end of it
ROUTED_UPLINK, ROUTED_HOST, ROUTED_PEER = "vwp-up", "10.97.1.1", "10.97.1.2"
OVS_PEER_DEV, OVS_PEER = "vwp-ovs", "10.98.0.2"
BRIDGE_PEER_DEV, BRIDGE_PEER = "vwp-br", "10.98.1.2"
MACVTAP_SOURCE, MACVTAP_PEER = "vwp-mvt", "10.98.2.2"
ROUTED_GW = "169.254.1.1"


# ---------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    """One port, how it is wired, and what the guest does with it."""

    name: str
    doc: dict  # the Neutron port
    facts: tuple[str, ...]  # host facts, given to plug and render alike
    guest_args: str  # vfw.* kernel arguments for the guest's /init
    peer: str  # what the guest pings
    attach: Callable[[Lab], None] | None = None  # after plug: put the peer on the port's network
    detach: Callable[[Lab], None] | None = None  # before unplug: take it off again

    @property
    def port_id(self) -> str:
        return self.doc["id"]

    @property
    def mac(self) -> str:
        return self.doc["mac_address"]

    @property
    def ip(self) -> str:
        return self.doc["fixed_ips"][0]["ip_address"]

    @property
    def instance(self) -> str:
        return self.doc["device_id"]

    @property
    def domain(self) -> str:
        return libvirt_fixtures.GUEST_PREFIX + self.name


def _port(n: int, vif_type: str, details: dict, ip: str, vnic_type: str = "normal", **network) -> dict:
    """A Neutron port; ``n`` keeps ids, MACs and instance UUIDs apart between cases."""
    return {"id": f"5a1c0d4e-0000-4000-8000-0000000015{n:02x}", "mac_address": f"fa:16:3e:15:00:{n:02x}",
            "network_id": f"4c1e6a0d-0000-4000-8000-0000000015{n:02x}",
            "fixed_ips": [{"subnet_id": "s4", "ip_address": ip}],
            "binding:vif_type": vif_type, "binding:vif_details": details, "binding:vnic_type": vnic_type,
            "binding:host_id": "t", "device_id": f"0b7f1c8e-1111-4222-8333-0000000015{n:02x}",
            "network": {"mtu": MTU, **network}}


def _l2_args(ip: str, peer: str) -> str:
    return f"vfw.ip={ip}/24 vfw.peer={peer}"


NETDEV = ("--ovs-datapath", "netdev")  # the private OVS has no kernel datapath

ROUTED = Case("routed", _port(1, "tap", {}, "10.97.0.5"), (),
              f"vfw.ip=10.97.0.5/32 vfw.gw={ROUTED_GW} vfw.peer={ROUTED_PEER}", ROUTED_PEER)
OVS_CREATE_TAP = Case("ovs-create-tap", _port(2, "ovs", {"port_filter": True, "ovs_create_tap": True}, "10.98.0.12"),
                      NETDEV, _l2_args("10.98.0.12", OVS_PEER), OVS_PEER)
OVS_VIRTUALPORT = Case("ovs-virtualport", _port(3, "ovs", {"port_filter": True}, "10.98.0.13"),
                       NETDEV, _l2_args("10.98.0.13", OVS_PEER), OVS_PEER)
OVS_HYBRID = Case("ovs-hybrid", _port(4, "ovs", {"port_filter": False, "ovs_hybrid_plug": True}, "10.98.0.14"),
                  NETDEV, _l2_args("10.98.0.14", OVS_PEER), OVS_PEER)
BRIDGE_NAME = "brq-vw15"
LINUX_BRIDGE = Case("bridge", _port(5, "bridge", {"port_filter": False}, "10.98.1.15", bridge=BRIDGE_NAME), (),
                    _l2_args("10.98.1.15", BRIDGE_PEER), BRIDGE_PEER,
                    attach=lambda lab: lab.ip("link", "set", BRIDGE_PEER_DEV, "master", BRIDGE_NAME),
                    detach=lambda lab: lab.ip("link", "set", BRIDGE_PEER_DEV, "nomaster"))
MACVTAP = Case("macvtap", _port(6, "macvtap", {"macvtap_source": MACVTAP_SOURCE, "macvtap_mode": "bridge",
                                               "physical_interface": MACVTAP_SOURCE}, "10.98.2.16", "macvtap"),
               (), _l2_args("10.98.2.16", MACVTAP_PEER), MACVTAP_PEER)


# ---------------------------------------------------------------------------
# the lab: a host namespace with a private OVS and libvirtd, and a peer namespace


@dataclass
class Outcome:
    """Everything a case observed; the test asserts on it."""

    xml: str = ""  # what vifwire render printed
    live_interface: ElementTree.Element | None = None  # libvirt's view of the running guest's NIC
    ovs_plugged: list[dict] = field(default_factory=list)  # OVS rows of the port after plug
    ovs_running: list[dict] = field(default_factory=list)  # ... while the guest runs
    check_running: str = ""  # vifwire check while the guest runs
    console: str = ""
    report: guest_image.GuestReport | None = None
    host_end_mtu: int | None = None  # MTU of the host device behind the guest's NIC (libvirt's target dev)
    host_tap_mac: str | None = None  # the host end of a routed tap
    peer_neighbours: dict[str, str] = field(default_factory=dict)  # the peer's ARP table after the ping
    route_to_guest: dict = field(default_factory=dict)  # the host's route to the guest's address
    before: dict = field(default_factory=dict)  # namespace + OVSDB before plug
    after: dict = field(default_factory=dict)  # ... after unplug


class Lab:
    """The host namespace (OVS, libvirtd, peers' ends) and the peer namespace."""

    def __init__(self, ns: str, peer_ns: str, ovs: PrivateOVS, libvirt: libvirt_fixtures.PrivateLibvirt,
                 image: guest_image.GuestImage):
        self.ns, self.peer_ns, self.ovs, self.libvirt, self.image = ns, peer_ns, ovs, libvirt, image

    # -- commands --------------------------------------------------------

    def ip(self, *args: str) -> str:
        """``ip -n <host namespace> ARGS``."""
        return _run(["ip", "-n", self.ns, *args])

    def vifwire(self, tmp, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The real CLI inside the host namespace, with its state in the test's temp dir."""
        argv = ["ip", "netns", "exec", self.ns, VIFWIRE, *args]
        if args[0] not in ("render",):
            argv += ["--state", str(tmp / "state.db")]
        if args[0] in ("plug", "unplug", "check"):
            argv += ["--ovsdb", self.ovs.endpoint]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"vifwire {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    # -- one case, start to end ------------------------------------------

    def run(self, case: Case, tmp) -> Outcome:
        """Plug, render, boot, observe, and always tear down (guest, peer link, port)."""
        out = Outcome(before=self.snapshot())
        doc = tmp / "port.json"
        doc.write_text(json.dumps(case.doc))
        try:
            self.vifwire(tmp, "plug", *case.facts, "--virt-type", "qemu", str(doc))
            out.xml = self.vifwire(tmp, "render", "libvirt", *case.facts, "--virt-type", "qemu", str(doc)).stdout
            out.ovs_plugged = ovs_rows(self.ovs, case.port_id)
            if case.attach:
                case.attach(self)
            self._boot(case, tmp, out)
            out.host_tap_mac = self._link_mac(_devname(case))
            out.peer_neighbours = neighbours(self.peer_ns)
            out.route_to_guest = json.loads(self.ip("-j", "route", "get", case.ip))[0]
        finally:
            self._teardown(case, tmp)
        out.after = self.snapshot()
        return out

    def _boot(self, case: Case, tmp, out: Outcome) -> None:
        """Start the guest paused (libvirt has wired its side), look, let it run to the end."""
        console = tmp / "console.log"
        xml = tmp / "domain.xml"
        xml.write_text(domain_xml(case, self.image, out.xml, str(console)))
        try:
            self.libvirt.virsh("create", str(xml), "--paused", timeout=60)
        except libvirt_fixtures.LibvirtError as e:
            raise AssertionError(f"{e}\nqemu log: {self.libvirt.qemu_log(case.domain)}") from e
        out.live_interface = ElementTree.fromstring(self.libvirt.virsh("dumpxml", case.domain)).find(
            "devices/interface")
        out.host_end_mtu = self._link_mtu(out.live_interface.find("target").get("dev"))
        out.ovs_running = ovs_rows(self.ovs, case.port_id)
        out.check_running = self.vifwire(tmp, "check", check=False).stdout
        self.libvirt.virsh("resume", case.domain)
        out.console = self._wait_guest(case, console)
        out.report = guest_image.parse_console(out.console)

    def _wait_guest(self, case: Case, console) -> str:
        """Until the guest has powered off and libvirt has forgotten it (its cleanup is done then)."""
        deadline = time.monotonic() + GUEST_TIMEOUT
        while case.domain in self.libvirt.domains():
            if time.monotonic() > deadline:
                text = console.read_text(errors="replace") if console.exists() else ""
                raise AssertionError(f"guest still running after {GUEST_TIMEOUT:.0f} s; console:\n{text[-3000:]}\n"
                                     f"qemu log: {self.libvirt.qemu_log(case.domain)}")
            time.sleep(0.1)
        return console.read_text(errors="replace") if console.exists() else ""

    def _teardown(self, case: Case, tmp) -> None:
        """Whatever happened: the guest destroyed, the peer off the port's network, the port unplugged."""
        try:
            if case.domain in self.libvirt.domains():
                self.libvirt.virsh("destroy", case.domain)
        finally:
            try:
                if case.detach:
                    case.detach(self)
            finally:
                self.vifwire(tmp, "unplug", "--all")

    # -- reading the host ------------------------------------------------

    def _link(self, name: str | None) -> dict:
        links = json.loads(self.ip("-j", "link", "show"))
        return next((l for l in links if l["ifname"] == name), {})

    def _link_mac(self, name: str | None) -> str | None:
        return self._link(name).get("address")

    def _link_mtu(self, name: str | None) -> int | None:
        return self._link(name).get("mtu")

    def create_error(self, case: Case, interface: str, tmp) -> str:
        """libvirt's error for a domain with ``interface`` (which it must refuse)."""
        xml = tmp / "refused.xml"
        xml.write_text(domain_xml(case, self.image, interface, str(tmp / "refused.log")))
        try:
            self.libvirt.virsh("create", str(xml), "--paused", timeout=60)
        except libvirt_fixtures.LibvirtError as e:
            return str(e)
        self.libvirt.virsh("destroy", case.domain)
        raise AssertionError(f"libvirt started a domain with {interface}")

    def snapshot(self) -> dict:
        """What a plug may change and an unplug must restore: the namespace's links,
        addresses and routes (every table, both families) and the OVS database."""
        return {"links": links(self.ns), "addresses": addresses(self.ns), "routes": routes(self.ns),
                "nft_elements": nft_elements(self.ns), "ovsdb": ovsdb_dump(self.ovs)}

    def libvirt_alone_rows(self, case: Case, interface: str, tmp) -> list[dict]:
        """The OVS rows libvirt writes by itself for ``interface`` (nothing plugged by vifwire),
        read while the guest is paused; libvirt removes its port when the guest is destroyed."""
        xml = tmp / "alone.xml"
        xml.write_text(domain_xml(case, self.image, interface, str(tmp / "alone.log")))
        self.libvirt.virsh("create", str(xml), "--paused", timeout=60)
        try:
            return ovs_rows(self.ovs, case.port_id)
        finally:
            self.libvirt.virsh("destroy", case.domain)


def _devname(case: Case) -> str | None:
    """The routed tap's name (vifwire's rule: ``tap`` + the port id, 14 characters)."""
    return ("tap" + case.port_id)[:14] if case.doc["binding:vif_type"] == "tap" else None


def domain_xml(case: Case, image: guest_image.GuestImage, interface: str, console: str) -> str:
    """A TCG domain booting the test kernel directly, with ``interface`` inserted as printed."""
    cmdline = f"console=ttyS0 quiet panic=-1 {case.guest_args}"
    return f"""<domain type='qemu'>
  <name>{case.domain}</name>
  <uuid>{case.instance}</uuid>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(image.kernel)}</kernel>
    <initrd>{escape(image.initrd)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(libvirt_fixtures.QEMU)}</emulator>
{interface.strip()}
    <serial type='file'><source path='{escape(console)}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# ---------------------------------------------------------------------------
# snapshots


def _run(argv: list[str]) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.stdout


def links(ns: str) -> list[tuple]:
    out = json.loads(_run(["ip", "-n", ns, "-j", "-d", "link", "show"]))
    return sorted((l["ifname"], (l.get("linkinfo") or {}).get("info_kind"), l.get("mtu"), l.get("master"),
                   l.get("address"), l.get("ifalias"), tuple(sorted(l.get("flags", [])))) for l in out)


def addresses(ns: str) -> list[tuple]:
    out = json.loads(_run(["ip", "-n", ns, "-j", "addr", "show"]))
    return sorted((l["ifname"], a["local"], a["prefixlen"]) for l in out for a in l.get("addr_info", []))


def routes(ns: str) -> list[str]:
    """Every route of every table, IPv4 and IPv6 (lifetimes left out: they count down)."""
    out = []
    for fam in ("-4", "-6"):
        for r in json.loads(_run(["ip", "-n", ns, fam, "-j", "route", "show", "table", "all"])):
            r.pop("expires", None)
            out.append(json.dumps(r, sort_keys=True))
    return sorted(out)


def nft_elements(ns: str) -> list[str]:
    """Every element of every nftables set, counters left out. vifwire's tables stay once
    made (empty); what a port adds to them must go with it."""
    out = []
    for item in json.loads(_run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"]))["nftables"]:
        s = item.get("set") or item.get("map")
        for e in (s or {}).get("elem") or []:
            out.append(f"{s['family']} {s['table']} {s['name']} {json.dumps(_without_counters(e), sort_keys=True)}")
    return sorted(out)


def _without_counters(v):
    if isinstance(v, dict):
        return {k: _without_counters(x) for k, x in v.items() if k != "counter"}
    if isinstance(v, list):
        return [_without_counters(x) for x in v]
    return v


def neighbours(ns: str) -> dict[str, str]:
    out = json.loads(_run(["ip", "-n", ns, "-4", "-j", "neigh", "show"]))
    return {n["dst"]: n["lladdr"] for n in out if n.get("lladdr")}


#: columns ovs-vswitchd keeps up to date by itself (counters, link state, the
#: configuration sequence numbers every waited-for transaction bumps): not
#: configuration, so not part of "the database as it was"
OVS_VOLATILE = {
    "Open_vSwitch": {"cur_cfg", "next_cfg", "statistics"},
    "Interface": {"statistics", "link_resets", "link_state", "link_speed", "duplex", "admin_state"},
    "Port": {"statistics"},
}


def ovsdb_dump(ovs: PrivateOVS) -> dict[str, list[str]]:
    """Every row of every table of the private OVS database (``ovsdb-client dump``)."""
    text = _run(["ovsdb-client", "-f", "json", "dump", ovs.endpoint, "Open_vSwitch"])
    tables = {}
    for line in filter(str.strip, text.splitlines()):
        t = json.loads(line)
        name = t["caption"].split()[0]
        skip = OVS_VOLATILE.get(name, set())
        tables[name] = sorted(json.dumps({h: v for h, v in zip(t["headings"], row) if h not in skip}, sort_keys=True)
                              for row in t["data"])
    return tables


def ovs_rows(ovs: PrivateOVS, port_id: str) -> list[dict]:
    """The Interface rows whose external_ids name ``port_id`` (by iface-id)."""
    out = json.loads(ovs.vsctl("--format=json", "--columns=name,external_ids,mtu_request", "list", "Interface"))
    rows = []
    for r in out["data"]:
        row = dict(zip(out["headings"], r))
        row["external_ids"] = dict(row["external_ids"][1])
        if row["external_ids"].get("iface-id") == port_id:
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def image():
    """The guest kernel and initrd (downloaded and built on the first run, then cached)."""
    return guest_image.guest_image()


@pytest.fixture(scope="module")
def lab(image):
    """One host namespace with its private OVS and libvirtd, and a peer namespace, per module."""
    with netns.sandbox("rg") as ns, netns.sandbox("rgp") as peer_ns:
        ovs = PrivateOVS()
        try:
            ovs.start(ns)
            ovs.add_bridge("br-int")
            _peer_links(ns, peer_ns, ovs)
            libvirt = libvirt_fixtures.PrivateLibvirt(ns, ovs_rundir=ovs.rundir).start()
            try:
                yield Lab(ns, peer_ns, ovs, libvirt, image)
            finally:
                libvirt.stop()
        finally:
            ovs.stop()


def _peer_links(ns: str, peer_ns: str, ovs: PrivateOVS) -> None:
    """The peer's four ends: a routed uplink (and the host's default route through it),
    a port on br-int, an end for the Linux bridge, and the macvtap's source device."""
    for host_end, peer_addr in ((ROUTED_UPLINK, ROUTED_PEER), (OVS_PEER_DEV, OVS_PEER),
                                (BRIDGE_PEER_DEV, BRIDGE_PEER), (MACVTAP_SOURCE, MACVTAP_PEER)):
        peer_end = host_end.replace("vwp-", "p-")
        _run(["ip", "-n", ns, "link", "add", host_end, "mtu", str(MTU), "type", "veth",
              "peer", "name", peer_end, "netns", peer_ns])
        _run(["ip", "-n", peer_ns, "addr", "add", f"{peer_addr}/24", "dev", peer_end])
        _run(["ip", "-n", peer_ns, "link", "set", peer_end, "up"])
        # IPv4 only: a link-local address would finish DAD (and get its route) after
        # the first test's snapshot was taken
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{host_end}.disable_ipv6=1"])
        _run(["ip", "-n", ns, "link", "set", host_end, "up"])
    # a router hop: the host reaches 169.254.1.1 (and everything else) through the peer,
    # so the guest's gateway is answered by proxy ARP, not as a local address
    _run(["ip", "-n", ns, "addr", "add", f"{ROUTED_HOST}/24", "dev", ROUTED_UPLINK])
    _run(["ip", "-n", ns, "route", "add", "default", "via", ROUTED_PEER])
    _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.conf.{ROUTED_UPLINK}.forwarding=1"])
    _run(["ip", "-n", peer_ns, "route", "add", "10.97.0.0/24", "via", ROUTED_HOST])
    ovs.vsctl("add-port", "br-int", OVS_PEER_DEV)


# ---------------------------------------------------------------------------
# assertions shared by the cases


def assert_guest_saw_its_port(case: Case, out: Outcome, guest_mtu: int = MTU) -> None:
    """The guest's NIC has the port's MAC and MTU, its host end the port's MTU, and the peer answered."""
    r = out.report
    assert r is not None and r.done, f"guest did not finish:\n{out.console[-3000:]}"
    assert not r.errors, r.errors
    assert r.mac == case.mac, f"guest NIC MAC {r.mac}, port MAC {case.mac}"
    assert r.mtu == guest_mtu, f"guest NIC MTU {r.mtu}, expected {guest_mtu}"
    assert out.host_end_mtu == MTU, f"host end of the guest's NIC has MTU {out.host_end_mtu}, port MTU {MTU}"
    assert r.ping == "ok", f"guest could not ping {case.peer}:\n{out.console[-3000:]}"


def assert_libvirt_took_the_xml(out: Outcome) -> None:
    """Every element and attribute vifwire rendered is in libvirt's live definition
    (libvirt adds aliases, PCI addresses and defaults; it must not drop anything)."""
    mine = ElementTree.fromstring(out.xml)
    assert out.live_interface is not None
    _assert_subset(mine, out.live_interface, "interface")


def _assert_subset(mine: ElementTree.Element, live: ElementTree.Element, path: str) -> None:
    assert mine.tag == live.tag, path
    for k, v in mine.attrib.items():
        assert live.get(k) == v, f"{path}/@{k}: rendered {v!r}, libvirt has {live.get(k)!r}"
    for child in mine:
        match = live.find(child.tag)
        assert match is not None, f"{path}/{child.tag} rendered but not in libvirt's definition"
        _assert_subset(child, match, f"{path}/{child.tag}")


def assert_restored(out: Outcome) -> None:
    for what in out.before:
        assert out.after[what] == out.before[what], f"{what} differs after unplug: " + _diff(
            out.before[what], out.after[what])


def _diff(before, after) -> str:
    if isinstance(before, dict):
        return "; ".join(f"{k}: {_diff(before.get(k, []), after.get(k, []))}" for k in set(before) | set(after)
                         if before.get(k) != after.get(k))
    b, a = set(map(str, before)), set(map(str, after))
    return f"gone {sorted(b - a)}, new {sorted(a - b)}"


def assert_check_clean(out: Outcome) -> None:
    assert "1 port(s) checked, 0 with drift" in out.check_running, out.check_running


# ---------------------------------------------------------------------------
# the tests


def test_routed_tap(lab, tmp_path):
    """The peer is one router hop away: the guest's only way out is its gateway
    169.254.1.1, which no device has (the host routes it to the peer), so only
    proxy ARP on vifwire's tap answers it; the reply comes back by vifwire's /32."""
    out = lab.run(ROUTED, tmp_path)
    assert_guest_saw_its_port(ROUTED, out)
    assert_libvirt_took_the_xml(out)
    assert_check_clean(out)
    assert out.report.arp.get(ROUTED_GW) == out.host_tap_mac, "the gateway was answered by the tap (proxy ARP)"
    assert out.route_to_guest.get("dev") == _devname(ROUTED), out.route_to_guest
    assert ROUTED.ip not in out.peer_neighbours, "the peer reached the guest through a router, not on its link"
    assert_restored(out)


def _assert_l2_peer(case: Case, out: Outcome) -> None:
    """The peer learnt the guest's address with the port's MAC: frames crossed unchanged."""
    assert out.peer_neighbours.get(case.ip) == case.mac, out.peer_neighbours


def _assert_ovs_row_as_plugged(case: Case, rows: list[dict], name: str) -> dict:
    assert [r["name"] for r in rows] == [name], rows
    ext = rows[0]["external_ids"]
    assert ext["iface-id"] == case.port_id and ext["attached-mac"] == case.mac
    assert ext["iface-status"] == "active" and ext["vm-uuid"] == case.instance
    assert ext["vifwire-owner"] == case.port_id
    assert rows[0]["mtu_request"] == MTU
    return ext


def test_ovs_create_tap(lab, tmp_path):
    """vifwire makes the tap and its OVS port; libvirt only opens the tap (managed='no')."""
    out = lab.run(OVS_CREATE_TAP, tmp_path)
    assert 'managed="no"' in out.xml and "<virtualport" not in out.xml, out.xml
    assert_guest_saw_its_port(OVS_CREATE_TAP, out)
    assert_libvirt_took_the_xml(out)
    assert_check_clean(out)
    tap = ("tap" + OVS_CREATE_TAP.port_id)[:14]
    assert _assert_ovs_row_as_plugged(OVS_CREATE_TAP, out.ovs_plugged, tap) == \
        _assert_ovs_row_as_plugged(OVS_CREATE_TAP, out.ovs_running, tap)
    _assert_l2_peer(OVS_CREATE_TAP, out)
    assert_restored(out)


def test_ovs_virtualport(lab, tmp_path):
    """libvirt adds the tap to br-int itself (``ovs-vsctl`` with its own external_ids):
    every key both write must agree, vifwire's vm-uuid being libvirt's vm-id, and
    vifwire's row must survive it (still vifwire's, check clean)."""
    case = OVS_VIRTUALPORT
    out = lab.run(case, tmp_path)
    assert '<virtualport type="openvswitch">' in out.xml, out.xml
    assert_guest_saw_its_port(case, out)
    assert_libvirt_took_the_xml(out)
    tap = ("tap" + case.port_id)[:14]
    mine = _assert_ovs_row_as_plugged(case, out.ovs_plugged, tap)
    assert [r["name"] for r in out.ovs_running] == [tap], out.ovs_running
    running = out.ovs_running[0]["external_ids"]
    for key in ("iface-id", "attached-mac", "iface-status"):
        assert running[key] == mine[key], f"{key}: vifwire wrote {mine[key]!r}, libvirt {running[key]!r}"
    assert running.get("vm-id") == mine["vm-uuid"] == case.instance, running
    assert running.get("vifwire-owner") == case.port_id, "libvirt replaced vifwire's row"
    assert out.ovs_running[0]["mtu_request"] == MTU
    assert_check_clean(out)
    _assert_l2_peer(case, out)
    assert_restored(out)
    # what libvirt writes with no vifwire plug before it: every key, vifwire writes too with
    # the same value (libvirt's vm-id under os-vif's name, vm-uuid); vifwire adds its owner
    # mark and mtu_request, which libvirt leaves unset (it sets the tap's MTU itself)
    [alone] = lab.libvirt_alone_rows(case, out.xml, tmp_path)
    assert alone["name"] == tap, alone
    theirs = alone["external_ids"]
    assert set(theirs) == {"iface-id", "attached-mac", "iface-status", "vm-id"}, theirs
    for key, value in theirs.items():
        ours = mine.get("vm-uuid" if key == "vm-id" else key)
        assert ours == value, f"libvirt writes {key}={value!r}, vifwire {ours!r}"
    assert ovsdb_dump(lab.ovs) == out.before["ovsdb"], "libvirt left its port behind"


def test_ovs_hybrid(lab, tmp_path):
    """libvirt puts its tap on vifwire's qbr; qvb/qvo carry the traffic to br-int."""
    case = OVS_HYBRID
    out = lab.run(case, tmp_path)
    qbr, qvo = (p + case.port_id[:11] for p in ("qbr", "qvo"))
    assert f'<source bridge="{qbr}"/>' in out.xml, out.xml
    assert_guest_saw_its_port(case, out)
    assert_libvirt_took_the_xml(out)
    assert_check_clean(out)
    _assert_ovs_row_as_plugged(case, out.ovs_running, qvo)
    _assert_l2_peer(case, out)
    assert_restored(out)


def test_linux_bridge(lab, tmp_path):
    """vifwire makes the network's bridge; libvirt adds the guest's tap to it."""
    out = lab.run(LINUX_BRIDGE, tmp_path)
    assert f'<source bridge="{BRIDGE_NAME}"/>' in out.xml, out.xml
    assert_guest_saw_its_port(LINUX_BRIDGE, out)
    assert_libvirt_took_the_xml(out)
    assert_check_clean(out)
    _assert_l2_peer(LINUX_BRIDGE, out)
    assert_restored(out)


#: virtio-net's MTU when QEMU is given no host_mtu
VIRTIO_DEFAULT_MTU = 1500


def test_macvtap(lab, tmp_path):
    """libvirt makes the macvtap on the source device vifwire required; the peer is on its wire.

    The macvtap gets the port's MTU from its source device, but the guest's NIC
    keeps virtio's default: vifwire, like Nova, renders no ``<mtu>`` for
    ``type='direct'``, because libvirt refuses it there (proven below). Such a
    guest learns its MTU from DHCP (Neutron's option 26), which this guest has not.
    """
    out = lab.run(MACVTAP, tmp_path)
    assert f'<source dev="{MACVTAP_SOURCE}" mode="bridge"/>' in out.xml, out.xml
    assert "<mtu" not in out.xml, out.xml
    assert_guest_saw_its_port(MACVTAP, out, guest_mtu=VIRTIO_DEFAULT_MTU)
    assert_libvirt_took_the_xml(out)
    assert_check_clean(out)
    _assert_l2_peer(MACVTAP, out)
    assert_restored(out)
    with_mtu = out.xml.replace("</interface>", f'  <mtu size="{MTU}"/>\n</interface>')
    assert "setting MTU on interface type direct is not supported" in lab.create_error(MACVTAP, with_mtu, tmp_path)
