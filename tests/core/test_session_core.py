"""SessionCore: every rule of its module docstring, driven through events and
commands and checked on what ``drain()`` hands out."""

from __future__ import annotations

import array
import json
from typing import Any

import pytest

from ray_realtime.core.outputs import (
    CoreOutput,
    EmitEvent,
    RunGuardrails,
    RunHandoff,
    RunTool,
    SendToModel,
)
from ray_realtime.core.session_core import SessionCore, guardrail_feedback_message
from ray_realtime.core.specs import AgentSpec, HandoffSpec, ToolSpec
from ray_realtime.exceptions import InputTooLargeError, UserError
from ray_realtime.types import model_events as me
from ray_realtime.types.config import DEFAULT_LIMITS, SessionLimits
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
    RealtimeGuardrailTripped,
    RealtimeHandoffEvent,
    RealtimeInputAudioTimeoutTriggered,
    RealtimeRawModelEvent,
    RealtimeToolApprovalRequired,
    RealtimeToolEnd,
    RealtimeToolStart,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    InputText,
    RealtimeToolCallItem,
    UserMessageItem,
)
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendInterrupt,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
)

# ---------------------------------------------------------------- helpers


def tool_def(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": f"the {name} tool",
        "parameters": {"type": "object", "properties": {}, "required": []},
    }


def tool(name: str, *, needs_approval: bool = False) -> ToolSpec:
    return ToolSpec(name, tool_def(name), needs_approval=needs_approval)


def handoff(agent_name: str) -> HandoffSpec:
    tool_name = f"transfer_to_{agent_name.lower()}"
    return HandoffSpec(tool_name, agent_name, tool_def(tool_name))


def agent(
    name: str = "Alpha",
    instructions: str | None = "be helpful",
    tools: tuple[ToolSpec, ...] = (tool("lookup"),),
    handoffs: tuple[HandoffSpec, ...] = (),
    guardrails: tuple[str, ...] = (),
) -> AgentSpec:
    return AgentSpec(name, instructions, tools, handoffs, guardrails)


def limits(**overrides: Any) -> SessionLimits:
    return {**DEFAULT_LIMITS, **overrides}  # type: ignore[typeddict-item]


def make_core(a: AgentSpec | None = None, **kwargs: Any) -> SessionCore:
    return SessionCore(a or agent(), **kwargs)


def kinds(outs: list[CoreOutput]) -> list[str]:
    """A compact, readable form of a drain: ``emit:<type>``, ``send:<type>``
    or the work kind."""
    result = []
    for out in outs:
        if isinstance(out, EmitEvent):
            result.append(f"emit:{out.event.type}")
        elif isinstance(out, SendToModel):
            result.append(f"send:{out.event.type}")
        else:
            result.append(out.kind)
    return result


def emitted(outs: list[CoreOutput], cls: type | None = None) -> list[Any]:
    events = [o.event for o in outs if isinstance(o, EmitEvent)]
    return [e for e in events if cls is None or isinstance(e, cls)]


def sent(outs: list[CoreOutput], cls: type | None = None) -> list[Any]:
    events = [o.event for o in outs if isinstance(o, SendToModel)]
    return [e for e in events if cls is None or isinstance(e, cls)]


def only(items: list[Any]) -> Any:
    assert len(items) == 1, f"expected exactly one, got {items!r}"
    return items[0]


def call(
    name: str = "lookup", call_id: str = "c1", arguments: str = "{}"
) -> me.RealtimeModelToolCallEvent:
    return me.RealtimeModelToolCallEvent(name=name, call_id=call_id, arguments=arguments)


def updated(item: Any) -> me.RealtimeModelItemUpdatedEvent:
    return me.RealtimeModelItemUpdatedEvent(item=item)


def delta(
    text: str, item_id: str = "a1", response_id: str = "r1"
) -> me.RealtimeModelTranscriptDeltaEvent:
    return me.RealtimeModelTranscriptDeltaEvent(
        item_id=item_id, delta=text, response_id=response_id
    )


def assistant(
    item_id: str = "a1", transcript: str | None = None, **kw: Any
) -> AssistantMessageItem:
    return AssistantMessageItem(
        item_id=item_id, content=[AssistantAudio(transcript=transcript)], **kw
    )


def user(item_id: str = "u1", transcript: str | None = None, **kw: Any) -> UserMessageItem:
    return UserMessageItem(item_id=item_id, content=[InputAudio(transcript=transcript)], **kw)


def feed(core: SessionCore, *events: Any) -> list[CoreOutput]:
    for event in events:
        core.handle_model_event(event)
    return core.drain()


def ids(core: SessionCore) -> list[str]:
    return [item.item_id for item in core.history]


# ------------------------------------------------------- settings precedence


def test_settings_precedence_is_the_sdks() -> None:
    # The SDK: run config settings, initial_model_settings over them, the agent's
    # instructions and tools over both; at connect, initial settings win again.
    a = agent(instructions="agent says", tools=(tool("lookup"), tool("book")))
    core = make_core(
        a,
        initial_model_settings={
            "model_name": "initial-model",
            "voice": "initial-voice",
            "instructions": "initial says",
        },
        run_model_settings={"voice": "run-voice", "speed": 0.5, "instructions": "run says"},
    )
    settings = core.model_settings()
    assert settings["model_name"] == "initial-model"
    assert settings["speed"] == 0.5, "run config settings are the base"
    assert settings["voice"] == "initial-voice", "initial settings override the run config"
    assert settings["instructions"] == "agent says", "agent instructions override both"
    assert settings["tools"] == [tool_def("lookup"), tool_def("book")], "agent tools override"
    starting = core.model_settings(starting=True)
    assert starting["instructions"] == "initial says", "at connect initial settings win"
    assert starting["voice"] == "initial-voice"
    assert starting["tools"] == [tool_def("lookup"), tool_def("book")]


