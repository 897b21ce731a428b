"""What every executor provides, and the host handle they share.

An executor turns plan steps into host state. It does not decide anything:
the plan says what to create, with which names and parameters. For each step
kind (:class:`~vifwire.planner.plan.StepKind`) one :class:`Handler` is listed
in :mod:`vifwire.executors.registry`, with three verbs:

* ``apply``  - make it so; return an :data:`Undo` that reverts exactly what
  this call changed (``None`` when it changed nothing, e.g. the device was
  already there as wanted). Raise :class:`~vifwire.errors.HostError` on failure
  *after* reverting its own partial work.
* ``remove`` - unplug time: remove what the step creates; absent is success
  (CNI DEL semantics). Used with the recorded plan, not the binding.
* ``verify`` - ``check`` time: a list of drift lines (empty = as recorded).

Optional batch verbs (the engine uses them when present): ``apply_many``,
``remove_bulk`` and ``verify_many`` take all steps of one kind in a run, so an
executor can do one transaction or one dump instead of one per port.

The engine (:mod:`vifwire.executors.engine`) sequences steps, collects undos
and rolls back in reverse on failure, so handlers stay small.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from vifwire.planner.plan import Step

if TYPE_CHECKING:  # the sessions' types; imported lazily by their owners
    from vifwire.executors.antispoof import AntiSpoof
    from vifwire.executors.nft import Nft
    from vifwire.executors.ovsdb import OvsdbClient

Undo = Callable[[], None]


class Handler(Protocol):
    def apply(self, step: Step, ctx: "HostContext") -> Undo | None: ...

    def remove(self, step: Step, ctx: "HostContext") -> None: ...

    def verify(self, step: Step, ctx: "HostContext") -> list[str]: ...


_NS_LOCKS: dict[str | None, threading.RLock] = {}
_NS_LOCKS_GUARD = threading.Lock()


def namespace_lock(netns: str | None) -> threading.RLock:
    """The one in-process lock for a namespace, shared by every handle on it.

    Steps read and then write shared state (a link's existence, a table's
    sets, OVSDB rows); two threads doing that for one namespace at once could
    lose each other's work, so wiring calls on a namespace take this lock.
    Across processes the service adds an advisory file lock
    (:mod:`vifwire.service.locks`).
    """
    with _NS_LOCKS_GUARD:
        lock = _NS_LOCKS.get(netns)
        if lock is None:
            lock = _NS_LOCKS[netns] = threading.RLock()
        return lock


class HostContext:
    """A handle on the host being wired: one namespace, its sessions, its lock.

    ``netns`` is the namespace vifwire treats as "the host" (``None`` = the
    one the process runs in). Sessions are opened lazily by the adapter that
    owns them and reused for the handle's life: one netlink channel and helper
    thread, one nftables context, one OVSDB connection. They are typed
    attributes, each set only while holding :attr:`lock`.

    A handle may be shared by the threads of one long-lived process: calls
    that touch the host hold :attr:`lock` (the namespace's lock, see
    :func:`namespace_lock`), and :attr:`port_id` - the port being worked on,
    for error messages - is per thread.
    """

    def __init__(self, netns: str | None = None, ovsdb: str | None = None, ovs_timeout: float = 10.0,
                 port_id: str | None = None):
        self.netns = netns
        self.ovsdb = ovsdb  # endpoint, e.g. unix:/run/openvswitch/db.sock
        self.ovs_timeout = ovs_timeout
        self.lock = namespace_lock(netns)
        self._local = threading.local()
        self._default_port = port_id
        # kernel (vifwire.netlink / executors.kernel)
        self.ipr: Any = None  # pyroute2 IPRoute on a socket of the namespace
        self.netlink: Any = None  # vifwire.netlink.channel.Channel on ipr's socket
        self.worker: Any = None  # vifwire.netlink.netns.NsWorker
        # nftables (executors.nft / executors.antispoof)
        self.nft: Nft | None = None
        self.antispoof: AntiSpoof | None = None
        # OVSDB (executors.ovsdb / executors.ovs)
        self.ovsdb_client: OvsdbClient | None = None
        self.ovsdb_down = False  # the last call found ovsdb-server unreachable: fail fast
        self.ovs_pending: Any = None  # executors.ovs.PendingWait of an unplug in progress
        # one read of the host shared by every handler of a check (see read_scope)
        self.reading = False
        self.kernel_view: Any = None  # executors.kernel.common.KernelView of the current read scope

    @property
    def port_id(self) -> str | None:
        return getattr(self._local, "port_id", self._default_port)

    @port_id.setter
    def port_id(self, value: str | None) -> None:
        self._local.port_id = value

    @contextlib.contextmanager
    def read_scope(self) -> Iterator[None]:
        """One read of the host for a whole check: within it, adapters may
        share what they read (one link dump for every kernel handler) instead
        of each reading again; it is dropped when the scope ends, so nothing
        stale outlives the check. Hold :attr:`lock` around it."""
        self.reading = True
        try:
            yield
        finally:
            self.reading = False
            self.kernel_view = None

    def close(self) -> None:
        """Close every session, newest layer first; never masks the caller's error."""
        with self.lock:
            for attr in ("ovs_pending", "ovsdb_client", "antispoof", "nft", "netlink", "ipr", "worker"):
                obj = getattr(self, attr)
                setattr(self, attr, None)
                close = getattr(obj, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001 - closing must not mask the real error
                        pass
            self.ovsdb_down = False

    def __enter__(self) -> "HostContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
