"""Running code inside a network namespace without moving the caller.

``setns(2)`` with ``CLONE_NEWNET`` moves only the calling thread, and several
things are bound to the namespace of the thread that does them:

* a netlink socket (pyroute2's, libnftables') belongs to the namespace it was
  *created* in;
* a tap is created in the namespace its ``/dev/net/tun`` file was *opened* in
  (``TUNSETIFF`` itself then works from any thread);
* ``/proc/sys/net`` shows the namespace of the reading thread
  (proc(5), "/proc/sys/net").

So vifwire never calls ``setns`` on a thread it does not own: each namespace
gets one :class:`NsWorker` thread that enters it once, checks that it got
there, and then runs small functions handed to it. This module is the one
place that does so (the kernel adapter, the nftables binding and the
sandbox's tun "VM" all use it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vifwire.netlink")

#: ``CLONE_NEWNET`` (linux/sched.h), the ``nstype`` of a network namespace.
CLONE_NEWNET = 0x40000000
#: Where ``ip netns add`` bind-mounts named namespaces (ip-netns(8)).
NETNS_RUN_DIR = "/var/run/netns"

_libc: ctypes.CDLL | None = None


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """``setns(2)`` for the calling thread (``os.setns`` is Python >= 3.12)."""
    fn = getattr(os, "setns", None)
    if fn is not None:
        fn(fd, nstype)
        return
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.setns.restype = ctypes.c_int
        _libc = lib
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_file(name: str) -> str:
    """``/var/run/netns/<name>``, or ``name`` itself when it is a path."""
    return name if "/" in name else os.path.join(NETNS_RUN_DIR, name)


def enter(netns: str) -> None:
    """Move the calling thread into ``netns`` and prove it got there.

    Only for threads vifwire owns (an :class:`NsWorker`'s). The check compares
    the namespace file's inode with the thread's own ``/proc/thread-self/ns/net``
    (namespaces(7)): doing the work in the wrong namespace - the host's - must
    never happen, whatever ``setns`` claimed.
    """
    path = netns_file(netns)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
        want = os.fstat(fd)
    finally:
        os.close(fd)
    have = os.stat("/proc/thread-self/ns/net")
    if (want.st_dev, want.st_ino) != (have.st_dev, have.st_ino):
        raise RuntimeError(f"thread did not enter network namespace {netns}")


_STOP = object()


def _serve(netns: str | None, q: queue.SimpleQueue, started: queue.SimpleQueue) -> None:
    # No reference to the NsWorker itself: an unclosed worker can still be
    # collected, and its __del__ then stops this thread.
    try:
        if netns is not None:
            enter(netns)
    except BaseException as e:  # noqa: BLE001 - handed to the creator
        started.put(e)
        return
    started.put(None)
    while True:
        item = q.get()
        if item is _STOP:
            return
        fn, args, reply = item
        try:
            reply.put((True, fn(*args)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            reply.put((False, e))


class NsWorker:
    """Runs functions inside a network namespace, one at a time, on one thread.

    With ``netns=None`` the functions run inline on the caller (the current
    namespace), unless ``thread=True`` asks for a dedicated thread anyway
    (for a library context that must always be used from the same thread).
    Opening the namespace fails with the ``OSError`` of ``open``/``setns``
    (``FileNotFoundError`` when it does not exist); it is never created.

    :meth:`call` is safe from several threads: calls are queued and run in
    order. The functions must not call back into the same worker.
    """

    def __init__(self, netns: str | None, *, thread: bool = False, name: str | None = None,
                 timeout: float | None = None):
        self.netns = netns
        self.timeout = timeout
        self.thread: threading.Thread | None = None
        self.q: queue.SimpleQueue | None = None
        if netns is None and not thread:
            return
        q: queue.SimpleQueue = queue.SimpleQueue()
        started: queue.SimpleQueue = queue.SimpleQueue()
        t = threading.Thread(target=_serve, args=(netns, q, started), daemon=True,
                             name=name or f"vifwire-netns-{netns or 'current'}")
        t.start()
        failure = started.get()
        if failure is not None:
            t.join()
            raise failure
        self.thread, self.q = t, q
        log.debug("namespace thread %s started", t.name)

    @property
    def inline(self) -> bool:
        """True when calls run on the caller (no thread)."""
        return self.q is None

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """``fn(*args)`` inside the namespace; its result, or its exception re-raised."""
        if self.q is None:
            if self.thread is not None:
                raise RuntimeError("namespace worker is closed")
            return fn(*args)
        reply: queue.SimpleQueue = queue.SimpleQueue()
        self.q.put((fn, args, reply))
        wait = self.timeout if timeout is None else timeout
        try:
            ok, value = reply.get(timeout=wait)
        except queue.Empty:
            raise TimeoutError(f"namespace thread {self.thread.name} did not answer "  # type: ignore[union-attr]
                               f"within {wait}s") from None
        if not ok:
            raise value
        return value

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the calls already queued); idempotent."""
        q, self.q = self.q, None
        if q is not None:
            q.put(_STOP)
            if self.thread is not None and self.thread is not threading.current_thread():
                self.thread.join(timeout)

    def __enter__(self) -> "NsWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real API
        q = getattr(self, "q", None)
        if q is not None:
            q.put(_STOP)
