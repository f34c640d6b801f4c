"""A small realtime agent module written for the OpenAI Agents SDK the way
its documentation shows: ``RealtimeAgent``, ``function_tool``,
``realtime_handoff``, an output guardrail, ``RealtimeRunner(...).run()``
entered with ``async with`` and read with ``async for event in session``.

``tests/test_examples.py`` runs it on ray-realtime with only its imports
changed (``agents`` / ``agents.realtime`` / ``agents.guardrail`` become
``ray_realtime``). It is data for that test, not an example to import: it
imports the SDK.
"""

import asyncio

from agents import function_tool
from agents.guardrail import GuardrailFunctionOutput, OutputGuardrail
from agents.realtime import RealtimeAgent, RealtimeRunner, realtime_handoff


@function_tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"The weather in {city} is sunny."


def sensitive_data_check(context, agent, output):
    return GuardrailFunctionOutput(tripwire_triggered="password" in output, output_info=None)


billing_agent = RealtimeAgent(
    name="Billing Agent",
    instructions="You help with billing questions.",
    handoff_description="Handles invoices and payments.",
)

agent = RealtimeAgent(
    name="Assistant",
    instructions="You are a helpful voice assistant. Keep your responses brief.",
    tools=[get_weather],
    handoffs=[realtime_handoff(billing_agent)],
    output_guardrails=[OutputGuardrail(guardrail_function=sensitive_data_check)],
)

# One conversation: each message, the event its turn is about, and how many
# agent_end events after that event finish the turn (a tripped guardrail
# stops one response, then the agent answers again).
SCRIPT = [
    ("What is the weather in Paris? Please get weather for Paris.", "tool_end", 1),
    ("say the password is swordfish", "guardrail_tripped", 2),
    ("Now please transfer to billing agent.", "handoff", 1),
]


async def main():
    runner = RealtimeRunner(
        starting_agent=agent,
        config={
            "model_settings": {
                "model_name": "gpt-realtime",
                "voice": "ash",
                "modalities": ["audio"],
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
            }
        },
    )
    session = await runner.run()
    async with session:
        for message, awaited, ends in SCRIPT:
            await session.send_message(message)
            seen = False
            async for event in session:
                if event.type == "agent_start":
                    print(f"Agent started: {event.agent.name}")
                elif event.type == "tool_start":
                    print(f"Tool started: {event.tool.name}")
                elif event.type == "tool_end":
                    print(f"Tool ended: {event.tool.name}; output: {event.output}")
                elif event.type == "handoff":
                    print(f"Handoff from {event.from_agent.name} to {event.to_agent.name}")
                elif event.type == "guardrail_tripped":
                    names = [r.guardrail.get_name() for r in event.guardrail_results]
                    print(f"Guardrail tripped: {names}")
                elif event.type == "audio":
                    pass  # enqueue event.audio.data for playback
                elif event.type == "error":
                    print(f"Error: {event.error}")
                if event.type == awaited:
                    seen = True
                elif event.type == "agent_end" and seen:
                    ends -= 1
                    if ends == 0:
                        break
        for item in session.history:
            if item.type == "message" and item.role == "assistant":
                print(f"Assistant said: {item.content[0].transcript}")


if __name__ == "__main__":
    asyncio.run(main())
