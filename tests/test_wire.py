"""Tests of the msgpack wire codec (ray_realtime.wire)."""

from __future__ import annotations

import dataclasses
import enum
import random
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest

from ray_realtime import wire
from ray_realtime.core.history_log import HistoryDelta
from ray_realtime.exceptions import ProtocolError, SerializationError
from ray_realtime.types import events as session_events
from ray_realtime.types import items as history_items
from ray_realtime.types import model_events as model_events
from ray_realtime.types import model_inputs as model_inputs
from ray_realtime.types.events import (
    AgentRef,
    GuardrailRef,
    OutputGuardrailResult,
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeAudio,
    RealtimeAudioEnd,
    RealtimeAudioInterrupted,
    RealtimeError,
    RealtimeEventsLost,
    RealtimeGuardrailTripped,
    RealtimeHandoffEvent,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeInputAudioTimeoutTriggered,
    RealtimeRawModelEvent,
    RealtimeSessionRecovered,
    RealtimeToolApprovalRequired,
    RealtimeToolEnd,
    RealtimeToolStart,
    RealtimeUsageUpdated,
    SessionUsage,
    ToolRef,
    UsageTotals,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    InputImage,
    InputText,
    RealtimeToolCallItem,
    SystemMessageItem,
    UserMessageItem,
)
from ray_realtime.types.model_events import (
    RealtimeModelAudioDoneEvent,
    RealtimeModelAudioEvent,
    RealtimeModelAudioInterruptedEvent,
    RealtimeModelCachedTokensDetails,
    RealtimeModelConnectionStatusEvent,
    RealtimeModelEndOfStreamEvent,
    RealtimeModelErrorEvent,
    RealtimeModelExceptionEvent,
    RealtimeModelInputAudioTimeoutTriggeredEvent,
    RealtimeModelInputAudioTranscriptionCompletedEvent,
    RealtimeModelInputTokensDetails,
    RealtimeModelItemDeletedEvent,
    RealtimeModelItemUpdatedEvent,
    RealtimeModelOtherEvent,
    RealtimeModelOutputTextDeltaEvent,
    RealtimeModelOutputTokensDetails,
    RealtimeModelRawServerEvent,
    RealtimeModelToolCallEvent,
    RealtimeModelTranscriptDeltaEvent,
    RealtimeModelTurnEndedEvent,
    RealtimeModelTurnStartedEvent,
    RealtimeModelUsageEvent,
)
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
)

MODULES = (session_events, model_events, model_inputs)

# 40 ms of 24 kHz mono PCM16, every byte value present (incl. NUL and 0xff).
AUDIO = bytes(range(256)) * 7 + bytes(range(128))
assert len(AUDIO) == 1920

# --------------------------------------------------------------------------- samples

ITEMS: list[Any] = [
    SystemMessageItem(item_id="sys_1", content=[InputText(text="You are terse.")]),
    UserMessageItem(
        item_id="user_1",
        previous_item_id="sys_1",
        content=[
            InputText(text="What's the weather in Paris?"),
            InputAudio(transcript="and in Lyon", audio=None),
            InputImage(image_url="https://example.com/map.png", detail="low"),
        ],
    ),
    AssistantMessageItem(
        item_id="asst_1",
        previous_item_id="user_1",
        status="completed",
        content=[AssistantText(text="Sunny."), AssistantAudio(transcript="Sunny, 24 °C.")],
    ),
    AssistantMessageItem(
        item_id="asst_2",
        status="in_progress",
        content=[
            AssistantText(type="output_text", text="Rain"),
            AssistantAudio(type="output_audio", transcript="Rain later"),
        ],
    ),
    RealtimeToolCallItem(
        item_id="tool_1",
        previous_item_id="asst_1",
        call_id="call_1",
        status="completed",
        arguments='{"city": "Paris"}',
        name="get_weather",
        output="sunny",
    ),
    # extra="allow": unknown server fields are kept and must survive too
    UserMessageItem(item_id="user_2", content=[InputText(text="hi")], object="realtime.item"),
]

AGENT = AgentRef(name="triage")
OTHER_AGENT = AgentRef(name="billing")
TOOL = ToolRef(name="get_weather")
TOOL_CALL = RealtimeModelToolCallEvent(
    name="get_weather",
    call_id="call_1",
    arguments='{"city": "Paris"}',
    id="item_9",
    previous_item_id="item_8",
)
MODEL_AUDIO = RealtimeModelAudioEvent(
    data=AUDIO, response_id="resp_1", item_id="item_1", content_index=0
)
GUARDRAIL_RESULT = OutputGuardrailResult(
    guardrail=GuardrailRef(name="no_profanity"),
    agent=AGENT,
    agent_output="darn it",
    tripwire_triggered=True,
    output_info={"score": 0.93, "words": ["darn"], "nested": {"ok": None, "n": -(2**40)}},
)

