"""What the session core hands out: the closed union :data:`CoreOutput`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ray_realtime.core.history_log import LogEvent
from ray_realtime.types.model_events import RealtimeModelToolCallEvent
from ray_realtime.types.model_inputs import RealtimeModelSendEvent

__all__ = [
    "CheckApproval",
    "CoreOutput",
    "EmitEvent",
    "RunGuardrails",
    "RunHandoff",
    "RunTool",
    "SendToModel",
]


@dataclass(frozen=True, slots=True)
class EmitEvent:
    """Deliver a session event (or a history delta) to the session's readers."""

    event: LogEvent
    kind: Literal["emit"] = "emit"


@dataclass(frozen=True, slots=True)
class SendToModel:
    """Send an input to the model."""

    event: RealtimeModelSendEvent
    kind: Literal["send"] = "send"


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a function tool; answer with ``SessionCore.tool_completed``."""

    call: RealtimeModelToolCallEvent
    agent_name: str
    kind: Literal["run_tool"] = "run_tool"


@dataclass(frozen=True, slots=True)
class RunHandoff:
    """Resolve a handoff; answer with ``handoff_completed`` or ``handoff_failed``."""

    call: RealtimeModelToolCallEvent
    from_agent: str
    to_agent: str
    kind: Literal["run_handoff"] = "run_handoff"


@dataclass(frozen=True, slots=True)
class RunGuardrails:
    """Check the transcript so far; answer with ``guardrails_completed``."""

    response_id: str
    item_id: str
    text: str
    agent_name: str
    final: bool = False
    """True for the check at the end of a response, which must not be skipped."""
    kind: Literal["run_guardrails"] = "run_guardrails"


@dataclass(frozen=True, slots=True)
class CheckApproval:
    """Ask the tool's approval function whether this call needs approval;
    answer with ``SessionCore.approval_checked``."""

    call: RealtimeModelToolCallEvent
    agent_name: str
    kind: Literal["check_approval"] = "check_approval"


CoreOutput = EmitEvent | SendToModel | RunTool | RunHandoff | RunGuardrails | CheckApproval
"""Everything the core can ask its shell to do."""
