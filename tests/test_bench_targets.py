"""The benchmarks' pure bookkeeping (no Ray, no network): audio drops counted
per chunk index, which turns count towards throughput, the targets of issue
12 and how the suite lays them out, and their spread over repeated runs."""

from __future__ import annotations

import math

import pytest

from bench import common, targets
from bench.bench_audio import Level, _paths
from bench.bench_throughput import Run, _ratios, _tables, turn_problem
from bench.harness import TurnResult
from bench.suite import (
    Measurement,
    Phase,
    SuiteRun,
    _load,
    render_report,
    selected,
    summary_tables,
)

# ------------------------------------------------------------ audio drops


def test_tally_of_a_complete_session_is_clean() -> None:
    tally = common.tally_chunks([0, 1, 2, 3], 4)
    assert tally == common.ChunkTally(4, 4, 0, 0, 0, 0)
    assert tally.clean
    assert common.tally_chunks([3, 1, 0, 2], 4).clean  # order is not a drop


def test_missing_in_one_session_does_not_hide_behind_an_extra_in_another() -> None:
    a = common.tally_chunks([0, 1, 3], 4)  # index 2 never arrived
    b = common.tally_chunks([0, 1, 2, 2, 3], 4)  # index 2 twice
    total = a + b
    # totals alone would say nothing was dropped: 8 expected, 8 received
    assert (total.expected, total.received) == (8, 8)
    assert total.missing == 1
    assert total.duplicates == 1
    assert not total.clean


def test_tally_counts_unexpected_and_unstamped_chunks() -> None:
    tally = common.tally_chunks([0, None, 1, 7, -1, 1, 1], 3)
    assert tally.received == 7
    assert tally.missing == 1  # index 2
    assert tally.duplicates == 2  # index 1 three times
    assert tally.unexpected == 2  # 7 and -1
    assert tally.unstamped == 1
    assert common.tally_chunks([], 0).clean
    assert common.tally_chunks([], 2).missing == 2
    with pytest.raises(ValueError):
        common.tally_chunks([], -1)


def test_an_audio_level_with_a_duplicate_or_a_late_input_does_not_pass() -> None:
    def level(chunks: common.ChunkTally, late: float = 5.0) -> Level:
        lv = Level("actor", 2, chunks=chunks)
        lv.hops = [10.0, 12.0]
        lv.lateness = [0.0, late]
        return lv

    clean = common.tally_chunks([0, 1], 2) + common.tally_chunks([1, 0], 2)
    assert level(clean).passed
    swapped = common.tally_chunks([0], 2) + common.tally_chunks([0, 1, 1], 2)
    assert swapped.received == swapped.expected
    assert level(swapped).dropped == 1
    assert not level(swapped).passed
    assert not level(clean, late=500.0).passed  # the input fell behind real time


def test_audio_packs_at_the_service_default_or_says_it_states_one() -> None:
    packed_default = _paths(packing=25, default=25, quick=True)
    assert [(p[0], p[2]) for p in packed_default] == [
        ("in-process", None),
        ("actor, 25 per actor (default)", None),  # no size asked: the default
    ]
    stated = _paths(packing=50, default=1, quick=False)
    assert stated[1][:3] == ("actor, 50 per actor (stated)", "actor", 50)
    assert stated[2][3] == {"data_plane": False} and stated[2][4] == 100


# ------------------------------------------------------------- throughput


def _turn(**fields: object) -> TurnResult:
    turn = TurnResult(ok=True, events=20, audio_chunks=10, latency_ms=4.0)
    for k, v in fields.items():
        setattr(turn, k, v)
    return turn


def test_turn_problem_names_what_makes_a_turn_not_count() -> None:
    assert turn_problem(_turn(), tool=False) == ""
    assert turn_problem(_turn(ok=False, error="x"), tool=False) == "failed"
    assert turn_problem(_turn(missed=3), tool=False) == "events lost"
    assert turn_problem(_turn(audio_chunks=9), tool=False) == "not 10 audio chunks"
    assert turn_problem(_turn(), tool=True) == "no tool_end"
    assert turn_problem(_turn(tool_gap_ms=1.0, audio_chunks=3), tool=True) == ""


