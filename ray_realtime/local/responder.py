"""Generation of one model response (``response.created`` .. ``response.done``).

A :class:`ResponseRunner` streams the events of one response through its host (the
connection). Cancellation is cooperative: :meth:`ResponseRunner.request_cancel` sets a
flag that the runner checks after every event it sends, so a cancelled response always
closes cleanly - the parts already announced are closed (with what was produced so far),
items end ``incomplete`` and ``response.done`` reports ``cancelled``. Hard task
cancellation is only used when the connection goes away.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Protocol

from .audio import AudioFormat, EncodedToneCache
from .conversation import Conversation, StoredItem, parse_client_item
from .protocol import (
    IdFactory,
    ProtocolError,
    ServerOptions,
    expect_dict,
    expect_list,
    expect_str,
    reject_unknown,
)
from .rules import Decision, Entry, FunctionCall, split_words
from .session import (
    SessionConfig,
    parse_audio_format,
    parse_max_output_tokens,
    parse_output_modalities,
    parse_tool_choice,
    parse_tools,
)

__all__ = ["ResponseHost", "ResponseParams", "ResponseRunner", "parse_response_params", "usage"]

MAX_INPUT_ITEMS = 256
ARGUMENT_DELTA_CHARS = 16
AUDIO_MS_PER_TOKEN = 100
MAX_DELTAS = 4096
"""Most text/transcript/argument deltas per response: longer outputs get longer deltas
(several words, or more characters), so the event count stays bounded."""

_TONES = EncodedToneCache()
"""The reply audio, encoded once per process: every reply of one length streams the
same chunks (bounded in bytes; see :class:`EncodedToneCache`)."""


def _group(pieces: list[str], max_parts: int = MAX_DELTAS) -> list[str]:
    """``pieces`` merged into at most ``max_parts`` consecutive groups (same text)."""
    if len(pieces) <= max_parts:
        return pieces
    size = -(-len(pieces) // max_parts)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


class ResponseHost(Protocol):
    """What a runner needs from its connection."""

    ids: IdFactory
    options: ServerOptions

    async def emit(self, event_type: str, **fields: Any) -> None:
        """Send a server event."""

    async def emit_audio_delta(self, delta: str, ids: dict[str, Any]) -> None:
        """Send a ``response.output_audio.delta`` carrying ``delta`` (base64) with the
        ids of its part (``response_id``, ``item_id``, ``output_index``,
        ``content_index``)."""

    async def add_item(
        self, item: StoredItem, previous_item_id: str | None, *, done: bool
    ) -> str | None:
        """Add an item to the conversation, announce it, return the preceding item id."""


@dataclass
class ResponseParams:
    """Effective parameters of one response (session defaults + ``response.create``)."""

    instructions: str
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    output_modalities: list[str]
    output_format: AudioFormat
    voice: str
    speed: float
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    in_conversation: bool
    input_items: list[StoredItem] | None


def parse_response_params(
    raw: object, session: SessionConfig, conversation: Conversation
) -> ResponseParams:
    """Validate the ``response`` object of ``response.create`` against the session."""
    params = ResponseParams(
        instructions=session.instructions,
        tools=session.tools,
        tool_choice=session.tool_choice,
        output_modalities=session.output_modalities,
        output_format=session.output_format,
        voice=session.voice,
        speed=session.speed,
        max_output_tokens=session.max_output_tokens,
        metadata=None,
        in_conversation=True,
        input_items=None,
    )
    if raw is None:
        return params
    obj = expect_dict(raw, "response")
    reject_unknown(
        obj,
        (
            "instructions",
            "tools",
            "tool_choice",
            "output_modalities",
            "audio",
            "conversation",
            "input",
            "max_output_tokens",
            "metadata",
            "prompt",
            "reasoning",
            "parallel_tool_calls",
        ),
        "response",
    )
    if obj.get("instructions") is not None:
        params.instructions = expect_str(
            obj["instructions"], "response.instructions", max_len=100_000
        )
    if obj.get("tools") is not None:
        params.tools = parse_tools(obj["tools"], "response.tools")
    if obj.get("tool_choice") is not None:
        params.tool_choice = parse_tool_choice(obj["tool_choice"], "response.tool_choice")
    if obj.get("output_modalities") is not None:
        params.output_modalities = parse_output_modalities(
            obj["output_modalities"], "response.output_modalities"
        )
    if obj.get("max_output_tokens") is not None:
        params.max_output_tokens = parse_max_output_tokens(
            obj["max_output_tokens"], "response.max_output_tokens"
        )
    if obj.get("audio") is not None:
        audio = expect_dict(obj["audio"], "response.audio")
        reject_unknown(audio, ("output",), "response.audio")
        out = expect_dict(audio.get("output", {}), "response.audio.output")
        reject_unknown(out, ("format", "voice"), "response.audio.output")
        if out.get("format") is not None:
            params.output_format = parse_audio_format(out["format"], "response.audio.output.format")
        if out.get("voice") is not None:
            params.voice = expect_str(out["voice"], "response.audio.output.voice", max_len=128)
    if obj.get("metadata") is not None:
        metadata = expect_dict(obj["metadata"], "response.metadata")
        if len(metadata) > 16:
            raise ProtocolError(
                "invalid_value", "Too many metadata keys (max 16).", "response.metadata"
            )
        params.metadata = {
            expect_str(k, "response.metadata", max_len=64): expect_str(
                v, f"response.metadata.{k}", max_len=512
            )
            for k, v in metadata.items()
        }
    conversation_mode = obj.get("conversation", "auto")
    if conversation_mode not in ("auto", "none"):
        raise ProtocolError(
            "invalid_value",
            "Invalid 'response.conversation': expected 'auto' or 'none'.",
            "response.conversation",
        )
    params.in_conversation = conversation_mode == "auto"
    if obj.get("input") is not None:
        items: list[StoredItem] = []
        for i, raw_item in enumerate(
            expect_list(obj["input"], "response.input", max_len=MAX_INPUT_ITEMS)
        ):
            p = f"response.input[{i}]"
            item_obj = expect_dict(raw_item, p)
            if item_obj.get("type") == "item_reference":
                reject_unknown(item_obj, ("type", "id"), p)
                ref = conversation.get(expect_str(item_obj.get("id"), f"{p}.id"))
                if ref is None:
                    raise ProtocolError(
                        "item_not_found", f"Item '{item_obj.get('id')}' not found.", f"{p}.id"
                    )
                items.append(ref)
            else:
                try:
                    items.append(parse_client_item(item_obj, f"input_{i}", session.input_format))
                except ProtocolError as exc:
                    exc.param = f"{p}{(exc.param or '')[4:]}"
                    raise
        params.input_items = items
    return params


def _tokens(text: str) -> int:
    return len(text.split())


def usage(entries: list[Entry], output_text: str, output_audio_ms: float) -> dict[str, Any]:
    """Synthetic token usage: 1 text token per word, 1 audio token per 100 ms."""
    in_text = sum(e.tokens for e in entries)  # cached per item: not recounted per response
    in_audio = sum(math.ceil(e.audio_ms / AUDIO_MS_PER_TOKEN) for e in entries)
    out_text = _tokens(output_text)
    out_audio = math.ceil(output_audio_ms / AUDIO_MS_PER_TOKEN)
    return {
        "total_tokens": in_text + in_audio + out_text + out_audio,
        "input_tokens": in_text + in_audio,
        "output_tokens": out_text + out_audio,
        "input_token_details": {
            "text_tokens": in_text,
            "audio_tokens": in_audio,
            "image_tokens": 0,
            "cached_tokens": 0,
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Cancelled(Exception):
    """Raised inside the runner at a checkpoint once a cancel was requested."""


class ResponseRunner:
    """Streams one response; owned and awaited by its connection."""

    def __init__(
        self,
        host: ResponseHost,
        params: ResponseParams,
        decision: Decision,
        entries: list[Entry],
        conversation_id: str,
    ) -> None:
        self.host = host
        self.params = params
        self.decision = decision
        self.entries = entries
        self.id = host.ids.next("resp")
        self.conversation_id = conversation_id if params.in_conversation else None
        self.item: StoredItem | None = None
        self.task: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None
        # The pause a paced response is in (resolved early by a cancel request).
        self._pause: asyncio.Future[None] | None = None
        self._previous_id: str | None = None
        self._part_open = False
        self._args_sent = ""  # set once the arguments stop (done or cancelled)
        # Deltas sent so far, joined only when needed: ``str +=`` on an attribute copies
        # the whole string each time (quadratic over a long reply).
        self._text_parts: list[str] = []
        self._audio_ms_sent = 0.0
        self._output: list[dict[str, Any]] = []

    @property
    def active_item_ids(self) -> frozenset[str]:
        """Ids of items this response is still producing."""
        return frozenset({self.item.id}) if self.item else frozenset()

    @property
    def _text_sent(self) -> str:
        return "".join(self._text_parts)

    def request_cancel(self, reason: str) -> None:
        """Ask the runner to stop at its next checkpoint (reason ``client_cancelled``...)."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
            if self._pause is not None and not self._pause.done():
                self._pause.set_result(None)

    def _wire(self, status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        fmt = self.params.output_format
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": self._output if status != "in_progress" else [],
            "conversation_id": self.conversation_id,
            "output_modalities": list(self.params.output_modalities),
            "max_output_tokens": self.params.max_output_tokens,
            "audio": {"output": {"format": fmt.wire(), "voice": self.params.voice}},
            "usage": None,
            "metadata": self.params.metadata,
        }

    async def _checkpoint(self, until: float | None = None) -> None:
        """Yield to the event loop (pacing: until the loop time ``until``) and stop if a
        cancel is pending."""
        if self._cancel_reason is None:
            loop = asyncio.get_running_loop()
            if until is not None and until > loop.time():
                # One future and one timer per pause: far cheaper than wait_for on an
                # Event (a task, a timer and a cancellation per audio chunk).
                pause = self._pause = loop.create_future()
                timer = loop.call_at(until, _resolve, pause)
                try:
                    await pause
                finally:
                    timer.cancel()
                    self._pause = None
            else:
                await asyncio.sleep(0)
        if self._cancel_reason is not None:
            raise _Cancelled

    async def run(self) -> None:
        """Emit the whole response, or close it early as cancelled."""
        emit = self.host.emit
        await emit("response.created", response=self._wire("in_progress"))
        status = "completed"
        details: dict[str, Any] | None = None
        try:
            await self._checkpoint()
            if isinstance(self.decision, FunctionCall):
                await self._function_call(self.decision)
            else:
                text, truncated = self._limit(self.decision.text)
                if truncated:
                    status, details = (
                        "incomplete",
                        {"type": "incomplete", "reason": "max_output_tokens"},
                    )
                await self._message(text, "incomplete" if truncated else "completed")
        except _Cancelled:
            status = "cancelled"
            details = {"type": "cancelled", "reason": self._cancel_reason}
            await self._close_after_cancel()
        response = self._wire(status, details)
        response["usage"] = usage(
            self.entries, self._text_sent or self._args_sent, self._audio_ms_sent
        )
        await emit("response.done", response=response)

    def _limit(self, text: str) -> tuple[str, bool]:
        limit = self.params.max_output_tokens
        words = split_words(text)
        if isinstance(limit, int) and len(words) > limit:
            return "".join(words[:limit]), True
        return text, False

    async def _open_item(self, wire: dict[str, Any]) -> StoredItem:
        item = StoredItem(wire)
        item.measure()
        self.item = item
        await self.host.emit(
            "response.output_item.added", response_id=self.id, output_index=0, item=wire
        )
        if self.params.in_conversation:
            self._previous_id = await self.host.add_item(item, None, done=False)
        return item

    async def _finish_item(self, status: str) -> None:
        item = self.item
        if item is None:
            return
        item.wire["status"] = status
        item.measure()
        self._output.append(item.wire)
        await self.host.emit(
            "response.output_item.done", response_id=self.id, output_index=0, item=item.wire
        )
        if self.params.in_conversation:
            await self.host.emit(
                "conversation.item.done", previous_item_id=self._previous_id, item=item.wire
            )
        self.item = None

    async def _function_call(self, call: FunctionCall) -> None:
        item_id = self.host.ids.next("item")
        call_id = self.host.ids.next("call")
        wire = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": call_id,
            "arguments": "",
        }
        await self._open_item(wire)
        await self._checkpoint()
        ids = {"response_id": self.id, "item_id": item_id, "output_index": 0, "call_id": call_id}
        arguments = call.arguments
        step = max(ARGUMENT_DELTA_CHARS, -(-len(arguments) // MAX_DELTAS))
        sent = 0
        try:
            for start in range(0, len(arguments), step):
                delta = arguments[start : start + step]
                sent = start + len(delta)
                await self.host.emit("response.function_call_arguments.delta", delta=delta, **ids)
                await self._checkpoint()
        finally:
            # The item shows the arguments once they stop (all of them, or as far as a
            # cancel let them go), not re-copied after every delta.
            self._args_sent = wire["arguments"] = arguments[:sent]
        await self.host.emit(
            "response.function_call_arguments.done", name=call.name, arguments=arguments, **ids
        )
        await self._finish_item("completed")

    async def _message(self, text: str, final_status: str) -> None:
        item_id = self.host.ids.next("item")
        audio = self.params.output_modalities == ["audio"]
        wire: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        item = await self._open_item(wire)
        await self._checkpoint()
        ids = {"response_id": self.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        await self.host.emit("response.content_part.added", part=part, **ids)
        self._part_open = True
        await self._checkpoint()
        words = _group(split_words(text))
        if not audio:
            for word in words:
                self._text_parts.append(word)
                await self.host.emit("response.output_text.delta", delta=word, **ids)
                await self._checkpoint()
            await self._close_part()
            await self._finish_item(final_status)
            return
        fmt = self.params.output_format
        opts = self.host.options
        # Bounded: the audio of a very long reply is cut at max_reply_audio_ms (its
        # transcript is complete) and synthesised one chunk at a time.
        duration = min(
            max(float(opts.audio_chunk_ms), len(text) * opts.audio_ms_per_char / self.params.speed),
            float(max(opts.max_reply_audio_ms, opts.audio_chunk_ms)),
        )
        n, chunks = _TONES.chunks(duration, fmt, opts.audio_chunk_ms)
        # Paced: one chunk, then a wait of one chunk's duration.
        period = opts.audio_chunk_ms / 1000.0
        loop = asyncio.get_running_loop()
        sent_words = 0
        for k, (samples, delta) in enumerate(chunks):
            due = ((k + 1) * len(words) + n - 1) // n
            while sent_words < due:
                self._text_parts.append(words[sent_words])
                sent_words += 1
                await self.host.emit(
                    "response.output_audio_transcript.delta", delta=words[sent_words - 1], **ids
                )
                await self._checkpoint()
            self._audio_ms_sent += samples * 1000.0 / fmt.sample_rate
            item.audio_ms = round(self._audio_ms_sent)
            await self.host.emit_audio_delta(delta, ids)
            await self._checkpoint(loop.time() + period if opts.pace_audio else None)
        await self._close_part()
        await self._finish_item(final_status)

    async def _close_part(self) -> None:
        """Emit the done events of the open content part with what was produced so far."""
        item = self.item
        if item is None or not self._part_open:
            return
        self._part_open = False
        ids = {"response_id": self.id, "item_id": item.id, "output_index": 0, "content_index": 0}
        text = self._text_sent
        if self.params.output_modalities == ["audio"]:
            await self.host.emit("response.output_audio.done", **ids)
            await self.host.emit("response.output_audio_transcript.done", transcript=text, **ids)
            await self.host.emit(
                "response.content_part.done", part={"type": "audio", "transcript": text}, **ids
            )
            item.wire["content"] = [{"type": "output_audio", "transcript": text}]
        else:
            await self.host.emit("response.output_text.done", text=text, **ids)
            await self.host.emit(
                "response.content_part.done", part={"type": "text", "text": text}, **ids
            )
            item.wire["content"] = [{"type": "output_text", "text": text}]

    async def _close_after_cancel(self) -> None:
        await self._close_part()
        await self._finish_item("incomplete")
