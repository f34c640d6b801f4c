"""An airline customer-service voice agent: tools, handoffs, an output
guardrail, and a tool that needs the customer's approval.

    python examples/airline_agent.py                 # the scripted conversation
    python examples/airline_agent.py --in-process    # the session in this process

A triage agent answers flight-status questions itself and hands booking
changes to a booking agent and policy questions to an FAQ agent. Changing a
seat needs approval: the session stops at a ``tool_approval_required`` event
until the application calls ``session.approve_tool_call`` (or
``reject_tool_call``). An output guardrail stops any reply that would read out
a card number; the model is told, and answers again.

The script below plays one conversation and prints it. With the bundled local
model (no ``OPENAI_API_KEY``) a tool is called when the message names it and
"transfer to <agent>" hands off, so the customer's lines are phrased that way.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

from ray_realtime import (
    GuardrailFunctionOutput,
    RealtimeAgent,
    RealtimeRunner,
    RealtimeSession,
    RunContextWrapper,
    function_tool,
    output_guardrail,
    realtime_handoff,
)

FLIGHTS = {"RR123": "on time, departing 10:45 from gate B7", "RR456": "delayed 40 minutes"}


@function_tool
def get_flight_status(flight_number: str) -> str:
    """Look up the status of a flight.

    Args:
        flight_number: The flight number, such as RR123.
    """
    status = FLIGHTS.get(flight_number.upper())
    return f"Flight {flight_number.upper()} is {status}." if status else "No such flight."


@function_tool(needs_approval=True)
def change_seat(confirmation_number: str, new_seat: str) -> str:
    """Move the passenger of a booking to another seat.

    Args:
        confirmation_number: The booking's confirmation number.
        new_seat: The seat to move to, such as 14C.
    """
    return f"Booking {confirmation_number} is now in seat {new_seat.upper()}."


@function_tool
def baggage_policy(cabin: str) -> str:
    """Tell the checked-baggage allowance of a cabin.

    Args:
        cabin: economy or business.
    """
    bags = 2 if cabin.lower() == "business" else 1
    return f"{cabin.capitalize()} includes {bags} checked bag(s) of up to 23 kg."


@output_guardrail(name="no_card_numbers")
def no_card_numbers(
    ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any], output: str
) -> GuardrailFunctionOutput:
    """Trips when a reply would read out something shaped like a card number."""
    digits = re.sub(r"[\s-]", "", output)
    found = re.search(r"\d{12,19}", digits) is not None
    return GuardrailFunctionOutput(output_info={"card_number": found}, tripwire_triggered=found)


booking_agent = RealtimeAgent(
    name="Booking Agent",
    handoff_description="Changes to existing bookings: seats, dates, names.",
    instructions="You change bookings. Confirm the confirmation number before any change.",
    tools=[change_seat],
)
faq_agent = RealtimeAgent(
    name="FAQ Agent",
    handoff_description="Questions about baggage and airline policies.",
    instructions="You answer policy questions with the baggage_policy tool.",
    tools=[baggage_policy],
)
triage_agent = RealtimeAgent(
    name="Triage Agent",
    instructions=(
        "You are an airline's phone agent. Answer flight-status questions yourself; "
        "transfer booking changes to the booking agent and policy questions to the FAQ agent."
    ),
    tools=[get_flight_status],
    handoffs=[realtime_handoff(booking_agent), realtime_handoff(faq_agent)],
    output_guardrails=[no_card_numbers],
)
# A handed-off caller can still come back to the triage agent.
booking_agent.handoffs = [realtime_handoff(triage_agent)]
faq_agent.handoffs = [realtime_handoff(triage_agent)]
booking_agent.output_guardrails = faq_agent.output_guardrails = [no_card_numbers]

CONVERSATION = [
    "Can you get flight status for RR123?",
    "I want a different seat, please transfer to booking agent.",
    "Please change seat ABC123 to 14C.",
    "say Sure, the card on file is 4111 1111 1111 1111.",
]


async def turn(session: RealtimeSession, text: str, timeout: float) -> None:
    """Send one customer line and print everything until the agents have
    answered it: a response that calls a tool or hands off, or that a
    guardrail stops, is followed by another, so the turn ends at the first
    ``agent_end`` of a response that did none of these."""
    print(f"customer: {text}", flush=True)
    await session.send_message(text)
    follow_up = False
    responses = 0  # started and not yet ended

    async def read() -> None:
        nonlocal follow_up, responses
        async for event in session:
            if event.type == "agent_start":
                responses += 1
                follow_up = False
            elif event.type == "history_added" and event.item.type == "function_call":
                follow_up = True
            elif event.type == "tool_approval_required":
                # Here the application would ask the customer; the script says yes.
                print(f"approval needed: {event.tool.name}({event.arguments})", flush=True)
                await session.approve_tool_call(event.call_id)
                print(f"approved: {event.tool.name}", flush=True)
            elif event.type == "tool_start":
                print(f"tool call: {event.tool.name}({event.arguments})", flush=True)
            elif event.type == "tool_end":
                print(f"tool result: {event.output}", flush=True)
            elif event.type == "handoff":
                print(f"handoff: {event.from_agent.name} -> {event.to_agent.name}", flush=True)
            elif event.type == "guardrail_tripped":
                follow_up = True
                names = ", ".join(r.guardrail.name for r in event.guardrail_results)
                print(f"guardrail tripped: {names}", flush=True)
            elif event.type == "error":
                print(f"error: {event.error.get('message')}", flush=True)
            elif event.type == "agent_end":
                responses -= 1
                if responses <= 0 and not follow_up:
                    print(f"{event.agent.name}: {last_reply(session)}", flush=True)
                    return

    await asyncio.wait_for(read(), timeout)


def last_reply(session: RealtimeSession) -> str:
    """The transcript of the session's latest assistant message."""
    for item in reversed(session.history):
        if item.type == "message" and item.role == "assistant":
            for part in item.content:
                text = getattr(part, "transcript", None) or getattr(part, "text", None)
                if text:
                    return str(text)
    return ""


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An airline voice agent, scripted.")
    parser.add_argument("--in-process", action="store_true", help="run the session in this process")
    parser.add_argument("--turn-timeout", type=float, default=60.0, help="seconds per turn")
    args = parser.parse_args(argv)
    runner = RealtimeRunner(
        triage_agent, config={"execution": "in_process" if args.in_process else "actor"}
    )
    async with await runner.run() as session:
        for text in CONVERSATION:
            await turn(session, text, args.turn_timeout)


if __name__ == "__main__":
    asyncio.run(main())
