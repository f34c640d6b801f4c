"""The examples in ``examples/`` each run a scripted turn against the bundled
local model, and the test reads what they print (or what the caller hears):
the terminal agent as a user runs it (a child process with none of the test
suite's environment), the airline agent's whole scripted conversation, the
Twilio agent module loaded the way the gateway loads it and answering a
simulated call. And an agent module written for the OpenAI Agents SDK, as its
documentation shows, runs here with only its imports changed."""

from __future__ import annotations

import asyncio
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
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import UNIT, RayTestCluster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SDK_MODULE = ROOT / "tests" / "data" / "sdk_realtime_agent.py"


def _user_env(ray_tmp: str) -> dict[str, str]:
    """A user's shell: none of the suite's Ray settings, no key."""
    env = dict(os.environ)
    for name in (
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_ADDRESS",
        "OPENAI_API_KEY",
        "RAY_REALTIME_EXECUTION",
    ):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["RAY_TMPDIR"] = ray_tmp
    return env


def _run_example(args: list[str], timeout: float, stdin: str | None = None) -> list[str]:
    """Run ``python examples/...`` as a user does; its stdout lines."""
    ray_tmp = tempfile.mkdtemp(prefix="rrex-")
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=_user_env(ray_tmp),
        start_new_session=True,
    )
    try:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            # The example and any Ray it started are this process group.
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{args} did not end in {timeout:g} s:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    return out.splitlines()


def _conversation(lines: list[str]) -> list[str]:
    """The example's own lines (Ray may print its own on the same stdout)."""
    prefixes = ("you", "assistant:", "tool ", "handoff:", "guardrail", "error:")
    return [line for line in lines if line.startswith(prefixes)]


