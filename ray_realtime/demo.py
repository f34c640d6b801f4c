"""The demo: several concurrent sessions showing what ray-realtime does.

With no ``OPENAI_API_KEY`` it runs entirely offline: an embedded local Ray,
the router and its pools, and the bundled local model server. Each session
plays one scenario — a text turn with audio, a tool that runs on a worker
actor, a handoff, a guardrail trip, and a spoken turn found by voice activity
detection — and the demo ends with a latency summary.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ray_realtime.runner.agent import RealtimeAgent
from ray_realtime.runner.config import RealtimeRunConfig
from ray_realtime.runner.context import RunContextWrapper
from ray_realtime.runner.events import (
    RealtimeAgentEndEvent,
    RealtimeAudio,
    RealtimeError,
    RealtimeGuardrailTripped,
    RealtimeHandoffEvent,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeSessionEvent,
    RealtimeToolEnd,
    RealtimeToolStart,
)
from ray_realtime.runner.guardrails import GuardrailFunctionOutput, output_guardrail
from ray_realtime.runner.handoffs import realtime_handoff
from ray_realtime.runner.items import AssistantMessageItem
from ray_realtime.runner.runner import RealtimeRunner
from ray_realtime.runner.session import RealtimeSession
from ray_realtime.runner.tools import function_tool

__all__ = ["DemoResult", "build_demo_agent", "run_demo"]

Printer = Callable[[str], None]


@function_tool
def get_weather(city: str) -> str:
    """Tell the weather in a city.

    Args:
        city: The city to look up.
    """
    where = _where_am_i()
    return f"It is sunny and 21 C in {city}. ({where})"


def _where_am_i() -> str:
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            ctx = ray.get_runtime_context()
            return f"ran on node {ctx.get_node_id()[:8]}, worker pid {os.getpid()}"
    except Exception:
        pass
    return f"ran in process {os.getpid()}"


@output_guardrail(name="no_secrets")
def no_secrets(ctx: RunContextWrapper[Any], agent: Any, text: str) -> GuardrailFunctionOutput:
    """Trips when the agent is about to speak a password."""
    found = "password" in text.lower()
    return GuardrailFunctionOutput(output_info={"found_password": found}, tripwire_triggered=found)


def build_demo_agent() -> RealtimeAgent[Any]:
    """The demo's agents: an assistant with a weather tool, a guardrail and a
    handoff to a billing agent."""
    billing: RealtimeAgent[Any] = RealtimeAgent(
        name="Billing Agent",
        instructions="You handle billing questions.",
        handoff_description="Questions about invoices and payments.",
    )
    return RealtimeAgent(
        name="Assistant",
        instructions="You are a helpful voice assistant.",
        tools=[get_weather],
        handoffs=[realtime_handoff(billing)],
        output_guardrails=[no_secrets],
    )


@dataclass
class DemoResult:
    """What one scenario saw."""

    name: str
    ok: bool
    start_ms: float
    turn_ms: float
    audio_chunks: int = 0
    reply: str = ""
    details: list[str] = field(default_factory=list)


def _speech(duration_s: float, silence_s: float, rate: int = 24000) -> bytes:
    t = np.arange(int(duration_s * rate)) / rate
    voice = (0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    quiet = np.zeros(int(silence_s * rate), dtype="<i2")
    return np.concatenate([voice, quiet]).tobytes()


async def _collect_turn(
    session: RealtimeSession,
    until: Callable[[RealtimeSessionEvent], bool],
    result: DemoResult,
    timeout: float,
) -> None:
    async def run() -> None:
        async for event in session:
            if isinstance(event, RealtimeAudio):
                result.audio_chunks += 1
            elif isinstance(event, RealtimeToolStart):
                result.details.append(f"tool_start {event.tool.name}({event.arguments})")
            elif isinstance(event, RealtimeToolEnd):
                result.details.append(f"tool_end   {event.tool.name} -> {event.output}")
            elif isinstance(event, RealtimeHandoffEvent):
                result.details.append(
                    f"handoff    {event.from_agent.name} -> {event.to_agent.name}"
                )
            elif isinstance(event, RealtimeGuardrailTripped):
                names = ", ".join(r.guardrail.name for r in event.guardrail_results)
                result.details.append(f"guardrail  {names} tripped on: {event.message[:60]!r}")
            elif isinstance(event, RealtimeError):
                result.details.append(f"error      {event.error.get('message')}")
            elif isinstance(event, (RealtimeHistoryUpdated, RealtimeHistoryAdded)):
                items = event.history if isinstance(event, RealtimeHistoryUpdated) else [event.item]
                for item in items:
                    if isinstance(item, AssistantMessageItem) and item.content:
                        part = item.content[0]
                        text = getattr(part, "transcript", None) or getattr(part, "text", None)
                        if text:
                            result.reply = text
            if until(event):
                return

    await asyncio.wait_for(run(), timeout)


async def _scenario(
    runner: RealtimeRunner,
    name: str,
    action: Callable[[RealtimeSession], Awaitable[None]],
    until: Callable[[RealtimeSessionEvent], bool],
    timeout: float,
) -> DemoResult:
    t0 = time.perf_counter()
    session = await runner.run()
    async with session:
        started = time.perf_counter()
        result = DemoResult(name, False, (started - t0) * 1000, 0.0)
        t1 = time.perf_counter()
        await action(session)
        try:
            await _collect_turn(session, until, result, timeout)
            result.ok = True
        except TimeoutError:
            result.details.append(f"timed out after {timeout:g} s")
        result.turn_ms = (time.perf_counter() - t1) * 1000
    return result


def _ends_after(count: int) -> Callable[[RealtimeSessionEvent], bool]:
    seen = [0]

    def until(event: RealtimeSessionEvent) -> bool:
        if isinstance(event, RealtimeAgentEndEvent):
            seen[0] += 1
        return seen[0] >= count

    return until


async def run_demo(
    *, execution: str = "actor", rounds: int = 1, printer: Printer = print, timeout: float = 60.0
) -> list[DemoResult]:
    """Run the demo's scenarios concurrently, ``rounds`` times; print as it goes."""
    agent = build_demo_agent()
    config: RealtimeRunConfig = {"execution": "actor" if execution == "actor" else "in_process"}
    runner = RealtimeRunner(agent, config=config)
    if execution == "actor":
        from ray_realtime.cluster.service import ensure_service, service_status

        t0 = time.perf_counter()
        printer("starting the service (embedded Ray, router, worker pools, local model)...")
        # A warm session actor per scenario, so every session starts warm.
        await ensure_service({"warm_pool_size": 5})
        status = await service_status()
        node_list = ", ".join(n["node_id"][:8] for n in status["nodes"])
        printer(f"service ready in {time.perf_counter() - t0:.1f} s on node(s) {node_list}")
    model = (
        "OpenAI Realtime" if os.environ.get("OPENAI_API_KEY") else "the bundled local model server"
    )
    printer(f"model: {model}; execution: {execution}")

    async def say(text: str) -> Callable[[RealtimeSession], Awaitable[None]]:
        async def act(session: RealtimeSession) -> None:
            await session.send_message(text)

        return act

    async def speak(session: RealtimeSession) -> None:
        audio = _speech(0.6, 0.9)
        for i in range(0, len(audio), 1920):
            await session.send_audio(audio[i : i + 1920])

    scenarios = [
        ("text turn", await say("Hello there, how are you today?"), _ends_after(1)),
        ("tool on a worker", await say('What is the get weather for "Paris"?'), _ends_after(2)),
        ("handoff", await say("Please transfer to billing agent."), _ends_after(2)),
        (
            "guardrail",
            await say("say My password is hunter2, and I will repeat it all day long for you."),
            lambda e: isinstance(e, RealtimeGuardrailTripped),
        ),
        ("spoken turn (VAD)", speak, _ends_after(1)),
    ]
    results: list[DemoResult] = []
    for round_no in range(rounds):
        batch = await asyncio.gather(
            *(_scenario(runner, n, a, u, timeout) for n, a, u in scenarios)
        )
        results.extend(batch)
        for r in batch:
            mark = "ok " if r.ok else "FAIL"
            printer(
                f"[{mark}] round {round_no + 1} {r.name:18s} start {r.start_ms:7.1f} ms  "
                f"turn {r.turn_ms:7.1f} ms  audio chunks {r.audio_chunks:3d}  "
                f"reply {r.reply[:50]!r}"
            )
            for line in r.details:
                printer(f"        {line}")
    per_round = len(scenarios)
    for round_no in range(rounds):
        batch = results[round_no * per_round : (round_no + 1) * per_round]
        starts = [r.start_ms for r in batch]
        turns = [r.turn_ms for r in batch if r.ok]
        note = " (fresh actors: first imports and fetches)" if round_no == 0 and rounds > 1 else ""
        printer(
            f"summary round {round_no + 1}{note}: {len(batch)} sessions, "
            f"{sum(r.ok for r in batch)} ok; session start p50 {statistics.median(starts):.1f} ms "
            f"(max {max(starts):.1f}); "
            + (
                f"turn p50 {statistics.median(turns):.1f} ms (max {max(turns):.1f})"
                if turns
                else "no turns"
            )
        )
    return results
