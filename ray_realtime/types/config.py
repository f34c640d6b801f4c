"""Configuration: run config, session model settings and model config.

These are ``TypedDict``s, as in the OpenAI Agents SDK, so existing code that
passes plain dicts keeps working and the values cross process boundaries as
plain data. :func:`validate_run_config` and :func:`validate_model_config` check
them once, at the edge, and raise :class:`~ray_realtime.exceptions.ConfigError`.

Every bound the session keeps has a finite default here (``DEFAULT_LIMITS``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import (
    Any,
    Literal,
    Required,  # pydantic needs it on Python < 3.12
)

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from ray_realtime.exceptions import ConfigError

__all__ = [
    "DEFAULT_APPROVAL_REJECTION_MESSAGE",
    "DEFAULT_LIMITS",
    "DEFAULT_MODEL_RECONNECT",
    "DEFAULT_MODEL_SETTINGS",
    "ModelReconnectPolicy",
    "RealtimeAudioConfig",
    "RealtimeAudioFormat",
    "RealtimeAudioInputConfig",
    "RealtimeAudioOutputConfig",
    "RealtimeClientMessage",
    "RealtimeCustomVoice",
    "RealtimeGuardrailsSettings",
    "RealtimeInputAudioNoiseReductionConfig",
    "RealtimeInputAudioTranscriptionConfig",
    "RealtimeModelConfig",
    "RealtimeModelName",
    "RealtimeModelReconnectSettings",
    "RealtimeModelTracingConfig",
    "RealtimePrompt",
    "RealtimeReasoningConfig",
    "RealtimeReasoningEffort",
    "RealtimeRunConfig",
    "RealtimeSessionModelSettings",
    "RealtimeToolExecutionConfig",
    "RealtimeTurnDetectionConfig",
    "RealtimeUserInput",
    "RealtimeUserInputImage",
    "RealtimeUserInputMessage",
    "RealtimeUserInputText",
    "RealtimeVoice",
    "SessionLimits",
    "input_audio_format_name",
    "output_audio_format_name",
    "resolve_limits",
    "resolve_model_reconnect",
    "validate_model_config",
    "validate_run_config",
]

RealtimeModelName = (
    Literal[
        "gpt-realtime",
        "gpt-realtime-2.1",
        "gpt-realtime-2.1-mini",
        "gpt-realtime-mini",
        "gpt-4o-realtime-preview",
        "gpt-4o-mini-realtime-preview",
    ]
    | str
)
"""A realtime model name such as ``"gpt-realtime"`` (any string is accepted)."""

RealtimeAudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"] | str | Mapping[str, Any]
"""Audio formats: 24 kHz mono PCM16 little-endian, or 8 kHz G.711 μ-law / A-law,
by name (``"pcm16"``, ``"g711_ulaw"``, ``"g711_alaw"``), by GA type
(``"audio/pcm"`` ...) or as a GA format object (``{"type": "audio/pcm", "rate": 24000}``)."""

RealtimeReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"] | str
"""How much the model reasons before answering."""


class RealtimeCustomVoice(TypedDict):
    """A custom voice, by id."""

    id: str


RealtimeVoice = str | RealtimeCustomVoice | Mapping[str, Any]
"""A built-in voice name or a custom voice object."""


class RealtimeClientMessage(TypedDict, total=False):
    """A raw client message: its ``type``, and ``other_data`` merged into it."""

    type: Required[str]
    other_data: dict[str, Any]


class RealtimeInputAudioTranscriptionConfig(TypedDict, total=False):
    """Transcription of the user's audio input."""

    language: str
    model: str
    prompt: str
    keywords: list[str]
    languages: list[str]
    delay: Literal["minimal", "low", "medium", "high", "xhigh"]


class RealtimeInputAudioNoiseReductionConfig(TypedDict, total=False):
    """Noise reduction of the user's audio input."""

    type: Literal["near_field", "far_field"]


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
    model_version: str


class RealtimeAudioInputConfig(TypedDict, total=False):
    """The GA ``audio.input`` settings."""

    format: RealtimeAudioFormat
    noise_reduction: RealtimeInputAudioNoiseReductionConfig | None
    transcription: RealtimeInputAudioTranscriptionConfig | None
    turn_detection: RealtimeTurnDetectionConfig | None


class RealtimeAudioOutputConfig(TypedDict, total=False):
    """The GA ``audio.output`` settings."""

    format: RealtimeAudioFormat
    voice: RealtimeVoice
    speed: float


class RealtimeAudioConfig(TypedDict, total=False):
    """The GA ``audio`` settings; they win over the flat keys they nest."""

    input: RealtimeAudioInputConfig | None
    output: RealtimeAudioOutputConfig | None


