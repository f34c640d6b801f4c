"""Tool calls to a worker go in batches: one actor call per worker per loop turn.

Without Ray: the session's pool executor over a real :class:`ToolWorker` in
this process (``InProcessWorker`` counts the actor calls Ray would make).
With Ray: the same on a real worker actor, including its death mid-batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any

import pytest

from ray_realtime import RealtimeAgent, function_tool, wire
from ray_realtime.actors import raylib
from ray_realtime.actors.pool import PoolExecutor, SessionObjects, WorkerPool, WorkerSlot
from ray_realtime.actors.tool_batch import (
    ToolAnswer,
    ToolBatcher,
    ToolCall,
    decode_answers,
    decode_calls,
    encode_answers,
    encode_calls,
)
from ray_realtime.actors.workers import ToolWorker
from ray_realtime.exceptions import ToolError
from ray_realtime.session.execution import ToolOutcome
from tests.actors.worker_fakes import FakeRef, InProcessWorker, RefObjects
from tests.conftest import UNIT, RayTestCluster


@function_tool
def echo_n(n: int) -> str:
    """Say which call this was (a sync tool: it runs in a worker thread).

    Args:
        n: The call's number.
    """
    return f"n={n}"


@function_tool
async def explode(n: int) -> str:
    """Always raises.

    Args:
        n: Unused.
    """
    raise ValueError(f"boom {n}")


@function_tool(failure_error_function=None)
async def explode_raised(n: int) -> str:
    """Raises, and its failure is raised rather than told to the model.

    Args:
        n: Unused.
    """
    raise ValueError(f"raised {n}")


@function_tool(timeout_seconds=0.3)
async def sleepy(n: int) -> str:
    """Runs far past its timeout.

    Args:
        n: Unused.
    """
    await asyncio.sleep(30)
    return "never"


_release = threading.Event()


@function_tool(timeout_seconds=0.05)
def stuck(n: int) -> str:
    """Blocks its thread far past its timeout.

    Args:
        n: Unused.
    """
    _release.wait(30)
    return "late"


_AGENT = RealtimeAgent(name="Batcher", tools=[echo_n, explode, explode_raised, sleepy, stuck])
# What a worker actor gets (by pickle: ``stuck`` holds a thread event).
_RAY_AGENT = RealtimeAgent(name="Batcher", tools=[echo_n, explode, sleepy])


@pytest.fixture(autouse=True)
def _free_stuck_threads() -> Generator[None, None, None]:
    _release.clear()
    yield
    # Free stuck threads before the test's loop waits for its executor.
    _release.set()


def _executor(*handles: Any, node: str = "n1") -> tuple[PoolExecutor, WorkerPool]:
    slots = [WorkerSlot(f"w{i}", node, h) for i, h in enumerate(handles)]
    pool = WorkerPool("n1", slots)
    return PoolExecutor(pool, RefObjects(raylib.dumps(None))), pool  # type: ignore[arg-type]


async def _call(
    executor: PoolExecutor, tool: Any, n: int, agent: RealtimeAgent[Any] = _AGENT
) -> ToolOutcome:
    return await executor.run_tool(
        agent,
        tool,
        call_id=f"call-{n}",
        arguments=json.dumps({"n": n}),
        context=None,
        default_timeout=5.0,
    )


async def test_concurrent_calls_share_one_actor_call_and_get_their_own_answers() -> None:
    handle = InProcessWorker()
    executor, _ = _executor(handle)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(_call(executor, echo_n, n) for n in range(20))), 5 * UNIT
    )
    assert [o.output for o in outcomes] == [f"n={n}" for n in range(20)]
    assert all(o.error is None for o in outcomes)
    # One streaming actor call carried all twenty.
    assert [(method, len(calls)) for method, calls, _ in handle.sent] == [("stream_tools", 20)]
    stats = handle.worker.statistics()
    assert (stats["batches"], stats["calls"], stats["in_flight"]) == (1, 20, 0)


async def test_sequential_calls_send_the_agent_and_context_once() -> None:
    handle = InProcessWorker()
    executor, _ = _executor(handle)
    for n in range(3):
        assert (await _call(executor, echo_n, n)).output == f"n={n}"
    # A single call is a plain actor call; only the first brought the objects.
    assert [(method, len(refs)) for method, _, refs in handle.sent] == [
        ("run_tools", 2),
        ("run_tools", 0),
        ("run_tools", 0),
    ]


async def test_a_worker_that_lost_the_objects_gets_them_again() -> None:
    handle = InProcessWorker()
    executor, _ = _executor(handle)
    assert (await _call(executor, echo_n, 1)).output == "n=1"
    handle.worker = ToolWorker()  # a cache that holds nothing
    outcome = await asyncio.wait_for(_call(executor, echo_n, 2), 5 * UNIT)
    assert (outcome.output, outcome.error) == ("n=2", None)
    # Asked without the objects, it ran nothing and said so; sent again with them.
    assert [len(refs) for _, _, refs in handle.sent] == [2, 0, 2]
    assert handle.worker.statistics()["calls"] == 2


async def test_one_failing_call_does_not_fail_the_others_in_its_batch() -> None:
    handle = InProcessWorker()
    executor, _ = _executor(handle)
    missing = dataclasses.replace(echo_n, name="not_on_the_agent")
    ok, failed, raised, unknown, ok2 = await asyncio.wait_for(
        asyncio.gather(
            _call(executor, echo_n, 1),
            _call(executor, explode, 2),
            _call(executor, explode_raised, 3),
            _call(executor, missing, 4),
            _call(executor, echo_n, 5),
        ),
        5 * UNIT,
    )
    assert [len(calls) for _, calls, _ in handle.sent] == [5]
    assert (ok.output, ok.error, ok2.output) == ("n=1", None, "n=5")
    assert failed.error is not None and "boom 2" in failed.error and not failed.raised
    assert raised.raised and raised.error is not None and "raised 3" in raised.error
    assert unknown.error is not None and "not_on_the_agent" in unknown.error


async def test_a_call_timing_out_in_a_batch_does_not_hold_back_the_others() -> None:
    handle = InProcessWorker()
    executor, _ = _executor(handle)
    t0 = time.monotonic()
    ended: dict[int, float] = {}

    async def timed(tool: Any, n: int) -> ToolOutcome:
        outcome = await _call(executor, tool, n)
        ended[n] = time.monotonic() - t0
        return outcome

    outcomes = await asyncio.wait_for(
        asyncio.gather(timed(sleepy, 0), *(timed(echo_n, n) for n in range(1, 6))), 5 * UNIT
    )
    assert [len(calls) for _, calls, _ in handle.sent] == [6]
    assert [o.output for o in outcomes[1:]] == [f"n={n}" for n in range(1, 6)]
    # The quick ones were answered (streamed) long before the slow one's timeout.
    assert max(ended[n] for n in range(1, 6)) < 0.25
    slow = outcomes[0]
    assert slow.error is not None and "timed out" in slow.error and ended[0] >= 0.3


async def test_a_retiring_worker_refuses_a_whole_batch_and_another_takes_it() -> None:
    retiring, other = InProcessWorker(), InProcessWorker()
    watch = asyncio.ensure_future(retiring.worker.wait_retire(1, 10 * UNIT))
    executor, pool = _executor(retiring)
    # A stuck thread (limit 1): the worker retires.
    assert "timed out" in ((await _call(executor, stuck, 0)).error or "")
    assert await asyncio.wait_for(watch, 5 * UNIT)
    calls_before = retiring.worker.statistics()["calls"]
    pool.replace([pool.workers[0], WorkerSlot("far", "n2", other)])
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(_call(executor, echo_n, n) for n in range(5))), 5 * UNIT
    )
    assert [o.output for o in outcomes] == [f"n={n}" for n in range(5)]
    # Refused as a whole (nothing of it booked), then sent to the other as one batch.
    assert retiring.worker.statistics()["calls"] == calls_before
    assert [len(calls) for _, calls, _ in other.sent] == [5]
    assert [w.name for w in pool.workers] == ["far"]


async def test_a_batcher_sends_at_most_max_batch_calls_per_actor_call() -> None:
    sizes: list[int] = []

    async def send(
        calls: list[ToolCall], refs: dict[str, Any]
    ) -> list[tuple[int, ToolAnswer | None]]:
        sizes.append(len(calls))
        return [(i, (c.call_id, None, False, None)) for i, c in enumerate(calls)]

    async def stream(
        calls: list[ToolCall], refs: dict[str, Any]
    ) -> AsyncGenerator[list[tuple[int, ToolAnswer | None]], None]:
        sizes.append(len(calls))
        # Two groups, the later half first: answers are matched by index.
        half = len(calls) // 2
        yield [(i, (calls[i].call_id, None, False, None)) for i in range(half, len(calls))]
        yield [(i, (calls[i].call_id, None, False, None)) for i in range(half)]

    batcher = ToolBatcher(send, stream, max_batch=4)
    calls = [ToolCall("a", None, "t", f"c{i}", "{}", 1.0) for i in range(10)]
    futures = [batcher.submit(c, {}, 5.0) for c in calls]
    futures[3].cancel()  # cancelled before its batch went: not sent
    answers = await asyncio.wait_for(asyncio.gather(*futures[:3], *futures[4:]), 5 * UNIT)
    assert [a[0] for a in answers] == [f"c{i}" for i in range(10) if i != 3]
    assert sizes == [4, 4, 1]
    assert batcher.statistics() == {"batches": 3, "calls": 9, "queued": 0}


async def test_a_batch_that_fails_fails_each_of_its_calls() -> None:
    async def send(
        calls: list[ToolCall], refs: dict[str, Any]
    ) -> list[tuple[int, ToolAnswer | None]]:
        raise AssertionError("unused")

    async def stream(
        calls: list[ToolCall], refs: dict[str, Any]
    ) -> AsyncGenerator[list[tuple[int, ToolAnswer | None]], None]:
        yield [(0, ("first", None, False, None))]
        raise ConnectionError("the worker went away")

    batcher = ToolBatcher(send, stream)
    futures = [
        batcher.submit(ToolCall("a", None, "t", f"c{i}", "{}", 1.0), {}, 5.0) for i in range(3)
    ]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5 * UNIT)
    assert results[0] == ("first", None, False, None)
    assert all(isinstance(r, ConnectionError) for r in results[1:])


# ------------------------------------------------------------ real Ray


@pytest.mark.ray
async def test_batches_on_a_real_worker_actor(ray_cluster: RayTestCluster) -> None:
    from ray_realtime.actors.remote import ToolWorkerActor

    handle = ToolWorkerActor.options(**raylib.actor_options()).remote()
    try:
        node = await asyncio.wait_for(handle.ping.remote(), 30 * UNIT)
        pool = WorkerPool(node, [WorkerSlot("w", node, handle)])
        executor = PoolExecutor(pool, SessionObjects(raylib.dumps(None), []))
        tools = [echo_n] * 27 + [explode, sleepy, echo_n]
        # Cold: the calls wait for one put of the agent and context, then go together.
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(_call(executor, t, n, _RAY_AGENT) for n, t in enumerate(tools))),
            30 * UNIT,
        )
        stats = await handle.statistics.remote()
        # Thirty calls, one actor call; the agent and context fetched once.
        assert (stats["calls"], stats["batches"], stats["fetches"]) == (30, 1, 2)
        assert [o.output for o in outcomes[:27]] == [f"n={n}" for n in range(27)]
        assert outcomes[29].output == "n=29"
        assert outcomes[27].error is not None and "boom 27" in outcomes[27].error
        assert outcomes[28].error is not None and "timed out" in outcomes[28].error
    finally:
        raylib.kill(handle)


@pytest.mark.ray
async def test_a_worker_dying_mid_batch_ends_each_call_and_is_dropped_once(
    ray_cluster: RayTestCluster,
) -> None:
    from ray_realtime.actors.remote import ToolWorkerActor

    @function_tool(timeout_seconds=60)
    async def long_call(n: int) -> str:
        """Runs until the worker dies.

        Args:
            n: Unused.
        """
        await asyncio.sleep(60)
        return "never"

    agent = RealtimeAgent(name="Dying", tools=[long_call])
    handle = ToolWorkerActor.options(**raylib.actor_options()).remote()
    node = await asyncio.wait_for(handle.ping.remote(), 30 * UNIT)
    dead: list[str] = []
    pool = WorkerPool(node, [WorkerSlot("w", node, handle)], on_dead=lambda s: dead.append(s.name))
    objects = SessionObjects(raylib.dumps(None), [])
    # The objects are put before the batch, so the calls go out in one turn.
    await objects.agent_ref(agent)
    await objects.context_ref()
    executor = PoolExecutor(pool, objects)
    calls = [
        asyncio.ensure_future(
            executor.run_tool(
                agent,
                long_call,
                call_id=f"c{n}",
                arguments=json.dumps({"n": n}),
                context=None,
                default_timeout=60.0,
            )
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 10 * UNIT
    while (await handle.statistics.remote())["in_flight"] < 4:
        assert time.monotonic() < deadline, "the batch never started"
        await asyncio.sleep(0.05)
    raylib.kill(handle)
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), 30 * UNIT)
    assert all(o.error is not None and "died" in o.error for o in outcomes), outcomes
    assert dead == ["w"] and pool.workers == []


def test_batches_cross_as_bytes_and_malformed_ones_are_typed_errors() -> None:
    calls = [
        ToolCall("a", None, "t", "c1", '{"n": 1}', 2.5),
        ToolCall("a", "x", "u", "c2", "{}", 1.0),
    ]
    assert decode_calls(encode_calls(calls)) == calls
    answers: list[tuple[int, ToolAnswer | None]] = [
        (0, ("out", None, False, {"k": [1]})),
        (1, None),
    ]
    assert decode_answers(encode_answers(answers)) == answers
    for junk in ({"not": "a list"}, [["too", "short"]], [1, 2]):
        with pytest.raises(ToolError):
            decode_calls(wire.encode(junk))
    for junk in ({"not": "a list"}, [[0, ["short"]]], [["zero", None]]):
        with pytest.raises(ToolError):
            decode_answers(wire.encode(junk))


async def test_a_batch_cancelled_before_its_calls_start_leaves_nothing_in_flight() -> None:
    worker = ToolWorker()
    agent = FakeRef(_AGENT, "agent")
    calls = [
        ToolCall("agent", None, "echo_n", f"c{n}", json.dumps({"n": n}), 5.0) for n in range(3)
    ]
    batch = asyncio.ensure_future(worker.run_tools(encode_calls(calls), {"agent": agent}))
    await asyncio.sleep(0)
    # The batch has booked its calls and made their tasks, which have not run yet.
    assert worker.statistics()["in_flight"] == 3
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    deadline = time.monotonic() + 5 * UNIT
    while worker.statistics()["in_flight"]:
        assert time.monotonic() < deadline, "calls left in flight"
        await asyncio.sleep(0.01)
    await asyncio.wait_for(worker.wait_idle(), 5 * UNIT)
