"""Async client for one vLLM OpenAI-compatible server.

One shared `httpx.AsyncClient` per engine, a timeout on every call, and engine failures
mapped to loragate's errors: connection refused → `Unavailable`, timeout → `UpstreamTimeout`,
4xx on a generation call → `InvalidRequest` with the engine's message, anything else →
`UpstreamError`. The shapes follow vLLM's `entrypoints/openai` (load/unload answer plain text
on success and `ErrorResponse` JSON on failure).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from server.errors import (
    AdapterGone,
    AdapterLoadFailed,
    EngineUnreachable,
    InvalidRequest,
    LoragateError,
    NotFound,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)


@dataclass(frozen=True)
class EngineModel:
    """An entry of the engine's `/v1/models`: the base (parent None) or a LoRA."""

    id: str
    parent: str | None
    root: str | None


class EngineClient(Protocol):
    """What the registry and the serving layer need from an engine."""

    name: str
    url: str

    async def health(self) -> bool: ...
    async def models(self) -> list[EngineModel]: ...
    async def load_lora(self, lora_name: str, lora_path: str) -> None: ...
    async def unload_lora(self, lora_name: str) -> None: ...
    async def generate(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]: ...
    async def metrics_text(self) -> str: ...
    async def aclose(self) -> None: ...


class HttpEngineClient:
    """`EngineClient` over HTTP to a vLLM server (or the simulated engine)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 300.0,
        load_timeout_s: float = 60.0,
        probe_timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self._load_timeout = httpx.Timeout(load_timeout_s, connect=connect_timeout_s)
        self._short_timeout = httpx.Timeout(probe_timeout_s, connect=connect_timeout_s)
        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    @contextlib.contextmanager
    def _transport_errors(self, path: str, started: bool = False) -> Iterator[None]:
        """Transport failures as loragate errors: before any byte of the answer, a timeout is
        `UpstreamTimeout` and an unreachable engine `Unavailable`; once a stream `started`, a
        stall is `UpstreamTimeout` and a broken connection `UpstreamError`."""
        try:
            yield
        except httpx.TimeoutException:
            what = "stalled mid-stream" if started else f"did not answer {path} in time"
            raise UpstreamTimeout(f"engine {self.name} {what}") from None
        except httpx.TransportError as exc:
            if started:
                raise UpstreamError(f"engine {self.name} broke the stream: {exc!r}") from None
            # Refused: nothing was sent, another engine may take it (EngineUnreachable).
            error = EngineUnreachable if isinstance(exc, httpx.ConnectError) else Unavailable
            raise error(
                f"engine {self.name} is unreachable: {type(exc).__name__}", retry_after_s=5
            ) from None

    async def _send(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        request = self._client.build_request(method, path, **kwargs)
        with self._transport_errors(path):
            return await self._client.send(request, stream=stream)

    async def health(self) -> bool:
        try:
            response = await self._send("GET", "/health", timeout=self._short_timeout)
        except LoragateError:
            return False
        return response.status_code == 200

    async def models(self) -> list[EngineModel]:
        response = await self._send("GET", "/v1/models", timeout=self._short_timeout)
        _raise_for(response, self.name, UpstreamError)
        return [
            EngineModel(m["id"], m.get("parent"), m.get("root")) for m in response.json()["data"]
        ]

    async def load_lora(self, lora_name: str, lora_path: str) -> None:
        """Raise `AdapterLoadFailed` with the engine's message if it refuses."""
        body = {"lora_name": lora_name, "lora_path": lora_path}
        response = await self._send(
            "POST", "/v1/load_lora_adapter", json=body, timeout=self._load_timeout
        )
        _raise_for(response, self.name, AdapterLoadFailed)

    async def unload_lora(self, lora_name: str) -> None:
        """Raise `NotFound` if the engine does not hold it, `UpstreamError` otherwise."""
        response = await self._send(
            "POST",
            "/v1/unload_lora_adapter",
            json={"lora_name": lora_name},
            timeout=self._load_timeout,
        )
        if response.status_code == 404:
            raise NotFound(f"engine {self.name} does not hold {lora_name}")
        _raise_for(response, self.name, UpstreamError)

    async def generate(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send("POST", path, json=body)
        _raise_generation_error(response, self.name)
        try:
            result: dict[str, Any] = response.json()
        except ValueError:
            raise UpstreamError(
                f"engine {self.name} answered {path} with a body that is not JSON"
            ) from None
        return result

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Yield the engine's SSE body chunk by chunk. Errors before the first byte raise."""
        response = await self._send("POST", path, stream=True, json=body)
        try:
            with self._transport_errors(path, started=True):
                if response.status_code != 200:
                    await response.aread()
                    _raise_generation_error(response, self.name)
                async for chunk in response.aiter_bytes():
                    yield chunk
        finally:
            await response.aclose()

    async def metrics_text(self) -> str:
        response = await self._send("GET", "/metrics", timeout=self._short_timeout)
        _raise_for(response, self.name, UpstreamError)
        return response.text


def engine_message(response: httpx.Response) -> str:
    """The engine's error message: vLLM's `{"error": {"message"}}`, `{"message"}`, or text."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:500]
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return response.text[:500]


def _raise_for(response: httpx.Response, engine: str, error: type[LoragateError]) -> None:
    if response.status_code >= 400:
        raise error(f"engine {engine} answered {response.status_code}: {engine_message(response)}")


def _raise_generation_error(response: httpx.Response, engine: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = engine_message(response)
    if status == 404:
        # The adapter left the engine between acquire and forward: another gateway unloaded
        # it, or the engine restarted. The gateway reloads it and retries once.
        raise AdapterGone(f"engine {engine} no longer holds the model: {message}", retry_after_s=1)
    if status in (400, 422):
        raise InvalidRequest(message)
    raise UpstreamError(f"engine {engine} answered {status}: {message}")
