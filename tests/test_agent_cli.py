"""The CLI's two paths give the same answers: in-process and ``--agent``.

Each test runs the same files through ``vifwire CMD --netns NS --state DB``
(in a namespace of its own) and through ``vifwire CMD --agent SOCKET`` (a
real agent wiring another namespace), and compares stdout, stderr and the
exit code: plug (table and --json, a port failing on the host, invalid
files, a clash with a recorded port), list, check (clean and with drift),
unplug (by id, --file, --all), gc (finding and removing leftovers).

Also: no agent on the socket is one line and exit 1, never a fallback;
VIFWIRE_AGENT works; options the agent owns are refused; the ``--agent``
path imports none of the heavy modules (service, model, pyroute2, rich, ...);
the client library's other calls (health, one port, events) and its errors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from agent_fixtures import AgentProc
from routed_host import VIFWIRE, macvtap_port, port

from vifwire.sandbox import netns

pytestmark = pytest.mark.root

#: What the --agent path must not import (the point of a thin client).
HEAVY = ("vifwire.service", "vifwire.model.loader", "vifwire.model.binding", "vifwire.executors",
         "vifwire.planner", "vifwire.store", "vifwire.netlink", "vifwire.agent", "pyroute2", "pydantic", "rich", "http.client", "email")

_STAMP = re.compile(r'"(created_at|updated_at)": [0-9.e+-]+')


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIFWIRE_AGENT", "VIFWIRE_STATE", "VIFWIRE_DEBUG")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([VIFWIRE, *args], capture_output=True, text=True, env=env or _env(), timeout=120)


class Pair:
    """One host wired in-process, one by an agent; the same command on both."""

    def __init__(self, agent: AgentProc, agent_ns: str, local_ns: str, local_db: str, tmp: str):
        self.agent, self.agent_ns = agent, agent_ns
        self.local_ns, self.local_db = local_ns, local_db
        self.tmp = tmp
        assert len(agent_ns) == len(local_ns)  # so tables naming them line up the same

    def file(self, name: str, doc: object) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        return path

    def local(self, *args: str) -> subprocess.CompletedProcess:
        # there is no OVSDB here; in-process gc and unplug would wait --ovs-timeout for it to answer
        return run(*args, "--netns", self.local_ns, "--state", self.local_db, "--ovs-timeout", "0.5")

    def remote(self, *args: str) -> subprocess.CompletedProcess:
        return run(*args, "--agent", self.agent.sock)

    def both(self, *args: str, rc: int | None = None) -> tuple[subprocess.CompletedProcess, ...]:
        """Run on both; assert the same exit code (``rc`` if given), stdout and stderr."""
        mine, theirs = self.local(*args), self.remote(*args)
        assert mine.returncode == theirs.returncode, (args, mine, theirs)
        if rc is not None:
            assert mine.returncode == rc, (args, mine)
        assert self.same(mine.stdout) == self.same(theirs.stdout), args
        assert mine.stderr == theirs.stderr, args
        assert "Traceback" not in mine.stderr + theirs.stderr
        return mine, theirs

    def same(self, text: str) -> str:
        """Output with the two namespaces' names and the records' timestamps made equal (list shows them)."""
        text = _STAMP.sub(r'"\1": 0', text)
        return text.replace(self.local_ns, "NS").replace(self.agent_ns, "NS")

    def stray(self, name: str, doc: dict) -> None:
        """Wire a port into both namespaces with a throwaway record: marked wiring that no record owns."""
        path = self.file(name, doc)
        for ns in (self.local_ns, self.agent_ns):
            r = run("plug", path, "--netns", ns, "--state", os.path.join(self.tmp, f"stray-{ns}.db"))
            assert r.returncode == 0, r.stderr


@pytest.fixture
def pair(agent_ns, tmp_path):
    ns, a = agent_ns
    with netns.sandbox("lo") as local:  # "lo" as long as the fixture's "ag"
        yield Pair(a, ns, local, str(tmp_path / "local.db"), str(tmp_path))


@pytest.fixture
def report_pair(tmp_path):
    """As ``pair``, but the agent only reports drift (it would repair it within a second)."""
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    with netns.sandbox("ag") as ns, netns.sandbox("lo") as local:
        a = AgentProc(str(tmp_path), ns, extra=["--repair", "report"])
        try:
            a.start()
            yield Pair(a, ns, local, str(tmp_path / "local.db"), str(tmp_path))
        finally:
            a.stop()


def devname(doc: dict) -> str:
    return "tap" + doc["id"][:11]


# ---------------------------------------------------------------------------- plug


def test_plug_table_json_and_failures_are_the_same(pair):
    three = pair.file("three.json", [port(i) for i in (1, 2, 3)])
    mine, _ = pair.both("plug", three, rc=0)
    assert mine.stdout.count(" plugged") == 3 and mine.stderr == ""
    pair.both("plug", three, "--wait", "5", rc=0)  # nothing of OVS to wait for
    # again with two new ones: unchanged and plugged side by side, as JSON
    five = pair.file("five.json", [port(i) for i in range(1, 6)])
    mine, _ = pair.both("plug", five, "--json", rc=0)
    got = json.loads(mine.stdout)
    assert [p["changed_steps"] > 0 for p in got] == [False, False, False, True, True]
    # a port the host refuses: the same table, the same failure line, exit 1
    mixed = pair.file("mixed.json", [port(6), macvtap_port(7)])
    mine, _ = pair.both("plug", mixed, rc=1)
    assert "failed, rolled back" in mine.stdout and "eth9.5" in mine.stderr
    pair.both("plug", mixed, "--json", rc=1)
    # the table's summary above 50 rows
    many = pair.file("many.json", [port(i) for i in range(10, 70)])
    mine, _ = pair.both("plug", many, rc=0)
    assert mine.stdout.startswith("plug: 60 rows") and "result: plugged 60" in mine.stdout
    pair.both("check", rc=0)


def test_invalid_files_are_the_same_lines(pair):
    bad_mac = port(1)
    bad_mac["mac_address"] = "not-a-mac"
    no_type = port(2)
    del no_type["binding:vif_type"]
    invalid = pair.file("invalid.json", [bad_mac, no_type, port(3)])
    mine, _ = pair.both("plug", invalid, rc=2)
    lines = mine.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("vifwire: port ") for line in lines), lines
    assert mine.stdout == ""
    twice = pair.file("twice.json", [port(3), port(4), port(3)])  # the loader's duplicate check
    mine, _ = pair.both("plug", twice, rc=2)
    assert mine.stderr.startswith("vifwire: port ") and mine.stdout == ""

    broken = os.path.join(pair.tmp, "broken.json")
    with open(broken, "w") as f:
        f.write('[{"id": "x",\n  oops}]')
    mine, _ = pair.both("plug", broken, rc=2)
    assert "is not valid JSON" in mine.stderr and len(mine.stderr.splitlines()) == 1

    not_utf8 = os.path.join(pair.tmp, "latin1.json")
    with open(not_utf8, "wb") as f:
        f.write(b'{"id": "caf\xe9"}')
    mine, _ = pair.both("plug", not_utf8, rc=2)
    assert "not valid UTF-8: byte 0xe9" in mine.stderr

    scalar = pair.file("scalar.json", 42)
    pair.both("plug", scalar, rc=2)
    empty = pair.file("empty.json", [])
    pair.both("plug", empty, rc=0)
    pair.both("plug", empty, "--json", rc=0)
    pair.both("unplug", "--file", empty, rc=2)
    pair.both("unplug", "--file", invalid, rc=2)
    pair.both("list", rc=0)  # nothing was recorded


def test_clash_with_a_recorded_port_is_refused_the_same_way(pair):
    pair.both("plug", pair.file("one.json", port(1)), rc=0)
    twin = port(1)
    twin["id"] = "0000abcd-c0fe-4000-8000-00000000c0fe"  # another port, same MAC and addresses
    mine, _ = pair.both("plug", pair.file("twin.json", twin), rc=2)
    assert "(recorded)" in mine.stderr and "mac_address" in mine.stderr
    pair.both("list", "--json", rc=0)


# ---------------------------------------------------------------------------- list, check, unplug, gc


def test_list_is_the_same(pair):
    pair.both("list", rc=0)
    docs = [port(1), port(2), port(3)]
    pair.both("plug", pair.file("ports.json", docs), "--instance", "vm-1", rc=0)
    pair.both("list", rc=0)  # table, namespace names made equal
    mine, theirs = pair.local("list", "--json"), pair.remote("list", "--json")
    assert mine.returncode == theirs.returncode == 0

    def key(a: dict) -> tuple:
        return (a["port_id"], a["instance_id"], a["vif_type"], a["strategy"], a["devices"], a["status"],
                a["mac"], a["devname"])

    assert [key(a) for a in json.loads(mine.stdout)] == [key(a) for a in json.loads(theirs.stdout)]
    assert [a["instance_id"] for a in json.loads(mine.stdout)] == ["vm-1"] * 3
    assert {a["netns"] for a in json.loads(theirs.stdout)} == {pair.agent_ns}


def test_check_clean_then_drift(report_pair):
    pair = report_pair
    docs = [port(1), port(2), port(3)]
    pair.both("plug", pair.file("ports.json", docs), rc=0)
    mine, _ = pair.both("check", rc=0)
    assert mine.stdout == "3 port(s) checked, 0 with drift\n"
    pair.both("check", "--json", rc=0)
    for ns in (pair.local_ns, pair.agent_ns):
        subprocess.run(["ip", "-n", ns, "link", "del", devname(docs[1])], check=True)
    mine, _ = pair.both("check", rc=3)
    assert mine.stdout.startswith(f"{docs[1]['id']}: ") and "1 with drift" in mine.stdout
    pair.both("check", "--json", rc=3)
    pair.both("check", docs[0]["id"], rc=0)  # only the ports named
    pair.both("check", docs[1]["id"], docs[2]["id"], rc=3)
    pair.both("plug", pair.file("ports.json", docs), rc=0)  # a plug repairs it
    pair.both("check", rc=0)


def test_unplug_by_id_file_and_all(pair):
    docs = [port(i) for i in range(1, 7)]
    pair.both("plug", pair.file("ports.json", docs), rc=0)
    mine, _ = pair.both("unplug", docs[0]["id"], "never-plugged", rc=0)
    assert mine.stdout == f"unplugged {docs[0]['id']}\nnever-plugged: no record, nothing to do\n"
    pair.both("unplug", docs[0]["id"], "--json", rc=0)  # absent is success
    mine, _ = pair.both("unplug", "--file", pair.file("two.json", docs[1:3]), rc=0)
    assert mine.stdout.count("unplugged") == 2
    mine, _ = pair.both("unplug", "--all", rc=0)
    assert mine.stdout.count("unplugged") == 3
    pair.both("unplug", rc=2)  # nothing named: the same usage line
    pair.both("list", rc=0)
    pair.both("gc", rc=0)


def test_gc_finds_and_removes_the_same(pair):
    pair.both("plug", pair.file("ports.json", [port(1)]), rc=0)
    mine, _ = pair.both("gc", rc=0)
    assert mine.stdout == "0 item(s); run with --force to remove\n"
    pair.stray("stray.json", port(9))
    mine, _ = pair.both("gc", rc=0)
    assert "tap00000009-c0" in mine.stdout and "4 item(s)" in mine.stdout
    pair.both("gc", "--json", rc=0)
    mine, _ = pair.both("gc", "--force", rc=0)
    assert "removed" in mine.stdout
    pair.both("gc", "--json", rc=0)
    pair.both("check", rc=0)  # the recorded port was left alone


# ---------------------------------------------------------------------------- the client itself


def test_no_agent_is_one_line_and_exit_1(tmp_path):
    missing = str(tmp_path / "nobody.sock")
    for args in (["plug", str(tmp_path / "x.json")], ["list"], ["check"], ["unplug", "--all"], ["gc"]):
        if args[0] == "plug":
            (tmp_path / "x.json").write_text(json.dumps(port(1)))
        r = run(*args, "--agent", missing)
        assert r.returncode == 1, (args, r)
        assert r.stdout == ""
        assert r.stderr == (f"vifwire: agent: no agent listening on {missing} (no such socket); start it with "
                            "`vifwire agent` or drop --agent\n"), r.stderr
    # a socket file nobody listens on (an agent killed with -9)
    import socket

    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    r = run("list", "--agent", stale)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "connection refused" in r.stderr, r.stderr


def test_env_var_and_agent_owned_options(pair):
    r = run("plug", pair.file("one.json", port(1)), env=_env(VIFWIRE_AGENT=pair.agent.sock))
    assert r.returncode == 0, r.stderr
    r = run("list", "--json", env=_env(VIFWIRE_AGENT=pair.agent.sock))
    assert [a["port_id"] for a in json.loads(r.stdout)] == [port(1)["id"]]
    # the agent owns its namespace, database and OVSDB: saying otherwise is refused ...
    for opt in (["--netns", pair.local_ns], ["--state", pair.local_db], ["--ovsdb", "unix:/x"]):
        r = run("list", "--agent", pair.agent.sock, *opt)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot be used with --agent" in r.stderr, r
    # ... unless it only comes from the environment (set for every command)
    r = run("list", "--agent", pair.agent.sock, env=_env(VIFWIRE_STATE=pair.local_db))
    assert r.returncode == 0 and port(1)["id"] in r.stdout, r.stderr
    # unplug by the agent uses the agent's host facts
    r = run("unplug", "--all", "--firewall", "--agent", pair.agent.sock)
    assert r.returncode == 2 and "--firewall cannot be used with --agent" in r.stderr
    # facts and guest options given on the command line reach the agent for this request
    mine, _ = pair.both("plug", pair.file("two.json", port(2)), "--json", "--queues", "2", rc=0)
    assert 'queues="2"' in json.loads(mine.stdout)[0]["guest"]["xml"]
    mine, _ = pair.both("plug", pair.file("three.json", port(3)), "--json", "--model", "e1000", "--virt-type",
                        "qemu", "--bandwidth-in", "1000,2000,", "--hypervisor", "libvirt", rc=0)
    assert '<model type="e1000"/>' in json.loads(mine.stdout)[0]["guest"]["xml"]
    mine, _ = pair.both("plug", pair.file("four.json", port(4)), "--json", "--hypervisor", "lxd", rc=0)
    assert json.loads(mine.stdout)[0]["guest"]["kind"] == "lxd"
    r = run("plug", pair.file("two.json", port(2)), "--agent", pair.agent.sock, "--libvirt-version", "x")
    assert r.returncode == 2 and "libvirt_version" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_agent_path_imports_nothing_heavy(pair, tmp_path):
    pair.remote("plug", pair.file("one.json", port(1)))
    runs = [["plug", pair.file("one.json", port(1))], ["plug", pair.file("bad.json", [{"id": 1}])], ["list"],
            ["check"], ["unplug", "none"], ["gc"], ["list", "--json"]]
    for args in runs:
        out = str(tmp_path / "modules.json")
        code = ("import json, sys\nfrom vifwire.cli.main import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
                f"    open({out!r}, 'w').write(json.dumps(sorted(sys.modules)))\n")
        r = subprocess.run([sys.executable, "-c", code, *args, "--agent", pair.agent.sock], capture_output=True,
                           text=True, env=_env(), timeout=60)
        assert "Traceback" not in r.stderr, r.stderr
        with open(out) as f:
            mods = json.load(f)
        heavy = [m for m in mods if m.startswith(HEAVY)]
        assert heavy == [], (args, heavy)
        assert "vifwire.client" in mods


def test_client_library(agent_ns):
    """What the CLI does not use: health, one port, events; errors carry the agent's lines."""
    from vifwire.client import AgentClient, AgentError, AgentUnavailable

    ns, a = agent_ns
    c = AgentClient(a.sock, timeout=30)
    h = c.health()
    assert h["ready"] and h["netns"] == ns
    [r] = c.plug([port(1)], guest={"model": "e1000"}, instance="vm-9")
    assert r["ok"] and '<model type="e1000"/>' in r["guest"]["xml"]
    assert c.get(port(1)["id"])["instance_id"] == "vm-9"
    assert c.get("never-plugged") is None
    ev = c.events(since=0, wait=0)
    assert any(e["port_id"] == port(1)["id"] for e in ev["events"]), ev
    with pytest.raises(AgentError) as exc:
        c.plug([port(2)], facts={"hypervisor": "xen"})
    assert exc.value.status == 400 and exc.value.exit_code == 2
    assert exc.value.lines == ["request: facts.hypervisor: must be one of libvirt, lxd"]
    twin = dict(port(1), id="0000abcd-c0fe-4000-8000-00000000c0fe")
    with pytest.raises(AgentError) as exc:
        c.plug(json.dumps(twin))
    assert exc.value.status == 409 and exc.value.exit_code == 2 and "(recorded)" in str(exc.value)
    assert c.unplug(ids=[port(1)["id"]]) == {"unplugged": [port(1)["id"]], "not_recorded": [], "problems": []}
    with pytest.raises(AgentUnavailable) as gone:
        AgentClient(a.sock + ".nope").list()
    assert gone.value.exit_code == 1 and "no such socket" in str(gone.value)