def test_agent_without_instructions_sends_empty_instructions() -> None:
    # As the SDK: the agent's instructions (or "") replace the settings' ones.
    core = make_core(agent(instructions=None), run_model_settings={"instructions": "run"})
    assert core.model_settings()["instructions"] == ""


def test_tracing_disabled_sends_null_tracing() -> None:
    core = make_core(run_model_settings={"tracing": {"workflow_name": "w"}})
    assert core.model_settings()["tracing"] == {"workflow_name": "w"}
    off = SessionCore(
        agent(), run_model_settings={"tracing": {"workflow_name": "w"}}, tracing_disabled=True
    )
    assert off.model_settings()["tracing"] is None


def test_agent_prompt_is_sent() -> None:
    spec = AgentSpec("P", instructions="x", prompt={"id": "pmpt_1", "version": "2"})
    assert make_core(spec).model_settings()["prompt"] == {"id": "pmpt_1", "version": "2"}


def test_handoff_definitions_follow_tool_definitions() -> None:
    a = agent(tools=(tool("lookup"),), handoffs=(handoff("Billing"),))
    settings = make_core(a).model_settings()
    assert [t["name"] for t in settings["tools"]] == ["lookup", "transfer_to_billing"]


def test_agent_without_tools_sends_empty_tools_list() -> None:
    core = make_core(
        agent(tools=()),
        initial_model_settings={"tools": [tool_def("x")]},
        run_model_settings={"tools": [tool_def("y")]},
    )
    assert core.model_settings()["tools"] == [], "an agent with no tools must clear them"


def test_model_settings_for_another_agent_does_not_switch() -> None:
    core = make_core()
    other = agent("Beta", instructions="beta says", tools=())
    assert core.model_settings(other)["instructions"] == "beta says"
    assert core.agent.name == "Alpha"


def test_run_settings_are_copied_not_aliased() -> None:
    run = {"voice": "a"}
    core = make_core(run_model_settings=run)
    run["voice"] = "b"
    settings = core.model_settings()
    settings["voice"] = "c"
    assert core.model_settings()["voice"] == "a"


# ----------------------------------------------------------------- history


def test_new_item_inserted_after_previous_item_id() -> None:
    core = make_core()
    out = feed(
        core,
        updated(user("u1")),
        updated(assistant("a1", previous_item_id="u1")),
        updated(user("u2", previous_item_id="u1")),
    )
    assert ids(core) == ["u1", "u2", "a1"]
    assert kinds(out) == ["emit:history_added"] * 3
    assert [e.item.item_id for e in emitted(out)] == ["u1", "a1", "u2"]


def test_new_item_with_unknown_previous_item_is_appended() -> None:
    core = make_core()
    feed(core, updated(user("u1")), updated(user("u2")))
    feed(core, updated(user("u3", previous_item_id="nowhere")))
    assert ids(core) == ["u1", "u2", "u3"]


def test_update_in_place_keeps_transcript_the_update_lacks() -> None:
    core = make_core()
    feed(core, updated(user("u1")), updated(assistant("a1", "hello there")), updated(user("u2")))
    out = feed(core, updated(assistant("a1", None, status="completed")))
    assert kinds(out) == ["emit:history_updated"], "an update of a known item is not an add"
    assert ids(core) == ["u1", "a1", "u2"], "update replaces in place"
    item = core.history[1]
    assert item.status == "completed"
    assert item.content[0].transcript == "hello there"
    assert only(emitted(out)).history == core.history


def test_update_in_place_keeps_text_the_update_lacks() -> None:
    core = make_core()
    feed(core, updated(AssistantMessageItem(item_id="a1", content=[AssistantText(text="hi")])))
    feed(core, updated(AssistantMessageItem(item_id="a1", content=[AssistantText(text=None)])))
    assert core.history[0].content[0].text == "hi"


def test_update_with_new_transcript_replaces_it() -> None:
    core = make_core()
    feed(core, updated(assistant("a1", "draft")))
    feed(core, updated(assistant("a1", "final")))
    assert core.history[0].content[0].transcript == "final"


def test_tool_call_output_kept_on_update() -> None:
    core = make_core()
    tool_item = RealtimeToolCallItem(item_id="t1", call_id="c1", name="lookup", arguments="{}")
    feed(core, updated(tool_item), call("lookup", "c1"))
    core.tool_completed("c1", "42")
    core.drain()
    assert core.history[0].output == "42"
    feed(core, updated(RealtimeToolCallItem(item_id="t1", call_id="c1", name="lookup")))
    item = core.history[0]
    assert item.output == "42", "a later update without output must keep the output"
    assert item.arguments == "{}", "and the arguments"


def test_input_transcription_updates_user_item_and_emits_history_updated() -> None:
    core = make_core()
    feed(core, updated(user("u1")))
    out = feed(
        core,
        me.RealtimeModelInputAudioTranscriptionCompletedEvent(item_id="u1", transcript="hi bot"),
    )
    assert kinds(out) == ["emit:history_updated"]
    assert core.history[0].content[0].transcript == "hi bot"
    assert only(emitted(out)).history[0].content[0].transcript == "hi bot"


def test_input_transcription_on_text_only_user_item_adds_audio_part() -> None:
    core = make_core()
    feed(core, updated(UserMessageItem(item_id="u1", content=[InputText(text="typed")])))
    feed(core, me.RealtimeModelInputAudioTranscriptionCompletedEvent("u1", "spoken"))
    content = core.history[0].content
    assert content[0].text == "typed"
    assert [p.type for p in content] == ["input_text", "input_audio"]
    assert content[1].transcript == "spoken"


