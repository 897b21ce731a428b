"""Commands that touch the host (plug, unplug, check, list, gc, up).

Registered on the main group; heavy modules (pyroute2, OVSDB, nftables) are
imported inside the commands so the pure commands stay fast.
"""

from __future__ import annotations
