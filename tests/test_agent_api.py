"""The agent's HTTP API end to end, against real ``vifwire agent`` subprocesses.

Every endpoint of :data:`vifwire.agent.api.ROUTES` is called over the Unix
socket with the stdlib client of ``agent_fixtures`` (not the product's
client), and what it did is read back from the namespace independently
(pyroute2, iproute2, nft, ovs-vsctl). Covered:

* each endpoint's answer and status: health, plug (one binding, a list, the
  envelope with facts/guest/instance; 207 when some ports fail on the host),
  list, get (404), delete (absent = success), bulk delete (ids, all), check
  and per-port check (drift reported, not repaired, with ``--repair
  report``), gc (listing, then removing with force), the events long poll,
  the OpenAPI document (same operations as the route table), Prometheus
  metrics, 404 and 405;
* invalid input: 400 with exactly the lines ``vifwire validate`` prints for
  the same file, and the ``request: ...`` lines of malformed requests;
* peers: a process that is neither root nor in ``--socket-group`` gets 403
  for every change and can still read; a member of the group may change
  (forked children that drop to uid 65534);
* concurrency: 8 clients plugging 160 ports at once, and POST/DELETE of the
  same ports racing (the store and the host agree, check is clean);
* group commit: a burst of 50 OVS plugs is fewer OVSDB transactions (counted
  by ``Open_vSwitch.next_cfg``, which every vifwire transaction bumps) and
  fewer writer rounds than ports.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
from agent_fixtures import AgentProc, call
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute
from routed_host import VIFWIRE, host_state, macvtap_port, port
from test_ovs_wiring import pid as ovs_pid
from test_ovs_wiring import port as ovs_port

from vifwire.agent.api import ROUTES
from vifwire.model.loader import load_documents
from vifwire.sandbox import netns
from vifwire.service import WiringService

pytestmark = pytest.mark.root

NOBODY = 65534

# ---------------------------------------------------------------------------
# helpers


def devname(doc: dict) -> str:
    [b] = load_documents([doc])
    return b.devname


def links(ns: str) -> set[str]:
    with IPRoute(netns=ns) as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def recorded(agent: AgentProc) -> set[str]:
    status, body = agent.call("GET", "/v1/ports")
    assert status == 200, body
    return {p["port_id"] for p in body["ports"]}


def check_clean(agent: AgentProc, n: int | None = None) -> None:
    status, body = agent.call("GET", "/v1/check")
    assert status == 200, body
    assert body["drift"] == {}, body
    if n is not None:
        assert body["checked"] == n, body


def metrics(agent: AgentProc) -> dict[str, float]:
    """``GET /metrics`` parsed: sample name with labels -> value."""
    status, text = agent.call("GET", "/metrics")
    assert status == 200, text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def validate_lines(path: str) -> list[str]:
    """What ``vifwire validate FILE`` prints on stderr, without the ``vifwire: `` prefix."""
    res = subprocess.run([VIFWIRE, "validate", path], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, (res.returncode, res.stderr)
    return [line.removeprefix("vifwire: ") for line in res.stderr.splitlines()]


def together(fn: Callable[..., Any], args: list, threads: int | None = None) -> list:
    """``fn(arg)`` for every arg in its own thread, all released at once."""
    n = threads or len(args)
    barrier = threading.Barrier(min(n, len(args)))

    def go(a: Any) -> Any:
        barrier.wait(30)
        return fn(a)

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(go, args))


def as_peer(sock: str, uid: int, gid: int, groups: list[int],
            requests: list[tuple[str, str, Any]]) -> list[tuple[Any, Any]]:
    """Run ``requests`` from a forked child with the given credentials; their
    ``(status, body)`` (``("oserror", errno)`` when the socket cannot be opened)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            out: list = []
            for method, path, body in requests:
                try:
                    out.append(list(call(sock, method, path, body, timeout=60)))
                except OSError as exc:
                    out.append(["oserror", exc.errno])
            payload = json.dumps({"ok": out})
            code = 0
        except BaseException:  # noqa: BLE001
            payload = json.dumps({"error": traceback.format_exc()})
        try:
            with os.fdopen(w, "w") as f:
                f.write(payload)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = json.loads(f.read() or '{"error": "child wrote nothing"}')
    _, status = os.waitpid(child, 0)
    assert "ok" in data, data.get("error")
    assert os.waitstatus_to_exitcode(status) == 0
    return [tuple(x) for x in data["ok"]]