def test_transcription_before_its_item_is_applied_when_item_arrives() -> None:
    core = make_core()
    out = feed(core, me.RealtimeModelInputAudioTranscriptionCompletedEvent("u1", "early"))
    assert out == [], "nothing to update yet"
    out = feed(core, updated(user("u1")))
    assert kinds(out) == ["emit:history_added"]
    assert only(emitted(out)).item.content[0].transcript == "early"
    assert core.history[0].content[0].transcript == "early"
    # consumed: a later update of the item does not re-apply it over a new value
    feed(core, updated(user("u1", "corrected")))
    assert core.history[0].content[0].transcript == "corrected"


def test_transcript_deltas_update_assistant_item_and_emit_history_updated() -> None:
    core = make_core()
    feed(core, updated(assistant("a1")))
    out = feed(core, delta("Hel"), delta("lo"))
    assert kinds(out) == ["emit:history_updated", "emit:history_updated"]
    first, second = emitted(out)
    assert first.history[0].content[0].transcript == "Hel"
    assert second.history[0].content[0].transcript == "Hello"
    assert core.history[0].content[0].transcript == "Hello"


def test_transcript_delta_on_text_item_appends_to_text() -> None:
    core = make_core()
    feed(core, updated(AssistantMessageItem(item_id="a1", content=[AssistantText(text="a")])))
    feed(core, delta("b"))
    assert core.history[0].content[0].text == "ab"


def test_transcript_delta_for_unknown_item_creates_placeholder() -> None:
    core = make_core()
    feed(core, updated(user("u1")))
    out = feed(core, delta("Hi", item_id="a9"))
    assert kinds(out) == ["emit:history_added", "emit:history_updated"]
    added = emitted(out)[0].item
    assert isinstance(added, AssistantMessageItem)
    assert added.item_id == "a9" and added.status == "in_progress"
    assert ids(core) == ["u1", "a9"]
    assert core.history[1].content[0].transcript == "Hi"
    # the real item arriving later merges with the placeholder's transcript
    feed(core, updated(assistant("a9", None, status="completed")))
    assert ids(core) == ["u1", "a9"]
    assert core.history[1].content[0].transcript == "Hi"
    assert core.history[1].status == "completed"


def test_item_deleted() -> None:
    core = make_core()
    feed(core, updated(user("u1")), updated(user("u2")))
    out = feed(core, me.RealtimeModelItemDeletedEvent("u1"))
    assert ids(core) == ["u2"]
    assert kinds(out) == ["emit:history_updated"]
    assert [i.item_id for i in only(emitted(out)).history] == ["u2"]
    assert feed(core, me.RealtimeModelItemDeletedEvent("gone")) == [], "unknown id: no event"


def test_history_snapshots_in_earlier_events_are_not_mutated() -> None:
    core = make_core()
    added = only(emitted(feed(core, updated(assistant("a1", "")))))
    first = only(emitted(feed(core, delta("one"))))
    second = only(emitted(feed(core, delta(" two"))))
    feed(core, updated(user("u1", previous_item_id="a1")))
    feed(core, me.RealtimeModelItemDeletedEvent("a1"))
    assert added.item.content[0].transcript == "", "history_added item changed later"
    assert first.history[0].content[0].transcript == "one", "earlier snapshot changed"
    assert len(first.history) == 1
    assert second.history[0].content[0].transcript == "one two"
    assert ids(core) == ["u1"]


def test_history_property_is_a_copy() -> None:
    core = make_core()
    feed(core, updated(user("u1")))
    core.history.clear()
    assert ids(core) == ["u1"]


# --------------------------------------------------------------- tool calls


def test_tool_call_queues_tool_start_then_run_tool() -> None:
    core = make_core()
    c = call("lookup", "c1", '{"q": 1}')
    out = feed(core, c)
    assert kinds(out) == ["emit:tool_start", "run_tool"]
    start = emitted(out)[0]
    assert start == RealtimeToolStart(AgentRef("Alpha"), start.tool, '{"q": 1}', "c1")
    assert start.tool.name == "lookup"
    run = out[1]
    assert isinstance(run, RunTool) and run.call == c and run.agent_name == "Alpha"
    assert core.pending_tool_calls == 1


def test_duplicate_call_id_is_ignored() -> None:
    core = make_core()
    feed(core, call("lookup", "c1"))
    assert feed(core, call("lookup", "c1")) == []
    assert core.pending_tool_calls == 1
    core.tool_completed("c1", "done")
    core.drain()
    assert feed(core, call("lookup", "c1")) == [], "a finished call_id is still remembered"


def test_unknown_tool_gets_error_output_and_error_event_not_run() -> None:
    core = make_core()
    out = feed(core, call("missing", "c1"))
    assert "run_tool" not in kinds(out)
    assert sorted(kinds(out)) == ["emit:error", "send:send_tool_output"]
    error = only(emitted(out, RealtimeError)).error
    assert error["type"] == "unknown_tool" and error["tool"] == "missing"
    output = only(sent(out, RealtimeModelSendToolOutput))
    assert output.output.startswith("Error"), output.output
    assert "missing" in output.output
    assert output.tool_call.call_id == "c1" and output.start_response is True
    assert core.pending_tool_calls == 0


@pytest.mark.parametrize("arguments", ["{", "not json", "[1, 2]", '"text"', "3", "null", "true"])
def test_invalid_or_non_object_arguments_get_error_output(arguments: str) -> None:
    core = make_core()
    out = feed(core, call("lookup", "c1", arguments))
    assert "run_tool" not in kinds(out), arguments
    error = only(emitted(out, RealtimeError)).error
    assert error["type"] == "invalid_tool_arguments"
    assert error["tool"] == "lookup"
    assert only(sent(out, RealtimeModelSendToolOutput)).output.startswith("Error")
    assert core.pending_tool_calls == 0


@pytest.mark.parametrize("arguments", ["", "   "])
def test_empty_arguments_are_accepted(arguments: str) -> None:
    out = feed(make_core(), call("lookup", "c1", arguments))
    assert kinds(out) == ["emit:tool_start", "run_tool"]


