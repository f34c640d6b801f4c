"""The wire codec: how values cross an actor boundary (msgpack, no pickle).

What crosses
    Any nesting of ``None``, ``bool``, ``int`` (up to :data:`MAX_INT_BYTES` bytes in
    two's complement), ``float``, ``str``,
    ``bytes``, ``list`` / ``tuple``, ``dict`` with ``str`` keys, the event and
    input dataclasses of :mod:`ray_realtime.types.events`,
    :mod:`ray_realtime.types.model_events` and :mod:`ray_realtime.types.model_inputs`
    (listed explicitly in :data:`REGISTRY`), and the history items of
    :mod:`ray_realtime.types.items`. Anything else fails to encode with
    :class:`~ray_realtime.exceptions.SerializationError` naming its type (a
    subclass of a registered dataclass too: lookup is by exact class).

Format
    Plain msgpack (``use_bin_type=True``), so ``bytes`` travel as msgpack
    *bin*, raw, never base64, and ``str`` as msgpack *str*. Two extension
    types carry the rest:

    * ext ``1``, a dataclass: the payload is a msgpack array ``[tag, v1, v2,
      ...]`` with the field values in field order, where ``tag`` is the
      class's registry tag (its class name). A trailing ``type`` field whose
      annotation is a one-value ``Literal`` is a constant implied by the tag,
      so it is not sent; decode sets it to that constant, so a peer cannot
      make an event lie about its ``type``. Nested dataclasses nest as ext 1.
    * ext ``2``, a history item: the payload is the msgpack map of
      :func:`~ray_realtime.types.items.item_to_dict`; decode rebuilds it with
      :func:`~ray_realtime.types.items.item_from_dict` (pydantic validates).
    * ext ``3``, an integer outside msgpack's 64-bit range (a model server may
      send one in JSON): big-endian two's complement bytes.
    * ext ``4``, an exception of :mod:`ray_realtime.exceptions` (the classes
      in its ``__all__``, by exact class): the payload is ``[class name,
      [args...]]`` with plain scalar arguments (an error whose arguments are
      not plain sends ``[str(error)]``); decode looks the name up in that
      allow-list and calls the class with the arguments. So a typed error
      crosses a socket without pickle.

    Dataclasses are rebuilt without running ``__init__`` and without any type
    validation: decode checks the structure (known tag, field count), not the
    field types. Peers are processes of the same cluster, and the bounds below
    protect memory, not semantics.

    Tuples come back as lists, except the value of a dataclass field annotated
    ``tuple[...]`` (or ``tuple[...] | None``), which comes back as a tuple
    (its elements, if lists, stay lists). ``bytearray`` and ``memoryview``
    come back as ``bytes``; subclasses of ``int``, ``str``, ``dict``, ...
    (``IntEnum``, ``StrEnum``, ``OrderedDict``) come back as the plain type.
    msgpack's reserved timestamp extension (-1) is never produced by
    :func:`encode`; if a peer sends one it decodes to ``msgpack.Timestamp``.

    ``OutputGuardrailResult.output_info`` is the guardrail's own data; its
    producer already makes it plain, but if it still holds something that
    cannot be encoded, that one field is sent as the value's ``repr`` rather
    than failing the whole batch.

Bounds
    A message is at most :data:`MAX_MESSAGE_BYTES` (64 MiB): :func:`encode`
    refuses to produce a larger one (``SerializationError``) and
    :func:`decode` refuses a larger input before parsing it. Inside a message
    every declared length (str, bin, ext, array, map) is bounded by the bytes
    actually present (``max_*_len`` set to the size of the buffer or ext
    payload being read; maps to half of it, as an entry takes at least two
    bytes), so a hostile length prefix is rejected before anything is
    allocated for it, and decoded memory stays proportional to the input.
    Nesting: at most :data:`MAX_DEPTH` (16) dataclasses/items inside each
    other (session events nest 3 deep). Each such level costs the msgpack
    unpacker a large C stack frame, so an unbounded depth would crash the
    process before Python's recursion limit; 16 levels fit in a 1 MiB thread
    stack. Encode refuses
    deeper values too, so whatever it produces decodes. Plain containers nest
    up to msgpack's own limits (511 on encode, 1024 on decode).
    Expansion: an array or map takes ~60 bytes of memory for as little as one
    byte of input, so a message may hold at most :data:`MAX_CONTAINERS_BASE`
    arrays and maps plus one per :data:`BYTES_PER_CONTAINER` bytes; they are
    counted as they are built, and the decode stops at the first one over
    (other values take at most ~20 bytes of memory per byte of input).
    Integers: at most :data:`MAX_INT_BYTES`. Violations are
    ``SerializationError`` / ``ProtocolError``.
    Map keys must be ``str`` (``strict_map_key``); encode checks keys up front
    so that a bad key fails at the sender, not at the receiver.

Errors
    Encoding raises only :class:`~ray_realtime.exceptions.SerializationError`;
    decoding raises only :class:`~ray_realtime.exceptions.ProtocolError` (a
    truncated, malformed, oversized or over-nested message, an unknown
    extension code or tag, a wrong field count, an invalid history item):
    never a bare msgpack exception.

Why msgpack
    Audio is most of the traffic: msgpack carries it as raw bytes, several
    times faster than JSON with base64 audio (which also adds a third to the
    size), and close to pickle (``bench/bench_wire.py`` measures the three;
    ``docs/benchmarks.md`` has the figures). Unlike pickle, decoding cannot
    run code or build arbitrary classes: only registered ones.

History item caches
    Items are replaced, not changed, so an item that is encoded again (in a
    history snapshot, a ``history_updated`` with the whole history) comes from
    a cache bounded by bytes (:data:`ITEM_CACHE_BYTES`: small, since a
    session's log sends history deltas, each item version once; an item over
    :data:`ITEM_CACHE_MAX_ITEM_BYTES` is not cached). Decoding caches nothing
    across messages (a cache of versions that never arrive again only kept
    them alive for the garbage collector to walk); within one message an item
    is decoded once and shared between its events, as consecutive in-process
    history events share items, so what one reader does to its items cannot
    show in another's.

Speed
    Each registered class gets, once at import, a generated encoder (reads
    its fields by name into the payload list) and decoder (checks the count,
    then sets the slots directly): no ``dataclasses.fields`` or other
    reflection per value, and no pydantic for dataclasses.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from copy import deepcopy as _deepcopy
from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError

from ray_realtime import exceptions as _exceptions
from ray_realtime.exceptions import ProtocolError, SerializationError
from ray_realtime.types import events as _session_events
from ray_realtime.types import model_events as _model_events
from ray_realtime.types import model_inputs as _model_inputs
from ray_realtime.types.items import (
    AssistantMessageItem,
    RealtimeToolCallItem,
    SystemMessageItem,
    UserMessageItem,
    item_from_dict,
    item_to_dict,
)
from ray_realtime.types.log_events import HistoryDelta as _HistoryDelta

__all__ = [
    "BYTES_PER_CONTAINER",
    "ITEM_CACHE_BYTES",
    "ITEM_CACHE_MAX_ITEM_BYTES",
    "MAX_CONTAINERS_BASE",
    "MAX_DEPTH",
    "MAX_INT_BYTES",
    "MAX_MESSAGE_BYTES",
    "REGISTRY",
    "decode",
    "decode_batch",
    "decode_events",
    "encode",
    "encode_batch",
    "encode_events",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message :func:`encode` produces and :func:`decode` accepts (64 MiB)."""

