"""Fuzzing the data plane's frames, both ways, over real WebSockets on loopback.

One live session (a real :class:`SessionDriver` on the local model server) is served
by a real :class:`DataPlaneServer` on an event loop of its own in a daemon thread,
for the module; an authenticated :class:`DataPlaneClient` stays connected to it the
whole time. Three targets:

* before authentication: hostile hellos (any bytes, text, msgpack values, hello-like
  maps with fuzzed fields, fragments, oversized frames), followed by more frames.
  The server's verdict must match the documented protocol: a valid hello is welcomed,
  anything else is closed with ``CLOSE_UNAUTHORIZED`` (or 1009 when a frame is over
  the tiny pre-authentication limit); no unauthenticated slot is leaked;
* after authentication: fuzzed frames (random msgpack values, wrong shapes and types,
  64-bit integers, nesting, ext types, container bombs) followed by a sentinel
  request. Each request gets its ack in order (a typed error where the operation is
  refused), a malformed frame closes the connection with ``CLOSE_BAD_FRAME``, and
  nothing else happens: never a 1011, never an ERROR record;
* the handle's side: a fake server completes the opening and then pushes fuzzed
  frames (batches, acks with fuzzed wire errors, pickles, random ext types) to the
  real :class:`DataPlaneClient`. Its requests end with ``None`` or one of the
  project's exceptions, its reads hand out only session events or raise
  ``DataPlaneBroken``, and when its reader stops, it is for a ``ProtocolError``.

After each fuzz run, the session still does a real turn (on the connection kept
open, and on a fresh one). The example count is the profile's of ``conftest.py``
(modest by default; ``RAY_REALTIME_FUZZ=deep`` or a number for more); run with ``-s``
to see how the exchanges ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import threading
import time
import typing
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ray_realtime import wire
from ray_realtime.actors.dataplane import (
    CLOSE_BAD_FRAME,
    CLOSE_SESSION_ENDED,
    CLOSE_UNAUTHORIZED,
    MAX_CHANNEL_ID,
    MAX_FRAME_BYTES,
    MAX_FRAME_CONTAINERS,
    MAX_HELLO_BYTES,
    DataPlaneBroken,
    DataPlaneClient,
    DataPlaneServer,
)
from ray_realtime.actors.dataplane_shared import open_channel, shared_sockets
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import (
    InputTooLargeError,
    ProtocolError,
    RayRealtimeError,
    SessionClosedError,
    UserError,
)
from ray_realtime.local import LocalModelServer
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.session.driver import SessionDriver
from ray_realtime.types.events import (
    RealtimeAgentEndEvent,
    RealtimeAudio,
    RealtimeError,
    RealtimeEventsLost,
    RealtimeSessionEvent,
)
from ray_realtime.types.model_events import RealtimeModelAudioEvent

from .common import ErrorRecords

T = TypeVar("T")

SESSION_ID = "rt_fuzz"
SECRET = "fuzz-secret-0123456789abcdef"
HELLO_TIMEOUT = 0.2  # every well-formed but refused hello waits this long
MAX_UNAUTHENTICATED = 16
EXAMPLE_SECONDS = 5.0
TURN_SECONDS = 20.0
SENTINEL_ID = 2**64 - 1  # fuzzed request ids stay below it
WELCOME = {"welcome": True}
READY = b"\xc0"
# Close codes a hostile peer may get before the welcome: refused, or a frame over the limit.
TOO_BIG = 1009
SESSION_EVENT_TYPES: tuple[type, ...] = typing.get_args(RealtimeSessionEvent)


# --- the live session -----------------------------------------------------------------------


class LiveThread:
    """A session driver on the local model, served by a data plane server, on an event
    loop in a daemon thread; ``run`` runs a coroutine there, bounded in time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.driver: SessionDriver | None = None
        self.plane: DataPlaneServer | None = None
        self.client: DataPlaneClient | None = None

    def run(self, coro: Awaitable[T], timeout: float = EXAMPLE_SECONDS + 5) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(coro, timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result(timeout + 5)

    async def _start(self) -> None:
        server = await self._stack.enter_async_context(LocalModelServer(max_reply_audio_ms=300))
        driver = SessionDriver(
            agent=RealtimeAgent(name="Assistant", instructions="Be brief."),
            model=OpenAIRealtimeWebSocketModel(),
            model_config={"url": server.url},
            session_id=SESSION_ID,
        )
        await driver.start()
        self._stack.push_async_callback(driver.close)

        async def lookup(sid: str) -> tuple[SessionDriver, str] | None:
            return (driver, SECRET) if sid == SESSION_ID else None

        plane = DataPlaneServer(
            lookup, hello_timeout=HELLO_TIMEOUT, max_unauthenticated=MAX_UNAUTHENTICATED
        )
        await plane.start()
        self._stack.push_async_callback(plane.stop)
        self.driver, self.plane = driver, plane
        self.client = await DataPlaneClient.open(plane.url, SESSION_ID, SECRET, driver.last_seq)
        self._stack.push_async_callback(self.client.close)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start(), 30)

    def stop(self) -> None:
        try:
            self.run(self._stack.aclose(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def url(self) -> str:
        assert self.plane is not None
        return self.plane.url


@pytest.fixture(scope="module")
def live() -> Iterator[LiveThread]:
    thread = LiveThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def problems() -> Iterator[ErrorRecords]:
    """ERROR records of ours, of websockets (a handler that raised) and of asyncio (a
    task's exception nobody retrieved), for the whole module."""
    handler = ErrorRecords()
    names = ("ray_realtime", "websockets", "asyncio")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)


def _no_problems(problems: ErrorRecords) -> None:
    """No ERROR record so far; a failure shows each record's traceback."""
    formatter = logging.Formatter()
    assert not problems.records, [
        f"{r.name}: {r.getMessage()}\n{formatter.formatException(r.exc_info) if r.exc_info else ''}"
        for r in problems.records
    ]


async def _turn(client: DataPlaneClient, driver: SessionDriver, text: str) -> list[Any]:
    """Send ``text`` and read the stream until the turn's ``agent_end``."""
    cursor = driver.last_seq
    await client.send_message(text)
    seen: list[Any] = []
    async with asyncio.timeout(TURN_SECONDS):
        while True:
            batch = await client.read(cursor, 256, 5.0)
            seen.extend(batch.events)
            cursor = batch.last_seq
            if any(isinstance(e, RealtimeAgentEndEvent) for e in batch.events):
                return seen
            assert not batch.closed


def _check_session_still_works(live: LiveThread) -> None:
    """A real turn on the connection kept open through the fuzz run, and on a fresh one."""
    assert live.driver is not None and live.client is not None
    driver, kept = live.driver, live.client

    async def check() -> None:
        assert not driver.closed
        assert not kept.broken and not kept.closed
        events = await _turn(kept, driver, "Hello after the fuzz")
        assert any(isinstance(e, RealtimeAudio) for e in events)
        fresh = await DataPlaneClient.open(live.url, SESSION_ID, SECRET, driver.last_seq)
        try:
            events = await _turn(fresh, driver, "Hello again, on a fresh socket")
            assert any(isinstance(e, RealtimeAudio) for e in events)
        finally:
            await fresh.close()

    live.run(check(), 2 * TURN_SECONDS + 5)


def _wait_for_no_unauthenticated(live: LiveThread) -> None:
    assert live.plane is not None
    plane = live.plane

    async def wait() -> None:
        while plane.statistics()["unauthenticated"]:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)

    live.run(wait(), HELLO_TIMEOUT + 5)


