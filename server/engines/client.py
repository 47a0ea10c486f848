"""Async client for one vLLM OpenAI-compatible server.

One aiohttp session (a pooled set of keep-alive connections) per engine, a timeout on every
call, and engine failures mapped to loragate's errors: connection refused → `Unavailable`,
timeout → `UpstreamTimeout`, 4xx on a generation call → `InvalidRequest` with the engine's
message, anything else → `UpstreamError`. The shapes follow vLLM's `entrypoints/openai`
(load/unload answer plain text on success and `ErrorResponse` JSON on failure).

aiohttp rather than httpx: on the hot path httpx, httpcore and anyio cost about 2.5 ms of
CPU per proxied request here, aiohttp about a third of that (see loadtest/bench_overhead.py).
Bodies are encoded and decoded with orjson.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from server import jsonio
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


KEEPALIVE_S = 4.0


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
        max_connections: int = 256,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        # Generation: a bound per read (an engine that stalls), not on the whole answer,
        # which may stream for minutes.
        self._timeout = aiohttp.ClientTimeout(
            connect=connect_timeout_s, sock_read=request_timeout_s
        )
        self._load_timeout = aiohttp.ClientTimeout(total=load_timeout_s, connect=connect_timeout_s)
        self._probe_timeout = aiohttp.ClientTimeout(
            total=probe_timeout_s, connect=connect_timeout_s
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        """The session, made on first use (aiohttp wants a running event loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                ttl_dns_cache=60,
                # Under the engine's own idle timeout (vLLM/uvicorn: 5 s), so a pooled
                # connection is never reused just as the engine closes it.
                keepalive_timeout=KEEPALIVE_S,
            )
            self._session = aiohttp.ClientSession(
                self.url, connector=connector, timeout=self._timeout, auto_decompress=False
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeouts: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The engine's response, headers read; transport failures before that are
        `UpstreamTimeout` (no answer in time) or `Unavailable` (unreachable)."""
        data = jsonio.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            response = await self._http().request(
                method, path, data=data, headers=headers, timeout=timeouts or self._timeout
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"engine {self.name} did not answer {path} in time") from None
        except aiohttp.ClientError as exc:
            # Refused: nothing was sent, another engine may take it (EngineUnreachable).
            refused = isinstance(exc, aiohttp.ClientConnectorError)
            raise (EngineUnreachable if refused else Unavailable)(
                f"engine {self.name} is unreachable: {type(exc).__name__}", retry_after_s=5
            ) from None
        try:
            yield response
        finally:
            response.release()

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeouts: aiohttp.ClientTimeout | None = None,
    ) -> Answer:
        """A whole (non-streamed) answer."""
        async with self._request(method, path, body, timeouts) as response:
            try:
                data = await response.read()
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise UpstreamTimeout(f"engine {self.name} did not answer {path} in time") from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"engine {self.name} broke its answer: {exc!r}") from None
            return Answer(response.status, data)

    async def health(self) -> bool:
        try:
            answer = await self._call("GET", "/health", timeouts=self._probe_timeout)
        except LoragateError:
            return False
        return answer.status == 200

    async def models(self) -> list[EngineModel]:
        answer = await self._call("GET", "/v1/models", timeouts=self._probe_timeout)
        answer.raise_for(self.name, UpstreamError)
        return [EngineModel(m["id"], m.get("parent"), m.get("root")) for m in answer.json()["data"]]

    async def load_lora(self, lora_name: str, lora_path: str) -> None:
        """Raise `AdapterLoadFailed` with the engine's message if it refuses."""
        body = {"lora_name": lora_name, "lora_path": lora_path}
        answer = await self._call("POST", "/v1/load_lora_adapter", body, self._load_timeout)
        answer.raise_for(self.name, AdapterLoadFailed)

    async def unload_lora(self, lora_name: str) -> None:
        """Raise `NotFound` if the engine does not hold it, `UpstreamError` otherwise."""
        body = {"lora_name": lora_name}
        answer = await self._call("POST", "/v1/unload_lora_adapter", body, self._load_timeout)
        if answer.status == 404:
            raise NotFound(f"engine {self.name} does not hold {lora_name}")
        answer.raise_for(self.name, UpstreamError)

    async def generate(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self._call("POST", path, body)
        answer.raise_for_generation(self.name)
        try:
            result = answer.json()
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise UpstreamError(f"engine {self.name} answered {path} with a body that is not "
                                "a JSON object")  # fmt: skip
        return result

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Yield the engine's SSE body chunk by chunk. Errors before the first byte raise."""
        async with self._request("POST", path, body) as response:
            if response.status != 200:
                Answer(response.status, await response.read()).raise_for_generation(self.name)
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise UpstreamTimeout(f"engine {self.name} stalled mid-stream") from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"engine {self.name} broke the stream: {exc!r}") from None

    async def metrics_text(self) -> str:
        answer = await self._call("GET", "/metrics", timeouts=self._probe_timeout)
        answer.raise_for(self.name, UpstreamError)
        return answer.body.decode(errors="replace")


@dataclass(frozen=True)
class Answer:
    """A whole answer of the engine."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON; raises `ValueError`."""
        return jsonio.loads(self.body)

    def message(self) -> str:
        """The engine's error message: vLLM's `{"error": {"message"}}`, `{"message"}`, text."""
        try:
            data = self.json()
        except ValueError:
            return self.body[:500].decode(errors="replace")
        if isinstance(data, dict):
            inner = data.get("error", data)
            if isinstance(inner, dict) and "message" in inner:
                return str(inner["message"])
            if isinstance(inner, str):
                return inner
        return self.body[:500].decode(errors="replace")

    def raise_for(self, engine: str, error: type[LoragateError]) -> None:
        if self.status >= 400:
            raise error(f"engine {engine} answered {self.status}: {self.message()}")

    def raise_for_generation(self, engine: str) -> None:
        if self.status < 400:
            return
        message = self.message()
        if self.status == 404:
            # The adapter left the engine between acquire and forward: another gateway
            # unloaded it, or the engine restarted. The gateway reloads it and retries once.
            raise AdapterGone(
                f"engine {engine} no longer holds the model: {message}", retry_after_s=1
            )
        if self.status in (400, 422):
            raise InvalidRequest(message)
        raise UpstreamError(f"engine {engine} answered {self.status}: {message}")
