"""History deltas (ray_realtime.core.history_log): the replica a reader keeps,
the trail the session keeps (history as of any seq still in its log), the
core's delta mode against its full-list mode, and the log's byte bound."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_realtime import wire
from ray_realtime.core.event_log import EventLog
from ray_realtime.core.history_log import (
    HistoryDelta,
    HistoryReplica,
    HistoryTrail,
    apply_ops,
    estimate_event_bytes,
)
from ray_realtime.core.outputs import EmitEvent
from ray_realtime.core.session_core import SessionCore
from ray_realtime.core.specs import AgentSpec
from ray_realtime.exceptions import ProtocolError
from ray_realtime.types import model_events as me
from ray_realtime.types.events import (
    RealtimeAudio,
    RealtimeError,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    InputAudio,
    UserMessageItem,
)


def user(item_id: str, text: str = "", previous: str | None = None) -> UserMessageItem:
    return UserMessageItem(
        item_id=item_id, previous_item_id=previous, content=[InputAudio(transcript=text)]
    )


def said(item_id: str, text: str = "", status: Any = "in_progress") -> AssistantMessageItem:
    return AssistantMessageItem(
        item_id=item_id, status=status, content=[AssistantAudio(transcript=text)]
    )


# ------------------------------------------------------------- apply / undo


def test_apply_and_undo_restore_the_list_exactly() -> None:
    a, b, c, d = user("a"), user("b"), user("c"), user("d")
    items = [a, b, c]
    ops = [("set", 1, d), ("insert", 0, b), ("remove", 3, None), ("reset", 0, [c, a])]
    undo: list[Any] = []
    apply_ops(items, ops, undo)
    assert items == [c, a]
    apply_ops(items, undo)
    assert [i.item_id for i in items] == ["a", "b", "c"]
    assert items[1] is b, "undo puts back the very item the set replaced"


@pytest.mark.parametrize(
    "op",
    [("set", 5, None), ("remove", 3, None), ("insert", 9, None), ("move", 0, None), ("set", -1, 0)],
)
def test_a_malformed_op_is_a_protocol_error(op: Any) -> None:
    with pytest.raises(ProtocolError):
        apply_ops([user("a")], [op])


def test_the_replica_hands_out_the_sdks_events() -> None:
    replica = HistoryReplica([], 0)
    a, a2 = said("a", "hel"), said("a", "hello")
    events = [
        RealtimeHistoryAdded(a),
        HistoryDelta([("set", 0, a2)]),
        RealtimeError({"message": "x"}),
        HistoryDelta([("set", 0, a2), ("insert", 1, user("u"))], added=True),
        HistoryDelta([("remove", 0, None)]),
    ]
    out = replica.materialise(events, 1)
    assert out[0] is events[0]
    assert isinstance(out[1], RealtimeHistoryUpdated) and out[1].history == [a2]
    assert out[2] is events[2]
    assert isinstance(out[3], RealtimeHistoryAdded) and out[3].item.item_id == "u"
    assert isinstance(out[4], RealtimeHistoryUpdated)
    assert [i.item_id for i in out[4].history] == ["u"]
    assert out[1].history == [a2], "an earlier event's list does not change later"
    assert replica.seq == 5


def test_a_read_that_does_not_continue_needs_a_snapshot() -> None:
    replica = HistoryReplica([user("a")], seq=3)
    delta = HistoryDelta([("set", 0, user("b"))])
    assert not replica.needs_snapshot([delta], 4)
    assert replica.needs_snapshot([delta], 6), "a gap"
    assert replica.needs_snapshot([delta], 2), "a read of older events"
    assert not replica.needs_snapshot([RealtimeError({"message": ""})], 9), "no history in it"
    assert HistoryReplica().needs_snapshot([delta], 1), "no position yet: a restored history"
    assert replica.materialise([RealtimeError({"message": ""})], 9)
    assert replica.seq == 3, "the replica does not move past a gap"
    with pytest.raises(ValueError):
        replica.materialise([delta], 6)


def test_a_snapshot_newer_than_the_read_is_not_applied_twice() -> None:
    """The log dropped the older history meanwhile: events up to the
    snapshot's position show the snapshot, the later ones apply on it."""
    replica = HistoryReplica()
    # From [a]: 10 inserts b after it, 11 removes a, 12 sets c in b's place.
    replica.reset([user("b")], 11)
    events = [
        HistoryDelta([("insert", 1, user("b"))], added=True),
        HistoryDelta([("remove", 0, None)]),
        HistoryDelta([("set", 0, user("c"))]),
    ]
    out = replica.materialise(events, 10)
    assert isinstance(out[0], RealtimeHistoryAdded) and out[0].item.item_id == "b"
    assert [i.item_id for i in out[1].history] == ["b"]
    assert [i.item_id for i in out[2].history] == ["c"]
    assert replica.seq == 12


