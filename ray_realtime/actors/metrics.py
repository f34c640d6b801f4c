"""The service's Prometheus metrics, through Ray's own metrics system.

Each actor records into ``ray.util.metrics`` instruments; Ray's metrics agent
on every node exports them in Prometheus format (``ray-realtime serve
--metrics-export-port P``: ``http://<node>:P/metrics``). Ray prefixes every
name with ``ray_`` and adds its own labels (``NodeAddress``, ``WorkerId``,
``SessionName`` ...), so a gauge one actor sets is one series per actor: sum
by ``node`` for a node's total.

Labels are low-cardinality on purpose: ``node`` (the node id), ``agent`` (an
agent's name), ``tool`` (a tool's name), ``start`` (``warm``/``cold``),
``outcome`` (``ok``/``error``/``timeout`` for tool calls; ``ok``/``failed``
for model reconnects; ``accepted``/``refused`` for data-plane connections),
``direction`` (``in``/``out``), ``guardrail`` (a guardrail's name),
``reason`` (an exception class name; for recoveries the ``session_recovered``
reason) — never a session id.

=====================================  =========  ==========================
exported name                          kind       labels
=====================================  =========  ==========================
ray_realtime_active_sessions           gauge      node (one series per actor)
ray_realtime_session_starts_total      counter    node, start
ray_realtime_session_start_seconds     histogram  node, start (placement)
ray_realtime_session_connect_seconds   histogram  node (the model connection)
ray_realtime_turn_seconds              histogram  node, agent
ray_realtime_model_errors_total        counter    node, agent
ray_realtime_tool_calls_total          counter    node, tool, outcome
ray_realtime_tool_seconds              histogram  node, tool
ray_realtime_warm_actors               gauge      node
ray_realtime_input_tokens_total        counter    node, agent
ray_realtime_output_tokens_total       counter    node, agent
ray_realtime_audio_seconds_total       counter    node, agent, direction
ray_realtime_guardrail_trips_total     counter    node, agent, guardrail
ray_realtime_events_lost_total         counter    node
ray_realtime_data_plane_connections_total  counter  node, outcome
ray_realtime_placement_failures_total  counter    reason
ray_realtime_session_recoveries_total  counter    node, agent, reason
ray_realtime_model_reconnects_total    counter    node, agent, outcome
=====================================  =========  ==========================

Recoveries count the ``session_recovered`` events of the sessions an actor
hosts, by reason (``model_reconnect``, ``actor_died``, ``node_lost``,
``drained``), on the node where the session runs after it; model reconnects
count the model-connection recoveries that succeeded (``ok``) and those
that gave up (``failed``: the session was closed). Both come from the
driver's ``on_event`` (:class:`RecoveryMeter`).

The usage counters grow at the end of each model response by what the
session used since the previous one (:class:`UsageObserver`): the response's
tokens, and the audio sent (``direction="in"``) and received (``"out"``).

Recording never raises: a metrics failure is logged once and the service
goes on (metrics are for operators, never a reason to lose a session).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.agents.mcp import MCPToolListing
from ray_realtime.agents.tools import FunctionTool, default_tool_timeout_error_message
from ray_realtime.core.usage import usage_delta
from ray_realtime.model.interface import RealtimeModelListener
from ray_realtime.session.execution import ToolOutcome
from ray_realtime.types import model_events as me
from ray_realtime.types.events import (
    RealtimeError,
    RealtimeSessionEvent,
    RealtimeSessionRecovered,
    SessionUsage,
)

__all__ = [
    "MeteredGuardrailExecutor",
    "MeteredToolExecutor",
    "RecoveryMeter",
    "ServiceMetrics",
    "UsageObserver",
    "record_on_node",
    "service_metrics",
]

logger = logging.getLogger(__name__)

_LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
"""Histogram buckets in seconds: turns and tool calls take milliseconds to
tens of seconds; a cold session start about a second."""


class ServiceMetrics:
    """The instruments, made once per process (Ray registers them by name)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        def hist(name: str, what: str, tags: tuple[str, ...]) -> Any:
            return Histogram(name, description=what, boundaries=_LATENCY_BOUNDS, tag_keys=tags)

        self.active = Gauge(
            "realtime_active_sessions", description="open sessions of an actor", tag_keys=("node",)
        )
        self.starts = Counter(
            "realtime_session_starts",
            description="sessions placed, on a warm actor or a newly started (cold) one",
            tag_keys=("node", "start"),
        )
        self.start_seconds = hist(
            "realtime_session_start_seconds", "time to place a session", ("node", "start")
        )
        self.connect_seconds = hist(
            "realtime_session_connect_seconds", "time to connect a session's model", ("node",)
        )
        self.turn_seconds = hist(
            "realtime_turn_seconds", "one model response, created to done", ("node", "agent")
        )
        self.model_errors = Counter(
            "realtime_model_errors",
            description="error and exception events of model connections",
            tag_keys=("node", "agent"),
        )
        self.tool_calls = Counter(
            "realtime_tool_calls",
            description="tool calls by outcome",
            tag_keys=("node", "tool", "outcome"),
        )
        self.tool_seconds = hist("realtime_tool_seconds", "tool call duration", ("node", "tool"))
        self.warm = Gauge(
            "realtime_warm_actors", description="ready, idle session actors", tag_keys=("node",)
        )
        self.input_tokens = Counter(
            "realtime_input_tokens",
            description="input tokens the model reported (response.done usage)",
            tag_keys=("node", "agent"),
        )
        self.output_tokens = Counter(
            "realtime_output_tokens",
            description="output tokens the model reported (response.done usage)",
            tag_keys=("node", "agent"),
        )
        self.guardrail_trips = Counter(
            "realtime_guardrail_trips",
            description="output guardrail checks that tripped",
            tag_keys=("node", "agent", "guardrail"),
        )
        self.events_lost = Counter(
            "realtime_events_lost",
            description="events a slow reader missed (the session's log moved on)",
            tag_keys=("node",),
        )
        self.data_plane_connections = Counter(
            "realtime_data_plane_connections",
            description="data-plane sockets of handles, accepted or refused",
            tag_keys=("node", "outcome"),
        )
        self.placement_failures = Counter(
            "realtime_placement_failures",
            description="sessions the router could not place, by exception",
            tag_keys=("reason",),
        )
        self.recoveries = Counter(
            "realtime_session_recoveries",
            description="session_recovered events of hosted sessions, by reason",
            tag_keys=("node", "agent", "reason"),
        )
        self.model_reconnects = Counter(
            "realtime_model_reconnects",
            description="model connections restored (ok) or given up (failed)",
            tag_keys=("node", "agent", "outcome"),
        )
        self.audio_seconds = Counter(
            "realtime_audio_seconds",
            description="seconds of audio sent to (in) and received from (out) the model",
            tag_keys=("node", "agent", "direction"),
        )


