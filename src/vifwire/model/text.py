"""What the input text must be before it is parsed as bindings: UTF-8, with no
lone surrogates hiding in strings, JSON, a port or a list of ports (one line
naming where, never a traceback). Imports nothing but :mod:`vifwire.errors`:
the agent's thin client (:mod:`vifwire.client`) reads files with it too."""

from __future__ import annotations

import json


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


def parse_document(text: str, origin: str = "<input>") -> list[Any]:
    """JSON text -> the port documents it holds (see :func:`documents`)."""
    if isinstance(text, str) and not text.isascii():
        check_utf8(text, origin)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput([VifError(
            origin, "document", f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]) from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InvalidInput([VifError(origin, "document", f"cannot be read: {exc}")]) from None
    return documents(doc, origin)


def documents(doc: Any, origin: str = "<input>") -> list[Any]:
    """A parsed document -> its ports: one port, a list, or Neutron's
    ``{"ports": [...]}`` (list response) and ``{"port": {...}}`` (show response)."""
    if isinstance(doc, dict):
        if "ports" in doc and isinstance(doc["ports"], list):
            return doc["ports"]
        if "port" in doc and isinstance(doc["port"], dict):
            return [doc["port"]]
        return [doc]
    if isinstance(doc, list):
        return doc
    raise InvalidInput([VifError(origin, "document", "must be a JSON object or a list of objects")])
