"""The one place where ray-realtime's plain classes become Ray actors."""

from __future__ import annotations

from typing import Any

import ray

from ray_realtime.actors.model_host import LocalModelHost
from ray_realtime.actors.router import Router
from ray_realtime.actors.session_host import SessionHost
from ray_realtime.actors.workers import GuardrailWorker, ToolWorker

__all__ = [
    "GuardrailWorkerActor",
    "LocalModelActor",
    "RouterActor",
    "SessionActor",
    "ToolWorkerActor",
]

SessionActor: Any = ray.remote(SessionHost)
ToolWorkerActor: Any = ray.remote(ToolWorker)
GuardrailWorkerActor: Any = ray.remote(GuardrailWorker)
LocalModelActor: Any = ray.remote(LocalModelHost)
RouterActor: Any = ray.remote(Router)