# --------------------------------------------- random histories (hypothesis)

_IDS = [f"i{n}" for n in range(6)]


@st.composite
def history_events(draw: st.DrawFn) -> list[Any]:
    """A random run of history events, each valid against the history the
    previous ones leave (so they can be applied)."""
    length = 0
    events: list[Any] = []
    names: list[str] = []
    for step in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["set", "insert", "remove", "reset", "added", "multi"]))
        item = user(draw(st.sampled_from(_IDS)), f"t{step}")
        if kind == "added" or length == 0:
            previous = draw(st.sampled_from([None, *names])) if names else None
            item = user(item.item_id, f"t{step}", previous)
            events.append(RealtimeHistoryAdded(item))
            # Where history_added puts it: after its previous item, else last.
            index = next((i + 1 for i in range(length - 1, -1, -1) if names[i] == previous), length)
            names.insert(index, item.item_id)
            length += 1
        elif kind == "set":
            index = draw(st.integers(0, length - 1))
            names[index] = item.item_id
            events.append(HistoryDelta([("set", index, item)]))
        elif kind == "insert":
            index = draw(st.integers(0, length))
            names.insert(index, item.item_id)
            length += 1
            events.append(HistoryDelta([("insert", index, item)], added=True))
        elif kind == "remove":
            index = draw(st.integers(0, length - 1))
            del names[index]
            length -= 1
            events.append(HistoryDelta([("remove", index, None)]))
        elif kind == "reset":
            items = [user(n, "r") for n in draw(st.lists(st.sampled_from(_IDS), max_size=4))]
            names = [i.item_id for i in items]
            length = len(items)
            events.append(HistoryDelta([("reset", 0, items)]))
        else:
            index = draw(st.integers(0, length - 1))
            names[index] = item.item_id
            names.insert(0, "m")
            length += 1
            events.append(
                HistoryDelta([("set", index, item), ("insert", 0, user("m", "x"))], added=True)
            )
        if draw(st.booleans()):
            events.append(RealtimeError({"message": "not history"}))
    return events


def _truth(start: list[Any], events: list[Any]) -> list[list[Any]]:
    """The history after each event (index 0: before the first)."""
    items = list(start)
    states = [list(items)]
    for event in events:
        if isinstance(event, HistoryDelta):
            apply_ops(items, event.ops)
        elif isinstance(event, RealtimeHistoryAdded):
            previous = event.item.previous_item_id
            index = next(
                (i + 1 for i in range(len(items) - 1, -1, -1) if items[i].item_id == previous),
                len(items),
            )
            items.insert(index, event.item)
        states.append(list(items))
    return states


