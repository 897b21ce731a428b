"""Address rules of a binding: fixed IPs, their subnets and gateways, allowed address pairs.

Each function raises :class:`VifError` naming the port and field, so a bad
address is refused at load time, before a host route or an anti-spoofing
*allow* entry is made from it. Standard library only (``vifwire render``
stays fast).

The rules, and why:

* a fixed IP is a host address the guest may send from and the host may
  route to: not unspecified, loopback, multicast, the limited broadcast, an
  IPv4-mapped IPv6 address, or link-local (IPv6: the guest derives its own
  from the MAC; IPv4: a host route to 169.254.169.254 would take the
  metadata service's traffic);
* with a CIDR it must be of the subnet's family and inside it, and not the
  IPv4 network or broadcast address (prefix < 31, RFC 3021) nor the IPv6
  subnet-router anycast address (prefix < 127, RFC 4291/6164) - Neutron's
  own ``check_subnet_ip`` for instance ports;
* a gateway must be of its subnet's family and a unicast address, and inside
  the subnet not its IPv4 network/broadcast address. A gateway *outside* the
  subnet is accepted, as Neutron does (``check_gateway_invalid_in_subnet``:
  on-link gateways of provider networks, IPv6 link-local gateways); vifwire's
  host wiring never uses it;
* an allowed address pair may be an address or a CIDR (no host bits). A single
  address follows the fixed-IP rules except that link-local is allowed (VRRPv3
  announces an IPv6 link-local virtual address). ``0.0.0.0/0`` and ``::/0``
  are allowed: "this port may send from any address" is Neutron's documented
  way to let a router or firewall VM forward while port security stays on.
  A CIDR lying entirely in loopback or multicast space is refused.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Union

from vifwire.errors import VifError

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Net = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_NOWHERE = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("224.0.0.0/4"),
            ipaddress.ip_network("::1/128"), ipaddress.ip_network("ff00::/8"))


def parse_ip(pid: str, field: str, value: Any) -> IP:
    if not isinstance(value, str):
        raise VifError(pid, field, f"{value!r} is not an IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise VifError(pid, field, f"{value!r} is not an IP address")


def parse_cidr(pid: str, field: str, value: Any) -> Net:
    """A subnet CIDR: ``address/prefix`` of one family, no host bits."""
    if not isinstance(value, str) or "/" not in value:
        raise VifError(pid, field, f"{value!r} is not a CIDR like 10.0.0.0/24")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise VifError(pid, field, f"{value!r} is not a valid CIDR (address/prefix, prefix 0-32 or 0-128)")
    if net.network_address != ipaddress.ip_interface(value).ip:
        raise VifError(pid, field, f"{value!r} has host bits set (the network is {net})")
    return net


def unusable(ip: IP, *, link_local_ok: bool = False) -> str | None:
    """Why ``ip`` can never be a port's own (source) address, or None.

    Integer tests rather than ``ipaddress``'s ``is_*`` properties: this runs
    for every address of every port of a 1,000-port plug.
    """
    n = int(ip)
    if ip.version == 4:
        if n == 0:
            return f"{ip} is the unspecified address"
        if n >> 24 == 127:
            return f"{ip} is a loopback address"
        if n >> 28 == 0xE:
            return f"{ip} is a multicast address"
        if n == 0xFFFFFFFF:
            return f"{ip} is the limited broadcast address"
        if n >> 16 == 0xA9FE and not link_local_ok:
            return f"{ip} is a link-local address"
        return None
    if n == 0:
        return f"{ip} is the unspecified address"
    if n == 1:
        return f"{ip} is a loopback address"
    if n >> 120 == 0xFF:
        return f"{ip} is a multicast address"
    if n >> 32 == 0xFFFF:
        return f"{ip} is an IPv4-mapped IPv6 address"
    if n >> 118 == 0x3FA and not link_local_ok:
        return f"{ip} is a link-local address"
    return None


def check_fixed(pid: str, field: str, ip: IP, net: Net | None = None) -> None:
    problem = unusable(ip)
    if problem:
        raise VifError(pid, field, problem)
    if net is None:
        return
    if ip.version != net.version:
        raise VifError(pid, field, f"{ip} is an IPv{ip.version} address in an IPv{net.version} subnet ({net})")
    if ip not in net:
        raise VifError(pid, field, f"{ip} is outside its subnet {net}")
    if net.version == 4 and net.prefixlen < 31:
        if ip == net.network_address:
            raise VifError(pid, field, f"{ip} is the network address of {net}")
        if ip == net.broadcast_address:
            raise VifError(pid, field, f"{ip} is the broadcast address of {net}")
    if net.version == 6 and net.prefixlen < 127 and ip == net.network_address:
        raise VifError(pid, field, f"{ip} is the subnet-router anycast address of {net}")


def check_gateway(pid: str, field: str, ip: IP, version: int | None, net: Net | None) -> None:
    if version is not None and ip.version != version:
        raise VifError(pid, field, f"{ip} is an IPv{ip.version} gateway of an IPv{version} subnet")
    problem = unusable(ip, link_local_ok=True)
    if problem:
        raise VifError(pid, field, problem)
    if net is not None and ip in net and net.version == 4 and net.prefixlen < 31 \
            and ip in (net.network_address, net.broadcast_address):
        raise VifError(pid, field, f"{ip} is the network or broadcast address of {net}")


def parse_pair(pid: str, field: str, value: Any) -> Net:
    """An allowed address pair's ``ip_address``: an address or a CIDR."""
    if not isinstance(value, str):
        raise VifError(pid, field, "is missing or not a string")
    if "/" in value:
        net = parse_cidr(pid, field, value)
    else:
        net = ipaddress.ip_network(parse_ip(pid, field, value))
    if net.num_addresses == 1:
        problem = unusable(net.network_address, link_local_ok=True)
        if problem:
            raise VifError(pid, field, problem)
    elif net.prefixlen and any(net.version == n.version and net.subnet_of(n) for n in _NOWHERE):  # type: ignore[arg-type]
        raise VifError(pid, field, f"{net} lies in loopback or multicast space")
    return net
