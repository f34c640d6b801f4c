"""The demo: several concurrent sessions showing what ray-realtime does.

With no ``OPENAI_API_KEY`` it runs entirely offline: an embedded local Ray,
the router and its pools, and the bundled local model server. Each session
plays one scenario — a text turn with audio, a tool call (on a worker actor;
in this process with ``--in-process``), a handoff, a guardrail trip, and a
spoken turn found by voice activity detection — and the demo ends with a
latency summary per round.

A scenario is ``[ok]`` only when its turn completed *and* showed what it is
there to show (audio, a reply, the tool's output, the handoff, the trip);
otherwise it prints what was missing. A scenario's turn is timed from the
first thing sent to the ``agent_end`` that closes the turn (for the tool, the
answer after the tool's output; for the handoff, the new agent's answer; for
the guardrail, the answer to the trip).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.agents.context import RunContextWrapper
from ray_realtime.agents.guardrails import GuardrailFunctionOutput, output_guardrail
from ray_realtime.agents.handoffs import realtime_handoff
from ray_realtime.agents.tools import function_tool
from ray_realtime.runner.runner import RealtimeRunner
from ray_realtime.runner.session import RealtimeSession
from ray_realtime.types.config import RealtimeRunConfig
from ray_realtime.types.events import (
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeAudio,
    RealtimeError,
    RealtimeGuardrailTripped,
    RealtimeHandoffEvent,
    RealtimeSessionEvent,
    RealtimeToolEnd,
    RealtimeToolStart,
)
from ray_realtime.types.items import AssistantMessageItem

__all__ = ["SCENARIO_NAMES", "DemoResult", "build_demo_agent", "run_demo"]

Printer = Callable[[str], None]
Action = Callable[[RealtimeSession], Awaitable[None]]

# The scenarios' names by execution mode, in the order they are printed.
SCENARIO_NAMES: dict[str, tuple[str, ...]] = {
    "actor": ("text turn", "tool on a worker", "handoff", "guardrail", "spoken turn (VAD)"),
    "in_process": ("text turn", "tool in process", "handoff", "guardrail", "spoken turn (VAD)"),
}


@function_tool
def get_weather(city: str) -> str:
    """Tell the weather in a city.

    Args:
        city: The city to look up.
    """
    where = _where_am_i()
    return f"It is sunny and 21 C in {city}. ({where})"


def _where_am_i() -> str:
    # Inside a tool worker actor the runtime context names an actor; in the
    # in-process mode the tool runs in a thread of the demo's own process.
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            ctx = ray.get_runtime_context()
            if ctx.get_actor_id() is not None:
                return f"ran on node {ctx.get_node_id()[:8]}, worker pid {os.getpid()}"
    except Exception:
        pass
    return f"ran in this process, pid {os.getpid()}, thread {threading.current_thread().name}"


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
    """What one scenario saw. ``ok``: the turn completed and showed what the
    scenario is for; ``turn_ms``: first send to the turn's last ``agent_end``."""

    name: str
    ok: bool
    start_ms: float
    turn_ms: float
    audio_chunks: int = 0
    reply: str = ""
    details: list[str] = field(default_factory=list)
    tool_outputs: list[str] = field(default_factory=list)
    handoffs: list[str] = field(default_factory=list)
    guardrail_trips: int = 0
    ends_after_trip: int = 0
    # A response started after the tool's end / the handoff: its agent_end,
    # not the one of the response that called the tool, closes the turn (a
    # quick tool can end before the response that called it does).
    started_after_mark: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Scenario:
    """One scenario: what to send; which ``agent_end`` closes the turn (it
    needs the tool's end / the handoff / the trip before it, per flags)."""

    name: str
    action: Action
    after_tool: bool = False
    after_handoff: bool = False
    after_trip: bool = False

    def turn_done(self, result: DemoResult, event: RealtimeSessionEvent) -> bool:
        # Judged on this session's own result: nothing carries over from
        # another session or round.
        if not isinstance(event, RealtimeAgentEndEvent):
            return False
        if self.after_tool and not (result.tool_outputs and result.started_after_mark):
            return False
        if self.after_handoff and not (result.handoffs and result.started_after_mark):
            return False
        # A trip comes before the agent_end of the response it stopped; the
        # answer to the guardrail's feedback ends with the next agent_end.
        return not (self.after_trip and result.ends_after_trip < 2)

    def missing(self, result: DemoResult) -> list[str]:
        """What the scenario should have shown and did not."""
        wanted = [
            (result.audio_chunks > 0, "audio"),
            (bool(result.reply), "a reply"),
            (not self.after_tool or bool(result.tool_outputs), "the tool's output"),
            (not self.after_handoff or bool(result.handoffs), "a handoff"),
            (not self.after_trip or result.guardrail_trips > 0, "a guardrail trip"),
            (not result.errors, "no error"),
        ]
        return [what for present, what in wanted if not present]


