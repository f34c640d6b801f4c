"""Turn latency and error counts of a session actor, for ``ray-realtime status``.

Each session actor keeps one :class:`TurnWindow`: the durations of the turns
its sessions finished in the last minute (a bounded, rolling window) and the
model errors they saw. A :class:`TurnObserver` per session listens to the
session's model connection beside the session's own driver and feeds the
window: a turn is one model response, from the model's ``turn_started`` (the
response was created) to its ``turn_ended`` (the response is done; a tool turn
is two responses, so two turns); ``error`` and ``exception`` model events
count as errors.

The router asks every session actor for :meth:`TurnWindow.snapshot` and merges
them with :func:`merge_snapshots` into p50/p99 per node and in total. The
window holds numbers only: no session id, no text, nothing secret.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ray_realtime.actors.metrics import record
from ray_realtime.model.interface import RealtimeModelListener
from ray_realtime.types import model_events as me

__all__ = ["TurnObserver", "TurnWindow", "merge_snapshots", "percentile"]

WINDOW_SECONDS = 60.0
"""How far back ``status`` looks for turn latencies and recent errors."""

MAX_SAMPLES = 1024
"""Turn durations (and error times) one actor keeps; older ones drop first."""


class TurnWindow:
    """Turn durations and errors of the last :data:`WINDOW_SECONDS`, bounded."""

    def __init__(
        self,
        window_seconds: float = WINDOW_SECONDS,
        max_samples: int = MAX_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._turns: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._errors: deque[float] = deque(maxlen=max_samples)
        self.turns_total = 0
        self.errors_total = 0

    @property
    def clock(self) -> Callable[[], float]:
        """The window's clock (observers time turns with it)."""
        return self._clock

    def record_turn(self, seconds: float) -> None:
        """A turn ended after ``seconds``."""
        self._turns.append((self._clock(), max(0.0, seconds)))
        self.turns_total += 1

    def record_error(self) -> None:
        """The model reported an error."""
        self._errors.append(self._clock())
        self.errors_total += 1

    def _prune(self) -> None:
        horizon = self._clock() - self.window_seconds
        while self._turns and self._turns[0][0] < horizon:
            self._turns.popleft()
        while self._errors and self._errors[0] < horizon:
            self._errors.popleft()

    def snapshot(self) -> dict[str, Any]:
        """The last minute: ``turn_ms`` (each turn's duration, oldest first),
        ``errors`` in the window, and the totals since the actor started."""
        self._prune()
        return {
            "turn_ms": [round(d * 1000.0, 3) for _, d in self._turns],
            "errors": len(self._errors),
            "turns_total": self.turns_total,
            "errors_total": self.errors_total,
        }


class TurnObserver(RealtimeModelListener):
    """Listens to one session's model and feeds a :class:`TurnWindow` (and,
    with ``tags``, the ``turn_seconds`` / ``model_errors`` metrics under the
    labels ``tags()`` names when a turn ends)."""

    def __init__(
        self, window: TurnWindow, tags: Callable[[], dict[str, str]] | None = None
    ) -> None:
        self._window = window
        self._tags = tags
        self._started: float | None = None

    async def on_event(self, event: me.RealtimeModelEvent) -> None:
        """Time turns and count errors; never raises."""
        if isinstance(event, me.RealtimeModelTurnStartedEvent):
            self._started = self._window.clock()
        elif isinstance(event, me.RealtimeModelTurnEndedEvent):
            if self._started is not None:
                seconds = self._window.clock() - self._started
                self._window.record_turn(seconds)
                self._started = None
                if self._tags is not None:
                    record("turn_seconds", seconds, **self._tags())
        elif isinstance(event, me.RealtimeModelErrorEvent | me.RealtimeModelExceptionEvent):
            self._window.record_error()
            if self._tags is not None:
                record("model_errors", 1.0, **self._tags())


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several actors' snapshots as one summary: ``turns`` and ``errors`` in the
    window, ``turn_p50_ms`` / ``turn_p99_ms`` (None without turns), and the
    totals. Malformed entries count as empty."""
    durations: list[float] = []
    errors = turns_total = errors_total = 0
    for snap in snapshots:
        raw = snap.get("turn_ms")
        if isinstance(raw, list):
            durations.extend(float(d) for d in raw if isinstance(d, int | float))
        errors += _int(snap.get("errors"))
        turns_total += _int(snap.get("turns_total"))
        errors_total += _int(snap.get("errors_total"))
    return {
        "turns": len(durations),
        "turn_p50_ms": percentile(durations, 50),
        "turn_p99_ms": percentile(durations, 99),
        "errors": errors,
        "turns_total": turns_total,
        "errors_total": errors_total,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
