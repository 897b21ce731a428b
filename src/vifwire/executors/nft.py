"""Minimal binding to libnftables' JSON API (``libnftables.so.1``) via ctypes.

No ``nft`` subprocess: commands are JSON documents (libnftables-json(5))
handed to ``nft_run_cmd_from_buffer`` on a libnftables context.

Namespaces: libnftables talks netlink from the *calling thread*, and a netlink
socket belongs to the network namespace its creator was in when it was opened.
So every :class:`Nft` runs on one :class:`~vifwire.netlink.netns.NsWorker`
thread (vifwire's one namespace runner): that thread enters the namespace
before the libnftables context is created, and every command runs on it. The
caller's own threads never change namespace. ``netns=None`` means the
namespace the process is in (still on a thread of its own: one context, one
thread).

A context is not thread-safe; the single worker serialises all commands.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from collections.abc import Callable
from typing import Any

from vifwire.netlink.netns import NsWorker

# include/nftables/libnftables.h
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4
NFT_CTX_OUTPUT_NUMERIC_PROTO = 1 << 7
NFT_CTX_OUTPUT_NUMERIC_PRIO = 1 << 8
NFT_CTX_OUTPUT_NUMERIC_SYMBOL = 1 << 9
NFT_CTX_OUTPUT_TERSE = 1 << 11

_LIBNAMES = ("libnftables.so.1", "libnftables.so")
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


class NftError(RuntimeError):
    """nft rejected a command; ``nft_error`` is libnftables' error text."""

    def __init__(self, message: str, nft_error: str = "", rc: int | None = None):
        self.nft_error = nft_error.strip()
        self.rc = rc
        text = message
        if self.nft_error:
            text = f"{message}: {self.nft_error}"
        super().__init__(text)


def _load() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        last: OSError | None = None
        names = list(_LIBNAMES)
        found = ctypes.util.find_library("nftables")
        if found:
            names.append(found)
        for name in names:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                break
            except OSError as exc:  # pragma: no cover - depends on host
                last = exc
        else:  # pragma: no cover - depends on host
            raise NftError(f"cannot load libnftables ({last}); install libnftables1")
        vp = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = vp
        lib.nft_ctx_free.argtypes = [vp]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_output_get_flags.argtypes = [vp]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_set_flags.argtypes = [vp, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_buffer_output.argtypes = [vp]
        lib.nft_ctx_buffer_output.restype = ctypes.c_int
        lib.nft_ctx_buffer_error.argtypes = [vp]
        lib.nft_ctx_buffer_error.restype = ctypes.c_int
        lib.nft_ctx_get_output_buffer.argtypes = [vp]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [vp]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [vp, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
        return lib


class _Context:
    """A libnftables context; only ever used from the worker thread."""

    def __init__(self) -> None:
        self.lib = _load()
        self.flags = NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE | NFT_CTX_OUTPUT_NUMERIC_PRIO
        self.ctx = None
        self._open()

    def _open(self) -> None:
        ctx = self.lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self.ctx = ctx
        self.lib.nft_ctx_output_set_flags(ctx, self.flags)
        if self.lib.nft_ctx_buffer_output(ctx) or self.lib.nft_ctx_buffer_error(ctx):
            self.free()
            raise NftError("cannot buffer libnftables output")

    def run(self, text: str, extra_flags: int = 0) -> tuple[int, str, str]:
        if extra_flags:
            self.lib.nft_ctx_output_set_flags(self.ctx, self.flags | extra_flags)
        try:
            rc = self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode())
        finally:
            if extra_flags:
                self.lib.nft_ctx_output_set_flags(self.ctx, self.flags)
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode(errors="replace")
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
        if rc != 0 and "No buffer space available" in err:
            # The kernel's replies overflowed the context's netlink socket
            # (ENOBUFS: several failed commands of a big batch, each error
            # echoing its request); libnftables returns with the rest still
            # queued, and the next command would read those as its own
            # ("cache initialization failed: Protocol error"). Start afresh.
            self.free()
            self._open()
        return rc, out, err

    def free(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None


class Nft:
    """libnftables JSON API, bound to one network namespace.

    >>> with Nft("vw-host-1a2b3c") as nft:
    ...     nft.run({"nftables": [{"add": {"table": {"family": "inet", "name": "t"}}}]})
    """

    def __init__(self, netns: str | None = None, *, timeout: float = 300.0):
        self.netns = netns
        self.timeout = timeout
        self._closed = False
        try:
            self._worker = NsWorker(netns, thread=True, name=f"nft-{netns or 'current'}", timeout=timeout)
        except (OSError, RuntimeError) as exc:
            self._closed = True
            verb = "open" if isinstance(exc, FileNotFoundError) else "enter"
            raise NftError(f"cannot {verb} network namespace {netns!r}: {exc}") from exc
        try:
            # created on the worker, after it entered the namespace: the
            # context's netlink socket is opened there
            self._ctx: _Context = self._worker.call(_Context)
        except BaseException:
            self._closed = True
            self._worker.close()
            raise

    def _call(self, fn: Callable[[_Context], Any]) -> Any:
        if self._closed:
            raise NftError("Nft context is closed")
        try:
            return self._worker.call(fn, self._ctx)
        except TimeoutError:
            raise NftError(f"libnftables did not answer within {self.timeout}s") from None

    # -- API --------------------------------------------------------------
    def run_text(self, text: str, *, terse: bool = False) -> str:
        """Run a raw command buffer (JSON, or nft syntax); return nft's raw output.

        ``terse``: list without set elements (libnftables then does not even
        fetch them). Raises :class:`NftError` carrying nft's error text.
        """
        extra = NFT_CTX_OUTPUT_TERSE if terse else 0

        def fn(ctx: _Context) -> str:
            rc, out, err = ctx.run(text, extra)
            if rc != 0:
                raise NftError(f"nft command failed (rc={rc})", err or out, rc)
            return out

        return self._call(fn)

    def run(self, json_obj: dict, *, terse: bool = False) -> dict:
        """Run a JSON command document (``{"nftables": [...]}``).

        Returns the parsed JSON output (``{}`` when nft printed nothing, e.g.
        for add/delete batches). A document containing several commands is one
        kernel transaction: all of it applies or none does.
        """
        if "nftables" not in json_obj:
            raise ValueError('nft JSON document must have a top-level "nftables" key')
        out = self.run_text(json.dumps(json_obj, separators=(",", ":")), terse=terse)
        return _parse_output(out)

    def list_ruleset(self) -> dict:
        return self.run({"nftables": [{"list": {"ruleset": None}}]})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._worker.call(_Context.free, self._ctx)
        finally:
            self._worker.close()

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            worker = getattr(self, "_worker", None)
            if worker is not None and worker.thread is threading.current_thread():
                self._closed = True  # collected on its own worker: it cannot wait for itself
                worker.close()
                return
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _parse_output(out: str) -> dict:
    """Parse libnftables' JSON output.

    A document with several ``list`` commands yields several concatenated JSON
    documents; they are merged into one ``{"nftables": [...]}``.
    """
    out = out.strip()
    if not out:
        return {}
    dec = json.JSONDecoder()
    pos = 0
    docs: list[dict] = []
    while pos < len(out):
        while pos < len(out) and out[pos].isspace():
            pos += 1
        if pos >= len(out):
            break
        obj, pos = dec.raw_decode(out, pos)
        docs.append(obj)
    if len(docs) == 1:
        return docs[0]
    merged: list = []
    for d in docs:
        merged.extend(d.get("nftables", []))
    return {"nftables": merged}