_metrics: ServiceMetrics | None = None
_failed = False


def service_metrics() -> ServiceMetrics | None:
    """This process's instruments, or None where they cannot be made (Ray not
    initialised); made on first use."""
    global _metrics, _failed
    if _metrics is None and not _failed:
        try:
            import ray

            if not ray.is_initialized():
                return None
            _metrics = ServiceMetrics()
        except Exception as exc:
            _failed = True
            logger.warning("metrics are off in this process: %r", exc)
    return _metrics


def record(what: str, *args: Any, **tags: str) -> None:
    """``service_metrics().<what>`` with ``inc`` / ``set`` / ``observe``
    (whichever it has) of ``args`` under ``tags``; never raises."""
    metrics = service_metrics()
    if metrics is None:
        return
    try:
        instrument = getattr(metrics, what)
        method = next(
            getattr(instrument, m) for m in ("observe", "inc", "set") if hasattr(instrument, m)
        )
        method(*args, tags=dict(tags))
    except Exception as exc:
        logger.debug("recording %s failed: %r", what, exc)


_node_id: str | None = None


def record_on_node(what: str, *args: Any, **tags: str) -> None:
    """:func:`record` with ``node`` set to this process's node (for parts
    that do not carry a node id, such as the data plane)."""
    global _node_id
    if _node_id is None:
        try:
            from ray_realtime.actors import raylib

            _node_id = raylib.current_node_id()
        except Exception:
            _node_id = ""
    record(what, *args, node=_node_id, **tags)


class MeteredGuardrailExecutor:
    """A guardrail executor that counts the trips of another's rounds."""

    def __init__(self, inner: Any, node_id: str) -> None:
        self._inner = inner
        self._node = node_id

    async def run_guardrails(
        self,
        agent: RealtimeAgent[Any],
        guardrails: list[Any],
        *,
        text: str,
        context: Any,
        timeout: float,
    ) -> Any:
        """Run the round on the inner executor; count each tripped guardrail."""
        result = await self._inner.run_guardrails(
            agent, guardrails, text=text, context=context, timeout=timeout
        )
        for outcome in result.results:
            if outcome.tripwire_triggered:
                record(
                    "guardrail_trips",
                    1.0,
                    node=self._node,
                    agent=agent.name,
                    guardrail=outcome.guardrail.name,
                )
        return result


