"""A fake sysfs (and /dev) with vDPA devices on VFs, for the vhost-vdpa
lookup of :mod:`vifwire.hostfacts.vdpa`: there is no vDPA hardware here.

The layout is the kernel's: the VF's device directory under ``devices/``,
``bus/pci/devices/<VF>`` linking to it, a vDPA device (``vdpaN``) created on
the VF as a subdirectory, ``bus/vdpa/devices/vdpaN`` linking to that, and,
when the vDPA device is bound to vhost_vdpa, a ``vhost-vdpa-M`` child with a
``/dev/vhost-vdpa-M`` node.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_vdpa_host(root: Path, vfs: dict[str, str | None], dev_nodes: bool = True) -> tuple[str, str]:
    """Build ``root/sys`` and ``root/dev``; returns their paths.

    ``vfs`` maps a VF's PCI address to the name of its vhost-vdpa char
    device (``vhost-vdpa-0``), or to ``None`` for a vDPA device bound to
    virtio_vdpa (no char device). ``dev_nodes=False`` leaves ``/dev`` empty.
    """
    sysfs, devfs = root / "sys", root / "dev"
    for d in ("devices/pci0000:80", "bus/pci/devices", "bus/vdpa/devices"):
        (sysfs / d).mkdir(parents=True, exist_ok=True)
    devfs.mkdir(exist_ok=True)
    for i, (pci, chardev) in enumerate(vfs.items()):
        vf = sysfs / "devices" / "pci0000:80" / pci
        vf.mkdir()
        (vf / "vendor").write_text("0x15b3\n")
        os.symlink(f"../../../devices/pci0000:80/{pci}", sysfs / "bus" / "pci" / "devices" / pci)
        vdpa = vf / f"vdpa{i}"
        vdpa.mkdir()
        os.symlink(f"../../../devices/pci0000:80/{pci}/vdpa{i}", sysfs / "bus" / "vdpa" / "devices" / f"vdpa{i}")
        if chardev is not None:
            (vdpa / chardev).mkdir()
            (vdpa / chardev / "dev").write_text("508:0\n")
            if dev_nodes:
                (devfs / chardev).write_text("")
        else:
            (vdpa / "virtio3").mkdir()
    return str(sysfs), str(devfs)
