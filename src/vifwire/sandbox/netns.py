"""Throwaway network namespaces for the sandbox, tests and benchmarks.

vifwire's safety rule: tests and sandboxed runs do all their work inside
namespaces they create, and always remove them. Everything here is keyed by
the namespace *name*, so cleanup never needs to guess what to delete.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
from collections.abc import Iterator

PREFIX = "vw-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def unique_name(tag: str = "sb") -> str:
    """A short, unique namespace name (``vw-<tag>-<hex>``)."""
    return f"{PREFIX}{tag}-{secrets.token_hex(3)}"


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def _valid(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a namespace name vifwire makes or accepts")
    return name


def create(name: str) -> str:
    """Create namespace ``name`` with loopback up; idempotent.

    This is sandbox/test plumbing, not the plug path, so it uses iproute2
    (fixed argv, validated name, no shell): pyroute2's namespace creation
    forks a helper with a 2 s reply timeout that fires on a loaded machine.
    If anything fails half-way the namespace is removed again, so a
    half-made sandbox never leaks.
    """
    _valid(name)
    fresh = not exists(name)
    try:
        if fresh:
            _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
    except BaseException:
        if fresh:
            remove(name)
        raise
    return name


def remove(name: str) -> None:
    """Remove namespace ``name`` if it exists (never fails on absence)."""
    _valid(name)
    if exists(name):
        subprocess.run(["ip", "netns", "delete", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)


def _ip(*argv: str) -> None:
    res = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise OSError(f"ip {' '.join(argv)}: {res.stderr.strip()}")


@contextlib.contextmanager
def sandbox(tag: str = "sb") -> Iterator[str]:
    """A namespace that exists for the ``with`` block and is removed after it."""
    name = create(unique_name(tag))
    try:
        yield name
    finally:
        remove(name)


def netns_path(name: str) -> str:
    return os.path.join("/var/run/netns", name)
