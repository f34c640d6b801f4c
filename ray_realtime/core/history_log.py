"""History deltas: how the history travels through a session's event log.

The SDK's ``history_updated`` event carries the whole history, once per
transcript delta; kept in the event log and sent to every reader, that makes a
long session cost more per turn the longer it gets. So the session's log holds
:class:`HistoryDelta` events instead (an item set, inserted or removed at an
index, or the whole list reset), next to ``history_added`` (already a delta:
its place follows from the history before it, by :func:`insertion_index`).

Readers turn them back into the SDK's events with a :class:`HistoryReplica`:
a list and the sequence number it is at, to which each delta is applied in
the log's order. A read that does not continue from the replica's position
(an attach at some ``after_seq``, events missed, a restored session's new
log) first takes a snapshot of the history *as of* the sequence number before
the read's first event: the session's :class:`HistoryTrail` keeps the history
as of its log's newest event and, for each history event still in the log,
what it replaced, so :meth:`HistoryTrail.history_at` undoes the newer deltas
exactly.

An op is ``[kind, index, value]``: ``["set", i, item]``, ``["insert", i,
item]``, ``["remove", i, None]`` or ``["reset", 0, items]`` (tuples in this
process, lists once over the wire). Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from ray_realtime.core import history as hist
from ray_realtime.exceptions import ProtocolError
from ray_realtime.types.events import (
    RealtimeAudio,
    RealtimeError,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeRawModelEvent,
    RealtimeToolEnd,
    RealtimeToolStart,
)
from ray_realtime.types.items import RealtimeItem, RealtimeToolCallItem
from ray_realtime.types.log_events import HistoryDelta, LogEvent

__all__ = [
    "HistoryDelta",
    "HistoryReplica",
    "HistoryTrail",
    "LogEvent",
    "apply_ops",
    "estimate_event_bytes",
    "is_history_event",
]

_KINDS = frozenset({"set", "insert", "remove", "reset"})


def is_history_event(event: Any) -> bool:
    """Whether ``event`` changes the history (a delta or an SDK history event)."""
    return isinstance(event, HistoryDelta | RealtimeHistoryAdded | RealtimeHistoryUpdated)


def apply_ops(items: list[Any], ops: Sequence[Any], undo: list[Any] | None = None) -> None:
    """Apply ``ops`` to ``items`` in place; with ``undo``, append the ops that
    revert them (to be applied in that list's order). A malformed op (from a
    peer) raises :class:`ProtocolError`, leaving ``items`` partly changed."""
    for op in ops:
        if not isinstance(op, (list, tuple)) or len(op) != 3:
            raise ProtocolError("a history op must be [kind, index, value]")
        kind, index, value = op
        if kind not in _KINDS or type(index) is not int or index < 0:
            raise ProtocolError(f"bad history op {str(kind)[:20]!r} at {index!r:.20}")
        if kind == "set":
            if index >= len(items):
                raise ProtocolError(f"history op: no item at {index}")
            if undo is not None:
                undo.append(("set", index, items[index]))
            items[index] = value
        elif kind == "insert":
            if index > len(items):
                raise ProtocolError(f"history op: cannot insert at {index}")
            items.insert(index, value)
            if undo is not None:
                undo.append(("remove", index, None))
        elif kind == "remove":
            if index >= len(items):
                raise ProtocolError(f"history op: no item at {index}")
            old = items.pop(index)
            if undo is not None:
                undo.append(("insert", index, old))
        else:
            if not isinstance(value, list):
                raise ProtocolError("history op: reset takes a list of items")
            if undo is not None:
                undo.append(("reset", 0, items[:]))
            items[:] = value
    if undo is not None:
        undo.reverse()


def _ops_of(event: Any, items: list[Any]) -> Sequence[Any]:
    """The ops of any history event, against ``items`` (the history before it)."""
    if isinstance(event, HistoryDelta):
        return event.ops
    if isinstance(event, RealtimeHistoryAdded):
        return (("insert", hist.insertion_index(items, event.item), event.item),)
    return (("reset", 0, list(event.history)),)


class HistoryReplica:
    """A reader's copy of the history at sequence number ``seq``: applies
    history events in the log's order and hands out the SDK's events. Made
    without a position (``seq`` -1), its first read with a history event
    takes a snapshot (a session may start with a history: a restored one)."""

    def __init__(self, items: Iterable[RealtimeItem] = (), seq: int = -1) -> None:
        self.items: list[RealtimeItem] = list(items)
        self.seq = seq

    def follows(self, first_seq: int) -> bool:
        """Whether a read whose first event is ``first_seq`` continues from here."""
        return self.seq == first_seq - 1

    def reset(self, items: Iterable[RealtimeItem], seq: int) -> None:
        """Start again from a snapshot: the history as of ``seq``."""
        self.items = list(items)
        self.seq = seq

    def needs_snapshot(self, events: Sequence[Any], first_seq: int) -> bool:
        """Whether reading ``events`` (numbered from ``first_seq``) needs a
        snapshot first: it does not continue from here and changes the history."""
        return not self.follows(first_seq) and any(is_history_event(e) for e in events)

    def materialise(self, events: Sequence[Any], first_seq: int) -> list[Any]:
        """The SDK's events for ``events`` (numbered from ``first_seq``), with
        the history events applied. Unless :meth:`needs_snapshot` (then take
        one first), the replica is at ``first_seq - 1``, or the read holds no
        history event (then the replica stays where it is). Events at or
        before the replica's position (a snapshot newer than the read, when
        the log had already dropped the older history) are not applied again:
        their ``history_updated`` carries the history as of the replica."""
        if self.seq < first_seq - 1:
            if any(is_history_event(e) for e in events):
                raise ValueError("the replica needs a snapshot before these events")
            return list(events)
        out: list[Any] = []
        for offset, event in enumerate(events):
            seq = first_seq + offset
            if not is_history_event(event):
                out.append(event)
            elif seq <= self.seq:
                out.append(self._public(event, None))
            else:
                ops = _ops_of(event, self.items)
                apply_ops(self.items, ops)
                self.seq = seq
                out.append(self._public(event, ops))
        last = first_seq + len(events) - 1
        if last > self.seq:
            self.seq = last
        return out

    def _public(self, event: Any, ops: Sequence[Any] | None) -> Any:
        if isinstance(event, RealtimeHistoryAdded):
            return event
        if isinstance(event, HistoryDelta) and event.added:
            inserted = [op[2] for op in event.ops if op[0] == "insert"]
            if inserted:
                return RealtimeHistoryAdded(inserted[-1])
        if isinstance(event, RealtimeHistoryUpdated) and ops is None:
            return event
        return RealtimeHistoryUpdated(list(self.items))


class HistoryTrail:
    """The session's side: the history as of its log's newest event, and what
    each history event still in the log replaced (kept here, never sent)."""

    def __init__(self, items: Iterable[RealtimeItem] = ()) -> None:
        self._items: list[RealtimeItem] = list(items)
        self._undo: deque[tuple[int, list[Any]]] = deque()

    @property
    def items(self) -> list[RealtimeItem]:
        """A copy of the history as of the newest event recorded."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._undo)

    def record(self, event: Any, seq: int) -> None:
        """``event`` entered the log as number ``seq`` (any event; only
        history events change anything)."""
        if not is_history_event(event):
            return
        undo: list[Any] = []
        apply_ops(self._items, _ops_of(event, self._items), undo)
        self._undo.append((seq, undo))

    def forget_before(self, first_seq: int) -> None:
        """The log no longer holds events before ``first_seq``."""
        while self._undo and self._undo[0][0] < first_seq:
            self._undo.popleft()

    def history_at(self, seq: int, first_seq: int) -> tuple[int, list[RealtimeItem]]:
        """``(at, items)``: the history as of event ``at``, which is ``seq``
        unless the log no longer reaches back that far (then the oldest it
        can: ``first_seq - 1``, with ``first_seq`` the log's oldest event)."""
        at = max(seq, first_seq - 1)
        items = list(self._items)
        for recorded, undo in reversed(self._undo):
            if recorded <= at:
                break
            apply_ops(items, undo)
        return at, items


