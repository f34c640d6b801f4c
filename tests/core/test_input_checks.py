"""The core's input checks (shared by the session front, the core and the
actor handle) and its repair of inputs the model could not take."""

from __future__ import annotations

import array
from typing import Any

import pytest

from ray_realtime.core.session_core import (
    check_audio_chunk,
    check_call_id,
    check_flag,
    check_rejection_message,
    check_user_message,
)
from ray_realtime.exceptions import InputTooLargeError, UserError
from ray_realtime.types.events import RealtimeAgentEndEvent, RealtimeError
from ray_realtime.types.items import RealtimeToolCallItem
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
)
from tests.core.test_session_core import (
    agent,
    call,
    emitted,
    feed,
    kinds,
    limits,
    make_core,
    only,
    sent,
    tool,
    updated,
)

# ---------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "bad",
    [
        123,
        None,
        b"bytes",
        ["a", "list"],
        "",
        {"content": []},
        {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "x"}]},
        {"type": "function_call", "content": [{"type": "input_text", "text": "x"}]},
        {"content": "not a list"},
        {"content": ["not a dict"]},
        {"content": [{"type": "input_audio", "audio": "..."}]},
        {"content": [{"type": "input_text", "text": 5}]},
        {"content": [{"type": "input_text", "text": ""}]},
        {"content": [{"type": "input_image", "image_url": ""}]},
        {"content": [{"type": "input_image", "image_url": "data:x", "detail": 3}]},
    ],
)
def test_bad_messages_are_user_errors(bad: Any) -> None:
    with pytest.raises(UserError) as info:
        check_user_message(bad, 1000)
    assert not isinstance(info.value, InputTooLargeError)


def test_a_message_dict_is_copied_as_plain_data() -> None:
    parts = [
        {"type": "input_text", "text": "hi", "extra": object()},
        {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
    ]
    checked = check_user_message({"content": parts})
    assert checked == {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "hi"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
        ],
    }
    assert isinstance(checked, dict) and checked["content"][0] is not parts[0]


def test_message_size_is_checked_only_against_a_given_limit() -> None:
    assert check_user_message("x" * 50) == "x" * 50
    with pytest.raises(InputTooLargeError) as info:
        check_user_message("x" * 50, 49)
    assert (info.value.size, info.value.limit) == (50, 49)


# ------------------------------------------------------------------- audio


def test_odd_length_pcm16_is_refused_and_g711_is_not() -> None:
    with pytest.raises(UserError, match="whole number of pcm16 samples"):
        check_audio_chunk(b"\0" * 3, None, "pcm16")
    with pytest.raises(UserError):
        check_audio_chunk(bytearray(1), 100, "pcm16")
    assert check_audio_chunk(b"\0" * 4, 10, "pcm16") == b"\0" * 4
    assert check_audio_chunk(b"", 10, "pcm16") == b""
    # No format known (the session front): only the type is checked.
    assert check_audio_chunk(b"\0" * 3) == b"\0" * 3
    for fmt in ("g711_ulaw", "g711_alaw"):
        assert check_audio_chunk(b"\x7f" * 3, 10, fmt) == b"\x7f" * 3


def test_audio_types_and_size() -> None:
    for bad in ("text", [1, 2], 7, None, array.array("h", [1])):
        with pytest.raises(UserError) as info:
            check_audio_chunk(bad)
        assert not isinstance(info.value, InputTooLargeError)
    as_view = check_audio_chunk(memoryview(array.array("h", [1, 2, 3])))
    assert type(as_view) is bytes and len(as_view) == 6
    with pytest.raises(InputTooLargeError) as too_big:
        check_audio_chunk(b"\0" * 8, 6)
    assert (too_big.value.size, too_big.value.limit) == (8, 6)


def test_the_core_checks_audio_in_the_session_input_format() -> None:
    core = make_core()
    with pytest.raises(UserError):
        core.send_audio(b"\0" * 5)
    with pytest.raises(UserError, match="commit"):
        core.send_audio(b"\0\0", commit="yes")  # type: ignore[arg-type]
    assert core.drain() == []

    ulaw = make_core(initial_model_settings={"input_audio_format": "g711_ulaw"})
    assert ulaw.input_audio_format == "g711_ulaw"
    ulaw.send_audio(b"\xff" * 5, commit=True)
    assert sent(ulaw.drain()) == [RealtimeModelSendAudio(b"\xff" * 5, commit=True)]

    # The initial settings win over the run config's (the SDK's order).
    back_to_pcm = make_core(
        initial_model_settings={"input_audio_format": "pcm16"},
        run_model_settings={"input_audio_format": "g711_ulaw"},
    )
    with pytest.raises(UserError):
        back_to_pcm.send_audio(b"\0" * 5)
    # The GA shape counts too, over the flat key.
    nested = make_core(
        run_model_settings={
            "input_audio_format": "pcm16",
            "audio": {"input": {"format": {"type": "audio/pcmu"}}},
        }
    )
    assert nested.input_audio_format == "g711_ulaw"
    nested.send_audio(b"\xff" * 5)


