"""Tool and guardrail workers that die or get stuck, with real Ray.

A worker SIGKILLed mid-call: that call ends with an error output, and the
next call waits for the router's replacement instead of failing with "no
worker is available". A sync tool that keeps timing out: its worker retires,
is replaced, and its process (stuck threads with it) is gone.

The shared cluster runs one worker of each kind per node, so to leave a
session with no worker at all these tests kill the kind's worker on every
node (three processes), the local one in the middle of a call.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import psutil
import pytest

from ray_realtime import (
    GuardrailFunctionOutput,
    RealtimeAgent,
    RealtimeError,
    RealtimeGuardrailTripped,
    RealtimeRunner,
    RealtimeSession,
    RealtimeToolEnd,
    RunContextWrapper,
    function_tool,
    output_guardrail,
)
from tests.actors.util import (
    ACTOR,
    collect,
    collect_turns,
    placement_of,
    wait_until,
    where_am_i,
)
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]

BOUND = 30 * UNIT


@function_tool
async def hold_on() -> str:
    """Takes long enough to be killed in the middle."""
    await asyncio.sleep(20)
    return "held"


@function_tool(timeout_seconds=0.3)
def stuck_sync() -> str:
    """A sync tool that sleeps far past its timeout (its thread cannot be stopped)."""
    time.sleep(20)
    return "never seen"


@output_guardrail(name="slow_check")
async def slow_check(ctx: RunContextWrapper[Any], agent: Any, text: str) -> GuardrailFunctionOutput:
    """Dawdles on "slowly"; trips on "password"; says where it ran."""
    if "slowly" in text.lower():
        await asyncio.sleep(20)
    info = {"pid": os.getpid()}
    return GuardrailFunctionOutput(output_info=info, tripwire_triggered="password" in text.lower())


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _workers(router: Any, session_id: str, kind: str) -> list[tuple[str, str, Any]]:
    placement = await placement_of(router, session_id)
    workers: list[tuple[str, str, Any]] = placement[f"{kind}_workers"]
    return workers


async def _stats(handle: Any) -> dict[str, Any]:
    stats: dict[str, Any] = await asyncio.wait_for(handle.statistics.remote(), 10 * UNIT)
    return stats


async def _kill_all_mid_call(
    router: Any, session: RealtimeSession, kind: str
) -> tuple[set[str], set[int]]:
    """SIGKILL every worker of ``kind``, the session's local one once a call
    is running on it; the killed names and pids."""
    placement = await placement_of(router, session.session_id)
    workers = await _workers(router, session.session_id, kind)
    (local,) = [h for _, node, h in workers if node == placement["node_id"]]

    async def busy() -> bool:
        return bool((await _stats(local))["in_flight"])

    await wait_until(busy, BOUND, f"a call on the local {kind} worker")
    pids = {(await _stats(h))["pid"] for _, _, h in workers}
    local_pid = (await _stats(local))["pid"]
    for pid in [local_pid, *(pids - {local_pid})]:
        os.kill(pid, signal.SIGKILL)
    return {name for name, _, _ in workers}, pids


async def _router_noticed(router: Any, session_id: str, kind: str, killed: set[str]) -> None:
    """Until the router no longer lists the killed workers (it pushed the
    lists without them to the session actors when it dropped them)."""

    async def dropped() -> bool:
        names = {n for n, _, _ in await _workers(router, session_id, kind)}
        return not names & killed

    await wait_until(dropped, BOUND, f"the router to drop the killed {kind} workers")


async def _pools_whole(router: Any, kind: str) -> None:
    """Until every node has its worker of ``kind`` again (for the next tests)."""

    async def whole() -> bool:
        status = await asyncio.wait_for(router.status.remote(), 10 * UNIT)
        return all(n[f"{kind}_workers"] == 1 for n in status["nodes"])

    await wait_until(whole, BOUND, f"a {kind} worker on every node")


def _errors(events: list[Any]) -> list[str]:
    return [e.error["message"] for e in events if isinstance(e, RealtimeError)]


def _no_worker_errors(events: list[Any]) -> list[str]:
    return [m for m in _errors(events) if "worker is available" in m or "worker died" in m]


async def test_a_tool_worker_killed_mid_call_is_replaced_before_the_next_call(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    agent = RealtimeAgent(name="Holder", tools=[hold_on, where_am_i])
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:
        await session.send_message("hold on")
        killed, pids = await _kill_all_mid_call(router, session, "tool")
        t_kill = time.monotonic()
        events = await collect_turns(session, turns=2)
        (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
        assert end.tool.name == "hold_on" and "died" in end.output

        await _router_noticed(router, session.session_id, "tool", killed)
        noticed = time.monotonic() - t_kill
        t0 = time.monotonic()
        await session.send_message("where am i")
        events = await collect_turns(session, turns=2)
        waited = time.monotonic() - t0
        (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
        # It waited for a replacement and ran there; nothing said "no worker".
        assert _no_worker_errors(events) == []
        ran = json.loads(end.output)
        assert ran["pid"] not in pids
        print(
            f"router dropped the killed workers {noticed:.2f} s after the kill (at most); "
            f"the next call then took {waited:.2f} s (waiting for the replacement)"
        )
    await _pools_whole(router, "tool")
    assert not any(_alive(pid) for pid in pids)


async def test_a_guardrail_worker_killed_mid_round_is_replaced_before_the_next_round(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    agent = RealtimeAgent(name="Careful", output_guardrails=[slow_check])
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:
        await session.send_message("say I will answer slowly today.")
        killed, pids = await _kill_all_mid_call(router, session, "guardrail")
        events = await collect(
            session, lambda e: any("guardrail worker died" in m for m in _errors([e]))
        )
        assert not any(isinstance(e, RealtimeGuardrailTripped) for e in events)

        await _router_noticed(router, session.session_id, "guardrail", killed)
        await session.send_message("say My password is hunter2, and I will say it all day long.")
        events = await collect(session, lambda e: isinstance(e, RealtimeGuardrailTripped))
        tripped = events[-1]
        assert isinstance(tripped, RealtimeGuardrailTripped)
        (result,) = [r for r in tripped.guardrail_results if r.tripwire_triggered]
        assert result.output_info["pid"] not in pids
        assert _no_worker_errors(events) == []
    await _pools_whole(router, "guardrail")


async def test_a_worker_stuck_in_timed_out_sync_tools_is_retired_and_replaced(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    limit = int(
        (await asyncio.wait_for(router.status.remote(), 10 * UNIT))["config"][
            "worker_stuck_threads"
        ]
    )
    agent = RealtimeAgent(name="Stuck", tools=[stuck_sync, where_am_i])
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:
        placement = await placement_of(router, session.session_id)
        workers = await _workers(router, session.session_id, "tool")
        ((old_name, old),) = [(n, h) for n, node, h in workers if node == placement["node_id"]]
        old_pid = (await _stats(old))["pid"]
        for _ in range(limit):
            await session.send_message("stuck sync")
            events = await collect_turns(session, turns=2)
            (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
            assert "timed out" in end.output

        # Retired: replaced on the same node, its process (stuck threads and all) gone.
        async def replaced() -> bool:
            now = await _workers(router, session.session_id, "tool")
            return any(n != old_name and node == placement["node_id"] for n, node, _ in now) and (
                old_name not in {n for n, _, _ in now}
            )

        await wait_until(replaced, BOUND, "the stuck worker's replacement")
        await wait_until(lambda: _gone(old_pid), BOUND, "the stuck worker's process to end")

        # Later calls still succeed, on the replacement.
        await session.send_message("where am i")
        events = await collect_turns(session, turns=2)
        (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
        assert json.loads(end.output)["pid"] != old_pid
        assert _no_worker_errors(events) == []
    await _pools_whole(router, "tool")


async def _gone(pid: int) -> bool:
    return not _alive(pid)
