"""The tiny guest that tests/test_real_guests.py boots under libvirt/QEMU.

A Debian cloud kernel (taken out of its package with ``dpkg-deb -x``, never
installed) and an initrd the test builds itself: busybox-static, the kernel
modules the virtio NIC needs, and an ``/init`` that configures ``eth0`` from
the kernel command line, prints what the tests check on the serial console
and powers off. docs/libvirt-rendering.md ("Real guests") says what the tests
prove with it.

Everything is cached in ``$VIFWIRE_TEST_CACHE/guest`` (default
``/var/cache/vifwire-tests/guest``): the kernel package is downloaded once
(``apt-get download``), the initrd is rebuilt only when what goes into it
changes. A missing package or tool raises :class:`GuestImageError`: the tests
fail rather than skip.

The /init speaks a line protocol on the console (``VFW-<WHAT> values``), read
back by :func:`parse_console`:

``VFW-MAC aa:bb:..``   ``/sys/class/net/eth0/address``
``VFW-MTU 1400``       ``/sys/class/net/eth0/mtu``
``VFW-PING ok 0``      whether the peer answered, and after how many misses
``VFW-ARP ip mac dev`` the guest's neighbour table after the ping
``VFW-DONE``           the guest got to the end (then ``poweroff -f``)
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass

CACHE_ENV = "VIFWIRE_TEST_CACHE"
DEFAULT_CACHE = "/var/cache/vifwire-tests"
#: Debian's meta-package for the newest cloud kernel; its dependency names the image package
META_PACKAGE = "linux-image-cloud-amd64"
#: what the virtio NIC needs on Debian's cloud kernel (both are modules there);
#: their dependencies (virtio, virtio_ring, net_failover, failover, ...) come from modules.dep
MODULES = ("virtio_pci", "virtio_net")
BUSYBOX = "/bin/busybox"  # package busybox-static: no shared libraries to copy

INIT = r"""#!/bin/busybox sh
# vifwire test guest: configure eth0 from the kernel command line
# (vfw.ip=ADDR/LEN [vfw.gw=GATEWAY] vfw.peer=ADDR), report, ping, power off.
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec >/dev/console 2>&1
while read -r m; do insmod "/modules/$m" || echo "VFW-ERROR insmod $m"; done < /modules/load-order
for a in $(cat /proc/cmdline); do
    case "$a" in
        vfw.ip=*) IP="${a#vfw.ip=}" ;;
        vfw.gw=*) GW="${a#vfw.gw=}" ;;
        vfw.peer=*) PEER="${a#vfw.peer=}" ;;
    esac
done
n=0
while [ ! -e /sys/class/net/eth0 ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
echo "VFW-MAC $(cat /sys/class/net/eth0/address)"
echo "VFW-MTU $(cat /sys/class/net/eth0/mtu)"
ip link set lo up
ip link set eth0 up
ip addr add "$IP" dev eth0
if [ -n "$GW" ]; then
    ip route add "$GW" dev eth0 scope link
    ip route add default via "$GW" dev eth0
fi
result=fail
miss=0
while [ "$miss" -lt 8 ]; do
    if ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then result=ok; break; fi
    miss=$((miss + 1))
done
echo "VFW-PING $result $miss"
tail -n +2 /proc/net/arp | while read -r ip hw flags mac mask dev; do echo "VFW-ARP $ip $mac $dev"; done
echo "VFW-DONE"
poweroff -f
"""


class GuestImageError(RuntimeError):
    """The guest kernel or initrd could not be prepared (the message says what to install)."""


@dataclass(frozen=True)
class GuestImage:
    kernel: str  # path of vmlinuz
    initrd: str  # path of the gzip'd newc cpio
    release: str  # the kernel's release, e.g. 6.1.0-57-cloud-amd64


def cache_root() -> str:
    """The persistent cache of the real-guest tests (kernel, initrd, libvirt's QEMU probe)."""
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE


def guest_image() -> GuestImage:
    """The kernel and initrd, from the cache or made now (one process at a time)."""
    base = os.path.join(cache_root(), "guest")
    os.makedirs(base, exist_ok=True)
    with _locked(os.path.join(base, ".lock")):
        kdir = _cached_kernel(base) or _fetch_kernel(base)
        release = os.path.basename(kdir)
        return GuestImage(kernel=os.path.join(kdir, "vmlinuz"), initrd=_initrd(kdir), release=release)


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive flock: two test runs must not build the same cache entry at once."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------
# the kernel: vmlinuz and the modules the NIC needs, out of the Debian package


def _cached_kernel(base: str) -> str | None:
    """A complete kernel directory from an earlier run (whatever apt offers now:
    any cloud kernel boots the guest, and re-downloading one is what the cache avoids)."""
    done = sorted(glob.glob(os.path.join(base, "*", "complete")))
    return os.path.dirname(done[-1]) if done else None


def _download(tmp: str) -> None:
    """``apt-get download`` of the image package; once more after ``apt-get
    update`` when it fails (a fresh machine's package lists can be missing or
    name a version the mirror no longer has)."""
    try:
        package = _image_package()
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], cwd=tmp,
             hint=f"apt-get download {package}")
    except GuestImageError:
        _run(["apt-get", "update", "-qq"], hint="apt-get update")
        package = _image_package()
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], cwd=tmp,
             hint=f"apt-get download {package} (after apt-get update)")