class RealtimeReasoningConfig(TypedDict, total=False):
    """Reasoning settings of the model's responses."""

    effort: RealtimeReasoningEffort


class RealtimeModelTracingConfig(TypedDict, total=False):
    """Tracing of the session on the model's side."""

    workflow_name: str
    group_id: str
    metadata: dict[str, Any]


class RealtimePrompt(TypedDict, total=False):
    """A stored prompt: its id, and optionally version and variables."""

    id: Required[str]
    version: str | None
    variables: dict[str, Any] | None


class RealtimeSessionModelSettings(TypedDict, total=False):
    """Model settings of a realtime session (sent with ``session.update``).

    Flat keys and the GA's nested ``audio`` both work; a nested value wins
    over its flat twin; :data:`DEFAULT_MODEL_SETTINGS` fill what neither gives.
    """

    model_name: RealtimeModelName
    instructions: str
    prompt: RealtimePrompt
    modalities: list[Literal["text", "audio"]]
    output_modalities: list[Literal["text", "audio"]]
    audio: RealtimeAudioConfig
    voice: RealtimeVoice
    speed: float
    input_audio_format: RealtimeAudioFormat
    output_audio_format: RealtimeAudioFormat
    input_audio_transcription: RealtimeInputAudioTranscriptionConfig | None
    input_audio_noise_reduction: RealtimeInputAudioNoiseReductionConfig | None
    turn_detection: RealtimeTurnDetectionConfig | None
    tool_choice: Literal["auto", "none", "required"] | str | dict[str, Any]
    parallel_tool_calls: bool
    reasoning: RealtimeReasoningConfig
    max_output_tokens: int | Literal["inf"]
    tools: list[dict[str, Any]]
    """Tool definitions as JSON (``{"type": "function", "name", "description",
    "parameters"}``). Normally filled from the agent's tools and handoffs."""
    handoffs: list[Any]
    """Accepted for the SDK's shape; the agent's handoffs are what is sent."""
    tracing: RealtimeModelTracingConfig | Literal["auto"] | None
    """Tracing on the model's side (``None``: off; the run config's
    ``tracing_disabled`` sets it)."""


DEFAULT_MODEL_SETTINGS: RealtimeSessionModelSettings = {
    "voice": "ash",
    "modalities": ["audio"],
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_transcription": {"model": "gpt-4o-mini-transcribe"},
    "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
}
"""What a session uses where its settings say nothing (the SDK's defaults)."""


_FORMAT_NAMES = {
    "pcm16": "pcm16",
    "audio/pcm": "pcm16",
    "g711_ulaw": "g711_ulaw",
    "audio/pcmu": "g711_ulaw",
    "g711_alaw": "g711_alaw",
    "audio/pcma": "g711_alaw",
}


def input_audio_format_name(settings: Mapping[str, Any]) -> str:
    """The name (``"pcm16"``, ``"g711_ulaw"``, ``"g711_alaw"``) of the input
    audio format ``settings`` give: ``audio.input.format`` over
    ``input_audio_format``, PCM16 when neither (or an unknown one, which the
    model's conversion refuses) is given."""
    return _audio_format_name(settings, "input")


def output_audio_format_name(settings: Mapping[str, Any]) -> str:
    """The name of the output audio format ``settings`` give, as
    :func:`input_audio_format_name` reads the input one."""
    return _audio_format_name(settings, "output")


def _audio_format_name(settings: Mapping[str, Any], direction: str) -> str:
    audio = settings.get("audio")
    fmt: Any = None
    if isinstance(audio, Mapping) and isinstance(audio.get(direction), Mapping):
        fmt = audio[direction].get("format")
    if fmt is None:
        fmt = settings.get(f"{direction}_audio_format")
    if isinstance(fmt, Mapping):
        fmt = fmt.get("type", "audio/pcm")
    return _FORMAT_NAMES.get(fmt, "pcm16") if isinstance(fmt, str) else "pcm16"


class RealtimeUserInputText(TypedDict):
    """A text part of a user message."""

    type: Literal["input_text"]
    text: str


class RealtimeUserInputImage(TypedDict, total=False):
    """An image part of a user message."""

    type: Required[Literal["input_image"]]
    image_url: Required[str]
    detail: str


class RealtimeUserInputMessage(TypedDict):
    """A user message with text and image parts."""

    type: Literal["message"]
    role: Literal["user"]
    content: list[RealtimeUserInputText | RealtimeUserInputImage]


