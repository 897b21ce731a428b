"""A private libvirtd inside a test network namespace, for tests/test_real_guests.py.

libvirtd runs in the namespace's own mount namespace (``ip netns exec`` makes
one), with private directories bind-mounted over /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, so it sees no
configuration and no domain of the machine and leaves nothing on it. Where
such a directory does not exist on the machine (no libvirt-daemon-system), its
parent is covered by an overlay whose writable layer is private too, so the
mount point is made there, never on the machine. QEMU inherits the namespace:
the taps, macvtaps and OVS ports libvirt makes for a guest all live in the
test namespace. With ``ovs_rundir``, /run/openvswitch is the private OVS's
directory, so the ``ovs-vsctl`` that libvirt runs for
``<virtualport type='openvswitch'>`` talks to the private ovsdb-server.

The settings are those of the "Real guests" section of
docs/libvirt-rendering.md: QEMU as root with no security driver, no cgroups,
no private /dev, and its output to a file instead of virtlogd (libvirt's
qemu.conf documents each key). libvirtd is pinned to CPU 0 and its
/var/cache/libvirt is kept in the persistent test cache: libvirt probes
QEMU's capabilities once (about 8 s) and probes again when the cached probe
was made on another CPU.

libvirtd runs under a small reaper (``REAPER``) that keeps the PID the
fixture started: QEMU processes, double-forked by libvirtd, are re-parented
to it and reaped when they exit (libvirtd waits for a stopped QEMU to
disappear, which an unreaped zombie never does). Only processes started here
are ever signalled, by PID: the reaper (which passes SIGTERM on to libvirtd
and then kills the QEMUs libvirtd left), and, as a last resort, QEMU
processes named in the private pid files whose command line names a guest of
this libvirtd.

A missing program is an error naming the package to install, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import guest_image

LIBVIRTD = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
VIRSH = shutil.which("virsh") or "/usr/bin/virsh"
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
#: guests this module starts are named so; stop() only kills QEMUs whose command line says so
GUEST_PREFIX = "vwguest-"

LIBVIRTD_CONF = """\
# a private libvirtd for tests: only root, only the unix socket
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

QEMU_CONF = """\
# QEMU as root, nothing relabelled, no private /dev, no cgroups (there is no
# systemd, and ip netns exec remounts /sys without them), logs to files (no virtlogd)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
"""

#: The wrapper that runs inside ``ip netns exec``: mounts, then exec libvirtd (same PID).
#: $1 private dir, $2 persistent cache for /var/cache/libvirt, $3 private OVS dir or "".
WRAPPER = r"""
set -eu
P=$1; CACHE=$2; OVS=$3
# resolve the bind sources first: an overlay below may hide their real location
mkdir -p "$P/stage/cache" "$P/stage/ovs"
mount --bind "$CACHE" "$P/stage/cache"
if [ -n "$OVS" ]; then mount --bind "$OVS" "$P/stage/ovs"; fi
place() {  # place SRC DST: bind SRC over DST, making DST in a private overlay if it is missing
    if [ ! -d "$2" ]; then
        parent=$(dirname "$2")
        tag=$(echo "$parent" | tr / _)
        if [ ! -d "$P/ovl/$tag" ]; then
            mkdir -p "$P/ovl/$tag/upper" "$P/ovl/$tag/work"
            mount -t overlay "vw-overlay" \
                -o "lowerdir=$parent,upperdir=$P/ovl/$tag/upper,workdir=$P/ovl/$tag/work" "$parent"
        fi
        mkdir "$2"
    fi
    mount --bind "$1" "$2"
}
place "$P/etc" /etc/libvirt
place "$P/run" /run/libvirt
place "$P/lib" /var/lib/libvirt
place "$P/log" /var/log/libvirt
place "$P/stage/cache" /var/cache/libvirt
if [ -n "$OVS" ]; then place "$P/stage/ovs" /run/openvswitch; fi
exec "$PYTHON" -c "$REAPER" taskset -c 0 "$LIBVIRTD" --pid-file /run/libvirt/libvirtd.pid
"""

#: What the wrapper execs (so it keeps the PID the fixture knows): a subreaper that runs
#: libvirtd as its child. QEMU is double-forked by libvirtd, so it is re-parented to the
#: nearest subreaper; libvirtd waits for a stopped QEMU to disappear, which a zombie never
#: does unless that subreaper reaps it (and PID 1 of these machines does not reap). SIGTERM
#: is passed on to libvirtd; once libvirtd has exited, QEMUs it left behind (our children by
#: then) are killed and reaped, and the reaper exits.
REAPER = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: a killed test run still stops libvirtd
me = os.getpid()
daemon = os.fork()
if daemon == 0:
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: libvirtd never outlives its reaper
    os.execvp(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(daemon, signal.SIGTERM))
