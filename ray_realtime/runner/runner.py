"""RealtimeRunner: starts realtime sessions for a starting agent."""

from __future__ import annotations

import os
from typing import Any

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import ConfigError
from ray_realtime.model.interface import RealtimeModel
from ray_realtime.runner.session import InProcessBackend, RealtimeSession
from ray_realtime.session.driver import SessionDriver
from ray_realtime.session.start import (
    new_session_id,
    resolve_model_config_async,
)
from ray_realtime.types.config import (
    RealtimeModelConfig,
    RealtimeRunConfig,
    validate_model_config,
    validate_run_config,
)

__all__ = ["RealtimeRunner"]


class RealtimeRunner:
    """Starts realtime sessions for ``starting_agent``.

    ``model`` is a custom :class:`RealtimeModel` *instance*, used for one
    session at a time and only with ``execution="in_process"`` (an actor
    session builds its own connection); by default each session opens its own
    OpenAI Realtime WebSocket connection, to the bundled local model server
    when no OpenAI key is configured. ``config`` is the run config; its
    ``execution`` chooses where sessions run (``"actor"`` by default).
    """

    def __init__(
        self,
        starting_agent: RealtimeAgent[Any],
        *,
        model: RealtimeModel | None = None,
        config: RealtimeRunConfig | None = None,
    ) -> None:
        if not isinstance(starting_agent, RealtimeAgent):
            raise ConfigError(
                f"RealtimeRunner needs a RealtimeAgent, got {type(starting_agent).__name__}"
            )
        self._starting_agent = starting_agent
        self._model = model
        self._config = validate_run_config(config)
        if model is not None and self.execution != "in_process":
            raise ConfigError(
                "a custom model instance runs in this process: pass "
                "config={'execution': 'in_process'} with it"
            )

    @property
    def execution(self) -> str:
        """Where this runner's sessions run: ``"actor"`` or ``"in_process"``."""
        return str(self._config.get("execution", default_execution()))

    async def run(
        self, *, context: Any = None, model_config: RealtimeModelConfig | None = None
    ) -> RealtimeSession:
        """A new session handle; ``async with`` it to start the session."""
        checked = validate_model_config(model_config)
        if self.execution == "in_process":
            if self._model is None:
                checked = await resolve_model_config_async(checked)
            return self._in_process_session(context, checked)
        from ray_realtime.actors.handle import actor_backend

        backend = await actor_backend(self._starting_agent, context, self._config, checked)
        return RealtimeSession(backend)

    def _in_process_session(
        self, context: Any, model_config: RealtimeModelConfig
    ) -> RealtimeSession:
        if self._model is not None:
            model = self._model
        else:
            from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel

            # emit_raw_model_events: raw server events too, as the SDK's model sends them.
            model = OpenAIRealtimeWebSocketModel(
                emit_raw_server_events=bool(self._config.get("emit_raw_model_events"))
            )
        driver = SessionDriver(
            agent=self._starting_agent,
            model=model,
            context=context,
            run_config=self._config,
            model_config=model_config,
            session_id=new_session_id(),
        )
        return RealtimeSession(InProcessBackend(driver))


def default_execution() -> str:
    """The default execution mode: ``RAY_REALTIME_EXECUTION`` or ``"actor"``."""
    value = os.environ.get("RAY_REALTIME_EXECUTION", "actor")
    if value not in ("actor", "in_process"):
        raise ConfigError(f"RAY_REALTIME_EXECUTION must be 'actor' or 'in_process', got {value!r}")
    return value
