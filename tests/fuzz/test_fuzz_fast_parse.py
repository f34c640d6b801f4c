"""The audio fast paths parse exactly what the full parsers parse.

Both ends of the model socket skip the whole-message JSON parse for audio-sized
messages: the OpenAI client for a server event with a plain ``delta``
(:func:`~ray_realtime.model.conversion.parse_audio_delta`), the local model server for
an ``input_audio_buffer.append`` (:func:`~ray_realtime.local.protocol.parse_append_event`).
Each must give ``None`` (the full parser then decides) or exactly ``json.loads`` of the
message and its audio decoded as the full path decodes it, whatever the message.
Base64 is decoded strictly first, with the lenient check deciding what the strict
decoder refuses: the two must agree.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ray_realtime.exceptions import ProtocolError
from ray_realtime.local.protocol import ProtocolError as LocalProtocolError
from ray_realtime.local.protocol import expect_base64, parse_append_event
from ray_realtime.model.conversion import parse_audio_delta, server_event_to_model_events

from .common import KEY, TEXT, json_values

B64_TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
B64_ODD = st.text(alphabet="ABCz09+/=-_ \n\\\"u'é", max_size=40)
AUDIO = st.binary(max_size=3000).map(lambda b: base64.b64encode(b).decode("ascii"))
# Pieces a hostile peer might splice into a message around the key the fast path
# looks for: escapes, quotes, other "delta"/"audio" keys, broken JSON.
SPLICES = st.sampled_from(
    [
        "",
        '"delta":""',
        '"delta":"AAAA",',
        '"delt\\u0061":"",',
        '"audio":"",',
        '"audi\\u006f":"AAAA",',
        '"x":"\\"delta\\":\\"",',
        '"x":"delta",',
        '"type":"response.output_audio.delta",',
        '"type":"input_audio_buffer.append",',
        "[[[",
        "}",
        '"',
        "\\",
        " ",
        "\\ud800",
    ]
)


def _loads(message: str) -> Any:
    try:
        return json.loads(message)
    except (ValueError, RecursionError):
        return _INVALID


_INVALID = object()


def _agrees(fast: tuple[dict[str, Any], bytes] | None, message: str, key: str) -> None:
    if fast is None:
        return
    parsed, audio = fast
    full = _loads(message)
    assert full is not _INVALID, f"fast path accepted invalid JSON: {message[:200]!r}"
    assert parsed == full
    # Key order as well (the raw event is reported as parsed).
    assert list(parsed) == list(full)
    assert audio == base64.b64decode(full[key], validate=True)


def _with_delta(fields: dict[str, Any], delta: Any, ordering: int, compact: bool) -> str:
    items = list(fields.items())
    items.insert(ordering % (len(items) + 1), ("delta", delta))
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(dict(items), separators=separators)


@given(
    fields=st.dictionaries(KEY, json_values(8), max_size=6),
    delta=st.one_of(AUDIO, TEXT),
    ordering=st.integers(0, 10),
    compact=st.booleans(),
    event_type=st.sampled_from(
        ["response.output_audio.delta", "response.audio.delta", "response.output_text.delta"]
    ),
)
@example(fields={}, delta="AAAA", ordering=0, compact=True, event_type="x")
def test_delta_split_equals_the_full_parse(
    fields: dict[str, Any], delta: Any, ordering: int, compact: bool, event_type: str
) -> None:
    fields = {"type": event_type, **fields}
    fields.pop("delta", None)
    message = _with_delta(fields, delta, ordering, compact)
    _agrees(parse_audio_delta(message), message, "delta")


@given(
    before=SPLICES,
    after=SPLICES,
    inner=SPLICES,
    delta=st.one_of(AUDIO, B64_ODD),
    tail=st.sampled_from(["}", ',"item_id":"i"}', '"}', ',"delta":""}', "", ',"a":[1,{"b":2}]}']),
)
def test_delta_split_of_spliced_text(
    before: str, after: str, inner: str, delta: str, tail: str
) -> None:
    message = '{"type":"response.output_audio.delta",' + before + '"delta":"' + delta + '"' + inner
    message += ("," + after if after else "") + tail
    _agrees(parse_audio_delta(message), message, "delta")


def test_delta_split_takes_the_usual_audio_delta() -> None:
    audio = base64.b64encode(bytes(range(256)) * 8).decode("ascii")
    for separators in ((",", ":"), (", ", ": ")):
        message = json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": "event_1",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": audio,
            },
            separators=separators,
        )
        parsed = parse_audio_delta(message)
        assert parsed == (json.loads(message), bytes(range(256)) * 8)


@pytest.mark.parametrize(
    "message",
    [
        # The key appears inside a string, escaped: not the event's own delta.
        '{"type":"t","x":"\\"delta\\":\\"AAAA","delta":"BBBB"}',
        # A later duplicate wins in a full parse.
        '{"type":"t","delta":"AAAA","delta":""}',
        '{"type":"t","delta":"AAAA","delt\\u0061":""}',
        # Escapes in the delta itself.
        '{"type":"t","delta":"AA\\u0041A"}',
        '{"type":"t","delta":"AA\\"A"}',
        # Not an object, not JSON.
        '["delta":"AAAA"]',
        '{"delta":"AAAA"',
        '{"delta":"AAAA"}}',
        '{"delta": 5}',
    ],
)
def test_delta_split_leaves_odd_messages_to_the_full_parse(message: str) -> None:
    _agrees(parse_audio_delta(message), message, "delta")


@given(
    audio=st.one_of(AUDIO, B64_ODD),
    tail=st.one_of(
        st.sampled_from(
            [
                "}",
                ',"event_id":"evt_1"}',
                ',"event_id":"e\\"1"}',
                ',"event_id":"\\ud800"}',
                ',"audio":""}',
                ',"audi\\u006f":""}',
                ',"type":"response.create"}',
                ',"event_id":7}',
                ',"x":[[[[[]]]]]}',
                "",
                "}}",
            ]
        ),
        json_values(8).map(lambda v: ',"event_id":' + json.dumps(v) + "}"),
    ),
)
def test_append_fast_path_equals_the_full_parse(audio: str, tail: str) -> None:
    message = '{"type":"input_audio_buffer.append","audio":"' + audio + '"' + tail
    _agrees(parse_append_event(message), message, "audio")


def test_append_fast_path_takes_the_clients_append() -> None:
    audio = base64.b64encode(bytes(1920)).decode("ascii")
    message = f'{{"type":"input_audio_buffer.append","audio":"{audio}","event_id":"evt_rr1"}}'
    assert parse_append_event(message) == (json.loads(message), bytes(1920))
    assert parse_append_event(json.dumps(json.loads(message))) is None  # spaces: full path


def _lenient(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@given(st.one_of(B64_TEXT, B64_ODD, AUDIO, st.text(max_size=12)))
@example("AAAA====")
@example("AB==")
@example("A===")
def test_strict_base64_agrees_with_the_lenient_check(text: str) -> None:
    expected = _lenient(text)
    try:
        strict: bytes | None = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        strict = None
    if strict is not None:
        assert strict == expected  # never accepts what the check refuses
    # What the product decodes: the same bytes, or the same typed error.
    try:
        local: bytes | None = expect_base64(text, "audio")
    except LocalProtocolError as exc:
        assert exc.code == "invalid_value"
        local = None
    assert local == expected
    event = {
        "type": "response.output_audio.delta",
        "response_id": "r",
        "item_id": "i",
        "content_index": 0,
        "delta": text,
    }
    try:
        (audio,) = server_event_to_model_events(event)
        decoded: bytes | None = audio.data  # type: ignore[union-attr]
    except ProtocolError as exc:
        assert "not valid base64" in str(exc)
        decoded = None
    assert decoded == expected
