"""The invocation (environment) and the network configuration (stdin), checked.

Every problem is one :class:`~.spec.CniError` line naming the variable or
the field: code 4 for the environment, 6 for undecodable input, 7 for the
configuration, 1 for a version vifwire does not speak (SPEC.md,
"Parameters", "Network configuration" and "Error"). Stdlib only, like
:mod:`.spec`: the plugin reads ``agent`` from here before it decides
where to do the work.
"""

from __future__ import annotations

import os
import re
from collections import namedtuple

from vifwire.service.cni.spec import (
    COMMANDS, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV, CniError, check_version, decode, to_internal,
)

#: SPEC.md: a container ID is alphanumeric plus underscore, period and hyphen.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
#: SPEC.md: a network name is alphanumeric plus underscore, period and hyphen.
_NET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
MODES = ("routed", "bridge", "ovs")
DEFAULT_BRIDGE = {"bridge": "vifwire0", "ovs": "br-int"}
DEFAULT_STATE = "/var/lib/vifwire/state.db"
GC_KEY = "cni.dev/valid-attachments"


#: One invocation's CNI_* variables, checked (``env`` is all of them, for the
#: IPAM plugin). Named tuples rather than dataclasses: importing
#: ``dataclasses`` (and ``inspect`` with it) is a few milliseconds of every
#: thin plugin run, which is what a pod's start-up pays.
Invocation = namedtuple("Invocation", "command container_id netns ifname args path env",
                        defaults=("", "", "", {}, (), {}))

#: The network configuration, checked. ``agent``: None = the default socket
#: if it exists, "" = never. ``mac``: runtimeConfig.mac (the "mac"
#: capability). ``prev_result``: in the internal (1.0.0) form.
#: ``valid_attachments``: GC's (containerID, ifname) pairs.
NetConf = namedtuple("NetConf", "version name mode bridge mtu anti_spoof is_gateway ipam agent state ovsdb "
                                "ovs_datapath mac prev_result valid_attachments raw",
                     defaults=("routed", "", None, True, True, {}, None, DEFAULT_STATE, None, "system", None, None,
                               None, {}))


def invocation(env: Mapping[str, str]) -> Invocation:
    """The CNI_* variables, checked for the command they name."""
    cmd = env.get("CNI_COMMAND", "")
    if not cmd:
        raise CniError(INVALID_ENV, "CNI_COMMAND: not set")
    if cmd not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND: unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
    cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
    if cmd in ("VERSION",):
        return Invocation(cmd, env=cni_env)
    path = tuple(p for p in env.get("CNI_PATH", "").split(os.pathsep) if p)
    if cmd in ("STATUS", "GC"):
        return Invocation(cmd, path=path, env=cni_env)
    cid = env.get("CNI_CONTAINERID", "")
    if not cid:
        raise CniError(INVALID_ENV, "CNI_CONTAINERID: not set")
    if not _CONTAINER_ID.match(cid):
        raise CniError(INVALID_ENV, f"CNI_CONTAINERID: {cid[:80]!r} is not alphanumeric plus '_', '.', '-'")
    ifname = env.get("CNI_IFNAME", "")
    if not ifname:
        raise CniError(INVALID_ENV, "CNI_IFNAME: not set")
    from vifwire.model.names import name_problem

    problem = name_problem(ifname)
    if problem:
        raise CniError(INVALID_ENV, f"CNI_IFNAME: {problem}")
    netns = env.get("CNI_NETNS", "")
    if cmd in ("ADD", "CHECK"):
        if not netns:
            raise CniError(INVALID_ENV, "CNI_NETNS: not set")
        if not os.path.exists(netns):
            raise CniError(INVALID_ENV, f"CNI_NETNS: {netns} does not exist")
    if not path:
        raise CniError(INVALID_ENV, "CNI_PATH: not set (the IPAM plugin is looked up there)")
    return Invocation(cmd, cid, netns, ifname, _args(env.get("CNI_ARGS", "")), path, cni_env)


def _args(text: str) -> dict[str, str]:
    """CNI_ARGS: ``K1=V1;K2=V2`` (SPEC.md, "Parameters")."""
    out = {}
    for part in filter(None, text.split(";")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS: {part[:60]!r} is not KEY=VALUE")
        out[key] = value
    return out


def netconf(text: str, command: str = "") -> NetConf:
    """The network configuration from stdin."""
    d = decode(text)
    version = check_version(d.get("cniVersion"), command)
    name = d.get("name")
    if not isinstance(name, str) or not _NET_NAME.match(name):
        raise CniError(INVALID_CONFIG, f"name: {name!r} is not a network name (alphanumeric plus '_', '.', '-')")
    mode = d.get("mode", "routed")
    if mode not in MODES:
        raise CniError(INVALID_CONFIG, f"mode: {mode!r} is not one of {', '.join(MODES)}")
    bridge = d.get("bridge", DEFAULT_BRIDGE.get(mode, ""))
    if mode != "routed":
        from vifwire.model.names import name_problem

        problem = name_problem(bridge)
        if problem:
            raise CniError(INVALID_CONFIG, f"bridge: {problem}")
    mtu = d.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise CniError(INVALID_CONFIG, f"mtu: {mtu!r} is not an integer from 68 to 65535")
    ipam = d.get("ipam")
    if command in ("ADD", "DEL", "CHECK", "GC") and not (isinstance(ipam, dict) and isinstance(ipam.get("type"), str)
                                                         and ipam["type"]):
        raise CniError(INVALID_CONFIG, "ipam: missing, or without a \"type\" (the IPAM plugin to delegate to)")
    agent = d.get("agent")
    for key in ("agent", "state", "ovsdb"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise CniError(INVALID_CONFIG, f"{key}: must be a string")
    dp = d.get("ovsDatapath", "system")
    if dp not in ("system", "netdev"):
        raise CniError(INVALID_CONFIG, f"ovsDatapath: {dp!r} is neither 'system' nor 'netdev'")
    rc = d.get("runtimeConfig") or {}
    if not isinstance(rc, dict):
        raise CniError(INVALID_CONFIG, "runtimeConfig: must be an object")
    prev = d.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(DECODE_FAILURE, "prevResult: must be an object")
    return NetConf(
        version=version, name=name, mode=mode, bridge=bridge, mtu=mtu,
        anti_spoof=_bool(d, "antiSpoof", True), is_gateway=_bool(d, "isGateway", True),
        ipam=ipam or {}, agent=agent, state=d.get("state") or DEFAULT_STATE, ovsdb=d.get("ovsdb"),
        ovs_datapath=dp, mac=rc.get("mac") if isinstance(rc.get("mac"), str) else None,
        prev_result=to_internal(prev) if prev else None, valid_attachments=_valid(d), raw=d,
    )


def _bool(d: dict, key: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise CniError(INVALID_CONFIG, f"{key}: must be true or false, got {value!r}")
    return value


def _valid(d: dict) -> tuple[tuple[str, str], ...] | None:
    items = d.get(GC_KEY)
    if items is None:
        return None
    if not isinstance(items, list):
        raise CniError(INVALID_CONFIG, f"{GC_KEY}: must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                or not isinstance(item.get("ifname"), str):
            raise CniError(INVALID_CONFIG, f"{GC_KEY}[{i}]: needs string containerID and ifname")
        out.append((item["containerID"], item["ifname"]))
    return tuple(out)
