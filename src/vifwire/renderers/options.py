"""Guest-side options that are not part of the binding.

They mirror what Nova takes from the flavor, the image and nova.conf when it
renders an interface, so the same inputs produce the same XML as Nova.
"""

from __future__ import annotations

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
    ``queues``: multiqueue request; Nova derives it from flavor vCPUs when the
    image asks for ``hw_vif_multiqueue_enabled``.
    ``vf_netdev``: the VF's netdev name for direct types when no real VF can
    be looked up (there is no SR-IOV hardware to ask).
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
