"""The netlink executor against the real kernel, inside throwaway namespaces.

Every test works in namespaces made by :func:`vifwire.sandbox.netns.sandbox`
(always removed); the host's own namespace is never touched. State is checked
independently through pyroute2, traffic with ``ping`` inside the namespaces.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

from pyroute2 import IPRoute  # noqa: E402

from vifwire.errors import HostError  # noqa: E402
from vifwire.executors import kernel as K  # noqa: E402
from vifwire.executors.base import HostContext  # noqa: E402
from vifwire.executors.kernel.common import KernelView  # noqa: E402
from vifwire.executors.registry import handler  # noqa: E402
from vifwire.planner.plan import Step  # noqa: E402
from vifwire.sandbox import netns  # noqa: E402

MAC = "fa:16:3e:12:34:56"


# ---------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def ns():
    with netns.sandbox("kt") as name:
        yield name


@pytest.fixture
def guest():
    with netns.sandbox("kg") as name:
        yield name


@pytest.fixture
def ctx(ns):
    with HostContext(netns=ns, port_id="port-1") as c:
        yield c


@pytest.fixture
def ipr(ns):
    with IPRoute(netns=ns, flags=0) as i:
        yield i


def link(ipr: IPRoute, name: str) -> dict | None:
    """What the kernel says about ``name`` (independently of vifwire)."""
    idx = ipr.link_lookup(ifname=name)
    if not idx:
        return None
    m = ipr.link("get", index=idx[0])[0]
    li = m.get_attr("IFLA_LINKINFO")
    data = li.get_attr("IFLA_INFO_DATA") if li else None
    master = m.get("master")
    return {
        "index": m["index"], "kind": li.get_attr("IFLA_INFO_KIND") if li else None,
        "mtu": m.get("mtu"), "mac": m.get("address"), "up": bool(m["flags"] & 1),
        "master": ipr.link("get", index=master)[0].get("ifname") if master else None,
        "alias": m.get_attr("IFLA_IFALIAS"), "link": m.get("link"),
        "data": dict(data["attrs"]) if data and not isinstance(data, (str, bytes)) and "attrs" in data else {},
    }


OWNER = "port-1"  # the ctx fixture's port; the planner puts it in link-creating steps


def step(op: str, **args) -> Step:
    """A step as the planner makes it: a port's own links name their ``owner``."""
    if op in ("tap", "veth", "macvtap") or (op == "bridge" and not args.get("shared")):
        args.setdefault("owner", OWNER)
    return Step(op=op, args=args)


def mark(ipr: IPRoute, name: str, owner: str = OWNER) -> None:
    """Mark ``name`` as vifwire's for ``owner`` (what a crash leaves behind)."""
    ipr.link("set", index=ipr.link_lookup(ifname=name)[0], ifalias=K.mark_for(owner))


def apply(s: Step, ctx: HostContext):
    return handler(s.op).apply(s, ctx)


def verify(s: Step, ctx: HostContext) -> list[str]:
    """The step's drift, alone - and checked to read the same within a big
    check (``verify_many`` from one namespace dump)."""
    h = handler(s.op)
    one = h.verify(s, ctx)
    n = KernelView.DUMP_AT
    assert h.verify_many([s] * n, ctx) == [one] * n
    return one


def remove(s: Step, ctx: HostContext) -> None:
    handler(s.op).remove(s, ctx)


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check)


def sysctl(ns: str, path: str) -> str:
    return in_ns(ns, "cat", "/proc/sys/net/" + path).stdout.strip()


def ping(ns: str, addr: str) -> bool:
    for _ in range(3):  # the first probe may race with DAD / carrier
        if in_ns(ns, "ping", "-c", "1", "-W", "2", addr, check=False).returncode == 0:
            return True
        time.sleep(0.3)
    return False


# ---------------------------------------------------------------------------
# tap


def test_tap_lifecycle(ctx, ipr):
    s = step("tap", name="tap0a", mac=MAC, mtu=1450, multiqueue=False)
    undo = apply(s, ctx)
    assert undo is not None
    got = link(ipr, "tap0a")
    assert got["kind"] == "tun" and got["data"]["IFLA_TUN_TYPE"] == 2  # IFF_TAP
    assert got["data"]["IFLA_TUN_PERSIST"] == 1 and got["data"]["IFLA_TUN_MULTI_QUEUE"] == 0
    assert (got["mtu"], got["mac"], got["up"], got["master"]) == (1450, MAC, True, None)
    assert verify(s, ctx) == []
    assert apply(s, ctx) is None  # already as wanted: nothing changed

    ipr.link("set", index=got["index"], mtu=1500)
    assert verify(s, ctx) == ["tap0a: mtu is 1500, recorded 1450"]
    ipr.link("set", index=got["index"], state="down")
    assert "tap0a: is down, recorded up" in verify(s, ctx)

    undo()
    assert link(ipr, "tap0a") is None
    apply(s, ctx)
    remove(s, ctx)
    assert link(ipr, "tap0a") is None
    remove(s, ctx)  # absent is success