MODEL_EVENTS: list[Any] = [
    RealtimeModelErrorEvent(
        error={"message": "bad", "type": "invalid_request_error", "code": None, "param": "x"}
    ),
    TOOL_CALL,
    RealtimeModelToolCallEvent(name="noop", call_id="call_2", arguments="{}"),
    MODEL_AUDIO,
    RealtimeModelAudioInterruptedEvent(item_id="item_1", content_index=0),
    RealtimeModelAudioDoneEvent(item_id="item_1", content_index=1),
    RealtimeModelInputAudioTranscriptionCompletedEvent(item_id="item_2", transcript="héllo ✓"),
    RealtimeModelInputAudioTimeoutTriggeredEvent(
        item_id="item_3", audio_start_ms=100, audio_end_ms=5100
    ),
    RealtimeModelTranscriptDeltaEvent(item_id="item_1", delta="Sun", response_id="resp_1"),
    *[RealtimeModelItemUpdatedEvent(item=item) for item in ITEMS],
    RealtimeModelItemDeletedEvent(item_id="item_4"),
    RealtimeModelConnectionStatusEvent(status="connected"),
    RealtimeModelTurnStartedEvent(response_id="resp_2"),
    RealtimeModelTurnEndedEvent(response_id="resp_2", status="cancelled"),
    RealtimeModelOtherEvent(data={"type": "rate_limits.updated", "rate_limits": [{"limit": 5}]}),
    RealtimeModelExceptionEvent(message="boom", exception_type="ValueError", context="send"),
    RealtimeModelRawServerEvent(
        data={
            "type": "response.output_audio.delta",
            "delta": "AAEC",
            "nested": {"list": [1, 2.5, True, None, "x"], "empty": {}},
        }
    ),
    RealtimeModelEndOfStreamEvent(),
    RealtimeModelOutputTextDeltaEvent(item_id="item_t", delta="hi", response_id="resp_3"),
    RealtimeModelCachedTokensDetails(text_tokens=1, audio_tokens=2, image_tokens=None),
    RealtimeModelOutputTokensDetails(text_tokens=3, audio_tokens=4),
    RealtimeModelInputTokensDetails(
        text_tokens=5, cached_tokens=1, cached_tokens_details=RealtimeModelCachedTokensDetails(1)
    ),
    RealtimeModelUsageEvent(
        usage={"requests": 1, "input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
        input_tokens_details=RealtimeModelInputTokensDetails(text_tokens=5),
        output_tokens_details=RealtimeModelOutputTokensDetails(audio_tokens=7),
    ),
]

SESSION_EVENTS: list[Any] = [
    AGENT,
    TOOL,
    GuardrailRef(name="no_profanity"),
    GUARDRAIL_RESULT,
    RealtimeAgentStartEvent(agent=AGENT),
    RealtimeAgentEndEvent(agent=AGENT),
    RealtimeHandoffEvent(from_agent=AGENT, to_agent=OTHER_AGENT),
    RealtimeToolStart(agent=AGENT, tool=TOOL, arguments='{"city": "Paris"}', call_id="call_1"),
    RealtimeToolEnd(agent=AGENT, tool=TOOL, output="sunny", arguments="{}", call_id="call_1"),
    RealtimeToolApprovalRequired(agent=AGENT, tool=TOOL, arguments="{}", call_id="call_1"),
    *[RealtimeRawModelEvent(data=event) for event in MODEL_EVENTS],
    RealtimeAudio(audio=MODEL_AUDIO, item_id="item_1", content_index=0),
    RealtimeAudioEnd(item_id="item_1", content_index=0),
    RealtimeAudioInterrupted(item_id="item_1", content_index=0),
    RealtimeError(error={"message": "tool failed", "type": "tool_error", "code": 3}),
    RealtimeHistoryUpdated(history=list(ITEMS)),
    RealtimeHistoryUpdated(),
    *[RealtimeHistoryAdded(item=item) for item in ITEMS],
    RealtimeGuardrailTripped(guardrail_results=[GUARDRAIL_RESULT], message="darn it"),
    RealtimeInputAudioTimeoutTriggered(item_id="item_5", audio_start_ms=0, audio_end_ms=9000),
    RealtimeEventsLost(missed=17),
    RealtimeSessionRecovered(reason="actor_died", items_restored=40, events_lost=3),
    RealtimeSessionRecovered(reason="drained", items_restored=2, events_lost=0),
    UsageTotals(requests=1, input_tokens=5, audio_out_seconds=0.25),
    SessionUsage(tool_calls=2, by_agent={"A": UsageTotals(tool_calls=2)}),
    RealtimeUsageUpdated(SessionUsage(output_tokens=9, by_agent={"A": UsageTotals(9)})),
]

SESSION_SETTINGS: dict[str, Any] = {
    "model_name": "gpt-realtime",
    "instructions": "Be brief.",
    "modalities": ["text", "audio"],
    "output_modalities": ["audio"],
    "voice": "alloy",
    "speed": 1.25,
    "input_audio_format": "pcm16",
    "output_audio_format": "g711_ulaw",
    "input_audio_transcription": {"model": "whisper-1", "language": "fr"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 200},
    "tool_choice": "auto",
    "max_output_tokens": "inf",
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ],
}