MAX_DEPTH = 16
"""Most dataclasses/items nested in each other in one message (events nest 3 deep)."""

MAX_INT_BYTES = 4096
"""Largest integer that crosses, in bytes of two's complement (JSON's own limit of
4,300 digits is about 1,800 bytes)."""

MAX_CONTAINERS_BASE = 4096
"""Arrays and maps any message may hold, whatever its size."""

BYTES_PER_CONTAINER = 8
"""Beyond :data:`MAX_CONTAINERS_BASE`, one more array or map per this many bytes."""

ITEM_CACHE_BYTES = 1024 * 1024
"""Memory the encoder's history item cache may hold, counted as twice the encoded size
of its items: the bytes and the item object."""

ITEM_CACHE_MAX_ITEM_BYTES = 128 * 1024
"""An encoded history item larger than this is never cached."""

_EXT_DATACLASS = 1
_EXT_ITEM = 2
_EXT_INT = 3

# Every dataclass that may cross, explicitly. A test checks that each dataclass
# in the ``__all__`` of the three modules is here, so a new event type cannot
# be forgotten. The tag is the class name: if a class is ever renamed, register
# it under its old name to keep talking to peers of the previous version.
_DATACLASSES: tuple[type[Any], ...] = (
    # types/events.py: session events and the references they hold
    _session_events.AgentRef,
    _session_events.ToolRef,
    _session_events.GuardrailRef,
    _session_events.OutputGuardrailResult,
    _session_events.RealtimeAgentStartEvent,
    _session_events.RealtimeAgentEndEvent,
    _session_events.RealtimeHandoffEvent,
    _session_events.RealtimeToolStart,
    _session_events.RealtimeToolEnd,
    _session_events.RealtimeToolApprovalRequired,
    _session_events.RealtimeRawModelEvent,
    _session_events.RealtimeAudio,
    _session_events.RealtimeAudioEnd,
    _session_events.RealtimeAudioInterrupted,
    _session_events.RealtimeError,
    _session_events.RealtimeHistoryUpdated,
    _session_events.RealtimeHistoryAdded,
    _session_events.RealtimeGuardrailTripped,
    _session_events.RealtimeInputAudioTimeoutTriggered,
    _session_events.RealtimeEventsLost,
    _session_events.RealtimeSessionRecovered,
    _session_events.UsageTotals,
    _session_events.SessionUsage,
    _session_events.RealtimeUsageUpdated,
    # types/log_events.py: the session log's history delta (internal event)
    _HistoryDelta,
    # types/model_events.py: model events
    _model_events.RealtimeModelErrorEvent,
    _model_events.RealtimeModelToolCallEvent,
    _model_events.RealtimeModelAudioEvent,
    _model_events.RealtimeModelAudioInterruptedEvent,
    _model_events.RealtimeModelAudioDoneEvent,
    _model_events.RealtimeModelInputAudioTranscriptionCompletedEvent,
    _model_events.RealtimeModelInputAudioTimeoutTriggeredEvent,
    _model_events.RealtimeModelTranscriptDeltaEvent,
    _model_events.RealtimeModelItemUpdatedEvent,
    _model_events.RealtimeModelItemDeletedEvent,
    _model_events.RealtimeModelConnectionStatusEvent,
    _model_events.RealtimeModelTurnStartedEvent,
    _model_events.RealtimeModelTurnEndedEvent,
    _model_events.RealtimeModelOtherEvent,
    _model_events.RealtimeModelExceptionEvent,
    _model_events.RealtimeModelRawServerEvent,
    _model_events.RealtimeModelEndOfStreamEvent,
    _model_events.RealtimeModelOutputTextDeltaEvent,
    _model_events.RealtimeModelCachedTokensDetails,
    _model_events.RealtimeModelInputTokensDetails,
    _model_events.RealtimeModelOutputTokensDetails,
    _model_events.RealtimeModelUsageEvent,
    # types/model_inputs.py: what the session asks the model layer to send
    _model_inputs.RealtimeModelSendRawMessage,
    _model_inputs.RealtimeModelSendUserInput,
    _model_inputs.RealtimeModelSendAudio,
    _model_inputs.RealtimeModelSendToolOutput,
    _model_inputs.RealtimeModelSendInterrupt,
    _model_inputs.RealtimeModelSendSessionUpdate,
)

