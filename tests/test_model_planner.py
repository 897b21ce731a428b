"""Model validation and the generic driver's strategy choice (pure, no root)."""

from __future__ import annotations

import copy

import pytest

from vifwire.errors import InvalidInput, VifError
from vifwire.model.loader import load_documents, load_one
from vifwire.planner.facts import HostFacts
from vifwire.planner.generic import plan

PID = "3f6c1a2e-5b4d-4c2a-9e8f-0a1b2c3d4e5f"


def neutron(vif_type="ovs", details=None, **extra):
    port = {"id": PID, "mac_address": "fa:16:3e:11:22:33", "network_id": "9b1c0c3e-1111-2222-3333-444455556666",
            "fixed_ips": [{"subnet_id": "s4", "ip_address": "10.0.0.5"}, {"subnet_id": "s6", "ip_address": "fd00::5"}],
            "binding:vif_type": vif_type, "binding:vif_details": details if details is not None else {},
            "binding:vnic_type": "normal", "binding:profile": {}, "binding:host_id": "compute1",
            "device_id": "inst-1", "network": {"mtu": 1450}}
    port.update(extra)
    return port


def test_neutron_port_becomes_nova_vif():
    b = load_one(neutron("ovs", {"port_filter": True}))
    assert b.devname == "tap3f6c1a2e-5b" and len(b.devname) == 14
    assert b.vif["network"]["bridge"] == "br-int"
    assert b.vif["ovs_interfaceid"] == PID
    assert b.spec.kind == "ovs" and b.spec.bridge == "br-int"
    assert b.ipv4 == ("10.0.0.5",) and b.ipv6 == ("fd00::5",)
    assert b.mtu == 1450 and b.instance_id == "inst-1"


def test_bridge_defaults_to_brq_like_nova33():
    b = load_one(neutron("bridge"))
    assert b.spec.bridge == "brq9b1c0c3e-11"


@pytest.mark.parametrize("doc, field, words", [
    (neutron("802.1qbh"), "binding:vif_details.profileid", "required"),
    (neutron("macvtap", {"macvtap_source": "eth0"}), "binding:vif_details.macvtap_mode", "required"),
    (neutron("vhostuser", {"vhostuser_mode": "client"}), "binding:vif_details.vhostuser_socket", "required"),
    (neutron("binding_failed"), "binding:vif_type", "not bound"),
    (neutron("unbound"), "binding:vif_type", "not bound"),
    (neutron("frobnicator"), "binding:vif_type", "unknown vif type"),
    (neutron("ovs", mac_address="fa:16:3e:zz:22:33"), "mac_address", "not a MAC"),
    (neutron("ovs", {"bridge_name": "br/int"}), "network.bridge", "contains '/'"),
    (neutron("tap", {"mac_address": "01:00:5e:00:00:01"}), "binding:vif_details.mac_address", "multicast"),
])
def test_bad_input_names_port_field_problem(doc, field, words):
    with pytest.raises(VifError) as ei:
        load_one(doc)
    line = ei.value.line()
    assert line.startswith(f"port {PID}: {field}: "), line
    if words:
        assert words in line
    assert "\n" not in line


def test_long_bridge_name_is_cut_like_nova_but_long_devname_rejected():
    # Nova cuts network bridge names to 14 chars; an explicit devname is taken as given.
    b = load_one(neutron("ovs", {"bridge_name": "a-very-long-bridge-name"}))
    assert b.spec.bridge == "a-very-long-br"
    vif = copy.deepcopy(b.vif)
    vif["devname"] = "tap-way-too-long-name"
    with pytest.raises(VifError, match="devname: .* bytes long, the limit is 15"):
        load_one(vif)
    for bad in ("tap/x", "tap x", "tap\x00x"):
        vif["devname"] = bad
        with pytest.raises(VifError, match=f"port {PID}: devname: "):
            load_one(vif)