def children():
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    out.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return out
while True:
    try:
        pid, _ = os.wait()
    except ChildProcessError:
        break
    if pid == daemon:
        for child in children():
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
"""


class LibvirtError(RuntimeError):
    """libvirtd or virsh failed; the message carries the tail of the relevant log."""


#: program -> the Debian package that has it (scripts/setup.sh installs them all)
REQUIRED = {LIBVIRTD: "libvirt-daemon", VIRSH: "libvirt-clients", QEMU: "qemu-system-x86",
            "taskset": "util-linux", "ovsdb-client": "openvswitch-common"}


def require_tools() -> None:
    """Fail (not skip) with the packages to install when a program the tests need is missing."""
    missing = {pkg for prog, pkg in REQUIRED.items() if not shutil.which(prog)}
    if not glob.glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"):
        missing.add("libvirt-daemon-driver-qemu")
    if missing:
        raise LibvirtError(f"missing packages for the real-guest tests: {' '.join(sorted(missing))} "
                           "(bash scripts/setup.sh installs them)")


class PrivateLibvirt:
    """libvirtd in ``netns`` with private directories; :meth:`virsh` talks to it."""

    def __init__(self, netns: str, ovs_rundir: str | None = None):
        self.netns = netns
        self.ovs_rundir = ovs_rundir
        self.dir = tempfile.mkdtemp(prefix="vw-lv-", dir="/tmp")  # socket paths must stay < 108 bytes
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "run", "libvirt-sock")

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def start(self, timeout: float = 60.0) -> PrivateLibvirt:
        """Write the configuration, start libvirtd, return once it answers."""
        require_tools()
        for d in ("etc", "run", "lib", "log"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self._write("etc/libvirtd.conf", LIBVIRTD_CONF)
        self._write("etc/qemu.conf", QEMU_CONF)
        cache = os.path.join(guest_image.cache_root(), "libvirt-cache")
        os.makedirs(cache, exist_ok=True)
        env = dict(os.environ, LIBVIRTD=LIBVIRTD, PYTHON=sys.executable, REAPER=REAPER)
        with open(os.path.join(self.dir, "wrapper.log"), "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "sh", "-c", WRAPPER, "sh", self.dir, cache, self.ovs_rundir or ""],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _write(self, rel: str, text: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(text)

    def _wait_ready(self, timeout: float) -> None:
        """Until virsh gets an answer (the first start also probes QEMU: seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LibvirtError(f"libvirtd exited with {self.proc.returncode}: {self.diagnostics()}")
            if os.path.exists(self.socket):
                res = self._virsh_run(["version"], timeout=30)
                if res.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise LibvirtError(f"libvirtd did not answer within {timeout:.0f} s: {self.diagnostics()}")
            time.sleep(0.05)

    def _virsh_run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([VIRSH, "-q", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout)

    def virsh(self, *args: str, timeout: float = 30.0) -> str:
        """``virsh -c <private socket> ARGS``; stdout, or :class:`LibvirtError` with libvirt's message."""
        res = self._virsh_run(list(args), timeout)
        if res.returncode != 0:
            raise LibvirtError(f"virsh {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def domains(self) -> list[str]:
        """Names of the running domains."""
        return self.virsh("list", "--name").split()

    def qemu_log(self, name: str) -> str:
        return _tail(os.path.join(self.dir, "log", "qemu", f"{name}.log"))

    def diagnostics(self) -> str:
        """The tails of libvirtd's log and of the wrapper's output, for failure messages."""
        return (f"libvirtd.log: {_tail(os.path.join(self.dir, 'log', 'libvirtd.log'))} | "
                f"wrapper: {_tail(os.path.join(self.dir, 'wrapper.log'))}")

    def stop(self) -> None:
        """Destroy this libvirtd's guests, stop it by PID, kill QEMUs it left (by PID), remove its dirs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                for name in self.domains():
                    with contextlib.suppress(Exception):
                        self.virsh("destroy", name)
            _terminate(self.proc)
        for pid in self._qemu_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_pid_gone(pid, 10.0)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _qemu_pids(self) -> list[int]:
        """QEMUs this libvirtd started and did not stop: from its private pid files,
        checked against /proc so that a recycled PID is never signalled."""
        pids = []
        for pidfile in _glob(os.path.join(self.dir, "run", "qemu"), ".pid"):
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except (OSError, ValueError):
                continue
            if b"guest=" + GUEST_PREFIX.encode() in cmdline:
                pids.append(pid)
        return pids


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM libvirtd (it shuts down cleanly), SIGKILL if it takes too long."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _wait_pid_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ours if pytest adopted it (a subreaper: sandbox/ovs_daemon.py)
        if not os.path.exists(f"/proc/{pid}") or _is_zombie(pid):
            return
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def _glob(d: str, suffix: str) -> list[str]:
    try:
        return [os.path.join(d, n) for n in os.listdir(d) if n.endswith(suffix)]
    except OSError:
        return []


def _tail(path: str, n: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return " / ".join(f.read().strip().splitlines()[-n:])
    except OSError:
        return "(none)"
