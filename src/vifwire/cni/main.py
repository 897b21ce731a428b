"""``vifwire-cni``: a CNI plugin, run by the container runtime once per verb.

Thin: it reads the CNI_* variables and the network configuration, and
either hands both to the agent (``POST /v1/cni``) or, with no agent
configured or none answering, does the same work in this process. The thin
path imports ``os``, ``sys``, the bare HTTP exchange and :mod:`.wire`, and
nothing else: a pod's start-up pays for every module (docs/cni.md,
"Performance"). The runtime's environment may hold nothing but PATH and the
CNI_* variables (podman's cleanup process), so every setting comes from the
network configuration.
"""

from __future__ import annotations

import os
import sys

#: Where the agent listens unless the configuration's ``agent`` says otherwise.
DEFAULT_AGENT = "/run/vifwire/agent.sock"
#: Seconds an agent may take for one invocation (an ADD waits behind others in its writer).
AGENT_TIMEOUT = 300.0
#: CNI error codes this module gives itself (the rest come from the use case, SPEC.md "Error").
TRY_AGAIN, INTERNAL = 11, 199


def agent_socket(text: str) -> str | None:
    """The agent socket the configuration asks for: its ``agent`` field, else
    the default if it exists; ``"agent": ""`` means never. A configuration that
    cannot be read gets None: the in-process path reports what is wrong."""
    from vifwire.cni import wire

    try:
        conf = wire.loads(text)
    except ValueError:
        return None
    agent = conf.get("agent") if isinstance(conf, dict) else None
    if agent == "" or (agent is not None and not isinstance(agent, str)):
        return None
    if agent:
        return agent
    return DEFAULT_AGENT if os.path.exists(DEFAULT_AGENT) else None


def via_agent(sock: str, env: dict[str, str], text: str) -> tuple[int, dict | None] | None:
    """The agent's ``(exit code, output)``, or None when no agent answers the
    socket (then this process does the work)."""
    from vifwire.client.http import TransportError, exchange
    from vifwire.cni import wire

    body = wire.dumps({"env": env, "config": text}).encode()
    try:
        status, _, raw = exchange(sock, "POST", "/v1/cni", body, AGENT_TIMEOUT)
    except TransportError as exc:
        if exc.connecting:
            return None  # nobody listening: wire in-process (docs/cni.md, "Agent or in-process")
        # it may or may not have done it: the runtime's next DEL settles either way
        return 1, _error(TRY_AGAIN, f"agent {sock}: {exc} (is the agent stuck or did it stop?)", text)
    try:
        answer = wire.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        answer = None
    if status == 200 and isinstance(answer, dict) and isinstance(answer.get("exit"), int):
        return answer["exit"], answer.get("output")
    line = answer.get("error") if isinstance(answer, dict) else None
    code = TRY_AGAIN if status == 503 else INTERNAL
    return 1, _error(code, f"agent {sock} answered {status}: {line or 'no error line'}", text)


def version(text: str) -> tuple[int, dict]:
    """VERSION: the supported versions, echoing the one asked for (SPEC.md, "VERSION")."""
    from vifwire.cni import wire
    from vifwire.service.cni.spec import version_result

    try:
        asked = wire.loads(text).get("cniVersion") if text.strip() else None
    except (ValueError, AttributeError):
        asked = None
    return 0, version_result(asked if isinstance(asked, str) else None)


def _error(code: int, msg: str, text: str) -> dict:
    from vifwire.cni import wire

    try:
        version = wire.loads(text).get("cniVersion")
    except (ValueError, AttributeError):
        version = None
    return {"cniVersion": version if isinstance(version, str) else "1.1.0", "code": code, "msg": msg}


def in_process(env: dict[str, str], text: str) -> tuple[int, dict | None]:
    import logging

    from vifwire.service.cni.invoke import invoke

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="vifwire-cni: %(message)s")
    raw = os.environ.get("VIFWIRE_FAIL_AT_STEP")  # fault injection for tests (as the CLI's)
    fail_at = int(raw) if raw and raw.isdigit() else None
    services = []

    def backend(conf):  # only once the invocation is valid: VERSION and bad input need no service
        from vifwire.service.cni.local import LocalBackend
        from vifwire.service.wiring import WiringService

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
    command = env.get("CNI_COMMAND")
    if command == "VERSION":  # asked before every use of a network (podman): kept as light as the thin path
        answer = version(text)
    elif command:
        sock = agent_socket(text)
        if sock:
            answer = via_agent(sock, env, text)
    if answer is None:
        answer = in_process(env, text)  # every input error too
    code, output = answer
    if output is not None:
        from vifwire.cni import wire

        sys.stdout.write(wire.dumps(output) + "\n")
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
