"""Send one request to a target and time it: total latency, time to first token (streams),
tokens from the `usage` fields, and what loragate reports in its headers.

aiohttp, not httpx: measured here, one `httpx.AsyncClient` fell from 272 to 55 completed
requests/s going from 8 to 64 concurrent requests against the same simulated engine, where
aiohttp went from 337 to 713; a load generator must not be the bottleneck it measures.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadtest.tool.records import RequestRecord
from loadtest.tool.targets import Target
from loadtest.tool.workload import RequestSpec

PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def request_body(spec: RequestSpec, model: str, endpoint: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": spec.max_tokens}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": spec.prompt}]
    else:
        body["prompt"] = spec.prompt
    if spec.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class _Outcome:
    """What reading the answer found (filled in place as the body arrives)."""

    ttft: float | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Sender:
    """Sends `RequestSpec`s to one target over one aiohttp session."""

    def __init__(
        self, session: aiohttp.ClientSession, target: Target, endpoint: str, timeout_s: float
    ) -> None:
        self.session = session
        self.target = target
        self.path = PATHS[endpoint]
        self.endpoint = endpoint
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(
        self, spec: RequestSpec, round_index: int, round_start: float, warmup_s: float
    ) -> RequestRecord:
        model = self.target.model_for(spec.adapter)
        headers = {"Authorization": f"Bearer {spec.api_key or self.target.api_key}"}
        if not (spec.api_key or self.target.api_key):
            headers = {}
        t0 = time.perf_counter()
        # Open loop: the warm-up is judged on the schedule, so every target of a round leaves
        # out the same requests even when one of them made the generator send late.
        planned = spec.at_s if spec.at_s is not None else t0 - round_start
        record = RequestRecord(
            target=self.target.name,
            round=round_index,
            seq=spec.seq,
            start_s=t0 - round_start,
            total_s=0.0,
            status=0,
            adapter=spec.adapter,
            rank=spec.rank,
            model=model,
            stream=spec.stream,
            cold=spec.cold,
            warmup=planned < warmup_s,
            lag_s=None if spec.at_s is None else max(0.0, t0 - round_start - spec.at_s),
        )
        found = _Outcome()
        try:
            await self._exchange(spec, model, headers, t0, record, found)
        except TimeoutError:
            found.error = "timeout"
        except aiohttp.ClientError as exc:
            found.error = f"{type(exc).__name__}: {exc}"[:200]
        record.total_s = time.perf_counter() - t0
        record.ttft_s = found.ttft
        record.error = found.error
        record.prompt_tokens, record.completion_tokens = (
            found.prompt_tokens,
            found.completion_tokens,
        )
        return record

    async def _exchange(
        self,
        spec: RequestSpec,
        model: str,
        headers: dict[str, str],
        t0: float,
        record: RequestRecord,
        found: _Outcome,
    ) -> None:
        url = self.target.url(spec.seq) + self.path
        body = request_body(spec, model, self.endpoint)
        async with self.session.post(
            url, json=body, headers=headers, timeout=self.timeout
        ) as response:
            record.status = response.status
            record.version = response.headers.get("X-Adapter-Version")
            record.engine = response.headers.get("X-Engine")
            overhead = response.headers.get("X-Gateway-Overhead-Ms")
            record.overhead_ms = float(overhead) if overhead else None
            if response.status != 200:
                found.error = _error_text(response.status, await response.read())
            elif spec.stream:
                await _read_stream(response, t0, found)
            else:
                _read_usage(json.loads(await response.read()), found)


async def _read_stream(response: aiohttp.ClientResponse, t0: float, found: _Outcome) -> None:
    chunks = 0
    saw_done = False
    async for line in response.content:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            saw_done = True
            break
        event = json.loads(payload)
        if "error" in event:
            found.error = f"stream error: {str(event['error'].get('message'))[:150]}"
            continue
        if _has_text(event):
            chunks += 1
            if found.ttft is None:
                found.ttft = time.perf_counter() - t0
        _read_usage(event, found)
    if found.completion_tokens is None and chunks:
        found.completion_tokens = chunks
    if not saw_done and found.error is None:
        found.error = "stream ended without [DONE]"


def _has_text(event: dict[str, Any]) -> bool:
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("text") or delta.get("content"):
            return True
    return False


def _read_usage(body: dict[str, Any], found: _Outcome) -> None:
    usage = body.get("usage") or {}
    if isinstance(usage.get("prompt_tokens"), int):
        found.prompt_tokens = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        found.completion_tokens = usage["completion_tokens"]


def _error_text(status: int, raw: bytes) -> str:
    try:
        message = str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace")
    return f"{status}: {message}"[:200]
