"""The lease rules (plain bookkeeping, times given): when a session nobody
holds is closed."""

from __future__ import annotations

import pytest

from ray_realtime.actors.leases import (
    DEFAULT_ORPHAN_TIMEOUT_SECONDS,
    MAX_KEEP_ALIVE_SECONDS,
    Leases,
    check_keep_alive,
)
from ray_realtime.exceptions import UserError


def _leases(timeout: float = 10.0) -> Leases:
    leases = Leases()
    leases.open("s", 100.0, timeout)
    return leases


def test_an_unheld_session_expires_after_the_timeout() -> None:
    leases = _leases()
    assert leases.expired(109.9) == []
    assert leases.expired(110.0) == ["s"]
    assert leases.deadline("s") == 110.0


def test_a_data_plane_connection_holds_it_however_long() -> None:
    leases = _leases()
    leases.connect("s", 101.0)
    assert leases.deadline("s") is None
    assert leases.expired(10_000.0) == []
    # Two connections: the session is held until the last one ends.
    leases.connect("s", 102.0)
    leases.disconnect("s", 200.0)
    assert leases.expired(10_000.0) == []
    leases.disconnect("s", 300.0)
    assert leases.expired(309.0) == []
    assert leases.expired(310.0) == ["s"]


def test_touches_keep_it_and_the_clock_starts_at_the_last() -> None:
    leases = _leases()
    for t in (105.0, 112.0, 119.0):
        assert leases.expired(t) == []
        leases.touch("s", t)
    assert leases.expired(128.9) == []
    assert leases.expired(129.0) == ["s"]


def test_an_older_time_never_moves_the_clock_back() -> None:
    leases = _leases()
    leases.touch("s", 150.0)
    leases.touch("s", 120.0)
    leases.disconnect("s", 130.0)
    assert leases.deadline("s") == 160.0


def test_detach_with_keep_alive_keeps_it_exactly_that_long() -> None:
    leases = _leases(timeout=2.0)
    leases.connect("s", 100.0)
    # The handle tells the actor first, then its socket closes.
    leases.detach("s", 101.0, 5.0)
    leases.disconnect("s", 101.1)
    assert leases.expired(103.5) == []  # past the orphan timeout
    assert leases.expired(105.9) == []
    assert leases.expired(106.0) == ["s"]


def test_a_short_keep_alive_closes_before_the_orphan_timeout() -> None:
    leases = _leases(timeout=300.0)
    leases.detach("s", 100.0, 1.0)
    assert leases.expired(101.0) == ["s"]


def test_detach_without_keep_alive_leaves_the_orphan_timeout() -> None:
    leases = _leases(timeout=2.0)
    leases.detach("s", 101.0, None)
    assert leases.deadline("s") == 103.0


def test_reattach_restarts_the_ordinary_clock() -> None:
    leases = _leases(timeout=2.0)
    leases.detach("s", 100.0, 60.0)
    leases.touch("s", 110.0)  # attach (or any call) by a handle
    assert leases.deadline("s") == 112.0
    leases.detach("s", 111.0, 60.0)
    leases.connect("s", 111.5)  # a data plane connects
    leases.disconnect("s", 120.0)
    assert leases.deadline("s") == 122.0


def test_a_keep_alive_that_ran_out_while_another_handle_held_it() -> None:
    leases = _leases(timeout=2.0)
    leases.connect("s", 100.0)  # another handle, still connected
    leases.detach("s", 101.0, 1.0)
    assert leases.expired(150.0) == []
    leases.disconnect("s", 150.0)  # now nobody: the ordinary clock
    assert leases.deadline("s") == 152.0


def test_forget_and_unknown_sessions() -> None:
    leases = _leases()
    leases.forget("s")
    assert "s" not in leases and len(leases) == 0
    for call in (leases.touch, leases.connect, leases.disconnect):
        call("s", 200.0)
    leases.detach("s", 200.0, 5.0)
    assert leases.expired(10_000.0) == []
    assert leases.deadline("s") is None
    assert leases.timeout("s") == DEFAULT_ORPHAN_TIMEOUT_SECONDS


def test_several_sessions_expire_independently() -> None:
    leases = Leases()
    leases.open("a", 0.0, 1.0)
    leases.open("b", 0.0, 5.0)
    leases.open("c", 0.0, 1.0)
    leases.connect("c", 0.5)
    assert leases.expired(2.0) == ["a"]
    assert sorted(leases.expired(6.0)) == ["a", "b"]
    assert leases.check_interval() == 0.25


def test_check_interval_is_bounded() -> None:
    leases = Leases()
    assert leases.check_interval() == 5.0
    leases.open("a", 0.0, 0.01)
    assert leases.check_interval() == 0.05
    leases.forget("a")
    leases.open("b", 0.0, 10_000.0)
    assert leases.check_interval() == 5.0


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_open_refuses_a_timeout_that_is_not_positive(bad: float) -> None:
    with pytest.raises(ValueError):
        Leases().open("s", 0.0, bad)


def test_check_keep_alive() -> None:
    assert check_keep_alive(None) is None
    assert check_keep_alive(5) == 5.0
    assert check_keep_alive(0) == 0.0
    assert check_keep_alive(MAX_KEEP_ALIVE_SECONDS) == MAX_KEEP_ALIVE_SECONDS
    for bad in (-1, True, "5", MAX_KEEP_ALIVE_SECONDS + 1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="keep_alive_seconds"):
            check_keep_alive(bad)
