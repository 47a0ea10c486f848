"""`loragate loadtest` commands: listing, flag and --set errors, and a run on a fake target
that answers nothing (exit 1, the report still written)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from server.cli.main import app

runner = CliRunner()


def test_the_shipped_scenarios_are_listed() -> None:
    result = runner.invoke(app, ["loadtest", "scenarios"])
    assert result.exit_code == 0, result.output
    for name in ("overhead", "swap-storm", "rollback-under-load", "affinity", "real-engine"):
        assert name in result.output


def test_a_bad_override_exits_2_naming_it() -> None:
    result = runner.invoke(app, ["loadtest", "run", "overhead", "--set", "arrivals.rate=-1"])
    assert result.exit_code == 2
    assert "arrivals.rate" in result.output


def test_no_target_and_no_simulation_is_an_error() -> None:
    result = runner.invoke(app, ["loadtest", "run", "--adapters", "a", "--duration", "1"])
    assert result.exit_code == 2
    assert "no target" in result.output


def test_a_bad_target_flag_exits_2() -> None:
    result = runner.invoke(app, ["loadtest", "run", "--target", "localhost:8000"])
    assert result.exit_code == 2 and "expected" in result.output


def test_a_target_that_never_answers_exits_1_with_a_report(tmp_path: Path) -> None:
    args = ["loadtest", "run", "-t", "dead=http://127.0.0.1:9", "--adapters", "a,b"]
    args += ["--rate", "20", "--duration", "0.5", "--no-figures", "--out", str(tmp_path)]
    args += ["--model-format", "dead={adapter}@v1", "--note", "cli test"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"]["targets"]["dead"]["outcomes"].keys() == {"no-answer"}
    assert {row[data["records"]["columns"].index("model")] for row in data["records"]["rows"]} <= {
        "a@v1",
        "b@v1",
    }
    assert "cli test" in (tmp_path / "report.md").read_text()
