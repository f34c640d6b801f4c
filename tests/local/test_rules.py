"""Unit tests for the pure reply rules of the local model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ray_realtime.local.rules import (
    GREETING,
    Entry,
    FunctionCall,
    TextReply,
    Tool,
    always_reply,
    decide,
    extract_arguments,
    find_tool,
    speech_transcript,
    split_words,
)


def user(text: str) -> Entry:
    return Entry("user", text)


def tool(
    name: str, properties: dict[str, Any] | None = None, required: list[str] | None = None
) -> Tool:
    params: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required is not None:
        params["required"] = required
    return Tool(name, params)


def call_args(decision: object) -> dict[str, Any]:
    assert isinstance(decision, FunctionCall)
    parsed = json.loads(decision.arguments)
    assert isinstance(parsed, dict)
    return parsed


WEATHER = tool(
    "get_weather",
    {"city": {"type": "string"}, "days": {"type": "integer"}},
    required=["city"],
)


# --- text replies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("hello there", "You said: hello there"),
        ("  padded  ", "You said: padded"),
        ("say Bonjour à tous!", "Bonjour à tous!"),
        ("SAY shout", "shout"),
        ("say", "You said: say"),
        ("saying things", "You said: saying things"),
    ],
)
def test_reply_to_user_text(text: str, reply: str) -> None:
    assert decide([user(text)]) == TextReply(reply)


def test_reply_uses_latest_user_message_and_skips_assistant_and_system() -> None:
    entries = [
        user("first"),
        Entry("assistant", "You said: first"),
        user("second"),
        Entry("system", "x"),
    ]
    assert decide(entries) == TextReply("You said: second")


def test_greeting_without_user_input() -> None:
    assert decide([]) == TextReply(GREETING)
    assert decide([Entry("system", "be nice")]) == TextReply(GREETING)


def test_reply_to_user_audio() -> None:
    entry = Entry("user", "", audio_ms=1234, has_audio=True)
    assert decide([entry]) == TextReply("I heard 1234 ms of audio.")
    assert speech_transcript(1234) == "<speech 1234 ms>"


def test_reply_after_function_output() -> None:
    entries = [
        user("get weather in Paris"),
        Entry("function_call", "{}", name="get_weather", call_id="call_1"),
        Entry("function_call_output", "sunny", call_id="call_1"),
    ]
    assert decide(entries, [WEATHER]) == TextReply("The tool get_weather returned: sunny")
    long_output = [*entries[:2], Entry("function_call_output", "x" * 500, call_id="call_1")]
    reply = decide(long_output, [WEATHER])
    assert reply == TextReply("The tool get_weather returned: " + "x" * 200)
    orphan = [Entry("function_call_output", "42", call_id="nope")]
    assert decide(orphan) == TextReply("The tool unknown returned: 42")


def test_always_reply_instruction() -> None:
    instructions = "Be brief.\nAlways reply: fixed answer\nOther line"
    assert always_reply(instructions) == "fixed answer"
    assert always_reply("always REPLY:  spaced ") == " spaced"
    assert always_reply("nothing here") is None
    assert always_reply(None) is None
    assert decide([user("hi")], instructions=instructions) == TextReply("fixed answer")
    # It overrides tool matching in auto mode, but not a required tool call.
    assert decide([user("get weather")], [WEATHER], instructions=instructions) == TextReply(
        "fixed answer"
    )
    forced = decide([user("hi")], [WEATHER], tool_choice="required", instructions=instructions)
    assert isinstance(forced, FunctionCall)


def test_split_words_concatenates_to_text() -> None:
    for text in ["You said: hello  there ", "", "   ", "one", " lead"]:
        assert "".join(split_words(text)) == text
    assert split_words("You said: hi") == ["You", " said:", " hi"]


# --- tool choice ----------------------------------------------------------------------


def test_tool_called_by_name_or_spaced_name() -> None:
    for text in ["please get_weather for Paris", "Get Weather in Paris", "get-weather Paris"]:
        decision = decide([user(text)], [WEATHER])
        assert isinstance(decision, FunctionCall), text
        assert decision.name == "get_weather"


def test_tool_name_must_not_be_glued_to_other_words() -> None:
    assert isinstance(decide([user("forget weather")], [WEATHER]), TextReply)
    assert isinstance(decide([user("get weathers")], [WEATHER]), TextReply)


def test_handoff_tool_matches_transfer_phrase() -> None:
    handoff = tool("transfer_to_billing_agent")
    other = tool("transfer_to_support")
    decision = decide([user("Please transfer to billing agent now")], [other, handoff])
    assert decision == FunctionCall("transfer_to_billing_agent", "{}")
    decision = decide([user("TRANSFER TO SUPPORT")], [handoff, other])
    assert decision == FunctionCall("transfer_to_support", "{}")


def test_earliest_match_wins_then_longest() -> None:
    lookup = tool("lookup")
    tools = [lookup, WEATHER]
    assert find_tool("get weather then lookup", tools).tool is WEATHER  # type: ignore[union-attr]
    assert find_tool("lookup then get weather", tools).tool is lookup  # type: ignore[union-attr]
    weather = tool("weather")
    match = find_tool("get weather", [weather, WEATHER])
    assert match is not None and match.tool is WEATHER
    assert find_tool("nothing", tools) is None


def test_no_tool_call_after_function_output_or_existing_call() -> None:
    after_output = [
        user("get weather"),
        Entry("function_call", "{}", name="get_weather", call_id="c"),
        Entry("function_call_output", "ok", call_id="c"),
    ]
    assert isinstance(decide(after_output, [WEATHER]), TextReply)
    call_without_output = after_output[:2]
    assert decide(call_without_output, [WEATHER]) == TextReply("You said: get weather")


def test_tool_choice_none_required_and_forced() -> None:
    entries = [user("get weather in Rome")]
    assert decide(entries, [WEATHER], tool_choice="none") == TextReply(
        "You said: get weather in Rome"
    )
    first = tool("first_tool", {"q": {"type": "string"}}, required=["q"])
    decision = decide([user("hello")], [first, WEATHER], tool_choice="required")
    assert isinstance(decision, FunctionCall) and decision.name == "first_tool"
    assert call_args(decision) == {"q": "hello"}
    decision = decide(entries, [first, WEATHER], tool_choice="required")
    assert isinstance(decision, FunctionCall) and decision.name == "get_weather"
    forced = decide(
        [user("hi")], [first, WEATHER], tool_choice={"type": "function", "name": "get_weather"}
    )
    assert isinstance(forced, FunctionCall) and forced.name == "get_weather"
    assert call_args(forced) == {"city": "hi"}
    assert decide([user("hi")], [], tool_choice="required") == TextReply("You said: hi")


# --- argument extraction ----------------------------------------------------------------


def test_arguments_from_word_after_name_and_numbers() -> None:
    decision = decide([user("get weather in Paris for 3 days")], [WEATHER])
    assert isinstance(decision, FunctionCall)
    assert decision.arguments == '{"city":"Paris","days":3}'


def test_key_value_pairs_take_precedence_and_are_coerced() -> None:
    text = 'get_weather days=5, city: "New York" 7'
    assert call_args(decide([user(text)], [WEATHER])) == {"city": "New York", "days": 5}
    t = tool(
        "set", {"on": {"type": "boolean"}, "level": {"type": "number"}, "n": {"type": "integer"}}
    )
    args = extract_arguments("set on=yes level=2.5 n=4.9", t)
    assert args == {"on": True, "level": 2.5, "n": 4}
    assert extract_arguments("set n=abc", t) == {"n": 0}


def test_arguments_by_type_in_order() -> None:
    t = tool(
        "book_table",
        {
            "guests": {"type": "integer"},
            "hours": {"type": "number"},
            "outdoor": {"type": "boolean"},
            "vip": {"type": "boolean"},
            "name": {"type": "string"},
            "note": {"type": "string"},
        },
    )
    text = 'book table for 4 guests 1.5 hours outdoor yes vip false name "Ada Lovelace" "by window"'
    match = find_tool(text, [t])
    assert match is not None
    args = extract_arguments(text, t, (match.start, match.end))
    assert args == {
        "guests": 4,
        "hours": 1.5,
        "outdoor": True,
        "vip": False,
        "name": "Ada Lovelace",
        "note": "by window",
    }


def test_enum_strings_and_required_defaults() -> None:
    t = tool(
        "convert",
        {
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "count": {"type": "integer"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array"},
            "extra": {"type": "object"},
            "label": {"type": ["string", "null"]},
            "optional_num": {"type": "number"},
        },
        required=["unit", "mode", "count", "flag", "tags", "extra", "label"],
    )
    args = call_args(decide([user("convert to FAHRENHEIT")], [t]))
    assert args == {
        "unit": "fahrenheit",
        "mode": "fast",
        "count": 0,
        "flag": False,
        "tags": [],
        "extra": {},
        "label": "",
    }


def test_words_skip_stopwords_numbers_and_quotes() -> None:
    t = tool(
        "search", {"query": {"type": "string"}, "where": {"type": "string"}}, required=["query"]
    )
    assert call_args(decide([user("search for the cats in 3 Berlin.")], [t])) == {
        "query": "cats",
        "where": "Berlin",
    }
    # A number in the tool name is not reused as an argument.
    top = tool("top_10", {"n": {"type": "integer"}})
    assert call_args(decide([user("top 10 please, n is 4")], [top])) == {"n": 4}


def test_schema_without_properties() -> None:
    assert extract_arguments("anything 1 2", Tool("x", {})) == {}
    assert decide([user("ping now")], [Tool("ping", {})]) == FunctionCall("ping", "{}")
