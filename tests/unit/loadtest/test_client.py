"""`Sender` against a fake OpenAI server on loopback (streams need a real server): timing
fields, usage, loragate's headers, and every way an answer can fail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loadtest.threaded import ThreadedServer
from loadtest.tool.client import Sender, request_body
from loadtest.tool.records import RequestRecord
from loadtest.tool.targets import Target
from loadtest.tool.workload import RequestSpec

HEADERS = {"X-Adapter-Version": "a@v2", "X-Engine": "engine-1", "X-Gateway-Overhead-Ms": "0.250"}


def chunk(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, 'text': text}]})}\n\n".encode()


async def completions(request: Request) -> Response:
    body = await request.json()
    mode = body["prompt"]
    if mode == "refuse":
        return JSONResponse({"error": {"message": "no slot", "code": 503}}, status_code=503)
    if mode == "slow":
        await asyncio.sleep(2)
    if not body.get("stream"):
        usage = {"prompt_tokens": 3, "completion_tokens": 5}
        return JSONResponse({"choices": [{"text": "hi"}], "usage": usage}, headers=HEADERS)

    async def events() -> AsyncIterator[bytes]:
        yield b'data: {"choices": [{"index": 0, "text": ""}]}\n\n'  # no text yet: not the TTFT
        await asyncio.sleep(0.05)
        yield chunk("one")
        yield chunk(" two")
        if mode == "stream-error":
            yield b'data: {"error": {"message": "engine died", "code": 502}}\n\n'
        if mode != "no-done":
            usage = {"prompt_tokens": 3, "completion_tokens": 2}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadedServer]:
    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    with ThreadedServer(app) as server:
        yield server


def spec(prompt: str, stream: bool = False, seq: int = 0) -> RequestSpec:
    return RequestSpec(seq, None, "a", 1, None, prompt, 1, 8, stream, None)


async def send(url: str, item: RequestSpec, timeout_s: float = 10.0) -> RequestRecord:
    target = Target("fake", (url,), model="{adapter}-model")
    async with aiohttp.ClientSession() as session:
        return await Sender(session, target, "completions", timeout_s).send(item, 0, 0.0, 0.0)


async def test_a_json_answer_is_timed_with_its_usage_and_headers(fake: ThreadedServer) -> None:
    record = await send(fake.url, spec("hello"))
    assert record.ok and record.status == 200
    assert (
        asdict(record).items()
        >= {
            "model": "a-model",
            "version": "a@v2",
            "engine": "engine-1",
            "overhead_ms": 0.25,
            "prompt_tokens": 3,
            "completion_tokens": 5,
            "ttft_s": None,
        }.items()
    )


async def test_a_stream_has_its_first_token_time(fake: ThreadedServer) -> None:
    record = await send(fake.url, spec("hello", stream=True))
    assert record.error is None and record.completion_tokens == 2
    assert record.ttft_s is not None and 0.04 < record.ttft_s <= record.total_s


@pytest.mark.parametrize(
    ("prompt", "stream", "status", "outcome", "error"),
    [
        ("refuse", False, 503, "503", "503: no slot"),
        ("stream-error", True, 200, "stream-error", "stream error: engine died"),
        ("no-done", True, 200, "stream-error", "stream ended without [DONE]"),
    ],
)
async def test_failures_are_recorded_not_raised(
    fake: ThreadedServer, prompt: str, stream: bool, status: int, outcome: str, error: str
) -> None:
    record = await send(fake.url, spec(prompt, stream))
    assert not record.ok
    assert (record.status, record.outcome, record.error) == (status, outcome, error)


async def test_no_answer_and_timeouts_are_status_0(fake: ThreadedServer) -> None:
    timed_out = await send(fake.url, spec("slow"), timeout_s=0.2)
    assert (timed_out.status, timed_out.error) == (0, "timeout")
    refused = await send("http://127.0.0.1:9", spec("hello"))
    assert refused.status == 0 and refused.outcome == "no-answer"


def test_request_bodies_for_both_endpoints() -> None:
    item = spec("hi there", stream=True)
    assert request_body(item, "m", "completions") == {
        "model": "m",
        "max_tokens": 8,
        "prompt": "hi there",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chat = request_body(spec("hi"), "m", "chat")
    assert chat == {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
