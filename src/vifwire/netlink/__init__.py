"""vifwire's own netlink layer: the requests that sit on the plug path.

pyroute2's generic request machinery costs 0.2-0.4 ms per call, more than
the kernel needs to create a device, so the handful of rtnetlink messages
vifwire sends on every plug and unplug are encoded here with ``struct`` and
exchanged directly on a pyroute2 socket (:mod:`vifwire.netlink.channel`).
:mod:`vifwire.netlink.netns` runs what netlink cannot do (tun files,
/proc/sys/net, other libraries' sockets) on a thread inside the target
namespace, so the caller's threads never change namespace.
"""
