"""The session journal over a real write-behind writer and the memory store:
what reaches the store, when an event waits for it, and that the session's
secret never does."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence

from ray_realtime.actors.journal import SessionJournal, secret_matches
from ray_realtime.exceptions import StoreUnavailableError
from ray_realtime.store import MemoryStore, WriteBehindStore
from ray_realtime.store.records import AgentRecord, StoreOp
from ray_realtime.types.events import (
    AgentRef,
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeError,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeSessionEvent,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    InputText,
    UserMessageItem,
    item_from_dict,
)

SECRET = "s" * 32


def _user(item_id: str, text: str) -> UserMessageItem:
    return UserMessageItem(item_id=item_id, content=[InputText(text=text)])


def _assistant(item_id: str, transcript: str, status: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        item_id=item_id,
        status=status,  # type: ignore[arg-type]
        content=[AssistantAudio(transcript=transcript)],
    )


async def test_history_added_waits_for_the_store_and_the_secret_is_hashed() -> None:
    backend = MemoryStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=5.0)  # only flushes write
    journal = SessionJournal(writer, "sess", {"recipe": b"r", "turn": ""})
    journal.open(AgentRecord("Agent"), SECRET)
    waiting = journal.before_emit(RealtimeHistoryAdded(_user("u1", "hi")), 1)
    assert waiting is not None
    await asyncio.wait_for(waiting, 5)
    state = await backend.load("sess")
    assert [i.item_id for i in state.items] == ["u1"]
    assert item_from_dict(state.items[0].to_dict()) == _user("u1", "hi")
    assert state.secrets.reveal() == {"sha256": hashlib.sha256(SECRET.encode()).hexdigest()}
    assert secret_matches(SECRET, state.secrets["sha256"])
    assert not secret_matches("x" * 32, state.secrets["sha256"])
    # The sequence mark moved ahead of the event's number, durably.
    assert state.seq >= 1 and state.seq == journal.reserved_seq
    await writer.aclose()


async def test_transcripts_turns_and_close() -> None:
    backend = MemoryStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=0.001)
    journal = SessionJournal(writer, "sess", {"recipe": b"r", "turn": ""}, dirty_delay=0.01)
    journal.open(AgentRecord("Agent"), SECRET)
    start = RealtimeAgentStartEvent(AgentRef("Agent"))
    reserving = journal.before_emit(start, 1)
    assert reserving is not None  # the first number is reserved, durably
    await reserving
    placeholder = _assistant("a1", "", "in_progress")
    waiting = journal.before_emit(RealtimeHistoryAdded(placeholder), 2)
    assert waiting is not None
    await waiting
    assert (
        journal.before_emit(RealtimeHistoryUpdated([_assistant("a1", "he", "in_progress")]), 3)
        is None
    )
    done = _assistant("a1", "hello", "completed")
    assert journal.before_emit(RealtimeHistoryUpdated([done]), 4) is None
    assert (await backend.load("sess")).settings["turn"] == "Agent"
    assert journal.before_emit(RealtimeAgentEndEvent(AgentRef("Agent")), 5) is None
    await writer.flush()
    state = await backend.load("sess")
    assert item_from_dict(state.items[0].to_dict()) == done
    assert state.settings["turn"] == ""
    # A deleted item leaves the store; a closed session leaves it entirely.
    journal.before_emit(RealtimeHistoryUpdated([]), 6)
    await writer.flush()
    assert (await backend.load("sess")).items == ()
    journal.closed()
    await writer.flush()
    assert await backend.list_sessions() == []
    await writer.aclose()


async def test_history_deltas_reach_the_store() -> None:
    """The session's log form of history_updated: a set is written (a renamed
    item's old id deleted), a remove deleted, an added delta waited for,
    and what the store holds at the end is the history."""
    from ray_realtime.core.history_log import HistoryDelta

    backend = MemoryStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=0.001)
    journal = SessionJournal(writer, "sess", {"recipe": b"r", "turn": ""}, dirty_delay=0.01)
    journal.open(AgentRecord("Agent"), SECRET)
    for seq, item in enumerate([_user("u1", "hi"), _assistant("a1", "", "in_progress")], 1):
        waiting = journal.before_emit(RealtimeHistoryAdded(item), seq)
        assert waiting is not None
        await waiting
    done = _assistant("a1", "hello", "completed")
    assert journal.before_emit(HistoryDelta([("set", 1, done)]), 3) is None
    moved = _user("u1~1", "hi")
    waiting = journal.before_emit(
        HistoryDelta([("set", 0, moved), ("insert", 2, _user("u1", "new"))], added=True), 4
    )
    assert waiting is not None, "an added item waits for the store"
    await waiting
    assert journal.before_emit(HistoryDelta([("remove", 1, None)]), 5) is None
    await journal.flush()
    state = await backend.load("sess")
    stored = {i.item_id: item_from_dict(i.to_dict()) for i in state.items}
    assert stored == {"u1~1": moved, "u1": _user("u1", "new")}
    await writer.aclose()


class _Down(MemoryStore):
    async def apply(self, ops: Sequence[StoreOp]) -> None:
        raise OSError("store host unreachable")


async def test_a_failing_store_reports_an_error_event_and_lets_the_event_through() -> None:
    reported: list[RealtimeSessionEvent] = []
    writer = WriteBehindStore(_Down(), write_timeout_seconds=0.2, retry_max_seconds=0.2)
    journal = SessionJournal(writer, "sess", {"recipe": b"r"}, report=reported.append)
    waiting = journal.before_emit(RealtimeHistoryAdded(_user("u1", "hi")), 1)
    assert waiting is not None
    await asyncio.wait_for(waiting, 5)  # does not raise: the session goes on
    assert reported and isinstance(reported[0], RealtimeError)
    assert reported[0].error["code"] == "store_unavailable"
    assert "StoreUnavailableError" in reported[0].error["message"]
    try:
        await asyncio.wait_for(writer.aclose(), 5)
    except StoreUnavailableError:
        pass


# ------------------------------------------- the guarantee, in a real session


class _Slow(MemoryStore):
    """A memory store whose every batch takes ``delay`` seconds to land."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.batches = 0

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        await asyncio.sleep(self.delay)
        self.batches += 1
        await super().apply(ops)


