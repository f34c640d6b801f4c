"""Plain data that every layer shares: history items, session events and the
refs they carry, the model's events and inputs, run and model config types and
the session's limits. It imports nothing of the package but
:mod:`ray_realtime.exceptions`, so any layer may build on it."""
