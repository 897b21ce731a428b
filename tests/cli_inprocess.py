"""Run the ``vifwire`` CLI in the test's own process and catch what it answered.

Tests that feed the CLI many documents (the property tests in
tests/test_cli_fuzz.py, the vdpa options in tests/test_hostfacts_vdpa.py)
call :func:`vifwire.cli.main.main` directly rather than start a process per
case, so pytest's monkeypatch (a fake sysfs, for one) reaches the code under
test. ``main`` reports an exit code by raising SystemExit and writes to
stdout/stderr, which pytest's ``capsys`` captures; :func:`run_cli` turns
that into ``(code, stdout, stderr)``.
"""

from __future__ import annotations

import io
import sys

from vifwire.cli.main import main


def run_cli(argv: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    """``vifwire ARGV`` with ``stdin`` as its standard input: ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err
