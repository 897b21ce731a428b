"""Throwaway namespaces, a private Open vSwitch and stand-in guests (tests, benches, ``vifwire up``).

The sandbox drives pyroute2's ``IPRoute(netns=...)``, which answers through a
forked helper whose 2 s reply timeout fires on a loaded 2-core host; it is
raised here, for the sandbox's users only (the plug path never forks one).
"""

try:
    import pyroute2.config as _pyroute2_config

    _pyroute2_config.default_communicate_timeout = max(_pyroute2_config.default_communicate_timeout, 30)
except ImportError:  # pragma: no cover
    pass
