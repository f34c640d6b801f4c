"""Recovery of a session's model connection, as pure functions.

When a model connection is lost (a dropped socket, a server close, the
service's session-length cap) or a session is restored on a new actor, the
session opens a new model session and replays its history into it. These
functions decide, without I/O:

- **what to replay** (:func:`plan_replay`): the newest completed history
  items, in order, as ``conversation.item.create`` client events of the
  OpenAI Realtime (GA) protocol. Text stays text; audio is replayed by its
  transcript (audio bytes are never kept); a function call goes with its
  output. Items keep their ids, so the new model session echoes them under
  the ids the history already has. The replay is bounded by an item count and
  a character budget and costs linear time in the history.
- **when to try again** (:func:`next_reconnect_delay`): the first attempt at
  once, then exponential backoff with jitter, within a bound on attempts and
  on time.
- **what to send after the replay** (:func:`after_replay`): the inputs held
  while the connection was down, minus what the replay already delivered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ray_realtime.core import history as hist
from ray_realtime.types.config import ModelReconnectPolicy
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    InputAudio,
    InputImage,
    InputText,
    RealtimeItem,
    RealtimeToolCallItem,
    SystemMessageItem,
    UserMessageItem,
)
from ray_realtime.types.model_inputs import (
    RealtimeModelSendEvent,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendToolOutput,
)

__all__ = [
    "MAX_REPLAY_ID_CHARS",
    "ReplayLedger",
    "ReplayPlan",
    "after_replay",
    "mark_incomplete",
    "next_reconnect_delay",
    "plan_replay",
    "replay_item",
]

MAX_REPLAY_ID_CHARS = 32
"""Longest item id the Realtime API takes from a client; a longer one is left
to the server (the new model session then knows the item by another id)."""

RESPONSE_CREATE: dict[str, Any] = {"type": "response.create"}


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What to send a new model session so it knows the conversation.

    ``messages`` are ``conversation.item.create`` client events, oldest first;
    ``item_ids`` the history ids they carry (their echoes are not news);
    ``answered_calls`` the call ids whose outputs they carry;
    ``items_restored`` history items replayed, ``items_left_out`` the rest.
    """

    messages: list[dict[str, Any]]
    item_ids: frozenset[str]
    answered_calls: frozenset[str]
    items_restored: int
    items_left_out: int


def _text_parts(item: RealtimeItem) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(item, SystemMessageItem):
        parts = [{"type": "input_text", "text": p.text} for p in item.content if p.text]
    elif isinstance(item, UserMessageItem):
        for part in item.content:
            if isinstance(part, InputText) and part.text:
                parts.append({"type": "input_text", "text": part.text})
            elif isinstance(part, InputAudio) and part.transcript:
                # Audio bytes are never kept: the model hears the transcript.
                parts.append({"type": "input_text", "text": part.transcript})
            elif isinstance(part, InputImage) and part.image_url:
                image: dict[str, Any] = {"type": "input_image", "image_url": part.image_url}
                if part.detail:
                    image["detail"] = part.detail
                parts.append(image)
    elif isinstance(item, AssistantMessageItem):
        for apart in item.content:
            text = apart.transcript if isinstance(apart, AssistantAudio) else apart.text
            if text:
                parts.append({"type": "output_text", "text": text})
    return parts


def _size(messages: Iterable[dict[str, Any]]) -> int:
    """Characters of text a replayed item carries (its budget cost)."""
    total = 0
    for message in messages:
        item = message["item"]
        for part in item.get("content", ()):
            total += len(part.get("text") or part.get("image_url") or "")
        total += len(item.get("arguments", "")) + len(item.get("output", ""))
    return total


def replay_item(item: RealtimeItem, *, pending_calls: Collection[str] = ()) -> list[dict[str, Any]]:
    """The client events that recreate ``item`` (none when it has nothing to
    say: a message without text or transcript, a call without a ``call_id``,
    or a call that has no output and is no longer pending)."""
    with_id: dict[str, Any] = (
        {"id": item.item_id} if 0 < len(item.item_id) <= MAX_REPLAY_ID_CHARS else {}
    )
    if isinstance(item, RealtimeToolCallItem):
        if not item.call_id or (item.output is None and item.call_id not in pending_calls):
            return []
        events = [
            {
                "type": "conversation.item.create",
                "item": {
                    **with_id,
                    "type": "function_call",
                    "call_id": item.call_id,
                    "name": item.name,
                    "arguments": item.arguments,
                },
            }
        ]
        if item.output is not None:
            # An id of our own for the output too: ids the new session
            # generates while the replay runs could meet the ids replayed next.
            out_id = {"id": f"{item.item_id[: MAX_REPLAY_ID_CHARS - 4]}_out"} if with_id else {}
            events.append(
                {
                    "type": "conversation.item.create",
                    "item": {
                        **out_id,
                        "type": "function_call_output",
                        "call_id": item.call_id,
                        "output": item.output,
                    },
                }
            )
        return events
    parts = _text_parts(item)
    if not parts:
        return []
    return [
        {
            "type": "conversation.item.create",
            "item": {**with_id, "type": "message", "role": item.role, "content": parts},
        }
    ]


