"""The gateway over real HTTP in front of simulated engines, driven by the openai SDK/httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from loadtest.simengine import SimEngineServer
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]


def client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


def complete(gw: GatewayServer, model: str, **kw: Any) -> httpx.Response:
    body = {"model": model, "prompt": "hello world", "max_tokens": 4, **kw}
    return httpx.post(f"{gw.url}/v1/completions", json=body, timeout=10)


def stats(sim: SimEngineServer) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{sim.url}/sim/stats").json()
    return result


def test_routes_name_version_and_base_with_the_openai_sdk(gateway: Start) -> None:
    gw, _ = gateway()
    oa = client(gw)

    raw = oa.completions.with_raw_response.create(model="alpha", prompt="hi", max_tokens=4)
    stable = raw.parse()
    assert raw.headers["x-adapter-version"] == "alpha@v2"
    assert stable.model == "alpha" and stable.choices[0].text.startswith("[alpha@v2]")
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0

    pinned = oa.completions.create(model="alpha@v1", prompt="hi", max_tokens=4)
    assert pinned.choices[0].text.startswith("[alpha@v1]") and pinned.model == "alpha@v1"

    base = oa.completions.create(model="tiny-base", prompt="hi", max_tokens=4)
    assert base.choices[0].text.startswith("[tiny-base]")

    chat = oa.chat.completions.create(
        model="beta", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content.startswith("[beta@v1]")  # type: ignore[union-attr]


def test_prompt_template_of_the_served_version_is_applied(gateway: Start) -> None:
    gw, _ = gateway()
    oa = client(gw)
    # The simulated engine counts whitespace words: the template adds "<alpha-v2>".
    adapter_usage = oa.completions.create(model="alpha", prompt="a b", max_tokens=1).usage
    base_usage = oa.completions.create(model="tiny-base", prompt="a b", max_tokens=1).usage
    assert adapter_usage is not None and adapter_usage.prompt_tokens == 3
    assert base_usage is not None and base_usage.prompt_tokens == 2


def test_streaming_chat_relays_chunks_and_done(gateway: Start) -> None:
    gw, _ = gateway()
    stream = client(gw).chat.completions.create(
        model="beta", messages=[{"role": "user", "content": "hello"}], max_tokens=5, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[beta@v1]")
    assert {c.model for c in chunks} == {"beta"}
    assert all(c.choices for c in chunks)  # the usage-only chunk we asked for is not leaked
    raw = httpx.post(
        f"{gw.url}/v1/completions",
        json={"model": "beta", "prompt": "x", "max_tokens": 2, "stream": True},
    ).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_streaming_usage_is_passed_when_the_client_asks(gateway: Start) -> None:
    gw, _ = gateway()
    chunks = list(
        client(gw).completions.create(
            model="beta",
            prompt="a b c",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert gw.metric("loragate_tokens_total", adapter="beta", kind="completion") == 3


def test_lru_eviction_order_over_http(gateway: Start) -> None:
    gw, (sim,) = gateway()
    for model in ("alpha", "beta", "alpha", "gamma"):
        assert complete(gw, model).status_code == 200
    assert sorted(stats(sim)["registered"]) == ["alpha@v2", "gamma@v1"]
    assert gw.metric("loragate_adapter_evictions_total", adapter="beta") == 1


def test_fifty_concurrent_cold_requests_make_exactly_one_load(gateway: Start) -> None:
    gw, (sim,) = gateway(load_ms=200)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=20) as http:
            body = {"model": "gamma", "prompt": "x", "max_tokens": 2}
            responses = await asyncio.gather(
                *(http.post(f"{gw.url}/v1/completions", json=body) for _ in range(50))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 50
    assert stats(sim)["loads"] == 1
    assert gw.metric("loragate_adapter_loads_total", adapter="gamma") == 1


class HeldStream:
    """A streaming request that has started (its lease is held) and is not read further."""

    def __init__(self, gw: GatewayServer, model: str) -> None:
        self.http = httpx.Client(timeout=30)
        request = self.http.build_request(
            "POST",
            f"{gw.url}/v1/completions",
            json={"model": model, "prompt": "x", "max_tokens": 200, "stream": True},
        )
        self.response = self.http.send(request, stream=True)
        assert self.response.status_code == 200
        # Keep the iterator: dropping it would close the response (a client disconnect).
        self.chunks = self.response.iter_bytes()
        next(self.chunks)

    def close(self) -> None:
        self.response.close()
        self.http.close()


def test_an_in_flight_adapter_is_never_evicted(gateway: Start) -> None:
    gw, (sim,) = gateway(token_ms=20, answer_tokens=400)
    held = HeldStream(gw, "alpha")  # alpha: oldest, but in flight
    try:
        assert complete(gw, "beta").status_code == 200
        assert complete(gw, "gamma").status_code == 200  # must evict beta, not alpha
        assert "alpha@v2" in stats(sim)["registered"]
        assert gw.metric("loragate_adapter_evictions_total", adapter="beta") == 1
    finally:
        held.close()


def test_all_slots_busy_answers_503_with_retry_after(gateway: Start) -> None:
    gw, _ = gateway(token_ms=20, answer_tokens=400, settings={"load_wait_timeout_s": 0.3})
    held = [HeldStream(gw, m) for m in ("alpha", "beta")]
    try:
        response = complete(gw, "gamma")
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert error["code"] == "unavailable" and "pinned or busy" in error["message"]
    finally:
        for stream in held:
            stream.close()


def test_client_disconnect_mid_stream_releases_the_lease(gateway: Start) -> None:
    gw, (sim,) = gateway(token_ms=20, answer_tokens=400)
    HeldStream(gw, "alpha").close()
    deadline = time.monotonic() + 5
    while gw.metric("loragate_inflight_requests", engine="engine-0") != 0:
        assert time.monotonic() < deadline, "lease not released after disconnect"
        time.sleep(0.02)
    while stats(sim)["requests_cancelled"] < 1:
        assert time.monotonic() < deadline, "upstream request not cancelled"
        time.sleep(0.02)


def test_failed_load_leaves_state_unchanged_is_backed_off_then_retry_works(
    gateway: Start,
) -> None:
    gw, (sim,) = gateway()
    assert complete(gw, "alpha").status_code == 200
    before = [(s.key, s.state) for s in gw.runtime.registry.view("engine-0")]
    httpx.post(f"{sim.url}/sim/faults", json={"fail_load": "^gamma"})

    response = complete(gw, "gamma")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "adapter_load_failed"
    assert [(s.key, s.state) for s in gw.runtime.registry.view("engine-0")] == before
    assert gw.metric("loragate_adapter_load_failures_total", adapter="gamma") == 1
    for _ in range(3):  # within the backoff: the same answer at once, no new load attempt
        again = complete(gw, "gamma")
        assert again.status_code == 502 and int(again.headers["retry-after"]) >= 1
    assert gw.metric("loragate_adapter_load_failures_total", adapter="gamma") == 1
    httpx.post(f"{sim.url}/sim/faults", json={"fail_load": None})
    time.sleep(1.1)  # the first backoff is 1 s
    assert complete(gw, "gamma").status_code == 200


def test_an_engine_that_lies_about_a_load_is_caught(gateway: Start) -> None:
    gw, (sim,) = gateway()
    httpx.post(f"{sim.url}/sim/faults", json={"load_lies": True})
    response = complete(gw, "gamma")
    assert response.status_code == 502
    assert "does not list it" in response.json()["error"]["message"]


def test_metrics_after_a_scripted_sequence(gateway: Start) -> None:
    gw, _ = gateway()
    for model in ("alpha", "beta", "gamma", "alpha", "beta", "beta"):
        assert complete(gw, model).status_code == 200
    m = gw.metric
    assert [m("loragate_adapter_loads_total", adapter=a) for a in ("alpha", "beta", "gamma")] == [
        2,
        2,
        1,
    ]
    assert [
        m("loragate_adapter_evictions_total", adapter=a) for a in ("alpha", "beta", "gamma")
    ] == [1, 1, 1]
    assert [m("loragate_adapter_thrash_total", adapter=a) for a in ("alpha", "beta", "gamma")] == [
        1,
        1,
        0,
    ]
    assert m("loragate_registry_lookups_total", result="hit") == 1
    assert m("loragate_adapter_slots", engine="engine-0") == 2
    assert m("loragate_resident_adapters", engine="engine-0") == 2
    assert m("loragate_adapter_load_seconds_count", engine="engine-0") == 5
    assert m("loragate_swap_request_ratio") == pytest.approx(5 / 6)
    assert m("loragate_requests_total", adapter="beta", version="v1", code="200") == 3


def test_openai_error_shapes(gateway: Start) -> None:
    gw, _ = gateway(settings={"max_body_bytes": 2000})
    oa = client(gw)
    with pytest.raises(openai.NotFoundError) as nf:
        oa.completions.create(model="nope", prompt="x")
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    for bad in ("alpha@v9", "Alpha", "../etc/passwd", "alpha@"):
        assert complete(gw, bad).status_code == 404

    missing = httpx.post(f"{gw.url}/v1/completions", json={"model": "alpha"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "prompt"
    assert (
        httpx.post(
            f"{gw.url}/v1/completions",
            content=b"{nope",
            headers={"content-type": "application/json"},
        ).status_code
        == 400
    )
    big = complete(gw, "alpha", prompt="x" * 5000)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    assert httpx.get(f"{gw.url}/v2/nothing").json()["error"]["code"] == "not_found"


def test_models_lists_base_and_adapters_with_versions(gateway: Start) -> None:
    gw, _ = gateway()
    complete(gw, "alpha")
    listing = client(gw).models.list()
    ids = [m.id for m in listing.data]
    assert ids == ["tiny-base", "alpha", "beta", "gamma"]
    alpha = httpx.get(f"{gw.url}/v1/models").json()["data"][1]
    assert alpha["stable"] == "v2" and alpha["previous"] == "v1" and alpha["parent"] == "tiny-base"
    assert [(v["version"], v["resident"]) for v in alpha["versions"]] == [
        ("v1", False),
        ("v2", True),
    ]


def test_health_and_readiness_follow_the_engine(gateway: Start) -> None:
    gw, (sim,) = gateway(settings={"reconcile_interval_s": 0.1})
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200 and ready.json()["engines_up"] == ["engine-0"]
    httpx.post(f"{sim.url}/sim/faults", json={"unhealthy": True})
    deadline = time.monotonic() + 5
    while httpx.get(f"{gw.url}/readyz").status_code != 503:
        assert time.monotonic() < deadline, "readyz did not notice the engine going down"
        time.sleep(0.05)
    assert gw.metric("loragate_engine_up", engine="engine-0") == 0
    assert complete(gw, "alpha").status_code == 503  # no engine up: a clear 503, not a hang
    assert httpx.get(gw.metrics_url).headers["content-type"].startswith("text/plain")
    rid = httpx.get(f"{gw.url}/healthz", headers={"x-request-id": "abc-123"}).headers[
        "x-request-id"
    ]
    assert rid == "abc-123"


def test_an_engine_that_does_not_answer_in_time_is_a_504(gateway: Start) -> None:
    gw, (sim,) = gateway(settings={"request_timeout_s": 0.3})
    assert complete(gw, "alpha").status_code == 200  # warm: the load is not what times out
    httpx.post(f"{sim.url}/sim/faults", json={"request_delay_ms": 2000})
    response = complete(gw, "alpha")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "engine_timeout"
    assert gw.metric("loragate_inflight_requests", engine="engine-0") == 0
