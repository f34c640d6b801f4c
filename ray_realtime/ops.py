"""Operator commands: ``status`` (table, ``--json``, ``--watch``), ``drain``, ``undrain``.

Each command joins the Ray cluster (``--address``, else ``RAY_ADDRESS``, else
the service running on this machine), asks the router and prints; every wait
for the router is bounded. Nothing printed carries a secret: the router's
answers hold ids, addresses and numbers only, and ``--json`` passes on a fixed
set of keys.

Draining stops new placements on a node and waits for the sessions there to
end. After ``--timeout`` it moves the sessions left to other nodes with the
recovery machinery (each is restored from the session store on another
actor; its handles follow and its readers get one ``session_recovered`` with
reason ``drained``). With ``--no-move`` it reports the sessions left instead
(they keep running on the drained node) and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = [
    "add_commands",
    "format_status",
    "interruptible",
    "run_drain",
    "run_status",
    "run_undrain",
    "status_document",
]

STATUS_TIMEOUT = 30.0
"""Seconds a command waits for one answer of the router."""

_JSON_KEYS = (
    "nodes",
    "sessions",
    "lost_sessions",
    "agents",
    "agents_in_use",
    "placements",
    "turns",
    "config",
)
_NODE_KEYS = (
    "node_id",
    "address",
    "alive",
    "drained",
    "sessions",
    "capacity",
    "load",
    "session_actors",
    "warm",
    "tool_workers",
    "guardrail_workers",
    "model_servers",
    "turns",
)

MOVE_TIMEOUT = 300.0
"""Seconds a command waits for the router to move a node's sessions."""