async def test_a_reader_that_saw_history_added_finds_the_item_in_the_store() -> None:
    """Every item a reader sees in ``history_added`` is already in the store
    (read directly), with a store whose writes take 0.3 s each; events keep
    the log's order (an assistant item's ``history_added`` before its audio),
    and the session goes on while an event waits for the store, so a turn
    waits for one store round trip, not one per item in turn: the fastest of
    three turns takes well under two round trips (0.6 s)."""
    from ray_realtime import RealtimeAgent, RealtimeAgentEndEvent, RealtimeAudio
    from ray_realtime.local import LocalModelServer
    from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
    from ray_realtime.runner.session import InProcessBackend, RealtimeSession
    from ray_realtime.session.driver import SessionDriver

    backend = _Slow(0.3)
    writer = WriteBehindStore(backend, flush_interval_seconds=0.01)
    journal = SessionJournal(writer, "sess", {"recipe": b"r", "turn": ""})
    journal.open(AgentRecord("Agent"), SECRET)
    async with LocalModelServer() as server:
        driver = SessionDriver(
            agent=RealtimeAgent(name="Agent", instructions="Answer."),
            model=OpenAIRealtimeWebSocketModel(),
            model_config={"url": server.url},
            session_id="sess",
            before_emit=journal.before_emit,
        )
        session = await asyncio.wait_for(RealtimeSession(InProcessBackend(driver)).enter(), 10)
        seen: list[str] = []
        turns: list[float] = []
        try:
            it = session.__aiter__()
            for turn in range(3):
                started = time.monotonic()
                await session.send_message(f"say turn {turn}")
                added: set[str] = set()
                while True:
                    event = await asyncio.wait_for(it.__anext__(), 10)
                    if isinstance(event, RealtimeHistoryAdded):
                        stored = {i.item_id for i in (await backend.load("sess")).items}
                        assert event.item.item_id in stored, "announced before it was stored"
                        added.add(event.item.item_id)
                        seen.append(event.item.item_id)
                    elif isinstance(event, RealtimeAudio):
                        assert event.item_id in added, "audio before its item's history_added"
                    elif isinstance(event, RealtimeAgentEndEvent):
                        break
                turns.append(time.monotonic() - started)
        finally:
            await asyncio.wait_for(session.close(), 10)
    assert len(seen) == 6 and len(set(seen)) == 6  # a user and an assistant item per turn
    assert min(turns) < 0.5, turns
    await writer.aclose()