def test_tap_multiqueue(ctx, ipr):
    s = step("tap", name="tapmq", mac=None, mtu=None, multiqueue=True)
    apply(s, ctx)
    assert link(ipr, "tapmq")["data"]["IFLA_TUN_MULTI_QUEUE"] == 1
    assert verify(s, ctx) == []
    # the same name wanted single-queue: the leftover is replaced
    s1 = step("tap", name="tapmq", mac=None, mtu=None, multiqueue=False)
    assert verify(s1, ctx) == ["tapmq: not a tap"]
    apply(s1, ctx)
    assert link(ipr, "tapmq")["data"]["IFLA_TUN_MULTI_QUEUE"] == 0


def test_tap_leftover_wrong_mtu_is_repaired_and_undo_restores(ctx, ipr):
    ipr.link("add", ifname="tap0b", kind="tuntap", mode="tap")
    idx = ipr.link_lookup(ifname="tap0b")[0]
    ipr.link("set", index=idx, mtu=1500)
    mark(ipr, "tap0b")  # this port's (a crash leftover)
    s = step("tap", name="tap0b", mac=MAC, mtu=1400, multiqueue=False)
    undo = apply(s, ctx)
    got = link(ipr, "tap0b")
    assert got["index"] == idx  # repaired in place, not recreated
    assert (got["mtu"], got["mac"], got["up"]) == (1400, MAC, True)
    assert verify(s, ctx) == []
    undo()
    got = link(ipr, "tap0b")
    assert (got["mtu"], got["up"]) == (1500, False) and got["mac"] != MAC


def test_tap_leftover_of_wrong_kind_is_replaced(ctx, ipr):
    ipr.link("add", ifname="tap0c", kind="veth", peer="tap0c-peer")
    mark(ipr, "tap0c")  # this port's (a crash leftover)
    s = step("tap", name="tap0c", mac=None, mtu=1450, multiqueue=False)
    apply(s, ctx)
    assert link(ipr, "tap0c")["kind"] == "tun"
    assert link(ipr, "tap0c-peer") is None
    assert verify(s, ctx) == []


def test_unmarked_link_in_the_way_is_refused_and_untouched(ctx, ipr):
    ipr.link("add", ifname="tap0d", kind="veth", peer="tap0d-peer")
    before = link(ipr, "tap0d")
    for s in (step("tap", name="tap0d", mac=MAC, mtu=1450, multiqueue=False),
              step("veth", name="tap0d", peer="tin0d", mtu=1450),
              step("veth", name="tin0x", peer="tap0d", mtu=1450),
              step("bridge", name="tap0d", mtu=1450, shared=False)):
        with pytest.raises(HostError, match=r"device tap0d exists and is not vifwire's \(veth\)$"):
            apply(s, ctx)
        assert link(ipr, "tap0d") == before and link(ipr, "tin0d") is None
    mark(ipr, "tap0d", "port-2")
    with pytest.raises(HostError, match="device tap0d belongs to port port-2, not to port port-1$"):
        apply(step("tap", name="tap0d", mac=MAC, mtu=1450, multiqueue=False), ctx)
    # unplug leaves another port's link alone, and a foreign one too
    remove(step("tap", name="tap0d", mac=None, mtu=None, multiqueue=False), ctx)
    remove(step("veth", name="tap0d-peer", peer="nosuch", mtu=None), ctx)
    assert link(ipr, "tap0d")["index"] == before["index"]


def test_every_created_link_is_marked_and_pending_is_recovered(ctx, ipr, guest):
    ipr.link("add", ifname="src0e", kind="veth", peer="src0ep")
    for s in (step("tap", name="tap0e", mac=None, mtu=None, multiqueue=False),
              step("veth", name="tap0f", peer="tin0f", mtu=None),
              step("veth", name="tap0g", peer="tin0g", mtu=None, peer_netns=guest),
              step("bridge", name="qbr0e", mtu=None, shared=False),
              step("bridge", name="brq0e", mtu=None, shared=True),
              step("macvtap", name="mvt0e", source="src0e", mode="bridge", mac=None, mtu=None)):
        apply(s, ctx)
    for name in ("tap0e", "tap0f", "tin0f", "tap0g", "qbr0e", "mvt0e"):
        got = ipr.link("get", index=ipr.link_lookup(ifname=name)[0])[0]
        assert (got.get_attr("IFLA_IFALIAS"), got.get_attr("IFLA_GROUP")) == ("vifwire:port-1", 0), name
    assert link(ipr, "brq0e")["alias"] == "vifwire"
    # a link created but not yet marked when the process died: vifwire's pending group
    ipr.link("add", ifname="tap0h", kind="veth", peer="tin0h")
    for n in ("tap0h", "tin0h"):
        ipr.link("set", index=ipr.link_lookup(ifname=n)[0], group=K.PENDING_GROUP)
    s = step("veth", name="tap0h", peer="tin0h", mtu=1400)
    apply(s, ctx)
    assert link(ipr, "tap0h")["alias"] == link(ipr, "tin0h")["alias"] == "vifwire:port-1"
    assert verify(s, ctx) == []


def test_legacy_record_without_owner_still_unplugs(ctx, ipr):
    """A step recorded before marks existed deletes its unmarked link of its kind, not a marked one."""
    ipr.link("add", ifname="tap0i", kind="tuntap", mode="tap")
    legacy = Step(op="tap", args={"name": "tap0i", "mac": None, "mtu": None, "multiqueue": False})
    remove(legacy, ctx)
    assert link(ipr, "tap0i") is None
    apply(step("tap", name="tap0i", mac=None, mtu=None, multiqueue=False, owner="port-9"), ctx)
    remove(legacy, ctx)
    assert link(ipr, "tap0i")["alias"] == "vifwire:port-9"


