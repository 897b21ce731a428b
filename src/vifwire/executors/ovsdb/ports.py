"""Port specs and the OVSDB operations that create, converge or remove them.

Pure functions of a :class:`~.replica.Replica`: they turn a whole batch into
the operation list of ONE ``transact`` (RFC 7047 §5.2: ``insert`` Interface
+ ``insert`` Port per port, one ``mutate`` of ``Bridge.ports`` per bridge)
and do no I/O, so the session can call them again from a fresh replica when
a transaction has to be retried (docs/ovs.md, plug path).

Existing ports (``may_exist=True``) are *converged*: ``type``,
``mtu_request`` and the port ``tag`` are set to the spec's values (``None``
clears them); ``external_ids``/``options`` keys from the spec are set and
other keys (e.g. ``ovn-installed`` written by another agent) are left alone.
A port that exists on a *different* bridge is an error, as with
``ovs-vsctl --may-exist add-port``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vifwire.executors.ovsdb.errors import OvsdbError
from vifwire.executors.ovsdb.replica import Replica, pymap, scalar

#: Interface ``type`` values vifwire plugs.  Anything else is passed through.
KNOWN_IFACE_TYPES = ("", "system", "internal", "dpdkvhostuserclient", "dpdkvhostuser", "tap")


@dataclass
class OvsPortSpec:
    """One OVS port with a single interface of the same name.

    ``iface_type``: ``""`` (a system device: veth end, tap), ``"internal"``,
    ``"dpdkvhostuserclient"``, ``"dpdkvhostuser"``...
    ``external_ids``: Interface external_ids (``iface-id``, ``iface-status``,
    ``attached-mac``, ``vm-uuid`` and vifwire's own owner marker).
    ``mtu_request``/``tag``: ``None`` means unset.  ``options``: Interface
    options (e.g. ``vhost-server-path``).
    """

    bridge: str
    name: str
    iface_type: str = ""
    external_ids: dict[str, str] = field(default_factory=dict)
    mtu_request: int | None = None
    tag: int | None = None
    options: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        def bad(f, p):
            raise OvsdbError(self.name or "<unnamed>", f"ovs {f}", p)

        if not self.name or not isinstance(self.name, str):
            bad("port name", "empty port name")
        if not self.bridge:
            bad("bridge", "empty bridge name")
        if self.tag is not None and not (isinstance(self.tag, int) and 0 <= self.tag <= 4095):
            bad("tag", f"vlan tag {self.tag!r} not in 0..4095")
        if self.mtu_request is not None and not (
            isinstance(self.mtu_request, int) and 68 <= self.mtu_request <= 65535
        ):
            bad("mtu_request", f"mtu {self.mtu_request!r} not in 68..65535")
        for what, d in (("external_ids", self.external_ids), ("options", self.options)):
            for k, v in d.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    bad(what, f"{what} must map strings to strings ({k!r}: {v!r})")


# --------------------------------------------------------------------------
# python -> OVSDB JSON values (RFC 7047 §5.1)


def ovs_map(d: dict[str, str]) -> list:
    return ["map", [[k, v] for k, v in d.items()]]


def optional(v: Any) -> Any:
    """``None`` -> the empty set, which clears an optional column."""
    return ["set", []] if v is None else v


def uuid_ref(u) -> list:
    return ["uuid", str(u)]


# --------------------------------------------------------------------------
# operation builders


def build_add(replica: Replica, specs: list[OvsPortSpec], may_exist: bool) -> list[dict]:
    """Operations adding (or converging) every spec; raises
    :class:`OvsdbError` naming the port that cannot be added."""
    ops: list[dict] = []
    new_by_bridge: dict[str, list] = {}
    bridges: dict[str, str] = {}
    bridge_names = replica.names["Bridge"]
    port_names = replica.names["Port"]
    iface_names = replica.names["Interface"]
    for k, s in enumerate(specs):
        bu = bridges.get(s.bridge)
        if bu is None:
            bu = bridges[s.bridge] = bridge_names.get(s.bridge)
            if bu is None:
                raise OvsdbError(s.name, "ovs add-port", f"bridge {s.bridge} does not exist")
        pu = port_names.get(s.name)
        if pu is None:
            if s.name in iface_names:
                raise OvsdbError(s.name, "ovs add-port",
                                 "an interface with this name exists on another port")
            irow: dict[str, Any] = {"name": s.name}
            if s.iface_type:
                irow["type"] = s.iface_type
            if s.external_ids:
                irow["external_ids"] = ovs_map(s.external_ids)
            if s.options:
                irow["options"] = ovs_map(s.options)
            if s.mtu_request is not None:
                irow["mtu_request"] = s.mtu_request
            prow: dict[str, Any] = {"name": s.name, "interfaces": ["named-uuid", f"i{k}"]}
            if s.tag is not None:
                prow["tag"] = s.tag
            ops.append({"op": "insert", "table": "Interface", "uuid-name": f"i{k}", "row": irow})
            ops.append({"op": "insert", "table": "Port", "uuid-name": f"p{k}", "row": prow})
            new_by_bridge.setdefault(s.bridge, []).append(["named-uuid", f"p{k}"])
            continue
        owner = replica.port_bridges().get(pu)
        if not may_exist:
            raise OvsdbError(s.name, "ovs add-port", f"port already exists on bridge {owner}")
        if owner != s.bridge:
            raise OvsdbError(s.name, "ovs add-port",
                             f"port exists on bridge {owner}, not {s.bridge}")
        ops.extend(converge_ops(replica, pu, replica.tables["Port"][pu], s))
    for brname, refs in new_by_bridge.items():
        where = [["_uuid", "==", uuid_ref(bridges[brname])]]
        # Fail (and retry from a fresh replica) if the bridge vanished.
        ops.append({"op": "wait", "table": "Bridge", "where": where, "timeout": 0,
                    "columns": ["name"], "until": "==", "rows": [{"name": brname}]})
        ops.append({"op": "mutate", "table": "Bridge", "where": where,
                    "mutations": [["ports", "insert", ["set", refs]]]})
    return ops


def converge_ops(replica: Replica, pu: str, port: dict, s: OvsPortSpec) -> list[dict]:
    """Operations making the existing port ``pu`` (row ``port``) match ``s``."""
    ops: list[dict] = []
    if scalar(port["tag"]) != s.tag:
        ops.append({"op": "update", "table": "Port", "where": [["_uuid", "==", uuid_ref(pu)]],
                    "row": {"tag": optional(s.tag)}})
    iu, iface = replica.iface_of(port, s.name)
    if iface is None:
        raise OvsdbError(s.name, "ovs add-port", "existing port has no interface")
    where = [["_uuid", "==", uuid_ref(iu)]]
    row: dict[str, Any] = {}
    if iface["type"] != s.iface_type:
        row["type"] = s.iface_type
    if scalar(iface["mtu_request"]) != s.mtu_request:
        row["mtu_request"] = optional(s.mtu_request)
    if row:
        ops.append({"op": "update", "table": "Interface", "where": where, "row": row})
    muts = []
    for col, want in (("external_ids", s.external_ids), ("options", s.options)):
        have = pymap(iface[col])
        diff = {k: v for k, v in want.items() if have.get(k) != v}
        if diff:
            stale = [k for k in diff if k in have]
            if stale:
                muts.append([col, "delete", ["set", sorted(stale)]])
            muts.append([col, "insert", ovs_map(diff)])
    if muts:
        ops.append({"op": "mutate", "table": "Interface", "where": where, "mutations": muts})
    return ops


def build_del(replica: Replica, names: list[str], if_exists: bool) -> list[dict]:
    """Operations removing the named ports: one ``mutate`` of
    ``Bridge.ports`` per bridge (ovsdb-server garbage-collects the
    unreferenced Port and Interface rows, RFC 7047 §3.2 ``isRoot``)."""
    p2b = replica.port_bridges()
    by_bridge: dict[str, list] = {}
    for n in names:
        pu = replica.names["Port"].get(n)
        br = p2b.get(pu) if pu is not None else None
        if br is None:
            if not if_exists:
                raise OvsdbError(n, "ovs del-port", "no such port")
            continue
        by_bridge.setdefault(br, []).append(uuid_ref(pu))
    return [{"op": "mutate", "table": "Bridge",
             "where": [["_uuid", "==", uuid_ref(replica.names["Bridge"][br])]],
             "mutations": [["ports", "delete", ["set", refs]]]}
            for br, refs in by_bridge.items()]
