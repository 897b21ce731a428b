"""Test-suite safety net.

Tests run as root but only inside network namespaces they create. The
session fixture below snapshots the root namespace (links, addresses, routes,
nftables ruleset) before the suite and fails the run if anything differs
after it, so a test that leaks into the host cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

try:  # the private-OVS fixture, when that module is present
    from ovs_fixtures import *  # noqa: F401,F403
except ImportError:  # pragma: no cover
    pass
from agent_fixtures import agent_ns, agent_ovs  # noqa: E402,F401 - real agents (tests/agent_fixtures.py)
from podman_fixtures import busybox_rootfs, podman_ovs, podman_shell  # noqa: E402,F401 - real podman (tests/podman_fixtures.py)


def _root_ns_snapshot() -> dict[str, object]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted((l.get_attr("IFLA_IFNAME"), l.get_attr("IFLA_MTU"), l["flags"] & 1,
                        l.get_attr("IFLA_ADDRESS")) for l in ipr.get_links())
        addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr())
        routes = sorted(str((r["family"], r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_OIF"),
                             r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_TABLE"))) for r in ipr.get_routes(table=254))
    ruleset = ""
    if shutil.which("nft"):
        ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return {"links": links, "addrs": addrs, "routes": routes, "nft": ruleset}


@pytest.fixture(scope="session", autouse=True)
def root_namespace_untouched():
    """Fail the session if the root namespace changed while the tests ran."""
    if os.geteuid() != 0:
        yield
        return
    before = _root_ns_snapshot()
    yield
    after = _root_ns_snapshot()
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"tests changed the root network namespace: {changed}"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


import vifwire.sandbox  # noqa: E402,F401  (raises pyroute2's namespace helper timeout)
