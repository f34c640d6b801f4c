"""Sessions are capabilities: reaching Ray is not enough to read or steer one.

A session's methods on its actor need the session's secret; ``attach`` takes
the owner's ticket (or a bare id where the service allows open attach);
listings and lookups never carry the secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from ray_realtime import (
    ConfigError,
    RealtimeAgent,
    RealtimeRunner,
    RealtimeSession,
    SessionAccessError,
    UserError,
)
from ray_realtime.actors import raylib
from ray_realtime.actors.handle import make_ticket, parse_ticket
from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.session.start import new_session_id
from tests.actors.util import (
    ACTOR,
    collect_turns,
    last_reply,
    placement_of,
    session_host,
    wait_until,
)
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]


def _runner() -> RealtimeRunner:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="You are helpful.")
    return RealtimeRunner(agent, config=ACTOR)


async def _refused(call: Awaitable[Any]) -> BaseException:
    """The typed error an actor call raised (Ray's wrapper taken off)."""
    try:
        await asyncio.wait_for(call, 10 * UNIT)
    except BaseException as exc:
        error = raylib.unwrap_task_error(exc)
        assert isinstance(error, SessionAccessError), repr(error)
        return error
    raise AssertionError("the call was not refused")


async def test_attach_needs_the_owners_ticket(ray_cluster: RayTestCluster) -> None:
    async with await _runner().run() as session:
        sid, secret = parse_ticket(session.ticket)
        assert sid == session.session_id and len(secret) >= 16
        # Open attach is off by default: the id alone grants nothing.
        with pytest.raises(SessionAccessError, match="ticket"):
            await asyncio.wait_for(RealtimeSession.attach(session.session_id), 10 * UNIT)
        for bad in (
            make_ticket(sid, "a-guessed-secret-of-some-length"),
            "rrt1.not*base64",
            "rrt1." + "A" * 600,
            "rrt1.kw",  # base64 of a msgpack array of nothing useful
            "",
        ):
            with pytest.raises(SessionAccessError):
                await asyncio.wait_for(RealtimeSession.attach(bad), 10 * UNIT)
        # The owner's ticket works, from here or from any process.
        other = await asyncio.wait_for(RealtimeSession.attach(session.ticket), 10 * UNIT)
        try:
            assert other.ticket == session.ticket
            await other.send_message("say ticket holder")
            await collect_turns(other)
            assert await last_reply(other) == "ticket holder"
        finally:
            await other.detach()


async def test_session_methods_need_the_secret(ray_cluster: RayTestCluster) -> None:
    async with await _runner().run() as session:
        sid, secret = parse_ticket(session.ticket)
        host = await session_host(ray_cluster.router, sid)
        agent: RealtimeAgent[Any] = RealtimeAgent(name="Intruder", instructions="Obey me.")
        calls: list[tuple[str, tuple[Any, ...]]] = [
            ("send_message", ("say hijacked",)),
            ("send_audio", (b"\0" * 960, True)),
            ("interrupt", ()),
            ("update_agent", (raylib.dumps(agent),)),
            ("approve_tool_call", ("call_1",)),
            ("reject_tool_call", ("call_1", None)),
            ("read_events", (0, 10, 0.0)),
            ("get_history", ()),
            ("data_plane", ()),
            ("close_session", ()),
        ]
        for wrong in (None, "", "x" * len(secret), secret[:-1], secret + "x"):
            for method, args in calls:
                error = await _refused(getattr(host, method).remote(sid, wrong, *args))
                assert error.session_id == sid
                assert secret not in str(error)
        # Opening the same id again does not hand the secret out either.
        await _refused(host.open_session.remote(sid, b"", {"token": "guess" * 5}))

        # Nothing above reached the session: the owner's turn is the first.
        await session.send_message("say still mine")
        events = await collect_turns(session)
        assert not any(e.type == "agent_start" and e.agent.name == "Intruder" for e in events)
        assert await last_reply(session) == "still mine"
        history = await session.get_history()
        assert all("hijacked" not in repr(item) for item in history)
        # With the secret the actor answers.
        assert await host.get_history.remote(sid, secret)

        # Listings, lookups and statistics show ids and placement, never the secret.
        router = ray_cluster.router
        placement = await placement_of(router, sid)
        listed = await router.list_sessions.remote()
        status = await router.status.remote()
        stats = await host.statistics.remote()
        for shown in (placement, listed, status, stats):
            assert secret not in repr(shown)
        assert placement["open_attach"] is False
        assert sid in repr(listed)


async def test_open_attach_hands_the_secret_to_sessions_opened_so(
    ray_cluster: RayTestCluster,
) -> None:
    """The actor's half of open attach: a session opened with ``open_attach``
    (what a handle does when the service's flag is on) gives its secret to a
    caller without one; any other session does not (above)."""
    router = ray_cluster.router
    sid = new_session_id()
    placement = await asyncio.wait_for(router.place_session.remote(sid, None, None), 10 * UNIT)
    host = placement["actor"]
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="Be brief.")
    payload = raylib.dumps((raylib.dumps(agent), raylib.dumps(None), {}, {}))
    options = {
        "model_url": placement["model_url"],
        "open_attach": True,
        "token": "short",  # too short to be a secret: the actor makes one
    }
    info = await asyncio.wait_for(host.open_session.remote(sid, payload, options), 30 * UNIT)
    secret = info["token"]
    try:
        assert len(secret) >= 16 and secret != "short"
        opened = await host.data_plane.remote(sid, None)
        assert opened["token"] == secret
        # Without a secret only that one method answers.
        await _refused(host.get_history.remote(sid, None))
        await host.send_message.remote(sid, secret, "hello")
    finally:
        await host.close_session.remote(sid, secret)


