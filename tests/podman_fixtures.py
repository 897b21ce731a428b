"""Real podman 4.3 (CNI backend) for tests, inside a network namespace the test creates.

The traps of running podman 4.3 with the CNI backend inside a test namespace:
every podman command of a test goes through ONE long-lived mount namespace
(``ip netns exec NS unshare -m``), in which

* the host's cgroup hierarchies are mounted again (``ip netns exec`` mounts a
  fresh /sys, which hides /sys/fs/cgroup/*; without them runc cannot start
  anything);
* /run and /var/lib are overlays whose upper layer is a tmpfs of ours, so
  what podman, runc and libcni write there (/run/runc, /run/netns,
  /var/lib/cni/results, /var/lib/containers/cache) never reaches the host's
  disk; /run/netns and /run/runc get private tmpfs mounts on top;
* podman runs with ``--root/--runroot/--tmpdir`` in a private directory,
  ``--storage-driver vfs --runtime runc`` and a containers.conf (via
  ``CONTAINERS_CONF``) with file locks, cgroupfs, a file event log and the CNI
  backend reading *our* conflist directory and plugin directories.

:class:`PodmanShell` is that shell: ``run(cmd) -> (rc, stdout, stderr)``
writes one command to the shell's stdin, with its output redirected to
files, followed by an ``echo`` of a random sentinel and the exit code; the
reader waits for the sentinel (with a timeout). The shell is made a child
sub-reaper (``PR_SET_CHILD_SUBREAPER`` survives ``execve``), so conmon, which
double-forks, and the ``podman container cleanup`` processes it starts stay
*descendants of the shell*: :meth:`PodmanShell.wait_gone` waits for exactly
those of given containers, found by walking /proc from the shell's PID.

Cleanup (:meth:`PodmanShell.close`, also on failure): remove every container,
wait for their cleanup processes, stop the background processes this shell
started (by PID, after checking they are still its descendants), end the
shell, SIGKILL whatever of its descendants is left (PID + start time checked),
remove the cgroup directories under our own ``--cgroup-parent`` in every
hierarchy (from inside the shell, and again as this process sees them), and delete the private directory. The mounts die with the shell's
mount namespace. The process, mount and cgroup-directory helpers are shared
with the LXD fixtures (tests/leftovers.py).

Fixtures: ``busybox_rootfs`` (session: a rootfs tarball with busybox-static
and applet symlinks), ``podman_shell`` (a namespace + shell + image),
``podman_ovs`` (the same plus a private OVS with bridge br-int, netdev
datapath, whose ovs-vswitchd runs in that namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leftovers import (SUBREAPER_EXEC, alive, cgroup_mountpoints, cgroup_mounts, descendants, kill_all, reap,
                       rmdir_trees, start_time)
from rootfs_tar import BUSYBOX, add_busybox_rootfs
from vifwire.sandbox import netns
from vifwire.sandbox.ovs_daemon import PrivateOVS

BIN = os.path.dirname(sys.executable)
VIFWIRE = os.path.join(BIN, "vifwire")
VIFWIRE_CNI = os.path.join(BIN, "vifwire-cni")
PODMAN = shutil.which("podman") or "/usr/bin/podman"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
CNI_DIR = "/usr/lib/cni"
IMAGE = "localhost/vwbusybox:test"
APPLETS = ("sh", "ash", "ip", "ping", "sleep", "cat", "ls", "echo", "true", "false", "grep", "hostname",
           "ifconfig", "route", "arping", "nc", "ps", "kill", "wc")
TMP_ROOT = "/tmp"  # short paths: unix sockets (agent) must stay < 108 bytes
SHELL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def podman_missing() -> str | None:
    """Why the podman tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [p for p in (PODMAN, RUNC, BUSYBOX, "/usr/bin/conmon", os.path.join(CNI_DIR, "host-local"),
                           os.path.join(CNI_DIR, "bridge")) if not os.path.exists(p)]
    if not shutil.which("unshare"):
        missing.append("unshare")
    return f"needs podman, runc, conmon, busybox-static, CNI plugins (missing: {missing})" if missing else None