# History items (pydantic): the concrete classes of ``RealtimeItem``.
_ITEM_CLASSES: tuple[type[BaseModel], ...] = (
    SystemMessageItem,
    UserMessageItem,
    AssistantMessageItem,
    RealtimeToolCallItem,
)

# Fields holding arbitrary user data: sent as ``repr`` if they cannot be sent.
_LENIENT_FIELDS: dict[type[Any], frozenset[str]] = {
    _session_events.OutputGuardrailResult: frozenset({"output_info"}),
}

_Encoder = Callable[[Any, "_Encoding"], msgpack.ExtType]
_Decoder = Callable[[list[Any]], Any]

_ENCODERS: dict[type[Any], _Encoder] = {}
_DECODERS: dict[str, _Decoder] = {}
_TAGS: dict[str, type[Any]] = {}

REGISTRY: Mapping[str, type[Any]] = types.MappingProxyType(_TAGS)
"""Tag → dataclass of every registered dataclass (read-only view)."""

_Packer = msgpack.Packer
_unpackb = msgpack.unpackb
_ExtType = msgpack.ExtType
_CONTAINERS = (dict, list, tuple)
# Initial buffer of every packer (it grows as needed). msgpack.packb starts
# each call with a 256 KiB buffer; allocating (and page-faulting) that for
# each small audio payload dominated the encode time of a batch.
_PAYLOAD_BUFFER = 4096
_PLAIN_NAMES = frozenset({"str", "int", "float", "bool", "bytes", "None"})