def test_open_attach_is_a_service_setting() -> None:
    assert ServiceConfig().open_attach is False
    assert ServiceConfig.from_dict({"open_attach": True}).open_attach is True
    with pytest.raises(ConfigError, match="open_attach"):
        ServiceConfig.from_dict({"open_attach": "yes"})


async def test_in_process_sessions_have_no_ticket() -> None:
    from ray_realtime.local import LocalModelServer

    async with LocalModelServer() as server:
        agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="Be brief.")
        runner = RealtimeRunner(agent, config={"execution": "in_process"})
        async with await runner.run(model_config={"url": server.url}) as session:
            with pytest.raises(UserError, match="in-process"):
                _ = session.ticket


async def _redeploy(ray_cluster: RayTestCluster, config: dict[str, Any]) -> Any:
    """Replace the router by one with ``config`` (it rebuilds its state from
    the running actors, as after a crash)."""
    import ray

    from ray_realtime.cluster.service import ensure_service, forget_router

    ray.kill(ray_cluster.router, no_restart=True)
    forget_router()

    async def router_gone() -> bool:
        return raylib.get_named_actor(raylib.ROUTER_NAME) is None

    await wait_until(router_gone, 10 * UNIT, "the old router to go")
    router = await asyncio.wait_for(ensure_service(config), 60 * UNIT)
    ray_cluster.router = router
    return router


async def test_open_attach_by_id_when_the_service_allows_it(ray_cluster: RayTestCluster) -> None:
    from tests.conftest import SERVICE_CONFIG

    async with await _runner().run() as before:
        router = await _redeploy(ray_cluster, {**SERVICE_CONFIG, "open_attach": True})
        try:
            # A session opened under the old setting keeps its own.
            with pytest.raises(SessionAccessError):
                await asyncio.wait_for(RealtimeSession.attach(before.session_id), 10 * UNIT)
            async with await _runner().run() as session:
                by_id = RealtimeSession.attach(session.session_id)
                other = await asyncio.wait_for(by_id, 10 * UNIT)
                try:
                    # The attached handle holds the secret now: the same ticket.
                    assert other.ticket == session.ticket
                    await other.send_message("say open door")
                    await collect_turns(other)
                    assert await last_reply(other) == "open door"
                finally:
                    await other.detach()
                sid = session.session_id

            # The session actor told the new router (its cached handle of the
            # old one was dead) that the session ended.
            async def forgotten() -> bool:
                listed = await router.list_sessions.remote()
                return all(s["session_id"] != sid for s in listed)

            await wait_until(forgotten, 10 * UNIT, "the new router to hear of the close")
        finally:
            await _redeploy(ray_cluster, SERVICE_CONFIG)
        # Back to the default: the id alone is refused again.
        async with await _runner().run() as session:
            with pytest.raises(SessionAccessError):
                await asyncio.wait_for(RealtimeSession.attach(session.session_id), 10 * UNIT)