# On a terminal, --watch redraws in place: cursor home, clear the screen.
_CLEAR = "\x1b[H\x1b[2J"


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def format_status(status: dict[str, Any]) -> str:
    """The status as a table, one row per node, and a summary line."""
    header = (
        "node",
        "address",
        "alive",
        "drained",
        "sessions",
        "load",
        "actors",
        "warm",
        "tools",
        "guards",
        "model",
        "p50ms",
        "p99ms",
        "errors",
    )
    rows = [header]
    for n in status["nodes"]:
        turns = n.get("turns") or {}
        rows.append(
            (
                n["node_id"][:12],
                n["address"],
                "yes" if n["alive"] else "no",
                "yes" if n["drained"] else "no",
                str(n["sessions"]),
                f"{100 * n.get('load', 0.0):.0f}%",
                str(n["session_actors"]),
                str(n["warm"]),
                str(n["tool_workers"]),
                str(n["guardrail_workers"]),
                str(n["model_servers"]),
                _ms(turns.get("turn_p50_ms")),
                _ms(turns.get("turn_p99_ms")),
                str(turns.get("errors", 0)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    total = status.get("turns") or {}
    lines.append(
        f"turns (last minute): {total.get('turns', 0)}  p50: {_ms(total.get('turn_p50_ms'))} ms"
        f"  p99: {_ms(total.get('turn_p99_ms'))} ms  model errors: {total.get('errors', 0)}"
        f" (since start: {total.get('errors_total', 0)})"
    )
    in_use = status.get("agents_in_use", {})
    agents = ", ".join(f"{k} ({n} session{'s' if n != 1 else ''})" for k, n in in_use.items())
    registered = ", ".join(f"{k} v{v}" for k, v in status.get("agents", {}).items())
    lines.append(
        f"sessions: {status['sessions']}  lost: {status['lost_sessions']}  "
        f"agents in sessions: {agents or 'none'}  registered for handoffs: {registered or 'none'}"
    )
    return "\n".join(lines)


def status_document(status: dict[str, Any], address: str) -> dict[str, Any]:
    """The machine-readable status: a fixed set of keys (so nothing the router
    may add later leaks through), plus the cluster address and the time."""
    doc: dict[str, Any] = {"address": address, "time": round(time.time(), 3)}
    for key in _JSON_KEYS:
        if key == "nodes":
            doc["nodes"] = [
                {k: node[k] for k in _NODE_KEYS if k in node} for node in status.get("nodes", [])
            ]
        elif key in status:
            doc[key] = status[key]
    return doc


# ----------------------------------------------------------------- plumbing


@contextmanager
def interruptible() -> Iterator[None]:
    """While Ray starts or joins, Ctrl-C ends the process at once.

    Ray's connect loops run in native code, where Python's KeyboardInterrupt
    waits until they return; the default signal action does not wait.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    except ValueError:  # not the main thread (main() called from a thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _with_service(address: str | None, body: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Join the cluster, run ``body(address)`` and leave; the service's
    absence, silence and typed errors become one line on stderr and exit 2."""
    from ray_realtime.cluster.connect import connect, current_address, disconnect
    from ray_realtime.exceptions import RayRealtimeError, ServiceNotRunningError

    try:
        with interruptible():
            started = connect(address or "auto")
    except RayRealtimeError as exc:
        return _fail(str(exc))
    where = current_address()
    try:
        return asyncio.run(body(where))
    except TimeoutError:
        return _fail(
            f"the ray-realtime service at {where} did not answer within {STATUS_TIMEOUT:g} s"
        )
    except ServiceNotRunningError:
        return _fail(
            f"no ray-realtime service is running at {where}; start one with `ray-realtime serve`"
        )
    except RayRealtimeError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        disconnect(started)


async def _status() -> dict[str, Any]:
    from ray_realtime.cluster.service import service_status

    return await asyncio.wait_for(service_status(), STATUS_TIMEOUT)


# ------------------------------------------------------------------- status


def run_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``ray-realtime status``: once, or every ``--interval`` s with ``--watch``."""
    stream = out or sys.stdout
    interval = float(getattr(args, "interval", 2.0))
    count = getattr(args, "count", None)
    if interval <= 0:
        return _fail("--interval must be more than 0")

    async def body(address: str) -> int:
        shown = 0
        in_place = bool(args.watch) and not args.json and stream.isatty()
        while True:
            status = await _status()
            if args.json:
                # One document; with --watch one per line (JSON Lines).
                stream.write(json.dumps(status_document(status, address), sort_keys=True) + "\n")
            else:
                table = format_status(status)
                if args.watch:
                    stamp = time.strftime("%H:%M:%S")
                    head = f"ray-realtime at {address}  {stamp}  (every {interval:g} s; Ctrl-C)"
                    table = f"{_CLEAR if in_place else ''}{head}\n{table}\n"
                stream.write(table + ("" if args.watch else "\n"))
            stream.flush()
            shown += 1
            if not args.watch or (count is not None and shown >= count):
                return 0
            await asyncio.sleep(interval)

    return _with_service(args.address, body)


# -------------------------------------------------------------------- drain


def _resolve_node(status: dict[str, Any], wanted: str) -> dict[str, Any]:
    """The node whose id is ``wanted`` or starts with it (the table shows 12
    characters); a :class:`ConfigError` naming the choices otherwise."""
    from ray_realtime.exceptions import ConfigError

    nodes = status.get("nodes", [])
    exact = [n for n in nodes if n["node_id"] == wanted]
    found = exact or [n for n in nodes if wanted and n["node_id"].startswith(wanted)]
    if len(found) == 1:
        return dict(found[0])
    known = ", ".join(n["node_id"][:12] for n in nodes) or "none"
    what = "matches several nodes" if found else "is not a node of this cluster"
    raise ConfigError(f"{wanted!r} {what} (nodes: {known})")


async def _sessions_on(node_id: str) -> list[str]:
    from ray_realtime.cluster.service import get_router

    listing = await asyncio.wait_for(get_router().list_sessions.remote(), STATUS_TIMEOUT)
    return sorted(str(e["session_id"]) for e in listing if e.get("node_id") == node_id)


def run_drain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``ray-realtime drain NODE``: no new sessions there; wait for its
    sessions to end, reporting progress, at most ``--timeout`` s."""
    stream = out or sys.stdout
    if args.timeout < 0 or args.interval <= 0:
        return _fail("--timeout must be 0 or more and --interval more than 0")

    def say(text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    async def body(address: str) -> int:
        from ray_realtime.cluster.service import drain_node

        node = _resolve_node(await _status(), args.node)
        node_id, short = node["node_id"], node["node_id"][:12]
        await asyncio.wait_for(drain_node(node_id, True), STATUS_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        left = await _sessions_on(node_id)
        say(
            f"node {short} ({node['address']}) drained: no new sessions go there; "
            f"waiting up to {args.timeout:g} s for its {len(left)} session(s) to end"
        )
        last = len(left)
        while left:
            remaining = deadline - loop.time()
            if remaining <= 0:
                shown = ", ".join(left[:20]) + (" ..." if len(left) > 20 else "")
                if not getattr(args, "no_move", False):
                    return await _move(node_id, short, left, say)
                say(
                    f"timeout: {len(left)} session(s) still on node {short} after "
                    f"{args.timeout:g} s: {shown}\n"
                    f"the node stays drained; with --no-move they keep running there until "
                    f"they end. Run `ray-realtime drain {short}` again to keep waiting or "
                    f"to move them, `ray-realtime undrain {short}` to take new sessions "
                    "there again."
                )
                return 1
            await asyncio.sleep(min(args.interval, remaining))
            left = await _sessions_on(node_id)
            if len(left) != last:
                say(f"{len(left)} session(s) left on node {short}")
                last = len(left)
        say(
            f"node {short} is drained and empty: no session runs there; "
            f"`ray-realtime undrain {short}` takes new sessions there again"
        )
        return 0

    return _with_service(args.address, body)


async def _move(node_id: str, short: str, left: list[str], say: Callable[[str], None]) -> int:
    """Move the sessions still on a drained node to other nodes; 0 when the
    node is empty afterwards."""
    from ray_realtime.cluster.service import move_sessions

    say(f"timeout: moving {len(left)} session(s) from node {short} to other nodes")
    result = await asyncio.wait_for(move_sessions(node_id), MOVE_TIMEOUT)
    moved, lost = int(result.get("moved", 0)), int(result.get("lost", 0))
    say(f"moved {moved} session(s) off node {short}" + (f"; {lost} lost" if lost else ""))
    rest = await _sessions_on(node_id)
    if rest or lost:
        say(f"{len(rest)} session(s) still on node {short}; it stays drained")
        return 1
    say(
        f"node {short} is drained and empty: no session runs there; "
        f"`ray-realtime undrain {short}` takes new sessions there again"
    )
    return 0


def run_undrain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``ray-realtime undrain NODE``: the node takes new sessions again."""
    stream = out or sys.stdout

    async def body(address: str) -> int:
        from ray_realtime.cluster.service import drain_node

        node = _resolve_node(await _status(), args.node)
        await asyncio.wait_for(drain_node(node["node_id"], False), STATUS_TIMEOUT)
        stream.write(f"node {node['node_id'][:12]} ({node['address']}) takes new sessions again\n")
        stream.flush()
        return 0

    return _with_service(args.address, body)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``status``, ``drain`` and ``undrain`` to the command's subparsers."""
    address_help = "Ray address (default: RAY_ADDRESS, else the service running on this machine)"
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show nodes, sessions, pools, load, turn latency and errors",
    )
    status.add_argument("--address", default=None, help=address_help)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (--watch)"
    )
    status.add_argument(
        "--count", type=int, default=None, help="stop after this many refreshes (--watch)"
    )
    status.set_defaults(func=run_status)

    drain = sub.add_parser(
        "drain",
        parents=[common],
        help="stop placing sessions on a node, wait for its sessions to end, then move them",
        description=(
            "Stop placing new sessions on NODE (an id, or the first characters `status` "
            "shows) and wait for the sessions there to end, reporting progress. After "
            "--timeout it moves the sessions left to other nodes (restored from the "
            "session store; clients follow and see one session_recovered event with "
            "reason `drained`). With --no-move it lists the sessions left instead and "
            "exits 1; the node stays drained either way."
        ),
    )
    drain.add_argument("node", help="node id (or its first characters)")
    drain.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for the sessions to end"
    )
    drain.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    drain.add_argument(
        "--no-move",
        action="store_true",
        help="after --timeout, leave the sessions on the node (exit 1) instead of moving them",
    )
    drain.add_argument("--address", default=None, help=address_help)
    drain.set_defaults(func=run_drain)

    undrain = sub.add_parser(
        "undrain", parents=[common], help="let a drained node take new sessions again"
    )
    undrain.add_argument("node", help="node id (or its first characters)")
    undrain.add_argument("--address", default=None, help=address_help)
    undrain.set_defaults(func=run_undrain)
