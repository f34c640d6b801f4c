"""What starting a session needs, whichever backend runs it: a fresh id and
where its model is."""

from __future__ import annotations

import asyncio
import os
import uuid

from ray_realtime.types.config import RealtimeModelConfig

__all__ = [
    "MODEL_URL_ENV",
    "new_session_id",
    "resolve_model_config",
    "resolve_model_config_async",
]

MODEL_URL_ENV = "RAY_REALTIME_MODEL_URL"
"""Environment variable naming the realtime model URL to use by default."""


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return f"rt_{uuid.uuid4().hex}"


def resolve_model_config(
    model_config: RealtimeModelConfig, *, local_url: str | None = None
) -> RealtimeModelConfig:
    """Where the session's model is: the config's ``url``; else OpenAI when an
    API key is configured (``api_key`` or ``OPENAI_API_KEY``); else
    ``RAY_REALTIME_MODEL_URL``; else the bundled local model server
    (``local_url``, or this process's embedded server)."""
    if model_config.get("url"):
        return model_config
    if model_config.get("api_key") or os.environ.get("OPENAI_API_KEY"):
        return model_config
    resolved: RealtimeModelConfig = dict(model_config)  # type: ignore[assignment]
    url = os.environ.get(MODEL_URL_ENV) or local_url
    if not url:
        from ray_realtime.local.embedded import embedded_server_url

        url = embedded_server_url()
    resolved["url"] = url
    return resolved


async def resolve_model_config_async(
    model_config: RealtimeModelConfig, *, local_url: str | None = None
) -> RealtimeModelConfig:
    """:func:`resolve_model_config` without blocking the running event loop:
    when it may have to start this process's embedded model server (which
    can take seconds), it runs in a worker thread."""
    if (
        model_config.get("url")
        or model_config.get("api_key")
        or os.environ.get("OPENAI_API_KEY")
        or os.environ.get(MODEL_URL_ENV)
        or local_url
    ):
        return resolve_model_config(model_config, local_url=local_url)
    return await asyncio.to_thread(resolve_model_config, model_config, local_url=local_url)
