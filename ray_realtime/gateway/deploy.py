"""Gateways in the cluster: one :class:`GatewayActor` per node, each running a
:class:`~ray_realtime.gateway.server.Gateway` on its node's event loop.

``ray-realtime serve --gateway-port P`` calls :func:`deploy_gateways`. The
actors are not detached: they belong to the serve command and end with it.
Which agent answers is named as ``module:attribute`` (as uvicorn names apps):
an agent, or a callable returning one, which is then called for every call so
a new version of the agent reaches new calls.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import ray

from ray_realtime.actors import raylib
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import ConfigError
from ray_realtime.gateway.audio import AudioMode
from ray_realtime.gateway.server import Gateway

__all__ = ["DEFAULT_AGENT", "GatewayActor", "deploy_gateways", "load_agent", "stop_gateways"]

DEFAULT_AGENT = "ray_realtime.demo:build_demo_agent"
_START_TIMEOUT = 60.0


def load_agent(spec: str) -> RealtimeAgent[Any] | Callable[[], RealtimeAgent[Any]]:
    """The agent named by ``module:attribute`` (an agent or a factory of one)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"an agent is named as module:attribute, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load the agent {spec!r}: {exc}") from None
    if isinstance(target, RealtimeAgent):
        return target
    if not callable(target):
        raise ConfigError(f"{spec!r} is neither a RealtimeAgent nor a callable returning one")

    def build() -> RealtimeAgent[Any]:
        agent = target()
        if not isinstance(agent, RealtimeAgent):
            raise ConfigError(f"{spec!r} returned {type(agent).__name__}, not a RealtimeAgent")
        return agent

    build()  # fail at deployment, not at the first call
    return build


class GatewayActor:
    """A gateway hosted in a Ray actor (made remote in :func:`deploy_gateways`)."""

    def __init__(
        self,
        agent_spec: str,
        host: str,
        port: int,
        audio_mode: AudioMode,
        twilio_auth_token: str | None,
        public_url: str | None,
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        self._gateway = Gateway(
            load_agent(agent_spec),
            host=host,
            port=port,
            audio_mode=audio_mode,
            twilio_auth_token=twilio_auth_token,
            public_url=public_url,
            prefer_node_id=raylib.current_node_id(),
        )

    async def start(self) -> dict[str, Any]:
        """Start serving; where it listens."""
        await self._gateway.start()
        return {"node_id": raylib.current_node_id(), "port": self._gateway.port}

    async def stats(self) -> dict[str, int]:
        """Calls in progress, calls served and open sessions."""
        gw = self._gateway
        return {
            "active_calls": gw.active_calls,
            "calls_served": gw.calls_served,
            "open_sessions": gw.open_sessions,
        }

    async def stop(self) -> None:
        """Stop serving; calls in progress end and their sessions close."""
        await self._gateway.stop()


async def deploy_gateways(
    *,
    port: int,
    host: str = "127.0.0.1",
    agent: str = DEFAULT_AGENT,
    audio_mode: AudioMode = "passthrough",
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
) -> list[tuple[Any, dict[str, Any]]]:
    """Start one gateway actor on every alive node; each actor with where it
    listens. A gateway that does not start is a :class:`ConfigError`."""
    load_agent(agent)  # a bad name fails here, in the caller's terms
    remote: Any = ray.remote(GatewayActor)
    started: list[tuple[Any, dict[str, Any]]] = []
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    for node in nodes:
        options = raylib.actor_options(node_id=node["NodeID"])
        actor = remote.options(**options).remote(
            agent, host, port, audio_mode, twilio_auth_token, public_url
        )
        try:
            where = await raylib.result(actor.start.remote(), _START_TIMEOUT)
        except BaseException as exc:
            raylib.kill(actor)
            await stop_gateways([a for a, _ in started])
            error = raylib.unwrap_task_error(exc)
            raise ConfigError(
                f"the gateway on node {node['NodeID'][:12]} did not start: {error}"
            ) from None
        started.append((actor, where))
    return started


async def stop_gateways(actors: list[Any]) -> None:
    """Stop and remove gateway actors."""
    await raylib.gather_with_timeout([a.stop.remote() for a in actors], 10.0)
    for actor in actors:
        raylib.kill(actor)