@pytest.fixture
def ns():
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    with netns.sandbox("aa") as name:
        yield name


@pytest.fixture
def spawn(ns, tmp_path):
    """Start agents on ``ns`` with extra arguments; all stopped (by PID) after the test."""
    started: list[AgentProc] = []

    def start(*extra: str, sockdir: str | None = None, name: str = "agent") -> AgentProc:
        a = AgentProc(sockdir or str(tmp_path), ns, state=str(tmp_path / f"{name}.db"), extra=list(extra),
                      name=name)
        started.append(a)
        return a.start()

    yield start
    for a in started:
        a.stop()


# ---------------------------------------------------------------------------
# every endpoint


def test_health_plug_list_get_delete(agent_ns):
    ns, a = agent_ns
    status, h = a.call("GET", "/v1/health")
    assert status == 200 and h["ready"] is True and h["netns"] == ns and h["repair"] == "auto"
    assert h["state"] == a.state and isinstance(h["last_event"], int)

    # one binding
    p1, p2, p3, p4 = port(1), port(2), port(3), port(4)
    status, body = a.call("POST", "/v1/ports", p1)
    assert status == 200, body
    [r] = body["ports"]
    assert r["port_id"] == p1["id"] and r["ok"] and r["strategy"] == "routed-tap" and r["error"] is None
    assert r["devices"] == [devname(p1)] and r["guest"]["kind"] == "libvirt"
    assert f'<target dev="{devname(p1)}"' in r["guest"]["xml"]
    # a list
    status, body = a.call("POST", "/v1/ports", [p2, p3])
    assert status == 200 and [x["port_id"] for x in body["ports"]] == [p2["id"], p3["id"]], body
    assert all(x["ok"] for x in body["ports"])
    # the envelope: facts, guest options and the instance override the agent's defaults
    status, body = a.call("POST", "/v1/ports", {"ports": [p4], "facts": {"hypervisor": "lxd"},
                                                "guest": {"queues": 2}, "instance": "inst-envelope"})
    assert status == 200, body
    [r4] = body["ports"]
    assert r4["ok"] and r4["strategy"] == "veth-routed" and r4["guest"]["kind"] == "lxd", r4
    status, body = a.call("POST", "/v1/ports", {"ports": port(5), "guest": {"queues": 4}})
    assert status == 200 and 'queues="4"' in body["ports"][0]["guest"]["xml"], body
    assert {devname(p) for p in (p1, p2, p3, port(5))} <= links(ns)

    # plugging again is idempotent: nothing changes
    status, body = a.call("POST", "/v1/ports", p1)
    assert status == 200 and body["ports"][0]["ok"] and body["ports"][0]["changed_steps"] == 0, body

    # list and get
    ids = {p["id"] for p in (p1, p2, p3, p4, port(5))}
    assert recorded(a) == ids
    status, rec = a.call("GET", f"/v1/ports/{p4['id']}")
    assert status == 200 and rec["port_id"] == p4["id"] and rec["status"] == "plugged", rec
    assert rec["instance_id"] == "inst-envelope" and rec["netns"] == ns and rec["strategy"] == "veth-routed"
    status, rec = a.call("GET", f"/v1/ports/{p1['id']}")
    assert status == 200 and rec["devname"] == devname(p1) and rec["mac"] == p1["mac_address"]
    status, body = a.call("GET", "/v1/ports/no-such-port")
    assert status == 404 and body["error"] == "port no-such-port: not recorded", body
    check_clean(a, 5)

    # delete one; deleting it again (absent) is a success
    status, body = a.call("DELETE", f"/v1/ports/{p1['id']}")
    assert status == 200 and body == {"unplugged": [p1["id"]], "not_recorded": [], "problems": []}, body
    assert devname(p1) not in links(ns)
    status, body = a.call("DELETE", f"/v1/ports/{p1['id']}")
    assert status == 200 and body == {"unplugged": [], "not_recorded": [p1["id"]], "problems": []}, body
    status, body = a.call("GET", f"/v1/ports/{p1['id']}")
    assert status == 404

    # bulk delete by ids (a not recorded one among them), then all
    status, body = a.call("POST", "/v1/ports/delete", {"ids": [p2["id"], "never-plugged"]})
    assert status == 200 and body["unplugged"] == [p2["id"]] and body["not_recorded"] == ["never-plugged"], body
    assert recorded(a) == {p3["id"], p4["id"], port(5)["id"]}
    status, body = a.call("POST", "/v1/ports/delete", {"all": True})
    assert status == 200 and set(body["unplugged"]) == {p3["id"], p4["id"], port(5)["id"]}, body
    assert recorded(a) == set()
    assert not {n for n in links(ns) if n.startswith(("tap", "tin"))}
    state = host_state(ns)
    assert state["routes"] == 0 and state["proxies"] == 0 and sum(state["elements"].values()) == 0
    check_clean(a, 0)


