"""History merging rules, as pure functions over a list of items.

- A new item goes right after its ``previous_item_id`` when that item is
  known, else at the end.
- An update replaces the item in place without losing what the session
  already knew: a transcript or text the update lacks is kept, and so is a
  tool call's output.
"""

from __future__ import annotations

from typing import Any

from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    RealtimeItem,
    RealtimeToolCallItem,
    UserMessageItem,
)

__all__ = [
    "append_transcript_delta",
    "find_index",
    "insert_item",
    "insertion_index",
    "merge_item",
    "set_input_transcript",
    "set_tool_output",
    "tool_call_index",
    "transcript_of",
]


def find_index(history: list[RealtimeItem], item_id: str) -> int:
    """Position of the item with this id, or -1."""
    for i in range(len(history) - 1, -1, -1):
        if history[i].item_id == item_id:
            return i
    return -1


def insertion_index(history: list[RealtimeItem], item: RealtimeItem) -> int:
    """Where :func:`insert_item` puts ``item``: after its ``previous_item_id``
    when that item is known, else at the end."""
    prev = item.previous_item_id
    if prev:
        index = find_index(history, prev)
        if index >= 0:
            return index + 1
    return len(history)


def insert_item(history: list[RealtimeItem], item: RealtimeItem) -> None:
    """Insert a new item after its ``previous_item_id`` (else append)."""
    history.insert(insertion_index(history, item), item)


def merge_item(old: RealtimeItem, new: RealtimeItem) -> RealtimeItem:
    """The updated item, keeping transcripts, texts and outputs ``new`` lacks."""
    if isinstance(old, RealtimeToolCallItem) and isinstance(new, RealtimeToolCallItem):
        updates: dict[str, Any] = {}
        if new.output is None and old.output is not None:
            updates["output"] = old.output
        if not new.arguments and old.arguments:
            updates["arguments"] = old.arguments
        if not new.call_id and old.call_id:
            updates["call_id"] = old.call_id
        return new.model_copy(update=updates) if updates else new
    old_content = getattr(old, "content", None)
    new_content = getattr(new, "content", None)
    if old_content is None or new_content is None:
        return new
    if not new_content and old_content:
        return new.model_copy(update={"content": list(old_content)})
    merged = []
    for i, part in enumerate(new_content):
        before = old_content[i] if i < len(old_content) else None
        merged.append(_merge_part(before, part))
    merged.extend(old_content[len(new_content) :])
    updates = {"content": merged}
    if getattr(new, "previous_item_id", None) is None and old.previous_item_id is not None:
        updates["previous_item_id"] = old.previous_item_id
    return new.model_copy(update=updates)


def _merge_part(old: Any, new: Any) -> Any:
    if old is None or getattr(old, "type", None) != getattr(new, "type", None):
        return new
    updates: dict[str, Any] = {}
    for name in ("transcript", "text"):
        if hasattr(new, name) and not getattr(new, name) and getattr(old, name, None):
            updates[name] = getattr(old, name)
    return new.model_copy(update=updates) if updates else new


def append_transcript_delta(item: RealtimeItem, delta: str) -> RealtimeItem:
    """The assistant item with ``delta`` added to its transcript (or text)."""
    if not isinstance(item, AssistantMessageItem):
        return item
    content = list(item.content)
    for i, part in enumerate(content):
        if isinstance(part, AssistantAudio):
            content[i] = part.model_copy(update={"transcript": (part.transcript or "") + delta})
            break
        if isinstance(part, AssistantText):
            content[i] = part.model_copy(update={"text": (part.text or "") + delta})
            break
    else:
        content.append(AssistantAudio(transcript=delta))
    return item.model_copy(update={"content": content})


def set_input_transcript(item: RealtimeItem, transcript: str) -> RealtimeItem:
    """The user item with the transcript of its audio set."""
    if not isinstance(item, UserMessageItem):
        return item
    content = list(item.content)
    for i, part in enumerate(content):
        if isinstance(part, InputAudio):
            content[i] = part.model_copy(update={"transcript": transcript})
            break
    else:
        content.append(InputAudio(transcript=transcript))
    return item.model_copy(update={"content": content})


def tool_call_index(history: list[RealtimeItem], call_id: str) -> int:
    """Position of the (newest) tool call item with this call id, or -1."""
    for i in range(len(history) - 1, -1, -1):
        item = history[i]
        if isinstance(item, RealtimeToolCallItem) and item.call_id == call_id:
            return i
    return -1


def set_tool_output(history: list[RealtimeItem], call_id: str, output: str) -> bool:
    """Record a tool call's output on its history item; False if not found."""
    i = tool_call_index(history, call_id)
    if i < 0:
        return False
    history[i] = history[i].model_copy(update={"output": output, "status": "completed"})
    return True


def transcript_of(item: RealtimeItem) -> str:
    """The assistant text or audio transcript of an item ('' if none)."""
    if not isinstance(item, AssistantMessageItem):
        return ""
    parts = []
    for part in item.content:
        text = part.transcript if isinstance(part, AssistantAudio) else part.text
        if text:
            parts.append(text)
    return "".join(parts)
