"""The router's pool targets: worker pools and the warm pool, per node.

Plain classes (no Ray) that read the :class:`~ray_realtime.cluster.fleet.Fleet`
and the :class:`~ray_realtime.cluster.service_config.ServiceConfig` and say
what to start and what to retire; the router does the starting and retiring.

* :class:`WorkerPools`: on every open node, ``tool_workers_per_node`` tool
  workers, ``guardrail_workers_per_node`` guardrail workers and, when the
  service runs the bundled model, one local model server.
* :class:`WarmPool`: on every open node, ``warm_pool_size`` idle session actors
  of the service's ``sessions_per_actor`` size, so a session starts on a
  ready actor instead of waiting for a process. Its one definition of "warm"
  (:meth:`WarmPool.warm`) serves refills, trims, releases and ``status``.
"""

from __future__ import annotations

from ray_realtime.cluster.fleet import ActorKind, ActorRecord, Fleet
from ray_realtime.cluster.node_table import NodeRecord
from ray_realtime.cluster.service_config import ServiceConfig

__all__ = ["WarmPool", "WorkerPools"]

_WORKER_KINDS = (ActorKind.TOOL, ActorKind.GUARDRAIL, ActorKind.MODEL)


class WorkerPools:
    """How many workers of each kind every open node should run."""

    def __init__(self, config: ServiceConfig, fleet: Fleet) -> None:
        self._config = config
        self._fleet = fleet

    def target(self, kind: ActorKind) -> int:
        """Workers of ``kind`` wanted on each open node."""
        if kind is ActorKind.TOOL:
            return self._config.tool_workers_per_node
        if kind is ActorKind.GUARDRAIL:
            return self._config.guardrail_workers_per_node
        if kind is ActorKind.MODEL:
            return 1 if self._config.runs_local_model else 0
        raise ValueError(f"{kind} is not a worker kind")

    def missing(self, node_id: str) -> list[ActorKind]:
        """One entry per worker to start on ``node_id`` (ready and starting
        ones count as present)."""
        wanted: list[ActorKind] = []
        for kind in _WORKER_KINDS:
            have = len(self._fleet.of_kind(kind, node_id)) + len(
                self._fleet.starting(kind, node_id)
            )
            wanted.extend([kind] * max(0, self.target(kind) - have))
        return wanted


class WarmPool:
    """Idle session actors kept ready on each open node."""

    def __init__(self, config: ServiceConfig, fleet: Fleet) -> None:
        self._config = config
        self._fleet = fleet

    @property
    def actor_size(self) -> int:
        """Sessions per actor of warm actors (the service's default size)."""
        return self._config.sessions_per_actor

    def target(self, node: NodeRecord | None) -> int:
        """Warm actors wanted on a node: the pool size when it is open, else 0."""
        return self._config.warm_pool_size if node is not None and node.open else 0

    def warm(self, node_id: str) -> list[ActorRecord]:
        """The warm actors on a node, oldest first: ready session actors of the
        pool's size that host no session."""
        warm = [
            r
            for r in self._fleet.of_kind(ActorKind.SESSION, node_id)
            if r.idle and r.capacity == self.actor_size
        ]
        warm.sort(key=lambda r: r.created)
        return warm

    def refilling(self, node_id: str) -> int:
        """Warm actors being started on a node (not those started for a placement)."""
        return sum(
            1
            for s in self._fleet.starting(ActorKind.SESSION, node_id)
            if not s.for_placement and s.capacity == self.actor_size
        )

    def deficit(self, node: NodeRecord) -> int:
        """How many warm actors to start on a node now."""
        return max(
            0, self.target(node) - len(self.warm(node.node_id)) - self.refilling(node.node_id)
        )

    def surplus(self, node: NodeRecord) -> list[ActorRecord]:
        """Warm actors beyond the target on a node, to retire (a refill that
        raced a session ending, or one that finished after its node was
        drained). None while a session actor is starting there: let it settle."""
        if self._fleet.starting(ActorKind.SESSION, node.node_id):
            return []
        return self.warm(node.node_id)[self.target(node) :]

    def retire_after_release(self, record: ActorRecord, node: NodeRecord | None) -> bool:
        """Whether a session actor whose session just ended should be retired:
        an empty actor of another size (a packed actor of a session's own
        size is never pooled), or a warm one beyond its node's target."""
        if record.sessions:
            return False
        if record.capacity != self.actor_size:
            return True
        # The drained test spares a node the router no longer lists (None).
        if node is not None and node.drained:
            return True
        return len(self.warm(record.node_id)) > self._config.warm_pool_size
