"""ServiceConfig: typed, bounded, plain data (no Ray needed)."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.exceptions import ConfigError


def test_defaults_round_trip_through_plain_data() -> None:
    config = ServiceConfig()
    assert ServiceConfig.from_dict(config.to_dict()) == config
    assert ServiceConfig.from_dict(None) == config


def test_zero_is_allowed_where_it_means_off() -> None:
    config = ServiceConfig(warm_pool_size=0, refill_delay_seconds=0)
    assert config.warm_pool_size == 0 and config.refill_delay_seconds == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"warm_pool_size": -1},
        {"tool_workers_per_node": 0},
        {"guardrail_workers_per_node": True},
        {"max_sessions_per_node": 1.5},
        {"sessions_per_actor": "2"},
        {"health_interval_seconds": 0},
        {"refill_delay_seconds": -0.1},
        {"local_model": 1},
        {"worker_stuck_threads": 0},
        {"worker_retire_grace_seconds": 0},
    ],
)
def test_bad_values_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_dict(bad)
    assert next(iter(bad)) in str(info.value)


def test_unknown_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="warm_pool"):
        ServiceConfig.from_dict({"warm_pool": 3})


def test_local_model_follows_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ServiceConfig().runs_local_model
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert not ServiceConfig().runs_local_model
    assert ServiceConfig(local_model=True).runs_local_model