# ---------------------------------------------------------------------------
# veth


def test_veth_lifecycle(ctx, ipr):
    s = step("veth", name="tap1a", peer="tin1a", mtu=1450)
    undo = apply(s, ctx)
    tap, tin = link(ipr, "tap1a"), link(ipr, "tin1a")
    for got in (tap, tin):
        assert (got["kind"], got["mtu"], got["up"]) == ("veth", 1450, True)
    assert tap["link"] == tin["index"]
    assert verify(s, ctx) == []
    assert apply(s, ctx) is None

    ipr.link("set", index=tap["index"], mtu=1500)
    assert verify(s, ctx) == ["tap1a: mtu is 1500, recorded 1450"]
    fix = apply(s, ctx)  # repaired; its undo puts the drift back exactly
    assert link(ipr, "tap1a")["mtu"] == 1450 and verify(s, ctx) == []
    fix()
    assert link(ipr, "tap1a")["mtu"] == 1500

    undo()
    assert link(ipr, "tap1a") is None and link(ipr, "tin1a") is None
    apply(s, ctx)
    remove(s, ctx)
    assert link(ipr, "tap1a") is None and link(ipr, "tin1a") is None
    remove(s, ctx)


def test_veth_peer_mac(ctx, ipr, guest):
    s = step("veth", name="tap1b", peer="tin1b", mtu=None, peer_mac=MAC)
    apply(s, ctx)
    assert link(ipr, "tin1b")["mac"] == MAC and link(ipr, "tap1b")["mac"] != MAC
    assert verify(s, ctx) == []
    ipr.link("set", index=link(ipr, "tin1b")["index"], address="fa:16:3e:00:00:07")
    assert verify(s, ctx) == [f"tin1b: mac is fa:16:3e:00:00:07, recorded {MAC}"]
    fix = apply(s, ctx)
    assert link(ipr, "tin1b")["mac"] == MAC
    fix()
    assert link(ipr, "tin1b")["mac"] == "fa:16:3e:00:00:07"
    g = step("veth", name="tap1c", peer="tin1c", mtu=None, peer_netns=guest, peer_mac=MAC)
    apply(g, ctx)
    with IPRoute(netns=guest, flags=0) as gi:
        assert link(gi, "tin1c")["mac"] == MAC


def test_veth_peer_created_in_guest_namespace_and_pings(ctx, ipr, ns, guest):
    s = step("veth", name="tap2a", peer="tin2a", mtu=1400, peer_netns=guest)
    undo = apply(s, ctx)
    assert link(ipr, "tin2a") is None
    tap = link(ipr, "tap2a")
    assert (tap["kind"], tap["mtu"], tap["up"]) == ("veth", 1400, True)
    with IPRoute(netns=guest, flags=0) as g:
        tin = link(g, "tin2a")
        assert (tin["kind"], tin["mtu"], tin["up"]) == ("veth", 1400, True)
        assert tin["link"] == tap["index"]
        g.addr("add", index=tin["index"], address="10.97.2.2", prefixlen=24)
    ipr.addr("add", index=tap["index"], address="10.97.2.1", prefixlen=24)
    assert ping(guest, "10.97.2.1")
    assert verify(s, ctx) == []
    assert apply(s, ctx) is None
    undo()
    assert link(ipr, "tap2a") is None
    with IPRoute(netns=guest, flags=0) as g:
        assert link(g, "tin2a") is None


def test_veth_leftover_tin_is_repaired(ctx, ipr, guest):
    # a tin in the guest that is not part of this port's pair is the guest's: refused, untouched
    with IPRoute(netns=guest, flags=0) as g:
        g.link("add", ifname="tin3a", kind="veth", peer="junk3a")
    s = step("veth", name="tap3a", peer="tin3a", mtu=1450, peer_netns=guest)
    with pytest.raises(HostError, match=f"device tin3a exists in namespace {guest} and is not vifwire's"):
        apply(s, ctx)
    with IPRoute(netns=guest, flags=0) as g:
        assert link(g, "junk3a") is not None and link(g, "tin3a") is not None
    assert link(ipr, "tap3a") is None
    # a leftover tin of this port in the host namespace (no peer namespace) is replaced
    ipr.link("add", ifname="tin3b", kind="veth", peer="junk3b")
    mark(ipr, "tin3b")
    s2 = step("veth", name="tap3b", peer="tin3b", mtu=1450)
    apply(s2, ctx)
    assert link(ipr, "junk3b") is None
    assert link(ipr, "tap3b")["link"] == link(ipr, "tin3b")["index"]
    assert verify(s2, ctx) == []


def test_veth_missing_peer_namespace(ctx):
    with pytest.raises(HostError, match="peer namespace vw-nonexistent does not exist"):
        apply(step("veth", name="tap4a", peer="tin4a", mtu=None, peer_netns="vw-nonexistent"), ctx)


# ---------------------------------------------------------------------------
# bridge + master


