"""Telephone audio for the gateway: G.711 μ-law at 8 kHz and PCM16 at 24 kHz.

Two ways to carry a phone call's audio to the model:

* ``"passthrough"``: the model is told to speak G.711 μ-law (``g711_ulaw``,
  ``audio/pcmu`` on the wire) in both directions and the gateway forwards the
  caller's bytes untouched. No conversion cost, no added delay, and nothing
  is lost that the telephone line had not already lost.
* ``"resample"``: the model speaks PCM16 at 24 kHz; the gateway decodes μ-law,
  resamples 8 -> 24 kHz on the way in and 24 -> 8 kHz on the way out, and
  encodes μ-law again. For models that accept only PCM16.

The resampler is a polyphase FIR (a Kaiser-windowed sinc, factor 3) that keeps
its history between calls, so 20 ms frames can be converted one at a time
without clicks at the frame edges. Its response is tested: flat to 3.4 kHz,
at least 40 dB down above 4 kHz (the new Nyquist frequency on the way down).
μ-law encode and decode are table lookups (256 entries to decode, 65,536 to
encode), vectorised with numpy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIO_MODES",
    "FILTER_TAPS",
    "AudioMode",
    "CallAudio",
    "Downsampler",
    "Upsampler",
    "design_lowpass",
    "mulaw_decode",
    "mulaw_encode",
]

AudioMode = Literal["passthrough", "resample"]
AUDIO_MODES: tuple[AudioMode, ...] = ("passthrough", "resample")

FACTOR = 3
"""24 kHz / 8 kHz."""

FILTER_TAPS = 123
"""Length of the low-pass filter at 24 kHz (41 taps per polyphase branch). A
600 Hz transition band (3.4 -> 4 kHz) with ~50 dB attenuation needs ~117
taps by Kaiser's formula; 123 is the next multiple of 3. With the cutoff at
3.7 kHz the passband ripple is ~0.03 dB and the stopband ~49 dB down."""

_CUTOFF_HZ = 3_700.0
_KAISER_BETA = 4.8  # 0.1102 * (52 - 8.7): ~52 dB stopband
_RATE = 24_000

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]


def design_lowpass(
    taps: int = FILTER_TAPS, cutoff_hz: float = _CUTOFF_HZ, rate: int = _RATE
) -> FloatArray:
    """A Kaiser-windowed sinc low-pass filter with unit DC gain."""
    n = np.arange(taps) - (taps - 1) / 2
    fc = cutoff_hz / rate
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(taps, _KAISER_BETA)
    return np.asarray(h / h.sum(), dtype=np.float64)


_LOWPASS = design_lowpass()


# -- G.711 μ-law -------------------------------------------------------------

_BIAS = 0x84
_CLIP = 32635


def _build_decode_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # Indexed by the int16 sample viewed as uint16 (two's complement).
    s = np.arange(65536, dtype=np.int32)
    s = np.where(s >= 32768, s - 65536, s)
    sign = np.where(s < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(s), _CLIP) + _BIAS
    # The segment: position of the highest set bit above bit 7.
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return np.asarray(encoded, dtype=np.uint8)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def mulaw_decode(data: bytes) -> Int16Array:
    """G.711 μ-law bytes to int16 samples (8 kHz)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(samples: Int16Array) -> bytes:
    """int16 samples to G.711 μ-law bytes."""
    return bytes(_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes())


def _to_int16(x: FloatArray) -> Int16Array:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


# -- resampling -------------------------------------------------------------


class Upsampler:
    """8 kHz -> 24 kHz, one frame at a time (keeps the filter's history)."""

    def __init__(self, h: FloatArray = _LOWPASS) -> None:
        taps = len(h) - len(h) % FACTOR
        # Branch p computes output sample 3n+p from inputs x[n-k], k = 0..K-1;
        # the gain of 3 restores the level lost to zero stuffing.
        phases = (FACTOR * h[:taps]).reshape(-1, FACTOR)  # [k, p] = h[3k+p]
        self._branches = phases[::-1]  # oldest input first, to dot with windows
        self._history = np.zeros(len(phases) - 1)

    def process(self, samples: Int16Array) -> Int16Array:
        """Resample ``samples`` (8 kHz); returns three times as many (24 kHz)."""
        if len(samples) == 0:
            return np.zeros(0, dtype=np.int16)
        x = np.concatenate([self._history, np.asarray(samples, dtype=np.float64)])
        windows = np.lib.stride_tricks.sliding_window_view(x, len(self._branches))
        y = windows @ self._branches  # [n, p]
        self._history = x[len(x) - len(self._history) :]
        return _to_int16(y.reshape(-1))


class Downsampler:
    """24 kHz -> 8 kHz, one chunk at a time; any chunk length (a remainder
    that does not fill an output sample waits for the next chunk)."""

    def __init__(self, h: FloatArray = _LOWPASS) -> None:
        self._h = h[::-1].copy()
        self._buffer = np.zeros(len(h) - 1)

    def process(self, samples: Int16Array) -> Int16Array:
        """Resample ``samples`` (24 kHz); returns a third as many (8 kHz)."""
        buf = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float64)])
        taps = len(self._h)
        count = (len(buf) - taps) // FACTOR + 1 if len(buf) >= taps else 0
        if count == 0:
            self._buffer = buf
            return np.zeros(0, dtype=np.int16)
        windows = np.lib.stride_tricks.sliding_window_view(buf, taps)[::FACTOR][:count]
        y = windows @ self._h
        self._buffer = buf[FACTOR * count :]
        return _to_int16(y)


class CallAudio:
    """Converts one call's audio between the phone (μ-law 8 kHz) and the model.

    ``mode`` is ``"passthrough"`` (the model speaks ``g711_ulaw``) or
    ``"resample"`` (the model speaks ``pcm16`` at 24 kHz). One instance per
    call and direction pair: the resamplers carry state between frames.
    """

    def __init__(self, mode: AudioMode) -> None:
        if mode not in AUDIO_MODES:
            raise ValueError(f"audio mode must be one of {AUDIO_MODES}, got {mode!r}")
        self.mode: AudioMode = mode
        self._up = Upsampler()
        self._down = Downsampler()

    @property
    def model_format(self) -> str:
        """The model's audio format name in the run config."""
        return "g711_ulaw" if self.mode == "passthrough" else "pcm16"

    def to_model(self, mulaw: bytes) -> bytes:
        """Caller audio (μ-law 8 kHz) in the model's format."""
        if self.mode == "passthrough":
            return mulaw
        return bytes(self._up.process(mulaw_decode(mulaw)).astype("<i2").tobytes())

    def to_phone(self, audio: bytes) -> bytes:
        """Model audio in μ-law 8 kHz for the caller."""
        if self.mode == "passthrough":
            return audio
        # An odd trailing byte cannot be a sample; PCM16 chunks are whole samples.
        pcm = np.frombuffer(audio[: len(audio) - len(audio) % 2], dtype="<i2")
        return mulaw_encode(self._down.process(pcm))

    def model_ms(self, audio: bytes) -> float:
        """Duration of ``audio`` in the model's format, in milliseconds."""
        return len(audio) / (8.0 if self.mode == "passthrough" else 48.0)
