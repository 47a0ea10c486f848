"""Shadow traffic over real HTTP: a gateway, a simulated engine, a real store. The client's
answers are the same with and without a shadow; the candidate's results land in its eval
report; tenants' limits and views are untouched."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtest.simengine import SimEngineServer
from server.serving.tenants import hash_key
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.integration.conftest import ADMIN_TOKEN
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST = {"shadow_report_interval_s": 0.3}
PROMPTS = [f"question {i}" for i in range(12)]


def shadow(gw: GatewayServer, share: float, version: str | None = "v3") -> dict[str, Any]:
    body = {"version": version, "share": share}
    r = httpx.post(f"{gw.url}/admin/adapters/alpha/shadow", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def answers(gw: GatewayServer, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as client:
        return [
            client.post("/v1/completions", json={"model": "alpha", "prompt": p, "max_tokens": 4})
            for p in PROMPTS
        ]


def what_the_client_sees(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = response.json()
    headers = {k: v for k, v in response.headers.items() if k.startswith("x-")}
    headers.pop("x-request-id", None)
    headers.pop("x-gateway-overhead-ms", None)
    return (
        response.status_code,
        (body.get("model"), body.get("choices"), body.get("usage")),
        headers,
    )


def models(gw: GatewayServer, key: str) -> Any:
    """A tenant's /v1/models, without what changes with time and residency."""
    listing = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert listing.status_code == 200
    text = listing.text
    for model in (data := listing.json()["data"]):
        model.pop("created", None)
        for version in model.get("versions") or []:
            version.pop("resident", None)
    return data, "shadow" in text


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_a_shadow_never_changes_the_answer_and_writes_an_eval_report(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, (sim,) = admin_gateway(settings=FAST)
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3, checks={"deny_words": ["amber"]})
    before = [what_the_client_sees(r) for r in answers(gw)]

    started = shadow(gw, 1.0)
    assert started["channels"]["shadow"]["version"] == "v3"
    assert started["prewarmed"] == ["engine-0"]  # so that no mirror has to load it
    after_responses = answers(gw)
    streamed = httpx.post(
        f"{gw.url}/v1/completions",
        json={"model": "alpha", "prompt": PROMPTS[0], "max_tokens": 4, "stream": True},
        timeout=30,
    )

    assert [what_the_client_sees(r) for r in after_responses] == before
    for response in [*after_responses, streamed]:
        assert response.headers["x-adapter-version"] == "alpha@v2"
        assert "v3" not in response.text and "v3" not in str(response.headers)
    mirrored = len(PROMPTS) + 1
    wait_for(lambda: "shadow" in tiny_store.version("alpha", "v3").evals())
    wait_for(lambda: tiny_store.version("alpha", "v3").evals()["shadow"].n == mirrored)

    report = tiny_store.version("alpha", "v3").evals()["shadow"]
    assert (report.dataset, report.metric, report.model) == ("shadow", "token_f1", "alpha@v3")
    assert 0.0 <= report.score < 1.0  # the simulated versions answer differently
    stats = report.shadow
    assert stats is not None and (stats.reference, stats.errors) == ("alpha@v2", 0)
    assert sum(stats.latency.counts) == mirrored == sum(stats.reference_latency.counts)
    assert httpx.get(f"{sim.url}/sim/stats").json()["requests"]["alpha@v3"] == mirrored
    assert gw.metric("loragate_shadow_requests_total", adapter="alpha", outcome="answered") == (
        mirrored
    )
    assert gw.metric("loragate_requests_total", adapter="alpha", version="v3", code="200") == 0

    ended = shadow(gw, 0, None)
    assert ended["channels"]["shadow"] is None
    answers(gw)
    time.sleep(0.5)
    assert tiny_store.version("alpha", "v3").evals()["shadow"].n == mirrored  # no more mirrors
    audit = httpx.get(f"{gw.url}/admin/audit", headers=AUTH).json()["entries"]
    assert [(e["action"], e["to_version"]) for e in audit if e["action"] == "shadow"] == [
        ("shadow", "v3"),
        ("shadow", None),
    ]


def test_mirrors_do_not_count_against_a_tenants_limits_nor_show_to_tenants(
    gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    keys = {"retail": "sk-retail-123", "bank": "sk-bank-456"}
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {
        "retail": {"keys_sha256": [hash_key(keys["retail"])], "adapters": ["alpha"],
                   "max_concurrent": 1, "rate_limit": {"tokens_per_min": 120}},
        "bank": {"keys_sha256": [hash_key(keys["bank"])], "adapters": ["gamma"]},
    }}))  # fmt: skip
    settings = {**FAST, "tenants_file": tenants, "admin_token": ADMIN_TOKEN}
    gw, _ = gateway(settings=settings, slots=4, token_ms=20)  # mirrors overlap the next request
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    time.sleep(0.6)  # the gateway's store poll sees v3
    listings = {tenant: models(gw, key) for tenant, key in keys.items()}
    shadow(gw, 1.0)
    retail = {"Authorization": f"Bearer {keys['retail']}"}

    codes = [r.status_code for r in answers(gw, retail)]  # 12 x 7 tokens: 84 of 120 a minute

    assert codes == [200] * len(PROMPTS)  # mirrored too, they would be over both limits
    wait_for(lambda: gw.metric("loragate_shadow_requests_total", adapter="alpha",
                               outcome="answered") > 0)  # fmt: skip
    assert {tenant: models(gw, key) for tenant, key in keys.items()} == listings
    assert not any(shadowed for _, shadowed in listings.values())
    assert "alpha" not in str(listings["bank"])
    bank = httpx.post(
        f"{gw.url}/v1/completions",
        headers={"Authorization": f"Bearer {keys['bank']}"},
        json={"model": "alpha", "prompt": "x"},
    )
    assert bank.status_code == 404