def test_bridge_lifecycle(ctx, ipr, ns):
    s = step("bridge", name="br5a", mtu=1450, shared=False)
    undo = apply(s, ctx)
    br = link(ipr, "br5a")
    assert (br["kind"], br["mtu"], br["up"], br["alias"]) == ("bridge", 1450, True, K.mark_for(OWNER))
    assert br["data"]["IFLA_BR_STP_STATE"] == 0 and br["data"]["IFLA_BR_FORWARD_DELAY"] == 0
    assert sysctl(ns, "ipv6/conf/br5a/disable_ipv6") == "1"
    assert verify(s, ctx) == [] and apply(s, ctx) is None
    ipr.link("set", index=br["index"], mtu=1400)
    assert verify(s, ctx) == ["br5a: mtu is 1400, recorded 1450"]
    ipr.link("set", index=br["index"], kind="bridge", br_stp_state=1)
    assert "br5a: STP is on, recorded off" in verify(s, ctx)
    fix = apply(s, ctx)  # repairs MTU and STP; its undo puts both back
    br = link(ipr, "br5a")
    assert (br["mtu"], br["data"]["IFLA_BR_STP_STATE"]) == (1450, 0) and verify(s, ctx) == []
    fix()
    br = link(ipr, "br5a")
    assert (br["mtu"], br["data"]["IFLA_BR_STP_STATE"]) == (1400, 1)
    undo()
    assert link(ipr, "br5a") is None
    apply(s, ctx)
    remove(s, ctx)
    assert link(ipr, "br5a") is None
    remove(s, ctx)


def test_master_lifecycle(ctx, ipr):
    apply(step("bridge", name="br6a", mtu=1450, shared=True), ctx)
    apply(step("veth", name="tap6a", peer="tin6a", mtu=1450), ctx)
    s = step("master", name="tap6a", master="br6a")
    undo = apply(s, ctx)
    assert link(ipr, "tap6a")["master"] == "br6a"
    assert verify(s, ctx) == [] and apply(s, ctx) is None
    ipr.link("set", index=link(ipr, "tap6a")["index"], master=0)
    assert verify(s, ctx) == ["tap6a: master is none, recorded br6a"]
    apply(s, ctx)
    undo()
    assert link(ipr, "tap6a")["master"] is None
    apply(s, ctx)
    remove(s, ctx)
    assert link(ipr, "tap6a")["master"] is None
    remove(s, ctx)
    with pytest.raises(HostError, match="master nosuchbr does not exist"):
        apply(step("master", name="tap6a", master="nosuchbr"), ctx)


def test_two_guests_on_a_vifwire_bridge_ping_each_other(ctx, ipr):
    plans = []
    with netns.sandbox("kg") as g1, netns.sandbox("kg") as g2:
        for i, g in enumerate((g1, g2), start=1):
            steps = [step("bridge", name="br7a", mtu=1450, shared=True),
                     step("veth", name=f"tap7{i}", peer=f"tin7{i}", mtu=1450, peer_netns=g),
                     step("master", name=f"tap7{i}", master="br7a")]
            for s in steps:
                apply(s, ctx)
            plans.append(steps)
            with IPRoute(netns=g, flags=0) as gi:
                idx = gi.link_lookup(ifname=f"tin7{i}")[0]
                gi.addr("add", index=idx, address=f"10.97.7.{i}", prefixlen=24)
        assert link(ipr, "tap71")["master"] == "br7a" and link(ipr, "tap72")["master"] == "br7a"
        assert ping(g1, "10.97.7.2") and ping(g2, "10.97.7.1")
        for steps in plans:
            assert [d for s in steps for d in verify(s, ctx)] == []

        # unplug the first port: the shared bridge stays for the second
        for s in reversed(plans[0]):
            remove(s, ctx)
        assert link(ipr, "tap71") is None and link(ipr, "br7a") is not None
        # unplug the last port: vifwire made the bridge, so it goes with it
        for s in reversed(plans[1]):
            remove(s, ctx)
        assert link(ipr, "tap72") is None and link(ipr, "br7a") is None


def test_shared_bridge_with_down_ports_is_kept(ctx, ipr):
    s = step("bridge", name="br8b", mtu=None, shared=True)
    apply(s, ctx)
    ipr.link("add", ifname="x8b", kind="veth", peer="y8b")  # down: no carrier on the bridge
    ipr.link("set", index=ipr.link_lookup(ifname="x8b")[0], master=link(ipr, "br8b")["index"])
    remove(s, ctx)
    assert link(ipr, "br8b") is not None
    ipr.link("del", ifname="x8b")
    remove(s, ctx)
    assert link(ipr, "br8b") is None


def test_preexisting_bridge_is_never_removed(ctx, ipr):
    ipr.link("add", ifname="br8a", kind="bridge")
    s = step("bridge", name="br8a", mtu=None, shared=True)
    assert apply(s, ctx) is not None  # it was down: brought up (undo puts it down)
    assert link(ipr, "br8a")["up"] and link(ipr, "br8a")["alias"] is None
    apply(step("veth", name="tap8a", peer="tin8a", mtu=None), ctx)
    apply(step("master", name="tap8a", master="br8a"), ctx)
    remove(step("master", name="tap8a", master="br8a"), ctx)
    remove(step("veth", name="tap8a", peer="tin8a", mtu=None), ctx)
    remove(s, ctx)
    assert link(ipr, "br8a") is not None  # not vifwire's: stays, even empty