def test_events_of_failed_turns_are_not_counted_in_events_per_second() -> None:
    run = Run("20 x actor", "actor", "default", 20, window_s=2.0)
    assert run.add(_turn(), tool=False)
    assert not run.add(_turn(ok=False, events=7), tool=False)
    assert not run.add(_turn(missed=1, events=5), tool=False)
    assert (run.turns, run.events, run.turn_ms) == (1, 20, [4.0])
    assert (run.bad_turns, run.bad_events) == (2, 12)
    assert run.problems == {"failed": 1, "events lost": 1}
    assert run.events_per_s == 10.0
    assert run.turns_per_s == 0.5


def test_target_2_is_judged_on_the_default_path_at_20_sessions() -> None:
    def run(label: str, mode: str, kind: str, events: int, turns: int, p99: float) -> Run:
        r = Run(f"20 x {label}", mode, kind, 20, window_s=2.0)
        r.events, r.turns = events, turns
        r.turn_ms = [1.0] * 99 + [p99]
        return r

    runs = [
        run("in-process", "in_process", "in_process", 1000, 100, 10.0),
        run("actor, dedicated", "actor", "dedicated", 2000, 200, 10.0),
        run("actor, default, 20 per actor", "actor", "default", 500, 40, 30.0),
    ]
    result = common.BenchResult("throughput", "t")
    found = _ratios(result, runs)
    assert found["events"] == pytest.approx(0.5)
    assert found["turns"] == pytest.approx(0.4)
    p99 = common.percentile(runs[2].turn_ms, 99) / common.percentile(runs[0].turn_ms, 99)
    assert found["p99"] == pytest.approx(p99)
    assert p99 > 1.0
    assert [row[0] for row in result.headline][:2] == [
        "events/s, 20 sessions (dedicated)",
        "CPU s / 1k events, 20 sessions (dedicated)",
    ]
    assert "turn p99, 20 sessions (default, 20 per actor) (ms)" in [r[0] for r in result.headline]
    runs[1].bad_turns, runs[1].bad_events, runs[1].problems = 2, 30, {"failed": 2}
    _tables(result, runs)
    table = next(t for t in result.tables if t.title.startswith("Throughput"))
    assert any("2 turns left out (failed: 2); their 30 events" in n for n in table.notes)


# ---------------------------------------------------------------- targets


def test_every_target_of_the_issue_is_listed_once() -> None:
    keys = [s.key for s in targets.SPECS]
    assert len(keys) == len(set(keys))
    assert {s.number for s in targets.SPECS} == {"1", "2", "3", "4", "5"}
    assert targets.spec("(2a)").limit == 1.0
    with pytest.raises(KeyError):
        targets.spec("9z")


def test_evaluate_judges_each_way_and_at_the_limit() -> None:
    assert targets.evaluate("2a", 1.0).passed is True  # >= 1.0x
    assert targets.evaluate("2a", 0.99).passed is False
    assert targets.evaluate("2c", 2.0).passed is True  # <= 2x
    assert targets.evaluate("2c", 2.01).passed is False
    assert targets.evaluate("3", 200).passed is True
    assert targets.evaluate("3", 150).passed is False
    t = targets.evaluate("4a", 8.456, note="to the first event")
    assert (t.key, t.figure, t.status, t.value, t.unit) == (
        "(4a)",
        "8.46 ms (to the first event)",
        "PASS",
        8.456,
        "ms",
    )
    assert targets.evaluate("5a", -0.5).figure == "-0.50 ms"
    assert targets.evaluate("5a", 2.5).figure == "+2.50 ms"
    assert targets.evaluate("3", 250).figure == "K = 250"
    nan = targets.evaluate("2b", math.nan)
    assert (nan.status, nan.figure) == ("n/a", "-")
    quick = targets.evaluate("4c", 0.5, judged=False, note="quick")
    assert (quick.status, quick.figure) == ("n/a", "0.50 MiB (quick)")


def test_arrange_lists_every_target_with_why_one_is_missing() -> None:
    reported = [targets.evaluate("2a", 0.5), targets.evaluate("5b", 3.0)]
    rows = targets.arrange(reported, {"long": "not measured: bench/bench_long.py missing"})
    assert [t.key for t in rows] == [f"({s.key})" for s in targets.SPECS]
    by_key = {t.key: t for t in rows}
    assert by_key["(1a)"].figure == "not measured: bench/bench_long.py missing"
    assert by_key["(1a)"].status == "n/a"
    assert by_key["(2a)"].status == "MISS"
    assert by_key["(4a)"].figure == "not measured"
    assert by_key["(5b)"].status == "PASS"


