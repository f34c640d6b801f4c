"""The router's placement step: the node for a session, and shared packed starts.

A plain class (no Ray). It gathers the inputs of the pure policy
:func:`~ray_realtime.cluster.placement.choose_node` from the router's parts —
the nodes (:class:`NodeTable`), the load per node (:class:`SessionRegistry`,
reservations included) and the session actors (:class:`Fleet`) — and applies
one rule of its own for packed actors (``sessions_per_actor > 1``): fill a
partly used actor of that size before opening another, since each actor
costs a process.

It also lets placements that arrive while a packed actor is starting share
that actor's free slots (:meth:`Placer.start_shared`) instead of each
starting another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ray_realtime.cluster.fleet import ActorRecord, Fleet
from ray_realtime.cluster.node_table import NodeTable
from ray_realtime.cluster.placement import PlacementRequirement, choose_node
from ray_realtime.cluster.session_registry import SessionRegistry
from ray_realtime.exceptions import NoCapacityError

__all__ = ["Placer"]


class _PackedStart:
    """A packed actor being started and the slots placements took on it."""

    def __init__(self, future: asyncio.Future[ActorRecord | None]) -> None:
        self.future = future
        self.taken = 1


class Placer:
    """Chooses nodes for sessions from the router's parts."""

    def __init__(
        self,
        nodes: NodeTable,
        sessions: SessionRegistry,
        fleet: Fleet,
        max_sessions_per_node: int,
    ) -> None:
        self._nodes = nodes
        self._sessions = sessions
        self._fleet = fleet
        self._limit = max_sessions_per_node
        self._packed: dict[tuple[str, int], _PackedStart] = {}

    def choose_node(self, requirement: PlacementRequirement, capacity: int) -> str:
        """The node for a new session on an actor of ``capacity`` sessions;
        :class:`NoCapacityError` when none can take it."""
        infos = self._nodes.placement_view(self._sessions.load_by_node(), self._limit)
        if capacity > 1:
            open_nodes = self._fleet.partly_used_nodes(capacity) | {
                node_id
                for (node_id, size), start in self._packed.items()
                if size == capacity and start.taken < capacity
            }
            if open_nodes:
                try:
                    return choose_node(
                        [n for n in infos if n.node_id in open_nodes],
                        requirement,
                        max_sessions_per_node=self._limit,
                    )
                except NoCapacityError:
                    pass  # none of them is eligible: any node then
        return choose_node(infos, requirement, max_sessions_per_node=self._limit)

    async def start_shared(
        self,
        node_id: str,
        capacity: int,
        start: Callable[[], Awaitable[ActorRecord | None]],
    ) -> ActorRecord | None:
        """A new session actor for one placement, from ``start()``. A packed
        placement that arrives while an actor of its size is starting on its
        node takes a slot of that one instead (the caller checks it still has
        room: others may have filled it meanwhile)."""
        key = (node_id, capacity)
        pending = self._packed.get(key)
        if capacity > 1 and pending is not None and pending.taken < capacity:
            pending.taken += 1
            return await asyncio.shield(pending.future)
        future: asyncio.Future[ActorRecord | None] = asyncio.get_running_loop().create_future()
        if capacity > 1:
            self._packed[key] = _PackedStart(future)
        try:
            record = await start()
            future.set_result(record)
            return record
        except BaseException:
            future.set_result(None)
            raise
        finally:
            current = self._packed.get(key)
            if current is not None and current.future is future:
                del self._packed[key]