def test_tool_completed_emits_tool_end_then_sends_output_and_sets_history() -> None:
    core = make_core()
    feed(core, updated(RealtimeToolCallItem(item_id="t1", call_id="c1", name="lookup")))
    feed(core, call("lookup", "c1", '{"a": 1}'))
    core.tool_completed("c1", "the answer")
    out = core.drain()
    assert kinds(out) == ["emit:tool_end", "emit:history_updated", "send:send_tool_output"]
    end = emitted(out)[0]
    assert end == RealtimeToolEnd(AgentRef("Alpha"), end.tool, "the answer", '{"a": 1}', "c1")
    assert end.tool.name == "lookup"
    output = only(sent(out))
    assert output.output == "the answer" and output.start_response is True
    assert output.tool_call.call_id == "c1"
    item = core.history[0]
    assert item.output == "the answer" and item.status == "completed"
    assert core.pending_tool_calls == 0


def test_tool_completed_without_history_item_still_answers() -> None:
    core = make_core()
    feed(core, call("lookup", "c1"))
    core.tool_completed("c1", "x")
    assert kinds(core.drain()) == ["emit:tool_end", "send:send_tool_output"]


def test_tool_completed_with_error_emits_error_event_too() -> None:
    core = make_core()
    feed(core, call("lookup", "c1"))
    core.tool_completed("c1", "it broke, sorry", error="ValueError: boom")
    out = core.drain()
    assert kinds(out) == ["emit:error", "emit:tool_end", "send:send_tool_output"]
    error = emitted(out)[0].error
    assert error["type"] == "tool_error" and error["tool"] == "lookup"
    assert error["call_id"] == "c1" and "boom" in error["message"]
    assert only(sent(out)).output == "it broke, sorry"


def test_late_or_unknown_tool_completion_is_ignored() -> None:
    core = make_core()
    core.tool_completed("never-called", "x")
    assert core.drain() == []
    feed(core, call("lookup", "c1"))
    core.tool_completed("c1", "first")
    core.drain()
    core.tool_completed("c1", "again")
    assert core.drain() == [], "a second completion of the same call is ignored"


def test_max_pending_tool_calls_bound_gives_error_output() -> None:
    core = make_core(limits=limits(max_pending_tool_calls=2))
    assert kinds(feed(core, call(call_id="c1"))) == ["emit:tool_start", "run_tool"]
    assert kinds(feed(core, call(call_id="c2"))) == ["emit:tool_start", "run_tool"]
    out = feed(core, call(call_id="c3"))
    assert "run_tool" not in kinds(out)
    assert only(emitted(out, RealtimeError)).error["type"] == "tool_limit"
    assert only(sent(out, RealtimeModelSendToolOutput)).output.startswith("Error")
    assert core.pending_tool_calls == 2
    core.tool_completed("c1", "ok")
    core.drain()
    assert kinds(feed(core, call(call_id="c4"))) == ["emit:tool_start", "run_tool"]


def test_pending_handoffs_count_towards_the_bound() -> None:
    a = agent(handoffs=(handoff("Beta"),))
    core = make_core(a, limits=limits(max_pending_tool_calls=1))
    assert kinds(feed(core, call("transfer_to_beta", "h1"))) == ["run_handoff"]
    out = feed(core, call("lookup", "c1"))
    assert "run_tool" not in kinds(out)
    assert only(emitted(out, RealtimeError)).error["type"] == "tool_limit"


# ------------------------------------------------------------------ approval


def approval_core(**kwargs: Any) -> SessionCore:
    return make_core(agent(tools=(tool("pay", needs_approval=True), tool("lookup"))), **kwargs)


def test_needs_approval_emits_event_and_waits() -> None:
    core = approval_core()
    out = feed(core, call("pay", "c1", '{"amount": 5}'))
    assert kinds(out) == ["emit:tool_approval_required"]
    event = only(emitted(out))
    assert event == RealtimeToolApprovalRequired(
        AgentRef("Alpha"), event.tool, '{"amount": 5}', "c1"
    )
    assert event.tool.name == "pay"
    assert core.statistics()["awaiting_approval"] == 1


def test_approve_runs_the_tool() -> None:
    core = approval_core()
    feed(core, call("pay", "c1"))
    assert core.approve_tool_call("c1") is True
    out = core.drain()
    assert kinds(out) == ["emit:tool_start", "run_tool"]
    assert out[1].call.call_id == "c1" and out[1].agent_name == "Alpha"
    assert core.approve_tool_call("c1") is False, "already approved"
    assert core.reject_tool_call("c1") is False
    core.tool_completed("c1", "paid")
    assert kinds(core.drain()) == ["emit:tool_end", "send:send_tool_output"]


def test_reject_ends_the_tool_with_an_output() -> None:
    core = approval_core()
    feed(core, updated(RealtimeToolCallItem(item_id="t1", call_id="c1", name="pay")))
    feed(core, call("pay", "c1"))
    assert core.reject_tool_call("c1") is True
    out = core.drain()
    assert kinds(out) == ["emit:tool_end", "emit:history_updated", "send:send_tool_output"]
    end = emitted(out)[0]
    assert end.tool.name == "pay" and end.call_id == "c1"
    output = only(sent(out)).output
    assert output == "Tool execution was not approved."  # the SDK's default text
    assert end.output == output
    assert core.history[0].output == output
    assert core.approve_tool_call("c1") is False


def test_approve_always_runs_later_calls_without_asking() -> None:
    core = approval_core()
    feed(core, call("pay", "c1"))
    assert core.approve_tool_call("c1", always=True) is True
    core.drain()
    out = feed(core, call("pay", "c2"))
    assert kinds(out) == ["emit:tool_start", "run_tool"]


