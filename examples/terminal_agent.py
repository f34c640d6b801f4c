"""A terminal voice agent: type to it, play it a WAV file, or talk to it.

    python examples/terminal_agent.py                      # type lines on stdin
    python examples/terminal_agent.py --text "Please get weather in Paris."
    python examples/terminal_agent.py --wav question.wav   # 16-bit PCM WAV
    python examples/terminal_agent.py --mic                # needs `sounddevice`

It prints what the user said (typed text, or the transcript of the audio),
every tool call and its result, handoffs, and the assistant's spoken answer.
`--text` (repeatable) and `--wav` run scripted turns and exit; with neither,
it reads lines from stdin until end of input. Sessions run in Ray actors;
`--in-process` runs the session in this process instead. Without
`OPENAI_API_KEY` it talks to the bundled local model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ray_realtime import (
    RealtimeAgent,
    RealtimeRunner,
    RealtimeSession,
    function_tool,
    realtime_handoff,
)

RATE = 24_000  # the session's input: 24 kHz mono PCM16
CHUNK = RATE // 25  # 40 ms of samples per send_audio call
TRAILING_SILENCE_S = 1.0  # lets the model's voice activity detection end the turn


@function_tool
def get_weather(city: str) -> str:
    """Tell the weather in a city.

    Args:
        city: The city to look up.
    """
    return f"It is sunny in {city}."


@function_tool
def get_time(city: str) -> str:
    """Tell the local time in a city.

    Args:
        city: The city.
    """
    return f"It is 9:41 in {city}."


billing = RealtimeAgent(
    name="Billing Agent",
    instructions="You handle billing questions.",
    handoff_description="Questions about invoices and payments.",
)
agent = RealtimeAgent(
    name="Assistant",
    instructions="You are a helpful voice assistant. Keep answers short.",
    tools=[get_weather, get_time],
    handoffs=[realtime_handoff(billing)],
)


class TurnPrinter:
    """Prints a session's events as a conversation, and knows when a turn
    is over: at an ``agent_end`` whose response called no tool (a handoff
    is a tool call too) and tripped no guardrail, since each of those makes
    the session answer again."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.printed: set[str] = set()
        self.follow_up = False  # this response leads to another one
        self.responses = 0  # started and not yet ended

    def _print_new_items(self) -> None:
        for item in self.session.history:
            if item.item_id in self.printed or item.type != "message":
                continue
            if item.role == "user":
                for part in item.content:
                    if part.type == "input_audio" and part.transcript:
                        print(f"you (audio): {part.transcript}", flush=True)
                        self.printed.add(item.item_id)
            elif item.role == "assistant" and item.status == "completed":
                for part in item.content:
                    text = getattr(part, "transcript", None) or getattr(part, "text", None)
                    if text:
                        print(f"assistant: {text}", flush=True)
                self.printed.add(item.item_id)

    def handle(self, event: Any) -> bool:
        """Print ``event``; true when it ends the turn."""
        if event.type == "agent_start":
            self.responses += 1
            self.follow_up = False
        elif event.type == "history_added" and event.item.type == "function_call":
            self.follow_up = True
        elif event.type == "history_updated":
            self._print_new_items()
        elif event.type == "tool_start":
            print(f"tool call: {event.tool.name}({event.arguments})", flush=True)
        elif event.type == "tool_end":
            print(f"tool result: {event.output}", flush=True)
        elif event.type == "handoff":
            print(f"handoff: {event.from_agent.name} -> {event.to_agent.name}", flush=True)
        elif event.type == "guardrail_tripped":
            self.follow_up = True
            print(f"guardrail tripped: {event.message}", flush=True)
        elif event.type == "error":
            print(f"error: {event.error.get('message')}", flush=True)
        elif event.type == "agent_end":
            self._print_new_items()
            self.responses -= 1
            return self.responses <= 0 and not self.follow_up
        return False

    async def until_turn_ends(self, timeout: float) -> None:
        async def read() -> None:
            async for event in self.session:
                if self.handle(event):
                    return

        await asyncio.wait_for(read(), timeout)


