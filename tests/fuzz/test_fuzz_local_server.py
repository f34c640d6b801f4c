"""Fuzzing the local model server with hostile client events, over real WebSockets.

One server runs on loopback (in a thread of its own, with its own event loop) for the
module. Each example opens a connection, sends hostile events, then a sentinel event
whose answer is known: every event received up to it must be well formed, every error
typed ``invalid_request_error`` (never an internal error), the whole exchange bounded
in time, nothing logged at ERROR, and the connection still answering. Each example
opening a fresh connection shows that the server keeps serving others.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from ray_realtime.local import LocalModelServer

from .common import KEY, TEXT, ErrorRecords, deep_json_text, dumps, json_values

EXAMPLE_SECONDS = 5.0  # one example, all its events included
MAX_EVENTS = 20_000
SENTINEL = {"type": "response.cancel", "response_id": "resp_sentinel", "event_id": "sentinel"}

EVENT_TYPES = [
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
]


class ServerThread:
    """A LocalModelServer on its own event loop in a daemon thread."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = LocalModelServer(**options)

    def start(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    # Short reply audio: a fuzzed response must not take seconds of audio to stream.
    server = ServerThread(max_reply_audio_ms=400, max_event_bytes=256 << 10)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


# --- strategies ---------------------------------------------------------------------------

PROPERTY = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer", "number", "boolean", "array", "object"])},
    optional={"enum": st.lists(TEXT, max_size=4)},
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "name": st.from_regex(r"[a-z][a-z_\-]{0,12}", fullmatch=True),
        "parameters": st.fixed_dictionaries(
            {
                "type": st.just("object"),
                "properties": st.dictionaries(KEY, PROPERTY, max_size=5),
                "required": st.lists(KEY, max_size=3),
            }
        ),
    }
)
SESSION = st.fixed_dictionaries(
    {"type": st.just("realtime")},
    optional={
        "instructions": TEXT,
        "tools": st.lists(TOOL, max_size=3, unique_by=lambda t: t["name"]),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "output_modalities": st.sampled_from([["text"], ["audio"]]),
        "max_output_tokens": st.one_of(st.integers(1, 50), st.just("inf")),
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "output": st.fixed_dictionaries(
                    {}, optional={"speed": st.floats(0.25, 1.5), "voice": st.just("marin")}
                ),
                "input": st.fixed_dictionaries(
                    {}, optional={"turn_detection": st.none(), "transcription": st.just({})}
                ),
            },
        ),
    },
)
USER_ITEM = st.fixed_dictionaries(
    {
        "type": st.just("message"),
        "role": st.sampled_from(["user", "system", "assistant"]),
        "content": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["input_text", "output_text"]), "text": TEXT}
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={"id": st.text(max_size=10)},
)
PLAUSIBLE = st.one_of(
    st.builds(lambda s: {"type": "session.update", "session": s}, SESSION),
    st.builds(lambda i: {"type": "conversation.item.create", "item": i}, USER_ITEM),
    st.builds(
        lambda r: {"type": "response.create", "response": r},
        st.fixed_dictionaries(
            {},
            optional={
                "instructions": TEXT,
                "tools": st.lists(TOOL, max_size=2, unique_by=lambda t: t["name"]),
                "tool_choice": st.sampled_from(["auto", "required"]),
                "output_modalities": st.sampled_from([["text"], ["audio"]]),
                "conversation": st.sampled_from(["auto", "none"]),
            },
        ),
    ),
    st.just({"type": "response.create"}),
    st.builds(
        lambda a: {"type": "input_audio_buffer.append", "audio": a},
        st.sampled_from(["", "AAAA", "AA==", "!!!!", "A" * 4000, "/" * 400]),
    ),
    st.builds(
        lambda i, c, a: {
            "type": "conversation.item.truncate",
            "item_id": i,
            "content_index": c,
            "audio_end_ms": a,
        },
        st.sampled_from(["item_000001", "item_000002", "x"]),
        json_values(3),
        json_values(3),
    ),
)
SHAPED = st.builds(
    lambda t, fields: {"type": t, **fields},
    st.one_of(st.sampled_from(EVENT_TYPES), TEXT),
    st.dictionaries(KEY, json_values(), max_size=4),
)
MESSAGES = st.one_of(
    PLAUSIBLE.map(dumps),
    SHAPED.map(dumps),
    json_values().map(dumps),
    # Raw text (a text frame must be UTF-8: a lone surrogate can only come escaped).
    TEXT.map(lambda t: t.encode("utf-8", "replace").decode("utf-8")),
    st.binary(max_size=64),
    st.builds(deep_json_text, st.integers(1, 3000), st.sampled_from(["[", "{"])),
)


# --- the test -----------------------------------------------------------------------------


def _check(event: Any) -> None:
    assert isinstance(event, dict), event
    assert isinstance(event.get("type"), str) and isinstance(event.get("event_id"), str)
    if event["type"] == "error":
        error = event["error"]
        assert error["type"] == "invalid_request_error", error
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


def _exchange(ws: ClientConnection, messages: list[str | bytes]) -> None:
    deadline = time.monotonic() + EXAMPLE_SECONDS
    for message in messages:
        ws.send(message)
    ws.send(json.dumps(SENTINEL))
    for _ in range(MAX_EVENTS):
        event = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        _check(event)
        if event["type"] == "error" and event["error"]["event_id"] == "sentinel":
            assert event["error"]["code"] == "response_cancel_not_active"
            return
    raise AssertionError(f"no answer to the sentinel within {MAX_EVENTS} events")


@given(messages=st.lists(MESSAGES, min_size=1, max_size=6))
def test_hostile_client_events(
    server_url: str, error_records: ErrorRecords, messages: list[str | bytes]
) -> None:
    start = time.monotonic()
    with connect(server_url, open_timeout=5, close_timeout=1, max_size=None) as ws:
        created = json.loads(ws.recv(timeout=5))
        assert created["type"] == "session.created"
        _exchange(ws, messages)
        # The same connection still works: a second sentinel is answered too.
        _exchange(ws, [])
    assert time.monotonic() - start < EXAMPLE_SECONDS + 1
    assert not error_records.records, [r.getMessage() for r in error_records.records]
