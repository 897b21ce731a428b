"""What a daemon fixture needs from /proc to leave the host as it found it.

The podman and LXD fixtures (tests/podman_fixtures.py, tests/lxd_fixtures.py)
both start a daemon in a test namespace whose helpers double-fork (conmon,
the LXD container monitors), mount the host's cgroup hierarchies again in
their own mount namespace, and leave cgroup directories behind. Both tear
down the same way, so the means live here once:

* process trees: the daemon's parent is made a child sub-reaper
  (:data:`SUBREAPER_EXEC`) so every helper stays its descendant; teardown
  finds them with :func:`descendants` and kills them with :func:`kill_all`,
  by PID *and* start time, so a PID the kernel has handed to another process
  since is never signalled;
* mount tables: :func:`cgroup_mounts` is what must be mounted again behind
  ``ip netns exec`` (its fresh /sys hides the hierarchies);
  :func:`cgroup_mountpoints` is where this process sees them;
* cgroup directories: :func:`rmdir_trees` removes trees bottom-up with
  ``rmdir`` only, so it can never delete anything but empty directories (a
  cgroup is empty once its processes are gone), and retries the busy ones
  for a while because a cgroup stays busy until its last process is reaped.

Which directories are ours to remove is each fixture's own decision (and its
own safety assertion); this module only does the removal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable

#: ``python -c SUBREAPER_EXEC PROGRAM ARGS...``: become a child sub-reaper
#: (``prctl(PR_SET_CHILD_SUBREAPER)``, which survives ``execve``), then exec
#: PROGRAM, so the processes PROGRAM's children double-fork stay its descendants.
SUBREAPER_EXEC = ("import ctypes, os, sys; ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0); "
                  "os.execv(sys.argv[1], sys.argv[1:])")

Mount = tuple[str, str, str, str]  # (source, mountpoint, fstype, options), as /proc/*/mounts lists them


# --------------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[int, str, str] | None:
    """``(ppid, state, starttime)`` of ``pid``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(rest[1]), rest[0], rest[19]


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks after boot); None if it is gone.

    With its start time a PID names one process for good: the others here
    take ``{pid: starttime}`` and leave alone a PID that was reused since."""
    st = _stat(pid)
    return st[2] if st else None


def descendants(root: int, zombies: bool = False) -> dict[int, str]:
    """``{pid: starttime}`` of every live (and with ``zombies``, also exited) descendant of ``root``."""
    table = {int(e): st for e in os.listdir("/proc") if e.isdigit() and (st := _stat(int(e)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        _, state, start = table[pid]
        if zombies or state != "Z":
            out[pid] = start
        todo.extend(children.get(pid, []))
    return out


def alive(pid: int, start: str | None = None) -> bool:
    """``pid`` runs (not a zombie) and, given ``start``, is still the process that started then."""
    st = _stat(pid)
    return bool(st) and st[1] != "Z" and (start is None or st[2] == start)


def kill_all(procs: dict[int, str], timeout: float = 10.0) -> list[int]:
    """SIGKILL each ``{pid: starttime}`` still alive (never a recycled PID), wait up to ``timeout``
    for them to die; the PIDs signalled."""
    killed = []
    for pid, start in procs.items():
        if alive(pid, start):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    deadline = time.monotonic() + timeout
    while any(alive(p, s) for p, s in procs.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def reap(pids: Iterable[int]) -> None:
    """``waitpid(WNOHANG)`` each of ``pids`` that is our child: a daemon's orphans are adopted by
    this process when it is a sub-reaper (vifwire.sandbox.ovs_daemon makes it one) and would
    stay zombies; a PID that is not our child is passed over."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


# --------------------------------------------------------------------------- mounts


def read_mounts(path: str = "/proc/self/mounts") -> list[Mount]:
    """The mounts a /proc mount table lists. An unreadable table raises (OSError) rather than
    look empty: "nothing mounted" is what lets a teardown delete a directory tree."""
    with open(path) as f:
        rows = [line.split() for line in f]
    return [(r[0], r[1], r[2], r[3]) for r in rows if len(r) >= 4]


def cgroup_mounts(path: str = "/proc/1/mounts") -> list[Mount]:
    """The cgroup mounts in ``path`` (the /sys/fs/cgroup tmpfs first): by default the host's,
    as PID 1 sees them, which a daemon behind ``ip netns exec`` must mount again."""
    return [m for m in read_mounts(path) if m[1] == "/sys/fs/cgroup" or m[1].startswith("/sys/fs/cgroup/")]


def cgroup_mountpoints() -> list[str]:
    """Where this process sees the cgroup hierarchies (v1 controllers and v2)."""
    return [m for _, m, t, _ in read_mounts("/proc/self/mounts") if t in ("cgroup", "cgroup2")]


# --------------------------------------------------------------------------- directory trees


def rmdir_trees(tops: Iterable[str], timeout: float = 10.0) -> list[str]:
    """``rmdir`` every directory of each tree in ``tops``, deepest first; the directories left.

    Only empty directories go (a cgroup directory counts as empty once no
    cgroup is below it, whatever its control files). One that is busy
    (EBUSY, or ENOTEMPTY under a busy one: a cgroup whose last process is
    still exiting) is tried again every 0.1 s until ``timeout`` (one deadline
    for all the trees); a tree that is already gone is no error."""
    left: list[str] = []
    deadline = time.monotonic() + timeout
    for top in tops:
        while os.path.isdir(top):
            busy = []
            for d in sorted((d for d, _, _ in os.walk(top)), key=lambda x: x.count("/"), reverse=True):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise
                    busy.append(d)
            if not busy:
                break
            if time.monotonic() > deadline:
                left += busy
                break
            time.sleep(0.1)
    return left
