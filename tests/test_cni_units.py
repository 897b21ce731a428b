"""The CNI pieces that need no host: protocol, configuration, the binding an
invocation becomes, and the plan's guest and gateway steps."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from vifwire.errors import VifError
from vifwire.model.loader import validate_vif
from vifwire.planner.generic import plan
from vifwire.service.cni import attach, spec
from vifwire.service.cni.config import invocation, netconf

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/proc/self/ns/net",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
CONF = {"cniVersion": "1.0.0", "name": "pods", "type": "vifwire-cni",
        "ipam": {"type": "host-local", "subnet": "10.5.0.0/24"}}
IPAM = {"ips": [{"address": "10.5.0.7/24", "gateway": "10.5.0.1"},
                {"address": "fd00::7/64", "gateway": "fd00::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.5.0.254"}]}


def _plan(mode: str, **extra):
    conf = netconf(json.dumps(dict(CONF, mode=mode, **extra)), "ADD")
    inv = invocation(ENV)
    b = validate_vif(attach.vif_for(conf, inv, IPAM))
    return b, plan(b, attach.facts_for(conf, inv), render=False)


def _step(p, op):
    return next(s for s in p.steps if s.op == op)


@pytest.mark.parametrize("env, field", [
    ({}, "CNI_COMMAND"), ({"CNI_COMMAND": "FROB"}, "CNI_COMMAND"),
    ({"CNI_CONTAINERID": ""}, "CNI_CONTAINERID"), ({"CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": "x" * 16}, "CNI_IFNAME"), ({"CNI_NETNS": "/nonexistent/ns"}, "CNI_NETNS"),
    ({"CNI_PATH": ""}, "CNI_PATH"), ({"CNI_ARGS": "novalue"}, "CNI_ARGS"),
])
def test_bad_environment_is_code_4_naming_the_variable(env, field):
    base = {} if env == {} else dict(ENV)
    base.update(env)
    with pytest.raises(spec.CniError) as e:
        invocation(base)
    assert e.value.code == spec.INVALID_ENV and e.value.msg.startswith(field + ":")


@pytest.mark.parametrize("text, code, field", [
    ("{not json", spec.DECODE_FAILURE, "network configuration"),
    ("[1]", spec.DECODE_FAILURE, "network configuration"),
    (json.dumps(dict(CONF, cniVersion="0.2.0")), spec.INCOMPATIBLE_VERSION, "cniVersion"),
    (json.dumps(dict(CONF, mode="vxlan")), spec.INVALID_CONFIG, "mode"),
    (json.dumps(dict(CONF, mtu="1500")), spec.INVALID_CONFIG, "mtu"),
    (json.dumps(dict(CONF, antiSpoof="yes")), spec.INVALID_CONFIG, "antiSpoof"),
    (json.dumps({k: v for k, v in CONF.items() if k != "ipam"}), spec.INVALID_CONFIG, "ipam"),
    (json.dumps(dict(CONF, name="bad name")), spec.INVALID_CONFIG, "name"),
    (json.dumps(dict(CONF, mode="bridge", bridge="b" * 20)), spec.INVALID_CONFIG, "bridge"),
])
def test_bad_configuration_gets_the_spec_code(text, code, field):
    with pytest.raises(spec.CniError) as e:
        netconf(text, "ADD")
    assert e.value.code == code and e.value.msg.startswith(field), e.value.msg


def test_status_and_gc_need_1_1_0():
    with pytest.raises(spec.CniError) as e:
        netconf(json.dumps(CONF), "GC")
    assert e.value.code == spec.INCOMPATIBLE_VERSION


def test_results_per_version():
    r = {"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.2/32", "interface": 0},
                                                   {"address": "fd00::2/128", "interface": 0}]}
    old = spec.for_version(r, "0.4.0")
    assert old["cniVersion"] == "0.4.0" and [ip["version"] for ip in old["ips"]] == ["4", "6"]
    new = spec.for_version(r, "1.0.0")
    assert "version" not in new["ips"][0] and new["cniVersion"] == "1.0.0"
    assert spec.to_internal(old)["ips"] == r["ips"]


def test_names_are_deterministic_and_fit():
    pid = attach.attachment_id("c0ffee", "eth0")
    assert pid == attach.attachment_id("c0ffee", "eth0") != attach.attachment_id("c0ffee", "eth1")
    name = attach.host_ifname(pid)
    assert len(name) <= 15 and name.startswith("vfw")
    mac = attach.guest_mac(pid)
    assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered unicast


def test_routed_guest_gets_host_routes_and_the_gateway_on_the_host_end():
    b, p = _plan("routed")
    assert p.strategy == "veth-routed"
    veth = _step(p, "veth")
    assert veth.args["peer"] == "eth0" and veth.args["peer_netns"] == "/proc/self/ns/net"
    g = _step(p, "guest_ip")
    assert g.args["addresses"] == ["10.5.0.7/32", "fd00::7/128"]
    assert {"dst": "0.0.0.0/0", "gw": "169.254.1.1"} in g.args["routes"]
    assert {"dst": "192.168.0.0/16", "gw": "169.254.1.1"} in g.args["routes"]
    assert _step(p, "addresses").args == {"dev": b.devname, "addresses": ["169.254.1.1/32", "fe80::1/64"],
                                          "shared": False}
    assert not [s for s in p.steps if s.op == "proxy_ndp"]  # the host end holds fe80::1 itself
    assert p.steps[-1].op == "guest_ip" and _step(p, "antispoof").args["ipv4"] == ["10.5.0.7"]


def test_bridge_guest_gets_its_prefix_and_the_gateway_goes_on_the_bridge():
    b, p = _plan("bridge", bridge="cbr0")
    assert p.strategy == "veth-bridge"
    g = _step(p, "guest_ip")
    assert g.args["addresses"] == ["10.5.0.7/24", "fd00::7/64"]
    assert {"dst": "192.168.0.0/16", "gw": "10.5.0.254"} in g.args["routes"]
    assert {"dst": "0.0.0.0/0", "gw": "10.5.0.1"} in g.args["routes"]
    gw = _step(p, "addresses").args
    assert gw["dev"] == "cbr0" and gw["shared"] and gw["addresses"] == ["10.5.0.1/24", "fd00::1/64"]


def test_ovs_with_anti_spoofing_is_hybrid_without_plain():
    _, p = _plan("ovs", bridge="br-x")
    assert p.strategy == "veth-ovs-hybrid" and _step(p, "antispoof")
    port = [s for s in p.steps if s.op == "ovs_port"][0]
    assert port.args["external_ids"]["iface-id"] == p.port_id
    _, p = _plan("ovs", bridge="br-x", antiSpoof=False)
    assert p.strategy == "veth-ovs" and not [s for s in p.steps if s.op == "antispoof"]


def test_subnet_routes_are_validated_with_a_line():
    vif = {"id": "p1", "type": "tap", "address": "02:00:00:00:00:01", "devname": "tapp1",
           "network": {"subnets": [{"cidr": "10.0.0.0/24", "ips": [{"address": "10.0.0.2"}],
                                    "routes": [{"cidr": "fd00::/64"}]}]}}
    with pytest.raises(VifError) as e:
        validate_vif(vif)
    assert "network.subnets[0].routes[0].cidr" in str(e.value)


def test_prev_result_is_extended_in_a_chain():
    prev = {"interfaces": [{"name": "lo0"}], "ips": [{"address": "10.9.9.9/32", "interface": 0}], "routes": []}
    mine = {"interfaces": [{"name": "vfw"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.5.0.7/32", "interface": 1}], "routes": [{"dst": "0.0.0.0/0"}]}
    out = attach.merge(prev, mine)
    assert [i["name"] for i in out["interfaces"]] == ["lo0", "vfw", "eth0"]
    assert out["ips"][1] == {"address": "10.5.0.7/32", "interface": 2} and out["ips"][0] == prev["ips"][0]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


@given(_json_values)
@settings(max_examples=300, deadline=None)
def test_the_thin_paths_json_agrees_with_json(value):
    """vifwire.cni.wire (the C accelerator without `import json`) reads and
    writes exactly what json does."""
    from vifwire.cni import wire

    assert json.loads(wire.dumps(value)) == value
    assert wire.loads(json.dumps(value, indent=1)) == value


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_the_thin_paths_json_refuses_what_json_refuses(text):
    from vifwire.cni import wire

    try:
        want = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            wire.loads(text)
    else:
        assert wire.loads(text) == want or want != want  # NaN is never equal to itself