# --- strategies: msgpack values -------------------------------------------------------------

INT64 = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)
TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", "type", "message", "\u00e9", "\U0001f600", "\x00", " " * 64]),
)
# msgpack-python makes ext codes 0-127 only; the reserved negative ones (-1 is the
# timestamp) come as raw frames below.
EXT = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12))
NEGATIVE_EXT = st.builds(
    lambda code, data: b"\xc7" + bytes([len(data), code]) + data,
    st.integers(128, 255),
    st.sampled_from([b"", b"\x00" * 4, b"\x00" * 8, b"\x00" * 12, b"\xff" * 12]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(),
    TEXT,
    st.binary(max_size=24),
    EXT,
)
KEYS = st.one_of(TEXT, st.binary(max_size=6), INT64, st.none(), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(KEYS, children, max_size=5),
    ),
    max_leaves=20,
)


@dataclass(frozen=True)
class Zeros:
    """``size`` zero bytes, packed as bin: a big payload that prints small."""

    size: int


@dataclass(frozen=True)
class Bomb:
    """A frame of many containers, built when sent (hypothesis prints this instead)."""

    prefix: bytes
    shape: str  # "nested": arrays in arrays; "wide": one array of empty arrays
    count: int
    suffix: bytes = b""

    def data(self) -> bytes:
        if self.shape == "nested":
            body = b"\x91" * self.count + b"\x90"
        else:
            body = b"\xdd" + self.count.to_bytes(4, "big") + b"\x90" * self.count
        return self.prefix + body + self.suffix


def _expand(value: Any) -> Any:
    if isinstance(value, Zeros):
        return bytes(value.size)
    raise TypeError(f"cannot pack {value!r}")


def pack(value: Any) -> bytes:
    """msgpack bytes of any value the strategies make (bytes as bin, str as str)."""
    return bytes(msgpack.packb(value, use_bin_type=True, default=_expand))


def on_wire(frame: Any) -> Any:
    """What is sent for a generated frame (a :class:`Bomb` is built here)."""
    return frame.data() if isinstance(frame, Bomb) else frame


# --- target 1: before authentication -------------------------------------------------------

HELLO_LIKE = st.builds(
    lambda fields, extra: {**fields, **extra},
    st.fixed_dictionaries(
        {},
        optional={
            "session_id": st.one_of(
                st.sampled_from([SESSION_ID, "rt_other", "", "x" * 129, SESSION_ID + "\x00"]),
                VALUES,
            ),
            "token": st.one_of(
                st.sampled_from([SECRET, SECRET[:-1], SECRET.upper(), "", "\u00e9" * 20]),
                VALUES,
            ),
            "after_seq": st.one_of(INT64, st.sampled_from([True, False, 1.0, -1]), VALUES),
        },
    ),
    st.dictionaries(st.one_of(TEXT, INT64), VALUES, max_size=2),
)
VALID_HELLO = st.builds(
    lambda seq: {"session_id": SESSION_ID, "token": SECRET, "after_seq": seq},
    st.integers(0, 2**64 - 1),
)


