"""Error types shared by every layer.

Every user-facing failure must be reportable as *one line* naming the port, the
field and the problem, so errors carry those three things explicitly instead of
relying on exception messages composed deep in the stack.
"""

from __future__ import annotations


class VifwireError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class VifError(VifwireError):
    """Invalid input for one port (exit code 2).

    ``port`` is the port id (or ``"<input>"``/an index when the port has none),
    ``field`` the offending key path (``binding:vif_details.bridge_name``),
    ``problem`` a short lower-case phrase.
    """

    exit_code = 2

    def __init__(self, port: str | None, field: str, problem: str):
        self.port = port or "<unknown>"
        self.field = field
        self.problem = problem
        super().__init__(self.line())

    def line(self) -> str:
        return f"port {self.port}: {self.field}: {self.problem}"


class InvalidInput(VifwireError):
    """Several :class:`VifError` collected while validating a batch."""

    exit_code = 2

    def __init__(self, errors: list[VifError]):
        self.errors = errors
        super().__init__("\n".join(e.line() for e in errors))


class HostError(VifwireError):
    """The host could not be wired as planned (exit code 1).

    Raised by executors; ``port`` and ``step`` say where, ``problem`` what.
    """

    exit_code = 1

    def __init__(self, port: str | None, step: str, problem: str):
        self.port = port or "<unknown>"
        self.step = step
        self.problem = problem
        super().__init__(self.line())

    def line(self) -> str:
        return f"port {self.port}: {self.step}: {self.problem}"


class UsageError(VifwireError):
    """The call itself cannot be served as asked (exit code 2): a namespace
    that does not exist, nothing named to unplug. One line, no port."""

    exit_code = 2
