"""What a store of attachment records is, whatever holds it.

The engine and the service only use this protocol, so a front end can hand
them another implementation (the fleet mode keeps desired state elsewhere)
without touching them. :class:`vifwire.store.sqlite.SqliteStore` is the first.

An attachment is written twice per plug: ``plugging`` before the host is
touched (a crash leaves a record that says which devices may exist), then
``plugged`` after every step succeeded; a failed plug deletes its record.

Every failure of a store is a :class:`StoreError` whose one line names the
path and what to do. A file-backed store keeps its files private with
:func:`make_private_dir` (new directories 0700 whatever the umask) and
:func:`open_private_file` (never through a symlink, only a regular file owned
by the effective uid, created 0600).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any, Iterable, NamedTuple, Protocol

from vifwire.errors import VifwireError


class StoreError(VifwireError):
    """The state store cannot be used as asked (exit code 1): one line naming the path and what to do."""

    exit_code = 1


def os_error(what: str, path: str, exc: OSError) -> StoreError:
    """The one line for an ``OSError`` met on ``path`` (``what`` is e.g. ``"state database"``)."""
    where = os.path.dirname(path) or "."
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno in (errno.EACCES, errno.EPERM):
        todo = f"run vifwire as root (the owner of {where}) or fix the permissions of {path} and {where}"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = f"free space on the filesystem holding {where}, then retry"
    elif exc.errno == errno.EROFS:
        todo = f"remount the filesystem holding {where} read-write or point --state elsewhere"
    elif exc.errno == errno.ELOOP:
        return StoreError(f"{what} {path} is a symlink; vifwire never follows one there: "
                          "remove the link, or point --state at a path that is not one")
    elif exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        todo = f"move what is at {path} (or its directory) aside or point --state elsewhere"
    else:
        todo = "check the path and the disk, then retry"
    return StoreError(f"{what} {path}: {reason}; {todo}")


def make_private_dir(path: str, what: str = "state directory") -> None:
    """Create directory ``path`` and its missing parents with mode 0700, whatever the umask.

    Directories that already exist are left exactly as they are.
    """
    path = os.path.abspath(path)
    missing: list[str] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # made by a concurrent process: not ours to change
        except OSError as exc:
            raise os_error(what, d, exc) from exc
        try:
            os.chmod(d, 0o700)  # mkdir's mode went through the umask
        except OSError as exc:
            raise os_error(what, d, exc) from exc


def _refuse_unless_private(what: str, path: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise StoreError(f"{what} {path} is a symlink (to {target}); vifwire never follows one there: "
                         "remove the link, or point --state at a path that is not one")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{what} {path} is not a regular file; move it aside or point --state elsewhere")
    if st.st_uid != os.geteuid():
        raise StoreError(f"{what} {path} is owned by uid {st.st_uid}, not by uid {os.geteuid()} running vifwire; "
                         "check who made it, then chown it or move it aside")


def open_private_file(path: str, what: str) -> tuple[int, bool]:
    """Open ``path`` read-write without following a symlink; return ``(fd, created)``.

    A missing file is created 0600 whatever the umask. A symlink, anything but
    a regular file, or a file owned by another uid than the effective one is
    refused with a :class:`StoreError` and left untouched. An existing file's
    mode is not changed here: the caller tightens it once it knows the file is
    its own.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        _refuse_unless_private(what, path, os.lstat(path))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise os_error(what, path, exc) from exc
    created = False
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_unless_private(what, path, os.lstat(path))
        raise os_error(what, path, exc) from exc
    try:
        st = os.fstat(fd)
        _refuse_unless_private(what, path, st)  # swapped between lstat and open
        if created and stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise os_error(what, path, exc) from exc
        raise
    return fd, created


