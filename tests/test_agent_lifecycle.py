"""The agent's life cycle with a real ``vifwire agent`` process: crashes,
self-repair, start-up reconcile, clean shutdown and metrics.

* ``kill -9`` at a random moment of a 500-port plug (seeded, so a failure can
  be replayed), then a restart on the same records and namespace: every port
  is whole and recorded ``plugged``, or absent and unrecorded - never half.
* Drift made behind the agent's back (a deleted tap, a removed route, a
  changed MTU, a removed filter element) is found (netlink, or the periodic
  resync for nftables) and put back, with ``drift``/``repaired`` events; a
  correct device keeps its ifindex. ``--repair report`` only reports.
* Start-up reconcile: a tap deleted while the agent was down is back when it
  is ready; 1,000 correct ports are verified without a single change.
* SIGTERM during a big plug: the request is answered, the agent exits 0 and
  removes its socket.
* ``/metrics``: the families exist and move (plugs, drift, repairs, drops of a
  spoofed packet sent from a "tun VM" on a tap); the TCP listener serves only
  ``/metrics``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute

from agent_fixtures import AgentProc
from routed_host import RTPROT_VIFWIRE, expected_elements_per_port, host_state, port
from vifwire.model.loader import load_documents
from vifwire.sandbox import netns
from vifwire.sandbox import tunvm as T
from vifwire.store.sqlite import SqliteStore

pytestmark = pytest.mark.root

SEED = 20261207
KILL_ROUNDS = 4  # kills that land while the batch is in flight
EXTRA_ROUNDS = 2  # rounds whose kill came after the answer are made up for, this many at most
BATCH = 500
EVENT_WAIT = 10.0  # bound for "the agent notices and repairs"
#: after a plug, netlink echoes of the port are ignored this long (repair.OWN_ECHO); drift is made after it
AFTER_OWN_ECHO = 1.2


@pytest.fixture(autouse=True)
def _root_only():
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")


# ---------------------------------------------------------------------------
# helpers


def ids_and_taps(docs: list[dict]) -> list[tuple[str, str]]:
    return [(b.port_id, b.devname) for b in load_documents(docs)]


def per_device(ns: str) -> dict:
    """Per tap: ifindex, MTU, vifwire routes, proxy entries, filter elements."""
    with IPRoute(netns=ns) as ipr:
        links = {l["index"]: (l.get_attr("IFLA_IFNAME"), l.get_attr("IFLA_MTU")) for l in ipr.get_links()}
        routes = Counter(links.get(r.get_attr("RTA_OIF"), ("?", 0))[0]
                         for fam in (socket.AF_INET, socket.AF_INET6)
                         for r in ipr.get_routes(family=fam, table=254) if r["proto"] == RTPROT_VIFWIRE)
    out = subprocess.run(["ip", "-n", ns, "-6", "neigh", "show", "proxy"], capture_output=True, text=True,
                         check=True).stdout.split()
    proxies = Counter(out[i + 1] for i, w in enumerate(out[:-1]) if w == "dev")
    return {"ifindex": {n: i for i, (n, _) in links.items()}, "mtu": {n: m for n, m in links.values()},
            "routes": routes, "proxies": proxies, "elements": host_state(ns)["elements"]}


def records(a: AgentProc) -> dict[str, str]:
    status, body = a.call("GET", "/v1/ports")
    assert status == 200, body
    return {p["port_id"]: p["status"] for p in body["ports"]}


def store_records(db: str) -> dict[str, str]:
    with SqliteStore(db) as store:
        return {r.port_id: r.status for r in store.all()}


def check(a: AgentProc) -> dict:
    status, body = a.call("GET", "/v1/check")
    assert status == 200, body
    return body


def events_since(a: AgentProc, since: int = 0) -> list[dict]:
    status, body = a.call("GET", f"/v1/events?since={since}")
    assert status == 200, body
    return body["events"]


def last_event(a: AgentProc) -> int:
    return a.call("GET", "/v1/health")[1]["last_event"]


def wait_events(a: AgentProc, since: int, done, timeout: float = EVENT_WAIT) -> list[dict]:
    """Long-poll ``/v1/events`` from ``since`` until ``done(events)`` holds (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    cur = since
    while not done(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"events not seen within {timeout}s; got {[(e['type'], e['port_id']) for e in seen]}"
                                 f"\nagent log:\n{a.read_log()[-3000:]}")
        status, body = a.call("GET", f"/v1/events?since={cur}&wait={min(left, 2.0):.2f}")
        assert status == 200, body
        seen += body["events"]
        cur = body["last"]
    return seen


def has(evs: list[dict], types: tuple[str, ...], pid: str) -> bool:
    return any(e["type"] in types and e["port_id"] == pid for e in evs)


def drift_and_repair(pid: str):
    return lambda evs: has(evs, ("drift", "device-gone"), pid) and has(evs, ("repaired",), pid)


def ip(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True, text=True)


def plug(a: AgentProc, docs: list[dict]) -> None:
    status, body = a.call("POST", "/v1/ports", docs)
    assert status == 200, body
    assert all(p["ok"] for p in body["ports"])


def assert_whole_or_absent(ns: str, a: AgentProc, ports: list[tuple[str, str]], per_port: int) -> tuple[int, int]:
    """Every port whole and recorded ``plugged``, or absent and unrecorded;
    nothing on the host belongs to no port; check clean. (plugged, absent)."""
    recs = records(a)
    assert recs == store_records(a.state), "the agent's view and the database differ"
    dev = per_device(ns)
    taps = {t for t in dev["ifindex"] if t.startswith("tap")}
    whole = absent = 0
    problems = []
    for pid, tap in ports:
        got = (tap in taps, dev["routes"][tap], dev["proxies"][tap], dev["elements"][tap])
        if pid in recs:
            if recs[pid] != "plugged" or got != (True, 2, 0, per_port):  # no proxy entry (anycast fe80::)
                problems.append(f"{pid} recorded {recs[pid]}: tap/routes/proxies/elements = {got}")
            whole += 1
        else:
            if got != (False, 0, 0, 0):
                problems.append(f"{pid} not recorded but on the host: tap/routes/proxies/elements = {got}")
            absent += 1
    assert not problems, f"{len(problems)} half-wired port(s):\n" + "\n".join(problems[:20])
    ours = {t for _, t in ports}
    assert set(recs) <= {pid for pid, _ in ports}
    assert taps <= ours, f"taps of no port: {sorted(taps - ours)[:10]}"
    assert set(dev["routes"]) <= ours and set(dev["proxies"]) <= ours and set(dev["elements"]) <= ours
    res = check(a)
    assert res["drift"] == {} and res["checked"] == whole, res
    return whole, absent


def assert_empty(ns: str, a: AgentProc) -> None:
    assert records(a) == {}
    state = host_state(ns)
    assert state["taps"] == [] and state["routes"] == 0 and state["proxies"] == 0
    assert sum(state["elements"].values()) == 0


def metrics(text: str) -> dict[tuple, float]:
    """``{(sample name, (label, value)...): value}`` of a Prometheus text exposition."""
    out: dict[tuple, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def scrape(a: AgentProc) -> str:
    status, body = a.call("GET", "/metrics")
    assert status == 200
    return body


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# 1. kill -9 during a 500-port batch


def test_kill_9_mid_batch_then_restart_leaves_every_port_whole_or_absent(tmp_path):
    per_port = expected_elements_per_port(tmp_path)
    rng = random.Random(SEED)
    docs = [port(i) for i in range(1, BATCH + 1)]
    ports = ids_and_taps(docs)
    tmp = str(tmp_path)
    in_flight = mid_host = 0
    seen = []
    with netns.sandbox("lk") as ns:
        # how long a 500-port plug takes here, so that the kills land inside one
        a = AgentProc(tmp, ns, name="calibrate").start()
        t0 = time.monotonic()
        plug(a, docs)
        took = time.monotonic() - t0
        assert a.call("POST", "/v1/ports/delete", {"all": True})[0] == 200
        assert a.stop() == 0
        scale = took
        for r in range(KILL_ROUNDS + EXTRA_ROUNDS):
            if in_flight >= KILL_ROUNDS:
                break
            a = AgentProc(tmp, ns, name=f"kill{r}").start()
            outcomes: list = []

            def post(part: list[dict]) -> None:
                try:
                    outcomes.append(a.call("POST", "/v1/ports", part, timeout=60)[0])
                except OSError as exc:  # the agent died under the request
                    outcomes.append(exc)

            # even rounds: one request of 500; odd rounds: 5 concurrent requests of 100 (one group commit)
            parts = [docs] if r % 2 == 0 else [docs[k:k + 100] for k in range(0, BATCH, 100)]
            threads = [threading.Thread(target=post, args=(p,)) for p in parts]
            delay = rng.uniform(0.05, 0.8) * scale
            for t in threads:
                t.start()
            time.sleep(delay)
            a.kill9()
            a.stop()  # reaped already: closes its log
            for t in threads:
                t.join(30)
            assert len(outcomes) == len(parts)
            killed_in_flight = any(isinstance(o, Exception) for o in outcomes)
            in_flight += killed_in_flight
            if not killed_in_flight:  # too late (a noisy machine, or the calibration plug was slow): sooner
                scale *= 0.6
            left = Counter(store_records(a.state).values())  # what the kill left in the records
            mid_host += bool(left.get("plugging"))

            b = AgentProc(tmp, ns, name=f"kill{r}-restart").start()
            whole, absent = assert_whole_or_absent(ns, b, ports, per_port)
            seen.append((round(delay, 2), killed_in_flight, dict(left), whole, absent))
            # and the agent goes on normally: unplug everything, nothing is left
            status, body = b.call("POST", "/v1/ports/delete", {"all": True})
            assert status == 200, body
            assert_empty(ns, b)
            assert b.stop() == 0
    print(f"\n500-port plug: {took:.2f} s; kill -9 rounds (delay s, killed in flight, records at kill, "
          f"whole, absent): {seen}")
    assert in_flight >= KILL_ROUNDS - 1 and in_flight >= len(seen) - EXTRA_ROUNDS, \
        f"the kills must land while the batch is in flight: {seen}"
    assert mid_host >= 1, f"no kill landed while the host was being changed: {seen}"


# ---------------------------------------------------------------------------
# 2. self-repair


def test_drift_behind_the_agents_back_is_repaired_netlink(tmp_path):
    docs = [port(i) for i in (1, 2, 3)]
    (p1, tap1), (p2, tap2), (p3, tap3) = ids_and_taps(docs)
    with netns.sandbox("lr") as ns:
        a = AgentProc(str(tmp_path), ns).start()  # default resync (30 s): netlink finds these
        try:
            plug(a, docs)
            before = per_device(ns)
            time.sleep(AFTER_OWN_ECHO)

            # a deleted tap is recreated
            since = last_event(a)
            ip(ns, "link", "del", tap1)
            wait_events(a, since, drift_and_repair(p1))
            after = per_device(ns)
            assert tap1 in after["ifindex"] and after["routes"][tap1] == 2 and after["proxies"][tap1] == 0
            assert after["elements"][tap1] == before["elements"][tap1]
            assert check(a)["drift"] == {}

            # a removed host route is put back (the tap is left alone)
            since = last_event(a)
            ip(ns, "route", "del", "10.100.0.3/32", "dev", tap2)
            assert per_device(ns)["routes"][tap2] == 1
            wait_events(a, since, drift_and_repair(p2))
            after = per_device(ns)
            assert after["routes"][tap2] == 2
            assert after["ifindex"][tap2] == before["ifindex"][tap2]
            assert check(a)["drift"] == {}

            # a changed MTU is put back on the same device
            since = last_event(a)
            ip(ns, "link", "set", tap3, "mtu", "1300")
            wait_events(a, since, drift_and_repair(p3))
            after = per_device(ns)
            assert after["mtu"][tap3] == 1400
            assert after["ifindex"][tap3] == before["ifindex"][tap3], "a correct device was recreated"
            assert check(a)["drift"] == {}
            # the untouched neighbours were not repaired
            evs = events_since(a, 0)
            assert {e["port_id"] for e in evs if e["type"] == "repaired"} == {p1, p2, p3}
            assert a.stop() == 0
        finally:
            a.stop()


def test_tap_deleted_right_after_its_plug_is_repaired(tmp_path):
    docs = [port(1)]
    [(p1, tap1)] = ids_and_taps(docs)
    with netns.sandbox("le") as ns:
        a = AgentProc(str(tmp_path), ns).start()
        try:
            plug(a, docs)
            since = last_event(a)
            ip(ns, "link", "del", tap1)
            wait_events(a, since, drift_and_repair(p1), timeout=3.0)
        finally:
            a.stop()


def _delete_element(ns: str, set_name: str, tap: str) -> dict:
    """Remove the tap's element from set ``set_name`` of the inet table; returns it."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "set", "inet", "vifwire", set_name],
                         capture_output=True, text=True, check=True).stdout
    [s] = [i["set"] for i in json.loads(out)["nftables"] if "set" in i]
    elem = next(e for e in s["elem"] if e["concat"][0] == tap)  # allow_v6 also holds the link-local address
    cmd = {"nftables": [{"delete": {"element": {"family": "inet", "table": "vifwire", "name": set_name,
                                                "elem": [elem]}}}]}
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "-f", "-"], input=json.dumps(cmd), text=True,
                   check=True, capture_output=True)
    return elem


@pytest.mark.parametrize("set_name", ["allow_mac", "allow_v4", "allow_v6"])
def test_removed_filter_element_is_put_back_by_the_periodic_resync(tmp_path, set_name):
    docs = [port(1), port(2)]
    (p1, tap1), (p2, tap2) = ids_and_taps(docs)
    with netns.sandbox("lf") as ns:
        a = AgentProc(str(tmp_path), ns, extra=["--resync-interval", "1"]).start()
        try:
            plug(a, docs)
            before = per_device(ns)
            time.sleep(AFTER_OWN_ECHO)
            since = last_event(a)
            _delete_element(ns, set_name, tap1)  # nftables sends no netlink link/route note: only the resync sees it
            assert per_device(ns)["elements"][tap1] == before["elements"][tap1] - 1
            evs = wait_events(a, since, drift_and_repair(p1), timeout=5.0)
            assert has(evs, ("drift",), p1)
            after = per_device(ns)
            assert after["elements"] == before["elements"]
            assert after["ifindex"][tap1] == before["ifindex"][tap1]
            assert check(a)["drift"] == {}
            assert not has(evs, ("repaired", "drift"), p2)
            assert a.stop() == 0
        finally:
            a.stop()


# ---------------------------------------------------------------------------
# 3. --repair report


def test_repair_report_only_reports(tmp_path):
    docs = [port(1)]
    [(p1, tap1)] = ids_and_taps(docs)
    with netns.sandbox("lp") as ns:
        a = AgentProc(str(tmp_path), ns, extra=["--repair", "report", "--resync-interval", "1"]).start()
        try:
            assert a.call("GET", "/v1/health")[1]["repair"] == "report"
            plug(a, docs)
            time.sleep(AFTER_OWN_ECHO)
            since = last_event(a)
            ip(ns, "link", "del", tap1)
            wait_events(a, since, lambda evs: has(evs, ("drift",), p1))
            time.sleep(3.0)  # three periodic resyncs: still only reports
            evs = events_since(a, since)
            assert not has(evs, ("repaired",), p1), evs
            assert tap1 not in per_device(ns)["ifindex"]
            res = check(a)
            assert list(res["drift"]) == [p1] and res["drift"][p1], res
            assert records(a) == {p1: "plugged"}  # the record is the desired state: kept
            assert a.stop() == 0
        finally:
            a.stop()


# ---------------------------------------------------------------------------
# 4. start-up reconcile


def test_startup_reconcile_puts_back_what_went_while_down(tmp_path):
    docs = [port(1), port(2)]
    (p1, tap1), (p2, tap2) = ids_and_taps(docs)
    with netns.sandbox("ls") as ns:
        a = AgentProc(str(tmp_path), ns).start()
        b = AgentProc(str(tmp_path), ns, name="again")
        try:
            plug(a, docs)
            idx2 = per_device(ns)["ifindex"][tap2]
            assert a.stop() == 0
            ip(ns, "link", "del", tap1)
            b.start()
            evs = events_since(b, 0)
            rep = [e for e in evs if e["type"] == "repaired"]
            assert [e["port_id"] for e in rep] == [p1] and rep[0]["seq"] > 0, evs
            dev = per_device(ns)
            assert tap1 in dev["ifindex"] and dev["routes"][tap1] == 2
            assert dev["ifindex"][tap2] == idx2
            assert check(b)["drift"] == {}
            assert b.stop() == 0
        finally:
            a.stop()
            b.stop()


def test_restart_with_1000_correct_ports_changes_nothing(tmp_path):
    docs = [port(i) for i in range(1, 1001)]
    ports = ids_and_taps(docs)
    with netns.sandbox("lt") as ns:
        a = AgentProc(str(tmp_path), ns).start()
        b = AgentProc(str(tmp_path), ns, name="again")
        try:
            plug(a, docs[:500])
            plug(a, docs[500:])
            before = per_device(ns)["ifindex"]
            assert a.stop() == 0
            t0 = time.monotonic()
            b.start()
            took = time.monotonic() - t0
            reconcile = metrics(scrape(b))[("vifwire_reconcile_seconds",)]
            print(f"\nrestart with 1000 recorded ports: process start -> ready {took * 1e3:.0f} ms "
                  f"(start-up reconcile {reconcile * 1e3:.0f} ms)")
            assert took < 10
            assert [e for e in events_since(b, 0) if e["type"] in ("repaired", "drift", "failed")] == []
            after = per_device(ns)["ifindex"]
            assert {t: after.get(t) for _, t in ports} == {t: before[t] for _, t in ports}
            res = check(b)
            assert res == {"checked": 1000, "drift": {}}
            assert set(records(b).values()) == {"plugged"} and len(records(b)) == 1000
            assert b.stop() == 0
        finally:
            a.stop()
            b.stop()


# ---------------------------------------------------------------------------
# 5. SIGTERM during a big plug


def test_sigterm_while_a_big_plug_is_in_flight(tmp_path):
    docs = [port(i) for i in range(1, 1001)]
    ports = ids_and_taps(docs)
    first_tap = ports[0][1]
    with netns.sandbox("lg") as ns:
        a = AgentProc(str(tmp_path), ns).start()
        try:
            outcome: list = []

            def post() -> None:
                try:
                    outcome.append(a.call("POST", "/v1/ports", docs, timeout=120))
                except OSError as exc:
                    outcome.append(exc)

            t = threading.Thread(target=post)
            t.start()
            # SIGTERM once the writer is changing the host (its round has begun)
            deadline = time.monotonic() + 30
            with IPRoute(netns=ns) as ipr:
                while not ipr.link_lookup(ifname=first_tap):
                    assert time.monotonic() < deadline and t.is_alive(), outcome
                    time.sleep(0.005)
            assert t.is_alive(), "the plug finished before the signal: no test"
            a.proc.send_signal(signal.SIGTERM)
            t.join(120)
            [res] = outcome
            assert not isinstance(res, Exception), f"the in-flight request got no answer: {res!r}\n" \
                                                   f"{a.read_log()[-3000:]}"
            status, body = res
            assert status == 200, body
            assert len(body["ports"]) == 1000 and all(p["ok"] for p in body["ports"])
            assert a.proc.wait(60) == 0, a.read_log()[-3000:]
            assert not os.path.exists(a.sock), "the socket file was left behind"
            recs = store_records(a.state)
            assert len(recs) == 1000 and set(recs.values()) == {"plugged"}
            assert len(host_state(ns)["taps"]) == 1000
        finally:
            a.stop()


# ---------------------------------------------------------------------------
# 6. metrics


def test_metrics(tmp_path):
    docs = [port(i) for i in (1, 2, 3)]
    (p1, tap1), (p2, tap2), _ = ids_and_taps(docs)
    mport = free_tcp_port()
    with netns.sandbox("lm") as ns:
        a = AgentProc(str(tmp_path), ns, extra=["--metrics-addr", f"127.0.0.1:{mport}"]).start()
        try:
            text = scrape(a)
            m = metrics(text)
            assert ("vifwire_reconcile_seconds",) in m and families(text)["vifwire_reconcile_seconds"] == "gauge"
            plug(a, docs)
            text = scrape(a)
            fam, m = families(text), metrics(text)
            assert fam["vifwire_plug_seconds"] == "histogram"
            assert m[("vifwire_plug_seconds_count", ("strategy", "routed-tap"))] == 3
            assert m[("vifwire_plug_seconds_bucket", ("le", "+Inf"), ("strategy", "routed-tap"))] == 3
            assert m[("vifwire_ports", ("state", "plugged"))] == 3
            assert fam["vifwire_drift_found"] == "counter" and fam["vifwire_drift_repaired"] == "counter"
            found0 = m[("vifwire_drift_found_total",)]
            repaired0 = m[("vifwire_drift_repaired_total",)]

            # drift and its repair move the counters
            time.sleep(AFTER_OWN_ECHO)
            since = last_event(a)
            ip(ns, "link", "del", tap2)
            wait_events(a, since, drift_and_repair(p2))
            m = metrics(scrape(a))
            assert m[("vifwire_drift_found_total",)] >= found0 + 1
            assert m[("vifwire_drift_repaired_total",)] >= repaired0 + 1
            assert m[("vifwire_ports", ("state", "plugged"))] == 3

            # a spoofed packet from the guest behind tap1 is dropped and counted
            key = ("vifwire_antispoof_dropped_packets_total", ("device", tap1), ("port", p1), ("reason", "ip4"))
            assert m[key] == 0
            with IPRoute(netns=ns) as ipr:
                tap_mac = ipr.get_links(ipr.link_lookup(ifname=tap1)[0])[0].get_attr("IFLA_ADDRESS")
            mac, ip4 = docs[0]["mac_address"], docs[0]["fixed_ips"][0]["ip_address"]
            with T.TunVM(ns, tap1, mac, [ip4], respond=False) as vm:
                vm.send(T.echo4_frame(tap_mac, mac, "10.96.0.99", "10.100.0.3", 7, 1))
                deadline = time.monotonic() + 5
                while (v := metrics(scrape(a))[key]) < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
            assert v >= 1, "the spoofed packet was not counted"
            other = ("vifwire_antispoof_dropped_packets_total", ("device", tap2), ("port", p2), ("reason", "ip4"))
            assert metrics(scrape(a))[other] == 0

            # the TCP listener: /metrics only
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as resp:
                assert resp.status == 200
                tm = metrics(resp.read().decode())
            assert tm[("vifwire_ports", ("state", "plugged"))] == 3 and tm[key] >= 1
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}/v1/ports", timeout=10)
            assert err.value.code == 404
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mport}/v1/ports", method="POST",
                                                              data=b"[]"), timeout=10)
            assert err.value.code == 404
            assert a.stop() == 0
        finally:
            a.stop()


# ---------------------------------------------------------------------------
# OVS ports removed behind the agent's back (the OVSDB monitor's replica)


@pytest.mark.parametrize("create_tap", [True, False], ids=["tap-by-vifwire", "tap-by-hypervisor"])
def test_ovs_port_deleted_behind_the_agents_back_is_put_back(agent_ovs, create_tap):
    """With the tap made by vifwire, and with only the OVS port made by
    vifwire (the hypervisor makes the tap later)."""
    from test_ovs_wiring import pid as ovs_pid, port as ovs_port

    ns, ovs, a = agent_ovs
    p = ovs_pid(1, "c")
    doc = ovs_port(p, {"ovs_create_tap": create_tap})
    # without the tap: libvirt older than 0.9.11 has no OVS virtualport, so
    # vifwire adds the OVS port and the hypervisor makes the tap later
    body_in = doc if create_tap else {"ports": [doc], "facts": {"libvirt_version": "0.9.10"}}
    status, body = a.call("POST", "/v1/ports", body_in)
    assert status == 200, body
    [res] = body["ports"]
    tap = next(d for d in res["devices"] if d.startswith("tap"))
    assert tap in ovs.vsctl("list-ports", "br-int").split()
    time.sleep(AFTER_OWN_ECHO)
    since = last_event(a)
    ovs.vsctl("del-port", "br-int", tap)
    # found by a netlink note or the OVSDB watch (whichever comes first), well
    # before the periodic resync (30 s)
    wait_events(a, since, drift_and_repair(p), timeout=10.0)
    assert tap in ovs.vsctl("list-ports", "br-int").split()
    status, body = a.call("GET", f"/v1/ports/{p}/check")
    assert status == 200 and body["drift"] == {}, body
