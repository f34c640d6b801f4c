"""Hostile client input against the local model server: each gets a bounded, typed answer.

Every case runs against a real server on loopback and ends by checking that the same
connection still serves a normal turn (and, where the input is expensive, that another
connection is served meanwhile).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ray_realtime.local import LocalModelServer
from ray_realtime.local.conversation import Conversation, StoredItem
from ray_realtime.local.protocol import MAX_JSON_DEPTH
from ray_realtime.local.responder import MAX_DELTAS

from .test_server import Client, audio_reply, open_client

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer() as srv:
        yield srv


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="ray_realtime.local")
    return caplog


def _assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def _still_serves(client: Client) -> None:
    transcript, _, response = audio_reply(await client.turn("hello again"))
    assert transcript == "You said: hello again"
    assert response["status"] == "completed"


def _raw(event: dict[str, Any]) -> str:
    # ensure_ascii (the default) writes a lone surrogate as its \uXXXX escape: valid UTF-8.
    return json.dumps(event)


# --- lone surrogates ----------------------------------------------------------------------


LONE_SURROGATES = [
    ("type", {"type": "\ud800"}),
    ("event_id", {"type": "nope", "event_id": "\udfff"}),
    (
        "input_text",
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "say \ud83d!"}],
            },
        },
    ),
    (
        "instructions",
        {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": "Always reply: \udc00"},
        },
    ),
    ("unknown_key", {"type": "input_audio_buffer.clear", "\ud801": 1}),
]


@pytest.mark.parametrize(("name", "event"), LONE_SURROGATES, ids=[n for n, _ in LONE_SURROGATES])
async def test_lone_surrogate_is_rejected_and_connection_lives(
    server: LocalModelServer, no_errors_logged: pytest.LogCaptureFixture, name: str, event: Any
) -> None:
    async with open_client(server.url) as client:
        await client.send_raw(_raw(event))
        error = await client.expect_error("invalid_unicode")
        assert "surrogate" in error["error"]["message"]
        await _still_serves(client)
    _assert_nothing_logged(no_errors_logged)


async def test_a_surrogate_pair_is_fine(server: LocalModelServer) -> None:
    async with open_client(server.url) as client:
        await client.user_text("say \ud83d\ude00")  # json.dumps escapes the pair
        transcript, _, _ = audio_reply(await client.respond())
        assert transcript == "\U0001f600"


# --- deep nesting -------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


def _nested_text(levels: int) -> str:
    """JSON text of ``levels`` nested objects (json.dumps itself fails on such depth)."""
    return '{"x":' * (levels - 1) + "{}" + "}" * (levels - 1)


async def drain_until(client: Client, event_type: str, limit: int = 200_000) -> list[Any]:
    """Events up to ``event_type`` (parsed, not schema-checked: there are thousands)."""
    events: list[Any] = []
    for _ in range(limit):
        event = json.loads(await asyncio.wait_for(client.ws.recv(), 5.0))
        events.append(event)
        if event["type"] == event_type:
            return events
    raise AssertionError(f"no {event_type} within {limit} events")


@pytest.mark.parametrize("levels", [100, 490, 900])
async def test_deeply_nested_tool_schema_is_a_clear_error(
    server: LocalModelServer, no_errors_logged: pytest.LogCaptureFixture, levels: int
) -> None:
    tool = '{"type": "function", "name": "deep", "parameters": ' + _nested_text(levels) + "}"
    async with open_client(server.url) as client:
        await client.send_raw(
            '{"type": "session.update", "session": {"type": "realtime", "tools": [' + tool + "]}}"
        )
        error = await client.expect_error("nesting_too_deep")
        assert str(MAX_JSON_DEPTH) in error["error"]["message"]
        await _still_serves(client)
    _assert_nothing_logged(no_errors_logged)


async def test_nesting_within_the_bound_is_accepted(server: LocalModelServer) -> None:
    # session > tools > [0] > parameters: 4 levels, then 2 per schema level.
    tool = {"type": "function", "name": "deepish", "parameters": _nested(25)}
    async with open_client(server.url) as client:
        session = await client.update(tools=[tool])
        assert session["tools"][0]["parameters"] == tool["parameters"]


async def test_deep_json_in_an_argument_value_gives_the_default(
    server: LocalModelServer, no_errors_logged: pytest.LogCaptureFixture
) -> None:
    tool = {
        "type": "function",
        "name": "store",
        "parameters": {"type": "object", "properties": {"items": {"type": "array"}}},
    }
    deep = "[" * 900 + "]" * 900
    async with open_client(server.url) as client:
        await client.update(tools=[tool])
        events = await client.turn(f"store items={deep}")
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert json.loads(done["arguments"]) == {"items": []}
        assert not [e for e in events if e["type"] == "error"]
        await _still_serves(client)
    _assert_nothing_logged(no_errors_logged)


# --- cost of argument extraction ----------------------------------------------------------


async def test_odd_property_names_and_long_whitespace_stay_fast(
    server: LocalModelServer, no_errors_logged: pytest.LogCaptureFixture
) -> None:
    # A property named "" made extract_arguments rescan the run of spaces from every
    # position: 64 k spaces took 31 s and froze every connection.
    props = {"": {"type": "string"}, " ": {"type": "string"}, "k ": {"type": "string"}}
    tool = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": props}}
    text = "a" + " " * 64_000 + "b"
    async with open_client(server.url) as client, open_client(server.url) as other:
        await client.update(tools=[tool], tool_choice="required", output_modalities=["text"])
        await client.user_text(text)
        start = time.perf_counter()
        await client.send({"type": "response.create"})
        # Another connection is served while the response is worked out.
        await other.update(instructions="still here")
        events = await client.recv_until("response.done")
        assert time.perf_counter() - start < 2.0
        assert events[-1]["response"]["status"] == "completed"
        await client.update(tool_choice="auto", output_modalities=["audio"])
        await _still_serves(client)
    _assert_nothing_logged(no_errors_logged)


# --- cost of a long reply -----------------------------------------------------------------


async def _time_round_trip(client: Client) -> float:
    start = time.perf_counter()
    await client.update(instructions="ping")
    return time.perf_counter() - start


async def test_slow_speech_of_a_long_reply_is_bounded(server: LocalModelServer) -> None:
    # speed 0.25 and a 20 k-character reply asked for 1,000 s of float64 tone at once
    # (+727 MiB) and stalled other connections for 1.7 s. Now the audio is capped and
    # made one chunk at a time: the first chunk comes at once, with little memory.
    text = "say " + "word " * 4000
    async with open_client(server.url) as client, open_client(server.url) as other:
        await client.update(audio={"output": {"speed": 0.25}})
        await client.user_text(text)
        tracemalloc.start()
        try:
            await client.send({"type": "response.create"})
            lag = await _time_round_trip(other)
            events = []
            while not events or events[-1]["type"] != "response.output_audio.delta":
                events.append(json.loads(await asyncio.wait_for(client.ws.recv(), 5.0)))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB traced at peak"
        assert lag < 1.0
        await client.send({"type": "response.cancel"})
        events = await drain_until(client, "response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        await client.update(audio={"output": {"speed": 1.0}})
        await _still_serves(client)


async def test_reply_audio_is_capped_and_the_transcript_complete() -> None:
    text = "say " + "word " * 400
    async with (
        LocalModelServer(max_reply_audio_ms=2000) as srv,
        open_client(srv.url) as client,
    ):
        await client.update(audio={"output": {"speed": 0.25}})
        await client.user_text(text)
        await client.send({"type": "response.create"})
        transcript, audio, response = audio_reply(await drain_until(client, "response.done"))
        assert transcript == text[4:].strip()
        assert len(audio) / 48 == 2000
        assert response["status"] == "completed"


async def test_many_words_give_a_bounded_number_of_deltas(server: LocalModelServer) -> None:
    # One delta per word and a reply string grown with += made 200 k words quadratic.
    words = 200_000
    text = "a " * words
    async with open_client(server.url) as client:
        await client.update(output_modalities=["text"])
        await client.user_text("say " + text)
        start = time.perf_counter()
        await client.send({"type": "response.create"})
        events = await drain_until(client, "response.done")
        assert time.perf_counter() - start < 10.0
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert 0 < len(deltas) <= MAX_DELTAS
        done = next(e for e in events if e["type"] == "response.output_text.done")
        assert "".join(deltas) == done["text"] == text.strip()


async def test_long_arguments_give_a_bounded_number_of_deltas(server: LocalModelServer) -> None:
    tool = {
        "type": "function",
        "name": "echo",
        "parameters": {
            "type": "object",
            "properties": {f"p{i}": {"type": "string"} for i in range(60)},
        },
    }
    value = "v" * 3000
    async with open_client(server.url) as client:
        await client.update(tools=[tool])
        events = await client.turn("echo " + " ".join(f"p{i}={value}" for i in range(1)))
        deltas = [
            e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
        ]
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert "".join(deltas) == done["arguments"]
        assert json.loads(done["arguments"])["p0"] == value
        assert len(deltas) <= MAX_DELTAS
        item = next(e for e in events if e["type"] == "conversation.item.done")["item"]
        assert item["arguments"] == done["arguments"]


async def test_responses_over_a_large_conversation_do_not_recount_it(
    server: LocalModelServer,
) -> None:
    # Usage counted the words of the whole conversation on every response.
    big = "w " * 400_000  # 800 KB of words per item
    async with open_client(server.url) as client:
        await client.update(output_modalities=["text"])
        for _ in range(16):
            await client.user_text(big)
        await client.send({"type": "response.create"})
        await drain_until(client, "response.done")  # counts once
        start = time.perf_counter()
        for _ in range(5):
            await client.user_text("hi")
            events = await client.respond()
        assert time.perf_counter() - start < 1.0
        usage = events[-1]["response"]["usage"]
        assert usage["input_token_details"]["text_tokens"] >= 16 * 400_000


# --- many hostile events in a row -----------------------------------------------------------


async def test_a_burst_of_bad_events_leaves_the_server_serving(server: LocalModelServer) -> None:
    bad: list[str | bytes] = [
        "[" * 5000,
        "{" * 5000,
        '{"type": "session.update", "session": ' + _nested_text(200) + "}",
        json.dumps({"type": "\ud800"}),
        b"\x00\xff",
        json.dumps({"type": "input_audio_buffer.append", "audio": "!!"}),
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"1").decode()}),
    ]
    async with open_client(server.url) as client:
        for message in bad * 20:
            await client.send_raw(message)
        errors = 0
        while errors < 7 * 20 - 20:  # the 1-byte append is valid (an odd byte is kept)
            event = await client.recv()
            assert event["type"] == "error", event
            assert event["error"]["type"] == "invalid_request_error"
            errors += 1
        await _still_serves(client)
    async with open_client(server.url) as again:
        await _still_serves(again)


async def test_server_answers_while_a_peer_floods(server: LocalModelServer) -> None:
    async def flood() -> None:
        async with open_client(server.url) as client:
            for _ in range(200):
                await client.send_raw("[" * 20_000)
            for _ in range(200):
                await client.recv()

    task = asyncio.create_task(flood())
    async with open_client(server.url) as other:
        for _ in range(5):
            assert await _time_round_trip(other) < 1.0
    await asyncio.wait_for(task, 10)


def test_evicting_many_items_at_once_is_linear() -> None:
    # Each eviction searched the order list: evicting k of n items cost k x n.
    conversation = Conversation(max_items=100_000, max_bytes=1 << 40)
    for i in range(50_000):
        conversation.add(StoredItem({"id": f"item_{i}"}, size=10))
    conversation.max_bytes = 100
    start = time.perf_counter()
    evicted = conversation.evict(frozenset({"item_0"}))
    assert time.perf_counter() - start < 1.0
    assert len(evicted) == 49_990
    assert [item.id for item in conversation] == [
        "item_0",
        *(f"item_{i}" for i in range(49_991, 50_000)),
    ]
