"""LXD attach without LXD: the planner's rules, the veth check rule, and the
REST adapter's protocol and error handling against a scripted fake LXD on a
Unix socket (no root, no daemon). The real thing is tests/test_lxd_real.py."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from vifwire.errors import HostError, VifError
from vifwire.executors.engine import REMOVE_ORDER
from vifwire.executors.kernel.veth import VethHandler
from vifwire.executors.lxd import LxdNicHandler
from vifwire.lxd import LxdClient, LxdConflict, LxdError, LxdUnreachable, NoSuchInstance
from vifwire.model.loader import load_one
from vifwire.netlink.channel import Link
from vifwire.planner.facts import LXD_DEFAULT_SOCKET, HostFacts, lxd_socket_from
from vifwire.planner.generic import plan
from vifwire.planner.plan import StepKind
from vifwire.renderers.options import Bandwidth, GuestOptions

PID = "e0000001-0000-4000-8000-000000000001"
MAC = "fa:16:3e:e0:00:01"
TAP, TIN = "tape0000001-00", "tine0000001-00"


def binding(vif_type: str = "bridge", details: dict | None = None):
    return load_one({"id": PID, "mac_address": MAC, "network_id": "4c1e6a0d-0000-4000-8000-000000000001",
                     "fixed_ips": [{"subnet_id": "s", "ip_address": "10.90.0.5"}], "binding:vif_type": vif_type,
                     "binding:vif_details": details if details is not None else {"bridge_name": "brvw-u"},
                     "binding:host_id": "t", "device_id": "inst-1", "network": {"mtu": 1400}})


# --------------------------------------------------------------------------- planner


def test_lxd_instance_adds_the_nic_step_last():
    for vif_type, details in (("bridge", None), ("tap", {}), ("ovs", {"port_filter": False}),
                              ("ovs", {"ovs_hybrid_plug": True})):
        p = plan(binding(vif_type, details), HostFacts(hypervisor="lxd", lxd_instance="c1", lxd_socket="/x/u.sock"),
                 render=False)
        last = p.steps[-1]
        assert last.op == StepKind.LXD_NIC, [s.op for s in p.steps]
        assert last.args == {"instance": "c1", "socket": "/x/u.sock", "device": TAP, "mac": MAC,
                             "nic": {"type": "nic", "nictype": "physical", "parent": TIN, "hwaddr": MAC}}
        assert sum(s.op == StepKind.LXD_NIC for s in p.steps) == 1
        assert last.describe() == f"lxd_nic {TAP} -> LXD instance c1"


def test_no_instance_no_step_and_the_default_socket():
    p = plan(binding(), HostFacts(hypervisor="lxd"), render=False)
    assert all(s.op != StepKind.LXD_NIC for s in p.steps)
    p = plan(binding(), HostFacts(hypervisor="lxd", lxd_instance="c1"), render=False)
    assert p.steps[-1].args["socket"] == LXD_DEFAULT_SOCKET
    assert lxd_socket_from({}) == "/var/lib/lxd/unix.socket"
    assert lxd_socket_from({"LXD_DIR": "/srv/lxd"}) == "/srv/lxd/unix.socket"


def test_the_veth_says_lxd_takes_the_tin():
    """A fact-driven rule: LXD guests whose tin is made on the host get
    ``peer_to_guest``; a tin made in a known namespace and libvirt's pairs don't."""
    veth = next(s for s in plan(binding(), HostFacts(hypervisor="lxd"), render=False).steps if s.op == "veth")
    assert veth.args["peer_to_guest"] is True
    veth = next(s for s in plan(binding(), HostFacts(hypervisor="lxd", guest_netns="g1"), render=False).steps
                if s.op == "veth")
    assert "peer_to_guest" not in veth.args
    hybrid = plan(binding("ovs", {"ovs_hybrid_plug": True}), HostFacts(), render=False)
    assert all("peer_to_guest" not in s.args for s in hybrid.steps)


@pytest.mark.parametrize("facts, guest, field, text", [
    (HostFacts(lxd_instance="c1"), None, "lxd_instance", "hypervisor is libvirt"),
    (HostFacts(hypervisor="lxd", lxd_instance="1c"), None, "lxd_instance", "not an LXD instance name"),
    (HostFacts(hypervisor="lxd", lxd_instance="c-"), None, "lxd_instance", "not an LXD instance name"),
    (HostFacts(hypervisor="lxd", lxd_instance="c/1"), None, "lxd_instance", "not an LXD instance name"),
    (HostFacts(hypervisor="lxd", lxd_instance="c1", guest_netns="g"), None, "lxd_instance", "guest_netns"),
    (HostFacts(hypervisor="lxd", lxd_instance="c1", lxd_socket="rel.sock"), None, "lxd_socket", "absolute"),
    (HostFacts(hypervisor="lxd", lxd_instance="c1"), GuestOptions(bandwidth_in=Bandwidth(average=100)),
     "bandwidth", "limits"),
])
def test_bad_lxd_facts_are_one_line_before_anything_is_touched(facts, guest, field, text):
    with pytest.raises(VifError) as e:
        plan(binding(), facts, guest, render=False)
    assert e.value.field == field and text in e.value.problem, e.value.line()
    assert e.value.line().startswith(f"port {PID}: {field}: ")


def test_unplug_detaches_first():
    assert REMOVE_ORDER[0] == StepKind.LXD_NIC


class _View:
    def __init__(self, *links: Link):
        self.by_name = {l.name: l for l in links}
        self.by_index = {l.index: l for l in links}

    def link(self, name):
        return self.by_name.get(name)

    def link_at(self, index):
        return self.by_index.get(index)


def _link(index, name, peer, up=True, netnsid=None, mac=None):
    return Link(index=index, name=name, flags=1 if up else 0, mtu=1400, address=mac, master=0, kind="veth",
                alias=None, group=0, link=peer, link_netnsid=netnsid)


def test_check_takes_a_tin_lxd_moved_as_right():
    lxd = next(s for s in plan(binding(), HostFacts(hypervisor="lxd"), render=False).steps if s.op == "veth")
    moved = _View(_link(7, TAP, 2, netnsid=3))  # the tin is in the container
    assert VethHandler().drift(lxd, moved) == []
    back_down = _View(_link(7, TAP, 8), _link(8, TIN, 7, up=False, mac=MAC))  # stopped: back, down
    assert VethHandler().drift(lxd, back_down) == []
    plain = lxd.__class__(op=lxd.op, args={k: v for k, v in lxd.args.items() if k != "peer_to_guest"})
    # a record made before the flag existed: a moved tin is still fine (nova-lxd
    # moved it too), but a tin back on the host must be up
    assert VethHandler().drift(plain, moved) == []
    assert VethHandler().drift(plain, back_down) == [f"{TIN}: is down, recorded up"]


# --------------------------------------------------------------------------- a fake LXD


class FakeLxd:
    """A scripted LXD on a Unix socket: ``answers`` maps (method, path prefix)
    to a list of (status, body, headers) given out in order (the last one repeats)."""

    def __init__(self, path: str):
        self.path = path
        self.answers: dict[tuple[str, str], list[tuple[int, object, dict]]] = {}
        self.seen: list[tuple[str, str, dict, object]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.seen.append((self.command, self.path, dict(self.headers), body))
                key = next((k for k in fake.answers if k[0] == self.command and self.path.startswith(k[1])), None)
                if key is None:
                    status, doc, headers = 404, {"type": "error", "error_code": 404, "error": "not found"}, {}
                else:
                    queue = fake.answers[key]
                    status, doc, headers = queue.pop(0) if len(queue) > 1 else queue[0]
                raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_PUT = do_PATCH = _answer

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def sync(meta, etag=None):
    return (200, {"type": "sync", "status": "Success", "status_code": 200, "metadata": meta},
            {"ETag": etag} if etag else {})


def instance(devices, name="c1"):
    return {"name": name, "status": "Running", "architecture": "x86_64", "config": {"volatile.uuid": "u"},
            "devices": devices, "ephemeral": False, "profiles": ["default"], "stateful": False,
            "description": "", "expanded_devices": {"root": {"type": "disk"}}, "created_at": "t"}


ASYNC = (202, {"type": "async", "status": "Operation created", "status_code": 100,
               "operation": "/1.0/operations/op1", "metadata": {"id": "op1"}}, {"Location": "/1.0/operations/op1"})
DONE = sync({"id": "op1", "status": "Success", "status_code": 200, "err": ""})


@pytest.fixture
def fake(tmp_path):
    f = FakeLxd(str(tmp_path / "lxd.sock"))
    yield f
    f.close()


def test_unreachable_socket(tmp_path):
    with pytest.raises(LxdUnreachable, match="No such file"):
        LxdClient(str(tmp_path / "none.sock")).instance("c1")
    with LxdClient(str(tmp_path)) as c, pytest.raises(LxdUnreachable):  # a directory, not a socket
        c.request("GET", "/1.0")


def test_unknown_instance(fake):
    fake.answers[("GET", "/1.0/instances/")] = [(404, {"type": "error", "error_code": 404,
                                                     "error": "Instance not found"}, {})]
    with pytest.raises(NoSuchInstance) as e:
        LxdClient(fake.path).instance("nope")
    assert e.value.status == 404 and e.value.problem == "no instance 'nope'"


def test_change_devices_rereads_on_412_and_waits_for_the_operation(fake):
    fake.answers[("GET", "/1.0/instances/c1")] = [sync(instance({}), '"e1"'),
                                                  sync(instance({"other": {"type": "disk"}}), '"e2"')]
    fake.answers[("PUT", "/1.0/instances/c1")] = [(412, {"type": "error", "error_code": 412,
                                                         "error": "ETag doesn't match"}, {}), ASYNC]
    fake.answers[("GET", "/1.0/operations/op1/wait")] = [DONE]
    calls = []

    def add(devices):
        calls.append(sorted(devices))
        devices["tap1"] = {"type": "nic"}
        return devices

    with LxdClient(fake.path, timeout=5) as c:
        before = c.change_devices("c1", add)
    assert calls == [[], ["other"]]  # recomputed from the second read: the other writer's device is kept
    assert before is not None and before.devices == {"other": {"type": "disk"}}
    puts = [s for s in fake.seen if s[0] == "PUT"]
    assert [p[2].get("If-Match") for p in puts] == ['"e1"', '"e2"']
    assert puts[1][3]["devices"] == {"other": {"type": "disk"}, "tap1": {"type": "nic"}}
    assert set(puts[1][3]) == {"architecture", "config", "devices", "ephemeral", "profiles", "stateful",
                               "description"}
    assert any(s[1].startswith("/1.0/operations/op1/wait?timeout=") for s in fake.seen)


def test_nothing_to_change_writes_nothing(fake):
    fake.answers[("GET", "/1.0/instances/c1")] = [sync(instance({"tap1": {"type": "nic"}}), '"e1"')]
    with LxdClient(fake.path) as c:
        assert c.change_devices("c1", lambda d: None) is None
        assert c.change_devices("c1", lambda d: d) is None
    assert not [s for s in fake.seen if s[0] == "PUT"]


def test_always_412_is_a_conflict(fake):
    fake.answers[("GET", "/1.0/instances/c1")] = [sync(instance({}), '"e1"')]
    fake.answers[("PUT", "/1.0/instances/c1")] = [(412, {"type": "error", "error_code": 412, "error": "x"}, {})]
    with LxdClient(fake.path) as c, pytest.raises(LxdConflict, match="3 writes refused"):
        c.change_devices("c1", lambda d: {**d, "tap1": {}}, attempts=3)


def test_a_failed_operation_and_an_lxd_error_carry_lxd_s_words(fake):
    fake.answers[("GET", "/1.0/instances/c1")] = [sync(instance({}), '"e1"')]
    fake.answers[("PUT", "/1.0/instances/c1")] = [ASYNC]
    fake.answers[("GET", "/1.0/operations/op1/wait")] = [
        sync({"id": "op1", "status": "Failure", "status_code": 400,
              "err": "Failed to start device \"tap1\": Parent device 'tin1' doesn't exist"})]
    with LxdClient(fake.path) as c, pytest.raises(LxdError, match="Parent device 'tin1' doesn't exist") as e:
        c.change_devices("c1", lambda d: {**d, "tap1": {}})
    assert e.value.status == 400
    fake.answers[("PUT", "/1.0/instances/c1")] = [(400, {"type": "error", "error_code": 400,
                                                         "error": "Invalid devices:\n bad"}, {})]
    with LxdClient(fake.path) as c, pytest.raises(LxdError) as e:
        c.change_devices("c1", lambda d: {**d, "tap1": {}})
    assert e.value.problem == "Invalid devices: bad" and e.value.status == 400


def test_an_answer_that_is_not_lxd(fake):
    fake.answers[("GET", "/1.0")] = [(200, b"<html>hello</html>", {})]
    with LxdClient(fake.path) as c, pytest.raises(LxdError, match="not LXD's JSON"):
        c.request("GET", "/1.0")


class _Ctx:
    port_id = PID


def _step(socket):
    p = plan(binding(), HostFacts(hypervisor="lxd", lxd_instance="c1", lxd_socket=socket), render=False)
    return p.steps[-1]


def test_the_handler_names_the_wrong_input(fake, tmp_path):
    h = LxdNicHandler()
    with pytest.raises(HostError) as e:
        h.apply(_step(str(tmp_path / "none.sock")), _Ctx())
    assert e.value.line().startswith(f"port {PID}: lxd_socket: cannot connect to {tmp_path}/none.sock")
    fake.answers[("GET", "/1.0/instances/")] = [(404, {"type": "error", "error_code": 404, "error": "x"}, {})]
    with pytest.raises(HostError) as e:
        h.apply(_step(fake.path), _Ctx())
    assert e.value.line() == f"port {PID}: lxd_instance: LXD at {fake.path} has no instance 'c1'"
    # unplug: an instance that is gone leaves nothing to detach
    h.remove(_step(fake.path), _Ctx())
    assert h.verify(_step(fake.path), _Ctx()) == [f"{TAP}: LXD instance c1 is gone"]


def test_the_handler_finds_an_old_name_by_mac(fake):
    old = {"eth0": {"type": "nic", "nictype": "physical", "parent": TIN, "hwaddr": MAC.upper()}}
    fake.answers[("GET", "/1.0/instances/c1")] = [sync(instance(old), '"e1"')]
    fake.answers[("PUT", "/1.0/instances/c1")] = [ASYNC]
    fake.answers[("GET", "/1.0/operations/op1/wait")] = [DONE]
    h, step = LxdNicHandler(), _step(fake.path)
    assert h.verify(step, _Ctx()) == []  # the device an older version named eth0 is this port's
    assert h.apply(step, _Ctx()) is None  # already there: nothing written
    assert not [s for s in fake.seen if s[0] == "PUT"]
    h.remove(step, _Ctx())
    [put] = [s for s in fake.seen if s[0] == "PUT"]
    assert put[3]["devices"] == {} and put[2]["If-Match"] == '"e1"'



def test_the_agent_takes_the_lxd_facts():
    from vifwire.agent.requests import BadRequest, facts_to_json, parse_facts

    f = parse_facts({"hypervisor": "lxd", "lxd_instance": "c1", "lxd_socket": "/srv/lxd/unix.socket"},
                    HostFacts(lxd_socket=LXD_DEFAULT_SOCKET))
    assert (f.lxd_instance, f.lxd_socket) == ("c1", "/srv/lxd/unix.socket")
    assert facts_to_json(f)["lxd_instance"] == "c1"
    with pytest.raises(BadRequest, match="facts.lxd_instance: must be a non-empty string"):
        parse_facts({"lxd_instance": 5}, HostFacts())
