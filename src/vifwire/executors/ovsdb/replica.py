"""The plain-dict replica of the monitored tables (docs/ovs.md).

Monitor updates (RFC 7047 §4.1.5 initial reply, §4.1.6 ``update``
notifications) are stored as the raw JSON the server sent --
``{table: {uuid: {column: json}}}`` plus ``name -> uuid`` maps -- and values
are converted only when read.  The ``ovs`` IDL (``ovs.db.idl``) was measured
at ~0.35 ms/port just to turn a 1000-port update into ``Datum`` objects; this
replica costs a few microseconds per row.  It is separate from the transport
so reads and the transaction builders (:mod:`.ports`) work on one small,
I/O-free object.
"""

from __future__ import annotations

from typing import Any

#: The only tables and columns vifwire monitors.  High-churn columns
#: (``statistics``, ``status``) are left out, so ovs-vswitchd's periodic
#: refreshes cost nothing.
COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces", "tag"],
    "Interface": [
        "name", "type", "external_ids", "options",
        "mtu_request", "mtu", "ofport", "error",
    ],
}
#: Tables whose rows are looked up by their ``name`` column.
NAMED = ("Bridge", "Port", "Interface")


# --------------------------------------------------------------------------
# raw OVSDB JSON values (RFC 7047 §5.1) -> python


def scalar(v: Any) -> Any:
    """Optional scalar (``["set", []]`` / ``["set", [x]]`` / ``x``) -> x|None."""
    if isinstance(v, list):
        if v[0] == "set":
            return scalar(v[1][0]) if v[1] else None
        if v[0] in ("uuid", "named-uuid"):
            return v[1]
    return v


def pymap(v: Any) -> dict:
    """An OVSDB ``["map", [[k, v], ...]]`` -> dict (anything else -> {})."""
    return dict(v[1]) if isinstance(v, list) and v and v[0] == "map" else {}


def uuids(v: Any) -> list[str]:
    """A set of uuid references -> list of uuid strings."""
    if not isinstance(v, list) or not v:
        return []
    if v[0] == "uuid":
        return [v[1]]
    if v[0] == "set":
        return [x[1] for x in v[1]]
    return []


# --------------------------------------------------------------------------


class Replica:
    """The monitored rows, as the server sent them, with name indexes.

    ``tables`` and ``names`` are read by the transaction builders; only
    :meth:`reset` and :meth:`apply` change them.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict]] = {t: {} for t in COLUMNS}
        self.names: dict[str, dict[str, str]] = {t: {} for t in NAMED}
        self._bridges_ver = 0
        self._p2b: dict[str, str] = {}
        self._p2b_ver = -1

    def reset(self) -> None:
        """Forget every row (a new monitor reply replaces them all)."""
        for t in self.tables.values():
            t.clear()
        for n in self.names.values():
            n.clear()
        self._bridges_ver += 1

    def apply(self, updates: dict) -> None:
        """Merge a ``<table-updates>`` object (RFC 7047 §4.1.6): a row with
        no ``new`` is deleted, otherwise ``new`` replaces it (the original
        ``monitor`` method sends every monitored column in ``new``)."""
        for tname, rows in updates.items():
            table = self.tables.get(tname)
            if table is None:
                continue
            names = self.names.get(tname)
            if tname == "Bridge":
                self._bridges_ver += 1
            for uuid, ru in rows.items():
                new = ru.get("new")
                old = table.get(uuid)
                if new is None:
                    if old is not None:
                        del table[uuid]
                        if names is not None and names.get(old.get("name")) == uuid:
                            del names[old["name"]]
                    continue
                table[uuid] = new
                if names is not None:
                    if old is not None and old.get("name") != new.get("name") \
                            and names.get(old.get("name")) == uuid:
                        del names[old["name"]]
                    names[new.get("name")] = uuid

    # ---- lookups ---------------------------------------------------------

    def row(self, table: str, name: str) -> tuple[str, dict] | tuple[None, None]:
        """``(uuid, raw row)`` of the named row, ``(None, None)`` if absent."""
        u = self.names[table].get(name)
        if u is None:
            return None, None
        return u, self.tables[table][u]

    def port_bridges(self) -> dict[str, str]:
        """Port uuid -> bridge name (cached until a Bridge row changes)."""
        if self._p2b_ver != self._bridges_ver:
            p2b = {}
            for br in self.tables["Bridge"].values():
                name = br["name"]
                for pu in uuids(br["ports"]):
                    p2b[pu] = name
            self._p2b = p2b
            self._p2b_ver = self._bridges_ver
        return self._p2b

    def iface_of(self, port: dict, name: str) -> tuple[str, dict] | tuple[None, None]:
        """The port's interface called ``name``, else its first one."""
        ifaces = self.tables["Interface"]
        found = [(u, ifaces[u]) for u in uuids(port["interfaces"]) if u in ifaces]
        for u, row in found:
            if row["name"] == name:
                return u, row
        return found[0] if found else (None, None)

    def state(self, name: str) -> dict | None:
        """The port as plain python values (``OvsdbClient.port_state``)."""
        pu, port = self.row("Port", name)
        iu, iface = self.row("Interface", name)
        if port is None and iface is None:
            return None
        if iface is None:
            iu, iface = self.iface_of(port, name)
        st: dict[str, Any] = {
            "name": name,
            "bridge": self.port_bridges().get(pu) if pu else None,
            "tag": scalar(port["tag"]) if port is not None else None,
            "type": None, "external_ids": {}, "options": {},
            "mtu_request": None, "mtu": None, "ofport": None, "error": None,
        }
        if iface is not None:
            st.update(
                type=iface["type"],
                external_ids=pymap(iface["external_ids"]),
                options=pymap(iface["options"]),
                mtu_request=scalar(iface["mtu_request"]),
                mtu=scalar(iface["mtu"]),
                ofport=scalar(iface["ofport"]),
                error=scalar(iface["error"]),
            )
        return st

    def ofport(self, name: str) -> int | None:
        u = self.names["Interface"].get(name)
        if u is None:
            return None
        return scalar(self.tables["Interface"][u]["ofport"])

    def cfg(self) -> tuple[int, int]:
        """(next_cfg, cur_cfg) as last seen."""
        root = next(iter(self.tables["Open_vSwitch"].values()), None)
        if root is None:
            return (0, 0)
        return (root["next_cfg"], root["cur_cfg"])
