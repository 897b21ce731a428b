"""vifwire: wire VM and container network interfaces (VIFs) into host networking.

The package is layered so the dependency direction is visible from folder names:

* ``model``     - the port binding (what the network service handed out), validated.
* ``planner``   - the generic VIF driver: a pure function binding + host facts -> plan.
* ``renderers`` - guest configuration (libvirt ``<interface>``, LXD profile devices).
* ``executors`` - apply a plan's host steps transactionally (kernel, OVS, firewall).
* ``store``     - the record of attachments.
* ``cli``       - the ``vifwire`` command.

Nothing under ``model``, ``planner`` or ``renderers`` touches the host.
"""

__version__ = "0.1.0"
