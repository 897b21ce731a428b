"""Delegation to the IPAM plugin, as SPEC.md ("Delegated plugins") says.

The IPAM plugin named by ``ipam.type`` is looked up in the ``CNI_PATH``
directories and executed with the same CNI_* environment and the same
network configuration on stdin; its result (or error) comes back on stdout.
An error result is passed on with its own code and message, prefixed by
the plugin's name, so the runtime sees what the IPAM plugin said. No shell:
the binary is executed directly with a fixed argument list.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Any, Mapping

from vifwire.service.cni.spec import INCOMPATIBLE_VERSION, IO_FAILURE, IPAM_FAILED, CniError, to_internal

log = logging.getLogger("vifwire.service")

TIMEOUT = 60.0


def find(name: str, path: tuple[str, ...]) -> str:
    if "/" in name or not name or name in (".", ".."):
        raise CniError(IPAM_FAILED, f"ipam.type: {name!r} is not a plugin name")
    for d in path:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(IPAM_FAILED, f"ipam.type: plugin {name!r} not found in CNI_PATH ({':'.join(path) or 'empty'})")


def run(command: str, conf_text: str, ipam_type: str, env: Mapping[str, str], path: tuple[str, ...],
        overrides: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Run the IPAM plugin for ``command``; its result in the internal form (None if it printed nothing).

    ``overrides``: CNI_* variables that differ from the caller's (GC of
    another container's attachment: its CNI_CONTAINERID and CNI_IFNAME).
    """
    try:
        return _run(command, conf_text, ipam_type, env, path, overrides)
    except CniError as e:
        if e.code != INCOMPATIBLE_VERSION or '"1.1.0"' not in conf_text:
            raise
    # An IPAM plugin that predates 1.1.0 (host-local <= 1.4) refuses a 1.1.0
    # configuration; ADD, DEL and CHECK did not change in 1.1.0 (SPEC.md,
    # "Changes"), so it is asked again in 1.0.0, whose result is the same.
    data = json.loads(conf_text)
    data["cniVersion"] = "1.0.0"
    return _run(command, json.dumps(data), ipam_type, env, path, overrides)


def _run(command: str, conf_text: str, ipam_type: str, env: Mapping[str, str], path: tuple[str, ...],
         overrides: Mapping[str, str] | None) -> dict[str, Any] | None:
    binary = find(ipam_type, path)
    child_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    child_env.update({k: v for k, v in env.items() if k.startswith("CNI_")})
    child_env.update(overrides or {})
    child_env["CNI_COMMAND"] = command
    try:
        proc = subprocess.run([binary], input=conf_text.encode(), env=child_env, capture_output=True,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CniError(IO_FAILURE, f"ipam {ipam_type} {command}: {e}") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            code, msg = int(err.get("code") or IPAM_FAILED), str(err.get("msg") or "failed")
            details = str(err.get("details") or "")
        except (ValueError, AttributeError, TypeError):
            code, msg = IPAM_FAILED, out or proc.stderr.decode(errors="replace").strip() or "failed"
            details = ""
        raise CniError(code, f"ipam {ipam_type} {command}: {msg}", details)
    if not out:
        return None
    try:
        result = json.loads(out)
    except ValueError:
        raise CniError(IPAM_FAILED, f"ipam {ipam_type} {command}: printed no JSON result") from None
    log.debug("ipam %s %s: %s", ipam_type, command, out)
    return to_internal(result) if isinstance(result, dict) else None
