"""`serve --metrics-export-port P --log-format json`, then a real session.

A driver process runs one session with a tool turn against the served
service; then this test scrapes ``http://127.0.0.1:P/metrics`` and finds the
service's metrics with the values that session must have produced, and reads
the Ray session's log files: the session actor's lines are JSON objects naming
the session and its agent, and no file holds the session's secret or ticket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ray_realtime.actors.handle import parse_ticket
from tests.cluster.test_serve import STARTUP, Served, _free_port
from tests.conftest import UNIT

pytestmark = pytest.mark.ray

_DRIVER = r"""
import asyncio, json

from ray_realtime import (
    GuardrailFunctionOutput, RealtimeAgent, RealtimeRunner, function_tool,
    output_guardrail,
)
from ray_realtime.local.server import LocalModelServer


@function_tool
def get_weather(city: str) -> str:
    '''Tell the weather in a city.'''
    return f"It is sunny in {city}."


agent = RealtimeAgent(name="Metered Agent", instructions="You help.", tools=[get_weather])


@output_guardrail(name="no_secrets")
def no_secrets(ctx, agent, text):
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in text)


guarded = RealtimeAgent(name="Guarded", instructions="You help.", output_guardrails=[no_secrets])


@function_tool(timeout_seconds=0.3)
async def slow_lookup(topic: str) -> str:
    '''Look a topic up, slowly.'''
    await asyncio.sleep(10)
    return "found"


slow = RealtimeAgent(name="Slow", instructions="You help.", tools=[slow_lookup])
reconnecting = RealtimeAgent(name="Reconnecting", instructions="You help.")


async def main() -> None:
    out = {"agent_ends": 0}
    async with asyncio.timeout(60):
        async with await RealtimeRunner(agent).run() as session:
            out["session_id"] = session.session_id
            out["ticket"] = session.ticket
            await session.send_message('What is the get weather for "Paris"?')
            tool_done = False
            async for event in session:
                if event.type == "tool_end":
                    tool_done = True
                if event.type == "agent_end":
                    out["agent_ends"] += 1
                    if tool_done:
                        break
            usage = session.usage  # kept from the usage events read above
            out["usage"] = {
                "requests": usage.requests,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "audio_out_seconds": usage.audio_out_seconds,
                "tool_calls": usage.tool_calls,
                "agent_tool_calls": usage.by_agent["Metered Agent"].tool_calls,
            }
        # A guardrail trip, then a placement no node can take.
        async with await RealtimeRunner(guarded).run() as session:
            await session.send_message("say the password is swordfish")
            async for event in session:
                if event.type == "guardrail_tripped":
                    out["tripped"] = True
                    break
        # A tool call that runs into its timeout.
        async with await RealtimeRunner(slow).run() as session:
            await session.send_message('please slow lookup "tides"')
            async for event in session:
                if event.type == "tool_end":
                    out["slow_output"] = str(event.output)
                if event.type == "agent_end" and "slow_output" in out:
                    break
        # A model connection cut by its model's session cap: one reconnect.
        async with LocalModelServer(max_session_seconds=1.5) as capped:
            runner = RealtimeRunner(reconnecting)
            async with await runner.run(model_config={"url": capped.url}) as session:
                async for event in session:
                    if event.type == "session_recovered":
                        out["recovered"] = event.reason
                        break
        nowhere = {"placement": {"resources": {"no_such_resource": 1}}}
        try:
            async with await RealtimeRunner(agent, config=nowhere).run():
                pass
        except Exception as exc:
            out["placement_error"] = type(exc).__name__
    print(json.dumps(out))


asyncio.run(main())
"""


class Scraped:
    """One scrape of a Prometheus text page."""

    def __init__(self, text: str) -> None:
        self.text = text

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` whose labels include ``labels``."""
        found = 0.0
        for line in self.text.splitlines():
            if not line.startswith(name + "{"):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                found += float(value)
        return found


@pytest.fixture(scope="module")
def served_ops() -> Iterator[tuple[Served, int]]:
    tmp = tempfile.mkdtemp(prefix="rro", dir="/tmp" if os.path.isdir("/tmp") else None)
    port = _free_port()
    service = Served(tmp, "--log-format", "json", "--metrics-export-port", str(port))
    try:
        assert service.ready.wait(STARTUP), "serve printed nothing in time"
        assert service.proc.poll() is None, service.text()
        yield service, port
    finally:
        service.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _scrape(port: int) -> Scraped:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        return Scraped(page.read().decode("utf-8", "replace"))


