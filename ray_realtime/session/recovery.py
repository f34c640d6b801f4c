"""Model connection recovery, the driver's part that does I/O.

:class:`ModelRecovery` is mixed into :class:`~ray_realtime.session.driver.SessionDriver`:
when the model connection drops, the server closes it, or the service ends the
session at its length cap (an ``error`` with code ``session_expired``, then a
close), it reconnects with backoff and jitter (the run config's
``model_reconnect``), replays the history into the new model session
(``session.update`` with the current agent's settings, then the items), sends
the inputs held meanwhile and tells the readers with one ``session_recovered``.
What to replay, when to try again and what to send after the replay are pure
functions in :mod:`ray_realtime.core.recovery`.

A session restored on a new actor is created with its ``history`` and brought
up by :meth:`ModelRecovery.recover_model`, the same path.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from ray_realtime.core.history_log import LogEvent
from ray_realtime.core.recovery import ReplayPlan, after_replay, next_reconnect_delay
from ray_realtime.core.session_core import SessionCore
from ray_realtime.exceptions import ModelConnectionError, UserError
from ray_realtime.model.interface import RealtimeModel, RealtimeModelListener
from ray_realtime.types import model_events as me
from ray_realtime.types.config import ModelReconnectPolicy, RealtimeModelConfig
from ray_realtime.types.events import RealtimeError
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendEvent,
    RealtimeModelSendRawMessage,
)

__all__ = ["SESSION_EXPIRED", "ModelRecovery"]

logger = logging.getLogger("ray_realtime.session.driver")

# Inputs held while the model connection is being restored: at most this many,
# and audio up to this many bytes (about 20 s of 24 kHz PCM16); more is refused
# with an error event.
_MAX_HELD_INPUTS = 1024
_MAX_HELD_AUDIO_BYTES = 1 << 20

SESSION_EXPIRED = "session_expired"
"""The error code the OpenAI Realtime service sends when a session reaches its
maximum duration, just before it closes the socket."""


class ModelRecovery(RealtimeModelListener):
    """Restores a session's model connection (mixed into the session driver,
    whose state it shares; see the module docstring)."""

    # Provided by the driver.
    session_id: str
    _core: SessionCore | None
    _model: RealtimeModel
    _model_config: RealtimeModelConfig
    _clock: Callable[[], float]
    _tasks: set[asyncio.Task[Any]]
    _started: bool

    def _init_recovery(self, policy: ModelReconnectPolicy) -> None:
        self._reconnect = policy
        self._recovery: asyncio.Task[bool] | None = None
        self._restoring = False  # inputs are held, model status events ignored
        self._model_live = False  # a model session was opened (losses are recovered)
        self._held: deque[RealtimeModelSendEvent] = deque()
        self._held_audio_bytes = 0
        self._loss_detail = ""
        self._recoveries = 0
        self.last_replay: ReplayPlan | None = None
        """The newest replay of the history into a model session."""

    # The driver's own, used here.

    async def _process(self) -> None:
        raise NotImplementedError

    async def _create_core(self) -> list[str]:
        raise NotImplementedError

    def _require_open(self) -> SessionCore:
        raise NotImplementedError

    def _append(self, event: LogEvent) -> None:
        raise NotImplementedError

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        raise NotImplementedError

    async def _deliver(
        self, core: SessionCore, event: RealtimeModelSendEvent, *, in_recovery: bool = False
    ) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _connection_signal(self, event: me.RealtimeModelEvent) -> bool:
        """Act on a sign that the model connection is lost (with reconnection
        on); True when ``event`` was such a sign and goes no further."""
        if isinstance(event, me.RealtimeModelConnectionStatusEvent):
            if self._restoring:
                return True  # the old connection closing, the new one opening
            if event.status != "disconnected" or not self._model_live:
                return False  # (a first connection that fails fails start())
            detail = self._loss_detail or "the model closed the connection"
            self._begin_recovery("model_reconnect", detail)
            return True
        if isinstance(event, me.RealtimeModelErrorEvent):
            if event.error.get("code") != SESSION_EXPIRED:
                return False
            # The service's session-length cap: it closes the socket next.
            detail = str(event.error.get("message") or SESSION_EXPIRED)
            logger.info("session %s: model session expired: %s", self.session_id, detail)
            self._begin_recovery("model_reconnect", f"{SESSION_EXPIRED}: {detail}")
            return True
        if (
            isinstance(event, me.RealtimeModelExceptionEvent)
            and event.exception_type == ModelConnectionError.__name__
        ):
            # The connection is gone; "disconnected" follows and the recovery
            # tells the readers how it went (once), not this report.
            logger.info("session %s: model connection lost: %s", self.session_id, event.message)
            self._loss_detail = event.message
            return True
        return False

    async def recover_model(self, reason: str = "model_reconnect", *, events_lost: int = 0) -> int:
        """Connect a new model session, replay the history into it and tell
        the readers with one ``session_recovered`` event; returns the number
        of history items replayed.

        ``reason`` is ``"model_reconnect"``, ``"actor_died"`` or
        ``"node_lost"``; ``events_lost`` is how many events readers cannot get
        any more (it goes into the event). On a driver not started yet -- a
        session restored from the store, created with ``history=`` its stored
        items -- this starts the session in place of :meth:`start`. On a
        running one it replaces the model connection now; a recovery already
        under way is waited for instead. Attempts follow the run config's
        ``model_reconnect`` bounds; when they are spent the session is closed
        (readers get an ``error`` event) and :class:`ModelConnectionError` is
        raised.
        """
        if reason not in ("model_reconnect", "actor_died", "node_lost"):
            raise UserError(f"unknown recovery reason {reason!r}")
        if not self._started:
            self._started = True
            await self._create_core()
            self._model.add_listener(self)
        self._require_open()
        task = self._begin_recovery(reason, "recovery requested", events_lost=events_lost)
        if not await asyncio.shield(task):
            raise ModelConnectionError(
                f"session {self.session_id}: the model connection could not be restored"
            )
        return self.last_replay.items_restored if self.last_replay is not None else 0

    def _begin_recovery(
        self, reason: str, detail: str, *, events_lost: int = 0
    ) -> asyncio.Task[bool]:
        """Start restoring the model connection (once: a recovery under way
        is returned as it is)."""
        if self._recovery is not None and not self._recovery.done():
            return self._recovery
        assert self._core is not None
        self._restoring = True
        # A response in progress ends visibly now, not when the new
        # connection is up (or never).
        cut = self._core.model_connection_lost(detail)
        task = asyncio.get_running_loop().create_task(
            self._recover(reason, detail, events_lost, cut), name="realtime-model-recovery"
        )
        self._recovery = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _connect_model(self, core: SessionCore, *, starting: bool = False) -> ReplayPlan:
        """Open a model session with the current agent's settings (the first
        ``session.update``; ``starting``: the session's first, where the
        initial settings win), then replay the history into it."""
        options: RealtimeModelConfig = dict(self._model_config)  # type: ignore[assignment]
        options["initial_model_settings"] = core.model_settings(starting=starting)
        await self._model.connect(options)
        plan = core.prepare_replay(
            max_items=self._reconnect["max_replay_items"],
            max_chars=self._reconnect["max_replay_chars"],
        )
        for message in plan.messages:
            await self._model.send_event(RealtimeModelSendRawMessage(message))
        self.last_replay = plan
        return plan

    async def _recover(self, reason: str, detail: str, events_lost: int, cut: bool) -> bool:
        """Reconnect with backoff, replay, send what was held; True when the
        session goes on, False when it was closed for good."""
        core = self._core
        assert core is not None
        try:
            await self._process()  # the cut response's error and agent_end
            policy = self._reconnect
            started = self._clock()
            attempt = 0
            last_error = detail
            while True:
                elapsed = self._clock() - started
                delay = next_reconnect_delay(attempt, elapsed, policy, random.random())
                if delay is None:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                attempt += 1
                budget = max(1.0, policy["max_seconds"] - (self._clock() - started))
                try:
                    await self._model.close()
                    plan = await asyncio.wait_for(self._connect_model(core), budget)
                    await asyncio.wait_for(self._flush_held(core, plan, cut), budget)
                except Exception as exc:  # TimeoutError included
                    last_error = f"{type(exc).__name__}: {exc}"
                    logger.info(
                        "session %s: model reconnect attempt %d failed: %s",
                        self.session_id,
                        attempt,
                        last_error,
                    )
                    continue
                self._restoring = False
                self._model_live = True
                self._loss_detail = ""
                self._recoveries += 1
                logger.info(
                    "session %s: model connection restored (attempt %d, %d items replayed)",
                    self.session_id,
                    attempt,
                    plan.items_restored,
                )
                core.recovered(reason, plan.items_restored, events_lost)
                await self._process()
                return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the session must not hang restoring
            last_error = f"{type(exc).__name__}: {exc}"
            attempt = -1
        self._restoring = False
        undelivered = len(self._held)
        self._held.clear()
        self._held_audio_bytes = 0
        tries = f"{attempt} attempt(s)" if attempt >= 0 else "an internal error"
        self._append(
            RealtimeError(
                {
                    "message": (
                        f"the model connection was lost ({detail}) and could not be "
                        f"restored after {tries}; last error: {last_error}; "
                        f"{undelivered} input(s) sent meanwhile were not delivered"
                    ),
                    "type": "connection_closed",
                    "code": "model_reconnect_failed",
                }
            )
        )
        await self.close()
        return False

    async def _flush_held(self, core: SessionCore, plan: ReplayPlan, cut: bool) -> None:
        """Send the inputs held during the outage (and a new response for a
        cut one) to the new model session; raises on a new connection loss,
        keeping what was not sent."""
        resume = cut and self._reconnect["resume_response"]
        while True:
            batch = after_replay(self._held, plan.answered_calls, resume_response=resume)
            self._held.clear()
            self._held_audio_bytes = 0
            # The resumed response's request (first) is added again by the
            # next attempt, not kept with the inputs.
            skip = 1 if resume else 0
            resume = False
            if not batch:
                return
            for index, event in enumerate(batch):
                try:
                    await self._deliver(core, event, in_recovery=True)
                except ModelConnectionError:
                    self._held.extendleft(reversed(batch[max(index, skip) :]))
                    self._held_audio_bytes = sum(
                        len(e.audio) for e in self._held if isinstance(e, RealtimeModelSendAudio)
                    )
                    raise

    def _hold(self, core: SessionCore, event: RealtimeModelSendEvent) -> None:
        size = len(event.audio) if isinstance(event, RealtimeModelSendAudio) else 0
        if (
            len(self._held) >= _MAX_HELD_INPUTS
            or self._held_audio_bytes + size > _MAX_HELD_AUDIO_BYTES
        ):
            core.model_send_failed(
                event,
                "the model connection is being restored and too many inputs wait for it",
                repair=False,
            )
            return
        self._held.append(event)
        self._held_audio_bytes += size
