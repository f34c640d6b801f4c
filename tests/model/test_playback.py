"""Playback trackers: what the user heard, and what was received."""

from __future__ import annotations

import threading

import pytest

from ray_realtime.exceptions import ConfigError, UserError
from ray_realtime.model import RealtimePlaybackState, RealtimePlaybackTracker
from ray_realtime.model.playback import (
    ReceivedAudioTracker,
    ReportedPlaybackTracker,
    check_playback_snapshot,
    playback_snapshot,
)

NOTHING: RealtimePlaybackState = {
    "current_item_id": None,
    "current_item_content_index": None,
    "elapsed_ms": None,
}


def test_new_tracker_plays_nothing() -> None:
    assert RealtimePlaybackTracker().get_state() == NOTHING


def test_play_bytes_counts_pcm16_milliseconds() -> None:
    tracker = RealtimePlaybackTracker()
    tracker.on_play_bytes("item_a", 0, b"\x00" * 4800)  # 100 ms of 24 kHz PCM16
    tracker.on_play_bytes("item_a", 0, b"\x00" * 2400)
    assert tracker.get_state() == {
        "current_item_id": "item_a",
        "current_item_content_index": 0,
        "elapsed_ms": 150.0,
    }


@pytest.mark.parametrize("fmt", ["g711_ulaw", "g711_alaw"])
def test_play_bytes_counts_g711_milliseconds(fmt: str) -> None:
    tracker = RealtimePlaybackTracker()
    tracker.set_audio_format(fmt)
    tracker.on_play_bytes("item_a", 0, b"\xff" * 800)  # 8 kHz, one byte a sample
    assert tracker.get_state()["elapsed_ms"] == 100.0


def test_play_ms_accumulates_per_item_and_restarts_on_a_new_one() -> None:
    tracker = RealtimePlaybackTracker()
    tracker.on_play_ms("item_a", 0, 40)
    tracker.on_play_ms("item_a", 0, 60.5)
    assert tracker.get_state()["elapsed_ms"] == 100.5
    tracker.on_play_ms("item_b", 0, 20)
    assert tracker.get_state() == {
        "current_item_id": "item_b",
        "current_item_content_index": 0,
        "elapsed_ms": 20.0,
    }
    tracker.on_play_ms("item_b", 1, 5)  # another content part starts afresh too
    assert tracker.get_state()["current_item_content_index"] == 1
    assert tracker.get_state()["elapsed_ms"] == 5.0


def test_interrupted_resets() -> None:
    tracker = RealtimePlaybackTracker()
    tracker.on_play_ms("item_a", 0, 40)
    tracker.on_interrupted()
    assert tracker.get_state() == NOTHING
    tracker.on_play_ms("item_a", 0, 10)
    assert tracker.get_state()["elapsed_ms"] == 10.0


def test_negative_ms_and_unknown_format_are_refused() -> None:
    tracker = RealtimePlaybackTracker()
    with pytest.raises(UserError):
        tracker.on_play_ms("item_a", 0, -1)
    with pytest.raises(ConfigError):
        tracker.set_audio_format("opus")


def test_state_is_consistent_with_a_writer_thread() -> None:
    tracker = RealtimePlaybackTracker()
    done = threading.Event()

    def play() -> None:
        for i in range(2000):
            tracker.on_play_ms(f"item_{i % 3}", 0, 1.0)
        done.set()

    thread = threading.Thread(target=play)
    thread.start()
    for _ in range(2000):
        state = tracker.get_state()
        if state["current_item_id"] is not None:
            assert state["elapsed_ms"] is not None
            assert state["current_item_content_index"] == 0
    thread.join(timeout=5)
    assert done.is_set()


def test_repr_shows_the_position() -> None:
    tracker = RealtimePlaybackTracker()
    tracker.on_play_ms("item_a", 0, 3)
    assert "item_a" in repr(tracker)


def test_received_tracker_plays_in_real_time_from_the_first_chunk() -> None:
    now = [100.0]
    received = ReceivedAudioTracker(clock=lambda: now[0])
    assert received.get_state() == NOTHING
    received.on_audio("item_a", 0, 4800)
    received.on_audio("item_a", 0, 4800)
    assert received.get_state()["elapsed_ms"] == 0.0  # nothing played yet
    now[0] += 0.15
    assert received.get_state()["elapsed_ms"] == pytest.approx(150.0)
    now[0] += 10.0  # never past what was received
    assert received.get_state() == {
        "current_item_id": "item_a",
        "current_item_content_index": 0,
        "elapsed_ms": 200.0,
    }
    assert received.received_ms("item_a", 0) == 200.0
    received.on_audio("item_b", 0, 480)
    assert received.get_state()["current_item_id"] == "item_b"
    assert received.received_ms("item_a", 0) == 200.0  # still known for clamping
    received.on_interrupted()
    assert received.get_state() == NOTHING
    assert received.received_ms("item_b", 0) == 10.0
    received.reset()
    assert received.received_ms("item_b", 0) is None


def test_received_tracker_is_bounded() -> None:
    received = ReceivedAudioTracker(max_items=4)
    for i in range(10):
        received.on_audio(f"item_{i}", 0, 48)
    assert received.received_ms("item_0", 0) is None
    assert received.received_ms("item_9", 0) == 1.0
    assert received.received_ms("item_6", 0) == 1.0
    with pytest.raises(UserError):
        ReceivedAudioTracker(max_items=0)


def test_received_tracker_g711() -> None:
    received = ReceivedAudioTracker()
    received.set_audio_format("g711_ulaw")
    received.on_audio("item_a", 0, 80)
    assert received.received_ms("item_a", 0) == 10.0


def test_playback_reports_are_checked_and_taken() -> None:
    tracker = RealtimePlaybackTracker()
    assert playback_snapshot(tracker) == (None, None, None)
    tracker.on_play_ms("item_a", 1, 120)
    snapshot = playback_snapshot(tracker)
    assert snapshot == ("item_a", 1, 120.0)
    reported = ReportedPlaybackTracker()
    reported.report(check_playback_snapshot(list(snapshot)))
    assert reported.get_state() == tracker.get_state()
    reported.report(check_playback_snapshot([None, None, None]))
    assert reported.get_state() == NOTHING
    for bad in (
        None,
        [],
        ["a", 0],
        ["a", -1, 1.0],
        ["a", 0, -1],
        [1, 0, 1.0],
        ["a", 0, True],
        ["a", 0, float("nan")],
        ["a", 0, float("inf")],
        ["a", None, 1.0],
    ):
        with pytest.raises(UserError):
            check_playback_snapshot(bad)
