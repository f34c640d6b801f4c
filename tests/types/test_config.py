"""validate_run_config, validate_model_config, validate_model_settings,
resolve_limits."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.exceptions import ConfigError
from ray_realtime.types.config import (
    DEFAULT_LIMITS,
    resolve_limits,
    validate_model_config,
    validate_model_settings,
    validate_run_config,
)

INT_BOUNDS = [
    "max_audio_chunk_bytes",
    "max_message_chars",
    "event_log_size",
    "event_log_bytes",
    "max_pending_tool_calls",
    "sessions_per_actor",
]
FLOAT_BOUNDS = ["tool_timeout_seconds", "guardrail_timeout_seconds"]


# ---------------------------------------------------------------- run config


def test_none_and_empty_run_config() -> None:
    assert validate_run_config(None) == {}
    assert validate_run_config({}) == {}


def test_run_config_returns_a_new_dict() -> None:
    config = {"max_message_chars": 10}
    result = validate_run_config(config)
    assert result == config and result is not config


@pytest.mark.parametrize("bad", ["config", ["execution"], 3])
def test_run_config_must_be_a_mapping(bad: Any) -> None:
    with pytest.raises(ConfigError):
        validate_run_config(bad)


def test_unknown_run_config_key_named() -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config({"max_mesage_chars": 5, "execution": "actor"})
    assert "max_mesage_chars" in str(info.value)


@pytest.mark.parametrize("key", INT_BOUNDS)
@pytest.mark.parametrize("bad", [0, -1, True, False, "10", 1.5, None])
def test_bad_int_bound_names_the_key(key: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config({key: bad})
    assert key in str(info.value)


@pytest.mark.parametrize("key", FLOAT_BOUNDS)
@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.1, True, "5", None])
def test_bad_float_bound_names_the_key(key: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config({key: bad})
    assert key in str(info.value)


def test_good_bounds() -> None:
    config = {key: 7 for key in INT_BOUNDS} | {
        "tool_timeout_seconds": 2,
        "guardrail_timeout_seconds": 0.5,
    }
    assert validate_run_config(config) == config


@pytest.mark.parametrize("execution", ["in_process", "actor"])
def test_execution_values(execution: str) -> None:
    assert validate_run_config({"execution": execution})["execution"] == execution


@pytest.mark.parametrize("bad", ["thread", "", None, "ACTOR"])
def test_bad_execution(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config({"execution": bad})
    assert "execution" in str(info.value)


@pytest.mark.parametrize("bad", [0, -5, True, "10", 2.5])
def test_bad_debounce(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config({"guardrails_settings": {"debounce_text_length": bad}})
    assert "debounce_text_length" in str(info.value)


def test_good_debounce() -> None:
    config = {"guardrails_settings": {"debounce_text_length": 1}}
    assert validate_run_config(config) == config
    assert validate_run_config({"guardrails_settings": {}}) == {"guardrails_settings": {}}


def test_guardrails_settings_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError):
        validate_run_config({"guardrails_settings": "fast"})


def test_run_config_model_settings_validated() -> None:
    result = validate_run_config({"model_settings": {"voice": "alloy", "speed": 1.2}})
    assert result["model_settings"] == {"voice": "alloy", "speed": 1.2}
    with pytest.raises(ConfigError) as info:
        validate_run_config({"model_settings": {"input_audio_format": "mp3"}})
    assert "input_audio_format" in str(info.value)


# ----------------------------------------------------------- model settings


def test_model_settings_valid() -> None:
    settings = {
        "model_name": "gpt-realtime",
        "instructions": "hi",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "g711_ulaw",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
        "input_audio_transcription": {"model": "whisper-1"},
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    }
    assert validate_model_settings(settings) == settings
    assert validate_model_settings({"turn_detection": None}) == {"turn_detection": None}


@pytest.mark.parametrize(
    "bad",
    [
        {"input_audio_format": "mp3"},
        {"output_audio_format": "wav"},
        {"turn_detection": {"type": "magic_vad"}},
        {"modalities": ["video"]},
        {"tools": "all"},
        {"speed": "fast"},
    ],
)
def test_model_settings_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        validate_model_settings(bad)


def test_model_settings_unknown_key_and_type() -> None:
    with pytest.raises(ConfigError) as info:
        validate_model_settings({"voise": "alloy"})
    assert "voise" in str(info.value)
    with pytest.raises(ConfigError):
        validate_model_settings(["voice"])


# -------------------------------------------------------------- model config


def test_none_and_empty_model_config() -> None:
    assert validate_model_config(None) == {}
    assert validate_model_config({}) == {}


def test_model_config_valid() -> None:
    config = {
        "api_key": "sk-test",
        "url": "wss://example.com/v1/realtime",
        "headers": {"X-Trace": "1"},
        "initial_model_settings": {"voice": "alloy"},
    }
    result = validate_model_config(config)
    assert result == config and result is not config
    assert validate_model_config({"url": "ws://localhost:8765"})["url"] == "ws://localhost:8765"


def test_model_config_api_key_callable_untouched() -> None:
    def key() -> str:
        return "sk"

    assert validate_model_config({"api_key": key})["api_key"] is key


@pytest.mark.parametrize("url", ["https://example.com", "example.com", "", 5, None])
def test_model_config_url_must_be_ws(url: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_model_config({"url": url})
    assert "url" in str(info.value)


@pytest.mark.parametrize("headers", [["a"], {"a": 1}, {1: "a"}, "X-Trace: 1"])
def test_model_config_headers_types(headers: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_model_config({"headers": headers})
    assert "headers" in str(info.value)


def test_model_config_unknown_key_and_type() -> None:
    with pytest.raises(ConfigError) as info:
        validate_model_config({"apikey": "x"})
    assert "apikey" in str(info.value)
    with pytest.raises(ConfigError):
        validate_model_config("wss://x")


def test_model_config_initial_settings_validated() -> None:
    with pytest.raises(ConfigError):
        validate_model_config({"initial_model_settings": {"input_audio_format": "mp3"}})


# -------------------------------------------------------------- limits


def test_default_limits_are_finite_and_positive() -> None:
    assert DEFAULT_LIMITS == {
        "tool_timeout_seconds": 30.0,
        "guardrail_timeout_seconds": 10.0,
        "max_audio_chunk_bytes": 1 << 20,
        "max_message_chars": 100_000,
        "event_log_size": 4096,
        "event_log_bytes": 512 << 10,
        "max_pending_tool_calls": 64,
        "debounce_text_length": 100,
    }


def test_resolve_limits_defaults() -> None:
    limits = resolve_limits({})
    assert limits == DEFAULT_LIMITS
    assert limits is not DEFAULT_LIMITS


def test_resolve_limits_overrides() -> None:
    limits = resolve_limits(
        {
            "max_message_chars": 5,
            "tool_timeout_seconds": 1.5,
            "guardrails_settings": {"debounce_text_length": 20},
            "execution": "in_process",
        }
    )
    assert limits["max_message_chars"] == 5
    assert limits["tool_timeout_seconds"] == 1.5
    assert limits["debounce_text_length"] == 20
    assert limits["event_log_size"] == DEFAULT_LIMITS["event_log_size"]
    assert set(limits) == set(DEFAULT_LIMITS), "only limit keys"


# ----------------------------------------------- the SDK's newer keys


def test_run_config_takes_the_sdks_tool_keys() -> None:
    def formatter(args: Any) -> str:
        return "no"

    config = validate_run_config(
        {
            "tool_error_formatter": formatter,
            "tool_execution": {"pre_approval_tool_input_guardrails": True},
            "tracing_disabled": True,
        }
    )
    assert config["tool_error_formatter"] is formatter
    with pytest.raises(ConfigError, match="tool_error_formatter"):
        validate_run_config({"tool_error_formatter": "no"})
    with pytest.raises(ConfigError, match="tool_execution"):
        validate_run_config({"tool_execution": {"pre_approval": True}})


def test_ga_settings_are_accepted_and_kept_whole() -> None:
    settings = {
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-transcribe", "languages": ["en"]},
                "turn_detection": {"type": "server_vad", "model_version": "v2"},
            },
            "output": {"format": "audio/pcmu", "voice": {"id": "voice_1"}, "speed": 1.1},
        },
        "prompt": {"id": "pmpt_1", "variables": {"a": "b"}},
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "tracing": {"workflow_name": "w"},
        "input_audio_noise_reduction": None,
    }
    assert validate_model_settings(settings) == settings  # nothing dropped
    with pytest.raises(ConfigError, match=r"audio\.input\.format"):
        validate_model_settings({"audio": {"input": {"format": {"type": "audio/mp3"}}}})


def test_model_config_call_id() -> None:
    assert validate_model_config({"call_id": "rtc_1"})["call_id"] == "rtc_1"
    with pytest.raises(ConfigError, match="call_id"):
        validate_model_config({"call_id": ""})
    with pytest.raises(ConfigError, match="model_name"):
        validate_model_config(
            {"call_id": "rtc_1", "initial_model_settings": {"model_name": "gpt-realtime"}}
        )
