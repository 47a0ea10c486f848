"""`loragate eval` through a live gateway: predictions scored, report written beside the version."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from loadtest.simengine import SimEngineServer
from server.cli.main import app
from server.store.store import AdapterStore
from tests.servers import GatewayServer


def test_eval_records_a_report_with_a_baseline(
    gateway: Callable[..., tuple[GatewayServer, list[SimEngineServer]]],
    tiny_store: AdapterStore,
    tmp_path: Path,
) -> None:
    gw, _ = gateway()
    data = tmp_path / "sentiment" / "heldout.jsonl"
    data.parent.mkdir()
    data.write_text(
        "".join(json.dumps({"input": f"review {i}", "target": "positive"}) + "\n" for i in range(6))
    )

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--url",
            gw.url,
            "--model",
            "alpha@v1",
            "--dataset",
            str(data),
            "--store",
            str(tiny_store.root),
            "--base-model",
            "tiny-base",
        ],
    )

    assert result.exit_code == 0, result.output
    written = json.loads(
        (tiny_store.root / "alpha" / "v1" / "evals" / "sentiment-heldout.json").read_text()
    )
    assert written["metric"] == "exact_match" and written["n"] == 6
    assert written["model"] == "alpha@v1" and written["baseline_score"] is not None
    # The simulated engine answers "[alpha@v1] …": never a label, so all schema errors.
    assert written["schema_errors"] == 6 and written["score"] == 0.0
    assert tiny_store.version("alpha", "v1").evals()["sentiment-heldout"].n == 6
    assert tiny_store.audit()[-1].action == "eval"
