"""Guest-side options that are not part of the binding.

They mirror what Nova takes from the flavor, the image and nova.conf when it
renders an interface, so the same inputs produce the same XML as Nova.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bandwidth:
    """One direction of a quota, in Nova's units (KB/s, KB/s, KB).

    ``None`` fields are unset, exactly like a missing ``quota:vif_*`` extra spec.
    """

    average: int | None = None
    peak: int | None = None
    burst: int | None = None

    def is_empty(self) -> bool:
        return self.average is None and self.peak is None and self.burst is None


@dataclass(frozen=True)
class GuestOptions:
    """What the guest looks like.

    ``model``: ``None`` means "follow Nova's default" (virtio for kvm, qemu,
    parallels; none for lxc); the string ``"none"`` means omit ``<model>``.
    ``queues``: multiqueue is on and the guest gets this many queue pairs
    (>= 1): the count Nova's ``_get_virtio_mq_settings`` arrives at from the
    flavor's vCPUs, clamped by the host's tap queue limit.  ``None``: no
    multiqueue (docs/libvirt-rendering.md, "Guest options and the Nova
    input they stand for").
    ``vf_netdev``: the VF's netdev name for direct types when no real VF can
    be looked up (there is no SR-IOV hardware to ask).
    ``vdpa_devices``: the host's vhost-vdpa character devices by VF PCI
    address (``dddd:bb:ss.f``), what Nova asks libvirt for
    (``Host.get_vdpa_device_path``); a front end gathers them from sysfs
    (:mod:`vifwire.hostfacts.vdpa`) because the renderer never looks.
    ``vdpa_dev``: the vhost-vdpa device for a ``vdpa`` port whose VF is not
    in ``vdpa_devices`` (given by hand, like ``vf_netdev``).
    """

    virt_type: str = "kvm"
    model: str | None = None
    queues: int | None = None
    rx_queue_size: int | None = None
    tx_queue_size: int | None = None
    packed: bool = False
    bandwidth_in: Bandwidth = field(default_factory=Bandwidth)
    bandwidth_out: Bandwidth = field(default_factory=Bandwidth)
    vf_netdev: str | None = None
    vdpa_devices: Mapping[str, str] = field(default_factory=dict)
    vdpa_dev: str | None = None