# --------------------------------------------------------------------------- encode


def _type_name(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class _Encoding:
    """The state of one encode call: how many dataclasses/items deep it is.

    Per call, not per module or thread, so concurrent encodes cannot disturb
    each other's count.
    """

    __slots__ = ("default", "depth")

    def __init__(self) -> None:
        self.depth = 0
        # msgpack's ``default``, bound once and handed to every nested packer.
        self.default: Callable[[Any], msgpack.ExtType] = self._default

    def _default(self, obj: Any) -> msgpack.ExtType:
        """Called by msgpack for every value it cannot pack itself."""
        try:
            encoder = _ENCODERS[type(obj)]
        except KeyError:
            if isinstance(obj, int) and not isinstance(obj, bool):
                return _encode_int(obj)  # msgpack calls us for ints beyond 64 bits
            raise SerializationError(
                f"cannot encode a value of type {_type_name(obj)}: only plain data "
                "(None, bool, int, float, str, bytes, list, tuple, dict with str keys), "
                "registered event/input dataclasses and history items can cross"
            ) from None
        depth = self.depth
        if depth >= MAX_DEPTH:
            raise SerializationError(
                f"cannot encode: more than {MAX_DEPTH} dataclasses/items nested in each other"
            )
        self.depth = depth + 1
        ext = encoder(obj, self)
        self.depth = depth  # not restored on error: the whole encode fails
        return ext

    def packer(self) -> msgpack.Packer:
        # use_bin_type: bytes -> msgpack bin, str -> msgpack str; raw bytes stay raw.
        # Spelled out again in the generated encoders (a **options call costs more).
        return _Packer(default=self.default, use_bin_type=True, buf_size=_PAYLOAD_BUFFER)


def _check_keys(value: Any) -> Any:
    """Raise if a dict inside ``value`` has a non-``str`` key; return ``value``.

    Only containers are walked; anything else is left to the packer (which
    calls the encoders of dataclasses and items, and those check their own).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(
                    f"cannot encode a dict key of type {_type_name(key)} ({key!r}): "
                    "keys must be str"
                )
            if isinstance(item, _CONTAINERS):
                _check_keys(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, _CONTAINERS):
                _check_keys(item)
    return value


def _plain_or_repr(value: Any, state: _Encoding) -> Any:
    """``value`` if it can be encoded, else its ``repr`` (for user data fields)."""
    depth = state.depth
    try:
        _check_keys(value)
        state.packer().pack(value)
    except (SerializationError, TypeError, ValueError, OverflowError, RecursionError):
        state.depth = depth
        try:
            return repr(value)
        except Exception:
            return f"<unrepresentable {_type_name(value)}>"
    return value


def _encode_int(value: int) -> msgpack.ExtType:
    # Two's complement: the magnitude bits plus a sign bit (-2**(8k-1) fits in k bytes).
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    if size > MAX_INT_BYTES:
        raise SerializationError(
            f"cannot encode an integer of {size} bytes: at most {MAX_INT_BYTES} bytes cross"
        )
    return _ExtType(_EXT_INT, value.to_bytes(size, "big", signed=True))


class _ByteCache:
    """A map bounded by the bytes of its entries (not their count), oldest out first.

    Lookups take no lock (one dict read); insertions take one, as a handle may decode
    in several threads of one process.
    """

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if size > self.max_entry_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


# History events carry the whole history, and history items are replaced, not
# changed, when they update (see ray_realtime.types.items): so an item's bytes
# are encoded once and decoded once, then served from these caches. Without
# them every history event paid pydantic dump + validate for every item of the
# history on both sides of the wire. An entry's size counts its payload twice:
# the bytes, and the item object, which takes about as much again.
_item_bytes = _ByteCache(ITEM_CACHE_BYTES, 2 * ITEM_CACHE_MAX_ITEM_BYTES)  # id -> (item, payload)
# The decoder's cache is off: since the history travels as deltas, each item
# version arrives once, and caching it kept every version alive long enough to
# reach the garbage collector's oldest generation - a reader's process spent
# more per turn the longer its session ran (bench/bench_long.py).
_item_objects = _ByteCache(0, 0)  # payload -> item


def _encode_item(item: Any, state: _Encoding) -> msgpack.ExtType:
    key = id(item)
    cached = _item_bytes.get(key)
    if cached is not None and cached[0] is item:
        return _ExtType(_EXT_ITEM, cached[1])
    data = item_to_dict(item)
    _check_keys(data)  # extra fields (extra="allow") may hold anything
    payload = state.packer().pack(data)
    _item_bytes.put(key, (item, payload), 2 * len(payload))
    return _ExtType(_EXT_ITEM, payload)


_object_new = object.__new__
_object_setattr = object.__setattr__


def _copy_model(model: Any) -> Any:
    """A shallow copy of a pydantic model: what ``BaseModel.__copy__`` does, minus its
    generic checks (this runs for every cached item a decode hands out)."""
    copy = _object_new(model.__class__)
    _object_setattr(copy, "__dict__", model.__dict__.copy())
    extra = model.__pydantic_extra__
    # Extra fields (extra="allow") may hold anything: copied deeply, when present.
    _object_setattr(copy, "__pydantic_extra__", _deepcopy(extra) if extra else extra)
    _object_setattr(copy, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    private = model.__pydantic_private__
    _object_setattr(copy, "__pydantic_private__", None if private is None else dict(private))
    return copy


def _copy_item(item: Any) -> Any:
    """A copy of a cached history item that shares nothing mutable with it: items hold
    strings and a list of content parts holding strings (and maybe extra fields)."""
    copy = _copy_model(item)
    fields = copy.__dict__
    content = fields.get("content")
    if content:
        fields["content"] = [_copy_model(part) for part in content]
    return copy


def _pack(obj: Any) -> bytes:
    """Pack ``obj`` with every failure turned into a SerializationError."""
    try:
        if isinstance(obj, _CONTAINERS):
            _check_keys(obj)
        data: bytes = _Encoding().packer().pack(obj)
    except SerializationError:
        raise
    except RecursionError:
        raise SerializationError("cannot encode: the value is nested too deeply") from None
    except (TypeError, ValueError, OverflowError) as exc:
        # msgpack's own refusals: int out of 64-bit range, nesting over its limit...
        raise SerializationError(f"cannot encode: {exc}") from exc
    if len(data) > MAX_MESSAGE_BYTES:
        raise SerializationError(
            f"encoded message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
        )
    return data


def encode(obj: Any) -> bytes:
    """Encode any supported value (see the module docstring) to bytes.

    Raises :class:`SerializationError` naming the first unsupported type found,
    for a dict key that is not a ``str``, or when the result would be over
    :data:`MAX_MESSAGE_BYTES`.
    """
    return _pack(obj)


def encode_events(events: list[Any]) -> bytes:
    """Encode a batch of events (a msgpack array of them)."""
    if not isinstance(events, (list, tuple)):
        raise SerializationError(f"events must be a list, not {_type_name(events)}")
    return _pack(events)


def encode_batch(events: list[Any], last_seq: int, missed: int, closed: bool) -> bytes:
    """Encode one event-log read: ``[events, last_seq, missed, closed]``."""
    if not isinstance(events, (list, tuple)):
        raise SerializationError(f"events must be a list, not {_type_name(events)}")
    for name, number in (("last_seq", last_seq), ("missed", missed)):
        if type(number) is not int or number < 0:
            raise SerializationError(f"{name} must be a non-negative int, not {number!r}")
    if type(closed) is not bool:
        raise SerializationError(f"closed must be a bool, not {closed!r}")
    return _pack([events, last_seq, missed, closed])


# --------------------------------------------------------------------------- decode


def _unpack(data: bytes | bytearray | memoryview, size: int, state: _Decoding) -> Any:
    # Every declared length is bounded by the bytes present (a map entry takes
    # at least two), so a hostile length prefix fails before any allocation.
    return _unpackb(
        data,
        ext_hook=state.ext_hook,
        list_hook=state.list_hook,
        object_hook=state.object_hook,
        raw=False,  # msgpack str -> str, bin -> bytes
        strict_map_key=True,  # map keys: str (or bytes) only
        max_str_len=size,
        max_bin_len=size,
        max_array_len=size,
        max_map_len=size // 2,
        max_ext_len=size,
    )


class _Decoding:
    """The state of one decode call: extension depth, containers left, items seen.

    Each level of extension nesting costs a (large) C stack frame of the
    msgpack unpacker, so it is bounded by :data:`MAX_DEPTH` rather than left
    to overflow the stack. Every array and map built is counted against the
    message's allowance (see the module docstring) as soon as it is built.
    """

    __slots__ = ("containers_left", "depth", "ext_hook", "items", "list_hook", "object_hook")

    def __init__(self, size: int) -> None:
        self.depth = 0
        self.containers_left = MAX_CONTAINERS_BASE + size // BYTES_PER_CONTAINER
        self.items: dict[bytes, Any] | None = None  # this message's items, by payload
        # msgpack's hooks, bound once and handed to every nested unpack.
        self.ext_hook: Callable[[int, bytes], Any] = self._ext_hook
        self.list_hook: Callable[[list[Any]], list[Any]] = self._count
        self.object_hook: Callable[[dict[str, Any]], dict[str, Any]] = self._count

    def _count(self, container: Any) -> Any:
        left = self.containers_left - 1
        if left < 0:
            raise ProtocolError(
                "message holds too many arrays/maps for its size "
                f"(at most {MAX_CONTAINERS_BASE} + 1 per {BYTES_PER_CONTAINER} bytes)"
            )
        self.containers_left = left
        return container

    def _known_item(self, data: bytes) -> Any:
        """The item of ext 2 payload ``data`` if already decoded: this message's, or a
        copy of the cached one (None if new)."""
        items = self.items
        if items is None:
            items = self.items = {}
        else:
            known = items.get(data)
            if known is not None:
                return known
        cached = _item_objects.get(data)
        if cached is None:
            return None
        item = items[data] = _copy_item(cached)
        return item

    def _new_item(self, data: bytes, value: Any) -> Any:
        """Validate a history item payload, cache it and return a copy."""
        if type(value) is not dict:
            raise ProtocolError("a history item payload must be a map")
        try:
            cached = item_from_dict(value)
        except ValidationError as exc:
            raise ProtocolError(f"invalid history item: {exc}") from exc
        key = bytes(data)
        _item_objects.put(key, cached, 2 * len(key))
        item = _copy_item(cached)
        if self.items is not None:
            self.items[data] = item
        return item

    def _ext_hook(self, code: int, data: bytes) -> Any:
        """Rebuild a dataclass (ext 1), a history item (ext 2), a big integer (ext 3)
        or one of the project's exceptions (ext 4)."""
        if code == _EXT_ITEM:
            known = self._known_item(data)
            if known is not None:
                return known
        elif code != _EXT_DATACLASS and code != _EXT_ERROR:
            if code == _EXT_INT:
                if len(data) > MAX_INT_BYTES:
                    raise ProtocolError(f"an integer of {len(data)} bytes: at most {MAX_INT_BYTES}")
                return int.from_bytes(data, "big", signed=True)
            raise ProtocolError(f"unknown msgpack extension type {code}")
        depth = self.depth
        if depth >= MAX_DEPTH:
            raise ProtocolError(f"more than {MAX_DEPTH} extension values nested in each other")
        self.depth = depth + 1
        n = len(data)
        value = _unpackb(
            data,
            ext_hook=self.ext_hook,
            list_hook=self.list_hook,
            object_hook=self.object_hook,
            raw=False,
            strict_map_key=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=n,
        )  # _unpack() inlined: this runs twice per audio event
        self.depth = depth  # not restored on error: the whole decode fails
        if code == _EXT_ITEM:
            return self._new_item(data, value)
        if code == _EXT_ERROR:
            return _decode_error(value)
        if type(value) is not list or not value:
            raise ProtocolError("a dataclass payload must be a non-empty array")
        try:
            decoder = _DECODERS[value[0]]
        except (KeyError, TypeError):
            raise ProtocolError(f"unknown dataclass tag {value[0]!r}") from None
        return decoder(value)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode bytes made by :func:`encode` (or the batch encoders).

    Raises :class:`ProtocolError` for anything that is not a well-formed
    message within the bounds (see the module docstring).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"cannot decode a {_type_name(data)}: expected bytes")
    n = data.nbytes if isinstance(data, memoryview) else len(data)
    if n > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message is {n} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        return _unpack(data, n, _Decoding(n))
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("malformed message: nested too deeply") from None
    except Exception as exc:  # msgpack's ValueError/FormatError/StackError/ExtraData, ...
        raise ProtocolError(f"malformed message: {type(exc).__name__}: {exc}") from exc


