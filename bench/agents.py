"""The agent every benchmark uses, and the texts that drive it.

This module is pickled *by value* (``register_by_value``) so that session
actors and tool workers, which cannot import the ``bench`` package, can run
its tool.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ray_realtime import RealtimeAgent, function_tool

__all__ = [
    "TOOL_NAME",
    "bench_agent",
    "lookup_order",
    "register_by_value",
    "reply_chars",
    "say_text",
    "tool_text",
]

TOOL_NAME = "lookup_order"
_FILLER = "the quick brown fox jumps over the lazy dog and keeps running "


@function_tool
def lookup_order(order_id: str) -> str:
    """Look up an order by its id."""
    return f"order {order_id} shipped"


def bench_agent() -> RealtimeAgent[Any]:
    """An agent with one cheap tool; replies follow the local model's rules."""
    return RealtimeAgent(
        name="Bench Agent",
        instructions="You are the benchmark agent.",
        tools=[lookup_order],
    )


def reply_chars(chunks: int, audio_ms_per_char: float = 12.5, chunk_ms: int = 40) -> int:
    """Characters of a reply whose audio is exactly ``chunks`` chunks long
    (the local model: ``len(text) x audio_ms_per_char`` ms, in ``chunk_ms``
    chunks, the last one possibly shorter)."""
    if chunks < 1:
        raise ValueError("a reply has at least one chunk")
    chars = max(1, math.floor(chunks * chunk_ms / audio_ms_per_char))
    if math.ceil(chars * audio_ms_per_char / chunk_ms - 1e-9) != chunks:
        raise ValueError(
            f"no text length gives exactly {chunks} chunks of {chunk_ms} ms "
            f"at {audio_ms_per_char} ms per character"
        )
    return chars


def say_text(chars: int) -> str:
    """A ``say X`` message whose reply ``X`` has exactly ``chars`` characters
    (words, no leading or trailing space, no tool name)."""
    body = (_FILLER * (chars // len(_FILLER) + 2))[:chars]
    if chars > 1:
        body = body[0].upper() + body[1:-1] + "."
    return f"say {body}"


def tool_text(order_id: str = "A17") -> str:
    """A message that makes the local model call the tool."""
    return f'Please lookup order "{order_id}".'


def register_by_value() -> None:
    """Make Ray's cloudpickle ship this module's functions by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
