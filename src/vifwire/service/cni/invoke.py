"""One CNI invocation from its environment and stdin to an exit code and output.

The plugin's in-process path and the agent's ``POST /v1/cni`` both end
here, so a runtime gets the same answer whichever did the work. Nothing
escapes as a traceback: every failure is a CNI error result (SPEC.md,
"Error"), exit code 1.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping

from vifwire.service.cni.config import NetConf, invocation, netconf
from vifwire.service.cni.spec import LATEST, VERSIONS, CniError, version_result

log = logging.getLogger("vifwire.service")


def asked_version(text: str) -> str:
    """The cniVersion of the input if it names one vifwire speaks (for error results)."""
    try:
        v = json.loads(text).get("cniVersion")
    except (ValueError, AttributeError):
        return LATEST
    return v if v in VERSIONS else LATEST


def invoke(env: Mapping[str, str], text: str,
           backend: Callable[[NetConf], Any]) -> tuple[int, dict[str, Any] | None]:
    """``(exit code, output)``; ``backend(conf)`` gives the wiring back end to use."""
    version = asked_version(text)
    try:
        inv = invocation(env)
        if inv.command == "VERSION":
            return 0, version_result(version)
        conf = netconf(text, inv.command)
        from vifwire.service.cni.attach import CniService
        out = CniService(backend(conf)).run(inv, conf, text)
        return 0, out
    except CniError as e:
        log.info("cni %s: error %d: %s", env.get("CNI_COMMAND", "?"), e.code, e.msg)
        return 1, e.to_json(version)
    except Exception as e:  # noqa: BLE001 - a plugin answers with an error result, never a traceback
        from vifwire.service.cni.attach import error_output

        log.exception("cni %s failed", env.get("CNI_COMMAND", "?"))
        return 1, error_output(e, version)
