"""Usage accounting: the pure meter, the GA conversion of ``response.done``'s
usage, and the session core summing a session's usage per agent."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.core.session_core import SessionCore
from ray_realtime.core.usage import (
    MAX_AGENTS_KEPT,
    OTHER_AGENTS,
    UsageMeter,
    audio_seconds,
    response_totals,
    usage_delta,
)
from ray_realtime.model.conversion import server_event_to_model_events, usage_event
from ray_realtime.types import model_events as me
from ray_realtime.types.events import RealtimeUsageUpdated, SessionUsage, UsageTotals
from ray_realtime.wire import decode, encode
from tests.core.test_session_core import agent, call, emitted, feed, handoff, only, tool

GA_USAGE: dict[str, Any] = {
    "total_tokens": 60,
    "input_tokens": 40,
    "output_tokens": 20,
    "input_token_details": {
        "text_tokens": 10,
        "audio_tokens": 28,
        "image_tokens": 2,
        "cached_tokens": 8,
        "cached_tokens_details": {"text_tokens": 3, "audio_tokens": 5, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 4, "audio_tokens": 16},
}


def done(usage: Any = GA_USAGE, rid: str = "r1") -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "status": "completed", "usage": usage}}


# ------------------------------------------------------------ conversion


def test_response_done_reports_usage_before_the_turn_ends() -> None:
    events = server_event_to_model_events(done())
    assert [e.type for e in events] == ["usage", "turn_ended"]
    usage = events[0]
    assert isinstance(usage, me.RealtimeModelUsageEvent)
    assert usage.usage == {
        "requests": 1,
        "input_tokens": 40,
        "output_tokens": 20,
        "total_tokens": 60,
    }
    assert usage.input_tokens_details is not None and usage.output_tokens_details is not None
    assert usage.input_tokens_details.audio_tokens == 28
    assert usage.input_tokens_details.cached_tokens_details == me.RealtimeModelCachedTokensDetails(
        3, 5, 0
    )
    assert usage.output_tokens_details.audio_tokens == 16


def test_response_done_without_usage_is_only_the_turn_end() -> None:
    assert [e.type for e in server_event_to_model_events(done(None))] == ["turn_ended"]
    del_usage = {"type": "response.done", "response": {"id": "r"}}
    assert [e.type for e in server_event_to_model_events(del_usage)] == ["turn_ended"]


def test_usage_conversion_is_lenient_about_bad_counts() -> None:
    event = usage_event({"input_tokens": "many", "output_tokens": True, "input_token_details": 3})
    assert event.usage == {"requests": 1, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    assert event.input_tokens_details is None
    assert response_totals(event) == UsageTotals(requests=1)


# ------------------------------------------------------------ the meter


def test_response_totals_flatten_every_detail() -> None:
    totals = response_totals(usage_event(GA_USAGE))
    assert totals == UsageTotals(
        requests=1,
        input_tokens=40,
        output_tokens=20,
        total_tokens=60,
        input_text_tokens=10,
        input_audio_tokens=28,
        input_image_tokens=2,
        cached_tokens=8,
        cached_text_tokens=3,
        cached_audio_tokens=5,
        output_text_tokens=4,
        output_audio_tokens=16,
    )


def test_audio_seconds_follow_the_format() -> None:
    assert audio_seconds(48_000, "pcm16") == 1.0
    assert audio_seconds(8_000, "g711_ulaw") == 1.0
    assert audio_seconds(4_000, "g711_alaw") == 0.5


def test_meter_sums_in_total_and_per_agent() -> None:
    meter = UsageMeter("pcm16", "g711_ulaw")
    meter.add_response("A", usage_event(GA_USAGE))
    meter.add_response("B", usage_event(GA_USAGE))
    meter.add_audio_in("A", 96_000)
    meter.add_audio_out("B", 4_000)
    meter.add_tool_call("B")
    usage = meter.snapshot()
    assert (usage.requests, usage.input_tokens, usage.output_audio_tokens) == (2, 80, 32)
    assert (usage.audio_in_seconds, usage.audio_out_seconds, usage.tool_calls) == (2.0, 0.5, 1)
    assert usage.by_agent["A"].input_tokens == 40 and usage.by_agent["A"].audio_in_seconds == 2.0
    assert usage.by_agent["B"].tool_calls == 1 and usage.by_agent["B"].audio_out_seconds == 0.5
    # Snapshots are values: later counting does not change an earlier one.
    meter.add_tool_call("B")
    assert usage.tool_calls == 1 and meter.snapshot().tool_calls == 2


def test_meter_keeps_a_bounded_agent_table() -> None:
    meter = UsageMeter()
    for i in range(MAX_AGENTS_KEPT + 10):
        meter.add_tool_call(f"agent{i}")
    usage = meter.snapshot()
    assert len(usage.by_agent) == MAX_AGENTS_KEPT + 1
    assert usage.by_agent[OTHER_AGENTS].tool_calls == 10
    assert usage.tool_calls == MAX_AGENTS_KEPT + 10


def test_usage_delta_is_the_growth_per_agent() -> None:
    meter = UsageMeter()
    meter.add_response("A", usage_event(GA_USAGE))
    first = meter.snapshot()
    assert usage_delta(None, first) == {"A": first.by_agent["A"]}
    meter.add_response("B", usage_event(GA_USAGE))
    meter.add_audio_out("A", 48_000)
    grown = usage_delta(first, meter.snapshot())
    assert set(grown) == {"A", "B"}
    assert grown["A"] == UsageTotals(audio_out_seconds=1.0)
    assert grown["B"].output_tokens == 20
    assert usage_delta(meter.snapshot(), meter.snapshot()) == {}


# ------------------------------------------------------------ in the core


def test_core_sums_usage_per_agent_and_emits_usage_events() -> None:
    beta = agent("Beta", tools=(tool("lookup"),))
    core = SessionCore(
        agent(tools=(tool("lookup"),), handoffs=(handoff("Beta"),)),
        initial_model_settings={"output_audio_format": "g711_ulaw"},
    )
    core.send_audio(b"\0\0" * 24_000)  # one second of PCM16
    core.drain()
    audio = me.RealtimeModelAudioEvent(b"\x7f" * 8_000, "r1", "a1", 0)
    outs = feed(core, audio, usage_event(GA_USAGE))
    event = only(emitted(outs, RealtimeUsageUpdated))
    assert event.usage == core.usage
    assert (event.usage.audio_in_seconds, event.usage.audio_out_seconds) == (1.0, 1.0)
    assert event.usage.by_agent["Alpha"].input_tokens == 40
    feed(core, call("lookup", "c1"))
    feed(core, call("transfer_to_beta", "h1"))
    core.handoff_completed("h1", beta)
    core.drain()
    feed(core, call("lookup", "c2"))
    outs = feed(core, usage_event(GA_USAGE))
    usage = only(emitted(outs, RealtimeUsageUpdated)).usage
    assert (usage.requests, usage.input_tokens, usage.tool_calls) == (2, 80, 2)
    assert usage.by_agent["Alpha"].tool_calls == 1  # the handoff is not a tool call
    assert usage.by_agent["Beta"].input_tokens == 40 and usage.by_agent["Beta"].tool_calls == 1


def test_core_usage_before_any_response_is_empty() -> None:
    assert SessionCore(agent()).usage == SessionUsage()


@pytest.mark.parametrize(
    "usage", [SessionUsage(), SessionUsage(input_tokens=3, by_agent={"A": UsageTotals(1, 2)})]
)
def test_usage_event_crosses_the_wire(usage: SessionUsage) -> None:
    event = RealtimeUsageUpdated(usage)
    assert decode(encode(event)) == event
