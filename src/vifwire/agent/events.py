"""The agent's event log: what happened to which port, in order, for long polls.

A client waiting for "port X is plugged" (Nova's ``network-vif-plugged``)
asks ``GET /v1/events?since=SEQ&wait=S`` and is answered as soon as an event
after SEQ exists. Events are kept in a bounded ring (docs/agent.md, "Events"):
a client that fell further behind than the ring is told so (``lost``) and
should re-read ``GET /v1/ports``, as a Kubernetes watcher relists on 410 Gone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    PLUGGED = "plugged"
    UNPLUGGED = "unplugged"
    FAILED = "failed"
    DRIFT = "drift"
    REPAIRED = "repaired"
    DEVICE_GONE = "device-gone"


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    type: EventType
    port_id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "type": str(self.type), "port_id": self.port_id,
                "reason": self.reason}


class EventLog:
    """Sequence-numbered events in a bounded ring, with waiting readers."""

    def __init__(self, keep: int = 10000):
        self._events: deque[Event] = deque(maxlen=keep)
        self._seq = 0
        self._cond = threading.Condition()

    @property
    def last(self) -> int:
        with self._cond:
            return self._seq

    def emit(self, type_: EventType, port_id: str | None, reason: str = "") -> Event:
        with self._cond:
            self._seq += 1
            ev = Event(self._seq, time.time(), type_, port_id, reason)
            self._events.append(ev)
            self._cond.notify_all()
            return ev

    def since(self, seq: int, wait: float = 0.0, stop: threading.Event | None = None
              ) -> tuple[list[Event], int, bool]:
        """Events after ``seq`` (waiting up to ``wait`` seconds for the first),
        the last sequence number, and whether events after ``seq`` were lost."""
        deadline = time.monotonic() + wait
        with self._cond:
            while self._seq <= seq:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    break
                self._cond.wait(min(left, 0.5))
            evs = [e for e in self._events if e.seq > seq]
            # events after ``seq`` fell out of the ring, or ``seq`` is from
            # before a restart (numbers start again at 1): relist either way
            lost = (bool(self._events) and self._events[0].seq > seq + 1) or seq > self._seq
            return evs, self._seq, lost

    def wake_all(self) -> None:
        """Wake waiting readers (shutdown)."""
        with self._cond:
            self._cond.notify_all()
