"""Configuration: run config, session model settings and model config.

These are ``TypedDict``s, as in the OpenAI Agents SDK, so existing code that
passes plain dicts keeps working and the values cross process boundaries as
plain data. :func:`validate_run_config` and :func:`validate_model_config` check
them once, at the edge, and raise :class:`~ray_realtime.exceptions.ConfigError`.

Every bound the session keeps has a finite default here (``DEFAULT_LIMITS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from ray_realtime.exceptions import ConfigError

__all__ = [
    "DEFAULT_LIMITS",
    "RealtimeAudioFormat",
    "RealtimeGuardrailsSettings",
    "RealtimeInputAudioTranscriptionConfig",
    "RealtimeModelConfig",
    "RealtimeModelName",
    "RealtimeRunConfig",
    "RealtimeSessionModelSettings",
    "RealtimeTurnDetectionConfig",
    "SessionLimits",
    "resolve_limits",
    "validate_model_config",
    "validate_run_config",
]

RealtimeModelName = str
"""A realtime model name such as ``"gpt-realtime"``."""

RealtimeAudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
"""Audio formats: 24 kHz mono PCM16 little-endian, or 8 kHz G.711 μ-law / A-law."""


class RealtimeInputAudioTranscriptionConfig(TypedDict, total=False):
    """Transcription of the user's audio input."""

    language: str
    model: str
    prompt: str


class RealtimeTurnDetectionConfig(TypedDict, total=False):
    """Server-side turn detection (voice activity detection)."""

    type: Literal["semantic_vad", "server_vad"]
    create_response: bool
    eagerness: Literal["auto", "low", "medium", "high"]
    interrupt_response: bool
    prefix_padding_ms: int
    silence_duration_ms: int
    threshold: float
    idle_timeout_ms: int


class RealtimeSessionModelSettings(TypedDict, total=False):
    """Model settings of a realtime session (sent with ``session.update``)."""

    model_name: RealtimeModelName
    instructions: str
    modalities: list[Literal["text", "audio"]]
    output_modalities: list[Literal["text", "audio"]]
    voice: str
    speed: float
    input_audio_format: RealtimeAudioFormat
    output_audio_format: RealtimeAudioFormat
    input_audio_transcription: RealtimeInputAudioTranscriptionConfig | None
    turn_detection: RealtimeTurnDetectionConfig | None
    tool_choice: Literal["auto", "none", "required"] | str
    max_output_tokens: int | Literal["inf"]
    tools: list[dict[str, Any]]
    """Tool definitions as JSON (``{"type": "function", "name", "description",
    "parameters"}``). Normally filled from the agent's tools and handoffs."""


class RealtimeGuardrailsSettings(TypedDict, total=False):
    """How output guardrails run."""

    debounce_text_length: int
    """Run the guardrails every this many characters of transcript (default 100)."""


class RealtimeRunConfig(TypedDict, total=False):
    """Configuration of a run (one session and its handoffs).

    ray-realtime adds ``execution``, ``emit_raw_model_events`` and the bounds
    below to the SDK's keys.
    """

    model_settings: RealtimeSessionModelSettings
    output_guardrails: list[Any]
    guardrails_settings: RealtimeGuardrailsSettings
    tracing_disabled: bool
    async_tool_calls: bool
    """Run tool calls concurrently with the conversation (default True). When
    False, the tool calls of one session run one at a time, in order."""
    execution: Literal["in_process", "actor"]
    """Where the session runs: ``"actor"`` (default: a Ray actor) or
    ``"in_process"`` (in the calling process; development and baselines)."""
    emit_raw_model_events: bool
    """Also emit every model event as ``raw_model_event`` (default False; it
    doubles the event volume)."""
    tool_timeout_seconds: float
    """Timeout of a tool call whose tool sets none (default 30)."""
    guardrail_timeout_seconds: float
    """Timeout of one guardrail check (default 10)."""
    max_audio_chunk_bytes: int
    """Largest ``send_audio`` chunk accepted (default 1 MiB)."""
    max_message_chars: int
    """Longest ``send_message`` text accepted (default 100,000)."""
    event_log_size: int
    """Events kept for readers that fall behind (default 4,096)."""
    max_pending_tool_calls: int
    """Tool calls of one session in flight at once (default 64)."""
    sessions_per_actor: int
    """Sessions packed into one session actor (default 1)."""
    placement: dict[str, Any]
    """Node requirement for the session: ``{"resources": {...}, "labels": {...}}``."""
    data_plane: bool
    """Actor sessions: carry audio and events over a direct WebSocket between
    the handle and the session actor (default True); False uses Ray calls only."""
    recovery_timeout_seconds: float
    """Actor sessions: how long a call waits for the session's recovery after
    its actor died before raising ``SessionLostError`` (default 10)."""


class RealtimeModelConfig(TypedDict, total=False):
    """How to connect to the realtime model."""

    api_key: str | Callable[[], Any]
    url: str
    headers: dict[str, str]
    initial_model_settings: RealtimeSessionModelSettings
    playback_tracker: Any
    """A :class:`~ray_realtime.model.playback.RealtimePlaybackTracker` telling
    the model how much audio the user has actually heard, for truncation."""