def test_some_ports_fail_207(agent_ns):
    ns, a = agent_ns
    good, bad = port(1), macvtap_port(2)
    status, body = a.call("POST", "/v1/ports", [good, bad])
    assert status == 207, body
    by_id = {r["port_id"]: r for r in body["ports"]}
    assert by_id[good["id"]]["ok"] and by_id[good["id"]]["error"] is None
    r = by_id[bad["id"]]
    assert not r["ok"] and r["devices"] == []
    assert r["error"].startswith(f"port {bad['id']}: ") and "eth9.5" in r["error"], r["error"]
    # the good port is in, the failed one left nothing and no record
    assert recorded(a) == {good["id"]}
    assert a.call("GET", f"/v1/ports/{bad['id']}")[0] == 404
    assert devname(good) in links(ns)
    # a request whose only port fails is a 207 too (the request was fine; the host said no)
    status, body = a.call("POST", "/v1/ports", macvtap_port(3))
    assert status == 207 and not body["ports"][0]["ok"], body
    check_clean(a, 1)
    status, ev = a.call("GET", "/v1/events?since=0")
    failed = [e for e in ev["events"] if e["type"] == "failed"]
    assert {e["port_id"] for e in failed} == {bad["id"], macvtap_port(3)["id"]}, ev


def test_check_reports_drift_without_repairing_it(ns, spawn):
    a = spawn("--repair", "report", "--resync-interval", "0.5")
    p1, p2 = port(1), port(2)
    status, body = a.call("POST", "/v1/ports", [p1, p2])
    assert status == 200, body
    check_clean(a, 2)
    status, body = a.call("GET", f"/v1/ports/{p1['id']}/check")
    assert status == 200 and body == {"checked": 1, "drift": {}}, body
    status, h = a.call("GET", "/v1/health")
    last = h["last_event"]

    ip4 = p1["fixed_ips"][0]["ip_address"]
    subprocess.run(["ip", "-n", ns, "route", "del", f"{ip4}/32", "dev", devname(p1)], check=True)

    status, body = a.call("GET", "/v1/check")
    assert status == 200 and body["checked"] == 2 and list(body["drift"]) == [p1["id"]], body
    lines = body["drift"][p1["id"]]
    assert lines and any(ip4 in line for line in lines), lines
    status, one = a.call("GET", f"/v1/ports/{p1['id']}/check")
    assert status == 200 and one == {"checked": 1, "drift": {p1["id"]: lines}}, one
    status, other = a.call("GET", f"/v1/ports/{p2['id']}/check")
    assert status == 200 and other == {"checked": 1, "drift": {}}, other
    status, q = a.call("GET", f"/v1/check?port={p2['id']}")
    assert status == 200 and q == {"checked": 1, "drift": {}}, q
    status, body = a.call("GET", "/v1/ports/no-such-port/check")
    assert status == 404, body

    # the agent notices it by itself (a drift event), and --repair report leaves it alone
    deadline = time.monotonic() + 20
    drift = []
    while not drift and time.monotonic() < deadline:
        status, ev = a.call("GET", f"/v1/events?since={last}&wait=5")
        assert status == 200
        last = ev["last"]
        drift = [e for e in ev["events"] if e["type"] == "drift" and e["port_id"] == p1["id"]]
    assert drift, "no drift event"
    assert ip4 in drift[0]["reason"]
    time.sleep(1.0)
    status, body = a.call("GET", "/v1/check")
    assert body["drift"] == {p1["id"]: lines}, body
    status, ev = a.call("GET", "/v1/events?since=0")
    assert not [e for e in ev["events"] if e["type"] == "repaired"], ev
    assert metrics(a)["vifwire_drift_found_total"] >= 1


