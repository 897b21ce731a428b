"""What the input text must be before it is parsed as bindings: UTF-8, with no
lone surrogates hiding in strings (one line naming where, never a traceback)."""

from __future__ import annotations

from typing import Any

from vifwire.errors import InvalidInput, VifError


def check_utf8(text: str, origin: str) -> None:
    """Text read with ``errors="surrogateescape"`` keeps invalid bytes as lone
    surrogates; refuse them with the position of the first one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        line = text.count("\n", 0, exc.start) + 1
        column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        what = (f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF
                else f"lone surrogate U+{ord(bad):04X}")
        raise InvalidInput([VifError(origin, "document", f"is not valid UTF-8: {what} at line {line} "
                                                         f"column {column}")])


def bad_unicode(value: Any, path: str) -> str | None:
    """The path of the first string holding a lone surrogate (JSON "\\udc80" escapes), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "port"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = bad_unicode(k, path) or bad_unicode(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = bad_unicode(v, f"{path}[{i}]")
            if found:
                return found
    return None
