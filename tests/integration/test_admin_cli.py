"""`loragate adapters …` release commands against a live gateway (typer's CliRunner)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner, Result

from loadtest.simengine import SimEngineServer
from server.cli.main import app
from server.store.layout import ValidationLimits
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version
from tests.integration.conftest import ADMIN_TOKEN
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]
runner = CliRunner()


def cli(
    gw: GatewayServer, *args: str, token: str | None = ADMIN_TOKEN, columns: int = 200
) -> Result:
    env = {"LORAGATE_ADMIN_TOKEN": token, "LORAGATE_URL": gw.url, "COLUMNS": str(columns)}
    return runner.invoke(app, ["adapters", *args], env=env)


def test_release_commands_drive_the_admin_api(admin_gateway: Start, tmp_path: Path) -> None:
    gw, _ = admin_gateway()
    scratch = AdapterStore(tmp_path / "scratch", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    packaged = add_version(scratch, tmp_path, "alpha", "v3", seed=3).path

    steps: list[tuple[tuple[str, ...], int, str]] = [
        (("status",), 0, "alpha"),
        (
            ("register", str(packaged), "--name", "alpha", "--version", "v3"),
            0,
            "registered alpha@v3",
        ),
        (("promote", "alpha", "v3"), 1, "refused (409)"),  # no eval: the gate says no
        (("promote", "alpha", "v3", "--force"), 0, "forced past the eval gate"),
        (("rollback", "alpha"), 0, "alpha: stable v2, previous -"),
        (("canary", "alpha", "v3", "0.2"), 0, "canary v3 20%"),
        (("canary", "alpha", "v3", "0"), 0, "no canary"),
        (("pin", "alpha", "v3"), 0, "alpha: stable v2"),
        (("retire", "alpha", "v3"), 1, "is pinned"),
        (("unpin", "alpha", "v3"), 0, "alpha: stable v2"),
        (("retire", "alpha", "v3"), 0, "retired alpha@v3 → .retired-v3-"),
        (("audit", "--limit", "3"), 0, "retire"),
    ]
    for args, code, fragment in steps:
        result = cli(gw, *args)
        assert result.exit_code == code, (args, result.output)
        assert fragment in result.output, (args, result.output)

    status = cli(gw, "status")
    assert "engine-0: up" in status.output and "v3" not in status.output


def test_tables_fit_80_columns_one_line_per_row_and_json_is_for_scripts(
    admin_gateway: Start,
) -> None:
    gw, _ = admin_gateway()
    cli(gw, "promote", "alpha", "v1", "--force")  # a long gate reason in the audit detail
    listing = json.loads(cli(gw, "status", "-o", "json").output)
    versions = sum(len(a["versions"]) for a in listing["adapters"])
    entries = json.loads(cli(gw, "audit", "-o", "json").output)
    assert versions >= 3 and entries and "detail" in entries[-1]
    for command, rows in (("status", versions), ("audit", len(entries))):
        lines = cli(gw, command, columns=80).output.splitlines()
        assert all(len(line) <= 80 for line in lines), lines
        assert len(lines) == 1 + rows + (len(listing["engines"]) if command == "status" else 0)
    wide = cli(gw, "audit", "--wide", columns=250).output
    assert "forced past the gate" in wide and "forced past the gate" not in cli(gw, "audit").output


def test_refusals_and_connection_errors_have_their_exit_codes(admin_gateway: Start) -> None:
    gw, _ = admin_gateway()
    no_token = cli(gw, "status", token=None)
    assert no_token.exit_code == 1 and "missing admin token" in no_token.output
    wrong = cli(gw, "rollback", "alpha", token="not-the-token")
    assert wrong.exit_code == 1 and "invalid admin token" in wrong.output
    down = runner.invoke(
        app,
        ["adapters", "status", "--url", "http://127.0.0.1:9"],
        env={"LORAGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert down.exit_code == 2 and "unreachable" in down.output


def test_canary_bounds_steps_and_shadow_from_the_cli(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, _ = admin_gateway()
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    args = ("--max-p99-ratio", "off", "--min-requests", "200", "--window-s", "600")
    started = cli(gw, "canary", "alpha", "v3", "0.1", "--max-error-rate-delta", "0.05", *args)
    assert started.exit_code == 0, started.output
    canary = tiny_store.scan().adapters["alpha"].channels.canary
    assert canary is not None
    assert (canary.weight, canary.max_error_rate_delta, canary.max_p99_ratio) == (0.1, 0.05, None)
    assert (canary.min_requests, canary.window_s, canary.max_violation_rate) == (200, 600, 0.01)

    refused = cli(gw, "canary", "alpha", "v3", "--steps", "5,50,100")  # no eval to promote on
    assert refused.exit_code == 1 and "eval gate refuses" in refused.output
    bad = cli(gw, "canary", "alpha", "v3", "0.1", "--min-requests", "many")
    assert bad.exit_code == 2 and "--min-requests: 'many' is not a number" in bad.output
    no_weight = cli(gw, "canary", "alpha", "v3")
    assert no_weight.exit_code == 1 and "needs a weight, or steps" in no_weight.output

    shadowed = cli(gw, "shadow", "alpha", "v3", "0.25")
    assert shadowed.exit_code == 0 and "shadow v3 25%" in shadowed.output, shadowed.output
    ended = cli(gw, "shadow", "alpha", "v3", "0")
    assert ended.exit_code == 0 and "shadow v3" not in ended.output
