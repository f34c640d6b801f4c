"""Session configuration of a local model connection and ``session.update`` parsing.

A :class:`SessionConfig` holds the effective configuration; :meth:`SessionConfig.updated`
validates a ``session.update`` payload completely before returning a new config, so a
rejected update changes nothing. :meth:`SessionConfig.wire` renders the full session as
sent in ``session.created`` / ``session.updated``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .audio import AUDIO_FORMATS, PCM_SAMPLE_RATE, AudioFormat
from .protocol import (
    ProtocolError,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_str,
    reject_unknown,
)
from .vad import DEFAULT_PREFIX_PADDING_MS, DEFAULT_SILENCE_DURATION_MS, DEFAULT_THRESHOLD

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_MODEL",
    "DEFAULT_VOICE",
    "MAX_TOOLS",
    "SessionConfig",
    "TurnDetection",
    "parse_audio_format",
    "parse_max_output_tokens",
    "parse_output_modalities",
    "parse_tool_choice",
    "parse_tools",
]

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
DEFAULT_INSTRUCTIONS = "You are the offline ray-realtime local model."
MAX_TOOLS = 128
MAX_INSTRUCTIONS_CHARS = 100_000
TOOL_NAME_PATTERN = r"[A-Za-z0-9_\-]{1,64}"

# semantic_vad is approximated by the energy VAD; eagerness picks the silence duration.
_EAGERNESS_SILENCE_MS = {"low": 800, "medium": 500, "auto": 500, "high": 250}
Eagerness = Literal["low", "medium", "high", "auto"]
_EAGERNESS: dict[str, Eagerness] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "auto": "auto",
}


@dataclass(frozen=True)
class TurnDetection:
    """Turn detection settings (``server_vad``, or ``semantic_vad`` approximated by energy)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    eagerness: Eagerness = "auto"

    def wire(self) -> dict[str, Any]:
        """The turn detection object as sent to clients."""
        if self.type == "semantic_vad":
            return {
                "type": "semantic_vad",
                "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


def parse_turn_detection(value: object, param: str) -> TurnDetection | None:
    """Parse ``audio.input.turn_detection`` (``null`` disables turn detection)."""
    if value is None:
        return None
    obj = expect_dict(value, param)
    kind = obj.get("type")
    if kind == "server_vad":
        reject_unknown(
            obj,
            (
                "type",
                "threshold",
                "prefix_padding_ms",
                "silence_duration_ms",
                "create_response",
                "interrupt_response",
                "idle_timeout_ms",
                "model_version",  # accepted, not implemented
            ),
            param,
        )
        td = TurnDetection()
        if obj.get("threshold") is not None:
            td = replace(
                td,
                threshold=expect_number(
                    obj["threshold"], f"{param}.threshold", minimum=0, maximum=1
                ),
            )
        if obj.get("prefix_padding_ms") is not None:
            td = replace(
                td,
                prefix_padding_ms=expect_int(
                    obj["prefix_padding_ms"],
                    f"{param}.prefix_padding_ms",
                    minimum=0,
                    maximum=10_000,
                ),
            )
        if obj.get("silence_duration_ms") is not None:
            td = replace(
                td,
                silence_duration_ms=expect_int(
                    obj["silence_duration_ms"],
                    f"{param}.silence_duration_ms",
                    minimum=0,
                    maximum=10_000,
                ),
            )
        if obj.get("idle_timeout_ms") is not None:
            td = replace(
                td,
                idle_timeout_ms=expect_int(
                    obj["idle_timeout_ms"],
                    f"{param}.idle_timeout_ms",
                    minimum=0,
                    maximum=3_600_000,
                ),
            )
    elif kind == "semantic_vad":
        reject_unknown(
            obj,
            ("type", "eagerness", "create_response", "interrupt_response", "model_version"),
            param,
        )
        eagerness = _EAGERNESS.get(str(obj.get("eagerness") or "auto"))
        if eagerness is None:
            raise ProtocolError(
                "invalid_value", f"Invalid '{param}.eagerness'.", f"{param}.eagerness"
            )
        td = TurnDetection(
            type="semantic_vad",
            eagerness=eagerness,
            silence_duration_ms=_EAGERNESS_SILENCE_MS[eagerness],
        )
    else:
        raise ProtocolError(
            "invalid_value",
            f"Invalid '{param}.type': expected 'server_vad' or 'semantic_vad'.",
            f"{param}.type",
        )
    if obj.get("create_response") is not None:
        td = replace(
            td, create_response=expect_bool(obj["create_response"], f"{param}.create_response")
        )
    if obj.get("interrupt_response") is not None:
        td = replace(
            td,
            interrupt_response=expect_bool(
                obj["interrupt_response"], f"{param}.interrupt_response"
            ),
        )
    return td


def parse_audio_format(value: object, param: str) -> AudioFormat:
    """Parse an audio format object (``audio/pcm`` at 24000 Hz, ``audio/pcmu``, ``audio/pcma``)."""
    obj = expect_dict(value, param)
    reject_unknown(obj, ("type", "rate"), param)
    kind = obj.get("type", "audio/pcm")
    fmt = AUDIO_FORMATS.get(kind) if isinstance(kind, str) else None
    if fmt is None:
        raise ProtocolError(
            "invalid_value",
            f"Invalid '{param}.type': expected one of {sorted(AUDIO_FORMATS)}.",
            f"{param}.type",
        )
    if "rate" in obj and obj["rate"] is not None:
        if fmt.name != "audio/pcm" or expect_int(obj["rate"], f"{param}.rate") != PCM_SAMPLE_RATE:
            raise ProtocolError(
                "invalid_value",
                f"Invalid '{param}.rate': only 24000 is supported for audio/pcm.",
                f"{param}.rate",
            )
    return fmt


def parse_tools(value: object, param: str) -> list[dict[str, Any]]:
    """Parse a list of function tools into their wire form."""
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, raw in enumerate(expect_list(value, param, max_len=MAX_TOOLS)):
        p = f"{param}[{i}]"
        obj = expect_dict(raw, p)
        if obj.get("type", "function") != "function":
            raise ProtocolError(
                "unsupported_tool",
                f"Invalid '{p}.type': only function tools are supported.",
                f"{p}.type",
            )
        reject_unknown(obj, ("type", "name", "description", "parameters"), p)
        name = expect_str(obj.get("name"), f"{p}.name", pattern=TOOL_NAME_PATTERN)
        if name in names:
            raise ProtocolError("duplicate_tool", f"Duplicate tool name '{name}'.", f"{p}.name")
        names.add(name)
        tool: dict[str, Any] = {"type": "function", "name": name}
        if obj.get("description") is not None:
            tool["description"] = expect_str(obj["description"], f"{p}.description")
        if obj.get("parameters") is not None:
            tool["parameters"] = copy.deepcopy(expect_dict(obj["parameters"], f"{p}.parameters"))
        tools.append(tool)
    return tools


def parse_tool_choice(value: object, param: str) -> str | dict[str, Any]:
    """Parse ``tool_choice``: ``none``/``auto``/``required`` or a forced function."""
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise ProtocolError("invalid_value", f"Invalid '{param}': {value!r}.", param)
        return value
    obj = expect_dict(value, param)
    reject_unknown(obj, ("type", "name"), param)
    if obj.get("type") != "function":
        raise ProtocolError(
            "invalid_value",
            f"Invalid '{param}.type': only 'function' is supported.",
            f"{param}.type",
        )
    return {"type": "function", "name": expect_str(obj.get("name"), f"{param}.name")}


def parse_output_modalities(value: object, param: str) -> list[str]:
    """Parse ``output_modalities``: exactly one of ``["audio"]`` or ``["text"]``."""
    items = expect_list(value, param)
    if len(items) != 1 or items[0] not in ("audio", "text"):
        raise ProtocolError(
            "invalid_value", f'Invalid \'{param}\': expected ["audio"] or ["text"].', param
        )
    return [str(items[0])]


def parse_max_output_tokens(value: object, param: str) -> int | str:
    """Parse ``max_output_tokens``: an integer 1..4096 or ``"inf"``."""
    if value == "inf":
        return "inf"
    return expect_int(value, param, minimum=1, maximum=4096)


def _parse_voice(value: object, param: str) -> str:
    if isinstance(value, dict):
        return expect_str(value.get("id"), f"{param}.id", max_len=128)
    return expect_str(value, param, max_len=128)


@dataclass
class SessionConfig:
    """The effective configuration of one realtime session."""

    id: str
    model: str = DEFAULT_MODEL
    instructions: str = DEFAULT_INSTRUCTIONS
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | str = "inf"
    input_format: AudioFormat = AUDIO_FORMATS["audio/pcm"]
    output_format: AudioFormat = AUDIO_FORMATS["audio/pcm"]
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    voice: str = DEFAULT_VOICE
    speed: float = 1.0
    tracing: str | dict[str, Any] | None = None
    truncation: str | dict[str, Any] = "auto"

    def wire(self) -> dict[str, Any]:
        """The full session object for ``session.created`` / ``session.updated``.

        Shares the config's values (never copied: a config's values are replaced, not
        changed, and the result is serialised at once), so echoing a session costs one
        serialisation however large its tools are.
        """
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "tracing": self.tracing,
            "truncation": self.truncation,
            "audio": {
                "input": {
                    "format": self.input_format.wire(),
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": self.turn_detection.wire() if self.turn_detection else None,
                },
                "output": {
                    "format": self.output_format.wire(),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
        }

    def updated(self, session: object, *, voice_locked: bool) -> SessionConfig:
        """A new config with ``session`` (a ``session.update`` payload) applied.

        Raises :class:`ProtocolError` without side effects when anything is invalid.
        ``model`` is accepted but ignored (it is fixed at connect time, as in the real
        service); the voice cannot change once audio has been produced.
        """
        obj = expect_dict(session, "session")
        reject_unknown(
            obj,
            (
                "type",
                "model",
                "instructions",
                "tools",
                "tool_choice",
                "output_modalities",
                "max_output_tokens",
                "audio",
                "tracing",
                "truncation",
                "include",
                "prompt",
                "reasoning",
                "parallel_tool_calls",
            ),
            "session",
        )
        if obj.get("type") != "realtime":
            raise ProtocolError(
                "invalid_value" if "type" in obj else "missing_required_parameter",
                "Invalid 'session.type': only 'realtime' sessions are supported.",
                "session.type",
            )
        new = replace(self)
        if "model" in obj:
            expect_str(obj["model"], "session.model", max_len=256)
        if "instructions" in obj:
            new.instructions = expect_str(
                obj["instructions"], "session.instructions", max_len=MAX_INSTRUCTIONS_CHARS
            )
        if "tools" in obj:
            new.tools = parse_tools(obj["tools"], "session.tools")
        if "tool_choice" in obj:
            new.tool_choice = parse_tool_choice(obj["tool_choice"], "session.tool_choice")
        if "output_modalities" in obj:
            new.output_modalities = parse_output_modalities(
                obj["output_modalities"], "session.output_modalities"
            )
        if "max_output_tokens" in obj:
            new.max_output_tokens = parse_max_output_tokens(
                obj["max_output_tokens"], "session.max_output_tokens"
            )
        if "tracing" in obj:
            tracing = obj["tracing"]
            if tracing is not None and tracing != "auto":
                tracing = copy.deepcopy(expect_dict(tracing, "session.tracing"))
                reject_unknown(
                    tracing, ("workflow_name", "group_id", "metadata"), "session.tracing"
                )
            new.tracing = tracing
        if "truncation" in obj:
            truncation = obj["truncation"]
            if truncation not in ("auto", "disabled"):
                truncation = copy.deepcopy(expect_dict(truncation, "session.truncation"))
                if truncation.get("type") != "retention_ratio":
                    raise ProtocolError(
                        "invalid_value", "Invalid 'session.truncation'.", "session.truncation"
                    )
                expect_number(
                    truncation.get("retention_ratio"),
                    "session.truncation.retention_ratio",
                    minimum=0,
                    maximum=1,
                )
            new.truncation = truncation
        if "audio" in obj:
            self._apply_audio(new, expect_dict(obj["audio"], "session.audio"), voice_locked)
        return new

    def _apply_audio(self, new: SessionConfig, audio: dict[str, Any], voice_locked: bool) -> None:
        reject_unknown(audio, ("input", "output"), "session.audio")
        if audio.get("input") is not None:
            inp = expect_dict(audio["input"], "session.audio.input")
            p = "session.audio.input"
            reject_unknown(inp, ("format", "transcription", "noise_reduction", "turn_detection"), p)
            if inp.get("format") is not None:
                new.input_format = parse_audio_format(inp["format"], f"{p}.format")
            if "turn_detection" in inp:
                new.turn_detection = parse_turn_detection(
                    inp["turn_detection"], f"{p}.turn_detection"
                )
            if "transcription" in inp:
                new.transcription = self._parse_transcription(
                    inp["transcription"], f"{p}.transcription"
                )
            if "noise_reduction" in inp:
                nr = inp["noise_reduction"]
                if nr is not None:
                    nr = copy.deepcopy(expect_dict(nr, f"{p}.noise_reduction"))
                    reject_unknown(nr, ("type", "strength"), f"{p}.noise_reduction")
                    if nr.get("type") not in (None, "near_field", "far_field"):
                        raise ProtocolError(
                            "invalid_value",
                            f"Invalid '{p}.noise_reduction.type'.",
                            f"{p}.noise_reduction.type",
                        )
                new.noise_reduction = nr
        if audio.get("output") is not None:
            out = expect_dict(audio["output"], "session.audio.output")
            p = "session.audio.output"
            reject_unknown(out, ("format", "voice", "speed"), p)
            if out.get("format") is not None:
                new.output_format = parse_audio_format(out["format"], f"{p}.format")
            if out.get("voice") is not None:
                voice = _parse_voice(out["voice"], f"{p}.voice")
                if voice != self.voice and voice_locked:
                    raise ProtocolError(
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        f"{p}.voice",
                    )
                new.voice = voice
            if out.get("speed") is not None:
                new.speed = expect_number(out["speed"], f"{p}.speed", minimum=0.25, maximum=1.5)

    @staticmethod
    def _parse_transcription(value: object, param: str) -> dict[str, Any] | None:
        if value is None:
            return None
        obj = copy.deepcopy(expect_dict(value, param))
        reject_unknown(
            obj, ("model", "language", "languages", "prompt", "delay", "keywords"), param
        )
        for key in ("model", "language", "prompt", "delay"):
            if obj.get(key) is not None:
                expect_str(obj[key], f"{param}.{key}", max_len=10_000)
        for key in ("languages", "keywords"):
            if obj.get(key) is not None:
                for i, v in enumerate(expect_list(obj[key], f"{param}.{key}", max_len=100)):
                    expect_str(v, f"{param}.{key}[{i}]", max_len=1000)
        return obj
