"""Chaos: a session actor SIGKILLed in the middle of a reply with audio streaming.

The same handle goes on: the router notices the death, re-places the session
on a warm actor, which restores it from the session store (the embedded store
actor of the shared cluster); every completed history item the reader saw is
still there, the reader sees exactly one ``session_recovered`` whose
``events_lost`` is the exact gap in sequence numbers, the cut turn ends with an
``error`` and its ``agent_end``, and the next turn works.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeAudio,
    RealtimeError,
    RealtimeRunner,
    RealtimeSessionRecovered,
    SessionLostError,
    SessionNotFoundError,
)
from ray_realtime.local.server import LocalModelServer
from tests.actors.util import wait_until
from tests.conftest import UNIT, RayTestCluster
from tests.faults.util import Reader, kill_session_actor, session_actor

pytestmark = [pytest.mark.ray]


def _agent() -> RealtimeAgent[Any]:
    return RealtimeAgent(name="Survivor", instructions="Keep talking.")


async def test_sigkill_mid_reply_recovers_on_the_same_handle(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    # A paced model server (real time audio): the kill lands inside a reply.
    async with LocalModelServer(pace_audio=True, audio_ms_per_char=20) as server:
        runner = RealtimeRunner(_agent(), config={"execution": "actor"})
        session = await runner.run(model_config={"url": server.url})
        async with session:
            reader = Reader(session)
            await session.send_message("say first turn done")
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            await session.send_message("say " + "long reply " * 40)  # ~9 s of audio
            audio = 0

            def third_chunk(event: Any) -> bool:
                nonlocal audio
                audio += isinstance(event, RealtimeAudio)
                return audio >= 3

            await reader.until(third_chunk)
            completed = set(reader.completed)
            assert len(completed) >= 3  # turn 1's user and assistant items, turn 2's user item
            before_seq = session.last_seq
            dead = await kill_session_actor(router, session.session_id)

            recovered = await reader.until(
                lambda e: isinstance(e, RealtimeSessionRecovered), timeout=20 * UNIT
            )
            assert isinstance(recovered, RealtimeSessionRecovered)
            ((recovered_seq, _),) = reader.of_type(RealtimeSessionRecovered)
            previous = max(seq for seq, e in reader.seen if seq < recovered_seq)
            assert previous >= before_seq
            assert recovered.reason == "actor_died"
            assert recovered.events_lost == recovered_seq - previous - 1
            assert recovered.items_restored >= len(completed)

            # The cut turn ends visibly: an error with a clear code, then agent_end.
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            after = [e for seq, e in reader.seen if seq > recovered_seq]
            codes = [e.error.get("code") for e in after if isinstance(e, RealtimeError)]
            assert "response_cut_by_recovery" in codes

            # It runs on another actor now, and the next turn works.
            _, info = await session_actor(router, session.session_id)
            assert info["pid"] != dead["pid"]
            await session.send_message("say after the fault")
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
            ids = {item.item_id for item in history}
            assert completed <= ids, f"lost completed items: {completed - ids}"
            assert len(reader.of_type(RealtimeSessionRecovered)) == 1


async def test_closing_right_after_the_kill_closes_the_recovered_session(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    session = await RealtimeRunner(_agent(), config={"execution": "actor"}).run()
    async with session:
        reader = Reader(session)
        await session.send_message("say soon gone")
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        await kill_session_actor(router, session.session_id)
    # Leaving the block closed the session while the router recovered it: the
    # recovered session must not outlive its only handle.

    async def gone() -> bool:
        # lookup waits for a recovery in progress, then says where it lives.
        try:
            await asyncio.wait_for(router.lookup.remote(session.session_id), 20 * UNIT)
        except (SessionNotFoundError, SessionLostError):
            return True
        return False

    await wait_until(gone, 20 * UNIT, "the recovered session to be closed")


async def test_a_call_during_recovery_waits_at_most_recovery_timeout(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    # A recovery takes at least a router round trip and a model connection:
    # far more than 1 ms, so this call gives up on it.
    config = {"execution": "actor", "recovery_timeout_seconds": 0.001}
    session = await RealtimeRunner(_agent(), config=config).run()  # type: ignore[arg-type]
    async with session:
        reader = Reader(session)
        await session.send_message("say before")
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        await kill_session_actor(router, session.session_id)
        with pytest.raises(SessionLostError, match="recovery_timeout_seconds"):
            await asyncio.wait_for(session.send_message("say during"), 10 * UNIT)

        # The recovery went on meanwhile (reads gave up on it too): once it is
        # done the same handle works again.
        async def back() -> bool:
            try:
                await asyncio.wait_for(session.get_history(), 5 * UNIT)
            except SessionLostError:
                return False
            return True

        await wait_until(back, 20 * UNIT, "the handle's recovery to finish")
        await reader.until(lambda e: isinstance(e, RealtimeSessionRecovered), 20 * UNIT)
        await session.send_message("say after")
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))


async def test_a_session_placed_on_a_just_killed_actor_opens_elsewhere(
    ray_cluster: RayTestCluster,
) -> None:
    """The router still lists an actor for a moment after its process dies; a
    session placed on it in that moment is placed again, not lost."""
    router = ray_cluster.router
    runner = RealtimeRunner(_agent(), config={"execution": "actor"})
    first = await runner.run()
    async with first:
        _, info = await session_actor(router, first.session_id)
        # The next session would share this (packed) actor: kill it and open
        # at once, before the router's health round can drop it.
        kill_session_actor_pid = int(info["pid"])
        os.kill(kill_session_actor_pid, signal.SIGKILL)
        second = await asyncio.wait_for(runner.run(), 30 * UNIT)
        async with second:
            _, second_info = await session_actor(router, second.session_id)
            assert second_info["pid"] != kill_session_actor_pid
            await second.send_message("say still here")
            reader = Reader(second)
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            assert "audio" in reader.types()


async def test_attach_right_after_the_actor_dies_finds_the_recovered_session(
    ray_cluster: RayTestCluster,
) -> None:
    """An attach whose lookup still names the dead actor waits for the
    session's recovery instead of failing with SessionLostError."""
    from ray_realtime import RealtimeSession

    router = ray_cluster.router
    async with await RealtimeRunner(_agent(), config={"execution": "actor"}).run() as session:
        reader = Reader(session)
        await session.send_message("say before the kill")
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        await kill_session_actor(router, session.session_id)
        other = await asyncio.wait_for(RealtimeSession.attach(session.ticket), 30 * UNIT)
        try:
            await other.send_message("say after the kill")
            again = Reader(other)
            await again.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        finally:
            await other.detach()