class SessionLimits(TypedDict):
    """The bounds one session keeps, resolved from the run config."""

    tool_timeout_seconds: float
    guardrail_timeout_seconds: float
    max_audio_chunk_bytes: int
    max_message_chars: int
    event_log_size: int
    max_pending_tool_calls: int
    debounce_text_length: int


DEFAULT_LIMITS: SessionLimits = {
    "tool_timeout_seconds": 30.0,
    "guardrail_timeout_seconds": 10.0,
    "max_audio_chunk_bytes": 1 << 20,
    "max_message_chars": 100_000,
    "event_log_size": 4096,
    "max_pending_tool_calls": 64,
    "debounce_text_length": 100,
}

_POSITIVE_FLOATS = ("tool_timeout_seconds", "guardrail_timeout_seconds", "recovery_timeout_seconds")
_POSITIVE_INTS = (
    "max_audio_chunk_bytes",
    "max_message_chars",
    "event_log_size",
    "max_pending_tool_calls",
    "sessions_per_actor",
)

_run_config_adapter: TypeAdapter[RealtimeRunConfig] | None = None
_model_settings_adapter: TypeAdapter[RealtimeSessionModelSettings] | None = None


def _settings_adapter() -> TypeAdapter[RealtimeSessionModelSettings]:
    global _model_settings_adapter
    if _model_settings_adapter is None:
        _model_settings_adapter = TypeAdapter(RealtimeSessionModelSettings)
    return _model_settings_adapter


def validate_run_config(config: Mapping[str, Any] | None) -> RealtimeRunConfig:
    """Check a run config and return it as a new dict.

    Raises :class:`ConfigError` naming the bad key. Unknown keys are an error:
    a misspelt bound would otherwise silently keep its default.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"run config must be a dict, not {type(config).__name__}")
    known = set(RealtimeRunConfig.__annotations__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown run config key(s): {', '.join(unknown)}")
    result: dict[str, Any] = dict(config)
    for key in _POSITIVE_FLOATS:
        if key in result:
            value = result[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"run config {key} must be a positive number, got {value!r}")
    for key in _POSITIVE_INTS:
        if key in result:
            value = result[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"run config {key} must be a positive integer, got {value!r}")
    execution = result.get("execution", "actor")
    if execution not in ("in_process", "actor"):
        raise ConfigError(
            f"run config execution must be 'in_process' or 'actor', got {execution!r}"
        )
    guardrails_settings = result.get("guardrails_settings") or {}
    if not isinstance(guardrails_settings, Mapping):
        raise ConfigError("run config guardrails_settings must be a dict")
    debounce = guardrails_settings.get("debounce_text_length", 100)
    if isinstance(debounce, bool) or not isinstance(debounce, int) or debounce <= 0:
        raise ConfigError(
            f"guardrails_settings.debounce_text_length must be a positive integer, got {debounce!r}"
        )
    if "model_settings" in result:
        result["model_settings"] = validate_model_settings(result["model_settings"])
    return result  # type: ignore[return-value]


def validate_model_settings(settings: Any) -> RealtimeSessionModelSettings:
    """Check session model settings; raise :class:`ConfigError` on a bad value."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"model settings must be a dict, not {type(settings).__name__}")
    known = set(RealtimeSessionModelSettings.__annotations__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown model setting(s): {', '.join(unknown)}")
    try:
        return _settings_adapter().validate_python(dict(settings))
    except ValidationError as exc:
        raise ConfigError(f"invalid model settings: {_first_error(exc)}") from None


def validate_model_config(config: Mapping[str, Any] | None) -> RealtimeModelConfig:
    """Check a model config and return it as a new dict (secrets untouched)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"model config must be a dict, not {type(config).__name__}")
    known = set(RealtimeModelConfig.__annotations__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
    result: dict[str, Any] = dict(config)
    if "url" in result and not (
        isinstance(result["url"], str) and result["url"].startswith(("ws://", "wss://"))
    ):
        raise ConfigError("model config url must be a ws:// or wss:// URL")
    headers = result.get("headers")
    if headers is not None and not (
        isinstance(headers, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise ConfigError("model config headers must map strings to strings")
    if "initial_model_settings" in result:
        result["initial_model_settings"] = validate_model_settings(result["initial_model_settings"])
    return result  # type: ignore[return-value]


def resolve_limits(run_config: Mapping[str, Any]) -> SessionLimits:
    """The bounds of a session: the run config's values over the defaults."""
    limits: dict[str, Any] = dict(DEFAULT_LIMITS)
    for key in DEFAULT_LIMITS:
        if key in run_config:
            limits[key] = run_config[key]
    guardrails_settings = run_config.get("guardrails_settings") or {}
    if "debounce_text_length" in guardrails_settings:
        limits["debounce_text_length"] = guardrails_settings["debounce_text_length"]
    return limits  # type: ignore[return-value]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}"
