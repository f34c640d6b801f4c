"""Pure energy-based voice activity detection (the local model's ``server_vad``).

The detector consumes PCM16 audio in fixed frames of :data:`FRAME_MS` milliseconds and
compares each frame's RMS level with a threshold:

* **Threshold mapping.** The Realtime ``threshold`` (0.0 .. 1.0, default 0.5) maps
  linearly onto a level in dBFS between -60 dBFS (0.0) and -10 dBFS (1.0)::

      level_dbfs = -60 + 50 * threshold        # 0.5 -> -35 dBFS
      rms_level  = 10 ** (level_dbfs / 20)     # fraction of full scale, 0.5 -> ~0.0178

  A frame whose RMS (see :func:`ray_realtime.local.audio.rms`) is ``>= rms_level`` is
  "voiced". Digital silence and quiet noise stay below the default level; ordinary
  speech (and the local model's own tone, about -23 dBFS) is above it.
* **Speech start.** The first voiced frame while idle starts speech. The reported
  ``audio_start_ms`` is the frame start minus ``prefix_padding_ms``, but never earlier
  than the end of the previous speech segment (or the last :meth:`EnergyVad.reset`).
* **Speech stop.** While speaking, a run of unvoiced frames lasting at least
  ``silence_duration_ms`` stops speech; ``audio_end_ms`` is the end of the frame that
  completed the run, i.e. it *includes* the trailing silence, as in the real service.

Milliseconds are measured on the session audio timeline: the detector is created with a
``start_ms`` and every fed sample advances it, whether or not speech is present. Samples
that do not fill a whole frame are kept until the next :meth:`EnergyVad.feed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .audio import PCM_SAMPLE_RATE, rms

__all__ = [
    "DEFAULT_PREFIX_PADDING_MS",
    "DEFAULT_SILENCE_DURATION_MS",
    "DEFAULT_THRESHOLD",
    "FRAME_MS",
    "EnergyVad",
    "VadEvent",
    "threshold_to_rms",
]

FRAME_MS = 20
"""Analysis frame length in milliseconds."""

DEFAULT_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 500

_MIN_DBFS = -60.0
_MAX_DBFS = -10.0


def threshold_to_rms(threshold: float) -> float:
    """Map a Realtime VAD ``threshold`` (clamped to 0..1) to an RMS level (full scale = 1)."""
    t = min(1.0, max(0.0, threshold))
    dbfs = _MIN_DBFS + (_MAX_DBFS - _MIN_DBFS) * t
    return float(10.0 ** (dbfs / 20.0))


@dataclass(frozen=True)
class VadEvent:
    """A VAD decision with its timeline ms (audio_start_ms or audio_end_ms)."""

    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int


class EnergyVad:
    """Frame-based energy VAD with prefix padding and silence hang-over.

    Pure and synchronous: :meth:`feed` returns the decisions caused by the given audio.
    """

    def __init__(
        self,
        *,
        sample_rate: int = PCM_SAMPLE_RATE,
        threshold: float = DEFAULT_THRESHOLD,
        prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS,
        silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS,
        start_ms: float = 0.0,
    ) -> None:
        if sample_rate <= 0 or (sample_rate * FRAME_MS) % 1000:
            raise ValueError(f"sample_rate must give whole {FRAME_MS} ms frames: {sample_rate}")
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.level = threshold_to_rms(threshold)
        self.prefix_padding_ms = max(0, prefix_padding_ms)
        self.silence_duration_ms = max(0, silence_duration_ms)
        self._frame_samples = sample_rate * FRAME_MS // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self._position_ms = float(start_ms)
        self._floor_ms = float(start_ms)
        self._in_speech = False
        self._silence_ms = 0.0

    @property
    def position_ms(self) -> float:
        """Timeline position at the end of the last complete frame analysed."""
        return self._position_ms

    @property
    def in_speech(self) -> bool:
        """Whether speech has started and not yet stopped."""
        return self._in_speech

    def keep_from_ms(self) -> float:
        """Earliest timeline ms a future ``speech_started`` could report.

        While idle, callers may discard buffered audio before this point: it can never
        become part of a speech segment.
        """
        if self._in_speech:
            return self._floor_ms
        return max(self._floor_ms, self._position_ms - self.prefix_padding_ms)

    def reset(self) -> None:
        """Forget any speech in progress (e.g. after a manual commit or a buffer clear).

        The timeline keeps running and the next segment cannot start before this point.
        """
        self._in_speech = False
        self._silence_ms = 0.0
        self._floor_ms = self._position_ms

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Analyse more PCM16 samples and return the decisions they trigger, in order."""
        data = np.asarray(samples, dtype=np.int16)
        if self._pending.size:
            data = np.concatenate([self._pending, data])
        n_frames = data.size // self._frame_samples
        events: list[VadEvent] = []
        for voiced in self._voiced(data, n_frames):
            frame_start = self._position_ms
            self._position_ms += FRAME_MS
            if not self._in_speech:
                if voiced:
                    self._in_speech = True
                    self._silence_ms = 0.0
                    start = max(self._floor_ms, frame_start - self.prefix_padding_ms)
                    events.append(VadEvent("speech_started", round(start)))
                continue
            if voiced:
                self._silence_ms = 0.0
                continue
            self._silence_ms += FRAME_MS
            if self._silence_ms >= self.silence_duration_ms:
                self._in_speech = False
                self._silence_ms = 0.0
                self._floor_ms = self._position_ms
                events.append(VadEvent("speech_stopped", round(self._position_ms)))
        self._pending = data[n_frames * self._frame_samples :].copy()
        return events

    def _voiced(self, data: np.ndarray, n_frames: int) -> list[bool]:
        """Whether each of the first ``n_frames`` frames of ``data`` is voiced: its
        :func:`rms` reaches the level. All frames in one pass (a numpy call per
        frame costs more than the arithmetic), the same sums as :func:`rms`."""
        if n_frames == 0:
            return []
        used = data[: n_frames * self._frame_samples]
        if not used.any():
            # Digital silence (a muted microphone, a padded phone line): every level is
            # 0.0, below any threshold (the lowest maps to -60 dBFS).
            return [False] * n_frames
        if n_frames == 1:
            return [rms(used) >= self.level]
        x = used.astype(np.float64) / 32768.0
        levels = np.sqrt(np.mean((x * x).reshape(n_frames, self._frame_samples), axis=1))
        return (levels >= self.level).tolist()  # type: ignore[no-any-return]
