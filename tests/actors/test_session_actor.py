"""A session in a session actor: a turn, a lagging reader, bad input, actor death.

Every test uses the shared 3-node cluster of ``tests/conftest.py`` and closes
the sessions it opens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import ray

from ray_realtime import (
    AssistantMessageItem,
    InputTooLargeError,
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeAudio,
    RealtimeEventsLost,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionRecovered,
    SerializationError,
    UserMessageItem,
)
from tests.actors.util import (
    ACTOR,
    TURN_TIMEOUT,
    assistant_texts,
    collect,
    collect_turns,
    last_reply,
    placement_of,
    session_host,
    wait_until,
)
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]


def _runner(**config: Any) -> RealtimeRunner:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="You are helpful.")
    return RealtimeRunner(agent, config={**ACTOR, **config})


# ------------------------------------------------------------------ turns


def _speech() -> bytes:
    import numpy as np

    t = np.arange(int(0.5 * 24000)) / 24000
    tone = (0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
    return tone + bytes(int(0.9 * 24000) * 2)


@pytest.mark.parametrize("data_plane", [True, False])
async def test_data_plane_and_ray_calls_carry_the_same_session(
    ray_cluster: RayTestCluster, data_plane: bool
) -> None:
    async with await _runner(data_plane=data_plane).run() as session:
        backend: Any = session._backend
        assert backend.data_plane_connected is data_plane
        await session.send_message("Hello there")
        await collect_turns(session)
        assert await last_reply(session) == "You said: Hello there"
        audio = _speech()
        for i in range(0, len(audio), 1920):
            await session.send_audio(audio[i : i + 1920])
        await collect_turns(session)
        assert (await last_reply(session)).startswith("I heard ")
        assert backend.data_plane_connected is data_plane


async def test_text_turn_through_a_session_actor(ray_cluster: RayTestCluster) -> None:
    async with await _runner().run() as session:
        assert session.session_id.startswith("rt_")
        await session.send_message("Hello there")
        events = await collect_turns(session)

        types = [e.type for e in events]
        assert types.index("agent_start") < types.index("audio") < types.index("agent_end")
        starts = [e for e in events if isinstance(e, RealtimeAgentStartEvent)]
        assert [e.agent.name for e in starts] == ["Assistant"]
        ends = [e for e in events if isinstance(e, RealtimeAgentEndEvent)]
        assert [e.agent.name for e in ends] == ["Assistant"]
        audio = [e for e in events if isinstance(e, RealtimeAudio)]
        assert audio and all(isinstance(e.audio.data, bytes) and e.audio.data for e in audio)

        # The handle's history (from history events) and the actor's agree.
        history = await session.get_history()
        assert assistant_texts(history) == ["You said: Hello there"]
        assert assistant_texts(session.history) == ["You said: Hello there"]
        assert [i.item_id for i in session.history] == [i.item_id for i in history]
        user = [i for i in history if isinstance(i, UserMessageItem)]
        assert [p.text for p in user[0].content] == ["Hello there"]
        assert isinstance(history[-1], AssistantMessageItem)

        # The router knows where the session lives.
        placement = await placement_of(ray_cluster.router, session.session_id)
        assert placement["node_id"] in ray_cluster.zones.values()


# -------------------------------------------------------------------- lag


async def test_slow_reader_is_told_how_many_events_it_missed(
    ray_cluster: RayTestCluster,
) -> None:
    log_size = 32
    # Over the data plane events are pushed to the handle's socket buffer as
    # they happen (bounded by WebSocket flow control), so a reader only lags
    # the actor's log when it leaves the stream; Ray reads show the log's bound.
    async with await _runner(event_log_size=log_size, data_plane=False).run() as session:
        host = await session_host(ray_cluster.router, session.session_id)
        # About 130 audio chunks plus transcript updates, none of them read.
        await session.send_message("say " + "lots of words to speak " * 18)

        async def finished() -> bool:
            stats = (await host.statistics.remote())[session.session_id]
            return bool(stats["events"] > 100 and stats["history_items"] >= 2)

        await wait_until(finished, TURN_TIMEOUT, "the long reply to be produced")

        async def settled() -> dict[str, Any] | None:
            before = (await host.statistics.remote())[session.session_id]
            await asyncio.sleep(0.3)
            after = (await host.statistics.remote())[session.session_id]
            return after if after["events"] == before["events"] else None

        stats = await wait_until(settled, TURN_TIMEOUT, "the event count to settle")
        last = stats["events"]
        assert last > 100
        assert stats["events_kept"] == log_size  # the actor's log is bounded

        events = await collect_turns(session)
        assert isinstance(events[0], RealtimeEventsLost)
        assert events[0].missed == last - log_size
        assert len(events) == 1 + log_size
        assert session.last_seq == last
        # The session goes on.
        await session.send_message("after the lag")
        events = await collect_turns(session)
        assert await last_reply(session) == "You said: after the lag"
        stats = (await host.statistics.remote())[session.session_id]
        assert stats["events_kept"] == log_size


# -------------------------------------------------------------- bad input


async def test_oversized_audio_chunk(ray_cluster: RayTestCluster) -> None:
    async with await _runner(max_audio_chunk_bytes=4096).run() as session:
        with pytest.raises(InputTooLargeError) as info:
            await session.send_audio(b"\0" * 8192)
        assert (info.value.size, info.value.limit) == (8192, 4096)
        await session.send_audio(b"\0" * 4096)  # at the bound: accepted
        await session.send_message("still working")
        await collect_turns(session)
        assert await last_reply(session) == "You said: still working"


@pytest.mark.parametrize(
    "context",
    [threading.Lock(), (i for i in range(3))],
    ids=["lock", "generator"],
)
async def test_context_that_cannot_cross_processes(
    ray_cluster: RayTestCluster, context: Any
) -> None:
    with pytest.raises(SerializationError, match="context"):
        await _runner().run(context={"thing": context})


# ------------------------------------------------------------------ death


async def test_session_actor_death(ray_cluster: RayTestCluster) -> None:
    # A killed session actor's session is recovered on another actor from the
    # session store (tests/faults has the SIGKILL-mid-reply and node cases).
    router = ray_cluster.router
    async with await _runner().run() as session:
        session_id = session.session_id
        await session.send_message("before the crash")
        await collect_turns(session)
        host = await session_host(router, session_id)
        ray.kill(host, no_restart=True)
        t0 = time.monotonic()
        events = await collect(
            session, lambda e: isinstance(e, RealtimeSessionRecovered), 20 * UNIT
        )
        print(f"the handle read session_recovered {time.monotonic() - t0:.2f} s after the kill")
        recovered = events[-1]
        assert isinstance(recovered, RealtimeSessionRecovered)
        assert recovered.items_restored >= 2
        assert await session_host(router, session_id) != host
        await session.send_message("after the crash")
        await collect_turns(session)
        attached = await asyncio.wait_for(RealtimeSession.attach(session.ticket), 10 * UNIT)
        await attached.detach()
    # Leaving the block (close) does not raise for a lost session.
