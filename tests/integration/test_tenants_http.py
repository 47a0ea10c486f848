"""Tenants over real HTTP: keys, visibility, task routing, limits, hostile headers, reload."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from loadtest.simengine import SimEngineServer
from server.serving.tenants import hash_key
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]
KEYS = {"retail": "sk-retail-123", "bank": "sk-bank-456"}


def tenants_file(path: Path, **bank: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "retail": {
                        "keys_sha256": [hash_key(KEYS["retail"])],
                        "adapters": ["alpha", "beta"],
                        "default": "alpha",
                        "tasks": {"sentiment": "alpha", "summarize": "beta"},
                    },
                    "bank": {
                        "keys_sha256": [hash_key(KEYS["bank"])],
                        "adapters": ["gamma"],
                        "allow_base": False,
                        "max_tokens": 8,
                        "default": "gamma",
                        **bank,
                    },
                }
            }
        )
    )
    return path


@pytest.fixture
def secured(gateway: Start, tmp_path: Path) -> Callable[..., GatewayServer]:
    def start(settings: dict[str, Any] | None = None, **bank: Any) -> GatewayServer:
        path = tenants_file(tmp_path / "tenants.yaml", **bank)
        gw, _ = gateway(settings={"tenants_file": path, **(settings or {})}, token_ms=20)
        return gw

    return start


def call(
    gw: GatewayServer, tenant: str | None, body: dict[str, Any], **headers: str
) -> httpx.Response:
    if tenant is not None:
        headers["Authorization"] = f"Bearer {KEYS[tenant]}"
    return httpx.post(
        f"{gw.url}/v1/completions",
        json={"prompt": "hi", "max_tokens": 2, **body},
        headers=headers,
        timeout=10,
    )


def test_keys_are_required_and_checked(secured: Callable[..., GatewayServer]) -> None:
    gw = secured()
    assert call(gw, None, {"model": "alpha"}).status_code == 401
    bad = httpx.post(
        f"{gw.url}/v1/completions",
        json={"model": "alpha", "prompt": "x"},
        headers={"Authorization": "Bearer sk-nope"},
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEYS["retail"], max_retries=0)
    assert (
        oa.completions.create(model="alpha", prompt="x", max_tokens=2)
        .choices[0]
        .text.startswith("[alpha@v2]")
    )


def test_each_tenant_sees_only_its_own_adapters(secured: Callable[..., GatewayServer]) -> None:
    gw = secured()
    listed = {
        t: [m.id for m in openai.OpenAI(base_url=f"{gw.url}/v1", api_key=k).models.list().data]
        for t, k in KEYS.items()
    }
    assert listed == {"retail": ["tiny-base", "alpha", "beta"], "bank": ["gamma"]}
    models = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {KEYS['retail']}"})
    assert models.json()["data"][1]["tasks"] == ["sentiment"]


def test_foreign_adapter_is_the_same_404_as_an_unknown_one(
    secured: Callable[..., GatewayServer],
) -> None:
    gw = secured()
    foreign = call(gw, "retail", {"model": "gamma"})
    unknown = call(gw, "retail", {"model": "delta"})
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["message"].replace("gamma", "X") == unknown.json()["error"][
        "message"
    ].replace("delta", "X")
    assert call(gw, "bank", {"model": "tiny-base"}).status_code == 404  # bank may not call the base


def test_403_when_foreign_names_may_be_revealed(secured: Callable[..., GatewayServer]) -> None:
    gw = secured(settings={"hide_foreign_adapters": False})
    response = call(gw, "retail", {"model": "gamma"})
    assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"


def test_routing_by_task_header_alias_and_default(secured: Callable[..., GatewayServer]) -> None:
    gw = secured()

    def text(response: httpx.Response) -> str:
        answer: str = response.json()["choices"][0]["text"]
        return answer

    assert text(call(gw, "retail", {"model": "summarize"})).startswith("[beta@v1]")
    assert text(call(gw, "retail", {}, **{"X-Task": "summarize"})).startswith("[beta@v1]")
    assert text(call(gw, "retail", {})).startswith("[alpha@v2]")
    assert call(gw, "retail", {}, **{"X-Task": "secret"}).status_code == 400
    assert call(gw, "bank", {}, **{"X-Task": "summarize"}).status_code == 400  # not bank's task


def test_max_tokens_cap_and_prompt_length(secured: Callable[..., GatewayServer]) -> None:
    gw = secured(max_prompt_chars=20)
    over = call(gw, "bank", {"max_tokens": 9})
    assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
    capped = call(gw, "bank", {"max_tokens": None, "prompt": "x"})
    assert capped.json()["usage"]["completion_tokens"] <= 8
    long = call(gw, "bank", {"prompt": "y" * 21})
    assert long.status_code == 400 and long.json()["error"]["param"] == "prompt"


def test_rate_limit_gives_429_with_retry_after(secured: Callable[..., GatewayServer]) -> None:
    gw = secured(rate_limit={"requests_per_s": 0.5, "burst": 2})
    codes = [call(gw, "bank", {}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = call(gw, "bank", {})
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert call(gw, "retail", {"model": "alpha"}).status_code == 200  # other tenants unaffected


def test_concurrency_limit_gives_429(secured: Callable[..., GatewayServer]) -> None:
    gw = secured(max_concurrent=1, max_tokens=400)
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{gw.url}/v1/completions",
            json={"model": "gamma", "prompt": "x", "max_tokens": 200, "stream": True},
            headers={"Authorization": f"Bearer {KEYS['bank']}"},
        ) as held,
    ):
        chunks = held.iter_bytes()
        next(chunks)
        assert call(gw, "bank", {}).status_code == 429


def test_hostile_host_headers_do_not_change_auth(secured: Callable[..., GatewayServer]) -> None:
    gw = secured()
    for headers in (
        {"Host": "localhost/healthz?"},
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "internal"},
        {"X-Original-URL": "/healthz"},
        {"X-Forwarded-Prefix": "/healthz"},
    ):
        response = httpx.post(
            f"{gw.url}/v1/completions", json={"model": "alpha", "prompt": "x"}, headers=headers
        )
        assert response.status_code == 401, headers


def test_tenants_file_is_reloaded_on_change(
    secured: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    gw = secured()
    assert call(gw, "bank", {"model": "gamma"}).status_code == 200
    path = tmp_path / "tenants.yaml"
    data = yaml.safe_load(path.read_text())
    data["tenants"]["bank"]["keys_sha256"] = [hash_key("sk-rotated")]
    path.write_text(yaml.safe_dump(data))
    deadline = time.monotonic() + 5
    while call(gw, "bank", {"model": "gamma"}).status_code != 401:
        assert time.monotonic() < deadline, "tenants file change not picked up"
        time.sleep(0.1)


def test_logs_carry_request_ids_but_no_keys_or_prompts(
    secured: Callable[..., GatewayServer], caplog: pytest.LogCaptureFixture
) -> None:
    gw = secured()
    caplog.set_level(logging.DEBUG)
    call(
        gw,
        "retail",
        {"model": "alpha", "prompt": "my secret prompt text"},
        **{"X-Request-Id": "req-42"},
    )
    call(gw, "retail", {"model": "beta"})
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert KEYS["retail"] not in text and "my secret prompt text" not in text
    served = [r.__dict__ for r in caplog.records if r.getMessage() == "request"]
    assert {
        "request_id": "req-42",
        "tenant": "retail",
        "adapter": "alpha",
        "status": 200,
    }.items() <= served[0].items()
    assert served[1]["adapter"] == "beta" and len(served[1]["request_id"]) == 32  # generated


def chat(gw: GatewayServer, tenant: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], **body},
        headers={"Authorization": f"Bearer {KEYS[tenant]}"},
        timeout=10,
    )


@pytest.mark.parametrize(
    ("chat_api", "body", "param"),
    [
        (True, {"max_completion_tokens": 500}, "max_completion_tokens"),
        (True, {"max_tokens": 9}, "max_tokens"),
        (False, {"n": 1000}, "n"),
        (False, {"best_of": 5}, "best_of"),
        (False, {"prompt": ["a", "b", "c"], "n": 2}, "n"),  # 6 completions
        (True, {"n": 5}, "n"),
        (False, {"logprobs": 6}, "logprobs"),
        (True, {"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
        (False, {"prompt_logprobs": -1}, "prompt_logprobs"),  # the whole vocabulary
        (False, {"prompt": list(range(101))}, "prompt"),  # token ids count as tokens
        (False, {"prompt": [list(range(60)), list(range(60))]}, "prompt"),
    ],
)
def test_every_field_that_buys_tokens_is_capped(
    secured: Callable[..., GatewayServer], chat_api: bool, body: dict[str, Any], param: str
) -> None:
    gw = secured(max_n=4, max_logprobs=5, max_prompt_tokens=100)
    answer = chat(gw, "bank", body) if chat_api else call(gw, "bank", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert "limit" in answer.json()["error"]["message"]


def test_chat_without_max_tokens_gets_the_cap(secured: Callable[..., GatewayServer]) -> None:
    gw = secured()
    answer = chat(gw, "bank", {"model": "gamma"})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] <= 8


def test_tokens_are_charged_before_the_call_not_after(
    secured: Callable[..., GatewayServer],
) -> None:
    gw = secured(rate_limit={"tokens_per_min": 5})  # one 8-token request overdraws it
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{gw.url}/v1/completions",
            json={"model": "gamma", "prompt": "x", "max_tokens": 8, "stream": True},
            headers={"Authorization": f"Bearer {KEYS['bank']}"},
        ) as held,
    ):
        chunks = held.iter_bytes()  # kept: a dropped iterator would close the stream
        next(chunks)  # in flight: nothing reported by the engine yet
        refused = call(gw, "bank", {})
    assert refused.status_code == 429, refused.text
    assert "tokens per minute" in refused.json()["error"]["message"]


def test_metrics_are_not_served_to_callers_of_the_api_port(
    secured: Callable[..., GatewayServer],
) -> None:
    gw = secured()
    for headers in ({}, {"Authorization": f"Bearer {KEYS['retail']}"}):
        hidden = httpx.get(f"{gw.url}/metrics", headers=headers)
        assert hidden.status_code in (401, 403) and "gamma" not in hidden.text
    scraped = httpx.get(gw.metrics_url).text  # the metrics listener, for Prometheus
    assert "loragate_requests_total" in scraped
    schema = httpx.get(f"{gw.url}/openapi.json").text
    assert "/admin" not in schema


def test_a_busy_slot_answer_names_no_other_tenants_adapter(gateway: Start, tmp_path: Path) -> None:
    path = tenants_file(tmp_path / "tenants.yaml", max_tokens=400)
    gw, _ = gateway(
        settings={"tenants_file": path, "load_wait_timeout_s": 0.3},
        slots=1,
        max_loras=1,
        token_ms=20,
    )
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{gw.url}/v1/completions",
            json={"model": "alpha", "prompt": "x", "max_tokens": 100, "stream": True},
            headers={"Authorization": f"Bearer {KEYS['retail']}"},
        ) as held,
    ):
        chunks = held.iter_bytes()  # kept: a dropped iterator would close the stream
        next(chunks)  # retail's alpha holds the only slot
        busy = call(gw, "bank", {"model": "gamma"})
    assert busy.status_code == 503, busy.text
    assert "alpha" not in busy.text and busy.json()["error"]["code"] == "unavailable"