# --------------------------------------------------------------- approvals


def test_call_ids_flags_and_rejection_messages() -> None:
    assert check_call_id("call_1") == "call_1"
    for bad in (None, 7, "", "c" * 513, b"call_1"):
        with pytest.raises(UserError):
            check_call_id(bad)
    assert check_flag(False, "commit") is False
    for not_bool in (0, 1, "true", None):
        with pytest.raises(UserError, match="commit"):
            check_flag(not_bool, "commit")
    assert check_rejection_message(None) is None
    assert check_rejection_message("no") == "no"
    with pytest.raises(UserError):
        check_rejection_message(42)
    with pytest.raises(InputTooLargeError):
        check_rejection_message("n" * 11, 10)


def test_bad_approvals_change_nothing() -> None:
    core = make_core(
        agent(tools=(tool("pay", needs_approval=True),)), limits=limits(max_message_chars=10)
    )
    feed(core, call("pay", "c1"))
    for bad in (None, 1, ""):
        with pytest.raises(UserError):
            core.approve_tool_call(bad)  # type: ignore[arg-type]
        with pytest.raises(UserError):
            core.reject_tool_call(bad)  # type: ignore[arg-type]
    with pytest.raises(InputTooLargeError):
        core.reject_tool_call("c1", "n" * 11)
    with pytest.raises(UserError):
        core.reject_tool_call("c1", 5)  # type: ignore[arg-type]
    assert core.drain() == []
    assert core.statistics()["awaiting_approval"] == 1, "the call still waits"
    assert core.approve_tool_call("c1") is True


# ------------------------------------------------------ model send failures


def test_a_refused_tool_output_is_replaced_once_by_a_short_error() -> None:
    core = make_core()
    item = RealtimeToolCallItem(item_id="f1", call_id="c1", name="lookup", arguments="{}")
    feed(core, updated(item), call("lookup", "c1"))
    core.tool_completed("c1", "x" * 100)
    huge = only(sent(core.drain(), RealtimeModelSendToolOutput))

    core.model_send_failed(huge, "InputTooLargeError: too big")
    outs = core.drain()
    error = only(emitted(outs, RealtimeError)).error
    assert error["type"] == "model_send_failed" and error["call_id"] == "c1"
    assert error["tool"] == "lookup" and "too big" in error["message"]
    retry = only(sent(outs, RealtimeModelSendToolOutput))
    assert retry.tool_call.call_id == "c1" and retry.start_response
    assert "could not be delivered" in retry.output and "too big" in retry.output
    assert "history_updated" in [e.type for e in emitted(outs)]
    (recorded,) = [i for i in core.history if isinstance(i, RealtimeToolCallItem)]
    assert recorded.output == retry.output, "the history shows what the model got"

    # The replacement failing too ends the turn for readers instead.
    core.model_send_failed(retry, "InputTooLargeError: still")
    outs = core.drain()
    assert kinds(outs) == ["emit:error", "emit:agent_end"]
    assert only(emitted(outs, RealtimeAgentEndEvent)).agent.name == "Alpha"


def test_an_unrepairable_send_failure_ends_the_turn() -> None:
    core = make_core()
    feed(core, call("lookup", "c1"))
    core.tool_completed("c1", "ok")
    output = only(sent(core.drain(), RealtimeModelSendToolOutput))
    core.model_send_failed(output, "ModelConnectionError: closed", repair=False)
    assert kinds(core.drain()) == ["emit:error", "emit:agent_end"]


def test_other_send_failures_are_reported() -> None:
    core = make_core()
    core.model_send_failed(RealtimeModelSendSessionUpdate({}), "ConfigError: bad")
    core.model_send_failed(RealtimeModelSendUserInput("hi"), "ModelConnectionError: x")
    outs = core.drain()
    assert kinds(outs) == ["emit:error", "emit:error"]
    assert [e.error["input"] for e in emitted(outs)] == ["send_session_update", "send_user_input"]
