"""Plumbing shared by the benchmarks: the model server processes, the
embedded Ray runtime and the service, opening sessions, running turns, and
waiting for the machine to be quiet before a timed window.

One :class:`BenchContext` serves a whole run: the combined suite passes the
same one to every benchmark (one Ray runtime, one service, one model server
per setting); a script run alone makes its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.agents import bench_agent, register_by_value
from bench.model_server import read_stamp

__all__ = [
    "ACTOR",
    "ACTOR_RAY",
    "IN_PROCESS",
    "REPO_ROOT",
    "SERVICE_CONFIG",
    "BenchContext",
    "EventStream",
    "OpenSession",
    "ServerSettings",
    "SessionPath",
    "TurnResult",
    "prepare_environment",
    "run_standalone",
    "run_turn",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

SERVICE_CONFIG: dict[str, Any] = {
    "warm_pool_size": 4,
    "tool_workers_per_node": 2,
    "guardrail_workers_per_node": 1,
    # sessions_per_actor is left at the service's default: target 2 measures
    # the default configuration. 1000 sessions a node lets the audio
    # measurement go past the default cap of 200.
    "max_sessions_per_node": 1000,
    # The benchmarks run their own model server (see bench.model_server) and
    # hand its URL to every session, in both modes.
    "local_model": False,
}
"""The service every benchmark runs against (deployed once per run)."""


@dataclass(frozen=True)
class SessionPath:
    """A way to run sessions: a label, the execution mode and extra run config."""

    label: str
    mode: str
    config: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        """The extra run config as a dict."""
        return dict(self.config)


IN_PROCESS = SessionPath("in-process", "in_process")
ACTOR = SessionPath("actor", "actor")
"""An actor session as configured by default (the data plane on when the product has it)."""
ACTOR_RAY = SessionPath("actor, Ray calls", "actor", (("data_plane", False),))
"""An actor session with audio and events over Ray calls (``data_plane: False``)."""


def prepare_environment() -> None:
    """Let Ray's worker processes and the model server import this repository
    (an embedded Ray keeps itself on loopback: see cluster/connect.py)."""
    root = str(REPO_ROOT)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    if root not in sys.path:
        sys.path.insert(0, root)


# ------------------------------------------------------------- model server


@dataclass(frozen=True)
class ServerSettings:
    """Settings of one model server process (both paths use the same one)."""

    pace_audio: bool = False
    audio_ms_per_char: float = 12.5
    audio_chunk_ms: int = 40

    def argv(self) -> list[str]:
        """Command-line options of ``bench.model_server``."""
        args = [
            "--audio-ms-per-char",
            str(self.audio_ms_per_char),
            "--audio-chunk-ms",
            str(self.audio_chunk_ms),
        ]
        return [*args, "--pace-audio"] if self.pace_audio else args


class _ModelServerProcess:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout: float = 30.0) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.model_server",
            "--port",
            "0",
            *self.settings.argv(),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode()
        if not line.startswith("ws://"):
            await self.stop()
            raise RuntimeError(f"the benchmark model server did not start (printed {line!r})")
        self.url = line.strip()
        return self.url

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5.0)


# ------------------------------------------------------------------- turns


class EventStream:
    """One handle's event iterator, read with a timeout per event. After a
    timeout the iterator is finished and the stream is ``broken``."""

    def __init__(self, session: Any) -> None:
        self._it = session.__aiter__()
        self.broken = False

    async def next(self, timeout: float) -> Any:
        """The next event; ``TimeoutError`` when none comes in ``timeout`` s."""
        try:
            return await asyncio.wait_for(self._it.__anext__(), max(timeout, 0.001))
        except (TimeoutError, StopAsyncIteration):
            self.broken = True
            raise


@dataclass
class TurnResult:
    """One turn as its handle saw it."""

    latency_ms: float = math.nan
    first_event_ms: float = math.nan
    events: int = 0
    audio_chunks: int = 0
    hops_ms: list[float] = field(default_factory=list)
    chunk_indices: list[int | None] = field(default_factory=list)
    tool_gap_ms: float | None = None
    missed: int = 0
    ok: bool = False
    error: str = ""


async def run_turn(
    session: Any,
    stream: EventStream,
    text: str,
    *,
    agent_ends: int = 1,
    timeout: float = 30.0,
    hops: bool = False,
    until_audio: bool = False,
) -> TurnResult:
    """Send ``text`` and read events until the ``agent_ends``-th ``agent_end``
    (a tool turn ends twice: after the call and after the answer).

    ``hops``: record each audio chunk's stamped index (None: no stamp) and
    each stamped chunk's hop latency (server send -> here). The latency
    runs from just before ``send_message`` to the receipt of the last
    ``agent_end``.
    """
    result = TurnResult()
    ends = 0
    tool_start = None
    t0 = time.perf_counter()
    deadline = t0 + timeout
    try:
        await session.send_message(text)
        while True:
            event = await stream.next(deadline - time.perf_counter())
            now = time.perf_counter()
            if result.events == 0:
                result.first_event_ms = (now - t0) * 1000
            result.events += 1
            kind = event.type
            if kind == "audio":
                result.audio_chunks += 1
                if hops:
                    stamp = read_stamp(event.audio.data)
                    result.chunk_indices.append(None if stamp is None else stamp[0])
                    if stamp is not None:
                        result.hops_ms.append((time.monotonic() - stamp[1]) * 1000)
                if until_audio:
                    break
            elif kind == "tool_start":
                tool_start = now
            elif kind == "tool_end" and tool_start is not None:
                result.tool_gap_ms = (now - tool_start) * 1000
            elif kind == "events_lost":
                result.missed += int(event.missed)
            elif kind == "agent_end":
                ends += 1
                if ends >= agent_ends:
                    break
        result.latency_ms = (time.perf_counter() - t0) * 1000
        result.ok = True
    except (TimeoutError, StopAsyncIteration):
        result.error = f"no agent_end within {timeout:g} s"
    except Exception as exc:  # a benchmark reports a failed turn, it does not stop
        result.error = f"{type(exc).__name__}: {exc}"
    return result


@dataclass
class OpenSession:
    """A started session, its event stream and what starting it took."""

    session: Any
    stream: EventStream
    mode: str
    enter_ms: float

    @property
    def data_plane(self) -> bool | None:
        """Whether the actor session's audio and events use the direct socket
        (None: in-process, or a product without a data plane)."""
        value = getattr(self.session._backend, "data_plane_connected", None)
        return None if value is None else bool(value)


# ----------------------------------------------------------------- context


class BenchContext:
    """Everything a benchmark needs, started lazily and stopped by
    :meth:`close`: model servers by setting, the embedded Ray runtime and the
    service, and the sessions still open."""

    def __init__(self, *, quick: bool, printer: Callable[[str], None] = print) -> None:
        self.quick = quick
        self.printer = printer
        self.agent = bench_agent()
        self._servers: dict[ServerSettings, _ModelServerProcess] = {}
        self._ray_started = False
        self._router: Any = None
        self._open: set[Any] = set()
        self._service_lock: asyncio.Lock | None = None
        self._last_placement = -math.inf
        self._refill_delay = 0.0
        self.ray_start_s = math.nan
        self.service_start_s = math.nan
        self.service_config: dict[str, Any] = {}

    async def __aenter__(self) -> BenchContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def log(self, message: str) -> None:
        """Progress output."""
        self.printer(f"[bench] {message}")

    # ------------------------------------------------------------ servers

    async def model_url(self, settings: ServerSettings | None = None) -> str:
        """URL of the model server with ``settings`` (started on first use)."""
        settings = settings or ServerSettings()
        server = self._servers.get(settings)
        if server is None:
            server = _ModelServerProcess(settings)
            await server.start()
            self._servers[settings] = server
            self.log(f"model server {settings} at {server.url}")
        return server.url

    # ----------------------------------------------------------- service

    @property
    def ray_running(self) -> bool:
        """Whether this context started Ray (and the service)."""
        return self._ray_started

    async def service(self) -> Any:
        """The router, after starting the embedded Ray and deploying the
        service with :data:`SERVICE_CONFIG` on first use."""
        if self._router is not None:
            return self._router
        if self._service_lock is None:
            self._service_lock = asyncio.Lock()
        async with self._service_lock:
            if self._router is None:
                await self._start_service()
        return self._router

    async def _start_service(self) -> None:
        from ray_realtime.cluster.connect import connect
        from ray_realtime.cluster.service import ensure_service

        register_by_value()
        t0 = time.perf_counter()
        self._ray_started = connect(None)
        if not self._ray_started:
            raise RuntimeError("Ray was already initialised; the benchmarks need their own")
        self.ray_start_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        self._router = await ensure_service(dict(SERVICE_CONFIG))
        self.service_start_s = time.perf_counter() - t1
        status = await self._router.status.remote()
        self.service_config = dict(status.get("config", {}))
        # The router tops its warm pool up this long after a placement (0 in
        # versions without the setting); settle() waits that out.
        self._refill_delay = float(status.get("config", {}).get("refill_delay_seconds", 0.0))
        self.log(
            f"embedded Ray started in {self.ray_start_s:.1f} s, service deployed in "
            f"{self.service_start_s:.1f} s"
        )

    async def status(self) -> dict[str, Any]:
        """The router's status."""
        router = await self.service()
        status: dict[str, Any] = await router.status.remote()
        return status

    async def default_packing(self) -> int:
        """The service's ``sessions_per_actor`` (what a session gets when its
        run config does not ask for a size)."""
        await self.service()
        return int(self.service_config.get("sessions_per_actor", 1))

    async def warm_actors(self) -> int:
        """Ready session actors without a session, over all nodes."""
        status = await self.status()
        return int(sum(n.get("warm", 0) for n in status["nodes"]))

    async def wait_warm(self, wanted: int, timeout: float = 15.0) -> bool:
        """Wait until the warm pool holds ``wanted`` actors (bounded)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if await self.warm_actors() >= wanted:
                return True
            await asyncio.sleep(0.1)
        return False

    async def session_actors(self) -> dict[str, str]:
        """``session_id -> session actor name`` of every live actor session."""
        router = await self.service()
        listed = await router.list_sessions.remote()
        return {row["session_id"]: row["actor_name"] for row in listed}

    async def actor_pids(self, names: Iterable[str]) -> dict[str, int]:
        """Process ids of named actors: from the actor's ``ping`` when it
        reports ``pid``, else from Ray's actor table."""
        from ray_realtime.actors import raylib

        wanted = list(dict.fromkeys(names))
        pids: dict[str, int] = {}
        for name in wanted:
            handle = raylib.get_named_actor(name)
            if handle is None:
                continue
            with contextlib.suppress(Exception):
                info = await raylib.result(handle.ping.remote(), 10.0)
                if isinstance(info, dict) and info.get("pid"):
                    pids[name] = int(info["pid"])
        missing = [n for n in wanted if n not in pids]
        if missing:
            from ray._private import state

            table = state.actors()
            for info in table.values():
                if info.get("Name") in missing and info.get("State") == "ALIVE":
                    pids[str(info["Name"])] = int(info["Pid"])
        return pids

    async def named_actors(self, prefix: str) -> list[str]:
        """Names of live actors of the service whose name starts with ``prefix``."""
        import ray

        from ray_realtime.actors import raylib

        await self.service()
        found = []
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if isinstance(entry, dict) and entry.get("namespace") == raylib.NAMESPACE:
                name = str(entry.get("name", ""))
                if name.startswith(prefix):
                    found.append(name)
        return found

    # ---------------------------------------------------------- sessions

    def runner(self, mode: str, **config: Any) -> Any:
        """A runner of the bench agent in ``mode`` ("in_process" / "actor")."""
        from ray_realtime import RealtimeRunner

        return RealtimeRunner(self.agent, config={"execution": mode, **config})

    async def open_session(
        self, mode: str, url: str, *, timeout: float = 60.0, **config: Any
    ) -> OpenSession:
        """Start a session (``async with`` entry) against the model at ``url``."""
        if mode == "actor":
            await self.service()
        t0 = time.perf_counter()
        session = await self.runner(mode, **config).run(model_config={"url": url})
        self._open.add(session)
        await asyncio.wait_for(session.__aenter__(), timeout)
        enter_ms = (time.perf_counter() - t0) * 1000
        if mode == "actor":
            self._last_placement = time.perf_counter()
        return OpenSession(session, EventStream(session), mode, enter_ms)

    async def open_sessions(
        self, count: int, mode: str, url: str, *, concurrency: int = 25, **config: Any
    ) -> list[OpenSession]:
        """Start ``count`` sessions, ``concurrency`` at a time."""
        gate = asyncio.Semaphore(concurrency)

        async def one() -> OpenSession:
            async with gate:
                return await self.open_session(mode, url, **config)

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def open_packed(
        self, count: int, mode: str, url: str, per_actor: int | None, **config: Any
    ) -> list[OpenSession]:
        """Start ``count`` sessions packed ``per_actor`` to an actor (actor
        mode): one session alone (its actor starts), then the rest of that
        actor's sessions at once, and so on. ``per_actor`` None: the run
        config does not ask for a size (the service's default), and the
        sessions open as a user would open them, ``open_sessions``; 1: each
        asks for a dedicated actor. In-process, the same as :meth:`open_sessions`."""
        if mode != "actor" or per_actor is None:
            return await self.open_sessions(count, mode, url, **config)
        config = {**config, "sessions_per_actor": per_actor}
        if per_actor <= 1:
            return await self.open_sessions(count, mode, url, **config)
        sessions: list[OpenSession] = []
        while len(sessions) < count:
            sessions.append(await self.open_session(mode, url, **config))
            rest = min(per_actor - 1, count - len(sessions))
            sessions.extend(await self.open_sessions(rest, mode, url, **config))
        return sessions

    async def close_session(self, opened: OpenSession | Any) -> None:
        """Close a session; errors are ignored (the benchmark is over with it)."""
        session = opened.session if isinstance(opened, OpenSession) else opened
        self._open.discard(session)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.close(), 30.0)

    async def close_sessions(self, sessions: Iterable[OpenSession | Any] | None = None) -> None:
        """Close the given sessions (default: every one still open)."""
        targets = list(self._open) if sessions is None else list(sessions)
        await asyncio.gather(*(self.close_session(s) for s in targets))

    # ------------------------------------------------------------ quiet

    async def settle(self, *, max_wait: float = 8.0, window: float = 0.4) -> float:
        """Wait (bounded) until our process tree is nearly idle, so a timed
        window does not pay for actor starts or retirements still going on.
        Idle means below 0.12 cores plus 8 millicores per process of the tree
        (every Ray worker has a 10 ms timer). The router's delayed refill after
        the last placement is waited out first. Returns the seconds waited."""
        t0 = time.perf_counter()
        refill_at = self._last_placement + self._refill_delay + 0.3
        if self._refill_delay and t0 < refill_at:
            await asyncio.sleep(min(refill_at - t0, max_wait))
        meter = common.CpuMeter()
        while time.perf_counter() - t0 < max_wait:
            meter.start()
            await asyncio.sleep(window)
            usage = meter.stop()
            if usage.cores() <= 0.12 + 0.008 * usage.processes:
                break
        return time.perf_counter() - t0

    async def leftovers(self) -> int:
        """What is left of earlier work: open sessions, session actors beyond
        the warm pool (not retired yet, or a packed actor of another size),
        and session actor processes the router no longer lists (being
        killed). 0 when the service has not started."""
        if self._router is None:
            return 0
        status = await self.status()
        nodes = status.get("nodes", [])
        fleet = sum(int(n.get("session_actors", 0)) for n in nodes)
        extra = sum(max(0, int(n.get("session_actors", 0)) - int(n.get("warm", 0))) for n in nodes)
        procs = sum(1 for p in common.snapshot().values() if p.role == "session actors")
        return int(status.get("sessions", 0)) + extra + max(0, procs - fleet)

    async def wait_quiet(self, *, max_wait: float) -> float:
        """Between phases: close every session still open, wait (bounded)
        until the actors they used are retired and their processes gone, then
        until the process tree is idle (:meth:`settle`). Returns the seconds
        waited."""
        t0 = time.perf_counter()
        await self.close_sessions()
        deadline = t0 + max_wait
        while time.perf_counter() < deadline:
            try:
                if await self.leftovers() == 0:
                    break
            except Exception:  # a status call failing is no reason to stop the run
                break
            await asyncio.sleep(0.25)
        left = max(0.5, deadline - time.perf_counter())
        await self.settle(max_wait=left, window=0.5)
        return time.perf_counter() - t0

    # ---------------------------------------------------------- shutdown

    async def close(self) -> None:
        """Close open sessions, stop the service and Ray (if started here)
        and the model servers."""
        await self.close_sessions()
        if self._ray_started:
            from ray_realtime.cluster.connect import disconnect
            from ray_realtime.cluster.service import shutdown_service

            with contextlib.suppress(Exception):
                await asyncio.wait_for(shutdown_service(), 30.0)
            disconnect(True)
            self._ray_started = False
            self._router = None
        for server in self._servers.values():
            await server.stop()
        self._servers.clear()


# --------------------------------------------------------------- scripts


def run_standalone(
    run: Callable[[BenchContext], Awaitable[common.BenchResult]],
    argv: Sequence[str] | None,
    description: str,
) -> int:
    """``main`` of a benchmark script: parse ``--quick``, run, print."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small and fast (development)")
    args = parser.parse_args(argv)
    prepare_environment()
    info = common.machine_info()
    print(common.machine_table(info).render(), flush=True)

    async def go() -> common.BenchResult:
        async with BenchContext(quick=args.quick) as ctx:
            t0 = time.perf_counter()
            result = await run(ctx)
            result.seconds = time.perf_counter() - t0
            return result

    result = asyncio.run(go())
    print()
    print(result.render(), flush=True)
    return 0
