"""vdpa ports: the vhost-vdpa lookup in a fake sysfs, and --vdpa-dev.

There is no vDPA hardware here, so sysfs is a temporary directory laid out
like the kernel's (tests/fake_sysfs.py); the XML itself is compared with
Nova 34's in tests/test_libvirt_render.py.
"""

from __future__ import annotations

import json

import pytest
from cli_inprocess import run_cli
from fake_sysfs import make_vdpa_host

from vifwire.hostfacts import vdpa
from vifwire.model.loader import load_one
from vifwire.renderers.options import GuestOptions

PID = "3f2a6b1c-8d4e-4f5a-9b6c-7d8e9f0a1b2c"
VF = "0000:81:10.2"


def port(vnic="vdpa", pci=VF, pid=PID, mac="fa:16:3e:4d:5e:6f"):
    return {"id": pid, "mac_address": mac, "network_id": "5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e",
            "binding:vif_type": "ovs", "binding:vnic_type": vnic, "binding:vif_details": {"port_filter": True},
            "binding:profile": {"pci_slot": pci}, "network": {"mtu": 1500}}


# --------------------------------------------------------------------------- the sysfs lookup

def test_finds_the_vfs_vhost_vdpa_device(tmp_path):
    sysfs, devfs = make_vdpa_host(tmp_path, {VF: "vhost-vdpa-0", "0000:81:10.3": "vhost-vdpa-1"})
    assert vdpa.find_vdpa_device(VF, sysfs, devfs) == "/dev/vhost-vdpa-0"
    assert vdpa.find_vdpa_device("0000:81:10.3", sysfs, devfs) == "/dev/vhost-vdpa-1"
    # sysfs names are lower case; binding:profile.pci_slot may not be
    assert vdpa.find_vdpa_device("0000:81:10.2".upper(), sysfs, devfs) == "/dev/vhost-vdpa-0"


@pytest.mark.parametrize("vfs, dev_nodes, slot", [
    ({"0000:81:10.3": "vhost-vdpa-1"}, True, VF),  # the vDPA device is on another VF
    ({VF: None}, True, VF),                          # bound to virtio_vdpa: a host netdev, no char device
    ({VF: "vhost-vdpa-0"}, False, VF),               # no /dev node: libvirt refuses it too
    ({VF: "vhost-vdpa-0"}, True, "81:10.2"),         # not a full PCI address
    ({VF: "vhost-vdpa-0"}, True, "0000:81:10.2/../x"),
])
def test_nothing_found(tmp_path, vfs, dev_nodes, slot):
    sysfs, devfs = make_vdpa_host(tmp_path, vfs, dev_nodes=dev_nodes)
    assert vdpa.find_vdpa_device(slot, sysfs, devfs) is None


def test_a_vf_without_vdpa_bus_or_sysfs_at_all(tmp_path):
    assert vdpa.find_vdpa_device(VF, str(tmp_path / "none"), str(tmp_path)) is None
    sysfs, devfs = make_vdpa_host(tmp_path, {})
    (tmp_path / "sys" / "bus" / "vdpa" / "devices").rmdir()  # vdpa module not loaded
    (tmp_path / "sys" / "bus" / "pci" / "devices" / VF).mkdir()
    assert vdpa.find_vdpa_device(VF, sysfs, devfs) is None


def test_with_vdpa_devices_adds_only_the_vdpa_ports_vfs(tmp_path):
    sysfs, devfs = make_vdpa_host(tmp_path, {VF: "vhost-vdpa-0", "0000:81:10.3": "vhost-vdpa-1",
                                             "0000:81:10.4": "vhost-vdpa-2"})
    ports = [load_one(port()), load_one(port("direct", "0000:81:10.3", pid="p2", mac="fa:16:3e:00:00:02")),
             load_one(port(pci="0000:81:10.4", pid="p3", mac="fa:16:3e:00:00:03"))]
    guest = vdpa.with_vdpa_devices(GuestOptions(), ports, sysfs, devfs)
    assert guest.vdpa_devices == {VF: "/dev/vhost-vdpa-0", "0000:81:10.4": "/dev/vhost-vdpa-2"}
    # what the caller says wins: an entry of its own, or --vdpa-dev (then nothing is looked up)
    mine = GuestOptions(vdpa_devices={VF: "/dev/vhost-vdpa-9"})
    assert vdpa.with_vdpa_devices(mine, ports, sysfs, devfs).vdpa_devices[VF] == "/dev/vhost-vdpa-9"
    by_hand = GuestOptions(vdpa_dev="/dev/vhost-vdpa-5")
    assert vdpa.with_vdpa_devices(by_hand, ports, sysfs, devfs) is by_hand
    assert vdpa.with_vdpa_devices(GuestOptions(), ports[1:2], sysfs, devfs) == GuestOptions()


