"""Worker replacement and retirement, without a Ray runtime.

The plain parts one by one: the thread ledger and a real tool worker (real
threads, stuck for real) deciding to retire; the session's worker pool
waiting for a replacement and stepping around a retiring worker; the router
(on its fake Ray seam) acting on a worker's death or retirement at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest

from ray_realtime import RealtimeAgent, function_tool
from ray_realtime.actors.pool import PoolExecutor, WorkerPool, WorkerSlot
from ray_realtime.actors.router import Router
from ray_realtime.actors.tool_batch import (
    ToolAnswer,
    ToolCall,
    decode_answers,
    encode_answers,
    encode_calls,
)
from ray_realtime.actors.worker_health import (
    CURRENT_CALL,
    ThreadLedger,
    TrackingExecutor,
    WorkerRetiring,
)
from ray_realtime.actors.workers import ToolWorker
from ray_realtime.cluster.fleet import ActorKind
from tests.actors.router_fakes import FakeActor, FakeOps, raw_node
from tests.actors.worker_fakes import FakeRef
from tests.conftest import UNIT

# ------------------------------------------------------------- the ledger


def test_threads_of_ended_calls_are_stuck_and_the_limit_retires() -> None:
    ledger = ThreadLedger(stuck_limit=2)
    a, b, c = ledger.open_call(), ledger.open_call(), ledger.open_call()
    ledger.thread_started("ta", a)
    ledger.thread_started("tb", b)
    ledger.thread_started("free", None)  # work of no call never counts as stuck
    assert (ledger.in_flight, ledger.busy, ledger.stuck) == (3, 3, 0)
    # a's thread finished before its call ended: nothing stuck.
    ledger.thread_done("ta")
    assert not ledger.close_call(a)
    # b timed out with its thread still running: stuck, one short of the limit.
    assert not ledger.close_call(b)
    assert ledger.stuck == 1 and not ledger.retiring
    ledger.thread_started("tc", c)
    assert ledger.close_call(c)  # the second stuck thread: retire
    assert ledger.retiring and ledger.stuck == 2
    with pytest.raises(WorkerRetiring):
        ledger.open_call()
    # Stuck threads that finish late free their slots, but a retiring worker stays retiring.
    ledger.thread_done("tb")
    ledger.thread_done("tc")
    assert ledger.stuck == 0 and ledger.check()


def test_the_stuck_limit_is_at_most_half_the_pool() -> None:
    ledger = ThreadLedger(stuck_limit=100, max_threads=8)
    assert ledger.stuck_limit == 4
    ledger.stuck_limit = 0
    assert ledger.stuck_limit == 1


def test_the_tracking_executor_books_work_under_the_current_call() -> None:
    ledger = ThreadLedger(stuck_limit=4)
    release = threading.Event()
    with TrackingExecutor(ledger, max_workers=2) as pool:
        call = ledger.open_call()
        token = CURRENT_CALL.set(call)
        try:
            blocked = pool.submit(release.wait, 10)
        finally:
            CURRENT_CALL.reset(token)
        quick = pool.submit(lambda: 1)  # outside any call
        assert quick.result(5) == 1
        ledger.close_call(call)
        assert (ledger.busy, ledger.stuck) == (1, 1)
        release.set()
        assert blocked.result(5)
    assert (ledger.busy, ledger.stuck) == (0, 0)


# ------------------------------------------------- a real worker, no Ray


_release = threading.Event()


@function_tool(timeout_seconds=0.05)
def stuck_tool() -> str:
    """Blocks its thread far past its timeout."""
    _release.wait(30)
    return "late"


@function_tool
def quick_tool() -> str:
    """Answers at once, in a thread."""
    return "quick"


@pytest.fixture
def worker_agent() -> Generator[FakeRef, None, None]:
    _release.clear()
    yield FakeRef(RealtimeAgent(name="W", tools=[stuck_tool, quick_tool]), "agent")
    _release.set()


async def _run(worker: ToolWorker, agent: FakeRef, tool: str) -> ToolAnswer:
    key = agent.hex()
    call = ToolCall(key, None, tool, "call-1", "{}", 1.0)
    ((_, answer),) = decode_answers(await worker.run_tools(encode_calls([call]), {key: agent}))
    assert answer is not None
    return answer


async def test_a_worker_whose_threads_are_stuck_retires(worker_agent: FakeRef) -> None:
    try:
        await _stuck_worker_retires(worker_agent)
    finally:
        # Free the stuck threads before the test's loop waits for its executor.
        _release.set()


async def _stuck_worker_retires(worker_agent: FakeRef) -> None:
    worker = ToolWorker()
    watch = asyncio.ensure_future(worker.wait_retire(2, 10 * UNIT))
    assert (await _run(worker, worker_agent, "quick_tool"))[0] == "quick"
    _, error, _, _ = await _run(worker, worker_agent, "stuck_tool")
    assert error is not None and "timed out" in error
    assert worker.statistics()["stuck_threads"] == 1 and not watch.done()
    # Live calls still get a thread.
    assert (await _run(worker, worker_agent, "quick_tool"))[0] == "quick"
    await _run(worker, worker_agent, "stuck_tool")
    # The second stuck thread: the router's watch returns, new calls are refused.
    assert await asyncio.wait_for(watch, 5 * UNIT) is True
    stats = worker.statistics()
    assert (stats["stuck_threads"], stats["retiring"], stats["in_flight"]) == (2, True, 0)
    with pytest.raises(WorkerRetiring):
        await _run(worker, worker_agent, "quick_tool")
    await asyncio.wait_for(worker.wait_idle(), 5 * UNIT)


async def test_a_retiring_worker_goes_idle_when_its_calls_end(worker_agent: FakeRef) -> None:
    worker = ToolWorker()
    assert await worker.wait_retire(1, 0.01) is False  # nothing stuck yet
    gate = asyncio.Event()

    @function_tool
    async def waits() -> str:
        """Waits for the test."""
        await gate.wait()
        return "done"

    slow = FakeRef(RealtimeAgent(name="S", tools=[waits, stuck_tool]), "slow")
    in_flight = asyncio.ensure_future(_run(worker, slow, "waits"))
    try:
        await _run(worker, slow, "stuck_tool")  # limit 1: retiring now
        assert worker.statistics()["retiring"]
        idle = asyncio.ensure_future(worker.wait_idle())
        await asyncio.sleep(0.05)
        assert not idle.done()  # the call in flight is still running
        gate.set()
        assert (await asyncio.wait_for(in_flight, 5 * UNIT))[0] == "done"
        await asyncio.wait_for(idle, 5 * UNIT)
    finally:
        # Free the stuck thread before the test's loop waits for its executor.
        _release.set()


# -------------------------------------------------- the session's pool


class _Handle:
    """A worker handle whose ``run_tools.remote`` runs ``behaviour`` (one
    call at a time here)."""

    def __init__(self, name: str, behaviour: Callable[[], Awaitable[Any]]) -> None:
        self.name = name
        self.calls = 0
        outer = self

        class _Method:
            async def remote(self, *args: Any) -> bytes:
                outer.calls += 1
                return encode_answers([(0, await behaviour())])

        self.run_tools = _Method()


class _Objects:
    async def context_ref(self) -> str:
        return "ctx"

    async def run_guardrails_ref(self) -> None:
        return None

    async def agent_ref(self, agent: Any) -> str:
        return "agent"


async def _answer(name: str) -> ToolAnswer:
    return f"from {name}", None, False, None


async def _refuse() -> Any:
    raise WorkerRetiring()


def _slot(name: str, node: str = "n1", behaviour: Any = None) -> WorkerSlot:
    return WorkerSlot(name, node, _Handle(name, behaviour or (lambda: _answer(name))))


@function_tool(timeout_seconds=2.0)
def pool_tool() -> str:
    """Never runs here: the fake handles answer."""
    return ""


_AGENT = RealtimeAgent(name="P", tools=[pool_tool])


async def _pool_call(executor: PoolExecutor) -> Any:
    return await executor.run_tool(
        _AGENT, pool_tool, call_id="c", arguments="{}", context=None, default_timeout=2.0
    )


async def test_a_call_with_no_worker_waits_for_the_replacement() -> None:
    pool = WorkerPool("n1")
    executor = PoolExecutor(pool, _Objects())  # type: ignore[arg-type]
    call = asyncio.ensure_future(_pool_call(executor))
    await asyncio.sleep(0.1)
    assert not call.done()  # waiting, not failed
    pool.replace([_slot("w-new")])
    outcome = await asyncio.wait_for(call, 5 * UNIT)
    assert (outcome.output, outcome.error) == ("from w-new", None)


async def test_waiting_for_a_worker_is_bounded_by_the_calls_timeout() -> None:
    @function_tool(timeout_seconds=0.2)
    def short() -> str:
        """Unused."""
        return ""

    executor = PoolExecutor(WorkerPool("n1"), _Objects())  # type: ignore[arg-type]
    t0 = time.monotonic()
    outcome = await asyncio.wait_for(
        executor.run_tool(
            _AGENT, short, call_id="c", arguments="{}", context=None, default_timeout=30.0
        ),
        5 * UNIT,
    )
    assert 0.15 <= time.monotonic() - t0 < 2 * UNIT
    assert outcome.error is not None and "no tool worker is available" in outcome.error


async def test_a_retiring_worker_is_stepped_around_and_not_brought_back() -> None:
    retiring = _slot("w-old", behaviour=_refuse)
    remote = _slot("w-far", node="n2")
    pool = WorkerPool("n1", [retiring, remote])
    executor = PoolExecutor(pool, _Objects())  # type: ignore[arg-type]
    outcome = await _pool_call(executor)
    # The local worker refused (it ran nothing); the call went to the other one.
    assert outcome.output == "from w-far"
    assert [w.name for w in pool.workers] == ["w-far"]
    # A list pushed before the router knew does not bring it back...
    pool.replace([_slot("w-old", behaviour=_refuse), remote])
    assert [w.name for w in pool.workers] == ["w-far"]
    # ...and a list without it lets the pool forget it.
    pool.replace([remote])
    pool.replace([_slot("w-old")])
    assert [w.name for w in pool.workers] == ["w-old"]


async def test_replace_keeps_the_slots_of_known_workers() -> None:
    kept = _slot("w1")
    kept.in_flight = 2
    pool = WorkerPool("n1", [kept])
    pool.replace([_slot("w1"), _slot("w2")])
    assert pool.workers[0] is kept and pool.workers[1].name == "w2"
    pool.replace([])
    assert pool.workers == []


# ------------------------------------------- the router, on its fake seam

CONFIG: dict[str, Any] = {
    "warm_pool_size": 0,
    "tool_workers_per_node": 1,
    "guardrail_workers_per_node": 1,
    "local_model": False,
    # No health rounds: whatever happens here happens because of the watch.
    "health_interval_seconds": 3600.0,
    "health_timeout_seconds": 0.5,
    "actor_start_timeout_seconds": 5.0,
    "refill_delay_seconds": 0.0,
    "worker_retire_grace_seconds": 0.3,
}


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5 * UNIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _router_with_a_session() -> tuple[Router, FakeOps, FakeActor, FakeActor]:
    ops = FakeOps([[raw_node("node-a")]])
    router = Router(CONFIG, ops)
    await asyncio.wait_for(router.start(), 5 * UNIT)
    placement = await router.place_session("s1")
    host = ops.actors[placement["actor_name"]]
    (tool,) = ops.live(ActorKind.TOOL)
    return router, ops, host, tool


def _tool_lists(host: FakeActor) -> list[list[str]]:
    return [[name for name, _, _ in w] for kind, w in host.worker_updates if kind == "tool"]


def _last_tool_list(host: FakeActor) -> list[str] | None:
    lists = _tool_lists(host)
    return lists[-1] if lists else None


async def test_the_router_replaces_a_dead_worker_at_once() -> None:
    router, ops, host, tool = await _router_with_a_session()
    tool.die()
    # Pushed without it, then with its replacement; no health round ran.
    await _until(lambda: len(ops.live(ActorKind.TOOL)) == 1, "the replacement")
    (new,) = ops.live(ActorKind.TOOL)
    await _until(lambda: _last_tool_list(host) == [new.name], "the list with the replacement")
    assert _tool_lists(host)[0] == []  # first the list without the dead worker
    assert ops.nodes_calls == 1  # no reconcile round found it
    await asyncio.wait_for(router.shutdown(), 5 * UNIT)


async def test_the_router_retires_a_stuck_worker_after_its_calls() -> None:
    router, ops, host, tool = await _router_with_a_session()
    tool.in_flight = 1
    tool.retiring.set()
    await _until(lambda: len(ops.live(ActorKind.TOOL)) == 2, "the replacement")
    new = next(a for a in ops.live(ActorKind.TOOL) if a is not tool)
    await _until(lambda: _last_tool_list(host) == [new.name], "the list without the old one")
    assert tool.alive  # its call in flight may finish
    tool.idle.set()
    await _until(lambda: tool.name in ops.killed, "the retired worker's kill")
    await asyncio.wait_for(router.shutdown(), 5 * UNIT)


async def test_a_retiring_worker_that_never_goes_idle_is_killed_after_the_grace() -> None:
    router, ops, _, tool = await _router_with_a_session()
    tool.in_flight = 1
    t0 = time.monotonic()
    tool.retiring.set()
    await _until(lambda: tool.name in ops.killed, "the kill after the grace period")
    assert time.monotonic() - t0 >= 0.25
    await asyncio.wait_for(router.shutdown(), 5 * UNIT)


async def test_shutdown_during_a_retirement_still_stops_the_retiring_worker() -> None:
    ops = FakeOps([[raw_node("node-a")]])
    router = Router({**CONFIG, "worker_retire_grace_seconds": 60.0}, ops)
    await asyncio.wait_for(router.start(), 5 * UNIT)
    (tool,) = ops.live(ActorKind.TOOL)
    tool.in_flight = 1
    tool.retiring.set()
    await _until(lambda: len(ops.live(ActorKind.TOOL)) == 2, "the replacement")
    await asyncio.wait_for(router.shutdown(), 5 * UNIT)
    assert tool.name in ops.killed