def test_bridge_name_taken_by_other_kind(ctx, ipr):
    ipr.link("add", ifname="br8c", kind="veth", peer="br8c-p")
    with pytest.raises(HostError, match="br8c exists and is a veth device, not a bridge"):
        apply(step("bridge", name="br8c", mtu=None, shared=True), ctx)


# ---------------------------------------------------------------------------
# macvtap, vlan, require_link


def test_macvtap_lifecycle(ctx, ipr):
    ipr.link("add", ifname="src9", kind="veth", peer="src9p")
    ipr.link("set", index=ipr.link_lookup(ifname="src9")[0], state="up")
    s = step("macvtap", name="mvt9a", source="src9", mode="bridge", mac=MAC, mtu=1400)
    undo = apply(s, ctx)
    got = link(ipr, "mvt9a")
    assert (got["kind"], got["mtu"], got["mac"], got["up"]) == ("macvtap", 1400, MAC, True)
    assert got["link"] == ipr.link_lookup(ifname="src9")[0]
    assert got["data"]["IFLA_MACVTAP_MODE"] in (4, "bridge")
    assert verify(s, ctx) == [] and apply(s, ctx) is None
    ipr.link("set", index=got["index"], mtu=1300)
    assert verify(s, ctx) == ["mvt9a: mtu is 1300, recorded 1400"]
    # wrong mode: replaced
    s2 = step("macvtap", name="mvt9a", source="src9", mode="vepa", mac=MAC, mtu=1400)
    assert any("mode is bridge" in d for d in verify(s2, ctx))
    apply(s2, ctx)
    assert link(ipr, "mvt9a")["data"]["IFLA_MACVTAP_MODE"] in (2, "vepa")
    undo()
    assert link(ipr, "mvt9a") is None
    apply(s, ctx)
    remove(s, ctx)
    assert link(ipr, "mvt9a") is None
    remove(s, ctx)
    with pytest.raises(HostError, match="source nosuch does not exist"):
        apply(step("macvtap", name="mvt9b", source="nosuch", mode="bridge", mac=None, mtu=None), ctx)


def _kernel_has_vlan() -> bool:
    """802.1Q is built in or loaded (it registers /proc/net/vlan in every namespace)."""
    return os.path.exists("/proc/net/vlan") or os.path.isdir("/sys/module/8021q")


def test_vlan_reports_missing_kernel_feature(ctx, ipr):
    ipr.link("add", ifname="eth10", kind="veth", peer="eth10p")
    s = step("vlan", name="vlan100", parent="eth10", vlan_id=100)
    if not _kernel_has_vlan():
        with pytest.raises(HostError) as ei:
            apply(s, ctx)
        assert ei.value.problem == "kernel has no 802.1Q VLAN support (module 8021q)"
        assert str(ei.value) == "port port-1: vlan vlan100: kernel has no 802.1Q VLAN support (module 8021q)"
        assert link(ipr, "vlan100") is None
        return
    # a kernel with 8021q: the device must be right, and its undo removes it
    undo = apply(s, ctx)  # pragma: no cover - not on the reference kernel
    got = link(ipr, "vlan100")
    assert got["kind"] == "vlan" and got["data"]["IFLA_VLAN_ID"] == 100
    undo()
    assert link(ipr, "vlan100") is None


def test_require_link(ctx):
    assert apply(step("require_link", name="lo", why="loopback"), ctx) is None
    assert verify(step("require_link", name="lo", why="x"), ctx) == []
    with pytest.raises(HostError, match=r"nosuch0 \(network bridge\) does not exist"):
        apply(step("require_link", name="nosuch0", why="network bridge"), ctx)
    assert verify(step("require_link", name="nosuch0", why="x"), ctx) == ["nosuch0: missing"]
    remove(step("require_link", name="nosuch0", why="x"), ctx)


# ---------------------------------------------------------------------------
# routed taps: routes, sysctls, proxy_ndp


def _routes(ipr: IPRoute) -> set[tuple[str, int, int, int]]:
    out = set()
    for fam in (2, 10):
        for r in ipr.route("dump", family=fam):
            if r["proto"] == K.VIFWIRE_RTPROT:
                out.add((r.get("dst"), r["dst_len"], r["scope"], r.get("oif")))
    return out


def test_routes_lifecycle(ctx, ipr):
    apply(step("tap", name="tap11", mac=MAC, mtu=None, multiqueue=False), ctx)
    oif = ipr.link_lookup(ifname="tap11")[0]
    s = step("routes", dev="tap11", addresses=["10.97.11.5", "fd97::11:5"])
    undo = apply(s, ctx)
    assert _routes(ipr) == {("10.97.11.5", 32, 253, oif), ("fd97::11:5", 128, 0, oif)}
    assert verify(s, ctx) == [] and apply(s, ctx) is None
    ipr.route("del", dst="10.97.11.5/32", proto=K.VIFWIRE_RTPROT, scope=253)
    assert verify(s, ctx) == ["tap11: host route to 10.97.11.5 is missing"]
    apply(s, ctx)
    undo()
    assert _routes(ipr) == set()
    apply(s, ctx)
    remove(s, ctx)
    assert _routes(ipr) == set()
    remove(s, ctx)


