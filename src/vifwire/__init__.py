"""vifwire: wire VM and container network interfaces (VIFs) into host networking.

The package is layered so the dependency direction is visible from folder names:

* ``model``     - the port binding (what the network service handed out), validated.
* ``planner``   - the generic VIF driver: a pure function binding + host facts -> plan.
* ``renderers`` - guest configuration (libvirt ``<interface>``, LXD profile devices).
* ``service``   - the use cases (plug, unplug, check, gc, list, render) every front end calls.
* ``executors`` - apply a plan's host steps transactionally (kernel, OVS, firewall).
* ``netlink``   - the thin netlink and namespace adapter the kernel executor uses.
* ``store``     - the record of attachments (a protocol; SQLite is the first implementation).
* ``sandbox``   - throwaway namespaces, a private Open vSwitch, stand-in guests.
* ``cli``       - the ``vifwire`` command, a thin front end over ``service``.

docs/architecture.md describes the layers and how to extend them.

Nothing under ``model``, ``planner`` or ``renderers`` touches the host.
"""

__version__ = "0.1.0"
