"""JSON for the plugin's thin path, without importing :mod:`json`.

``import json`` pulls in ``re`` and ``enum`` (~8 ms here), the largest part
of a thin run after the interpreter itself (docs/cni.md, "Performance").
The C accelerator behind :mod:`json` (``_json``: its scanner and encoder)
needs neither, and gives the same results; where it is missing (not
CPython), :mod:`json` is used.
"""

from __future__ import annotations

import math

try:
    import _json
except ImportError:  # pragma: no cover - not CPython
    _json = None


class _ScanContext:
    """What ``_json.make_scanner`` reads off a decoder (json.decoder.JSONDecoder's defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": -math.inf, "Infinity": math.inf, "NaN": math.nan}[name]


def loads(text: str):
    """``json.loads`` for a document that is one value; ValueError if it is not JSON.

    Only a well-formed document takes the fast path: on anything else (the C
    scanner signals some errors only half-way, expecting :mod:`json` around
    it) :mod:`json` itself parses the text again and raises its own error.
    """
    if _json is not None:
        ws = " \t\n\r"
        start = len(text) - len(text.lstrip(ws))
        try:
            value, end = _json.make_scanner(_ScanContext)(text, start)
            if not text[end:].strip(ws):
                return value
        except Exception:  # noqa: BLE001 - re-parsed below for the proper error
            pass
        finally:
            _ScanContext.memo.clear()
    import json

    return json.loads(text)


def dumps(value) -> str:
    """``json.dumps(value)`` (compact separators, ASCII)."""
    if _json is None:
        import json

        return json.dumps(value, separators=(",", ":"))

    def default(o):
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    encode = _json.make_encoder(None, default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
    return "".join(encode(value, 0))
