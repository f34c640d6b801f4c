"""The pure history-merging functions of ray_realtime.core.history."""

from __future__ import annotations

from ray_realtime.core import history as hist
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


def ids(history: list[RealtimeItem]) -> list[str]:
    return [item.item_id for item in history]


def user(item_id: str, prev: str | None = None) -> UserMessageItem:
    return UserMessageItem(item_id=item_id, previous_item_id=prev)


# --------------------------------------------------------------- find_index


def test_find_index() -> None:
    history: list[RealtimeItem] = [user("a"), user("b"), user("c")]
    assert hist.find_index(history, "a") == 0
    assert hist.find_index(history, "c") == 2
    assert hist.find_index(history, "zzz") == -1
    assert hist.find_index([], "a") == -1


# -------------------------------------------------------------- insert_item


def test_insert_after_previous_item() -> None:
    history: list[RealtimeItem] = [user("a"), user("b")]
    hist.insert_item(history, user("x", prev="a"))
    assert ids(history) == ["a", "x", "b"]
    hist.insert_item(history, user("y", prev="b"))
    assert ids(history) == ["a", "x", "b", "y"]


def test_insert_without_or_with_unknown_previous_appends() -> None:
    history: list[RealtimeItem] = [user("a")]
    hist.insert_item(history, user("b"))
    hist.insert_item(history, user("c", prev="missing"))
    hist.insert_item(history, user("d", prev=""))
    assert ids(history) == ["a", "b", "c", "d"]


def test_insert_into_empty_history() -> None:
    history: list[RealtimeItem] = []
    hist.insert_item(history, user("a", prev="missing"))
    assert ids(history) == ["a"]


# --------------------------------------------------------------- merge_item


def test_merge_keeps_transcript_update_lacks() -> None:
    old = AssistantMessageItem(item_id="a", content=[AssistantAudio(transcript="hello")])
    new = AssistantMessageItem(item_id="a", status="completed", content=[AssistantAudio()])
    merged = hist.merge_item(old, new)
    assert merged.content[0].transcript == "hello"
    assert merged.status == "completed"
    assert old.content[0].transcript == "hello" and new.content[0].transcript is None, (
        "inputs are not mutated"
    )


def test_merge_keeps_text_update_lacks() -> None:
    old = AssistantMessageItem(item_id="a", content=[AssistantText(text="hi")])
    new = AssistantMessageItem(item_id="a", content=[AssistantText(text="")])
    assert hist.merge_item(old, new).content[0].text == "hi"


def test_merge_prefers_new_values() -> None:
    old = AssistantMessageItem(item_id="a", content=[AssistantAudio(transcript="old")])
    new = AssistantMessageItem(item_id="a", content=[AssistantAudio(transcript="new")])
    assert hist.merge_item(old, new).content[0].transcript == "new"


def test_merge_user_input_audio_transcript() -> None:
    old = UserMessageItem(item_id="u", content=[InputAudio(transcript="said")])
    new = UserMessageItem(item_id="u", content=[InputAudio()])
    assert hist.merge_item(old, new).content[0].transcript == "said"


def test_merge_part_of_other_type_is_replaced() -> None:
    old = AssistantMessageItem(item_id="a", content=[AssistantText(text="t")])
    new = AssistantMessageItem(item_id="a", content=[AssistantAudio()])
    merged = hist.merge_item(old, new)
    assert isinstance(merged.content[0], AssistantAudio)
    assert merged.content[0].transcript is None


def test_merge_empty_new_content_keeps_old_content() -> None:
    old = AssistantMessageItem(item_id="a", content=[AssistantAudio(transcript="x")])
    new = AssistantMessageItem(item_id="a", status="completed")
    merged = hist.merge_item(old, new)
    assert merged.content == old.content
    assert merged.status == "completed"


def test_merge_keeps_extra_old_parts_and_previous_item_id() -> None:
    old = UserMessageItem(
        item_id="u",
        previous_item_id="p",
        content=[InputText(text="a"), InputImage(image_url="http://img")],
    )
    new = UserMessageItem(item_id="u", content=[InputText(text="a2")])
    merged = hist.merge_item(old, new)
    assert [p.type for p in merged.content] == ["input_text", "input_image"]
    assert merged.content[0].text == "a2"
    assert merged.previous_item_id == "p"


