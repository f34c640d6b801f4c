"""Hostile server frames against the OpenAI client: typed events, quiet logs, the loop goes on.

Uses the scripted loopback peer of ``test_openai_ws``. Every case checks that what the
client reports can cross the wire codec (actor mode sends every event through it).
"""

from __future__ import annotations

import json
import logging

import pytest

from ray_realtime import wire

from .test_conversion import transcript_delta
from .test_openai_ws import Connect, FakePeer

DEEP_FRAMES = [
    "[" * 2000,  # not even complete: the parser recurses before it notices
    '{"type": "x", "d": ' + "[" * 900 + "]" * 900 + "}",  # parses, but too deep to use
    '{"type": "conversation.item.added", "item": ' + '{"a":' * 600 + "1" + "}" * 601,
]


async def _good_turn_still_arrives(peer: FakePeer, recorder: object, n: int = 1) -> None:
    await peer.send(transcript_delta("item_ok", f"good {n}"))
    deltas = await recorder.wait_count("transcript_delta", n)  # type: ignore[attr-defined]
    assert deltas[-1].delta == f"good {n}"


async def test_deep_json_is_a_protocol_error_logged_in_one_line(
    peer: FakePeer, connected: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ray_realtime.model.openai_ws")
    _, recorder = await connected()
    for round_ in range(1, 4):
        for frame in DEEP_FRAMES:
            await peer.send_raw(frame)
        await _good_turn_still_arrives(peer, recorder, round_)
    exceptions = recorder.of_type("exception")
    assert len(exceptions) == 3 * len(DEEP_FRAMES)
    assert {e.exception_type for e in exceptions} == {"ProtocolError"}
    assert all("nests deeper than" in e.message for e in exceptions)
    records = [r for r in caplog.records if r.name == "ray_realtime.model.openai_ws"]
    bad = [r for r in records if "bad realtime server event" in r.getMessage()]
    assert len(bad) == len(exceptions)
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in bad)
    assert not [r for r in records if r.levelno >= logging.ERROR]
    assert all(len(r.getMessage()) < 300 for r in bad)
    wire.decode_events(wire.encode_events(recorder.events))


async def test_nesting_within_the_bound_is_delivered(peer: FakePeer, connected: Connect) -> None:
    _, recorder = await connected()
    nested: object = 1
    for _ in range(45):
        nested = {"a": [nested]}
    await peer.send({"type": "future.event", "nested": nested})
    (other,) = await recorder.wait_count("other")
    assert other.data["nested"] == nested
    assert wire.decode(wire.encode(other)) == other


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**300])
async def test_huge_integers_in_raw_events_cross_the_wire(
    peer: FakePeer, connected: Connect, number: int
) -> None:
    # With raw events on, an integer >= 2**64 made encode_batch raise on every read.
    _, recorder = await connected(emit_raw_server_events=True)
    await peer.send_raw(json.dumps({"type": "future.event", "n": number, "deep": {"m": [number]}}))
    await peer.send_raw(json.dumps({**transcript_delta("item_a", "x"), "content_index": number}))
    (raw, *_) = await recorder.wait_count("raw_server_event", 2)
    assert raw.data["n"] == number
    await _good_turn_still_arrives(peer, recorder, 2)
    events, last_seq, _, _ = wire.decode_batch(wire.encode_batch(recorder.events, 7, 0, False))
    assert events == recorder.events and last_seq == 7


async def test_lone_surrogates_become_replacement_characters(
    peer: FakePeer, connected: Connect
) -> None:
    _, recorder = await connected(emit_raw_server_events=True)
    # json.dumps writes the lone surrogate as a \ud800 escape: valid UTF-8 on the wire.
    await peer.send_raw(json.dumps(transcript_delta("item_\udfff", "half \ud83d of a pair")))
    await peer.send_raw(json.dumps({"type": "future.event", "\ud800key": ["\udc00"]}))
    await peer.send_raw(json.dumps(transcript_delta("item_b", "whole \U0001f600")))
    deltas = await recorder.wait_count("transcript_delta", 2)
    assert deltas[0].delta == "half \ufffd of a pair"
    assert deltas[0].item_id == "item_\ufffd"
    assert deltas[1].delta == "whole \U0001f600"
    (other,) = recorder.of_type("other")
    assert other.data == {"type": "future.event", "\ufffdkey": ["\ufffd"]}
    wire.decode_events(wire.encode_events(recorder.events))
