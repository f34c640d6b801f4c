"""Session model settings -> the GA ``session`` object of a ``session.update``.

Pure; no I/O. Settings may be written in either shape the SDK accepts: the flat
keys (``input_audio_format``, ``voice``, ``turn_detection`` ...) or the GA's
nested ``audio.input`` / ``audio.output``; a nested value wins over its flat
twin. :data:`~ray_realtime.types.config.DEFAULT_MODEL_SETTINGS` fill what
neither gives (input transcription on, semantic VAD that interrupts, the
``ash`` voice, PCM16, audio output), as the SDK's OpenAI model does on every
update. A value of the wrong shape raises
:class:`~ray_realtime.exceptions.ConfigError`, before anything is sent.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ray_realtime.exceptions import ConfigError
from ray_realtime.model.conversion import audio_format_to_protocol
from ray_realtime.types.config import DEFAULT_MODEL_SETTINGS, RealtimeSessionModelSettings

__all__ = [
    "settings_to_session_payload",
    "tool_choice_to_protocol",
    "turn_detection_to_protocol",
]

_COMMON_TURN_DETECTION_KEYS = frozenset(
    {"type", "create_response", "interrupt_response", "model_version"}
)
_TURN_DETECTION_KEYS: dict[str, frozenset[str]] = {
    "server_vad": _COMMON_TURN_DETECTION_KEYS
    | {"idle_timeout_ms", "prefix_padding_ms", "silence_duration_ms", "threshold"},
    "semantic_vad": _COMMON_TURN_DETECTION_KEYS | {"eagerness"},
}
# camelCase spellings (JavaScript-style configs) the SDK also accepts.
_CAMEL_TURN_DETECTION_KEYS = {
    "createResponse": "create_response",
    "interruptResponse": "interrupt_response",
    "prefixPaddingMs": "prefix_padding_ms",
    "silenceDurationMs": "silence_duration_ms",
    "idleTimeoutMs": "idle_timeout_ms",
    "modelVersion": "model_version",
}


def turn_detection_to_protocol(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The GA ``audio.input.turn_detection`` value. ``None`` disables turn
    detection ("This can be set to `null` to turn off, in which case the client
    must manually trigger model response")."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ConfigError(f"turn_detection must be a dict or None, not {type(config).__name__}")
    result = dict(config)
    for camel, snake in _CAMEL_TURN_DETECTION_KEYS.items():
        if camel in result:
            value = result.pop(camel)
            result.setdefault(snake, value)
    # "type" is the protocol's discriminator and required there; the settings
    # allow leaving it out. "eagerness" only exists for semantic VAD.
    kind = result.get("type") or ("semantic_vad" if "eagerness" in result else "server_vad")
    allowed = _TURN_DETECTION_KEYS.get(kind)
    if allowed is None:
        raise ConfigError(
            f"turn_detection.type must be 'server_vad' or 'semantic_vad', got {kind!r}"
        )
    # The server rejects parameters of the other VAD kind, so say so here, where
    # the caller can still fix it, rather than as an error event later.
    wrong = sorted(set(result) - allowed)
    if wrong:
        raise ConfigError(f"turn_detection key(s) {', '.join(wrong)} do not apply to {kind}")
    result["type"] = kind
    return result


def tool_choice_to_protocol(tool_choice: Any) -> Any:
    """The GA ``tool_choice``: a mode string, a function forced by name, or a
    GA tool-choice object (``{"type": "function", "name": ...}``) as given."""
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    if isinstance(tool_choice, str) and tool_choice:
        # Any other string names a function tool: {"type": "function", "name": ...}.
        return {"type": "function", "name": tool_choice}
    if isinstance(tool_choice, Mapping) and isinstance(tool_choice.get("type"), str):
        return copy.deepcopy(dict(tool_choice))
    raise ConfigError(
        f"tool_choice must be a mode, a tool name or a tool-choice dict, got {tool_choice!r}"
    )


def _output_modalities(modalities: Any) -> list[str]:
    if not isinstance(modalities, (list, tuple)) or not modalities:
        raise ConfigError(f"output modalities must be a non-empty list, got {modalities!r}")
    unknown = [m for m in modalities if m not in ("text", "audio")]
    if unknown:
        raise ConfigError(f"unknown output modality {unknown[0]!r}: use 'text' or 'audio'")
    # "It is not possible to request both `text` and `audio` at the same time."
    # The legacy ["text", "audio"] meant audio plus its transcript, which is what
    # ["audio"] gives in GA ("the model will respond with audio plus a transcript").
    if "audio" in modalities:
        return ["audio"]
    return ["text"]


def _sub(settings: Mapping[str, Any], direction: str) -> Mapping[str, Any]:
    """``settings["audio"][direction]`` ({} when absent or None)."""
    audio = settings.get("audio")
    if audio is None:
        return {}
    if not isinstance(audio, Mapping):
        raise ConfigError(f"model setting audio must be a dict, not {type(audio).__name__}")
    part = audio.get(direction)
    if part is None:
        return {}
    if not isinstance(part, Mapping):
        raise ConfigError(f"audio.{direction} must be a dict, not {type(part).__name__}")
    return part


_UNSET = object()


def _pick(nested: Mapping[str, Any], key: str, settings: Mapping[str, Any], flat: str) -> Any:
    """The nested value if given, else the flat one, else the default (or _UNSET)."""
    if key in nested:
        return nested[key]
    if flat in settings:
        return settings[flat]
    return DEFAULT_MODEL_SETTINGS.get(flat, _UNSET)


def _voice(voice: Any) -> Any:
    if isinstance(voice, str) and voice:
        return voice
    if isinstance(voice, Mapping) and isinstance(voice.get("id"), str):
        return {"id": voice["id"]}  # a custom voice
    raise ConfigError(f"voice must be a name or {{'id': ...}}, got {voice!r}")


def _optional_dict(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict or None, not {type(value).__name__}")
    return copy.deepcopy(dict(value))


def _prompt(prompt: Any) -> dict[str, Any]:
    if not isinstance(prompt, Mapping) or not isinstance(prompt.get("id"), str):
        raise ConfigError(f"prompt must be a dict with an 'id', got {prompt!r}")
    result: dict[str, Any] = {"id": prompt["id"]}
    for key in ("version", "variables"):
        if prompt.get(key) is not None:
            result[key] = copy.deepcopy(prompt[key])
    return result


def _tracing(tracing: Any) -> Any:
    if tracing is None or tracing == "auto":
        return tracing
    if not isinstance(tracing, Mapping):
        raise ConfigError(f"tracing must be 'auto', None or a dict, got {tracing!r}")
    return {
        k: copy.deepcopy(tracing[k])
        for k in ("workflow_name", "group_id", "metadata")
        if tracing.get(k) is not None
    }


def settings_to_session_payload(
    settings: RealtimeSessionModelSettings | Mapping[str, Any],
    *,
    default_formats: bool = True,
) -> dict[str, Any]:
    """The GA ``session`` object of a ``session.update`` for these settings.

    The audio block, output modalities and tools are always complete (what the
    settings leave out comes from ``DEFAULT_MODEL_SETTINGS``), so a handoff's
    update cannot leave the previous agent's values in place. ``model``,
    ``instructions``, ``tool_choice``, ``prompt``, ``tracing`` and the other
    optional keys are sent when given. ``turn_detection: None`` and
    ``tracing: None`` are sent as JSON ``null`` (off). ``default_formats=False``
    (a call attached by id, whose audio formats are the call's) sends only the
    formats the settings give.
    """
    session: dict[str, Any] = {"type": "realtime"}
    if settings.get("model_name"):
        session["model"] = settings["model_name"]
    if "instructions" in settings:
        session["instructions"] = settings["instructions"]
    if "prompt" in settings and settings["prompt"] is not None:
        session["prompt"] = _prompt(settings["prompt"])
    if settings.get("output_modalities") is not None:
        modalities = settings["output_modalities"]
    elif settings.get("modalities") is not None:
        modalities = settings["modalities"]
    else:
        modalities = DEFAULT_MODEL_SETTINGS["modalities"]
    session["output_modalities"] = _output_modalities(modalities)

    nested_in = _sub(settings, "input")
    audio_input: dict[str, Any] = {}
    in_format = nested_in.get("format") or settings.get("input_audio_format")
    if in_format is None and default_formats:
        in_format = DEFAULT_MODEL_SETTINGS["input_audio_format"]
    if in_format is not None:
        audio_input["format"] = audio_format_to_protocol(in_format)
    noise = _pick(nested_in, "noise_reduction", settings, "input_audio_noise_reduction")
    if noise is not _UNSET:
        audio_input["noise_reduction"] = _optional_dict(noise, "noise_reduction")
    transcription = _pick(nested_in, "transcription", settings, "input_audio_transcription")
    if transcription is not _UNSET:
        audio_input["transcription"] = _optional_dict(transcription, "transcription")
    turn_detection = _pick(nested_in, "turn_detection", settings, "turn_detection")
    if turn_detection is not _UNSET:
        audio_input["turn_detection"] = turn_detection_to_protocol(turn_detection)

    nested_out = _sub(settings, "output")
    audio_output: dict[str, Any] = {}
    out_format = nested_out.get("format") or settings.get("output_audio_format")
    if out_format is None and default_formats:
        out_format = DEFAULT_MODEL_SETTINGS["output_audio_format"]
    if out_format is not None:
        audio_output["format"] = audio_format_to_protocol(out_format)
    audio_output["voice"] = _voice(
        nested_out.get("voice") or settings.get("voice") or DEFAULT_MODEL_SETTINGS["voice"]
    )
    speed = _pick(nested_out, "speed", settings, "speed")
    if speed is not _UNSET and speed is not None:
        audio_output["speed"] = speed
    session["audio"] = {"input": audio_input, "output": audio_output}

    session["tools"] = [dict(tool) for tool in settings.get("tools") or []]
    if settings.get("tool_choice") is not None:
        session["tool_choice"] = tool_choice_to_protocol(settings["tool_choice"])
    if settings.get("parallel_tool_calls") is not None:
        session["parallel_tool_calls"] = bool(settings["parallel_tool_calls"])
    if settings.get("reasoning") is not None:
        session["reasoning"] = _optional_dict(settings["reasoning"], "reasoning")
    if "max_output_tokens" in settings:
        session["max_output_tokens"] = settings["max_output_tokens"]
    if "tracing" in settings:
        session["tracing"] = _tracing(settings["tracing"])
    return session