def _speech(duration_s: float, silence_s: float, rate: int = 24000) -> bytes:
    t = np.arange(int(duration_s * rate)) / rate
    voice = (0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    quiet = np.zeros(int(silence_s * rate), dtype="<i2")
    return np.concatenate([voice, quiet]).tobytes()


def _reply_text(session: RealtimeSession) -> str:
    """The transcript (or text) of the session's latest assistant message."""
    for item in reversed(session.history):
        if isinstance(item, AssistantMessageItem) and item.content:
            part = item.content[0]
            text = getattr(part, "transcript", None) or getattr(part, "text", None)
            if text:
                return str(text)
    return ""


def _record(result: DemoResult, event: RealtimeSessionEvent) -> None:
    if isinstance(event, RealtimeAudio):
        result.audio_chunks += 1
    elif isinstance(event, RealtimeAgentStartEvent):
        if result.tool_outputs or result.handoffs:
            result.started_after_mark = True
    elif isinstance(event, RealtimeAgentEndEvent):
        if result.guardrail_trips:
            result.ends_after_trip += 1
    elif isinstance(event, RealtimeToolStart):
        result.details.append(f"tool_start {event.tool.name}({event.arguments})")
    elif isinstance(event, RealtimeToolEnd):
        result.tool_outputs.append(event.output)
        result.details.append(f"tool_end   {event.tool.name} -> {event.output}")
    elif isinstance(event, RealtimeHandoffEvent):
        result.handoffs.append(event.to_agent.name)
        result.details.append(f"handoff    {event.from_agent.name} -> {event.to_agent.name}")
    elif isinstance(event, RealtimeGuardrailTripped):
        result.guardrail_trips += 1
        names = ", ".join(r.guardrail.name for r in event.guardrail_results)
        result.details.append(f"guardrail  {names} tripped on: {event.message[:60]!r}")
    elif isinstance(event, RealtimeError):
        message = str(event.error.get("message"))
        result.errors.append(message)
        result.details.append(f"error      {message}")


async def _play(runner: RealtimeRunner, scenario: _Scenario, timeout: float) -> DemoResult:
    t0 = time.perf_counter()
    session = await runner.run()
    async with session:
        result = DemoResult(scenario.name, False, (time.perf_counter() - t0) * 1000, 0.0)
        t1 = time.perf_counter()

        async def turn() -> None:
            await scenario.action(session)
            async for event in session:
                _record(result, event)
                if scenario.turn_done(result, event):
                    return

        completed = False
        try:
            await asyncio.wait_for(turn(), timeout)
            completed = True
        except TimeoutError:
            result.details.append(f"timed out after {timeout:g} s")
        except Exception as exc:
            # One scenario's failure is reported on its line; the others go on.
            result.details.append(f"failed     {type(exc).__name__}: {exc}")
        result.turn_ms = (time.perf_counter() - t1) * 1000
        result.reply = _reply_text(session)
    missing = scenario.missing(result)
    if missing:
        result.details.append("missing: " + ", ".join(missing))
    result.ok = completed and not missing
    return result


def _say(text: str) -> Action:
    async def act(session: RealtimeSession) -> None:
        await session.send_message(text)

    return act


async def _speak(session: RealtimeSession) -> None:
    # 0.6 s of a tone, then 0.9 s of silence: the model's voice activity
    # detection ends the user's turn in the silence.
    audio = _speech(0.6, 0.9)
    for i in range(0, len(audio), 1920):
        await session.send_audio(audio[i : i + 1920])


def _scenarios(execution: str) -> list[_Scenario]:
    text, tool, handoff, guardrail, spoken = SCENARIO_NAMES[execution]
    return [
        _Scenario(text, _say("Hello there, how are you today?")),
        _Scenario(tool, _say('What is the get weather for "Paris"?'), after_tool=True),
        _Scenario(handoff, _say("Please transfer to billing agent."), after_handoff=True),
        _Scenario(
            guardrail,
            _say("say My password is hunter2, and I will repeat it all day long for you."),
            after_trip=True,
        ),
        _Scenario(spoken, _speak),
    ]


def _first_round_note(execution: str, rounds: int) -> str:
    if rounds < 2:
        return ""
    if execution == "actor":
        return " (fresh actors: first imports and fetches)"
    return " (first sessions of this process: first imports and connections)"


async def run_demo(
    *, execution: str = "actor", rounds: int = 1, printer: Printer = print, timeout: float = 60.0
) -> list[DemoResult]:
    """Run the demo's scenarios concurrently, ``rounds`` times; print as it
    goes. ``execution`` is ``"actor"`` or ``"in_process"``; every round runs
    every scenario in new sessions."""
    if execution not in SCENARIO_NAMES:
        from ray_realtime.exceptions import ConfigError

        raise ConfigError(f"execution must be 'actor' or 'in_process', not {execution!r}")
    agent = build_demo_agent()
    config: RealtimeRunConfig = {"execution": "actor" if execution == "actor" else "in_process"}
    runner = RealtimeRunner(agent, config=config)
    if execution == "actor":
        from ray_realtime.cluster.service import ensure_service, service_status

        t0 = time.perf_counter()
        printer("starting the service (embedded Ray, router, worker pools, local model)...")
        # A warm session actor per scenario, so every session starts warm.
        await ensure_service({"warm_pool_size": len(SCENARIO_NAMES[execution])})
        status = await service_status()
        node_list = ", ".join(n["node_id"][:8] for n in status["nodes"])
        printer(f"service ready in {time.perf_counter() - t0:.1f} s on node(s) {node_list}")
        where = "sessions in session actors, tools on tool worker actors"
    else:
        where = f"sessions and tools in this process (pid {os.getpid()})"
    model = (
        "OpenAI Realtime" if os.environ.get("OPENAI_API_KEY") else "the bundled local model server"
    )
    printer(f"model: {model}; execution: {execution}: {where}")

    results: list[DemoResult] = []
    for round_no in range(1, rounds + 1):
        batch = await asyncio.gather(*(_play(runner, s, timeout) for s in _scenarios(execution)))
        results.extend(batch)
        for r in batch:
            mark = "ok " if r.ok else "FAIL"
            printer(
                f"[{mark}] round {round_no} {r.name:18s} start {r.start_ms:7.1f} ms  "
                f"turn {r.turn_ms:7.1f} ms  audio chunks {r.audio_chunks:3d}  "
                f"reply {r.reply[:60]!r}"
            )
            for line in r.details:
                printer(f"        {line}")
        starts = [r.start_ms for r in batch]
        turns = [r.turn_ms for r in batch if r.ok]
        note = _first_round_note(execution, rounds) if round_no == 1 else ""
        printer(
            f"summary round {round_no}{note}: {len(batch)} sessions, "
            f"{sum(r.ok for r in batch)} ok; session start p50 {statistics.median(starts):.1f} ms "
            f"(max {max(starts):.1f}); "
            + (
                f"turn (send -> reply done) p50 {statistics.median(turns):.1f} ms "
                f"(max {max(turns):.1f})"
                if turns
                else "no completed turns"
            )
        )
    return results
