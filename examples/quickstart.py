import asyncio

from ray_realtime import RealtimeAgent, RealtimeRunner, function_tool, realtime_handoff


@function_tool
def get_weather(city: str) -> str:
    """Tell the weather in a city."""
    return f"It is sunny in {city}."


billing = RealtimeAgent(name="Billing Agent", instructions="You handle billing.")
agent = RealtimeAgent(
    name="Assistant",
    instructions="You are a helpful voice assistant.",
    tools=[get_weather],
    handoffs=[realtime_handoff(billing)],
)


async def main() -> None:
    runner = RealtimeRunner(agent)  # sessions run in Ray actors
    async with await runner.run() as session:
        await session.send_message("Please get weather in Paris.")
        tool_done = answering = False
        async for event in session:
            if event.type == "audio":
                pass  # play event.audio.data here
            elif event.type == "tool_start":
                print(f"tool call: {event.tool.name}({event.arguments})")
            elif event.type == "tool_end":
                print(f"tool result: {event.output}")
                tool_done = True
            elif event.type == "agent_start":
                answering = tool_done  # the response that uses the tool's result
            elif event.type == "agent_end" and answering:
                break  # the answer is complete: so is the turn
        answer = session.history[-1]  # the assistant's spoken answer
        print(f"assistant: {answer.content[0].transcript}")


asyncio.run(main())
