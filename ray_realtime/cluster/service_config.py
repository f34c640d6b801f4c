"""The configuration of the deployed ray-realtime service (router, pools)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ray_realtime.exceptions import ConfigError
from ray_realtime.store.config import parse_store_config

__all__ = ["ServiceConfig"]


@dataclass(frozen=True)
class ServiceConfig:
    """What the router keeps running on every node.

    ``local_model``: run a bundled local model server on each node (default:
    when no ``OPENAI_API_KEY`` is set where the service is deployed).
    ``sessions_per_actor``: sessions packed in one session actor (and the
    size of the warm pool's actors); 1 gives every session a process of its
    own. A session may ask for its own size in its run config (``1``:
    isolation, an actor to itself).
    ``open_attach``: let any process of the cluster attach to a session by
    its id alone (default off: ``attach`` needs the session's ticket; see
    ``docs/security.md``). It applies to sessions opened while it is on.

    ``worker_stuck_threads``: a tool or guardrail worker with this many
    threads still running for calls that already ended (sync tools past their
    timeout) retires and is replaced (at most half its thread pool).
    ``worker_retire_grace_seconds``: how long a retiring worker's calls in
    flight may take before its process is killed anyway.
    ``store``: where session actors write sessions' durable state, so a
    session whose actor dies is recovered on another (``"embedded"``, the
    default: the store actor on the head node; ``"redis://..."``; any value
    :func:`~ray_realtime.store.config.parse_store_config` takes; ``"off"``:
    no store, no recovery). See ``docs/reliability.md``.
    """

    warm_pool_size: int = 1
    tool_workers_per_node: int = 1
    guardrail_workers_per_node: int = 1
    max_sessions_per_node: int = 200
    sessions_per_actor: int = 8
    local_model: bool | None = None
    health_interval_seconds: float = 2.0
    health_timeout_seconds: float = 10.0
    actor_start_timeout_seconds: float = 60.0
    refill_delay_seconds: float = 1.0
    open_attach: bool = False
    worker_stuck_threads: int = 4
    worker_retire_grace_seconds: float = 30.0
    store: Any = "embedded"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "local_model":
                if value is not None and not isinstance(value, bool):
                    raise ConfigError("local_model must be true, false or unset")
                continue
            if f.name == "store":
                if value != "off":
                    parse_store_config(value)
                continue
            if f.name == "open_attach":
                if not isinstance(value, bool):
                    raise ConfigError("open_attach must be true or false")
                continue
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if f.type == "int":
                low = 0 if f.name == "warm_pool_size" else 1
                ok = is_number and isinstance(value, int) and value >= low
            elif f.name == "refill_delay_seconds":
                ok = is_number and value >= 0
            else:
                ok = is_number and value > 0
            if not ok:
                raise ConfigError(f"service config {f.name} has an invalid value {value!r}")

    @property
    def runs_local_model(self) -> bool:
        """Whether each node runs a local model server."""
        if self.local_model is not None:
            return self.local_model
        return not os.environ.get("OPENAI_API_KEY")

    @property
    def stores_sessions(self) -> bool:
        """Whether sessions' state goes to a session store (and is recovered)."""
        return bool(self.store != "off")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (crosses to the router actor)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ServiceConfig:
        """Build from plain data; unknown keys are a :class:`ConfigError`."""
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown service config key(s): {', '.join(unknown)}")
        return cls(**dict(data))
