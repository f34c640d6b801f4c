"""Every session event can be built from plain data, pickles, and holds no
live objects."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from ray_realtime.types import events as ev
from ray_realtime.types import model_events as me
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    InputAudio,
    RealtimeToolCallItem,
    UserMessageItem,
)

EVENT_CLASSES: list[type] = list(typing.get_args(ev.RealtimeSessionEvent))

AGENT = ev.AgentRef("Alpha")
TOOL = ev.ToolRef("lookup")
USER = UserMessageItem(item_id="u1", content=[InputAudio(transcript="hi")])
ASSISTANT = AssistantMessageItem(
    item_id="a1", previous_item_id="u1", content=[AssistantAudio(transcript="hello")]
)
TOOL_ITEM = RealtimeToolCallItem(
    item_id="t1", call_id="c1", name="lookup", arguments="{}", output="42"
)
AUDIO = me.RealtimeModelAudioEvent(
    data=b"\x00\x01", response_id="r1", item_id="a1", content_index=0
)
GUARDRAIL_RESULT = ev.OutputGuardrailResult(
    ev.GuardrailRef("no_secrets"), AGENT, "the secret", True, {"score": 0.9, "tags": ["x"]}
)

SAMPLES: dict[type, Any] = {
    ev.RealtimeAgentStartEvent: ev.RealtimeAgentStartEvent(AGENT),
    ev.RealtimeAgentEndEvent: ev.RealtimeAgentEndEvent(AGENT),
    ev.RealtimeHandoffEvent: ev.RealtimeHandoffEvent(AGENT, ev.AgentRef("Beta")),
    ev.RealtimeToolStart: ev.RealtimeToolStart(AGENT, TOOL, '{"q": 1}', "c1"),
    ev.RealtimeToolEnd: ev.RealtimeToolEnd(AGENT, TOOL, "42", '{"q": 1}', "c1"),
    ev.RealtimeToolApprovalRequired: ev.RealtimeToolApprovalRequired(AGENT, TOOL, "{}", "c1"),
    ev.RealtimeRawModelEvent: ev.RealtimeRawModelEvent(me.RealtimeModelItemUpdatedEvent(ASSISTANT)),
    ev.RealtimeAudio: ev.RealtimeAudio(AUDIO, "a1", 0),
    ev.RealtimeAudioEnd: ev.RealtimeAudioEnd("a1", 0),
    ev.RealtimeAudioInterrupted: ev.RealtimeAudioInterrupted("a1", 0),
    ev.RealtimeError: ev.RealtimeError({"message": "bad", "type": "x", "code": None}),
    ev.RealtimeHistoryUpdated: ev.RealtimeHistoryUpdated([USER, ASSISTANT, TOOL_ITEM]),
    ev.RealtimeHistoryAdded: ev.RealtimeHistoryAdded(ASSISTANT),
    ev.RealtimeGuardrailTripped: ev.RealtimeGuardrailTripped([GUARDRAIL_RESULT], "the secret"),
    ev.RealtimeInputAudioTimeoutTriggered: ev.RealtimeInputAudioTimeoutTriggered("u1", 10, 20),
    ev.RealtimeEventsLost: ev.RealtimeEventsLost(3),
    ev.RealtimeSessionRecovered: ev.RealtimeSessionRecovered("node_lost", 2, 5),
}

PLAIN = (str, int, float, bool, type(None), bytes)


def live_objects(value: Any, path: str = "event") -> list[str]:
    """Paths of values that are not plain data, dataclasses or pydantic models."""
    if isinstance(value, PLAIN):
        return []
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in live_objects(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        found = []
        for k, v in value.items():
            if not isinstance(k, str):
                found.append(f"{path} key {k!r}")
            found.extend(live_objects(v, f"{path}[{k!r}]"))
        return found
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            p
            for f in dataclasses.fields(value)
            for p in live_objects(getattr(value, f.name), f"{path}.{f.name}")
        ]
    if isinstance(value, BaseModel):
        return [
            p
            for name in [*type(value).model_fields, *(value.model_extra or {})]
            for p in live_objects(getattr(value, name), f"{path}.{name}")
        ]
    return [f"{path}: {type(value).__name__}"]


def test_union_matches_all() -> None:
    """Every event class in __all__ is in the union and has a sample."""
    exported_events = {
        getattr(ev, name)
        for name in ev.__all__
        if isinstance(getattr(ev, name), type)
        and dataclasses.is_dataclass(getattr(ev, name))
        and "type" in {f.name for f in dataclasses.fields(getattr(ev, name))}
    }
    assert exported_events == set(EVENT_CLASSES)
    assert set(SAMPLES) == set(EVENT_CLASSES), "add a sample for the new event"


def test_event_types_are_unique_literals() -> None:
    types = [SAMPLES[cls].type for cls in EVENT_CLASSES]
    assert len(types) == len(set(types)), types


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_event_pickles(cls: type) -> None:
    event = SAMPLES[cls]
    copy = pickle.loads(pickle.dumps(event))
    assert type(copy) is cls
    assert copy == event


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_event_holds_no_live_objects(cls: type) -> None:
    assert live_objects(SAMPLES[cls]) == []


def test_live_object_walk_catches_live_values() -> None:
    assert live_objects(ev.RealtimeError({"message": object()}))
    assert live_objects(ev.OutputGuardrailResult(ev.GuardrailRef("g"), AGENT, "", True, lambda: 0))
    assert live_objects({1: "x"})


def test_events_are_frozen() -> None:
    event = SAMPLES[ev.RealtimeAgentStartEvent]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.agent = ev.AgentRef("other")  # type: ignore[misc]
