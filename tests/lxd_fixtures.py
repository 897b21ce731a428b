"""A real LXD 5.0 daemon for tests, inside a network namespace the test creates.

The traps of running LXD inside a test namespace, and what this module does
about each:

* ``ip netns exec NS`` gives its command a mount namespace with a fresh
  /sys (the namespace's), which hides the host's cgroup hierarchies. The
  daemon's start script mounts them again there - the tmpfs at
  /sys/fs/cgroup, each cgroup v1 controller and the cgroup2 mount, with the
  options /proc/1/mounts lists. Without them no container ever starts.
* /run gets a private tmpfs in that mount namespace: liblxc keeps its lock
  files under /run/lxc, which must not reach the host.
* ``LXD_DIR`` (socket, database, the ``dir`` storage pool, logs, cache) and
  ``LXD_CONF`` (the ``lxc`` client's configuration) are in a private
  directory; the daemon is configured with a preseed: one ``dir`` pool and a
  default profile with only a root disk - no network, no bridge, no dnsmasq.
* The daemon is made a child sub-reaper (``PR_SET_CHILD_SUBREAPER``
  survives ``execve``), so the container monitors liblxc double-forks stay
  its descendants: at teardown exactly those are found, and killed by PID
  (start time checked) if they outlive ``lxd shutdown`` (the means are
  shared with the podman fixtures: tests/leftovers.py).
* LXD leaves empty ``lxc.pivot`` cgroup directories behind (and
  ``lxc.payload.NAME``/``lxc.monitor.NAME`` of a container that did not stop
  cleanly): the ones that were not there before the daemon started are
  removed (``rmdir``: only empty ones) at teardown.

The image is a busybox-static rootfs with a few applet links (``sh``, ``ip``,
``ping``, ``sleep``, ``ifconfig``) and an ``/sbin/init`` that sleeps, as a
unified LXD image tarball (``metadata.yaml`` + ``rootfs/``), built once per
session; a container from it starts in ~0.2 s.

Fixtures: ``lxd_image`` (session: the tarball), ``lxd_daemon`` (module: a
namespace with a running, configured LXD and the image imported as
``vwbusybox``). Only a non-root run skips; a missing ``lxd``, ``lxc`` or
busybox-static is a failure (scripts/setup.sh installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leftovers import (SUBREAPER_EXEC, cgroup_mountpoints, cgroup_mounts, descendants, kill_all, read_mounts, reap,
                       rmdir_trees, start_time)
from rootfs_tar import BUSYBOX, add_busybox_rootfs, add_file
from vifwire.sandbox import netns

LXD = shutil.which("lxd") or "/usr/bin/lxd"
LXC = shutil.which("lxc") or "/usr/bin/lxc"
IMAGE_ALIAS = "vwbusybox"
APPLETS = ("sh", "ip", "ping", "sleep", "ifconfig", "cat", "true")
TMP_ROOT = "/tmp"  # short paths: LXD's unix socket must stay < 108 bytes
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PRESEED = """storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
"""


def lxd_missing() -> str | None:
    """Why the LXD tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [p for p in (LXD, LXC, BUSYBOX) if not os.path.exists(p)]
    return f"needs lxd, lxc and busybox-static (missing: {missing})" if missing else None


# --------------------------------------------------------------------------- cgroups


def cgroup_dirs(names: list[str]) -> set[str]:
    """Which of the top-level cgroup directories ``names`` exist, in every hierarchy we see."""
    return {d for mnt in cgroup_mountpoints() for n in names if os.path.isdir(d := os.path.join(mnt, n))}


# --------------------------------------------------------------------------- image


def build_image(path: str) -> str:
    """A unified LXD image tarball: ``metadata.yaml`` and a busybox ``rootfs/``."""
    meta = (f"architecture: {os.uname().machine}\ncreation_date: {int(time.time())}\n"
            "properties:\n  description: vifwire test busybox\n  os: busybox\n  release: test\n")
    with tarfile.open(path, "w") as tar:
        add_file(tar, "metadata.yaml", meta.encode())
        # PID 1 only waits: the test configures the network with `lxc exec`
        add_busybox_rootfs(tar, "rootfs", APPLETS,
                           dirs=("", "bin", "sbin", "dev", "etc", "proc", "sys", "tmp", "run", "root", "var"),
                           files={"sbin/init": (b"#!/bin/sh\nexec /bin/sleep 2147483647\n", 0o755)})
    return path


# --------------------------------------------------------------------------- the daemon


class LxdError(AssertionError):
    """The test LXD could not be started, configured or driven."""