def _damage(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for where, byte in edits:
        if buffer:
            buffer[where % len(buffer)] = byte
    return bytes(buffer)


HELLO_BYTES = st.one_of(
    HELLO_LIKE.map(pack),
    VALID_HELLO.map(pack),
    VALUES.map(pack),
    st.binary(max_size=64),
    NEGATIVE_EXT,
    st.builds(
        _damage,
        VALID_HELLO.map(pack),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=3),
    ),
    st.builds(lambda h, cut: h[: cut % max(1, len(h))], VALID_HELLO.map(pack), st.integers()),
    st.builds(lambda h, tail: h + tail, VALID_HELLO.map(pack), st.binary(min_size=1, max_size=8)),
    st.builds(Bomb, st.just(b""), st.just("nested"), st.integers(1, MAX_HELLO_BYTES - 1)),
    st.binary(min_size=MAX_HELLO_BYTES - 2, max_size=MAX_HELLO_BYTES + 2),
    st.builds(lambda n: pack({"session_id": SESSION_ID, "token": "x" * n, "after_seq": 0}),
              st.integers(MAX_HELLO_BYTES - 60, 4 * MAX_HELLO_BYTES)),
)  # fmt: skip
# A frame: bytes, text, or bytes sent as a fragmented message.
FRAME = st.one_of(
    HELLO_BYTES,
    st.text(max_size=40),
    HELLO_LIKE.map(lambda h: repr(h)[:600]),
    st.text(min_size=MAX_HELLO_BYTES // 4, max_size=MAX_HELLO_BYTES + 10),
    st.builds(
        lambda h, n: [on_wire(h)[i : i + n] for i in range(0, len(on_wire(h)), n)] or [b""],
        HELLO_BYTES,
        st.integers(1, 64),
    ),
)


def _joined(frame: bytes | str | list[bytes]) -> bytes | str:
    return b"".join(frame) if isinstance(frame, list) else frame


def _size(frame: bytes | str | list[bytes]) -> int:
    whole = _joined(frame)
    return len(whole.encode("utf-8", "surrogatepass")) if isinstance(whole, str) else len(whole)


def _is_valid_hello(frame: bytes | str | list[bytes]) -> bool:
    """The documented protocol, independently: one binary msgpack map of exactly
    session_id (this session), token (its secret) and a non-negative int after_seq."""
    whole = _joined(frame)
    if not isinstance(whole, bytes) or len(whole) > MAX_HELLO_BYTES:
        return False
    try:
        hello = msgpack.unpackb(whole, raw=False, strict_map_key=True)
    except Exception:
        return False
    return (
        type(hello) is dict
        and set(hello) == {"session_id", "token", "after_seq"}
        and hello["session_id"] == SESSION_ID
        and hello["token"] == SECRET
        and type(hello["after_seq"]) is int
        and hello["after_seq"] >= 0
    )


async def _unauthenticated_peer(url: str, frames: list[bytes | str | list[bytes]]) -> str:
    """One hostile connection: checks the server's verdict on its first frame and
    returns it (``welcome`` or the close code)."""
    async with asyncio.timeout(EXAMPLE_SECONDS):
        return await _unauthenticated_exchange(url, [on_wire(frame) for frame in frames])


async def _unauthenticated_exchange(url: str, frames: list[bytes | str | list[bytes]]) -> str:
    first = frames[0]
    valid = _is_valid_hello(first)
    async with connect(url, max_size=None, open_timeout=5, close_timeout=2) as ws:
        received: list[Any] = []
        try:
            # A valid hello is sent alone (what follows it is the next target's business).
            for frame in frames[:1] if valid else frames:
                await ws.send(frame)
            async with asyncio.timeout(HELLO_TIMEOUT + 3):
                while True:
                    received.append(await ws.recv())
                    if valid:
                        break
        except ConnectionClosed:
            pass
        if valid:
            assert [msgpack.unpackb(m) for m in received] == [WELCOME], received
            await ws.send(READY)
            return "welcome"
        assert received == [], received  # nothing is sent to an unauthenticated peer
        assert ws.close_code is not None
        too_big = any(_size(frame) > MAX_HELLO_BYTES for frame in frames)
        allowed = {CLOSE_UNAUTHORIZED, TOO_BIG} if too_big else {CLOSE_UNAUTHORIZED}
        if _size(first) > MAX_HELLO_BYTES:
            allowed = {TOO_BIG}
        assert ws.close_code in allowed, (ws.close_code, ws.close_reason, frames)
        return str(ws.close_code)


PEERS = st.lists(st.lists(FRAME, min_size=1, max_size=4), min_size=1, max_size=3)


def test_hostile_peers_before_the_welcome(live: LiveThread, problems: ErrorRecords) -> None:
    assert live.plane is not None
    refused_before = live.plane.statistics()["refused"]
    seen: Counter[str] = Counter()  # what ended each exchange, printed with -s

    @given(peers=PEERS)
    def fuzz(peers: list[list[bytes | str | list[bytes]]]) -> None:
        del problems.records[:]  # earlier examples checked theirs: shrinking sees its own
        start = time.monotonic()

        async def all_peers() -> list[str]:
            return await asyncio.gather(*(_unauthenticated_peer(live.url, p) for p in peers))

        seen.update(live.run(all_peers()))
        assert time.monotonic() - start < EXAMPLE_SECONDS
        _no_problems(problems)

    fuzz()
    print("pre-authentication verdicts:", dict(seen))
    assert seen[str(CLOSE_UNAUTHORIZED)] > 0
    assert live.plane.statistics()["refused"] > refused_before
    _wait_for_no_unauthenticated(live)  # no slot leaked
    assert live.plane.statistics()["turned_away"] == 0
    _check_session_still_works(live)
    _no_problems(problems)


# --- target 2: after authentication --------------------------------------------------------

MESSAGE = st.one_of(
    TEXT,
    st.builds(
        lambda role, content: {"type": "message", "role": role, "content": content},
        st.one_of(st.sampled_from(["user", "system", "assistant"]), VALUES),
        st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"type": st.one_of(st.sampled_from(["input_text", "input_audio"]), VALUES)},
                    optional={"text": st.one_of(TEXT, VALUES), "audio": VALUES},
                ),
                max_size=3,
            ),
            VALUES,
        ),
    ),
    st.dictionaries(st.one_of(TEXT, st.binary(max_size=4)), VALUES, max_size=4),
)
OP = st.one_of(st.sampled_from([1, 2, 3]), st.sampled_from([0, 4, -1, 1.0, True]), INT64, VALUES)
PAYLOAD = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([Zeros(4096), Zeros(4097), Zeros(64 << 10)]),
    MESSAGE,
    VALUES,
)
REQUEST_ID = st.one_of(st.integers(0, SENTINEL_ID - 1), st.sampled_from([-1, True, 1.5]), VALUES)
REQUEST = st.builds(lambda *fields: list(fields), OP, PAYLOAD, VALUES, REQUEST_ID)
# Well-formed frames (the documented shape, any operation and payload): acked or quiet.
WELL_FORMED = st.builds(
    lambda *fields: pack(list(fields)),
    OP,
    PAYLOAD,
    VALUES,
    st.one_of(st.integers(0, 3), st.integers(0, SENTINEL_ID - 1)),
)
POST_FRAME = st.one_of(
    REQUEST.map(pack),
    st.lists(VALUES, max_size=6).map(pack),
    VALUES.map(pack),
    st.binary(max_size=64),
    st.text(max_size=40),
    NEGATIVE_EXT,
    st.builds(lambda ext: b"\x94\x02" + ext + b"\xc2\x01", NEGATIVE_EXT),
    st.builds(lambda r, tail: pack(r) + tail, REQUEST, st.binary(min_size=1, max_size=4)),
    st.builds(
        Bomb, st.just(b"\x94\x03"), st.just("nested"), st.integers(1, 3000), st.just(b"\xc2\x01")
    ),
    st.builds(
        Bomb,
        st.just(b"\x94\x02"),
        st.just("wide"),
        st.integers(MAX_FRAME_CONTAINERS - 3, MAX_FRAME_CONTAINERS + 3),
        st.just(b"\xc2\x01"),
    ),
    st.builds(lambda n: b"\x94\x02\xde" + n.to_bytes(2, "big"), st.integers(1, 2**16 - 1)),
)


