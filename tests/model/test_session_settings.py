"""Settings -> the ``session`` of a ``session.update``: both shapes the SDK
accepts (flat keys and the GA's nested ``audio``), the SDK's defaults, and
the strict GA schema (``openai.types.realtime``) over many combinations; the
bundled local model server takes every payload too."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from ray_realtime.exceptions import ConfigError
from ray_realtime.local.session import SessionConfig
from ray_realtime.model.session_settings import settings_to_session_payload
from ray_realtime.types.config import DEFAULT_MODEL_SETTINGS, validate_model_settings

from .test_conversion import check_client_event

PCM = {"type": "audio/pcm", "rate": 24000}
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def conforms(settings: dict[str, Any]) -> dict[str, Any]:
    """The payload of ``settings``, checked against the GA schema and taken by
    the local model server; returned for further assertions."""
    payload = settings_to_session_payload(validate_model_settings(settings))
    check_client_event({"type": "session.update", "session": payload})
    SessionConfig(id="sess_test").updated(payload, voice_locked=False)
    return payload


def test_empty_settings_get_the_sdks_defaults() -> None:
    assert settings_to_session_payload({}) == {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": PCM,
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
            },
            "output": {"format": PCM, "voice": "ash"},
        },
        "tools": [],
    }
    assert DEFAULT_MODEL_SETTINGS["voice"] == "ash"


def test_full_flat_settings_payload() -> None:
    payload = conforms(
        {
            "model_name": "gpt-realtime",
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "voice": "marin",
            "speed": 1.2,
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_alaw",
            "input_audio_transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "input_audio_noise_reduction": {"type": "near_field"},
            "turn_detection": {"type": "server_vad", "threshold": 0.6, "interrupt_response": True},
            "tools": [TOOL],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "max_output_tokens": 512,
        }
    )
    assert payload == {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcma"}, "voice": "marin", "speed": 1.2},
        },
        "tools": [TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "max_output_tokens": 512,
    }


def test_nested_audio_wins_over_flat_keys() -> None:
    payload = conforms(
        {
            "voice": "ash",
            "speed": 1.0,
            "input_audio_format": "pcm16",
            "turn_detection": None,
            "input_audio_transcription": {"model": "whisper-1"},
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "noise_reduction": {"type": "far_field"},
                    "transcription": {
                        "model": "gpt-4o-transcribe",
                        "languages": ["en", "fr"],
                        "keywords": ["Ray"],
                        "delay": "low",
                    },
                    "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                },
                "output": {"format": "audio/pcma", "voice": {"id": "voice_123"}, "speed": 1.3},
            },
        }
    )
    audio = payload["audio"]
    assert audio["input"] == {
        "format": {"type": "audio/pcmu"},
        "noise_reduction": {"type": "far_field"},
        "transcription": {
            "model": "gpt-4o-transcribe",
            "languages": ["en", "fr"],
            "keywords": ["Ray"],
            "delay": "low",
        },
        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
    }
    assert audio["output"] == {
        "format": {"type": "audio/pcma"},
        "voice": {"id": "voice_123"},
        "speed": 1.3,
    }


def test_prompt_tool_choice_dict_tracing_and_reasoning_are_sent() -> None:
    payload = conforms(
        {
            "prompt": {"id": "pmpt_1", "version": "3", "variables": {"city": "Paris"}},
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "tracing": {"workflow_name": "support", "group_id": "g1", "metadata": {"a": 1}},
            "parallel_tool_calls": True,
        }
    )
    assert payload["prompt"] == {"id": "pmpt_1", "version": "3", "variables": {"city": "Paris"}}
    assert payload["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert payload["tracing"] == {
        "workflow_name": "support",
        "group_id": "g1",
        "metadata": {"a": 1},
    }
    assert payload["parallel_tool_calls"] is True
    assert conforms({"tracing": None})["tracing"] is None
    assert conforms({"tracing": "auto"})["tracing"] == "auto"
    reasoning = settings_to_session_payload({"reasoning": {"effort": "low"}})
    assert reasoning["reasoning"] == {"effort": "low"}


def test_turn_detection_none_is_json_null() -> None:
    payload = conforms({"turn_detection": None})
    assert payload["audio"]["input"]["turn_detection"] is None
    assert '"turn_detection":null' in json.dumps(payload, separators=(",", ":"))


def test_turn_detection_type_is_filled_in_and_camel_case_normalised() -> None:
    payload = settings_to_session_payload({"turn_detection": {}})
    assert payload["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    semantic = settings_to_session_payload({"turn_detection": {"eagerness": "high"}})
    assert semantic["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
    }
    camel = conforms({"turn_detection": {"type": "server_vad", "silenceDurationMs": 300}})
    assert camel["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "silence_duration_ms": 300,
    }


def test_vendor_vad_key_is_kept_not_dropped() -> None:
    settings = validate_model_settings(
        {"turn_detection": {"type": "server_vad", "model_version": "v2"}}
    )
    payload = settings_to_session_payload(settings)
    assert payload["audio"]["input"]["turn_detection"]["model_version"] == "v2"
    SessionConfig(id="sess_test").updated(payload, voice_locked=False)


def test_turn_detection_keys_of_the_other_vad_kind_are_refused() -> None:
    with pytest.raises(ConfigError, match="eagerness"):
        settings_to_session_payload({"turn_detection": {"type": "server_vad", "eagerness": "low"}})
    with pytest.raises(ConfigError, match="threshold"):
        settings_to_session_payload({"turn_detection": {"type": "semantic_vad", "threshold": 0.5}})
    with pytest.raises(ConfigError, match=r"turn_detection\.type"):
        settings_to_session_payload({"turn_detection": {"type": "magic_vad"}})  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("modalities", "expected"),
    [(["text"], ["text"]), (["audio"], ["audio"]), (["text", "audio"], ["audio"])],
)
def test_legacy_modalities_become_output_modalities(
    modalities: list[Any], expected: list[str]
) -> None:
    assert conforms({"modalities": modalities})["output_modalities"] == expected


def test_output_modalities_win_over_legacy_modalities() -> None:
    payload = settings_to_session_payload({"modalities": ["audio"], "output_modalities": ["text"]})
    assert payload["output_modalities"] == ["text"]


def test_tool_choice_by_name_forces_a_function() -> None:
    payload = conforms({"tools": [TOOL], "tool_choice": "get_weather"})
    assert payload["tool_choice"] == {"type": "function", "name": "get_weather"}


@pytest.mark.parametrize(
    "bad",
    [
        {"output_modalities": ["video"]},
        {"output_modalities": []},
        {"voice": 5},
        {"audio": {"output": {"voice": {"name": "x"}}}},
        {"audio": {"input": {"format": {"type": "audio/mp3"}}}},
        {"audio": "loud"},
        {"prompt": {"version": "1"}},
        {"tool_choice": 3},
        {"tracing": "on"},
    ],
)
def test_bad_values_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        settings_to_session_payload(validate_model_settings(bad))


# Every combination of one value per dimension: the payload is valid GA
# protocol and the local server takes it.
_DIMENSIONS: list[list[dict[str, Any]]] = [
    [{}, {"input_audio_format": "g711_ulaw"}, {"audio": {"input": {"format": PCM}}}],
    [
        {},
        {"turn_detection": None},
        {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}},
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}},
    ],
    [
        {},
        {"input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"}},
        {"audio": {"input": {"transcription": None, "noise_reduction": {"type": "far_field"}}}},
    ],
    [
        {},
        {"voice": "cedar", "speed": 1.1},
        {"audio": {"output": {"voice": {"id": "voice_9"}, "format": {"type": "audio/pcmu"}}}},
    ],
    [
        {},
        {"tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"}},
        {"tools": [], "tool_choice": "none", "parallel_tool_calls": False},
    ],
    [
        {},
        {"prompt": {"id": "pmpt_1"}, "tracing": "auto"},
        {"output_modalities": ["text"], "max_output_tokens": 100, "tracing": None},
    ],
]


def _merge(parts: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "audio" and "audio" in merged:
                for direction, sub in value.items():
                    merged["audio"].setdefault(direction, {}).update(sub)
            else:
                merged[key] = json.loads(json.dumps(value))
    return merged


_COMBINATIONS = [_merge(parts) for parts in itertools.product(*_DIMENSIONS)]


def test_there_are_many_combinations() -> None:
    assert len(_COMBINATIONS) == 3 * 4 * 3 * 3 * 3 * 3


@pytest.mark.parametrize("index", range(len(_COMBINATIONS)))
def test_every_combination_conforms(index: int) -> None:
    conforms(_COMBINATIONS[index])


# ------------------------------------------------------------ SIP (call_id)


def test_a_call_attached_by_id_keeps_its_own_formats() -> None:
    payload = settings_to_session_payload({"voice": "marin"}, default_formats=False)
    assert "format" not in payload["audio"]["input"]
    assert payload["audio"]["output"] == {"voice": "marin"}
    check_client_event({"type": "session.update", "session": payload})
    given = settings_to_session_payload({"output_audio_format": "g711_ulaw"}, default_formats=False)
    assert given["audio"]["output"]["format"] == {"type": "audio/pcmu"}


async def test_sip_model_needs_a_call_id() -> None:
    from ray_realtime import OpenAIRealtimeSIPModel

    with pytest.raises(ConfigError, match="call_id"):
        await OpenAIRealtimeSIPModel().connect({"url": "ws://127.0.0.1:9/"})
