"""Scenario validation, shipped scenario files and `--set` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from loadtest.tool import scenario_files
from loadtest.tool.scenario import Arrivals, Bounds, Lengths, Scenario, Step, Workload
from loadtest.tool.scenario_files import ScenarioError


def test_every_shipped_scenario_validates() -> None:
    shipped = scenario_files.shipped()
    assert set(shipped) == {
        "overhead",
        "swap-storm",
        "rollback-under-load",
        "hot-register-under-load",
        "affinity",
        "real-engine",
    }
    for name in shipped:
        assert scenario_files.load(name).name == name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"arrivals": {"kind": "poisson"}}, "needs `rate`"),
        ({"arrivals": {"kind": "concurrency"}}, "needs `clients`"),
        ({"arrivals": {"kind": "concurrency", "clients": 2, "ramp_to": 5}}, "ramp_to"),
        ({"bounds": {"duration_s": None}}, "duration_s` or `requests"),
        ({"bounds": {"duration_s": 5, "warmup_s": 5}}, "warmup_s"),
        ({"workload": {"popularity": {"kind": "trace"}}}, "trace"),
        ({"arrivals": {"kind": "trace"}}, "popularity kind trace"),
        ({"workload": {"stream": 1.5}}, "less than or equal to 1"),
        ({"workload": {"popularity": {"kind": "zipf", "alhpa": 1}}}, "Extra inputs"),
        ({"sim": {"gateways": 0}}, "compare_direct"),
        ({"sim": {"slots": 2, "max_loras": 3}}, "max_loras"),
        ({"actions": [{"at_s": 1, "adapter": "a", "steps": [{"kind": "promote"}]}]}, "version"),
        (
            {
                "rounds": 2,
                "actions": [{"at_s": 1, "adapter": "a", "steps": [{"kind": "rollback"}]}],
            },
            "one round",
        ),
        (
            {
                "bounds": {"duration_s": 5},
                "actions": [{"at_s": 9, "adapter": "a", "steps": [{"kind": "rollback"}]}],
            },
            "after bounds.duration_s",
        ),
        (
            {"targets": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]},
            "unique",
        ),
    ],
)
def test_incoherent_scenarios_are_refused_naming_the_problem(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario_files.build(data)


def test_shorthands_bare_lengths_stream_bool_and_one_url() -> None:
    scenario = scenario_files.build(
        {
            "workload": {"output_tokens": 7, "stream": True},
            "targets": [{"name": "gw", "url": "http://127.0.0.1:1"}],
        }
    )
    assert scenario.workload.output_tokens == Lengths(kind="fixed", value=7)
    assert scenario.workload.stream == 1.0
    assert scenario.targets[0].urls == ["http://127.0.0.1:1"]


def test_sets_reach_nested_keys_and_list_items_with_yaml_values() -> None:
    data = scenario_files.read(scenario_files.resolve("rollback-under-load"))
    scenario = scenario_files.build(
        data,
        [
            "bounds.duration_s=4",
            "actions.0.at_s=1.5",
            "workload.adapters=[bench]",
            "sim.processes=false",
        ],
    )
    assert scenario.bounds.duration_s == 4
    assert scenario.actions[0].at_s == 1.5
    assert scenario.workload.adapters == ["bench"]
    assert scenario.sim is not None and scenario.sim.processes is False


@pytest.mark.parametrize("item", ["novalue", "=3", "bounds.duration_s.x=1", "actions.7.at_s=1"])
def test_bad_sets_are_refused(item: str) -> None:
    data = scenario_files.read(scenario_files.resolve("rollback-under-load"))
    with pytest.raises(ScenarioError):
        scenario_files.build(data, [item])


def test_unknown_scenario_names_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="swap-storm"):
        scenario_files.resolve("no-such-scenario")


def test_a_trace_path_is_relative_to_the_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text("timestamp_s,model\n0,a\n")
    (tmp_path / "s.yaml").write_text(
        "workload: {popularity: {kind: trace, trace: trace.csv}}\narrivals: {kind: trace}\n"
    )
    scenario = scenario_files.load(str(tmp_path / "s.yaml"))
    assert scenario.workload.popularity.trace == tmp_path / "trace.csv"
    assert scenario.name == "s"


def test_models_are_frozen_values() -> None:
    scenario = Scenario(
        workload=Workload(adapters=["a"]), arrivals=Arrivals(rate=1), bounds=Bounds()
    )
    with pytest.raises(ValidationError):
        scenario.rounds = 3
    assert Step(kind="rollback").version is None
