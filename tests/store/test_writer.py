"""The write-behind writer: non-blocking enqueue, bounded queue, order,
coalescing, shared flushes, and backend failures that reach the caller."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from ray_realtime.exceptions import (
    ConfigError,
    StoreError,
    StoreOverflowError,
    StoreUnavailableError,
    UserError,
)
from ray_realtime.store import (
    DeleteItem,
    PutItem,
    PutSession,
    SessionState,
    SetReader,
    StoreOp,
    UpdateSession,
    WriteBehindStore,
)
from ray_realtime.store.state import StoreState
from tests.conftest import UNIT
from tests.store.util import GatedStore, item, random_ops

SLOW = 60.0  # an interval that never fires within a test: only flush/size drain


async def assert_matches_reference(backend: GatedStore, ops: list[StoreOp]) -> None:
    reference = StoreState()
    reference.apply(ops)
    assert await backend.list_sessions() == reference.session_ids()
    for session_id in reference.session_ids():
        assert await backend.load(session_id) == reference.load(session_id)


async def test_enqueue_never_waits_for_the_backend() -> None:
    backend = GatedStore()
    backend.gate.clear()  # the backend hangs
    writer = WriteBehindStore(backend, flush_interval_seconds=0.001, max_pending_ops=5000)
    writer.enqueue(PutItem("s", item("first")))
    await asyncio.wait_for(backend.entered.wait(), 5 * UNIT)  # a batch is stuck in flight
    started = time.perf_counter()
    for n in range(2000):
        writer.enqueue(PutItem("s", item(f"i{n}")))
    elapsed = time.perf_counter() - started
    stats = writer.statistics()
    assert (stats.inflight_ops, stats.pending_ops) == (1, 2000)
    assert elapsed < 1.0 * UNIT  # 2000 enqueues while the backend is stuck
    backend.gate.set()
    await asyncio.wait_for(writer.flush(), 5 * UNIT)
    assert len((await backend.load("s")).items) == 2001
    await writer.aclose()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_coalesced_batches_have_the_effect_of_every_write_in_order(seed: int) -> None:
    """Random writes, queued with random flushes between them while the backend
    is sometimes held: the store ends as if each write had been applied alone."""
    rng = random.Random(seed)
    ops = random_ops(rng, 400)
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=0.001, max_batch_ops=7)
    flushes: list[asyncio.Task[None]] = []
    for op in ops:
        writer.enqueue(op)
        roll = rng.random()
        if roll < 0.05:
            backend.gate.clear()
        elif roll < 0.15:
            backend.gate.set()
        if rng.random() < 0.05:
            flushes.append(asyncio.create_task(writer.flush()))
        if rng.random() < 0.1:
            await asyncio.sleep(0)
    backend.gate.set()
    await asyncio.wait_for(asyncio.gather(*flushes, writer.flush()), 10 * UNIT)
    await assert_matches_reference(backend, ops)
    stats = writer.statistics()
    assert stats.enqueued == len(ops)
    assert stats.written_ops + stats.coalesced <= len(ops)
    await writer.aclose()


async def test_hot_fields_coalesce_into_one_op_each() -> None:
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=SLOW)
    for n in range(1000):
        writer.enqueue(SetReader("s", "reader", n))
        writer.enqueue(UpdateSession("s", seq=n))
    writer.enqueue(PutItem("s", item("a", "partial")))
    writer.enqueue(PutItem("s", item("a", "final transcript")))
    await writer.flush()
    assert backend.ops_written == 3
    assert writer.statistics().coalesced == 2 * 999 + 1
    loaded = await backend.load("s")
    assert (loaded.readers, loaded.seq) == ({"reader": 999}, 999)
    assert loaded.items[0].to_dict()["text"] == "final transcript"
    await writer.aclose()


async def test_a_delete_or_put_session_is_a_barrier_for_coalescing() -> None:
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=SLOW)
    ops: list[StoreOp] = [
        PutItem("s", item("a")),
        PutItem("s", item("b")),
        DeleteItem("s", "a"),
        PutItem("s", item("a", "re-added")),  # must land after b, not in a's old place
        UpdateSession("s", seq=1),
        PutSession(SessionState("s", seq=7, items=(item("x"),))),
        UpdateSession("s", seq=9),  # must land after the PutSession, not merge before it
        PutItem("s", item("b", "after reset")),
    ]
    for op in ops:
        writer.enqueue(op)
    await writer.flush()
    await assert_matches_reference(backend, ops)
    loaded = await backend.load("s")
    assert ([i.item_id for i in loaded.items], loaded.seq) == (["x", "b"], 9)
    await writer.aclose()


async def test_concurrent_flushes_share_round_trips() -> None:
    backend = GatedStore()
    backend.gate.clear()
    writer = WriteBehindStore(backend, flush_interval_seconds=SLOW)
    writer.enqueue(PutItem("s", item("first")))
    first = asyncio.create_task(writer.flush())
    await asyncio.wait_for(backend.entered.wait(), 5 * UNIT)
    waiting = []
    for n in range(50):  # 50 items completed while the first batch is in flight
        writer.enqueue(PutItem("s", item(f"i{n}")))
        waiting.append(asyncio.create_task(writer.flush()))
    backend.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *waiting), 5 * UNIT)
    assert backend.calls == 2  # 51 flushes, 2 round trips
    assert len((await backend.load("s")).items) == 51
    await writer.aclose()


async def test_flush_before_emit_keeps_the_history_guarantee() -> None:
    """The pattern the session uses: queue the item, await flush, then emit
    ``history_added``. Whatever a reader saw is in the store at that moment."""
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=0.005)
    seen_by_readers: list[str] = []
    missing_at_emit: list[str] = []

    async def complete_item(item_id: str) -> None:
        writer.enqueue(PutItem("s", item(item_id)))
        await writer.flush()
        stored = {i.item_id for i in (await backend.inner.load("s")).items}
        if item_id not in stored:
            missing_at_emit.append(item_id)
        seen_by_readers.append(item_id)  # history_added goes out now

    await asyncio.wait_for(asyncio.gather(*(complete_item(f"i{n}") for n in range(40))), 10 * UNIT)
    assert len(seen_by_readers) == 40
    assert missing_at_emit == []
    assert backend.calls < 40  # the flushes shared batches
    await writer.aclose()


async def test_the_queue_is_bounded_and_refuses_with_a_typed_error() -> None:
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=SLOW, max_pending_ops=5)
    for n in range(5):
        writer.enqueue(PutItem("s", item(f"i{n}")))
    with pytest.raises(StoreOverflowError):
        writer.enqueue(PutItem("s", item("one-too-many")))
    with pytest.raises(StoreOverflowError):
        await writer.append_items("s", [item("x"), item("y")])
    # A write that merges into a queued op adds nothing and still succeeds.
    writer.enqueue(PutItem("s", item("i3", "updated")))
    assert writer.statistics().overflows == 2
    await writer.flush()
    loaded = await backend.load("s")
    assert [i.item_id for i in loaded.items] == [f"i{n}" for n in range(5)]
    assert loaded.items[3].to_dict()["text"] == "updated"
    writer.enqueue(PutItem("s", item("room-again")))  # flushed: there is room again
    await writer.aclose()


async def test_a_failing_backend_reaches_flush_and_on_error_and_loses_nothing() -> None:
    backend = GatedStore()
    backend.failing = True
    errors: list[StoreUnavailableError] = []
    writer = WriteBehindStore(
        backend, flush_interval_seconds=0.005, retry_max_seconds=0.05, on_error=errors.append
    )
    await writer.append_items("s", [item("a"), item("b")])
    with pytest.raises(StoreUnavailableError, match="backend is down"):
        await asyncio.wait_for(writer.flush(), 5 * UNIT)
    assert errors and isinstance(errors[0], StoreUnavailableError)
    assert writer.statistics().failures >= 1
    assert writer.statistics().inflight_ops == 2  # kept for the retry
    writer.enqueue(PutItem("s", item("c")))  # still accepted while the backend is down
    backend.failing = False
    await asyncio.wait_for(writer.flush(), 5 * UNIT)
    assert [i.item_id for i in (await backend.load("s")).items] == ["a", "b", "c"]
    await writer.aclose()


async def test_a_hung_backend_times_out_as_an_error() -> None:
    backend = GatedStore()
    backend.gate.clear()
    writer = WriteBehindStore(backend, flush_interval_seconds=0.001, write_timeout_seconds=0.2)
    writer.enqueue(PutItem("s", item("a")))
    with pytest.raises(StoreUnavailableError, match="timed out"):
        await asyncio.wait_for(writer.flush(), 5 * UNIT)
    backend.gate.set()
    await asyncio.wait_for(writer.flush(), 5 * UNIT)
    assert [i.item_id for i in (await backend.load("s")).items] == ["a"]
    await writer.aclose()


async def test_reads_see_every_earlier_write() -> None:
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=SLOW)
    writer.enqueue(PutItem("s", item("a")))
    assert [i.item_id for i in (await writer.load("s")).items] == ["a"]
    assert await writer.list_sessions() == ["s"]
    await writer.aclose()


async def test_aclose_flushes_then_refuses_writes() -> None:
    backend = GatedStore()
    writer = WriteBehindStore(backend, flush_interval_seconds=SLOW)
    writer.enqueue(PutItem("s", item("a")))
    await writer.aclose()
    assert [i.item_id for i in (await backend.load("s")).items] == ["a"]
    with pytest.raises(StoreError):
        writer.enqueue(PutItem("s", item("b")))


async def test_aclose_on_a_dead_backend_says_what_was_not_stored() -> None:
    backend = GatedStore()
    backend.failing = True
    writer = WriteBehindStore(
        backend, flush_interval_seconds=0.001, write_timeout_seconds=0.1, retry_max_seconds=0.05
    )
    await writer.append_items("s", [item("a"), item("b"), item("c")])
    with pytest.raises(StoreUnavailableError, match="3 writes not stored"):
        await asyncio.wait_for(writer.aclose(), 5 * UNIT)


def test_bad_settings_and_bad_ops_are_typed_errors() -> None:
    backend = GatedStore()
    with pytest.raises(ConfigError):
        WriteBehindStore(backend, flush_interval_seconds=0)
    with pytest.raises(ConfigError):
        WriteBehindStore(backend, max_pending_ops=0)
    writer = WriteBehindStore(backend)
    with pytest.raises(UserError):
        writer.enqueue("not an op")  # type: ignore[arg-type]
