"""The cross-process lock that makes read-then-write wiring safe.

Two ``vifwire plug`` processes (or a CLI call beside the agent) on one host
both read state and then write it: whether a device or an nftables element
already exists, which OVSDB rows are there, which record a port has. The
kernel makes each single change atomic, not such a pair. One advisory
``flock(2)`` on a file next to the state database serialises the calls that
change the host; calls that only read take it shared. ``flock`` is released by
the kernel when the process dies, so a ``kill -9`` never leaves it held.

Within a process, threads are serialised by the namespace lock of
:class:`vifwire.executors.base.HostContext`; this lock is per open file
description, so one :class:`StateLock` per service is shared by its threads
under that lock.

The lock file is as private as the database: its directory is created 0700
and the file 0600 whatever the umask, never through a symlink, and one owned
by another uid is refused (:func:`vifwire.store.base.open_private_file`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from typing import Iterator

from vifwire.store.base import make_private_dir, open_private_file, tighten

log = logging.getLogger("vifwire.service")


class StateLock:
    """``flock`` on ``<state path>.lock``, re-entrant within the process."""

    def __init__(self, state_path: str):
        self.path = os.path.abspath(state_path) + ".lock"
        self._fd: int | None = None
        self._depth = 0
        self._mode = 0
        self._guard = threading.RLock()

    def _open(self) -> int:
        if self._fd is None:
            make_private_dir(os.path.dirname(self.path))
            fd, _ = open_private_file(self.path, "state lock")
            try:
                tighten(fd, self.path, "state lock")
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    @contextlib.contextmanager
    def hold(self, exclusive: bool = True) -> Iterator[None]:
        """Hold the lock for a block; nested holds in one thread are free.

        A shared hold upgraded to an exclusive one inside it is not needed by
        any caller, so it is refused rather than risking a deadlock.
        """
        with self._guard:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            if self._depth:
                if exclusive and self._mode != fcntl.LOCK_EX:
                    raise RuntimeError("cannot upgrade a shared state lock")
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fd = self._open()
            t0 = time.perf_counter()
            fcntl.flock(fd, mode)
            waited = time.perf_counter() - t0
            if waited > 0.05:
                log.info("waited %.2f s for the state lock %s", waited, self.path)
            self._depth, self._mode = 1, mode
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._guard:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