MODEL_INPUTS: list[Any] = [
    RealtimeModelSendRawMessage(message={"type": "response.create", "response": {}}),
    RealtimeModelSendUserInput(user_input="hello"),
    RealtimeModelSendUserInput(
        user_input={
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        }
    ),
    RealtimeModelSendAudio(audio=AUDIO),
    RealtimeModelSendAudio(audio=b"", commit=True),
    RealtimeModelSendToolOutput(tool_call=TOOL_CALL, output="sunny", start_response=False),
    RealtimeModelSendInterrupt(),
    RealtimeModelSendInterrupt(force_response_cancel=True),
    RealtimeModelSendSessionUpdate(),
    RealtimeModelSendSessionUpdate(session_settings=SESSION_SETTINGS),  # type: ignore[arg-type]
    RealtimeModelSendSessionUpdate(
        session_settings={"turn_detection": None, "max_output_tokens": 4096}
    ),
]

SAMPLES: list[Any] = SESSION_EVENTS + MODEL_EVENTS + MODEL_INPUTS


def exported_dataclasses() -> list[type[Any]]:
    found = []
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                found.append(obj)
    return found


def roundtrip(value: Any) -> Any:
    data = wire.encode(value)
    assert type(data) is bytes
    return wire.decode(data)


def ext(code: int, payload: Any) -> bytes:
    """A message holding one extension value with ``payload`` packed as its data."""
    return msgpack.packb(msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True)))


# --------------------------------------------------------------------------- registry


def test_every_exported_dataclass_is_registered() -> None:
    classes = exported_dataclasses()
    assert len(classes) == 52  # 24 session (+ usage), 22 model events (+ usage details), 6 inputs
    missing = [cls.__qualname__ for cls in classes if wire.REGISTRY.get(cls.__name__) is not cls]
    assert missing == [], f"add these to ray_realtime.wire._DATACLASSES: {missing}"
    # and the session log's internal history delta (ray_realtime.core.history_log)
    assert set(wire.REGISTRY.values()) == set(classes) | {HistoryDelta}


def test_every_exported_dataclass_has_a_roundtrip_sample() -> None:
    sampled = {type(sample) for sample in SAMPLES}
    assert [c.__qualname__ for c in exported_dataclasses() if c not in sampled] == []


def test_samples_cover_every_item_and_content_class() -> None:
    content = {type(part) for item in ITEMS for part in getattr(item, "content", [])}
    assert {type(item) for item in ITEMS} >= {
        SystemMessageItem,
        UserMessageItem,
        AssistantMessageItem,
        RealtimeToolCallItem,
    }
    assert content == {InputText, InputAudio, InputImage, AssistantText, AssistantAudio}
    # every pydantic model the items module exports is one of the above
    models = {
        obj
        for name in history_items.__all__
        if isinstance(obj := getattr(history_items, name), type)
    }
    # RealtimeResponse (the SDK's name) groups items; no event carries it.
    assert models == {type(item) for item in ITEMS} | content | {history_items.RealtimeResponse}


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        wire.REGISTRY["x"] = AgentRef  # type: ignore[index]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_dataclass_roundtrip(sample: Any) -> None:
    decoded = roundtrip(sample)
    assert type(decoded) is type(sample)
    assert decoded == sample
    assert getattr(decoded, "type", None) == getattr(sample, "type", None)


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: f"{type(i).__name__}-{i.item_id}")
def test_item_roundtrip(item: Any) -> None:
    decoded = roundtrip(item)
    assert type(decoded) is type(item)
    assert decoded == item
    assert [type(p) for p in getattr(decoded, "content", [])] == [
        type(p) for p in getattr(item, "content", [])
    ]


