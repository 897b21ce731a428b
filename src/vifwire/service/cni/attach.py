"""The CNI use case: ADD, DEL, CHECK, STATUS and GC of vifwire attachments.

One attachment per (container id, ifname), recorded like any other port
(docs/cni.md): its id is a UUID derived from the two, its host end
``vfw`` + 11 hex characters of that id, its guest MAC derived from it too
unless the runtime asks for one. Deterministic names make ADD after a crash
and DEL without a record find the same devices. Wiring goes through a
:class:`Backend`: the in-process :class:`~vifwire.service.wiring.WiringService`
or the agent's writer, so both paths plan and record the same way.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from vifwire.planner.facts import HostFacts
from vifwire.service.cni import ipam
from vifwire.service.cni.config import Invocation, NetConf
from vifwire.service.cni.spec import (
    CONFLICT, DRIFT, INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, UNKNOWN_CONTAINER, WIRING_FAILED, CniError,
    for_version, version_result,
)

if TYPE_CHECKING:
    from vifwire.model.binding import Binding
    from vifwire.planner.plan import Plan
    from vifwire.service.results import CheckResult, PortResult, UnplugResult
    from vifwire.store.base import Attachment

log = logging.getLogger("vifwire.service")

#: uuid5 namespace of CNI attachment ids (any fixed UUID; this one is vifwire's).
ID_NAMESPACE = uuid.UUID("6a1f3c52-7d0e-4b8e-9a55-3c1d2b7e9f10")
VIF_TYPES = {"routed": "tap", "bridge": "bridge", "ovs": "ovs"}


class Backend(Protocol):
    """Where the wiring happens: in this process or in the agent."""

    def plug(self, items: Sequence[tuple[Binding, Plan]]) -> list[PortResult]: ...

    def unplug(self, bindings: Sequence[Binding], facts: HostFacts) -> UnplugResult: ...

    def check(self, ids: Sequence[str]) -> CheckResult: ...

    def record(self, port_id: str) -> Attachment | None: ...

    def records(self) -> list[Attachment]: ...


def attachment_id(container_id: str, ifname: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{container_id}/{ifname}"))


def host_ifname(port_id: str) -> str:
    return "vfw" + port_id.replace("-", "")[:11]


def guest_mac(port_id: str) -> str:
    """The container end's MAC unless the runtime asks for one: 02: and a hash of the attachment."""
    from vifwire.model.names import local_mac

    return local_mac(0x02, port_id)


def facts_for(conf: NetConf, inv: Invocation) -> HostFacts:
    return HostFacts(hypervisor="lxd", ovs_datapath=conf.ovs_datapath,  # type: ignore[arg-type]
                     anti_spoof="on" if conf.anti_spoof else "off", guest_netns=inv.netns or None,
                     guest_ifname=inv.ifname, guest_ip=True,
                     host_gateway=conf.mode == "routed" or conf.is_gateway)