def test_reject_always_refuses_later_calls_with_the_same_text() -> None:
    core = approval_core()
    feed(core, call("pay", "c1"))
    assert core.reject_tool_call("c1", "Payments are off.", always=True) is True
    core.drain()
    out = feed(core, call("pay", "c2"))
    assert kinds(out) == ["emit:tool_end", "send:send_tool_output"]
    assert only(sent(out)).output == "Payments are off."


def test_plain_approval_is_asked_again_next_call() -> None:
    core = approval_core()
    feed(core, call("pay", "c1"))
    core.approve_tool_call("c1")
    core.drain()
    assert kinds(feed(core, call("pay", "c2"))) == ["emit:tool_approval_required"]


def test_approval_function_is_checked_per_call() -> None:
    checked = ToolSpec("pay", tool_def("pay"), approval_check=True)
    core = make_core(agent(tools=(checked,)))
    out = feed(core, call("pay", "c1", '{"amount": 500}'))
    assert [o.kind for o in out] == ["check_approval"]
    assert out[0].call.call_id == "c1" and out[0].agent_name == "Alpha"
    assert core.pending_tool_calls == 1
    assert core.approval_checked("c1", True) is True
    assert kinds(core.drain()) == ["emit:tool_approval_required"]
    feed(core, call("pay", "c2", '{"amount": 5}'))
    assert core.approval_checked("c2", False) is True
    assert kinds(core.drain()) == ["emit:tool_start", "run_tool"]
    assert core.approval_checked("c2", False) is False, "answered once"


def test_always_answers_skip_the_approval_function() -> None:
    checked = ToolSpec("pay", tool_def("pay"), approval_check=True)
    core = make_core(agent(tools=(checked,)))
    feed(core, call("pay", "c1"))
    core.approval_checked("c1", True)
    core.drain()
    core.approve_tool_call("c1", always=True)
    core.drain()
    assert kinds(feed(core, call("pay", "c2"))) == ["emit:tool_start", "run_tool"]


def test_always_must_be_a_bool() -> None:
    core = approval_core()
    feed(core, call("pay", "c1"))
    with pytest.raises(UserError, match="always"):
        core.approve_tool_call("c1", always="yes")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="always"):
        core.reject_tool_call("c1", always=1)  # type: ignore[arg-type]
    assert core.approve_tool_call("c1") is True, "a refused input changed nothing"


def test_reject_with_custom_message() -> None:
    core = approval_core()
    feed(core, call("pay", "c1"))
    core.reject_tool_call("c1", "The user said no.")
    assert only(sent(core.drain())).output == "The user said no."


def test_approve_or_reject_unknown_call_returns_false() -> None:
    core = approval_core()
    feed(core, call("lookup", "c1"))  # running, not awaiting approval
    assert core.approve_tool_call("c1") is False
    assert core.reject_tool_call("c1") is False
    assert core.approve_tool_call("nope") is False
    assert core.reject_tool_call("nope") is False
    assert core.drain() == []


def test_approved_calls_respect_max_pending_tool_calls() -> None:
    core = approval_core(limits=limits(max_pending_tool_calls=1))
    feed(core, call("pay", "c1"), call("pay", "c2"))
    core.approve_tool_call("c1")
    core.approve_tool_call("c2")
    runs = [o for o in core.drain() if isinstance(o, RunTool)]
    assert len(runs) <= 1, f"{len(runs)} tools run at once with max_pending_tool_calls=1"


# ----------------------------------------------------------------- handoffs


def beta() -> AgentSpec:
    return agent("Beta", instructions="beta instructions", tools=(tool("refund"),))


def handoff_core() -> SessionCore:
    return make_core(agent(handoffs=(handoff("Beta"),)), run_model_settings={"voice": "v"})


def test_handoff_call_queues_run_handoff() -> None:
    core = handoff_core()
    c = call("transfer_to_beta", "h1")
    out = feed(core, c)
    assert kinds(out) == ["run_handoff"]
    run = out[0]
    assert isinstance(run, RunHandoff)
    assert (run.call, run.from_agent, run.to_agent) == (c, "Alpha", "Beta")
    assert core.pending_tool_calls == 1
    assert core.statistics()["pending_handoffs"] == 1


def test_handoff_completed_switches_and_updates_before_tool_output() -> None:
    core = handoff_core()
    feed(core, call("transfer_to_beta", "h1"))
    core.handoff_completed("h1", beta())
    out = core.drain()
    assert kinds(out) == ["emit:handoff", "send:send_session_update", "send:send_tool_output"]
    assert emitted(out)[0] == RealtimeHandoffEvent(AgentRef("Alpha"), AgentRef("Beta"))
    update, output = sent(out)
    assert update.session_settings["instructions"] == "beta instructions"
    assert update.session_settings["tools"] == [tool_def("refund")]
    assert update.session_settings["voice"] == "v", "run settings stay"
    assert output.tool_call.call_id == "h1" and output.start_response is True
    assert json.loads(output.output) == {"assistant": "Beta"}
    assert core.agent.name == "Beta"
    assert core.pending_tool_calls == 0
    # the new agent's tools are the ones available now
    assert kinds(feed(core, call("refund", "c2"))) == ["emit:tool_start", "run_tool"]
    assert "run_tool" not in kinds(feed(core, call("lookup", "c3")))
    assert only(emitted(feed(core, me.RealtimeModelTurnStartedEvent("r")))).agent.name == "Beta"


def test_handoff_completed_for_unknown_call_is_ignored() -> None:
    core = handoff_core()
    core.handoff_completed("nope", beta())
    assert core.drain() == []
    assert core.agent.name == "Alpha"


