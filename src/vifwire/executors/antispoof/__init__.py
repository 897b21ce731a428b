"""Anti-spoofing filter for guest interfaces, on nftables (libnftables JSON API).

The package, one job per module:

* :mod:`.model`       - :class:`PortFilter` (what a port may send), its
  validation and address normalisation, the tables' names and drop reasons;
* :mod:`.elements`    - a port's set elements as JSON text, its ``ports_fp``
  fingerprint, comparison with nft's listing;
* :mod:`.transaction` - element texts to ONE nft transaction, nft errors read;
* :mod:`.ruleset`     - tables, sets, chains and rules (fixed: no per-port rule);
* :mod:`.api`         - :class:`AntiSpoof` (install/remove/query) and
  :class:`GuardView`.

Design
======

vifwire owns three tables, all named ``vifwire``:

* ``inet vifwire``   - IPv4/IPv6 from *routed* ports (a host-side tap/veth the
  host routes to). Base chain ``prerouting`` (hook prerouting, priority -300 =
  raw, before conntrack, so spoofed packets never create conntrack state) sees
  everything entering the host from a tap, delivered locally or forwarded.
  It also holds the port registry ``ports`` (every port, any family).
* ``arp vifwire``    - ARP from routed ports. inet hooks never see ARP (they
  are IPv4/IPv6 only), so ARP needs the ``arp`` family (hook input).
* ``bridge vifwire`` - everything from *bridged* ports (taps enslaved to a
  Linux bridge): base chain ``prerouting`` of the bridge family, priority
  -300; there ``iifname`` is the bridge *port*.

Per-interface dispatch is by **set lookups keyed by interface name**, never by
per-port rules or chains. Each base chain has one rule,
``iifname @vif_ifaces jump guard``; the guard chains test concatenations such
as ``iifname . ether saddr . ip saddr @allow_v4``. A packet walks the same
rules with 1 or 5000 ports (:meth:`AntiSpoof.rule_path_length` counts them
from the installed ruleset), and plugging a port only adds set *elements*:
no chain, no rule, no named object (see "O(1) plug" below).

Sets (sets are table scoped: each table holds its own copy of what it uses):

================ ============================================ =================
``ports``        ``ifname`` (inet table only)                 registry of ports
``ports_fp``     ``ifname . ipv6_addr`` (inet table only)     port + fingerprint
``vif_ifaces``   ``ifname``                                   guarded ports
``allow_mac``    ``ifname . ether_addr``                      port MAC, pair MACs
``allow_v4``     ``ifname . ether_addr . ipv4_addr``          host addresses
``allow_v4_net`` same, ``flags interval``                     CIDR pairs
``allow_v6``     ``ifname . ether_addr . ipv6_addr``          + EUI-64 link-locals
``allow_v6_net`` same, ``flags interval``                     CIDR pairs
``allow_nd``     ``typeof iifname . ether saddr . @th,64,128`` ``allow_v6`` keyed
                 by the ND *target* field (ICMPv6 offset 8)
``allow_nd_net`` same, ``flags interval``                     ``allow_v6_net``
``drop_<r>``     ``ifname`` with a per-element ``counter``    drop counters
================ ============================================ =================

Host addresses live in hash sets (O(1) insert and lookup, whatever the number
of ports); only CIDR pairs go to the interval sets, which the kernel
implements with pipapo, whose insert (and lookup) cost grows with the set's
size: with one interval set holding every address a plug at 5000 ports cost
about 3x a plug at 10.

``allow_nd``: nft 1.0.6 has no ``icmpv6 taddr`` and its JSON parser can
declare neither ``typeof`` sets nor raw-payload types, so this one set is
declared with an nft-syntax command through the same libnftables context
(:func:`.ruleset.ensure_tables`); everything else is JSON.

Drop counting: a drop rule ends in ``iifname @drop_<reason> drop``. The sets
carry a ``counter`` statement, so every element has its own counter and the
kernel bumps it on each successful *lookup*: one counter per (port, reason)
with no per-port rule. Reasons: ``mac`` (source MAC not the port's), ``ip4``
/ ``ip6`` (source address not the port's), ``arp`` (ARP sender MAC/IP not the
port's), ``ra`` (router advertisement or redirect), ``nd`` (neighbour
advertisement, or DAD solicitation, for a target that is not the port's),
``dhcp`` (DHCP server replies from a guest), ``other`` (any other ethertype).
If a port's ``drop_<reason>`` element were missing, the lookup fails and the
chain's last rule (anonymous counter + drop) still drops: a guard chain never
falls through to accept.

Accepted from a guarded port: its MAC(s) as Ethernet source; IPv4 from its
addresses/pairs; DHCPv4 0.0.0.0:68 -> 255.255.255.255:67; IPv6 from its
addresses/pairs/EUI-64 link-local; ``::`` for DAD neighbour solicitations
(target must be the port's) and MLDv2 reports; ARP whose sender MAC and sender
IP belong to the port, plus RFC 5227 probes (sender IP 0.0.0.0, sender MAC the
port's). Everything else is dropped and counted.

O(1) plug
---------
libnftables refreshes a cache before every command. For ``add element`` nft
1.0.6 dumps all tables, chains, set definitions *and named objects*, plus the
elements of non-concatenated interval sets. Hence: no named counters (a
first draft with one named counter per port and reason made every plug
O(ports): 40k counter objects were dumped per plug, 1.7 s at 5000 ports) and
no plain interval sets (every interval set here is a concatenation, which nft
does not pre-load). See :meth:`AntiSpoof.add_port` for the plug protocol: a
new port is ONE transaction with no read before it; an unchanged re-plug and
a remove with ``hint=`` are O(1) too (``ports_fp`` probe); only a *changed*
re-plug and a remove without hint list vifwire's sets (O(ports)).

Batches
-------
A run of many ports is ONE transaction too (:meth:`AntiSpoof.install_ports`,
:meth:`AntiSpoof.remove_ports`): every port's elements of a set go in one
``add element`` (``delete element``) command, so the transaction has ~20
commands whatever the number of ports (libnftables parses and evaluates
each command; 1000 ports' elements cost a third of 1000 ports' commands).
The transaction is all-or-nothing (nftables wiki, "Atomic rule
replacement"); which port made it fail is not reported, so a failed batch is
narrowed down as :meth:`AntiSpoof.install_ports` describes. Plug and unplug
build the transaction as JSON text straight from each port's element texts
(:func:`.elements.want_text`: no element dicts, no ``json.dumps`` of the batch);
that and the ``ports_fp`` digest computed alongside are the Python side of
a 1000-port plug (~45 ms here), libnftables and the kernel the rest (~100
ms; ``bench/antispoof_bench.py --batch``). nft syntax instead of JSON does
not parse faster, nor do smaller commands. ``check`` reads
the few sets it needs once for all ports (:class:`GuardView`).

Single writer: the read-then-write paths assume one vifwire process
manipulates these tables at a time (the executor's lock).
"""

from __future__ import annotations

from vifwire.executors.antispoof.api import AntiSpoof, GuardView
from vifwire.executors.antispoof.model import (
    ADDR_SETS,
    ALL_REASONS,
    BRIDGED_FAMILIES,
    FAMILIES,
    REASONS,
    REGISTRY_FAMILY,
    REGISTRY_SETS,
    ROUTED_FAMILIES,
    TABLE,
    AntiSpoofError,
    PortFilter,
    eui64_link_local,
    norm_mac,
)
from vifwire.executors.antispoof.ruleset import PRIO_RAW

__all__ = [
    "ADDR_SETS",
    "ALL_REASONS",
    "BRIDGED_FAMILIES",
    "FAMILIES",
    "PRIO_RAW",
    "REASONS",
    "REGISTRY_FAMILY",
    "REGISTRY_SETS",
    "ROUTED_FAMILIES",
    "TABLE",
    "AntiSpoof",
    "AntiSpoofError",
    "GuardView",
    "PortFilter",
    "eui64_link_local",
    "norm_mac",
]
