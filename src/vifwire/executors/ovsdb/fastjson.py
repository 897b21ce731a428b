"""A stdlib-backed stand-in for ``ovs.json.Parser`` (docs/ovs.md, fast JSON).

The ``ovs`` wheel from PyPI usually lacks its C extension (``ovs._json``)
and then parses every byte from ovsdb-server with a pure-Python state
machine: ~1 ms per port of a monitor update -- more than everything else on
the plug path.  It is a module of its own because it is a transport detail
the rest of the client never sees: :mod:`.session` hands it to its own
connection only, and ``ovs.json.Parser`` is left alone for other users of the
library in the process (ovsdbapp, os-vif).
"""

from __future__ import annotations

import gc
import json
import os
import re
from typing import Any

import ovs.json

_MSG_BOUNDARY = re.compile(r"\}\s*\{")


class FastJsonParser:
    """Drop-in for ``ovs.json.Parser`` backed by the stdlib C JSON decoder.

    This class keeps the interface ``ovs.jsonrpc`` uses (``feed`` returns
    characters consumed, ``is_done``, ``finish``) and only attempts a decode
    when a chunk ends in ``}`` (JSON-RPC messages are objects, RFC 7047
    §4), so a large message costs one C-speed parse.
    """

    _decoder = json.JSONDecoder()

    def __init__(self, check_trailer: bool = False):
        self._chunks: list[str] = []
        self._len = 0
        self._done = False
        self._value: Any = None

    def feed(self, s: str) -> int:
        if self._done:
            return 0
        self._chunks.append(s)
        self._len += len(s)
        # A message can only end where a chunk ends in "}" (modulo spaces)
        # or where "}" is followed by the "{" of the next message, so only
        # those chunks trigger a decode attempt -- and the end of a message
        # is always inside the chunk that triggered, so ``feed`` never
        # consumes past it.
        tail = s.rstrip()
        if not tail or (tail[-1] != "}" and not _MSG_BOUNDARY.search(s)):
            return len(s)
        buf = "".join(self._chunks)
        self._chunks = [buf]
        start = len(buf) - len(buf.lstrip())
        # Decoding a big update allocates ~10^5 containers; without this the
        # cyclic GC runs repeatedly mid-parse and can triple the cost.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            value, end = self._decoder.raw_decode(buf, start)
        except json.JSONDecodeError as e:
            if e.pos < len(buf.rstrip()) - 1 and not e.msg.startswith("Unterminated string"):
                self._done, self._value = True, f"byte {e.pos}: {e.msg}"
            return len(s)
        finally:
            if gc_was_enabled:
                gc.enable()
        self._done, self._value = True, value
        return len(s) - (len(buf) - end)

    def is_done(self) -> bool:
        return self._done

    def finish(self):
        if not self._done:
            buf = "".join(self._chunks)
            if not buf.strip():
                return "empty input stream"
            try:
                return json.loads(buf)
            except ValueError as e:
                return str(e)
        return self._value


#: Read this client's connection with :class:`FastJsonParser`: only when the
#: ``ovs`` library has no C parser (its C parser counts ``feed`` in bytes, ours
#: in characters) and not turned off (``VIFWIRE_OVS_FAST_JSON=0``, for A/B).
FAST_JSON = ovs.json.PARSER == ovs.json.PARSER_PY and os.environ.get("VIFWIRE_OVS_FAST_JSON", "1") != "0"
