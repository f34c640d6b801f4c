"""Conversation items of a local model connection.

Items are kept in their wire form (what ``conversation.item.added`` shows) plus a little
metadata. Audio payloads are never stored: a user audio part keeps only its duration and
an assistant audio part only its duration, which bounds memory and is all the rules and
``conversation.item.truncate`` need. ``conversation.item.retrieved`` therefore returns
items without ``audio`` data.

The conversation is bounded by an item count and an approximate byte budget (the JSON
size of the stored items); when either is exceeded the oldest items are evicted and the
server announces each eviction with ``conversation.item.deleted``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .audio import AudioFormat, duration_ms
from .protocol import (
    ProtocolError,
    expect_base64,
    expect_dict,
    expect_list,
    expect_str,
    reject_unknown,
)
from .rules import Entry, speech_transcript

__all__ = ["Conversation", "StoredItem", "parse_client_item"]

MAX_ID_CHARS = 64
MAX_CONTENT_PARTS = 64
_STATUSES = ("completed", "incomplete", "in_progress")


@dataclass
class StoredItem:
    """One conversation item: its wire form plus the audio duration it carries (ms)."""

    wire: dict[str, Any]
    audio_ms: int = 0
    size: int = 0
    # entry() of the current wire form: every response reads the whole conversation,
    # so its text (and token count) is derived once per change, not once per response.
    _entry: tuple[int, Entry] | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The item id."""
        return str(self.wire["id"])

    def entry(self) -> Entry:
        """The item reduced for :func:`ray_realtime.local.rules.decide` (cached until
        :meth:`measure` is called after a change)."""
        cached = self._entry
        if cached is not None and cached[0] == self.audio_ms:
            return cached[1]
        entry = self._make_entry()
        self._entry = (self.audio_ms, entry)
        return entry

    def _make_entry(self) -> Entry:
        w = self.wire
        kind = w.get("type")
        if kind == "function_call":
            return Entry(
                "function_call",
                w.get("arguments", ""),
                name=w.get("name", ""),
                call_id=w.get("call_id", ""),
            )
        if kind == "function_call_output":
            return Entry("function_call_output", w.get("output", ""), call_id=w.get("call_id", ""))
        parts = w.get("content", [])
        texts = [
            p.get("text") or "" for p in parts if p.get("type") in ("input_text", "output_text")
        ]
        texts += [p.get("transcript") or "" for p in parts if p.get("type") == "output_audio"]
        has_audio = any(p.get("type") == "input_audio" for p in parts)
        role = w.get("role")
        text = " ".join(t for t in texts if t)
        if role == "user":
            return Entry("user", text, self.audio_ms, has_audio)
        return Entry("system" if role == "system" else "assistant", text)

    def measure(self) -> None:
        """Recompute the approximate stored size after the wire form changed."""
        self._entry = None
        self.size = len(json.dumps(self.wire, separators=(",", ":")))


def _parse_content(
    parts: list[Any], role: str, param: str, fmt: AudioFormat
) -> tuple[list[dict[str, Any]], int]:
    allowed = {
        "user": ("input_text", "input_audio", "input_image"),
        "system": ("input_text",),
        "assistant": ("output_text", "output_audio"),
    }[role]
    content: list[dict[str, Any]] = []
    audio_ms = 0.0
    for i, raw in enumerate(parts):
        p = f"{param}[{i}]"
        part = expect_dict(raw, p)
        kind = part.get("type")
        if kind not in allowed:
            raise ProtocolError(
                "invalid_value", f"Invalid '{p}.type' for a {role} message: {kind!r}.", f"{p}.type"
            )
        if kind in ("input_text", "output_text"):
            reject_unknown(part, ("type", "text"), p)
            content.append({"type": kind, "text": expect_str(part.get("text"), f"{p}.text")})
        elif kind == "input_audio":
            reject_unknown(part, ("type", "audio", "transcript"), p)
            data = expect_base64(part.get("audio", ""), f"{p}.audio")
            audio_ms += duration_ms(len(data), fmt)
            transcript = part.get("transcript")
            if transcript is not None:
                expect_str(transcript, f"{p}.transcript")
            content.append({"type": "input_audio", "transcript": transcript})
        elif kind == "input_image":
            reject_unknown(part, ("type", "image_url", "detail"), p)
            image: dict[str, Any] = {"type": "input_image"}
            if part.get("image_url") is not None:
                image["image_url"] = expect_str(part["image_url"], f"{p}.image_url")
            if part.get("detail") is not None:
                if part["detail"] not in ("auto", "low", "high"):
                    raise ProtocolError("invalid_value", f"Invalid '{p}.detail'.", f"{p}.detail")
                image["detail"] = part["detail"]
            content.append(image)
        else:  # output_audio: the assistant's audio is represented by its transcript only
            reject_unknown(part, ("type", "transcript", "audio"), p)
            transcript = part.get("transcript")
            content.append(
                {
                    "type": "output_audio",
                    "transcript": None
                    if transcript is None
                    else expect_str(transcript, f"{p}.transcript"),
                }
            )
    return content, round(audio_ms)