def test_gc_lists_then_removes_what_no_record_owns(agent_ns, tmp_path):
    ns, a = agent_ns
    mine, stray = port(1), port(2)
    assert a.call("POST", "/v1/ports", mine)[0] == 200
    # garbage: a port plugged by vifwire into the same namespace, recorded in another database
    with WiringService(netns=ns, state=str(tmp_path / "other.db")) as other:
        [res] = other.plug(load_documents([stray]))
        assert res.ok, res.error
    assert devname(stray) in links(ns)

    for body in (None, {"force": False}, {}):
        status, gc = a.call("POST", "/v1/gc", body)
        assert status == 200 and gc["removed"] is False and gc["problems"] == [], gc
        names = {g["name"] for g in gc["garbage"]}
        assert devname(stray) in names, gc
        assert devname(mine) not in names, gc
        assert all({"kind", "name", "module"} <= set(g) for g in gc["garbage"])
    assert devname(stray) in links(ns), "gc without force must not remove anything"

    status, gc = a.call("POST", "/v1/gc", {"force": True})
    assert status == 200 and gc["removed"] is True and devname(stray) in {g["name"] for g in gc["garbage"]}, gc
    assert devname(stray) not in links(ns)
    status, gc = a.call("POST", "/v1/gc", None)
    assert status == 200 and gc["garbage"] == [], gc
    # what the agent owns is untouched
    assert devname(mine) in links(ns) and recorded(a) == {mine["id"]}
    check_clean(a, 1)
    state = host_state(ns)
    assert state["taps"] == [devname(mine)] and state["routes"] == 2 and set(state["elements"]) == {devname(mine)}


def test_events_long_poll(agent_ns):
    ns, a = agent_ns
    # wait=0 (and no wait) answers at once
    for q in ("", "?wait=0", "?since=0&wait=0"):
        t0 = time.monotonic()
        status, ev = a.call("GET", f"/v1/events{q}")
        assert status == 200 and ev == {"events": [], "last": 0, "lost": False}, ev
        assert time.monotonic() - t0 < 1.0

    # a waiting GET returns as soon as a plug happens in another thread
    got: dict = {}

    def poll() -> None:
        t0 = time.monotonic()
        got["answer"] = a.call("GET", "/v1/events?since=0&wait=30")
        got["took"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), f"the long poll did not wait: {got}"
    t_plug = time.monotonic()
    assert a.call("POST", "/v1/ports", port(1))[0] == 200
    t.join(10)
    assert not t.is_alive()
    status, ev = got["answer"]
    assert status == 200 and ev["events"], ev
    assert ev["events"][0]["type"] == "plugged" and ev["events"][0]["port_id"] == port(1)["id"], ev
    assert time.monotonic() - t_plug < 5.0 and got["took"] < 10.0, got
    first = ev["last"]
    assert first >= 1

    # since: strictly after; in order; last says where to go on from
    assert a.call("POST", "/v1/ports", [port(2), port(3)])[0] == 200
    assert a.call("DELETE", f"/v1/ports/{port(1)['id']}")[0] == 200
    status, ev = a.call("GET", f"/v1/events?since={first}")
    assert status == 200
    seqs = [e["seq"] for e in ev["events"]]
    assert seqs == sorted(seqs) and seqs[0] == first + 1 and ev["last"] == seqs[-1], ev
    assert [(e["type"], e["port_id"]) for e in ev["events"]] == [
        ("plugged", port(2)["id"]), ("plugged", port(3)["id"]), ("unplugged", port(1)["id"])], ev
    assert all({"seq", "time", "type", "port_id", "reason"} == set(e) for e in ev["events"])
    status, ev2 = a.call("GET", f"/v1/events?since={ev['last'] - 1}")
    assert [e["seq"] for e in ev2["events"]] == [ev["last"]]
    status, h = a.call("GET", "/v1/health")
    assert h["last_event"] == ev["last"]

    # nothing new: waits the full time and answers 200 with no events (not an error)
    t0 = time.monotonic()
    status, ev3 = a.call("GET", f"/v1/events?since={ev['last']}&wait=0.6")
    took = time.monotonic() - t0
    assert status == 200 and ev3 == {"events": [], "last": ev["last"], "lost": False}, ev3
    assert 0.5 <= took < 5.0, took
    # bad queries
    assert a.call("GET", "/v1/events?since=x")[0] == 400
    assert a.call("GET", "/v1/events?wait=-1")[0] == 400
    assert a.call("GET", "/v1/events?wait=301")[0] == 400


def _route_path(pattern: re.Pattern) -> str:
    return re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern.pattern.strip("^$"))