def test_arrange_places_targets_reported_under_other_keys_by_their_number() -> None:
    own = common.Target("(1)", "long calls, all in one", "1.1x", True, 1.1, "x")
    other = common.Target("(7)", "something else", "3", False)
    first = targets.evaluate("2a", 1.5)
    again = targets.evaluate("2a", 0.1)  # a second report of a key: the first wins
    rows = targets.arrange([other, own, first, again])
    keys = [t.key for t in rows]
    assert keys[0] == "(1)"  # instead of the placeholders of 1a-1c
    assert "(1a)" not in keys
    assert keys[-1] == "(7)"
    assert next(t for t in rows if t.key == "(2a)").passed is True
    table = targets.targets_table([own]).render()
    assert "| (1) long calls, all in one" in table
    assert "(5b)" in table
    assert "bench.profile" not in table  # nothing missed


def test_targets_table_points_each_miss_at_its_profile() -> None:
    table = targets.targets_table(
        [targets.evaluate("2a", 0.5), targets.evaluate("2c", 3.0), targets.evaluate("4a", 9.0)]
    )
    assert "(2a), (2c): `python -m bench.profile throughput`" in table.render()
    assert not any("bench.profile start" in note for note in table.notes)  # 4a passed


def test_spread_over_runs() -> None:
    runs = [
        targets.evaluate("4a", 12.0),
        targets.evaluate("4a", 9.0),
        None,
        targets.evaluate("4a", math.nan),
        targets.evaluate("4a", 8.0),
    ]
    s = targets.spread(runs)
    assert (s.runs, s.measured, s.passed) == (5, 3, 2)
    assert (s.min, s.median, s.max) == (8.0, 9.0, 12.0)
    empty = targets.spread([None])
    assert empty.measured == 0 and math.isnan(empty.median)


def test_spread_table_shows_each_target_over_the_runs() -> None:
    runs = [
        [targets.evaluate("2a", 0.8), targets.evaluate("4a", 11.0)],
        [targets.evaluate("2a", 1.1), targets.evaluate("4a", 9.5)],
        [targets.evaluate("2a", 1.0)],
    ]
    table = targets.spread_table(runs)
    row = next(r for r in table.rows if r[0].startswith("(2a)"))
    assert row[1:5] == ["0.80x", "1.00x", "1.10x", "2 of 3"]
    assert row[5] == "0.80x; 1.10x; 1.00x"
    row = next(r for r in table.rows if r[0].startswith("(4a)"))
    assert row[1:5] == ["9.50 ms", "10.25 ms", "11.00 ms", "1 of 3"]
    assert row[5].endswith("; not measured")


# ------------------------------------------------------------------ suite


def test_quick_run_leaves_out_the_dense_phase_and_runs_it_last_otherwise() -> None:
    quick = selected(None, quick=True)
    full = selected(None, quick=False)
    assert "dense" not in quick
    assert full[-1] == "dense"
    assert "long" in quick
    assert selected(["dense", "turn"], quick=True) == ["turn", "dense"]


def test_a_missing_measurement_module_is_skipped_not_an_error() -> None:
    assert _load(Measurement("x", "bench.bench_not_written_yet", "run", (1, 1))) is None
    assert callable(_load(Measurement("turn", "bench.bench_turn", "run", (1, 1))))


def test_report_shows_targets_spread_and_phases() -> None:
    def result(value: float) -> common.BenchResult:
        r = common.BenchResult("start", "4. Session start")
        r.headline.append(["session start p50, warm pool (ms)", "1.00", f"{value}", ""])
        r.targets.append(targets.evaluate("4a", value))
        return r

    suite = SuiteRun(
        results=[[result(12.0)], [result(9.0)]],
        missing=[{"long": "not measured: bench/bench_long.py missing"}] * 2,
        phases=[Phase(1, "long", "skipped: bench/bench_long.py is not in this tree")],
        startup_s=2.0,
        service_config={"sessions_per_actor": 1},
    )
    titles = [t.title for t in summary_tables(suite)]
    assert titles == [
        "Combined results (run 1 of 2)",
        "Targets (issue 12) (run 1 of 2)",
        "Combined results (run 2 of 2)",
        "Targets (issue 12) (run 2 of 2)",
        "Targets over 2 runs (spread)",
        "Phases",
    ]
    text = render_report(suite, info={"cores": "2"}, command="bench", total_s=3.0)
    assert "| (4a) warm start p50 <= 10 ms" in text
    assert "MISS" in text and "PASS" in text
    assert "1 of 2" in text
    assert "not measured: bench/bench_long.py missing" in text
    assert "sessions_per_actor: 1" in text
