"""Naming the gateway's agent as module:attribute."""

from __future__ import annotations

import pytest

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.demo import build_demo_agent
from ray_realtime.exceptions import ConfigError
from ray_realtime.gateway.deploy import DEFAULT_AGENT, load_agent

AN_AGENT = RealtimeAgent(name="phone", instructions="Answer the phone.")


def not_an_agent() -> int:
    return 1


def test_the_default_agent_is_the_demos_factory() -> None:
    loaded = load_agent(DEFAULT_AGENT)
    assert not isinstance(loaded, RealtimeAgent)
    agent = loaded()
    assert isinstance(agent, RealtimeAgent) and agent.name == build_demo_agent().name


def test_an_agent_object_is_used_as_is() -> None:
    assert load_agent("tests.gateway.test_deploy:AN_AGENT") is AN_AGENT


@pytest.mark.parametrize(
    "spec",
    [
        "no_colon",
        "tests.gateway.nowhere:agent",
        "tests.gateway.test_deploy:missing",
        "tests.gateway.test_deploy:not_an_agent",
        "tests.gateway.test_deploy:pytest",
    ],
)
def test_bad_names_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        load_agent(spec)