class _Verdict:
    """What the documented protocol says the server does with one frame."""

    CLOSE = "close"  # CLOSE_BAD_FRAME
    ACK = "ack"  # an ack of this request id
    QUIET = "quiet"  # no reply (request id 0)


def _expect(frame: bytes | str) -> tuple[str, Any, bool]:
    """(verdict, request id, whether the operation is refused as a protocol error)."""
    if not isinstance(frame, bytes):
        return _Verdict.CLOSE, None, False
    containers = [0]

    def count(container: Any) -> Any:
        containers[0] += 1
        return container

    try:
        message = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_ext_len=0,
            list_hook=count,
            object_hook=count,
        )
    except Exception:
        return _Verdict.CLOSE, None, False
    if containers[0] > MAX_FRAME_CONTAINERS:
        return _Verdict.CLOSE, None, False
    if type(message) is not list or len(message) != 4:
        return _Verdict.CLOSE, None, False
    op, payload, _, request_id = message
    if type(request_id) is not int or request_id < 0:
        return _Verdict.CLOSE, None, False
    known = (
        (op == 1 and isinstance(payload, bytes))
        or (op == 2 and isinstance(payload, (str, dict)))
        or op == 3
    )
    return (_Verdict.ACK if request_id else _Verdict.QUIET), request_id, not known


def _hello(after_seq: int) -> bytes:
    return pack({"session_id": SESSION_ID, "token": SECRET, "after_seq": after_seq})


async def _authenticated(url: str, after_seq: int) -> ClientConnection:
    ws = await connect(url, max_size=None, open_timeout=5, close_timeout=2)
    await ws.send(_hello(after_seq))
    assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5)) == WELCOME
    await ws.send(READY)
    return ws


async def _authenticated_peer(live: LiveThread, frames: list[bytes | str]) -> str:
    """Sends ``frames`` and a sentinel on an authenticated connection, checks the
    answers against the protocol; returns what ended the exchange."""
    assert live.driver is not None
    frames = [on_wire(frame) for frame in frames]
    verdicts = [_expect(frame) for frame in frames]
    closing = next((i for i, v in enumerate(verdicts) if v[0] == _Verdict.CLOSE), None)
    answered = verdicts if closing is None else verdicts[:closing]
    expected_acks = [(rid, refused) for verdict, rid, refused in answered if verdict == "ack"]
    ws = await _authenticated(live.url, live.driver.last_seq)
    acks: list[dict[str, Any]] = []
    try:
        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(pack([99, None, False, SENTINEL_ID]))  # refused at once, no effect
            async with asyncio.timeout(EXAMPLE_SECONDS):
                while True:
                    data = await ws.recv()
                    assert isinstance(data, bytes) and data
                    if data[0] & 0xF0 != 0x80:  # a pushed event batch
                        events = wire.decode_batch(data)[0]
                        assert all(isinstance(e, SESSION_EVENT_TYPES) for e in events)
                        continue
                    ack = wire.decode(data)
                    if ack["ack"] == SENTINEL_ID:
                        assert isinstance(ack["error"], ProtocolError), ack
                        break
                    acks.append(ack)
        except ConnectionClosed:
            pass
        if closing is None:
            assert ws.close_code is None, (ws.close_code, ws.close_reason)
        else:
            assert ws.close_code == CLOSE_BAD_FRAME, (ws.close_code, ws.close_reason)
        assert [a["ack"] for a in acks] == [rid for rid, _ in expected_acks], (acks, frames)
        for ack, (_, refused) in zip(acks, expected_acks, strict=True):
            error = ack.get("error")
            assert set(ack) <= {"ack", "error"}, ack
            if refused:
                assert isinstance(error, ProtocolError), ack
            else:
                assert error is None or isinstance(error, (UserError, SessionClosedError)), ack
        return "sentinel answered" if closing is None else "closed"
    finally:
        await ws.close()


