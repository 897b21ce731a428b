"""Turn input documents into validated :class:`Binding` objects.

Two input shapes are accepted, singly or as a list:

* a Neutron port as the Networking API returns it (``binding:vif_type`` ...);
* a Nova ``network_info`` VIF entry (``type``, ``details``, ``devname`` ...).

A Neutron port is first converted to the VIF Nova would build from it (its
``_build_vif_model``, nova/network/neutron.py), so both shapes go through one
validation path. Every problem becomes a :class:`VifError` naming the port,
the field and what is wrong; no ``KeyError`` or ``TypeError`` escapes.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from vifwire.errors import InvalidInput, VifError
from vifwire.model import addresses as addr, names, vif_types as vt
from vifwire.model.duplicates import duplicates as request_duplicates
from vifwire.model.binding import (
    AddressPair, Binding, BridgeSpec, EthernetSpec, MacvtapSpec, OvsSpec,
    PciSpec, QbgSpec, QbhSpec, Route, Subnet, TapSpec, VhostUserSpec,
)
from vifwire.model.text import bad_unicode, parse_document

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_PCI_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
DEFAULT_OVS_BRIDGE = "br-int"


# --------------------------------------------------------------------------
# reading documents


def load_text(text: str, origin: str = "<input>") -> list[Binding]:
    """Parse and validate; raises :class:`InvalidInput` listing every problem."""
    return load_documents(parse_document(text, origin))


def load_documents(docs: Iterable[Any]) -> list[Binding]:
    bindings: list[Binding] = []
    errors: list[VifError] = []
    for index, doc in enumerate(docs):
        try:
            bindings.append(load_one(doc, index))
        except VifError as exc:
            errors.append(exc)
    if errors:
        raise InvalidInput(errors)
    errors = request_duplicates(bindings)
    if errors:
        raise InvalidInput(errors)
    return bindings


def load_one(doc: Any, index: int = 0) -> Binding:
    if not isinstance(doc, dict):
        raise VifError(f"#{index}", "port", f"must be a JSON object, got {_typename(doc)}")
    if "binding:vif_type" in doc:
        return validate_vif(neutron_to_vif(doc, index), source="neutron", neutron=doc, index=index)
    if "type" in doc:
        return validate_vif(doc, source="nova", index=index)
    pid = doc.get("id") if isinstance(doc.get("id"), str) else f"#{index}"
    raise VifError(pid, "binding:vif_type", "is missing (neither a Neutron port nor a Nova VIF 'type')")


# --------------------------------------------------------------------------
# Neutron port -> Nova VIF


def neutron_to_vif(port: dict, index: int = 0) -> dict:
    """Build the ``network_info`` VIF Nova would build for this port."""
    pid = _port_id(port, index)
    vif_type = port.get("binding:vif_type")
    details = port.get("binding:vif_details") or {}
    if not isinstance(details, dict):
        raise VifError(pid, "binding:vif_details", f"must be an object, got {_typename(details)}")
    network = port.get("network") or {}
    if not isinstance(network, dict):
        raise VifError(pid, "network", f"must be an object, got {_typename(network)}")
    network_id = port.get("network_id") or network.get("id")
    if network_id is not None and not isinstance(network_id, str):
        raise VifError(pid, "network_id", f"must be a string, got {_typename(network_id)}")

    bridge = network.get("bridge")
    ovs_interfaceid = None
    meta: dict[str, Any] = {}
    if vif_type in (vt.OVS, vt.AGILIO_OVS):
        bridge = details.get("bridge_name", bridge or DEFAULT_OVS_BRIDGE)
        ovs_interfaceid = pid
    elif vif_type == vt.BRIDGE:
        # Nova 33 behaviour (Nova 34 dropped Linux bridge): brq + network id.
        bridge = details.get("bridge_name", bridge or ("brq" + (network_id or "")))
        meta["should_create_bridge"] = True
    elif vif_type == vt.DVS:
        bridge = network_id
    elif vif_type == vt.VHOSTUSER and details.get("vhostuser_ovs_plug"):
        bridge = details.get("bridge_name", bridge or DEFAULT_OVS_BRIDGE)
        ovs_interfaceid = pid
    elif vif_type == vt.VHOSTUSER and details.get("vhostuser_fp_plug"):
        bridge = details.get("bridge_name", bridge or ("brq" + (network_id or "")))
    if isinstance(bridge, str) and vif_type != vt.DVS:
        bridge = bridge[: names.NIC_NAME_LEN]

    mtu = network.get("mtu")
    if mtu is not None:
        meta["mtu"] = mtu
    for key in ("physical_network", "tunneled", "vlan", "bridge_interface", "interface"):
        if key in network:
            meta[key] = network[key]

    fixed_ips = port.get("fixed_ips") or []
    if not isinstance(fixed_ips, list):
        raise VifError(pid, "fixed_ips", f"must be a list, got {_typename(fixed_ips)}")
    subnets: dict[str, dict] = {}
    seen: dict[Any, int] = {}
    for i, fip in enumerate(fixed_ips):
        field = f"fixed_ips[{i}].ip_address"
        if not isinstance(fip, dict) or not isinstance(fip.get("ip_address"), str):
            raise VifError(pid, field, "is missing or not a string")
        ip = addr.parse_ip(pid, field, fip["ip_address"])
        addr.check_fixed(pid, field, ip)
        if ip in seen:
            raise VifError(pid, field, f"{ip} is also fixed_ips[{seen[ip]}]")
        seen[ip] = i
        sid = str(fip.get("subnet_id") or f"v{ip.version}")
        sub = subnets.setdefault(sid, {"cidr": None, "ips": [], "version": ip.version})
        if sub["version"] != ip.version:
            raise VifError(pid, field, f"{ip} is an IPv{ip.version} address in subnet {sid}, "
                                       f"which has IPv{sub['version']} addresses")
        sub["ips"].append({"address": str(ip), "type": "fixed", "version": ip.version})

    profile = port.get("binding:profile") or {}
    vif = {
        "id": pid,
        "address": port.get("mac_address"),
        "type": vif_type,
        "details": details,
        "devname": names.derive("tap", pid),
        "ovs_interfaceid": ovs_interfaceid,
        "network": {
            "id": network_id,
            "bridge": bridge,
            "label": network.get("name"),
            "subnets": list(subnets.values()),
            "meta": meta,
        },
        "vnic_type": port.get("binding:vnic_type") or vt.VNIC_NORMAL,
        "profile": profile,
        "qbg_params": port.get("qbg_params"),
        "qbh_params": port.get("qbh_params"),
        "preserve_on_delete": False,
        "delegate_create": bool(details.get("delegate_create", False)),
        "active": port.get("status") == "ACTIVE" or port.get("admin_state_up") is False,
    }
    if vif_type == vt.QBG and vif["qbg_params"] is None and isinstance(details.get("qbg_params"), dict):
        vif["qbg_params"] = details["qbg_params"]
    return vif


# --------------------------------------------------------------------------
# validation of a Nova VIF


def validate_vif(vif: dict, source: str = "nova", neutron: dict | None = None, index: int = 0) -> Binding:
    pid = _port_id(vif, index)
    vif_type = vif.get("type")
    field_type = "binding:vif_type" if source == "neutron" else "type"
    if vif_type in (vt.BINDING_FAILED, vt.UNBOUND):
        raise VifError(pid, field_type, f"is {vif_type!r}: the port is not bound to a host, nothing can be plugged")
    if not isinstance(vif_type, str) or not vif_type:
        raise VifError(pid, field_type, "is missing or not a string")
    if vif_type in vt.KNOWN_UNSUPPORTED:
        raise VifError(pid, field_type, f"{vif_type!r} is not supported: it {vt.KNOWN_UNSUPPORTED[vif_type]}")
    if vif_type not in vt.SUPPORTED:
        raise VifError(pid, field_type, f"unknown vif type {vif_type!r} (supported: {', '.join(vt.SUPPORTED)})")

    f_mac = "mac_address" if source == "neutron" else "address"
    mac = _mac(pid, f_mac, vif.get("address"))

    f_dev = "devname"
    devname = vif.get("devname")
    if devname is None:
        devname = names.derive("nic", pid) if source == "nova" else names.derive("tap", pid)
    _ifname(pid, f_dev, devname)

    details = vif.get("details") or {}
    f_det = "binding:vif_details" if source == "neutron" else "details"
    if not isinstance(details, dict):
        raise VifError(pid, f_det, f"must be an object, got {_typename(details)}")
    profile = vif.get("profile") or {}
    f_prof = "binding:profile" if source == "neutron" else "profile"
    if not isinstance(profile, dict):
        raise VifError(pid, f_prof, f"must be an object, got {_typename(profile)}")
    network = vif.get("network") or {}
    if not isinstance(network, dict):
        raise VifError(pid, "network", f"must be an object, got {_typename(network)}")
    meta = network.get("meta") or {}
    if not isinstance(meta, dict):
        raise VifError(pid, "network.meta", f"must be an object, got {_typename(meta)}")
    vnic_type = vif.get("vnic_type") or vt.VNIC_NORMAL
    f_vnic = "binding:vnic_type" if source == "neutron" else "vnic_type"
    if vnic_type not in vt.VNIC_TYPES:
        raise VifError(pid, f_vnic, f"unknown vnic type {vnic_type!r}")

    # Nova's Network.hydrate: a top-level network key overrides meta (the renderer does the same).
    if source == "nova" and "mtu" in network:
        mtu, f_mtu = network["mtu"], "network.mtu"
    else:
        mtu, f_mtu = meta.get("mtu"), "network.mtu" if source == "neutron" else "network.meta.mtu"
    if mtu is not None:
        if isinstance(mtu, bool) or not isinstance(mtu, int):
            raise VifError(pid, f_mtu, f"must be an integer, got {mtu!r}")
        if not 68 <= mtu <= 65535:
            raise VifError(pid, f_mtu, f"{mtu} is outside 68-65535")

    for key in ("port_filter", "ovs_hybrid_plug", "ovs_create_tap", "isolate_vif"):
        if key in details and details[key] is not None and not isinstance(details[key], bool):
            raise VifError(pid, f"{f_det}.{key}", f"must be true or false, got {details[key]!r}")

    ctx = _Ctx(pid, source, f_det, f_prof, details, profile, network, meta, vif)
    spec = _SPEC_BUILDERS[vif_type](ctx)

    ipv4, ipv6, subnets = _addresses(pid, network, source)
    if mtu is not None and mtu < 1280 and ipv6:
        raise VifError(pid, f_mtu, f"{mtu} is below 1280, the minimum for IPv6 (RFC 8200), and the port has "
                                   f"IPv6 address {ipv6[0]}; the kernel disables IPv6 on such a link")
    pairs = _address_pairs(pid, (neutron or {}).get("allowed_address_pairs") or vif.get("allowed_address_pairs") or [])
    instance_id = (neutron or {}).get("device_id") or vif.get("instance_id") or None
    if instance_id is not None and not isinstance(instance_id, str):
        raise VifError(pid, "device_id", f"must be a string, got {_typename(instance_id)}")
    net_id = network.get("id")
    clean_vif = dict(vif)
    clean_vif.setdefault("devname", devname)
    clean_vif.setdefault("vnic_type", vnic_type)
    clean_vif.setdefault("details", details)
    clean_vif.setdefault("profile", profile)
    try:
        json.dumps(clean_vif, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise VifError(pid, bad_unicode(clean_vif, "") or "port", "contains invalid Unicode (a lone surrogate)")
    except (TypeError, ValueError) as exc:
        raise VifError(pid, "port", f"cannot be represented as JSON: {exc}")
    return Binding(
        port_id=pid, vif_type=vif_type, vnic_type=vnic_type, mac=mac, devname=devname,
        mtu=mtu, network_id=net_id if isinstance(net_id, str) else None,
        instance_id=instance_id or None, ipv4=tuple(ipv4), ipv6=tuple(ipv6),
        allowed_address_pairs=tuple(pairs), subnets=tuple(subnets), spec=spec, vif=clean_vif, source=source,  # type: ignore[arg-type]
    )


class _Ctx:
    """Everything a per-type spec builder needs, with field-path helpers."""

    def __init__(self, pid, source, f_det, f_prof, details, profile, network, meta, vif):
        self.pid, self.source = pid, source
        self.f_det, self.f_prof = f_det, f_prof
        self.details, self.profile, self.network, self.meta, self.vif = details, profile, network, meta, vif

    def detail(self, key: str, required: bool = False, kind: type = str) -> Any:
        value = self.details.get(key)
        if value is None:
            if required:
                raise VifError(self.pid, f"{self.f_det}.{key}", f"is required for vif_type {self.vif.get('type')!r}")
            return None
        if kind is str and not isinstance(value, str):
            raise VifError(self.pid, f"{self.f_det}.{key}", f"must be a string, got {_typename(value)}")
        if kind is bool and not isinstance(value, bool):
            raise VifError(self.pid, f"{self.f_det}.{key}", f"must be true or false, got {value!r}")
        return value

    def bridge(self, ovs: bool = False) -> str:
        bridge = self.network.get("bridge")
        field = "network.bridge"
        if not bridge and self.details.get("bridge_name"):
            bridge, field = self.details["bridge_name"], f"{self.f_det}.bridge_name"
        if not bridge:
            raise VifError(self.pid, "network.bridge", f"is required for vif_type {self.vif.get('type')!r} (no bridge name given)")
        problem = names.ovs_bridge_problem(bridge) if ovs else names.name_problem(bridge)
        if problem:
            raise VifError(self.pid, field, problem)
        return bridge

    def pci_slot(self) -> str:
        slot = self.profile.get("pci_slot")
        if slot is None:
            raise VifError(self.pid, f"{self.f_prof}.pci_slot", f"is required for vif_type {self.vif.get('type')!r}")
        if not isinstance(slot, str) or not _PCI_RE.match(slot):
            raise VifError(self.pid, f"{self.f_prof}.pci_slot", f"{slot!r} is not a PCI address like 0000:81:00.1")
        return slot

    def vlan(self, value: Any, field: str) -> int | None:
        if value is None or value == "":
            return None
        try:
            vid = int(value)
        except (TypeError, ValueError):
            raise VifError(self.pid, field, f"must be a VLAN id, got {value!r}")
        if isinstance(value, bool) or not 0 <= vid <= 4095:
            raise VifError(self.pid, field, f"{value!r} is outside 0-4095")
        return vid


def _spec_ovs(c: _Ctx) -> OvsSpec:
    bridge = c.bridge(ovs=True)
    iface_id = c.vif.get("ovs_interfaceid") or c.pid
    if not isinstance(iface_id, str):
        raise VifError(c.pid, "ovs_interfaceid", f"must be a string, got {_typename(iface_id)}")
    dp = c.detail("datapath_type")
    if dp is not None and dp not in ("system", "netdev"):
        raise VifError(c.pid, f"{c.f_det}.datapath_type", f"{dp!r} is neither 'system' nor 'netdev'")
    return OvsSpec(
        bridge=bridge, interface_id=iface_id,
        hybrid_plug=c.details.get("ovs_hybrid_plug"), create_tap=c.details.get("ovs_create_tap"),
        port_filter=c.details.get("port_filter"), datapath_type=dp,
        isolate_vif=bool(c.details.get("isolate_vif", False)),
        representor=c.vif.get("vnic_type") in vt.VNIC_REPRESENTOR,
    )


def _spec_bridge(c: _Ctx) -> BridgeSpec:
    bridge = c.bridge()
    bi = c.meta.get("bridge_interface")
    if bi is not None:
        _ifname(c.pid, "network.meta.bridge_interface", bi)
    return BridgeSpec(
        bridge=bridge, should_create_bridge=bool(c.meta.get("should_create_bridge", True)),
        vlan=c.vlan(c.meta.get("vlan"), "network.meta.vlan"), bridge_interface=bi,
        port_filter=c.details.get("port_filter"),
    )


def _spec_tap(c: _Ctx) -> TapSpec:
    mac = c.detail("mac_address")
    if mac is not None:
        mac = _mac(c.pid, f"{c.f_det}.mac_address", mac)
    return TapSpec(mac=mac, port_filter=c.details.get("port_filter"))


def _spec_qbg(c: _Ctx) -> QbgSpec:
    params = c.vif.get("qbg_params")
    f = "qbg_params"
    if not isinstance(params, dict):
        raise VifError(c.pid, f, "is required for vif_type '802.1qbg' (managerid, typeid, typeidversion, instanceid)")
    iface = c.meta.get("interface")
    if iface is None:
        raise VifError(c.pid, "network.meta.interface", "is required for vif_type '802.1qbg' (the eth device)")
    _ifname(c.pid, "network.meta.interface", iface)
    ranges = {"managerid": 255, "typeid": 16777215, "typeidversion": 255}
    values: dict[str, Any] = {}
    for key, hi in ranges.items():
        v = params.get(key)
        if v is None:
            raise VifError(c.pid, f"{f}.{key}", "is required for vif_type '802.1qbg'")
        try:
            n = int(v, 0) if isinstance(v, str) else int(v)
        except (TypeError, ValueError):
            raise VifError(c.pid, f"{f}.{key}", f"must be an integer, got {v!r}")
        if isinstance(v, bool) or not 0 <= n <= hi:
            raise VifError(c.pid, f"{f}.{key}", f"{v!r} is outside libvirt's range 0-{hi}")
        values[key] = n
    inst = params.get("instanceid")
    if inst is None:
        raise VifError(c.pid, f"{f}.instanceid", "is required for vif_type '802.1qbg'")
    try:
        uuid.UUID(str(inst))
    except ValueError:
        raise VifError(c.pid, f"{f}.instanceid", f"{inst!r} is not a UUID")
    if not isinstance(inst, str):
        raise VifError(c.pid, f"{f}.instanceid", f"must be a UUID string, got {_typename(inst)}")
    return QbgSpec(interface=iface, instanceid=inst, **values)


def _spec_qbh(c: _Ctx) -> QbhSpec:
    profileid = c.detail("profileid", required=True)
    if not profileid:
        raise VifError(c.pid, f"{c.f_det}.profileid", "is empty")
    return QbhSpec(profileid=profileid, pci_slot=c.pci_slot())


def _spec_macvtap(c: _Ctx) -> MacvtapSpec:
    missing = [k for k in ("macvtap_source", "macvtap_mode", "physical_interface") if c.details.get(k) is None]
    if missing:
        raise VifError(c.pid, f"{c.f_det}.{missing[0]}",
                       f"is required for vif_type 'macvtap' (missing: {', '.join(missing)})")
    src = c.detail("macvtap_source")
    _ifname(c.pid, f"{c.f_det}.macvtap_source", src)
    mode = c.detail("macvtap_mode")
    if mode not in vt.MACVTAP_MODES:
        raise VifError(c.pid, f"{c.f_det}.macvtap_mode", f"{mode!r} is not one of {', '.join(vt.MACVTAP_MODES)}")
    phys = c.detail("physical_interface")
    _ifname(c.pid, f"{c.f_det}.physical_interface", phys)
    return MacvtapSpec(source=src, mode=mode, physical_interface=phys,
                       vlan=c.vlan(c.details.get("vlan"), f"{c.f_det}.vlan"))


def _spec_hw_veb(c: _Ctx) -> PciSpec:
    vlan = c.details.get("vlan")
    if vlan is None:
        raise VifError(c.pid, f"{c.f_det}.vlan", "is required for vif_type 'hw_veb'")
    return PciSpec(pci_slot=c.pci_slot(), vlan=c.vlan(vlan, f"{c.f_det}.vlan"))


def _spec_pci(c: _Ctx) -> PciSpec:
    return PciSpec(pci_slot=c.pci_slot())


def _spec_vhostuser(c: _Ctx) -> VhostUserSpec:
    sock = c.detail("vhostuser_socket", required=True)
    if not sock.startswith("/") or "\x00" in sock:
        raise VifError(c.pid, f"{c.f_det}.vhostuser_socket", f"{sock!r} is not an absolute path")
    # absent: 'server', as Nova (nova/network/os_vif_util.py); null is refused, as os-vif does
    mode = c.details["vhostuser_mode"] if "vhostuser_mode" in c.details else vt.VHOSTUSER_DEFAULT_MODE
    if mode not in vt.VHOSTUSER_MODES:
        raise VifError(c.pid, f"{c.f_det}.vhostuser_mode", f"{mode!r} is neither 'client' nor 'server'")
    ovs_plug = bool(c.details.get("vhostuser_ovs_plug", False))
    bridge = c.bridge(ovs=True) if ovs_plug else None
    return VhostUserSpec(socket=sock, mode=mode, ovs_plug=ovs_plug, bridge=bridge,
                         interface_id=(c.vif.get("ovs_interfaceid") or c.pid) if ovs_plug else None,
                         datapath_type=c.details.get("datapath_type"))


def _spec_ethernet(c: _Ctx) -> EthernetSpec:
    return EthernetSpec()


def _spec_dvs(c: _Ctx) -> EthernetSpec:
    c.bridge()
    return EthernetSpec()


_SPEC_BUILDERS = {
    vt.OVS: _spec_ovs, vt.AGILIO_OVS: _spec_ovs, vt.BRIDGE: _spec_bridge, vt.TAP: _spec_tap,
    vt.QBG: _spec_qbg, vt.QBH: _spec_qbh, vt.MACVTAP: _spec_macvtap, vt.HW_VEB: _spec_hw_veb,
    vt.HOSTDEV: _spec_pci, vt.IB_HOSTDEV: _spec_pci, vt.VHOSTUSER: _spec_vhostuser,
    vt.IOVISOR: _spec_ethernet, vt.MIDONET: _spec_ethernet, vt.IVS: _spec_ethernet,
    vt.VROUTER: _spec_ethernet, vt.DVS: _spec_dvs,
}


# --------------------------------------------------------------------------
# small validators


def _typename(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


MAX_PORT_ID = 255  # bytes of UTF-8; Neutron/Nova ids are 36-character UUIDs


def _short(value: str, limit: int = 40) -> str:
    """A printable, bounded rendering of a bad value for an error line."""
    text = ascii(value[:limit])
    return text if len(value) <= limit else text[:-1] + "..." + text[-1]


_PLAIN_ID = re.compile(r"[0-9A-Za-z_.-]{1,255}\Z")  # UUIDs and the like: nothing more to check


def _port_id(doc: dict, index: int) -> str:
    pid = doc.get("id")
    if isinstance(pid, str) and _PLAIN_ID.match(pid):
        return pid
    if not isinstance(pid, str) or not pid.strip():
        raise VifError(f"#{index}", "id", "is missing or not a non-empty string")
    size = len(pid.encode("utf-8", "surrogatepass"))
    if size > MAX_PORT_ID:
        raise VifError(f"#{index}", "id", f"{_short(pid)} is {len(pid)} characters ({size} bytes) long, "
                                          f"the limit is {MAX_PORT_ID} bytes")
    if "\x00" in pid or any(c.isspace() for c in pid) or "/" in pid or not pid.isprintable():
        raise VifError(f"#{index}", "id", f"{_short(pid)} contains whitespace, '/', NUL, control characters "
                                          "or invalid Unicode")
    # The device names derived from it (tap/qbr/qvb/qvo/vhu + its first 11 characters) must be valid too.
    problem = names.name_problem(names.derive("qbr", pid))
    if problem:
        raise VifError(pid, "id", f"cannot name its devices: {problem}")
    return pid


def _mac(pid: str, field: str, value: Any) -> str:
    if value is None:
        raise VifError(pid, field, "is missing")
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise VifError(pid, field, f"{value!r} is not a MAC address like fa:16:3e:12:34:56")
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        raise VifError(pid, field, f"{value!r} is a multicast address, not a NIC address")
    if mac == "00:00:00:00:00:00":
        raise VifError(pid, field, "is all zeros")
    return mac


def _ifname(pid: str, field: str, value: Any) -> str:
    problem = names.name_problem(value)
    if problem:
        raise VifError(pid, field, problem)
    return value


def _parse_ip(pid: str, field: str, value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return addr.parse_ip(pid, field, value)


def _addresses(pid: str, network: dict, source: str = "nova") -> tuple[list[str], list[str], list[Subnet]]:
    """Every fixed IP, checked against its subnet (docs: model/addresses.py), and the subnets."""
    v4: list[str] = []
    v6: list[str] = []
    out: list[Subnet] = []
    subnets = network.get("subnets") or []
    if not isinstance(subnets, list):
        raise VifError(pid, "network.subnets", f"must be a list, got {_typename(subnets)}")
    seen: dict[Any, str] = {}
    for i, sub in enumerate(subnets):
        f_sub = f"network.subnets[{i}]"
        if not isinstance(sub, dict):
            raise VifError(pid, f_sub, f"must be an object, got {_typename(sub)}")
        net = None
        if sub.get("cidr") is not None:
            net = addr.parse_cidr(pid, f"{f_sub}.cidr", sub["cidr"])
        version = sub.get("version")
        if version is not None and version not in (4, 6):
            raise VifError(pid, f"{f_sub}.version", f"must be 4 or 6, got {version!r}")
        if net is not None and version is not None and version != net.version:
            raise VifError(pid, f"{f_sub}.version", f"is {version} but the cidr {net} is IPv{net.version}")
        family = net.version if net is not None else version
        ips = sub.get("ips") or []
        if not isinstance(ips, list):
            raise VifError(pid, f"{f_sub}.ips", f"must be a list, got {_typename(ips)}")
        mine: list[str] = []
        for j, ipd in enumerate(ips):
            field = f"{f_sub}.ips[{j}].address"
            address = ipd.get("address") if isinstance(ipd, dict) else None
            ip = addr.parse_ip(pid, field, address)
            if family is not None and ip.version != family and net is None:
                raise VifError(pid, field, f"{ip} is an IPv{ip.version} address in an IPv{family} subnet")
            addr.check_fixed(pid, field, ip, net)
            if ip in seen:
                raise VifError(pid, field, f"{ip} is also {seen[ip]}")
            seen[ip] = field
            (v4 if ip.version == 4 else v6).append(str(ip))
            mine.append(str(ip))
        gateway = sub.get("gateway")
        gw = gateway.get("address") if isinstance(gateway, dict) else gateway
        if gw is not None:
            f_gw = f"{f_sub}.gateway" + (".address" if isinstance(gateway, dict) else "")
            gw_ip = addr.parse_ip(pid, f_gw, gw)
            addr.check_gateway(pid, f_gw, gw_ip, family, net)
            gw = str(gw_ip)
        out.append(Subnet(cidr=str(net) if net is not None else None, gateway=gw, ips=tuple(mine),
                          routes=tuple(_routes(pid, f_sub, sub.get("routes"), family))))
    return v4, v6, out


def _routes(pid: str, f_sub: str, routes: Any, family: int | None) -> list[Route]:
    """A subnet's extra routes (Nova: ``[{"cidr": ..., "gateway": {"address": ...}}]``)."""
    if routes is None:
        return []
    if not isinstance(routes, list):
        raise VifError(pid, f"{f_sub}.routes", f"must be a list, got {_typename(routes)}")
    out = []
    for k, r in enumerate(routes):
        f_r = f"{f_sub}.routes[{k}]"
        if not isinstance(r, dict):
            raise VifError(pid, f_r, f"must be an object, got {_typename(r)}")
        dst = addr.parse_cidr(pid, f"{f_r}.cidr", r.get("cidr"))
        if family is not None and dst.version != family:
            raise VifError(pid, f"{f_r}.cidr", f"{dst} is IPv{dst.version} in an IPv{family} subnet")
        gateway = r.get("gateway")
        gw = gateway.get("address") if isinstance(gateway, dict) else gateway
        if gw is not None:
            f_gw = f"{f_r}.gateway" + (".address" if isinstance(gateway, dict) else "")
            ip = addr.parse_ip(pid, f_gw, gw)
            if ip.version != dst.version:
                raise VifError(pid, f_gw, f"{ip} is IPv{ip.version}, the route's destination IPv{dst.version}")
            gw = str(ip)
        out.append(Route(dst=str(dst), gw=gw))
    return out


def _address_pairs(pid: str, pairs: Any) -> list[AddressPair]:
    if not isinstance(pairs, list):
        raise VifError(pid, "allowed_address_pairs", f"must be a list, got {_typename(pairs)}")
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not isinstance(p.get("ip_address"), str):
            raise VifError(pid, f"allowed_address_pairs[{i}].ip_address", "is missing or not a string")
        net = addr.parse_pair(pid, f"allowed_address_pairs[{i}].ip_address", p["ip_address"])
        mac = p.get("mac_address")
        if mac is not None:
            mac = _mac(pid, f"allowed_address_pairs[{i}].mac_address", mac)
        out.append(AddressPair(ip=str(net) if net.num_addresses > 1 else str(net.network_address), mac=mac))
    return out
