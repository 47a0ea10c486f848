"""The simulated vLLM engine over real HTTP on loopback (httpx and the openai SDK).

Expected bodies are vLLM 0.32's, read from its source (see loadtest/sim/protocol.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from loadtest.sim.cli import build_parser, config_from_args
from loadtest.simengine import SimConfig, SimEngineServer

StartSim = Callable[..., SimEngineServer]
MakeAdapter = Callable[..., Path]


def load(client: httpx.Client, name: str, path: Path | str) -> httpx.Response:
    return client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})


def error(message: str, err_type: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def model_ids(client: httpx.Client) -> list[str]:
    return [card["id"] for card in client.get("/v1/models").json()["data"]]


def stats(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/sim/stats").json()
    return result


def sse_payloads(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.split("\n\n") if line]


# --- lifecycle ---


def test_server_starts_and_stops_without_hanging() -> None:
    started = time.monotonic()
    with SimEngineServer(SimConfig()) as sim:
        assert httpx.get(f"{sim.url}/health").status_code == 200
        assert httpx.get(f"{sim.url}/version").json() == {"version": "0.32.0"}
    # A hang guard, not a performance claim: it takes well under a second on an idle machine.
    assert time.monotonic() - started < 15.0


def test_stopping_with_an_open_stream_ends_it_quickly() -> None:
    sim = SimEngineServer(SimConfig(answer_tokens=5000, token_ms=5.0)).__enter__()
    body = {"prompt": "x", "max_tokens": 2000, "stream": True}
    with (
        httpx.Client(base_url=sim.url) as client,
        client.stream("POST", "/v1/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        started = time.monotonic()
        sim.close()
        assert time.monotonic() - started < 0.5
        rest = [line for line in lines if line]
    # The engine "died": an error event, then [DONE], as vLLM streams a GenerationError.
    assert rest[-2:] == [
        'data: {"error": {"message": "Internal server error", "type": "InternalServerError", '
        '"param": null, "code": 500}}',
        "data: [DONE]",
    ]


def test_cpu_cache_smaller_than_a_batch_is_refused_like_vllm() -> None:
    with pytest.raises(ValidationError, match=r"max_cpu_loras \(1\) must be >= max_loras \(2\)"):
        SimConfig(max_loras=2, max_cpu_loras=1)


def test_cli_flags_map_onto_config() -> None:
    args = build_parser().parse_args(
        [
            "--port",
            "0",
            "--model",
            "m",
            "--max-loras",
            "2",
            "--max-cpu-loras",
            "3",
            "--load-ms",
            "30",
            "--load-jitter-ms",
            "5",
            "--ttft-ms",
            "7",
            "--token-ms",
            "2",
            "--max-model-len",
            "512",
            "--seed",
            "9",
            "--fail-load",
            "bad",
            "--load-lies",
        ]
    )
    config = config_from_args(args)
    assert (config.model, config.max_loras, config.cpu_lora_capacity) == ("m", 2, 3)
    assert (config.load_ms, config.load_jitter_ms, config.ttft_ms, config.token_ms) == (
        30,
        5,
        7,
        2,
    )
    assert (config.max_model_len, config.seed) == (512, 9)
    assert config.faults.fail_load == "bad" and config.faults.load_lies


def test_python_dash_m_serves_http() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.simengine", "--port", str(port), "--model", "m"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("python -m loadtest.simengine did not answer")
        assert response.json()["data"][0]["id"] == "m"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- models, load, unload ---


def test_models_list_follows_load_and_unload(
    sim_server: StartSim, make_adapter: MakeAdapter
) -> None:
    sim = sim_server(max_model_len=4096)
    path = make_adapter("sentiment-v2")
    with httpx.Client(base_url=sim.url) as client:
        base_card = client.get("/v1/models").json()["data"][0]
        assert base_card["id"] == "base" and base_card["root"] == "base"
        assert base_card["max_model_len"] == 4096 and base_card["parent"] is None

        loaded = load(client, "sentiment@v2", path)
        assert loaded.status_code == 200
        assert loaded.text == "Success: LoRA adapter 'sentiment@v2' added successfully."
        assert "content-type" not in loaded.headers  # vLLM returns a bare Response
        models = client.get("/v1/models").json()
        assert models["object"] == "list"
        card = models["data"][1]
        assert (card["id"], card["root"], card["parent"]) == ("sentiment@v2", str(path), "base")
        assert card["object"] == "model" and card["owned_by"] == "vllm"
        assert card["max_model_len"] is None
        assert card["permission"][0]["object"] == "model_permission"

        unloaded = client.post("/v1/unload_lora_adapter", json={"lora_name": "sentiment@v2"})
        assert unloaded.status_code == 200
        assert unloaded.text == "Success: LoRA adapter 'sentiment@v2' removed successfully."
        assert model_ids(client) == ["base"]


def test_loading_a_name_twice_is_400(sim_server: StartSim, make_adapter: MakeAdapter) -> None:
    sim = sim_server()
    path = make_adapter()
    with httpx.Client(base_url=sim.url) as client:
        assert load(client, "a", path).status_code == 200
        again = load(client, "a", path)
    assert again.status_code == 400
    assert again.json() == error(
        "The lora adapter 'a' has already been loaded. If you want to load the adapter in "
        "place, set 'load_inplace' to True.",
        "InvalidUserInput",
        400,
    )


def test_unloading_an_unknown_name_is_404(sim_server: StartSim) -> None:
    sim = sim_server()
    response = httpx.post(f"{sim.url}/v1/unload_lora_adapter", json={"lora_name": "ghost"})
    assert response.status_code == 404
    assert response.json() == error(
        "The lora adapter 'ghost' cannot be found.", "NotFoundError", 404
    )


@pytest.mark.parametrize("missing", ["directory", "adapter_config.json"])
def test_missing_adapter_is_404_with_sanitized_path(
    sim_server: StartSim, make_adapter: MakeAdapter, tmp_path: Path, missing: str
) -> None:
    sim = sim_server()
    path = tmp_path / "nowhere"
    if missing == "adapter_config.json":
        path = make_adapter("no-config")
        (path / "adapter_config.json").unlink()
    with httpx.Client(base_url=sim.url) as client:
        response = load(client, "x", path)
        assert model_ids(client) == ["base"]
    assert response.status_code == 404
    # vLLM's sanitize_message turns paths under /tmp, /home, … into "<path>".
    assert response.json() == error(
        "Loading lora x failed: No adapter found for <path>", "NotFoundError", 404
    )


@pytest.mark.parametrize(
    ("config", "weights", "reason"),
    [
        ({"r": 64}, True, "LoRA rank 64 is greater than max_lora_rank 16."),
        ({}, False, "<path> doesn't contain tensors"),
        ({"bias": "all"}, True, "Adapter bias is not supported."),
    ],
)
def test_adapter_vllm_rejects_is_500(
    sim_server: StartSim,
    make_adapter: MakeAdapter,
    config: dict[str, Any],
    weights: bool,
    reason: str,
) -> None:
    sim = sim_server()
    response = httpx.post(
        f"{sim.url}/v1/load_lora_adapter",
        json={"lora_name": "x", "lora_path": str(make_adapter(weights=weights, **config))},
    )
    assert response.status_code == 500
    assert response.json() == error(
        f"Call to add_lora method failed: {reason}", "InternalServerError", 500
    )


def test_load_request_checks_mirror_vllm(sim_server: StartSim, make_adapter: MakeAdapter) -> None:
    sim = sim_server()
    with httpx.Client(base_url=sim.url) as client:
        conflict = load(client, "base", make_adapter())
        no_path = client.post("/v1/load_lora_adapter", json={"lora_name": "x"})
        not_json = client.post("/v1/load_lora_adapter", content=b"lora_name=x")
    assert conflict.status_code == 400
    assert conflict.json() == error(
        "The lora adapter 'base' conflicts with a served base model.", "InvalidUserInput", 400
    )
    assert no_path.status_code == 400
    assert no_path.json()["error"]["type"] == "Bad Request"
    assert no_path.json()["error"]["param"] == "body.lora_path"
    assert no_path.json()["error"]["message"].startswith(
        "1 validation error:\n  {'type': 'missing'"
    )
    assert not_json.json() == error(
        "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
        "Bad Request",
        400,
    )


def test_load_latency_is_visible(sim_server: StartSim, make_adapter: MakeAdapter) -> None:
    sim = sim_server(load_ms=120.0)
    started = time.monotonic()
    assert (
        httpx.post(
            f"{sim.url}/v1/load_lora_adapter",
            json={"lora_name": "slow", "lora_path": str(make_adapter())},
        ).status_code
        == 200
    )
    assert time.monotonic() - started >= 0.12


# --- completions ---


def test_unknown_model_is_404_like_vllm(sim_server: StartSim) -> None:
    sim = sim_server()
    response = httpx.post(f"{sim.url}/v1/completions", json={"model": "nope", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json() == error(
        "The model `nope` does not exist. Valid aliases: base.", "NotFoundError", 404, "model"
    )
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    with client, pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 404


def test_openai_client_completion_and_chat(sim_server: StartSim, make_adapter: MakeAdapter) -> None:
    sim = sim_server(answer_tokens=8)
    with httpx.Client(base_url=sim.url) as admin:
        load(admin, "sentiment@v2", make_adapter())
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    with client:
        first = client.completions.create(
            model="sentiment@v2", prompt="the food was great", max_tokens=4
        )
        again = client.completions.create(
            model="sentiment@v2", prompt="the food was great", max_tokens=4
        )
        base = client.completions.create(model="base", prompt="the food was great")
        chat = client.chat.completions.create(
            model="sentiment@v2",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi there"},
            ],
        )

    text = first.choices[0].text
    assert text.startswith("[sentiment@v2] ") and len(text.split()) == 4
    assert text == again.choices[0].text  # deterministic for the same input
    assert first.choices[0].finish_reason == "length"
    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (4, 4)
    assert first.usage.total_tokens == 8
    assert first.model == "sentiment@v2" and first.id.startswith("cmpl-")
    assert base.choices[0].text.startswith("[base] ")
    assert base.choices[0].finish_reason == "stop"  # 8-token answer fits the default 16
    message = chat.choices[0].message
    assert message.role == "assistant" and message.content is not None
    assert message.content.startswith("[sentiment@v2] ") and len(message.content.split()) == 8
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage is not None and chat.usage.prompt_tokens == 4  # words of all messages


def test_openai_client_streams_one_chunk_per_token(
    sim_server: StartSim, make_adapter: MakeAdapter
) -> None:
    sim = sim_server(answer_tokens=6)
    with httpx.Client(base_url=sim.url) as admin:
        load(admin, "qa@v1", make_adapter())
    messages: Any = [{"role": "user", "content": "what is up"}]
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    with client:
        whole = client.chat.completions.create(model="qa@v1", messages=messages)
        chunks = list(
            client.chat.completions.create(
                model="qa@v1",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = client.completions.create(model="qa@v1", prompt="a b", max_tokens=3, stream=True)
        pieces = [chunk.choices[0].text for chunk in streamed]

    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert len(deltas) == 6
    assert "".join(d or "" for d in deltas) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks[1:-1]][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 6, 9)
    assert pieces[0] == "[qa@v1]" and len(pieces) == 3 and pieces[1].startswith(" ")


def test_sse_wire_format_matches_vllm(sim_server: StartSim) -> None:
    sim = sim_server(answer_tokens=2)
    body = {"model": "base", "prompt": "hi", "stream": True}
    with httpx.Client(base_url=sim.url) as client:
        completion = client.post("/v1/completions", json=body)
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "base", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        )
    assert completion.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(completion.text)
    assert payloads[-1] == "[DONE]" and completion.text.endswith("data: [DONE]\n\n")
    first, last = json.loads(payloads[0]), json.loads(payloads[1])
    assert list(first) == ["id", "object", "created", "model", "choices"]  # exclude_unset
    assert first["choices"][0] == {
        "index": 0,
        "text": "[base]",
        "logprobs": None,
        "finish_reason": None,
        "stop_reason": None,
        "prompt_token_ids": None,
        "token_ids": None,
    }
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["system_fingerprint"].startswith("vllm-0.32.0-")  # on the final chunk only
    chat_chunks = [json.loads(p) for p in sse_payloads(chat.text)[:-1]]
    assert chat_chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chat_chunks[0]["object"] == "chat.completion.chunk"
    assert chat_chunks[1]["choices"][0]["delta"] == {"content": "[base]"}


def test_stream_options_without_stream_is_400(sim_server: StartSim) -> None:
    sim = sim_server()
    body = {"prompt": "x", "stream_options": {"include_usage": True}}
    response = httpx.post(f"{sim.url}/v1/completions", json=body)
    assert response.json() == error(
        "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
        "BadRequestError",
        400,
        "stream_options",
    )


def test_prompt_longer_than_context_is_400(sim_server: StartSim) -> None:
    sim = sim_server(max_model_len=4)
    with httpx.Client(base_url=sim.url) as client:
        too_long = client.post("/v1/completions", json={"prompt": "a b c d e", "max_tokens": 1})
        # Checked first, as in vLLM: the completions default max_tokens=16 > max_model_len.
        default_budget = client.post("/v1/completions", json={"prompt": "a"})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "input_tokens"
    assert "maximum context length is 4 tokens" in too_long.json()["error"]["message"]
    assert default_budget.json() == error(
        "max_tokens=16 cannot be greater than max_model_len=4. Please request fewer output "
        "tokens. (parameter=max_tokens, value=16)",
        "BadRequestError",
        400,
        "max_tokens",
    )


# --- capacity ---


def test_more_adapters_than_cpu_slots_cost_hidden_reloads(
    sim_server: StartSim, make_adapter: MakeAdapter
) -> None:
    sim = sim_server(max_loras=1, max_cpu_loras=2, load_ms=80.0, answer_tokens=2)
    with httpx.Client(base_url=sim.url) as client:
        for name in ("a", "b", "c"):  # vLLM accepts more than max_cpu_loras
            assert load(client, name, make_adapter(name)).status_code == 200
        assert model_ids(client) == ["base", "a", "b", "c"]
        assert stats(client)["cpu_cache"] == ["b", "c"]

        started = time.monotonic()
        assert client.post("/v1/completions", json={"model": "a", "prompt": "x"}).status_code == 200
        assert time.monotonic() - started >= 0.08  # paid the load again
        after = stats(client)
        assert after["cpu_cache_reloads"] == 1 and after["cpu_cache"] == ["c", "a"]
        assert after["resident"] == ["a", "c"]

        client.post("/v1/completions", json={"model": "a", "prompt": "x"})
        assert stats(client)["cpu_cache_reloads"] == 1  # resident now: no second reload


async def test_adapter_waits_while_max_loras_others_run(
    sim_server: StartSim, make_adapter: MakeAdapter
) -> None:
    # `a` runs ~2 s: long enough to look at the engine while it runs, on a busy machine too.
    sim = sim_server(max_loras=1, max_cpu_loras=4, token_ms=100.0, answer_tokens=20)
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        for name in ("a", "b"):
            await client.post(
                "/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": str(make_adapter(name))},
            )

        async def timed(model: str, max_tokens: int = 20) -> float:
            body = {"model": model, "prompt": "p", "max_tokens": max_tokens}
            assert (await client.post("/v1/completions", json=body)).status_code == 200
            return time.monotonic()

        async def stats_once(field: str) -> dict[str, Any]:
            """/sim/stats, polled until `field` is non-zero (10 s at most)."""
            for _ in range(1000):
                stats: dict[str, Any] = (await client.get("/sim/stats")).json()
                if stats[field]:
                    return stats
                await asyncio.sleep(0.01)
            raise AssertionError(f"{field} stayed 0")

        first = asyncio.create_task(timed("a"))
        await stats_once("running")
        second = asyncio.create_task(timed("b", 1))
        during = await stats_once("waiting")
        metrics = (await client.get("/metrics")).text
        base = asyncio.create_task(timed("base", 1))
        a_done, b_done, base_done = await asyncio.gather(first, second, base)

    assert (during["running"], during["waiting"], during["running_loras"]) == (1, 1, ["a"])
    assert 'vllm:num_requests_waiting{engine="0",model_name="base"} 1.0' in metrics
    assert b_done >= a_done  # b only ran once a left the batch
    assert base_done < a_done  # the base model never counts against max_loras


async def test_a_hidden_reload_pauses_everyone_decoding(
    sim_server: StartSim, make_adapter: MakeAdapter
) -> None:
    # vLLM loads adapters inside its single engine-core loop: no token is produced meanwhile.
    sim = sim_server(max_loras=2, max_cpu_loras=2, load_ms=150.0, token_ms=5.0)
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        for name in ("a", "b", "c"):  # "a" leaves the CPU cache
            path = str(make_adapter(name))
            await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})

        async def elapsed(model: str) -> float:
            started = time.monotonic()
            body = {"model": model, "prompt": "p", "max_tokens": 10}
            assert (await client.post("/v1/completions", json=body)).status_code == 200
            return time.monotonic() - started

        reload = asyncio.create_task(elapsed("a"))
        await asyncio.sleep(0.02)
        base_seconds = await elapsed("base")  # ~0.05 s of tokens, stalled by the load
        await reload
    assert base_seconds >= 0.1


# --- metrics ---


def test_metrics_parse_and_count(sim_server: StartSim, make_adapter: MakeAdapter) -> None:
    sim = sim_server(max_loras=2, max_cpu_loras=2, answer_tokens=2)
    with httpx.Client(base_url=sim.url) as client:
        for name in ("a", "b", "c"):
            load(client, name, make_adapter(name))
        client.post("/v1/unload_lora_adapter", json={"lora_name": "c"})
        for model in ("a", "a", "base"):
            client.post("/v1/completions", json={"model": model, "prompt": "x"})
        text = client.get("/metrics").text

    families = {family.name: family for family in text_string_to_metric_families(text)}
    value = {name: fam.samples[0].value for name, fam in families.items() if fam.samples}
    assert value["sim_lora_loads"] == 3 and value["sim_lora_unloads"] == 1
    assert value["sim_lora_cpu_cache_reloads"] == 1  # "a" was evicted by "c"
    requests = {s.labels["model"]: s.value for s in families["sim_requests"].samples}
    assert requests == {"a": 2, "base": 1}
    assert value["vllm:num_requests_running"] == 0
    lora_info = families["vllm:lora_requests_info"].samples
    assert {s.labels["max_lora"] for s in lora_info} == {"2"}
    assert {s.labels["running_lora_adapters"] for s in lora_info} == {"a", ""}


# --- faults and cancellation ---


def test_fail_load_and_load_lies(sim_server: StartSim, make_adapter: MakeAdapter) -> None:
    sim = sim_server(faults={"fail_load": "^bad"})
    path = make_adapter()
    with httpx.Client(base_url=sim.url) as client:
        failed = load(client, "bad@v1", path)
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "InternalServerError"
        assert failed.json()["error"]["message"].startswith("Call to add_lora method failed:")

        faults = client.post("/sim/faults", json={"load_lies": True, "fail_load": None}).json()
        assert faults["load_lies"] and faults["fail_load"] is None
        lied = load(client, "ghost", path)
        assert lied.status_code == 200 and "added successfully" in lied.text
        assert model_ids(client) == ["base"]  # …but nothing was registered
        assert client.post("/sim/faults", json={"fail_requests": 2}).status_code == 400
        assert client.post("/sim/faults", json={"fail_load": "("}).status_code == 400
        assert client.post("/sim/faults", json={"no_such_fault": 1}).status_code == 400


def test_request_faults(sim_server: StartSim) -> None:
    sim = sim_server(answer_tokens=5)
    body = {"model": "base", "prompt": "x"}
    with httpx.Client(base_url=sim.url) as client:
        client.post("/sim/faults", json={"fail_requests": 1.0})
        failed = client.post("/v1/completions", json=body)
        assert failed.status_code == 500
        assert failed.json() == error("Internal server error", "InternalServerError", 500)

        client.post("/sim/faults", json={"fail_requests": 0.0, "stream_error_after_tokens": 2})
        streamed = sse_payloads(client.post("/v1/completions", json={**body, "stream": True}).text)
        assert len(streamed) == 4 and streamed[-1] == "[DONE]"
        assert json.loads(streamed[2]) == error("Internal server error", "InternalServerError", 500)

        client.post(
            "/sim/faults", json={"stream_error_after_tokens": None, "request_delay_ms": 150}
        )
        started = time.monotonic()
        assert client.post("/v1/completions", json=body).status_code == 200
        assert time.monotonic() - started >= 0.15

        client.post("/sim/faults", json={"unhealthy": True})
        assert client.get("/health").status_code == 503
        assert stats(client)["requests_failed"] == 2


def test_fail_models_limits_fail_requests_to_matching_models(
    sim_server: StartSim, make_adapter: MakeAdapter
) -> None:
    sim = sim_server(answer_tokens=2, faults={"fail_requests": 1.0, "fail_models": "^alpha@v2$"})
    with httpx.Client(base_url=sim.url) as client:
        for name in ("alpha@v1", "alpha@v2", "alpha@v22"):
            assert load(client, name, make_adapter(name)).status_code == 200

        def status(model: str) -> int:
            return client.post("/v1/completions", json={"model": model, "prompt": "x"}).status_code

        assert [status(m) for m in ("alpha@v2", "alpha@v1", "alpha@v22", "base")] == [
            500,
            200,
            200,
            200,
        ]
        faults = client.post("/sim/faults", json={"fail_models": "^base$"}).json()
        assert faults["fail_models"] == "^base$" and faults["fail_requests"] == 1.0
        assert (status("base"), status("alpha@v2")) == (500, 200)
        assert client.post("/sim/faults", json={"fail_models": "(("}).status_code == 400
        cleared = client.post("/sim/faults", json={"fail_models": None}).json()
        assert cleared["fail_models"] is None
        assert status("alpha@v1") == 500  # no selector: every request may fail again
        assert stats(client)["requests_failed"] == 3
    args = build_parser().parse_args(["--fail-requests", "0.2", "--fail-models", "^a@v2$"])
    assert config_from_args(args).faults.fail_models == "^a@v2$"


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_stops_generation(sim_server: StartSim, stream: bool) -> None:
    sim = sim_server(answer_tokens=500, token_ms=5.0)
    body = {"model": "base", "prompt": "x", "max_tokens": 500, "stream": stream}
    async with httpx.AsyncClient(base_url=sim.url) as client:
        if stream:
            async with client.stream("POST", "/v1/completions", json=body) as response:
                lines = response.aiter_lines()
                assert (await anext(lines)).startswith("data: ")
            # Leaving the block closed the connection mid-stream.
        else:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
                await client.post("/v1/completions", json=body, timeout=0.2)
        deadline = time.monotonic() + 2
        while (snapshot := (await client.get("/sim/stats")).json())["requests_cancelled"] < 1:
            assert time.monotonic() < deadline, snapshot
            await asyncio.sleep(0.02)
    assert snapshot["running"] == 0 and snapshot["waiting"] == 0