def parse_client_item(raw: object, item_id: str, input_format: AudioFormat) -> StoredItem:
    """Validate a ``conversation.item.create`` item and build its stored form.

    ``item_id`` is used unless the client supplied its own ``id``.
    """
    obj = expect_dict(raw, "item")
    kind = obj.get("type")
    common = ("type", "id", "object", "status")
    if obj.get("id") is not None:
        item_id = expect_str(obj["id"], "item.id", max_len=MAX_ID_CHARS)
        if not item_id:
            raise ProtocolError("invalid_value", "Invalid 'item.id': empty string.", "item.id")
    if obj.get("object") not in (None, "realtime.item"):
        raise ProtocolError("invalid_value", "Invalid 'item.object'.", "item.object")
    if obj.get("status") not in (None, *_STATUSES):
        raise ProtocolError("invalid_value", "Invalid 'item.status'.", "item.status")
    base: dict[str, Any] = {"id": item_id, "object": "realtime.item", "status": "completed"}
    audio_ms = 0
    if kind == "message":
        reject_unknown(obj, (*common, "role", "content"), "item")
        role = obj.get("role")
        if role not in ("user", "system", "assistant"):
            raise ProtocolError(
                "invalid_value",
                "Invalid 'item.role': expected user, system or assistant.",
                "item.role",
            )
        parts = expect_list(obj.get("content"), "item.content", max_len=MAX_CONTENT_PARTS)
        content, audio_ms = _parse_content(parts, role, "item.content", input_format)
        wire = {**base, "type": "message", "role": role, "content": content}
    elif kind == "function_call":
        reject_unknown(obj, (*common, "name", "arguments", "call_id"), "item")
        wire = {
            **base,
            "type": "function_call",
            "name": expect_str(obj.get("name"), "item.name", max_len=64),
            "call_id": expect_str(
                obj.get("call_id", item_id), "item.call_id", max_len=MAX_ID_CHARS
            ),
            "arguments": expect_str(obj.get("arguments", ""), "item.arguments"),
        }
    elif kind == "function_call_output":
        reject_unknown(obj, (*common, "call_id", "output"), "item")
        wire = {
            **base,
            "type": "function_call_output",
            "call_id": expect_str(obj.get("call_id"), "item.call_id", max_len=MAX_ID_CHARS),
            "output": expect_str(obj.get("output"), "item.output"),
        }
    else:
        raise ProtocolError(
            "invalid_value",
            "Invalid 'item.type': expected message, function_call or function_call_output.",
            "item.type",
        )
    item = StoredItem(wire, audio_ms)
    item.measure()
    return item


def user_audio_item(item_id: str, audio_ms: int) -> StoredItem:
    """The user item created by committing the input audio buffer."""
    item = StoredItem(
        {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        },
        audio_ms,
    )
    item.measure()
    return item


def set_transcript(item: StoredItem) -> str:
    """Fill in the offline transcript of a committed user audio item and return it."""
    transcript = speech_transcript(item.audio_ms)
    for part in item.wire["content"]:
        if part.get("type") == "input_audio":
            part["transcript"] = transcript
    item.measure()
    return transcript


class Conversation:
    """Ordered, bounded collection of items with O(1) lookup by id."""

    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max(1, max_items)
        self.max_bytes = max(1, max_bytes)
        self._order: list[str] = []
        self._items: dict[str, StoredItem] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[StoredItem]:
        return (self._items[i] for i in self._order)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> StoredItem | None:
        """The item with ``item_id``, if present."""
        return self._items.get(item_id)

    def last_id(self) -> str | None:
        """Id of the last item, if any."""
        return self._order[-1] if self._order else None

    def add(self, item: StoredItem, previous_item_id: str | None = None) -> str | None:
        """Insert ``item`` after ``previous_item_id`` (``"root"``: first; None: last).

        Returns the id of the item now preceding it. The caller validates ids first.
        """
        if previous_item_id is None:
            index = len(self._order)
        elif previous_item_id == "root":
            index = 0
        else:
            index = self._order.index(previous_item_id) + 1
        self._order.insert(index, item.id)
        self._items[item.id] = item
        return self._order[index - 1] if index > 0 else None

    def delete(self, item_id: str) -> StoredItem | None:
        """Remove and return an item."""
        item = self._items.pop(item_id, None)
        if item is not None:
            self._order.remove(item_id)
        return item

    def evict(self, protect: frozenset[str] = frozenset()) -> list[str]:
        """Drop the oldest items until within bounds (never ``protect``); return their ids.

        Linear in the conversation however many items go (the order list is rebuilt
        once rather than searched per item).
        """
        evicted: list[str] = []
        count = len(self._order)
        total = sum(i.size for i in self._items.values())
        for item_id in self._order:
            if count <= self.max_items and total <= self.max_bytes:
                break
            if item_id in protect:
                continue
            total -= self._items.pop(item_id).size
            count -= 1
            evicted.append(item_id)
        if evicted:
            gone = set(evicted)
            self._order = [i for i in self._order if i not in gone]
        return evicted
