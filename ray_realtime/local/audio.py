"""Pure numpy audio helpers for the offline local realtime model.

Everything here is deterministic and free of I/O so it can be unit tested and reused:

* PCM16: signed 16-bit little-endian mono samples. The Realtime API's ``audio/pcm``
  format is always 24 kHz (:data:`PCM_SAMPLE_RATE`).
* G.711 μ-law (``audio/pcmu``) and A-law (``audio/pcma``): one byte per sample at
  8 kHz (:data:`G711_SAMPLE_RATE`), as on telephony links. Encoding and decoding are
  implemented with vectorised numpy (the standard library ``audioop`` module is
  deprecated and removed in Python 3.13).
* :func:`synthesize_tone` produces the local model's "voice": a quiet sine tone whose
  length encodes the length of the reply text.
* :func:`rms` measures energy for the energy-based VAD.
"""

from __future__ import annotations

import binascii
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIO_FORMATS",
    "G711_SAMPLE_RATE",
    "PCM_SAMPLE_RATE",
    "AudioFormat",
    "AudioFormatName",
    "EncodedToneCache",
    "alaw_decode",
    "alaw_encode",
    "bytes_to_pcm16",
    "chunk_samples",
    "decode_to_pcm16",
    "duration_ms",
    "encode_from_pcm16",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_to_bytes",
    "rms",
    "synthesize_tone",
    "tone_chunks",
]

PCM_SAMPLE_RATE = 24_000
"""Sample rate of the Realtime API ``audio/pcm`` format."""

G711_SAMPLE_RATE = 8_000
"""Sample rate of the G.711 formats ``audio/pcmu`` and ``audio/pcma``."""

AudioFormatName = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class AudioFormat:
    """Wire audio format: its Realtime type name, sample rate and bytes per sample."""

    name: AudioFormatName
    sample_rate: int
    bytes_per_sample: int

    def bytes_for_ms(self, ms: float) -> int:
        """Number of wire bytes holding ``ms`` milliseconds (whole samples, rounded down)."""
        return int(ms * self.sample_rate // 1000) * self.bytes_per_sample

    def wire(self) -> dict[str, object]:
        """The format object as it appears in session and response JSON."""
        if self.name == "audio/pcm":
            return {"type": "audio/pcm", "rate": self.sample_rate}
        return {"type": self.name}


AUDIO_FORMATS: dict[str, AudioFormat] = {
    "audio/pcm": AudioFormat("audio/pcm", PCM_SAMPLE_RATE, 2),
    "audio/pcmu": AudioFormat("audio/pcmu", G711_SAMPLE_RATE, 1),
    "audio/pcma": AudioFormat("audio/pcma", G711_SAMPLE_RATE, 1),
}
"""The supported wire formats, keyed by their Realtime ``type`` string."""


def bytes_to_pcm16(data: bytes) -> Int16Array:
    """Interpret little-endian PCM16 bytes as samples (a trailing odd byte is ignored)."""
    usable = len(data) - (len(data) % 2)
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def pcm16_to_bytes(samples: npt.NDArray[np.integer]) -> bytes:
    """Serialise samples as little-endian PCM16 bytes (values are clipped to int16)."""
    clipped = np.clip(np.asarray(samples, dtype=np.int64), -32768, 32767)
    return clipped.astype("<i2").tobytes()


# --- G.711 μ-law -------------------------------------------------------------------------
# Classic 16-bit formulation: add a bias of 0x84 to the magnitude so that every segment
# starts on a power of two, then the segment (exponent) is simply bit_length - 8.
_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635


def mulaw_encode(samples: npt.NDArray[np.integer]) -> UInt8Array:
    """Encode PCM16 samples to G.711 μ-law bytes."""
    x = np.asarray(samples, dtype=np.int32)
    sign = (x < 0).astype(np.int32)
    magnitude = np.minimum(np.abs(x), _MULAW_CLIP) + _MULAW_BIAS
    # frexp gives the exact bit length for integers, avoiding float log2 rounding issues.
    _, bit_length = np.frexp(magnitude.astype(np.float64))
    exponent = bit_length.astype(np.int32) - 8
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = (sign << 7) | (exponent << 4) | mantissa
    return (~code & 0xFF).astype(np.uint8)


def mulaw_decode(data: bytes | npt.NDArray[np.uint8]) -> Int16Array:
    """Decode G.711 μ-law bytes to PCM16 samples."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    u = (~raw.astype(np.int32)) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


# --- G.711 A-law -------------------------------------------------------------------------
# Works on the 13-bit magnitude (sample >> 3). Segment 0 and 1 share the same step size,
# higher segments double it; even bits are inverted on the wire (XOR 0x55).
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def alaw_encode(samples: npt.NDArray[np.integer]) -> UInt8Array:
    """Encode PCM16 samples to G.711 A-law bytes."""
    x = np.asarray(samples, dtype=np.int32) >> 3
    positive = x >= 0
    mask = np.where(positive, 0xD5, 0x55)
    magnitude = np.where(positive, x, -x - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left").astype(np.int32)
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    # Magnitudes beyond the last segment saturate to the largest code.
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def alaw_decode(data: bytes | npt.NDArray[np.uint8]) -> Int16Array:
    """Decode G.711 A-law bytes to PCM16 samples."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    a = raw.astype(np.int32) ^ 0x55
    mantissa = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    base = np.where(segment == 0, mantissa + 8, mantissa + 0x108)
    magnitude = np.where(segment > 1, base << np.maximum(segment - 1, 0), base)
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


def decode_to_pcm16(data: bytes, fmt: AudioFormat) -> Int16Array:
    """Decode wire bytes in ``fmt`` to PCM16 samples at ``fmt.sample_rate``."""
    if fmt.name == "audio/pcmu":
        return mulaw_decode(data)
    if fmt.name == "audio/pcma":
        return alaw_decode(data)
    return bytes_to_pcm16(data)


def encode_from_pcm16(samples: npt.NDArray[np.integer], fmt: AudioFormat) -> bytes:
    """Encode PCM16 samples (already at ``fmt.sample_rate``) to wire bytes in ``fmt``."""
    if fmt.name == "audio/pcmu":
        return mulaw_encode(samples).tobytes()
    if fmt.name == "audio/pcma":
        return alaw_encode(samples).tobytes()
    return pcm16_to_bytes(samples)


def duration_ms(n_bytes: int, fmt: AudioFormat) -> float:
    """Duration in milliseconds of ``n_bytes`` of wire audio in ``fmt``."""
    return (n_bytes // fmt.bytes_per_sample) * 1000.0 / fmt.sample_rate


def rms(samples: npt.NDArray[np.integer]) -> float:
    """Root-mean-square level of PCM16 samples as a fraction of full scale (0.0 .. ~1.0)."""
    if samples.size == 0:
        return 0.0
    x = samples.astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(x * x)))