def test_openapi_lists_exactly_the_routes(agent_ns):
    _, a = agent_ns
    status, doc = a.call("GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1"), doc
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops if m != "parameters"}
    routed = {(r.method, _route_path(r.pattern)) for r in ROUTES}
    assert documented == routed
    # every operation id is the route's handler, and every $ref resolves
    handlers = {(r.method, _route_path(r.pattern)): r.handler for r in ROUTES}
    for path, ops in doc["paths"].items():
        for m, op in ops.items():
            if m != "parameters":
                assert op["operationId"] == handlers[(m.upper(), path)]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs and refs <= set(doc["components"]["schemas"])


def test_metrics(agent_ns):
    _, a = agent_ns
    before = metrics(a)
    assert before.get('vifwire_ports{state="plugged"}', 0) == 0
    assert a.call("POST", "/v1/ports", [port(1), port(2)])[0] == 200
    assert a.call("POST", "/v1/ports", macvtap_port(3))[0] == 207
    after = metrics(a)
    assert after['vifwire_ports{state="plugged"}'] == 2
    assert after['vifwire_plug_seconds_count{strategy="routed-tap"}'] == 2
    assert sum(v for k, v in after.items() if k.startswith("vifwire_failures_total")) == 1
    assert after["vifwire_writer_rounds_total"] - before.get("vifwire_writer_rounds_total", 0) == 2
    assert "vifwire_reconcile_seconds" in after
    assert a.call("DELETE", f"/v1/ports/{port(1)['id']}")[0] == 200
    assert metrics(a)['vifwire_ports{state="plugged"}'] == 1
    status, text = a.call("GET", "/metrics")
    assert "# TYPE vifwire_plug_seconds histogram" in text


def test_unknown_path_404_wrong_method_405(agent_ns):
    _, a = agent_ns
    for method, path in (("GET", "/v2/ports"), ("GET", "/"), ("POST", "/v1/nothing"), ("GET", "/v1/ports/a/b/c")):
        status, body = a.call(method, path)
        assert status == 404 and body["error"].endswith("no such endpoint (GET /v1/openapi.json lists them)"), body
    conn_cases = (("DELETE", "/v1/health", "GET"), ("PUT", "/v1/ports", "GET, POST"),
                  ("POST", "/v1/check", "GET"), ("GET", "/v1/gc", "POST"), ("POST", "/metrics", "GET"),
                  ("PATCH", "/v1/ports/x", "DELETE, GET"), ("GET", "/v1/ports/delete", "POST"))
    for method, path, allow in conn_cases:
        status, body = a.call(method, path)
        assert status == 405 and body["error"] == f"{method} {path}: method not allowed (use {allow})", body


# ---------------------------------------------------------------------------
# invalid input


BAD_FILES = {
    "two-bad-ports": [
        {"id": "p1", "mac_address": "fa:16:3e:00:00:01", "binding:vif_type": "tap",
         "fixed_ips": [{"ip_address": "10.0.0.300"}]},
        {"id": "p2", "mac_address": "fa:16:3e:00:00:02", "binding:vif_type": "nonsense"},
        port(7),
    ],
    "bad-mac-and-no-type": [{"id": "p3", "mac_address": "zz:16:3e:00:00:01", "binding:vif_type": "tap"},
                            {"id": "p4", "mac_address": "fa:16:3e:00:00:04"}],
    "duplicates": [port(1), port(1), dict(port(2), mac_address=port(3)["mac_address"]), port(3)],
    "not-an-object": [port(1), 17, "x"],
    "neutron-list": {"ports": [port(1), macvtap_port(2) | {"binding:vif_details": {}}]},
    "neutron-show": {"port": dict(port(1), mac_address="nope")},
    "macvtap-mode": macvtap_port(5) | {"binding:vif_details": {**macvtap_port(5)["binding:vif_details"],
                                                                "macvtap_mode": "sideways"}},
    "nova-vif": {"id": "v1", "address": "fa:16:3e:00:00:09", "type": "ovs", "network": {"bridge": 5}},
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_invalid_bindings_400_same_lines_as_validate(agent_ns, tmp_path, name):
    ns, a = agent_ns
    doc = BAD_FILES[name]
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(doc))
    want = validate_lines(str(f))
    status, body = a.call("POST", "/v1/ports", raw=f.read_bytes())
    assert status == 400, body
    assert body["errors"] == want and body["error"] == want[0]
    # the same documents inside the envelope: the same lines
    if not (isinstance(doc, dict) and ("ports" in doc or "port" in doc)):
        status, body = a.call("POST", "/v1/ports", {"ports": doc, "instance": "i"})
        assert status == 400 and body["errors"] == want, body
    assert recorded(a) == set()
    assert not {n for n in links(ns) if n.startswith("tap")}


