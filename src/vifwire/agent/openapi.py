"""The agent's API described as an OpenAPI 3.1 document (``GET /v1/openapi.json``).

Written out by hand next to the route table (:data:`vifwire.agent.api.ROUTES`);
a test checks that both list the same operations, and docs/agent.md embeds
this document (``python -m vifwire.agent.openapi`` prints it).
"""

from __future__ import annotations

import json
from typing import Any

_ERR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict | None = None, ctype: str = "application/json") -> dict:
    r: dict[str, Any] = {"description": desc}
    if schema is not None:
        r["content"] = {ctype: {"schema": schema}}
    return r


def _errors(*codes: int) -> dict:
    text = {400: "Invalid request or binding (one line per problem)", 403: "The peer may only read",
            404: "Not recorded / no such path", 409: "Clashes with another recorded port",
            500: "The host or the store failed", 503: "Not ready (start-up reconcile) or shutting down",
            504: "wait ran out before OVS reported the ports up"}
    return {str(c): _resp(text[c], _ERR) for c in codes}


_PORT_ID = {"name": "port_id", "in": "path", "required": True, "schema": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "errors"],
              "properties": {"error": {"type": "string", "description": "The first problem line"},
                             "errors": {"type": "array", "items": {"type": "string"}}}},
    "Binding": {"type": "object", "description": "A Neutron port or a Nova network_info VIF (docs/README)",
                "additionalProperties": True},
    "HostFacts": {"type": "object", "properties": {
        "hypervisor": {"enum": ["libvirt", "lxd"]}, "libvirt_version": {"type": "string"},
        "firewall": {"type": "boolean"}, "ovs_datapath": {"enum": ["system", "netdev"]},
        "anti_spoof": {"enum": ["auto", "on", "off"]}, "guest_netns": {"type": "string"},
        "multiqueue": {"type": "boolean"},
        "lxd_instance": {"type": "string", "description": "Also add each port's NIC to this LXD instance "
                                                          "(hypervisor lxd; docs/lxd.md)"},
        "lxd_socket": {"type": "string", "description": "LXD's Unix socket (default: the agent's)"}},
        "additionalProperties": False},
    "CniRequest": {"type": "object", "required": ["env", "config"], "additionalProperties": False, "properties": {
        "env": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "The plugin's CNI_* variables (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, ...)"},
        "config": {"type": "string", "description": "The network configuration the runtime gave on stdin"}}},
    "CniAnswer": {"type": "object", "required": ["exit", "output"], "properties": {
        "exit": {"type": "integer", "description": "The plugin's exit code (0 or 1)"},
        "output": {"type": ["object", "null"],
                   "description": "What the plugin prints: a CNI result, a CNI error {code, msg, details}, "
                                  "or nothing (DEL, GC)"}}},
    "Bandwidth": {"type": "object", "properties": {k: {"type": ["integer", "null"], "minimum": 0}
                                                   for k in ("average", "peak", "burst")}},
    "GuestOptions": {"type": "object", "properties": {
        "virt_type": {"enum": ["kvm", "qemu", "lxc", "parallels"]}, "model": {"type": "string"},
        "queues": {"type": "integer", "minimum": 1}, "rx_queue_size": {"type": "integer"},
        "tx_queue_size": {"type": "integer"}, "packed": {"type": "boolean"},
        "bandwidth_in": {"$ref": "#/components/schemas/Bandwidth"},
        "bandwidth_out": {"$ref": "#/components/schemas/Bandwidth"}, "vf_netdev": {"type": "string"},
        "vdpa_dev": {"type": "string"}},
        "additionalProperties": False},
    "PlugRequest": {"oneOf": [
        {"$ref": "#/components/schemas/Binding"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Binding"}},
        {"type": "object", "required": ["ports"], "additionalProperties": False, "properties": {
            "ports": {"oneOf": [{"$ref": "#/components/schemas/Binding"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/Binding"}}]},
            "facts": {"$ref": "#/components/schemas/HostFacts"},
            "guest": {"$ref": "#/components/schemas/GuestOptions"},
            "wait": {"type": "number", "minimum": 0, "maximum": 600,
                     "description": "Answer only when each OVS port is up with an ofport"},
            "instance": {"type": "string"}}}]},
    "PortResult": {"type": "object", "required": ["port_id", "ok", "strategy", "devices", "error"], "properties": {
        "port_id": {"type": "string"}, "ok": {"type": "boolean"}, "strategy": {"type": "string"},
        "devices": {"type": "array", "items": {"type": "string"}}, "changed_steps": {"type": "integer"},
        "error": {"type": ["string", "null"]}, "guest": {"type": ["object", "null"]}}},
    "PlugResults": {"type": "object", "required": ["ports"],
                    "properties": {"ports": {"type": "array", "items": {"$ref": "#/components/schemas/PortResult"}}}},
    "Attachment": {"type": "object", "properties": {
        "port_id": {"type": "string"}, "instance_id": {"type": ["string", "null"]}, "vif_type": {"type": "string"},
        "devname": {"type": "string"}, "mac": {"type": "string"}, "netns": {"type": ["string", "null"]},
        "status": {"enum": ["plugging", "plugged"]}, "strategy": {"type": "string"},
        "devices": {"type": "array", "items": {"type": "string"}}, "binding": {"type": "object"},
        "plan": {"type": "object"}}},
    "DeleteRequest": {"type": "object", "additionalProperties": False, "properties": {
        "ids": {"type": "array", "items": {"type": "string"}},
        "ports": {"type": "array", "items": {"$ref": "#/components/schemas/Binding"}},
        "all": {"type": "boolean"}}},
    "UnplugResult": {"type": "object", "properties": {
        "unplugged": {"type": "array", "items": {"type": "string"}},
        "not_recorded": {"type": "array", "items": {"type": "string"}},
        "problems": {"type": "array", "items": {"type": "string"}}}},
    "CheckResult": {"type": "object", "properties": {
        "checked": {"type": "integer"},
        "drift": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}},
    "GcResult": {"type": "object", "properties": {
        "garbage": {"type": "array", "items": {"type": "object"}}, "removed": {"type": "boolean"},
        "problems": {"type": "array", "items": {"type": "string"}}}},
    "Event": {"type": "object", "required": ["seq", "time", "type", "port_id", "reason"], "properties": {
        "seq": {"type": "integer"}, "time": {"type": "number"},
        "type": {"enum": ["plugged", "unplugged", "failed", "drift", "repaired", "device-gone"]},
        "port_id": {"type": ["string", "null"]}, "reason": {"type": "string"}}},
    "Events": {"type": "object", "properties": {
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "last": {"type": "integer"}, "lost": {"type": "boolean",
                                              "description": "Events after since were dropped: re-list ports"}}},
    "Health": {"type": "object", "properties": {
        "ready": {"type": "boolean"}, "version": {"type": "string"}, "netns": {"type": ["string", "null"]},
        "state": {"type": "string"}, "repair": {"enum": ["auto", "report"]}, "last_event": {"type": "integer"}}},
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(name: str, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


PATHS: dict[str, Any] = {
    "/v1/health": {"get": {"operationId": "health", "responses": {
        "200": _resp("Ready", _ref("Health")), "503": _resp("Not ready yet", _ref("Health"))}}},
    "/v1/ports": {
        "get": {"operationId": "list_ports", "responses": {"200": _resp("Recorded ports", {
            "type": "object", "properties": {"ports": {"type": "array", "items": _ref("Attachment")}}})}},
        "post": {"operationId": "plug", "requestBody": _body("PlugRequest"), "responses": {
            "200": _resp("Every port plugged", _ref("PlugResults")),
            "207": _resp("Some ports failed (rolled back); each has its error", _ref("PlugResults")),
            **_errors(400, 403, 409, 500, 503, 504)}}},
    "/v1/ports/delete": {"post": {"operationId": "delete_many", "requestBody": _body("DeleteRequest"), "responses": {
        "200": _resp("Unplugged (absent counts as success)", _ref("UnplugResult")),
        **_errors(400, 403, 500, 503)}}},
    "/v1/ports/{port_id}": {
        "parameters": [_PORT_ID],
        "get": {"operationId": "get_port", "responses": {"200": _resp("The record", _ref("Attachment")),
                                                         **_errors(404)}},
        "delete": {"operationId": "delete_one", "responses": {
            "200": _resp("Unplugged (absent counts as success)", _ref("UnplugResult")), **_errors(403, 500, 503)}}},
    "/v1/ports/{port_id}/check": {"parameters": [_PORT_ID], "get": {"operationId": "check_one", "responses": {
        "200": _resp("Drift lines of the port (empty: clean)", _ref("CheckResult")), **_errors(404)}}},
    "/v1/check": {"get": {"operationId": "check", "parameters": [
        {"name": "port", "in": "query", "schema": {"type": "array", "items": {"type": "string"}},
         "style": "form", "explode": True}],
        "responses": {"200": _resp("Drift of every (or the given) recorded port", _ref("CheckResult"))}}},
    "/v1/gc": {"post": {"operationId": "gc", "requestBody": {"required": False, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"force": {"type": "boolean"}}}}}}, "responses": {
        "200": _resp("Leftovers (removed with force)", _ref("GcResult")),
        "500": _resp("A backend could not be read", _ref("GcResult")), **_errors(403)}}},
    "/v1/cni": {"post": {"operationId": "cni", "requestBody": _body("CniRequest"), "responses": {
        "200": _resp("The invocation ran; CNI errors are in the answer (docs/cni.md)", _ref("CniAnswer")),
        **_errors(400, 403, 503)}}},
    "/v1/events": {"get": {"operationId": "events", "parameters": [
        {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 300}}],
        "responses": {"200": _resp("Events after since (waits for the first)", _ref("Events")), **_errors(400)}}},
    "/v1/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": _resp("This document")}}},
    "/metrics": {"get": {"operationId": "metrics", "responses": {
        "200": _resp("Prometheus text exposition format", {"type": "string"}, "text/plain")}}},
}


def document(version: str = "0.1.0") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "vifwire agent API", "version": version,
                 "description": "HTTP/1.1 + JSON on the agent's Unix socket (docs/agent.md). Changes need uid 0 "
                                "or the --socket-group (SO_PEERCRED); reads are open to anyone who can open "
                                "the socket."},
        "servers": [{"url": "http://localhost", "description": "over the Unix socket /run/vifwire/agent.sock"}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }


if __name__ == "__main__":
    print(json.dumps(document(), indent=2))