def test_history_roundtrip_keeps_every_class() -> None:
    event = RealtimeHistoryUpdated(history=list(ITEMS))
    decoded = roundtrip(event)
    assert decoded.history == ITEMS
    assert [type(i) for i in decoded.history] == [type(i) for i in ITEMS]
    assert decoded.history[-1].object == "realtime.item"  # an extra field


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        -0.0,
        1e300,
        "",
        "héllo ✓ \x00",
        b"",
        b"\x00\xff",
        [],
        {},
        [1, "a", b"b", None, [2.5, {"k": [True]}]],
        {"a": {"b": {"c": [b"\x01", {"d": None}]}}},
    ],
    ids=repr,
)
def test_plain_value_roundtrip(value: Any) -> None:
    decoded = roundtrip(value)
    assert decoded == value
    assert type(decoded) is type(value)


def test_mixed_nesting_roundtrip() -> None:
    value = {
        "events": [RealtimeAudio(audio=MODEL_AUDIO, item_id="i", content_index=1)],
        "item": ITEMS[1],
        "inputs": MODEL_INPUTS,
        "n": 3,
    }
    assert roundtrip(value) == value


def test_tuples_come_back_as_lists() -> None:
    assert roundtrip((1, (2, 3), {"k": (4,)})) == [1, [2, 3], {"k": [4]}]


def test_tuple_typed_dataclass_field_comes_back_as_tuple() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Span:
        bounds: tuple[int, int]
        maybe: tuple[str, ...] | None
        loose: list[int]

    wire._register(Span, "TestSpan")
    try:
        decoded = roundtrip(Span(bounds=(1, 2), maybe=("a",), loose=[3]))
        assert decoded == Span(bounds=(1, 2), maybe=("a",), loose=[3])
        assert type(decoded.bounds) is tuple and type(decoded.maybe) is tuple
        assert roundtrip(Span(bounds=(1, 2), maybe=None, loose=[])).maybe is None
        hash(decoded.bounds)
    finally:
        wire._unregister(Span)
    assert "TestSpan" not in wire.REGISTRY


def test_unslotted_dataclass_goes_through_its_constructor() -> None:
    @dataclasses.dataclass(frozen=True)
    class Plain:
        a: int
        pair: tuple[int, int]
        type: str = "plain"

    wire._register(Plain)
    try:
        decoded = roundtrip(Plain(a=1, pair=(2, 3), type="other"))
        assert decoded == Plain(a=1, pair=(2, 3), type="other")  # not a Literal: sent
        assert type(decoded.pair) is tuple
    finally:
        wire._unregister(Plain)


