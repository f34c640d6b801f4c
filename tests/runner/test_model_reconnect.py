"""A session survives the loss of its model connection.

The model connection is lost in the ways it is in production -- the service
ends the session at its length cap (``session_expired``, then a close), the
socket drops without a close frame, the model server process is killed and
comes back on the same port -- and each time the session reconnects, replays
its history into the new model session and goes on: every turn's answer
arrives, the history holds every item once and in order, and readers see
exactly one ``session_recovered`` per loss. A response cut by a loss ends
visibly (``error`` code ``response_interrupted``, then ``agent_end``) and is
asked again. Real parts: in-process sessions over loopback WebSockets to real
local model servers (in this process, or a child process that is SIGKILLed).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ray_realtime import (
    AssistantAudio,
    AssistantMessageItem,
    InputText,
    ModelConnectionError,
    RealtimeAgent,
    RealtimeError,
    RealtimeSession,
    RealtimeSessionEvent,
    RealtimeSessionRecovered,
    RealtimeToolCallItem,
    RealtimeToolStart,
    UserMessageItem,
    function_tool,
)
from ray_realtime.local import LocalModelServer
from ray_realtime.local.connection import Connection
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.runner.session import InProcessBackend
from ray_realtime.session.driver import SessionDriver
from ray_realtime.types.model_inputs import RealtimeModelSendRawMessage
from tests.runner.test_e2e_in_process import (
    UNIT,
    assistant_items,
    collect,
    make_runner,
    of_type,
    transcript,
    user_texts,
    within,
)

AGENT: RealtimeAgent[Any] = RealtimeAgent(name="Assistant")
# Generous bounds: a loaded machine may take seconds to bring a server back.
RECONNECT = {"max_attempts": 12, "max_seconds": 60.0, "max_backoff_seconds": 1.0}
LONG_TESTS = os.environ.get("RAY_REALTIME_LONG_TESTS") == "1"


class Served:
    """A local model server that remembers the connections it served and
    can drop them, go down and come back on the same port."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sockets: list[Any] = []
        served = self.sockets

        class Counted(Connection):
            async def run(self) -> None:
                served.append(self.ws)
                await super().run()

        self._connection = Counted
        self.server = self._new(0)

    def _new(self, port: int) -> LocalModelServer:
        server = LocalModelServer(port=port, **self.options)
        server.connection_class = self._connection
        return server

    async def __aenter__(self) -> Served:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    async def drop(self) -> None:
        """Drop every socket (no close frame) and stop listening."""
        for ws in self.sockets:
            ws.transport.abort()
        await self.server.stop()

    async def restart(self) -> None:
        """Listen again on the same port."""
        self.server = self._new(self.server.port)
        await self.server.start()


@contextlib.asynccontextmanager
async def session_on(url: str, **config: Any) -> AsyncIterator[RealtimeSession]:
    runner = make_runner(AGENT, model_reconnect=RECONNECT, **config)
    session = await runner.run(model_config={"url": url})
    await within(session.enter())
    try:
        yield session
    finally:
        await within(session.close())


async def ask(session: RealtimeSession, text: str, events: list[RealtimeSessionEvent]) -> None:
    """Send ``say text``; read events until the answer ``text`` is complete."""
    await within(session.send_message(f"say {text}"))
    await read_until_answered(session, text, events)


async def read_until_answered(
    session: RealtimeSession, text: str, events: list[RealtimeSessionEvent]
) -> None:
    def answered(event: RealtimeSessionEvent, _: Any) -> bool:
        return event.type == "agent_end" and any(
            transcript(i) == text and i.status == "completed"
            for i in assistant_items(session.history)
        )

    events.extend(await collect(session, answered, timeout=30))


def check_history(session: RealtimeSession, texts: list[str]) -> None:
    """Every question once, in order, each followed by its complete answer."""
    history = session.history
    assert len({i.item_id for i in history}) == len(history), "an id appears twice"
    assert user_texts(history) == [f"say {t}" for t in texts]
    answers = [i for i in assistant_items(history) if i.status != "incomplete"]
    assert [transcript(i) for i in answers] == texts
    position = {i.item_id: n for n, i in enumerate(history)}
    users = [i for i in history if isinstance(i, UserMessageItem)]
    for question, answer in zip(users, answers, strict=True):
        assert position[question.item_id] < position[answer.item_id]


def check_recoveries(events: list[RealtimeSessionEvent], losses: int) -> None:
    recovered = of_type(events, RealtimeSessionRecovered)
    assert len(recovered) == losses, [e.type for e in events]
    assert all(r.reason == "model_reconnect" and r.events_lost == 0 for r in recovered)
    assert all(r.items_restored > 0 for r in recovered)
    errors = [e.error for e in of_type(events, RealtimeError)]
    # The only errors: responses a loss cut off, at most one per loss.
    assert all(e.get("code") == "response_interrupted" for e in errors), errors
    assert len(errors) <= losses


# ------------------------------------------------------------- the length cap


