"""Pytest fixtures for a private Open vSwitch in a throwaway namespace.

Use from a test module (``from ovs_fixtures import private_ovs, ovs_client``)
or from a conftest (``pytest_plugins = ["ovs_fixtures"]``; ``tests/`` is on
``sys.path`` under pytest's default rootdir-relative import mode).

* ``private_ovs`` -> ``(netns_name, PrivateOVS)`` with bridge ``br-int``
  (``datapath_type=netdev``) already applied by ovs-vswitchd.
* ``ovs_client``  -> ``(netns_name, PrivateOVS, OvsdbClient)``.

Both always stop the daemons and remove the namespace, also on failure.
Tests are skipped when not root or when Open vSwitch is not installed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS

requires_ovs = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(b) for b in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool")),
    reason="needs root and Open vSwitch binaries",
)


@pytest.fixture
def private_ovs():
    if os.geteuid() != 0 or not shutil.which("ovs-vswitchd"):
        pytest.skip("needs root and Open vSwitch binaries")
    with netns.sandbox("ovs") as ns:
        ovs = PrivateOVS()
        try:
            ovs.start(ns)
            ovs.add_bridge("br-int")
            yield ns, ovs
        finally:
            ovs.stop()


@pytest.fixture
def ovs_client(private_ovs):
    from vifwire.executors.ovsdb import OvsdbClient

    ns, ovs = private_ovs
    client = OvsdbClient(ovs.endpoint, timeout=10.0)
    try:
        yield ns, ovs, client
    finally:
        client.close()
