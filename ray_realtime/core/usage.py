"""Usage accounting of a session, with no I/O.

:class:`UsageMeter` sums what a session used — the model's token usage of
each response (``response.done``'s ``usage``, reported as a
:class:`~ray_realtime.types.model_events.RealtimeModelUsageEvent`), the audio
sent and received (bytes turned into seconds with the session's formats) and
the tool calls started — in total and per agent, and hands out frozen
:class:`~ray_realtime.types.events.SessionUsage` snapshots.
:func:`usage_delta` is what grew between two snapshots, per agent (the
session actor turns it into metric increments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ray_realtime.types.events import SessionUsage, UsageTotals
from ray_realtime.types.model_events import RealtimeModelUsageEvent

__all__ = [
    "MAX_AGENTS_KEPT",
    "OTHER_AGENTS",
    "UsageMeter",
    "audio_seconds",
    "response_totals",
    "usage_delta",
]

# Bytes per second of each audio format: PCM16 is 24 kHz x 2 bytes, G.711 is
# 8 kHz x 1 byte. An unknown name counts as PCM16 (what the model assumes).
_BYTES_PER_SECOND: dict[str, float] = {
    "pcm16": 48_000.0,
    "g711_ulaw": 8_000.0,
    "g711_alaw": 8_000.0,
}

MAX_AGENTS_KEPT = 64
"""Agents counted by name in one session; later ones share :data:`OTHER_AGENTS`
(``update_agent`` can bring any number of agents: the table stays bounded)."""

OTHER_AGENTS = "(other)"
"""The ``by_agent`` key of agents past :data:`MAX_AGENTS_KEPT`."""

_FIELDS = tuple(f.name for f in dataclasses.fields(UsageTotals))


def audio_seconds(nbytes: int, audio_format: str) -> float:
    """Seconds of audio in ``nbytes`` bytes of ``audio_format``."""
    return nbytes / _BYTES_PER_SECOND.get(audio_format, _BYTES_PER_SECOND["pcm16"])


def _count(value: Any) -> int:
    # Usage numbers come from the model: anything not a non-negative int is 0.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def response_totals(event: RealtimeModelUsageEvent) -> UsageTotals:
    """The usage of one response as totals (``requests`` is 1)."""
    usage: Mapping[str, Any] = event.usage if isinstance(event.usage, Mapping) else {}
    inp, out = event.input_tokens_details, event.output_tokens_details
    cached = inp.cached_tokens_details if inp is not None else None
    input_tokens = _count(usage.get("input_tokens"))
    output_tokens = _count(usage.get("output_tokens"))
    total = usage.get("total_tokens")
    return UsageTotals(
        requests=1,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_count(total) if total is not None else input_tokens + output_tokens,
        input_text_tokens=_count(inp.text_tokens) if inp else 0,
        input_audio_tokens=_count(inp.audio_tokens) if inp else 0,
        input_image_tokens=_count(inp.image_tokens) if inp else 0,
        cached_tokens=_count(inp.cached_tokens) if inp else 0,
        cached_text_tokens=_count(cached.text_tokens) if cached else 0,
        cached_audio_tokens=_count(cached.audio_tokens) if cached else 0,
        output_text_tokens=_count(out.text_tokens) if out else 0,
        output_audio_tokens=_count(out.audio_tokens) if out else 0,
    )


class _Sums:
    """Mutable sums of the :class:`UsageTotals` fields (audio chunks arrive
    many times a second: adding in place, not copying a frozen value)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[str, float] = dict.fromkeys(_FIELDS, 0)

    def add(self, totals: UsageTotals) -> None:
        for name in _FIELDS:
            self.values[name] += getattr(totals, name)

    def freeze(self) -> dict[str, Any]:
        return dict(self.values)


class UsageMeter:
    """A session's usage, summed in total and per agent."""

    def __init__(self, input_audio_format: str = "pcm16", output_audio_format: str = "pcm16"):
        self._in_format = input_audio_format
        self._out_format = output_audio_format
        self._total = _Sums()
        self._agents: dict[str, _Sums] = {}

    def _both(self, agent: str) -> tuple[_Sums, _Sums]:
        sums = self._agents.get(agent)
        if sums is None:
            if len(self._agents) >= MAX_AGENTS_KEPT:
                agent = OTHER_AGENTS
            sums = self._agents.setdefault(agent, _Sums())
        return self._total, sums

    def add_response(self, agent: str, event: RealtimeModelUsageEvent) -> None:
        """A response of ``agent`` reported its token usage."""
        totals = response_totals(event)
        for sums in self._both(agent):
            sums.add(totals)

    def add_audio_in(self, agent: str, nbytes: int) -> None:
        """``nbytes`` of the user's audio were sent while ``agent`` was active."""
        self._bump(agent, "audio_in_seconds", audio_seconds(nbytes, self._in_format))

    def add_audio_out(self, agent: str, nbytes: int) -> None:
        """``agent``'s response carried ``nbytes`` of output audio."""
        self._bump(agent, "audio_out_seconds", audio_seconds(nbytes, self._out_format))

    def add_tool_call(self, agent: str) -> None:
        """A tool call of ``agent`` started."""
        self._bump(agent, "tool_calls", 1)

    def _bump(self, agent: str, name: str, amount: float) -> None:
        for sums in self._both(agent):
            sums.values[name] += amount

    def snapshot(self) -> SessionUsage:
        """The usage so far, as a frozen value."""
        return SessionUsage(
            **self._total.freeze(),
            by_agent={name: UsageTotals(**s.freeze()) for name, s in self._agents.items()},
        )


def usage_delta(before: SessionUsage | None, after: SessionUsage) -> dict[str, UsageTotals]:
    """Per agent, what grew from ``before`` (``None``: nothing yet) to
    ``after``; agents with no growth are left out."""
    grown: dict[str, UsageTotals] = {}
    old = before.by_agent if before is not None else {}
    zero = UsageTotals()
    for agent, now in after.by_agent.items():
        was = old.get(agent, zero)
        diff = {name: getattr(now, name) - getattr(was, name) for name in _FIELDS}
        if any(v > 0 for v in diff.values()):
            grown[agent] = UsageTotals(**diff)
    return grown
