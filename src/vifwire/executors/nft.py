"""Minimal binding to libnftables' JSON API (``libnftables.so.1``) via ctypes.

No ``nft`` subprocess: commands are JSON documents handed to
``nft_run_cmd_from_buffer`` on a libnftables context.

Namespaces: libnftables talks netlink from the *calling thread*, and a netlink
socket belongs to the network namespace its creator was in when it was opened.
``setns(CLONE_NEWNET)`` only moves the calling thread, so every :class:`Nft`
owns one dedicated worker thread. When ``netns`` is given, that thread enters
``/var/run/netns/<netns>`` *before* creating the libnftables context, and every
command is executed on it (handed over through a queue). The caller's own
threads never change namespace. ``netns=None`` means the namespace the worker
thread inherits, i.e. the process' current one.

A context is not thread-safe; the single worker serialises all commands.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

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
        ctx = self.lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self.ctx = ctx
        self.flags = NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE | NFT_CTX_OUTPUT_NUMERIC_PRIO
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
        out = self.lib.nft_ctx_get_output_buffer(self.ctx) or b""
        err = self.lib.nft_ctx_get_error_buffer(self.ctx) or b""
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def free(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None


_STOP = object()

CLONE_NEWNET = 0x40000000
_libc: ctypes.CDLL | None = None


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """``setns(2)`` for the calling thread (``os.setns`` is Python >= 3.12)."""
    fn = getattr(os, "setns", None)
    if fn is not None:
        fn(fd, nstype)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.setns.restype = ctypes.c_int
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _worker(netns: str | None, q: queue.Queue, ready: queue.Queue) -> None:
    """Body of an :class:`Nft` worker thread: enter ``netns``, then serve ``q``."""
    ctx: _Context | None = None
    try:
        if netns is not None:
            path = os.path.join("/var/run/netns", netns)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise NftError(f"cannot open network namespace {netns!r}: {exc}") from exc
            try:
                setns(fd, CLONE_NEWNET)
            except OSError as exc:
                raise NftError(f"cannot enter network namespace {netns!r}: {exc}") from exc
            finally:
                os.close(fd)
        # after setns: the context's netlink socket is opened in ``netns``
        ctx = _Context()
    except BaseException as exc:  # hand any startup failure to the caller
        ready.put(exc if isinstance(exc, Exception) else NftError(str(exc)))
        return
    ready.put(None)
    try:
        while True:
            item = q.get()
            if item is _STOP:
                return
            fn, reply = item
            try:
                reply.put((True, fn(ctx)))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                reply.put((False, exc))
    finally:
        ctx.free()


class Nft:
    """libnftables JSON API, bound to one network namespace.

    >>> with Nft("vw-host-1a2b3c") as nft:
    ...     nft.run({"nftables": [{"add": {"table": {"family": "inet", "name": "t"}}}]})
    """

    def __init__(self, netns: str | None = None, *, timeout: float = 300.0):
        self.netns = netns
        self.timeout = timeout
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        ready: queue.Queue = queue.Queue(maxsize=1)
        # the worker gets no reference to self, so an unclosed Nft can still
        # be garbage collected (its __del__ then stops the worker)
        self._thread = threading.Thread(
            target=_worker,
            args=(netns, self._q, ready),
            name=f"nft-{netns or 'current'}",
            daemon=True,
        )
        self._thread.start()
        err = ready.get()
        if err is not None:
            self._thread.join()
            self._closed = True
            raise err

    def _call(self, fn: Callable[[_Context], Any]) -> Any:
        if self._closed:
            raise NftError("Nft context is closed")
        reply: queue.Queue = queue.Queue(maxsize=1)
        with self._lock:
            self._q.put((fn, reply))
            try:
                ok, value = reply.get(timeout=self.timeout)
            except queue.Empty:
                raise NftError(f"libnftables did not answer within {self.timeout}s") from None
        if ok:
            return value
        raise value

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
        self._q.put(_STOP)
        self._thread.join(timeout=self.timeout)

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
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
