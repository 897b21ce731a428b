"""CNI: vifwire's attachments for container runtimes (docs/cni.md).

``spec`` is the protocol (versions, error codes, results; stdlib only, so
the plugin's thin path imports nothing else), ``config`` reads the network
configuration and the environment, ``ipam`` runs the delegated IPAM plugin,
``attach`` is the use case (ADD, DEL, CHECK, STATUS, GC) over a wiring
back end: the in-process :class:`~vifwire.service.wiring.WiringService` or
the agent's writer.
"""
