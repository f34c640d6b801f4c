"""The README's first command and its example stay true.

``ray-realtime demo`` is checked round by round on what it prints: every
scenario of every round must show real content (a reply, audio, the tool's
line, the handoff, the guardrail trip), never just an ``[ok]``. The console
script runs as a user runs it, in a child process with none of the test
suite's Ray environment. The README's example is ``examples/quickstart.py``
verbatim, and running it prints the answer that uses the tool's output.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ray_realtime.demo import SCENARIO_NAMES, run_demo
from tests.conftest import UNIT, RayTestCluster

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"
# What the README says the example prints with the bundled local model.
QUICKSTART_OUTPUT = [
    'tool call: get_weather({"city":"Paris"})',
    "tool result: It is sunny in Paris.",
    "assistant: The tool get_weather returned: It is sunny in Paris.",
]

_HEADER = re.compile(
    r"^\[(?P<mark>ok |FAIL)\] round (?P<round>\d+) (?P<name>.+?)\s+"
    r"start\s+(?P<start>[\d.]+) ms\s+turn\s+(?P<turn>[\d.]+) ms\s+"
    r"audio chunks\s+(?P<audio>\d+)\s+reply (?P<reply>.*)$"
)
_DETAIL_INDENT = " " * 8


@dataclass
class Shown:
    """One scenario block as the demo printed it."""

    ok: bool
    turn_ms: float
    audio_chunks: int
    reply: str
    details: list[str] = field(default_factory=list)


def parse_demo_output(lines: list[str]) -> dict[tuple[int, str], list[Shown]]:
    """Scenario blocks by (round, name); lines that are not the demo's
    (Ray's log lines, say) are ignored."""
    blocks: dict[tuple[int, str], list[Shown]] = {}
    current: Shown | None = None
    for line in lines:
        m = _HEADER.match(line)
        if m:
            current = Shown(
                ok=m["mark"] == "ok ",
                turn_ms=float(m["turn"]),
                audio_chunks=int(m["audio"]),
                reply=ast.literal_eval(m["reply"]),
            )
            blocks.setdefault((int(m["round"]), m["name"].strip()), []).append(current)
        elif line.startswith(_DETAIL_INDENT) and current is not None:
            current.details.append(line.strip())
    return blocks


def check_demo_output(lines: list[str], *, rounds: int, execution: str, pid: int) -> None:
    """Every round shows every scenario once, ok, with its real content.
    ``pid`` is the demo's process: the tool must run elsewhere in actor mode
    and in it in-process."""
    blocks = parse_demo_output(lines)
    names = SCENARIO_NAMES[execution]
    assert sorted(blocks) == sorted((r, n) for r in range(1, rounds + 1) for n in names), lines
    for round_no in range(1, rounds + 1):
        where = f"round {round_no}"
        shown = {}
        for name in names:
            [block] = blocks[(round_no, name)]
            assert block.ok, (where, name, block)
            assert block.audio_chunks > 0, (where, name, block)
            assert block.reply, (where, name, block)
            assert block.turn_ms > 0, (where, name, block)
            shown[name] = block
        text, tool, handoff, guardrail, spoken = (shown[n] for n in names)

        assert text.reply == "You said: Hello there, how are you today?", where
        assert text.details == [], where

        assert tool.details[0] == 'tool_start get_weather({"city":"Paris"})', (where, tool)
        tool_end = tool.details[1]
        assert tool_end.startswith("tool_end   get_weather -> It is sunny and 21 C in Paris."), (
            where,
            tool,
        )
        # The answer that closes the turn uses the tool's output.
        assert tool.reply.startswith("The tool get_weather returned: It is sunny and 21 C"), where
        if execution == "actor":
            m = re.search(r"\(ran on node [0-9a-f]{8}, worker pid (\d+)\)$", tool_end)
            assert m and int(m[1]) != pid, (where, tool_end)
        else:
            assert f"(ran in this process, pid {pid}, thread " in tool_end, (where, tool_end)

        assert handoff.details == ["handoff    Assistant -> Billing Agent"], (where, handoff)

        assert len(guardrail.details) == 1, (where, guardrail)
        assert guardrail.details[0].startswith(
            "guardrail  no_secrets tripped on: 'My password is hunter2"
        ), where
        # The turn closes on the model's answer to the trip.
        assert guardrail.reply.startswith("You said: guardrail triggered: no_secrets"), (
            where,
            guardrail,
        )

        assert spoken.reply.startswith("I heard "), (where, spoken)

        summary = [line for line in lines if line.startswith(f"summary round {round_no}")]
        assert len(summary) == 1 and f"{len(names)} sessions, {len(names)} ok" in summary[0], (
            summary
        )
        assert "turn (send -> reply done) p50" in summary[0], summary


async def test_demo_every_round_shows_real_content_in_process() -> None:
    lines: list[str] = []
    results = await run_demo(
        execution="in_process", rounds=2, printer=lines.append, timeout=30 * UNIT
    )
    assert [r.name for r in results] == list(SCENARIO_NAMES["in_process"]) * 2
    assert all(r.ok for r in results), [(r.name, r.details) for r in results if not r.ok]
    check_demo_output(lines, rounds=2, execution="in_process", pid=os.getpid())
    header = "\n".join(lines[:2])
    # Nothing in the in-process demo claims workers or actors.
    assert "sessions and tools in this process" in header
    joined = "\n".join(lines)
    assert "worker" not in joined and "actor" not in joined


async def test_demo_marks_a_scenario_that_shows_nothing_as_failed() -> None:
    # No time at all for the turn: every scenario is FAIL and says what it
    # did not show, and the summary counts no turn.
    lines: list[str] = []
    results = await run_demo(execution="in_process", rounds=1, printer=lines.append, timeout=0)
    assert results and not any(r.ok for r in results)
    blocks = parse_demo_output(lines)
    for name in SCENARIO_NAMES["in_process"]:
        [block] = blocks[(1, name)]
        assert not block.ok
        assert "timed out after 0 s" in block.details
        assert any(d.startswith("missing: audio, a reply") for d in block.details), block
    [summary] = [line for line in lines if line.startswith("summary round 1")]
    assert "5 sessions, 0 ok" in summary and "no completed turns" in summary


def test_demo_output_check_catches_an_empty_round() -> None:
    """The checker itself fails on the defect it guards against: a round-2
    scenario marked ok with no audio and no reply."""
    good = [
        "[ok ] round 1 text turn          start    55.1 ms  turn     7.0 ms  "
        "audio chunks  13  reply 'You said: Hello there, how are you today?'",
    ]
    empty = [
        "[ok ] round 2 text turn          start    34.3 ms  turn     4.3 ms  "
        "audio chunks   0  reply ''",
    ]
    blocks = parse_demo_output(good + empty)
    assert blocks[(1, "text turn")][0].audio_chunks == 13
    assert blocks[(2, "text turn")][0].reply == ""
    with pytest.raises(AssertionError):
        check_demo_output(good + empty, rounds=2, execution="actor", pid=os.getpid())


def _demo_child_env(ray_tmp: str) -> dict[str, str]:
    env = dict(os.environ)
    # What a user's shell has: none of the suite's Ray settings, no key.
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "OPENAI_API_KEY"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # Ray's session folder goes in a temporary folder removed afterwards.
    env["RAY_TMPDIR"] = ray_tmp
    return env


@pytest.mark.ray
def test_console_demo_without_test_environment() -> None:
    script = Path(sys.executable).with_name("ray-realtime")
    assert script.exists(), f"no console script at {script}"
    ray_tmp = tempfile.mkdtemp(prefix="rrdemo-")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(script), "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=_demo_child_env(ray_tmp),
        start_new_session=True,
    )
    try:
        try:
            out, err = proc.communicate(timeout=120 * UNIT)
        except subprocess.TimeoutExpired:
            # The demo and the Ray it started are this process group.
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"demo did not end in {120 * UNIT:g} s:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    lines = out.splitlines()
    check_demo_output(lines, rounds=2, execution="actor", pid=proc.pid)
    assert any(line.startswith("service ready in ") for line in lines), out
    assert "execution: actor: sessions in session actors" in out
    print(f"ray-realtime demo took {elapsed:.1f} s")


def test_readme_example_is_examples_quickstart() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = QUICKSTART.read_text(encoding="utf-8")
    assert f"```python\n{code}```\n" in readme, "README's example is not examples/quickstart.py"
    printed = "\n".join(QUICKSTART_OUTPUT)
    assert f"```\n{printed}\n```\n" in readme, "README's example output is not the tested one"


@pytest.mark.ray
def test_readme_example_prints_the_answer_that_uses_the_tool(
    ray_cluster: RayTestCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run as a script (``__main__``) in this process, which holds the shared
    # cluster: the example's sessions run in its actors. A thread bounds it.
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runpy.run_path(str(QUICKSTART), run_name="__main__")
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60 * UNIT)
    assert not thread.is_alive(), "the README example did not end"
    assert not failures, failures
    out = capsys.readouterr().out.splitlines()
    assert out == QUICKSTART_OUTPUT
