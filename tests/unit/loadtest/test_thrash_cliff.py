"""The cliff experiment's pure parts: one point's scenario, the ratio curve, the figure."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from loadtest.thrash_cliff import plot, point, ratios, sim_spec


def args(**overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "ratios": [0.5, 1.0, 2.0],
        "slots": 4,
        "batch": 8,
        "clients": 16,
        "duration": 12.0,
        "warmup": 3.0,
        "rounds": 3,
        "ttft_ms": 50.0,
        "token_ms": 20.0,
        "output_tokens": 16,
        "seed": 0,
    }
    return argparse.Namespace(**{**values, **overrides})


def test_a_point_is_a_closed_loop_uniform_over_the_hot_set() -> None:
    scenario = point(args(), 2.0)
    assert scenario.workload.popularity.kind == "uniform"
    assert scenario.workload.popularity.hot_set == 8
    assert (scenario.arrivals.kind, scenario.arrivals.clients) == ("concurrency", 16)
    assert (scenario.rounds, scenario.bounds.warmup_s) == (3, 3.0)
    spec = sim_spec(args(), 200.0, 0.0)
    assert (spec.adapters, spec.slots, spec.max_loras, spec.max_num_seqs) == (8, 4, 4, 8)
    assert spec.compare_direct and spec.processes


def synthetic() -> dict[str, Any]:
    def at(rps: float) -> dict[str, Any]:
        return {"goodput_rps": rps, "goodput_rps_by_round": [rps - 1, rps + 1]}

    points = [
        {"hot_set_over_slots": 0.5, "targets": {"a": at(20.0), "b": at(10.0)}},
        {"hot_set_over_slots": 1.0, "targets": {"a": at(20.0), "b": at(10.0)}},
        {"hot_set_over_slots": 2.0, "targets": {"a": at(15.0), "b": at(2.0)}},
    ]
    return {"points": points, "setup": vars(args())}


def test_ratios_are_relative_to_the_hot_set_that_fits() -> None:
    result = synthetic()
    assert ratios(result["points"]) == {"a": [1.0, 1.0, 0.75], "b": [1.0, 1.0, 0.2]}


def test_the_figure_is_drawn(tmp_path: Path) -> None:
    result = synthetic()
    result["ratio"] = ratios(result["points"])
    plot(result, tmp_path / "cliff.png")
    assert (tmp_path / "cliff.png").stat().st_size > 10_000


def test_a_point_without_throughput_has_ratio_0() -> None:
    result = synthetic()
    result["points"][1]["targets"]["b"]["goodput_rps"] = 0.0
    assert ratios(result["points"])["b"] == pytest.approx([0.0, 0.0, 0.0])
