"""Popularity, arrivals and the workload: deterministic, and shaped as asked."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from loadtest.tool.arrivals import rate_at, send_times
from loadtest.tool.popularity import (
    CyclePicker,
    TraceError,
    TracePicker,
    WeightedPicker,
    picker_for,
    read_trace,
    zipf_weights,
)
from loadtest.tool.scenario import Arrivals, Lengths, Popularity, Scenario
from loadtest.tool.scenario_files import build
from loadtest.tool.workload import Workload, sample_length

ADAPTERS = [f"a{i}" for i in range(6)]


def test_zipf_weights_fall_as_a_power_of_the_rank() -> None:
    weights = zipf_weights(4, 1.0)
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(2.0)
    assert weights[0] / weights[3] == pytest.approx(4.0)


def test_weighted_draws_follow_the_weights_and_the_hot_set() -> None:
    picker = picker_for(Popularity(kind="uniform", hot_set=3), ADAPTERS)
    assert isinstance(picker, WeightedPicker)
    rng = random.Random(1)
    counts = Counter(picker.pick(rng).adapter for _ in range(3000))
    assert set(counts) == {"a0", "a1", "a2"}
    assert min(counts.values()) > 900
    zipf = picker_for(Popularity(kind="zipf", alpha=2.0), ADAPTERS)
    ranks = Counter(zipf.pick(rng).rank for _ in range(3000))
    assert ranks[1] > 2 * ranks[2] > 0


def test_a_cycle_marks_the_first_request_of_each_burst_cold_after_the_first_lap() -> None:
    picker = CyclePicker(["a", "b", "c"], burst=2)
    picks = [picker.pick(random.Random(0)) for _ in range(12)]
    assert [p.adapter for p in picks] == list("aabbccaabbcc")
    assert [p.cold for p in picks[:6]] == [None] * 6  # the first lap: residency unknown
    assert [p.cold for p in picks[6:]] == [True, False] * 3


def test_traces_read_csv_with_a_header_and_json_lines(tmp_path: Path) -> None:
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("timestamp_s,model\n10.5,b\n10.0,a\n11,a\n")
    events = read_trace(csv_file)
    assert [(e.at_s, e.model) for e in events] == [(0.0, "a"), (0.5, "b"), (1.0, "a")]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"timestamp_s": 3, "model": "x"}\n{"timestamp_s": 4, "model": "y"}\n')
    picker = TracePicker(read_trace(jsonl))
    assert [picker.pick(random.Random(0)).adapter for _ in range(3)] == ["x", "y", "x"]


def test_a_broken_trace_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("0,a\nnot-a-time,b\n")
    with pytest.raises(TraceError, match=r"t\.csv:2"):
        read_trace(bad)


@pytest.mark.parametrize(
    ("lengths", "low", "high"),
    [
        (Lengths(value=7), 7, 7),
        (Lengths(kind="uniform", min=3, max=5), 3, 5),
        (Lengths(kind="lognormal", median=20, sigma=1.0, min=2, max=40), 2, 40),
    ],
)
def test_lengths_stay_in_their_range(lengths: Lengths, low: int, high: int) -> None:
    rng = random.Random(0)
    values = [sample_length(lengths, rng) for _ in range(500)]
    assert low <= min(values) and max(values) <= high


def test_poisson_and_constant_rates_and_a_ramp() -> None:
    poisson = list(send_times(Arrivals(kind="poisson", rate=100), random.Random(0), 20.0))
    assert 1800 < len(poisson) < 2200
    constant = list(send_times(Arrivals(kind="constant", rate=10), random.Random(0), 1.0))
    assert constant == pytest.approx([i / 10 for i in range(10)])
    ramp = Arrivals(kind="constant", rate=10, ramp_to=30)
    assert rate_at(ramp, 5.0, 10.0) == pytest.approx(20.0)
    times = list(send_times(ramp, random.Random(0), 10.0))
    first, second = sum(t < 5 for t in times), sum(t >= 5 for t in times)
    assert second > first * 1.3


def test_closed_loop_and_unbounded_ramps_have_no_schedule() -> None:
    with pytest.raises(ValueError, match="closed-loop"):
        next(send_times(Arrivals(kind="concurrency", clients=2), random.Random(0), 1.0))
    with pytest.raises(ValueError, match="duration"):
        next(send_times(Arrivals(rate=1, ramp_to=2), random.Random(0), None))


def scenario(**workload: object) -> Scenario:
    return build(
        {
            "workload": {"adapters": ADAPTERS, **workload},
            "arrivals": {"kind": "poisson", "rate": 200},
            "bounds": {"duration_s": 2, "requests": 300},
        }
    )


def test_a_round_is_the_same_for_every_target_and_differs_between_rounds() -> None:
    s = scenario(base_share=0.2, stream=0.5, api_keys=["k1", "k2"])
    first = list(Workload(s, ADAPTERS, seed=0).requests())
    again = list(Workload(s, ADAPTERS, seed=0).requests())
    other = list(Workload(s, ADAPTERS, seed=1).requests())
    assert first == again and first != other
    assert len(first) == 300  # the count bound comes before the 2 s of arrivals
    base = [r for r in first if r.adapter is None]
    assert 30 < len(base) < 90 and all(r.rank == 0 for r in base)
    assert {r.api_key for r in first} == {"k1", "k2"}
    assert 90 < sum(r.stream for r in first) < 210


def test_changing_lengths_keeps_adapters_and_times() -> None:
    short = list(Workload(scenario(output_tokens=4), ADAPTERS, seed=3).requests())
    long = list(Workload(scenario(output_tokens=64), ADAPTERS, seed=3).requests())
    assert [(r.adapter, r.at_s) for r in short] == [(r.adapter, r.at_s) for r in long]
    assert {r.max_tokens for r in long} == {64}


def test_closed_loop_requests_have_no_send_time() -> None:
    s = build(
        {
            "workload": {"adapters": ADAPTERS},
            "arrivals": {"kind": "concurrency", "clients": 3},
            "bounds": {"requests": 5},
        }
    )
    requests = list(Workload(s, ADAPTERS, seed=0).requests())
    assert len(requests) == 5 and all(r.at_s is None for r in requests)


def test_no_adapters_and_a_too_large_hot_set_are_errors() -> None:
    with pytest.raises(ValueError, match="no adapters"):
        picker_for(Popularity(), [])
    with pytest.raises(ValueError, match="hot_set"):
        picker_for(Popularity(hot_set=9), ADAPTERS)
