"""A phone agent for the voice gateway: callers reach it through Twilio.

From the repository's root (the folder holding ``examples/``)::

    PYTHONPATH=$PWD ray-realtime serve --gateway-port 8080 --agent examples.twilio_agent:agent

``--agent`` names ``module:attribute``: ``examples.twilio_agent:agent`` answers
every call with the one agent below; ``examples.twilio_agent:build_agent``
names the factory instead, which the gateway calls for every call, so each
call gets a fresh agent (and an edited factory reaches new calls). The
module must be importable where the service runs — by the ``serve`` command
and by the Ray workers it starts, which inherit its environment — hence
``PYTHONPATH``. Point your Twilio number's voice webhook at
``https://<your host>/twilio/voice`` (see docs/gateway.md for the proxy and
the signature check).

Nothing here is phone-specific: the gateway turns the call's audio into the
session's input and the session's audio into the call, so any agent works.
A phone agent keeps its answers short and its tools quick.
"""

from __future__ import annotations

from ray_realtime import RealtimeAgent, function_tool, realtime_handoff

HOURS = {
    "monday": "8:00 to 18:00",
    "tuesday": "8:00 to 18:00",
    "wednesday": "8:00 to 18:00",
    "thursday": "8:00 to 20:00",
    "friday": "8:00 to 16:00",
    "saturday": "closed",
    "sunday": "closed",
}


@function_tool
def opening_hours(day: str) -> str:
    """Tell the clinic's opening hours on a day of the week.

    Args:
        day: The day of the week, such as Monday.
    """
    hours = HOURS.get(day.strip().lower())
    if hours is None:
        return f"I do not know the day {day!r}."
    return f"On {day.capitalize()} we are {'closed' if hours == 'closed' else 'open ' + hours}."


@function_tool
def take_message(name: str, message: str) -> str:
    """Take a message for the clinic's staff.

    Args:
        name: The caller's name.
        message: What the caller wants passed on.
    """
    # A real agent would store it or send it on; the example only confirms it.
    return f"Message from {name} noted: {message}"


def build_agent() -> RealtimeAgent:
    """The front desk of a (fictional) clinic, with a billing desk to hand
    callers to."""
    billing = RealtimeAgent(
        name="Billing Desk",
        handoff_description="Invoices, payments and insurance questions.",
        instructions="You answer billing questions on the phone, briefly and politely.",
    )
    return RealtimeAgent(
        name="Front Desk",
        instructions=(
            "You answer the phone for the Riverside Clinic. Greet the caller, keep each "
            "answer to one or two sentences, give opening hours with opening_hours, take "
            "messages with take_message, and transfer billing questions to the billing desk."
        ),
        tools=[opening_hours, take_message],
        handoffs=[realtime_handoff(billing)],
    )


agent = build_agent()