async def test_closing_lets_the_held_events_in_first() -> None:
    """A session closed while ``history_added`` waits for a slow store: the
    held event is in the log when ``close`` returns (readers stop at a closed
    session's last event), and its item is in the store."""
    from ray_realtime import RealtimeAgent
    from ray_realtime.local import LocalModelServer
    from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
    from ray_realtime.session.driver import SessionDriver

    backend = _Slow(0.5)
    writer = WriteBehindStore(backend, flush_interval_seconds=0.01)
    journal = SessionJournal(writer, "sess", {"recipe": b"r", "turn": ""})
    async with LocalModelServer() as server:
        driver = SessionDriver(
            agent=RealtimeAgent(name="Agent", instructions="Answer."),
            model=OpenAIRealtimeWebSocketModel(),
            model_config={"url": server.url},
            session_id="sess",
            before_emit=journal.before_emit,
        )
        await asyncio.wait_for(driver.start(), 10)
        await driver.send_message("say held")
        deadline = time.monotonic() + 10
        while not driver._outbox:  # the user's item is held behind its flush
            assert time.monotonic() < deadline, "nothing was held"
            await asyncio.sleep(0.005)
        await asyncio.wait_for(driver.close(), 10)
        batch = await driver.read_events(0, 1000, timeout=0)
    added = [e.item.item_id for e in batch.events if isinstance(e, RealtimeHistoryAdded)]
    assert added, [e.type for e in batch.events]
    stored = {i.item_id for i in (await backend.load("sess")).items}
    assert set(added) <= stored
    await writer.aclose()


async def test_the_observer_sees_every_event_once_held_ones_too() -> None:
    """The host's ``on_event`` observer (metrics) sees each event the log
    gets, also those held behind a store flush: the observed events are the
    log's events, in the log's order."""
    from ray_realtime import RealtimeAgent
    from ray_realtime.local import LocalModelServer
    from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
    from ray_realtime.session.driver import SessionDriver

    backend = _Slow(0.05)
    writer = WriteBehindStore(backend, flush_interval_seconds=0.01)
    journal = SessionJournal(writer, "sess", {"recipe": b"r", "turn": ""})
    observed: list[str] = []
    async with LocalModelServer() as server:
        driver = SessionDriver(
            agent=RealtimeAgent(name="Agent", instructions="Answer."),
            model=OpenAIRealtimeWebSocketModel(),
            model_config={"url": server.url},
            session_id="sess",
            before_emit=journal.before_emit,
            on_event=lambda event: observed.append(event.type),
        )
        await asyncio.wait_for(driver.start(), 10)
        await driver.send_message("say observed")
        seq = 0
        logged: list[str] = []
        deadline = time.monotonic() + 10
        while "agent_end" not in logged:
            assert time.monotonic() < deadline, logged
            batch = await driver.read_events(seq, 1000, timeout=1)
            # History deltas are the log's own form: the observer sees the SDK's events.
            logged += [e.type for e in batch.events if e.type != "history_delta"]
            seq = batch.last_seq
        await asyncio.wait_for(driver.close(), 10)
    assert "history_added" in logged
    assert observed[: len(logged)] == logged
    await writer.aclose()
