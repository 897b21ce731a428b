"""PrivateOVS: start/stop real daemons in a namespace and leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from ovs_fixtures import private_ovs, requires_ovs  # noqa: F401
from pyroute2 import IPRoute

from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import OvsDaemonError, PrivateOVS, _alive, reap_stale

pytestmark = requires_ovs


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_start_stop_leaves_nothing_behind():
    with netns.sandbox("ovsd") as ns:
        ovs = PrivateOVS().start(ns)
        try:
            rundir, pids = ovs.rundir, dict(ovs.pids)
            assert set(pids) == {"ovsdb-server", "ovs-vswitchd"}
            assert all(_alive(p) for p in pids.values())
            assert os.path.exists(ovs.db_sock) and ovs.endpoint == "unix:" + ovs.db_sock
            assert ovs.db_sock.startswith(rundir + "/")
            # nothing under the system run dir is ours
            assert not os.path.exists(f"/var/run/openvswitch/{os.path.basename(rundir)}")
            # vswitchd runs inside the sandbox namespace, ovsdb-server need not
            assert _netns_inode(pids["ovs-vswitchd"]) == os.stat(netns.netns_path(ns)).st_ino
            assert _netns_inode(pids["ovs-vswitchd"]) != _netns_inode(os.getpid())
        finally:
            ovs.stop()
        assert not any(_alive(p) for p in pids.values())
        assert not any(os.path.exists(f"/proc/{p}") for p in pids.values()), "zombie left"
        assert not os.path.exists(rundir)
        ovs.stop()  # idempotent


def test_context_manager_and_bridge_in_namespace():
    with netns.sandbox("ovsd") as ns:
        with PrivateOVS().start(ns) as ovs:
            ovs.add_bridge("br-int")
            assert "datapath_type" in ovs.vsctl("list", "Bridge", "br-int")
            assert ovs.vsctl("get", "Bridge", "br-int", "datapath_type").strip() == "netdev"
            # the userspace datapath created the bridge's tap in the namespace
            with IPRoute(netns=ns) as ipr:
                assert ipr.link_lookup(ifname="br-int")
            assert "br-int" in ovs.appctl("dpif/show")
            pids = dict(ovs.pids)
        assert not any(_alive(p) for p in pids.values())


def test_pause_resume_and_kill(private_ovs):
    ns, ovs = private_ovs
    vsw = ovs.pids["ovs-vswitchd"]
    ovs.pause_vswitchd()
    with open(f"/proc/{vsw}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    ovs.resume_vswitchd()
    assert ovs.alive("ovs-vswitchd")
    ovs.kill_ovsdb()
    assert not ovs.alive("ovsdb-server")
    ovs.restart_ovsdb()
    assert ovs.alive("ovsdb-server")
    assert "br-int" in ovs.vsctl("list-br")


def test_stop_while_paused(private_ovs):
    ns, ovs = private_ovs
    ovs.pause_vswitchd()
    pids = dict(ovs.pids)
    t0 = time.monotonic()
    ovs.stop()
    assert time.monotonic() - t0 < 5
    assert not any(_alive(p) for p in pids.values())


def test_failed_start_cleans_up():
    ovs = PrivateOVS()
    with pytest.raises(OvsDaemonError, match="ovs-vswitchd"):
        ovs.start("vw-no-such-netns-xyz")
    assert ovs.rundir and not os.path.exists(ovs.rundir)
    assert not any(_alive(p) for p in ovs.pids.values())


def test_reap_stale_stops_daemons_of_dead_owner():
    with netns.sandbox("ovsd") as ns:
        ovs = PrivateOVS().start(ns)
        try:
            # pretend the owner died: point the owner file at a finished process
            p = subprocess.Popen(["true"])
            p.wait()
            with open(os.path.join(ovs.rundir, "owner"), "w") as f:
                f.write(f"{p.pid} 0 {ns}\n")
            pids = dict(ovs.pids)
            removed = reap_stale()
            assert ovs.rundir in removed
            assert not any(_alive(p) for p in pids.values())
            assert not os.path.exists(ovs.rundir)
        finally:
            ovs.stop()


def test_persistent_outlives_reap_and_attach_stops_it():
    with netns.sandbox("ovsd") as ns:
        ovs = PrivateOVS(persistent=True).start(ns)
        try:
            assert ovs.rundir not in reap_stale()
            assert ovs.alive("ovsdb-server") and ovs.alive("ovs-vswitchd")
            again = PrivateOVS.attach(ovs.rundir)
            assert again.pids == ovs.pids and again.netns == ns and again.persistent
            pids = dict(again.pids)
            again.stop()
            assert not any(_alive(p) for p in pids.values())
            assert not os.path.exists(ovs.rundir)
        finally:
            ovs.stop()