class LxdDaemon:
    """One private LXD in namespace ``ns`` (see the module doc)."""

    def __init__(self, ns: str):
        self.ns = ns
        self.dir = tempfile.mkdtemp(prefix="vw-lxd-", dir=TMP_ROOT)
        os.chmod(self.dir, 0o711)  # an unprivileged container's root must reach its rootfs below
        self.lxd_dir = os.path.join(self.dir, "lxd")
        self.socket = os.path.join(self.lxd_dir, "unix.socket")
        self.log = os.path.join(self.dir, "lxd.log")
        self.proc: subprocess.Popen | None = None
        self.instances: set[str] = set()  # every container this daemon made (for its cgroup dirs)
        self._cgroups_before: set[str] = set()
        os.makedirs(self.lxd_dir, mode=0o711)
        os.makedirs(os.path.join(self.dir, "conf"), mode=0o700)

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": PATH, "HOME": self.dir, "LANG": "C.UTF-8", "LXD_DIR": self.lxd_dir,
                "LXD_CONF": os.path.join(self.dir, "conf")}

    def start(self, timeout: float = 60.0) -> "LxdDaemon":
        self._cgroups_before = cgroup_dirs(["lxc.pivot"])
        script = os.path.join(self.dir, "start.sh")
        lines = ["set -e"]
        for src, mnt, fstype, opts in cgroup_mounts():
            lines += [f"mkdir -p '{mnt}'", f"mount -t '{fstype}' -o '{opts}' '{src}' '{mnt}'"]
        lines += ["mount -t tmpfs -o mode=755 vwlxdrun /run",
                  f"exec '{LXD}' --group root --logfile '{self.log}'"]
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        out = open(os.path.join(self.dir, "daemon.out"), "wb")
        try:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", SUBREAPER_EXEC,
                                          "/bin/sh", script], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env, cwd=self.dir)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LxdError(f"lxd did not start (rc {self.proc.poll()}): {self.tail()}")
            time.sleep(0.05)
        self.run([LXD, "waitready", f"--timeout={int(timeout)}"], timeout=timeout + 5)
        self.run([LXD, "init", "--preseed"], stdin=_PRESEED)
        return self

    def tail(self, n: int = 3000) -> str:
        text = ""
        for name in ("daemon.out", "lxd.log"):
            with contextlib.suppress(OSError), open(os.path.join(self.dir, name), errors="replace") as f:
                text += f"[{name}] " + f.read()[-n:]
        return text

    # ---- commands ----------------------------------------------------------

    def run(self, argv: list[str], stdin: str | None = None, timeout: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise LxdError(f"{' '.join(argv)} -> rc {res.returncode}: {res.stderr.strip()[-2000:]}")
        return res

    def lxc(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([LXC, *args], timeout=timeout, check=check)

    def import_image(self, tar: str) -> None:
        self.lxc("image", "import", tar, "--alias", IMAGE_ALIAS)

    def launch(self, name: str | None = None, start: bool = True) -> str:
        """A busybox container with no NIC (running unless ``start=False``); its name."""
        name = name or f"vw{secrets.token_hex(3)}"
        self.instances.add(name)
        self.lxc("init", IMAGE_ALIAS, name)
        if start:
            self.lxc("start", name)
        return name

    def delete(self, name: str) -> None:
        self.lxc("delete", "--force", name, check=False)

    def exec(self, name: str, *cmd: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        return self.lxc("exec", name, "--", *cmd, timeout=timeout, check=check)

    def devices(self, name: str) -> dict[str, dict[str, Any]]:
        """The instance's own devices, as LXD says."""
        return json.loads(self.lxc("query", f"/1.0/instances/{name}").stdout)["devices"]

    def query(self, method: str, path: str, body: Any = None) -> Any:
        args = ["query", "-X", method, path] + (["--data", json.dumps(body)] if body is not None else [])
        out = self.lxc(*args).stdout
        return json.loads(out) if out.strip() else None

    # ---- teardown ----------------------------------------------------------

    def stop(self) -> list[str]:
        """Delete every instance, shut the daemon down, clean up; the problems met."""
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            res = self.lxc("list", "--format", "csv", "-c", "n", check=False)
            for name in res.stdout.split():
                self.instances.add(name)
                res = self.lxc("delete", "--force", name, check=False)
                if res.returncode != 0:
                    problems.append(f"lxc delete {name}: {res.stderr.strip()[-500:]}")
            start = start_time(self.proc.pid)
            procs = descendants(self.proc.pid) | ({self.proc.pid: start} if start is not None else {})
            self.run([LXD, "shutdown", "--timeout=30"], timeout=40, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            killed = kill_all(procs)
            reap(procs)
            if killed:
                problems.append(f"killed leftover LXD processes {killed}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        names = ["lxc.pivot"] + [f"lxc.{kind}.{n}" for n in self.instances for kind in ("payload", "monitor")]
        left = rmdir_trees(sorted(cgroup_dirs(names) - self._cgroups_before))
        problems += [f"cgroup dir not removable: {d}" for d in left]
        mounted = [m for _, m, _, _ in read_mounts() if m.startswith(self.dir)]
        if mounted:
            problems.append(f"still mounted, not removed: {mounted}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None
        return problems


@contextlib.contextmanager
def lxd_sandbox(image_tar: str, tag: str = "lxd") -> Iterator[LxdDaemon]:
    """A namespace with a private, configured LXD in it and the busybox image imported."""
    reason = lxd_missing()
    if reason:
        (pytest.skip if os.geteuid() != 0 else pytest.fail)(reason)
    with netns.sandbox(tag) as ns:
        daemon = LxdDaemon(ns)
        problems: list[str] = []
        try:
            daemon.start()
            daemon.import_image(image_tar)
            yield daemon
        finally:
            problems = daemon.stop()
        assert not problems, f"LXD sandbox teardown: {problems}"


@pytest.fixture(scope="session")
def lxd_image(tmp_path_factory) -> str:
    """The busybox image tarball, built once per session."""
    reason = lxd_missing()
    if reason:
        (pytest.skip if os.geteuid() != 0 else pytest.fail)(reason)
    return build_image(str(tmp_path_factory.mktemp("lxd-image") / "busybox.tar"))


@pytest.fixture(scope="module")
def lxd_daemon(lxd_image) -> Iterator[LxdDaemon]:
    """A namespace with a running LXD (module scope: one daemon for a test module)."""
    with lxd_sandbox(lxd_image) as daemon:
        yield daemon