def test_decoded_events_are_real_frozen_instances() -> None:
    decoded = roundtrip(RealtimeToolStart(agent=AGENT, tool=TOOL, arguments="{}"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.arguments = "x"
    assert hash(decoded.agent) == hash(AGENT)
    assert dataclasses.replace(decoded, call_id="c").call_id == "c"
    assert decoded.type == "tool_start"


def test_constant_type_field_is_not_sent() -> None:
    data = wire.encode(RealtimeAgentStartEvent(agent=AGENT))
    assert b"agent_start" not in data
    assert b"RealtimeAgentStartEvent" in data


def test_bytes_stay_raw_bytes() -> None:
    for value in (MODEL_AUDIO, RealtimeAudio(audio=MODEL_AUDIO, item_id="i", content_index=0)):
        data = wire.encode(value)
        assert AUDIO in data  # the PCM itself, not base64
        assert len(data) < len(AUDIO) + 100
    decoded = roundtrip(RealtimeModelSendAudio(audio=AUDIO))
    assert type(decoded.audio) is bytes and decoded.audio == AUDIO
    assert roundtrip(bytearray(b"ab")) == b"ab"
    assert roundtrip(memoryview(b"cd")) == b"cd"


def test_decode_accepts_bytes_like() -> None:
    data = wire.encode(MODEL_AUDIO)
    assert wire.decode(bytearray(data)) == MODEL_AUDIO
    assert wire.decode(memoryview(data)) == MODEL_AUDIO


def test_plain_subclasses_come_back_as_the_plain_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    assert roundtrip([Color.RED]) == [1]


# --------------------------------------------------------------------------- batches


def audio_events(n: int) -> list[Any]:
    return [
        RealtimeAudio(
            audio=RealtimeModelAudioEvent(
                data=AUDIO, response_id="resp_1", item_id="item_1", content_index=0
            ),
            item_id="item_1",
            content_index=0,
        )
        for _ in range(n)
    ]


def test_events_roundtrip() -> None:
    events = audio_events(256) + SESSION_EVENTS
    assert wire.decode_events(wire.encode_events(events)) == events
    assert wire.decode_events(wire.encode_events([])) == []
    assert wire.decode_events(wire.encode_events(tuple(events[:3]))) == events[:3]


def test_batch_roundtrip() -> None:
    events = audio_events(256) + SESSION_EVENTS
    data = wire.encode_batch(events, 1234, 5, False)
    decoded, last_seq, missed, closed = wire.decode_batch(data)
    assert decoded == events
    assert (last_seq, missed, closed) == (1234, 5, False)
    assert wire.decode_batch(wire.encode_batch([], 0, 0, True)) == ([], 0, 0, True)


@pytest.mark.parametrize(
    "args",
    [
        ("not a list", 1, 0, False),
        ([], -1, 0, False),
        ([], 1, -2, False),
        ([], True, 0, False),
        ([], 1.0, 0, False),
        ([], 1, 0, 1),
    ],
)
def test_encode_batch_rejects_bad_arguments(args: tuple[Any, ...]) -> None:
    with pytest.raises(SerializationError):
        wire.encode_batch(*args)


def test_encode_events_rejects_non_list() -> None:
    with pytest.raises(SerializationError, match="dict"):
        wire.encode_events({"a": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        {"events": []},
        [[], 1, 0],
        [[], 1, 0, False, 9],
        ["x", 1, 0, False],
        [[], -1, 0, False],
        [[], 1, 0.5, False],
        [[], True, 0, False],
        [[], 1, 0, 1],
    ],
    ids=repr,
)
def test_decode_batch_rejects_bad_shapes(value: Any) -> None:
    with pytest.raises(ProtocolError):
        wire.decode_batch(msgpack.packb(value))


def test_decode_events_rejects_non_array() -> None:
    with pytest.raises(ProtocolError):
        wire.decode_events(wire.encode({"a": 1}))


# --------------------------------------------------------------------------- output_info


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque 7>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def guardrail_result(info: Any) -> OutputGuardrailResult:
    return OutputGuardrailResult(
        guardrail=GuardrailRef(name="g"),
        agent=AGENT,
        agent_output="text",
        tripwire_triggered=False,
        output_info=info,
    )


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (Opaque(), "<Opaque 7>"),
        ({"a": Opaque()}, "{'a': <Opaque 7>}"),
        ({1: "int key"}, "{1: 'int key'}"),
        ({3, 4}, "{3, 4}"),
        (1 << (8 * wire.MAX_INT_BYTES), "<unrepresentable int>"),
        (BadRepr(), "<unrepresentable tests.test_wire.BadRepr>"),
    ],
    ids=["object", "nested", "int-key", "set", "huge-int", "bad-repr"],
)
def test_unsupported_output_info_falls_back_to_repr(info: Any, expected: str) -> None:
    event = RealtimeGuardrailTripped(guardrail_results=[guardrail_result(info)], message="m")
    batch = [*audio_events(2), event, RealtimeEventsLost(missed=1)]
    decoded = wire.decode_events(wire.encode_events(batch))
    assert decoded[:2] == batch[:2] and decoded[3] == batch[3]
    result = decoded[2].guardrail_results[0]
    assert result.output_info == expected
    assert result == dataclasses.replace(guardrail_result(None), output_info=expected)


def test_plain_output_info_is_kept() -> None:
    info = {"score": 1, "tags": ["a"], "raw": b"\x00"}
    assert roundtrip(guardrail_result(info)).output_info == info


# --------------------------------------------------------------------------- encode errors


@dataclasses.dataclass(frozen=True)
class Unregistered:
    x: int


class AgentRefSubclass(AgentRef):
    __slots__ = ()


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (Opaque(), "tests.test_wire.Opaque"),
        (Unregistered(1), "Unregistered"),
        (AgentRefSubclass(name="a"), "AgentRefSubclass"),
        (InputText(text="content alone is not an item"), "InputText"),
        (RealtimeError(error={"message": "x", "cause": Opaque()}), "Opaque"),
        ([1, [2, {"deep": frozenset()}]], "frozenset"),
        (RealtimeRawModelEvent(data=Unregistered(2)), "Unregistered"),  # type: ignore[arg-type]
        (RealtimeHistoryUpdated(history=[ITEMS[0], "not an item", Opaque()]), "Opaque"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unknown_type_raises_serialization_error_naming_it(value: Any, name: str) -> None:
    with pytest.raises(SerializationError, match=name):
        wire.encode(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {"ok": {None: 1}},
        [{b"bytes": 1}],
        RealtimeError(error={"nested": [{2: "x"}]}),
        RealtimeModelSendSessionUpdate(session_settings={"tools": [{(1, 2): 3}]}),  # type: ignore[typeddict-item]
        UserMessageItem(item_id="u", meta={5: "extra field with an int key"}),
    ],
    ids=lambda v: type(v).__name__,
)
def test_non_str_dict_key_is_refused_at_encode(value: Any) -> None:
    with pytest.raises(SerializationError, match="keys must be str"):
        wire.encode(value)


