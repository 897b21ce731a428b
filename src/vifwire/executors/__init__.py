"""Executors: apply plan steps to the host (kernel, OVS, firewall)."""

try:  # pyroute2 answers namespace requests through a forked helper; its 2 s
    # reply timeout fires on a loaded 2-core host, failing a plug for nothing.
    import pyroute2.config as _pyroute2_config

    _pyroute2_config.default_communicate_timeout = max(_pyroute2_config.default_communicate_timeout, 30)
except ImportError:  # pragma: no cover
    pass
