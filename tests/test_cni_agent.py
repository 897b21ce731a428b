"""vifwire-cni with an agent: the thin path, the agent's endpoint, and the
fallback when the agent is down (docs/cni.md, "Agent or in-process").

The agent runs inside the test namespace without ``--netns`` - as on a real
host, where the agent and the runtime share the host's namespace - so its
records and the plugin's in-process records describe the same namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent_fixtures import AgentProc
from vifwire.sandbox import netns

pytestmark = pytest.mark.root
BIN = os.path.dirname(sys.executable)
PLUGIN = os.path.join(BIN, "vifwire-cni")


def _need() -> None:
    if os.geteuid() != 0 or not os.path.exists("/usr/lib/cni/host-local"):
        pytest.skip("needs root and the CNI reference plugins")


@pytest.fixture
def host(tmp_path):
    _need()
    with netns.sandbox("ca") as ns, netns.sandbox("cp") as pod:
        a = AgentProc(str(tmp_path), None)
        a.argv = ["ip", "netns", "exec", ns] + a.argv
        a.start()
        conf = {"cniVersion": "1.0.0", "name": "agentnet", "type": "vifwire-cni", "mode": "routed",
                "agent": a.sock, "state": a.state,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.66.0.0/24"}]],
                         "dataDir": str(tmp_path / "ipam")}}
        try:
            yield ns, pod, a, conf, tmp_path
        finally:
            a.stop()


def _run(ns: str, command: str, conf: dict, pod: str | None, cid: str = "pod1",
         python: list[str] | None = None) -> tuple[int, dict | None, str]:
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni"}
    if pod:
        env["CNI_NETNS"] = f"/var/run/netns/{pod}"
    argv = ["ip", "netns", "exec", ns] + (python or [PLUGIN])
    p = subprocess.run(argv, input=json.dumps(conf), env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr


def test_add_goes_through_the_agent_and_the_thin_path_stays_light(host):
    ns, pod, agent, conf, _ = host
    probe = [sys.executable, "-c",
             "import atexit, sys\n"
             "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sorted(m for m in sys.modules "
             "if m.startswith('vifwire')))))\n"
             "from vifwire.cni.main import main\nmain()"]
    code, out, err = _run(ns, "ADD", conf, pod, python=probe)
    assert code == 0, (out, err)
    loaded = err.split("MODULES ", 1)[1].split()
    heavy = [m for m in loaded if m.startswith(("vifwire.service.wiring", "vifwire.executors", "vifwire.model.loader",
                                                 "vifwire.planner", "vifwire.store"))]
    assert heavy == [], f"the thin path imported {heavy}"
    status, ports = agent.call("GET", "/v1/ports")
    assert status == 200 and [p["instance_id"] for p in ports["ports"]] == ["pod1"]
    assert "plug: 1 of 1 port(s) ok" in agent.read_log()
    assert out["interfaces"][1]["sandbox"] == f"/var/run/netns/{pod}"
    ip = out["ips"][0]["address"].split("/")[0]
    ping = subprocess.run(["ip", "netns", "exec", pod, "ping", "-c1", "-W2", "169.254.1.1"], capture_output=True)
    assert ping.returncode == 0
    check_conf = dict(conf, prevResult=out)
    code, out2, err = _run(ns, "CHECK", check_conf, pod)
    assert code == 0 and out2 is None, (out2, err)
    code, _, err = _run(ns, "DEL", conf, pod)
    assert code == 0, err
    status, ports = agent.call("GET", "/v1/ports")
    assert ports["ports"] == []
    routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
    assert ip not in routes


def test_del_with_the_agent_down_is_done_in_process(host):
    ns, pod, agent, conf, tmp = host
    code, out, err = _run(ns, "ADD", conf, pod)
    assert code == 0, err
    host_end = out["interfaces"][0]["name"]
    agent.stop()
    netns.remove(pod)
    code, out, err = _run(ns, "DEL", conf, None)
    assert code == 0, (out, err)
    links = subprocess.run(["ip", "-n", ns, "-br", "link"], capture_output=True, text=True).stdout
    assert host_end not in links
    listed = subprocess.run([os.path.join(BIN, "vifwire"), "list", "--json", "--state", agent.state],
                            capture_output=True, text=True)
    assert json.loads(listed.stdout) == []
    leases = [f for f in os.listdir(tmp / "ipam" / "agentnet") if f[0].isdigit()]
    assert leases == []


def test_the_endpoint_refuses_a_bad_body_with_a_line(host):
    _, _, agent, _, _ = host
    status, body = agent.call("POST", "/v1/cni", {"env": {"CNI_COMMAND": 1}, "config": "{}"})
    assert status == 400 and body["error"] == "request: env: must be an object of strings (the CNI_* variables)"
    status, body = agent.call("POST", "/v1/cni", {"env": {"CNI_COMMAND": "ADD"}, "config": "{"})
    assert status == 200 and body["exit"] == 1 and body["output"]["code"] == 4  # CNI_CONTAINERID missing
