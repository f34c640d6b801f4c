"""The gateway's audio conversion: μ-law tables and the polyphase resampler."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ray_realtime.gateway.audio import (
    CallAudio,
    Downsampler,
    Upsampler,
    design_lowpass,
    mulaw_decode,
    mulaw_encode,
)
from ray_realtime.local.audio import mulaw_decode as ref_decode
from ray_realtime.local.audio import mulaw_encode as ref_encode


def _tone(freq: float, rate: int, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _response_db(h: np.ndarray, freqs: np.ndarray, rate: int = 24000) -> np.ndarray:
    n = np.arange(len(h))
    resp = np.array([abs(np.sum(h * np.exp(-2j * np.pi * f / rate * n))) for f in freqs])
    return np.asarray(20 * np.log10(np.maximum(resp, 1e-12)))


def test_mulaw_matches_g711_reference_for_every_code_and_sample() -> None:
    codes = bytes(range(256))
    assert np.array_equal(mulaw_decode(codes), ref_decode(codes))
    samples = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(np.frombuffer(mulaw_encode(samples), dtype=np.uint8), ref_encode(samples))
    # Decode then encode is the identity on codes (except the two zeros).
    again = np.frombuffer(mulaw_encode(mulaw_decode(codes)), dtype=np.uint8)
    assert np.array_equal(mulaw_decode(again.tobytes()), mulaw_decode(codes))


def test_filter_passband_flat_and_stopband_deep() -> None:
    h = design_lowpass()
    passband = _response_db(h, np.linspace(0, 3400, 69))
    assert np.max(np.abs(passband)) < 0.5, passband
    stopband = _response_db(h, np.linspace(4000, 12000, 161))
    assert np.max(stopband) <= -40.0, np.max(stopband)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_downsampler_keeps_passband_tones(freq: float) -> None:
    x = _tone(freq, 24000, 0.5)
    down = Downsampler()
    y = np.concatenate([down.process(x[i : i + 480]) for i in range(0, len(x), 480)])
    assert len(y) == len(x) // 3
    steady = y[400:]
    gain_db = 20 * np.log10(np.std(steady) / np.std(x))
    assert abs(gain_db) < 0.5


@pytest.mark.parametrize("freq", [4500.0, 6000.0, 9000.0])
def test_downsampler_rejects_what_would_alias(freq: float) -> None:
    x = _tone(freq, 24000, 0.5)
    down = Downsampler()
    y = np.concatenate([down.process(x[i : i + 480]) for i in range(0, len(x), 480)])
    steady = y[400:].astype(np.float64)
    level_db = 20 * np.log10(max(np.std(steady), 1e-9) / np.std(x))
    assert level_db < -40.0, level_db


def test_downsampler_any_chunk_lengths_give_the_same_output() -> None:
    x = _tone(700.0, 24000, 0.2)
    whole = Downsampler().process(x)
    down = Downsampler()
    parts, i = [], 0
    for size in [1, 2, 7, 480, 13, 100, 5000]:
        parts.append(down.process(x[i : i + size]))
        i += size
    assert np.array_equal(np.concatenate(parts), whole)


def test_upsampler_is_band_limited_not_sample_repetition() -> None:
    x = _tone(1000.0, 8000, 0.3)
    up = Upsampler()
    y = np.concatenate([up.process(x[i : i + 160]) for i in range(0, len(x), 160)])
    assert len(y) == 3 * len(x)
    spectrum = np.abs(np.fft.rfft(y[1200:].astype(np.float64) * np.hanning(len(y) - 1200)))
    freqs = np.fft.rfftfreq(len(y) - 1200, 1 / 24000)
    peak = spectrum[np.argmin(np.abs(freqs - 1000))]
    # Repetition would leave images at 8k±1k; a band-limited upsampler removes them.
    images = spectrum[(freqs > 6500) & (freqs < 9500)].max()
    assert 20 * np.log10(images / peak) < -40


def test_round_trip_of_a_tone_through_the_phone_path() -> None:
    """24 kHz tone -> μ-law 8 kHz (phone) -> 24 kHz: the tone survives."""
    audio = CallAudio("resample")
    x = _tone(440.0, 24000, 1.0)
    phone = b"".join(audio.to_phone(x[i : i + 480].tobytes()) for i in range(0, len(x), 480))
    assert len(phone) == len(x) // 3
    back = b"".join(audio.to_model(phone[i : i + 160]) for i in range(0, len(phone), 160))
    y = np.frombuffer(back, dtype="<i2").astype(np.float64)
    delay = 2 * 61  # two filters' group delay, in 24 kHz samples
    ref = x[: len(y) - delay].astype(np.float64)
    out = y[delay:]
    snr = 10 * np.log10(np.sum(ref[2000:] ** 2) / np.sum((out[2000:] - ref[2000:]) ** 2))
    assert snr > 25, snr  # μ-law itself limits it to ~38 dB


def test_passthrough_forwards_bytes_untouched() -> None:
    audio = CallAudio("passthrough")
    data = bytes(range(256)) * 2
    assert audio.to_model(data) == data
    assert audio.to_phone(data) == data
    assert audio.model_format == "g711_ulaw"
    assert audio.model_ms(b"\xff" * 160) == 20.0
    assert CallAudio("resample").model_ms(b"\0" * 960) == 20.0
    with pytest.raises(ValueError):
        CallAudio("loud")  # type: ignore[arg-type]


def test_cost_per_20ms_frame_is_small() -> None:
    audio = CallAudio("resample")
    frame_in = mulaw_encode(_tone(500.0, 8000, 0.02))
    frame_out = _tone(500.0, 24000, 0.02).tobytes()
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        audio.to_model(frame_in)
        audio.to_phone(frame_out)
    per_frame_us = (time.perf_counter() - t0) / n * 1e6
    # Both directions of one 20 ms frame; a generous bound for a shared machine.
    assert per_frame_us < 2000, per_frame_us
