"""A bounded, sequence-numbered event log with any number of readers.

Readers keep their own position (the last sequence number they saw), so each
sees every event; one that falls further behind than the log keeps is told how
many it missed instead of holding memory for it. The log keeps at most
``capacity`` events and, with ``max_bytes``, at most that many bytes as
``size_of`` estimates them, so its memory stays flat however long the session
runs. The byte bound never drops the newest ``keep_newest`` events: one large
event (a tool's big output, in ``tool_end`` and in the history) must not take
the events just before it from a reader only a little behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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
    """Keeps the newest ``capacity`` events (and, with ``max_bytes``, no more
    than that many bytes of them by ``size_of``), numbered from ``start_seq +
    1`` (a restored session's log continues the numbers of the one it replaces)."""

    def __init__(
        self,
        capacity: int,
        start_seq: int = 0,
        *,
        max_bytes: int | None = None,
        size_of: Callable[[T], int] | None = None,
        keep_newest: int = 64,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if start_seq < 0:
            raise ValueError("start_seq must be >= 0")
        if max_bytes is not None and (max_bytes <= 0 or size_of is None):
            raise ValueError("max_bytes must be positive and come with size_of")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._size_of = size_of if max_bytes is not None else None
        self._keep_newest = max(1, keep_newest)
        self._events: deque[T] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0
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

    @property
    def max_bytes(self) -> int | None:
        """The byte bound (None: by count only)."""
        return self._max_bytes

    @property
    def bytes(self) -> int:
        """Estimated bytes of the events kept (0 without a byte bound)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: T) -> int:
        """Add an event, dropping the oldest past either bound; returns its
        sequence number."""
        self._events.append(event)
        if self._size_of is not None:
            size = self._size_of(event)
            self._sizes.append(size)
            self._bytes += size
            limit = self._max_bytes or 0
            floor = self._keep_newest
            while len(self._events) > self._capacity or (
                self._bytes > limit and len(self._events) > floor
            ):
                self._events.popleft()
                self._bytes -= self._sizes.popleft()
        elif len(self._events) > self._capacity:
            self._events.popleft()
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