@pytest.mark.parametrize(
    ("cap", "duration"),
    [
        (2.0, 12.0),
        pytest.param(
            5.0,
            60.0,
            marks=pytest.mark.skipif(
                not LONG_TESTS, reason="a minute long; set RAY_REALTIME_LONG_TESTS=1"
            ),
        ),
    ],
)
async def test_a_conversation_outlives_the_session_cap(cap: float, duration: float) -> None:
    served = Served(max_session_seconds=cap, pace_audio=True)
    events: list[RealtimeSessionEvent] = []
    texts: list[str] = []
    async with served, session_on(served.url) as session:
        started = time.monotonic()
        while time.monotonic() - started < duration:
            texts.append(f"answer {len(texts) + 1} of a long conversation")
            await ask(session, texts[-1], events)
        check_history(session, texts)
        losses = len(served.sockets) - 1  # each cap hit, one new model session
    assert losses >= duration / cap - 2
    check_recoveries(events, losses)
    print(f"{len(texts)} turns in {duration:g} s across {losses} session caps")


# ----------------------------------------------------------- dropped sockets


async def test_five_dropped_sockets_in_one_session() -> None:
    events: list[RealtimeSessionEvent] = []
    texts: list[str] = []
    async with Served(pace_audio=True) as served, session_on(served.url) as session:
        for drop in range(5):
            texts.append(f"turn {drop} before the drop")
            await ask(session, texts[-1], events)
            # The next reply is streaming when the socket drops (no close frame).
            texts.append(f"turn {drop}, the reply that the drop cuts off midway")
            await within(session.send_message(f"say {texts[-1]}"))
            events.extend(await collect(session, lambda e, _: e.type == "audio"))
            await served.drop()  # down for a while ...
            waiting = texts[-1:]
            if drop == 2:
                # ... and a message sent meanwhile waits for the new connection.
                texts.append("sent while the model was away")
                await within(session.send_message(f"say {texts[-1]}"))
                waiting = texts[-2:]
            await asyncio.sleep(0.3)
            await served.restart()  # ... back on the same port
            for text in waiting:
                await read_until_answered(session, text, events)
        texts.append("still here after five drops")
        await ask(session, texts[-1], events)
        check_history(session, texts)
    cut = of_type(events, RealtimeError)
    assert len(cut) == 5  # each drop cut a streaming reply, which ended at once
    assert [events[events.index(e) + 1].type for e in cut] == ["agent_end"] * 5
    check_recoveries(events, 5)


# ---------------------------------------------------- a killed server process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def model_process(port: int) -> Iterator[subprocess.Popen[str]]:
    """``python -m ray_realtime.local`` on ``port``, killed on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_realtime.local", "--port", str(port), "--pace-audio"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def ready(proc: subprocess.Popen[str]) -> str:
    """The URL the server prints once it listens."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30 * UNIT)
    assert line.startswith("ws://"), line
    return line.strip()


async def test_the_model_server_killed_and_back_a_second_later() -> None:
    port = free_port()
    events: list[RealtimeSessionEvent] = []
    texts = ["before the kill", "the reply the kill cuts off midway"]
    with model_process(port) as first:
        url = await ready(first)
        async with session_on(url) as session:
            await ask(session, texts[0], events)
            await within(session.send_message(f"say {texts[1]}"))
            events.extend(await collect(session, lambda e, _: e.type == "audio"))
            first.kill()  # SIGKILL: the socket dies with the process
            first.wait(10)
            await asyncio.sleep(1.0)
            with model_process(port) as second:
                await ready(second)
                await read_until_answered(session, texts[1], events)
                texts.append("after the kill")
                await ask(session, texts[-1], events)
                check_history(session, texts)
    check_recoveries(events, 1)
    (cut,) = of_type(events, RealtimeError)
    assert cut.error["code"] == "response_interrupted"


# ---------------------------------------------------------------- giving up


async def test_a_model_that_stays_away_closes_the_session_with_an_error() -> None:
    served = Served()
    config = {"model_reconnect": {"max_attempts": 3, "max_seconds": 5.0}}
    runner = make_runner(AGENT, **config)
    async with served:
        session = await runner.run(model_config={"url": served.url})
        await within(session.enter())
        events: list[RealtimeSessionEvent] = []
        await ask(session, "one answer", events)
        await served.drop()  # and never back

        async def rest() -> list[RealtimeSessionEvent]:
            return [e async for e in session]

        tail = await within(rest(), 15)
    (error,) = [e.error for e in of_type(tail, RealtimeError)]
    assert error["code"] == "model_reconnect_failed"
    assert error["type"] == "connection_closed"
    assert "3 attempt(s)" in error["message"]
    assert "0 input(s) sent meanwhile were not delivered" in error["message"]
    assert not of_type(tail, RealtimeSessionRecovered)
    with pytest.raises(Exception, match="closed"):
        await session.send_message("anyone?")