def test_hostile_frames_after_the_welcome(live: LiveThread, problems: ErrorRecords) -> None:
    seen: Counter[str] = Counter()  # what ended each exchange, printed with -s

    @given(
        frames=st.builds(
            lambda good, bad: good + bad,
            st.lists(WELL_FORMED, max_size=4),
            st.lists(POST_FRAME, min_size=0, max_size=2),
        ).filter(bool)
    )
    def fuzz(frames: list[bytes | str]) -> None:
        del problems.records[:]  # earlier examples checked theirs: shrinking sees its own
        start = time.monotonic()
        seen[live.run(_authenticated_peer(live, frames))] += 1
        assert time.monotonic() - start < EXAMPLE_SECONDS
        _no_problems(problems)

    fuzz()
    print("authenticated exchanges:", dict(seen))
    assert seen["closed"] + seen["sentinel answered"] > 0
    _check_session_still_works(live)
    _no_problems(problems)


def test_a_frame_over_the_limit_after_the_welcome(live: LiveThread) -> None:
    """Oversized, once (16 MiB per example would be slow): 1009, the session goes on."""
    assert live.driver is not None
    driver = live.driver

    async def send() -> int | None:
        ws = await _authenticated(live.url, driver.last_seq)
        try:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b"\x00" * (MAX_FRAME_BYTES + 1))
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            return ws.close_code
        finally:
            if ws.state is not State.CLOSED:  # closing a closed, aborted socket again fails
                await ws.close()

    assert live.run(send(), 20) == TOO_BIG
    _check_session_still_works(live)


# --- target 3: the handle against a hostile server -----------------------------------------

PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), INT64, st.floats(allow_nan=False), TEXT,
              st.binary(max_size=16)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=12,
)  # fmt: skip
EVENTS = st.one_of(
    st.builds(
        RealtimeAudio,
        audio=st.builds(
            RealtimeModelAudioEvent,
            data=st.binary(max_size=32),
            response_id=TEXT,
            item_id=TEXT,
            content_index=st.integers(0, 3),
        ),
        item_id=TEXT,
        content_index=st.integers(0, 3),
    ),
    st.builds(RealtimeError, error=st.dictionaries(TEXT, PLAIN, max_size=3)),
    st.builds(RealtimeEventsLost, missed=st.integers(0, 2**40)),
)
BATCH = st.builds(
    lambda events, last_seq, missed, closed: wire.encode_batch(events, last_seq, missed, closed),
    st.lists(EVENTS, max_size=4),
    st.integers(0, 2**63),
    st.integers(0, 2**40),
    st.booleans(),
)
RAW_BATCH = st.builds(
    lambda *fields: pack(list(fields)),
    st.one_of(st.lists(st.one_of(VALUES, EXT), max_size=3), VALUES),
    st.one_of(INT64, VALUES),
    st.one_of(INT64, VALUES),
    st.one_of(st.booleans(), VALUES),
)
ERROR_NAMES = st.one_of(
    st.sampled_from(
        ["ProtocolError", "UserError", "InputTooLargeError", "SessionClosedError",
         "SystemExit", "KeyboardInterrupt", "Exception", "os.system", "DataPlaneBroken"]
    ),
    TEXT,
    VALUES,
)  # fmt: skip
WIRE_ERROR = st.builds(
    lambda name, args: msgpack.ExtType(4, pack([name, args])),
    ERROR_NAMES,
    st.one_of(st.lists(st.one_of(TEXT, INT64, st.none()), max_size=4), VALUES),
)
ACK = st.builds(
    lambda ack, error: pack({"ack": ack, "error": error}),
    st.one_of(st.sampled_from([1, 2, 0, 2**64 - 1, 1.0, True, "1", [1]]), VALUES),
    st.one_of(st.none(), WIRE_ERROR, VALUES, st.builds(msgpack.ExtType, st.sampled_from([1, 2, 3]),
                                                       st.binary(max_size=24))),
)  # fmt: skip
SERVER_FRAME = st.one_of(
    BATCH,
    RAW_BATCH,
    ACK,
    st.just(wire.encode({"ack": 1, "error": InputTooLargeError("big", 1, 2)})),
    st.just(wire.encode({"ack": 1})),
    VALUES.map(pack),
    st.binary(max_size=64),
    st.text(max_size=16),
    NEGATIVE_EXT,
    st.just(b""),
    st.just(pickle.dumps({"ack": 1})),
    st.builds(Bomb, st.just(b""), st.just("nested"), st.integers(1, 3000)),
    st.builds(
        Bomb, st.just(b"\x94"), st.just("wide"), st.integers(1, 20000), st.just(b"\x01\x00\xc2")
    ),
)
CLOSE_CODES = st.sampled_from(
    [1000, 1001, 1011, CLOSE_SESSION_ENDED, CLOSE_BAD_FRAME, CLOSE_UNAUTHORIZED, 4999]
)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _hostile_server(frames: list[bytes | str], close_code: int) -> list[Any]:
    """Run the real handle against a server that pushes ``frames`` and closes; returns
    what the handle's request ended with."""

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
            await ws.send(pack(WELCOME))
            await ws.recv()
            for frame in frames:
                await ws.send(on_wire(frame))
            await ws.close(close_code)

    outcomes: list[Any] = []
    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = await DataPlaneClient.open(f"ws://127.0.0.1:{port}", SESSION_ID, SECRET, 0)
        try:
            await _read_while_requesting(client, outcomes)
        finally:
            await client.close()
    return outcomes


