"""A busybox root filesystem written into a tarball, for the container fixtures.

Both container engines the tests drive get their image from a tarball built
here rather than from a registry (no network): podman imports a bare rootfs
(tests/podman_fixtures.py), LXD a unified image with the rootfs under
``rootfs/`` next to ``metadata.yaml`` (tests/lxd_fixtures.py). The tree is
the same: busybox-static (no shared libraries to copy) with one symlink per
applet the tests call, the top-level directories a runtime mounts over, and
an /etc/passwd and /etc/group with only root.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile

BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), "/bin/busybox")
#: The top-level directories of the tree (``/tmp`` sticky and world-writable).
ROOTFS_DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "run", "root", "var")


def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    """A regular file ``name`` holding ``data``, made in memory (root-owned, as in an image)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def add_busybox_rootfs(tar: tarfile.TarFile, root: str, applets: tuple[str, ...],
                       dirs: tuple[str, ...] = ROOTFS_DIRS, files: dict[str, tuple[bytes, int]] | None = None) -> None:
    """Write the busybox tree below ``root`` ("" for the tarball's top): ``dirs`` ("" for ``root``
    itself), bin/busybox and a bin/ symlink per applet, then ``files`` (``{name: (data, mode)}``)
    and etc/passwd, etc/group."""
    def at(rel: str) -> str:
        return posixpath.join(root, rel).rstrip("/")

    for d in dirs:
        info = tarfile.TarInfo(at(d))
        info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
        tar.addfile(info)
    tar.add(BUSYBOX, arcname=at("bin/busybox"))
    for applet in applets:
        info = tarfile.TarInfo(at(f"bin/{applet}"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
        tar.addfile(info)
    for name, (data, mode) in (files or {}).items():
        add_file(tar, at(name), data, mode)
    add_file(tar, at("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n")
    add_file(tar, at("etc/group"), b"root:x:0:\n")
