"""The ``antispoof`` step: per-port anti-spoofing entries in vifwire's nft tables.

The filter design lives in :mod:`vifwire.executors.antispoof`; this module
adapts it to the step protocol. A port's entries go in one nftables
transaction, so a plug either installs all of them or none; the undo removes
exactly that port's entries.
"""

from __future__ import annotations

from vifwire.errors import HostError
from vifwire.executors import antispoof as _as
from vifwire.executors.base import HostContext, Undo, register
from vifwire.executors.nft import Nft, NftError
from vifwire.planner.plan import Step


def _anti(ctx: HostContext) -> _as.AntiSpoof:
    key = f"antispoof:{ctx.netns}"
    return ctx.get(key, lambda: _as.AntiSpoof(ctx.get(f"nft:{ctx.netns}", lambda: Nft(ctx.netns))))


def port_filter(step: Step) -> _as.PortFilter:
    a = step.args
    return _as.PortFilter(ifname=a["ifname"], mac=a["mac"], ipv4=list(a.get("ipv4") or []),
                          ipv6=list(a.get("ipv6") or []),
                          allowed_pairs=[(p["ip"], p.get("mac")) for p in a.get("pairs") or []],
                          bridged=bool(a.get("bridged")))


class AntiSpoofHandler:
    def apply(self, step: Step, ctx: HostContext) -> Undo | None:
        anti, pf = _anti(ctx), port_filter(step)
        try:
            created = _install(anti, pf)
        except (NftError, ValueError, _as.AntiSpoofError) as exc:
            raise HostError(ctx.port_id, f"antispoof {pf.ifname}", _short(exc))
        if not created:
            return None
        return lambda: anti.remove_port(pf.ifname, hint=pf)

    def remove(self, step: Step, ctx: HostContext) -> None:
        pf = port_filter(step)
        _anti(ctx).remove_port(pf.ifname, hint=pf)

    def remove_bulk(self, steps: list[Step], ctx: HostContext) -> None:
        hints = {s.args["ifname"]: port_filter(s) for s in steps}
        _anti(ctx).remove_ports(list(hints), hints)

    def verify(self, step: Step, ctx: HostContext) -> list[str]:
        pf = port_filter(step)
        entries = _anti(ctx).port_entries(pf.ifname)
        if not entries or not entries.get("registered"):
            return [f"anti-spoofing entries for {pf.ifname} are missing"]
        out = []
        fams = [f for f in pf.families() if f in entries]
        if len(fams) != len(pf.families()):
            out.append(f"anti-spoofing for {pf.ifname}: families {sorted(fams)}, recorded {sorted(pf.families())}")
        for fam in fams:
            macs = entries[fam].get("mac") or []
            if _as.norm_mac(pf.mac) not in macs:
                out.append(f"anti-spoofing for {pf.ifname} ({fam}): MAC {pf.mac} not allowed")
            if not entries[fam].get("guarded"):
                out.append(f"anti-spoofing for {pf.ifname} ({fam}): interface is not guarded")
        return out


def _install(anti: _as.AntiSpoof, pf: _as.PortFilter) -> bool:
    """Install; True if the port was new (so the plug owns an undo)."""
    want = _as._want(pf)
    anti._ensure_once()
    fast = anti._add_cmds(want, registry="create")
    try:
        anti.nft.run({"nftables": _as._sentinels_first(fast)})
        return True
    except NftError as exc:
        if not _as._is_eexist(exc):
            raise
    anti.add_port(pf)  # already there: reconcile (repairs drift), nothing to undo
    return False


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# ---------------------------------------------------------------------- gc

def garbage(ctx: HostContext, owned: dict[str, set[str]]) -> list[dict[str, str]]:
    try:
        ports = _anti(ctx).ports()
    except NftError:
        return []
    return [{"kind": "filter", "name": n} for n in sorted(ports) if n not in owned["filters"]]


def remove_garbage(ctx: HostContext, items: list[dict[str, str]]) -> None:
    _anti(ctx).remove_ports([i["name"] for i in items])


register("antispoof", AntiSpoofHandler())
