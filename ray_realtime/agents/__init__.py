"""What a user defines: agents, function tools, handoffs, output guardrails and
the run context they receive. Plain definitions, no I/O; the session layer
(:mod:`ray_realtime.session`) runs them."""
