"""The CNI protocol: versions, error codes and result formats.

Follows the CNI specification (github.com/containernetworking/cni,
SPEC.md, versions 0.4.0, 1.0.0 and 1.1.0; docs/cni.md). Stdlib only: the
plugin's thin path (the agent does the work) imports this module and the
agent client and nothing else.
"""

from __future__ import annotations


#: The versions vifwire speaks; STATUS and GC exist from 1.1.0 on (SPEC.md, "Version").
VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST = VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
SINCE_1_1 = ("STATUS", "GC")

# SPEC.md, "Error": well-known codes 1-99 are the spec's, 100+ the plugin's.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
#: vifwire's own (docs/cni.md, "Errors")
WIRING_FAILED = 100
DRIFT = 101
CONFLICT = 102
IPAM_FAILED = 103
INTERNAL = 199


class CniError(Exception):
    """A CNI error result: ``code``, one-line ``msg``, optional ``details``."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, " ".join(msg.split()), details

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def check_version(version: Any, command: str = "") -> str:
    if not isinstance(version, str) or not version:
        raise CniError(INVALID_CONFIG, "cniVersion: missing or not a string")
    if version not in VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion: {version} is not supported "
                                             f"(supported: {', '.join(VERSIONS)})")
    if command in SINCE_1_1 and _key(version) < _key("1.1.0"):
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion: {command} needs 1.1.0 or later, the config says {version}")
    return version


def _key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def version_result(asked: str | None) -> dict[str, Any]:
    """VERSION's answer (SPEC.md: ``cniVersion`` and ``supportedVersions``)."""
    return {"cniVersion": asked if asked in VERSIONS else LATEST, "supportedVersions": list(VERSIONS)}


def decode(text: str, what: str = "network configuration") -> dict[str, Any]:
    import json  # here, not at the top: the plugin answers VERSION without it (docs/cni.md)

    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(DECODE_FAILURE, f"{what}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise CniError(DECODE_FAILURE, f"{what}: must be a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------ results
# Internally a result is the 1.0.0 form; 0.4.0 differs only in ``version``
# on each IP (SPEC.md 0.4.0, "Result").


def to_internal(result: dict[str, Any]) -> dict[str, Any]:
    """A result of any supported version (a prevResult, an IPAM result) in the 1.0.0 form."""
    out = {k: v for k, v in result.items() if k != "cniVersion"}
    ips = []
    for ip in result.get("ips") or []:
        if isinstance(ip, dict):
            ips.append({k: v for k, v in ip.items() if k != "version"})
    out["ips"] = ips
    return out


def for_version(result: dict[str, Any], version: str) -> dict[str, Any]:
    """An internal (1.0.0-form) result as ``version`` writes it."""
    out: dict[str, Any] = {"cniVersion": version}
    out.update({k: v for k, v in result.items() if v not in (None, [], {})})
    if version == "0.4.0" and result.get("ips"):
        out["ips"] = [dict(ip, version="6" if ":" in ip["address"] else "4") for ip in result["ips"]]
    if "ips" in result and "ips" not in out:
        out["ips"] = []
    return out
