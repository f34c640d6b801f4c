"""A bounded, sequence-numbered event log with any number of readers.

Readers keep their own position (the last sequence number they saw), so each
sees every event; one that falls further behind than ``capacity`` is told how
many it missed instead of holding memory for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["EventLog", "LogRead"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LogRead(Generic[T]):
    """One read: ``events`` after the asked position, the ``last_seq`` to ask
    after next time, and how many events the reader ``missed``."""

    events: list[T]
    last_seq: int
    missed: int


class EventLog(Generic[T]):
    """Keeps the newest ``capacity`` events, numbered from ``start_seq + 1``
    (a restored session's log continues the numbers of the one it replaces)."""

    def __init__(self, capacity: int, start_seq: int = 0) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if start_seq < 0:
            raise ValueError("start_seq must be >= 0")
        self._capacity = capacity
        self._events: deque[T] = deque(maxlen=capacity)
        self._last_seq = start_seq

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event (0 when empty)."""
        return self._last_seq

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest event still kept."""
        return self._last_seq - len(self._events) + 1

    @property
    def capacity(self) -> int:
        """How many events are kept."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: T) -> int:
        """Add an event; returns its sequence number."""
        self._events.append(event)
        self._last_seq += 1
        return self._last_seq

    def read(self, after_seq: int, max_events: int) -> LogRead[T]:
        """Up to ``max_events`` events with sequence numbers above ``after_seq``."""
        after_seq = max(0, min(after_seq, self._last_seq))
        first = self.first_seq
        missed = 0
        if after_seq + 1 < first:
            missed = first - after_seq - 1
            after_seq = first - 1
        start = after_seq - first + 1
        count = min(max_events, self._last_seq - after_seq)
        if count <= 0:
            return LogRead([], after_seq, missed)
        if start == 0 and count == len(self._events):
            events = list(self._events)
        else:
            # deque slicing is not supported; rotate-free copy of the window.
            events = [self._events[i] for i in range(start, start + count)]
        return LogRead(events, after_seq + count, missed)
