"""What a session's event log holds besides the SDK's events (internal).

:class:`HistoryDelta` is how the log keeps a change of the history: the ops
of the change instead of the whole history (see
:mod:`ray_realtime.core.history_log`, which applies them). Readers never see
it: a session handle turns it back into ``history_updated`` / ``history_added``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ray_realtime.types.events import RealtimeSessionEvent

__all__ = ["HistoryDelta", "LogEvent"]


@dataclass(frozen=True, slots=True)
class HistoryDelta:
    """The history changed by ``ops``, applied in order: ``[kind, index,
    value]`` with ``["set", i, item]``, ``["insert", i, item]``, ``["remove",
    i, None]`` or ``["reset", 0, items]`` (tuples in this process, lists once
    over the wire). Readers see it as ``history_added`` of the last inserted
    item when ``added``, else as ``history_updated`` with the whole history."""

    ops: list[Any] = field(default_factory=list)
    added: bool = False
    type: Literal["history_delta"] = "history_delta"


LogEvent = RealtimeSessionEvent | HistoryDelta
"""What a session's event log holds: the SDK's events and history deltas."""
