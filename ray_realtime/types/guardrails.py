"""What an output guardrail function returns (plain data, the SDK's shape).

It lives with the plain types, below the agents layer, because session events
hand it out too: ``OutputGuardrailResult.output`` is one, as in the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GuardrailFunctionOutput"]


@dataclass
class GuardrailFunctionOutput:
    """What a guardrail function returns: ``tripwire_triggered`` stops the
    response; ``output_info`` is free-form data shown in the tripped event."""

    output_info: Any
    tripwire_triggered: bool