def read_wav(path: Path) -> bytes:
    """A 16-bit PCM WAV file as 24 kHz mono PCM16 (channels averaged,
    other rates resampled by linear interpolation)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    mono = samples.reshape(-1, channels).mean(axis=1)
    if rate != RATE and len(mono):
        n_out = int(len(mono) * RATE / rate)
        mono = np.interp(np.arange(n_out) * rate / RATE, np.arange(len(mono)), mono)
    return np.asarray(np.round(mono), dtype="<i2").tobytes()


async def send_pcm(session: RealtimeSession, pcm: bytes) -> None:
    """Send PCM16 audio as a microphone would, then a second of silence."""
    pcm += bytes(int(RATE * TRAILING_SILENCE_S) * 2)
    for i in range(0, len(pcm), CHUNK * 2):
        await session.send_audio(pcm[i : i + CHUNK * 2])


async def text_turn(
    session: RealtimeSession, printer: TurnPrinter, text: str, timeout: float
) -> None:
    print(f"you: {text}", flush=True)
    await session.send_message(text)
    await printer.until_turn_ends(timeout)


async def stdin_loop(session: RealtimeSession, printer: TurnPrinter, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    if sys.stdin.isatty():
        print("type a message and press Enter (Ctrl-D to quit)", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip():
            await text_turn(session, printer, line.strip(), timeout)


async def mic_loop(session: RealtimeSession, printer: TurnPrinter) -> None:
    try:
        import sounddevice  # type: ignore[import-not-found]
    except (ImportError, OSError):  # OSError: the PortAudio library is missing
        raise SystemExit(
            "--mic needs the `sounddevice` package (pip install sounddevice) and PortAudio; "
            "without a microphone use --text, --wav or type on stdin"
        ) from None
    loop = asyncio.get_running_loop()
    captured: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100)  # ~4 s of 40 ms blocks

    def on_block(data: Any, frames: int, when: Any, status: Any) -> None:
        # Called on PortAudio's thread: hand the block to the event loop, and
        # drop it rather than block the audio thread if the loop falls behind.
        block = bytes(data)
        loop.call_soon_threadsafe(lambda: captured.full() or captured.put_nowait(block))

    speaker = sounddevice.RawOutputStream(samplerate=RATE, channels=1, dtype="int16")

    async def events() -> None:
        async for event in session:
            if event.type == "audio":
                speaker.write(event.audio.data)
            elif event.type == "audio_interrupted":
                speaker.abort()  # the user spoke over the reply: stop playing it
                speaker.start()
            printer.handle(event)

    reader = asyncio.create_task(events())
    print("listening; speak, and press Ctrl-C to quit", flush=True)
    with (
        speaker,
        sounddevice.RawInputStream(
            samplerate=RATE, channels=1, dtype="int16", blocksize=CHUNK, callback=on_block
        ),
    ):
        try:
            while not reader.done():
                await session.send_audio(await captured.get())
        finally:
            reader.cancel()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--text", action="append", default=[], help="send this message (repeatable)"
    )
    parser.add_argument("--wav", type=Path, help="send this 16-bit PCM WAV file as speech")
    parser.add_argument("--mic", action="store_true", help="talk through the microphone")
    parser.add_argument("--in-process", action="store_true", help="run the session in this process")
    parser.add_argument("--turn-timeout", type=float, default=60.0, help="seconds per turn")
    args = parser.parse_args(argv)

    config: dict[str, Any] = {"execution": "in_process" if args.in_process else "actor"}
    runner = RealtimeRunner(agent, config=config)  # type: ignore[arg-type]
    async with await runner.run() as session:
        printer = TurnPrinter(session)
        if args.mic:
            await mic_loop(session, printer)
            return
        for text in args.text:
            await text_turn(session, printer, text, args.turn_timeout)
        if args.wav is not None:
            print(f"you: (playing {args.wav.name})", flush=True)
            await send_pcm(session, read_wav(args.wav))
            await printer.until_turn_ends(args.turn_timeout)
        if not args.text and args.wav is None:
            await stdin_loop(session, printer, args.turn_timeout)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