def test_malformed_requests_400(agent_ns):
    _, a = agent_ns
    cases = [
        ("POST", "/v1/ports", b"{not json", "request: body: is not JSON: "),
        ("POST", "/v1/ports", b"\xff\xfe", "request: body: is not UTF-8: "),
        ("POST", "/v1/ports", b"", "request: body: is empty"),
        ("POST", "/v1/ports", json.dumps({"ports": [port(1)], "bogus": 1}).encode(),
         "request: bogus: is not a field of a plug request (ports, facts, guest, wait, instance)"),
        ("POST", "/v1/ports", json.dumps({"ports": [port(1)], "facts": {"hypervisor": "xen"}}).encode(),
         "request: facts.hypervisor: must be one of libvirt, lxd"),
        ("POST", "/v1/ports", json.dumps({"ports": [port(1)], "facts": {"cpu": 1}}).encode(),
         "request: facts.cpu: is not a host fact"),
        ("POST", "/v1/ports", json.dumps({"ports": [port(1)], "guest": {"queues": 0}}).encode(),
         "request: guest.queues: must be a positive integer"),
        ("POST", "/v1/ports", json.dumps({"ports": [port(1)], "wait": "soon"}).encode(),
         "request: wait: must be a number of seconds from 0 to 600"),
        ("POST", "/v1/ports", json.dumps({"ports": [port(1)], "instance": ""}).encode(),
         "request: instance: must be a non-empty string"),
        ("POST", "/v1/ports/delete", b"[]", "request: body: must be an object"),
        ("POST", "/v1/ports/delete", b"{}", "request: body: names nothing to delete"),
        ("POST", "/v1/ports/delete", b'{"ids": [1]}', "request: ids: must be a list of port ids"),
        ("POST", "/v1/ports/delete", b'{"ids": ["a"], "every": true}',
         "request: every: is not a field of a delete request"),
        ("POST", "/v1/ports/delete", b'{"all": "yes"}', "request: all: must be true or false"),
        ("POST", "/v1/gc", b'{"force": "yes"}', 'request: body: must be {"force": true|false}'),
        ("POST", "/v1/gc", b"nope", "request: body: is not JSON: "),
    ]
    for method, path, raw, prefix in cases:
        status, body = a.call(method, path, raw=raw)
        assert status == 400, (raw, body)
        assert body["error"].startswith(prefix) and len(body["errors"]) == 1, (raw, body)
        assert "\n" not in body["error"]
    assert recorded(a) == set()
    check_clean(a, 0)


# ---------------------------------------------------------------------------
# who may change the host


@pytest.fixture
def test_group():
    if os.geteuid() != 0 or not shutil.which("groupadd"):
        pytest.skip("needs root and groupadd")
    name = f"vwt{secrets.token_hex(3)}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        import grp

        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture
