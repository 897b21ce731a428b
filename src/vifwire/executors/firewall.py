"""The ``antispoof`` step: per-port anti-spoofing entries in vifwire's nft tables.

The filter design lives in :mod:`vifwire.executors.antispoof` (and
docs/routed.md, "The nftables tables"); this module adapts it to the step
protocol of :mod:`vifwire.executors.base`.

Batches: the handler is ``batched``, so a plug hands every port's antispoof
step to :meth:`AntiSpoofHandler.apply_many` at once (the engine runs each
port's steps in order up to it, then all ports' in one call: each port keeps
its own order, so "filter first" holds) and they go in ONE nftables
transaction; unplug removes them in one transaction
(:meth:`~AntiSpoofHandler.remove_bulk`); ``check`` reads vifwire's sets once
for all ports (:meth:`~AntiSpoofHandler.verify_many`).
A kernel transaction is all-or-nothing (nftables wiki, "Atomic rule
replacement"), so each batch either installs every port's entries or none;
a batch that fails is retried port by port, so the port at fault is the one
that fails. The undo of a port removes exactly that port's entries.
"""

from __future__ import annotations

import logging
import time

from vifwire.errors import HostError
from vifwire.executors.antispoof import AntiSpoof, AntiSpoofError, GuardView, PortFilter, norm_mac
from vifwire.executors.base import HostContext, Undo
from vifwire.executors.nft import Nft, NftError
from vifwire.planner.plan import Step

log = logging.getLogger("vifwire.executors.firewall")

#: what a filter step can fail with (besides HostError)
_FILTER_ERRORS = (NftError, ValueError, AntiSpoofError)


def anti_spoof(ctx: HostContext) -> AntiSpoof:
    """The handle's :class:`AntiSpoof` (and its nftables context), opened on first use."""
    anti = ctx.antispoof
    if anti is None:
        with ctx.lock:
            if ctx.antispoof is None:
                if ctx.nft is None:
                    ctx.nft = Nft(ctx.netns)
                ctx.antispoof = AntiSpoof(ctx.nft)
            anti = ctx.antispoof
    return anti


def drop_counters(ctx: HostContext) -> dict[str, dict[str, int]]:
    """Anti-spoofing drops per guarded interface and reason (``{}`` if no filter is installed)."""
    return anti_spoof(ctx).drops_all()


def port_filter(step: Step) -> PortFilter:
    a = step.args
    return PortFilter(ifname=a["ifname"], mac=a["mac"], ipv4=list(a.get("ipv4") or []),
                      ipv6=list(a.get("ipv6") or []),
                      allowed_pairs=[(p["ip"], p.get("mac")) for p in a.get("pairs") or []],
                      bridged=bool(a.get("bridged")))


def removal_hint(step: Step) -> PortFilter | None:
    """The PortFilter a step was installed with, or None for a step that does
    not know it (no ``mac``: recovered by ``vifwire state rebuild`` from the
    ``ports`` registry): its entries are then found by listing vifwire's sets."""
    return port_filter(step) if step.args.get("mac") else None


def _error(ctx: HostContext, pf: PortFilter, exc: BaseException) -> HostError:
    return HostError(ctx.port_id, f"antispoof {pf.ifname}", " ".join(str(exc).split())[:300])


def _undo(anti: AntiSpoof, pf: PortFilter) -> Undo:
    return lambda: anti.remove_port(pf.ifname, hint=pf)


