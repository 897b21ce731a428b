"""Property tests: whatever the input, the CLI answers with exit 0 or 2 and
one clear line per problem - never a traceback, never a crash."""

from __future__ import annotations

import json
import re

import pytest
from cli_inprocess import run_cli
from hypothesis import HealthCheck, assume, given, settings, strategies as st

VIF_TYPES = ["ovs", "bridge", "tap", "802.1qbg", "802.1qbh", "macvtap", "hw_veb", "hostdev_physical",
             "ib_hostdev", "vhostuser", "iovisor", "midonet", "ivs", "vrouter", "agilio_ovs", "dvs",
             "binding_failed", "unbound", "hyperv", "other", "bogus", "", None, 7]
junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=20),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
names = st.one_of(st.sampled_from(["br-int", "brq-x", "eth0", "tap1", "a" * 16, "bad/name", "sp ace", "nul\x00",
                                   "", "ok-name-15chars"]), junk)
macs = st.one_of(st.sampled_from(["fa:16:3e:11:22:33", "FA:16:3E:11:22:33", "01:00:5e:00:00:01",
                                  "00:00:00:00:00:00", "fa:16:3e:11:22", "zz:16:3e:11:22:33"]), junk)
details = st.fixed_dictionaries({}, optional={
    "bridge_name": names, "port_filter": st.one_of(st.booleans(), junk), "ovs_hybrid_plug": st.one_of(st.booleans(), junk),
    "ovs_create_tap": st.booleans(), "datapath_type": st.sampled_from(["system", "netdev", "x"]),
    "profileid": st.one_of(st.text(max_size=8), junk), "vlan": st.one_of(st.integers(-1, 5000), junk),
    "macvtap_source": names, "macvtap_mode": st.sampled_from(["vepa", "bridge", "private", "passthrough", "x"]),
    "physical_interface": names, "vhostuser_socket": st.sampled_from(["/run/vhu.sock", "relative", ""]),
    "vhostuser_mode": st.sampled_from(["client", "server", "x"]), "vhostuser_ovs_plug": st.booleans(),
    "mac_address": macs,
})
profile = st.one_of(st.fixed_dictionaries({}, optional={
    "pci_slot": st.sampled_from(["0000:81:00.1", "81:00.1", "x"])}), junk)
neutron_port = st.fixed_dictionaries(
    {"binding:vif_type": st.sampled_from(VIF_TYPES)},
    optional={"id": st.one_of(st.uuids().map(str), st.sampled_from(["", "a b", "x/y"]), junk),
              "mac_address": macs, "network_id": st.one_of(st.uuids().map(str), junk),
              "fixed_ips": st.one_of(st.lists(st.fixed_dictionaries({"ip_address": st.sampled_from(
                  ["10.0.0.1", "fd00::1", "300.1.1.1", "x"])}), max_size=2), junk),
              "binding:vif_details": st.one_of(details, junk), "binding:vnic_type": st.sampled_from(
                  ["normal", "direct", "macvtap", "weird"]),
              "binding:profile": profile, "network": st.one_of(st.fixed_dictionaries(
                  {}, optional={"mtu": st.one_of(st.integers(0, 70000), junk), "bridge": names}), junk),
              "qbg_params": st.one_of(st.fixed_dictionaries({}, optional={
                  "managerid": st.integers(-1, 300), "typeid": st.integers(-1, 2 ** 25), "typeidversion": st.integers(-1, 300),
                  "instanceid": st.sampled_from(["fb65a3a6-5e5b-4b6d-9f5b-6d3b1d1c2e3f", "nope"])}), junk)})
nova_vif = neutron_port.map(lambda p: {
    "id": p.get("id"), "address": p.get("mac_address"), "type": p.get("binding:vif_type"),
    "details": p.get("binding:vif_details"), "devname": p.get("id") and ("tap" + str(p.get("id")))[:14],
    "network": {"bridge": "br-int", "meta": {"mtu": 1500, "interface": "eth0"}, "subnets": []},
    "vnic_type": p.get("binding:vnic_type", "normal"), "profile": p.get("binding:profile"),
    "qbg_params": p.get("qbg_params"), "ovs_interfaceid": None})
documents = st.one_of(neutron_port, nova_vif, st.lists(st.one_of(neutron_port, nova_vif), max_size=3), junk)

LINE = re.compile(r"^vifwire: (port [^\s].*?: [^:]+: .+|.+)$")
PORT_LINE = re.compile(r"^vifwire: port \S.*?: [^:]+: .+$")  # port, field, problem


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=documents, command=st.sampled_from([["validate"], ["render", "libvirt"], ["render", "lxd"],
                                                ["plan", "--hypervisor", "lxd", "--json"], ["plan"]]))
def test_any_input_gives_0_or_2_and_clear_lines(doc, command, capsys, monkeypatch):
    code, out, err = run_cli(command + ["-"], capsys, monkeypatch, json.dumps(doc))
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert lines, "exit 2 must say why"
        for line in lines:
            assert LINE.match(line), line
    else:
        assert out.strip() or err.strip() or doc == []


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=60))
def test_garbage_text_is_invalid_input(text, capsys, monkeypatch):
    try:  # an empty list of ports is the one valid text; everything else is garbage
        doc = json.loads(text)
        assume(doc not in ([], {"ports": []}))
    except ValueError:
        doc = None  # not JSON at all: exactly one line
    code, out, err = run_cli(["validate", "-"], capsys, monkeypatch, text)
    assert "Traceback" not in err and "internal error" not in err
    assert code == 2, (text, code, err)
    lines = err.strip().splitlines()
    assert lines and all(PORT_LINE.match(line) for line in lines), lines
    if doc is None:
        assert len(lines) == 1, lines


def test_error_line_names_port_field_problem(capsys, monkeypatch):
    doc = {"id": "p1", "binding:vif_type": "802.1qbh", "mac_address": "fa:16:3e:00:00:01",
           "binding:profile": {"pci_slot": "0000:81:00.1"}}
    code, out, err = run_cli(["validate", "-"], capsys, monkeypatch, json.dumps(doc))
    assert code == 2
    assert err.strip() == "vifwire: port p1: binding:vif_details.profileid: is required for vif_type '802.1qbh'"