def vif_for(conf: NetConf, inv: Invocation, ipam_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attachment as a Nova ``network_info`` VIF: what vifwire plans from."""
    pid = attachment_id(inv.container_id, inv.ifname)
    mac = conf.mac or inv.args.get("MAC") or guest_mac(pid)
    network: dict[str, Any] = {"id": conf.name, "subnets": subnets(ipam_result or {}), "meta": {}}
    if conf.mtu:
        network["mtu"] = conf.mtu
    details: dict[str, Any] = {"port_filter": False}
    if conf.mode != "routed":
        network["bridge"] = conf.bridge
    if conf.mode == "ovs":
        details.update(ovs_hybrid_plug=conf.anti_spoof, datapath_type=conf.ovs_datapath, bridge_name=conf.bridge)
    return {"id": pid, "type": VIF_TYPES[conf.mode], "address": mac, "devname": host_ifname(pid),
            "instance_id": inv.container_id, "ovs_interfaceid": pid, "network": network, "details": details,
            "profile": {"cni": {"network": conf.name, "containerID": inv.container_id, "ifname": inv.ifname,
                                "netns": inv.netns}}}


def subnets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """An IPAM result's IPs and routes as Nova subnets (routes go to the first subnet of their family)."""
    import ipaddress

    out: list[dict[str, Any]] = []
    first: dict[int, dict[str, Any]] = {}
    for i, ip in enumerate(result.get("ips") or []):
        try:
            iface = ipaddress.ip_interface(ip["address"])
        except (KeyError, TypeError, ValueError):
            raise CniError(INVALID_CONFIG, f"ipam result: ips[{i}].address is not an address/prefix") from None
        sub: dict[str, Any] = {"cidr": str(iface.network), "ips": [{"address": str(iface.ip)}], "routes": []}
        if ip.get("gateway"):
            sub["gateway"] = {"address": ip["gateway"]}
        out.append(sub)
        first.setdefault(iface.version, sub)
    for r in result.get("routes") or []:
        try:
            dst = ipaddress.ip_network(r["dst"], strict=False)
        except (KeyError, TypeError, ValueError):
            raise CniError(INVALID_CONFIG, "ipam result: a route without a valid dst") from None
        sub = first.get(dst.version)
        if sub is not None:
            route: dict[str, Any] = {"cidr": str(dst)}
            if r.get("gw"):
                route["gateway"] = {"address": r["gw"]}
            sub["routes"].append(route)
    return out


class CniService:
    """One invocation's work over a :class:`Backend`."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def run(self, inv: Invocation, conf: NetConf, conf_text: str) -> dict[str, Any] | None:
        """The result to print (None: nothing, as DEL and GC print); raises :class:`CniError`."""
        if inv.command == "VERSION":
            return version_result(conf.version)
        handler = {"ADD": self.add, "DEL": self.delete, "CHECK": self.check, "STATUS": self.status,
                   "GC": self.gc}[inv.command]
        return handler(inv, conf, conf_text)

    # ----------------------------------------------------------------- ADD

    def add(self, inv: Invocation, conf: NetConf, conf_text: str) -> dict[str, Any]:
        from vifwire.errors import InvalidInput, VifwireError

        result = ipam.run("ADD", conf_text, conf.ipam["type"], inv.env, inv.path)
        if not result or not result.get("ips"):
            self._release(inv, conf, conf_text)
            raise CniError(WIRING_FAILED, f"ipam {conf.ipam['type']} returned no IP addresses")
        try:
            binding, plan = self._planned(conf, inv, result)
            outcome = self.backend.plug([(binding, plan)])[0]
        except CniError:
            self._release(inv, conf, conf_text)
            raise
        except InvalidInput as e:
            self._release(inv, conf, conf_text)
            raise CniError(CONFLICT, "; ".join(str(x) for x in e.errors) or str(e)) from None
        except VifwireError as e:
            self._release(inv, conf, conf_text)
            raise CniError(WIRING_FAILED, " ".join(str(e).split())) from None
        if not outcome.ok:
            self._release(inv, conf, conf_text)
            raise CniError(WIRING_FAILED, outcome.error or "the wiring failed and was rolled back")
        return for_version(merge(conf.prev_result, ours(inv, plan, result)), conf.version)

    def _planned(self, conf: NetConf, inv: Invocation, result: dict[str, Any] | None):
        from vifwire.errors import VifError
        from vifwire.model.loader import validate_vif
        from vifwire.planner.generic import plan

        try:
            binding = validate_vif(vif_for(conf, inv, result))
            return binding, plan(binding, facts_for(conf, inv), render=False)
        except VifError as e:
            raise CniError(INVALID_CONFIG, e.line() if hasattr(e, "line") else str(e)) from None

    def _release(self, inv: Invocation, conf: NetConf, conf_text: str) -> None:
        try:
            ipam.run("DEL", conf_text, conf.ipam["type"], inv.env, inv.path)
        except CniError as e:
            log.warning("ipam release after a failed ADD: %s", e.msg)

    # ----------------------------------------------------------------- DEL

    def delete(self, inv: Invocation, conf: NetConf, conf_text: str) -> None:
        """Remove everything; what is already gone is success (SPEC.md, "DEL")."""
        binding, _ = self._planned(conf, inv, None)
        res = self.backend.unplug([binding], facts_for(conf, inv))
        if res.problems:
            raise CniError(WIRING_FAILED, "; ".join(res.problems))
        ipam.run("DEL", conf_text, conf.ipam["type"], inv.env, inv.path)
        return None

    # --------------------------------------------------------------- CHECK

    def check(self, inv: Invocation, conf: NetConf, conf_text: str) -> None:
        pid = attachment_id(inv.container_id, inv.ifname)
        if conf.prev_result is None:
            raise CniError(INVALID_CONFIG, "prevResult: CHECK needs the result of the ADD")
        rec = self.backend.record(pid)
        if rec is None:
            raise CniError(UNKNOWN_CONTAINER, f"container {inv.container_id} has no vifwire attachment "
                                              f"{inv.ifname} on network {conf.name}")
        ipam.run("CHECK", conf_text, conf.ipam["type"], inv.env, inv.path)
        lines = list(self.backend.check([pid]).drift.get(pid, []))
        lines += prev_result_drift(conf.prev_result, inv, rec)
        if lines:
            raise CniError(DRIFT, f"attachment {inv.ifname} of {inv.container_id[:12]}: " + "; ".join(lines))
        return None

    # ------------------------------------------------------- STATUS and GC

    def status(self, inv: Invocation, conf: NetConf, conf_text: str) -> None:
        """Ready when an ADD could succeed: the IPAM plugin is there (and, if it
        knows STATUS, says so) and the records can be read (SPEC.md, "STATUS")."""
        if conf.ipam.get("type"):
            try:
                ipam.find(conf.ipam["type"], inv.path)
            except CniError as e:
                raise CniError(NOT_AVAILABLE, e.msg) from None
            try:
                ipam.run("STATUS", conf_text, conf.ipam["type"], inv.env, inv.path)
            except CniError as e:
                if e.code in (50, 51):  # the IPAM plugin is out of addresses or down
                    raise
                log.debug("ipam STATUS not supported: %s", e.msg)  # a plugin older than 1.1.0
        try:
            self.backend.records()
        except Exception as e:  # noqa: BLE001 - the state cannot be read: not available
            raise CniError(NOT_AVAILABLE, f"state database: {e}") from None
        return None

    def gc(self, inv: Invocation, conf: NetConf, conf_text: str) -> None:
        """Remove this network's attachments that are not in ``cni.dev/valid-attachments``.

        Each one's IPAM lease is released with a DEL for it (every IPAM plugin
        knows DEL; only 1.1.0 ones know GC), then the IPAM plugin gets the GC."""
        valid = set(conf.valid_attachments or ())
        stale = []
        for rec in self.backend.records():
            cni = ((rec.binding.get("vif") or {}).get("profile") or {}).get("cni") or {}
            if cni.get("network") == conf.name and (cni.get("containerID"), cni.get("ifname")) not in valid:
                stale.append((rec, cni))
        problems: list[str] = []
        for rec, cni in stale:
            gone = Invocation("DEL", cni["containerID"], "", cni["ifname"], {}, inv.path, inv.env)
            binding, _ = self._planned(conf, gone, None)
            res = self.backend.unplug([binding], facts_for(conf, gone))
            problems += res.problems
            try:
                ipam.run("DEL", conf_text, conf.ipam["type"], inv.env, inv.path,
                         {"CNI_CONTAINERID": cni["containerID"], "CNI_IFNAME": cni["ifname"], "CNI_NETNS": ""})
            except CniError as e:
                problems.append(e.msg)
        try:
            ipam.run("GC", conf_text, conf.ipam["type"], inv.env, inv.path)
        except CniError as e:
            log.debug("ipam GC: %s", e.msg)  # the per-attachment DELs above released the leases
        log.info("cni gc %s: %d stale attachment(s) removed", conf.name, len(stale))
        if problems:
            raise CniError(WIRING_FAILED, "; ".join(problems))
        return None


def ours(inv: Invocation, plan: Plan, ipam_result: dict[str, Any]) -> dict[str, Any]:
    """This attachment's result (1.0.0 form): host end, container end, what the guest got."""
    guest = next((s for s in plan.steps if s.op == "guest_ip"), None)
    veth = next((s for s in plan.steps if s.op == "veth"), None)
    host_end: dict[str, Any] = {"name": plan.devname}
    if veth is not None and veth.args.get("host_mac"):
        host_end["mac"] = veth.args["host_mac"]
    addresses = guest.args["addresses"] if guest else []
    routes = guest.args["routes"] if guest else []
    gws = {4: None, 6: None}
    for r in routes:
        if r.get("gw") and r["dst"] in ("0.0.0.0/0", "::/0"):
            gws[6 if ":" in r["gw"] else 4] = r["gw"]
    ips = []
    for a in addresses:
        ip: dict[str, Any] = {"address": a, "interface": 1}
        gw = gws[6 if ":" in a else 4]
        if gw:
            ip["gateway"] = gw
        ips.append(ip)
    out: dict[str, Any] = {
        "interfaces": [host_end, {"name": inv.ifname, "mac": plan.mac, "sandbox": inv.netns}],
        "ips": ips,
        "routes": [{"dst": r["dst"], **({"gw": r["gw"]} if r.get("gw") else {})} for r in routes],
    }
    if ipam_result.get("dns"):
        out["dns"] = ipam_result["dns"]
    return out