def test_qbg_ranges_follow_libvirt():
    vif = load_one(neutron("ovs")).vif
    vif = {**vif, "type": "802.1qbg", "network": {**vif["network"], "meta": {"interface": "eth0"}},
           "qbg_params": {"managerid": 12, "typeid": 1193046, "typeidversion": 1,
                          "instanceid": "fb65a3a6-5e5b-4b6d-9f5b-6d3b1d1c2e3f"}}
    assert load_one(vif).spec.typeid == 1193046
    for key, value in (("managerid", 256), ("typeid", 16777216), ("typeidversion", -1), ("instanceid", "nope")):
        bad = copy.deepcopy(vif)
        bad["qbg_params"][key] = value
        with pytest.raises(VifError, match=f"qbg_params.{key}"):
            load_one(bad)


def test_batch_collects_one_line_per_problem():
    docs = [neutron("ovs"), {**neutron("frob"), "id": "p2"}, {**neutron("ovs"), "id": "p3", "mac_address": 5}]
    with pytest.raises(InvalidInput) as ei:
        load_documents(docs)
    lines = str(ei.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("port p2: ") and lines[1].startswith("port p3: ")


# --------------------------------------------------------------------------- strategy selection

def _strategy(details, **facts):
    return plan(load_one(neutron("ovs", details)), HostFacts(**facts), render=False)


@pytest.mark.parametrize("details, facts, strategy", [
    ({}, {}, "ovs-virtualport"),
    ({}, {"firewall": True}, "ovs-hybrid"),
    ({"port_filter": True}, {"firewall": True}, "ovs-virtualport"),
    ({}, {"libvirt_version": (0, 9, 10)}, "ovs-manual"),
    ({}, {"libvirt_version": (0, 9, 11)}, "ovs-virtualport"),
    ({"ovs_hybrid_plug": True}, {}, "ovs-hybrid"),
    ({"ovs_hybrid_plug": False}, {"firewall": True}, "ovs-virtualport"),
    ({"ovs_create_tap": True}, {}, "ovs-create-tap"),
    ({"ovs_hybrid_plug": True, "ovs_create_tap": True}, {}, "ovs-hybrid"),
])
def test_ovs_strategy_is_automatic(details, facts, strategy):
    p = _strategy(details, **facts)
    assert p.strategy == strategy
    assert p.reason  # the plan says why


def test_hybrid_plan_steps_and_names():
    p = _strategy({"ovs_hybrid_plug": True})
    ops = [(s.op, s.args.get("name")) for s in p.steps]
    assert ("bridge", "qbr3f6c1a2e-5b") in ops and ("veth", "qvb3f6c1a2e-5b") in ops
    port = next(s for s in p.steps if s.op == "ovs_port")
    assert port.args["name"] == "qvo3f6c1a2e-5b"
    assert port.args["external_ids"]["iface-id"] == PID
    assert port.args["external_ids"]["attached-mac"] == "fa:16:3e:11:22:33"
    assert port.args["external_ids"]["vm-uuid"] == "inst-1"
    assert port.args["mtu_request"] == 1450
    assert sorted(p.devices()) == ["qbr3f6c1a2e-5b", "qvb3f6c1a2e-5b", "qvo3f6c1a2e-5b"]


def test_lxd_uses_tap_tin_veth():
    p = plan(load_one(neutron("bridge")), HostFacts(hypervisor="lxd", guest_netns="g1"), render=False)
    veth = next(s for s in p.steps if s.op == "veth")
    assert (veth.args["name"], veth.args["peer"], veth.args["peer_netns"]) == ("tap3f6c1a2e-5b", "tin3f6c1a2e-5b", "g1")
    assert p.strategy == "veth-bridge"
    master = next(s for s in p.steps if s.op == "master")
    assert master.args == {"name": "tap3f6c1a2e-5b", "master": "brq9b1c0c3e-11"}


def test_lxd_rejects_vhostuser_clearly():
    b = load_one(neutron("vhostuser", {"vhostuser_socket": "/run/vhu.sock", "vhostuser_mode": "server"}))
    with pytest.raises(VifError, match=f"port {PID}: binding:vif_type: 'vhostuser' cannot be wired to an LXD"):
        plan(b, HostFacts(hypervisor="lxd"), render=False)


def test_port_filter_means_no_antispoof_unless_forced():
    b = load_one(neutron("tap", {"port_filter": True}))
    assert not any(s.op == "antispoof" for s in plan(b, HostFacts(), render=False).steps)
    assert any(s.op == "antispoof" for s in plan(b, HostFacts(anti_spoof="on"), render=False).steps)
    b2 = load_one(neutron("tap"))
    assert any(s.op == "antispoof" for s in plan(b2, HostFacts(), render=False).steps)
    assert not any(s.op == "antispoof" for s in plan(b2, HostFacts(anti_spoof="off"), render=False).steps)


def test_lxd_render_matches_nova_lxd_device():
    from vifwire.renderers.lxd import device_to_detach, render_devices
    from vifwire.renderers.options import Bandwidth, GuestOptions

    b = load_one(neutron("ovs", {"ovs_hybrid_plug": True}))
    devs = render_devices(b, GuestOptions(bandwidth_in=Bandwidth(1000, 2000, None), bandwidth_out=Bandwidth(100)))
    assert devs == {"tap3f6c1a2e-5b": {"type": "nic", "nictype": "physical", "parent": "tin3f6c1a2e-5b",
                                       "hwaddr": "fa:16:3e:11:22:33", "limits.ingress": "16Mbit",
                                       "limits.egress": "0Mbit"}}
    profile = {"eth0": {"type": "nic", "hwaddr": "FA:16:3E:11:22:33"}, "root": {"type": "disk"}}
    assert device_to_detach(profile, b.devname, b.mac) == "eth0"
    assert device_to_detach({**profile, b.devname: {"type": "nic"}}, b.devname, b.mac) == b.devname
    assert device_to_detach({"root": {"type": "disk"}}, b.devname, b.mac) is None


# --------------------------------------------------------------------------- vhost-user mode, vdpa

def test_vhostuser_mode_defaults_to_server_like_nova():
    """Nova's os_vif_util._set_vhostuser_settings: no vhostuser_mode means
    'server' (QEMU creates the socket), so OVS gets a dpdkvhostuserclient."""
    b = load_one(neutron("vhostuser", {"vhostuser_socket": "/run/vhu.sock", "vhostuser_ovs_plug": True}))
    assert b.spec.mode == "server"
    p = plan(b, HostFacts())
    port = next(s for s in p.steps if s.op == "ovs_port")
    assert port.args["iface_type"] == "dpdkvhostuserclient"
    assert port.args["options"] == {"vhost-server-path": "/run/vhu.sock"}
    assert '<source type="unix" mode="server" path="/run/vhu.sock"/>' in p.guest.xml
    client = load_one(neutron("vhostuser", {"vhostuser_socket": "/run/vhu.sock", "vhostuser_mode": "client"}))
    assert client.spec.mode == "client"


@pytest.mark.parametrize("mode", [None, "listen", 1])
def test_vhostuser_mode_given_must_be_client_or_server(mode):
    # an explicit null is not "left out": os-vif's VIFVHostUserModeField refuses it, Nova fails
    with pytest.raises(VifError, match=f"port {PID}: binding:vif_details.vhostuser_mode: "):
        load_one(neutron("vhostuser", {"vhostuser_socket": "/run/vhu.sock", "vhostuser_mode": mode}))


def test_ovs_vdpa_is_a_representor_port_with_a_vdpa_interface():
    from vifwire.renderers.options import GuestOptions

    b = load_one(neutron("ovs", **{"binding:vnic_type": "vdpa", "binding:profile": {"pci_slot": "0000:81:10.2"}}))
    assert b.spec.representor
    p = plan(b, HostFacts(firewall=True), GuestOptions(vdpa_dev="/dev/vhost-vdpa-2"))
    # no tap to wire, whatever the host facts say (as for vnic_type direct)
    assert (p.strategy, p.steps) == ("ovs-representor", [])
    assert '<interface type="vdpa">' in p.guest.xml and '<source dev="/dev/vhost-vdpa-2"/>' in p.guest.xml
    with pytest.raises(VifError, match=f"port {PID}: guest.vdpa_dev: is required"):
        plan(b, HostFacts())