def test_too_large_int_and_cycles_raise_serialization_error() -> None:
    with pytest.raises(SerializationError, match="integer"):
        wire.encode(1 << (8 * wire.MAX_INT_BYTES))
    with pytest.raises(SerializationError, match="integer"):
        wire.encode(RealtimeError(error={"n": -(1 << (8 * wire.MAX_INT_BYTES))}))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        wire.encode(loop)
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(SerializationError):
        wire.encode(RealtimeModelOtherEvent(data=cyclic))


def test_encode_refuses_a_message_over_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_MESSAGE_BYTES", 1000)
    assert wire.decode(wire.encode(b"x" * 900)) == b"x" * 900
    with pytest.raises(SerializationError, match="1000"):
        wire.encode(RealtimeModelSendAudio(audio=AUDIO))


# --------------------------------------------------------------------------- decode errors


def test_truncated_messages_raise_protocol_error() -> None:
    data = wire.encode_batch([*SESSION_EVENTS, *MODEL_INPUTS], 9, 0, False)
    for cut in [0, 1, 2, 5, 17, len(data) // 3, len(data) // 2, len(data) - 1]:
        with pytest.raises(ProtocolError):
            wire.decode_batch(data[:cut])


def test_every_truncation_of_an_event_raises_protocol_error() -> None:
    data = wire.encode(RealtimeHistoryUpdated(history=ITEMS[:2]))
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            wire.decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # a byte msgpack never uses
        b"\x00\x00",  # trailing data
        b"\xa3ab",  # str shorter than declared
        b"\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\x81\x01\x02",  # int map key (strict_map_key)
        b"\x81\x90\x02",  # array map key
        b"\xd4\x09\x00",  # unknown extension type 9
        b"\xd4\x02\x00",  # an item whose payload is not a map
        b"\x91" * 100_000 + b"\xc0",  # nested too deeply
    ],
    ids=repr,
)
def test_malformed_bytes_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        wire.decode(data)


def test_random_garbage_never_leaks_another_exception() -> None:
    rng = random.Random(1234)
    valid = wire.encode_events(SAMPLES)
    for _ in range(2000):
        if rng.random() < 0.5:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        else:  # flip a few bytes of a valid message
            mutable = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutable[rng.randrange(len(mutable))] = rng.getrandbits(8)
            data = bytes(mutable)
        try:
            wire.decode(data)
        except ProtocolError:
            pass


def test_non_bytes_input_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        wire.decode("not bytes")  # type: ignore[arg-type]


def test_unknown_tag_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="RealtimeTeleportEvent"):
        wire.decode(ext(1, ["RealtimeTeleportEvent", "x"]))
    with pytest.raises(ProtocolError, match="unknown dataclass tag"):
        wire.decode(ext(1, [["unhashable"], "x"]))
    with pytest.raises(ProtocolError, match="unknown dataclass tag"):
        wire.decode(ext(1, [7, "x"]))


@pytest.mark.parametrize(
    "payload",
    [
        ["AgentRef"],
        ["AgentRef", "a", "b"],
        ["RealtimeAudioEnd", "item"],
        # the constant ``type`` is not a field on the wire: sending it is one too many
        ["RealtimeAgentStartEvent", ["AgentRef"], "agent_start"],
    ],
    ids=lambda p: f"{p[0]}-{len(p) - 1}",
)
def test_wrong_field_count_raises_protocol_error(payload: list[Any]) -> None:
    with pytest.raises(ProtocolError, match="field values"):
        wire.decode(ext(1, payload))


@pytest.mark.parametrize("payload", ["AgentRef", [], {"tag": "AgentRef"}], ids=repr)
def test_dataclass_payload_must_be_a_tagged_array(payload: Any) -> None:
    with pytest.raises(ProtocolError):
        wire.decode(ext(1, payload))


def test_invalid_item_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="history item"):
        wire.decode(ext(2, {"item_id": "x", "type": "message", "role": "nobody"}))
    with pytest.raises(ProtocolError, match="history item"):
        wire.decode(ext(2, {"role": "user"}))  # no item_id


