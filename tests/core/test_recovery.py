"""The pure parts of model connection recovery: what to replay, when to try
again, what to send after the replay, and the core's bookkeeping around a
loss (a cut response ends visibly; replayed echoes are not news; a reused id
never merges two items). No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.core.outputs import EmitEvent
from ray_realtime.core.recovery import (
    MAX_REPLAY_ID_CHARS,
    after_replay,
    next_reconnect_delay,
    plan_replay,
)
from ray_realtime.core.session_core import SessionCore
from ray_realtime.core.specs import AgentSpec
from ray_realtime.exceptions import ConfigError
from ray_realtime.types import model_events as me
from ray_realtime.types.config import (
    DEFAULT_MODEL_RECONNECT,
    ModelReconnectPolicy,
    resolve_model_reconnect,
    validate_run_config,
)
from ray_realtime.types.events import (
    RealtimeAgentEndEvent,
    RealtimeError,
    RealtimeHistoryAdded,
    RealtimeSessionRecovered,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    InputImage,
    InputText,
    RealtimeItem,
    RealtimeToolCallItem,
    SystemMessageItem,
    UserMessageItem,
)
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
)


def user(item_id: str, text: str) -> UserMessageItem:
    return UserMessageItem(item_id=item_id, content=[InputText(text=text)])


def spoken(item_id: str, transcript: str | None) -> UserMessageItem:
    return UserMessageItem(item_id=item_id, content=[InputAudio(transcript=transcript)])


def said(item_id: str, transcript: str, status: Any = "completed") -> AssistantMessageItem:
    return AssistantMessageItem(
        item_id=item_id, status=status, content=[AssistantAudio(transcript=transcript)]
    )


def call(item_id: str, call_id: str, output: str | None) -> RealtimeToolCallItem:
    return RealtimeToolCallItem(
        item_id=item_id, call_id=call_id, name="get_weather", arguments='{"city":"Oslo"}',
        output=output, status="completed" if output is not None else "in_progress",
    )  # fmt: skip


def created(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "conversation.item.create"
    item: dict[str, Any] = message["item"]
    return item


# ------------------------------------------------------------------ the replay


def test_replay_keeps_order_ids_and_turns_audio_into_transcripts() -> None:
    history: list[RealtimeItem] = [
        SystemMessageItem(item_id="s1", content=[InputText(text="Be brief.")]),
        spoken("u1", "what is the weather"),
        call("c1", "call_1", "sunny"),
        said("a1", "It is sunny."),
        UserMessageItem(
            item_id="u2",
            content=[InputText(text="and this?"), InputImage(image_url="https://x/y.png")],
        ),
        AssistantMessageItem(item_id="a2", content=[AssistantText(text="A cat.")]),
    ]
    plan = plan_replay(history, max_items=100, max_chars=10_000)
    items = [created(m) for m in plan.messages]
    assert items == [
        {"id": "s1", "type": "message", "role": "system",
         "content": [{"type": "input_text", "text": "Be brief."}]},
        {"id": "u1", "type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "what is the weather"}]},
        {"id": "c1", "type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Oslo"}'},
        {"id": "c1_out", "type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"id": "a1", "type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "It is sunny."}]},
        {"id": "u2", "type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "and this?"},
                     {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"id": "a2", "type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "A cat."}]},
    ]  # fmt: skip
    assert plan.item_ids == {"s1", "u1", "c1", "a1", "u2", "a2"}
    assert plan.answered_calls == {"call_1"}
    assert (plan.items_restored, plan.items_left_out) == (6, 0)


def test_replay_leaves_out_what_has_nothing_to_say() -> None:
    history: list[RealtimeItem] = [
        spoken("u1", None),  # audio, transcription off
        said("a1", ""),  # nothing said yet
        call("c1", "call_1", None),  # no output, not pending: lost
        call("c2", "call_2", None),  # still running: its output follows
        RealtimeToolCallItem(item_id="c3", name="x"),  # no call id
    ]
    plan = plan_replay(history, max_items=100, max_chars=10_000, pending_calls={"call_2"})
    assert [created(m) for m in plan.messages] == [
        {"id": "c2", "type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": '{"city":"Oslo"}'},
    ]  # fmt: skip
    assert plan.answered_calls == frozenset()
    assert (plan.items_restored, plan.items_left_out) == (1, 4)


def test_replay_keeps_the_newest_items_within_both_bounds() -> None:
    history: list[RealtimeItem] = [user(f"u{i}", f"message {i:03d}") for i in range(10)]
    by_items = plan_replay(history, max_items=3, max_chars=10_000)
    assert [created(m)["id"] for m in by_items.messages] == ["u7", "u8", "u9"]
    assert (by_items.items_restored, by_items.items_left_out) == (3, 7)
    # Each message is 11 characters: 35 fit three, not four.
    by_chars = plan_replay(history, max_items=100, max_chars=35)
    assert [created(m)["id"] for m in by_chars.messages] == ["u7", "u8", "u9"]
    # A call and its output are one item: kept or left out together.
    with_call: list[RealtimeItem] = [user("u0", "hi"), call("c1", "call_1", "x" * 50)]
    cut = plan_replay(with_call, max_items=100, max_chars=30)
    assert cut.messages == [] and cut.items_left_out == 2


def test_an_id_too_long_for_the_service_is_left_to_the_server() -> None:
    long_id = "i" * (MAX_REPLAY_ID_CHARS + 1)
    plan = plan_replay([user(long_id, "hi")], max_items=10, max_chars=100)
    assert "id" not in created(plan.messages[0])
    assert plan.item_ids == frozenset()


class CountingHistory(list[RealtimeItem]):
    """A history that counts how often its items are looked at."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        type(self).reads += 1
        return super().__getitem__(index)

    def __iter__(self) -> Any:
        for item in super().__iter__():
            type(self).reads += 1
            yield item