TONE_FREQUENCY_HZ = 440.0
TONE_AMPLITUDE = 0.1
"""Peak amplitude of the synthesized tone (fraction of full scale, about -23 dBFS RMS).

Quiet enough to be harmless if played, loud enough to trip the VAD at its default
threshold, which lets tests feed the model's own audio back in as "speech".
"""


def synthesize_tone(
    duration_ms: float,
    sample_rate: int = PCM_SAMPLE_RATE,
    *,
    frequency_hz: float = TONE_FREQUENCY_HZ,
    amplitude: float = TONE_AMPLITUDE,
    fade_ms: float = 5.0,
) -> Int16Array:
    """Deterministic sine tone of ``duration_ms`` at ``sample_rate`` as PCM16 samples.

    A short linear fade in/out avoids clicks at the edges. The same arguments always
    produce bit-identical output.
    """
    n = max(0, round(duration_ms * sample_rate / 1000.0))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = amplitude * np.sin(2.0 * math.pi * frequency_hz * t)
    fade_n = min(n // 2, int(fade_ms * sample_rate / 1000.0))
    if fade_n > 0:
        ramp = np.linspace(0.0, 1.0, fade_n, endpoint=False)
        wave[:fade_n] *= ramp
        wave[n - fade_n :] *= ramp[::-1]
    return np.round(wave * 32767.0).astype(np.int16)


def tone_chunks(
    duration_ms: float,
    sample_rate: int,
    chunk_ms: int,
    *,
    frequency_hz: float = TONE_FREQUENCY_HZ,
    amplitude: float = TONE_AMPLITUDE,
    fade_ms: float = 5.0,
) -> tuple[int, Iterator[Int16Array]]:
    """:func:`synthesize_tone` in consecutive chunks of ``chunk_ms``: ``(count, chunks)``.

    The concatenated chunks are bit-identical to ``synthesize_tone(duration_ms, ...)``,
    but each chunk is computed when it is taken, so memory stays at one chunk whatever
    the duration. ``count`` is the number of chunks (at least one, possibly empty, as
    :func:`chunk_samples`).
    """
    plan = _ToneShape(duration_ms, sample_rate, chunk_ms, frequency_hz, amplitude, fade_ms)
    return plan.count, (plan.chunk(index) for index in range(plan.count))


class _ToneShape:
    """One tone of a given length, cut in chunks: chunk ``index`` is computed alone
    (what :func:`tone_chunks` yields; :class:`EncodedToneCache` caches it encoded)."""

    def __init__(
        self,
        duration_ms: float,
        sample_rate: int,
        chunk_ms: int,
        frequency_hz: float = TONE_FREQUENCY_HZ,
        amplitude: float = TONE_AMPLITUDE,
        fade_ms: float = 5.0,
    ) -> None:
        self.n = max(0, round(duration_ms * sample_rate / 1000.0))
        self.sample_rate = sample_rate
        self.per_chunk = max(1, sample_rate * chunk_ms // 1000)
        self.count = max(1, -(-self.n // self.per_chunk))
        self.frequency_hz = frequency_hz
        self.amplitude = amplitude
        self.fade_n = min(self.n // 2, int(fade_ms * sample_rate / 1000.0))

    def chunk(self, index: int) -> Int16Array:
        """The samples of chunk ``index`` (``0 <= index < count``)."""
        n, fade_n = self.n, self.fade_n
        start = index * self.per_chunk
        end = min(n, start + self.per_chunk)
        t = np.arange(start, end, dtype=np.float64) / self.sample_rate
        wave = self.amplitude * np.sin(2.0 * math.pi * self.frequency_hz * t)
        if fade_n > 0:
            # The fade-in covers samples [0, fade_n), the fade-out [n - fade_n, n); the
            # ramp is the one synthesize_tone uses, so chunks join bit-identically.
            lo, hi = start, min(end, fade_n)
            if lo < hi:
                ramp = np.linspace(0.0, 1.0, fade_n, endpoint=False)
                wave[lo - start : hi - start] *= ramp[lo:hi]
            fade_out = n - fade_n
            lo, hi = max(start, fade_out), end
            if lo < hi:
                fall = np.linspace(0.0, 1.0, fade_n, endpoint=False)[::-1]
                wave[lo - start : hi - start] *= fall[lo - fade_out : hi - fade_out]
        result: Int16Array = np.round(wave * 32767.0).astype(np.int16)
        return result


class EncodedToneCache:
    """Chunks of :func:`tone_chunks` already encoded in a wire format and in base64,
    as ``response.output_audio.delta`` carries them, bounded in bytes.

    Every reply of the same length has the same chunks (the tone is deterministic), so
    a server streaming many such replies encodes each chunk once: a chunk is a
    dictionary lookup instead of a synthesis, an encoding and a base64 pass. The least
    recently used chunks are dropped beyond ``max_bytes`` (of base64 text); a chunk
    larger than an eighth of it is not kept at all.
    """

    def __init__(self, max_bytes: int = 8 << 20) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._bytes = 0
        self._chunks: OrderedDict[tuple[object, ...], tuple[int, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def size_bytes(self) -> int:
        """Base64 characters held."""
        return self._bytes

    def chunks(
        self, duration_ms: float, fmt: AudioFormat, chunk_ms: int
    ) -> tuple[int, Iterator[tuple[int, str]]]:
        """``(count, chunks)`` of a tone of ``duration_ms`` in ``fmt``: each chunk as
        ``(samples, base64 of its wire bytes)``, the same audio as
        ``encode_from_pcm16`` of each chunk of :func:`tone_chunks`."""
        shape = _ToneShape(duration_ms, fmt.sample_rate, chunk_ms)
        key = (fmt.name, fmt.sample_rate, chunk_ms, shape.n)
        return shape.count, (self._chunk(shape, fmt, key, i) for i in range(shape.count))

    def _chunk(
        self, shape: _ToneShape, fmt: AudioFormat, key: tuple[object, ...], index: int
    ) -> tuple[int, str]:
        full_key = (*key, index)
        hit = self._chunks.get(full_key)
        if hit is not None:
            self._chunks.move_to_end(full_key)
            return hit
        samples = shape.chunk(index)
        encoded = binascii.b2a_base64(encode_from_pcm16(samples, fmt), newline=False)
        entry = (int(samples.size), encoded.decode("ascii"))
        size = len(entry[1])
        if size * 8 <= self.max_bytes:
            self._chunks[full_key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._chunks.popitem(last=False)
                self._bytes -= len(dropped)
        return entry


def chunk_samples(samples: Int16Array, sample_rate: int, chunk_ms: int) -> list[Int16Array]:
    """Split samples into consecutive chunks of ``chunk_ms`` (the last may be shorter).

    Always returns at least one chunk, possibly empty, so callers can rely on a non-empty
    list even for zero-length audio.
    """
    per_chunk = max(1, sample_rate * chunk_ms // 1000)
    chunks = [samples[i : i + per_chunk] for i in range(0, samples.size, per_chunk)]
    return chunks or [samples[:0]]
