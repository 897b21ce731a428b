"""Concurrent callers on one host never lose each other's work.

Four processes (the CLI, as users run it) and four threads sharing one
WiringService (as the agent will) each plug 250 different routed taps with
anti-spoofing into the same namespace and the same state database, at the
same moment. Afterwards there must be exactly 1,000 taps, 1,000 records, every
port's filter elements exactly once and a clean check; then four unplug in
parallel and the namespace is back to nothing.
"""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from routed_host import (PER_WORKER, VIFWIRE, WORKERS, assert_all_wired, assert_nothing_left, chunks,
                         expected_elements_per_port)
from vifwire.model.loader import load_documents
from vifwire.planner.facts import HostFacts
from vifwire.sandbox import netns
from vifwire.service import WiringService

pytestmark = pytest.mark.root


def test_four_processes_plug_and_unplug_at_once(tmp_path):
    per_port = expected_elements_per_port(tmp_path)
    db = str(tmp_path / "state.db")
    with netns.sandbox("cc") as ns:
        files = []
        for w, c in enumerate(chunks()):
            f = tmp_path / f"ports{w}.json"
            f.write_text(json.dumps(c))
            files.append(f)
        procs = [subprocess.Popen([VIFWIRE, "plug", str(f), "--netns", ns, "--state", db, "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-2000:]
            assert all(r["ok"] for r in json.loads(out))
        assert_all_wired(ns, db, per_port)

        procs = [subprocess.Popen([VIFWIRE, "unplug", "--file", str(f), "--netns", ns, "--state", db],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for f in files]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-2000:]
        assert_nothing_left(ns, db)


def test_four_threads_share_one_service(tmp_path):
    per_port = expected_elements_per_port(tmp_path)
    db = str(tmp_path / "state.db")
    with netns.sandbox("ct") as ns, WiringService(netns=ns, state=db) as svc:
        work = [load_documents(c) for c in chunks()]
        errors: list[BaseException] = []
        barrier = threading.Barrier(WORKERS)

        def run(fn) -> None:
            try:
                barrier.wait()
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        def plug(bs) -> None:
            results = svc.plug(bs, HostFacts())
            bad = [r.error for r in results if not r.ok]
            assert not bad, bad[:3]

        def all_at_once(fn) -> None:
            threads = [threading.Thread(target=run, args=(lambda bs=bs: fn(bs),)) for bs in work]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            assert not errors, errors

        all_at_once(plug)
        assert_all_wired(ns, db, per_port)
        assert svc.check().clean

        def unplug(bs) -> None:
            res = svc.unplug([b.port_id for b in bs])
            assert res.ok and len(res.unplugged) == len(bs), res.problems[:3]

        all_at_once(unplug)
        assert_nothing_left(ns, db)