def test_replay_looks_at_each_item_once() -> None:
    # Linear by construction, checked without timing: each item read once.
    for n in (10, 1000):
        history = CountingHistory(user(f"u{i}", "hello there") for i in range(n))
        CountingHistory.reads = 0
        plan = plan_replay(history, max_items=n, max_chars=10**9)
        assert plan.items_restored == n
        assert CountingHistory.reads <= n


# ------------------------------------------------------------------- backoff

POLICY: ModelReconnectPolicy = {
    **DEFAULT_MODEL_RECONNECT,
    "max_attempts": 6,
    "max_seconds": 10.0,
    "initial_backoff_seconds": 0.1,
    "max_backoff_seconds": 1.0,
}


def test_first_attempt_is_immediate_then_backoff_doubles_up_to_the_cap() -> None:
    assert next_reconnect_delay(0, 0.0, POLICY, 0.99) == 0.0
    upper = [next_reconnect_delay(n, 0.0, POLICY, 0.999999) for n in range(1, 6)]
    lower = [next_reconnect_delay(n, 0.0, POLICY, 0.0) for n in range(1, 6)]
    assert upper == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0], rel=1e-4)
    assert lower == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5])


def test_jitter_spreads_the_delays() -> None:
    delays = {next_reconnect_delay(3, 0.0, POLICY, r / 10) for r in range(10)}
    assert len(delays) == 10
    assert all(0.2 <= d < 0.4 for d in delays if d is not None)


def test_attempts_and_time_are_bounded() -> None:
    assert next_reconnect_delay(6, 0.0, POLICY, 0.5) is None  # max_attempts
    assert next_reconnect_delay(5, 9.9, POLICY, 0.5) is None  # would pass max_seconds
    assert next_reconnect_delay(1, 9.9, POLICY, 0.5) is not None  # 0.075 s still fits


def test_reconnect_settings_are_checked() -> None:
    assert resolve_model_reconnect({}) == DEFAULT_MODEL_RECONNECT
    policy = resolve_model_reconnect({"model_reconnect": {"max_attempts": 3, "enabled": False}})
    assert policy["max_attempts"] == 3 and policy["enabled"] is False
    for bad in ({"max_attempts": 0}, {"enabled": 1}, {"max_seconds": -1}, {"retries": 2}):
        with pytest.raises(ConfigError, match="model_reconnect"):
            validate_run_config({"model_reconnect": bad})
    with pytest.raises(ConfigError, match="model_reconnect must be a dict"):
        validate_run_config({"model_reconnect": 3})


