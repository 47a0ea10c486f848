"""The HTTP engine client against a real loopback server answering from plain functions:
what each engine answer becomes (table-driven), streams that break, timeouts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loadtest.threaded import free_port
from server.engines.client import EngineModel, HttpEngineClient
from server.errors import (
    AdapterGone,
    AdapterLoadFailed,
    InvalidRequest,
    LoragateError,
    NotFound,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tests.httpfake import Reply, Request, serve

VLLM_ERROR = {"error": {"message": "bad things", "type": "BadRequestError", "code": 400}}


def client(
    url: str, request_timeout_s: float = 5.0, probe_timeout_s: float = 5.0
) -> HttpEngineClient:
    return HttpEngineClient(
        "e0", url, request_timeout_s=request_timeout_s, probe_timeout_s=probe_timeout_s
    )


def always(reply: Reply) -> Callable[[Request], Reply]:
    return lambda _request: reply


@pytest.mark.parametrize(
    ("reply", "error", "fragment"),
    [
        (Reply.json(VLLM_ERROR, 400), InvalidRequest, "bad things"),
        (Reply.json({"detail": "x"}, 422), InvalidRequest, "detail"),
        (Reply.json({"message": "gone"}, 404), AdapterGone, "no longer holds"),
        (Reply.json(VLLM_ERROR, 500), UpstreamError, "answered 500: bad things"),
        (Reply(503, b"<html>overloaded</html>", "text/html"), UpstreamError, "overloaded"),
        (Reply(200, b"not json"), UpstreamError, "not a JSON object"),
        (Reply.json([1, 2]), UpstreamError, "not a JSON object"),
    ],
)
async def test_generation_answers_map_to_loragate_errors(
    reply: Reply, error: type[LoragateError], fragment: str
) -> None:
    async with serve(always(reply)) as url:
        engine = client(url)
        with pytest.raises(error) as raised:
            await engine.generate("/v1/completions", {"model": "m", "prompt": "p"})
        await engine.aclose()
    assert fragment in raised.value.message and type(raised.value) is error


async def test_a_generation_is_the_engines_json_and_the_request_is_forwarded() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Reply:
        seen.append(request)
        return Reply.json({"choices": [{"text": "hi"}]})

    async with serve(handler) as url:
        engine = client(url)
        assert await engine.generate("/v1/completions", {"model": "a@v1"}) == {
            "choices": [{"text": "hi"}]
        }
        await engine.aclose()
    assert seen[0].method == "POST" and seen[0].path == "/v1/completions"
    assert seen[0].json() == {"model": "a@v1"}


async def test_an_unreachable_engine_is_unavailable_and_unhealthy() -> None:
    engine = client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable) as raised:
        await engine.generate("/v1/completions", {})
    assert raised.value.retry_after_s == 5
    assert await engine.health() is False
    await engine.aclose()


async def test_an_engine_that_does_not_answer_times_out() -> None:
    async with serve(always(Reply(hang=True))) as url:
        engine = client(url, request_timeout_s=0.2)
        with pytest.raises(UpstreamTimeout, match="did not answer /v1/completions"):
            await engine.generate("/v1/completions", {})
        await engine.aclose()


@pytest.mark.parametrize(
    ("reply", "result"),
    [(Reply(200, b"{}"), True), (Reply(500), False), (Reply(hang=True), False)],
)
async def test_health(reply: Reply, result: bool) -> None:
    async with serve(always(reply)) as url:
        engine = client(url, probe_timeout_s=0.2)
        assert await engine.health() is result
        await engine.aclose()


async def test_models_lists_the_base_and_loras() -> None:
    listing = {
        "data": [
            {"id": "base", "root": "/m", "parent": None},
            {"id": "a@v1", "root": "/s/a/v1", "parent": "base"},
        ]
    }
    async with serve(always(Reply.json(listing))) as url:
        engine = client(url)
        assert await engine.models() == [
            EngineModel("base", None, "/m"),
            EngineModel("a@v1", "base", "/s/a/v1"),
        ]
        await engine.aclose()


@pytest.mark.parametrize(
    ("op", "reply", "error"),
    [
        ("load", Reply.json(VLLM_ERROR, 400), AdapterLoadFailed),
        ("load", Reply.json(VLLM_ERROR, 500), AdapterLoadFailed),
        ("unload", Reply.json(VLLM_ERROR, 404), NotFound),
        ("unload", Reply.json(VLLM_ERROR, 500), UpstreamError),
        ("models", Reply.json(VLLM_ERROR, 500), UpstreamError),
    ],
)
async def test_adapter_calls_map_refusals(op: str, reply: Reply, error: type[Exception]) -> None:
    async with serve(always(reply)) as url:
        engine = client(url)
        with pytest.raises(error):
            if op == "load":
                await engine.load_lora("a@v1", "/store/a/v1")
            elif op == "unload":
                await engine.unload_lora("a@v1")
            else:
                await engine.models()
        await engine.aclose()


async def test_load_and_unload_send_vllms_bodies() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Reply:
        seen.append(request)
        return Reply(200, b"Success", "text/plain")

    async with serve(handler) as url:
        engine = client(url)
        await engine.load_lora("a@v1", "/store/a/v1")
        await engine.unload_lora("a@v1")
        await engine.aclose()
    assert [(r.path, r.json()) for r in seen] == [
        ("/v1/load_lora_adapter", {"lora_name": "a@v1", "lora_path": "/store/a/v1"}),
        ("/v1/unload_lora_adapter", {"lora_name": "a@v1"}),
    ]


async def collect(engine: HttpEngineClient) -> list[bytes]:
    return [chunk async for chunk in engine.stream("/v1/completions", {"stream": True})]


async def test_a_stream_relays_chunks_as_they_come() -> None:
    chunks = [(0.0, b"data: {}\n\n"), (0.05, b"data: [DONE]\n\n")]
    async with serve(always(Reply(chunks=chunks, content_type="text/event-stream"))) as url:
        engine = client(url)
        assert b"".join(await collect(engine)) == b"data: {}\n\ndata: [DONE]\n\n"
        await engine.aclose()


@pytest.mark.parametrize(
    ("reply", "error", "fragment"),
    [
        (Reply.json(VLLM_ERROR, 400), InvalidRequest, "bad things"),
        (Reply(chunks=[(0, b"data: {}\n\n")], cut=True), UpstreamError, "broke the stream"),
        (Reply(chunks=[(0, b"data: {}\n\n"), (5, b"late")]), UpstreamTimeout, "stalled"),
    ],
)
async def test_a_stream_that_fails(reply: Reply, error: type[LoragateError], fragment: str) -> None:
    async with serve(always(reply)) as url:
        engine = client(url, request_timeout_s=0.3)
        with pytest.raises(error) as raised:
            await collect(engine)
        await engine.aclose()
    assert fragment in raised.value.message