def merge(prev: dict[str, Any] | None, mine: dict[str, Any]) -> dict[str, Any]:
    """Append this attachment to a chain's prevResult (SPEC.md, "Chained plugins")."""
    if not prev:
        return mine
    base = len(prev.get("interfaces") or [])
    out = dict(prev)
    out["interfaces"] = list(prev.get("interfaces") or []) + mine["interfaces"]
    out["ips"] = list(prev.get("ips") or []) + [dict(ip, interface=ip["interface"] + base) for ip in mine["ips"]]
    out["routes"] = list(prev.get("routes") or []) + mine["routes"]
    if mine.get("dns"):
        out["dns"] = mine["dns"]
    return out


def prev_result_drift(prev: dict[str, Any], inv: Invocation, rec: Attachment) -> list[str]:
    """What the runtime's prevResult says of this attachment that the record does not."""
    ifaces = prev.get("interfaces") or []
    idx = next((i for i, x in enumerate(ifaces) if isinstance(x, dict) and x.get("name") == inv.ifname
                and x.get("sandbox") in (inv.netns, None, "")), None)
    if idx is None:
        return [f"prevResult has no interface {inv.ifname}"]
    out = []
    mac = ifaces[idx].get("mac")
    if mac and mac.lower() != rec.mac:
        out.append(f"prevResult says MAC {mac}, the attachment has {rec.mac}")
    b = rec.binding
    recorded = set(b.get("ipv4") or []) | set(b.get("ipv6") or [])
    said = {str(ip.get("address", "")).split("/")[0] for ip in prev.get("ips") or [] if ip.get("interface") == idx}
    if said and said != recorded:
        out.append(f"prevResult says {', '.join(sorted(said))}, the attachment has {', '.join(sorted(recorded))}")
    return out


def error_output(exc: BaseException, version: str) -> dict[str, Any]:
    """Any failure as a CNI error result (never a traceback)."""
    if isinstance(exc, CniError):
        return exc.to_json(version)
    return CniError(INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}").to_json(version)
