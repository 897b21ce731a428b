"""The etcd key layout of fleet mode, in one place.

The operator (``vifwire fleet``) writes desired ports under ``hosts/``, each
agent reports under ``status/`` and registers itself under ``agents/``. Every
writer and reader builds keys here, so the layout cannot drift between them.
The version segment (``v1``) lets a future layout live beside this one during
an upgrade instead of being reinterpreted by old agents.

Names are validated because they become path segments: a ``/`` in a host
name would silently move its keys under another host's prefix.
"""

from __future__ import annotations

PREFIX = "/vifwire/v1"
AGENTS_PREFIX = f"{PREFIX}/agents/"
#: DNS's limit for a host name; port ids (UUIDs in practice) are far shorter.
MAX_NAME = 253


def _check(kind: str, name: str) -> str:
    """Return ``name`` if it can be one key segment, else ValueError (one line)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string")
    if len(name) > MAX_NAME:
        raise ValueError(f"{kind} {name[:40]!r}...: longer than {MAX_NAME} characters")
    if "/" in name:
        raise ValueError(f"{kind} {name!r}: must not contain '/'")
    if not name.isprintable():
        raise ValueError(f"{kind} {name!r}: must contain only printable characters")
    return name


def check_host(host: str) -> str:
    return _check("host name", host)


def check_port_id(port_id: str) -> str:
    return _check("port id", port_id)


def desired_prefix(host: str) -> str:
    return f"{PREFIX}/hosts/{check_host(host)}/ports/"


def desired_key(host: str, port_id: str) -> str:
    return desired_prefix(host) + check_port_id(port_id)


def status_prefix(host: str) -> str:
    return f"{PREFIX}/status/{check_host(host)}/"


def status_key(host: str, port_id: str) -> str:
    return status_prefix(host) + check_port_id(port_id)


def agent_key(host: str) -> str:
    return AGENTS_PREFIX + check_host(host)


def port_id_of(key: str, prefix: str) -> str:
    """The last segment of ``key`` below ``prefix``.

    Raises ValueError for a key outside the prefix or one nested deeper, so a
    stray key written by hand is reported instead of becoming a bogus port.
    """
    if not key.startswith(prefix):
        raise ValueError(f"key {key!r} is not under {prefix!r}")
    return _check("port id", key[len(prefix):])
