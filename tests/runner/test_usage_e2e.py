"""``session.usage`` and ``usage`` events of an in-process session against the
bundled local model, whose ``response.done`` reports synthetic usage (one
text token a word, one audio token per 100 ms of audio)."""

from __future__ import annotations

import math

from ray_realtime import RealtimeAgent, RealtimeUsageUpdated, SessionUsage
from ray_realtime.local import LocalModelServer
from ray_realtime.types.events import RealtimeAudio
from tests.runner.test_e2e_in_process import (  # noqa: F401 (fixture)
    collect,
    nth,
    of_type,
    open_session,
    server,
    within,
)


async def test_usage_is_summed_from_response_done(server: LocalModelServer) -> None:  # noqa: F811
    agent = RealtimeAgent(name="Counter", instructions="Be brief.")
    async with open_session(agent, server) as session:
        assert session.usage == SessionUsage()
        await within(session.send_audio(b"\0\0" * 2400))  # 0.1 s of PCM16 silence
        await within(session.send_message("hello there"))
        events = await collect(session, nth("agent_end"))
        usage = session.usage

    kinds = [e.type for e in events]
    assert kinds.index("usage") < kinds.index("agent_end")  # usage comes with the turn
    event = of_type(events, RealtimeUsageUpdated)[-1]
    assert event.usage == usage
    out_bytes = sum(len(e.audio.data) for e in of_type(events, RealtimeAudio))
    assert usage.requests == 1
    assert usage.audio_out_seconds == out_bytes / 48_000
    assert usage.audio_in_seconds == 0.1
    # The local model's rules: "You said: hello there" is 4 words of text.
    assert usage.output_text_tokens == 4
    assert usage.output_audio_tokens == math.ceil(out_bytes / 48 / 100)
    assert usage.output_tokens == 4 + usage.output_audio_tokens
    assert (
        usage.input_tokens >= 2 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    )
    assert usage.by_agent == {"Counter": usage.by_agent["Counter"]}
    assert usage.by_agent["Counter"].input_tokens == usage.input_tokens
