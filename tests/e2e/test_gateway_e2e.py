"""The whole product on a real engine: the gateway with a managed vLLM engine on the demo base,
serving the demo adapters from a copy of the repo's store."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from loadtest.threaded import free_port
from server.settings import Settings
from server.store.manifest import Channels
from server.store.store import AdapterStore
from tests.e2e.conftest import require_engine
from tests.fakes import crash
from tests.servers import GatewayServer

pytestmark = pytest.mark.e2e

REPO_STORE = Path(__file__).resolve().parents[2] / "adapters"
DEMO = ("sentiment", "summarize", "qa")
PROMPT = "The battery died after two days and support never answered."


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def store_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not all((REPO_STORE / name / "channels.json").exists() for name in DEMO):
        pytest.skip("the demo adapters are not in ./adapters")
    root = tmp_path_factory.mktemp("e2e") / "adapters"
    shutil.copytree(REPO_STORE, root)
    # Start with no version inside the rollback window (pins depend on when the demo store
    # was committed otherwise): the tests below decide what gets pinned.
    for channels in root.glob("*/channels.json"):
        data = json.loads(channels.read_text())
        channels.write_text(json.dumps({**data, "updated_at": "2000-01-01T00:00:00Z"}))
    return root


@pytest.fixture(scope="module")
def gw(
    store_copy: Path, demo_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    require_engine()
    settings = Settings(
        store=store_copy,
        base_model="demo-base",
        rollback_window_s=3600,
        reconcile_interval_s=2,
        log_dir=tmp_path_factory.mktemp("logs"),
        load_wait_timeout_s=60,
        log_json=False,
        engines=[
            {
                "managed": {
                    "model": str(demo_base),
                    "port": free_port(),
                    "max_loras": 2,
                    "max_lora_rank": 8,
                    "restart_backoff_s": 0.5,
                },
                "max_cpu_loras": 3,
            }
        ],
    )
    with GatewayServer(settings) as server:
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, 600)
        yield server


def client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_every_demo_adapter_and_the_base_answer_sync_and_streaming(gw: GatewayServer) -> None:
    oa = client(gw)
    texts = {}
    for model in ("demo-base", *DEMO):
        raw = oa.completions.with_raw_response.create(
            model=model, prompt=PROMPT, max_tokens=12, temperature=0
        )
        completion = raw.parse()
        assert completion.model == model and raw.headers["x-adapter-version"].startswith(model)
        texts[model] = completion.choices[0].text
        streamed = "".join(
            c.choices[0].text
            for c in oa.completions.create(
                model=model, prompt=PROMPT, max_tokens=12, temperature=0, stream=True
            )
            if c.choices
        )
        assert streamed == texts[model], model
        chat = oa.chat.completions.create(
            model=model,
            max_tokens=12,
            temperature=0,
            messages=[{"role": "user", "content": PROMPT}],
        )
        assert chat.choices[0].message.content
    assert len(set(texts.values())) == len(texts), texts  # each adapter answers differently
    assert texts["sentiment"].strip().split()[0].lower().strip(".,") in {
        "positive",
        "negative",
        "neutral",
    }


def test_registry_keeps_the_engine_within_its_slots(gw: GatewayServer) -> None:
    oa = client(gw)
    for model in ("sentiment@v1", "sentiment@v2", "summarize@v2", "qa@v2", "sentiment@v1"):
        oa.completions.create(model=model, prompt=PROMPT, max_tokens=2)
    engine = gw.runtime.settings.engines[0].base_url()
    loras = [m["id"] for m in httpx.get(f"{engine}/v1/models").json()["data"] if m.get("parent")]
    assert len(loras) <= 3, loras
    assert sum(gw.metric("loragate_adapter_evictions_total", adapter=a) for a in DEMO) >= 2
    assert gw.metric("loragate_adapter_load_seconds_count", engine="engine-0") >= 4


def test_rollback_switches_version_without_an_engine_load(
    gw: GatewayServer, store_copy: Path
) -> None:
    engine = gw.runtime.settings.engines[0].base_url()
    store = AdapterStore(store_copy, None)
    # A promotion just now (v2 stable, v1 previous): inside the rollback window the rollback
    # target v1 is pinned and warmed on the engine, whatever traffic did before.
    store.update_channels("sentiment", lambda c: c, actor="e2e", action="promote")
    wait_for(
        lambda: (
            "sentiment@v1" in gw.runtime.registry.pinned() and "sentiment@v1" in models_on(engine)
        ),
        30,
    )
    client(gw).completions.create(model="sentiment", prompt=PROMPT, max_tokens=2)
    loads = gw.metric("loragate_adapter_loads_total", engine="engine-0", adapter="sentiment")
    store.update_channels(
        "sentiment",
        lambda c: Channels(stable=c.previous, previous=c.stable),
        actor="e2e",
        action="rollback",
    )
    wait_for(
        lambda: (
            client(gw)
            .completions.with_raw_response.create(model="sentiment", prompt=PROMPT, max_tokens=2)
            .headers["x-adapter-version"]
            == "sentiment@v1"
        ),
        10,
    )
    assert (
        gw.metric("loragate_adapter_loads_total", engine="engine-0", adapter="sentiment") == loads
    )


def models_on(engine: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{engine}/v1/models").json()["data"]}


def test_engine_crash_restart_rewarm(gw: GatewayServer) -> None:
    runtime = gw.runtime
    client(gw).completions.create(model="qa", prompt=PROMPT, max_tokens=2)
    supervisor = runtime.supervisors[0]
    starts = supervisor.starts
    crash(supervisor)
    wait_for(lambda: httpx.get(f"{gw.url}/readyz").status_code == 503, 30)
    wait_for(
        lambda: (
            supervisor.starts == starts + 1 and httpx.get(f"{gw.url}/readyz").status_code == 200
        ),
        300,
    )
    # The rollback above pinned its rollback target (sentiment@v2; 3 slots x max_pinned_share
    # 0.5 leave room for one pin): the restarted engine gets it back without a request.
    engine = runtime.settings.engines[0].base_url()
    assert runtime.registry.pinned() == {"sentiment@v2"}
    wait_for(lambda: "sentiment@v2" in models_on(engine), 60)
    answer = client(gw).completions.create(model="qa", prompt=PROMPT, max_tokens=4)
    assert answer.choices[0].text
    assert gw.metric("loragate_engine_restarts_total", engine="engine-0") == 1