#: Only a non-root run skips: scripts/setup.sh installs podman and the rest,
#: so on the test machine a missing piece fails the tests (they check it again).
requires_podman = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


# --------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- image


def build_rootfs_tar(path: str) -> str:
    """A rootfs tarball: busybox-static plus applet symlinks, for ``podman import``."""
    with tarfile.open(path, "w") as tar:
        add_busybox_rootfs(tar, "", APPLETS)
    return path


# --------------------------------------------------------------------------- the shell


class ShellError(RuntimeError):
    """The podman shell died, timed out or could not be set up."""


class PodmanShell:
    """One ``ip netns exec NS unshare -m`` shell driving podman (see the module doc)."""

    def __init__(self, ns: str, *, tag: str = "pm"):
        self.ns = ns
        self.dir = tempfile.mkdtemp(prefix=f"vw-{tag}-", dir=TMP_ROOT)
        self.cgroup_parent = f"/vwpodman-{secrets.token_hex(4)}"
        for sub in ("plugins", "net", "ipam", "storage", "run", "tmp", "ov", "logs"):
            os.makedirs(self.p(sub), exist_ok=True)
        os.symlink(VIFWIRE_CNI, self.p("plugins", "vifwire-cni"))  # dangling until the plugin is installed
        self.conf = self.p("containers.conf")
        self.proc: subprocess.Popen | None = None
        self.broken: str | None = None
        self.background: dict[int, str] = {}  # pid -> starttime, started by spawn()
        self.history: list[tuple[str, int, float]] = []  # (command, rc, seconds): for failure reports
        self._shell_log = None

    def p(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> "PodmanShell":
        self._write_conf()
        env = {"PATH": SHELL_PATH, "HOME": "/root", "LANG": "C.UTF-8", "CONTAINERS_CONF": self.conf,
               "TMPDIR": self.p("tmp")}
        self._shell_log = open(self.p("logs", "shell.log"), "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private",
             sys.executable, "-c", SUBREAPER_EXEC, "/bin/sh"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._shell_log, env=env, cwd=self.dir)
        rc, out, err = self.run(self._setup_script(), timeout=60)
        if rc != 0:
            raise ShellError(f"podman shell setup failed (rc {rc}): {out}{err}")
        return self

    def _write_conf(self) -> None:
        q = json.dumps
        with open(self.conf, "w") as f:
            f.write(f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {q(self.p("logs", "events.log"))}
lock_type = "file"
image_copy_tmp_dir = {q(self.p("tmp"))}

[network]
network_backend = "cni"
network_config_dir = {q(self.p("net"))}
cni_plugin_dirs = [{q(self.p("plugins"))}, {q(CNI_DIR)}]
""")

    def _setup_script(self) -> str:
        """Mounts, in the shell's private mount namespace only."""
        lines = ["set -e"]
        try:
            mounts = cgroup_mounts()
        except OSError:  # PID 1's mount table unreadable: as this process sees them
            mounts = cgroup_mounts("/proc/self/mounts")
        for src, mnt, fstype, opts in mounts:
            lines.append(f"mkdir -p {shlex.quote(mnt)}")
            lines.append(f"mount -t {shlex.quote(fstype)} -o {shlex.quote(opts)} {shlex.quote(src)} "
                         f"{shlex.quote(mnt)}")
        ov = shlex.quote(self.p("ov"))
        lines.append(f"mount -t tmpfs -o mode=700 vwpodman {ov}")
        for name, lower in (("run", "/run"), ("varlib", "/var/lib")):
            up, wk = shlex.quote(self.p("ov", f"{name}-up")), shlex.quote(self.p("ov", f"{name}-wk"))
            lines.append(f"mkdir -p {up} {wk}")
            lines.append(f"mount -t overlay overlay -o lowerdir={lower},upperdir={up},workdir={wk} {lower}")
        lines.append("mkdir -p /run/netns /run/runc")
        lines.append("mount -t tmpfs -o mode=755 vwnetns /run/netns")
        lines.append("mount -t tmpfs -o mode=700 vwrunc /run/runc")
        lines.append("test -d /sys/fs/cgroup/memory -o -f /sys/fs/cgroup/cgroup.controllers")
        return "\n".join(lines)

    def close(self) -> list[str]:
        """Tear everything down (see the module doc); returns the problems met (also raised by the fixture)."""
        problems: list[str] = []
        if self.proc is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return problems
        if self.broken is None and self.proc.poll() is None:
            try:
                rc, out, err = self.podman("ps", "-aq", "--no-trunc", timeout=60)
                ids = out.split()
                if ids:
                    rc, out, err = self.podman("rm", "-f", "-t", "0", *ids, timeout=120)
                    if rc != 0:
                        problems.append(f"podman rm at teardown: rc {rc}: {err[-1000:]}")
                    self.wait_gone(ids, timeout=60)
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                problems.append(f"container cleanup at teardown: {exc}")
        for pid in list(self.background):
            with contextlib.suppress(Exception):
                self.stop(pid)
        if self.broken is None and self.proc.poll() is None:  # cgroup dirs, as the shell sees them
            with contextlib.suppress(Exception):
                self.run(f"for d in /sys/fs/cgroup/*{self.cgroup_parent} /sys/fs/cgroup{self.cgroup_parent}; do "
                         f"test -d \"$d\" && find \"$d\" -depth -type d -exec rmdir {{}} + ; done; true", timeout=30)
        running = self.proc.poll() is None
        every = descendants(self.proc.pid, zombies=True) if running else {}
        left = descendants(self.proc.pid) if running else {}
        if left and self.broken is None:
            problems += [f"killed leftover process {pid}: {_cmdline(pid)[:200]}" for pid in left]
        if self.broken is not None:  # a command hangs: end everything before the shell
            kill_all(left)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        if self._shell_log:
            self._shell_log.close()
        kill_all(left)
        reap(every)  # the orphans this process adopted, zombies included
        problems += remove_cgroup_dirs(self.cgroup_parent)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None
        return problems

    # ---- commands ----------------------------------------------------------

    def run(self, cmd: str | list[str] | tuple[str, ...], timeout: float = 60.0) -> tuple[int, str, str]:
        """Run ``cmd`` (shell text, or an argv that is quoted here) in the shell: ``(rc, stdout, stderr)``."""
        if self.broken:
            raise ShellError(f"podman shell unusable: {self.broken}")
        assert self.proc and self.proc.stdin and self.proc.stdout
        if not isinstance(cmd, str):
            cmd = " ".join(shlex.quote(str(c)) for c in cmd)
        t0 = time.monotonic()
        out_p, err_p = self.p("logs", "cmd.out"), self.p("logs", "cmd.err")
        token = f"__vw_done_{secrets.token_hex(8)}__"
        script = f"( {cmd}\n) </dev/null >{shlex.quote(out_p)} 2>{shlex.quote(err_p)}; echo \"{token} $?\"\n"
        try:
            self.proc.stdin.write(script.encode())
            self.proc.stdin.flush()
        except OSError as exc:
            self.broken = f"shell stdin: {exc}"
            raise ShellError(f"podman shell gone ({exc}); log: {self.shell_log()[-2000:]}") from exc
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        marker = token.encode()
        while True:
            i = buf.find(marker)
            if i >= 0 and buf.find(b"\n", i) >= 0:
                line = buf[i:buf.index(b"\n", i)].decode()
                rc = int(line.split()[1])
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self.broken = f"{cmd[:200]!r} timed out after {timeout}s"
                raise ShellError(f"{cmd[:300]!r} still running after {timeout}s; stdout so far: "
                                 f"{_read(out_p)[-2000:]!r} stderr: {_read(err_p)[-2000:]!r}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.broken = "shell exited"
                    raise ShellError(f"podman shell exited (rc {self.proc.poll()}) while running {cmd[:300]!r}; "
                                     f"log: {self.shell_log()[-2000:]}")
                buf += chunk
        self.history.append((cmd[:300], rc, round(time.monotonic() - t0, 3)))
        return rc, _read(out_p), _read(err_p)

    def check(self, cmd: str | list[str], timeout: float = 60.0) -> str:
        """:meth:`run`, asserting exit code 0; stdout."""
        rc, out, err = self.run(cmd, timeout)
        assert rc == 0, f"{cmd!r} -> rc {rc}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
        return out

    def shell_log(self) -> str:
        return _read(self.p("logs", "shell.log"))

    # ---- podman ------------------------------------------------------------

    @property
    def podman_argv(self) -> list[str]:
        return [PODMAN, "--root", self.p("storage"), "--runroot", self.p("run"), "--storage-driver", "vfs",
                "--tmpdir", self.p("tmp"), "--runtime", "runc"]

    def podman(self, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
        return self.run([*self.podman_argv, *args], timeout)

    def import_image(self, tar: str, image: str = IMAGE) -> None:
        rc, out, err = self.podman("import", tar, image)
        if rc != 0:
            raise ShellError(f"podman import failed (rc {rc}): {err[-2000:]}")

    def add_network(self, name: str, plugins: list[dict[str, Any]], cni_version: str = "1.0.0") -> str:
        """Write ``<name>.conflist`` into podman's network directory; its path."""
        path = self.p("net", f"{name}.conflist")
        with open(path, "w") as f:
            json.dump({"cniVersion": cni_version, "name": name, "plugins": plugins}, f, indent=1)
        return path

    def run_container(self, name: str, network: str, *cmd: str, extra: tuple[str, ...] | list[str] = (),
                      image: str = IMAGE, timeout: float = 120.0) -> tuple[int, str, str]:
        """``podman run -d`` (in our cgroup parent); ``(rc, container id, stderr)``."""
        rc, out, err = self.podman("run", "-d", "--name", name, "--network", network,
                                   "--cgroup-parent", self.cgroup_parent, *extra, image, *(cmd or ("sleep", "1000")),
                                   timeout=timeout)
        return rc, out.strip(), err

    def inspect(self, name: str) -> dict[str, Any]:
        rc, out, err = self.podman("inspect", "--format", "json", name)
        assert rc == 0, f"podman inspect {name}: {err}"
        return json.loads(out)[0]

    def exec(self, name: str, *cmd: str, extra: tuple[str, ...] = (), timeout: float = 60.0) -> tuple[int, str, str]:
        return self.podman("exec", *extra, name, *cmd, timeout=timeout)

    def remove(self, *names_or_ids: str, wait_ids: list[str] | None = None,
               timeout: float = 60.0) -> tuple[int, str, str]:
        """``podman rm -f -t 0``, then wait for conmon and ``podman container cleanup`` of these containers."""
        res = self.podman("rm", "-f", "-t", "0", *names_or_ids, timeout=timeout)
        self.wait_gone(wait_ids if wait_ids is not None else list(names_or_ids), timeout=timeout)
        return res

    # ---- processes ---------------------------------------------------------

    def descendants(self) -> dict[int, str]:
        return descendants(self.proc.pid) if self.proc and self.proc.poll() is None else {}

    def container_procs(self, ids: list[str]) -> dict[int, str]:
        """Live descendants of the shell whose command line names one of ``ids`` (conmon, cleanup)."""
        ids = [i for i in ids if i]
        return {pid: _cmdline(pid) for pid in self.descendants() if any(i in _cmdline(pid) for i in ids)}

    def wait_gone(self, ids: list[str], timeout: float = 60.0) -> None:
        """Wait until no conmon / ``podman container cleanup`` of these containers is alive."""
        deadline = time.monotonic() + timeout
        while True:
            procs = self.container_procs(ids)
            if not procs:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"container processes still alive after {timeout}s: {procs}")
            time.sleep(0.05)

    def spawn(self, argv: list[str], log: str) -> int:
        """Start ``argv`` in the background from the shell (same mount and network namespace); its PID."""
        cmd = " ".join(shlex.quote(a) for a in argv)
        out = self.check(f"{cmd} </dev/null >{shlex.quote(log)} 2>&1 &\necho $!")
        pid = int(out.split()[-1])
        start = start_time(pid)
        if start is not None:
            self.background[pid] = start
        return pid

    def stop(self, pid: int, timeout: float = 30.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``) a process :meth:`spawn` started, by PID."""
        start = self.background.pop(pid, None)
        if start is None or not alive(pid, start) or pid not in self.descendants():
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid, start):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def remove_cgroup_dirs(parent: str, timeout: float = 10.0) -> list[str]:
    """rmdir our ``--cgroup-parent`` subtree in every hierarchy (deepest first); what could not be removed."""
    assert parent.startswith("/vwpodman-"), parent  # never anything but a tree this module named
    left = rmdir_trees([mnt + parent for mnt in cgroup_mountpoints()], timeout)
    return [f"cgroup dir not removable: {d}" for d in left]


# --------------------------------------------------------------------------- fixtures


class PodmanSandbox:
    """What the fixtures hand out: ``ns``, ``shell`` and (``podman_ovs``) ``ovs``."""

    def __init__(self, ns: str, shell: PodmanShell, ovs: PrivateOVS | None = None):
        self.ns, self.shell, self.ovs = ns, shell, ovs


@contextlib.contextmanager
def podman_sandbox(rootfs_tar: str, *, tag: str = "pm", ovs_bridges: tuple[str, ...] | None = None
                   ) -> Iterator[PodmanSandbox]:
    """A namespace, (optionally) a private OVS in it, a podman shell with the busybox image."""
    reason = podman_missing()
    if reason:
        (pytest.skip if os.geteuid() != 0 else pytest.fail)(reason)
    with netns.sandbox(tag) as ns:
        ovs = None
        shell = None
        problems: list[str] = []
        try:
            if ovs_bridges is not None:
                ovs = PrivateOVS()
                ovs.start(ns)
                for br in ovs_bridges:
                    ovs.add_bridge(br)
            shell = PodmanShell(ns, tag=tag)
            shell.start()
            shell.import_image(rootfs_tar)
            yield PodmanSandbox(ns, shell, ovs)
        finally:
            if shell is not None:
                problems = shell.close()
            if ovs is not None:
                ovs.stop()
        assert not problems, f"podman sandbox teardown: {problems}"


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> str:
    """A busybox rootfs tarball (built once per session) for ``podman import``."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox-static")
    return build_rootfs_tar(str(tmp_path_factory.mktemp("podman-image") / "rootfs.tar"))


@pytest.fixture
def podman_shell(busybox_rootfs) -> Iterator[PodmanSandbox]:
    """A throwaway namespace with a podman shell in it (image imported)."""
    with podman_sandbox(busybox_rootfs) as sb:
        yield sb


@pytest.fixture
def podman_ovs(busybox_rootfs) -> Iterator[PodmanSandbox]:
    """Like ``podman_shell`` plus a private OVS (bridge br-int, netdev datapath) in the namespace."""
    if not shutil.which("ovs-vswitchd"):
        pytest.skip("needs Open vSwitch binaries")
    with podman_sandbox(busybox_rootfs, tag="po", ovs_bridges=("br-int",)) as sb:
        yield sb
