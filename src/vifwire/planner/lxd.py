"""Attaching the container end to an LXD instance, as plan data (docs/lxd.md).

Pure, like the rest of the planner: from the host facts ``lxd_instance`` and
``lxd_socket`` it makes the ``lxd_nic`` step (the device nova-lxd would put in
the instance's profile, from :mod:`vifwire.renderers.lxd`) and says which
veth ends LXD will move. The executor (:mod:`vifwire.executors.lxd`) only
does what the step says.
"""

from __future__ import annotations

import re

from vifwire.errors import VifError
from vifwire.model.binding import Binding
from vifwire.planner.facts import LXD_DEFAULT_SOCKET, HostFacts
from vifwire.planner.plan import Step, StepKind
from vifwire.renderers.options import GuestOptions

#: LXD's instance name rules (LXD docs, "Instance name requirements"): 1-63
#: letters, digits and hyphens, not starting with a digit or a hyphen, not
#: ending with a hyphen. Checked here so a typo fails before the host is touched.
INSTANCE_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def lxd_takes_peer(facts: HostFacts) -> bool:
    """Whether LXD moves the veth's ``tin`` end into the container and back.

    True for every LXD guest whose ``tin`` is made on the host (not directly
    in a known guest namespace), whoever attaches it: vifwire's own
    ``lxd_nic`` step, or nova-lxd through the instance's profile. LXD moves a
    ``physical`` NIC's parent into the container when it starts (or at
    hot-plug), renamed, and back when it stops or the device is removed,
    left down (LXD docs, "Type: nic", "nictype: physical"). The veth step
    gets ``peer_to_guest`` so that ``check`` takes either place as right.
    """
    return facts.hypervisor == "lxd" and not facts.guest_netns


def lxd_steps(b: Binding, f: HostFacts, guest: GuestOptions) -> list[Step]:
    """The ``lxd_nic`` step when the facts name an LXD instance (else nothing).

    Last in the plan: the container gets the NIC only when the host side
    (filters, bridge, routes) is complete, and a rollback or unplug takes it
    out of the container before the veth is deleted.
    """
    name = f.lxd_instance
    if not name:
        return []
    if f.hypervisor != "lxd":
        raise VifError(b.port_id, "lxd_instance", f"{name!r} is an LXD instance but the hypervisor is "
                                                  f"{f.hypervisor} (use --hypervisor lxd)")
    if not INSTANCE_NAME.match(name):
        raise VifError(b.port_id, "lxd_instance", f"{name!r} is not an LXD instance name (1-63 letters, "
                                                  "digits and '-', starting with a letter)")
    if f.guest_netns:
        raise VifError(b.port_id, "lxd_instance", "cannot be combined with guest_netns: LXD takes the "
                                                  "container end from the host's namespace itself")
    socket = f.lxd_socket or LXD_DEFAULT_SOCKET
    if not socket.startswith("/"):
        raise VifError(b.port_id, "lxd_socket", f"{socket!r} is not an absolute path")
    if guest.bandwidth_in.average or guest.bandwidth_in.peak or guest.bandwidth_out.average \
            or guest.bandwidth_out.peak:
        # LXD validates a physical NIC's keys and has no limits.* for it (LXD
        # docs, "nictype: physical"): it would refuse the device after the
        # host was wired; say so before anything is touched
        raise VifError(b.port_id, "bandwidth", "an LXD physical NIC takes no limits.ingress/egress: "
                                               "leave out --bandwidth-in/--bandwidth-out with lxd_instance")
    from vifwire.renderers.lxd import render_device

    device, nic = render_device(b, guest)
    return [Step(op=StepKind.LXD_NIC, args={"instance": name, "socket": socket, "device": device, "nic": nic,
                                            "mac": b.mac.lower()},
                 why=f"LXD hands {nic['parent']} to instance {name} as a physical NIC (hot-plugged if running)")]