def test_metrics_and_json_logs_after_a_real_session(
    served_ops: tuple[Served, int], tmp_path: Path
) -> None:
    served, port = served_ops
    assert f"metrics: http://127.0.0.1:{port}/metrics" in served.text()
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    proc = served.run(str(driver), env={**served.env, "RAY_ADDRESS": served.address})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # A tool turn is two model responses: the tool call, then the answer.
    assert out["agent_ends"] == 2

    agent = 'agent="Metered Agent"'
    deadline = time.monotonic() + 60 * UNIT  # Ray exports every ~10 s
    while True:
        page = _scrape(port)
        turns = page.total("ray_realtime_turn_seconds_count", agent="Metered Agent")
        tools = page.total("ray_realtime_tool_calls_total", tool="get_weather", outcome="ok")
        active = page.total("ray_realtime_active_sessions")
        inputs = page.total("ray_realtime_input_tokens_total", agent="Metered Agent")
        starts = page.total("ray_realtime_session_starts_total")  # the router's, exported apart
        failures = page.total("ray_realtime_placement_failures_total")
        trips = page.total("ray_realtime_guardrail_trips_total", agent="Guarded")
        timeouts = page.total("ray_realtime_tool_calls_total", tool="slow_lookup")
        recoveries = page.total("ray_realtime_session_recoveries_total", agent="Reconnecting")
        reconnects = page.total("ray_realtime_model_reconnects_total", agent="Reconnecting")
        done = (turns, tools, active, starts, failures, trips, timeouts) == (
            (2.0, 1.0, 0.0, 4.0, 1.0, 1.0, 1.0)
        )
        if done and inputs > 0 and recoveries >= 1 and reconnects >= 1:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert turns == 2.0, [line for line in page.text.splitlines() if "turn_seconds" in line]
    assert tools == 1.0
    assert page.total("ray_realtime_tool_seconds_count", tool="get_weather") == 1.0
    assert active == 0.0  # the session closed
    assert starts == 4.0  # the metered, slow, reconnecting and guarded sessions
    assert page.total("ray_realtime_session_start_seconds_count") == 4.0
    assert page.total("ray_realtime_session_connect_seconds_count") >= 1.0
    assert page.total("ray_realtime_model_errors_total", agent="Metered Agent") == 0.0
    assert page.total("ray_realtime_warm_actors") >= 1.0
    # Usage: the handle's session.usage (from the usage events) and the
    # counters agree; two responses, one tool call.
    usage = out["usage"]
    assert usage["requests"] == 2 and usage["tool_calls"] == usage["agent_tool_calls"] == 1
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert inputs == usage["input_tokens"]
    outputs = page.total("ray_realtime_output_tokens_total", agent="Metered Agent")
    assert outputs == usage["output_tokens"]
    out_seconds = page.total(
        "ray_realtime_audio_seconds_total", direction="out", agent="Metered Agent"
    )
    assert out_seconds == pytest.approx(usage["audio_out_seconds"], abs=1e-6)
    assert out_seconds > 0
    # The other metrics of the run: a trip, a failed placement, the handles'
    # data-plane sockets, no events lost.
    assert out["tripped"] and trips == 1.0
    assert out["placement_error"] == "NoCapacityError"
    assert failures == page.total("ray_realtime_placement_failures_total", reason="NoCapacityError")
    assert page.total("ray_realtime_data_plane_connections_total", outcome="accepted") >= 2.0
    assert page.total("ray_realtime_data_plane_connections_total", outcome="refused") == 0.0
    assert page.total("ray_realtime_events_lost_total") == 0.0
    # A tool timeout is an outcome of its own, not an error.
    assert "timed out" in out["slow_output"]
    assert timeouts == 1.0
    assert page.total("ray_realtime_tool_calls_total", tool="slow_lookup", outcome="timeout") == 1.0
    assert page.total("ray_realtime_tool_calls_total", outcome="error") == 0.0
    # The capped model connection: recovered by a reconnect, counted by reason.
    assert out["recovered"] == "model_reconnect"
    assert recoveries >= 1.0
    assert recoveries == page.total(
        "ray_realtime_session_recoveries_total", agent="Reconnecting", reason="model_reconnect"
    )
    assert reconnects == page.total(
        "ray_realtime_model_reconnects_total", agent="Reconnecting", outcome="ok"
    )
    assert reconnects == recoveries  # no reconnect gave up
    assert page.total("ray_realtime_session_recoveries_total", agent="Metered Agent") == 0.0
    # Low-cardinality labels: never a session id.
    assert out["session_id"] not in page.text
    assert agent in page.text

    logs = Path(served.tmp) / "ray" / "session_latest" / "logs"
    files = [p for p in logs.rglob("*") if p.is_file()]
    docs = []
    for path in files:
        text = path.read_text("utf-8", "replace")
        for secret in (out["ticket"], parse_ticket(out["ticket"])[1]):
            assert secret not in text, path.name
        for line in text.splitlines():
            if line.startswith("{") and out["session_id"] in line:
                docs.append(json.loads(line))
    assert docs, "no JSON log line names the session"
    assert all(d["session_id"] == out["session_id"] for d in docs), docs
    assert any(
        d["agent"] == "Metered Agent" and re.match(r"connected to the realtime model", d["message"])
        for d in docs
    ), docs