def open_dir():
    """A directory uid 65534 may traverse (pytest's tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="vw-agent-api-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_only_root_and_the_socket_group_may_change(ns, spawn, test_group, open_dir):
    group, gid = test_group
    a = spawn("--socket-group", group, sockdir=open_dir)
    st = os.stat(a.sock)
    assert st.st_mode & 0o777 == 0o660 and st.st_uid == 0 and st.st_gid == gid
    kept, other = port(1), port(2)
    assert a.call("POST", "/v1/ports", kept)[0] == 200

    # nobody, not in the group, cannot even open the socket
    [(what, errno_)] = as_peer(a.sock, NOBODY, NOBODY, [], [("GET", "/v1/health", None)])
    assert what == "oserror" and errno_ == 13

    # ... and with the socket opened up for the test, may only read
    os.chmod(a.sock, 0o666)
    changes = [("POST", "/v1/ports", other), ("POST", "/v1/ports", {"ports": [other]}),
               ("DELETE", f"/v1/ports/{kept['id']}", None), ("POST", "/v1/ports/delete", {"ids": [kept["id"]]}),
               ("POST", "/v1/ports/delete", {"all": True}), ("POST", "/v1/gc", {"force": True})]
    reads = [("GET", "/v1/health", None), ("GET", "/v1/ports", None), ("GET", f"/v1/ports/{kept['id']}", None),
             ("GET", "/v1/check", None), ("GET", f"/v1/ports/{kept['id']}/check", None),
             ("POST", "/v1/gc", {"force": False}), ("POST", "/v1/gc", None), ("GET", "/v1/events?since=0", None),
             ("GET", "/v1/openapi.json", None), ("GET", "/metrics", None)]
    answers = as_peer(a.sock, NOBODY, NOBODY, [], changes + reads)
    for (method, path, _), (status, body) in zip(changes, answers[:len(changes)]):
        assert status == 403, (method, path, status, body)
        assert body["error"] == (f"{method} {path}: uid {NOBODY} may only read (changes need uid 0 or the "
                                 "agent's --socket-group)"), body
    for (method, path, _), (status, body) in zip(reads, answers[len(changes):]):
        assert status == 200, (method, path, status, body)
    assert {p["port_id"] for p in answers[len(changes) + 1][1]["ports"]} == {kept["id"]}
    # nothing changed
    assert recorded(a) == {kept["id"]}
    assert devname(kept) in links(ns) and devname(other) not in links(ns)

    # a member of the group (supplementary) may change
    status_list = as_peer(a.sock, NOBODY, NOBODY, [gid], [
        ("POST", "/v1/ports", other), ("DELETE", f"/v1/ports/{kept['id']}", None), ("POST", "/v1/gc", {"force": True})])
    assert [s for s, _ in status_list] == [200, 200, 200], status_list
    assert recorded(a) == {other["id"]}
    assert devname(other) in links(ns) and devname(kept) not in links(ns)
    # so may a process whose primary group it is (socket mode back to 0660: the group opens it)
    os.chmod(a.sock, 0o660)
    status_list = as_peer(a.sock, NOBODY, gid, [], [("POST", "/v1/ports/delete", {"ids": [other["id"]]}),
                                                    ("POST", "/v1/ports", kept)])
    assert [s for s, _ in status_list] == [200, 200], status_list
    assert recorded(a) == {kept["id"]}
    check_clean(a, 1)


# ---------------------------------------------------------------------------
# concurrent clients


def test_concurrent_clients_plug_different_ports(agent_ns):
    ns, a = agent_ns
    clients, per_client = 8, 20
    docs = [[port(c * per_client + k + 1) for k in range(per_client)] for c in range(clients)]

    def client(mine: list[dict]) -> list[int]:
        out = []
        for i, doc in enumerate(mine):
            if i % 5 == 4:  # now and then a list of two
                status, body = a.call("POST", "/v1/ports", [doc])
            else:
                status, body = a.call("POST", "/v1/ports", doc)
            assert all(r["ok"] for r in body["ports"]), body
            out.append(status)
        return out

    statuses = together(client, docs)
    assert [s for c in statuses for s in c] == [200] * clients * per_client
    every = [d for c in docs for d in c]
    assert recorded(a) == {d["id"] for d in every}
    check_clean(a, len(every))
    state = host_state(ns)
    want = sorted(devname(d) for d in every)
    assert state["taps"] == want
    assert state["routes"] == 2 * len(want) and state["proxies"] == 0
    assert set(state["elements"]) == set(want) and len(set(state["elements"].values())) == 1
    _, ev = a.call("GET", "/v1/events?since=0")
    assert sorted(e["port_id"] for e in ev["events"] if e["type"] == "plugged") == sorted(d["id"] for d in every)
    assert metrics(a)["vifwire_writer_rounds_total"] <= clients * per_client


def test_same_ports_plugged_and_deleted_concurrently(agent_ns):
    ns, a = agent_ns
    docs = [port(i) for i in (201, 202, 203)]
    ops_per_thread, threads = 12, 8
    rng = random.Random(7)
    plans = [[(rng.choice(("plug", "delete", "bulk-delete", "plug-list")), rng.choice(docs))
              for _ in range(ops_per_thread)] for _ in range(threads)]

    def worker(plan: list[tuple[str, dict]]) -> list[tuple[int, Any]]:
        out = []
        for op, doc in plan:
            if op == "plug":
                out.append(a.call("POST", "/v1/ports", doc))
            elif op == "plug-list":
                out.append(a.call("POST", "/v1/ports", {"ports": [doc]}))
            elif op == "delete":
                out.append(a.call("DELETE", f"/v1/ports/{doc['id']}"))
            else:
                out.append(a.call("POST", "/v1/ports/delete", {"ids": [doc["id"]]}))
        return out

    answers = [x for t in together(worker, plans) for x in t]
    assert len(answers) == threads * ops_per_thread
    assert {s for s, _ in answers} == {200}, [x for x in answers if x[0] != 200][:3]
    for status, body in answers:
        if "ports" in body:
            assert all(r["ok"] for r in body["ports"]), body
        else:
            assert body["problems"] == [], body

    # the writer applies each port's jobs in arrival order; its events are that order:
    # a port is recorded iff its last plugged/unplugged event is "plugged"
    _, ev = a.call("GET", "/v1/events?since=0")
    assert not [e for e in ev["events"] if e["type"] == "failed"], ev
    ids = recorded(a)
    for d in docs:
        mine = [e["type"] for e in ev["events"] if e["port_id"] == d["id"] and e["type"] in ("plugged", "unplugged")]
        assert mine, d["id"]
        assert (mine[-1] == "plugged") == (d["id"] in ids), (d["id"], mine[-5:], ids)
        # never two unplugs in a row: an unplug of an absent port is not an event
        assert all(not (x == y == "unplugged") for x, y in zip(mine, mine[1:])), mine
    # the host agrees with the store
    check_clean(a, len(ids))
    state = host_state(ns)
    want = sorted(devname(d) for d in docs if d["id"] in ids)
    assert state["taps"] == want and state["routes"] == 2 * len(want) and state["proxies"] == 0
    assert set(state["elements"]) == set(want)
    # and the end state is reachable from here both ways
    assert a.call("POST", "/v1/ports", docs)[0] == 200
    check_clean(a, 3)
    assert a.call("POST", "/v1/ports/delete", {"all": True})[0] == 200
    assert host_state(ns)["taps"] == [] and recorded(a) == set()


# ---------------------------------------------------------------------------
# group commit


def _next_cfg(ovs) -> int:
    return int(ovs.vsctl("--no-wait", "get", "Open_vSwitch", ".", "next_cfg").strip())


def test_group_commit_batches_a_burst_of_ovs_plugs(agent_ovs):
    ns, ovs, a = agent_ovs
    n = 50
    docs = [ovs_port(ovs_pid(i, "b"), ip=f"10.95.7.{i + 1}", mac=f"fa:16:3e:95:07:{i:02x}") for i in range(n)]
    # warm up (the OVSDB session, the bridge check), then measure the burst alone
    warm = ovs_port(ovs_pid(999, "b"), ip="10.95.8.1", mac="fa:16:3e:95:08:01")
    assert a.call("POST", "/v1/ports", warm)[0] == 200
    cfg0, rounds0 = _next_cfg(ovs), metrics(a)["vifwire_writer_rounds_total"]

    answers = together(lambda d: a.call("POST", "/v1/ports", d), docs)
    assert [s for s, _ in answers] == [200] * n, [b for s, b in answers if s != 200][:3]
    txns = _next_cfg(ovs) - cfg0
    rounds = metrics(a)["vifwire_writer_rounds_total"] - rounds0
    print(f"{n} concurrent OVS plugs: {txns} OVSDB transaction(s), {rounds:g} writer round(s)")
    assert 1 <= txns < n, txns
    assert 1 <= rounds < n, rounds
    assert txns <= rounds  # one transaction per round at most
    names = {r["ports"][0]["port_id"] for _, r in answers}
    assert names == {d["id"] for d in docs}
    on_bridge = set(ovs.vsctl("list-ports", "br-int").split())
    assert {f"tap{d['id'][:11]}" for d in docs} <= on_bridge
    assert recorded(a) == {d["id"] for d in docs} | {warm["id"]}
    check_clean(a, n + 1)

    # unplugs batch the same way
    cfg1 = _next_cfg(ovs)
    answers = together(lambda d: a.call("DELETE", f"/v1/ports/{d['id']}"), docs)
    assert [s for s, _ in answers] == [200] * n
    assert all(b["unplugged"] for _, b in answers), answers[:3]
    assert 1 <= _next_cfg(ovs) - cfg1 < n
    assert set(ovs.vsctl("list-ports", "br-int").split()) == {f"tap{warm['id'][:11]}"}
    assert recorded(a) == {warm["id"]}