def test_merge_tool_call_keeps_output_arguments_and_call_id() -> None:
    old = RealtimeToolCallItem(
        item_id="t", call_id="c1", name="f", arguments='{"a":1}', output="42", status="completed"
    )
    new = RealtimeToolCallItem(item_id="t", name="f")
    merged = hist.merge_item(old, new)
    assert isinstance(merged, RealtimeToolCallItem)
    assert (merged.output, merged.arguments, merged.call_id) == ("42", '{"a":1}', "c1")


def test_merge_tool_call_takes_new_output() -> None:
    old = RealtimeToolCallItem(item_id="t", call_id="c1", output="old")
    new = RealtimeToolCallItem(item_id="t", call_id="c1", output="new")
    assert hist.merge_item(old, new).output == "new"


def test_merge_tool_call_without_changes_returns_new() -> None:
    old = RealtimeToolCallItem(item_id="t", call_id="c1", arguments="{}")
    new = RealtimeToolCallItem(item_id="t", call_id="c1", arguments="{}")
    assert hist.merge_item(old, new) is new


def test_merge_different_kinds_returns_new() -> None:
    old = RealtimeToolCallItem(item_id="x", call_id="c", output="o")
    new = SystemMessageItem(item_id="x", content=[InputText(text="sys")])
    assert hist.merge_item(old, new) is new


# ------------------------------------------------------ append_transcript_delta


def test_append_delta_to_audio_transcript() -> None:
    item = AssistantMessageItem(item_id="a", content=[AssistantAudio(transcript="Hel")])
    out = hist.append_transcript_delta(item, "lo")
    assert out.content[0].transcript == "Hello"
    assert item.content[0].transcript == "Hel", "the input item is not mutated"


def test_append_delta_to_none_transcript_and_to_text() -> None:
    audio = AssistantMessageItem(item_id="a", content=[AssistantAudio()])
    assert hist.append_transcript_delta(audio, "x").content[0].transcript == "x"
    text = AssistantMessageItem(item_id="a", content=[AssistantText(text="a")])
    assert hist.append_transcript_delta(text, "b").content[0].text == "ab"


def test_append_delta_without_content_adds_audio_part() -> None:
    item = AssistantMessageItem(item_id="a")
    out = hist.append_transcript_delta(item, "hi")
    assert len(out.content) == 1
    assert isinstance(out.content[0], AssistantAudio)
    assert out.content[0].transcript == "hi"
    assert item.content == []


def test_append_delta_to_non_assistant_item_is_a_no_op() -> None:
    item = user("u")
    assert hist.append_transcript_delta(item, "x") is item


# ------------------------------------------------------- set_input_transcript


def test_set_input_transcript_on_audio_part() -> None:
    item = UserMessageItem(item_id="u", content=[InputAudio()])
    out = hist.set_input_transcript(item, "hello")
    assert out.content[0].transcript == "hello"
    assert item.content[0].transcript is None


def test_set_input_transcript_adds_audio_part_when_missing() -> None:
    item = UserMessageItem(item_id="u", content=[InputText(text="typed")])
    out = hist.set_input_transcript(item, "spoken")
    assert [p.type for p in out.content] == ["input_text", "input_audio"]
    assert out.content[1].transcript == "spoken"


def test_set_input_transcript_on_non_user_item_is_a_no_op() -> None:
    item = AssistantMessageItem(item_id="a")
    assert hist.set_input_transcript(item, "x") is item


# ------------------------------------------------------------ set_tool_output


def test_set_tool_output() -> None:
    call = RealtimeToolCallItem(item_id="t", call_id="c1", name="f")
    history: list[RealtimeItem] = [user("u"), call]
    assert hist.set_tool_output(history, "c1", "out") is True
    assert history[1].output == "out" and history[1].status == "completed"
    assert history[1] is not call and call.output is None, "replaced, not mutated"


def test_set_tool_output_unknown_call() -> None:
    history: list[RealtimeItem] = [user("u"), RealtimeToolCallItem(item_id="t", call_id="c1")]
    before = list(history)
    assert hist.set_tool_output(history, "c2", "out") is False
    assert history == before


# --------------------------------------------------------------- transcript_of


def test_transcript_of() -> None:
    item = AssistantMessageItem(
        item_id="a",
        content=[AssistantText(text="Hi. "), AssistantAudio(), AssistantAudio(transcript="Bye.")],
    )
    assert hist.transcript_of(item) == "Hi. Bye."
    assert hist.transcript_of(AssistantMessageItem(item_id="a")) == ""
    assert hist.transcript_of(UserMessageItem(item_id="u", content=[InputText(text="x")])) == ""