def decode_events(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode a batch made by :func:`encode_events`."""
    events = decode(data)
    if type(events) is not list:
        raise ProtocolError(f"expected an array of events, got {_type_name(events)}")
    return events


def decode_batch(data: bytes | bytearray | memoryview) -> tuple[list[Any], int, int, bool]:
    """Decode a read made by :func:`encode_batch`: ``(events, last_seq, missed, closed)``."""
    value = decode(data)
    if type(value) is not list or len(value) != 4:
        raise ProtocolError("expected a batch: [events, last_seq, missed, closed]")
    events, last_seq, missed, closed = value
    if type(events) is not list:
        raise ProtocolError("batch events must be an array")
    if type(last_seq) is not int or last_seq < 0 or type(missed) is not int or missed < 0:
        raise ProtocolError("batch last_seq and missed must be non-negative integers")
    if type(closed) is not bool:
        raise ProtocolError("batch closed must be a boolean")
    return events, last_seq, missed, closed


# --------------------------------------------------------------------------- registry


def _annotation_text(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _union_members(annotation: object) -> list[str]:
    """The members of a ``A | B | C`` annotation, split at the top level only."""
    text = _annotation_text(annotation)
    members: list[str] = []
    depth = start = 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "|" and depth == 0:
            members.append(text[start:i].strip())
            start = i + 1
    members.append(text[start:].strip())
    return members


def _is_constant_type_field(f: dataclasses.Field[Any]) -> bool:
    """A ``type: Literal["x"] = "x"`` discriminator, implied by the class."""
    if f.name != "type" or not isinstance(f.default, str):
        return False
    annotation = f.type
    if isinstance(annotation, str):
        return annotation in (f"Literal[{f.default!r}]", f'Literal["{f.default}"]')
    return typing.get_origin(annotation) is typing.Literal and typing.get_args(annotation) == (
        f.default,
    )


def _slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None] | None:
    """The ``__set__`` of the slot holding field ``name``, or None if not a slot."""
    for klass in cls.__mro__:
        attribute = klass.__dict__.get(name)
        if attribute is not None:
            if isinstance(attribute, types.MemberDescriptorType):
                setter: Callable[[Any, Any], None] = attribute.__set__
                return setter
            return None
    return None


def _compile(name: str, source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    exec(compile(source, f"<ray_realtime.wire {name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


def _register(cls: type[Any], tag: str | None = None) -> None:
    """Register one frozen dataclass under ``tag`` (default: its class name).

    Generates, once, the class's encoder and decoder. Fields are read by name
    and written back in order; only the trailing constant ``type`` is omitted.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    tag = cls.__name__ if tag is None else tag
    if _TAGS.get(tag, cls) is not cls:
        raise ValueError(f"tag {tag!r} is already registered for {_TAGS[tag]!r}")
    all_fields = dataclasses.fields(cls)
    if any(not f.init for f in all_fields):
        raise TypeError(f"{cls.__qualname__}: fields with init=False are not supported")
    sent = list(all_fields)
    constant: dataclasses.Field[Any] | None = None
    if sent and _is_constant_type_field(sent[-1]):
        constant = sent.pop()
    count = len(sent) + 1  # with the tag
    lenient = _LENIENT_FIELDS.get(cls, frozenset())
    known = _PLAIN_NAMES | {c.__name__ for c in _TAGS.values()} | {cls.__name__}

    # Encoder: ``[tag, o.a, o.b, ...]`` packed into ext 1. Fields that may hold
    # containers get their dict keys checked; lenient fields fall back to repr.
    reads = []
    for f in sent:
        plain = all(m in known or m.startswith("Literal[") for m in _union_members(f.type))
        if f.name in lenient:
            reads.append(f"_plain_or_repr(o.{f.name}, s)")
        elif plain:
            reads.append(f"o.{f.name}")
        else:
            reads.append(f"_check_keys(o.{f.name})")
    payload = (
        f"_Packer(default=s.default, use_bin_type=True, buf_size={_PAYLOAD_BUFFER})"
        f".pack([_tag, {', '.join(reads)}])"
    )
    encoder = _compile(
        "encode",
        # ExtType is a namedtuple; tuple.__new__ skips its Python-level checks
        # of the code and data (both known good here), a third of its cost.
        f"def encode(o, s):\n    return _tnew(_ExtType, ({_EXT_DATACLASS}, {payload}))\n",
        {
            "_tnew": tuple.__new__,
            "_ExtType": _ExtType,
            "_Packer": _Packer,
            "_check_keys": _check_keys,
            "_plain_or_repr": _plain_or_repr,
            "_tag": tag,
        },
    )

    # Decoder: check the count, then set the slots directly (no __init__, no
    # validation). A class without slots, or with __post_init__, goes through
    # its constructor instead. Tuple-typed fields get tuples back.
    def value_expr(index: int, f: dataclasses.Field[Any]) -> str:
        members = [m for m in _union_members(f.type) if m != "None"]
        if members and all(m == "tuple" or m.startswith(("tuple[", "Tuple[")) for m in members):
            return f"_as_tuple(v[{index}])"
        return f"v[{index}]"

    setters = {f.name: _slot_setter(cls, f.name) for f in all_fields}
    direct = not hasattr(cls, "__post_init__") and all(setters.values())
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_new": object.__new__,
        "_ProtocolError": ProtocolError,
        "_as_tuple": _as_tuple,
        "_count_error": f"{tag}: expected {count - 1} field values, got {{}}",
    }
    lines = [
        "def decode(v):",
        f"    if len(v) != {count}:",
        "        raise _ProtocolError(_count_error.format(len(v) - 1))",
    ]
    if direct:
        namespace.update({f"_set_{name}": setter for name, setter in setters.items()})
        lines.append("    o = _new(_cls)")
        for index, f in enumerate(sent, start=1):
            lines.append(f"    _set_{f.name}(o, {value_expr(index, f)})")
        if constant is not None:
            namespace["_constant"] = constant.default
            lines.append(f"    _set_{constant.name}(o, _constant)")
        lines.append("    return o")
    else:
        values = ", ".join(value_expr(index, f) for index, f in enumerate(sent, start=1))
        lines.append(f"    return _cls({values})")
    decoder = _compile("decode", "\n".join(lines) + "\n", namespace)

    _TAGS[tag] = cls
    _ENCODERS[cls] = encoder
    _DECODERS[tag] = decoder


