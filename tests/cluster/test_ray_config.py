"""ray_config.yaml must pass Ray's own cluster-launcher validation.

Uses the same steps ``ray up`` runs before talking to the cloud provider
(``prepare_config``: merge with the provider defaults, merge setup commands,
check docker and per-type worker limits; then ``validate_config``: JSON schema
plus cross-field checks). No Ray runtime and no cloud access are needed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG_PATH = Path(__file__).resolve().parents[2] / "ray_config.yaml"


@pytest.fixture(scope="module")
def raw_text() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def raw(raw_text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(raw_text)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_validates_with_rays_validator(prepared: dict[str, Any]) -> None:
    assert prepared["cluster_name"] == "ray-realtime"
    assert prepared["provider"]["type"] == "aws"


def test_validator_is_not_a_rubber_stamp(raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw)
    worker_type = next(iter(set(broken["available_node_types"]) - {broken["head_node_type"]}))
    broken["available_node_types"][worker_type]["not_a_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))

    missing_head = copy.deepcopy(raw)
    missing_head["head_node_type"] = "no.such.type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(missing_head))


def test_head_and_worker_node_types(prepared: dict[str, Any]) -> None:
    node_types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert head in node_types
    assert node_types[head]["max_workers"] == 0
    workers = {name: t for name, t in node_types.items() if name != head}
    assert workers, "a worker node type is required"
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
        assert node_type["max_workers"] >= 1, name
        assert node_type["max_workers"] <= prepared["max_workers"], name
        assert node_type["node_config"].get("InstanceType"), name


def test_setup_installs_ray_realtime_on_every_node(prepared: dict[str, Any]) -> None:
    # prepare_config prepends setup_commands to head/worker setup commands.
    for key in ("head_setup_commands", "worker_setup_commands"):
        installs = [c for c in prepared[key] if re.search(r"pip install .*ray-realtime", c)]
        assert installs, f"{key} does not install ray-realtime"


def test_head_starts_ray_then_serve_in_background(prepared: dict[str, Any]) -> None:
    commands: list[str] = prepared["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    serve = next(i for i, c in enumerate(commands) if "ray-realtime serve" in c)
    assert ray_start < serve
    serve_cmd = commands[serve]
    assert "--address auto" in serve_cmd
    assert re.search(r">\s*\S+\.log\s+2>&1", serve_cmd), "serve output must go to a log file"
    assert re.search(r"&(\s|$)", serve_cmd.replace("2>&1", "")), "serve must run in background"


def test_workers_join_the_head(prepared: dict[str, Any]) -> None:
    commands: list[str] = prepared["worker_start_ray_commands"]
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in commands)


def test_ray_version_matches_installed(raw: dict[str, Any]) -> None:
    # `ray up` requires the cluster to run the same Ray version as the laptop.
    version = ray.__version__
    assert raw["docker"]["image"].startswith(f"rayproject/ray:{version}"), (
        f"bump the docker image in ray_config.yaml to Ray {version}"
    )
    pins = [c for c in raw["setup_commands"] if "ray[default]==" in c]
    assert pins and all(f"ray[default]=={version}" in c for c in pins)


def test_placeholders_and_commands_are_documented(raw_text: str) -> None:
    header = raw_text.split("\ncluster_name:", 1)[0]
    for needle in (
        "YOUR_ORG",
        "ray up ray_config.yaml",
        "ray attach ray_config.yaml",
        "ray down ray_config.yaml",
    ):
        assert needle in header, needle
    assert "github.com/YOUR_ORG/ray-realtime" in raw_text
