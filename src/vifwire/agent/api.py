"""The agent's HTTP API: routes -> use cases, JSON in and out (docs/agent.md).

Transport-free: a :class:`Request` comes in (method, path, query, body and
the peer's credentials), a :class:`Response` goes out; :mod:`.server` does the
HTTP. The route table below is the one list of endpoints, and the OpenAPI
document (:mod:`.openapi`) is checked against it by the tests.

Status codes: 200 ok; 207 some ports of a plug failed (each has its line);
400 the request or a binding is invalid (the CLI's one-line messages); 403 a
peer that may only read asked for a change; 404 unknown port or path; 405
wrong method; 409 a port clashes with another recorded port; 500 the host or
the store failed; 503 not ready yet or shutting down; 504 ``wait`` ran out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote

from vifwire.agent import requests as rq
from vifwire.agent.writer import Job, JobKind, Shutdown
from vifwire.errors import HostError, InvalidInput, VifwireError

if TYPE_CHECKING:
    from vifwire.agent.config import AgentHandle

log = logging.getLogger("vifwire.agent.api")

#: How long a change waits for the start-up reconcile before a 503.
READY_WAIT = 60.0
#: Longest long poll.
MAX_EVENT_WAIT = 300.0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes = b""
    uid: int | None = None  # the peer (SO_PEERCRED); None on the read-only TCP metrics listener
    pid: int | None = None
    may_change: bool = False


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def ok(data: Any, status: int = 200) -> Response:
    return Response(status, (json.dumps(data, indent=1) + "\n").encode())


def fail(status: int, lines: list[str]) -> Response:
    return ok({"error": lines[0] if lines else "error", "errors": lines}, status)


class Conflict(InvalidInput):
    """Ports that clash with other recorded ports (409)."""


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    handler: str
    changes: bool  # needs a peer allowed to change the host (uid 0 or --socket-group)
    summary: str


def _r(method: str, path: str, handler: str, changes: bool, summary: str) -> Route:
    return Route(method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), handler, changes,
                 summary)


#: The endpoints (docs/agent.md, "API"; the OpenAPI document lists the same).
ROUTES = (
    _r("GET", "/v1/health", "health", False, "Liveness and readiness (ready after the start-up reconcile)"),
    _r("GET", "/v1/ports", "list_ports", False, "Every recorded port"),
    _r("POST", "/v1/ports", "plug", True, "Plug one binding or a list (group-committed)"),
    _r("POST", "/v1/ports/delete", "delete_many", True, "Unplug ports by id, by binding, or all"),
    _r("GET", "/v1/ports/{port_id}", "get_port", False, "One recorded port"),
    _r("DELETE", "/v1/ports/{port_id}", "delete_one", True, "Unplug one port (absent = success)"),
    _r("GET", "/v1/ports/{port_id}/check", "check_one", False, "Drift of one port"),
    _r("GET", "/v1/check", "check", False, "Drift of every recorded port (or ?port=ID...)"),
    _r("POST", "/v1/gc", "gc", False, "Leftovers vifwire marked but no record owns; force removes them"),
    _r("POST", "/v1/cni", "cni", True, "One CNI invocation (env + network configuration) done by the agent"),
    _r("GET", "/v1/events", "events", False, "Events after ?since=SEQ, long-polling up to ?wait=SECONDS"),
    _r("GET", "/v1/openapi.json", "openapi", False, "This API described (OpenAPI 3.1)"),
    _r("GET", "/metrics", "metrics", False, "Prometheus metrics"),
)


class Api:
    """Dispatches requests to the agent's use cases."""

    def __init__(self, agent: AgentHandle):
        self.agent = agent

    def handle(self, req: Request) -> Response:
        t0 = time.perf_counter()
        try:
            resp = self._dispatch(req)
        except Conflict as exc:
            resp = fail(409, str(exc).splitlines())
        except (InvalidInput, rq.BadRequest) as exc:
            resp = fail(400, str(exc).splitlines())
        except Shutdown as exc:
            resp = fail(503, [str(exc)])
        except TimeoutError as exc:
            resp = fail(504, [str(exc)])
        except HostError as exc:
            resp = fail(504 if exc.step == "plug --wait" else 500, [exc.line()])
        except VifwireError as exc:
            resp = fail(400 if exc.exit_code == 2 else 500, str(exc).splitlines() or [exc.__class__.__name__])
        except Exception as exc:  # noqa: BLE001 - an API answers, it does not die
            log.exception("%s %s failed", req.method, req.path)
            resp = fail(500, [f"internal error: {exc.__class__.__name__}: {' '.join(str(exc).split())}"])
        log.debug("%s %s -> %d in %.2f ms", req.method, req.path, resp.status, (time.perf_counter() - t0) * 1e3)
        return resp

    def _dispatch(self, req: Request) -> Response:
        allowed = []
        matches = [(r, m) for r in ROUTES if (m := r.pattern.match(req.path))]
        if any(not m.groupdict() for _, m in matches):  # a fixed path beats a template (/v1/ports/delete)
            matches = [(r, m) for r, m in matches if not m.groupdict()]
        for route, m in matches:
            if route.method != req.method:
                allowed.append(route.method)
                continue
            changes = route.changes or (route.handler == "gc" and rq.gc_request(rq.parse_json(req.body)))
            if changes and not req.may_change:
                return fail(403, [f"{req.method} {req.path}: uid {req.uid} may only read (changes need uid 0 "
                                  "or the agent's --socket-group)"])
            if changes and not self.agent.wait_ready(READY_WAIT):
                return fail(503, ["the agent is not ready yet (start-up reconcile running)"])
            args = {k: unquote(v) for k, v in m.groupdict().items()}
            handler: Callable[..., Response] = getattr(self, route.handler)
            return handler(req, **args)
        if allowed:
            r = fail(405, [f"{req.method} {req.path}: method not allowed (use {', '.join(sorted(set(allowed)))})"])
            r.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return r
        return fail(404, [f"{req.path}: no such endpoint (GET /v1/openapi.json lists them)"])

    # ------------------------------------------------------------- handlers

    def health(self, req: Request) -> Response:
        a = self.agent
        body = {"ready": a.ready, "version": a.version, "netns": a.svc.netns, "state": a.svc.state_path,
                "repair": a.config.repair, "last_event": a.events.last}
        return ok(body, 200 if a.ready else 503)

    def list_ports(self, req: Request) -> Response:
        return ok({"ports": [x.to_json() for x in self.agent.svc.store.all(netns=self.agent.svc.netns)]})

    def get_port(self, req: Request, port_id: str) -> Response:
        a = self.agent.svc.store.get(port_id)
        if a is None or a.netns != self.agent.svc.netns:
            return fail(404, [f"port {port_id}: not recorded"])
        return ok(a.to_json())

    def plug(self, req: Request) -> Response:
        from vifwire.hostfacts.vdpa import with_vdpa_devices
        from vifwire.model.loader import load_documents
        from vifwire.service.wiring import plan_all

        cfg = self.agent.config
        pr = rq.plug_request(rq.parse_json(req.body), cfg.facts, cfg.guest)
        bindings = load_documents(pr.ports)
        if pr.instance:
            bindings = [b.replace(instance_id=pr.instance) for b in bindings]
        facts = pr.facts
        if pr.guest.queues and pr.guest.queues > 1 and not facts.multiqueue:  # as the CLI's --queues
            facts = dataclasses.replace(facts, multiqueue=True)
        guest = with_vdpa_devices(pr.guest, bindings)  # the host's vhost-vdpa devices, from /sys
        items = list(zip(bindings, plan_all(bindings, facts, guest)))
        job = self.agent.writer.submit(Job(JobKind.PLUG, items=items, ovs_wait=pr.wait))
        try:
            results = job.wait()
        except InvalidInput as exc:
            raise Conflict(exc.errors) from None
        body = {"ports": [r.to_json() for r in results]}
        return ok(body, 200 if all(r.ok for r in results) else 207)

    def delete_one(self, req: Request, port_id: str) -> Response:
        res = self.agent.writer.submit(Job(JobKind.UNPLUG, ids=[port_id])).wait()
        return ok(res.to_json(), 200 if res.ok else 500)

    def delete_many(self, req: Request) -> Response:
        from vifwire.model.loader import load_documents

        d = rq.delete_request(rq.parse_json(req.body))
        bindings = load_documents(d.ports) if d.ports else []
        job = Job(JobKind.UNPLUG, ids=d.ids, bindings=bindings, all_ports=d.all_ports, facts=self.agent.config.facts)
        res = self.agent.writer.submit(job).wait()
        return ok(res.to_json(), 200 if res.ok else 500)

    def check(self, req: Request) -> Response:
        ids = req.query.get("port") or None
        return ok(self.agent.svc.check(ids).to_json())

    def check_one(self, req: Request, port_id: str) -> Response:
        if self.agent.svc.store.get(port_id) is None:
            return fail(404, [f"port {port_id}: not recorded"])
        return ok(self.agent.svc.check([port_id]).to_json())

    def gc(self, req: Request) -> Response:
        force = rq.gc_request(rq.parse_json(req.body))
        if force:  # removal must not run beside a plug
            res = self.agent.writer.submit(Job(JobKind.CALL, call=lambda: self.agent.svc.gc(True))).wait()
        else:
            res = self.agent.svc.gc(False)
        return ok(res.to_json(), 200 if res.ok else 500)

    def cni(self, req: Request) -> Response:
        from vifwire.agent.cni import run

        env, config = rq.cni_request(rq.parse_json(req.body))
        return ok(run(self.agent, env, config))

    def events(self, req: Request) -> Response:
        try:
            since = int((req.query.get("since") or ["0"])[0])
            wait = float((req.query.get("wait") or ["0"])[0])
        except ValueError:
            raise rq.problem("query", "since must be an integer and wait a number of seconds") from None
        if not 0 <= wait <= MAX_EVENT_WAIT:
            raise rq.problem("wait", f"must be from 0 to {MAX_EVENT_WAIT:g} seconds")
        evs, last, lost = self.agent.events.since(since, wait, self.agent.stopping)
        return ok({"events": [e.to_json() for e in evs], "last": last, "lost": lost})

    def openapi(self, req: Request) -> Response:
        from vifwire.agent.openapi import document

        return ok(document(self.agent.version))

    def metrics(self, req: Request) -> Response:
        from vifwire.agent.metrics import CONTENT_TYPE

        return Response(200, self.agent.metrics.render(), CONTENT_TYPE)
