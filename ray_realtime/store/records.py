"""What the session store keeps, and the writes that change it.

A session's durable state is a :class:`SessionState`: its completed history
items, the current agent (:class:`AgentRecord`), the model settings, the event
sequence number, its :class:`Secrets` and its readers' positions. Audio is not
stored. History items are opaque to the store: each is a :class:`StoredItem`,
an id and bytes the caller encoded (:meth:`StoredItem.from_dict` packs a plain
dict with msgpack), so the store needs none of the runner's item classes.

Every change is one of the :data:`StoreOp` classes (a closed union). A backend
applies a sequence of them as one batch; the write-behind writer queues and
coalesces them. Every op is an upsert and idempotent (see
:mod:`ray_realtime.store.state` for the rules), so a batch may be retried
after a failure without duplicating anything.

Secrets are kept by the store but never shown: :class:`Secrets` has a ``repr``
that names the keys and hides the values, and so have the records and ops that
carry it.

The msgpack codec at the end (:func:`encode_ops`, :func:`decode_ops`,
:func:`encode_state`, :func:`decode_state`) is what crosses to the store actor;
a malformed payload raises :class:`~ray_realtime.exceptions.StoreError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn, TypeAlias

import msgpack

from ray_realtime.exceptions import (
    InputTooLargeError,
    SerializationError,
    StoreError,
    UserError,
)

__all__ = [
    "MAX_ID_CHARS",
    "MAX_ITEM_BYTES",
    "AgentRecord",
    "DeleteItem",
    "DeleteSession",
    "PutItem",
    "PutSession",
    "RemoveReader",
    "Secrets",
    "SessionState",
    "SetReader",
    "StoreOp",
    "StoredItem",
    "UpdateSession",
    "decode_ops",
    "decode_state",
    "encode_ops",
    "encode_state",
    "pack_value",
    "unpack_value",
]

MAX_ID_CHARS = 256
"""Longest session, item or reader id the store accepts."""

MAX_ITEM_BYTES = 16 * 1024 * 1024
"""Largest encoded history item the store accepts (transcripts, not audio)."""


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"the {what} must be a non-empty string, got {type(value).__name__}")
    if len(value) > MAX_ID_CHARS:
        raise InputTooLargeError(
            f"the {what} is {len(value)} characters long, over {MAX_ID_CHARS}",
            len(value),
            MAX_ID_CHARS,
        )
    return value


def _check_seq(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"the {what} must be an integer >= 0, got {value!r}")
    return value


def pack_value(value: Any, what: str = "value") -> bytes:
    """``value`` as msgpack bytes; :class:`SerializationError` if it cannot be."""
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"the {what} cannot be stored: {exc}") from exc


def unpack_value(data: bytes, what: str = "value") -> Any:
    """The value msgpack ``data`` holds; :class:`StoreError` if it is malformed."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise StoreError(f"the stored {what} cannot be decoded: {type(exc).__name__}") from exc


