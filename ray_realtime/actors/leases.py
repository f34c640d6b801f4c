"""Leases: when a session nobody holds is closed.

A session is *held* while a handle is connected to it: a live data-plane
connection, or (a handle on the Ray-call fallback) a call about the session
within the last ``orphan_timeout`` seconds — such handles send a cheap
``touch`` every ``orphan_timeout / 4`` from a background task, so an idle
handle whose process lives keeps its session. A session nobody holds is
closed ``orphan_timeout`` seconds after it was last held, unless a handle let
go with ``detach(keep_alive_seconds=k)``: then it is kept exactly ``k``
seconds after that detach. Any later attach, connection or call clears that
and restarts the ordinary clock.

This is plain bookkeeping: no Ray, no event loop; every time is an argument
(``time.monotonic()`` in the session actor), so the rules are tested fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_realtime.exceptions import UserError

__all__ = ["DEFAULT_ORPHAN_TIMEOUT_SECONDS", "MAX_KEEP_ALIVE_SECONDS", "Leases", "check_keep_alive"]

DEFAULT_ORPHAN_TIMEOUT_SECONDS = 300.0
"""How long a session nobody holds lives on (run config ``orphan_timeout_seconds``)."""

MAX_KEEP_ALIVE_SECONDS = 86_400.0
"""Longest explicit ``detach(keep_alive_seconds=...)``: a day."""


def check_keep_alive(value: object) -> float | None:
    """``keep_alive_seconds`` as a float (None stays None); :class:`UserError`
    unless it is a number in ``[0, MAX_KEEP_ALIVE_SECONDS]``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= MAX_KEEP_ALIVE_SECONDS
    ):
        raise UserError(
            f"keep_alive_seconds must be a number from 0 to {MAX_KEEP_ALIVE_SECONDS:g}, "
            f"got {value!r}"
        )
    return float(value)


@dataclass
class _Lease:
    timeout: float
    held_at: float  # when the session was last held (opened, touched, let go)
    connections: int = 0
    keep_until: float | None = None  # set by detach(keep_alive_seconds=...)


class Leases:
    """The leases of the sessions of one actor."""

    def __init__(self) -> None:
        self._leases: dict[str, _Lease] = {}

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def open(self, session_id: str, now: float, timeout: float) -> None:
        """A session opened at ``now``, closed after ``timeout`` seconds unheld."""
        if not timeout > 0:
            raise ValueError(f"orphan timeout must be > 0, got {timeout!r}")
        self._leases[session_id] = _Lease(timeout=float(timeout), held_at=now)

    def forget(self, session_id: str) -> None:
        """The session closed: no lease any more."""
        self._leases.pop(session_id, None)

    def timeout(self, session_id: str) -> float:
        """The session's orphan timeout (the default for an unknown one)."""
        lease = self._leases.get(session_id)
        return lease.timeout if lease is not None else DEFAULT_ORPHAN_TIMEOUT_SECONDS

    def connect(self, session_id: str, now: float) -> None:
        """A data-plane connection of the session was welcomed."""
        lease = self._leases.get(session_id)
        if lease is not None:
            lease.connections += 1
            self._hold(lease, now)

    def disconnect(self, session_id: str, now: float) -> None:
        """A data-plane connection of the session ended: the clock starts now
        if it was the last one (a pending keep-alive stays; one that ran out
        while this connection held the session no longer applies)."""
        lease = self._leases.get(session_id)
        if lease is not None:
            lease.connections = max(0, lease.connections - 1)
            lease.held_at = max(lease.held_at, now)
            if lease.keep_until is not None and lease.keep_until < now:
                lease.keep_until = None

    def touch(self, session_id: str, now: float) -> None:
        """A handle attached or called about the session (a Ray call, a touch)."""
        lease = self._leases.get(session_id)
        if lease is not None:
            self._hold(lease, now)

    def detach(self, session_id: str, now: float, keep_alive: float | None) -> None:
        """A handle let go; with ``keep_alive``, the session is kept exactly that
        long once nobody holds it (instead of the orphan timeout)."""
        lease = self._leases.get(session_id)
        if lease is None:
            return
        lease.held_at = max(lease.held_at, now)
        if keep_alive is not None:
            lease.keep_until = now + keep_alive

    def deadline(self, session_id: str) -> float | None:
        """When the session will be closed if nothing holds it until then;
        None while a data-plane connection holds it (or for an unknown one)."""
        lease = self._leases.get(session_id)
        if lease is None or lease.connections > 0:
            return None
        if lease.keep_until is not None:
            return lease.keep_until
        return lease.held_at + lease.timeout

    def expired(self, now: float) -> list[str]:
        """The sessions to close at ``now`` (linear in the number of sessions)."""
        found = []
        for session_id in self._leases:
            deadline = self.deadline(session_id)
            if deadline is not None and now >= deadline:
                found.append(session_id)
        return found

    def check_interval(self) -> float:
        """How often to look for expired sessions: a quarter of the shortest
        timeout, between 0.05 s and 5 s, so closing is late by at most that."""
        shortest = min((lease.timeout for lease in self._leases.values()), default=20.0)
        return min(5.0, max(0.05, shortest / 4))

    @staticmethod
    def _hold(lease: _Lease, now: float) -> None:
        lease.held_at = max(lease.held_at, now)
        lease.keep_until = None
