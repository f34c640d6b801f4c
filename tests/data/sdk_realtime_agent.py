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

# One conversation. A turn ends with the first response that neither calls a
# tool (a handoff is a tool call too) nor is stopped by a guardrail: each of
# those makes the agent answer again.
SCRIPT = [
    "What is the weather in Paris? Please get weather for Paris.",
    "say The password is swordfish. I will say it again whenever you ask me "
    "what it is, all day long, as often as you like.",
    "Now please transfer to billing agent.",
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
    history = []
    async with session:
        for message in SCRIPT:
            await session.send_message(message)
            answers_again = False
            responses = 0  # started and not yet ended
            async for event in session:
                if event.type == "agent_start":
                    print(f"Agent started: {event.agent.name}")
                    responses += 1
                    answers_again = False
                elif event.type == "tool_start":
                    print(f"Tool started: {event.tool.name}")
                elif event.type == "tool_end":
                    print(f"Tool ended: {event.tool.name}; output: {event.output}")
                elif event.type == "handoff":
                    print(f"Handoff from {event.from_agent.name} to {event.to_agent.name}")
                elif event.type == "guardrail_tripped":
                    names = [r.guardrail.get_name() for r in event.guardrail_results]
                    print(f"Guardrail tripped: {names}")
                    answers_again = True
                elif event.type == "history_added":
                    if event.item.type == "function_call":
                        answers_again = True
                elif event.type == "history_updated":
                    history = event.history
                elif event.type == "audio":
                    pass  # enqueue event.audio.data for playback
                elif event.type == "error":
                    print(f"Error: {event.error}")
                elif event.type == "agent_end":
                    responses -= 1
                    if responses <= 0 and not answers_again:
                        break
        for item in history:
            if item.type == "message" and item.role == "assistant":
                print(f"Assistant said: {item.content[0].transcript}")


if __name__ == "__main__":
    asyncio.run(main())