class Secrets(Mapping[str, str]):
    """A session's secrets (name -> value), kept by the store, never shown.

    ``repr`` and ``str`` name the keys only, so logging a record that holds
    secrets cannot leak them. Read a value by key, or all with :meth:`reveal`.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        checked: dict[str, str] = {}
        for key, value in (values or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise UserError("secrets must map strings to strings")
            checked[key] = value
        self._values = checked

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secrets):
            return self._values == other._values
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{k}=***' for k in sorted(self._values))})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secrets], tuple[dict[str, str]]]:
        return (Secrets, (dict(self._values),))

    def reveal(self) -> dict[str, str]:
        """The values in clear (a copy); never log the result."""
        return dict(self._values)


@dataclass(frozen=True)
class AgentRecord:
    """The session's current agent: its name and the agent registry's version."""

    name: str
    version: int = 0

    def __post_init__(self) -> None:
        _check_id(self.name, "agent name")
        _check_seq(self.version, "agent version")


@dataclass(frozen=True)
class StoredItem:
    """One completed history item, encoded by the caller.

    ``data`` is opaque to the store. Items carry their own ordering hints
    (``previous_item_id``) inside ``data``; the store returns items in the order
    they were first written and leaves re-applying such hints to the caller.
    """

    item_id: str
    data: bytes

    def __post_init__(self) -> None:
        _check_id(self.item_id, "item id")
        if not isinstance(self.data, bytes):
            raise UserError(f"a stored item's data must be bytes, got {type(self.data).__name__}")
        if len(self.data) > MAX_ITEM_BYTES:
            raise InputTooLargeError(
                f"history item {self.item_id} is {len(self.data)} bytes, over {MAX_ITEM_BYTES}",
                len(self.data),
                MAX_ITEM_BYTES,
            )

    @classmethod
    def from_dict(cls, item_id: str, item: Mapping[str, Any]) -> StoredItem:
        """An item from a plain dict, packed with msgpack."""
        return cls(item_id, pack_value(dict(item), f"history item {item_id}"))

    def to_dict(self) -> dict[str, Any]:
        """The plain dict :meth:`from_dict` packed."""
        value = unpack_value(self.data, f"history item {self.item_id}")
        if not isinstance(value, dict):
            raise StoreError(f"history item {self.item_id} does not hold a dict")
        return value


@dataclass(frozen=True)
class SessionState:
    """Everything the store keeps about one session (what :meth:`load` returns).

    ``items`` are in the order they were first written; ``readers`` maps a
    reader id to the last event sequence number it received.
    """

    session_id: str
    agent: AgentRecord | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0
    secrets: Secrets = field(default_factory=Secrets)
    readers: Mapping[str, int] = field(default_factory=dict)
    items: tuple[StoredItem, ...] = ()

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")
        _check_seq(self.seq, "event sequence number")
        if not isinstance(self.secrets, Secrets):
            object.__setattr__(self, "secrets", Secrets(self.secrets))
        for reader_id, seq in self.readers.items():
            _check_id(reader_id, "reader id")
            _check_seq(seq, "reader position")
        object.__setattr__(self, "items", tuple(self.items))
        pack_value(dict(self.settings), "model settings")


# ------------------------------------------------------------------ the ops


@dataclass(frozen=True)
class PutSession:
    """Write a session's whole state, replacing whatever was stored for it."""

    kind: ClassVar[Literal["put_session"]] = "put_session"
    state: SessionState

    @property
    def session_id(self) -> str:
        """The session the op writes."""
        return self.state.session_id


@dataclass(frozen=True)
class UpdateSession:
    """Set some of a session's fields; a field left ``None`` keeps its value."""

    kind: ClassVar[Literal["update_session"]] = "update_session"
    session_id: str
    agent: AgentRecord | None = None
    settings: Mapping[str, Any] | None = None
    seq: int | None = None
    secrets: Secrets | None = None

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")
        if self.seq is not None:
            _check_seq(self.seq, "event sequence number")
        if self.settings is not None:
            pack_value(dict(self.settings), "model settings")
        if self.secrets is not None and not isinstance(self.secrets, Secrets):
            object.__setattr__(self, "secrets", Secrets(self.secrets))
        if self.agent is not None and not isinstance(self.agent, AgentRecord):
            raise UserError("agent must be an AgentRecord")

    def merged(self, later: UpdateSession) -> UpdateSession:
        """One update with the effect of this one followed by ``later``."""
        return UpdateSession(
            self.session_id,
            later.agent if later.agent is not None else self.agent,
            later.settings if later.settings is not None else self.settings,
            later.seq if later.seq is not None else self.seq,
            later.secrets if later.secrets is not None else self.secrets,
        )


@dataclass(frozen=True)
class DeleteSession:
    """Forget a session and everything stored for it."""

    kind: ClassVar[Literal["delete_session"]] = "delete_session"
    session_id: str

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")


@dataclass(frozen=True)
class PutItem:
    """Append a history item, or replace in place the stored item with its id."""

    kind: ClassVar[Literal["put_item"]] = "put_item"
    session_id: str
    item: StoredItem

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")
        if not isinstance(self.item, StoredItem):
            raise UserError("item must be a StoredItem")


@dataclass(frozen=True)
class DeleteItem:
    """Remove a history item (a no-op when it is not stored)."""

    kind: ClassVar[Literal["delete_item"]] = "delete_item"
    session_id: str
    item_id: str

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")
        _check_id(self.item_id, "item id")


@dataclass(frozen=True)
class SetReader:
    """Record the last event sequence number a reader received."""

    kind: ClassVar[Literal["set_reader"]] = "set_reader"
    session_id: str
    reader_id: str
    seq: int

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")
        _check_id(self.reader_id, "reader id")
        _check_seq(self.seq, "reader position")


@dataclass(frozen=True)
class RemoveReader:
    """Forget a reader's position (a no-op when it has none)."""

    kind: ClassVar[Literal["remove_reader"]] = "remove_reader"
    session_id: str
    reader_id: str

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session id")
        _check_id(self.reader_id, "reader id")


