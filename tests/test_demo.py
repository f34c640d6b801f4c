"""The demo's scenarios run (in-process here; the actor path of the same
scenarios is what tests/actors covers), so the README's first command stays true."""

from __future__ import annotations

from ray_realtime.demo import run_demo


async def test_demo_scenarios_all_succeed_in_process() -> None:
    lines: list[str] = []
    results = await run_demo(execution="in_process", rounds=1, printer=lines.append, timeout=30)
    assert [r.name for r in results] == [
        "text turn",
        "tool on a worker",
        "handoff",
        "guardrail",
        "spoken turn (VAD)",
    ]
    failed = [(r.name, r.details) for r in results if not r.ok]
    assert not failed, failed
    by_name = {r.name: r for r in results}
    assert by_name["text turn"].audio_chunks > 0
    assert any("tool_end   get_weather" in d for d in by_name["tool on a worker"].details)
    assert any("handoff    Assistant -> Billing Agent" in d for d in by_name["handoff"].details)
    assert any("no_secrets tripped" in d for d in by_name["guardrail"].details)
    assert by_name["spoken turn (VAD)"].reply.startswith("I heard ")
    assert any(line.startswith("summary round 1") for line in lines)