def test_routes_take_over_own_stale_route_but_not_foreign(ctx, ipr):
    apply(step("tap", name="tap12", mac=None, mtu=None, multiqueue=False), ctx)
    apply(step("tap", name="tap12old", mac=None, mtu=None, multiqueue=False), ctx)
    old = ipr.link_lookup(ifname="tap12old")[0]
    ipr.route("add", dst="10.97.12.5/32", oif=old, proto=K.VIFWIRE_RTPROT, scope=253)
    apply(step("routes", dev="tap12", addresses=["10.97.12.5"]), ctx)
    assert _routes(ipr) == {("10.97.12.5", 32, 253, ipr.link_lookup(ifname="tap12")[0])}
    ipr.route("add", dst="10.97.12.6/32", oif=old, proto=4, scope=253)  # static, not ours
    with pytest.raises(HostError, match="a route to 10.97.12.6 via another device exists"):
        apply(step("routes", dev="tap12", addresses=["10.97.12.6"]), ctx)


def test_sysctls_lifecycle(ctx, ns):
    apply(step("veth", name="tap13", peer="tin13", mtu=None), ctx)
    values = {"ipv4/conf/{dev}/proxy_arp": "1", "ipv4/conf/{dev}/forwarding": "1",
              "ipv6/conf/{dev}/accept_ra": "0", "ipv6/conf/{dev}/proxy_ndp": "1"}
    before = {k: sysctl(ns, k.replace("{dev}", "tap13")) for k in values}
    s = step("sysctls", dev="tap13", values=values)
    undo = apply(s, ctx)
    for k, v in values.items():
        assert sysctl(ns, k.replace("{dev}", "tap13")) == v
    assert verify(s, ctx) == [] and apply(s, ctx) is None
    in_ns(ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/tap13/proxy_arp")
    assert verify(s, ctx) == ["tap13: ipv4/conf/tap13/proxy_arp is 0, recorded 1"]
    apply(s, ctx)
    undo()
    assert {k: sysctl(ns, k.replace("{dev}", "tap13")) for k in values} == before
    remove(s, ctx)
    with pytest.raises(HostError, match="not under /proc/sys/net"):
        apply(step("sysctls", dev="tap13", values={"../../kernel/hostname": "x"}), ctx)


def test_sysctls_stay_in_the_namespace(ctx, ns):
    # the same device name in the root namespace must not be touched: use lo,
    # which exists everywhere, and compare with the root's value
    with open("/proc/sys/net/ipv4/conf/lo/proxy_arp") as f:
        root_before = f.read()
    s = step("sysctls", dev="lo", values={"ipv4/conf/{dev}/proxy_arp": "1" if root_before.strip() == "0" else "0"})
    undo = apply(s, ctx)
    with open("/proc/sys/net/ipv4/conf/lo/proxy_arp") as f:
        assert f.read() == root_before
    assert sysctl(ns, "ipv4/conf/lo/proxy_arp") != root_before.strip()
    undo()


def test_proxy_ndp_lifecycle(ctx, ipr, ns):
    apply(step("tap", name="tap14", mac=None, mtu=None, multiqueue=False), ctx)
    s = step("proxy_ndp", dev="tap14", addresses=["10.97.14.5", "fd97::14:5", "fd97::14:6"])

    def entries() -> set[str]:
        out = in_ns(ns, "ip", "-6", "neigh", "show", "proxy").stdout.split("\n")
        return {ln.split()[0] for ln in out if "dev tap14" in ln}

    undo = apply(s, ctx)
    assert entries() == {"fd97::14:5", "fd97::14:6"}
    assert verify(s, ctx) == [] and apply(s, ctx) is None
    in_ns(ns, "ip", "-6", "neigh", "del", "proxy", "fd97::14:6", "dev", "tap14")
    assert verify(s, ctx) == ["tap14: proxy NDP entry for fd97::14:6 is missing"]
    redo = apply(s, ctx)
    assert entries() == {"fd97::14:5", "fd97::14:6"}
    redo()  # undo of the repair removes only what it added
    assert entries() == {"fd97::14:5"}
    undo()
    assert entries() == set()
    apply(s, ctx)
    remove(s, ctx)
    assert entries() == set()
    remove(s, ctx)


def _routed_port(i: int) -> list[Step]:
    dev, addrs = f"tap{i:03d}", [f"10.98.{i >> 8}.{i & 255}", f"fd98::{i:x}"]
    return [step("tap", name=dev, mac=f"fa:16:3e:98:00:{i:02x}", mtu=1450, multiqueue=False),
            step("routes", dev=dev, addresses=addrs), step("proxy_ndp", dev=dev, addresses=addrs),
            step("sysctls", dev=dev, values={"ipv4/conf/{dev}/proxy_arp": "1", "ipv6/conf/{dev}/proxy_ndp": "1"})]


def test_check_of_many_ports_reads_the_namespace_once(ctx, ipr, ns):
    """verify_many: a fixed number of netlink exchanges whatever the number of
    ports, and the same drift lines as verifying each step alone."""
    n = 40
    ports = [_routed_port(i) for i in range(n)]
    for steps in ports:
        for s in steps:
            apply(s, ctx)
    # one drift of each kind, on different ports
    ipr.link("set", index=ipr.link_lookup(ifname="tap001")[0], mtu=1500)
    ipr.link("del", index=ipr.link_lookup(ifname="tap002")[0])
    ipr.route("del", dst="10.98.0.3/32", proto=K.VIFWIRE_RTPROT, scope=253)
    ipr.route("add", dst="10.98.0.5/32", oif=ipr.link_lookup(ifname="tap006")[0],
              proto=K.VIFWIRE_RTPROT, scope=253, priority=10)  # a stale one of ours, preferred
    ipr.route("del", dst="10.98.0.5/32", proto=K.VIFWIRE_RTPROT, scope=253,
              oif=ipr.link_lookup(ifname="tap005")[0])
    in_ns(ns, "ip", "-6", "neigh", "del", "proxy", "fd98::4", "dev", "tap004")
    in_ns(ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/tap007/proxy_arp")

    ch, w = K.channel(ctx), K.worker(ctx)
    calls: list[str] = []

    def spy(obj, name):
        real = getattr(obj, name)

        def wrapped(*a, **kw):
            calls.append(name)
            return real(*a, **kw)
        setattr(obj, name, wrapped)
    for name in ("request", "dump", "pipeline"):
        spy(ch, name)
    spy(w, "call")
    try:
        by_kind: dict[str, list[Step]] = {}
        for steps in ports:
            for s in steps:
                by_kind.setdefault(s.op, []).append(s)
        many = {op: handler(op).verify_many(steps, ctx) for op, steps in by_kind.items()}
    finally:
        for name in ("request", "dump", "pipeline"):
            delattr(ch, name)
        delattr(w, "call")
    # links once per kind that needs them, routes once per family, proxies once
    # (the kind's own dump is at most one per verify_many), sysctls in one call
    assert calls.count("request") == 0 and calls.count("pipeline") == 0
    assert calls.count("dump") <= 3 + 2 + 2 and calls.count("call") == 1
    for op, steps in by_kind.items():
        assert many[op] == [handler(op).verify(s, ctx) for s in steps], op
    drift = sorted(d for per_step in many.values() for lines in per_step for d in lines)
    assert drift == sorted([
        "tap001: mtu is 1500, recorded 1450",
        "tap002: missing",
        "tap002: proxy NDP entry for fd98::2 is missing",
        "tap002: sysctl ipv4/conf/{dev}/proxy_arp is missing",
        "tap002: sysctl ipv6/conf/{dev}/proxy_ndp is missing",
        "tap002: host route to 10.98.0.2 is missing",
        "tap002: host route to fd98::2 is missing",
        "tap003: host route to 10.98.0.3 is missing",
        "tap004: proxy NDP entry for fd98::4 is missing",
        "tap005: host route to 10.98.0.5 goes via another device",
        "tap007: ipv4/conf/tap007/proxy_arp is 0, recorded 1",
    ])


def test_verify_many_builds_a_fresh_view_each_time(ctx, ipr):
    steps = [step("tap", name=f"tap3{i:02d}", mac=None, mtu=None, multiqueue=False) for i in range(10)]
    for s in steps:
        apply(s, ctx)
    h = handler("tap")
    assert h.verify_many(steps, ctx) == [[]] * 10
    ipr.link("del", index=ipr.link_lookup(ifname="tap300")[0])
    assert h.verify_many(steps, ctx) == [["tap300: missing"]] + [[]] * 9
    assert h.verify_many([], ctx) == []


def test_routed_guest_pings_through_proxy_arp(ctx, ipr, ns, guest):
    """A routed veth guest: host routes + proxy ARP make the host reachable."""
    steps = [step("veth", name="tap15", peer="tin15", mtu=None, peer_netns=guest),
             step("sysctls", dev="tap15", values={"ipv4/conf/{dev}/proxy_arp": "1",
                                                   "ipv4/conf/{dev}/forwarding": "1"}),
             step("routes", dev="tap15", addresses=["10.97.15.5"])]
    for s in steps:
        apply(s, ctx)
    ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address="10.97.15.1", prefixlen=32)
    with IPRoute(netns=guest, flags=0) as g:
        idx = g.link_lookup(ifname="tin15")[0]
        g.addr("add", index=idx, address="10.97.15.5", prefixlen=32)
        g.route("add", dst="10.97.15.1/32", oif=idx, scope=253)
    assert ping(guest, "10.97.15.1")


# ---------------------------------------------------------------------------
# unplug fallbacks and bulk removal


def test_remove_finds_renamed_tap_by_mac(ctx, ipr):
    s = step("tap", name="tap16", mac=MAC, mtu=None, multiqueue=False)
    apply(s, ctx)
    idx = ipr.link_lookup(ifname="tap16")[0]
    ipr.link("set", index=idx, state="down")
    ipr.link("set", index=idx, ifname="vnet16")  # named by an older version
    assert K.find_by_mac(ctx, MAC.upper(), ["tun"]) == "vnet16"
    remove(s, ctx)
    assert link(ipr, "vnet16") is None


def test_remove_finds_renamed_veth_by_mac(ctx, ipr):
    s = step("veth", name="tap17", peer="tin17", mtu=None, mac=MAC)
    apply(s, ctx)
    assert verify(s, ctx) == []  # ``mac`` is an unplug hint, not set on the pair
    idx = ipr.link_lookup(ifname="tap17")[0]
    ipr.link("set", index=idx, state="down")
    ipr.link("set", index=idx, ifname="oldtap17", address=MAC)
    ipr.link("set", index=ipr.link_lookup(ifname="tin17")[0], state="down")
    ipr.link("set", index=ipr.link_lookup(ifname="tin17")[0], ifname="oldtin17")
    remove(s, ctx)
    assert link(ipr, "oldtap17") is None and link(ipr, "oldtin17") is None


def test_find_by_mac_refuses_to_guess(ctx, ipr):
    for n in ("dup1", "dup2"):
        ipr.link("add", ifname=n, kind="veth", peer=n + "p")
        ipr.link("set", index=ipr.link_lookup(ifname=n)[0], address=MAC)
    assert K.find_by_mac(ctx, "fa:16:3e:00:00:99") is None
    with pytest.raises(HostError, match="several interfaces have this MAC: dup1, dup2"):
        K.find_by_mac(ctx, MAC, ["veth"])


def test_bulk_removal_of_200_veth_pairs(ctx, ipr):
    names = [f"tap{i:03d}" for i in range(200)]
    for n in names:
        apply(step("veth", name=n, peer=n.replace("tap", "tin"), mtu=1450), ctx)
    apply(step("tap", name="keepme", mac=None, mtu=None, multiqueue=False), ctx)
    t = time.perf_counter()
    K.remove_links_bulk(ctx, names + ["absent0", "absent1"])
    elapsed = time.perf_counter() - t
    left = {m.get("ifname") for m in ipr.link("dump")}
    assert left == {"lo", "keepme"}
    assert elapsed < 5, f"bulk removal of 200 pairs took {elapsed:.2f}s"
    K.remove_links_bulk(ctx, [])
    K.remove_links_bulk(ctx, ["absent"])


def test_bulk_removal_mixed_kinds(ctx, ipr):
    names = []
    for i in range(K.BULK_BRIDGE_CHUNK + 4):  # more bridges than one chunk
        apply(step("bridge", name=f"qbr18{i:02d}", mtu=None, shared=False), ctx)
        apply(step("veth", name=f"qvb18{i:02d}", peer=f"qvo18{i:02d}", mtu=None), ctx)
        apply(step("master", name=f"qvb18{i:02d}", master=f"qbr18{i:02d}"), ctx)
        names += [f"qbr18{i:02d}", f"qvb18{i:02d}", f"qvo18{i:02d}"]
    apply(step("tap", name="tap18", mac=None, mtu=None, multiqueue=True), ctx)
    apply(step("bridge", name="keep18", mtu=None, shared=True), ctx)  # not listed: stays
    K.remove_links_bulk(ctx, names + ["tap18"])
    assert {m.get("ifname") for m in ipr.link("dump")} == {"lo", "keep18"}


# ---------------------------------------------------------------------------
# context and namespace hygiene


def test_one_socket_per_namespace_and_cleanup(ns):
    with HostContext(netns=ns) as c:
        apply(step("tap", name="tap19", mac=None, mtu=None, multiqueue=False), c)
        apply(step("bridge", name="br19", mtu=None, shared=True), c)
        assert K.ipr(c) is K.ipr(c) and K.channel(c) is K.channel(c)
        assert c.ipr is K.ipr(c) and c.netlink is K.channel(c)
        w = K.worker(c)
        assert c.worker is w
    assert (c.ipr, c.netlink, c.worker) == (None, None, None)
    assert w.q is None and not w.thread.is_alive()


def test_missing_namespace_is_not_created():
    with HostContext(netns="vw-kt-missing", port_id="p9") as c:
        with pytest.raises(HostError, match="port p9: netns vw-kt-missing: the namespace does not exist"):
            apply(step("require_link", name="lo", why="x"), c)
        with pytest.raises(HostError):
            apply(step("sysctls", dev="lo", values={"ipv4/conf/{dev}/proxy_arp": "1"}), c)
    assert not netns.exists("vw-kt-missing")


def test_current_namespace_mode(ns):
    """netns=None means the namespace the process runs in; run it in a child
    that entered the sandbox, so the host's own namespace stays untouched."""
    code = (
        "import os, ctypes;"
        f"fd = os.open('/var/run/netns/{ns}', os.O_RDONLY);"
        "assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0;"
        "from vifwire.executors.base import HostContext;"
        "from vifwire.executors.registry import handler;"
        "from vifwire.planner.plan import Step;"
        "c = HostContext();"
        "s = Step(op='tap', args={'name': 'tap20', 'mtu': 1400});"
        "handler('tap').apply(s, c);"
        "b = Step(op='bridge', args={'name': 'br20', 'shared': True});"
        "handler('bridge').apply(b, c);"
        "assert handler('tap').verify(s, c) == [] and handler('bridge').verify(b, c) == [];"
        "c.close()"
    )
    import sys
    subprocess.run([sys.executable, "-c", code], check=True)
    with IPRoute(netns=ns, flags=0) as i:
        assert link(i, "tap20")["mtu"] == 1400 and link(i, "br20")["kind"] == "bridge"
    assert sysctl(ns, "ipv6/conf/br20/disable_ipv6") == "1"