def _in_thread(target: Callable[[], Any], timeout: float) -> None:
    """Run ``target`` (which starts its own event loop) in a thread, bounded."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not end in {timeout:g} s"
    assert not failures, failures


# -- the terminal agent ---------------------------------------------------------------


@pytest.mark.ray
def test_terminal_agent_answers_a_text_turn_in_a_session_actor() -> None:
    # The default execution: a private Ray and the session in an actor.
    lines = _run_example(
        ["examples/terminal_agent.py", "--text", "Please get weather in Paris."],
        timeout=180 * UNIT,
    )
    assert _conversation(lines) == [
        "you: Please get weather in Paris.",
        'tool call: get_weather({"city":"Paris"})',
        "tool result: It is sunny in Paris.",
        "assistant: The tool get_weather returned: It is sunny in Paris.",
    ], lines


def _write_tone_wav(path: Path, *, rate: int, channels: int, seconds: float) -> None:
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    frames = np.repeat(tone, channels)  # interleaved, every channel the same
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames.tobytes())


def test_terminal_agent_hears_a_wav_file(tmp_path: Path) -> None:
    # A 0.6 s tone burst at 16 kHz stereo: averaged to mono and resampled to
    # 24 kHz; the local model's voice activity detection ends the turn in the
    # silence the example sends after it.
    wav_path = tmp_path / "tone.wav"
    _write_tone_wav(wav_path, rate=16_000, channels=2, seconds=0.6)
    lines = _conversation(
        _run_example(
            ["examples/terminal_agent.py", "--in-process", "--wav", str(wav_path)],
            timeout=60 * UNIT,
        )
    )
    assert lines[0] == "you: (playing tone.wav)", lines
    heard = re.fullmatch(r"you \(audio\): <speech (\d+) ms>", lines[1])
    assert heard, lines
    # The tone (600 ms) plus the detector's 500 ms of silence, give or take
    # a 20 ms frame and the resampling.
    assert 1_000 <= int(heard[1]) <= 1_200, lines
    assert lines[2:] == [f"assistant: I heard {heard[1]} ms of audio."], lines


def test_terminal_agent_reads_lines_from_stdin() -> None:
    lines = _run_example(
        ["examples/terminal_agent.py", "--in-process"],
        timeout=60 * UNIT,
        stdin="say hello from stdin\n\nget weather in Oslo\n",
    )
    assert _conversation(lines) == [
        "you: say hello from stdin",
        "assistant: hello from stdin",
        "you: get weather in Oslo",
        'tool call: get_weather({"city":"Oslo"})',
        "tool result: It is sunny in Oslo.",
        "assistant: The tool get_weather returned: It is sunny in Oslo.",
    ], lines


def test_terminal_agent_without_sounddevice_says_what_to_do_instead() -> None:
    try:
        import sounddevice  # type: ignore[import-not-found]  # noqa: F401
    except (ImportError, OSError):
        pass
    else:
        pytest.skip("sounddevice is installed here")
    proc = subprocess.run(
        [sys.executable, "examples/terminal_agent.py", "--in-process", "--mic"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=_user_env(tempfile.gettempdir()),
        timeout=60 * UNIT,
    )
    assert "--mic needs the `sounddevice` package" in proc.stderr, proc.stderr
    assert "use --text, --wav or type on stdin" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the airline agent ----------------------------------------------------------------

AIRLINE_OUTPUT = [
    "customer: Can you get flight status for RR123?",
    'tool call: get_flight_status({"flight_number":"RR123"})',
    "tool result: Flight RR123 is on time, departing 10:45 from gate B7.",
    "Triage Agent: The tool get_flight_status returned: "
    "Flight RR123 is on time, departing 10:45 from gate B7.",
    "customer: I want a different seat, please transfer to booking agent.",
    "handoff: Triage Agent -> Booking Agent",
    'Booking Agent: The tool transfer_to_booking_agent returned: {"assistant": "Booking Agent"}',
    "customer: Please change seat ABC123 to 14C.",
    'approval needed: change_seat({"confirmation_number":"ABC123","new_seat":"14C"})',
    "approved: change_seat",
    'tool call: change_seat({"confirmation_number":"ABC123","new_seat":"14C"})',
    "tool result: Booking ABC123 is now in seat 14C.",
    "Booking Agent: The tool change_seat returned: Booking ABC123 is now in seat 14C.",
    "customer: say Sure, the card on file is 4111 1111 1111 1111.",
    "guardrail tripped: no_card_numbers",
    "Booking Agent: You said: guardrail triggered: no_card_numbers",
]


async def test_airline_agent_plays_its_conversation_in_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from examples import airline_agent

    await asyncio.wait_for(airline_agent.main(["--in-process"]), 60 * UNIT)
    assert capsys.readouterr().out.splitlines() == AIRLINE_OUTPUT


@pytest.mark.ray
def test_airline_agent_plays_its_conversation_in_session_actors(
    ray_cluster: RayTestCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As a script (``__main__``), in this process holding the shared
    # cluster: the session in a session actor, the tools on tool workers, the
    # approval sent from here.
    monkeypatch.setattr(sys, "argv", ["airline_agent.py"])
    _in_thread(
        lambda: runpy.run_path(str(EXAMPLES / "airline_agent.py"), run_name="__main__"),
        90 * UNIT,
    )
    assert capsys.readouterr().out.splitlines() == AIRLINE_OUTPUT


# -- the Twilio agent module ----------------------------------------------------------


def test_twilio_agent_loads_as_the_gateway_names_it() -> None:
    from ray_realtime import RealtimeAgent
    from ray_realtime.gateway.deploy import load_agent

    agent = load_agent("examples.twilio_agent:agent")
    assert isinstance(agent, RealtimeAgent) and agent.name == "Front Desk"
    factory = load_agent("examples.twilio_agent:build_agent")
    assert not isinstance(factory, RealtimeAgent)
    first, second = factory(), factory()
    assert first.name == second.name == "Front Desk" and first is not second


async def test_twilio_agent_answers_a_text_turn_with_its_tool() -> None:
    from ray_realtime import RealtimeRunner
    from ray_realtime.gateway.deploy import load_agent

    agent: Any = load_agent("examples.twilio_agent:agent")
    # The model settings the gateway uses in passthrough mode.
    config: Any = {
        "execution": "in_process",
        "model_settings": {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"},
    }
    seen: list[str] = []
    async with await RealtimeRunner(agent, config=config).run() as session:
        await session.send_message("What are your opening hours on Thursday?")

        async def read() -> None:
            # The turn ends with the first response that calls no tool (the
            # tool's end may come before or after the calling response's end).
            calls_tool = False
            async for event in session:
                if event.type == "agent_start":
                    calls_tool = False
                elif event.type == "history_added" and event.item.type == "function_call":
                    calls_tool = True
                elif event.type == "tool_start":
                    seen.append(f"{event.tool.name}({event.arguments})")
                elif event.type == "tool_end":
                    seen.append(str(event.output))
                elif event.type == "agent_end" and not calls_tool:
                    return

        await asyncio.wait_for(read(), 30 * UNIT)
        reply = session.history[-1]
    assert seen == ['opening_hours({"day":"Thursday"})', "On Thursday we are open 8:00 to 20:00."]
    assert reply.content[0].transcript == (  # type: ignore[union-attr]
        "The tool opening_hours returned: On Thursday we are open 8:00 to 20:00."
    )


async def test_twilio_agent_answers_a_simulated_call() -> None:
    from ray_realtime.gateway.deploy import load_agent
    from ray_realtime.gateway.server import Gateway
    from tests.gateway.sim import TwilioCaller, silence_ulaw, tone_ulaw

    gateway = Gateway(
        load_agent("examples.twilio_agent:build_agent"),
        run_config={"execution": "in_process"},
        start_timeout=5.0,
    )
    async with gateway:
        url = f"ws://127.0.0.1:{gateway.port}/twilio/media-stream"
        async with TwilioCaller(url) as caller:
            await caller.start()
            await caller.speak(tone_ulaw(0.6) + silence_ulaw(0.8))
            deadline = time.monotonic() + 30 * UNIT
            # The whole reply has played once every mark is echoed.
            while not (
                caller.marks_echoed
                and len(caller.marks_echoed) == sum(m["event"] == "mark" for m in caller.received)
                and any(m["event"] == "media" for m in caller.received)
            ):
                assert time.monotonic() < deadline, "no reply to the call"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # no more reply after it
            await caller.stop()
            await asyncio.wait_for(caller.closed.wait(), 10 * UNIT)
    # The reply is the local model's voice (a tone, not silence) and as long
    # as its answer to the caller's speech, "I heard N ms of audio." (12.5 ms
    # of audio per character; N has 3 to 5 digits).
    assert caller.reply_rms() > 500
    reply_ms = len(caller.audio) / 8
    shortest, longest = (len(f"I heard {n} ms of audio.") * 12.5 for n in (100, 10_000))
    assert shortest <= reply_ms <= longest, reply_ms
    assert gateway.calls_served == 1 and gateway.open_sessions == 0


# -- a module written for the SDK -----------------------------------------------------

_SDK_IMPORT = re.compile(r"^from agents(?:\.[\w.]+)? import ", re.MULTILINE)


def _ported(source: str) -> str:
    """The SDK module with its imports pointed at ray_realtime, and nothing else changed."""
    return _SDK_IMPORT.sub("from ray_realtime import ", source)


def test_the_sdk_module_is_sdk_code() -> None:
    # The module really is written against the SDK: it imports and builds
    # with the installed openai-agents, unchanged.
    pytest.importorskip("agents.realtime")
    from agents.realtime import RealtimeAgent as SdkAgent

    module = runpy.run_path(str(SDK_MODULE), run_name="sdk_realtime_agent")
    assert isinstance(module["agent"], SdkAgent)
    source = SDK_MODULE.read_text(encoding="utf-8")
    ported = _ported(source)
    assert "agents" not in re.findall(r"^(?:from|import) (\w+)", ported, re.MULTILINE)
    # Only import lines differ.
    changed = [
        (a, b) for a, b in zip(source.splitlines(), ported.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 3 and all(a.startswith("from agents") for a, _ in changed), changed


SPOKEN_PASSWORD = (
    "The password is swordfish. I will say it again whenever you ask me "
    "what it is, all day long, as often as you like."
)


@pytest.mark.ray
def test_an_sdk_module_runs_with_only_its_imports_changed(
    ray_cluster: RayTestCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ported = tmp_path / "ported_agent.py"
    ported.write_text(_ported(SDK_MODULE.read_text(encoding="utf-8")), encoding="utf-8")
    # Run as a script in this process (its sessions in the shared cluster's
    # actors, its tool on a tool worker).
    _in_thread(lambda: runpy.run_path(str(ported), run_name="__main__"), 90 * UNIT)
    out = capsys.readouterr().out.splitlines()
    feedback = "You said: guardrail triggered: sensitive_data_check"
    assert out[:10] == [
        "Agent started: Assistant",
        "Tool started: get_weather",
        "Tool ended: get_weather; output: The weather in Paris is sunny.",
        "Agent started: Assistant",
        "Agent started: Assistant",
        "Guardrail tripped: ['sensitive_data_check']",
        "Agent started: Assistant",
        "Agent started: Assistant",
        "Handoff from Assistant to Billing Agent",
        "Agent started: Billing Agent",
    ], out
    said = out[10:]
    assert (
        said[0] == "Assistant said: The tool get_weather returned: The weather in Paris is sunny."
    )
    # The response the guardrail stopped keeps what was said of it.
    stopped = said[1].removeprefix("Assistant said: ")
    assert stopped and SPOKEN_PASSWORD.startswith(stopped), said
    handoff = 'The tool transfer_to_billing_agent returned: {"assistant": "Billing Agent"}'
    assert said[2:] == [f"Assistant said: {feedback}", f"Assistant said: {handoff}"], said


def _start_serve(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("ray-realtime")
    return subprocess.Popen(
        [str(script), "serve", "--warm-pool", "1", *args],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.ray
async def test_serve_answers_a_call_with_the_twilio_agent_module() -> None:
    # The command docs/gateway.md and the module's docstring give, as a user
    # runs it: the agent is named by module path, importable through
    # PYTHONPATH by the serve command and by the gateway actor it starts.
    from tests.gateway.sim import TwilioCaller, silence_ulaw, tone_ulaw
    from tests.gateway.test_serve_gateway import _free_port

    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rrex-gw-")
    env = _user_env(ray_tmp)
    env.pop("TWILIO_AUTH_TOKEN", None)
    proc = _start_serve(
        ["--gateway-port", str(port), "--agent", "examples.twilio_agent:agent"], env
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert await asyncio.to_thread(ready.wait, 180 * UNIT), "".join(lines)
        assert f"ws://127.0.0.1:{port}/twilio/media-stream" in "".join(lines), lines
        async with TwilioCaller(f"ws://127.0.0.1:{port}/twilio/media-stream") as caller:
            await caller.start()
            await caller.speak(tone_ulaw(0.6) + silence_ulaw(0.8))
            deadline = time.monotonic() + 60 * UNIT
            while not caller.marks_echoed:
                assert time.monotonic() < deadline, "".join(lines)[-3000:]
                await asyncio.sleep(0.05)
            assert caller.reply_rms() > 500
            await caller.stop()
            await asyncio.wait_for(caller.closed.wait(), 20 * UNIT)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                await asyncio.to_thread(proc.wait, 60 * UNIT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        await asyncio.to_thread(reader.join, 10)
        assert proc.stdout is not None
        proc.stdout.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, "".join(lines)[-3000:]


async def test_an_sdk_module_prints_here_what_it_prints_on_the_sdk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same module, unchanged on the SDK (its model pointed at the
    bundled local model) and ported here (in-process): the same lines."""
    pytest.importorskip("agents.realtime")
    from agents.realtime.openai_realtime import OpenAIRealtimeWebSocketModel

    from ray_realtime.local import LocalModelServer

    async with LocalModelServer() as server:
        sdk_connect = OpenAIRealtimeWebSocketModel.connect

        async def to_local_model(self: Any, options: Any) -> None:
            await sdk_connect(self, {**options, "url": server.url, "api_key": "local"})

        monkeypatch.setattr(OpenAIRealtimeWebSocketModel, "connect", to_local_model)
        sdk_module = runpy.run_path(str(SDK_MODULE), run_name="sdk_realtime_agent")
        await asyncio.wait_for(sdk_module["main"](), 30 * UNIT)
    on_sdk = capsys.readouterr().out.splitlines()

    ported = tmp_path / "ported_agent.py"
    ported.write_text(_ported(SDK_MODULE.read_text(encoding="utf-8")), encoding="utf-8")
    monkeypatch.setenv("RAY_REALTIME_EXECUTION", "in_process")
    await asyncio.wait_for(runpy.run_path(str(ported), run_name="ported")["main"](), 30 * UNIT)
    here = capsys.readouterr().out.splitlines()

    # The SDK's interrupt after the trip sends a truncate the local model
    # refuses (the SDK prints it as an error event); nothing else may differ
    # but how much of the stopped reply was said before it was stopped.
    truncate_refused = (
        "Error: RealtimeError(message='Only assistant audio content can be truncated."
    )
    on_sdk = [line for line in on_sdk if not line.startswith(truncate_refused)]
    assert len(on_sdk) == len(here), (on_sdk, here)
    for sdk_line, line in zip(on_sdk, here, strict=True):
        if sdk_line.startswith("Assistant said: The password"):
            assert SPOKEN_PASSWORD.startswith(line.removeprefix("Assistant said: ")), line
        else:
            assert line == sdk_line
