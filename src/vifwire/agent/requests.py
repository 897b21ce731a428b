"""Request bodies of the agent's API -> typed inputs of the service.

Every problem is one line naming where it is (``request: facts.hypervisor:
must be one of libvirt, lxd``), the same shape as the loader's port lines, and
becomes a 400 (docs/agent.md, "Errors"). Host facts and guest options a
request leaves out come from the agent's own command line: an operator
configures the host once (``--firewall``, ``--hypervisor lxd``), and callers
send only what differs per port (a container's ``guest_netns``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from vifwire.errors import UsageError
from vifwire.planner.facts import HostFacts, parse_version
from vifwire.renderers.options import Bandwidth, GuestOptions

#: Largest request body accepted (a 5000-port list is ~6 MB).
MAX_BODY = 64 * 1024 * 1024


class BadRequest(UsageError):
    """A request that is not what the API takes (400): ``request: FIELD: PROBLEM``."""


def problem(field: str, text: str) -> BadRequest:
    return BadRequest(f"request: {field}: {text}")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8")) if body.strip() else None
    except UnicodeDecodeError as exc:
        raise problem("body", f"is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise problem("body", f"is not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None


@dataclass(frozen=True)
class PlugRequest:
    ports: list[Any]  # the binding documents, validated by the loader
    facts: HostFacts
    guest: GuestOptions
    wait: float | None
    instance: str | None


_FACT_CHOICES = {"hypervisor": ("libvirt", "lxd"), "ovs_datapath": ("system", "netdev"),
                 "anti_spoof": ("auto", "on", "off")}
_GUEST_INTS = ("queues", "rx_queue_size", "tx_queue_size")


def plug_request(doc: Any, facts: HostFacts, guest: GuestOptions) -> PlugRequest:
    """``POST /v1/ports``: a binding, a list of them, or ``{"ports": ..., "facts":
    ..., "guest": ..., "wait": ..., "instance": ...}``."""
    if isinstance(doc, dict) and "ports" in doc:
        unknown = sorted(set(doc) - {"ports", "facts", "guest", "wait", "instance"})
        if unknown:
            raise problem(unknown[0], "is not a field of a plug request (ports, facts, guest, wait, instance)")
        ports = doc["ports"]
        ports = ports if isinstance(ports, list) else [ports]
        return PlugRequest(ports, parse_facts(doc.get("facts"), facts), parse_guest(doc.get("guest"), guest),
                           _seconds(doc.get("wait"), "wait"), _text(doc.get("instance"), "instance"))
    if doc is None:
        raise problem("body", "is empty: give a binding, a list of bindings or {\"ports\": [...]}")
    if isinstance(doc, dict) and isinstance(doc.get("port"), dict):
        doc = doc["port"]  # Neutron's show-port answer {"port": {...}}, taken as the loader takes it
    return PlugRequest(doc if isinstance(doc, list) else [doc], facts, guest, None, None)


def parse_facts(doc: Any, base: HostFacts) -> HostFacts:
    if doc is None:
        return base
    if not isinstance(doc, dict):
        raise problem("facts", "must be an object")
    changes: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"facts.{key}"
        if key in _FACT_CHOICES:
            if value not in _FACT_CHOICES[key]:
                raise problem(where, f"must be one of {', '.join(_FACT_CHOICES[key])}")
            changes[key] = value
        elif key == "libvirt_version":
            try:
                changes[key] = parse_version(str(value))
            except ValueError as exc:
                raise problem(where, str(exc)) from None
        elif key in ("firewall", "multiqueue"):
            if not isinstance(value, bool):
                raise problem(where, "must be true or false")
            changes[key] = value
        elif key in ("guest_netns", "lxd_instance", "lxd_socket"):  # the planner checks the LXD ones
            changes[key] = _text(value, where)
        else:
            raise problem(where, "is not a host fact")
    return dataclasses.replace(base, **changes)


def parse_guest(doc: Any, base: GuestOptions) -> GuestOptions:
    if doc is None:
        return base
    if not isinstance(doc, dict):
        raise problem("guest", "must be an object")
    changes: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"guest.{key}"
        if key == "virt_type":
            if value not in ("kvm", "qemu", "lxc", "parallels"):
                raise problem(where, "must be one of kvm, qemu, lxc, parallels")
            changes[key] = value
        elif key in ("model", "vf_netdev", "vdpa_dev"):
            changes[key] = _text(value, where)
        elif key in _GUEST_INTS:
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise problem(where, "must be a positive integer")
            changes[key] = value
        elif key == "packed":
            if not isinstance(value, bool):
                raise problem(where, "must be true or false")
            changes[key] = value
        elif key in ("bandwidth_in", "bandwidth_out"):
            changes[key] = _bandwidth(value, where)
        else:
            raise problem(where, "is not a guest option")
    return dataclasses.replace(base, **changes)


def _bandwidth(value: Any, where: str) -> Bandwidth:
    if value is None:
        return Bandwidth()
    if not isinstance(value, dict) or set(value) - {"average", "peak", "burst"}:
        raise problem(where, "must be an object with average, peak, burst (KB/s, KB/s, KB)")
    for k, v in value.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise problem(f"{where}.{k}", "must be a non-negative integer")
    return Bandwidth(**value)


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 600:
        raise problem(where, "must be a number of seconds from 0 to 600")
    return float(value)


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
        raise problem(where, "must be a non-empty string")
    return value


@dataclass(frozen=True)
class DeleteRequest:
    ids: list[str]
    ports: list[Any]  # binding documents (unplug without a record: devices found by name or MAC)
    all_ports: bool


def delete_request(doc: Any) -> DeleteRequest:
    """``POST /v1/ports/delete``: ``{"ids": [...], "ports": [...], "all": false}``."""
    if not isinstance(doc, dict):
        raise problem("body", "must be an object like {\"ids\": [\"port-1\"]}")
    unknown = sorted(set(doc) - {"ids", "ports", "all"})
    if unknown:
        raise problem(unknown[0], "is not a field of a delete request (ids, ports, all)")
    ids = doc.get("ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise problem("ids", "must be a list of port ids")
    ports = doc.get("ports") or []
    ports = ports if isinstance(ports, list) else [ports]
    all_ports = doc.get("all", False)
    if not isinstance(all_ports, bool):
        raise problem("all", "must be true or false")
    if not ids and not ports and not all_ports:
        raise problem("body", "names nothing to delete: give ids, ports or all")
    return DeleteRequest(ids, ports, all_ports)


def gc_request(doc: Any) -> bool:
    if doc is None:
        return False
    if not isinstance(doc, dict) or set(doc) - {"force"} or not isinstance(doc.get("force", False), bool):
        raise problem("body", "must be {\"force\": true|false}")
    return bool(doc.get("force", False))


def facts_to_json(f: HostFacts) -> dict[str, Any]:
    return {"hypervisor": f.hypervisor, "libvirt_version": ".".join(map(str, f.libvirt_version)),
            "firewall": f.firewall, "ovs_datapath": f.ovs_datapath, "anti_spoof": f.anti_spoof,
            "guest_netns": f.guest_netns, "lxd_instance": f.lxd_instance, "lxd_socket": f.lxd_socket}


def cni_request(doc: Any) -> tuple[dict[str, str], str]:
    """``POST /v1/cni``: ``{"env": {"CNI_COMMAND": ..., ...}, "config": "<stdin>"}``."""
    if not isinstance(doc, dict):
        raise problem("body", "must be an object like {\"env\": {\"CNI_COMMAND\": \"ADD\"}, \"config\": \"...\"}")
    env, config = doc.get("env"), doc.get("config")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise problem("env", "must be an object of strings (the CNI_* variables)")
    if not isinstance(config, str):
        raise problem("config", "must be a string (the network configuration the runtime gave)")
    return {k: v for k, v in env.items() if k.startswith("CNI_")}, config