@settings(max_examples=150, deadline=None)
@given(history_events(), st.integers(0, 5), st.integers(1, 60), st.data())
def test_history_at_every_seq_is_exact_and_a_replica_resyncs_anywhere(
    events: list[Any], start_seq: int, capacity: int, data: st.DataObject
) -> None:
    start = [user("s0", "restored")] if start_seq else []
    truth = _truth(start, events)  # truth[k]: the history as of seq start_seq + k
    log: EventLog[Any] = EventLog(capacity, start_seq)
    trail = HistoryTrail(start)
    for event in events:
        seq = log.append(event)
        trail.record(event, seq)
        trail.forget_before(log.first_seq)
    assert trail.items == truth[-1]
    for seq in range(log.first_seq - 1, log.last_seq + 1):
        at, items = trail.history_at(seq, log.first_seq)
        assert at == seq
        assert items == truth[seq - start_seq], f"history at {seq}"
    # Too far back: the oldest the log still reaches.
    at, items = trail.history_at(0, log.first_seq)
    assert at == log.first_seq - 1 and items == truth[at - start_seq]

    # A reader that starts at any seq the log holds, reading in random batches,
    # sees after each history event exactly the history as of that event.
    after = data.draw(st.integers(0, log.last_seq))
    replica = HistoryReplica()
    while True:
        read = log.read(after, data.draw(st.integers(1, 8)))
        if not read.events:
            break
        first = read.last_seq - len(read.events) + 1
        if replica.needs_snapshot(read.events, first):
            at, items = trail.history_at(first - 1, log.first_seq)
            replica.reset(items, at)
        out = replica.materialise(read.events, first)
        for offset, event in enumerate(out):
            if isinstance(event, RealtimeHistoryUpdated):
                assert event.history == truth[first + offset - start_seq]
        if any(isinstance(e, HistoryDelta | RealtimeHistoryAdded) for e in read.events):
            assert replica.items == truth[read.last_seq - start_seq]
        after = read.last_seq


# ---------------------------------------------- the core's delta mode


AGENT = AgentSpec("A", "be helpful", (), (), ())


@st.composite
def model_events(draw: st.DrawFn) -> list[Any]:
    """Random model events touching the history (ids from a small pool, so
    updates, deletes, replays and moved-aside items all happen)."""
    out: list[Any] = []
    ids = ["a", "b", "c", "d"]
    for n in range(draw(st.integers(1, 30))):
        kind = draw(
            st.sampled_from(["user", "said", "delta", "delete", "transcript", "replay", "lost"])
        )
        item_id = draw(st.sampled_from(ids))
        previous = draw(st.sampled_from([None, *ids]))
        if kind == "user":
            out.append(me.RealtimeModelItemUpdatedEvent(item=user(item_id, f"u{n}", previous)))
        elif kind == "said":
            item = said(item_id, f"s{n}").model_copy(update={"previous_item_id": previous})
            out.append(me.RealtimeModelItemUpdatedEvent(item=item))
        elif kind == "delta":
            out.append(
                me.RealtimeModelTranscriptDeltaEvent(
                    item_id=item_id, delta=f" d{n}", response_id="r1"
                )
            )
        elif kind == "delete":
            out.append(me.RealtimeModelItemDeletedEvent(item_id))
        elif kind == "transcript":
            out.append(me.RealtimeModelInputAudioTranscriptionCompletedEvent(item_id, f"heard {n}"))
        elif kind == "replay":
            out.append("replay")
        else:
            out.append(me.RealtimeModelTurnStartedEvent(response_id="r1"))
            out.append("lost")
    return out


def _drive(core: SessionCore, events: list[Any]) -> list[Any]:
    emitted: list[Any] = []
    for event in events:
        if event == "replay":
            core.prepare_replay(max_items=100, max_chars=100_000)
        elif event == "lost":
            core.model_connection_lost("test")
        else:
            core.handle_model_event(event)
        emitted += [o.event for o in core.drain() if isinstance(o, EmitEvent)]
    return emitted


@settings(max_examples=150, deadline=None)
@given(model_events())
def test_the_cores_deltas_materialise_to_its_full_list_events(events: list[Any]) -> None:
    """Same model events into a core in each mode: the replica's SDK events
    equal the full-list mode's, event for event, and the replica ends equal
    to the core's history (moved-aside items and in-flight marks included)."""
    plain = _drive(SessionCore(AGENT), events)
    delta_core = SessionCore(AGENT, history_deltas=True)
    raw = _drive(delta_core, events)
    assert len(raw) == len(plain)
    assert not any(isinstance(e, RealtimeHistoryUpdated) for e in raw), "deltas only"
    replica = HistoryReplica([], 0)
    out = replica.materialise(raw, 1)
    for mine, theirs in zip(out, plain, strict=True):
        assert type(mine) is type(theirs)
        if isinstance(theirs, RealtimeHistoryUpdated):
            assert mine.history == theirs.history
        elif isinstance(theirs, RealtimeHistoryAdded):
            assert mine.item == theirs.item
    assert replica.items == delta_core.history