async def _read_while_requesting(stream: Any, outcomes: list[Any]) -> None:
    """Read ``stream`` (a client or a shared channel) until it breaks or the
    session ends, every batch well formed, with one message request in
    flight; the request's outcome goes to ``outcomes``."""
    request = asyncio.ensure_future(stream.send_message("hi", timeout=EXAMPLE_SECONDS))
    try:
        cursor = 0
        async with asyncio.timeout(EXAMPLE_SECONDS):
            while True:
                try:
                    batch = await stream.read(cursor, 64, 0.5)
                except DataPlaneBroken:
                    break
                for event in batch.events:
                    assert isinstance(event, SESSION_EVENT_TYPES), event
                assert batch.last_seq >= cursor
                cursor = batch.last_seq
                if batch.closed:
                    break
        try:
            outcomes.append(await request)
        except (RayRealtimeError, DataPlaneBroken) as exc:
            outcomes.append(exc)
    finally:
        request.cancel()  # done by now unless an assertion failed
        await asyncio.gather(request, return_exceptions=True)


def test_hostile_server_frames_reach_the_handle(live: LiveThread, problems: ErrorRecords) -> None:
    warnings = _Warnings()
    logger = logging.getLogger("ray_realtime.actors.dataplane")
    logger.addHandler(warnings)
    seen: Counter[str] = Counter()  # what ended each exchange, printed with -s

    @given(frames=st.lists(SERVER_FRAME, min_size=1, max_size=5), close_code=CLOSE_CODES)
    def fuzz(frames: list[bytes | str], close_code: int) -> None:
        del problems.records[:]  # earlier examples checked theirs: shrinking sees its own
        warnings.records.clear()
        start = time.monotonic()
        outcomes = live.run(_hostile_server(frames, close_code))
        assert time.monotonic() - start < EXAMPLE_SECONDS + 1
        assert len(outcomes) == 1
        outcome = outcomes[0]
        seen[type(outcome).__name__] += 1
        assert outcome is None or isinstance(outcome, (RayRealtimeError, DataPlaneBroken))
        for record in warnings.records:
            # The reader stops only for a protocol error (never a stray exception type).
            assert record.args and isinstance(record.args[0], ProtocolError), record.args
        _no_problems(problems)

    try:
        fuzz()
    finally:
        logger.removeHandler(warnings)
    print("the handle's request ended with:", dict(seen))
    assert sum(seen.values()) > 0
    # The hostile servers never touched the live session.
    _check_session_still_works(live)


# --- target 4: shared connections (several sessions, one socket) --------------------------

SHARED_CHANNEL = 1  # the channel the fuzzed connection is welcomed on


@dataclass(frozen=True)
class SharedHello:
    """A well-formed hello for a fresh channel (numbered when sent), right or wrong secret."""

    right_secret: bool


