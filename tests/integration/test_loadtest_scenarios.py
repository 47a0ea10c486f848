"""Smoke runs of every shipped scenario at small scale: simulated engines and gateways on
loopback (threads, except one run in processes), a few seconds each. No timing assertions:
what is checked is that traffic flowed, that the measurements exist, and the invariants that
hold at any speed (a rollback or a promotion fails no request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtest.tool import scenario_files
from loadtest.tool.session import Outcome, run_scenario

SMALL = ["sim.processes=false", "bounds.drain_s=10"]


def smoke(name: str, tmp_path: Path, *sets: str) -> Outcome:
    """The figures are left out: rendering them from synthetic runs is a unit test."""
    scenario = scenario_files.load(name, [*SMALL, *sets])
    return run_scenario(scenario, tmp_path / name, figures=False, note="smoke test")


def targets(outcome: Outcome) -> dict[str, Any]:
    blocks: dict[str, Any] = outcome.summary["targets"]
    for name, block in blocks.items():
        assert block["ok"] > 0, (name, block["outcomes"])
        assert "no-answer" not in block["outcomes"], (name, block["outcomes"])
    assert outcome.report_path.is_file() and outcome.results_path.is_file()
    return blocks


def test_overhead(tmp_path: Path) -> None:
    outcome = smoke(
        "overhead",
        tmp_path,
        "bounds.duration_s=1.2",
        "bounds.warmup_s=0.2",
        "arrivals.rate=30",
        "rounds=2",
    )
    blocks = targets(outcome)
    assert set(blocks) == {"loragate", "direct"}
    assert blocks["loragate"]["gateway_overhead"]["p50_ms"] is not None
    assert blocks["direct"]["gateway_overhead"] is None
    assert len(blocks["loragate"]["goodput_rps_by_round"]) == 2


def test_swap_storm(tmp_path: Path) -> None:
    blocks = targets(smoke("swap-storm", tmp_path, "bounds.duration_s=2.5", "sim.load_ms=5"))
    for name in ("loragate", "direct"):
        assert blocks[name]["swap_overhead"] is not None, name
    assert blocks["loragate"]["loragate"]["evictions"] > 0
    assert blocks["direct"]["sim_engine"]["cpu_cache_reloads"] > 0


@pytest.mark.parametrize(
    ("name", "expect", "steps"),
    [
        ("rollback-under-load", "bench@v1", [200]),
        ("hot-register-under-load", "bench@v2", [201, 200]),
    ],
)
def test_switch_under_load(tmp_path: Path, name: str, expect: str, steps: list[int]) -> None:
    sets = ["bounds.duration_s=3", "bounds.warmup_s=0", "arrivals.rate=40", "actions.0.at_s=1"]
    blocks = targets(smoke(name, tmp_path, *sets, "sim.load_ms=20"))
    (switch,) = blocks["loragate"]["switches"]
    assert switch["expect"] == expect
    assert [s["status"] for s in switch["steps"]] == steps
    assert switch["failed_during_switch"] == 0
    assert switch["time_to_100pct_ms"] is not None
    assert expect in blocks["loragate"]["versions"]


def test_affinity(tmp_path: Path) -> None:
    outcome = smoke("affinity", tmp_path, "bounds.duration_s=2", "bounds.warmup_s=0.5")
    (target,) = outcome.run.targets
    assert len(target.urls) == 2 and target.kind == "loragate"
    spread = targets(outcome)["loragate"]["engines"]
    assert spread is not None and sum(spread["requests_per_engine"].values()) > 0


@pytest.mark.slow
def test_a_deployment_in_processes(tmp_path: Path) -> None:
    """The default: every server in its own process (the figures run this way)."""
    outcome = smoke(
        "overhead", tmp_path, "sim.processes=true", "bounds.duration_s=1", "bounds.warmup_s=0"
    )
    assert set(targets(outcome)) == {"loragate", "direct"}