def test_a_transcript_delta_is_one_small_op() -> None:
    core = SessionCore(AGENT, history_deltas=True)
    for n in range(300):
        core.handle_model_event(me.RealtimeModelItemUpdatedEvent(item=user(f"u{n}", "hi")))
    core.handle_model_event(me.RealtimeModelItemUpdatedEvent(item=said("a", "")))
    core.drain()
    core.handle_model_event(
        me.RealtimeModelTranscriptDeltaEvent(item_id="a", delta="x", response_id="r")
    )
    (out,) = [o.event for o in core.drain() if isinstance(o, EmitEvent)]
    assert isinstance(out, HistoryDelta)
    assert len(out.ops) == 1 and out.ops[0][:2] == ("set", 300)
    assert len(wire.encode_events([out])) < 300, "the wire form does not hold the history"


# ---------------------------------------------------------------- wire


def test_a_delta_round_trips_over_the_wire() -> None:
    a, b = said("a", "hello"), user("b", "hi", previous="a")
    event = HistoryDelta(
        [("set", 0, a), ("insert", 1, b), ("remove", 2, None), ("reset", 0, [a, b])], added=True
    )
    (back,) = wire.decode_events(wire.encode_events([event]))
    assert isinstance(back, HistoryDelta) and back.added and back.type == "history_delta"
    assert back.ops == [["set", 0, a], ["insert", 1, b], ["remove", 2, None], ["reset", 0, [a, b]]]
    assert back.ops[0][2] is not a, "decoded items are the reader's own"
    items: list[Any] = [user("x"), user("y"), user("z")]
    apply_ops(items, back.ops)
    assert items == [a, b]


# ------------------------------------------------------------ byte bound


def _audio(size: int) -> RealtimeAudio:
    return RealtimeAudio(me.RealtimeModelAudioEvent(b"\0" * size, "r", "a", 0), "a", 0)


def test_the_log_is_bounded_in_bytes_as_well_as_in_count() -> None:
    log: EventLog[Any] = EventLog(
        4096, max_bytes=100_000, size_of=estimate_event_bytes, keep_newest=4
    )
    for _ in range(1000):
        log.append(_audio(10_000))
    assert log.last_seq == 1000
    assert 8 <= len(log) <= 10, "about 100 kB of 10 kB chunks"
    assert log.bytes <= 100_000
    assert log.read(0, 100).missed == 1000 - len(log)
    log.append(_audio(500_000))
    assert len(log) == 4, "one large event does not take the few newest before it"
    assert log.bytes > 500_000
    for _ in range(4):
        log.append(_audio(10))
    assert log.bytes < 1000, "gone once newer events follow"
    counted: EventLog[Any] = EventLog(100, max_bytes=1 << 30, size_of=estimate_event_bytes)
    for _ in range(500):
        counted.append(RealtimeError({"message": "x"}))
    assert len(counted) == 100, "the count bound still holds"


def test_size_estimates_follow_audio_and_text() -> None:
    small, large = estimate_event_bytes(_audio(10)), estimate_event_bytes(_audio(10_010))
    assert large - small == 10_000
    short = estimate_event_bytes(HistoryDelta([("set", 0, said("a", "x"))]))
    long = estimate_event_bytes(HistoryDelta([("set", 0, said("a", "x" * 5001))]))
    assert long - short == 5000
    assert estimate_event_bytes(RealtimeError({"message": "m" * 1000})) > 1000


def test_a_byte_bound_needs_a_sizer() -> None:
    with pytest.raises(ValueError):
        EventLog(10, max_bytes=100)