def test_handoff_failed_tells_model_and_keeps_agent() -> None:
    core = handoff_core()
    feed(core, call("transfer_to_beta", "h1"))
    core.handoff_failed("h1", "agent Beta is not registered")
    out = core.drain()
    assert kinds(out) == ["emit:error", "send:send_tool_output"]
    error = emitted(out)[0].error
    assert error["type"] == "handoff_error" and error["tool"] == "transfer_to_beta"
    output = only(sent(out)).output
    assert output.startswith("Handoff failed") and "not registered" in output
    assert core.agent.name == "Alpha"
    assert core.pending_tool_calls == 0
    core.handoff_failed("h1", "again")
    assert core.drain() == []


def test_update_agent_sends_session_update_without_handoff_event() -> None:
    core = make_core()
    core.update_agent(beta())
    out = core.drain()
    assert kinds(out) == ["send:send_session_update"]
    assert only(sent(out)).session_settings["instructions"] == "beta instructions"
    assert core.agent.name == "Beta"


# --------------------------------------------------------------- guardrails


def runs_of(outs: list[CoreOutput]) -> list[RunGuardrails]:
    return [o for o in outs if isinstance(o, RunGuardrails)]


def guarded_core(debounce: int = 10, **kwargs: Any) -> SessionCore:
    kwargs.setdefault("limits", limits(debounce_text_length=debounce))
    return make_core(agent(guardrails=("no_secrets",)), **kwargs)


def result(
    name: str = "no_secrets", tripped: bool = True, text: str = "secret"
) -> OutputGuardrailResult:
    return OutputGuardrailResult(
        GuardrailRef(name), AgentRef("Alpha"), text, tripped, {"why": name}
    )


def test_no_guardrails_no_run_guardrails() -> None:
    core = make_core(limits=limits(debounce_text_length=1))
    out = feed(core, *[delta("word ") for _ in range(20)], me.RealtimeModelTurnEndedEvent("r1"))
    assert runs_of(out) == []


def test_guardrails_run_with_full_text_each_debounce_step() -> None:
    core = guarded_core(10)
    runs: list[RunGuardrails] = []
    per_delta = []
    text = ""
    for _ in range(10):
        text += "abc"
        new = runs_of(feed(core, delta("abc")))
        per_delta.append(len(new))
        runs.extend(new)
    assert per_delta == [0, 0, 0, 1, 0, 0, 1, 0, 0, 1], "one check per 10 characters"
    assert [r.text for r in runs] == [text[:12], text[:21], text[:30]], "full text so far"
    assert all(r.response_id == "r1" and r.item_id == "a1" for r in runs)
    assert all(r.agent_name == "Alpha" for r in runs)
    # already checked up to the end: the turn end checks the same text once
    # more, as the final check whose verdict agent_end waits for
    out = feed(core, me.RealtimeModelTurnEndedEvent("r1"))
    assert [(r.text, r.final) for r in runs_of(out)] == [(text, True)]


def test_one_big_delta_crossing_several_steps_runs_once() -> None:
    core = guarded_core(10)
    assert len(runs_of(feed(core, delta("x" * 35)))) == 1
    assert runs_of(feed(core, delta("x" * 4))) == [], "39 < 40"
    assert [len(r.text) for r in runs_of(feed(core, delta("x")))] == [40]


def test_turn_end_runs_final_check_on_unchecked_text() -> None:
    core = guarded_core(10)
    assert runs_of(feed(core, delta("Hi "), delta("you"))) == []
    out = feed(core, me.RealtimeModelTurnEndedEvent("r1"))
    assert kinds(out) == ["run_guardrails"], "agent_end waits for the final verdict"
    assert runs_of(out)[0].text == "Hi you"
    core.guardrails_completed("r1", [result(tripped=False)], final=True)
    assert kinds(core.drain()) == ["emit:agent_end"]


def test_final_trip_comes_before_agent_end() -> None:
    core = guarded_core(10)
    feed(core, delta("the secret"))  # a periodic check, still running
    out = feed(core, me.RealtimeModelTurnEndedEvent("r1"))
    assert [r.final for r in runs_of(out)] == [True]
    assert "emit:agent_end" not in kinds(out)
    core.guardrails_completed("r1", [result(tripped=False)])  # the periodic one
    assert "emit:agent_end" not in kinds(core.drain())
    core.guardrails_completed("r1", [result()], final=True)
    out = core.drain()
    assert kinds(out)[0] == "emit:guardrail_tripped"
    assert kinds(out)[-1] == "emit:agent_end"
    # a failed final check (no results) releases agent_end all the same
    feed(core, me.RealtimeModelTurnStartedEvent(), delta("more text", "a2", "r2"))
    feed(core, me.RealtimeModelTurnEndedEvent("r2"))
    core.guardrails_completed("r2", [], final=True)
    assert kinds(core.drain()) == ["emit:agent_end"]


def test_turn_end_checks_tail_after_last_step() -> None:
    core = guarded_core(10)
    feed(core, delta("0123456789"))
    feed(core, delta("ab"))
    assert [r.text for r in runs_of(feed(core, me.RealtimeModelTurnEndedEvent("r1")))] == [
        "0123456789ab"
    ]


def test_turn_end_of_unguarded_response_only_ends_agent() -> None:
    core = guarded_core(10)
    out = feed(core, me.RealtimeModelTurnEndedEvent("r-other"))
    assert kinds(out) == ["emit:agent_end"]


def test_guardrail_trip_interrupts_and_sends_feedback() -> None:
    core = guarded_core(10)
    feed(core, delta("the secret is 1234"))
    tripped = result("no_secrets", True, "the secret is 1234")
    core.guardrails_completed("r1", [result("polite", False), tripped])
    out = core.drain()
    assert kinds(out) == [
        "emit:guardrail_tripped",
        "send:send_interrupt",
        "send:send_user_input",
    ]
    event = emitted(out)[0]
    assert isinstance(event, RealtimeGuardrailTripped)
    assert event.guardrail_results == [tripped], "only the tripped results"
    assert event.message == "the secret is 1234"
    interrupt, feedback = sent(out)
    assert interrupt == RealtimeModelSendInterrupt(force_response_cancel=True)
    assert isinstance(feedback, RealtimeModelSendUserInput)
    assert "no_secrets" in feedback.user_input and "polite" not in feedback.user_input
    assert feedback.user_input == guardrail_feedback_message(["no_secrets"])


