"""EventLog: sequence numbers, independent readers, bounded memory."""

from __future__ import annotations

import pytest

from ray_realtime.core.event_log import EventLog, LogRead


def filled(capacity: int, count: int) -> EventLog[str]:
    log: EventLog[str] = EventLog(capacity)
    for i in range(1, count + 1):
        log.append(f"e{i}")
    return log


def test_empty_log() -> None:
    log: EventLog[str] = EventLog(4)
    assert (log.last_seq, len(log), log.capacity) == (0, 0, 4)
    assert log.read(0, 10) == LogRead([], 0, 0)


def test_sequence_numbers_start_at_one() -> None:
    log: EventLog[str] = EventLog(8)
    assert [log.append(x) for x in "abc"] == [1, 2, 3]
    assert log.last_seq == 3
    assert log.first_seq == 1


def test_read_after_zero_returns_everything() -> None:
    log = filled(8, 3)
    assert log.read(0, 100) == LogRead(["e1", "e2", "e3"], 3, 0)


def test_read_after_last_returns_nothing() -> None:
    log = filled(8, 3)
    assert log.read(3, 100) == LogRead([], 3, 0)


def test_read_from_the_middle() -> None:
    log = filled(8, 5)
    assert log.read(2, 100) == LogRead(["e3", "e4", "e5"], 5, 0)


def test_max_events_batches() -> None:
    log = filled(16, 7)
    seen: list[str] = []
    position = 0
    batches = []
    while True:
        batch = log.read(position, 3)
        if not batch.events:
            break
        assert batch.missed == 0
        batches.append(len(batch.events))
        seen.extend(batch.events)
        position = batch.last_seq
    assert batches == [3, 3, 1]
    assert seen == [f"e{i}" for i in range(1, 8)]
    assert position == 7


def test_max_events_zero_returns_nothing_and_keeps_position() -> None:
    log = filled(8, 3)
    assert log.read(1, 0) == LogRead([], 1, 0)


def test_two_independent_readers_each_see_every_event() -> None:
    log: EventLog[int] = EventLog(64)
    fast_pos = slow_pos = 0
    fast: list[int] = []
    slow: list[int] = []
    for i in range(1, 41):
        log.append(i)
        read = log.read(fast_pos, 1000)  # reads after every append
        fast.extend(read.events)
        fast_pos = read.last_seq
        if i % 7 == 0:  # reads now and then, in small batches
            read = log.read(slow_pos, 2)
            slow.extend(read.events)
            slow_pos = read.last_seq
    while (read := log.read(slow_pos, 2)).events:
        slow.extend(read.events)
        slow_pos = read.last_seq
    expected = list(range(1, 41))
    assert fast == expected, "the fast reader missed or repeated events"
    assert slow == expected, "the slow reader missed or repeated events"


def test_reader_that_fell_behind_gets_exact_missed_count() -> None:
    log = filled(5, 12)  # keeps e8..e12
    assert (log.first_seq, log.last_seq, len(log)) == (8, 12, 5)
    read = log.read(0, 2)
    assert read.missed == 7, "e1..e7 are gone"
    assert read.events == ["e8", "e9"], "resumes at the oldest kept"
    assert read.last_seq == 9
    follow = log.read(read.last_seq, 100)
    assert follow == LogRead(["e10", "e11", "e12"], 12, 0)


def test_reader_behind_by_a_few() -> None:
    log = filled(5, 12)
    read = log.read(4, 100)  # saw e1..e4; e5..e7 dropped
    assert read.missed == 3
    assert read.events == ["e8", "e9", "e10", "e11", "e12"]


def test_reader_exactly_at_the_edge_misses_nothing() -> None:
    log = filled(5, 12)
    assert log.read(7, 100) == LogRead(["e8", "e9", "e10", "e11", "e12"], 12, 0)


def test_memory_bounded_over_many_appends() -> None:
    log: EventLog[int] = EventLog(100)
    for i in range(10_000):
        log.append(i)
        assert len(log) <= 100, f"log grew to {len(log)} at append {i}"
    assert log.last_seq == 10_000
    assert log.first_seq == 9_901
    read = log.read(0, 1_000)
    assert read.missed == 9_900
    assert read.events == list(range(9_900, 10_000))


def test_after_seq_beyond_last_clamps() -> None:
    log = filled(8, 3)
    assert log.read(50, 10) == LogRead([], 3, 0)
    log.append("e4")
    # after clamping, the reader asks after 3 and sees the new event
    assert log.read(3, 10).events == ["e4"]


def test_negative_after_seq_reads_from_start() -> None:
    assert filled(8, 2).read(-5, 10) == LogRead(["e1", "e2"], 2, 0)


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError):
        EventLog(capacity)
