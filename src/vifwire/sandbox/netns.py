"""Throwaway network namespaces for the sandbox, tests and benchmarks.

vifwire's safety rule: tests and sandboxed runs do all their work inside
namespaces they create, and always remove them. Everything here is keyed by
the namespace *name*, so cleanup never needs to guess what to delete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from pyroute2 import netns as _netns

PREFIX = "vw-"


def unique_name(tag: str = "sb") -> str:
    """A short, unique namespace name (``vw-<tag>-<hex>``)."""
    return f"{PREFIX}{tag}-{secrets.token_hex(3)}"


def exists(name: str) -> bool:
    return name in _netns.listnetns()


def create(name: str) -> str:
    """Create namespace ``name`` with loopback up; idempotent.

    If anything after the namespace exists fails, the namespace is removed
    again before the error propagates, so a half-made sandbox never leaks.
    """
    fresh = not exists(name)
    try:
        if fresh:
            _netns.create(name)
        from pyroute2 import IPRoute

        with IPRoute(netns=name) as ipr:
            idx = ipr.link_lookup(ifname="lo")
            if idx:
                ipr.link("set", index=idx[0], state="up")
    except BaseException:
        if fresh:
            remove(name)
        raise
    return name


def remove(name: str) -> None:
    """Remove namespace ``name`` if it exists (never fails on absence)."""
    if exists(name):
        with contextlib.suppress(FileNotFoundError):
            _netns.remove(name)


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
