"""The router's view of the cluster's nodes: one typed record per node.

A plain class (no Ray): the router hands it the raw node list Ray reports
(``ray.nodes()``: dicts with ``NodeID``, ``Alive``, ``NodeManagerAddress``,
``Resources``, ``Labels``) and reads back typed :class:`NodeRecord` values and
the :class:`~ray_realtime.cluster.placement.NodeInfo` snapshot the placement
policy takes. Drained flags are the router's own and survive refreshes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray_realtime.cluster.placement import NodeInfo
from ray_realtime.exceptions import ConfigError

__all__ = ["NodeRecord", "NodeTable"]


@dataclass
class NodeRecord:
    """A node as the router sees it."""

    node_id: str
    address: str = ""
    alive: bool = True
    drained: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """Whether the node may receive new actors and sessions."""
        return self.alive and not self.drained


class NodeTable:
    """Every node the router has seen, by id (dead ones stay, marked dead)."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeRecord] = {}

    def update(self, raw_nodes: Iterable[Mapping[str, Any]]) -> None:
        """Take a fresh node list as Ray reports it. A node missing from the
        list is marked dead; the drained flags are kept."""
        seen: set[str] = set()
        for info in raw_nodes:
            node_id = str(info.get("NodeID", ""))
            if not node_id:
                continue
            seen.add(node_id)
            node = self._nodes.get(node_id)
            if node is None:
                node = NodeRecord(node_id)
                self._nodes[node_id] = node
            node.alive = bool(info.get("Alive", False))
            node.address = str(info.get("NodeManagerAddress", ""))
            # Ray lists every node's own "node:<ip>" resource; placement never asks for it.
            node.resources = {
                str(k): float(v)
                for k, v in (info.get("Resources") or {}).items()
                if not str(k).startswith("node:")
            }
            node.labels = {str(k): str(v) for k, v in (info.get("Labels") or {}).items()}
        for node_id, node in self._nodes.items():
            if node_id not in seen:
                node.alive = False

    def get(self, node_id: str) -> NodeRecord | None:
        """The node with this id, or None."""
        return self._nodes.get(node_id)

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(list(self._nodes.values()))

    def has_live_node(self) -> bool:
        """Whether any known node is alive (placement needs one)."""
        return any(n.alive for n in self._nodes.values())

    def is_dead(self, node_id: str) -> bool:
        """Whether a known node is dead (an unknown node is not known dead)."""
        node = self._nodes.get(node_id)
        return node is not None and not node.alive

    def set_drained(self, node_id: str, drained: bool) -> NodeRecord:
        """Drain (or resume) a node; :class:`ConfigError` for an unknown one."""
        node = self._nodes.get(node_id)
        if node is None:
            raise ConfigError(f"unknown node {node_id}")
        node.drained = drained
        return node

    def placement_view(self, sessions: Mapping[str, int], capacity: int) -> list[NodeInfo]:
        """The snapshot :func:`~ray_realtime.cluster.placement.choose_node`
        takes: every node with its session count and the per-node capacity."""
        return [
            NodeInfo(
                node_id=n.node_id,
                capacity=capacity,
                sessions=sessions.get(n.node_id, 0),
                drained=n.drained,
                alive=n.alive,
                resources=n.resources,
                labels=n.labels,
            )
            for n in self._nodes.values()
        ]
