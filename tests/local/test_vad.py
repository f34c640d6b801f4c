"""Unit tests for the pure energy-based VAD of the local model."""

from __future__ import annotations

import numpy as np
import pytest

from ray_realtime.local.audio import G711_SAMPLE_RATE, PCM_SAMPLE_RATE, synthesize_tone
from ray_realtime.local.vad import FRAME_MS, EnergyVad, VadEvent, threshold_to_rms


def silence(ms: float, rate: int = PCM_SAMPLE_RATE) -> np.ndarray:
    return np.zeros(int(ms * rate / 1000), dtype=np.int16)


def tone(ms: float, rate: int = PCM_SAMPLE_RATE, amplitude: float = 0.1) -> np.ndarray:
    return synthesize_tone(ms, rate, amplitude=amplitude, fade_ms=0)


def test_silence_produces_nothing() -> None:
    vad = EnergyVad()
    assert vad.feed(silence(3000)) == []
    assert not vad.in_speech
    assert vad.position_ms == pytest.approx(3000)


def test_burst_then_silence_starts_and_stops() -> None:
    vad = EnergyVad(prefix_padding_ms=300, silence_duration_ms=500)
    audio = np.concatenate([silence(1000), tone(800), silence(1000)])
    events = vad.feed(audio)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    start, stop = events[0].audio_ms, events[1].audio_ms
    assert start == 1000 - 300  # onset minus prefix padding
    # Speech ends at 1800 ms; stop is reported after 500 ms of silence, within a frame.
    assert 2300 <= stop <= 2300 + FRAME_MS
    assert not vad.in_speech


def test_chunked_feeding_matches_one_shot() -> None:
    audio = np.concatenate([silence(400), tone(600), silence(700), tone(300), silence(700)])
    one_shot = EnergyVad(silence_duration_ms=400).feed(audio)
    vad = EnergyVad(silence_duration_ms=400)
    chunked: list[VadEvent] = []
    for i in range(0, audio.size, 333):  # odd chunk size: partial frames carry over
        chunked += vad.feed(audio[i : i + 333])
    assert chunked == one_shot
    assert [e.kind for e in one_shot] == [
        "speech_started",
        "speech_stopped",
        "speech_started",
        "speech_stopped",
    ]


def test_short_pause_does_not_stop_speech() -> None:
    vad = EnergyVad(silence_duration_ms=500)
    events = vad.feed(np.concatenate([tone(300), silence(300), tone(300)]))
    assert [e.kind for e in events] == ["speech_started"]
    assert vad.in_speech
    assert [e.kind for e in vad.feed(silence(600))] == ["speech_stopped"]


def test_prefix_padding_is_clamped_to_previous_segment() -> None:
    vad = EnergyVad(prefix_padding_ms=300, silence_duration_ms=200)
    first = vad.feed(np.concatenate([silence(100), tone(200), silence(200)]))
    assert first[0].audio_ms == 0  # cannot start before the timeline start
    end = first[1].audio_ms
    second = vad.feed(np.concatenate([silence(100), tone(200)]))
    assert second[0].kind == "speech_started"
    assert second[0].audio_ms == end  # not before the previous speech_stopped


def test_threshold_mapping() -> None:
    assert threshold_to_rms(0.0) == pytest.approx(10 ** (-60 / 20))
    assert threshold_to_rms(0.5) == pytest.approx(10 ** (-35 / 20))
    assert threshold_to_rms(1.0) == pytest.approx(10 ** (-10 / 20))
    assert threshold_to_rms(-3) == threshold_to_rms(0.0)
    assert threshold_to_rms(7) == threshold_to_rms(1.0)
    levels = [threshold_to_rms(t / 10) for t in range(11)]
    assert levels == sorted(levels)


@pytest.mark.parametrize(
    ("threshold", "amplitude", "detected"),
    [
        (0.5, 0.1, True),  # normal tone (-23 dBFS) at the default threshold
        (0.5, 0.01, False),  # -43 dBFS is below -35 dBFS
        (0.2, 0.01, True),  # ... but above -50 dBFS
        (0.9, 0.1, False),  # -15 dBFS needed
        (0.0, 0.002, True),
    ],
)
def test_threshold_decides_detection(threshold: float, amplitude: float, detected: bool) -> None:
    vad = EnergyVad(threshold=threshold)
    events = vad.feed(np.concatenate([silence(200), tone(400, amplitude=amplitude), silence(800)]))
    assert bool(events) is detected


def test_keep_from_and_reset() -> None:
    vad = EnergyVad(prefix_padding_ms=300, start_ms=1000)
    vad.feed(silence(2000))
    assert vad.position_ms == pytest.approx(3000)
    assert vad.keep_from_ms() == pytest.approx(2700)
    events = vad.feed(tone(100))
    assert events == [VadEvent("speech_started", 2700)]
    assert vad.keep_from_ms() == pytest.approx(1000)  # while speaking keep everything
    vad.reset()
    assert not vad.in_speech
    assert vad.feed(silence(100)) == []
    assert vad.keep_from_ms() == pytest.approx(3100)


def test_g711_rate_and_invalid_rate() -> None:
    vad = EnergyVad(sample_rate=G711_SAMPLE_RATE, silence_duration_ms=200)
    rate = G711_SAMPLE_RATE
    events = vad.feed(np.concatenate([silence(500, rate), tone(300, rate), silence(300, rate)]))
    assert [(e.kind, e.audio_ms) for e in events] == [
        ("speech_started", 200),
        ("speech_stopped", 1000),
    ]
    with pytest.raises(ValueError):
        EnergyVad(sample_rate=44_101)


@pytest.mark.parametrize("seed", range(6))
def test_frames_judged_together_as_one_by_one(seed: int) -> None:
    """Many frames per feed are judged in one pass; the decisions (and the timeline)
    are those of feeding one frame at a time, near the threshold included."""
    rng = np.random.default_rng(seed)
    level = threshold_to_rms(0.5) * 32768
    pieces = [
        (rng.standard_normal(int(rng.integers(1, 6000))) * level * rng.uniform(0.5, 1.5))
        for _ in range(30)
    ]
    audio = np.clip(np.concatenate(pieces), -32768, 32767).astype(np.int16)
    frame = PCM_SAMPLE_RATE * FRAME_MS // 1000
    one = EnergyVad(silence_duration_ms=100, prefix_padding_ms=60)
    by_frame: list[VadEvent] = []
    for i in range(0, audio.size, frame):
        by_frame += one.feed(audio[i : i + frame])
    many = EnergyVad(silence_duration_ms=100, prefix_padding_ms=60)
    together: list[VadEvent] = []
    i = 0
    while i < audio.size:
        step = int(rng.integers(1, 40 * frame))
        together += many.feed(audio[i : i + step])
        i += step
    assert together == by_frame
    assert len(by_frame) >= 4  # the signal does cross the threshold
    assert many.position_ms == one.position_ms


def test_digital_silence_is_never_speech_even_at_the_lowest_threshold() -> None:
    vad = EnergyVad(threshold=0.0, prefix_padding_ms=0, silence_duration_ms=20)
    assert threshold_to_rms(0.0) > 0.0
    assert vad.feed(silence(1000)) == []
    quiet = np.full(int(PCM_SAMPLE_RATE * FRAME_MS / 1000), 40, dtype=np.int16)  # ~-58 dBFS
    assert [e.kind for e in vad.feed(np.concatenate([quiet, silence(40)]))] == [
        "speech_started",
        "speech_stopped",
    ]
