"""A session in a session actor outlives its model session's length cap: the
actor's driver reconnects and replays, and the handle -- over the data plane
-- sees one ``session_recovered`` per cap hit, every answer and the whole
history. Uses the shared cluster of ``tests/conftest.py``; the model is a
local model server in this process with a short cap, reached on loopback."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ray_realtime import RealtimeAgent, RealtimeRunner, RealtimeSessionEvent
from tests.actors.util import ACTOR
from tests.conftest import RayTestCluster
from tests.runner.test_e2e_in_process import within
from tests.runner.test_model_reconnect import (
    RECONNECT,
    Served,
    ask,
    check_history,
    check_recoveries,
)

pytestmark = [pytest.mark.ray]


async def test_an_actor_session_outlives_the_session_cap(ray_cluster: RayTestCluster) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant")
    runner = RealtimeRunner(agent, config={**ACTOR, "model_reconnect": RECONNECT})  # type: ignore[typeddict-item]
    events: list[RealtimeSessionEvent] = []
    texts: list[str] = []
    async with Served(max_session_seconds=1.5, pace_audio=True) as served:
        session = await runner.run(model_config={"url": served.url})
        await within(session.enter(), 30)
        try:
            started = time.monotonic()
            while time.monotonic() - started < 6.0:
                texts.append(f"answer {len(texts) + 1} from the actor")
                await ask(session, texts[-1], events)
            check_history(session, texts)
        finally:
            await within(session.close(), 30)
        losses = len(served.sockets) - 1
    assert losses >= 2
    check_recoveries(events, losses)