class AntiSpoofHandler:
    #: The engine applies every port's antispoof step of a run in one
    #: :meth:`apply_many` (each port's steps still run in the port's order).
    batched = True

    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        out = self.apply_many([step], ctx)[0]
        if isinstance(out, Exception):
            raise out
        return out

    def apply_many(self, steps: list[Step], ctx: HostContext) -> list[Undo | None | Exception]:
        """Install every port's entries in ONE nft transaction.

        One outcome per step, same order: an undo for a port that was new,
        ``None`` for one that was installed already (reconciled with the
        plan, which repairs drift; nothing to undo), or the
        :class:`~vifwire.errors.HostError` that failed it (see
        :meth:`AntiSpoof.install_ports` for how a failing batch is narrowed
        down to the failing ports).
        """
        t0 = time.perf_counter()
        pfs = [port_filter(s) for s in steps]
        anti: AntiSpoof | None = None
        with ctx.lock:
            try:
                anti = anti_spoof(ctx)
                created = anti.install_ports(pfs)
            except _FILTER_ERRORS as exc:  # nothing per port: the whole batch failed
                created = [exc] * len(pfs)
        results: list[Undo | None | Exception] = []
        for pf, c in zip(pfs, created):
            if isinstance(c, Exception):
                results.append(c if isinstance(c, HostError) else _error(ctx, pf, c))
            else:
                results.append(_undo(anti, pf) if c and anti is not None else None)
        if log.isEnabledFor(logging.DEBUG):
            new = sum(1 for c in created if c is True)
            bad = sum(1 for c in created if isinstance(c, Exception))
            log.debug("antispoof apply_many: %d ports (%d new, %d already there, %d failed) in %.1f ms",
                      len(pfs), new, len(pfs) - new - bad, bad, (time.perf_counter() - t0) * 1e3)
        return results

    def remove(self, step: Step, ctx: HostContext) -> None:
        """Remove the port's entries; a step without ``mac`` (no hint) lists them first."""
        anti = anti_spoof(ctx)
        with ctx.lock:
            anti.remove_port(step.args["ifname"], hint=removal_hint(step))

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        """Remove every port's entries in ONE nft transaction (absent is fine);
        steps without ``mac`` are removed without a hint (found by listing)."""
        t0 = time.perf_counter()
        names = list(dict.fromkeys(s.args["ifname"] for s in steps))
        hints = {s.args["ifname"]: pf for s in steps if (pf := removal_hint(s)) is not None}
        anti = anti_spoof(ctx)
        with ctx.lock:
            anti.remove_ports(names, hints)
        log.debug("antispoof remove_bulk: %d ports (%d without a hint) in one transaction, %.1f ms",
                  len(names), len(names) - len(hints), (time.perf_counter() - t0) * 1e3)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        return self.verify_many([step], ctx)[0]

    def verify_many(self, steps: list[Step], ctx: HostContext) -> list[list[str]]:
        """Drift lines per step, from ONE read of vifwire's sets for all of them.

        Checked per port: registered, entries in each of its families, its
        MAC allowed, the interface guarded. Raises (NftError) only when the
        sets cannot be read at all.
        """
        t0 = time.perf_counter()
        pfs = [removal_hint(s) for s in steps]
        families = sorted({f for pf in pfs if pf is not None for f in pf.families()})
        anti = anti_spoof(ctx)
        with ctx.lock:
            view = anti.guard_view(families) if families else None
            out = []
            for step, pf in zip(steps, pfs):
                if pf is None or view is None:  # recovered without the port's MAC and addresses
                    n = step.args["ifname"]
                    out.append([f"anti-spoofing for {n}: recovered without the port's MAC and addresses, "
                                "cannot be verified; plug the port again"])
                    continue
                try:
                    out.append(_drift(view, pf))
                except ValueError as exc:  # e.g. a recorded MAC that is not one
                    out.append([f"{step.describe()}: cannot verify: {exc}"])
        log.debug("antispoof verify_many: %d ports from one read of the sets, %.1f ms",
                  len(pfs), (time.perf_counter() - t0) * 1e3)
        return out


def _drift(view: GuardView, pf: PortFilter) -> list[str]:
    n = pf.ifname
    if not view.is_registered(n):
        return [f"anti-spoofing entries for {n} are missing"]
    out = []
    want = pf.families()
    fams = [f for f in want if view.has_family(n, f)]
    if len(fams) != len(want):
        out.append(f"anti-spoofing for {n}: families {sorted(fams)}, recorded {sorted(want)}")
    for fam in fams:
        if norm_mac(pf.mac) not in view.macs(n, fam):
            out.append(f"anti-spoofing for {n} ({fam}): MAC {pf.mac} not allowed")
        if not view.is_guarded(n, fam):
            out.append(f"anti-spoofing for {n} ({fam}): interface is not guarded")
    out += [f"anti-spoofing for {n}: {what} elements are missing" for what in view.missing_addresses(pf)
            if what.split("(")[1].rstrip(")") in fams]
    return out


# ---------------------------------------------------------------------- gc

def garbage(ctx: HostContext, owned: dict[str, set[str]]) -> list[dict[str, str]]:
    """Filter entries of interfaces no record owns (``vifwire gc``)."""
    anti = anti_spoof(ctx)
    with ctx.lock:
        try:
            ports = anti.ports()
        except NftError:
            return []
    return [{"kind": "filter", "name": n} for n in sorted(ports) if n not in owned["filters"]]


def remove_garbage(ctx: HostContext, items: list[dict[str, str]]) -> None:
    anti = anti_spoof(ctx)
    with ctx.lock:
        anti.remove_ports([i["name"] for i in items])