def _fetch_kernel(base: str) -> str:
    """Download the image package, extract it in a scratch directory, keep what the guest needs."""
    with tempfile.TemporaryDirectory(prefix="vw-kernel-", dir=base) as tmp:
        _download(tmp)
        [deb] = glob.glob(os.path.join(tmp, "*.deb"))
        root = os.path.join(tmp, "x")
        _run(["dpkg-deb", "-x", deb, root], hint="dpkg-deb -x")
        [mods] = glob.glob(os.path.join(root, "lib", "modules", "*"))
        release = os.path.basename(mods)
        # the package carries no modules.dep (the postinst makes it): make it in the scratch tree
        _run(["depmod", "-b", root, release], hint="depmod (package kmod)")
        kdir = os.path.join(base, release)
        shutil.rmtree(kdir, ignore_errors=True)
        os.makedirs(os.path.join(kdir, "modules"))
        shutil.copy(os.path.join(root, "boot", f"vmlinuz-{release}"), os.path.join(kdir, "vmlinuz"))
        order = load_order(_read_modules_dep(os.path.join(mods, "modules.dep")), MODULES)
        for rel in order:
            shutil.copy(os.path.join(mods, rel), os.path.join(kdir, "modules", os.path.basename(rel)))
        with open(os.path.join(kdir, "modules", "load-order"), "w") as f:
            f.write("".join(os.path.basename(rel) + "\n" for rel in order))
        open(os.path.join(kdir, "complete"), "w").close()
    return kdir


def _image_package() -> str:
    """The package the cloud meta-package depends on now, unsigned variant if apt has it
    (same kernel and modules; the signature is for Secure Boot, which the guest does not use)."""
    out = _run(["apt-cache", "depends", META_PACKAGE], hint=f"apt-cache depends {META_PACKAGE} (apt-get update?)")
    deps = re.findall(r"Depends:\s*(linux-image-\S+-cloud-amd64)\b", out)
    if not deps:
        raise GuestImageError(f"apt-cache knows no image package behind {META_PACKAGE}; run apt-get update")
    unsigned = deps[0] + "-unsigned"
    shown = subprocess.run(["apt-cache", "show", unsigned], capture_output=True, text=True)
    return unsigned if shown.returncode == 0 and shown.stdout.strip() else deps[0]


def _read_modules_dep(path: str) -> dict[str, list[str]]:
    """modules.dep: ``kernel/a.ko: kernel/b.ko kernel/c.ko`` (paths relative to the release dir)."""
    deps: dict[str, list[str]] = {}
    with open(path) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            if mod:
                deps[mod.strip()] = rest.split()
    return deps


