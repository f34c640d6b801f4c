"""Barge-in truncates the reply where the caller stopped hearing it: the
gateway feeds each call's playback tracker from Twilio's echoed marks, so the
model's ``conversation.item.truncated`` says what the caller heard, not what
was sent (real gateway on loopback, the local model, in-process and actor
sessions)."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.demo import build_demo_agent
from ray_realtime.gateway.server import Gateway
from ray_realtime.types.events import RealtimeRawModelEvent, RealtimeSessionEvent
from tests.conftest import RayTestCluster
from tests.gateway.sim import TwilioCaller, silence_ulaw, tone_ulaw
from tests.gateway.test_gateway_calls import _until

PLAYOUT_DELAY = 0.6
"""The simulated phone network starts playing reply audio this late: a
session assuming playback from the first chunk would truncate ~600 ms late."""
HEARD_MS = 300.0
TOLERANCE_MS = 150.0


async def _barge_in_after_heard(execution: str) -> tuple[float, float, list[dict[str, Any]]]:
    truncated: list[dict[str, Any]] = []

    def on_event(call_sid: str, event: RealtimeSessionEvent) -> None:
        if isinstance(event, RealtimeRawModelEvent) and event.data.type == "raw_server_event":
            data: Any = event.data.data  # type: ignore[union-attr]
            if data.get("type") == "conversation.item.truncated":
                truncated.append(data)

    gw = Gateway(
        build_demo_agent(),
        # Slow speech: the reply lasts long enough to barge in while it plays.
        run_config={  # type: ignore[typeddict-item]
            "execution": execution,
            "emit_raw_model_events": True,
            "model_settings": {"speed": 0.25},
        },
        on_event=on_event,
    )
    async with gw:
        url = f"ws://127.0.0.1:{gw.port}/twilio/media-stream"
        async with TwilioCaller(url, playout_delay=PLAYOUT_DELAY) as caller:
            await caller.start()
            await caller.speak(tone_ulaw(0.6) + silence_ulaw(0.8))
            await _until(lambda: caller.heard_ms >= HEARD_MS, 20, f"{HEARD_MS} ms heard")
            heard_before = caller.heard_ms
            received_ms = len(caller.audio) / 8
            await caller.speak(tone_ulaw(0.3))
            await _until(lambda: caller.clears >= 1, 10, "clear")
            await _until(lambda: bool(truncated), 20, "conversation.item.truncated")
            assert caller.heard_at_clear is not None
            heard_after = caller.heard_at_clear
        await _until(lambda: gw.open_sessions == 0, 20, "the session to close")
    # The test means something only if much more was sent than heard.
    assert received_ms > heard_before + 300
    return heard_before, heard_after, truncated


@pytest.mark.asyncio
async def test_in_process_truncation_follows_what_the_caller_heard() -> None:
    heard_before, heard_after, truncated = await _barge_in_after_heard("in_process")
    end = truncated[0]["audio_end_ms"]
    assert heard_before - 1 <= end <= heard_after + TOLERANCE_MS, (heard_before, heard_after, end)


@pytest.mark.asyncio
async def test_actor_truncation_follows_what_the_caller_heard(
    ray_cluster: RayTestCluster,
) -> None:
    heard_before, heard_after, truncated = await _barge_in_after_heard("actor")
    end = truncated[0]["audio_end_ms"]
    # The tracker's reports reach the actor coalesced (at most every 50 ms,
    # later on a loaded machine) when the model's own voice detection cuts
    # the reply: the position may lag a little behind what was heard.
    low = heard_before - TOLERANCE_MS
    assert low <= end <= heard_after + TOLERANCE_MS, (heard_before, heard_after, end)
