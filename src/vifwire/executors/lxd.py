"""The ``lxd_nic`` step: the container end handed to an LXD instance (docs/lxd.md).

Args (:mod:`vifwire.planner.plan`): ``instance``, ``socket``, ``device``,
``nic`` (the device config), ``mac``. Listed in
:mod:`vifwire.executors.registry`; talks to LXD through :mod:`vifwire.lxd`.

* ``apply`` reads the instance and, unless its device ``device`` already is
  ``nic`` (or a device an older version named differently - the NIC with
  the port's MAC - has the same parent), writes the devices with the NIC
  added (a ``PUT`` with ``If-Match``, retried on 412). LXD hot-plugs it
  into a running instance within the operation: the ``tin`` end is moved
  into the container and renamed. The undo puts the devices back as they
  were, if nobody has changed that device since.
* ``remove`` detaches by name, else the NIC whose ``hwaddr`` is the port's
  MAC (:func:`vifwire.renderers.lxd.device_to_detach`, nova-lxd's rule).
  LXD moves the NIC back to the host (original name and MAC, down) before
  its operation ends, so the veth steps after it delete the pair on the
  host. An instance that is gone is success (nothing left to detach).
* ``verify`` reads each instance once per check: the device is there with
  the recorded parent and MAC.

Nothing here decides which device a port gets or where it goes: the step
says it (:mod:`vifwire.planner.lxd`).
"""

from __future__ import annotations

import logging
from typing import Any

from vifwire.errors import HostError
from vifwire.executors.base import HostContext, Undo
from vifwire.lxd import Instance, LxdClient, LxdError, LxdUnreachable, NoSuchInstance
from vifwire.planner.plan import Step
from vifwire.renderers.lxd import device_to_detach

log = logging.getLogger("vifwire.executors.lxd")

#: Seconds for one LXD call, its operation (a hot-plug or unplug) included.
TIMEOUT = 30.0


def nic_matches(have: dict[str, Any], want: dict[str, Any]) -> bool:
    """``have`` is (at least) the device ``want`` describes; MACs in any case."""
    for key, value in want.items():
        got = have.get(key)
        if key == "hwaddr":
            if str(got or "").lower() != str(value).lower():
                return False
        elif got != value:
            return False
    return True


def _client(args: dict[str, Any]) -> LxdClient:
    return LxdClient(args["socket"], timeout=TIMEOUT)


def _found(devices: dict[str, dict[str, Any]], a: dict[str, Any]) -> str | None:
    """The port's device among ``devices``: by name, else the NIC with its MAC."""
    return device_to_detach(devices, a["device"], a["mac"])


def _plug_error(ctx: HostContext, step: Step, exc: LxdError) -> HostError:
    """One line naming the input that is wrong: the socket, the instance, or the device."""
    a = step.args
    if isinstance(exc, LxdUnreachable):
        return HostError(ctx.port_id, "lxd_socket", f"{exc.problem} (is LXD running there? --lxd-socket)")
    if isinstance(exc, NoSuchInstance):
        return HostError(ctx.port_id, "lxd_instance", f"LXD at {a['socket']} has no instance {a['instance']!r}")
    return HostError(ctx.port_id, "lxd_nic", f"LXD could not add device {a['device']} to instance "
                                             f"{a['instance']}: {exc.problem}")


class LxdNicHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        name, want = a["device"], dict(a["nic"])
        before: dict[str, Any] = {}

        def add(devices: dict[str, dict[str, Any]]) -> dict | None:
            key = _found(devices, a)
            if key is not None and nic_matches(devices[key], {"parent": want["parent"]}) and (
                    key != name or nic_matches(devices[key], want)):
                return None  # there already (under its old name, if an older version made it)
            before["old"] = devices.get(name)
            devices[name] = want
            return devices

        try:
            with _client(a) as lxd:
                changed = lxd.change_devices(a["instance"], add)
        except LxdError as exc:
            raise _plug_error(ctx, step, exc) from None
        if changed is None:
            log.debug("%s: already a device of LXD instance %s", name, a["instance"])
            return None
        log.debug("%s: added to LXD instance %s (%s)", name, a["instance"], changed.status or "state unknown")
        old = before.get("old")

        def undo() -> None:
            def back(devices: dict[str, dict[str, Any]]) -> dict | None:
                cur = devices.get(name)
                if cur is None or not nic_matches(cur, want):
                    return None  # changed by someone else since: theirs now
                if old is None:
                    del devices[name]
                else:
                    devices[name] = old
                return devices

            try:
                with _client(a) as lxd:
                    lxd.change_devices(a["instance"], back)
            except NoSuchInstance:
                pass
        return undo

    def remove(self, step: Step, ctx: HostContext) -> None:
        self.remove_bulk([step], ctx)

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        """Detach every step's device: one read and one write per instance."""
        by_instance: dict[tuple[str, str], list[Step]] = {}
        for s in steps:
            by_instance.setdefault((s.args["socket"], s.args["instance"]), []).append(s)
        problems: list[str] = []
        for (socket, instance), group in by_instance.items():
            gone: list[str] = []

            def detach(devices: dict[str, dict[str, Any]]) -> dict | None:
                gone.clear()
                for s in group:
                    key = _found(devices, s.args)
                    if key is not None:
                        gone.append(key)
                        del devices[key]
                return devices if gone else None

            try:
                with LxdClient(socket, timeout=TIMEOUT) as lxd:
                    changed = lxd.change_devices(instance, detach)
            except NoSuchInstance:
                continue  # nothing left to detach from
            except LxdError as exc:
                names = ", ".join(s.args["device"] for s in group)
                problems.append(f"LXD at {socket}: {exc.problem}; device(s) {names} may still be on "
                                f"instance {instance}")
                continue
            if changed is not None:
                wanted = {s.args["device"] for s in group}
                log.debug("detached %s from LXD instance %s%s", ", ".join(gone), instance,
                          "" if set(gone) <= wanted else " (found by MAC: named by an older version)")
        if problems:  # the engine names the step; unplug reports it and goes on
            raise LxdError("; ".join(problems))

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        return self.verify_many([step], ctx)[0]

    def verify_many(self, steps: list[Step], ctx: HostContext) -> list[list[str]]:
        """Drift lines per step, reading each instance once."""
        seen: dict[tuple[str, str], Instance | str] = {}
        out = []
        for s in steps:
            a = s.args
            key = (a["socket"], a["instance"])
            if key not in seen:
                try:
                    with _client(a) as lxd:
                        seen[key] = lxd.instance(a["instance"])
                except NoSuchInstance:
                    seen[key] = f"LXD instance {a['instance']} is gone"
                except LxdError as exc:
                    seen[key] = f"cannot read LXD instance {a['instance']}: {exc.problem}"
            got = seen[key]
            out.append([f"{a['device']}: {got}"] if isinstance(got, str) else self.drift(s, got))
        return out

    @staticmethod
    def drift(step: Step, inst: Instance) -> list[str]:
        a = step.args
        key = _found(inst.devices, a)
        if key is None:
            return [f"{a['device']}: not a device of LXD instance {inst.name}"]
        have, want = inst.devices[key], a["nic"] if key == a["device"] else {"parent": a["nic"]["parent"]}
        return [f"{a['device']}: LXD device {key} has {k} {have.get(k)!r}, recorded {v!r}"
                for k, v in want.items() if not nic_matches(have, {k: v})]