def private_file(path: str, what: str) -> os.stat_result:
    """The ``lstat`` of ``path``, a regular file of ours (created 0600 if missing).

    For the database itself: no descriptor of it is left open or closed here
    while it may exist, because closing any descriptor of a file drops every
    POSIX lock the process holds on it - SQLite's included - and another
    process could then checkpoint and delete the WAL under an open connection
    (sqlite.org/howtocorrupt.html, 2.2). Only a file this call creates is
    opened (and closed at once: nothing can hold a lock on it yet).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        fd, _ = open_private_file(path, what)
        os.close(fd)
        st = os.lstat(path)
    except OSError as exc:
        raise os_error(what, path, exc) from exc
    _refuse_unless_private(what, path, st)
    return st


def tighten_path(path: str, st: os.stat_result, what: str) -> None:
    """Make ``path`` (checked as ``st``: a regular file of ours) 0600."""
    if stat.S_IMODE(st.st_mode) != 0o600:
        try:
            os.chmod(path, 0o600)
        except OSError as exc:
            raise os_error(what, path, exc) from exc


def tighten(fd: int, path: str, what: str) -> None:
    """Make an open file of ours 0600 (an older vifwire made it with the umask's mode)."""
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        raise os_error(what, path, exc) from exc


class Attachment:
    """One recorded port: its binding and plan, the devices it owns, its status.

    ``binding``, ``plan`` and ``devices`` may be handed over as JSON text and
    are decoded on first use: ``list`` needs none of them and ``check`` only
    the plan, and decoding every record's binding costs more than reading it.
    """

    __slots__ = ("port_id", "instance_id", "vif_type", "devname", "mac", "netns", "status", "strategy",
                 "_binding", "_plan", "_devices", "created_at", "updated_at")

    def __init__(self, port_id: str, instance_id: str | None, vif_type: str, devname: str, mac: str,
                 netns: str | None, status: str, strategy: str, binding: dict[str, Any] | str,
                 plan: dict[str, Any] | str, devices: list[str] | str, created_at: float, updated_at: float):
        self.port_id, self.instance_id, self.vif_type, self.devname = port_id, instance_id, vif_type, devname
        self.mac, self.netns, self.status, self.strategy = mac, netns, status, strategy
        self._binding, self._plan, self._devices = binding, plan, devices
        self.created_at, self.updated_at = created_at, updated_at

    @property
    def binding(self) -> dict[str, Any]:
        if isinstance(self._binding, str):
            self._binding = json.loads(self._binding)
        return self._binding

    @property
    def plan(self) -> dict[str, Any]:
        if isinstance(self._plan, str):
            self._plan = json.loads(self._plan)
        return self._plan

    @property
    def devices(self) -> list[str]:
        if isinstance(self._devices, str):
            self._devices = json.loads(self._devices)
        return self._devices

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attachment) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Attachment({self.port_id!r}, status={self.status!r}, strategy={self.strategy!r})"

    def to_json(self) -> dict[str, Any]:
        return {"port_id": self.port_id, "instance_id": self.instance_id, "vif_type": self.vif_type,
                "devname": self.devname, "mac": self.mac, "netns": self.netns, "status": self.status,
                "strategy": self.strategy, "binding": self.binding, "plan": self.plan, "devices": self.devices,
                "created_at": self.created_at, "updated_at": self.updated_at}


class Store(Protocol):
    """Attachment records; each write is one transaction, whatever its size."""

    path: str

    def check_writable(self, timeout: float | None = None) -> None:
        """Raise :class:`StoreError` now if a write would fail to get the store's lock or to write."""
        ...

    def put_many(self, rows: Iterable[dict[str, Any]], status: str) -> None: ...

    def set_status(self, port_ids: Iterable[str], status: str) -> None: ...

    def delete(self, port_ids: Iterable[str]) -> None: ...

    def get(self, port_id: str) -> Attachment | None: ...

    def all(self, netns: Any = ...) -> list[Attachment]: ...

    def claims(self, netns: str | None, macs: Iterable[str], ips: Iterable[str], devices: Iterable[str],
               exclude: Iterable[str]) -> list[Claim]:
        """Which recorded ports of ``netns`` (other than ``exclude``) hold any of
        these MACs (lower case), addresses or devices: what a plug must not take."""
        ...

    def data_version(self) -> int:
        """A number that changes when another connection (process) committed a change."""
        ...

    def close(self) -> None: ...


class Claim(NamedTuple):
    """A MAC, address or device a recorded port holds (see :meth:`Store.claims`)."""

    kind: str  # "mac", "ip" or "device"
    value: str
    port_id: str
    network_id: str | None
    vif_type: str


class NullStore:
    """A store that records nothing: for unplugging from the host's marks alone
    when the real store cannot be read (there is nothing to write back to)."""

    path = ""

    def put_many(self, rows: Iterable[dict[str, Any]], status: str) -> None:
        pass

    def set_status(self, port_ids: Iterable[str], status: str) -> None:
        pass

    def delete(self, port_ids: Iterable[str]) -> None:
        pass

    def get(self, port_id: str) -> Attachment | None:
        return None

    def all(self, netns: Any = ...) -> list[Attachment]:
        return []

    def claims(self, netns: str | None, macs: Iterable[str], ips: Iterable[str], devices: Iterable[str],
               exclude: Iterable[str]) -> list[Claim]:
        return []

    def data_version(self) -> int:
        return 0

    def check_writable(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass
