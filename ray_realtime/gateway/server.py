"""The gateway's server: one ``websockets`` server for the media WebSockets and
the small HTTP endpoints.

* ``GET /twilio/media-stream`` (WebSocket): a Twilio Media Stream; each call
  gets its own session, opened with :class:`~ray_realtime.RealtimeRunner`
  only once Twilio's ``start`` arrived (within ``start_timeout``), and closed
  when the call ends, whichever way it ends.
* ``POST /twilio/voice``: the voice webhook; answers TwiML connecting the call
  to the media stream, after checking ``X-Twilio-Signature`` when an auth
  token is configured (403 when it does not match).
* ``GET /``: the browser page; ``GET /browser/token``: a short-lived signed
  token for ``GET /browser/stream`` (WebSocket), the page's call (see
  :mod:`ray_realtime.gateway.browser`).
* ``GET /healthz``: ``ok``.

``websockets`` reads only GET requests without a body; a POST's head and its
small form body are therefore read here first (bounded) and handed on as a
GET carrying the body in a header of our own, so that one server on one port
answers everything. Clients cannot forge that header to any effect: it is
overwritten, and the signature check covers the body anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import NoCapacityError
from ray_realtime.gateway.audio import AudioMode, CallAudio
from ray_realtime.gateway.browser import (
    CLOSE_BAD_TOKEN,
    SECRET_ENV,
    TOKEN_TTL_SECONDS,
    Interrupt,
    PageMessageError,
    event_message,
    make_token,
    new_secret,
    parse_page_message,
    token_error,
)
from ray_realtime.gateway.page import PAGE_HTML
from ray_realtime.gateway.twilio import (
    AudioIn,
    BargeIn,
    CallStarted,
    Command,
    Digit,
    Hangup,
    Heard,
    Send,
    TwilioStream,
    connect_twiml,
    valid_twilio_signature,
)
from ray_realtime.model.playback import RealtimePlaybackTracker
from ray_realtime.runner.runner import RealtimeRunner
from ray_realtime.runner.session import RealtimeSession
from ray_realtime.types.config import RealtimeRunConfig
from ray_realtime.types.events import (
    RealtimeAudio,
    RealtimeAudioInterrupted,
    RealtimeError,
    RealtimeSessionEvent,
)

__all__ = ["Gateway"]

logger = logging.getLogger("ray_realtime.gateway")

NODE_ID_LABEL = "ray.io/node-id"
"""The label Ray gives every node, its id: a placement on it pins a node."""
MEDIA_PATH = "/twilio/media-stream"
VOICE_PATH = "/twilio/voice"
BROWSER_PATH = "/browser/stream"
TOKEN_PATH = "/browser/token"
MAX_POST_BYTES = 6_000
"""Largest voice-webhook form body (Twilio's is ~1-2 KB)."""
_MAX_HEAD_BYTES = 16 * 1024
_BODY_HEADER = "X-Ray-Realtime-Body"
_METHOD_HEADER = "X-Ray-Realtime-Method"
_ERROR_HEADER = "X-Ray-Realtime-Body-Error"
_OURS = (_BODY_HEADER.lower(), _METHOD_HEADER.lower(), _ERROR_HEADER.lower())


class _Connection(ServerConnection):
    """A server connection that also accepts a small ``POST`` (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sniff: bytearray | None = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._sniff is None:
            super().data_received(data)
            return
        self._sniff += data
        buf = bytes(self._sniff)
        if len(buf) < 5 and b"POST ".startswith(buf):
            return
        if not buf.startswith(b"POST "):
            self._sniff = None
            super().data_received(buf)
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD_BYTES:
                self._pass_on(buf.split(b"\r\n", 1)[0], [], b"", "request head too large")
            return
        lines = buf[:end].split(b"\r\n")
        headers = [ln for ln in lines[1:] if not _drop_header(ln)]
        length = _content_length(lines[1:])
        if length is None or length > MAX_POST_BYTES:
            self._pass_on(lines[0], headers, b"", "missing or too large Content-Length")
            return
        if len(buf) < end + 4 + length:
            return
        self._pass_on(lines[0], headers, buf[end + 4 : end + 4 + length], None)

    def _pass_on(
        self, request_line: bytes, headers: list[bytes], body: bytes, error: str | None
    ) -> None:
        self._sniff = None
        parts = request_line.split(b" ")
        path = parts[1] if len(parts) == 3 else b"/"
        extra = [f"{_METHOD_HEADER}: POST".encode()]
        if error is None and not all(0x20 <= c < 0x7F for c in body):
            error = "form body is not URL-encoded ASCII"
        if error is not None:
            extra.append(f"{_ERROR_HEADER}: {error}".encode())
        else:
            extra.append(_BODY_HEADER.encode() + b": " + body)
        head = b"\r\n".join([b"GET " + path + b" HTTP/1.1", *headers, *extra])
        super().data_received(head + b"\r\n\r\n")


def _drop_header(line: bytes) -> bool:
    name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
    return name in ("content-length", "transfer-encoding", *_OURS)


def _content_length(lines: list[bytes]) -> int | None:
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


class Gateway:
    """Phone calls into realtime sessions, served on ``host:port``.

    ``agent`` answers every call (or a callable returning the agent, called
    per call, so a reloaded agent reaches new calls). ``run_config`` is the
    runner's config for each call's session; the gateway sets the model's
    audio formats from ``audio_mode`` (``"passthrough"``: G.711 μ-law to and
    from the model; ``"resample"``: PCM16 24 kHz). ``twilio_auth_token``
    enables the signature check of the voice webhook; ``public_url`` (e.g.
    ``https://voice.example.com``) is the address Twilio uses, for the
    signature and the stream URL (by default taken from the request's Host).
    ``prefer_node_id``: actor sessions are placed on this node (the
    gateway's own, so a call's audio does not cross nodes) while it has room,
    elsewhere otherwise; ignored when the run config names a placement.
    ``on_event`` sees every session event of every call, with the call's
    sid (for logging or metrics; it must not block). ``browser_secret``
    signs the browser page's tokens (default: ``RAY_REALTIME_GATEWAY_SECRET``
    from the environment, else a random secret per gateway).

    Each call's session gets a :class:`RealtimePlaybackTracker` (model config
    ``playback_tracker``) fed from Twilio's echoed marks, so an interrupted
    reply is truncated where the caller stopped hearing it.
    """

    def __init__(
        self,
        agent: RealtimeAgent[Any] | Callable[[], RealtimeAgent[Any]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        run_config: RealtimeRunConfig | None = None,
        audio_mode: AudioMode = "passthrough",
        twilio_auth_token: str | None = None,
        public_url: str | None = None,
        start_timeout: float = 10.0,
        barge_in_rms: float | None = 1_000.0,
        prefer_node_id: str | None = None,
        on_event: Callable[[str, RealtimeSessionEvent], None] | None = None,
        browser_secret: str | bytes | None = None,
    ) -> None:
        self._agent = agent
        self._host = host
        self._port = port
        self._run_config: RealtimeRunConfig = dict(run_config or {})  # type: ignore[assignment]
        CallAudio(audio_mode)  # validates the mode
        self._audio_mode: AudioMode = audio_mode
        self._auth_token = twilio_auth_token
        self._public_url = public_url.rstrip("/") if public_url else None
        self._start_timeout = start_timeout
        self._barge_in_rms = barge_in_rms
        self._prefer_node_id = prefer_node_id
        self._on_event = on_event
        secret = browser_secret if browser_secret is not None else os.environ.get(SECRET_ENV)
        self._secret = secret.encode() if isinstance(secret, str) else secret or new_secret()
        self._server: Server | None = None
        self.active_calls = 0
        """Calls in progress."""
        self.calls_served = 0
        """Calls that have ended."""
        self.open_sessions = 0
        """Sessions of calls in progress (a session is closed when its call ends)."""
        self.frames_in = 0
        """Caller audio frames handed to sessions (Twilio media messages)."""
        self.reply_ms_out = 0.0
        """Reply audio sent to callers, in milliseconds."""

    @property
    def port(self) -> int:
        """The port listened on (known after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Start listening."""
        if self._auth_token is None:
            logger.warning(
                "gateway: no Twilio auth token configured; %s answers unsigned requests",
                VOICE_PATH,
            )
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            create_connection=_Connection,
            max_size=64 * 1024,
            compression=None,
        )

    async def stop(self) -> None:
        """Stop listening and end every call (their sessions are closed)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        posted = request.headers.get(_METHOD_HEADER) == "POST"
        if path in (MEDIA_PATH, BROWSER_PATH) and not posted:
            return None
        if path == "/healthz" and not posted:
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/" and not posted:
            page = connection.respond(HTTPStatus.OK, PAGE_HTML)
            page.headers["Content-Type"] = "text/html; charset=utf-8"
            return page
        if path == TOKEN_PATH and not posted:
            body = {"token": make_token(self._secret), "expires_in": TOKEN_TTL_SECONDS}
            answer = connection.respond(HTTPStatus.OK, json.dumps(body))
            answer.headers["Content-Type"] = "application/json"
            answer.headers["Cache-Control"] = "no-store"
            return answer
        if path == VOICE_PATH:
            return self._voice(connection, request, posted)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    def _voice(self, connection: ServerConnection, request: Request, posted: bool) -> Response:
        if not posted:
            return connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, "POST only\n")
        error = request.headers.get(_ERROR_HEADER)
        if error:
            logger.warning("gateway: bad voice webhook request: %s", error)
            return connection.respond(HTTPStatus.BAD_REQUEST, "bad request\n")
        params = dict(parse_qsl(request.headers.get(_BODY_HEADER, ""), keep_blank_values=True))
        base = self._public_url or f"https://{request.headers.get('Host', 'localhost')}"
        if self._auth_token is not None:
            url = base + request.path
            signature = request.headers.get("X-Twilio-Signature")
            if not valid_twilio_signature(self._auth_token, url, params, signature):
                logger.warning(
                    "gateway: voice webhook with an invalid X-Twilio-Signature (call %s)",
                    params.get("CallSid", "?")[:64],
                )
                return connection.respond(HTTPStatus.FORBIDDEN, "invalid signature\n")
        stream_url = "wss://" + urlsplit(base).netloc + MEDIA_PATH
        response = connection.respond(HTTPStatus.OK, connect_twiml(stream_url))
        response.headers["Content-Type"] = "text/xml"
        return response

    # -- media ------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.active_calls += 1
        try:
            if ws.request is not None and urlsplit(ws.request.path).path == BROWSER_PATH:
                await self._browser_call(ws)
            else:
                await self._call(ws)
        finally:
            self.active_calls -= 1
            self.calls_served += 1

    async def _call(self, ws: ServerConnection) -> None:
        stream = TwilioStream(barge_in_rms=self._barge_in_rms)
        try:
            started = await asyncio.wait_for(self._wait_start(ws, stream), self._start_timeout)
        except TimeoutError:
            logger.warning("gateway: no 'start' within %g s; closing the call", self._start_timeout)
            await ws.close(1008, "no start")
            return
        except ConnectionClosed:
            return
        if isinstance(started, Hangup):
            await self._hang_up(ws, stream, started)
            return
        audio = CallAudio(self._audio_mode)
        config: Any = dict(self._run_config)
        settings = dict(config.get("model_settings") or {})
        settings["input_audio_format"] = audio.model_format
        settings["output_audio_format"] = audio.model_format
        config["model_settings"] = settings
        t0 = time.perf_counter()
        try:
            agent = self._agent if isinstance(self._agent, RealtimeAgent) else self._agent()
            tracker = RealtimePlaybackTracker()
            session = await self._open_session(agent, config, tracker)
            async with session:
                self.open_sessions += 1
                logger.info(
                    "gateway: call %s (stream %s) -> session %s in %.0f ms",
                    started.call_sid,
                    started.stream_sid,
                    session.session_id,
                    (time.perf_counter() - t0) * 1000,
                )
                try:
                    await self._converse(ws, stream, audio, session, tracker)
                finally:
                    self.open_sessions -= 1
        except Exception as exc:  # the call ends; the gateway serves on
            logger.warning(
                "gateway: call %s failed: %s: %s", stream.call_sid, type(exc).__name__, exc
            )
            await ws.close(1011, "session failed")
            return
        await ws.close()

    async def _browser_call(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = dict(parse_qsl(urlsplit(ws.request.path).query))
        refused = token_error(self._secret, query.get("token"))
        if refused is not None:
            logger.warning("gateway: browser call refused: %s", refused)
            await ws.close(CLOSE_BAD_TOKEN, refused)
            return
        config: Any = dict(self._run_config)
        settings = dict(config.get("model_settings") or {})
        settings["input_audio_format"] = settings["output_audio_format"] = "pcm16"
        config["model_settings"] = settings
        try:
            agent = self._agent if isinstance(self._agent, RealtimeAgent) else self._agent()
            tracker = RealtimePlaybackTracker()
            session = await self._open_session(agent, config, tracker)
            async with session:
                self.open_sessions += 1
                try:
                    await self._browser_converse(ws, session, tracker)
                finally:
                    self.open_sessions -= 1
        except ConnectionClosed:
            return
        except Exception as exc:  # the call ends; the gateway serves on
            logger.warning("gateway: browser call failed: %s: %s", type(exc).__name__, exc)
            await ws.close(1011, "session failed")
            return
        await ws.close()

    async def _browser_converse(
        self, ws: ServerConnection, session: RealtimeSession, tracker: RealtimePlaybackTracker
    ) -> None:
        async def from_page() -> str:
            async for message in ws:
                if isinstance(message, bytes):
                    if len(message) % 2:
                        return "odd-length PCM16 frame"
                    await session.send_audio(message)
                    continue
                try:
                    command = parse_page_message(message)
                except PageMessageError as exc:
                    return str(exc)
                if isinstance(command, Interrupt):
                    await session.interrupt()
                else:
                    tracker.on_play_ms(command.item_id, command.content_index, command.ms)
            return ""

        async def to_page() -> str:
            async for event in session:
                if self._on_event is not None:
                    self._on_event("browser", event)
                message = event_message(event)
                if message is not None:
                    await ws.send(json.dumps(message))
                if isinstance(event, RealtimeAudio):
                    await ws.send(event.audio.data)
            return ""

        tasks = [asyncio.ensure_future(from_page()), asyncio.ensure_future(to_page())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise exc
            if exc is None and task.result():
                logger.warning("gateway: closing browser call: %s", task.result())
                await ws.close(1008, task.result()[:100])

    async def _open_session(
        self, agent: RealtimeAgent[Any], config: Any, tracker: RealtimePlaybackTracker
    ) -> RealtimeSession:
        """A started session for a call, on the preferred node if it has room."""
        preferred = self._prefer_node_id
        model_config: Any = {"playback_tracker": tracker}
        if preferred and "placement" not in config and config.get("execution") != "in_process":
            pinned: Any = {**config, "placement": {"labels": {NODE_ID_LABEL: preferred}}}
            session = await RealtimeRunner(agent, config=pinned).run(model_config=model_config)
            try:
                return await session.enter()
            except NoCapacityError:
                logger.info("gateway: no room on this node; placing the call's session elsewhere")
                await session.close()
        session = await RealtimeRunner(agent, config=config).run(model_config=model_config)
        return await session.enter()

    async def _wait_start(self, ws: ServerConnection, stream: TwilioStream) -> CallStarted | Hangup:
        async for message in ws:
            for command in stream.receive(message):
                if isinstance(command, CallStarted | Hangup):
                    return command
        return Hangup("the caller left before 'start'", error=False)

    async def _hang_up(self, ws: ServerConnection, stream: TwilioStream, hangup: Hangup) -> None:
        if hangup.error:
            logger.warning("gateway: closing call %s: %s", stream.call_sid or "?", hangup.reason)
            await ws.close(1008, hangup.reason[:100])
        else:
            logger.info("gateway: call %s ended: %s", stream.call_sid or "?", hangup.reason)
            await ws.close()

    async def _converse(
        self,
        ws: ServerConnection,
        stream: TwilioStream,
        audio: CallAudio,
        session: RealtimeSession,
        tracker: RealtimePlaybackTracker,
    ) -> None:
        cut: deque[str] = deque(maxlen=32)  # replies cut off lately (item ids)

        async def perform(commands: list[Command]) -> Hangup | None:
            for command in commands:
                if isinstance(command, AudioIn):
                    await session.send_audio(audio.to_model(command.audio))
                    self.frames_in += 1
                elif isinstance(command, Send):
                    await ws.send(command.text)
                elif isinstance(command, Heard):
                    # The session reads this when it truncates an interrupted
                    # reply. Marks of a reply already cut off must not bring
                    # it back (a later interrupt would truncate it again).
                    if command.item_id not in cut:
                        tracker.on_play_ms(command.item_id, command.content_index, command.ms)
                elif isinstance(command, BargeIn):
                    logger.info(
                        "gateway: call %s barged in after %.0f ms heard",
                        stream.call_sid,
                        command.heard_ms,
                    )
                    await session.interrupt()
                elif isinstance(command, Hangup):
                    return command
                elif isinstance(command, Digit | CallStarted):
                    pass  # digits are not forwarded to the model yet
            return None

        async def from_caller() -> Hangup:
            async for message in ws:
                hangup = await perform(stream.receive(message))
                if hangup is not None:
                    return hangup
            return Hangup("the caller's connection closed", error=False)

        async def to_caller() -> Hangup:
            async for event in session:
                if self._on_event is not None:
                    self._on_event(stream.call_sid, event)
                if isinstance(event, RealtimeAudio):
                    data = event.audio.data
                    item = (event.item_id, event.content_index)
                    ms = audio.model_ms(data)
                    await perform(stream.reply_audio(audio.to_phone(data), ms, item))
                    self.reply_ms_out += ms
                elif isinstance(event, RealtimeAudioInterrupted):
                    # An actor session's handle resets the tracker when it reads
                    # the event; marks handled since may have fed it again.
                    cut.append(event.item_id)
                    tracker.on_interrupted()
                    await perform(stream.interrupted())
                elif isinstance(event, RealtimeError):
                    logger.warning(
                        "gateway: call %s: session error: %s",
                        stream.call_sid,
                        str(event.error.get("message"))[:200],
                    )
            return Hangup("the session ended", error=False)

        tasks = [asyncio.ensure_future(from_caller()), asyncio.ensure_future(to_caller())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if isinstance(exc, ConnectionClosed):
                logger.info("gateway: call %s: the caller's connection closed", stream.call_sid)
            elif exc is not None:
                raise exc
            else:
                await self._hang_up(ws, stream, task.result())