RealtimeUserInput = str | RealtimeUserInputMessage
"""What ``send_message`` takes: text or a user message."""


DEFAULT_APPROVAL_REJECTION_MESSAGE = "Tool execution was not approved."
"""What the model receives for a rejected tool call (the SDK's text)."""


class RealtimeToolExecutionConfig(TypedDict, total=False):
    """How the session runs tool calls (SDK-side settings)."""

    pre_approval_tool_input_guardrails: bool
    """The SDK runs tool input guardrails before asking for approval; ray-realtime
    tools have no input guardrails, so this has no effect."""


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
    """Turn model-side tracing off (sends ``tracing: null``)."""
    tool_execution: RealtimeToolExecutionConfig
    tool_error_formatter: Callable[[Any], Any]
    """``formatter(ToolErrorFormatterArgs)`` (sync or async) gives the text the
    model sees when a tool call is rejected; ``None`` or a failure keeps the
    default text."""
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
    event_log_bytes: int
    """Bytes of events kept for readers that fall behind, as estimated from
    their audio and text (default 512 KiB: about 5 s of 24 kHz output audio,
    or thousands of text events; audio older than that is of no use to a
    live caller, and this bound is most of a session's memory); with
    ``event_log_size``, whichever bound is reached first. Raise it for
    readers that may fall further behind."""
    max_pending_tool_calls: int
    """Tool calls of one session in flight at once (default 64)."""
    sessions_per_actor: int
    """Sessions packed into one session actor (default: the service's
    ``sessions_per_actor``, 8); 1 gives the session an actor of its own
    (isolation: its own process)."""
    placement: dict[str, Any]
    """Node requirement for the session: ``{"resources": {...}, "labels": {...}}``."""
    data_plane: bool
    """Actor sessions: carry audio and events over a direct WebSocket between
    the handle and the session actor (default True); False uses Ray calls only."""
    model_reconnect: RealtimeModelReconnectSettings
    """How a lost model connection is restored (see
    :class:`RealtimeModelReconnectSettings`; on by default)."""
    orphan_timeout_seconds: float
    """Actor sessions: close a session none of whose handles is connected
    after this long (default 300); see ``RealtimeSession.detach``."""
    recovery_timeout_seconds: float
    """Actor sessions: how long a call waits for the session's recovery after
    its actor died before raising ``SessionLostError`` (default 10)."""


class RealtimeModelConfig(TypedDict, total=False):
    """How to connect to the realtime model."""

    api_key: str | Callable[[], Any]
    url: str
    headers: dict[str, str]
    initial_model_settings: RealtimeSessionModelSettings
    call_id: str
    """Attach to an existing call (a SIP call) instead of starting a new
    session: the model and audio formats are the call's."""
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
    event_log_bytes: int
    max_pending_tool_calls: int
    debounce_text_length: int


DEFAULT_LIMITS: SessionLimits = {
    "tool_timeout_seconds": 30.0,
    "guardrail_timeout_seconds": 10.0,
    "max_audio_chunk_bytes": 1 << 20,
    "max_message_chars": 100_000,
    "event_log_size": 4096,
    "event_log_bytes": 512 << 10,
    "max_pending_tool_calls": 64,
    "debounce_text_length": 100,
}