def _channel_ok(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_CHANNEL_ID


REQUEST_CHANNEL = st.one_of(
    st.just(SHARED_CHANNEL),
    st.sampled_from([2, 3, MAX_CHANNEL_ID, MAX_CHANNEL_ID + 1, 0, -1, True, 1.0, None]),
    INT64.filter(lambda n: not 1000 <= n < 2000),
    VALUES,
)
SHARED_OP = st.one_of(st.sampled_from([1, 2, 3, 4, 5]), st.sampled_from([0, -1, 1.0, True]), VALUES)
SHARED_REQUEST = st.builds(
    lambda *fields: list(fields),
    SHARED_OP,
    PAYLOAD,
    VALUES,
    st.one_of(st.integers(0, 3), st.integers(0, SENTINEL_ID - 1)),
    REQUEST_CHANNEL,
)
BAD_SHARED_HELLO = st.builds(
    lambda channel, extra: {
        "channel": channel,
        "session_id": SESSION_ID,
        "token": SECRET,
        "after_seq": 0,
        **extra,
    },
    st.one_of(st.sampled_from([0, -1, MAX_CHANNEL_ID + 1, SHARED_CHANNEL, True, 1.0]), VALUES),
    st.one_of(st.just({}), st.dictionaries(TEXT, VALUES, min_size=1, max_size=2)),
)
# Well-formed frames on channels open or not (acked, told "ended", or quiet) and hellos.
WELL_FORMED_SHARED = st.one_of(
    st.builds(
        lambda *fields: pack(list(fields)),
        st.one_of(st.sampled_from([1, 2, 3, 4]), SHARED_OP),
        PAYLOAD,
        VALUES,
        st.one_of(st.integers(0, 3), st.integers(0, SENTINEL_ID - 1)),
        st.sampled_from([SHARED_CHANNEL, SHARED_CHANNEL, 2, MAX_CHANNEL_ID]),
    ),
    st.builds(SharedHello, st.booleans()),
)
SHARED_FRAME = st.one_of(
    SHARED_REQUEST.map(pack),
    st.builds(SharedHello, st.booleans()),
    BAD_SHARED_HELLO.map(pack),
    POST_FRAME,
)


def _expect_hello(frame: bytes, state: dict[str, Any]) -> tuple[str, Any]:
    """The verdict on a map frame on a welcomed shared connection."""
    if len(frame) > MAX_HELLO_BYTES:
        return _Verdict.CLOSE, None
    try:
        hello = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception:
        return _Verdict.CLOSE, None
    if type(hello) is not dict or set(hello) != {"channel", "session_id", "token", "after_seq"}:
        return _Verdict.CLOSE, None
    sid, token, seq, channel = (hello[k] for k in ("session_id", "token", "after_seq", "channel"))
    if not (isinstance(sid, str) and 0 < len(sid) <= 128):
        return _Verdict.CLOSE, None
    if not (isinstance(token, str) and 0 < len(token) <= 128):
        return _Verdict.CLOSE, None
    # Channel numbers only grow on a connection.
    if type(seq) is not int or seq < 0 or not _channel_ok(channel) or channel <= state["last"]:
        return _Verdict.CLOSE, None
    state["last"] = channel
    state["in_use"].add(channel)
    right = sid == SESSION_ID and token == SECRET
    return ("welcome" if right else "refused"), channel


def _expect_shared(frame: bytes | str, state: dict[str, Any]) -> tuple[str, Any, bool]:
    """(verdict, request id or channel, refused as a protocol error) for one frame
    on a shared connection; ``state`` holds the channels open and in use."""
    if isinstance(frame, bytes) and frame[:1] and frame[0] & 0xF0 == 0x80:
        verdict, channel = _expect_hello(frame, state)
        return verdict, channel, False
    verdict = _Verdict.CLOSE
    if not isinstance(frame, bytes) or frame == READY:
        return (_Verdict.QUIET, 0, False) if frame == READY else (verdict, None, False)
    containers = [0]

    def count(container: Any) -> Any:
        containers[0] += 1
        return container

    try:
        message = msgpack.unpackb(
            frame, raw=False, strict_map_key=True, max_ext_len=0, list_hook=count,
            object_hook=count,
        )  # fmt: skip
    except Exception:
        return verdict, None, False
    if containers[0] > MAX_FRAME_CONTAINERS or type(message) is not list or len(message) != 5:
        return verdict, None, False
    op, payload, _, request_id, channel = message
    if type(request_id) is not int or request_id < 0 or not _channel_ok(channel):
        return verdict, None, False
    if channel not in state["open"]:
        return ("ended" if request_id else _Verdict.QUIET), channel, False
    if op == 5:
        state["open"].discard(channel)
        return _Verdict.QUIET, None, False
    known = (
        (op == 1 and isinstance(payload, bytes))
        or (op == 2 and isinstance(payload, (str, dict)))
        or op in (3, 4)
    )
    return (_Verdict.ACK if request_id else _Verdict.QUIET), request_id, not known


def _shared_hello(channel: int, secret: str, after_seq: int) -> bytes:
    return pack(
        {"channel": channel, "session_id": SESSION_ID, "token": secret, "after_seq": after_seq}
    )


async def _shared_peer(live: LiveThread, generated: list[Any]) -> str:
    """A welcomed shared connection sends ``generated`` frames and a sentinel; the
    answers must match the documented protocol. Returns what ended the exchange."""
    assert live.driver is not None
    fresh = iter(range(1000, 2000))
    frames: list[bytes | str] = []
    for frame in generated:
        if isinstance(frame, SharedHello):
            secret = SECRET if frame.right_secret else "not-the-secret"
            frame = _shared_hello(next(fresh), secret, 10**6)
        frames.append(on_wire(frame))
    state: dict[str, Any] = {
        "open": {SHARED_CHANNEL},
        "in_use": {SHARED_CHANNEL},
        "last": SHARED_CHANNEL,
    }
    verdicts = [_expect_shared(frame, state) for frame in frames]
    closing = next((i for i, v in enumerate(verdicts) if v[0] == _Verdict.CLOSE), None)
    answered = verdicts if closing is None else verdicts[:closing]
    sentinel_ended = SHARED_CHANNEL not in state["open"]
    expected_acks = [(v[1], v[2]) for v in answered if v[0] == _Verdict.ACK]
    expected_ended = sorted(v[1] for v in answered if v[0] == "ended")
    welcomes = {v[1] for v in answered if v[0] == "welcome"}
    refusals = {v[1] for v in answered if v[0] == "refused"}
    ws = await connect(live.url, max_size=None, open_timeout=5, close_timeout=2)
    acks: list[dict[str, Any]] = []
    ended: list[int] = []
    seen_welcomes: set[int] = set()
    seen_refusals: set[int] = set()
    try:
        await ws.send(_shared_hello(SHARED_CHANNEL, SECRET, live.driver.last_seq))
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5)) == {"welcome": 1}
        await ws.send(READY)
        if sentinel_ended:  # channel 1 was left: the sentinel is told "ended"
            expected_ended = sorted([*expected_ended, SHARED_CHANNEL])
        sentinel_acked = False

        def done() -> bool:
            answered = sentinel_acked or (sentinel_ended and sorted(ended) == expected_ended)
            # Acks come from the channel's worker, "ended" from the reader: either order.
            acked = len(acks) >= len(expected_acks)
            return answered and acked and seen_welcomes >= welcomes and seen_refusals >= refusals

        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(pack([99, None, False, SENTINEL_ID, SHARED_CHANNEL]))
            async with asyncio.timeout(EXAMPLE_SECONDS):
                while not done():
                    data = await ws.recv()
                    assert isinstance(data, bytes) and data
                    if data[0] & 0xF0 != 0x80:  # pushed batches: [channel, batch, ...]
                        items = msgpack.unpackb(data)
                        assert type(items) is list and len(items) % 2 == 0
                        for channel, batch in zip(items[::2], items[1::2], strict=True):
                            assert channel in state["in_use"], channel
                            events = wire.decode_batch(batch)[0]
                            assert all(isinstance(e, SESSION_EVENT_TYPES) for e in events)
                        continue
                    control = wire.decode(data)
                    if "ack" in control:
                        if control["ack"] == SENTINEL_ID:
                            assert isinstance(control["error"], ProtocolError), control
                            sentinel_acked = True
                        else:
                            acks.append(control)
                    elif "ended" in control:
                        ended.append(control["ended"])
                    elif "welcome" in control:
                        seen_welcomes.add(control["welcome"])
                    else:
                        assert set(control) == {"refused"}, control
                        seen_refusals.add(control["refused"])
        except ConnectionClosed:
            pass
        if closing is None:
            assert ws.close_code is None, (ws.close_code, ws.close_reason)
        else:
            assert ws.close_code == CLOSE_BAD_FRAME, (ws.close_code, ws.close_reason)
        assert [a["ack"] for a in acks] == [rid for rid, _ in expected_acks], (acks, frames)
        for ack, (_, refused) in zip(acks, expected_acks, strict=True):
            error = ack.get("error")
            assert set(ack) <= {"ack", "error"}, ack
            if refused:
                assert isinstance(error, ProtocolError), ack
            else:
                assert error is None or isinstance(error, (UserError, SessionClosedError)), ack
        if closing is None:
            assert sorted(ended) == expected_ended, (ended, expected_ended)
        else:
            assert len(ended) <= len(expected_ended), (ended, expected_ended)
        assert seen_welcomes <= welcomes and seen_refusals <= refusals
        return "sentinel answered" if closing is None else "closed"
    finally:
        await ws.close()


