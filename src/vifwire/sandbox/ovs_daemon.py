"""A private, throwaway Open vSwitch for tests, benchmarks and ``--sandbox``.

:class:`PrivateOVS` creates a fresh OVSDB in a private temporary directory,
starts ``ovsdb-server`` on a unix socket in that directory and
``ovs-vswitchd`` *inside a network namespace* (the userspace datapath,
``datapath_type=netdev``, creates its tap devices in -- and only sees devices
of -- the namespace it runs in).  Nothing touches ``/var/run/openvswitch``:
every daemon gets ``--pidfile``/``--log-file``/``--unixctl`` paths in the
private directory and the ``OVS_RUNDIR``/``OVS_DBDIR``/``OVS_LOGDIR``/
``OVS_SYSCONFDIR`` environment variables point there too.

Safety rules this module keeps:

* daemons are stopped **only by the PIDs from our own pidfiles**, and only
  after checking that ``/proc/<pid>/cmdline`` mentions our private directory
  (so a recycled PID is never signalled);
* ``ovs-vswitchd`` runs with ``--disable-system`` (no kernel datapath is ever
  opened) and ``--disable-system-route``;
* :meth:`PrivateOVS.stop` is idempotent, is also registered with
  :mod:`atexit`, and :func:`reap_stale` (called by :meth:`PrivateOVS.start`)
  stops daemons left behind by a *dead* owner process (e.g. a SIGKILLed test
  run), recognised by the ``owner`` file in their private directory;
* the starting process becomes a child sub-reaper (``PR_SET_CHILD_SUBREAPER``)
  so the ``--detach``-ed daemons are re-parented to it and can be reaped with
  ``waitpid``.  (The container's PID 1 does not reap orphans; without this a
  killed daemon would stay behind as a zombie.)

Typical use::

    with netns.sandbox("t") as ns, PrivateOVS().start(ns) as ovs:
        ovs.add_bridge("br-int")
        client = OvsdbClient(ovs.endpoint)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
TMP_PREFIX = "vw-ovs-"
TMP_ROOT = "/tmp"  # not $TMPDIR: unix socket paths must stay < 108 bytes

OVSDB_TOOL = shutil.which("ovsdb-tool") or "/usr/bin/ovsdb-tool"
OVSDB_SERVER = shutil.which("ovsdb-server") or "/usr/sbin/ovsdb-server"
OVS_VSWITCHD = shutil.which("ovs-vswitchd") or "/usr/sbin/ovs-vswitchd"
OVS_VSCTL = shutil.which("ovs-vsctl") or "/usr/bin/ovs-vsctl"
OVS_APPCTL = shutil.which("ovs-appctl") or "/usr/bin/ovs-appctl"
IP = shutil.which("ip") or "/usr/sbin/ip"

_PR_SET_CHILD_SUBREAPER = 36

_live: set[PrivateOVS] = set()
_live_lock = threading.Lock()
_atexit_registered = False


class OvsDaemonError(RuntimeError):
    """A private OVS daemon could not be started (message says which/why)."""


# --------------------------------------------------------------------------
# process helpers


def _proc_state(pid: int) -> str | None:
    """State letter from /proc/<pid>/stat (``Z`` zombie...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces/parens; the state follows the last ')'.
    return data[data.rindex(")") + 2 :].split()[0]


def _proc_starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(")") + 2 :].split()[19]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _reap(pid: int) -> bool | None:
    """waitpid() ``pid`` if it is our (possibly adopted) child; never blocks.

    True: reaped now; False: our child, not reapable yet; None: not our child.
    """
    try:
        got, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    except OSError:
        return None
    return got == pid


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a reaped/foreign zombie.

    A multi-threaded daemon shows state ``Z`` as soon as its main thread
    exits, but waitpid() only succeeds once every thread is gone; until then
    it counts as alive so callers keep waiting (and reap it).
    """
    state = _proc_state(pid)
    if state is None:
        return False
    if state in ("Z", "X"):
        return _reap(pid) is False
    return True


def _owned(pid: int, marker: str) -> bool:
    """``pid`` is alive and its command line mentions ``marker`` (our dir)."""
    return _alive(pid) and marker in _cmdline(pid)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


_unreaped: set[int] = set()


def _terminate(pid: int, marker: str, timeout: float = 5.0, kill_wait: float = 30.0) -> bool:
    """SIGCONT+SIGTERM ``pid`` (if it is ours), SIGKILL after ``timeout``.

    Returns True once the process is gone.  A SIGKILLed daemon blocked in
    the kernel (e.g. closing tap devices while the RTNL lock is contended)
    can take a while to die, hence the generous ``kill_wait``; a pid still
    around after that is retried by the atexit handler.
    """
    if not _owned(pid, marker):
        _reap(pid)
        return not _alive(pid)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if _wait_gone(pid, timeout):
        return True
    if _owned(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if _wait_gone(pid, kill_wait):
        return True
    _unreaped.add(pid)
    return False


def _read_pidfile(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_stale() -> list[str]:
    """Stop daemons of private OVS dirs whose owner process is dead.

    Only directories ``/tmp/vw-ovs-*`` with an ``owner`` file written by
    :class:`PrivateOVS` are considered, and only PIDs from their pidfiles
    whose command line names that directory are signalled.  Returns the
    directories removed.
    """
    removed = []
    for d in glob.glob(os.path.join(TMP_ROOT, TMP_PREFIX + "*")):
        try:
            with open(os.path.join(d, "owner")) as f:
                pid_s, start_s = f.read().split()[:2]
            owner_pid = int(pid_s)  # "persistent" -> ValueError: skipped
        except (OSError, ValueError):
            continue
        if _alive(owner_pid) and _proc_starttime(owner_pid) == start_s:
            continue  # owner still running; not ours to touch
        for pf in ("ovs-vswitchd.pid", "ovsdb-server.pid"):
            pid = _read_pidfile(os.path.join(d, pf))
            if pid:
                _terminate(pid, d)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _stop_all_live() -> None:
    with _live_lock:
        live = list(_live)
    for ovs in live:
        with contextlib.suppress(Exception):
            ovs.stop()
    for pid in list(_unreaped):  # killed earlier but slow to die: reap now
        _wait_gone(pid, 10.0)
        _unreaped.discard(pid)


# --------------------------------------------------------------------------


class PrivateOVS:
    """ovsdb-server + ovs-vswitchd (userspace datapath) in a private dir.

    Attributes (valid after :meth:`start`):

    ``rundir``    the private directory (DB, sockets, pidfiles, logs)
    ``db_sock``   path of ovsdb-server's unix socket
    ``endpoint``  ``"unix:" + db_sock`` -- what OVSDB clients connect to
    ``netns``     namespace ovs-vswitchd runs in
    ``pids``      ``{"ovsdb-server": pid, "ovs-vswitchd": pid}``
    """

    def __init__(self, *, keep_dir: bool = False, persistent: bool = False):
        """``keep_dir``: leave the private dir (logs, DB) behind after stop.

        ``persistent``: the daemons outlive this process (for ``vifwire up
        --sandbox``): no atexit stop, and :func:`reap_stale` leaves them
        alone.  Stop them later with ``PrivateOVS.attach(rundir).stop()``.
        """
        self.keep_dir = keep_dir
        self.persistent = persistent
        self.rundir: str | None = None
        self.netns: str | None = None
        self.pids: dict[str, int] = {}
        self._stopped = False

    @classmethod
    def attach(cls, rundir: str) -> PrivateOVS:
        """Re-open a running private OVS from its directory (e.g. persistent)."""
        if not os.path.isfile(os.path.join(rundir, "owner")):
            raise OvsDaemonError(f"{rundir} is not a PrivateOVS directory")
        self = cls()
        self.rundir = rundir
        with open(os.path.join(rundir, "owner")) as f:
            parts = f.read().split()
        self.netns = parts[2] if len(parts) > 2 else None
        self.persistent = bool(parts) and parts[0] == "persistent"
        for daemon in ("ovsdb-server", "ovs-vswitchd"):
            pid = _read_pidfile(self._p(f"{daemon}.pid"))
            if pid and _owned(pid, rundir):
                self.pids[daemon] = pid
        return self

    # ---- paths ----------------------------------------------------------

    def _p(self, name: str) -> str:
        assert self.rundir, "PrivateOVS not started"
        return os.path.join(self.rundir, name)

    @property
    def db_path(self) -> str:
        return self._p("conf.db")

    @property
    def db_sock(self) -> str:
        return self._p("db.sock")

    @property
    def endpoint(self) -> str:
        return "unix:" + self.db_sock

    @property
    def ovsdb_ctl(self) -> str:
        return self._p("ovsdb-server.ctl")

    @property
    def vswitchd_ctl(self) -> str:
        return self._p("ovs-vswitchd.ctl")

    def log_path(self, daemon: str) -> str:
        return self._p(f"{daemon}.log")

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
            env[var] = self.rundir or ""
        return env

    # ---- lifecycle ------------------------------------------------------

    def start(self, netns: str, *, vswitchd: bool = True) -> PrivateOVS:
        """Create the DB and start the daemons; ovs-vswitchd runs in ``netns``.

        On any failure everything already started is stopped and an
        :class:`OvsDaemonError` naming the daemon (and the tail of its log)
        is raised.
        """
        global _atexit_registered
        if self.rundir:
            raise OvsDaemonError("PrivateOVS already started")
        if not netns:
            raise OvsDaemonError("a network namespace is required for ovs-vswitchd")
        with contextlib.suppress(Exception):
            reap_stale()
        become_subreaper()
        self.netns = netns
        self.rundir = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=TMP_ROOT)
        os.makedirs(self._p("etc"), exist_ok=True)
        with open(self._p("owner"), "w") as f:
            if self.persistent:
                f.write(f"persistent 0 {netns}\n")
            else:
                f.write(f"{os.getpid()} {_proc_starttime(os.getpid())} {netns}\n")
        with _live_lock:
            _live.add(self)  # until start() succeeds, even when persistent
            if not _atexit_registered:
                atexit.register(_stop_all_live)
                _atexit_registered = True
        try:
            self._run([OVSDB_TOOL, "create", self.db_path, SCHEMA], "ovsdb-tool create")
            self.start_ovsdb()
            self.vsctl("--no-wait", "init")
            if vswitchd:
                self.start_vswitchd()
        except BaseException:
            self.stop()
            raise
        if self.persistent:
            with _live_lock:
                _live.discard(self)
        return self

    def start_ovsdb(self) -> int:
        """(Re)start ovsdb-server on the existing private DB; returns its pid."""
        self._run(
            [
                OVSDB_SERVER,
                self.db_path,
                f"--remote=punix:{self.db_sock}",
                f"--pidfile={self._p('ovsdb-server.pid')}",
                f"--log-file={self.log_path('ovsdb-server')}",
                f"--unixctl={self.ovsdb_ctl}",
                "-vconsole:off",
                "-vsyslog:off",
                "--no-chdir",
                "--detach",
            ],
            "ovsdb-server",
        )
        return self._record("ovsdb-server")

    def start_vswitchd(self) -> int:
        """Start ovs-vswitchd inside ``self.netns``; returns its pid."""
        self._run(
            [
                IP, "netns", "exec", self.netns,
                OVS_VSWITCHD,
                self.endpoint,
                f"--pidfile={self._p('ovs-vswitchd.pid')}",
                f"--log-file={self.log_path('ovs-vswitchd')}",
                f"--unixctl={self.vswitchd_ctl}",
                "--disable-system",
                "--disable-system-route",
                "-vconsole:off",
                "-vsyslog:off",
                "--no-chdir",
                "--detach",
            ],
            "ovs-vswitchd",
        )
        return self._record("ovs-vswitchd")

    def _record(self, daemon: str) -> int:
        pid = _read_pidfile(self._p(f"{daemon}.pid"))
        if not pid or not _owned(pid, self.rundir):
            raise OvsDaemonError(f"{daemon}: no live process after --detach{self._log_tail(daemon)}")
        self.pids[daemon] = pid
        return pid

    def _run(self, argv: list[str], what: str, timeout: float = 30.0) -> str:
        try:
            r = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise OvsDaemonError(f"{what}: timed out after {timeout}s") from e
        except FileNotFoundError as e:
            raise OvsDaemonError(f"{what}: {e}") from e
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            tail = msg[-1] if msg else f"exit code {r.returncode}"
            daemon = what if what in ("ovsdb-server", "ovs-vswitchd") else ""
            raise OvsDaemonError(f"{what}: {tail}{self._log_tail(daemon) if daemon else ''}")
        return r.stdout

    def _log_tail(self, daemon: str, n: int = 3) -> str:
        try:
            with open(self.log_path(daemon)) as f:
                lines = f.read().strip().splitlines()[-n:]
        except (OSError, AssertionError):
            return ""
        return " (log: " + " | ".join(lines) + ")" if lines else ""

    def stop(self) -> None:
        """Stop both daemons by PID, wait for them, remove the private dir.

        Idempotent; safe to call after a failed :meth:`start`.
        """
        if self._stopped or not self.rundir:
            self._stopped = True
            return
        marker = self.rundir
        # vswitchd first (it is a client of ovsdb-server); pidfiles cover
        # daemons whose pid we did not record yet (failure mid-start).
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pids = {self.pids.get(daemon), _read_pidfile(self._p(f"{daemon}.pid"))}
            for pid in pids - {None}:
                _terminate(pid, marker)
        self._stopped = True
        if not self.keep_dir:
            shutil.rmtree(self.rundir, ignore_errors=True)
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> PrivateOVS:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- state / failure injection -------------------------------------

    def alive(self, daemon: str) -> bool:
        pid = self.pids.get(daemon)
        return bool(pid) and _owned(pid, self.rundir or "\0")

    def pause_vswitchd(self) -> None:
        """SIGSTOP ovs-vswitchd (it stops applying DB changes); returns once
        the kernel reports it stopped."""
        self._signal("ovs-vswitchd", signal.SIGSTOP)
        self._wait_state("ovs-vswitchd", lambda s: s in ("T", "t"))

    def resume_vswitchd(self) -> None:
        self._signal("ovs-vswitchd", signal.SIGCONT)
        self._wait_state("ovs-vswitchd", lambda s: s not in ("T", "t"))

    def _wait_state(self, daemon: str, ok, timeout: float = 2.0) -> None:
        pid = self.pids[daemon]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = _proc_state(pid)
            if st is None or ok(st):
                return
            time.sleep(0.002)

    def kill_ovsdb(self) -> None:
        """SIGKILL ovsdb-server (simulates a crash) and reap it."""
        pid = self.pids.get("ovsdb-server")
        self._signal("ovsdb-server", signal.SIGKILL)
        if pid:
            _wait_gone(pid, 5.0)

    def restart_ovsdb(self) -> int:
        """Start ovsdb-server again on the same DB and socket after a kill."""
        if self.alive("ovsdb-server"):
            return self.pids["ovsdb-server"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.db_sock)
        return self.start_ovsdb()

    def _signal(self, daemon: str, sig: int) -> None:
        pid = self.pids.get(daemon)
        if not pid or not _owned(pid, self.rundir or "\0"):
            raise OvsDaemonError(f"{daemon} is not running")
        os.kill(pid, sig)

    # ---- test helpers (ovs-vsctl is fine here; not in the hot path) -----

    def vsctl(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``ovs-vsctl --db=<ours> ARGS`` and return stdout."""
        return self._run(
            [OVS_VSCTL, f"--db={self.endpoint}", f"--timeout={int(max(1, timeout))}", *args],
            "ovs-vsctl " + " ".join(args),
            timeout=timeout + 5,
        )

    def appctl(self, *args: str, daemon: str = "ovs-vswitchd", timeout: float = 10.0) -> str:
        ctl = self.vswitchd_ctl if daemon == "ovs-vswitchd" else self.ovsdb_ctl
        return self._run(
            [OVS_APPCTL, "-t", ctl, f"--timeout={int(max(1, timeout))}", *args],
            "ovs-appctl " + " ".join(args),
            timeout=timeout + 5,
        )

    def add_bridge(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Create bridge ``name`` with ``datapath_type=netdev``.

        With ``wait`` (default) this returns once ovs-vswitchd has applied it
        (its internal port exists in the namespace).  The timeout is generous:
        creating a tap device needs the kernel's RTNL lock, which can be held
        for seconds when other namespaces are being torn down.
        """
        args = ["--may-exist", "add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev"]
        self.vsctl(*(args if wait else ["--no-wait", *args]), timeout=timeout)


@contextlib.contextmanager
def private_ovs(netns: str, *, bridges: tuple[str, ...] = ("br-int",), vswitchd: bool = True) -> Iterator[PrivateOVS]:
    """Context manager: a started :class:`PrivateOVS` with ``bridges`` created."""
    ovs = PrivateOVS()
    ovs.start(netns, vswitchd=vswitchd)
    try:
        for br in bridges:
            ovs.add_bridge(br, wait=vswitchd)
        yield ovs
    finally:
        ovs.stop()