def plan_replay(
    history: Sequence[RealtimeItem],
    *,
    max_items: int,
    max_chars: int,
    pending_calls: Collection[str] = (),
) -> ReplayPlan:
    """The replay of ``history`` into a new model session: its newest items
    that fit both ``max_items`` and ``max_chars``, oldest first.

    ``pending_calls`` are the call ids of tool calls still running: their
    call items are replayed without an output, so the output can follow.
    Walks the history once, from the newest item back.
    """
    chosen: list[list[dict[str, Any]]] = []
    ids: set[str] = set()
    answered: set[str] = set()
    chars = 0
    taken = 0
    index = len(history) - 1
    while index >= 0 and taken < max_items:
        item = history[index]
        events = replay_item(item, pending_calls=pending_calls)
        if events:
            cost = _size(events)
            if chars + cost > max_chars:
                break
            chars += cost
            taken += 1
            chosen.append(events)
            if "id" in events[0]["item"]:
                ids.add(item.item_id)
            if isinstance(item, RealtimeToolCallItem) and item.output is not None and item.call_id:
                answered.add(item.call_id)
        index -= 1
    messages = [event for events in reversed(chosen) for event in events]
    return ReplayPlan(
        messages=messages,
        item_ids=frozenset(ids),
        answered_calls=frozenset(answered),
        items_restored=taken,
        items_left_out=len(history) - taken,
    )


def next_reconnect_delay(
    attempt: int, elapsed: float, policy: ModelReconnectPolicy, rand: float
) -> float | None:
    """Seconds to wait before connection attempt number ``attempt`` (0-based),
    ``elapsed`` seconds into the recovery; ``None`` when the policy says to
    give up. ``rand`` in [0, 1) supplies the jitter.

    The first attempt is immediate (a closed or expired session usually
    reconnects at once); attempt ``n`` waits ``b·2^(n-1)`` capped at the
    maximum backoff, scaled by a factor in [0.5, 1) so that many sessions
    losing one server do not come back in lockstep.
    """
    if attempt >= policy["max_attempts"]:
        return None
    if attempt == 0:
        return 0.0
    base = policy["initial_backoff_seconds"] * (2.0 ** min(attempt - 1, 30))
    delay = min(policy["max_backoff_seconds"], base) * (0.5 + 0.5 * min(max(rand, 0.0), 1.0))
    if elapsed + delay > policy["max_seconds"]:
        return None
    return delay


def after_replay(
    held: Iterable[RealtimeModelSendEvent],
    answered_calls: Collection[str],
    *,
    resume_response: bool,
) -> list[RealtimeModelSendEvent]:
    """The inputs to send once the replay is done, in order.

    ``held`` are the inputs that came while the connection was down. A tool
    output the replay already carried becomes a bare ``response.create`` (the
    model must not see the output twice); interrupts are dropped (the cut
    response already ended). With ``resume_response`` (a response was cut),
    a ``response.create`` goes first: the model answers what it was answering
    before anything that came later.
    """
    out: list[RealtimeModelSendEvent] = []
    for event in held:
        if isinstance(event, RealtimeModelSendInterrupt):
            continue
        if (
            isinstance(event, RealtimeModelSendToolOutput)
            and event.tool_call.call_id in answered_calls
        ):
            if event.start_response:
                out.append(RealtimeModelSendRawMessage(dict(RESPONSE_CREATE)))
            continue
        out.append(event)
    if resume_response:
        out.insert(0, RealtimeModelSendRawMessage(dict(RESPONSE_CREATE)))
    return out


class ReplayLedger:
    """Which history ids the current model session knows.

    The ids :func:`plan_replay` replayed: the model session's echoes of them
    are not news. The other ids of the history are unknown to it, and it may
    generate one of them for a new item (a restarted server counting from 1):
    :meth:`claim` then moves the old item aside under a new id, so the two are
    never merged.
    """

    def __init__(self) -> None:
        self._replayed: frozenset[str] = frozenset()
        self._stale: set[str] = set()
        self._moved = 0

    def replayed(self, history: Sequence[RealtimeItem], plan: ReplayPlan) -> None:
        """A new model session got ``plan``."""
        self._replayed = plan.item_ids
        self._stale = {item.item_id for item in history} - plan.item_ids

    def is_echo(self, item_id: str) -> bool:
        """Whether an item event for ``item_id`` echoes the replay."""
        return item_id in self._replayed

    def claim(self, history: list[RealtimeItem], item_id: str) -> list[int]:
        """``item_id`` now names an item of the current model session; the
        positions of the items this changed (moved aside, or relinked)."""
        if item_id not in self._stale:
            return []
        self._stale.discard(item_id)
        index = hist.find_index(history, item_id)
        if index < 0:
            return []
        while True:
            self._moved += 1
            new_id = f"{item_id[:24]}~{self._moved}"
            if hist.find_index(history, new_id) < 0:
                break
        history[index] = history[index].model_copy(update={"item_id": new_id})
        changed = [index]
        for i in range(index + 1, len(history)):
            if history[i].previous_item_id == item_id:
                history[i] = history[i].model_copy(update={"previous_item_id": new_id})
                changed.append(i)
        return changed


def mark_incomplete(history: list[RealtimeItem]) -> list[int]:
    """Mark the assistant items still in progress ``incomplete`` (their
    response will not finish); the positions of those it marked (empty, so
    false, when none was)."""
    changed = []
    for i, item in enumerate(history):
        if isinstance(item, AssistantMessageItem) and item.status == "in_progress":
            history[i] = item.model_copy(update={"status": "incomplete"})
            changed.append(i)
    return changed
