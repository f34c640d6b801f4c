"""The router's agent registry: registered agents and the agents sessions run.

A plain class (no Ray). It holds two different things, kept apart on purpose:

* **Registered agents** (``register_agent``): name -> newest version and its
  pickled payload. Sessions resolve handoff targets here, so registering a new
  version changes what the *next* handoff to that name runs.
* **Agents in use**: which agent each open session runs now, as the session
  actors report it. This is for ``status`` only; it never feeds handoff
  resolution (a session's own agent must not override another driver's
  agent of the same name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["AgentRegistry", "RegisteredAgent"]


@dataclass(frozen=True)
class RegisteredAgent:
    """One registered version of an agent."""

    name: str
    version: int
    payload: bytes


class AgentRegistry:
    """Registered agents by name, and the current agent of each open session."""

    def __init__(self) -> None:
        self._registered: dict[str, RegisteredAgent] = {}
        self._in_use: dict[str, str] = {}

    # ---------------------------------------------------------- registered

    def register(self, name: str, payload: bytes) -> int:
        """Register (a new version of) an agent; returns its version (1, 2, ...)."""
        previous = self._registered.get(name)
        version = (previous.version if previous else 0) + 1
        self._registered[name] = RegisteredAgent(name, version, payload)
        return version

    def get(self, name: str) -> RegisteredAgent | None:
        """The newest registered version of ``name``, or None."""
        return self._registered.get(name)

    def versions(self) -> dict[str, int]:
        """Registered names and their newest versions."""
        return {name: entry.version for name, entry in self._registered.items()}

    # -------------------------------------------------------------- in use

    def observe(self, agents_by_session: Mapping[str, str]) -> None:
        """Take the current agent of some sessions (``session_id -> agent name``)."""
        for session_id, agent in agents_by_session.items():
            if agent:
                self._in_use[session_id] = agent

    def forget_sessions(self, session_ids: Iterable[str]) -> None:
        """Drop sessions that ended or were lost."""
        for session_id in session_ids:
            self._in_use.pop(session_id, None)

    def keep_only(self, live_session_ids: Iterable[str]) -> None:
        """Drop every session not in ``live_session_ids`` (a missed end)."""
        live = set(live_session_ids)
        for session_id in [s for s in self._in_use if s not in live]:
            del self._in_use[session_id]

    def in_use(self) -> dict[str, int]:
        """Agent name -> number of open sessions running it, by name."""
        counts: dict[str, int] = {}
        for agent in self._in_use.values():
            counts[agent] = counts.get(agent, 0) + 1
        return dict(sorted(counts.items()))