async def test_with_reconnection_off_a_loss_closes_the_session() -> None:
    served = Served()
    runner = make_runner(AGENT, model_reconnect={"enabled": False})
    async with served:
        session = await runner.run(model_config={"url": served.url})
        await within(session.enter())
        await served.drop()

        async def rest() -> list[RealtimeSessionEvent]:
            return [e async for e in session]

        tail = await within(rest(), 15)
    assert any(e.error.get("type") == "connection_closed" for e in of_type(tail, RealtimeError))
    assert not of_type(tail, RealtimeSessionRecovered)


# ----------------------------------------------------------- a restored session

RESTORED = [
    UserMessageItem(item_id="item_000001", content=[InputText(text="say alpha")]),
    AssistantMessageItem(
        item_id="item_000002", status="completed", content=[AssistantAudio(transcript="alpha")]
    ),
    UserMessageItem(item_id="item_000003", content=[InputText(text="say beta")]),
    AssistantMessageItem(
        item_id="item_000004", status="completed", content=[AssistantAudio(transcript="beta")]
    ),
]


async def test_a_restored_session_replays_its_history_into_the_model() -> None:
    async with Served() as served:
        model = OpenAIRealtimeWebSocketModel()
        driver = SessionDriver(
            agent=AGENT, model=model, model_config={"url": served.url}, history=RESTORED
        )
        session = RealtimeSession(InProcessBackend(driver))
        try:
            assert await within(driver.recover_model("actor_died", events_lost=3)) == 4
            (recovered,) = of_type(
                await collect(session, lambda e, _: e.type == "session_recovered"),
                RealtimeSessionRecovered,
            )
            assert recovered == RealtimeSessionRecovered("actor_died", 4, 3)
            # The model knows the conversation: a bare response answers the
            # last replayed question ("say beta"), and nothing is duplicated.
            await model.send_event(RealtimeModelSendRawMessage({"type": "response.create"}))
            events: list[RealtimeSessionEvent] = []
            await collect_answer(session, events)
            history = session.history
            assert history[:4] == RESTORED
            assert [transcript(i) for i in assistant_items(history)] == ["alpha", "beta", "beta"]
            assert len(served.sockets) == 1
        finally:
            await within(session.close())


async def collect_answer(session: RealtimeSession, events: list[RealtimeSessionEvent]) -> None:
    events.extend(await collect(session, lambda e, _: e.type == "agent_end"))


async def test_recover_model_on_a_running_session_and_when_the_model_is_gone() -> None:
    served = Served()
    async with served:
        model = OpenAIRealtimeWebSocketModel()
        driver = SessionDriver(
            agent=AGENT,
            model=model,
            model_config={"url": served.url},
            run_config={"model_reconnect": {"max_attempts": 2, "max_seconds": 2.0}},
        )
        session = RealtimeSession(InProcessBackend(driver))
        await within(session.enter())
        events: list[RealtimeSessionEvent] = []
        await ask(session, "first", events)
        assert await within(driver.recover_model()) == 2
        assert len(served.sockets) == 2
        await ask(session, "second", events)
        check_history(session, ["first", "second"])
        await served.drop()
        with pytest.raises(ModelConnectionError):
            await within(driver.recover_model(), 15)
        assert driver.closed


# ------------------------------------------------------ a tool call across a loss


@function_tool
async def slow_weather(city: str) -> str:
    """The weather in a city, slowly."""
    await asyncio.sleep(SLOW_TOOL_S[0])
    return f"rain in {city}"


SLOW_TOOL_S = [0.0]


@pytest.mark.parametrize(
    ("tool_s", "outage_s"),
    [(2.0, 0.2), (0.5, 1.5)],
    ids=["output-after-the-replay", "output-during-the-outage"],
)
async def test_a_tool_call_running_across_a_loss_is_answered_once(
    tool_s: float, outage_s: float
) -> None:
    # The call's item is replayed with its output when the tool finished
    # during the outage, without it when the tool finishes after the replay:
    # either way the model gets the output exactly once and answers it.
    SLOW_TOOL_S[0] = tool_s
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", tools=[slow_weather])
    runner = make_runner(agent, model_reconnect=RECONNECT)
    events: list[RealtimeSessionEvent] = []
    async with Served() as served:
        session = await runner.run(model_config={"url": served.url})
        await within(session.enter())
        try:
            await within(session.send_message("slow weather in Oslo"))
            # The call's response is over (agent_end); the tool still runs.
            events += await collect(session, lambda e, _: e.type == "agent_end")
            assert of_type(events, RealtimeToolStart)
            await served.drop()
            await asyncio.sleep(outage_s)
            await served.restart()

            def answered(event: RealtimeSessionEvent, _: Any) -> bool:
                return event.type == "agent_end" and any(
                    "rain in Oslo" in transcript(i) for i in assistant_items(session.history)
                )

            events += await collect(session, answered, timeout=20)
            (call,) = [i for i in session.history if isinstance(i, RealtimeToolCallItem)]
            assert call.output == "rain in Oslo"
            replies = [transcript(i) for i in assistant_items(session.history)]
            assert replies == ["The tool slow_weather returned: rain in Oslo"]
        finally:
            await within(session.close())
    assert len(of_type(events, RealtimeSessionRecovered)) == 1
    assert not of_type(events, RealtimeError)
