"""``vifwire-cni``: a CNI plugin, run by the container runtime once per verb.

Thin: it reads the CNI_* variables and the network configuration, and
either hands both to the agent (``POST /v1/cni``; this path imports only
the standard library, the agent client and the CNI protocol module) or,
with no agent configured or none answering, does the same work in this
process. The runtime's environment may hold nothing but PATH and the CNI_*
variables (podman's cleanup process), so every setting comes from the
network configuration (docs/cni.md).
"""

from __future__ import annotations

import json
import os
import sys


from vifwire.service.cni.config import agent_socket, invocation, netconf
from vifwire.service.cni.spec import CniError, version_result


def _emit(code: int, output: dict[str, Any] | None) -> int:
    if output is not None:
        sys.stdout.write(json.dumps(output, indent=1) + "\n")
        sys.stdout.flush()
    return code


def _via_agent(sock: str, env: dict[str, str], text: str) -> tuple[int, dict[str, Any] | None] | None:
    """The agent's answer, or None when no agent answers (then this process does the work)."""
    from vifwire.client import AgentClient, AgentUnavailable

    try:
        ans = AgentClient(sock, hint="wiring in-process").cni(env, text)
    except AgentUnavailable:
        return None
    return int(ans.get("exit", 1)), ans.get("output")


def _in_process(env: dict[str, str], text: str) -> tuple[int, dict[str, Any] | None]:
    import logging

    from vifwire.service.cni.invoke import invoke
    from vifwire.service.cni.local import LocalBackend
    from vifwire.service.wiring import WiringService

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="vifwire-cni: %(message)s")
    raw = os.environ.get("VIFWIRE_FAIL_AT_STEP")  # fault injection for tests (as the CLI's)
    fail_at = int(raw) if raw and raw.isdigit() else None
    services: list[WiringService] = []

    def backend(conf):
        svc = WiringService(state=conf.state, ovsdb=conf.ovsdb)
        services.append(svc)
        return LocalBackend(svc, fail_at)

    try:
        return invoke(env, text, backend)
    finally:
        for svc in services:
            svc.close()


def main() -> None:
    try:
        text = sys.stdin.read()
    except (OSError, UnicodeDecodeError):
        text = ""
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
    answer = None
    try:
        inv = invocation(env)
        if inv.command == "VERSION":
            asked = json.loads(text).get("cniVersion") if text.strip() else None
            answer = 0, version_result(asked)
        else:
            sock = agent_socket(netconf(text, inv.command).agent)
            if sock:
                answer = _via_agent(sock, env, text)
    except (CniError, ValueError, AttributeError):
        pass  # the in-process path reports it, with the version asked for
    if answer is None:
        answer = _in_process(env, text)
    sys.exit(_emit(*answer))


if __name__ == "__main__":
    main()
