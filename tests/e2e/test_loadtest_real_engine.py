"""The `real-engine` scenario at small scale: a gateway with a managed vLLM engine on the demo
base model, serving a copy of the repo's demo store, loaded by the tool like any deployment."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.threaded import free_port
from loadtest.tool import scenario_files
from loadtest.tool.scenario import TargetSpec
from loadtest.tool.session import run_scenario
from server.settings import Settings
from tests.e2e.conftest import require_engine
from tests.servers import GatewayServer

pytestmark = pytest.mark.e2e

REPO_STORE = Path(__file__).resolve().parents[2] / "adapters"
ADMIN_TOKEN = "e2e-loadtest-admin-token"


@pytest.fixture(scope="module")
def gateway(demo_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    require_engine()
    store = tmp_path_factory.mktemp("loadtest") / "adapters"
    shutil.copytree(REPO_STORE, store)
    settings = Settings(
        store=store,
        base_model="demo-base",
        log_dir=tmp_path_factory.mktemp("logs"),
        load_wait_timeout_s=60,
        log_json=False,
        admin_token=ADMIN_TOKEN,  # the tool scrapes the gateway's /metrics with it
        engines=[
            {
                "managed": {"model": str(demo_base), "port": free_port(), "max_loras": 2},
                "max_cpu_loras": 3,
            }
        ],
    )
    with GatewayServer(settings) as server:
        deadline = time.monotonic() + 600
        while httpx.get(f"{server.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the engine did not become ready"
            time.sleep(1)
        yield server


def test_the_real_engine_scenario(
    gateway: GatewayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORAGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    scenario = scenario_files.load(
        "real-engine", ["bounds.requests=8", "arrivals.rate=1", "bounds.duration_s=60"]
    )
    target = TargetSpec(name="loragate", urls=[gateway.url])
    outcome = run_scenario(scenario, tmp_path, targets=[target], note="e2e smoke")
    block = outcome.summary["targets"]["loragate"]
    assert outcome.run.targets[0].kind == "loragate"
    assert block["ok"] == block["requests"] == 8, block["outcomes"]
    served = {v.partition("@")[0] for v in block["versions"]}
    assert served <= {"demo-base", "sentiment", "summarize", "qa"} and len(served) > 1
    assert "loads" in block["loragate"]  # scraped from /metrics
    assert (tmp_path / "latency_cdf.png").is_file()
