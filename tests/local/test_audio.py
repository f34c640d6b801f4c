"""Unit tests for the pure numpy audio helpers of the local model."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ray_realtime.local.audio import (
    AUDIO_FORMATS,
    G711_SAMPLE_RATE,
    PCM_SAMPLE_RATE,
    EncodedToneCache,
    alaw_decode,
    alaw_encode,
    bytes_to_pcm16,
    chunk_samples,
    decode_to_pcm16,
    duration_ms,
    encode_from_pcm16,
    mulaw_decode,
    mulaw_encode,
    pcm16_to_bytes,
    rms,
    synthesize_tone,
    tone_chunks,
)

Codec = Callable[[Any], Any]
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def test_g711_reference_codes() -> None:
    # Well-known G.711 code points: silence and the extreme magnitudes.
    assert mulaw_encode(np.array([0]))[0] == 0xFF
    assert alaw_encode(np.array([0]))[0] == 0xD5
    assert mulaw_decode(bytes([0x00, 0x80, 0xFF])).tolist() == [-32124, 32124, 0]
    assert alaw_decode(bytes([0x55, 0xD5, 0x2A, 0xAA])).tolist() == [-8, 8, -32256, 32256]


@pytest.mark.parametrize(
    ("encode", "decode"), [(mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)]
)
def test_g711_round_trip_error_is_small(encode: Codec, decode: Codec) -> None:
    decoded = decode(encode(ALL_SAMPLES)).astype(np.int64)
    x = ALL_SAMPLES.astype(np.int64)
    err = np.abs(decoded - x)
    # Logarithmic quantisation: error is bounded relative to the magnitude.
    assert np.all(err <= np.abs(x) / 16 + 16)
    tone = synthesize_tone(200)
    noise = decode(encode(tone)).astype(np.float64) - tone
    snr_db = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr_db > 30


@pytest.mark.parametrize(
    ("encode", "decode", "expected_stable"),
    [(mulaw_encode, mulaw_decode, 255), (alaw_encode, alaw_decode, 256)],
)
def test_g711_codes_are_stable(encode: Codec, decode: Codec, expected_stable: int) -> None:
    codes = np.arange(256, dtype=np.uint8)
    # Every code decodes to a value that encodes back to it (mu-law's "negative zero"
    # 0x7F is the only alias: it decodes to 0, which encodes as 0xFF).
    assert int(np.sum(encode(decode(codes)) == codes)) == expected_stable


def test_pcm16_bytes_round_trip_and_clipping() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    data = pcm16_to_bytes(samples)
    assert data == b"\x00\x00\x01\x00\xff\xff\xff\x7f\x00\x80"
    assert bytes_to_pcm16(data).tolist() == samples.tolist()
    assert bytes_to_pcm16(data + b"\x01").size == 5  # trailing odd byte ignored
    assert pcm16_to_bytes(np.array([40000, -40000])) == b"\xff\x7f\x00\x80"


@pytest.mark.parametrize("name", sorted(AUDIO_FORMATS))
def test_format_codec_and_durations(name: str) -> None:
    fmt = AUDIO_FORMATS[name]
    tone = synthesize_tone(100, fmt.sample_rate)
    wire = encode_from_pcm16(tone, fmt)
    assert len(wire) == fmt.bytes_for_ms(100)
    assert duration_ms(len(wire), fmt) == pytest.approx(100.0)
    back = decode_to_pcm16(wire, fmt)
    assert back.size == tone.size
    assert rms(back) == pytest.approx(rms(tone), rel=0.05)
    expected_rate = PCM_SAMPLE_RATE if name == "audio/pcm" else G711_SAMPLE_RATE
    assert fmt.sample_rate == expected_rate
    assert fmt.wire()["type"] == name


def test_tone_is_deterministic_quiet_and_sized() -> None:
    a = synthesize_tone(250)
    b = synthesize_tone(250)
    assert a.dtype == np.int16
    assert a.size == 6000
    assert np.array_equal(a, b)
    assert 0 < int(np.max(np.abs(a))) <= 3277  # ~0.1 full scale
    assert rms(a) == pytest.approx(0.1 / np.sqrt(2), rel=0.05)
    assert a[0] == 0  # fade-in starts from silence
    assert synthesize_tone(0).size == 0
    assert synthesize_tone(10, G711_SAMPLE_RATE).size == 80


def test_chunking() -> None:
    tone = synthesize_tone(130)
    chunks = chunk_samples(tone, PCM_SAMPLE_RATE, 40)
    assert [c.size for c in chunks] == [960, 960, 960, 240]
    assert np.array_equal(np.concatenate(chunks), tone)
    empty = chunk_samples(tone[:0], PCM_SAMPLE_RATE, 40)
    assert len(empty) == 1 and empty[0].size == 0


def test_rms_levels() -> None:
    assert rms(np.zeros(100, dtype=np.int16)) == 0.0
    assert rms(np.zeros(0, dtype=np.int16)) == 0.0
    square = np.array([-32768, 32767] * 50, dtype=np.int16)
    assert rms(square) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("duration_ms", [0, 1, 9, 40, 41, 130, 1000.7])
@pytest.mark.parametrize("rate", [PCM_SAMPLE_RATE, G711_SAMPLE_RATE])
def test_tone_chunks_equal_the_whole_tone_in_chunks(duration_ms: float, rate: int) -> None:
    count, chunks = tone_chunks(duration_ms, rate, 40)
    expected = chunk_samples(synthesize_tone(duration_ms, rate), rate, 40)
    got = list(chunks)
    assert count == len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(AUDIO_FORMATS))
def test_encoded_tone_chunks_are_the_tone_encoded(name: str) -> None:
    fmt = AUDIO_FORMATS[name]
    cache = EncodedToneCache()
    for duration in (0.0, 3.0, 40.0, 1234.5):
        count, chunks = tone_chunks(duration, fmt.sample_rate, 40)
        expected = [
            (c.size, base64.b64encode(encode_from_pcm16(c, fmt)).decode("ascii")) for c in chunks
        ]
        for _ in range(2):  # computed, then from the cache
            n, encoded = cache.chunks(duration, fmt, 40)
            assert n == count
            assert list(encoded) == expected


def test_encoded_tone_cache_is_bounded_in_bytes() -> None:
    fmt = AUDIO_FORMATS["audio/pcm"]
    chunk_chars = 2560  # 40 ms of 24 kHz PCM16 in base64
    cache = EncodedToneCache(max_bytes=10 * chunk_chars)
    for duration in (5000.0, 5000.0, 7000.0):
        _, chunks = cache.chunks(duration, fmt, 40)
        for _ in chunks:
            assert cache.size_bytes <= cache.max_bytes
    assert 0 < len(cache) <= 10
    # A chunk above an eighth of the bound is never kept.
    small = EncodedToneCache(max_bytes=8 * chunk_chars - 1)
    assert len(list(small.chunks(400.0, fmt, 40)[1])) == 10
    assert len(small) == 0 and small.size_bytes == 0
    with pytest.raises(ValueError):
        EncodedToneCache(max_bytes=0)