def test_second_trip_for_same_response_does_nothing() -> None:
    core = guarded_core(10)
    core.guardrails_completed("r1", [result()])
    core.drain()
    core.guardrails_completed("r1", [result("other")])
    assert core.drain() == []
    # and the tripped response is not checked again
    assert runs_of(feed(core, delta("x" * 50, response_id="r1"))) == []
    # another response still can trip
    core.guardrails_completed("r2", [result()])
    assert kinds(core.drain())[0] == "emit:guardrail_tripped"


def test_non_tripped_result_does_nothing() -> None:
    core = guarded_core(10)
    core.guardrails_completed("r1", [result(tripped=False), result("b", tripped=False)])
    core.guardrails_completed("r1", [])
    assert core.drain() == []
    # a non-trip does not use up the response's one trip
    core.guardrails_completed("r1", [result()])
    assert kinds(core.drain())[0] == "emit:guardrail_tripped"


def test_run_config_guardrail_names_count() -> None:
    core = make_core(
        agent(guardrails=()),
        run_guardrail_names=["from_run_config"],
        limits=limits(debounce_text_length=5),
    )
    runs = runs_of(feed(core, delta("hello world")))
    assert [r.text for r in runs] == ["hello world"]


# ------------------------------------------------------------- turns, audio


def test_turn_start_and_end_name_the_active_agent() -> None:
    core = make_core(agent("Gamma"))
    out = feed(core, me.RealtimeModelTurnStartedEvent("r1"), me.RealtimeModelTurnEndedEvent("r1"))
    assert emitted(out) == [
        RealtimeAgentStartEvent(AgentRef("Gamma")),
        RealtimeAgentEndEvent(AgentRef("Gamma")),
    ]


def audio(item_id: str = "a1", data: bytes = b"\x01\x02") -> me.RealtimeModelAudioEvent:
    return me.RealtimeModelAudioEvent(data=data, response_id="r1", item_id=item_id, content_index=0)


def test_audio_becomes_realtime_audio() -> None:
    event = audio()
    out = feed(make_core(), event, me.RealtimeModelAudioDoneEvent("a1", 0))
    assert emitted(out) == [RealtimeAudio(event, "a1", 0), RealtimeAudioEnd("a1", 0)]
    assert emitted(out)[0].audio.data == b"\x01\x02"


def test_after_audio_interrupted_late_output_of_that_item_is_dropped() -> None:
    core = make_core()
    feed(core, updated(assistant("a1")), updated(assistant("a2")))
    out = feed(core, me.RealtimeModelAudioInterruptedEvent("a1", 0))
    assert emitted(out) == [RealtimeAudioInterrupted("a1", 0)]
    out = feed(
        core,
        audio("a1"),
        me.RealtimeModelAudioDoneEvent("a1", 0),
        delta("late", item_id="a1"),
    )
    assert out == [], f"late output of an interrupted item leaked: {kinds(out)}"
    assert core.history[0].content[0].transcript is None
    other = audio("a2")
    out = feed(core, other, me.RealtimeModelAudioDoneEvent("a2", 0), delta("ok", item_id="a2"))
    assert kinds(out) == ["emit:audio", "emit:audio_end", "emit:history_updated"]
    # a repeated interrupt still tells the reader to stop playback
    assert kinds(feed(core, me.RealtimeModelAudioInterruptedEvent("a1", 0))) == [
        "emit:audio_interrupted"
    ]


# --------------------------------------------------------- errors and misc


def test_model_error_becomes_realtime_error_with_same_dict() -> None:
    error = {"message": "bad", "type": "invalid_request_error", "code": "x", "param": "p"}
    out = feed(make_core(), me.RealtimeModelErrorEvent(error))
    assert only(emitted(out)) == RealtimeError(error)


def test_exception_event_becomes_error_of_type_exception() -> None:
    out = feed(
        make_core(),
        me.RealtimeModelExceptionEvent("socket closed", "ConnectionError", "while reading"),
        me.RealtimeModelExceptionEvent("plain"),
    )
    full, plain = emitted(out)
    assert full.error == {
        "message": "socket closed",
        "type": "exception",
        "exception_type": "ConnectionError",
        "context": "while reading",
    }
    assert plain.error == {"message": "plain", "type": "exception"}


def test_report_error_emits_error_without_state_change() -> None:
    core = make_core()
    feed(core, call("lookup", "c1"))
    before = core.statistics()
    error = {"message": "guardrail raised", "type": "guardrail_error"}
    core.report_error(error)
    out = core.drain()
    assert emitted(out) == [RealtimeError(error)] and len(out) == 1
    assert only(emitted(out)).error is not error, "the dict is copied"
    assert core.statistics() == before
    assert core.pending_tool_calls == 1


def test_input_audio_timeout() -> None:
    out = feed(make_core(), me.RealtimeModelInputAudioTimeoutTriggeredEvent("u1", 100, 900))
    assert only(emitted(out)) == RealtimeInputAudioTimeoutTriggered("u1", 100, 900)


def test_connection_and_other_events_emit_nothing_by_default() -> None:
    out = feed(
        make_core(),
        me.RealtimeModelConnectionStatusEvent("connected"),
        me.RealtimeModelOtherEvent({"type": "rate_limits.updated"}),
        me.RealtimeModelRawServerEvent({"type": "session.created"}),
        audio(),
    )
    assert kinds(out) == ["emit:audio"], "no raw_model_event unless asked for"


