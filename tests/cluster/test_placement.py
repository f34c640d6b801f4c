"""Unit tests for the pure placement policy (no Ray needed)."""

from __future__ import annotations

import itertools
import pickle
import random
from dataclasses import FrozenInstanceError, replace

import pytest

from ray_realtime import exceptions
from ray_realtime.cluster.placement import (
    NodeInfo,
    PlacementRequirement,
    choose_node,
)
from ray_realtime.exceptions import NoCapacityError


def node(node_id: str, capacity: int = 10, sessions: int = 0, **kwargs: object) -> NodeInfo:
    return NodeInfo(node_id=node_id, capacity=capacity, sessions=sessions, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- data types


def test_node_info_defaults_and_load() -> None:
    n = NodeInfo("a", capacity=4, sessions=1)
    assert n.alive is True
    assert n.drained is False
    assert n.resources == {}
    assert n.labels == {}
    assert float(n.load) == 0.25
    assert NodeInfo("z", capacity=0, sessions=0).load == 1


def test_data_types_are_frozen_hashable_and_copy_their_mappings() -> None:
    resources = {"GPU": 1.0}
    n = NodeInfo("a", 4, 0, resources=resources, labels={"zone": "x"})
    resources["GPU"] = 0.0
    assert n.resources == {"GPU": 1.0}
    with pytest.raises(FrozenInstanceError):
        n.sessions = 3  # type: ignore[misc]
    assert hash(n) == hash(NodeInfo("a", 4, 0, resources={"GPU": 1.0}, labels={"zone": "x"}))
    assert n == NodeInfo("a", 4, 0, resources={"GPU": 1.0}, labels={"zone": "x"})
    assert n != NodeInfo("a", 4, 0, resources={"GPU": 2.0}, labels={"zone": "x"})
    req = PlacementRequirement(resources={"GPU": 1}, labels={"zone": "x"})
    assert {req: 1}[PlacementRequirement(resources={"GPU": 1}, labels={"zone": "x"})] == 1
    assert pickle.loads(pickle.dumps(n)) == n
    assert pickle.loads(pickle.dumps(req)) == req


@pytest.mark.parametrize(("capacity", "sessions"), [(-1, 0), (1, -1)])
def test_node_info_rejects_negative_numbers(capacity: int, sessions: int) -> None:
    with pytest.raises(ValueError):
        NodeInfo("a", capacity=capacity, sessions=sessions)


def test_requirement_rejects_negative_resources() -> None:
    with pytest.raises(ValueError):
        PlacementRequirement(resources={"CPU": -1})


# --------------------------------------------------------------------------- choose_node


def test_least_loaded_wins() -> None:
    nodes = [node("a", 10, 5), node("b", 10, 2), node("c", 10, 7)]
    assert choose_node(nodes) == "b"


def test_load_is_relative_to_capacity() -> None:
    # a: 4/20 = 0.2, b: 3/10 = 0.3 -> a is less loaded despite more sessions.
    assert choose_node([node("a", 20, 4), node("b", 10, 3)]) == "a"


def test_full_nodes_are_skipped() -> None:
    nodes = [node("a", 2, 2), node("b", 5, 4)]
    assert choose_node(nodes) == "b"


def test_zero_capacity_node_never_chosen() -> None:
    assert choose_node([node("a", 0, 0), node("b", 1, 0)]) == "b"
    with pytest.raises(NoCapacityError):
        choose_node([node("a", 0, 0)])


def test_drained_nodes_are_skipped() -> None:
    nodes = [node("a", 10, 0, drained=True), node("b", 10, 9)]
    assert choose_node(nodes) == "b"


def test_dead_nodes_are_skipped() -> None:
    nodes = [node("a", 10, 0, alive=False), node("b", 10, 9)]
    assert choose_node(nodes) == "b"


def test_per_node_limit() -> None:
    nodes = [node("a", 100, 3), node("b", 10, 2)]
    # Without the limit a (0.03) beats b (0.2).
    assert choose_node(nodes) == "a"
    assert choose_node(nodes, max_sessions_per_node=3) == "b"
    with pytest.raises(NoCapacityError) as info:
        choose_node(nodes, max_sessions_per_node=2)
    assert "per-node limit: 2" in str(info.value)
    assert "max_sessions_per_node=2" in str(info.value)


def test_negative_per_node_limit_is_rejected() -> None:
    with pytest.raises(ValueError):
        choose_node([node("a")], max_sessions_per_node=-1)


def test_resource_requirement() -> None:
    nodes = [
        node("cpu", 10, 0, resources={"CPU": 8}),
        node("gpu", 10, 5, resources={"CPU": 8, "GPU": 1}),
        node("gpu2", 10, 6, resources={"CPU": 8, "GPU": 2}),
    ]
    assert choose_node(nodes) == "cpu"
    assert choose_node(nodes, PlacementRequirement(resources={"GPU": 1})) == "gpu"
    assert choose_node(nodes, PlacementRequirement(resources={"GPU": 1.5})) == "gpu2"
    assert choose_node(nodes, PlacementRequirement(resources={"GPU": 2, "CPU": 8})) == "gpu2"
    # A zero request is satisfied even by nodes that do not list the resource.
    assert choose_node(nodes, PlacementRequirement(resources={"TPU": 0})) == "cpu"
    with pytest.raises(NoCapacityError) as info:
        choose_node(nodes, PlacementRequirement(resources={"GPU": 4}))
    assert "resources: 3" in str(info.value)


def test_label_requirement() -> None:
    nodes = [
        node("eu1", 10, 3, labels={"region": "eu", "tier": "gold"}),
        node("eu2", 10, 1, labels={"region": "eu"}),
        node("us1", 10, 0, labels={"region": "us"}),
        node("bare", 10, 0),
    ]
    assert choose_node(nodes, PlacementRequirement(labels={"region": "eu"})) == "eu2"
    req = PlacementRequirement(labels={"region": "eu", "tier": "gold"})
    assert choose_node(nodes, req) == "eu1"
    with pytest.raises(NoCapacityError) as info:
        choose_node(nodes, PlacementRequirement(labels={"region": "ap"}))
    assert "labels: 4" in str(info.value)


def test_resources_and_labels_combined() -> None:
    nodes = [
        node("a", 10, 0, resources={"GPU": 1}, labels={"region": "us"}),
        node("b", 10, 9, resources={"GPU": 1}, labels={"region": "eu"}),
        node("c", 10, 0, resources={}, labels={"region": "eu"}),
    ]
    req = PlacementRequirement(resources={"GPU": 1}, labels={"region": "eu"})
    assert choose_node(nodes, req) == "b"


def test_ties_prefer_fewer_sessions_then_node_id() -> None:
    # Equal load 0.5: fewer sessions wins.
    assert choose_node([node("a", 20, 10), node("b", 10, 5)]) == "b"
    # Equal load and sessions: smallest node_id wins, whatever the input order.
    nodes = [node("c", 10, 5), node("a", 10, 5), node("b", 10, 5)]
    for perm in itertools.permutations(nodes):
        assert choose_node(list(perm)) == "a"


def test_choice_is_independent_of_input_order() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        nodes = [
            node(f"n{i}", rng.randint(0, 6), 0, drained=rng.random() < 0.2)
            for i in range(rng.randint(1, 6))
        ]
        nodes = [replace(n, sessions=rng.randint(0, n.capacity)) for n in nodes]
        try:
            expected = choose_node(nodes)
        except NoCapacityError:
            expected = None
        shuffled = nodes[:]
        rng.shuffle(shuffled)
        try:
            got = choose_node(shuffled)
        except NoCapacityError:
            got = None
        assert got == expected


def test_no_nodes_at_all() -> None:
    with pytest.raises(NoCapacityError) as info:
        choose_node([])
    assert "among 0 node(s)" in str(info.value)


def test_no_capacity_message_lists_reasons() -> None:
    nodes = [
        node("dead", alive=False),
        node("drained", drained=True),
        node("full", 1, 1),
    ]
    req = PlacementRequirement(resources={"GPU": 1})
    with pytest.raises(NoCapacityError) as info:
        choose_node(nodes, req)
    err = info.value
    assert "dead: 1" in err.message
    assert "drained: 1" in err.message
    assert "full: 1" in err.message
    assert err.requirement_repr == repr(req)
    assert "GPU" in str(err)


def test_prefer_node_when_eligible_and_not_overloaded() -> None:
    nodes = [node("a", 10, 3), node("b", 10, 4), node("c", 10, 5)]
    assert choose_node(nodes) == "a"
    assert choose_node(nodes, prefer_node_id="a") == "a"
    # b has one session more than the best: still acceptable.
    assert choose_node(nodes, prefer_node_id="b") == "b"
    # c has two more: the preference is ignored.
    assert choose_node(nodes, prefer_node_id="c") == "a"
    # Unknown ids are ignored.
    assert choose_node(nodes, prefer_node_id="zzz") == "a"


def test_prefer_node_slack_is_one_session_of_its_own_capacity() -> None:
    # Best: b at 5/10 = 0.5. Preferred big node at 10/20 has equal load but
    # five more sessions; one session fewer (9/20) is below 0.5 -> preferred.
    nodes = [node("big", 20, 10), node("b", 10, 5)]
    assert choose_node(nodes) == "b"
    assert choose_node(nodes, prefer_node_id="big") == "big"
    # 12/20: one fewer is 11/20 = 0.55 > 0.5 -> not preferred.
    nodes = [node("big", 20, 12), node("b", 10, 5)]
    assert choose_node(nodes, prefer_node_id="big") == "b"


def test_prefer_node_ignored_when_ineligible() -> None:
    req = PlacementRequirement(labels={"region": "eu"})
    nodes = [
        node("a", 10, 4, labels={"region": "eu"}),
        node("full", 2, 2, labels={"region": "eu"}),
        node("drained", 10, 0, drained=True, labels={"region": "eu"}),
        node("dead", 10, 0, alive=False, labels={"region": "eu"}),
        node("us", 10, 0, labels={"region": "us"}),
        node("limited", 10, 5, labels={"region": "eu"}),
    ]
    for preferred in ("full", "drained", "dead", "us"):
        assert choose_node(nodes, req, prefer_node_id=preferred) == "a"
    assert choose_node(nodes, req, prefer_node_id="limited") == "limited"
    assert choose_node(nodes, req, prefer_node_id="limited", max_sessions_per_node=5) == "a"


# --------------------------------------------------------------------------- errors


def test_no_capacity_error_pickle_round_trip() -> None:
    with pytest.raises(NoCapacityError) as info:
        choose_node([node("a", 1, 1)], PlacementRequirement(labels={"gpu": "yes"}))
    err = info.value
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is NoCapacityError
    assert clone.args == err.args
    assert clone.message == err.message
    assert clone.requirement_repr == err.requirement_repr
    assert str(clone) == str(err)


def test_no_capacity_error_constructed_directly() -> None:
    err = NoCapacityError("nothing fits", "PlacementRequirement()")
    assert err.args == ("nothing fits", "PlacementRequirement()")
    assert str(err) == "nothing fits"
    assert str(NoCapacityError("bare")) == "bare"
    clone = pickle.loads(pickle.dumps(err, protocol=pickle.HIGHEST_PROTOCOL))
    assert (clone.message, clone.requirement_repr) == ("nothing fits", "PlacementRequirement()")


def test_no_capacity_error_belongs_to_the_project_exception_tree() -> None:
    with pytest.raises(NoCapacityError) as info:
        choose_node([])
    err = info.value
    assert type(err) is exceptions.NoCapacityError  # one class, not a subclass of its own
    assert isinstance(err, exceptions.ClusterError)
    assert isinstance(err, exceptions.RayRealtimeError)
