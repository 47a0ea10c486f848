"""The store commands of the CLI, run as a user would (typer's runner, real files)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from server.cli.main import app, load_base
from tests.factory import make_peft_dir

runner = CliRunner()
DEMO = load_base(None, "demo-base")


def test_package_validate_list(tmp_path: Path) -> None:
    peft = make_peft_dir(tmp_path / "peft", spec=DEMO, r=8)
    report = tmp_path / "eval.json"
    report.write_text(
        json.dumps({"dataset": "heldout", "metric": "exact_match", "score": 0.8, "n": 50})
    )
    store = tmp_path / "store"

    result = runner.invoke(
        app,
        [
            "adapters",
            "package",
            str(peft),
            "--store",
            str(store),
            "--name",
            "sentiment",
            "--version",
            "v1",
            "--template",
            "Review: {input}\nSentiment:",
            "--eval",
            str(report),
            "--dataset-id",
            "synthetic-reviews",
            "--origin",
            "scripts/demo_data.py",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((store / "sentiment" / "v1" / "manifest.json").read_text())
    assert manifest["eval"]["score"] == 0.8
    assert manifest["lineage"]["origin"] == "scripts/demo_data.py"

    result = runner.invoke(app, ["adapters", "validate", str(store / "sentiment" / "v1")])
    assert result.exit_code == 0, result.output
    assert "checksum" in result.output and "valid (rank 8" in result.output

    result = runner.invoke(app, ["adapters", "list", "--store", str(store), "-o", "json"])
    assert json.loads(result.output)["adapters"][0]["versions"] == ["v1"]


def test_validate_names_the_broken_rule_and_exits_1(tmp_path: Path) -> None:
    peft = make_peft_dir(tmp_path / "peft", spec=DEMO, r=8)
    store = tmp_path / "store"
    assert (
        runner.invoke(
            app,
            [
                "adapters",
                "package",
                str(peft),
                "--store",
                str(store),
                "--name",
                "qa",
                "--version",
                "v1",
            ],
        ).exit_code
        == 0
    )
    weights = store / "qa" / "v1" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\x80\x04.")

    result = runner.invoke(app, ["adapters", "validate", str(store / "qa" / "v1")])

    assert result.exit_code == 1
    assert "adapter_model.safetensors: [checksum]" in result.output


def test_package_refuses_rank_over_the_limit_and_writes_nothing(tmp_path: Path) -> None:
    peft = make_peft_dir(tmp_path / "peft", spec=DEMO, r=16)
    store = tmp_path / "store"
    result = runner.invoke(
        app,
        [
            "adapters",
            "package",
            str(peft),
            "--store",
            str(store),
            "--name",
            "qa",
            "--version",
            "v1",
            "--max-rank",
            "8",
        ],
    )
    assert result.exit_code == 1
    assert "[rank] r=16 exceeds max_lora_rank=8" in result.output
    assert list(store.iterdir()) == []