def load_order(deps: dict[str, list[str]], wanted: tuple[str, ...]) -> list[str]:
    """Module paths in an order ``insmod`` accepts: every module after what it needs.

    modules.dep lists each module's whole dependency closure; recursing on each
    dependency's own line gives a topological order without trusting the
    order within a line.
    """
    by_name = {_modname(p): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise GuestImageError(f"module {name} is not in the kernel package (built in? see modules.builtin)")
        visit(by_name[name])
    return order


def _modname(path: str) -> str:
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


# ---------------------------------------------------------------------------
# the initrd


def _initrd(kdir: str) -> str:
    """The initrd for this kernel, rebuilt when /init, busybox or the modules change."""
    if not os.path.isfile(BUSYBOX):
        raise GuestImageError(f"{BUSYBOX} is missing: install busybox-static")
    files = _initrd_files(kdir)
    key = hashlib.sha256()
    for name, (mode, data) in sorted(files.items()):
        key.update(f"{name}\0{mode:o}\0".encode() + hashlib.sha256(data).digest())
    path = os.path.join(kdir, f"initrd-{key.hexdigest()[:16]}.img")
    if not os.path.isfile(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(gzip.compress(newc_archive(files), mtime=0))
        os.replace(tmp, path)
    return path


def _initrd_files(kdir: str) -> dict[str, tuple[int, bytes]]:
    """Archive path -> (mode, content); directories and the console node have no content."""
    files: dict[str, tuple[int, bytes]] = {}
    for d in ("bin", "dev", "proc", "sys", "modules"):
        files[d] = (stat.S_IFDIR | 0o755, b"")
    files["dev/console"] = (stat.S_IFCHR | 0o600, b"")  # the kernel opens it for /init's stdio
    files["init"] = (stat.S_IFREG | 0o755, INIT.encode())
    with open(BUSYBOX, "rb") as f:
        files["bin/busybox"] = (stat.S_IFREG | 0o755, f.read())
    files["bin/sh"] = (stat.S_IFLNK | 0o777, b"busybox")
    for p in sorted(glob.glob(os.path.join(kdir, "modules", "*"))):
        with open(p, "rb") as f:
            files["modules/" + os.path.basename(p)] = (stat.S_IFREG | 0o644, f.read())
    return files


def newc_archive(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks as an initramfs
    (the kernel's Documentation/driver-api/early-userspace/buffer-format.rst).

    Written here rather than with cpio(1) so that the image depends on no
    more packages, and so that it is byte-for-byte reproducible (mtime 0).
    """
    out = io.BytesIO()
    ino = 1
    for name, (mode, data) in list(files.items()) + [("TRAILER!!!", (0, b""))]:
        rdev = (5, 1) if stat.S_ISCHR(mode) else (0, 0)  # only /dev/console is a device
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        out.write(b"070701" + b"".join(b"%08X" % v for v in fields))
        out.write(name.encode() + b"\0")
        _pad4(out)
        out.write(data)
        _pad4(out)
        ino += 1
    return out.getvalue()


def _pad4(out: io.BytesIO) -> None:
    out.write(b"\0" * (-out.tell() % 4))


def _run(argv: list[str], hint: str, cwd: str | None = None) -> str:
    """Run a tool; a failure names what to install or do instead of a bare exit code."""
    try:
        res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as e:
        raise GuestImageError(f"{argv[0]} not found: {hint}") from e
    if res.returncode != 0:
        raise GuestImageError(f"{' '.join(argv)} failed ({hint}): {(res.stderr or res.stdout).strip()[-500:]}")
    return res.stdout


# ---------------------------------------------------------------------------
# reading the console back


@dataclass(frozen=True)
class GuestReport:
    mac: str | None
    mtu: int | None
    ping: str | None  # "ok" or "fail"
    arp: dict[str, str]  # neighbour ip -> mac, as the guest saw them after the ping
    done: bool
    errors: list[str]


def parse_console(text: str) -> GuestReport:
    """The VFW-* lines the guest's /init printed (kernel messages in between are ignored)."""
    mac = mtu = ping = None
    arp: dict[str, str] = {}
    errors: list[str] = []
    done = False
    for line in text.replace("\r", "").splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "VFW-MAC":
            mac = rest.strip()
        elif word == "VFW-MTU":
            mtu = int(rest) if rest.strip().isdigit() else None
        elif word == "VFW-PING":
            ping = rest.split()[0] if rest.split() else None
        elif word == "VFW-ARP" and len(rest.split()) >= 2:
            ip, hw = rest.split()[:2]
            arp[ip] = hw
        elif word == "VFW-ERROR":
            errors.append(rest)
        elif word == "VFW-DONE":
            done = True
    return GuestReport(mac=mac, mtu=mtu, ping=ping, arp=arp, done=done, errors=errors)