_POSITIVE_FLOATS = (
    "tool_timeout_seconds",
    "guardrail_timeout_seconds",
    "orphan_timeout_seconds",
    "recovery_timeout_seconds",
)
_POSITIVE_INTS = (
    "max_audio_chunk_bytes",
    "max_message_chars",
    "event_log_size",
    "event_log_bytes",
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
    tool_execution = result.get("tool_execution")
    if tool_execution is not None and not (
        isinstance(tool_execution, Mapping)
        and set(tool_execution) <= {"pre_approval_tool_input_guardrails"}
        and all(isinstance(v, bool) for v in tool_execution.values())
    ):
        raise ConfigError(
            "run config tool_execution must be {'pre_approval_tool_input_guardrails': bool}"
        )
    formatter = result.get("tool_error_formatter")
    if formatter is not None and not callable(formatter):
        raise ConfigError("run config tool_error_formatter must be callable")
    if "model_settings" in result:
        result["model_settings"] = validate_model_settings(result["model_settings"])
    if "model_reconnect" in result:
        resolve_model_reconnect(result)  # raises ConfigError on a bad value
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
        _settings_adapter().validate_python(dict(settings))
    except ValidationError as exc:
        raise ConfigError(f"invalid model settings: {_first_error(exc)}") from None
    _check_formats(settings)
    # The caller's values, not pydantic's output: keys the typed shape does not
    # name (a vendor's turn-detection key) must reach the model, not vanish.
    try:
        return copy.deepcopy(dict(settings))  # type: ignore[return-value]
    except Exception as exc:
        raise ConfigError(f"model settings must be plain data: {exc}") from None


def _check_formats(settings: Mapping[str, Any]) -> None:
    """Every audio format given (flat or nested) is one the protocol knows."""
    audio = settings.get("audio") or {}
    places = [
        ("input_audio_format", settings.get("input_audio_format")),
        ("output_audio_format", settings.get("output_audio_format")),
        ("audio.input.format", (audio.get("input") or {}).get("format")),
        ("audio.output.format", (audio.get("output") or {}).get("format")),
    ]
    for where, fmt in places:
        kind = fmt.get("type", "audio/pcm") if isinstance(fmt, Mapping) else fmt
        if fmt is not None and kind not in _FORMAT_NAMES:
            raise ConfigError(
                f"invalid model settings: {where}: unknown audio format {kind!r} "
                "(use 'pcm16', 'g711_ulaw', 'g711_alaw' or their GA types)"
            )


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
    call_id = result.get("call_id")
    if call_id is not None and not (isinstance(call_id, str) and call_id):
        raise ConfigError("model config call_id must be a non-empty string")
    if "initial_model_settings" in result:
        result["initial_model_settings"] = validate_model_settings(result["initial_model_settings"])
        if call_id and result["initial_model_settings"].get("model_name"):
            raise ConfigError(
                "model config: a call_id attaches to an existing call, whose model is fixed; "
                "do not also set model_name"
            )
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


# --------------------------------------------------------------------------
# Model reconnection (ray-realtime addition; docs/reliability.md)


class RealtimeModelReconnectSettings(TypedDict, total=False):
    """How a session restores a lost model connection: a dropped socket, a
    server close, or the service's session-length cap (``session_expired``).

    The session reconnects with exponential backoff and jitter, replays its
    history into the new model session and goes on; readers see one
    ``session_recovered`` event. Attempts stop after ``max_attempts`` or
    ``max_seconds``, whichever comes first; the session then closes with an
    ``error`` event.
    """

    enabled: bool
    """Reconnect at all (default True); False closes the session on a loss."""
    max_attempts: int
    """Connection attempts per loss (default 8)."""
    max_seconds: float
    """Time allowed for one recovery, waits included (default 30)."""
    initial_backoff_seconds: float
    """Wait before the second attempt; the first is immediate (default 0.1)."""
    max_backoff_seconds: float
    """Longest wait between attempts (default 5)."""
    resume_response: bool
    """Ask again for a response the loss cut off (default True)."""
    max_replay_items: int
    """Newest history items replayed into the new model session (default 500)."""
    max_replay_chars: int
    """Characters of text replayed at most (default 200,000)."""


class ModelReconnectPolicy(TypedDict):
    """:class:`RealtimeModelReconnectSettings` with every default filled in."""

    enabled: bool
    max_attempts: int
    max_seconds: float
    initial_backoff_seconds: float
    max_backoff_seconds: float
    resume_response: bool
    max_replay_items: int
    max_replay_chars: int


DEFAULT_MODEL_RECONNECT: ModelReconnectPolicy = {
    "enabled": True,
    "max_attempts": 8,
    "max_seconds": 30.0,
    "initial_backoff_seconds": 0.1,
    "max_backoff_seconds": 5.0,
    "resume_response": True,
    "max_replay_items": 500,
    "max_replay_chars": 200_000,
}


def resolve_model_reconnect(run_config: Mapping[str, Any]) -> ModelReconnectPolicy:
    """The reconnect policy of a run config (its ``model_reconnect`` over the
    defaults); a :class:`ConfigError` names a bad key or value."""
    given = run_config.get("model_reconnect") or {}
    if not isinstance(given, Mapping):
        raise ConfigError("run config model_reconnect must be a dict")
    unknown = sorted(set(given) - set(DEFAULT_MODEL_RECONNECT))
    if unknown:
        raise ConfigError(f"unknown model_reconnect key(s): {', '.join(unknown)}")
    policy: dict[str, Any] = dict(DEFAULT_MODEL_RECONNECT)
    for key, value in given.items():
        default = DEFAULT_MODEL_RECONNECT[key]  # type: ignore[literal-required]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        if not ok:
            kind = (
                "True or False"
                if isinstance(default, bool)
                else "a positive integer"
                if isinstance(default, int)
                else "a number >= 0"
            )
            raise ConfigError(f"model_reconnect.{key} must be {kind}, got {value!r}")
        policy[key] = value
    return policy  # type: ignore[return-value]