# --------------------------------------------------------- after the replay

TOOL_CALL = me.RealtimeModelToolCallEvent(name="get_weather", call_id="call_1", arguments="{}")
RESPONSE_CREATE = RealtimeModelSendRawMessage({"type": "response.create"})


def test_a_held_output_the_replay_carried_only_asks_for_the_response() -> None:
    held = [
        RealtimeModelSendToolOutput(TOOL_CALL, "sunny", start_response=True),
        RealtimeModelSendInterrupt(),
        RealtimeModelSendAudio(b"\0\0", commit=False),
    ]
    out = after_replay(held, {"call_1"}, resume_response=False)
    assert out == [RESPONSE_CREATE, RealtimeModelSendAudio(b"\0\0", commit=False)]
    # An output the replay did not carry goes as it is.
    assert after_replay(held[:1], set(), resume_response=False) == held[:1]


def test_a_cut_response_is_asked_again_before_what_came_later() -> None:
    update = RealtimeModelSendSessionUpdate({"instructions": "x"})
    assert after_replay([update], set(), resume_response=True) == [RESPONSE_CREATE, update]
    message = RealtimeModelSendUserInput("hello")
    assert after_replay([message], set(), resume_response=True) == [RESPONSE_CREATE, message]
    assert after_replay([message], set(), resume_response=False) == [message]
    assert after_replay([], set(), resume_response=False) == []


# --------------------------------------------------------- the core around it

AGENT = AgentSpec(name="Assistant", instructions="Be brief.")


def emitted(core: SessionCore) -> list[Any]:
    return [out.event for out in core.drain() if isinstance(out, EmitEvent)]


def test_a_loss_mid_response_ends_the_turn_visibly() -> None:
    core = SessionCore(AGENT)
    core.handle_model_event(me.RealtimeModelTurnStartedEvent(response_id="r1"))
    core.handle_model_event(me.RealtimeModelItemUpdatedEvent(said("a1", "Hel", "in_progress")))
    core.drain()
    assert core.model_connection_lost("socket dropped") is True
    events = emitted(core)
    assert [e.type for e in events] == ["history_updated", "error", "agent_end"]
    assert core.history[0].status == "incomplete"  # type: ignore[union-attr]
    assert events[1].error["code"] == "response_interrupted"
    assert events[1].error["type"] == "model_reconnect"
    assert isinstance(events[2], RealtimeAgentEndEvent)
    # Between turns, a loss costs nothing visible.
    assert core.model_connection_lost("again") is False
    assert emitted(core) == []


def test_echoes_of_replayed_items_are_not_news_and_a_reused_id_is_moved_aside() -> None:
    history: list[RealtimeItem] = [user("item_1", "hi"), spoken("item_2", None)]
    core = SessionCore(AGENT, history=history)
    plan = core.prepare_replay(max_items=10, max_chars=1000)
    assert plan.item_ids == {"item_1"}  # item_2 had nothing to say
    # The new session echoes the replayed item: nothing changes.
    core.handle_model_event(me.RealtimeModelItemUpdatedEvent(user("item_1", "hi")))
    assert emitted(core) == [] and core.history == history
    # It reuses item_2 for a new item: the old one keeps its place, renamed.
    core.handle_model_event(me.RealtimeModelItemUpdatedEvent(user("item_2", "new one")))
    (added,) = emitted(core)
    assert isinstance(added, RealtimeHistoryAdded) and added.item.item_id == "item_2"
    ids = [i.item_id for i in core.history]
    assert ids[0] == "item_1" and ids[1].startswith("item_2~") and ids[2] == "item_2"
    assert isinstance(core.history[1].content[0], InputAudio)  # type: ignore[union-attr]


def test_recovered_emits_one_event_and_restored_calls_do_not_run_again() -> None:
    core = SessionCore(AGENT, history=[call("c1", "call_1", "sunny")])
    core.recovered("actor_died", 1, 4)
    assert emitted(core) == [RealtimeSessionRecovered("actor_died", 1, 4)]
    core.handle_model_event(TOOL_CALL)  # the model repeats a call it made before
    assert not [e for e in emitted(core) if isinstance(e, RealtimeError)]
    assert core.pending_call_ids() == frozenset()
