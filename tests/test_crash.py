"""kill -9 at any moment leaves every port whole or absent.

A 1,000-port `vifwire plug` is killed with SIGKILL at a random moment, ten
times over (seeded, so a failure can be replayed); after each kill the same
plug is run again and must converge: exactly 1,000 taps, every route and
filter element once, every record `plugged`, check clean. The same for a kill
during `unplug --all`: running it again leaves nothing.
"""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from routed_host import VIFWIRE, assert_all_wired, assert_nothing_left, chunks, expected_elements_per_port
from vifwire.sandbox import netns

pytestmark = pytest.mark.root

ROUNDS = 10
SEED = 20261206


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([VIFWIRE, *argv], capture_output=True, text=True, timeout=600)


def _killed(argv: list[str], after: float) -> int:
    """Start a vifwire command and SIGKILL it ``after`` seconds later (if still running)."""
    p = subprocess.Popen([VIFWIRE, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    p.kill()
    return p.wait()


def test_kill_9_during_plug_and_unplug_converges(tmp_path):
    per_port = expected_elements_per_port(tmp_path)
    rng = random.Random(SEED)
    ports = tmp_path / "ports.json"
    ports.write_text(json.dumps([p for c in chunks() for p in c]))
    db = str(tmp_path / "state.db")
    killed_mid_run = 0
    with netns.sandbox("kc") as ns:
        host = ["--netns", ns, "--state", db]
        for _ in range(ROUNDS):
            rc = _killed(["plug", str(ports), *host], rng.uniform(0.05, 1.2))
            killed_mid_run += rc == -9
            res = _run("plug", str(ports), *host)
            assert res.returncode == 0, res.stderr[-2000:]
            assert_all_wired(ns, db, per_port)
            rc = _killed(["unplug", "--all", *host], rng.uniform(0.05, 0.6))
            killed_mid_run += rc == -9
            res = _run("unplug", "--all", *host)
            assert res.returncode == 0, res.stderr[-2000:]
            assert_nothing_left(ns, db)
    assert killed_mid_run >= ROUNDS, "the kills must land while the commands run, not after"
