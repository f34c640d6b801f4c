"""Shared by the fuzz tests: hostile JSON and text strategies, an ERROR-record catcher."""

from __future__ import annotations

import json
import logging
from typing import Any

from hypothesis import strategies as st

# Text that reaches odd corners: lone surrogates (written as \uXXXX escapes by
# json.dumps), control characters, astral characters, long whitespace runs, quotes and
# separators that the local model's argument extraction reacts to.
ANY_CHAR = st.characters(codec=None)  # every code point, lone surrogates included
FRAGMENTS = st.sampled_from(
    [
        " ",
        "  " * 200,
        "\t",
        "\n",
        '"',
        "=",
        ":",
        "key=",
        'a="b"',
        "true",
        "no",
        "42",
        "-1.5",
        "[[[[",
        "]]",
        "{}",
        "\ud800",
        "\udfff",
        "\U0001f600",
        "say ",
        "get weather",
        "_",
        "-",
    ]
)
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.one_of(FRAGMENTS, st.text(ANY_CHAR, max_size=8)), max_size=12).map("".join),
)
KEY = st.one_of(st.text(ANY_CHAR, max_size=8), st.sampled_from(["type", "event_id", "", " "]))

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, 2**64, -(2**63) - 1, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON value (NaN and infinities included, as Python's json writes them)."""
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(KEY, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


def deep_json_text(depth: int, opener: str) -> str:
    """Text of ``depth`` nested arrays (``[``) or objects (``{``), closed or not."""
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def dumps(value: Any) -> str:
    """JSON text as a hostile peer may write it (ASCII, NaN allowed)."""
    return json.dumps(value)


class ErrorRecords(logging.Handler):
    """Collects the ERROR records of a logger (attached for a whole module)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
