"""Stand-in guests for the sandbox and tests: a namespace behind each port.

A container guest is its own network namespace holding the ``tin`` end, with
the port's addresses and a default route, so traffic through vifwire's wiring
can be proven with real packets. Routed guests need no per-guest subnet:
their gateways are link-local addresses the host answers for, 169.254.1.1 by
proxy ARP and ``fe80::``, the subnet-router anycast address every device
with IPv6 forwarding answers (docs/routed.md, "Gateways").
"""

from __future__ import annotations

import ipaddress
import subprocess

from pyroute2 import IPRoute

ROUTED_GW4 = "169.254.1.1"
ROUTED_GW6 = "fe80::"


def configure(netns: str, ifname: str, ipv4: list[str], ipv6: list[str], routed: bool,
              prefix4: int = 24, prefix6: int = 64) -> None:
    """Give the guest end its addresses and routes; bring it and lo up."""
    with IPRoute(netns=netns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, state="up")
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")
        for a in ipv4:
            ipr.addr("add", index=idx, address=a, prefixlen=32 if routed else prefix4)
        for a in ipv6:
            ipr.addr("add", index=idx, address=a, prefixlen=128 if routed else prefix6)
        if routed:
            if ipv4:
                ipr.route("add", dst=ROUTED_GW4, dst_len=32, oif=idx, scope=253)
                ipr.route("add", dst="0.0.0.0", dst_len=0, gateway=ROUTED_GW4, oif=idx)
            if ipv6:
                ipr.route("add", dst="::", dst_len=0, gateway=ROUTED_GW6, oif=idx, family=10)


def ping(netns: str, address: str, timeout: float = 1.0, count: int = 1) -> bool:
    """One ping from inside ``netns``; True if answered. No shell, fixed argv."""
    ipaddress.ip_address(address)  # refuse anything that is not an address
    argv = ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", str(count), "-W", str(max(1, int(timeout))),
            address]
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=timeout * count + 5).returncode == 0