# --------------------------------------------------------------------------- the CLI

@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """The CLI's default sysfs and /dev, pointed at a fake host."""
    sysfs, devfs = make_vdpa_host(tmp_path, {VF: "vhost-vdpa-4"})
    monkeypatch.setattr(vdpa, "SYSFS", sysfs)
    monkeypatch.setattr(vdpa, "DEVFS", devfs)


def test_render_takes_vdpa_dev(capsys, monkeypatch, fake_host):
    code, out, err = run_cli(["render", "libvirt", "-", "--vdpa-dev", "/dev/vhost-vdpa-1"], capsys, monkeypatch,
                             json.dumps(port()))
    assert code == 0, err
    assert out == ('<interface type="vdpa">\n  <mac address="fa:16:3e:4d:5e:6f"/>\n'
                   '  <source dev="/dev/vhost-vdpa-1"/>\n</interface>\n\n')


def test_render_and_plan_look_the_vf_up_in_sysfs(capsys, monkeypatch, fake_host):
    code, out, err = run_cli(["render", "libvirt", "-", "--packed"], capsys, monkeypatch, json.dumps(port()))
    assert code == 0, err
    assert '<driver packed="on"/>' in out and '<source dev="/dev/vhost-vdpa-4"/>' in out
    code, out, err = run_cli(["plan", "--json", "-"], capsys, monkeypatch, json.dumps(port()))
    assert code == 0, err
    assert '/dev/vhost-vdpa-4' in json.loads(out)[0]["guest"]["xml"]


def test_render_without_a_device_says_what_to_give(capsys, monkeypatch, fake_host):
    code, out, err = run_cli(["render", "libvirt", "-"], capsys, monkeypatch, json.dumps(port(pci="0000:81:10.6")))
    assert code == 2 and out == ""
    assert err == (f"vifwire: port {PID}: guest.vdpa_dev: is required: no vhost-vdpa device is known "
                   "for VF 0000:81:10.6 (give --vdpa-dev, or bind a vDPA device on the VF to vhost_vdpa)\n")


@pytest.mark.parametrize("argv, stdin, words", [
    (["--vdpa-dev", "vhost-vdpa-0"], [port()], "is not an absolute path"),
    (["--vdpa-dev", "/dev/vhost-vdpa-0"], [port(), port(pci="0000:81:10.3", pid="p2", mac="fa:16:3e:00:00:02")],
     "names one device, but the ports are vdpa ports of 2 VFs"),
])
def test_vdpa_dev_is_checked(argv, stdin, words, capsys, monkeypatch, fake_host):
    code, out, err = run_cli(["render", "libvirt", "-", *argv], capsys, monkeypatch, json.dumps(stdin))
    assert code == 2 and out == "" and "--vdpa-dev" in err and words in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["render", "libvirt"], ["plug"], ["plan"]])
def test_help_explains_vdpa_dev_and_queues(command, capsys, monkeypatch):
    code, out, _ = run_cli([*command, "--help"], capsys, monkeypatch)
    text = " ".join(out.split())
    assert code == 0
    assert "--vdpa-dev PATH" in text and "vhost-vdpa" in text and "/sys" in text
    assert "queues='1'" in text


def test_plug_sends_vdpa_dev_to_the_agent():
    from vifwire.agent.requests import parse_guest
    from vifwire.cli.wiring import GUEST_OPTIONS, guest_json

    assert "vdpa_dev" in GUEST_OPTIONS and guest_json("vdpa_dev", "/dev/vhost-vdpa-0") == "/dev/vhost-vdpa-0"
    assert parse_guest({"vdpa_dev": "/dev/vhost-vdpa-0"}, GuestOptions()).vdpa_dev == "/dev/vhost-vdpa-0"