StoreOp: TypeAlias = (
    PutSession | UpdateSession | DeleteSession | PutItem | DeleteItem | SetReader | RemoveReader
)
"""One change to the store (a closed union: dispatch ends in ``assert_never``)."""


def assert_never(value: NoReturn) -> NoReturn:
    """Exhaustive dispatch over :data:`StoreOp`, checked by mypy
    (``typing.assert_never`` needs Python 3.11)."""
    raise AssertionError(f"unhandled store op {type(value).__name__}")


# ----------------------------------------------------------------- the codec


def _agent_to_wire(agent: AgentRecord | None) -> list[Any] | None:
    return None if agent is None else [agent.name, agent.version]


def _agent_from_wire(value: Any) -> AgentRecord | None:
    if value is None:
        return None
    name, version = value
    return AgentRecord(name, version)


def _state_to_wire(state: SessionState) -> list[Any]:
    return [
        state.session_id,
        _agent_to_wire(state.agent),
        dict(state.settings),
        state.seq,
        state.secrets.reveal(),
        dict(state.readers),
        [[item.item_id, item.data] for item in state.items],
    ]


def _state_from_wire(value: Any) -> SessionState:
    session_id, agent, settings, seq, secrets, readers, items = value
    return SessionState(
        session_id,
        _agent_from_wire(agent),
        settings,
        seq,
        Secrets(secrets),
        readers,
        tuple(StoredItem(item_id, data) for item_id, data in items),
    )


def _op_to_wire(op: StoreOp) -> list[Any]:
    if isinstance(op, PutSession):
        return [op.kind, _state_to_wire(op.state)]
    if isinstance(op, UpdateSession):
        return [
            op.kind,
            op.session_id,
            _agent_to_wire(op.agent),
            None if op.settings is None else dict(op.settings),
            op.seq,
            None if op.secrets is None else op.secrets.reveal(),
        ]
    if isinstance(op, DeleteSession):
        return [op.kind, op.session_id]
    if isinstance(op, PutItem):
        return [op.kind, op.session_id, op.item.item_id, op.item.data]
    if isinstance(op, DeleteItem):
        return [op.kind, op.session_id, op.item_id]
    if isinstance(op, SetReader):
        return [op.kind, op.session_id, op.reader_id, op.seq]
    if isinstance(op, RemoveReader):
        return [op.kind, op.session_id, op.reader_id]
    raise UserError(f"not a store op: {type(op).__name__}")


def _op_from_wire(value: Any) -> StoreOp:
    kind, *rest = value
    if kind == "put_session":
        return PutSession(_state_from_wire(rest[0]))
    if kind == "update_session":
        session_id, agent, settings, seq, secrets = rest
        return UpdateSession(
            session_id,
            _agent_from_wire(agent),
            settings,
            seq,
            None if secrets is None else Secrets(secrets),
        )
    if kind == "delete_session":
        return DeleteSession(rest[0])
    if kind == "put_item":
        return PutItem(rest[0], StoredItem(rest[1], rest[2]))
    if kind == "delete_item":
        return DeleteItem(rest[0], rest[1])
    if kind == "set_reader":
        return SetReader(rest[0], rest[1], rest[2])
    if kind == "remove_reader":
        return RemoveReader(rest[0], rest[1])
    raise StoreError(f"unknown store op kind {kind!r}")


def encode_ops(ops: Sequence[StoreOp]) -> bytes:
    """A batch of ops as msgpack bytes."""
    return pack_value([_op_to_wire(op) for op in ops], "batch of store ops")


def decode_ops(data: bytes) -> list[StoreOp]:
    """The ops :func:`encode_ops` packed; :class:`StoreError` if malformed."""
    value = unpack_value(data, "batch of store ops")
    try:
        return [_op_from_wire(entry) for entry in value]
    except StoreError:
        raise
    except (TypeError, ValueError, LookupError, UserError) as exc:
        raise StoreError(f"a malformed batch of store ops: {type(exc).__name__}") from exc


def encode_state(state: SessionState) -> bytes:
    """A session's state as msgpack bytes."""
    return pack_value(_state_to_wire(state), "session state")


def decode_state(data: bytes) -> SessionState:
    """The state :func:`encode_state` packed; :class:`StoreError` if malformed."""
    value = unpack_value(data, "session state")
    try:
        return _state_from_wire(value)
    except (TypeError, ValueError, LookupError, UserError) as exc:
        raise StoreError(f"a malformed session state: {type(exc).__name__}") from exc
