"""Per-device sysctls: the ``sysctls`` step, and the /proc/sys/net file access
the other kernel handlers need (a bridge's ``disable_ipv6``).

``/proc/sys/net`` shows the network namespace of the *reading thread*
(proc(5)), so every function here that touches a file runs on the
namespace's thread (``worker(ctx).call(...)``); paths are confined to
/proc/sys/net.
"""

from __future__ import annotations

import os
from typing import Any

from vifwire.executors.base import HostContext, Undo
from vifwire.executors.kernel.common import fail, log, worker
from vifwire.planner.plan import Step

PROC_SYS_NET = "/proc/sys/net/"


def sysctl_path(key: str, dev: str | None) -> str:
    """``/proc/sys/net/<key>`` with ``{dev}`` filled in; ValueError outside /proc/sys/net."""
    rel = key.replace("{dev}", dev or "")
    path = os.path.normpath(PROC_SYS_NET + rel.lstrip("/"))
    if not path.startswith(PROC_SYS_NET) or "{" in rel:
        raise ValueError(f"sysctl {key!r} is not under {PROC_SYS_NET}")
    return path


def sysctl_read(path: str) -> str:
    # os.open/os.read rather than open(): a plug of 1,000 routed ports reads
    # and writes 7,000 of these files, and the buffered text layer costs 4x
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def sysctl_write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def disable_ipv6(path: str) -> None:
    """Write 1 to a ``disable_ipv6`` file, unless the kernel has no IPv6 at all."""
    try:
        sysctl_write(path, "1")
    except FileNotFoundError:
        if os.path.isdir(PROC_SYS_NET + "ipv6"):
            raise
        # a kernel without IPv6 (ipv6.disable=1): nothing to disable


def ipv6_off(names: list[str]) -> None:
    """``disable_ipv6=1`` on each device, in one trip to the namespace's thread.

    For host-side devices that carry no address (bridge ports, OVS ports, a
    container's end before the container takes it): done while they have no
    carrier, IPv6 never starts on them - no link-local address, DAD, router
    solicitation or MLD report, which on a bridge of N ports are flooded to
    all of them (docs/kernel.md, "IPv6 on").
    """
    for name in names:
        disable_ipv6(sysctl_path("ipv6/conf/{dev}/disable_ipv6", name))


def sysctl_swap(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Set each path to its value; returns (path, old) for the ones that changed.

    All or nothing: on a failure the ones already changed are put back.
    """
    changed: list[tuple[str, str]] = []
    try:
        for path, value in items:
            old = sysctl_read(path)
            if old != value:
                sysctl_write(path, value)
                changed.append((path, old))
    except BaseException:
        for path, old in reversed(changed):
            try:
                sysctl_write(path, old)
            except OSError:
                pass
        raise
    return changed


def sysctl_restore(items: list[tuple[str, str]]) -> None:
    for path, old in reversed(items):
        try:
            sysctl_write(path, old)
        except FileNotFoundError:
            pass  # the device is gone, and its settings with it


def sysctl_swap_many(batches: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]] | BaseException]:
    """:func:`sysctl_swap` for several steps in one trip to the namespace thread."""
    out: list[list[tuple[str, str]] | BaseException] = []
    for items in batches:
        try:
            out.append(sysctl_swap(items))
        except (OSError, ValueError) as e:
            out.append(e)
    return out


def sysctl_read_many(paths: list[str]) -> list[str | None]:
    """The values of ``paths`` (None for a missing file), in one trip to the thread."""
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(sysctl_read(p))
        except FileNotFoundError:
            out.append(None)
    return out


class SysctlsHandler:
    #: the engine hands every port's sysctls step of a run to apply_many
    batched = True
    #: per-device settings live in the device (its /proc/sys/net/*/conf/<dev> goes with it)
    gone_with_device = True

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """Every port's files in one call on the namespace's thread (each
        call there costs a thread switch, more than the writes themselves)."""
        w = worker(ctx)
        batches: list[list[tuple[str, str]] | Exception] = []
        for s in steps:
            try:
                batches.append([(sysctl_path(k, s.args.get("dev")), str(v))
                                for k, v in (s.args.get("values") or {}).items()])
            except ValueError as e:
                batches.append(e)
        todo = [b for b in batches if not isinstance(b, Exception)]
        done = iter(w.call(sysctl_swap_many, todo))
        out: list[Undo | None | Exception] = []
        for s, b in zip(steps, batches):
            res = b if isinstance(b, Exception) else next(done)
            if isinstance(res, BaseException):
                out.append(fail(ctx, s, f"cannot set sysctl: {res}"))
            elif res:
                out.append(self._undo(w, res))
            else:
                out.append(None)
        log.debug("sysctls: %d step(s) in one call, %d changed", len(steps),
                  sum(1 for o in out if o is not None and not isinstance(o, Exception)))
        return out

    @staticmethod
    def _undo(w: Any, changed: list[tuple[str, str]]) -> Undo:
        return lambda: w.call(sysctl_restore, changed)

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        a = step.args
        w = worker(ctx)
        try:
            items = [(sysctl_path(k, a.get("dev")), str(v)) for k, v in (a.get("values") or {}).items()]
            changed = w.call(sysctl_swap, items)
        except (OSError, ValueError) as e:
            raise fail(ctx, step, f"cannot set sysctl: {e}") from e
        if not changed:
            return None
        log.debug("sysctls of %s: %s changed", a.get("dev"), ", ".join(p for p, _ in changed))
        return lambda: w.call(sysctl_restore, changed)

    def remove(self, step: Step, ctx: HostContext) -> None:
        return None  # per-device settings go away with the device

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        return self.verify_many([step], ctx)[0]

    def verify_many(self, steps: list[Step], ctx: HostContext) -> list[list[str]]:
        """Every step's files read in one call on the namespace's thread."""
        if not steps:
            return []
        wanted: list[list[tuple[str, object, str | None]]] = []  # per step: (key, value, path)
        for s in steps:
            rows = []
            for k, v in (s.args.get("values") or {}).items():
                try:
                    rows.append((k, v, sysctl_path(k, s.args.get("dev"))))
                except ValueError:
                    rows.append((k, v, None))  # a record apply would have refused
            wanted.append(rows)
        paths = list(dict.fromkeys(p for rows in wanted for _, _, p in rows if p is not None))
        now = dict(zip(paths, worker(ctx).call(sysctl_read_many, paths)))
        out = []
        for s, rows in zip(steps, wanted):
            dev = s.args.get("dev")
            lines = []
            for k, v, path in rows:
                if path is None:
                    lines.append(f"{dev}: sysctl {k} is not under {PROC_SYS_NET}")
                elif now[path] is None:
                    lines.append(f"{dev}: sysctl {k} is missing")
                elif now[path] != str(v):
                    lines.append(f"{dev}: {k.replace('{dev}', dev or '')} is {now[path]}, recorded {v}")
            out.append(lines)
        return out