class MeteredToolExecutor:
    """A tool executor that counts and times the calls of another."""

    def __init__(self, inner: Any, node_id: str) -> None:
        self._inner = inner
        self._node = node_id

    async def run_tool(
        self,
        agent: RealtimeAgent[Any],
        tool: FunctionTool,
        *,
        call_id: str,
        arguments: str,
        context: Any,
        default_timeout: float,
    ) -> ToolOutcome:
        """Run the call on the inner executor; record its outcome and time."""
        t0 = time.monotonic()
        outcome: ToolOutcome = await self._inner.run_tool(
            agent,
            tool,
            call_id=call_id,
            arguments=arguments,
            context=context,
            default_timeout=default_timeout,
        )
        seconds = time.monotonic() - t0
        result = "ok"
        if outcome.error is not None:
            # A timeout: the tool ran past its timeout, or no worker took or
            # answered the call within it (errors come sooner than that).
            timeout = tool.timeout_seconds or default_timeout
            expired = default_tool_timeout_error_message(
                tool_name=tool.name, timeout_seconds=timeout
            )
            result = "timeout" if outcome.error == expired or seconds >= timeout else "error"
        record("tool_calls", 1.0, node=self._node, tool=tool.name, outcome=result)
        record("tool_seconds", seconds, node=self._node, tool=tool.name)
        return outcome

    async def list_mcp_tools(
        self, agent: RealtimeAgent[Any], *, context: Any, timeout: float
    ) -> MCPToolListing:
        """List on the inner executor (listings are not tool calls)."""
        listing: MCPToolListing = await self._inner.list_mcp_tools(
            agent, context=context, timeout=timeout
        )
        return listing


class RecoveryMeter:
    """Counts one session's recoveries and model reconnects from its events
    (a :class:`~ray_realtime.session.driver.SessionDriver`'s ``on_event``);
    ``agent()`` names the agent the session runs now. Never raises."""

    def __init__(self, node_id: str, agent: Callable[[], str]) -> None:
        self._node = node_id
        self._agent = agent

    def __call__(self, event: RealtimeSessionEvent) -> None:
        """Record what ``event`` says about a recovery, if anything."""
        try:
            if isinstance(event, RealtimeSessionRecovered):
                agent = self._agent()
                record("recoveries", 1.0, node=self._node, agent=agent, reason=event.reason)
                if event.reason == "model_reconnect":
                    record("model_reconnects", 1.0, node=self._node, agent=agent, outcome="ok")
            elif (
                isinstance(event, RealtimeError)
                and isinstance(event.error, dict)
                and event.error.get("code") == "model_reconnect_failed"
            ):
                record(
                    "model_reconnects", 1.0, node=self._node, agent=self._agent(), outcome="failed"
                )
        except Exception as exc:  # metrics never cost a session anything
            logger.debug("metering a recovery failed: %r", exc)


class UsageObserver(RealtimeModelListener):
    """Turns one session's usage into the usage counters.

    At each model ``turn_ended`` (the response's usage is summed by then: the
    model reports it just before) it records what grew since the last time,
    per agent, read from ``usage()`` (the session's
    :class:`~ray_realtime.types.events.SessionUsage`); :meth:`flush` does the
    same at any other moment (the session's end)."""

    def __init__(self, usage: Callable[[], SessionUsage], node_id: str) -> None:
        self._usage = usage
        self._node = node_id
        self._last: SessionUsage | None = None

    async def on_event(self, event: me.RealtimeModelEvent) -> None:
        """Record the growth when a response ends; never raises."""
        if isinstance(event, me.RealtimeModelTurnEndedEvent):
            self.flush()

    def flush(self) -> None:
        """Record what grew since the last record."""
        try:
            now = self._usage()
        except Exception as exc:  # the session is gone: nothing more to count
            logger.debug("reading usage failed: %r", exc)
            return
        for agent, grown in usage_delta(self._last, now).items():
            if grown.input_tokens:
                record("input_tokens", float(grown.input_tokens), node=self._node, agent=agent)
            if grown.output_tokens:
                record("output_tokens", float(grown.output_tokens), node=self._node, agent=agent)
            for direction, seconds in (
                ("in", grown.audio_in_seconds),
                ("out", grown.audio_out_seconds),
            ):
                if seconds:
                    record(
                        "audio_seconds", seconds, node=self._node, agent=agent, direction=direction
                    )
        self._last = now