def test_hostile_frames_on_a_shared_connection(live: LiveThread, problems: ErrorRecords) -> None:
    seen: Counter[str] = Counter()

    @given(
        frames=st.builds(
            lambda good, bad: good + bad,
            st.lists(WELL_FORMED_SHARED, max_size=4),
            st.lists(SHARED_FRAME, max_size=2),
        ).filter(bool)
    )
    def fuzz(frames: list[Any]) -> None:
        del problems.records[:]
        start = time.monotonic()
        seen[live.run(_shared_peer(live, frames))] += 1
        assert time.monotonic() - start < EXAMPLE_SECONDS + 1
        _no_problems(problems)

    fuzz()
    print("shared exchanges:", dict(seen))
    assert sum(seen.values()) > 0
    _check_session_still_works(live)
    _no_problems(problems)


# The handle's side of a shared connection against a hostile server.

SHARED_PUSH = st.builds(
    lambda pairs: pack([x for pair in pairs for x in pair]),
    st.lists(
        st.tuples(
            st.one_of(st.just(SHARED_CHANNEL), st.sampled_from([2, 0, -1]), VALUES),
            st.one_of(BATCH, RAW_BATCH, st.binary(max_size=16), VALUES),
        ),
        max_size=3,
    ),
)
SHARED_CONTROL = st.builds(
    lambda kind, value: pack({kind: value}),
    st.sampled_from(["welcome", "refused", "ended", "ack", "other"]),
    st.one_of(st.sampled_from([SHARED_CHANNEL, 2, 0]), VALUES),
)
SHARED_SERVER_FRAME = st.one_of(
    SHARED_PUSH,
    SHARED_CONTROL,
    SERVER_FRAME,
    st.builds(lambda batch: pack([SHARED_CHANNEL, batch]), BATCH),
)


async def _hostile_shared_server(frames: list[bytes | str], close_code: int) -> list[Any]:
    """The real shared client against a server that welcomes its channel, pushes
    ``frames`` and closes; returns what the channel's request ended with."""

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            hello = msgpack.unpackb(await ws.recv())
            await ws.send(pack({"welcome": hello["channel"]}))
            await ws.recv()  # ready
            for frame in frames:
                await ws.send(on_wire(frame))
            await ws.close(close_code)

    outcomes: list[Any] = []
    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        channel = await open_channel(f"ws://127.0.0.1:{port}", SESSION_ID, SECRET, 0)
        assert channel.number == SHARED_CHANNEL
        try:
            await _read_while_requesting(channel, outcomes)
        finally:
            await channel.close()
    return outcomes


def test_hostile_server_frames_reach_a_shared_channel(
    live: LiveThread, problems: ErrorRecords
) -> None:
    warnings = _Warnings()
    logger = logging.getLogger("ray_realtime.actors.dataplane_shared")
    logger.addHandler(warnings)
    seen: Counter[str] = Counter()

    @given(frames=st.lists(SHARED_SERVER_FRAME, min_size=1, max_size=5), close_code=CLOSE_CODES)
    def fuzz(frames: list[bytes | str], close_code: int) -> None:
        del problems.records[:]
        warnings.records.clear()
        outcomes = live.run(_hostile_shared_server(frames, close_code))
        assert len(outcomes) == 1
        outcome = outcomes[0]
        seen[type(outcome).__name__] += 1
        assert outcome is None or isinstance(outcome, (RayRealtimeError, DataPlaneBroken))
        for record in warnings.records:
            assert record.args and isinstance(record.args[0], ProtocolError), record.args
        assert not [s for s in shared_sockets() if not s.done and s.channels]
        _no_problems(problems)

    try:
        fuzz()
    finally:
        logger.removeHandler(warnings)
    print("the shared channel's request ended with:", dict(seen))
    assert sum(seen.values()) > 0
    _check_session_still_works(live)
