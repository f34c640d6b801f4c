"""The ``ray-realtime`` command: demo, serve, status, drain, undrain, bench, local-model."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from ray_realtime.ops import add_commands, format_status, interruptible

__all__ = ["main"]

DESCRIPTION = (
    "Realtime voice and streaming agents whose sessions live in Ray actors. "
    "Commands: demo, serve, status, drain, undrain, bench, local-model. "
    "Add --verbose to any command to see Ray's own log lines."
)


def _demo(args: argparse.Namespace) -> int:
    from ray_realtime.demo import run_demo

    execution = "in_process" if args.in_process else "actor"
    results = asyncio.run(run_demo(execution=execution, rounds=args.rounds, timeout=args.timeout))
    return 0 if all(r.ok for r in results) else 1


def _join_lines(address: str) -> str:
    return (
        f"ray-realtime service running at {address}\n"
        "to join it from a driver on this machine, set in that shell:\n"
        f"    export RAY_ADDRESS={address}\n"
        "(`ray-realtime status` finds it without that); Ctrl-C to stop"
    )


def _serve_logging(fmt: str | None) -> None:
    import logging

    from ray_realtime.actors.logs import LOG_FORMAT_ENV, configure_logging

    if fmt:
        # Before Ray starts: its processes, and the service's actors through
        # their runtime environment, take the format from the environment.
        os.environ[LOG_FORMAT_ENV] = fmt
    configure_logging(fmt, level=logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    from ray_realtime.cluster.connect import (
        connect,
        current_address,
        disconnect,
        forget_local_address,
        publish_local_address,
    )
    from ray_realtime.cluster.service import ensure_service, service_status, shutdown_service
    from ray_realtime.exceptions import RayRealtimeError

    config = {
        "warm_pool_size": args.warm_pool,
        "tool_workers_per_node": args.tool_workers,
        "guardrail_workers_per_node": args.guardrail_workers,
        "sessions_per_actor": args.sessions_per_actor,
        "max_sessions_per_node": args.max_sessions_per_node,
    }
    _serve_logging(args.log_format)
    try:
        with interruptible():
            # Joining a cluster, Ray's nodes already export metrics on the port
            # `ray start --metrics-export-port` gave them; serve names it only.
            joining = args.address is not None or bool(os.environ.get("RAY_ADDRESS"))
            embedded_port = None if joining else args.metrics_export_port
            started = connect(args.address, metrics_export_port=embedded_port)
    except (RayRealtimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    address = current_address()
    # An embedded runtime is recorded where `auto` looks, as `ray start` does.
    published = args.address is None and started and publish_local_address(address)

    async def run() -> None:
        from ray_realtime.actors import raylib

        # Only stop on Ctrl-C what this command deployed, not a service it joined.
        deployed_here = raylib.get_named_actor(raylib.ROUTER_NAME) is None
        await ensure_service(config)
        print(format_status(await service_status()), flush=True)
        gateways = await _start_gateways(args) if args.gateway_port is not None else []
        print(_join_lines(address), flush=True)
        if args.metrics_export_port is not None:
            print(f"metrics: http://127.0.0.1:{args.metrics_export_port}/metrics", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if gateways:
            from ray_realtime.gateway.deploy import stop_gateways

            await stop_gateways(gateways)
        if deployed_here:
            print("stopping the service...", flush=True)
            await shutdown_service()
        else:
            print("leaving the service running (this command joined it)", flush=True)

    try:
        asyncio.run(run())
    except RayRealtimeError as exc:  # a gateway that could not start
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if published:
            forget_local_address(address)
        disconnect(started)
    return 0


async def _start_gateways(args: argparse.Namespace) -> list[Any]:
    from ray_realtime.gateway.deploy import deploy_gateways

    # The auth token comes from the environment, not a flag: flags show in `ps`.
    started = await deploy_gateways(
        port=args.gateway_port,
        host=args.gateway_host,
        agent=args.agent,
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        public_url=args.gateway_public_url,
    )
    for _, where in started:
        print(
            f"gateway on node {where['node_id'][:12]}: "
            f"ws://{args.gateway_host}:{where['port']}/twilio/media-stream",
            flush=True,
        )
    return [actor for actor, _ in started]


def _local_model(args: argparse.Namespace) -> int:
    from ray_realtime.local import main as local_main

    argv = ["--host", args.host, "--port", str(args.port)]
    if args.pace_audio:
        argv.append("--pace-audio")
    if args.max_session_seconds is not None:
        argv += ["--max-session-seconds", str(args.max_session_seconds)]
    return int(local_main(argv))


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="also show Ray's own log lines")
    parser = argparse.ArgumentParser(prog="ray-realtime", description=DESCRIPTION, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", parents=[common], help="run concurrent demo sessions on the embedded defaults"
    )
    demo.add_argument("--in-process", action="store_true", help="run sessions in this process")
    demo.add_argument("--rounds", type=int, default=2, help="times to run the scenarios")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds per scenario")
    demo.set_defaults(func=_demo)

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="start (or join) the service and keep it running",
        description=(
            "Start the service on a private Ray runtime bound to 127.0.0.1 (or, with "
            "--address, on an existing Ray cluster) and keep it running until Ctrl-C. "
            "It prints the address; drivers on this machine join with "
            "RAY_ADDRESS=<that address> (or RAY_ADDRESS=auto)."
        ),
    )
    serve.add_argument(
        "--address", default=None, help="Ray cluster to join (default: start a private one)"
    )
    serve.add_argument("--warm-pool", type=int, default=1, help="ready session actors per node")
    serve.add_argument("--tool-workers", type=int, default=1, help="tool workers per node")
    serve.add_argument(
        "--guardrail-workers", type=int, default=1, help="guardrail workers per node"
    )
    serve.add_argument(
        "--sessions-per-actor", type=int, default=8, help="sessions packed per actor (1: one each)"
    )
    serve.add_argument("--max-sessions-per-node", type=int, default=200)
    serve.add_argument(
        "--metrics-export-port",
        type=int,
        default=None,
        help="port of Ray's Prometheus metrics on this node (http://127.0.0.1:PORT/metrics); "
        "serve sets it when it starts Ray; when it joins a cluster, give the port the "
        "nodes were started with (`ray start --metrics-export-port`)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="format of the service's log lines, which name the session and agent "
        "(default: text; they go to Ray's log files, logs/worker-*.err)",
    )
    serve.add_argument(
        "--gateway-port",
        type=int,
        default=None,
        help="also run the voice gateway (Twilio Media Streams) on this port on every node",
    )
    serve.add_argument("--gateway-host", default="127.0.0.1", help="address the gateway binds")
    serve.add_argument(
        "--gateway-public-url",
        default=None,
        help="the gateway's public https URL (for Twilio's signature and stream URL)",
    )
    serve.add_argument(
        "--agent",
        default="ray_realtime.demo:build_demo_agent",
        help="the agent answering calls, as module:attribute (an agent or a factory)",
    )
    serve.set_defaults(func=_serve)

    add_commands(sub, common)

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (in-process vs actor, side by side)",
        add_help=False,
    )
    bench.set_defaults(func=None)

    local = sub.add_parser(
        "local-model", parents=[common], help="run the bundled local realtime model server"
    )
    local.add_argument("--host", default="127.0.0.1")
    local.add_argument("--port", type=int, default=8765)
    local.add_argument("--pace-audio", action="store_true", help="send audio at real-time pace")
    local.add_argument(
        "--max-session-seconds",
        type=float,
        default=None,
        help="end each session after this long, like the real service's cap (default: never)",
    )
    local.set_defaults(func=_local_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ray-realtime`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        from ray_realtime.cluster.connect import VERBOSE_ENV

        # An environment variable, so Ray's processes and the bench see it too.
        os.environ[VERBOSE_ENV] = "1"
    if argv[:1] == ["bench"]:
        # The suite parses its own options (--quick, --only, --out).
        from ray_realtime.bench import main as bench_main

        return bench_main([a for a in argv[1:] if a != "--verbose"])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
