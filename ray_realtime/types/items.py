"""History items: what ``session.history`` holds and history events carry.

Pydantic models with the SDK's names and fields. Audio bytes are never kept in
history (a long call would grow without bound); audio content keeps its
transcript. Items are treated as immutable: the session core replaces an item
with an updated copy, so an event that carried the old list is not changed
under its reader.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "AssistantAudio",
    "AssistantMessageItem",
    "AssistantText",
    "InputAudio",
    "InputImage",
    "InputText",
    "RealtimeItem",
    "RealtimeMessageItem",
    "RealtimeResponse",
    "RealtimeToolCallItem",
    "SystemMessageItem",
    "UserMessageItem",
    "item_from_dict",
    "item_to_dict",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class InputText(_Model):
    """Text the user (or system) typed."""

    type: Literal["input_text"] = "input_text"
    text: str | None = None


class InputAudio(_Model):
    """Audio the user spoke; ``transcript`` is filled when transcription completes."""

    type: Literal["input_audio"] = "input_audio"
    audio: str | None = None
    transcript: str | None = None


class InputImage(_Model):
    """An image the user sent, by URL."""

    type: Literal["input_image"] = "input_image"
    image_url: str | None = None
    detail: str | None = None


class AssistantText(_Model):
    """Text the assistant produced."""

    type: Literal["text", "output_text"] = "text"
    text: str | None = None


class AssistantAudio(_Model):
    """Audio the assistant produced; only its transcript is kept."""

    type: Literal["audio", "output_audio"] = "audio"
    audio: str | None = None
    transcript: str | None = None


UserContent = Annotated[InputText | InputAudio | InputImage, Field(discriminator="type")]
AssistantContent = Annotated[AssistantText | AssistantAudio, Field(discriminator="type")]


class SystemMessageItem(_Model):
    """A system message in the conversation."""

    item_id: str
    previous_item_id: str | None = None
    type: Literal["message"] = "message"
    role: Literal["system"] = "system"
    content: list[InputText] = Field(default_factory=list)


class UserMessageItem(_Model):
    """A message from the user, typed or spoken."""

    item_id: str
    previous_item_id: str | None = None
    type: Literal["message"] = "message"
    role: Literal["user"] = "user"
    content: list[UserContent] = Field(default_factory=list)


class AssistantMessageItem(_Model):
    """A message from the assistant."""

    item_id: str
    previous_item_id: str | None = None
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    content: list[AssistantContent] = Field(default_factory=list)


RealtimeMessageItem = Annotated[
    SystemMessageItem | UserMessageItem | AssistantMessageItem, Field(discriminator="role")
]


class RealtimeToolCallItem(_Model):
    """A function call the model made, with its output once it is known."""

    item_id: str
    previous_item_id: str | None = None
    call_id: str | None = None
    type: Literal["function_call"] = "function_call"
    status: Literal["in_progress", "completed"] = "in_progress"
    arguments: str = ""
    name: str = ""
    output: str | None = None


RealtimeItem = RealtimeMessageItem | RealtimeToolCallItem


class RealtimeResponse(_Model):
    """A response of the model: its id and the message items it produced."""

    id: str
    output: list[RealtimeMessageItem]


"""Any item of the conversation history."""

_item_adapter: TypeAdapter[Any] = TypeAdapter(RealtimeItem)


def item_to_dict(item: RealtimeItem) -> dict[str, Any]:
    """Plain-data form of an item (for the wire and stores)."""
    return item.model_dump(mode="python")


def item_from_dict(data: dict[str, Any]) -> RealtimeItem:
    """Rebuild an item from :func:`item_to_dict` output."""
    result: RealtimeItem = _item_adapter.validate_python(data)
    return result