# ------------------------------------------------------------ size estimate

_EVENT_OVERHEAD = 160
_ITEM_OVERHEAD = 240
_PART_OVERHEAD = 120


def _item_bytes(item: Any) -> int:
    size = _ITEM_OVERHEAD + len(item.item_id)
    if isinstance(item, RealtimeToolCallItem):
        return size + len(item.arguments) + len(item.name) + len(item.output or "")
    for part in getattr(item, "content", ()):
        size += _PART_OVERHEAD
        for name in ("text", "transcript", "audio", "image_url"):
            value = getattr(part, name, None)
            if value:
                size += len(value)
    return size


def _plain_bytes(value: Any, budget: int = 256) -> int:
    """A rough, linear size of plain data (dicts, lists, strings, bytes),
    looking at no more than ``budget`` containers."""
    size = 0
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, (str, bytes, bytearray)):
            size += 48 + len(current)
        elif isinstance(current, dict) and budget > 0:
            budget -= 1
            size += 64
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, (list, tuple)) and budget > 0:
            budget -= 1
            size += 56
            stack.extend(current)
        elif hasattr(current, "__dataclass_fields__") and budget > 0:
            budget -= 1
            size += 64
            stack.extend(getattr(current, name) for name in current.__dataclass_fields__)
        else:
            size += 32
    return size


def estimate_event_bytes(event: Any) -> int:
    """About how much memory ``event`` holds: a fixed overhead plus its audio
    bytes and text lengths (linear in the event, never walking a history
    twice). What the event log's byte bound counts."""
    if isinstance(event, RealtimeAudio):
        return _EVENT_OVERHEAD + len(event.audio.data)
    if isinstance(event, HistoryDelta):
        size = _EVENT_OVERHEAD
        for op in event.ops:
            value = op[2] if len(op) == 3 else None
            if isinstance(value, list):
                size += sum(_item_bytes(item) for item in value)
            elif value is not None:
                size += _item_bytes(value)
        return size
    if isinstance(event, RealtimeHistoryAdded):
        return _EVENT_OVERHEAD + _item_bytes(event.item)
    if isinstance(event, RealtimeHistoryUpdated):
        # The list shares its items with other events: count its slots.
        return _EVENT_OVERHEAD + 8 * len(event.history)
    if isinstance(
        event, RealtimeRawModelEvent | RealtimeError | RealtimeToolEnd | RealtimeToolStart
    ):
        return _EVENT_OVERHEAD + _plain_bytes(event)
    return _EVENT_OVERHEAD
