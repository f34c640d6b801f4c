"""Pure session-placement policy used by the Router actor.

This module decides *which node* a new realtime session should live on. It has
no Ray dependency (it imports only the standard library and
:mod:`ray_realtime.exceptions`): the Router gathers a snapshot of the cluster as a sequence of
:class:`NodeInfo` values and calls :func:`choose_node`, so the policy can be
unit-tested exhaustively without a Ray runtime.

Policy
------
1. **Eligibility.** A node can take a new session only if all of these hold:

   * it is ``alive`` and not ``drained`` (a drained node keeps its existing
     sessions but receives no new ones);
   * ``sessions < capacity`` (a node with ``capacity == 0`` never qualifies);
   * ``sessions < max_sessions_per_node`` when that global limit is given;
   * it satisfies the :class:`PlacementRequirement`: for every requested
     resource ``node.resources.get(name, 0) >= amount``, and for every requested
     label ``node.labels.get(key) == value`` (exact string equality).

   Whether ``NodeInfo.resources`` holds a node's total or currently free
   resources is the caller's choice; the policy only compares numbers.

2. **Least loaded.** Among eligible nodes the one with the lowest load
   ``sessions / capacity`` wins. Loads are compared exactly (as fractions), so
   nodes of different sizes fill up proportionally: with capacities 20 and 10,
   new sessions are spread 2:1.

3. **Deterministic ties.** Equal loads are broken by fewer ``sessions``, then by
   the lexicographically smallest ``node_id``. The same snapshot therefore
   always yields the same answer.

4. **Preferred node (stickiness).** ``prefer_node_id`` names a node the caller
   would like to reuse (e.g. where a reconnecting client's session used to be).
   It is chosen instead of the best node when it is eligible and it is within
   *one session* of the best load, i.e. when
   ``(preferred.sessions - 1) / preferred.capacity <= best.sessions / best.capacity``.
   In words: had the preferred node one session fewer, it would be no more
   loaded than the best node. Otherwise (ineligible, unknown, or clearly more
   loaded) the preference is ignored silently.

5. **No capacity.** When no node is eligible, :class:`NoCapacityError` is
   raised; its message summarises why the nodes were rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from ray_realtime.exceptions import NoCapacityError

__all__ = [
    "NodeInfo",
    "PlacementRequirement",
    "choose_node",
]


@dataclass(frozen=True)
class PlacementRequirement:
    """What a session needs from the node it is placed on.

    Attributes:
        resources: Minimum amount of each named resource the node must offer,
            e.g. ``{"GPU": 1}``.
        labels: Labels the node must carry with exactly these values,
            e.g. ``{"region": "eu"}``.
    """

    resources: Mapping[str, float] = field(default_factory=dict, hash=False)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Defensive copies: callers mutating their dicts cannot change a frozen
        # value afterwards. Plain dicts (not MappingProxyType) stay picklable.
        object.__setattr__(self, "resources", dict(self.resources))
        object.__setattr__(self, "labels", dict(self.labels))
        for name, amount in self.resources.items():
            if amount < 0:
                raise ValueError(f"requested resource {name!r} must be >= 0, got {amount}")


@dataclass(frozen=True)
class NodeInfo:
    """Snapshot of one node as seen by the placement policy.

    Attributes:
        node_id: Unique node identifier (e.g. the Ray node id hex string).
        capacity: Maximum number of sessions the node may host (``>= 0``).
        sessions: Number of sessions currently on the node (``>= 0``).
        drained: ``True`` when the node must not receive new sessions.
        alive: ``False`` when the node is dead or unreachable.
        resources: Resources the node offers, e.g. ``{"CPU": 8, "GPU": 1}``.
        labels: Labels of the node, e.g. ``{"region": "eu"}``.
    """

    node_id: str
    capacity: int
    sessions: int
    drained: bool = False
    alive: bool = True
    resources: Mapping[str, float] = field(default_factory=dict, hash=False)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {self.capacity}")
        if self.sessions < 0:
            raise ValueError(f"sessions must be >= 0, got {self.sessions}")
        object.__setattr__(self, "resources", dict(self.resources))
        object.__setattr__(self, "labels", dict(self.labels))

    @property
    def load(self) -> Fraction:
        """Exact ``sessions / capacity``; a zero-capacity node counts as full."""
        if self.capacity == 0:
            return Fraction(1)
        return Fraction(self.sessions, self.capacity)


def _rank(node: NodeInfo) -> tuple[Fraction, int, str]:
    """Sort key: lower is better (least loaded, fewer sessions, node_id)."""
    return (node.load, node.sessions, node.node_id)


def _rejection(
    node: NodeInfo,
    requirement: PlacementRequirement,
    max_sessions_per_node: int | None,
) -> str | None:
    """Why ``node`` cannot take a new session, or ``None`` when it can."""
    if not node.alive:
        return "dead"
    if node.drained:
        return "drained"
    if node.sessions >= node.capacity:
        return "full"
    if max_sessions_per_node is not None and node.sessions >= max_sessions_per_node:
        return "per-node limit"
    for name, amount in requirement.resources.items():
        if node.resources.get(name, 0) < amount:
            return "resources"
    for key, value in requirement.labels.items():
        if node.labels.get(key) != value:
            return "labels"
    return None


def _partition(
    nodes: Sequence[NodeInfo],
    requirement: PlacementRequirement,
    max_sessions_per_node: int | None,
) -> tuple[list[NodeInfo], dict[str, int]]:
    """Split ``nodes`` into eligible ones and a count of rejection reasons."""
    eligible: list[NodeInfo] = []
    reasons: dict[str, int] = {}
    for node in nodes:
        reason = _rejection(node, requirement, max_sessions_per_node)
        if reason is None:
            eligible.append(node)
        else:
            reasons[reason] = reasons.get(reason, 0) + 1
    return eligible, reasons


def _no_capacity(
    reasons: Mapping[str, int],
    total: int,
    requirement: PlacementRequirement,
    max_sessions_per_node: int | None,
) -> NoCapacityError:
    detail = ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items()))
    message = f"no node can accept a new session among {total} node(s)"
    if detail:
        message += f" ({detail})"
    if max_sessions_per_node is not None:
        message += f"; max_sessions_per_node={max_sessions_per_node}"
    message += f"; requirement: {requirement!r}"
    return NoCapacityError(message, repr(requirement))


def _check_limit(max_sessions_per_node: int | None) -> None:
    if max_sessions_per_node is not None and max_sessions_per_node < 0:
        raise ValueError(f"max_sessions_per_node must be >= 0, got {max_sessions_per_node}")


def choose_node(
    nodes: Sequence[NodeInfo],
    requirement: PlacementRequirement | None = None,
    *,
    max_sessions_per_node: int | None = None,
    prefer_node_id: str | None = None,
) -> str:
    """Pick the node for one new session (see the module docstring).

    Args:
        nodes: Snapshot of the cluster.
        requirement: Resources/labels the session needs; ``None`` means none.
        max_sessions_per_node: Optional global cap applied on top of each
            node's own ``capacity``.
        prefer_node_id: Node to reuse when it is eligible and within one
            session of the least loaded node.

    Returns:
        The ``node_id`` of the chosen node.

    Raises:
        NoCapacityError: No node is eligible.
        ValueError: ``max_sessions_per_node`` is negative.
    """
    _check_limit(max_sessions_per_node)
    req = requirement if requirement is not None else PlacementRequirement()
    eligible, reasons = _partition(nodes, req, max_sessions_per_node)
    if not eligible:
        raise _no_capacity(reasons, len(nodes), req, max_sessions_per_node)

    best = min(eligible, key=_rank)
    if prefer_node_id is not None and prefer_node_id != best.node_id:
        for node in eligible:
            if node.node_id == prefer_node_id:
                # node.capacity > 0 here, since eligible implies sessions < capacity.
                if Fraction(node.sessions - 1, node.capacity) <= best.load:
                    return node.node_id
                break
    return best.node_id