def test_nested_error_inside_a_batch_is_a_protocol_error() -> None:
    bad = msgpack.ExtType(1, msgpack.packb(["AgentRef"]))
    data = msgpack.packb(
        [[msgpack.ExtType(1, msgpack.packb(["RealtimeAgentEndEvent", bad]))], 1, 0, False]
    )
    with pytest.raises(ProtocolError, match="AgentRef"):
        wire.decode_batch(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc6\xff\xff\xff\xff",  # bin 32 of 4 GiB
        b"\xdb\xff\xff\xff\xff",  # str 32 of 4 GiB
        b"\xc9\xff\xff\xff\xff\x01",  # ext 32 of 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array of 4 G elements
        b"\xdf\xff\xff\xff\xff",  # map of 4 G entries
        b"\xdd\x04\x00\x00\x00" + b"\xc0" * 64,  # 64 M elements, 64 given
        # inside an extension payload: bounded by the payload, not the message
        msgpack.packb(
            [msgpack.ExtType(1, b"\xdd\x00\x10\x00\x00" + b"\xc0" * 100), b"\x00" * 10_000]
        ),
    ],
    ids=["bin32", "str32", "ext32", "array32", "map32", "array-short", "in-ext"],
)
def test_huge_declared_length_is_rejected_without_allocating(data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            wire.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_message_over_the_bound_is_rejected_before_parsing() -> None:
    data = bytes(wire.MAX_MESSAGE_BYTES + 1)
    with pytest.raises(ProtocolError, match="limit"):
        wire.decode(data)
    assert wire.MAX_MESSAGE_BYTES == 64 * 1024 * 1024


def test_forged_type_cannot_be_injected() -> None:
    decoded = wire.decode(ext(1, ["RealtimeAudioEnd", "item", 0]))
    assert decoded == RealtimeAudioEnd(item_id="item", content_index=0)
    assert decoded.type == "audio_end"


# --------------------------------------------------------------------------- nesting depth


def nested_raw_event(levels: int) -> Any:
    """``levels`` dataclasses inside each other: RealtimeRawModelEvent(...(AgentRef))."""
    value: Any = AGENT
    for _ in range(levels - 1):
        value = RealtimeRawModelEvent(data=value)
    return value


def nested_ext_message(levels: int) -> bytes:
    payload = msgpack.packb(None)
    for _ in range(levels):
        array = b"\x92" + msgpack.packb("RealtimeRawModelEvent") + payload
        payload = msgpack.packb(msgpack.ExtType(1, array))
    return payload


def test_nesting_up_to_max_depth_roundtrips() -> None:
    value = nested_raw_event(wire.MAX_DEPTH)
    assert roundtrip(value) == value
    assert wire.decode(nested_ext_message(wire.MAX_DEPTH)) is not None


def test_nesting_over_max_depth_is_refused_both_ways() -> None:
    with pytest.raises(SerializationError, match="nested"):
        wire.encode(nested_raw_event(wire.MAX_DEPTH + 1))
    with pytest.raises(ProtocolError, match="nested"):
        wire.decode(nested_ext_message(wire.MAX_DEPTH + 1))
    # far deeper: would overflow the C stack without the bound
    with pytest.raises(ProtocolError, match="nested"):
        wire.decode(nested_ext_message(5000))


def test_max_depth_decodes_in_a_small_thread_stack() -> None:
    result: list[Any] = []
    previous = threading.stack_size(1024 * 1024)
    try:
        thread = threading.Thread(
            target=lambda: result.append(wire.decode(nested_ext_message(wire.MAX_DEPTH)))
        )
        thread.start()
        thread.join()
    finally:
        threading.stack_size(previous)
    assert len(result) == 1


def test_depth_survives_a_repr_fallback_midway() -> None:
    # output_info fails two dataclasses deep; the encode goes on with the right depth
    opaque_deep = RealtimeRawModelEvent(data=RealtimeRawModelEvent(data=Opaque()))  # type: ignore[arg-type]
    inner = guardrail_result([opaque_deep])
    event = RealtimeGuardrailTripped(guardrail_results=[inner, inner], message="m")
    value = nested_raw_event(wire.MAX_DEPTH)
    decoded = roundtrip([event, value, event])
    assert decoded[1] == value
    for tripped in (decoded[0], decoded[2]):
        for result in tripped.guardrail_results:
            assert result.output_info == repr([opaque_deep])
            assert "<Opaque 7>" in result.output_info


def test_concurrent_encodes_and_decodes_do_not_interfere() -> None:
    batch = [*audio_events(8), *SESSION_EVENTS, nested_raw_event(wire.MAX_DEPTH)]

    def work(_: int) -> bool:
        return all(wire.decode_events(wire.encode_events(batch)) == batch for _ in range(20))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(8)))


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "number",
    [2**64, 2**64 - 1, -(2**63) - 1, -(2**63), 2**1000, -(2**4000), 10**4299],
    ids=["2^64", "2^64-1", "-2^63-1", "-2^63", "2^1000", "-2^4000", "4300-digits"],
)
def test_integers_beyond_64_bits_roundtrip(number: int) -> None:
    # A model server may send such an integer in JSON; with raw events on it reached
    # encode_batch, which raised on every read that included it.
    event = RealtimeModelRawServerEvent(data={"type": "x", "n": number, "list": [number]})
    data = wire.encode_batch([RealtimeRawModelEvent(data=event)], 1, 0, False)
    (decoded,), _, _, _ = wire.decode_batch(data)
    assert decoded.data.data == {"type": "x", "n": number, "list": [number]}
    assert type(decoded.data.data["n"]) is int


