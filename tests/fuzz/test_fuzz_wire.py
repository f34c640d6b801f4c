"""Fuzzing the wire codec: valid values round-trip; any bytes decode to a value or a
``ProtocolError``, never another exception, in bounded time."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ray_realtime import wire
from ray_realtime.exceptions import ProtocolError
from ray_realtime.types.events import (
    RealtimeAudio,
    RealtimeError,
    RealtimeEventsLost,
    RealtimeHistoryUpdated,
    RealtimeRawModelEvent,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    InputText,
    RealtimeToolCallItem,
    UserMessageItem,
)
from ray_realtime.types.model_events import RealtimeModelAudioEvent, RealtimeModelRawServerEvent

DECODE_SECONDS = 1.0  # per message of at most a few KB: generous on a loaded machine
# Up to ~1,200 digits: hypothesis cannot print an int of more than 4,300 digits (the
# exact bounds are unit-tested in tests/test_wire.py).
INT_LIMIT = 1 << 4000

TEXT = st.text(max_size=30)  # valid Unicode: the codec carries str as UTF-8
PLAIN = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.integers(min_value=-INT_LIMIT, max_value=INT_LIMIT - 1),
        st.floats(allow_nan=False),
        TEXT,
        st.binary(max_size=64),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(TEXT, children, max_size=6)
    ),
    max_leaves=40,
)
OPT_TEXT = st.one_of(st.none(), TEXT)
ITEMS = st.one_of(
    st.builds(
        UserMessageItem,
        item_id=TEXT,
        previous_item_id=OPT_TEXT,
        content=st.lists(
            st.one_of(
                st.builds(InputText, text=OPT_TEXT), st.builds(InputAudio, transcript=OPT_TEXT)
            ),
            max_size=3,
        ),
    ),
    st.builds(
        AssistantMessageItem,
        item_id=TEXT,
        status=st.sampled_from([None, "in_progress", "completed", "incomplete"]),
        content=st.lists(
            st.one_of(
                st.builds(AssistantText, text=OPT_TEXT),
                st.builds(AssistantAudio, transcript=OPT_TEXT),
            ),
            max_size=3,
        ),
    ),
    st.builds(RealtimeToolCallItem, item_id=TEXT, arguments=TEXT, name=TEXT, output=OPT_TEXT),
)
AUDIO = st.builds(
    RealtimeModelAudioEvent,
    data=st.binary(max_size=256),
    response_id=TEXT,
    item_id=TEXT,
    content_index=st.integers(-(2**63), 2**64 - 1),
)
EVENTS = st.one_of(
    st.builds(RealtimeAudio, audio=AUDIO, item_id=TEXT, content_index=st.integers(0, 9)),
    st.builds(RealtimeError, error=st.dictionaries(TEXT, PLAIN, max_size=4)),
    st.builds(RealtimeHistoryUpdated, history=st.lists(ITEMS, max_size=5)),
    st.builds(
        RealtimeRawModelEvent,
        data=st.builds(RealtimeModelRawServerEvent, data=st.dictionaries(TEXT, PLAIN, max_size=5)),
    ),
    st.builds(RealtimeEventsLost, missed=st.integers(0, 2**40)),
)
VALUES = st.one_of(PLAIN, EVENTS, ITEMS, st.lists(EVENTS, max_size=8))


def _decode_bounded(data: bytes) -> Any:
    start = time.monotonic()
    try:
        return wire.decode(data)
    except ProtocolError:
        return None
    finally:
        assert time.monotonic() - start < DECODE_SECONDS


@given(value=VALUES)
def test_valid_values_roundtrip(value: Any) -> None:
    assert wire.decode(wire.encode(value)) == value


@given(events=st.lists(EVENTS, max_size=10), last_seq=st.integers(0, 2**63), closed=st.booleans())
def test_event_batches_roundtrip(events: list[Any], last_seq: int, closed: bool) -> None:
    data = wire.encode_batch(events, last_seq, 0, closed)
    assert wire.decode_batch(data) == (events, last_seq, 0, closed)


@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_to_a_value_or_a_protocol_error(data: bytes) -> None:
    _decode_bounded(data)


@given(
    value=st.lists(EVENTS, min_size=1, max_size=6),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "cut"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_damaged_messages_decode_to_a_value_or_a_protocol_error(
    value: list[Any], edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(wire.encode_events(value))
    for kind, where, byte in edits:
        if not data:
            break
        i = where % len(data)
        if kind == "flip":
            data[i] = byte
        elif kind == "insert":
            data.insert(i, byte)
        elif kind == "delete":
            del data[i]
        else:
            del data[i:]
    _decode_bounded(bytes(data))
