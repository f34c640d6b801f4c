"""The local model server's session-length cap (``max_session_seconds``) ends
a session the way the OpenAI Realtime service does at its cap: an ``error``
event with code ``session_expired``, then a close with code 1001 and the same
message as its reason. Off by default. Also: client-chosen item ids of the
server's own form move its id counter, so a restored conversation never meets
its ids again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ray_realtime.local import LocalModelServer
from ray_realtime.local.protocol import ServerOptions

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
TIMEOUT = 5.0


async def events_until_close(ws: ClientConnection) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    async def run() -> None:
        try:
            while True:
                events.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            return

    await asyncio.wait_for(run(), TIMEOUT)
    return events


async def test_a_session_ends_at_the_cap_like_the_real_service() -> None:
    async with LocalModelServer(max_session_seconds=0.3, pace_audio=True) as server:
        async with connect(server.url) as ws:
            # A paced reply is still streaming when the cap hits.
            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "say " + "word " * 60}],
                        },
                    }
                )
            )
            await ws.send(json.dumps({"type": "response.create"}))
            events = await events_until_close(ws)
            assert ws.close_code == 1001
            assert ws.close_reason == "Your session hit the maximum duration of 0.3 seconds."
    types = [e["type"] for e in events]
    assert types[0] == "session.created"
    assert "response.output_audio.delta" in types
    assert "response.done" not in types  # the response was cut by the cap
    error = events[-1]  # nothing follows the error
    SERVER_EVENTS.validate_python(error)
    assert error["type"] == "error"
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 0.3 seconds.",
        "param": None,
        "event_id": None,
    }


def test_the_cap_is_off_by_default_and_must_be_positive() -> None:
    assert ServerOptions().max_session_seconds is None
    assert LocalModelServer().options.max_session_seconds is None
    with pytest.raises(ValueError, match="max_session_seconds"):
        LocalModelServer(max_session_seconds=0)


def test_the_command_line_takes_the_cap() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ray_realtime.cli", "local-model", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--max-session-seconds" in out.stdout


async def test_client_ids_of_the_server_form_move_its_counter() -> None:
    async with LocalModelServer() as server, connect(server.url) as ws:
        await ws.recv()  # session.created
        for item_id in ("item_000007", None):
            item: dict[str, Any] = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
            if item_id:
                item["id"] = item_id
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        added = []
        while len(added) < 2:
            event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if event["type"] == "conversation.item.added":
                added.append(event["item"]["id"])
    assert added == ["item_000007", "item_000008"]
