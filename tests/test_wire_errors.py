"""The project's exceptions cross the wire by name and arguments, never pickled."""

from __future__ import annotations

import msgpack
import pytest

from ray_realtime import exceptions as exc_module
from ray_realtime import wire
from ray_realtime.exceptions import (
    InputTooLargeError,
    ProtocolError,
    RayRealtimeError,
    SerializationError,
    SessionAccessError,
)
from tests.test_exceptions import ALL_CLASSES, sample


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_exception_round_trips(cls: type[RayRealtimeError]) -> None:
    error, attributes = sample(cls)
    back = wire.decode(wire.encode({"ack": 1, "error": error}))["error"]
    assert type(back) is cls
    assert str(back) == str(error) and back.args == error.args
    for name, value in attributes.items():
        assert getattr(back, name) == value


def test_unusual_arguments_travel_as_text() -> None:
    error = exc_module.UserError("bad", {"a": object()})
    back = wire.decode(wire.encode(error))
    assert type(back) is exc_module.UserError and back.args == (str(error),)


def _ext(payload: object) -> bytes:
    return bytes(msgpack.packb(msgpack.ExtType(4, msgpack.packb(payload))))


@pytest.mark.parametrize(
    "payload",
    [
        ["ValueError", ["x"]],  # not ours
        ["os.system", ["true"]],
        ["SessionAccessError", [["nested"]]],  # arguments must be plain
        ["SessionAccessError", ["a"] * 9],
        ["InputTooLargeError", ["a", 1, 2, 3]],  # wrong arity for the class
        ["SessionAccessError"],
        ["UserError", [5]],  # the message must be text
        ["x" * 10_000, []],
        "SessionAccessError",
    ],
)
def test_anything_else_is_a_protocol_error(payload: object) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.decode(_ext(payload))
    assert len(str(info.value)) < 200


def test_only_our_exceptions_encode() -> None:
    with pytest.raises(SerializationError):
        wire.encode(ValueError("x"))
    back = wire.decode(wire.encode(SessionAccessError("no", "rt_1")))
    assert isinstance(back, SessionAccessError) and back.session_id == "rt_1"
    assert wire.decode(wire.encode(InputTooLargeError("big", 3, 2))).limit == 2