def test_raw_model_events_when_enabled() -> None:
    core = make_core(emit_raw_model_events=True)
    status = me.RealtimeModelConnectionStatusEvent("connected")
    start = me.RealtimeModelTurnStartedEvent("r1")
    out = feed(core, status, start)
    assert kinds(out) == ["emit:raw_model_event", "emit:raw_model_event", "emit:agent_start"]
    assert emitted(out)[:2] == [RealtimeRawModelEvent(status), RealtimeRawModelEvent(start)]


# ------------------------------------------------------------ input checks


def test_send_message_text() -> None:
    core = make_core()
    core.send_message("hello")
    assert only(sent(core.drain())) == RealtimeModelSendUserInput("hello")


def test_send_message_over_limit() -> None:
    core = make_core(limits=limits(max_message_chars=5))
    core.send_message("12345")  # at the limit is fine
    core.drain()
    with pytest.raises(InputTooLargeError) as info:
        core.send_message("123456")
    assert (info.value.size, info.value.limit) == (6, 5)
    assert "6" in str(info.value) and "5" in str(info.value)
    assert core.drain() == [], "nothing is sent for a rejected message"


@pytest.mark.parametrize("bad", [42, None, b"bytes", ["hello"], 3.5])
def test_send_message_wrong_type(bad: Any) -> None:
    core = make_core()
    with pytest.raises(UserError) as info:
        core.send_message(bad)
    assert type(info.value) is UserError
    assert core.drain() == []


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"type": "message"},
        {"type": "function_call", "content": []},
        {"type": "message", "content": "not a list"},
        {"type": "message", "content": ["just a string"]},
        {"type": "message", "content": [{"type": "input_audio", "audio": "..."}]},
        {"type": "message", "content": [{"text": "no type"}]},
    ],
)
def test_send_message_malformed_dict(bad: dict[str, Any]) -> None:
    core = make_core()
    with pytest.raises(UserError) as info:
        core.send_message(bad)
    assert type(info.value) is UserError, repr(info.value)
    assert core.drain() == []


def test_send_message_dict() -> None:
    core = make_core()
    message = {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        ],
    }
    core.send_message(message)
    user_input = only(sent(core.drain())).user_input
    assert user_input == message
    assert user_input is not message, "the caller's dict is copied"


def test_send_message_dict_over_limit() -> None:
    core = make_core(limits=limits(max_message_chars=10))
    message = {
        "type": "message",
        "content": [
            {"type": "input_text", "text": "123456"},
            {"type": "input_text", "text": "78901"},
        ],
    }
    with pytest.raises(InputTooLargeError) as info:
        core.send_message(message)
    assert (info.value.size, info.value.limit) == (11, 10)


def test_send_audio() -> None:
    core = make_core()
    core.send_audio(b"\x00\x01")
    core.send_audio(b"\x02\x03", commit=True)
    core.send_audio(b"", commit=True)
    assert sent(core.drain()) == [
        RealtimeModelSendAudio(b"\x00\x01", commit=False),
        RealtimeModelSendAudio(b"\x02\x03", commit=True),
        RealtimeModelSendAudio(b"", commit=True),
    ]


def test_send_audio_over_limit() -> None:
    core = make_core(limits=limits(max_audio_chunk_bytes=4))
    core.send_audio(b"1234")
    core.drain()
    with pytest.raises(InputTooLargeError) as info:
        core.send_audio(b"12345")
    assert (info.value.size, info.value.limit) == (5, 4)
    with pytest.raises(InputTooLargeError) as info:
        core.send_audio(memoryview(array.array("h", [1, 2, 3])))
    assert info.value.size == 6, "memoryview size counts bytes, not items"
    assert core.drain() == []


@pytest.mark.parametrize("bad", ["text", [1, 2], 7, None])
def test_send_audio_wrong_type(bad: Any) -> None:
    core = make_core()
    with pytest.raises(UserError):
        core.send_audio(bad)
    assert core.drain() == []


@pytest.mark.parametrize(
    "chunk", [bytearray(b"\x01\x02"), memoryview(b"\x01\x02"), memoryview(bytearray(b"\x01\x02"))]
)
def test_send_audio_accepts_bytearray_and_memoryview(chunk: Any) -> None:
    core = make_core()
    core.send_audio(chunk)
    event = only(sent(core.drain()))
    assert type(event.audio) is bytes and event.audio == b"\x01\x02"


def test_interrupt() -> None:
    core = make_core()
    core.interrupt()
    assert sent(core.drain()) == [RealtimeModelSendInterrupt(force_response_cancel=False)]


def test_statistics() -> None:
    a = agent(tools=(tool("lookup"), tool("pay", needs_approval=True)), handoffs=(handoff("Beta"),))
    core = make_core(a)
    assert core.statistics() == {
        "history_items": 0,
        "pending_tool_calls": 0,
        "pending_handoffs": 0,
        "awaiting_approval": 0,
        "queued_outputs": 0,
    }
    for event in (
        updated(user("u1")),
        updated(assistant("a1")),
        call("lookup", "c1"),
        call("lookup", "c2"),
        call("pay", "c3"),
        call("transfer_to_beta", "h1"),
    ):
        core.handle_model_event(event)
    stats = core.statistics()
    assert stats == {
        "history_items": 2,
        "pending_tool_calls": 2,
        "pending_handoffs": 1,
        "awaiting_approval": 1,
        "queued_outputs": stats["queued_outputs"],
    }
    assert stats["queued_outputs"] == len(core.drain())
    assert core.statistics()["queued_outputs"] == 0
    assert core.pending_tool_calls == 4  # running, handoff and awaiting approval


def test_limits_default_to_defaults() -> None:
    assert make_core().limits == DEFAULT_LIMITS
