"""The session actor's rolling window of turn durations and errors (no Ray)."""

from __future__ import annotations

from ray_realtime.actors.turn_stats import (
    TurnObserver,
    TurnWindow,
    merge_snapshots,
    percentile,
)
from ray_realtime.types import model_events as me


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


async def test_observer_times_turns_and_counts_errors() -> None:
    clock = Clock()
    window = TurnWindow(clock=clock)
    observer = TurnObserver(window)
    await observer.on_event(me.RealtimeModelTurnStartedEvent())
    clock.now += 0.25
    await observer.on_event(me.RealtimeModelTurnEndedEvent())
    # An end without a start (a turn begun before the observer) is not a turn.
    await observer.on_event(me.RealtimeModelTurnEndedEvent())
    await observer.on_event(me.RealtimeModelErrorEvent(error={"message": "boom"}))
    snap = window.snapshot()
    assert snap == {"turn_ms": [250.0], "errors": 1, "turns_total": 1, "errors_total": 1}


def test_window_forgets_what_is_older_than_a_minute_and_stays_bounded() -> None:
    clock = Clock()
    window = TurnWindow(window_seconds=60.0, max_samples=4, clock=clock)
    window.record_turn(1.0)
    window.record_error()
    clock.now += 61.0
    window.record_turn(0.002)
    snap = window.snapshot()
    assert snap["turn_ms"] == [2.0] and snap["errors"] == 0
    assert snap["turns_total"] == 2 and snap["errors_total"] == 1
    for _ in range(10):
        window.record_turn(0.001)
    assert len(window.snapshot()["turn_ms"]) == 4


def test_merge_takes_every_actor_and_skips_malformed_entries() -> None:
    merged = merge_snapshots(
        [
            {"turn_ms": [10.0, 30.0], "errors": 1, "turns_total": 2, "errors_total": 3},
            {"turn_ms": [20.0, "x"], "errors": True, "turns_total": 5},
            {"turn_ms": None},
        ]
    )
    assert merged == {
        "turns": 3,
        "turn_p50_ms": 20.0,
        "turn_p99_ms": 30.0,
        "errors": 1,
        "turns_total": 7,
        "errors_total": 3,
    }
    empty = merge_snapshots([])
    assert empty["turns"] == 0 and empty["turn_p50_ms"] is None
