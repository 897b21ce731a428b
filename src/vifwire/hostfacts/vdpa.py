"""The vhost-vdpa character device of a VF, found in sysfs.

A ``vdpa`` port is rendered as ``<interface type="vdpa"><source
dev="/dev/vhost-vdpa-N"/>`` (docs/libvirt-rendering.md, "vdpa ports").
Nova asks libvirt for that path (``Host.get_vdpa_device_path``: the vDPA
node device whose parent is the port's VF, and that device's ``<chardev>``);
libvirt takes the first entry of the vDPA device's sysfs directory named
``vhost-vdpa*`` and its ``/dev`` node (libvirt's ``node_device_udev.c``,
``udevGetVDPACharDev``). This is the same lookup straight from sysfs, so
vifwire needs no libvirt connection:

* ``<sysfs>/bus/pci/devices/<VF>`` is the VF (a link to its device directory);
* each ``<sysfs>/bus/vdpa/devices/<name>`` links to a vDPA device, whose
  parent directory is the device it was created on: the VF's when it is the
  VF's (iproute2's ``vdpa dev add mgmtdev pci/<VF> name <name>``);
* in that directory, ``vhost-vdpa-<N>`` exists when the vDPA device is bound
  to the vhost_vdpa driver (bound to virtio_vdpa it is a host netdev, which a
  guest cannot use), and ``/dev/vhost-vdpa-<N>`` is the device QEMU opens,
  if it exists.

Read-only. ``sysfs`` and ``devfs`` (where ``/dev`` is looked at) are
parameters so tests can use a fake root: no vDPA hardware is needed. The path
returned is always the ``/dev`` one, as libvirt reports it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

from vifwire.renderers.options import GuestOptions

log = logging.getLogger("vifwire.hostfacts.vdpa")

SYSFS = "/sys"
DEVFS = "/dev"
VNIC_VDPA = "vdpa"

_PCI = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\Z")


def find_vdpa_device(pci_slot: str, sysfs: str | None = None, devfs: str | None = None) -> str | None:
    """The vhost-vdpa device of the VF at ``pci_slot`` (``dddd:bb:ss.f``,
    any case), or ``None`` when the host has none for it.

    When several vDPA devices sit on one VF the first by name is taken, as
    Nova takes the first libvirt lists.
    """
    sysfs = SYSFS if sysfs is None else sysfs
    devfs = DEVFS if devfs is None else devfs
    slot = pci_slot.lower() if isinstance(pci_slot, str) else ""
    if not _PCI.match(slot):
        return None
    vf = os.path.join(sysfs, "bus", "pci", "devices", slot)
    if not os.path.isdir(vf):
        log.debug("vdpa: no PCI device %s in %s", slot, sysfs)
        return None
    vf = os.path.realpath(vf)
    bus = os.path.join(sysfs, "bus", "vdpa", "devices")
    for name in _listdir(bus):
        dev = os.path.realpath(os.path.join(bus, name))
        if os.path.dirname(dev) != vf:
            continue
        chardev = next((e for e in _listdir(dev) if e.startswith("vhost-vdpa")), None)
        if chardev is None:
            log.debug("vdpa: %s on VF %s is not bound to vhost_vdpa", name, slot)
        elif os.path.exists(os.path.join(devfs, chardev)):
            return "/dev/" + chardev
        else:  # libvirt refuses the device then too ("chardev path ... does not exist")
            log.debug("vdpa: %s on VF %s has no /dev/%s", name, slot, chardev)
    return None


def find_vdpa_devices(pci_slots: Iterable[str], sysfs: str | None = None,
                      devfs: str | None = None) -> dict[str, str]:
    """:func:`find_vdpa_device` for each slot: lower-cased slot -> device,
    for the slots that have one."""
    found = {}
    for slot in pci_slots:
        path = find_vdpa_device(slot, sysfs, devfs)
        if path is not None:
            found[slot.lower()] = path
    return found


def vdpa_slots(bindings: Iterable[Any]) -> list[str]:
    """The VF PCI addresses (``binding:profile.pci_slot``) of the ``vdpa``
    ports among ``bindings``, in order, without repeats."""
    slots: list[str] = []
    for b in bindings:
        if b.vnic_type != VNIC_VDPA:
            continue
        profile = b.vif.get("profile")
        slot = profile.get("pci_slot") if isinstance(profile, dict) else None
        if isinstance(slot, str) and slot.lower() not in slots:
            slots.append(slot.lower())
    return slots


def with_vdpa_devices(guest: GuestOptions, bindings: Iterable[Any], sysfs: str | None = None,
                      devfs: str | None = None) -> GuestOptions:
    """``guest`` with the host's vhost-vdpa devices of the ``vdpa`` ports'
    VFs added to ``vdpa_devices``.

    Nothing is looked up when ``guest.vdpa_dev`` names the device by hand
    or no port is a ``vdpa`` one; entries already in ``vdpa_devices`` win.
    """
    if guest.vdpa_dev is not None:
        return guest
    slots = [s for s in vdpa_slots(bindings) if s not in {k.lower() for k in guest.vdpa_devices}]
    found = find_vdpa_devices(slots, sysfs, devfs)
    if not found:
        return guest
    return dataclasses.replace(guest, vdpa_devices={**found, **guest.vdpa_devices})


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