def test_integers_at_the_size_bound() -> None:
    bits = 8 * wire.MAX_INT_BYTES - 1
    for number in (-(1 << bits), (1 << bits) - 1):
        data = wire.encode(number)
        assert len(data) == 4 + wire.MAX_INT_BYTES  # ext 16: marker, length, code, payload
        assert wire.decode(data) == number
    for number in (-(1 << bits) - 1, 1 << bits):
        with pytest.raises(SerializationError, match="integer"):
            wire.encode(number)


def test_an_oversized_integer_payload_is_a_protocol_error() -> None:
    payload = b"\x01" * (wire.MAX_INT_BYTES + 1)
    with pytest.raises(ProtocolError, match="integer"):
        wire.decode(msgpack.packb(msgpack.ExtType(3, payload)))
    assert wire.decode(msgpack.packb(msgpack.ExtType(3, b""))) == 0


def test_decoded_items_are_never_shared_between_decodes() -> None:
    item = UserMessageItem(item_id="item_1", content=[InputText(text="hello")])
    data = wire.encode(RealtimeHistoryUpdated(history=[item]))
    first = wire.decode(data).history[0]
    second = wire.decode(data).history[0]
    assert first == second == item
    first.content[0].text = "changed by one reader"
    first.content.append(InputText(text="more"))
    first.previous_item_id = "item_0"
    third = wire.decode(data).history[0]
    assert second == third == item
    assert second.content[0] is not third.content[0]


def test_items_are_shared_within_one_message_like_in_process_events() -> None:
    item = AssistantMessageItem(item_id="item_2", content=[AssistantText(text="hi")])
    data = wire.encode_events([RealtimeHistoryUpdated([item]), RealtimeHistoryUpdated([item])])
    a, b = wire.decode_events(data)
    assert a.history[0] is b.history[0]
    assert a.history[0] == item


def test_item_extra_fields_are_copied_deeply() -> None:
    item = history_items.item_from_dict(
        {"item_id": "i", "type": "message", "role": "user", "content": [], "meta": {"k": [1]}}
    )
    data = wire.encode(item)
    first = wire.decode(data)
    first.meta["k"].append(2)
    assert wire.decode(data).meta == {"k": [1]}


def _retained_after(work: Any) -> int:
    """Bytes still allocated after ``work()`` returned and its result was dropped."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        work()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_item_caches_are_bounded_by_bytes() -> None:
    # 300 distinct 1 MiB items left 600 MiB resident: the caches counted items, not bytes.
    # Here 400 distinct 100 KB items (40 MB of payload, cached both ways) must not stay
    # (what stays besides the caches: msgpack and pydantic buffers, a few MiB).
    def work() -> None:
        for i in range(400):
            item = UserMessageItem(item_id=f"big_{i}", content=[InputText(text=f"{i:03}" * 33_000)])
            wire.decode(wire.encode(item))

    retained = _retained_after(work)
    assert retained < 2 * wire.ITEM_CACHE_BYTES + (8 << 20), f"{retained / 2**20:.0f} MiB"


def test_a_message_of_empty_maps_is_refused_early() -> None:
    # 1 MiB of empty maps (one byte each) decoded to 73 MiB of dicts.
    n = 1 << 20
    data = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="too many arrays/maps"):
            wire.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak / 2**20:.0f} MiB at peak"


@pytest.mark.parametrize(
    "filler", [b"\x90", b"\x91\xc0", b"\x81\xa0\x80"], ids=["[]", "[nil]", "{'':{}}"]
)
def test_container_allowance_counts_inside_extension_payloads(filler: bytes) -> None:
    count = 200_000
    inner = b"\xdd" + count.to_bytes(4, "big") + filler * count
    payload = b"\x92" + msgpack.packb("RealtimeModelOtherEvent") + inner
    with pytest.raises(ProtocolError, match="too many arrays/maps"):
        wire.decode(msgpack.packb(msgpack.ExtType(1, payload)))


def test_ordinary_messages_are_far_from_the_container_allowance() -> None:
    history = [UserMessageItem(item_id=f"i{i}", content=[InputText(text="hi")]) for i in range(500)]
    batch = [RealtimeHistoryUpdated(history), *audio_events(50)]
    assert wire.decode_events(wire.encode_events(batch)) == batch
    nested = {"a": [[[]]] * 1000, "b": [{}] * 1000}
    assert wire.decode(wire.encode(nested)) == nested