def _unregister(cls: type[Any]) -> None:
    """Undo :func:`_register` (for tests)."""
    _ENCODERS.pop(cls, None)
    for tag in [t for t, c in _TAGS.items() if c is cls]:
        del _TAGS[tag]
        del _DECODERS[tag]


def _as_tuple(value: Any) -> Any:
    return tuple(value) if type(value) is list else value


# ------------------------------------------------------------------ exceptions

_EXT_ERROR = 4
# Only the project's own exceptions cross, by name: a peer cannot make the
# receiver build any other class.
_ERROR_CLASSES: dict[str, type[BaseException]] = {
    name: getattr(_exceptions, name) for name in _exceptions.__all__
}
_ERROR_SCALARS = (str, int, float, bool, type(None))
_ERROR_MAX_ARGS = 8


def _encode_error(exc: BaseException, state: _Encoding) -> msgpack.ExtType:
    args = list(exc.args)
    if len(args) > _ERROR_MAX_ARGS or not all(type(a) in _ERROR_SCALARS for a in args):
        args = [str(exc)]
    return _ExtType(_EXT_ERROR, state.packer().pack([type(exc).__name__, args]))


def _decode_error(value: Any) -> BaseException:
    if type(value) is not list or len(value) != 2 or type(value[1]) is not list:
        raise ProtocolError("an error payload must be [class name, [args]]")
    name, args = value
    cls = _ERROR_CLASSES.get(name) if type(name) is str else None
    if cls is None:
        raise ProtocolError(f"unknown error class {name!r:.80}")
    if len(args) > _ERROR_MAX_ARGS or not all(type(a) in _ERROR_SCALARS for a in args):
        raise ProtocolError(f"{name}: error arguments must be a few plain values")
    if args and type(args[0]) is not str:
        raise ProtocolError(f"{name}: an error's first argument is its message text")
    try:
        return cls(*args)
    except TypeError:
        raise ProtocolError(f"{name}: wrong arguments for the error class") from None


def _register_all() -> None:
    # Names first, so a field typed with any registered class is known plain.
    for cls in _DATACLASSES:
        _TAGS[cls.__name__] = cls
    for cls in _DATACLASSES:
        _register(cls)
    for item_class in _ITEM_CLASSES:
        _ENCODERS[item_class] = _encode_item
    for error_class in _ERROR_CLASSES.values():
        _ENCODERS[error_class] = _encode_error


_register_all()
